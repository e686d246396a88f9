"""rogue-master: a host polling or writing a PLC it never did in the baseline."""

from __future__ import annotations

from cranewatch.model import Severity
from detect_helpers import CMS, OCR, PLC, learn, normal_crane, run, series, sts07, write


def test_new_master_polling_the_plc() -> None:
    baseline = learn(normal_crane())
    findings = run([series("10.20.7.88", PLC, 3, 0, 4, n=30)], baseline=baseline)
    (f,) = [f for f in findings if f.category == "rogue-master"]
    assert f.src == "10.20.7.88" and f.dst == f"{PLC}:502" and f.count == 30
    assert f.severity == Severity.HIGH and f.technique == ("T0848",)


def test_new_master_writing_is_critical() -> None:
    baseline = learn(normal_crane())
    findings = run([write("10.20.7.88", PLC, 6, 2, (50,))], baseline=baseline)
    (f,) = [f for f in findings if f.category == "rogue-master"]
    assert f.severity == Severity.CRITICAL


def test_known_masters_are_quiet_with_baseline_or_profile() -> None:
    baseline = learn(normal_crane())
    assert [f for f in run(normal_crane(), baseline=baseline) if f.category == "rogue-master"] == []
    assert [f for f in run([series(OCR, PLC, 4, 0, 12)], profile=sts07())
            if f.category == "rogue-master"] == []
    # the same master against another slave is new
    findings = run([series(CMS, "10.20.7.11", 4, 0, 12)], baseline=baseline)
    assert [f.src for f in findings if f.category == "rogue-master"] == [CMS]


def test_without_baseline_or_profile_the_rule_is_silent() -> None:
    assert [f for f in run([series("10.1.1.1", "10.1.1.2", 3, 0, 4)], crane=None)
            if f.category == "rogue-master"] == []


def test_new_s7_client_of_the_plc() -> None:
    from detect_helpers import EWS, T0, conv

    baseline = learn(normal_crane())
    new = conv("10.20.7.88", PLC, 102, T0, protocol="s7comm")
    (f,) = [f for f in run([new], baseline=baseline) if f.category == "rogue-master"]
    assert f.title == "New s7comm client 10.20.7.88 of PLC 10.20.7.10" and f.dst == f"{PLC}:102"
    # the EWS may: the profile allows it S7comm to the PLC
    assert [f for f in run([conv(EWS, PLC, 102, T0, protocol="s7comm")], profile=sts07(), baseline=baseline)
            if f.category == "rogue-master"] == []
    # an S7 flow the baseline already had is not new
    again = learn([*normal_crane(), new])
    assert [f for f in run([new], baseline=again) if f.category == "rogue-master"] == []
