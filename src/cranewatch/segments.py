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
RHYTHM_READS = 256  # reads before a boundary that give a poll's period there
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
        they came from: the file whose time span holds the time and whose frames reach the
        number (for rotated files exactly one, but for a timestamp shared by the last packet
        of one file and the first of the next, where the earlier file is taken)."""
        ts = np.asarray(ts, dtype=np.float64)
        frame = np.asarray(frame, dtype=np.int64)
        out = np.zeros(len(ts), dtype=np.int64)
        decided = np.zeros(len(ts), dtype=bool)
        for index, part in enumerate(self.files):
            fits = ~decided & (ts >= part.first_seen) & (ts <= part.last_seen) & (frame <= part.last_frame)
            out[fits] = index
            decided |= fits
        return out


@dataclass(slots=True)
class _Boundary:
    """Where one file starts after every file before it in time has ended."""

    before: list[FileSpan]  # the files of the segment so far (the last to end is before[-1])
    after: FileSpan
    before_end: float
    kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rhythm: tuple[float, str] | None = None  # fastest regular poll at the boundary: (period, who)

    @property
    def gap(self) -> float:
        return self.after.first_seen - self.before_end


def _link(linktypes: Sequence[int]) -> str:
    return "+".join(LINKTYPE_NAMES.get(t, f"linktype {t}") for t in linktypes) or "?"


class SegmentPlanner:
    """Judges the boundaries between files; fed every register series before ``segments``."""

    def __init__(self, files: Sequence[FileSpan]) -> None:
        self.files = sorted((f for f in files if f.packets), key=lambda f: (f.first_seen, f.last_seen))
        self.boundaries: list[_Boundary] = []
        group: list[FileSpan] = []
        end = float("-inf")
        for span in self.files:
            if group and span.first_seen >= end:
                self.boundaries.append(_Boundary(list(group), span, end))
            group.append(span)
            end = max(end, span.last_seen)
        for boundary in self.boundaries:
            self._judge_session(boundary)

    def observe(self, series: RegisterSeries) -> None:
        """Note what one register series says at every boundary: its poll rhythm, its counters."""
        if not self.boundaries or len(series.ts) < MIN_READS:
            return
        ts = series.ts
        for boundary in self.boundaries:
            last = int(np.searchsorted(ts, boundary.before_end, side="right"))
            first = int(np.searchsorted(ts, boundary.after.first_seen, side="left"))
            if last < MIN_READS:
                continue
            window = slice(max(0, last - RHYTHM_READS), last)
            self._note_rhythm(boundary, series, ts[window])
            if series.function in REGISTER_FUNCTIONS and first < len(ts):
                self._note_counters(boundary, series, window, first)

    @staticmethod
    def _note_rhythm(boundary: _Boundary, series: RegisterSeries, ts: np.ndarray) -> None:
        steps = np.diff(ts)
        steps = steps[steps > 0]
        if len(steps) < MIN_READS - 1:
            return
        period = float(np.median(steps))
        if float(np.median(np.abs(steps - period))) > MAX_JITTER * period:
            return  # bursts, not polling
        if boundary.before_end - float(ts[-1]) > 2 * period:
            return  # it had stopped before the file ended: it says nothing about the boundary
        if boundary.rhythm is None or period < boundary.rhythm[0]:
            table = series.table
            boundary.rhythm = (period, f"{series.master} reads {table} {series.address}–"
                                       f"{series.address + series.quantity - 1} of {series.slave}")

    @staticmethod
    def _note_counters(boundary: _Boundary, series: RegisterSeries, window: slice, first: int) -> None:
        before = series.values[window].astype(np.int64)
        ts = series.ts[window]
        if len(before) < MIN_READS or float(ts[-1]) <= float(ts[0]):
            return
        steps = np.diff(before, axis=0) % 65536
        forward = (steps >= 1) & (steps <= MAX_COUNTER_STEP)
        counters = np.flatnonzero(forward.mean(axis=0) >= COUNTER_SHARE)
        if len(counters) == 0:
            return
        rate = steps[:, counters].sum(axis=0) / (float(ts[-1]) - float(ts[0]))
        largest = steps[:, counters].max(axis=0)
        elapsed = float(series.ts[first]) - float(ts[-1])
        after = series.values[first, counters].astype(np.int64)
        jump = (after - before[-1, counters]) % 65536
        expected = rate * elapsed
        tolerance = 3 * largest + 0.25 * expected
        for k, column in enumerate(counters.tolist()):
            if expected[k] + tolerance[k] >= 32768:
                continue  # it may have wrapped around: the counter cannot tell
            # Less than the time says is no break: some counters count polls, not time
            # (a transaction counter); a counter of another recording lands anywhere (going
            # back lands near 65536).
            if jump[k] <= expected[k] + tolerance[k]:
                continue
            register = f"{series.table} {series.address + column}"
            boundary.kinds.append("counter")
            boundary.reasons.append(
                f"counter {register} of {series.slave} (read by {series.master}, "
                f"+{rate[k]:.1f}/s) goes from {int(before[-1, column])} to {int(after[k])} across "
                f"the boundary, where +{expected[k]:.0f} was due")

    @staticmethod
    def _judge_session(boundary: _Boundary) -> None:
        before = max(boundary.before, key=lambda f: f.last_seen)
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
        silence = max(max(f.longest_silence for f in boundary.before), boundary.after.longest_silence)
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
