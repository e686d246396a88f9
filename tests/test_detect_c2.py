"""c2: beacons by interval and jitter, DNS tunnelling, TLS to names never seen."""

from __future__ import annotations

import binascii
import random

import pytest

from cranewatch.detect.c2 import entropy, periodicity, registered_domain, thresholds
from cranewatch.detect.facts import DnsQuery, TlsHello
from cranewatch.model import Severity
from detect_helpers import CMS, DNS, NTP, OCR, T0, conv, learn, normal_crane, run, sts07


def callbacks(src: str, dst: str, port: int, interval: float, jitter: float, n: int,
              seed: int = 7, protocol: str = "tls") -> list:
    rng = random.Random(seed)
    ts, out = T0, []
    for i in range(n):
        out.append(conv(src, dst, port, ts, protocol=protocol, frame=100 + i, sport=40000 + i))
        ts += interval * (1 + rng.uniform(-jitter, jitter))
    return out


@pytest.mark.parametrize("example", thresholds()["examples"]["beacon"])
def test_rule_data_beacon_examples(example: dict) -> None:
    times = [0.0]
    for gap in example["intervals"]:
        times.append(times[-1] + gap)
    shape = periodicity(times)
    assert shape is not None
    steady = shape[1] <= thresholds()["beacon"]["max_jitter_ratio"]
    assert steady is example["expect"]


@pytest.mark.parametrize(("interval", "port", "dst"), [(30.0, 8443, "198.51.100.23"),
                                                       (7.5, 443, "203.0.113.200"),
                                                       (300.0, 53001, "192.0.2.44")])
def test_beacon_with_jitter_is_found_with_its_interval(interval: float, port: int, dst: str) -> None:
    findings = run(callbacks(OCR, dst, port, interval, 0.2, 12), profile=sts07())
    (f,) = [f for f in findings if f.category == "c2"]
    assert f.src == OCR and f.dst == f"{dst}:{port}" and f.count == 12
    measured = f.evidence[0].values["interval_s"]
    assert abs(measured - interval) / interval < 0.15
    assert f.severity == Severity.HIGH and f.first_seen == T0


def test_irregular_connections_are_not_a_beacon() -> None:
    rng = random.Random(3)
    ts, items = T0, []
    for i in range(12):
        items.append(conv(OCR, "198.51.100.23", 443, ts, frame=i + 1, sport=40000 + i))
        ts += rng.choice([1, 40, 3, 300, 12, 90])
    assert [f for f in run(items, profile=sts07()) if f.category == "c2"] == []


def test_periodic_ntp_poll_to_the_terminal_time_server_is_not_a_beacon() -> None:
    polls = callbacks(CMS, NTP, 123, 64.0, 0.01, 20, protocol="ntp")
    assert [f for f in run(polls, profile=sts07()) if f.category == "c2"] == []
    # also when only a baseline says the time server is normal
    assert [f for f in run(polls, baseline=learn(normal_crane())) if f.category == "c2"] == []


def test_entropy_and_domains() -> None:
    assert entropy("aaaa") == 0.0
    assert abs(entropy("abcd") - 2.0) < 1e-9
    assert registered_domain("x.y.exfil.example.co.uk") == "example.co.uk"
    assert registered_domain("a.b.tunnel.example") == "tunnel.example"


def dns(name: str, i: int) -> DnsQuery:
    return DnsQuery(ts=T0 + i, frame=i + 1, src=OCR, dst=DNS, dport=53, source="t.pcap", name=name)


def test_dns_tunnel_by_long_high_entropy_labels() -> None:
    rng = random.Random(5)
    names = [binascii.hexlify(rng.randbytes(28)).decode() + ".t.tun-nel.example" for _ in range(20)]
    findings = [f for f in run([dns(n, i) for i, n in enumerate(names)], profile=sts07())
                if f.category == "c2"]
    (f,) = findings
    assert "tun-nel.example" in f.title and f.severity == Severity.HIGH
    assert f.evidence[0].values["longest_label"] == 56


def test_dns_to_baseline_names_is_quiet_and_new_domains_are_low() -> None:
    baseline = learn([dns("ntp.terminal.example", 0), dns("tos.terminal.example", 1)])
    quiet = run([dns("ntp.terminal.example", 5), dns("tos.terminal.example", 6)], baseline=baseline)
    assert [f for f in quiet if f.category == "c2"] == []
    new = [f for f in run([dns("update.vendor-cloud.example", 7)], baseline=baseline) if f.category == "c2"]
    assert [f.severity for f in new] == [Severity.LOW]


def hello(sni: str | None, ja3: str, dst: str = "198.51.100.9") -> TlsHello:
    return TlsHello(ts=T0, frame=3, src=CMS, dst=dst, dport=443, source="t.pcap", sni=sni, ja3=ja3)


def test_tls_to_a_name_never_seen_in_the_baseline() -> None:
    baseline = learn([hello("updates.terminal.example", "aa" * 16, "10.20.0.80"),
                      conv(CMS, "10.20.0.80", 443)])
    assert [f for f in run([hello("updates.terminal.example", "aa" * 16, "10.20.0.80")],
                           baseline=baseline) if f.category == "c2"] == []
    (f,) = [f for f in run([hello("cdn.beacon.example", "bb" * 16)], baseline=baseline) if f.category == "c2"]
    assert "never seen" in f.title and f.dst == "198.51.100.9:443"
    assert f.evidence[0].values["ja3"] == ["bb" * 16]
