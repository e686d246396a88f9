"""Garbage never breaks a decoder: random bytes in random pieces raise DecodeError or nothing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cranewatch.errors import DecodeError
from cranewatch.protocols import load_all
from cranewatch.protocols.arp import decode_arp
from cranewatch.protocols.base import REGISTRY, DecoderSpec, FlowContext
from cranewatch.protocols.syslog import parse_syslog
from cranewatch.protocols.tls import parse_certificate

load_all()
# Modbus has its own tests (tests/test_protocols_modbus*); these are the decoders of issue 4.
SPECS = sorted({(s.name, s.transport): s for s in REGISTRY if s.name != "modbus"}.values(),
               key=lambda s: (s.name, s.transport))

# Prefixes that get garbage past the first header check, so the fuzzing reaches deep code.
PREFIXES = [b"", b"\x03\x00\x00\x30\x02\xf0\x80\x32", b"\x03\x00\x00\x40\x29\xe0", b"\x16\x03\x01\x00\x80\x01",
            b"\x70\x00\x20\x00", b"\x6f\x00\x30\x00", b"MSGF\x40\x00\x00\x00", b"OPNF\x60\x00\x00\x00",
            b"HELF\x30\x00\x00\x00", b"\x10\x20\x00\x04MQTT\x05", b"\x30\x10", b"SSH-2.0-x\r\n",
            b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"RFB 003.008\n", b"\xff\xfd", b"\x17\x24", b"<13>", b"\x00\x20"]

chunks = st.lists(st.tuples(st.booleans(), st.binary(max_size=120)), min_size=1, max_size=8)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.transport}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), pieces=chunks, gap=st.booleans())
def test_garbage_raises_only_decode_error(spec: DecoderSpec, prefix: bytes,
                                          pieces: list[tuple[bool, bytes]], gap: bool) -> None:
    port = min(spec.ports) if spec.ports else 1
    decoder = spec.factory(FlowContext("10.0.0.1", 40000, "10.0.0.2", port, spec.transport, "fuzz"))
    first = True
    for frame, (from_client, data) in enumerate(pieces, start=1):
        payload = prefix + data if first else data
        first = False
        try:
            events = decoder.feed(from_client, payload, float(frame), frame)
        except DecodeError:
            continue
        assert all(event.frame == frame for event in events)
        if gap and frame == 2:
            decoder.gap(from_client)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80))
def test_garbage_arp_syslog_certificate(data: bytes) -> None:
    for parse in (decode_arp, parse_syslog, parse_certificate):
        try:
            parse(data)  # type: ignore[operator]
        except DecodeError:
            pass
