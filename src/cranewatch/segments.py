"""Segments: the stretches of captures read together that join into one continuous recording.

Several captures given to one analysis are either pieces of one recording (files rotated by
``tcpdump -G``/``-C`` or a dumpcap ring buffer; taps recording at the same time) or separate
recordings (two lab runs, Monday's and Tuesday's capture). Values, rates and replays compare
only within a recording: across two runs a position "jumps", a height "freezes" over the
minutes between them, an interval between callbacks spans the night. So the files are cut
into segments where they do not join, judged by the traffic itself:

- **capture session**: the file headers differ (link types, snap lengths, interface names);
- **gap**: the silence between one file's last packet and the next file's first is longer than
  ``GAP_POLLS`` polls of the fastest regular Modbus poll still running at the boundary, and
  longer than any silence inside the files on either side (without polling: the latter alone);
- **counter**: a register that counts steadily (a PLC heartbeat) jumps further across the
  boundary than its own rate allows, or back.

Only file boundaries are ever cut: a silence inside one file is something that capture saw
(a PLC restart, a link down), which is evidence, not a join. Files that overlap in time are
taps recording together and stay one segment.

``SegmentPlanner`` is fed the file spans (after reading) and the register series (as the
pipeline hands them out) and returns the ``Segment`` records of the analysis document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cranewatch.model import iso_time
from cranewatch.protocols.modbus import RegisterSeries
from cranewatch.sources.pcap import CaptureHeader

__all__ = ["FileSpan", "Segment", "SegmentFile", "SegmentPlanner", "plan_segments"]

GAP_POLLS = 5  # polls of the fastest regular poll that may go missing across a file boundary
WINDOW_READS = 64  # reads before a boundary that give a poll's period and counters there
MIN_READS = 8  # reads a poll (or counter) needs before a boundary to be judged
MAX_JITTER = 0.5  # a regular poll: median absolute deviation of its intervals / its period
COUNTER_SHARE = 0.9  # of the steps before the boundary that must be small and forward
MAX_COUNTER_STEP = 1024  # register units per poll a counter may advance
CUT_KINDS = ("session", "gap", "counter")  # the order reasons are given in
REGISTER_FUNCTIONS = frozenset({3, 4})  # reads of holding and input registers (counters)
LINKTYPE_NAMES = {0: "BSD loopback", 1: "Ethernet", 101: "raw IP", 105: "IEEE 802.11",
                  113: "Linux cooked", 127: "802.11 radiotap", 276: "Linux cooked v2"}


@dataclass(frozen=True, slots=True)
class FileSpan:
    """One capture file as read: its place in the input list, its time span and headers."""

    path: str
    first_seen: float
    last_seen: float
    packets: int
    headers: tuple[CaptureHeader, ...] = ()
    longest_silence: float = 0.0  # the longest time between two packets inside the file

    def session(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
        """Link types, snap lengths and interface names: what one capture session shares."""
        return (tuple(sorted({h.linktype for h in self.headers})),
                tuple(sorted({h.snaplen for h in self.headers})),
                tuple(sorted({h.interface for h in self.headers if h.interface})))


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """The part of one file in a segment (always the whole file: only file boundaries cut)."""

    path: str
    first_frame: int
    last_frame: int
    first_seen: float
    last_seen: float

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "frames": [self.first_frame, self.last_frame],
                "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen)}


@dataclass(frozen=True, slots=True)
class Segment:
    """One continuous recording among the captures read: its files, time span and, from the
    second segment on, why it was cut from the one before (``kinds``: gap, session, counter)."""

    number: int  # 1-based, in time order
    files: tuple[SegmentFile, ...]
    start: float
    end: float
    packets: int
    kinds: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": "segment", "number": self.number,
                "first_seen": iso_time(self.start), "last_seen": iso_time(self.end),
                "packets": self.packets, "files": [f.to_json() for f in self.files],
                "cut": list(self.kinds), "reasons": list(self.reasons)}

    def file_of(self, ts: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """For samples (time, file-local frame number), the index into ``files`` of the file
        they came from: the last file begun by that time whose frames reach the number, else
        the one before (a timestamp shared by the last packet of one rotated file and the
        first of the next counts to the later file when the frame number fits it)."""
        ts = np.asarray(ts, dtype=np.float64)
        frame = np.asarray(frame, dtype=np.int64)
        firsts = np.array([f.first_seen for f in self.files])
        lasts = np.array([f.last_frame for f in self.files])
        index = np.clip(np.searchsorted(firsts, ts, side="right") - 1, 0, len(self.files) - 1)
        earlier = (frame > lasts[index]) & (index > 0)
        return np.where(earlier, index - 1, index)


@dataclass(slots=True)
class _Boundary:
    """Where one file starts after every file before it in time has ended."""

    before: FileSpan  # of the files before, the one that ended last
    after: FileSpan
    before_end: float
    silence: float  # the longest silence inside any file on either side
    kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rhythm: tuple[float, str] | None = None  # fastest regular poll at the boundary: (period, who)

    @property
    def gap(self) -> float:
        return self.after.first_seen - self.before_end


def _link(linktypes: Sequence[int]) -> str:
    return "+".join(LINKTYPE_NAMES.get(t, f"linktype {t}") for t in linktypes) or "?"


BOUNDARIES_AT_ONCE = 256  # boundaries whose windows of reads are gathered in one go


class SegmentPlanner:
    """Judges the boundaries between files; fed every register series before ``segments``.

    Each series is looked at once for all boundaries: the ``WINDOW_READS`` reads before each
    boundary (never reaching back over the boundary before it) give the poll's period there
    and the steps of its counters, gathered as arrays, so a week of ring-buffer files costs
    about what one boundary does per read.
    """

    def __init__(self, files: Sequence[FileSpan]) -> None:
        self.files = sorted((f for f in files if f.packets), key=lambda f: (f.first_seen, f.last_seen))
        self.boundaries: list[_Boundary] = []
        last: FileSpan | None = None
        silence = 0.0
        for span in self.files:
            if last is not None and span.first_seen >= last.last_seen:
                self.boundaries.append(_Boundary(last, span, last.last_seen,
                                                 max(silence, span.longest_silence)))
            if last is None or span.last_seen >= last.last_seen:
                last = span
            silence = max(silence, span.longest_silence)
        for boundary in self.boundaries:
            self._judge_session(boundary)
        self._ends = np.array([b.before_end for b in self.boundaries], dtype=np.float64)
        self._starts = np.array([b.after.first_seen for b in self.boundaries], dtype=np.float64)
        # Only a boundary silence longer than one inside the files needs the poll rhythm to
        # judge it (rotated files: hardly ever).
        self._timed = np.array([b.gap > b.silence for b in self.boundaries], dtype=bool)

    def observe(self, series: RegisterSeries) -> None:
        """Note what one register series says at every boundary: its poll rhythm, its counters."""
        if not self.boundaries or len(series.ts) < MIN_READS:
            return
        ts = series.ts
        last = np.searchsorted(ts, self._ends, side="right")  # reads up to each boundary
        first = np.searchsorted(ts, self._starts, side="left")  # the first read after it
        since = np.concatenate(([0], first[:-1]))  # where the recording before it began
        counters = _counters(series, last) if series.function in REGISTER_FUNCTIONS else None
        if counters is not None:  # what each counted in the recording before each boundary
            lowest, highest = _ranges(counters.values, since, last)
        for lo in range(0, len(self.boundaries), BOUNDARIES_AT_ONCE):
            chunk = np.arange(lo, min(lo + BOUNDARIES_AT_ONCE, len(self.boundaries)))
            chunk = chunk[last[chunk] - since[chunk] >= MIN_READS]
            if len(chunk) == 0:
                continue
            rows = last[chunk, None] - WINDOW_READS + np.arange(WINDOW_READS)
            valid = rows >= since[chunk, None]
            rows = np.maximum(rows, 0)
            timed = self._timed[chunk]
            if timed.any():
                self._note_rhythm(series, chunk[timed], ts[rows[timed]], valid[timed])
            after = first[chunk] < len(ts)
            if counters is not None and after.any():
                chunk, rows, valid = chunk[after], rows[after], valid[after]
                self._note_counters(series, counters, chunk, rows, valid, first[chunk],
                                    lowest[chunk], highest[chunk])

    def _note_rhythm(self, series: RegisterSeries, chunk: np.ndarray, ts: np.ndarray,
                     valid: np.ndarray) -> None:
        steps = np.where(valid[:, :-1], np.diff(ts, axis=1), np.nan)
        steps[steps <= 0] = np.nan
        count = np.sum(~np.isnan(steps), axis=1)
        enough = count >= MIN_READS - 1
        if not enough.any():
            return
        chunk, steps, ts, count = chunk[enough], steps[enough], ts[enough], count[enough]
        period = _median(steps, count)
        regular = _median(np.abs(steps - period[:, None]), count) <= MAX_JITTER * period
        # still polling when its file ended (else it says nothing about the boundary)
        running = self._ends[chunk] - ts[:, -1] <= 2 * period
        who = (f"{series.master} reads {series.table} {series.address}–"
               f"{series.address + series.quantity - 1} of {series.slave}")
        for index, poll in zip(chunk[regular & running].tolist(),
                               period[regular & running].tolist(), strict=True):
            boundary = self.boundaries[index]
            if boundary.rhythm is None or poll < boundary.rhythm[0]:
                boundary.rhythm = (poll, who)

    def _note_counters(self, series: RegisterSeries, counters: _Counters, chunk: np.ndarray,
                       rows: np.ndarray, valid: np.ndarray, first: np.ndarray,
                       lowest: np.ndarray, highest: np.ndarray) -> None:
        values = counters.values
        before = values[rows]  # (boundaries, reads, counters)
        steps = np.diff(before, axis=1)  # uint16: wraps as the register does
        counted = valid[:, :-1, None]
        forward = (steps >= 1) & (steps <= MAX_COUNTER_STEP) & counted
        share = forward.sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
        counting = share >= COUNTER_SHARE
        if not counting.any():
            return
        ts = series.ts
        began = ts[rows[np.arange(len(rows)), np.argmax(valid, axis=1)]]
        ended = ts[rows[:, -1]]
        span = np.maximum(ended - began, 1e-9)
        rate = np.sum(steps, axis=1, dtype=np.int64, where=counted) / span[:, None]
        largest = np.max(np.where(forward, steps, 0), axis=1).astype(np.float64)
        last = before[:, -1].astype(np.float64)
        resumed = values[first].astype(np.float64)
        expected = rate * (ts[first] - ended)[:, None]
        tolerance = 3 * largest + 0.25 * expected
        # A counter of another recording resumes anywhere; one of the same recording where
        # its rate takes it, within the values it showed before (a value that only looks
        # like a counter: a sawtooth), or near zero (a counter that wraps before 65535, or a
        # PLC restart: which the process checks then judge). Less than the rate says is no
        # break: some counters count polls, not time. Near the top it may wrap: no say.
        upper = np.maximum(highest, last + expected) + tolerance
        lower = lowest - tolerance
        wrapped = resumed <= expected + tolerance
        broken = counting & (last + expected + tolerance < 65536) & (
            (resumed > upper) | ((resumed < lower) & ~wrapped))
        for k, index in np.argwhere(broken).tolist():
            column = int(counters.columns[index])
            boundary = self.boundaries[int(chunk[k])]
            boundary.kinds.append("counter")
            boundary.reasons.append(
                f"counter {series.table} {series.address + column} of {series.slave} (read by "
                f"{series.master}, +{rate[k, index]:.1f}/s) goes from {int(last[k, index])} "
                f"to {int(resumed[k, index])} across the boundary, where "
                f"+{expected[k, index]:.0f} was due")

    @staticmethod
    def _judge_session(boundary: _Boundary) -> None:
        before = boundary.before
        (link_a, snap_a, name_a), (link_b, snap_b, name_b) = before.session(), boundary.after.session()
        differ = []
        if link_a != link_b:
            differ.append(f"link type {_link(link_a)} vs {_link(link_b)}")
        if snap_a != snap_b:
            differ.append(f"snap length {'/'.join(map(str, snap_a))} vs {'/'.join(map(str, snap_b))}")
        if name_a != name_b:
            differ.append(f"interface {','.join(name_a) or '-'} vs {','.join(name_b) or '-'}")
        if differ:
            boundary.kinds.append("session")
            boundary.reasons.append(f"another capture session than {before.path}: " + "; ".join(differ))

    def _judge_gap(self, boundary: _Boundary) -> None:
        gap = boundary.gap
        # A silence the recordings show inside themselves may fall on a file boundary too.
        silence = boundary.silence
        if boundary.rhythm is not None:
            period, who = boundary.rhythm
            allowed = GAP_POLLS * period
            if gap > max(allowed, silence):
                boundary.kinds.append("gap")
                boundary.reasons.append(
                    f"{gap:.3f} s without a packet; the polling rhythm ({who} every "
                    f"{period:.3f} s) allows {allowed:.3f} s"
                    + (f", the longest silence inside the files {silence:.3f} s" if silence > allowed else ""))
            return
        if gap > silence:
            boundary.kinds.append("gap")
            boundary.reasons.append(
                f"{gap:.3f} s without a packet, longer than any silence inside the files on "
                f"either side ({silence:.3f} s; no regular polling to time it by)")

    def segments(self) -> tuple[Segment, ...]:
        """The segments, in time order, each with why it was cut from the one before."""
        cuts: dict[int, _Boundary] = {}
        for boundary in self.boundaries:
            self._judge_gap(boundary)
            if boundary.kinds:
                order = sorted(range(len(boundary.kinds)), key=lambda i: CUT_KINDS.index(boundary.kinds[i]))
                boundary.kinds = [boundary.kinds[i] for i in order]
                boundary.reasons = [boundary.reasons[i] for i in order]
                cuts[id(boundary.after)] = boundary
        groups: list[tuple[list[FileSpan], _Boundary | None]] = []
        for span in self.files:
            cut = cuts.get(id(span))
            if not groups or cut is not None:
                groups.append(([], cut))
            groups[-1][0].append(span)
        return tuple(
            Segment(number=n, files=tuple(SegmentFile(f.path, 1, f.packets, f.first_seen, f.last_seen)
                                          for f in spans),
                    start=min(f.first_seen for f in spans), end=max(f.last_seen for f in spans),
                    packets=sum(f.packets for f in spans),
                    kinds=tuple(dict.fromkeys(cut.kinds)) if cut else (),
                    reasons=tuple(cut.reasons) if cut else ())
            for n, (spans, cut) in enumerate(groups, start=1))


@dataclass(frozen=True, slots=True)
class _Counters:
    """The registers of one series that count (nearly every step forward, small): their
    columns and values."""

    columns: np.ndarray
    values: np.ndarray


def _ranges(values: np.ndarray, since: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest of ``values`` rows [since, last) for each boundary (as floats;
    NaN where that stretch is empty)."""
    lowest = np.full((len(since), values.shape[1]), np.nan)
    highest = lowest.copy()
    usable = np.flatnonzero((last > since) & (last < len(values)))
    if len(usable):
        edges = np.stack((since[usable], last[usable]), axis=1).ravel()
        lowest[usable] = np.minimum.reduceat(values, edges, axis=0)[0::2]
        highest[usable] = np.maximum.reduceat(values, edges, axis=0)[0::2]
    return lowest, highest


COUNTER_ROWS_AT_ONCE = 65536  # rows of a series stepped through at once (bounded memory)


def _counters(series: RegisterSeries, last: np.ndarray) -> _Counters | None:
    """The counting registers of a series, judged over the whole series (but the steps
    across the boundaries, which are on trial): a heartbeat only ever steps forward and goes
    back only by wrapping to near zero; a position goes back and forth, a sawtooth goes back
    to where it began."""
    values = series.values
    if values.ndim != 2 or values.dtype != np.uint16 or len(values) < MIN_READS:
        return None
    on_trial = np.zeros(len(values), dtype=bool)  # the step from row i to i + 1
    on_trial[last[(last >= 1) & (last < len(values))] - 1] = True
    forward = np.zeros(values.shape[1], dtype=np.int64)
    back_high = np.zeros(values.shape[1], dtype=np.int64)
    for start in range(0, len(values) - 1, COUNTER_ROWS_AT_ONCE):
        block = values[start : start + COUNTER_ROWS_AT_ONCE + 1]
        steps = np.diff(block, axis=0)  # uint16: wraps as the register does
        judged = ~on_trial[start : start + len(steps), None]
        ahead = (steps >= 1) & (steps <= MAX_COUNTER_STEP)
        forward += (ahead & judged).sum(axis=0)
        back_high += ((steps > MAX_COUNTER_STEP) & (block[1:] > MAX_COUNTER_STEP) & judged).sum(axis=0)
    steps_judged = len(values) - 1 - int(on_trial[: len(values) - 1].sum())
    columns = np.flatnonzero((forward >= COUNTER_SHARE * steps_judged) & (back_high == 0))
    if len(columns) == 0:
        return None
    return _Counters(columns, values[:, columns])


def _median(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The median of each row's first ``count`` known values (NaN elsewhere; NaN sorts last)."""
    ordered = np.sort(rows, axis=1)
    index = np.arange(len(rows))
    return (ordered[index, (count - 1) // 2] + ordered[index, count // 2]) / 2


def plan_segments(files: Sequence[FileSpan], series: Sequence[RegisterSeries] = ()) -> tuple[Segment, ...]:
    """The segments of ``files`` (a one-call form of ``SegmentPlanner`` for tests and tools)."""
    planner = SegmentPlanner(files)
    for one in series:
        planner.observe(one)
    return planner.segments()


def segment_index(segments: Sequence[Segment], ts: np.ndarray) -> np.ndarray:
    """For each time, the index into ``segments`` of the segment it falls in (segments are
    disjoint in time; a time between two segments counts to the earlier one)."""
    if len(segments) <= 1:
        return np.zeros(len(ts), dtype=np.int64)
    starts = np.array([s.start for s in segments[1:]])
    return np.searchsorted(starts, np.asarray(ts, dtype=np.float64), side="right").astype(np.int64)
