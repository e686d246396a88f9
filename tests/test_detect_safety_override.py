"""Modbus writes: safety-override where the profile names a safety point or a limit the value
crosses; every other unsanctioned write a plc-control ``plc-write`` (issue #15)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from cranewatch.model import Severity
from cranewatch.profile import parse_profile
from detect_helpers import CMS, EWS, OCR, PLC, T0, learn, run, series, sts07, write

NY = ZoneInfo("America/New_York")
IN_WINDOW = datetime(2026, 11, 24, 7, 30, tzinfo=NY).timestamp()  # a Tuesday, 07:30 local
OUT_OF_WINDOW = datetime(2026, 11, 25, 14, 0, tzinfo=NY).timestamp()  # Wednesday afternoon


def test_non_writer_sets_safety_bypass_and_raises_overload_limit() -> None:
    rogue = "10.20.7.99"
    findings = run([write(rogue, PLC, 5, 0, (1,)), write(rogue, PLC, 16, 0, (999, 200)),
                    write(rogue, PLC, 5, 0, (1,), frame=9)], profile=sts07())
    found = [f for f in findings if f.category == "safety-override"]
    assert len(found) == 2  # the coil and the setpoints are two incidents
    bypass = next(f for f in found if "safety_bypass" in f.title)
    assert bypass.severity == Severity.CRITICAL and bypass.count == 2
    assert bypass.src == rogue and bypass.dst == f"{PLC}:502"
    assert "T0880" in bypass.technique
    assert bypass.evidence[0].frames == (7, 9)
    limits = next(f for f in found if "overload_limit" in f.title)
    assert limits.evidence[0].values["written"][0]["overload_limit"] == "999 (99.9 t)"
    assert "host not allowed to write" in limits.title


def test_ews_write_inside_the_maintenance_window_is_not_reported() -> None:
    findings = run([write(EWS, PLC, 6, 1, (180,), ts=IN_WINDOW)], profile=sts07())
    assert [f for f in findings if f.category == "safety-override"] == []


def test_ews_write_outside_the_window_is_critical() -> None:
    findings = run([write(EWS, PLC, 6, 1, (400,), ts=OUT_OF_WINDOW)], profile=sts07())
    (f,) = [f for f in findings if f.category == "safety-override"]
    assert f.severity == Severity.CRITICAL and "outside maintenance window" in f.title
    assert "wind_stop_limit" in f.title


def test_cms_fault_reset_pulse_is_allowed_but_not_the_bypass() -> None:
    ok = run([write(CMS, PLC, 5, 1, (1,), ts=OUT_OF_WINDOW)], profile=sts07())
    assert [f for f in ok if f.category == "safety-override"] == []
    bad = run([write(CMS, PLC, 5, 0, (1,), ts=OUT_OF_WINDOW)], profile=sts07())
    assert [f.severity for f in bad if f.category == "safety-override"] == [Severity.CRITICAL]


def test_generalises_to_another_crane_with_other_addresses() -> None:
    profile = parse_profile("""
[crane]
id = "RTG-3"
[zones]
crane = ["172.31.4.0/24"]
[[hosts]]
name = "plc"
ip = "172.31.4.2"
[[hosts]]
name = "hmi"
ip = "172.31.4.3"
[[allow]]
client = "hmi"
server = "plc"
protocol = "modbus"
port = 5020
registers = ["HR:100-110"]
write = true
[safety]
points = ["brake_release"]
[[registers]]
table = "CO"
address = 40
name = "brake_release"
""")
    findings = run([write("172.31.4.3", "172.31.4.2", 6, 105, (7,)),
                    write("172.31.4.3", "172.31.4.2", 5, 40, (1,))], profile=profile, crane="RTG-3")
    (f,) = [f for f in findings if f.category == "safety-override"]
    assert "brake_release" in f.title and f.severity == Severity.CRITICAL and f.crane == "RTG-3"


RTG3 = """
[crane]
id = "RTG-3"
[zones]
crane = ["172.31.4.0/24"]
[[hosts]]
name = "plc"
role = "plc"
ip = "172.31.4.2"
[[hosts]]
name = "hmi"
ip = "172.31.4.3"
[[allow]]
client = "hmi"
server = "plc"
protocol = "modbus"
registers = ["HR:100-110"]
write = true
[[registers]]
table = "HR"
address = 105
name = "gantry_speed_setpoint"
scale = 0.1
unit = "m/s"
max = 5.0
"""


def test_without_profile_a_write_the_baseline_never_saw_is_a_medium_plc_write() -> None:
    # The regression of issue #15: the CMS is the PLC's master (it polls it in the baseline),
    # the short baseline saw it pulse coil 1 only; its write of coils 0-2 is new, but without a
    # profile nothing says those are safety points: plc-control at medium, with the points.
    baseline = learn([series(CMS, PLC, 1, 0, 8), write(CMS, PLC, 5, 1, (1,))])
    known = run([write(CMS, PLC, 5, 1, (1,))], baseline=baseline)
    assert known == []
    new = run([write(CMS, PLC, 15, 0, (1, 0, 1)), write(CMS, PLC, 15, 0, (0, 0, 0), ts=T0 + 1, frame=9)],
              baseline=baseline)
    assert [f.category for f in new] == ["plc-control"]
    (f,) = new
    assert f.rule == "plc-write" and f.severity == Severity.MEDIUM and f.count == 2
    assert f.src == CMS and f.dst == f"{PLC}:502"
    assert f.title == f"{CMS} wrote CO:0, CO:1, CO:2 on PLC {PLC} (write never seen in the baseline, 2 write(s))"
    assert f.evidence[0].values["written"] == [{"CO:0": 1, "CO:1": 0, "CO:2": 1},
                                               {"CO:0": 0, "CO:1": 0, "CO:2": 0}]


def test_without_profile_an_unknown_writer_is_a_rogue_master_and_a_plc_write_never_a_safety_override() -> None:
    baseline = learn([series(CMS, PLC, 4, 0, 12)])
    findings = run([write(OCR, PLC, 6, 0, (900,))], baseline=baseline)
    assert sorted((f.category, f.severity) for f in findings) == [
        ("plc-control", Severity.MEDIUM), ("rogue-master", Severity.CRITICAL)]


def test_with_neither_profile_nor_baseline_a_write_is_noted_low() -> None:
    (f,) = run([write(CMS, PLC, 6, 3, (7,))])
    assert (f.category, f.rule, f.severity) == ("plc-control", "plc-write", Severity.LOW)
    assert "no profile or baseline" in f.title


def test_a_value_beyond_the_profiles_limit_is_a_safety_override_even_from_an_allowed_writer() -> None:
    profile = parse_profile(RTG3)
    hmi, plc = "172.31.4.3", "172.31.4.2"
    within = run([write(hmi, plc, 6, 105, (40,))], profile=profile, crane="RTG-3")  # 4.0 m/s
    assert within == []
    (f,) = run([write(hmi, plc, 16, 104, (1, 70))], profile=profile, crane="RTG-3")  # 7.0 m/s
    assert (f.category, f.rule, f.severity) == ("safety-override", "safety-override", Severity.HIGH)
    assert "gantry_speed_setpoint=7 (max 5)" in f.title and "value beyond the profile's limit" in f.title
    assert f.evidence[0].values["beyond_limits"] == ["gantry_speed_setpoint=7 (max 5)"]


def test_a_profile_forbidden_write_of_no_safety_point_is_a_high_plc_write() -> None:
    profile = parse_profile(RTG3)
    (f,) = [f for f in run([write("172.31.4.3", "172.31.4.2", 6, 200, (1,))], profile=profile, crane="RTG-3")
            if f.rule == "plc-write"]
    assert (f.category, f.severity) == ("plc-control", Severity.HIGH)
    assert "HR:200" in f.title and "host not allowed to write" in f.title


def test_the_register_map_belongs_to_the_profiles_plc() -> None:
    other_plc = "10.20.7.11"  # a second controller the STS-07 register map does not describe
    findings = run([write("10.20.7.99", other_plc, 5, 0, (1,))], profile=sts07())
    assert [f for f in findings if f.category == "safety-override"] == []
    (f,) = [f for f in findings if f.rule == "plc-write"]
    assert f.severity == Severity.HIGH and "safety_bypass" not in f.title and "CO:0" in f.title
