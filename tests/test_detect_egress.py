"""egress: crane-zone traffic with outside addresses that no other rule explains."""

from __future__ import annotations

from cranewatch.detect.facts import MqttPublish
from cranewatch.model import Severity
from cranewatch.profile import parse_profile
from detect_helpers import CMS, OCR, REPO, T0, TOS, conv, run, sts07


def test_outbound_to_the_internet_is_medium_and_inbound_high() -> None:
    findings = run([conv(CMS, "198.51.100.10", 8883, T0), conv(CMS, "198.51.100.10", 8883, T0 + 5),
                    conv("203.0.113.3", OCR, 8080, T0 + 9)], profile=sts07())
    out = next(f for f in findings if f.src == CMS)
    assert out.category == "egress" and out.severity == Severity.MEDIUM and out.count == 2
    assert out.dst == "198.51.100.10:8883"
    inbound = next(f for f in findings if f.src == "203.0.113.3")
    assert inbound.severity == Severity.HIGH and inbound.dst == f"{OCR}:8080"


def test_terminal_traffic_is_not_egress() -> None:
    assert run([conv(TOS, CMS, 8080, T0)], profile=sts07()) == []


def test_allowed_outside_endpoint_is_quiet() -> None:
    text = (REPO / "profiles" / "sts-07.toml").read_text() + """
[[outside]]
name = "vendor"
address = "203.0.113.40"
port = 443
clients = ["cms"]
"""
    profile = parse_profile(text)
    assert run([conv(CMS, "203.0.113.40", 443, T0)], profile=profile) == []
    assert [f.category for f in run([conv(OCR, "203.0.113.40", 443, T0)], profile=profile)] == ["egress"]


def test_without_profile_public_addresses_are_outside() -> None:
    (f,) = run([conv("192.168.1.5", "198.51.100.7", 443, T0)], crane=None)
    assert f.category == "egress"
    assert run([conv("192.168.1.5", "10.0.0.7", 443, T0)], crane=None) == []


def test_dropped_when_a_specific_rule_reports_the_pair() -> None:
    leak = MqttPublish(ts=T0, frame=3, src=OCR, dst="198.51.100.61", dport=1883, source="t.pcap",
                       topic="t", payload=b'{"container":"CSQU3054383"}')
    findings = run([conv(OCR, "198.51.100.61", 1883, T0), leak], profile=sts07())
    assert [f.category for f in findings] == ["data-leak"]
