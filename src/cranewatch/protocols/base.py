"""What every protocol decoder shares: the event base record and the decoder registry.

A decoder is a small class per protocol that the pipeline creates once per flow it claims
(by port or by content, see ``DecoderSpec``) and feeds with the contiguous bytes of each
direction as TCP reassembly releases them (or each UDP datagram). It returns typed events.
Decoders are pure: bytes in, events out, no I/O.

Bad input is reported, never fatal, and never raised: ``feed`` returns the events it could
decode and puts a located ``cranewatch.errors.DecodeError`` per broken PDU in the decoder's
``problems`` list (Zeek's "weird": what, where, which frame), then goes on with the next PDU
(``framing.PduBuffer`` resynchronises on the next plausible header). ``ReportsProblems`` gives
a decoder that shape: it writes ``_feed``, which appends to the event list it is handed and
may raise a DecodeError that ends the call; the events before it are kept. The pipeline turns
each problem into a warning with the file and frame and never feeds the same bytes again. Any
other exception is a bug met on this flow's bytes: the pipeline records an "internal" warning
naming the flow and frame and decodes nothing more of that flow; the rest of the run goes on.

Event names follow ``<proto>_<object>_<request|response>`` in their ``kind`` field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from cranewatch.errors import DecodeError
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


class ReportsProblems:
    """The ``feed`` of a decoder that reports bad input in ``problems`` instead of raising.

    The decoder writes ``_feed(from_client, data, ts, frame, events)``: it appends events to
    ``events`` (or returns another list of them) and may raise a DecodeError, which ends the
    call: the error goes to ``problems``, the events appended before it are returned.
    """

    problems: list[DecodeError]

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        events: list[Event] = []
        try:
            given = self._feed(from_client, data, ts, frame, events)
        except DecodeError as exc:
            self.report(exc)
            return events
        if given is not None and given is not events:
            events.extend(given)
        return events

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        raise NotImplementedError

    def report(self, problem: DecodeError) -> None:
        """Note a problem met in this flow's bytes (the pipeline warns with its location).

        A problem is a record, never raised again: its traceback is dropped, since its frames
        (up to the pipeline's, which hold the whole batch) would outlive the call in a
        reference cycle with the frame that reads the problem. So are those of the errors it
        was raised while handling (``raise ... from None`` keeps them as its context).
        """
        problem.__traceback__ = None
        context = problem.__context__
        while context is not None:
            context.__traceback__ = None
            context = context.__context__
        problems = self.__dict__.get("problems")
        if problems is None:
            problems = self.problems = []
        problems.append(problem)


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
