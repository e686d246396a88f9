"""What every protocol decoder shares: the event base record and the decoder registry.

A decoder is a small class per protocol that the pipeline creates once per flow it claims
(by port or by content, see ``DecoderSpec``) and feeds with the contiguous bytes of each
direction as TCP reassembly releases them (or each UDP datagram). It returns typed events.
Decoders are pure: bytes in, events out, no I/O.

Bad input is reported, never fatal. A decoder that meets a PDU that breaks its protocol
either appends a located ``cranewatch.errors.DecodeError`` to its ``problems`` list and goes
on with the next PDU (``feed`` then returns the events around it: Zeek's "weird"; the Modbus
decoder works so), or raises the DecodeError from ``feed`` once it has consumed that PDU
(the events of that call are then lost; the bytes after the PDU stay buffered, see
``framing.PduBuffer``). The pipeline turns each into a warning with the file and frame and
never feeds the same bytes again. Any other exception is a bug met on this flow's bytes: the
pipeline records an "internal" warning naming the flow and frame and decodes nothing more of
that flow; the rest of the run goes on.

Event names follow ``<proto>_<object>_<request|response>`` in their ``kind`` field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from cranewatch.model import FastFrozen, fast_frozen_init


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(FastFrozen):
    """Base of every decoded event: when, which frame, who to whom.

    ``src``/``dst`` are IP addresses as text (MAC addresses for layer-2-only events such as
    ARP); ``sport``/``dport`` are 0 where there is no port. ``source`` is the capture file (or
    Zeek log) the event came from, so evidence can name it.

    Every subclass declared ``@dataclass(frozen=True, slots=True)`` gets a faster ``__init__``
    with the same signature (``model.FastFrozen``); the objects stay frozen.
    """

    kind: ClassVar[str] = "event"
    ts: float
    frame: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    source: str = ""


@fast_frozen_init  # one per flow a decoder claims: every DNS lookup is a flow
@dataclass(frozen=True, slots=True)
class FlowContext:
    """What a decoder may know about the flow it decodes (client = the side that opened it)."""

    client: str
    client_port: int
    server: str
    server_port: int
    transport: str  # "tcp" | "udp"
    source: str = ""


class StreamDecoder(Protocol):
    """Decodes one flow. ``feed`` gets newly contiguous bytes of one direction.

    ``frame`` and ``ts`` are those of the packet whose bytes complete what is fed (for a
    PDU split over segments, the last segment: the frame tshark also reports it in).
    ``gap()`` tells the decoder that bytes were lost in that direction (capture started
    mid-stream or packets are missing) so it can resynchronise.
    """

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]: ...

    def gap(self, from_client: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """How the pipeline finds flows for a decoder.

    ``ports``: well-known server ports (a hint only). ``probe``: given the first payload bytes
    the client sent and the first the server sent (either may be empty), says whether this
    flow speaks the protocol, so a protocol on a lying port is still recognised. ``priority``
    orders probes (lower first).
    """

    name: str
    transport: str  # "tcp" | "udp"
    ports: frozenset[int]
    factory: Callable[[FlowContext], StreamDecoder]
    probe: Callable[[bytes, bytes], bool] | None = None
    priority: int = 50
    aliases: tuple[str, ...] = field(default=())


REGISTRY: list[DecoderSpec] = []


def register(spec: DecoderSpec) -> DecoderSpec:
    """Add a decoder; protocol modules call this at import (see ``protocols.load_all``)."""
    REGISTRY.append(spec)
    return spec
