"""What every protocol decoder shares: the event base record and the decoder registry.

A decoder is a small class per protocol that the pipeline creates once per flow it claims
(by port or by content, see ``DecoderSpec``) and feeds with the contiguous bytes of each
direction as TCP reassembly releases them (or each UDP datagram). It returns typed events.
Decoders are pure: bytes in, events out, no I/O. A decoder that meets bytes that break its
protocol raises ``cranewatch.errors.DecodeError`` for that PDU; the pipeline records a warning
with the file and frame and keeps going.

Event names follow ``<proto>_<object>_<request|response>`` in their ``kind`` field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

_T = TypeVar("_T")


def _slot_setter_init(cls: type) -> Callable[..., None] | None:
    """A drop-in ``__init__`` for a frozen slots dataclass that fills the slots directly.

    The ``__init__`` dataclasses writes for a frozen class goes through
    ``object.__setattr__(self, name, value)`` per field (a bound wrapper and a name lookup in
    the type each time); calling each slot descriptor's ``__set__`` does the same store in
    half the instructions (callgrind: ~0.7 k instead of ~1.4 k per field). Decoders build one
    event per PDU, so on a busy capture this is several percent of the run. The signature
    (names, defaults, keyword-only) is the dataclass's own; classes with ``__post_init__``,
    ``InitVar`` or ``init=False`` fields, or a hand-written ``__init__``, keep theirs
    (returns None).
    """
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen or hasattr(cls, "__post_init__"):
        return None
    generated = getattr(cls.__dict__.get("__init__"), "__code__", None)
    if generated is None or generated.co_filename != "<string>":
        return None  # a hand-written __init__ (dataclasses' own is compiled from a string)
    fields = dataclasses.fields(cls)
    arguments = generated.co_varnames[1:generated.co_argcount + generated.co_kwonlyargcount]
    if set(arguments) != {f.name for f in fields if f.init} or not all(f.init for f in fields):
        return None  # InitVar or init=False: rare enough to leave to dataclasses
    namespace: dict[str, Any] = {"_FACTORY": object()}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        slot: Any = getattr(cls, f.name, None)
        if type(slot).__name__ != "member_descriptor":
            return None  # not a plain slot: leave it to dataclasses
        namespace[f"_set_{f.name}"] = slot.__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param = f"{f.name}=_FACTORY"
            body.append(f" if {f.name} is _FACTORY: {f.name} = _factory_{f.name}()")
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        body.append(f" _set_{f.name}(self, {f.name})")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({signature}) -> None:\n" + "\n".join(body or [" pass"]), namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = getattr(cls.__dict__.get("__init__"), "__doc__", None)
    return init


def fast_frozen_init(cls: type[_T]) -> type[_T]:
    """Class decorator (above ``@dataclass(frozen=True, slots=True)``): the faster ``__init__``.

    For frozen records built in bulk outside the Event hierarchy (Event subclasses get it
    by themselves); see ``_slot_setter_init``. Classes it cannot serve keep their ``__init__``.
    """
    init = _slot_setter_init(cls)
    if init is not None:
        cls.__init__ = init  # type: ignore[method-assign]
    return cls


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every decoded event: when, which frame, who to whom.

    ``src``/``dst`` are IP addresses as text (MAC addresses for layer-2-only events such as
    ARP); ``sport``/``dport`` are 0 where there is no port. ``source`` is the capture file (or
    Zeek log) the event came from, so evidence can name it.

    Every subclass declared ``@dataclass(frozen=True, slots=True)`` gets a faster ``__init__``
    with the same signature (``fast_frozen_init``); the objects stay frozen.
    """

    kind: ClassVar[str] = "event"
    ts: float
    frame: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    source: str = ""

    def __init_subclass__(cls) -> None:
        # No ``super()`` here: ``slots=True`` re-creates Event, and the zero-argument form
        # would name the discarded first class. ``object.__init_subclass__`` does nothing.
        # ``@dataclass(slots=True)`` creates the class a second time, fields and generated
        # ``__init__`` in hand: that creation is the one to fix up.
        if "__slots__" in cls.__dict__:
            fast_frozen_init(cls)


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
