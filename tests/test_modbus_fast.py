"""Pieces of the vectorised Modbus path, checked against the plain NumPy they replace."""

from __future__ import annotations

import numpy as np
import pytest

from cranewatch.protocols.modbus import _stable_order, _windows


@pytest.mark.parametrize("width", [1, 2, 9, 12])
def test_windows_are_the_bytes_at_each_offset_and_repeat_the_last_byte_past_the_end(
        width: int) -> None:
    buf = np.random.default_rng(width).integers(0, 256, 64).astype(np.uint8)
    offsets = np.array([0, 7, 7, 30, 64 - width, 60, 63, 2], dtype=np.int64)
    want = buf[np.minimum(offsets[:, None] + np.arange(width), len(buf) - 1)]
    got = _windows(buf, offsets, width)
    assert got.shape == (len(offsets), width) and got.dtype == np.uint8
    assert got.tolist() == want.tolist()
    assert _windows(buf, offsets[:0], width).shape == (0, width)


@pytest.mark.parametrize("bound", [5, 1 << 16, 1 << 20])
def test_stable_order_is_numpys_stable_argsort(bound: int) -> None:
    keys = np.random.default_rng(bound).integers(0, min(bound, 40), 500)
    assert _stable_order(keys, bound).tolist() == np.argsort(keys, kind="stable").tolist()


# The Modbus framing is defined once, by the per-flow decoder (``ModbusDecoder``: MBAP header,
# then ``parse_request``/``parse_response``); the vectorised path is a faster subset of it
# and is checked against it here, ADU by ADU: whatever it takes as a well-formed request the
# decoder decodes to the same request without a problem.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cranewatch.protocols.base import FlowContext  # noqa: E402
from cranewatch.protocols.modbus import (  # noqa: E402
    FastInput,
    ModbusBook,
    ModbusDecoder,
    ModbusRequest,
    fast_reads,
)

_CTX = FlowContext("10.0.0.1", 40000, "10.0.0.2", 502, "tcp", "unit")


@st.composite
def _request_adus(draw: st.DrawFn) -> bytes:
    fc = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 7, 23]))
    body = draw(st.one_of(
        st.binary(min_size=0, max_size=12),  # anything
        st.builds(lambda a, q: a.to_bytes(2, "big") + q.to_bytes(2, "big"),  # address, quantity
                  st.integers(0, 0xFFFF), st.integers(0, 0x0800)),
        st.builds(lambda a, q, n, d: a.to_bytes(2, "big") + q.to_bytes(2, "big") + bytes([n]) + d,
                  st.integers(0, 0xFFFF), st.integers(0, 130), st.integers(0, 255),
                  st.binary(max_size=20)),
    ))
    pdu = bytes([fc]) + body
    length = len(pdu) + 1 + draw(st.sampled_from([0, 0, 0, -1, 1, 2]))  # MBAP length, mostly right
    protocol = draw(st.sampled_from([0, 0, 0, 1]))
    return (draw(st.integers(0, 0xFFFF)).to_bytes(2, "big") + protocol.to_bytes(2, "big")
            + (length & 0xFFFF).to_bytes(2, "big") + bytes([draw(st.integers(0, 255))]) + pdu)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_request_adus())
def test_what_the_vectorised_path_takes_the_decoder_decodes_the_same(adu: bytes) -> None:
    data = FastInput(
        buf=np.frombuffer(adu, dtype=np.uint8), flow=np.zeros(1, dtype=np.int64),
        from_client=np.ones(1, dtype=bool), seq=np.array([1000], dtype=np.int64),
        offset=np.zeros(1, dtype=np.int64), length=np.array([len(adu)], dtype=np.int64),
        ts=np.array([1.0]), frame=np.array([7], dtype=np.int64), next_seq=[(1000, 5000)],
        pending=[{}])
    result = fast_reads(data, ModbusBook(), [_CTX], "unit")
    decoder = ModbusDecoder(_CTX)
    events = decoder.feed(True, adu, 1.0, 7)
    if not result.handled[0]:
        return  # the vectorised path may decline anything: the decoder then takes it
    assert not decoder.problems
    (event,) = events
    assert isinstance(event, ModbusRequest) and event.function == adu[7]
    if result.events:  # a write: the vectorised path makes the very event the decoder makes
        assert [e for _, e in result.events] == [event]
        return
    assert not event.detail  # a plain read, folded into its series: the request waits
    (asked,) = result.pending[0].values()
    assert (asked.unit_id, asked.fields.function, asked.fields.address, asked.fields.quantity) == (
        event.unit_id, event.function, event.address, event.quantity)
