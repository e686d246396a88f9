"""Helpers of the protocol unit tests: a flow context and feeding bytes to a decoder."""

from __future__ import annotations

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
