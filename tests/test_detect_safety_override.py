"""safety-override: writes to safety points, by non-writers, outside maintenance windows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from cranewatch.model import Severity
from cranewatch.profile import parse_profile
from detect_helpers import CMS, EWS, OCR, PLC, learn, run, sts07, write

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


def test_without_profile_a_write_the_baseline_never_saw_is_high() -> None:
    baseline = learn([write(CMS, PLC, 5, 1, (1,))])
    known = run([write(CMS, PLC, 5, 1, (1,))], baseline=baseline)
    assert [f for f in known if f.category == "safety-override"] == []
    new = run([write(OCR, PLC, 6, 0, (900,))], baseline=baseline)
    assert [f.severity for f in new if f.category == "safety-override"] == [Severity.HIGH]


def test_the_register_map_belongs_to_the_profiles_plc() -> None:
    other_plc = "10.20.7.11"  # a second controller the STS-07 register map does not describe
    findings = run([write("10.20.7.99", other_plc, 5, 0, (1,))], profile=sts07())
    (f,) = [f for f in findings if f.category == "safety-override"]
    assert f.severity == Severity.HIGH and "safety_bypass" not in f.title and "CO:0-0" in f.title
