"""The protocol registry: a protocol module declares itself here once, and everything else
that must know protocols reads its declaration.

A protocol module ends with one ``register_protocol(ProtocolSpec(...))``: its name, its flow
decoders (``base.DecoderSpec``: ports, transport, content probe), the ethertypes it decodes
without a flow (``LinkSpec``, e.g. ARP), the adapter of every event class it defines (how the
events become the detectors' facts, ``detect.facts``), the names and transports a profile's
allow rules may give it, its Zeek log mapping, and optionally a per-run state (``ProtocolRun``)
with a batch fast path, an event fold, register series and result summaries. From these the
registry derives the pipeline's dispatch, ``profile.PROTOCOLS``, the in-service policy's
transports (``policy.inservice.TRANSPORTS``), the Zeek reader's tables and the content
probes ``identify`` runs.

A protocol whose polling gives events no consumer reads (their adapter gives no fact) may
fold them in its batch path (``FoldRun``: S7 read/write var, OPC UA services, CIP explicit
messages): the decoder's state is kept and the events are counted, never built; what a
detector reads comes out as through the decoder.

An event class defined in a protocol module without an adapter is an error at registration
(``RegistrationError``), not events silently dropped: an adapter is ``AS_IS`` (detectors read
the event itself), ``IGNORED`` (no detector reads it: say so) or an ``Adapter`` with a
converter and the fact types it gives.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cranewatch.protocols.base import REGISTRY, DecoderSpec, Event

if TYPE_CHECKING:
    import numpy as np

    from cranewatch.decode import DecodedBatch
    from cranewatch.flows import Flow
    from cranewatch.sources.pcap import PacketBatch


class RegistrationError(Exception):
    """A protocol declaration that cannot work (an event class without an adapter, a name or
    an ethertype registered twice): raised when the module is imported, never at run time."""


Convert = Callable[[Any], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Adapter:
    """How the events of one class become facts: ``convert`` gives facts of the ``gives``
    types (a run whose detectors judge none of them skips the class unread)."""

    convert: Convert
    gives: tuple[type, ...]


def _as_is(event: Any) -> Sequence[Any]:
    return (event,)


def _nothing(event: Any) -> Sequence[Any]:
    return ()


AS_IS = Adapter(_as_is, ())  # detectors read these events as they are (Modbus requests)
IGNORED = Adapter(_nothing, ())  # no detector reads these (answers, connection set-up)

@dataclass(frozen=True, slots=True)
class LinkFrames:
    """A batch's frames of one ethertype: each one's body (what follows the ethertype and any
    VLAN tags), Ethernet source and destination (text), time and frame number."""

    bodies: list[bytes]
    src: list[str]
    dst: list[str]
    ts: list[float]
    frames: list[int]
    source: str


# (frames, the protocol's run state or None) -> (position in frames, event or located
# DecodeError), in frame order; a body may give several events or none.
LinkDecode = Callable[[LinkFrames, "ProtocolRun | None"], list[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A protocol straight on Ethernet (no IP, no flow): the frames of its ethertype go to
    ``decode`` a batch's at once. ``max_body``: bytes of the L3 body it reads (Ethernet
    padding beyond them is not given)."""

    ethertype: int
    decode: LinkDecode
    max_body: int | None = None


@dataclass(slots=True)
class BatchView:
    """What a batch fast path sees of one batch: the packets, their L2-L4 decode, the flows
    of the batch (``flows[index[row]]``, ``index`` -1 for packets of no flow) and each
    packet's direction; ``rows`` are the payload rows not yet taken. ``per_packet`` (when
    given) runs the per-packet path on some rows at once: a fast path may hand it a flow's
    irregular packet and take the flow back after it."""

    batch: PacketBatch
    decoded: DecodedBatch
    flows: list[Flow]
    index: np.ndarray
    from_client: np.ndarray
    rows: np.ndarray
    per_packet: Callable[[np.ndarray], None] | None = None
    # The decoders' way for one in-order segment of this batch, for a batch path that meets
    # what it does not take (``FoldRun``): (flow, to_server, data, ts, frame, source, row).
    feed: Callable[[Flow, bool, bytes, float, int, str, int], None] | None = None
    # ... and for bytes lost before a segment: (flow, from_client, frame, row)
    gap: Callable[[Flow, bool, int, int], None] | None = None
    # After ``per_packet`` took some rows (the second argument) and so moved their flows'
    # streams on: ``rows`` without the segments of those flows the streams would now drop
    # (bytes all delivered already, ``flows.screen_segments``).
    screen: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # Per row, as of the last screen: the segment opens a hole in its stream (it starts beyond
    # every byte the stream saw before it), so its flow stops there (None: not screened).
    stops: np.ndarray | None = None


class Announced:
    """Stands in for the decoder of a flow another flow announced (FTP's data connection, which
    its control session negotiated): the flow is named ``protocol`` and none of its bytes are
    decoded (``finished``). ``session``: the announcing flow's (client, client port, server,
    server port)."""

    __slots__ = ("protocol", "session")
    finished = True

    def __init__(self, protocol: str, session: tuple[str, int, str, int]) -> None:
        self.protocol, self.session = protocol, session

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        return []

    def gap(self, from_client: bool) -> None:
        return None


class ProtocolRun:
    """One run's state of a protocol, beyond its per-flow decoders (all hooks optional).

    ``folds``: event classes ``observe`` sees before the sinks; ``observe`` returns True
    when it folded the event into its own state (then the sinks do not get it, unless the
    pipeline runs with ``fold_reads=False``). ``batch`` takes what it can of a batch's
    payload rows (a vectorised path) and returns the rows left for the per-packet path; the
    events it makes go to ``emit(row, event)``, counters to ``count(name, n)``. ``fed`` is told
    after each call of one of its decoders, ``flow_ended`` when one of its flows ends.
    ``expected`` is asked about a flow before a decoder is chosen for it (at its first
    payload, in capture order after what its decoders were fed): an ``Announced`` when one of
    this protocol's flows announced it (a flow of the protocol then ends the batch's early
    choice of new flows, see ``pipeline``).
    ``take_series`` hands out what it gathered for ``Sink.on_series`` (``take_slices``: in
    time slices during the run); ``summary`` gives the
    result document's fields this protocol fills.
    """

    folds: tuple[type, ...] = ()
    batch_path = False  # True when ``batch`` does anything
    protocol = ""  # the name of the protocol it belongs to (set by ``runs``)

    def observe(self, event: Any) -> bool:
        return False

    def batch(self, view: BatchView, emit: Callable[[int, Any], None],
              count: Callable[[str, int], None]) -> np.ndarray:
        return view.rows

    def fed(self, decoder: Any) -> None:
        return None

    def flow_ended(self, flow: Flow) -> None:
        return None

    def expected(self, flow: Flow) -> Announced | None:
        return None

    def take_series(self) -> Iterable[Any]:
        return ()

    def take_slices(self) -> Iterable[Any]:
        """The values gathered since the last call, for ``Sink.on_series_slices``; once asked,
        ``take_series`` gives what stays of each series (a summary)."""
        return ()

    def keep_values(self, keep: bool) -> None:
        """Told at the start of a run: False when the values will go out in slices that no
        sink takes (only ``fold_slices``, then the summaries of ``take_series``), so the run
        need not keep them at all."""
        return None

    def fold_slices(self) -> None:
        """``take_slices`` when no sink takes the values: only what ``take_series`` gives of
        them afterwards stays (a run may do it without building the pieces)."""
        for _ in self.take_slices():
            pass

    def summary(self) -> dict[str, Any]:
        return {}

    def merge_summaries(self, summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The ``summary`` of several runs over captures apart from each other (``parallel``'s
        groups) as one run over them all would give it; None: it cannot be known from them
        (the run is then done again in one process)."""
        return None


class FoldRun(ProtocolRun):
    """A batch path that folds the PDUs no consumer reads (Zeek's way: decode what a detector
    needs and count the rest).

    A protocol's polling (S7 read var, OPC UA reads and publishes) gives events whose adapter
    gives no fact (``IGNORED``, or a converter that returns nothing for them), so no
    detector, baseline or process check ever reads them. ``fold`` takes a flow's in-order
    segment when it holds whole PDUs, each such a PDU (one, or several back to back: ENIP):
    it updates the decoder's state the way its
    ``feed`` would (request/answer matching), and returns the kinds of the events ``feed``
    would have given (counted in the run's events, not built), or None to leave the segment
    to the decoder. ``fold`` must change nothing when it returns None, and must take only
    PDUs on which ``feed`` would report no problem.

    Taken: segments of TCP flows whose decoder is a ``decoder_type`` that continue their direction's stream exactly (nothing held behind a hole). The first
    segment of a flow ``fold`` declines ends that flow's batch path for the batch: its later
    segments go the decoder's way, in order.
    """

    batch_path = True
    decoder_type: type = object

    def fold(self, decoder: Any, from_client: bool, buf: bytes, off: int, size: int,
             frame: int) -> tuple[str, ...] | None:
        return None

    def batch(self, view: BatchView, emit: Callable[[int, Any], None],
              count: Callable[[str, int], None]) -> np.ndarray:
        import numpy as np

        from cranewatch.flows import IPPROTO_TCP, TCP_SYN

        flows, index, rows, decoded = view.flows, view.index, view.rows, view.decoded
        dtype = self.decoder_type
        mine = np.fromiter((type(f.decoder) is dtype and f.proto == IPPROTO_TCP for f in flows),
                           dtype=bool, count=len(flows))
        if not mine.any():
            return rows
        candidate = rows[mine[index[rows]]]
        if len(candidate) == 0:
            return rows
        fold = self.fold
        buf = view.batch.buf
        feed, gap, source = view.feed, view.gap, view.batch.source
        stopped: set[int] = set()
        taken: list[int] = []
        folded = 0
        given_counts: dict[tuple[str, ...], int] = {}  # what folded segments stood for, how often
        columns = zip(candidate.tolist(), index[candidate].tolist(),
                      view.from_client[candidate].tolist(), decoded.payload_off[candidate].tolist(),
                      decoded.payload_len[candidate].tolist(), decoded.tcp_seq[candidate].tolist(),
                      decoded.tcp_flags[candidate].tolist(), view.batch.frame[candidate].tolist(),
                      view.batch.ts[candidate].tolist(), strict=True)
        unfinished: set[int] = set()  # flows whose decoder was seen to want bytes
        for row, flow_index, to_server, off, size, seq, flags, frame, ts in columns:
            if flow_index in stopped:
                continue
            flow = flows[flow_index]
            stream = (flow.to_server if to_server else flow.to_client).stream
            if (flow_index in unfinished and stream is not None and seq == stream.next_seq
                    and size and not flags & TCP_SYN and not stream.held):
                # the common case: the next segment of a stream, decoder unchanged
                given = fold(flow.decoder, to_server != flow.decoder_reversed, buf, off, size, frame)
                if given is not None:
                    stream.next_seq = (seq + size) & 0xFFFFFFFF
                    taken.append(row)
                    given_counts[given] = given_counts.get(given, 0) + 1
                    folded += 1
                elif feed is None:
                    stopped.add(flow_index)
                else:  # not one to fold: the decoder gets it, in its turn
                    stream.next_seq = (seq + size) & 0xFFFFFFFF
                    taken.append(row)
                    feed(flow, to_server, buf[off:off + size], ts, frame, source, row)
                    unfinished.discard(flow_index)  # it may have finished, or been given up on
                continue
            if stream is None:
                stopped.add(flow_index)
                continue
            if flags & TCP_SYN and not size:  # what the decoders' way does with a handshake
                stream.syn(seq)
                taken.append(row)
                continue
            decoder = flow.decoder
            if flags & TCP_SYN or not size or type(decoder) is not dtype:
                stopped.add(flow_index)  # (not its decoder any more: given up on)
                continue
            if getattr(decoder, "finished", False):  # it wants no more bytes
                taken.append(row)
                continue
            unfinished.add(flow_index)
            if stream.held:
                stopped.add(flow_index)
                continue
            if seq != stream.next_seq:
                if stream.next_seq is not None:
                    behind = (stream.next_seq - seq) & 0xFFFFFFFF
                    if size <= behind < 0x80000000:  # a retransmission of bytes delivered
                        taken.append(row)
                        continue
                if stream.next_seq is not None or gap is None:
                    stopped.add(flow_index)
                    continue
                # the capture started in the middle of this stream (``Stream.segment``)
                gap(flow, to_server != flow.decoder_reversed, frame, row)
                stream.next_seq = seq
                if type(flow.decoder) is not dtype:  # the gap failed it: the bytes go as they would
                    stream.next_seq = (seq + size) & 0xFFFFFFFF
                    taken.append(row)
                    stopped.add(flow_index)
                    if feed is not None:
                        feed(flow, to_server, buf[off:off + size], ts, frame, source, row)
                    continue
            given = fold(decoder, to_server != flow.decoder_reversed, buf, off, size, frame)
            if given is None and feed is None:
                stopped.add(flow_index)
                continue
            stream.next_seq = (seq + size) & 0xFFFFFFFF
            taken.append(row)
            if given is None:  # not one to fold: the decoder gets it, in its turn
                assert feed is not None
                feed(flow, to_server, buf[off:off + size], ts, frame, source, row)
                unfinished.discard(flow_index)  # it may have finished, or been given up on
            else:
                given_counts[given] = given_counts.get(given, 0) + 1
                folded += 1
        if not taken:
            return rows
        kinds: dict[str, int] = {}  # in the order the kinds first came, as PDU by PDU
        for given, n in given_counts.items():
            for kind in given:
                kinds[kind] = kinds.get(kind, 0) + n
        for kind, n in kinds.items():
            count(kind, n)
        if folded:
            count(f"{self.protocol}_folded_pdus", folded)
        done = np.zeros(len(view.batch), dtype=bool)
        done[taken] = True
        return rows[~done[rows]]


# A Zeek log record -> events (``sources.zeek``: record and result are its ZeekRecord and
# ZeekResult; typed loosely here so the registry does not import the reader).
ZeekMapper = Callable[[Any, Any], list[Event]]


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol, declared once by its module (see the module docstring).

    ``policy``: the names a profile may allow this protocol by, each with the transports an
    allow rule opens; ``None`` derives them from the decoders (the protocol's name, the
    transports of its decoders). ``zeek``: Zeek log name -> mapper. ``detectors``: factories
    of detectors (``detect.base.Detector``) that judge this protocol's own facts, run with
    every other detector. ``masters``: a master/server control protocol (a client the
    baseline never saw is rogue-master's, ``master_protocols``). ``helper``: the kernel's
    conntrack helper (``nf_conntrack_<helper>``) the in-service policy assigns to the
    connections an allow rule of this protocol lets through, so the connections they negotiate
    pass as related; ``helped``: the name those connections get (``ProtocolRun.expected``),
    which need no allow rule of their own.
    """

    name: str
    module: str
    decoders: tuple[DecoderSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    adapters: Mapping[type, Adapter] = field(default_factory=dict)
    policy: Mapping[str, tuple[str, ...]] | None = None
    zeek: Mapping[str, ZeekMapper] = field(default_factory=dict)
    run: Callable[[], ProtocolRun] | None = None
    detectors: tuple[Callable[[], Any], ...] = ()
    masters: bool = False
    helper: str = ""
    helped: str = ""

    def policy_names(self) -> dict[str, tuple[str, ...]]:
        if self.policy is not None:
            return dict(self.policy)
        transports = tuple(dict.fromkeys(d.transport for d in self.decoders))
        return {self.name: transports} if transports else {}


PROTOCOLS: dict[str, ProtocolSpec] = {}
_ADAPTERS: dict[str, Adapter] = {}  # event kind -> adapter
_LINKS: dict[int, LinkSpec] = {}


def register_protocol(spec: ProtocolSpec) -> ProtocolSpec:
    """Add a protocol (its module calls this once, at import)."""
    if spec.name in PROTOCOLS:
        if PROTOCOLS[spec.name].module == spec.module:
            return PROTOCOLS[spec.name]  # the module imported again (a reload)
        raise RegistrationError(f"protocol {spec.name!r} registered by {PROTOCOLS[spec.name].module} "
                                f"and again by {spec.module}")
    module = sys.modules.get(spec.module)
    defined = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Event)
               and v is not Event and v.__module__ == spec.module] if module is not None else []
    missing = [c.__name__ for c in defined if c not in spec.adapters]
    if missing:
        raise RegistrationError(
            f"{spec.module}: event class(es) {', '.join(sorted(missing))} have no adapter in the "
            "protocol's declaration (give an Adapter, AS_IS, or IGNORED when no detector reads them)")
    for event_type, adapter in spec.adapters.items():
        kind = getattr(event_type, "kind", None)
        if not isinstance(kind, str) or not isinstance(adapter, Adapter):
            raise RegistrationError(f"{spec.module}: {event_type!r} is not an event class with a "
                                    "kind, or its adapter is not an Adapter")
        known = _ADAPTERS.get(kind)
        if known is not None and known is not adapter:
            raise RegistrationError(f"{spec.module}: event kind {kind!r} has two adapters")
    for link in spec.links:
        if link.ethertype in _LINKS:
            raise RegistrationError(f"{spec.module}: ethertype 0x{link.ethertype:04x} registered twice")
    for name in spec.policy_names():
        for other in PROTOCOLS.values():
            if name in other.policy_names():
                raise RegistrationError(f"{spec.module}: profile name {name!r} already given by "
                                        f"{other.module}")
    PROTOCOLS[spec.name] = spec
    for event_type, adapter in spec.adapters.items():
        _ADAPTERS[event_type.kind] = adapter  # type: ignore[attr-defined]
    for link in spec.links:
        _LINKS[link.ethertype] = link
    REGISTRY.extend(spec.decoders)
    return spec


def unregister_protocol(name: str) -> None:
    """Take a protocol out again (tests that register a toy protocol clean up with this)."""
    spec = PROTOCOLS.pop(name, None)
    if spec is None:
        return
    for event_type in spec.adapters:
        _ADAPTERS.pop(event_type.kind, None)  # type: ignore[attr-defined]
    for link in spec.links:
        _LINKS.pop(link.ethertype, None)
    for decoder in spec.decoders:
        if decoder in REGISTRY:
            REGISTRY.remove(decoder)


# ------------------------------------------------------------------------------ what derives

# The protocol modules, in import order (dispatch order is the probes' priorities). Adding a
# protocol: its module, and its name here.
PROTOCOL_MODULES = (
    "modbus", "s7comm", "enip", "opcua", "mqtt", "dns", "tls", "http", "ssh", "remote",
    "dhcp", "arp", "ntp", "syslog", "profinet",
    "dnp3",
    "ftp", "smb",
)


def load_all() -> dict[str, ProtocolSpec]:
    """Import every protocol module (each registers itself; idempotent); the registry."""
    for name in PROTOCOL_MODULES:
        importlib.import_module(f"cranewatch.protocols.{name}")
    return PROTOCOLS


def adapter_for(kind: str) -> Adapter | None:
    """The adapter of an event kind; None when no detector reads it (declared ``IGNORED``, or
    an event of no registered protocol)."""
    adapter = _ADAPTERS.get(kind)
    return None if adapter is None or adapter is IGNORED else adapter


def links() -> dict[int, LinkSpec]:
    """Ethertype -> link-layer protocol, for the pipeline's L2 dispatch."""
    load_all()
    return dict(_LINKS)


def profile_protocols() -> tuple[str, ...]:
    """Every protocol name a profile's allow rules may use (``profile.PROTOCOLS``), "any" last."""
    load_all()
    return (*(n for s in PROTOCOLS.values() for n in s.policy_names()), "any")


def policy_transports() -> dict[str, tuple[str, ...] | None]:
    """Profile protocol name -> transports its allow rules open ("any": every transport)."""
    load_all()
    out: dict[str, tuple[str, ...] | None] = {
        n: t for s in PROTOCOLS.values() for n, t in s.policy_names().items()}
    out["any"] = None
    return out


def zeek_mappers() -> dict[str, ZeekMapper]:
    """Zeek log name -> mapper, over every protocol (``sources.zeek``)."""
    load_all()
    return {log: mapper for s in PROTOCOLS.values() for log, mapper in s.zeek.items()}


def policy_helpers() -> dict[str, tuple[str, str]]:
    """Profile protocol name -> (kernel conntrack helper, name of the connections it lets in),
    for the protocols that declare one (``ProtocolSpec.helper``)."""
    load_all()
    return {n: (s.helper, s.helped) for s in PROTOCOLS.values() if s.helper
            for n in s.policy_names()}


def master_protocols() -> frozenset[str]:
    """The protocols whose clients are masters of their servers (``ProtocolSpec.masters``)."""
    load_all()
    return frozenset(s.name for s in PROTOCOLS.values() if s.masters)


def detectors() -> list[Any]:
    """A fresh instance of every detector the protocols declare."""
    load_all()
    return [factory() for s in PROTOCOLS.values() for factory in s.detectors]


def runs() -> list[ProtocolRun]:
    """A fresh per-run state of every protocol that declares one."""
    load_all()
    out = []
    for spec in tuple(PROTOCOLS.values()):  # a run may import a module that registers one
        if spec.run is not None:
            run = spec.run()
            run.protocol = spec.name
            out.append(run)
    return out
