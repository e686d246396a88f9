"""data-leak: container data to the TOS path is normal; anywhere else is a leak."""

from __future__ import annotations

import base64
import binascii
import json

import pytest

from cranewatch.detect.content import (
    check_digit,
    find_container_data,
    find_container_data_deep,
    is_container_number,
)
from cranewatch.detect.facts import DnsQuery, HttpRequest, MqttPublish, Payload
from cranewatch.model import Severity
from detect_helpers import BROKER, CMS, DNS, OCR, T0, TOS, learn, run, sts07

OCR_EVENT = json.dumps({"container": "CSQU3054383", "move": "discharge", "bay": 14, "row": 6,
                        "tier": 82, "pol": "CNSHA", "pod": "USORF", "weight_t": 24.7,
                        "ts": "2026-11-18T11:06:40Z"}).encode()


# ISO 6346 letter values as printed in the standard (multiples of 11 skipped), typed in by
# hand so the test does not share the implementation's arithmetic.
LETTERS = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                   [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30,
                    31, 32, 34, 35, 36, 37, 38], strict=True))


def reference_check_digit(code: str) -> int:
    total = sum((LETTERS[c] if c.isalpha() else int(c)) * 2**i for i, c in enumerate(code[:10]))
    return total % 11 % 10


@pytest.mark.parametrize("prefix", ["CSQU305438", "MSCU123456", "TGHU619245", "HLXU803411",
                                    "ZIMU000000", "OOLJ777777", "ABCZ999999"])
def test_check_digit_matches_the_standard(prefix: str) -> None:
    digit = reference_check_digit(prefix)
    assert check_digit(prefix) == digit
    assert is_container_number(f"{prefix}{digit}")
    assert not is_container_number(f"{prefix}{(digit + 1) % 10}")


def test_the_reference_example() -> None:
    assert is_container_number("CSQU3054383")  # ISO 6346's own example (crane-reference.md)
    assert not is_container_number("CSQU3054384")
    assert not is_container_number("CSQX3054383")  # category must be U, J or Z


def test_check_digit_value_10_becomes_0() -> None:
    for serial in range(1000):
        code = f"ABCU{serial:06d}"
        if sum((LETTERS[c] if c.isalpha() else int(c)) * 2**i for i, c in enumerate(code)) % 11 == 10:
            assert check_digit(code) == 0
            return
    pytest.fail("no serial with remainder 10 in range")


def test_finds_numbers_ports_and_ocr_events() -> None:
    found = find_container_data(OCR_EVENT)
    assert found.containers == ("CSQU3054383",) and found.ocr_event
    assert set(found.locodes) == {"CNSHA", "USORF"}
    assert not find_container_data(b"serial CSQU3054384 and ISBN 978")


def test_finds_encoded_numbers_in_dns_labels() -> None:
    hexed = binascii.hexlify(b"CSQU3054383").decode()
    assert find_container_data_deep(f"{hexed}.c.exfil.example".encode()).encoding == "hex"
    b32 = base64.b32encode(b"CSQU3054383 CNSHA").decode().rstrip("=").lower()
    assert find_container_data_deep(f"{b32}.d.example".encode()).containers == ("CSQU3054383",)


def mqtt(dst: str, topic: str = "terminal/cranes/STS-07/ocr") -> MqttPublish:
    return MqttPublish(ts=T0, frame=4, src=OCR, dst=dst, sport=41000, dport=1883, source="t.pcap",
                       topic=topic, payload=OCR_EVENT)


def test_ocr_event_to_the_terminal_broker_is_normal() -> None:
    assert run([mqtt(BROKER)], profile=sts07()) == []


def test_work_order_from_tos_to_cms_is_normal() -> None:
    order = HttpRequest(ts=T0, frame=5, src=TOS, dst=CMS, dport=8080, source="t.pcap", method="POST",
                        host="cms:8080", uri="/workorders", body=b'{"container":"CSQU3054383"}')
    assert run([order], profile=sts07()) == []


def test_ocr_event_to_an_outside_broker_is_critical() -> None:
    (f,) = run([mqtt("198.51.100.61"), mqtt("198.51.100.61")], profile=sts07())
    assert f.category == "data-leak" and f.severity == Severity.CRITICAL and f.count == 2
    assert f.src == OCR and f.dst == "198.51.100.61:1883"
    assert f.evidence[0].values["containers"] == ["CSQU3054383"]
    assert "OCR events" in f.title


def test_http_post_to_an_outside_host_without_profile() -> None:
    post = HttpRequest(ts=T0, frame=9, src="192.168.40.20", dst="203.0.113.5", dport=80, source="t.pcap",
                       method="POST", host="collector.example", uri="/up", body=OCR_EVENT)
    (f,) = run([post], crane=None)
    assert f.category == "data-leak" and f.dst == "203.0.113.5:80"


def test_raw_tcp_payload_to_an_unknown_internal_host_with_profile() -> None:
    raw = Payload(ts=T0, frame=3, src=OCR, dst="10.20.7.77", dport=9000, source="t.pcap",
                  from_client=True, data=b"CSQU3054383;CNSHA;USORF\n")
    (f,) = [f for f in run([raw], profile=sts07()) if f.category == "data-leak"]
    assert f.severity == Severity.HIGH and f.dst == "10.20.7.77:9000"


def test_dns_labels_carrying_container_numbers() -> None:
    name = binascii.hexlify(b"CSQU3054383").decode() + ".x.leak-domain.example"
    q = DnsQuery(ts=T0, frame=2, src=OCR, dst=DNS, dport=53, source="t.pcap", name=name)
    findings = [f for f in run([q], profile=sts07()) if f.category == "data-leak"]
    assert len(findings) == 1 and findings[0].evidence[0].values["encoding"] == "hex"


def test_baseline_receivers_are_allowed_without_profile() -> None:
    baseline = learn([mqtt(BROKER)])
    assert run([mqtt(BROKER)], baseline=baseline) == []
    assert [f.category for f in run([mqtt("10.20.0.99")], baseline=baseline)] == ["data-leak"]


@pytest.mark.parametrize("compress", ["gzip", "zlib"])
def test_compressed_ocr_events_to_an_outside_host(compress: str) -> None:
    import gzip
    import zlib

    day = b"\n".join(OCR_EVENT for _ in range(200))
    body = gzip.compress(day) if compress == "gzip" else zlib.compress(day)
    assert b"CSQU" not in body  # nothing to see in the clear
    post = HttpRequest(ts=T0, frame=9, src=OCR, dst="203.0.113.5", dport=443, source="t.pcap",
                       method="POST", host="collector.example", uri="/upload", body=body)
    raw = Payload(ts=T0, frame=11, src=OCR, dst="203.0.113.6", dport=9000, source="t.pcap",
                  from_client=True, data=body[: len(body) // 2])  # cut short by the capture
    batch = MqttPublish(ts=T0, frame=13, src=OCR, dst="198.51.100.61", dport=1883, source="t.pcap",
                        topic="cranes/07/ocr/batch", payload=body)
    found = {f.dst: f for f in run([post, raw, batch], profile=sts07()) if f.category == "data-leak"}
    assert set(found) == {"203.0.113.5:443", "203.0.113.6:9000", "198.51.100.61:1883"}
    for f in found.values():
        assert f.evidence[0].values["encoding"] == compress
        assert f.evidence[0].values["containers"] == ["CSQU3054383"]


def test_compressed_bytes_without_container_data_and_bombs_stay_quiet() -> None:
    import gzip

    from cranewatch.detect.content import MAX_INFLATED, inflated

    bomb = gzip.compress(b"\0" * (50 * MAX_INFLATED))
    name, view = inflated(bomb) or ("", b"")
    assert name == "gzip" and len(view) == MAX_INFLATED  # bounded however large it unpacks
    assert inflated(b"\x1f\x8b\x08garbage-not-deflate") is None
    assert not find_container_data_deep(bomb)
    quiet = HttpRequest(ts=T0, frame=9, src=OCR, dst="203.0.113.5", dport=443, source="t.pcap",
                        method="POST", host="collector.example", uri="/upload",
                        body=gzip.compress(b"firmware log line\n" * 100))
    assert [f for f in run([quiet], profile=sts07()) if f.category == "data-leak"] == []
