"""Process checks over time slices of the register values, never the whole series (issue 13).

``ProcessSink`` keeps every register series until the end of the run and checks them whole:
memory grows with the capture. ``SlicedChecks`` takes the values as the pipeline hands them
out during the run (``add``: pieces of register series and write events, in time order;
``advance``: everything up to this capture time has been handed out), and checks one slice
of ``slice_s`` seconds at a time on a frame that reaches ``frame_lookback_s`` (60 s: the
checks' rolling windows, merge gaps and noise blocks) before the slice and ``lookahead_s``
after it (persistence, merge gaps, evidence windows), longer only while an incident open at
the slice's start waits for its end (up to ``max_span_s``). What reaches further back,
``lookback_s`` (660 s), is kept compact: the replay check (its source up to
``NEAR_SEARCH_S`` = 600 s back) searches the sensor columns of the rows before the frame,
8 bytes a row and sensor (``replay.check_replay_after``), and an evidence window reaching
before the frame is rebuilt, for the incident's signals only, from the register values held
for ``lookback_s``. What it keeps, whatever the capture's length: those values (a few MB at
50 Hz polling), the sensor columns, and each (rule, signal)'s first incidents as the
findings they make alone (evidence and plot made when kept).

The result equals ``ProcessSink.finish`` over the whole series (``tests/test_process_slices``
proves it on the lab captures with the lab profile):

- every slice uses the whole run's grid: the same origin (the piece's first sample) and step
  (``signals.grid_step`` of the first slice's values: the same when polling is regular), the
  rows of the slice computed as the whole grid computes them (``signals.frame_on_grid``);
- an incident belongs to the slice whose core holds its start (overlapping slices find it
  twice, it counts once), and is taken only when it and its evidence window end well before
  the frame does (``GUARD_S``); one that does not is found again by the next slice, which starts
  no later than its start (``watermark``);
- one finding per (rule, signal) as ``checks.segment_findings`` makes it: the evidence of the
  first ``MAX_EVIDENCE`` incidents (in its order) keeps a frame cut to their window, the others
  only count (count, first/last seen, severity);
- holes longer than ``engine.RECORDING_HOLE_S`` and new segments start a new piece (own grid),
  as ``engine.split_signals`` cuts the whole run.

Where the result can differ from the whole run (documented limits of bounded memory): a replay
whose source lies more than ``lookback_s`` back; an incident whose evidence window reaches
further back than ``lookback_s``; an incident still open when the frame reaches ``max_span_s``
(a limit held wrong all day, a bypass left set): it is taken as it stands, counted once, and
the later slices only move its last_seen on as it goes on (its evidence and plot are those of
the frame it was taken in, not of its whole length); a grid step that the first slice measures differently from the whole run
(irregular polling).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cranewatch.model import Finding, Severity
from cranewatch.process import plot
from cranewatch.process.checks import CheckContext, Incident, segment_findings
from cranewatch.process.checks.replay import replay_columns
from cranewatch.process.engine import RECORDING_HOLE_S, ProcessSink, ReplayPast, check_frame
from cranewatch.process.signals import (
    RegisterMap,
    RegisterSpec,
    Signal,
    SignalFrame,
    extract_signals,
    frame_on_grid,
    grid_step,
)
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse, RegisterSeries
from cranewatch.segments import Segment

MAX_EVIDENCE = 3  # as checks.segment_findings
# Rows an incident (with its evidence window) must end before the frame's last row to be
# final: merge gaps (<= 2 s), persistence (<= 5 s), gradients at the frame's edge.
GUARD_S = 10.0
# A value held on the grid comes from a sample up to this long before the frame's first row.
HOLD_S = 60.0


@dataclass
class _Group:
    """One (rule, signal): the first incidents with their cut-down context, and the rest counted."""

    # the first incidents, each as the finding it alone would make (its evidence and plot made
    # when it is kept, so no frame is held until the end)
    kept: list[tuple[tuple[float, float], Finding]] = field(default_factory=list)
    count: int = 0
    first_seen: float = math.inf
    last_seen: float = -math.inf
    severity: Severity | None = None


@dataclass
class SlicedChecks:
    """Process checks slice by slice (see the module). ``sink`` gives the configuration (profile,
    config, baseline, crane) as for a whole run; its ``series``/``writes`` are not used."""

    sink: ProcessSink
    slice_s: float = 60.0
    lookback_s: float = 660.0  # what replay searches and evidence windows reach back
    frame_lookback_s: float = 60.0  # what the checked frame reaches back (at most lookback_s)
    lookahead_s: float = 30.0
    max_span_s: float = 180.0
    with_plots: bool = True
    dt: float | None = None  # the grid step; None: measured on the first slice
    segment: Segment | None = None
    runs: int = 0  # slices checked
    _series: list[RegisterSeries] = field(default_factory=list)
    _writes: list[object] = field(default_factory=list)
    _origin: float | None = None  # the piece's first sample: the grid's origin
    _dt: float | None = None
    _latest: float = -math.inf  # the latest sample handed out
    _until: float = -math.inf  # everything up to here has been handed out
    _watermark: float = -math.inf  # incidents starting before this are settled
    _groups: dict[tuple[str, str], _Group] = field(default_factory=dict)
    # (rule, signal) of incidents taken while still open (a frame grew beyond ``max_span_s``):
    # the next slices find them again from their frame's start and only move their end on
    _open: set[tuple[str, str]] = field(default_factory=set)
    _wait_until: float = -math.inf  # an incident open at the slice's start: values to wait for
    # the replay check's past: grid rows (from ``_past_k`` on) with the sensor columns only
    _past_k: int = 0
    _past_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    _past: dict[str, np.ndarray] = field(default_factory=dict)
    _past_specs: dict[str, RegisterSpec] = field(default_factory=dict)

    # ------------------------------------------------------------------ input

    def add(self, series: Iterable[RegisterSeries] = (), writes: Iterable[object] = ()) -> None:
        """Values of the next stretch of time (each piece later than what ``advance`` closed)."""
        register_map = self.sink.register_map()
        served = [piece for piece in series
                  if len(piece.ts) and register_map.serves(piece.slave, piece.unit_id)]
        pieces = [cut for piece in served for cut in _at_holes(piece)]
        if len(pieces) > len(served):
            # a hole inside a piece (one corrupt timestamp weeks away): its parts in time order,
            # so the hole starts a new piece of the recording as ``engine.split_at_holes`` does
            pieces.sort(key=lambda cut: float(cut.ts[0]))
        for piece in pieces:
            self._take(float(piece.ts[0]), float(piece.ts[-1]))
            self._series.append(piece)
        for event in writes:
            if type(event).__name__ == "MqttPublishRequest":
                if not register_map.telemetry:
                    continue
            elif not _carries_value(event, register_map):
                continue
            ts = float(getattr(event, "ts", 0.0))
            self._take(ts, ts)
            self._writes.append(event)

    def _take(self, first: float, last: float) -> None:
        if self._origin is not None and first - self._latest > RECORDING_HOLE_S:
            # a hole in the recording: what came before is a piece of its own
            self._flush()
        if self._origin is None:
            self._origin = first
            self._watermark = first
        self._latest = max(self._latest, last)

    def advance(self, until: float) -> None:
        """Every value up to ``until`` (capture time) has been handed out: check what is ready."""
        self._until = max(self._until, until)
        while self._origin is not None and self._step(final=False):
            pass

    def start_segment(self, segment: Segment | None) -> None:
        """A new recording: check what is left of the last one on its own first."""
        self._flush()
        self.segment = segment

    def finish(self) -> list[Finding]:
        """Check the rest; one finding per (rule, signal), as a whole run gives them."""
        self._flush()
        findings: list[Finding] = []
        for group in self._groups.values():
            if not group.kept:
                continue
            # as ``segment_findings`` makes it: the first incident's finding, the evidence of
            # each kept one in order, the plot only on the first
            finding = group.kept[0][1]
            evidence = (*finding.evidence[:1],
                        *(replace(e, values={k: v for k, v in e.values.items() if k != "svg"})
                          for _, made in group.kept[1:] for e in made.evidence[:1]))
            findings.append(replace(finding, evidence=evidence, count=group.count,
                                    first_seen=group.first_seen, last_seen=group.last_seen,
                                    severity=group.severity or finding.severity))
        findings.sort(key=lambda f: (f.first_seen or 0.0, f.rule))
        return findings

    # ------------------------------------------------------------------ slices

    def _flush(self) -> None:
        while self._origin is not None and self._step(final=True):
            pass
        self._series, self._writes = [], []
        self._origin, self._dt = None, None
        self._past_k, self._past_t, self._past, self._past_specs = 0, np.empty(0), {}, {}
        self._latest = self._until = self._watermark = -math.inf

    def _signals(self, start: float, end: float, register_map: RegisterMap | None = None,
                 hold: float = 0.0) -> dict[str, Signal]:
        """The samples from ``start`` to ``end``; with ``hold``, also each piece's last row
        before ``start`` (up to ``hold`` earlier) and the writes of that stretch: the value
        each master's signals hold at ``start``, without the whole stretch's samples."""
        own = [cut for piece in self._series if (cut := _cut(piece, start, end, hold)) is not None]
        writes = [w for w in self._writes if start - hold <= float(getattr(w, "ts", 0.0)) <= end]
        return extract_signals(own, writes, register_map or self.sink.register_map())

    def _step(self, final: bool) -> bool:
        """Check the next slice if its data is all there (or ``final``); True when it moved on."""
        assert self._origin is not None
        c0 = self._watermark
        c1 = c0 + self.slice_s
        ready = min(self._until, self._latest)
        if not final and (ready < c1 + self.lookahead_s or ready < self._wait_until):
            return False
        # the frame ends a look-ahead after the slice (or where an incident open at its start
        # waits for values to): not at the last value handed out, so frames stay short
        ext1 = self._latest if final else min(ready, max(c1 + self.lookahead_s, self._wait_until))
        if self._dt is None:
            # The grid as the whole run makes it: from the first sample of a signal (values of
            # unmapped registers and writes to other PLCs are none), at the polls' step.
            first = self._signals(-math.inf, self._latest if final else ready)
            if not first:
                if final:
                    self._drop_before(math.inf)
                    self._origin = None
                return False
            self._origin = self._watermark = c0 = min(float(s.ts[0]) for s in first.values())
            c1 = c0 + self.slice_s
            self._dt = self.dt if self.dt is not None else grid_step(first)
            if not final:
                ext1 = min(ready, max(c1 + self.lookahead_s, self._wait_until))
        origin = self._origin
        dt = self._dt
        ext0 = max(origin, c0 - self.lookback_s)  # what replay and evidence windows reach
        fx0 = max(origin, c0 - min(self.frame_lookback_s, self.lookback_s))  # the frame's start
        # the frame's first rows hold the last sample before it: one row per piece (per master
        # and register range; a shape whose masters poll 8 times as often had 60 s of them here)
        signals = self._signals(fx0, ext1, hold=HOLD_S)
        k0 = max(0, math.ceil((fx0 - origin) / dt - 1e-9))
        kr = max(0, math.ceil((ext0 - origin) / dt - 1e-9))
        k1 = math.floor((ext1 - origin) / dt)
        if not signals or k1 - k0 < 1:
            if final:
                self._drop_before(math.inf)
                self._origin = None
            return False
        t = origin + dt * np.arange(k0, k1 + 1)
        frame = frame_on_grid(signals, t, dt)
        config = self.sink.resolved(_span(frame, origin, final))
        self.runs += 1
        incidents = check_frame(frame, config, self.sink.baseline, signals, self.segment,
                                self._past_rows(kr, k0))
        self._remember(frame, k0)
        reach = (k0, kr, ext0)
        last_row = float(frame.t[-1])
        forced = not final and ext1 - fx0 > self.max_span_s
        # A frame grown beyond ``max_span_s`` (an incident open all along): what starts before
        # its last ``lookahead_s`` is taken, open or not (an open one as it stands); the rest,
        # judged at the frame's edge, is the next slice's
        settled_before = math.inf if final else (last_row - self.lookahead_s if forced else c1)
        owned: list[tuple[CheckContext, Incident]] = []
        going_on: list[tuple[str, str, float, bool]] = []  # open ones taken before, as they go on
        opened: set[tuple[str, str]] = set()
        for ctx, inc in incidents:
            start_t = float(frame.t[inc.start])
            pad = _pad_rows(ctx, inc)
            end_t = float(frame.t[min(len(frame.t) - 1, inc.end + pad)])
            still_open = end_t + GUARD_S > last_row or inc.end + pad >= len(frame.t) - 1
            if start_t < c0 and c0 > origin:
                if (inc.rule, inc.signal) in self._open and float(frame.t[inc.end]) >= c0 - dt:
                    going_on.append((inc.rule, inc.signal, float(frame.t[inc.end]), still_open))
                continue  # an earlier slice's
            if start_t >= settled_before:
                continue  # the next slice's
            if not final and still_open:
                if forced:
                    opened.add((inc.rule, inc.signal))  # taken as it stands; the next slices move its end on
                else:
                    settled_before = min(settled_before, start_t)  # the next slice finds it again
                    continue
            owned.append((ctx, inc))
        going: set[tuple[str, str]] = set()
        for rule, signal, end, still_open in going_on:
            group = self._groups.get((rule, signal))
            if group is not None:
                group.last_seen = max(group.last_seen, end)
            if still_open and not final:
                going.add((rule, signal))
        # one (rule, signal) may have other incidents here (taken whole before): it is let go
        # of only when none of them is still open
        self._open = (self._open - ({(rule, signal) for rule, signal, _, _ in going_on} - going)) | opened
        if settled_before <= c0 and not final:
            # an incident open at the slice's start: wait for more values (a slice's worth:
            # checking the growing frame at every hand-out would cost it again each time)
            self._wait_until = ext1 + self.slice_s
            return False
        for ctx, inc in owned:
            if float(frame.t[inc.start]) < settled_before:
                self._keep(ctx, inc, reach)
        if final:
            self._watermark = last_row + dt
            return False
        self._watermark = settled_before
        self._drop_before(self._watermark - self.lookback_s - HOLD_S)
        return True

    def _keep(self, ctx: CheckContext, inc: Incident, reach: tuple[int, int, float]) -> None:
        frame = ctx.frame
        group = self._groups.setdefault((inc.rule, inc.signal), _Group())
        group.count += 1
        group.first_seen = min(group.first_seen, float(frame.t[inc.start]))
        group.last_seen = max(group.last_seen, float(frame.t[inc.end]))
        group.severity = inc.severity if group.severity is None else max(group.severity, inc.severity)
        order = (float(frame.t[inc.detect]), float(frame.t[inc.start]))
        if len(group.kept) >= MAX_EVIDENCE and order >= group.kept[-1][0]:
            return
        cut_ctx, cut_inc = _cut_context(ctx, inc, self._before(ctx, inc, reach))
        made = segment_findings([(cut_ctx, cut_inc)], plot.render if self.with_plots else None, 1)
        group.kept.append((order, made[0]))
        # stable: an incident equal in order to a kept one comes after it, as in a whole run
        group.kept.sort(key=lambda item: item[0])
        del group.kept[MAX_EVIDENCE:]

    def _before(self, ctx: CheckContext, inc: Incident, reach: tuple[int, int, float]
                ) -> SignalFrame | None:
        """The grid rows before the frame that the incident's evidence window reaches (as far
        as ``lookback_s``), with the columns of its signals: built from the values held for
        the look-back, so a long incident's window is the one a longer frame would give."""
        k0, kr, ext0 = reach
        rows = min(_pad_rows(ctx, inc) - inc.start, k0 - kr)
        if rows <= 0 or self._origin is None or self._dt is None:
            return None
        names = {n for n in (inc.signal, *inc.related) if n in ctx.frame.columns}
        full = self.sink.register_map()
        only = replace(full, registers=tuple(r for r in full.registers if r.name in names),
                       telemetry=tuple(p for p in full.telemetry if p.name in names))
        t = self._origin + self._dt * np.arange(k0 - rows, k0)
        return frame_on_grid(self._signals(ext0 - HOLD_S, float(t[-1]), only), t, self._dt)

    def _past_rows(self, first: int, stop: int) -> ReplayPast | None:
        """The replay check's rows [first, stop) (grid indices) as far as they are kept; the
        rows before ``first`` are let go of (no later slice reaches them)."""
        if first > self._past_k and len(self._past_t):
            cut = min(first - self._past_k, len(self._past_t))
            self._past_t = self._past_t[cut:].copy()
            self._past = {name: column[cut:].copy() for name, column in self._past.items()}
            self._past_k += cut
        lo = max(first, self._past_k) - self._past_k
        hi = stop - self._past_k
        if hi > len(self._past_t) or hi <= lo:
            return None  # not kept up to the frame (the piece's first slice)
        return ReplayPast(self._past_t[lo:hi], {n: c[lo:hi] for n, c in self._past.items()},
                          dict(self._past_specs))

    def _remember(self, frame: SignalFrame, k0: int) -> None:
        """Keep the frame's sensor columns for the replay checks of the next slices."""
        end = self._past_k + len(self._past_t)
        if not len(self._past_t) or k0 > end:
            self._past_k, self._past_t, self._past = k0, np.empty(0), {}
            end = k0
        new = frame.t[end - k0:]
        if not len(new):
            return
        columns = replay_columns(frame)
        held = len(self._past_t)
        for name in [*columns, *(n for n in self._past if n not in columns)]:
            before = self._past.get(name)
            if before is None:
                before = np.full(held, np.nan)
            after = columns.get(name)
            after = after[end - k0:] if after is not None else np.full(len(new), before[-1] if held else np.nan)
            self._past[name] = np.concatenate((before, after))
            if name in frame.specs:
                self._past_specs[name] = frame.specs[name]
        self._past_t = np.concatenate((self._past_t, new))

    def _drop_before(self, when: float) -> None:
        """Let go of values no later slice can need."""
        kept: list[RegisterSeries] = []
        for piece in self._series:
            if float(piece.ts[-1]) < when:
                continue
            cut = piece if float(piece.ts[0]) >= when else _cut(piece, when, math.inf)
            if cut is not None:
                kept.append(cut)
        self._series = kept
        self._writes = [w for w in self._writes if float(getattr(w, "ts", 0.0)) >= when]


def _at_holes(piece: RegisterSeries) -> list[RegisterSeries]:
    """``piece`` cut where its answers are more than ``RECORDING_HOLE_S`` apart."""
    holes = np.flatnonzero(np.diff(piece.ts) > RECORDING_HOLE_S)
    if not len(holes):
        return [piece]
    edges = [0, *(int(i) + 1 for i in holes), len(piece.ts)]
    return [replace(piece, ts=piece.ts[a:b], frame=piece.frame[a:b], values=piece.values[a:b])
            for a, b in itertools.pairwise(edges)]


def _carries_value(event: object, register_map: RegisterMap) -> bool:
    """A write event ``signals.extract_signals`` can take a sample from: a write request to
    the crane's PLC, or an exception answer that says a write was refused (echoes repeat
    their request; writes to other PLCs are no signal)."""
    if isinstance(event, ModbusRequest):
        return register_map.serves(event.dst, event.unit_id)
    if isinstance(event, ModbusResponse):
        return event.exception_code is not None
    return True


def _cut(piece: RegisterSeries, start: float, end: float, hold: float = 0.0) -> RegisterSeries | None:
    """The rows from ``start`` to ``end``; with ``hold``, and the last row before ``start``
    when it is no more than ``hold`` earlier."""
    lo = int(np.searchsorted(piece.ts, start, side="left"))
    if hold and lo and float(piece.ts[lo - 1]) >= start - hold:
        lo -= 1
    hi = int(np.searchsorted(piece.ts, end, side="right"))
    if hi <= lo:
        return None
    if lo == 0 and hi == len(piece.ts):
        return piece
    return replace(piece, ts=piece.ts[lo:hi], frame=piece.frame[lo:hi], values=piece.values[lo:hi])


def _span(frame: SignalFrame, origin: float, final: bool) -> SignalFrame:
    """A frame whose first and last rows are what the configuration's maintenance windows are
    sampled over (``engine.maintenance_intervals``, every ``MAINTENANCE_STEP_S`` from the
    piece's start): from the piece's start, as the whole run samples them, to a sample point
    of that run after this frame's end (its own end for the last slice), so each window edge
    is refined between the same two samples and comes out the same."""
    last = float(frame.t[-1])
    if not final:
        last = origin + MAINTENANCE_STEP_S * math.ceil((last - origin) / MAINTENANCE_STEP_S)
    return replace(frame, t=np.array([origin, last]))


MAINTENANCE_STEP_S = 60.0  # engine.maintenance_intervals' step


def _pad_rows(ctx: CheckContext, inc: Incident) -> int:
    """The rows of evidence around an incident (``checks.evidence_window``, ``plot.render``)."""
    return max(ctx.seconds(5.0), (inc.end - inc.start + 1) // 2) + 1


def _cut_context(ctx: CheckContext, inc: Incident, before: SignalFrame | None = None
                 ) -> tuple[CheckContext, Incident]:
    """The context cut to the incident's evidence window (rows re-numbered) and to what its
    evidence reads (the columns of its signal and related ones, the samples of its signal),
    copied: a kept incident holds no view of its slice's frame or samples. ``before``: the
    rows before the frame the window reaches, with the incident's signals
    (``SlicedChecks._before``)."""
    frame = ctx.frame
    pad = _pad_rows(ctx, inc)
    hi = min(len(frame.t), inc.end + pad + 1)
    if before is None or not len(before.t):
        before = SignalFrame(np.empty(0), frame.dt, {}, {}, {})
        lo = max(0, inc.start - pad)
    else:
        lo = 0
    m = len(before.t)
    names = [n for n in dict.fromkeys((inc.signal, *inc.related)) if n in frame.columns]

    def joined(earlier: dict[str, np.ndarray], now: dict[str, np.ndarray], name: str,
               fill: float) -> np.ndarray:
        first = earlier.get(name)
        return np.concatenate((np.full(m, fill) if first is None else first, now[name][lo:hi]))

    small = SignalFrame(np.concatenate((before.t, frame.t[lo:hi])), frame.dt,
                        {n: joined(before.columns, frame.columns, n, np.nan) for n in names},
                        {n: joined(before.age, frame.age, n, np.inf) for n in names if n in frame.age},
                        frame.specs, frame.source,
                        {n: joined(before.frames, frame.frames, n, 0) for n in names if n in frame.frames})
    since = float(small.t[0]) - HOLD_S
    until = float(small.t[-1])
    signals = {}
    signal = ctx.signals.get(inc.signal)
    part = signal.between(since, until) if signal is not None else None
    if part is not None:
        signals[inc.signal] = replace(part, ts=part.ts.copy(), values=part.values.copy(),
                                      frames=part.frames.copy(), origin=part.origin.copy())
    states = np.concatenate((np.zeros(m, dtype=ctx.states.dtype), ctx.states[lo:hi]))
    cut = replace(ctx, frame=small, states=states, signals=signals)
    shift = m - lo
    residual = None if inc.residual is None else np.array(inc.residual)
    return cut, replace(inc, start=inc.start + shift, end=inc.end + shift,
                        detect=inc.detect + shift, residual=residual)


def sliced_findings(sink: ProcessSink, series: Sequence[RegisterSeries], writes: Sequence[object] = (),
                    step_s: float = 60.0, **options: float) -> list[Finding]:
    """The findings of ``SlicedChecks`` fed the way the pipeline would: every ``step_s``
    seconds of capture time the pieces of ``series`` and the writes of that stretch
    (for tests and benchmarks that hold whole series already)."""
    checks = SlicedChecks(sink, **options)  # type: ignore[arg-type]
    stamps = [float(s.ts[0]) for s in series if len(s.ts)] + [float(getattr(w, "ts", 0.0)) for w in writes]
    if not stamps:
        return checks.finish()
    start = min(stamps)
    end = max([float(s.ts[-1]) for s in series if len(s.ts)] + stamps)
    edge = start
    while edge <= end:
        stop = edge + step_s
        checks.add([cut for s in series if (cut := _cut_open(s, edge, stop)) is not None],
                   [w for w in writes if edge <= float(getattr(w, "ts", 0.0)) < stop])
        checks.advance(stop)
        edge = stop
    return checks.finish()


def _cut_open(piece: RegisterSeries, start: float, stop: float) -> RegisterSeries | None:
    """The samples in [start, stop)."""
    lo = int(np.searchsorted(piece.ts, start, side="left"))
    hi = int(np.searchsorted(piece.ts, stop, side="left"))
    if hi <= lo:
        return None
    return replace(piece, ts=piece.ts[lo:hi], frame=piece.frame[lo:hi], values=piece.values[lo:hi])
