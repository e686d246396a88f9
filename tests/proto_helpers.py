"""Helpers of the protocol unit tests: a flow context and feeding bytes to a decoder."""

from __future__ import annotations

from cranewatch.errors import DecodeError
from cranewatch.protocols.base import Event, FlowContext, StreamDecoder

CLIENT, SERVER = "10.7.0.10", "10.7.0.20"


def context(port: int, transport: str = "tcp") -> FlowContext:
    return FlowContext(CLIENT, 50000, SERVER, port, transport, "unit")


def feed_all(decoder: StreamDecoder, *pdus: tuple[bool, bytes]) -> list[Event]:
    """Feed (from_client, bytes) pairs as frames 1, 2, ... and collect the events."""
    events: list[Event] = []
    for frame, (from_client, data) in enumerate(pdus, start=1):
        events.extend(decoder.feed(from_client, data, float(frame), frame))
    return events


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def problems_of(decoder: StreamDecoder, from_client: bool, data: bytes, ts: float = 1.0,
                frame: int = 1) -> list[DecodeError]:
    """Feed one piece of bytes; the problems the decoder reported for it (a decoder never
    raises on bad input: ``protocols.base``)."""
    problems = getattr(decoder, "problems", None) or []
    before = len(problems)
    decoder.feed(from_client, data, ts, frame)
    return list((getattr(decoder, "problems", None) or [])[before:])
