"""The capture pipeline: captures in, one frozen analysis document out.

``analyze`` reads one or several captures as one stream in timestamp order, decodes L2–L4
per batch, keeps the flow table, gives application payloads to the registered decoders
(``protocols.registry``: chosen per flow by port and content probe) and link-layer frames to
the protocols registered for their ethertype, lets each protocol's per-run state fold what it
keeps whole (register series) and hands everything to sinks (detectors): ``on_event`` for each
decoded event, ``on_series`` for each register series, ``on_flow_end`` for each finished
flow, and ``finish()`` for their findings. Problems in the input (a truncated capture, a
malformed PDU) become warnings that name the file and frame; the analysis goes on. A decoder
that fails with a bug on one flow, or a sink that fails on one event, series or flow, is an
"internal" warning for that unit (see ``protocols.base`` for the decoders' contract); the
run and the other sinks go on.

This module names no protocol: a protocol module declares its decoders, ethertypes, batch
fast path (``registry.ProtocolRun.batch``: polling, the bulk of crane traffic, is decoded a
batch at a time) and result summaries, and the pipeline dispatches to them. What no batch path
takes goes through TCP reassembly and the per-flow decoders. ``fast_path=False`` sends
everything the per-flow way (the tests compare both).

Beyond ``protocols.base.StreamDecoder``: a decoder that has learnt all it can from a flow
(e.g. after an encrypted session's handshake) may set ``finished = True`` and gets no more of its bytes.
Link-layer frames go to their protocol's decoder a batch's at once; UDP datagrams
reassembled from IPv4 fragments go to their flow's decoder. Events are given to sinks in
capture order within each batch.

State is bounded whatever the capture: flows end when idle, closed (FIN/RST) or beyond the flow
table's cap (``flows.FlowTable``); a TCP hole is given up after a few seconds of capture time or
when its stream holds its byte bound (``flows.Stream``), out-of-order bytes of all streams
together are capped (``MAX_HELD_BYTES``); the host table, the per-protocol tallies and the
protocols' own summaries stop at their bounds (``MAX_HOSTS``, ``MAX_PROTOCOL_NAMES``) with a
"limit" warning and counts in ``events``. What a protocol folds for ``on_series`` is kept until
it is handed out (``take_series``: at the end, or by ``monitor`` as it goes). When one capture
is read and every sink says how it takes series (``series_use``: ``"slices"``, ``"summary"``
or ``"none"``; the default ``"whole"`` keeps today's hand-out at the end), the values go out
every ``SERIES_EVERY`` seconds of capture time to ``on_series_slices(pieces, until)`` and only
a summary of each series is kept for ``on_series`` at the end (``RegisterSeries.summary``):
memory stays flat in the capture's length.

Several captures are cut into segments where they do not join (``segments``): after the
read, the file boundaries are judged by the files' headers and silences and by the register
series as they are handed out; sinks with ``on_segments`` then learn the segments before
``finish``, and the result document lists them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from cranewatch.parallel import ReadAhead
from cranewatch.decode import DecodedBatch, Defragmenter, ReassembledDatagram, decode_batch
from cranewatch.decode import ip_text as _ip_text
from cranewatch.decode import mac_text as _mac_text
from cranewatch.errors import CaptureError, DecodeError
from cranewatch.flows import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_SYN,
    Chunk,
    Flow,
    FlowSummary,
    FlowTable,
    Stream,
    group_rows,
    screen_segments,
)
from cranewatch.incidents import group_incidents
from cranewatch.model import Finding
from cranewatch.protocols import registry
from cranewatch.protocols.base import REGISTRY, DecoderSpec, Event, FlowContext
from cranewatch.protocols.registry import BatchView, LinkFrames, LinkSpec, ProtocolRun
from cranewatch.result import (
    AnalysisResult,
    HostSummary,
    InputSummary,
    InputWarning,
    ProtocolSummary,
)
from cranewatch.segments import FileSpan, Segment, SegmentPlanner
from cranewatch.sources.pcap import PacketBatch, open_capture
from cranewatch.weirds import GapTally, GapWarning, content_gap

# The same few hundred addresses come back in every flow: format each once.
ip_text = functools.lru_cache(maxsize=65536)(_ip_text)
mac_text = functools.lru_cache(maxsize=65536)(_mac_text)

MAX_WARNINGS = 1000  # kept in the result; the rest are counted
MAX_HELD_BYTES = 64 * 1024 * 1024  # out-of-order bytes held by all TCP streams together
SWEEP_SECONDS = 10.0  # capture time between flow-table sweeps
SERIES_EVERY = 60.0  # capture time between hand-outs of register values in slices
BATCH_PACKETS = 65536
# Payloads a flow may show before it is declared not for any decoder: a first segment can be
# too short or odd (fuzzers, keep-alives) for a probe.
MAX_PROBES = 4
MIN_PROBE_BYTES = 8
# Payload packets per unclaimed flow shown to sinks with ``on_payload`` (enough to recognise
# a protocol or a clear-text leak by its first bytes, bounded in cost).
PAYLOADS_SHOWN = 8


class Sink(Protocol):
    """A consumer of the decoded stream, e.g. a detector.

    A sink may also have ``on_payload(flow, from_client, data, ts, frame)``: it then gets the
    first ``PAYLOADS_SHOWN`` payload packets (in capture order) of every flow no
    decoder claimed. A sink with ``on_flow(flow)`` gets each finished ``flows.Flow`` itself
    instead of ``on_flow_end`` with its summary (to read at once: the flow is not kept), and
    one with ``on_flows(flows)`` a list of them at once (in the order they ended).
    A sink with ``on_segments(segments)`` is told, before ``finish``, the ``segments.Segment``s
    the captures were cut into, and compares nothing across them.
    """

    def on_event(self, event: Event) -> None: ...

    def on_series(self, series: Any) -> None: ...

    def on_flow_end(self, flow: FlowSummary) -> None: ...

    def finish(self) -> list[Finding]: ...


ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)


# ------------------------------------------------------------------------------------ reading


@dataclass(slots=True)
class _InputState:
    path: str
    size: int
    sha: Any = field(default_factory=hashlib.sha256)
    packets: int = 0
    first: float | None = None
    last: float | None = None
    format: str = "?"
    complete: bool = True
    problems: list[str] = field(default_factory=list)
    events: int = 0  # events read from Zeek logs
    headers: tuple[Any, ...] = ()  # the capture's ``sources.pcap.CaptureHeader``s
    silence: float = 0.0  # the longest time between two of its packets


def _hash_file(state: _InputState) -> None:
    _hash_into(state, state.path)


def _hash_into(state: _InputState, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                state.sha.update(block)
    except OSError:
        pass


def _is_zeek(path: str) -> bool:
    """Zeek logs (a log file or a directory of them) rather than a capture."""
    try:
        from cranewatch.sources.zeek import is_zeek_input
    except ModuleNotFoundError:
        return False
    return is_zeek_input(Path(path))


def _file_batches(state: _InputState, warn: Callable[[InputWarning], None],
                  batch_packets: int) -> Iterator[PacketBatch]:
    """The batches of one capture; its sha256 is taken from the bytes the reader reads."""
    try:
        reader = open_capture(state.path, digest=state.sha)
    except CaptureError as exc:
        state.complete = False
        state.problems.append(exc.message)
        warn(InputWarning(exc.message, state.path, exc.location.frame if exc.location else None,
                      "capture"))
        state.sha = hashlib.sha256()  # not a capture: hash the file as it is, from the start
        _hash_file(state)
        return
    with reader:
        state.format = getattr(reader, "format", "?")
        try:
            yield from reader.batches(batch_packets)
        except CaptureError as exc:
            reader.warnings.append(exc)
        state.headers = tuple(reader.headers)
        reader.digest_rest()
        for note in getattr(reader, "notes", ()):  # the capture is whole all the same
            warn(InputWarning(note.message, state.path, note.location.frame if note.location else None,
                              "capture"))
        for problem in reader.warnings:
            state.complete = False
            state.problems.append(problem.message)
            frame = problem.location.frame if problem.location else None
            warn(InputWarning(problem.message, state.path, frame, "capture"))


def _slice(batch: PacketBatch, rows: np.ndarray) -> PacketBatch:
    piece = PacketBatch(source=batch.source, buf=batch.buf, frame=batch.frame[rows],
                        ts=batch.ts[rows], ts_ns=batch.ts_ns[rows], linktype=batch.linktype[rows],
                        interface=batch.interface[rows], offset=batch.offset[rows],
                        caplen=batch.caplen[rows], origlen=batch.origlen[rows])
    if getattr(batch, "decoded", None) is not None:  # read ahead and decoded (``parallel``)
        from cranewatch.parallel import slice_decoded

        return slice_decoded(batch, piece, rows)  # type: ignore[arg-type]
    return piece


def merged_batches(streams: list[Iterator[PacketBatch]]) -> Iterator[PacketBatch]:
    """Batches of several captures in timestamp order, as one stream.

    Each capture is assumed in time order (as capture tools write them). At each step every
    packet older than the earliest "last timestamp" among the captures' current batches is
    safe to release; the released pieces of all captures are then given out in time order.
    Pieces keep their own file (frame numbers stay those of their file).
    """
    if len(streams) == 1:
        yield from streams[0]
        return
    current: list[PacketBatch | None] = [next(s, None) for s in streams]
    while any(b is not None for b in current):
        live = [i for i, b in enumerate(current) if b is not None]
        first = min(live, key=lambda i: float(current[i].ts[-1]))  # type: ignore[union-attr]
        horizon = float(current[first].ts[-1])  # type: ignore[union-attr]
        pieces: list[tuple[float, int, PacketBatch]] = []
        for i, b in enumerate(current):
            if b is None:
                continue
            # The capture that sets the horizon gives its whole batch, so every step makes
            # progress even where a capture's clock steps back.
            cut = len(b) if i == first else int(np.searchsorted(b.ts, horizon, side="right"))
            if cut == 0:
                continue
            pieces.append((float(b.ts[0]), i, _slice(b, np.arange(cut)) if cut < len(b) else b))
            if cut < len(b):
                current[i] = _slice(b, np.arange(cut, len(b)))
            else:
                current[i] = next(streams[i], None)
        yield from _interleave([p for _, _, p in sorted(pieces, key=lambda p: (p[0], p[1]))])


MAX_RUNS = 64  # runs per merge step beyond which pieces are given whole (see _interleave)


def _interleave(pieces: list[PacketBatch]) -> Iterator[PacketBatch]:
    """Cut overlapping pieces of different captures into runs so packets come in time order.

    Captures taken at the same time on several taps interleave packet by packet; cutting
    them into thousands of one-packet runs would cost more than it is worth, so beyond
    ``MAX_RUNS`` runs the pieces are given whole, earliest first: order is then exact per
    capture and approximate (within one batch's time span) between captures.
    """
    if len(pieces) == 1:
        yield pieces[0]
        return
    ts = np.concatenate([p.ts for p in pieces])
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(pieces)])
    local = np.concatenate([np.arange(len(p)) for p in pieces])
    order = np.argsort(ts, kind="stable")
    owner, local = owner[order], local[order]
    cuts = np.flatnonzero(owner[1:] != owner[:-1]) + 1
    if len(cuts) >= MAX_RUNS:
        yield from pieces
        return
    for run in np.split(np.arange(len(order)), cuts):
        piece = pieces[int(owner[run[0]])]
        rows = local[run]
        yield piece if len(rows) == len(piece) else _slice(piece, rows)


# ---------------------------------------------------------------------------------- analysis


@dataclass(slots=True)
class _Host:
    mac: int
    ip: bytes | None
    first: float
    last: float
    packets: int = 0
    wire: int = 0
    ips: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class _ProtocolTally:
    flows: int = 0
    packets: int = 0
    wire: int = 0
    clients: set[bytes] = field(default_factory=set)
    servers: set[bytes] = field(default_factory=set)


MAX_IPS_PER_HOST = 64
# Bounded summaries: a day of a terminal's SPAN port (or a scan of every port) must not grow
# the result without end. Beyond these, what is not kept is counted in ``events`` and a
# "limit" warning says so once.
MAX_HOSTS = 65_536
MAX_PROTOCOL_NAMES = 4_096  # "tcp/PORT" names of unclaimed flows beyond this go to "tcp/other"
_HOST_DTYPE = np.dtype([("mac", "<u8"), ("ip", "V16")])


def load_decoders() -> list[DecoderSpec]:
    """Import every protocol module (each registers itself) and return the flow decoders."""
    registry.load_all()
    return sorted(REGISTRY, key=lambda s: s.priority)


def _overrides(run: ProtocolRun, hook: str) -> bool:
    """Whether a protocol's per-run state does something in this hook (not the base's no-op)."""
    return getattr(type(run), hook) is not getattr(ProtocolRun, hook)


AFTER_BATCH = 1 << 62  # order key of events that follow all of a batch's own
_ROW = operator.itemgetter(0)  # the order key of a deferred (row, event)


class GivenUp:
    """Stands in for a decoder that failed on its flow: the flow is decoded no further."""

    finished = True

    def __init__(self, failed: Any) -> None:
        self.failed = failed

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        return []

    def gap(self, from_client: bool) -> None:
        return None


def _flow_text(flow: Flow) -> str:
    return (f"{flow.transport} {ip_text(flow.client)}:{flow.client_port} -> "
            f"{ip_text(flow.server)}:{flow.server_port}")


class Analysis:
    """One run over one or several captures. ``run`` returns the result document."""

    def __init__(self, sinks: Sequence[Sink] = (), *, fast_path: bool = True,
                 decoders: Sequence[DecoderSpec] | None = None,
                 flow_table: FlowTable | None = None, fold_reads: bool = True,
                 jobs: int = 1, read_ahead: ReadAhead | None = None) -> None:
        self.sinks = list(sinks)
        self.jobs = jobs  # > 1: captures are read and decoded ahead in jobs - 1 workers
        self.read_ahead = read_ahead  # those workers, started by the caller (already reading)
        self.fast_path = fast_path and fold_reads
        self.fold_reads = fold_reads
        self.decoders = list(decoders) if decoders is not None else load_decoders()
        # Each new flow (every name lookup is one) looks through its transport's decoders.
        self._candidates = {t: [s for s in self.decoders if s.transport == t]
                            for t in ("tcp", "udp")}
        self._by_port: dict[str, dict[int, list[DecoderSpec]]] = {
            t: {port: [s for s in specs if port in s.ports]
                for port in sorted({p for s in specs for p in s.ports})}
            for t, specs in self._candidates.items()}
        self.flows = flow_table or FlowTable()
        # Each protocol's state for this run, and who is asked what (decided once).
        self.runs = registry.runs()
        self._folds: dict[type, ProtocolRun] = {t: r for r in self.runs for t in r.folds}
        self._batch_runs = [r for r in self.runs if r.batch_path]
        self._fed_runs = [r for r in self.runs if _overrides(r, "fed")]
        self._ended_runs = [r for r in self.runs if _overrides(r, "flow_ended")]
        self._expecting = [r for r in self.runs if _overrides(r, "expected")]
        self._announcing = frozenset(r.protocol for r in self._expecting)
        self._links: dict[int, LinkSpec] = registry.links()
        self._link_names = {link.ethertype: spec.name for spec in registry.PROTOCOLS.values()
                            for link in spec.links}
        self._link_runs = {link.ethertype: run for run in self.runs
                           for link in registry.PROTOCOLS[run.protocol].links}
        self.warnings: list[InputWarning] = []
        self.suppressed = 0
        self.hosts: dict[int | bytes, _Host] = {}
        self.protocol_tally: dict[str, _ProtocolTally] = {}
        self.events: dict[str, int] = {}
        self.packets = 0
        self.flow_count = 0
        self.series_count = 0
        self._next_sweep: float | None = None
        self._payload_sinks = [s for s in self.sinks if hasattr(s, "on_payload")]
        self._limits_hit: set[str] = set()
        self._deferred: list[tuple[int, Event]] | None = None
        self._held: list[tuple[int, InputWarning]] | None = None  # warnings of a batch's rows
        self._row = -1  # the row being decoded (the order key of its warnings)
        self.defragmenter = Defragmenter()
        self._fragmented_flows: set[tuple[str, bytes, int, bytes, int]] = set()
        self._segmenter: SegmentPlanner | None = None
        self._several_captures = False
        self._slicing = False  # register values go out in slices (see the module)
        self._next_slices: float | None = None
        self._sink_failures: dict[tuple[str, str, str], int] = {}
        self._gaps = GapTally()  # content_gap warnings: the first said, the rest summed (weirds)

    # ------------------------------------------------------------------ plumbing

    def warn(self, warning: InputWarning) -> None:
        if self._held is not None:  # given out in capture order (``_decode_payloads``)
            self._held.append((self._row, warning))
            return
        if isinstance(warning, GapWarning) and not self._gaps.keep(warning):
            return
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)
        else:
            self.suppressed += 1

    def emit(self, event: Event) -> None:
        self.events[event.kind] = self.events.get(event.kind, 0) + 1
        run = self._folds.get(type(event))
        if run is not None and run.observe(event) and self.fold_reads:
            return
        for sink in self.sinks:
            try:
                sink.on_event(event)
            except Exception as exc:  # one unit, not the run (see _sink_failed)
                self._sink_failed(sink, "on_event", exc, event.source or None, event.frame)

    # ------------------------------------------------------------------ the loop

    def run(self, paths: Sequence[str | Path], progress: ProgressCallback | None = None,
            batch_packets: int = BATCH_PACKETS, profile: str | None = None,
            baseline: str | None = None) -> AnalysisResult:
        return self._run(paths, progress, batch_packets, profile, baseline)

    def _run(self, paths: Sequence[str | Path], progress: ProgressCallback | None,
             batch_packets: int, profile: str | None, baseline: str | None) -> AnalysisResult:
        states = [_InputState(str(p), _size(p)) for p in paths]
        zeek = [s for s in states if _is_zeek(s.path)]
        if zeek:
            self._read_zeek(zeek)
        captures = [s for s in states if s not in zeek]
        self._several_captures = len(captures) > 1
        self._slicing = not zeek and len(captures) == 1 and all(
            getattr(sink, "series_use", "whole") != "whole" for sink in self.sinks)
        unread = self._slicing and not any(
            getattr(sink, "on_series_slices", None) is not None for sink in self.sinks)
        for run in self.runs:  # values nobody will read need not be kept (``hand_slices``)
            run.keep_values(not unread)
        total = sum(s.size for s in captures)
        done_bytes = 0
        with contextlib.ExitStack() as readers:
            ahead = self.read_ahead
            if ahead is None and self.jobs > 1 and captures:
                from cranewatch.parallel import ReadAhead

                ahead = readers.enter_context(ReadAhead(paths, batch_packets, self.jobs - 1))
            if ahead is not None:
                reads = ahead.streams(captures, self.warn)
            else:
                reads = [_file_batches(s, self.warn, batch_packets) for s in captures]
            streams = [self._counted(s, r) for s, r in zip(captures, reads, strict=True)]
            for batch in merged_batches(streams):
                self.process(batch)
                if progress is not None:
                    done_bytes += int(batch.caplen.sum()) + 16 * len(batch)
                    progress(min(done_bytes, total), total)
        spans = [FileSpan(s.path, s.first, s.last, s.packets, s.headers, s.silence)
                 for s in captures if s.packets and s.first is not None and s.last is not None]
        self._segmenter = SegmentPlanner(spans)
        self.close_all()  # the register series go by the segmenter too
        segments = self._segmenter.segments()
        self._segmenter = None
        return self.finish(states, segments, profile, baseline)

    def finish(self, states: list[_InputState], segments: tuple[Segment, ...], profile: str | None,
               baseline: str | None) -> AnalysisResult:
        """The end of a run once every packet is in: the sinks learn the capture's segments,
        give their findings (a sink that fails costs its own findings, not the run's) and
        their problems, and the result is made (the serial run and ``parallel.SplitRun``)."""
        for warning in self._gaps.summaries():
            self.warn(warning)
        for sink in self.sinks:
            on_segments = getattr(sink, "on_segments", None)
            if on_segments is not None:
                try:
                    on_segments(segments)
                except Exception as exc:  # see _sink_failed
                    self._sink_failed(sink, "on_segments", exc, None, None)
        findings: list[Finding] = []
        for sink in self.sinks:
            try:
                findings.extend(sink.finish())
            except Exception as exc:  # the other sinks' findings still count
                self._sink_failed(sink, "finish", exc, None, None)
            for problem in getattr(sink, "problems", ()):
                self.warn(problem)
        return self.result(states, findings, profile, baseline, segments)

    def _read_zeek(self, states: list[_InputState]) -> None:
        """Zeek logs instead of captures: their events go to the sinks as decoded ones do.

        Every Zeek input (each sensor's tree) is read as one stream merged by time, handed on
        in batches (``sources.zeek.ZeekStream``): memory stays flat in the logs' length.
        """
        from cranewatch.errors import InputError
        from cranewatch.sources.zeek import ZeekStream

        stream = ZeekStream([Path(s.path) for s in states])
        for state in states:
            state.format = "zeek"
        try:
            for batch in stream.batches():
                for event in batch:
                    self.emit(event)
        except InputError as exc:  # an input that is no log at all: nothing of it was read
            where = exc.location.file if exc.location and exc.location.file else states[0].path
            state = next((s for s in states if where.startswith(s.path)), states[0])
            state.complete = False
            state.problems.append(exc.message)
            self.warn(InputWarning(exc.message, where, None, "capture"))
        for state, tally in zip(states, stream.inputs, strict=True):
            state.events, state.first, state.last = tally.events, tally.first, tally.last
            for log in tally.found.logs:  # what was read, hashed as one input
                _hash_into(state, log)
            for note in tally.found.notes:
                self.warn(InputWarning(note, state.path, None, "zeek"))
            for problem in tally.found.problems:  # lines skipped: what was read is analysed, the input is not whole
                state.complete = False
                state.problems.append(problem.message)
                line = f"line {problem.location.line}: " if problem.location and problem.location.line else ""
                file = problem.location.file if problem.location and problem.location.file else state.path
                self.warn(InputWarning(line + problem.message, file, None, "capture"))

    def _counted(self, state: _InputState, batches: Iterator[PacketBatch]) -> Iterator[PacketBatch]:
        for batch in batches:
            if len(batch):
                state.packets += len(batch)
                first, last = float(batch.ts[0]), float(batch.ts[-1])
                if self._several_captures:  # what segments.SegmentPlanner may time gaps by
                    inside = float(np.max(np.diff(batch.ts))) if len(batch) > 1 else 0.0
                    since = first - state.last if state.last is not None else 0.0
                    state.silence = max(state.silence, inside, since)
                state.first = first if state.first is None else min(state.first, first)
                state.last = last if state.last is None else max(state.last, last)
                yield batch

    def process(self, batch: PacketBatch) -> None:
        """Account, flow and decode one batch."""
        decoded = getattr(batch, "decoded", None)  # ``parallel`` reads ahead and decodes
        if decoded is None:
            decoded = decode_batch(batch)
        self.packets += len(batch)
        self._count_hosts(batch, decoded)
        flows = self.flows.update(decoded, batch, batch.source)
        self._end_flows(flows.ended)  # over before this batch touched them (``FlowTable``)
        if self._several_captures:
            _events_name_their_capture(flows.flows, batch.source)
        # Events of this batch are gathered and given out in capture order: the fast path,
        # the slow path and the link layer each make some of them.
        self._deferred = []
        try:
            if flows.flows:
                self._decode_payloads(batch, decoded, flows.flows, flows.index,
                                      flows.from_client)
            self._decode_links(batch, decoded)
            if decoded.fragment.any():
                for datagram in self.defragmenter.feed(decoded):
                    if datagram.ip_proto == IPPROTO_TCP:
                        self._fragmented_tcp(datagram)
                    self._reassembled(datagram)
            deferred = self._deferred
        finally:
            self._deferred = None
        deferred.sort(key=_ROW)
        for _, event in deferred:
            self.emit(event)
        self._end_flows(flows.superseded)  # a later packet of the batch began a new flow on its key
        self._sweep_due(batch)

    def _sweep_due(self, batch: PacketBatch) -> None:
        """Sweep the flow table when the capture clock says so (after each batch)."""
        now = float(batch.ts[-1])
        if self._next_sweep is None:
            self._next_sweep = now + SWEEP_SECONDS
        elif now >= self._next_sweep or len(self.flows.flows) > self.flows.max_flows:
            self._next_sweep = now + SWEEP_SECONDS
            self._sweep(now, batch.source)
        if self._slicing:
            if self._next_slices is None:
                self._next_slices = now + SERIES_EVERY
            elif now >= self._next_slices:
                self._next_slices = now + SERIES_EVERY
                self.hand_slices(now)

    def _fragmented_tcp(self, datagram: ReassembledDatagram) -> None:
        """TCP in IP fragments is rare in honest traffic and a known way to slip past a
        monitor: its bytes are not decoded, so say so, once per flow, naming the frames."""
        data = datagram.payload
        if len(data) < 4:
            return
        sport, dport = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        ends = sorted(((datagram.src_ip, sport), (datagram.dst_ip, dport)))
        key = (datagram.source, *ends[0], *ends[1])
        if key in self._fragmented_flows or len(self._fragmented_flows) >= MAX_WARNINGS:
            return
        self._fragmented_flows.add(key)
        frames = ", ".join(str(f) for f in datagram.frames[:20])
        self.warn(InputWarning(
            f"tcp {ip_text(datagram.src_ip)}:{sport} -> {ip_text(datagram.dst_ip)}:{dport}: a "
            f"segment came in {len(datagram.frames)} IPv4 fragments (frames {frames}); TCP in "
            "fragments is not decoded (first such segment of this flow)",
            datagram.source, datagram.frame, "decode"))

    def _sweep(self, now: float, source: str) -> None:
        """End idle flows; keep the flow table and the reassembly buffers within their caps."""
        evicted = self.flows.evicted
        self._end_flows(self.flows.expire(now))
        if self.flows.evicted > evicted and "flows" not in self._limits_hit:
            self._limits_hit.add("flows")  # once per run: the cap is hit again and again
            self.warn(InputWarning(
                f"more than {self.flows.max_flows:,} flows at once: the "
                f"{self.flows.evicted - evicted:,} quietest were ended early", source, None,
                "limit"))
        held = [(side.stream.held_bytes, flow, from_client)
                for flow in self.flows.flows.values() if flow.decoder is not None
                for from_client, side in ((True, flow.to_server), (False, flow.to_client))
                if side.stream is not None and side.stream.held_bytes]
        total = sum(h[0] for h in held)
        if total <= MAX_HELD_BYTES:
            return
        if "held" not in self._limits_hit:
            self._limits_hit.add("held")
            self.warn(InputWarning(
                f"{total:,} bytes waiting behind TCP holes (cap {MAX_HELD_BYTES:,}): the largest"
                " holes were given up", source, None, "limit"))
        for size, flow, from_client in sorted(held, key=lambda h: -h[0]):
            self._flush_stream(flow, from_client)
            total -= size
            if total <= MAX_HELD_BYTES // 2:
                break

    def _limit(self, what: str, message: str, source: str | None) -> None:
        """A bound was reached: say so once per run (it is reached again and again)."""
        if what not in self._limits_hit:
            self._limits_hit.add(what)
            self.warn(InputWarning(message, source, None, "limit"))

    def _count_hosts(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        pairs = np.empty(len(batch), dtype=_HOST_DTYPE)
        pairs["mac"] = decoded.eth_src
        pairs["ip"] = decoded.src_ip
        has_ip = decoded.ip_version != 0
        no_ip = np.flatnonzero(~has_ip)
        if len(no_ip):
            pairs["ip"][no_ip] = np.zeros(1, dtype=_HOST_DTYPE)["ip"]
        # Most batches hold few senders: group on a 64-bit digest, checked byte for byte.
        first, last, inverse = group_rows(pairs)
        counts = np.bincount(inverse)
        wire = np.bincount(inverse, weights=batch.origlen)
        group = zip(pairs["mac"][first].tolist(), pairs["ip"][first].tolist(), has_ip[first].tolist(),
                    batch.ts[first].tolist(), batch.ts[last].tolist(), counts.tolist(),
                    wire.tolist(), strict=True)
        for mac, ip_bytes, ip_known, t0, t1, packets, wire_bytes in group:
            ip = bytes(ip_bytes) if ip_known else None
            key: int | bytes
            if mac:
                key = mac
            elif ip is not None:
                key = ip
            else:
                continue  # no MAC, no IP: nothing to name the sender by
            host = self.hosts.get(key)
            if host is None:
                if len(self.hosts) >= MAX_HOSTS:
                    self._limit("hosts", f"more than {MAX_HOSTS:,} hosts: the packets of later "
                                "ones are counted in events (hosts_untracked_packets), not listed",
                                batch.source)
                    self.events["hosts_untracked_packets"] = (
                        self.events.get("hosts_untracked_packets", 0) + packets)
                    continue
                host = self.hosts[key] = _Host(mac, ip if not mac else None, t0, t1)
            host.first = min(host.first, t0)
            host.last = max(host.last, t1)
            host.packets += packets
            host.wire += int(wire_bytes)
            if ip is not None and len(host.ips) < MAX_IPS_PER_HOST:
                host.ips.add(ip)

    # ------------------------------------------------------------------ payloads

    def _choose(self, flow: Flow, payload: bytes, from_client: bool, frame: int) -> None:
        """Pick the decoder of a flow on its first payload: port and probe, then probes alone."""
        if flow.probed_frame == frame:
            return  # this payload was looked at already (ahead of the fast path)
        flow.probed_frame = frame
        if self._expecting and self._announced(flow):
            return
        transport = "tcp" if flow.proto == IPPROTO_TCP else "udp"
        client_first = payload if from_client else b""
        server_first = b"" if from_client else payload
        candidates = self._candidates[transport]
        chosen: DecoderSpec | None = None
        reversed_roles = False
        # Only the decoders of either port can be chosen by port (in priority order).
        by_port = self._by_port[transport]
        on_ports = by_port.get(flow.server_port, ())
        if flow.client_port in by_port:
            on_ports = [spec for spec in candidates
                        if spec in on_ports or spec in by_port[flow.client_port]]
        for spec in on_ports:
            # On its own port a protocol is trusted unless the probe, given enough bytes to
            # judge (a first segment can be a few bytes of a split PDU), says otherwise.
            if flow.server_port in spec.ports and (
                    spec.probe is None or len(payload) < MIN_PROBE_BYTES
                    or spec.probe(client_first, server_first)):
                chosen = spec
                break
            if flow.client_port in spec.ports and flow.server_port not in spec.ports and (
                    spec.probe is None or spec.probe(server_first, client_first)):
                chosen, reversed_roles = spec, True  # tshark, too, trusts the port here
                break
        if chosen is None:
            for spec in candidates:
                if spec.probe is not None and spec.probe(client_first, server_first):
                    chosen = spec
                    break
        if chosen is None:
            flow.probes += 1
            if flow.probes >= MAX_PROBES:
                flow.protocol = ""  # undecided after a few payloads: not for any decoder
            return
        flow.protocol = chosen.name
        flow.decoder_reversed = reversed_roles
        client, server = ip_text(flow.client), ip_text(flow.server)
        client_port, server_port = flow.client_port, flow.server_port
        if reversed_roles:
            client, server, client_port, server_port = server, client, server_port, client_port
        context = FlowContext(client=client, client_port=client_port, server=server,
                              server_port=server_port, transport=transport, source=flow.source)
        flow.decoder = chosen.factory(context)
        if flow.probes:  # payloads before this one went to no decoder: it begins mid-stream, here
            flow.to_server.stream = flow.to_client.stream = None

    def _announced(self, flow: Flow) -> bool:
        """A flow another flow announced (a negotiated data connection): named so, not decoded."""
        for run in self._expecting:
            stand_in = run.expected(flow)
            if stand_in is not None:
                flow.protocol, flow.decoder = stand_in.protocol, stand_in
                return True
        return False

    def _decode_payloads(self, batch: PacketBatch, decoded: DecodedBatch, flows: list[Flow],
                         index: np.ndarray, from_client: np.ndarray) -> None:
        show = bool(self._payload_sinks)
        wants = np.fromiter(
            (f.proto in (IPPROTO_TCP, IPPROTO_UDP)
             and (f.protocol != "" or (show and f.payloads_shown < PAYLOADS_SHOWN))
             and not (f.decoder is not None and getattr(f.decoder, "finished", False))
             for f in flows), dtype=bool, count=len(flows))
        if not wants.any():
            return
        in_flow = index >= 0
        interesting = np.zeros(len(batch), dtype=bool)
        interesting[in_flow] = wants[index[in_flow]]
        interesting &= (decoded.payload_len > 0) | ((decoded.tcp_flags & TCP_SYN) != 0)
        interesting &= decoded.fragment == 0
        if not (self.fast_path and self._batch_runs):
            self._screen(decoded, flows, index, from_client, interesting)
            rows = np.flatnonzero(interesting)
            if len(rows):
                self._slow(batch, decoded, flows, index, from_client, rows)
            return
        rows = np.flatnonzero(interesting)
        if len(rows) == 0:
            return
        # A batch path may hand segments to their decoders ahead of the rows left for the
        # slow path: the warnings of both are given out in capture order, as without it.
        self._held, self._row = [], -1
        held = self._held
        try:
            self._prepare_new_flows(batch, decoded, flows, index, from_client, rows)
            # Duplicates and retransmissions of delivered bytes would stop the batch paths
            # for nothing (``Stream.segment`` drops them): they are left out here, or, in a
            # flow behind a hole (where an ACK can end the wait), kept as pure ACKs.
            stops = np.zeros(len(batch), dtype=bool)
            dropped, suspect = self._screen(decoded, flows, index, from_client, interesting,
                                            stops)
            # The batch paths' own sizes: a dropped segment kept for its ACK has none.
            decoded = dataclasses.replace(decoded, payload_len=decoded.payload_len.copy())
            if len(dropped):
                acks = dropped[suspect[index[dropped]]]
                interesting[dropped] = False
                interesting[acks] = True
                decoded.payload_len[acks] = 0
            rows = np.flatnonzero(interesting)
            view = BatchView(batch, decoded, flows, index, from_client, rows,
                             per_packet=lambda some: self._slow(batch, decoded, flows, index,
                                                                from_client, some),
                             feed=self._feed_row, gap=self._gap_row,
                             screen=lambda some, moved: self._rescreen(
                                 decoded, flows, index, from_client, some, moved, stops),
                             stops=stops)
            for run in self._batch_runs:
                view.rows = run.batch(view, self._defer, self._count)
                if len(view.rows) == 0:
                    break
            self._slow(batch, decoded, flows, index, from_client,
                       self._live_acks(decoded, flows, index, view.rows))
        finally:
            self._held = None
        held.sort(key=_ROW)
        for _, warning in held:
            self.warn(warning)

    @staticmethod
    def _screen(decoded: DecodedBatch, flows: list[Flow], index: np.ndarray,
                from_client: np.ndarray, interesting: np.ndarray,
                stops: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ahead of reassembly (``flows.screen_segments``): add to ``interesting`` the pure ACKs
        of the TCP flows that may wait behind a hole in this batch (bytes held already, or a
        segment that opens a hole): an ACK past such a hole ends the wait (``Stream.acked``);
        the ACKs of healthy flows stay out of the per-packet path. Returns the payload rows
        whose bytes the stream would drop (duplicates, retransmissions of delivered bytes,
        ``flows.screen_segments``) and which flows may wait behind a hole (per flow); marks
        in ``stops`` the segments that open a hole."""
        payload = np.flatnonzero(interesting & (decoded.payload_len > 0)
                                 & (decoded.ip_proto == IPPROTO_TCP))
        known, held, decoding = _stream_states(flows, range(len(flows)))
        # A stream opened in this batch starts after its SYN (whether or not ``Stream.syn``
        # took it yet: the same on either path).
        syn = np.flatnonzero(interesting & ((decoded.tcp_flags & TCP_SYN) != 0)
                             & (decoded.ip_proto == IPPROTO_TCP))
        if len(syn):
            syn_slot = index[syn].astype(np.int64) * 2 + from_client[syn]
            fresh = known[syn_slot] < 0
            known[syn_slot[fresh][::-1]] = (decoded.tcp_seq[syn[fresh][::-1]].astype(np.int64)
                                            + 1) & 0xFFFFFFFF  # the first SYN of each
        slot = index[payload].astype(np.int64) * 2 + from_client[payload]
        ahead, behind = screen_segments(slot, decoded.tcp_seq[payload],
                                        decoded.payload_len[payload], known, held)
        suspect = held[0::2] | held[1::2]
        suspect[slot[ahead] >> 1] = True
        if stops is not None:
            stops[payload[ahead]] = True
        if suspect.any():
            in_flow = index >= 0
            acks = np.zeros(len(index), dtype=bool)
            acks[in_flow] = suspect[index[in_flow]]
            acks &= ((decoded.tcp_flags & TCP_ACK) != 0) & (decoded.payload_len == 0)
            acks &= (decoded.fragment == 0) & (decoded.ip_proto == IPPROTO_TCP)
            interesting |= acks
        dropped = payload[behind]
        dropped = dropped[decoding[index[dropped]] & ((decoded.tcp_flags[dropped] & TCP_SYN) == 0)]
        return dropped, suspect

    @staticmethod
    def _rescreen(decoded: DecodedBatch, flows: list[Flow], index: np.ndarray,
                  from_client: np.ndarray, rows: np.ndarray, moved: np.ndarray,
                  stops: np.ndarray) -> np.ndarray:
        """``rows`` (left by a batch path after the per-packet path took the rows ``moved``)
        without the segments of the flows it moved on that their streams would now drop: every
        byte delivered already, no hole before them (``flows.screen_segments`` against each
        stream as it stands; the batch path only takes segments in order, which leaves what
        was screened of the other flows as it was). A dropped segment of a flow that may wait
        behind a hole stays as a pure ACK (its size 0 in the batch paths' ``decoded``), as in
        ``_screen``; ``stops`` marks anew the segments that open a hole."""
        if len(moved) == 0:
            return rows
        touched = np.zeros(len(flows), dtype=bool)
        touched[index[moved]] = True
        payload = rows[touched[index[rows]] & (decoded.payload_len[rows] > 0)
                       & (decoded.ip_proto[rows] == IPPROTO_TCP)
                       & ((decoded.tcp_flags[rows] & TCP_SYN) == 0)]
        if len(payload) == 0:
            return rows
        present = np.flatnonzero(touched)
        known, held, decoding = _stream_states(flows, present.tolist())
        slot = index[payload].astype(np.int64) * 2 + from_client[payload]
        ahead, behind = screen_segments(slot, decoded.tcp_seq[payload],
                                        decoded.payload_len[payload], known, held)
        stops[payload] = ahead
        dropped = payload[behind]
        dropped = dropped[decoding[index[dropped]]]
        if len(dropped) == 0:
            return rows
        suspect = held[0::2] | held[1::2]
        suspect[slot[ahead] >> 1] = True
        acks = dropped[suspect[index[dropped]]]
        decoded.payload_len[acks] = 0
        gone = dropped[~suspect[index[dropped]]]
        return rows[~np.isin(rows, gone, assume_unique=True)] if len(gone) else rows

    @staticmethod
    def _live_acks(decoded: DecodedBatch, flows: list[Flow], index: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
        """``rows`` without the pure ACKs (``_screen``) that can no longer end a wait: those of
        flows that hold nothing behind a hole now and have no segment left to open one."""
        bare = (decoded.payload_len[rows] == 0) & ((decoded.tcp_flags[rows] & TCP_SYN) == 0)
        if not bare.any():
            return rows
        live = np.zeros(len(flows), dtype=bool)
        live[index[rows[~bare]]] = True
        for k in np.unique(index[rows[bare]]).tolist():
            if not live[k]:
                flow = flows[k]
                live[k] = any(half.stream is not None and bool(half.stream.held)
                              for half in (flow.to_server, flow.to_client))
        return rows[~bare | live[index[rows]]]

    def _feed_row(self, flow: Flow, to_server: bool, data: bytes, ts: float, frame: int,
                  source: str, row: int) -> None:
        self._row = row
        self._feed(flow, to_server, data, ts, frame, source, row)

    def _gap_row(self, flow: Flow, from_client: bool, frame: int, row: int) -> None:
        self._row = row
        self._gap(flow, from_client, frame)

    def _defer(self, row: int, event: Event) -> None:
        """An event of this batch, given out in capture order with the rest (``process``)."""
        assert self._deferred is not None
        self._deferred.append((row, event))

    def _count(self, name: str, count: int) -> None:
        self.events[name] = self.events.get(name, 0) + count

    def _reassembled(self, datagram: ReassembledDatagram) -> None:
        """A UDP datagram put back together from IPv4 fragments goes to its flow's decoder.

        Its first fragment made the flow (it carries the ports); the fragments themselves are
        kept from the decoders.
        """
        data = datagram.payload
        if datagram.ip_proto != IPPROTO_UDP or len(data) < 8:
            return
        sport, dport = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        ends = sorted(((datagram.src_ip, sport), (datagram.dst_ip, dport)))
        key = (ends[0][0] + ends[1][0] + ends[0][1].to_bytes(2, "big")
               + ends[1][1].to_bytes(2, "big") + bytes([IPPROTO_UDP]) + bytes(3))
        flow = self.flows.flows.get(key)
        if flow is None:
            return
        to_server = flow.client == datagram.src_ip and flow.client_port == sport
        payload = data[8:]
        if flow.protocol is None:
            self._choose(flow, payload, to_server, datagram.frame)
        if flow.protocol and not getattr(flow.decoder, "finished", False):
            self._feed(flow, to_server, payload, datagram.ts, datagram.frame, datagram.source,
                       AFTER_BATCH)

    def _decode_links(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        """Frames of a registered ethertype go to their protocol, a batch's at once."""
        if not self._links:
            return
        has_l3 = decoded.l3_off >= 0
        for ethertype, link in self._links.items():
            rows = np.flatnonzero((decoded.ethertype == ethertype) & has_l3)
            if len(rows) == 0:
                continue
            assert self._deferred is not None
            starts = decoded.l3_off[rows]
            ends = batch.offset[rows] + batch.caplen[rows]
            if link.max_body is not None:
                ends = np.minimum(ends, starts + link.max_body)
            buf = batch.buf
            bodies = [buf[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]
            frames = batch.frame[rows].tolist()
            given = LinkFrames(bodies, [mac_text(m) for m in decoded.eth_src[rows].tolist()],
                               [mac_text(m) for m in decoded.eth_dst[rows].tolist()],
                               batch.ts[rows].tolist(), frames, batch.source)
            row_of = rows.tolist()
            name = self._link_names.get(ethertype, "")
            for at, event in link.decode(given, self._link_runs.get(ethertype)):
                if isinstance(event, DecodeError):
                    where = event.location.frame if event.location and event.location.frame else frames[at]
                    self.warn(InputWarning(f"{name}: {event.message}", batch.source, where, "decode"))
                else:
                    self._deferred.append((row_of[at], event))

    def _prepare_new_flows(self, batch: PacketBatch, decoded: DecodedBatch, flows: list[Flow],
                           index: np.ndarray, from_client: np.ndarray, rows: np.ndarray) -> None:
        """Handshakes and decoder choice of flows new in this batch, ahead of the fast path.

        Connections come and go all the time on a crane LAN; a flow opened in this batch can
        then take a protocol's batch path for the rest of the batch instead of the per-flow one.
        """
        new = np.fromiter((f.protocol is None and f.proto == IPPROTO_TCP for f in flows),
                          dtype=bool, count=len(flows))
        if not new.any():
            return
        mine = rows[new[index[rows]]]
        flags = decoded.tcp_flags[mine]
        syn_rows = mine[(flags & TCP_SYN) != 0]
        # numpy scalars are slow: each column read once, as Python numbers
        for f, to_server, seq in zip(index[syn_rows].tolist(), from_client[syn_rows].tolist(),
                                     decoded.tcp_seq[syn_rows].tolist(), strict=True):
            flow = flows[f]
            side = flow.to_server if to_server else flow.to_client
            stream = side.stream
            if stream is None:
                stream = side.stream = Stream()
            stream.syn(seq)
        with_data = mine[decoded.payload_len[mine] > 0]
        # The first payload of each flow, flows in index order (a table, not a sort: linear).
        first = np.full(len(flows), len(with_data), dtype=np.int64)
        np.minimum.at(first, index[with_data], np.arange(len(with_data)))
        picked = with_data[first[first < len(with_data)]]
        if self._announcing:
            # A flow may be announced by a reply of this batch not yet decoded (a data
            # connection): new flows are chosen here in capture order, up to the first flow
            # that may announce; later ones (or all, if one was open) in order, by ``_slow``.
            if any(f.protocol in self._announcing for f in flows):
                return
            picked = np.sort(picked)
        buf = batch.buf
        for f, off, size, to_server, frame in zip(
                index[picked].tolist(), decoded.payload_off[picked].tolist(),
                decoded.payload_len[picked].tolist(), from_client[picked].tolist(),
                batch.frame[picked].tolist(), strict=True):
            flow = flows[f]
            self._choose(flow, buf[off : off + size], to_server, frame)
            if flow.protocol:
                for side in (flow.to_server, flow.to_client):
                    if side.stream is None:
                        side.stream = Stream()
                if flow.protocol in self._announcing:
                    break

    def _slow(self, batch: PacketBatch, decoded: DecodedBatch, flows: list[Flow],
              index: np.ndarray, from_client: np.ndarray, rows: np.ndarray) -> None:
        buf = batch.buf
        source = batch.source
        feed = self._feed
        payload_sinks = self._payload_sinks
        columns = zip(rows.tolist(), index[rows].tolist(), from_client[rows].tolist(),
                      decoded.payload_off[rows].tolist(), decoded.payload_len[rows].tolist(),
                      decoded.tcp_seq[rows].tolist(), decoded.tcp_flags[rows].tolist(),
                      batch.ts[rows].tolist(), batch.frame[rows].tolist(),
                      decoded.tcp_ack[rows].tolist(), strict=True)
        for row, flow_index, to_server, off, size, seq, flags, ts, frame, ack in columns:
            self._row = row
            flow = flows[flow_index]
            tcp = flow.proto == IPPROTO_TCP
            if tcp and flags & TCP_ACK:
                back_stream = (flow.to_client if to_server else flow.to_server).stream
                if back_stream is not None and back_stream.held:
                    self._acked(flow, not to_server, back_stream, ack, frame, source, row)
            if tcp and not size and not flags & TCP_SYN:
                continue  # a pure ACK, or a duplicate kept for its ACK (``_screen``)
            if tcp and flags & TCP_SYN:
                side = flow.to_server if to_server else flow.to_client
                if side.stream is None:
                    side.stream = Stream()
                side.stream.syn(seq)
                if not size:
                    continue
            if flow.protocol == "" and (flow.payloads_shown >= PAYLOADS_SHOWN or not payload_sinks):
                continue  # undecided after its probes, and shown (a flow of no decoder's)
            data = buf[off : off + size]
            if flow.protocol is None:
                self._choose(flow, data, to_server, frame)
            if not flow.protocol:
                if self._payload_sinks and flow.payloads_shown < PAYLOADS_SHOWN:
                    flow.payloads_shown += 1
                    for sink in self._payload_sinks:
                        try:
                            sink.on_payload(flow, to_server, data, ts, frame)
                        except Exception as exc:  # see _sink_failed
                            self._sink_failed(sink, "on_payload", exc, source, frame)
                continue
            decoder = flow.decoder
            if getattr(decoder, "finished", False):
                continue
            if not tcp:
                feed(flow, to_server, data, ts, frame, source, row)
                continue
            ahead, back = (flow.to_server, flow.to_client) if to_server else (
                flow.to_client, flow.to_server)
            if back.stream is None:
                back.stream = Stream()
            stream = ahead.stream
            if stream is None:
                stream = ahead.stream = Stream()
            if stream.in_order(seq, size):
                feed(flow, to_server, data, ts, frame, source, row)
                continue
            for piece in stream.segment(seq, data, frame, ts):
                if isinstance(piece, Chunk):
                    feed(flow, to_server, piece.data, piece.ts, piece.frame, source, row)
                else:
                    if piece.overflow:
                        self._overflow(flow, stream, source, frame)
                    self._gap(flow, to_server != flow.decoder_reversed, frame)

    def _acked(self, flow: Flow, to_server: bool, stream: Stream, ack: int, frame: int,
               source: str, row: int) -> None:
        """The peer acknowledged bytes of a direction that waits behind a hole: the capture
        lost them; the hole becomes a gap now and what waited goes to the decoder
        (``Stream.acked``)."""
        decoder = flow.decoder
        if decoder is None or getattr(decoder, "finished", False):
            return
        for piece in stream.acked(ack):
            if isinstance(piece, Chunk):
                self._feed(flow, to_server, piece.data, piece.ts, piece.frame, source, row)
            else:
                self.warn(content_gap(flow, to_server, piece, source, frame))
                self._gap(flow, to_server != flow.decoder_reversed, frame)

    def _feed(self, flow: Flow, to_server: bool, data: bytes, ts: float, frame: int,
              source: str, row: int = -1) -> None:
        decoder = flow.decoder
        from_client = to_server != flow.decoder_reversed
        try:
            events = decoder.feed(from_client, data, ts, frame)
        except DecodeError as exc:  # the rest of these bytes is lost; the decoder resyncs
            self.warn(InputWarning(f"{flow.protocol}: {exc.message}", source, frame, "decode"))
            events = []
        except Exception as exc:  # a decoder bug must not end the run
            self._give_up(flow, "decoder", exc, frame)
            return
        problems = getattr(decoder, "problems", None)
        if problems:
            for problem in problems:
                if not isinstance(problem, DecodeError):  # a protocol's own record of it
                    problem = problem.as_error()
                where = problem.location
                self.warn(InputWarning(f"{flow.protocol}: {problem.message}", source,
                                       where.frame if where and where.frame is not None else frame,
                                       "decode"))
            problems.clear()
        if events:
            deferred = self._deferred
            if deferred is not None:
                deferred.extend([(row, event) for event in events])
            else:
                for event in events:
                    self.emit(event)
        for run in self._fed_runs:
            run.fed(decoder)

    def _overflow(self, flow: Flow, stream: Stream, source: str, frame: int) -> None:
        """A flow's reassembly buffer reached its bound: the hole was given up (counted; the
        first time in a run, a warning names the flow and frame)."""
        self.events["reassembly_overflows"] = self.events.get("reassembly_overflows", 0) + 1
        if "reassembly" not in self._limits_hit:
            self._limits_hit.add("reassembly")
            self.warn(InputWarning(
                f"{flow.protocol}: more than {stream.max_buffer:,} bytes waited behind a hole in "
                f"{_flow_text(flow)}: the hole was given up (later ones are counted in events, "
                "reassembly_overflows)", source, frame, "limit"))

    def _gap(self, flow: Flow, from_client: bool, frame: int | None) -> None:
        try:
            flow.decoder.gap(from_client)
        except Exception as exc:  # as in _feed
            self._give_up(flow, "decoder", exc, frame)

    def _give_up(self, flow: Flow, what: str, error: Exception, frame: int | None) -> None:
        """A decoder failed on this flow's bytes: say where, and decode nothing more of it."""
        self.warn(InputWarning(
            f"{flow.protocol} {what} failed on flow {_flow_text(flow)} "
            f"({type(error).__name__}: {error}); the rest of this flow is not decoded",
            flow.source, frame, "internal"))
        self.events["decoder_failures"] = self.events.get("decoder_failures", 0) + 1
        flow.decoder = GivenUp(flow.decoder)

    def _sink_failed(self, sink: object, what: str, error: Exception, source: str | None,
                     frame: int | None) -> None:
        """A sink (detectors, process checks) failed on one unit: note it once per sink and
        error class, count the rest; the run and the other sinks go on."""
        key = (type(sink).__name__, what, type(error).__name__)
        count = self._sink_failures.get(key, 0)
        self._sink_failures[key] = count + 1
        self.events["sink_failures"] = self.events.get("sink_failures", 0) + 1
        if count == 0:
            self.warn(InputWarning(
                f"{type(sink).__name__}.{what} failed ({type(error).__name__}: {error}); "
                "that unit was skipped (further failures of this kind are counted in events)",
                source, frame, "internal"))

    # ------------------------------------------------------------------ endings

    def _flush_stream(self, flow: Flow, from_client: bool) -> None:
        """Give the decoder what waits behind holes in one direction (the holes become gaps)."""
        side = flow.side(from_client)
        if side.stream is None or not side.stream.held:
            return
        for piece in side.stream.flush():
            if isinstance(piece, Chunk):
                self._feed(flow, from_client, piece.data, piece.ts, piece.frame, flow.source)
            else:
                self._gap(flow, from_client != flow.decoder_reversed, None)

    def _end_flow(self, flow: Flow) -> None:
        """End one flow (``_end_flows`` of a run of one)."""
        self._end_flows([flow])

    def _end_flows(self, flows: list[Flow]) -> None:
        """End flows as ``_end_flow`` does, in order, with the per-flow work done in bulk: the
        tallies, and sinks with ``on_flows(flows)`` get runs of flows at once (a run is cut
        where a flow's held bytes go to its decoder, whose events come before that flow)."""
        ended = self._ended_runs
        run: list[Flow] = []
        for flow in flows:
            if flow.decoder is not None:
                held = (flow.to_server.stream is not None and flow.to_server.stream.held) or (
                    flow.to_client.stream is not None and flow.to_client.stream.held)
                if held:
                    self._flows_to_sinks(run)
                    run = []
                    self._flush_stream(flow, True)
                    self._flush_stream(flow, False)
                for protocol in ended:
                    protocol.flow_ended(flow)
            run.append(flow)
        self._flows_to_sinks(run)

    def _flows_to_sinks(self, flows: list[Flow]) -> None:
        if not flows:
            return
        self.flow_count += len(flows)
        tallies = self.protocol_tally
        for flow in flows:
            to_server, to_client = flow.to_server, flow.to_client
            name = flow.protocol
            if not name:
                transport = flow.transport
                name = f"{transport}/{flow.server_port}" if flow.server_port else transport
            tally = tallies.get(name)
            if tally is None:
                tally = self._new_tally(name, flow)
            tally.flows += 1
            tally.packets += to_server.packets + to_client.packets
            tally.wire += to_server.bytes + to_client.bytes
            if len(tally.clients) < 100_000:
                tally.clients.add(flow.client)
                tally.servers.add(flow.server)
        self._hand_flows(flows)

    def _hand_flows(self, flows: list[Flow]) -> None:
        """Finished flows to the sinks: a run at once to those with ``on_flows``, one by one
        to the others (also ``parallel.SplitRun``'s way, whose workers keep the tallies)."""
        for sink in self.sinks:
            on_flows = getattr(sink, "on_flows", None)
            if on_flows is not None:
                try:
                    on_flows(flows)
                except Exception as exc:  # see _sink_failed
                    self._sink_failed(sink, "on_flow_end", exc, flows[0].source, None)
                continue
            for flow in flows:
                self._flow_to_sink(sink, flow)

    def _new_tally(self, name: str, flow: Flow) -> _ProtocolTally:
        """The tally of a protocol name seen first (beyond ``MAX_PROTOCOL_NAMES``, unclaimed
        ports are summed per transport)."""
        if len(self.protocol_tally) >= MAX_PROTOCOL_NAMES and not flow.protocol:
            transport = flow.transport
            self._limit("protocols", f"more than {MAX_PROTOCOL_NAMES:,} protocols and ports: "
                        f"flows of further unclaimed ports are summed as {transport}/other",
                        flow.source)
            name = f"{transport}/other"
            tally = self.protocol_tally.get(name)
            if tally is not None:
                return tally
        tally = self.protocol_tally[name] = _ProtocolTally()
        return tally

    def _flow_to_sink(self, sink: Sink, flow: Flow) -> None:
        try:
            on_flow = getattr(sink, "on_flow", None)
            if on_flow is not None:
                on_flow(flow)
            else:
                sink.on_flow_end(flow.summary(ip_text, mac_text))
        except Exception as exc:  # see _sink_failed
            self._sink_failed(sink, "on_flow_end", exc, flow.source, None)

    def close_all(self) -> None:
        self._end_flows(self.flows.drain())
        if self._slicing:
            self.hand_slices(None)
        for series in self.take_series():
            self.series_count += 1
            if self._segmenter is not None:
                self._segmenter.observe(series)
            for sink in self.sinks:
                try:
                    sink.on_series(series)
                except Exception as exc:  # see _sink_failed
                    self._sink_failed(sink, "on_series", exc, series.source or None,
                                      int(series.frame[0]) if len(series.frame) else None)

    def hand_slices(self, until: float | None) -> None:
        """The register values gathered since the last time to the sinks that take slices;
        everything up to capture time ``until`` has been handed out (None: the last slice)."""
        if not any(getattr(sink, "on_series_slices", None) is not None for sink in self.sinks):
            for run in self.runs:  # nobody takes the values: only their summaries stay
                run.fold_slices()
            return
        pieces = [piece for run in self.runs for piece in run.take_slices()]
        for sink in self.sinks:
            on_slices = getattr(sink, "on_series_slices", None)
            if on_slices is not None:
                try:
                    on_slices(pieces, until)
                except Exception as exc:  # see _sink_failed
                    self._sink_failed(sink, "on_series_slices", exc, None, None)

    def take_series(self) -> Iterator[Any]:
        """What the protocols gathered for ``Sink.on_series`` since the last time (empties it)."""
        for run in self.runs:
            yield from run.take_series()

    def result(self, states: list[_InputState], findings: list[Finding], profile: str | None,
               baseline: str | None, segments: tuple[Segment, ...] = ()) -> AnalysisResult:
        inputs = tuple(
            InputSummary(path=s.path, sha256=s.sha.hexdigest(), packets=s.packets,
                         first_seen=s.first, last_seen=s.last, format=s.format,
                         complete=s.complete, warnings=tuple(s.problems), events=s.events)
            for s in states
        )
        hosts = tuple(sorted(
            (HostSummary(mac=mac_text(h.mac) if h.mac else None,
                         ips=tuple(sorted(ip_text(ip) for ip in h.ips)), first_seen=h.first,
                         last_seen=h.last, packets=h.packets, bytes=h.wire)
             for h in self.hosts.values()),
            key=lambda h: (-h.packets, h.mac or "", h.ips),
        ))
        summaries = tuple(sorted(
            (ProtocolSummary(name, t.flows, t.packets, t.wire, len(t.clients), len(t.servers))
             for name, t in self.protocol_tally.items()),
            key=lambda p: (-p.packets, p.protocol),
        ))
        summary: dict[str, Any] = {}
        for run in self.runs:
            summary.update(run.summary())
        return AnalysisResult(
            inputs=inputs, hosts=hosts, protocols=summaries, **summary,
            findings=tuple(sorted(findings, key=lambda f: (-f.severity, f.first_seen or 0, f.id))),
            incidents=group_incidents(findings),
            warnings=tuple(self.warnings), warnings_suppressed=self.suppressed,
            packets=self.packets, flows=self.flow_count, series=self.series_count,
            events=dict(sorted(self.events.items())), profile=profile, baseline=baseline,
            segments=segments,
        )


def _stream_states(flows: list[Flow], which: Iterable[int]) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Per stream slot (flow * 2 + to server) of the TCP flows ``which``: the sequence number
    its ``Stream`` expects (-1: none yet) and whether bytes wait behind a hole; per flow,
    whether a decoder takes its bytes."""
    known = np.full(2 * len(flows), -1, dtype=np.int64)
    held = np.zeros(2 * len(flows), dtype=bool)
    decoding = np.zeros(len(flows), dtype=bool)
    for k in which:
        flow = flows[k]
        if flow.proto != IPPROTO_TCP:
            continue
        decoding[k] = flow.decoder is not None
        for slot, half in ((2 * k, flow.to_client), (2 * k + 1, flow.to_server)):
            stream = half.stream
            if stream is not None:
                if stream.held:
                    held[slot] = True
                if stream.next_seq is not None:
                    known[slot] = stream.next_seq
    return known, held, decoding


def _events_name_their_capture(flows: list[Flow], source: str) -> None:
    """A flow that goes on into the next rotated file: its decoder's events from now on name
    that file (their frame numbers are that file's). The flow itself keeps the file it began in
    (its first frame is there)."""
    for flow in flows:
        decoder = flow.decoder
        if decoder is None:
            continue
        for attribute in ("context", "ctx"):
            context = getattr(decoder, attribute, None)
            if isinstance(context, FlowContext) and context.source != source:
                setattr(decoder, attribute, FlowContext(
                    context.client, context.client_port, context.server, context.server_port,
                    context.transport, source))


def _size(path: str | Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def analyze(paths: Sequence[str | Path], *, progress: ProgressCallback | None = None,
            sinks: Sequence[Sink] = (), profile: str | None = None, baseline: str | None = None,
            fast_path: bool = True, batch_packets: int = BATCH_PACKETS,
            jobs: int = 1, read_ahead: ReadAhead | None = None) -> AnalysisResult:
    """Analyse captures (read as one, in timestamp order) and return the result document;
    ``jobs`` > 1 reads and decodes the captures ahead in ``jobs - 1`` worker processes
    (``parallel``: the same document), or in ``read_ahead``'s, started earlier for ``paths``."""
    return Analysis(sinks, fast_path=fast_path, jobs=jobs, read_ahead=read_ahead).run(
        paths, progress=progress, batch_packets=batch_packets, profile=profile, baseline=baseline)


def __getattr__(name: str) -> Any:
    """Names the result document's module holds, for code that still imports them from here."""
    import cranewatch.result

    try:
        return getattr(cranewatch.result, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
