"""The process sink: collects register series and writes from the pipeline, then runs every
process check and returns findings (with a plot of the values around each).

Plugs into the capture pipeline as a sink (``on_event``, ``on_series``, ``on_flow_end``,
``finish``). ``run_checks`` is the pure core: an aligned frame in, findings out, for callers
that already hold signals (tests, benchmarks, other plants).

Captures read together may be separate recordings: the pipeline tells the sink its
``segments`` (``on_segments``), and every segment's signals get their own frame and their own
run of the checks, so no check compares values across two recordings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cranewatch.model import Finding
from cranewatch.process import plot
from cranewatch.process.checks import (
    CheckContext,
    CraneLimits,
    Incident,
    all_checks,
    segment_findings,
)
from cranewatch.process.envelope import ProcessBaseline, learn, merge
from cranewatch.process.signals import (
    NO_REGISTER_MAP,
    RegisterMap,
    RegisterSpec,
    Signal,
    SignalFrame,
    build_frame,
    extract_signals,
    is_write_event,
)
from cranewatch.process.state import crane_states
from cranewatch.protocols.modbus import RegisterSeries
from cranewatch.segments import Segment

if TYPE_CHECKING:
    from cranewatch.process.slices import SlicedChecks
    from cranewatch.profile import CraneProfile


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """What the profile tells the process checks about one crane."""

    register_map: RegisterMap = NO_REGISTER_MAP
    limits: CraneLimits = field(default_factory=CraneLimits)
    maintenance: tuple[tuple[float, float], ...] = ()
    crane: str | None = None


def run_checks(frame: SignalFrame, config: ProcessConfig | None = None,
               baseline: ProcessBaseline | None = None, with_plots: bool = True,
               signals: Mapping[str, Signal] | None = None) -> list[Finding]:
    """Every process check over one aligned frame (``signals``: the raw samples behind it,
    for the checks that compare masters)."""
    incidents = check_frame(frame, config, baseline, signals)
    return segment_findings(incidents, plot.render if with_plots else None)


def check_frame(frame: SignalFrame, config: ProcessConfig | None = None,
                baseline: ProcessBaseline | None = None,
                signals: Mapping[str, Signal] | None = None,
                segment: Segment | None = None,
                past: ReplayPast | None = None) -> list[tuple[CheckContext, Incident]]:
    """The incidents of every process check over one frame (one segment), with their context.
    ``past``: the sensor columns of the grid rows just before the frame, which the replay
    check searches as if the frame began there (``process.slices``)."""
    config = config or ProcessConfig()
    if len(frame.t) < 2:
        return []
    ctx = CheckContext(frame=frame, states=crane_states(frame, config.maintenance),
                       limits=config.limits, baseline=baseline,
                       maintenance=config.maintenance, crane=config.crane,
                       signals=signals or {}, segment=segment)
    if past is None or not len(past.t):
        return [(ctx, incident) for check in all_checks() for incident in check(ctx)]
    from cranewatch.process.checks.replay import check_replay, check_replay_after

    out: list[tuple[CheckContext, Incident]] = []
    for check in all_checks():
        found = (check_replay_after(ctx, past.t, past.columns, past.specs) if check is check_replay
                 else check(ctx))
        out.extend((ctx, incident) for incident in found)
    return out


@dataclass(frozen=True, slots=True)
class ReplayPast:
    """Grid rows before a frame with the sensor columns the replay check reads."""

    t: np.ndarray
    columns: Mapping[str, np.ndarray]
    specs: Mapping[str, RegisterSpec]


def split_signals(signals: Mapping[str, Signal], segments: Sequence[Segment]
                  ) -> list[tuple[Segment | None, dict[str, Signal]]]:
    """Each segment's samples of every signal (segments without samples left out); one part
    with every sample when there are no segments or one."""
    if len(segments) <= 1:
        return [(segments[0] if segments else None, piece) for piece in split_at_holes(dict(signals))]
    parts: list[tuple[Segment | None, dict[str, Signal]]] = []
    # A segment holds the samples from its start to the next one's (the first from the
    # beginning): samples of no capture (Zeek logs read with them) are kept too.
    starts = [-np.inf, *(s.start for s in segments[1:])]
    ends = [float(np.nextafter(s.start, -np.inf)) for s in segments[1:]] + [np.inf]
    for segment, start, end in zip(segments, starts, ends, strict=True):
        own = {name: part for name, signal in signals.items()
               if (part := signal.between(start, end)) is not None}
        if own:
            parts.extend((segment, piece) for piece in split_at_holes(own))
    return parts


# A silence of every signal longer than this is a hole in the recording, not a stretch of the
# process: a PLC restart or a link flap lasts seconds to a few minutes, and the process checks
# still see those. One corrupt or hostile timestamp weeks away would otherwise stretch the
# checks' grid over the whole gap (a poll 48 days late: 21 M grid rows, minutes and GBs).
RECORDING_HOLE_S = 300.0


def split_at_holes(signals: dict[str, Signal]) -> list[dict[str, Signal]]:
    """``signals`` cut where no signal has a sample for longer than ``RECORDING_HOLE_S``; each
    piece is checked on its own grid, like a segment."""
    stamps = [s.ts for s in signals.values() if len(s.ts)]
    if not stamps:
        return [signals] if signals else []
    times = np.unique(np.concatenate(stamps))
    holes = np.flatnonzero(np.diff(times) > RECORDING_HOLE_S)
    if not len(holes):
        return [signals]
    starts = [float(times[0]), *(float(times[i + 1]) for i in holes)]
    ends = [*(float(times[i]) for i in holes), float(times[-1])]
    pieces = []
    for start, end in zip(starts, ends, strict=True):
        own = {name: part for name, signal in signals.items() if (part := signal.between(start, end)) is not None}
        if own:
            pieces.append(own)
    return pieces


def learn_baseline(frame: SignalFrame, config: ProcessConfig | None = None, *,
                   learned_mode: bool = False) -> ProcessBaseline:
    """The process baseline of a clean frame. ``learned_mode`` also fits the learned relations
    (for plants without a physics model; on a crane the physics checks need no such fit, and
    the learned thresholds are only as good as the weather and work the clean period saw)."""
    config = config or ProcessConfig()
    return learn(frame, crane_states(frame, config.maintenance), learned_mode=learned_mode)


@dataclass
class ProcessSink:
    """Pipeline sink: keeps what carries signal values, checks them at the end.

    ``profile`` (a ``CraneProfile``) gives the register map, the limits and the maintenance
    windows once the capture's time span is known; ``config`` overrides it.

    ``slices``: the sink takes the values in time slices when the pipeline hands them out so
    (``on_series_slices``) and checks them slice by slice (``slices.SlicedChecks``), holding
    only a bounded stretch of values; ``series``/``writes`` then stay empty. Without it (or
    when the pipeline keeps series whole) it keeps everything and checks it at the end.
    """

    profile: CraneProfile | None = None
    config: ProcessConfig | None = None
    baseline: ProcessBaseline | None = None
    crane: str | None = None  # overrides the profile's crane id
    series: list[RegisterSeries] = field(default_factory=list)
    writes: list[object] = field(default_factory=list)
    segments: tuple[Segment, ...] = ()
    slices: bool = False
    _register_map: RegisterMap | None = field(default=None, repr=False)
    _sliced: SlicedChecks | None = field(default=None, repr=False)

    @property
    def series_use(self) -> str:
        """How the pipeline may hand this sink register series (``pipeline``)."""
        return "slices" if self.slices else "whole"

    def on_series_slices(self, pieces: Sequence[RegisterSeries], until: float | None) -> None:
        """Values of the next stretch of capture time, with the writes since the last stretch;
        everything up to ``until`` has been handed out (None: the run's last stretch)."""
        if self._sliced is None:
            from cranewatch.process.slices import SlicedChecks

            self._sliced = SlicedChecks(self)
        writes, self.writes = self.writes, []
        self._sliced.add(pieces, writes)
        if until is not None:
            self._sliced.advance(until)

    def on_segments(self, segments: Sequence[Segment]) -> None:
        self.segments = tuple(segments)

    def on_event(self, event: object) -> None:
        if is_write_event(event):
            # MQTT publishes matter only when the map names telemetry topics.
            if type(event).__name__ == "MqttPublishRequest" and not self.register_map().telemetry:
                return
            self.writes.append(event)

    def register_map(self) -> RegisterMap:
        if self._register_map is None:
            self._register_map = self.resolved().register_map
        return self._register_map

    def on_series(self, series: RegisterSeries) -> None:
        if series.summary:  # its values went to ``on_series_slices``
            return
        # Only the crane's own PLC becomes signals: a terminal capture carries every crane's
        # polling, and holding the others' series until the end would cost memory for nothing.
        if self.register_map().serves(series.slave, series.unit_id):
            self.series.append(series)

    def on_flow_end(self, flow: object) -> None:
        return None

    def resolved(self, frame: SignalFrame | None = None) -> ProcessConfig:
        """The configuration for this run (maintenance windows need the frame's time span)."""
        if self.config is not None:
            config = self.config
        elif self.profile is None:
            config = ProcessConfig()
        elif frame is None or len(frame.t) == 0:
            config = config_from_profile(self.profile)
        else:
            config = config_from_profile(self.profile, float(frame.t[0]), float(frame.t[-1]))
        return replace(config, crane=self.crane) if self.crane else config

    def signals(self) -> dict[str, Signal]:
        return extract_signals(self.series, self.writes, self.register_map())

    def frame(self) -> SignalFrame:
        """All signals on one grid (across segments: for tables and plots, not for checks)."""
        return build_frame(self.signals())

    def frames(self) -> list[tuple[Segment | None, SignalFrame, dict[str, Signal]]]:
        """One frame per segment, with the segment and its signals."""
        return [(segment, build_frame(own), own)
                for segment, own in split_signals(self.signals(), self.segments)]

    def finish(self) -> list[Finding]:
        if self._sliced is not None:
            self.on_series_slices((), None)  # the writes of the last stretch
            return self._sliced.finish()
        incidents: list[tuple[CheckContext, Incident]] = []
        for segment, frame, own in self.frames():
            incidents.extend(check_frame(frame, self.resolved(frame), self.baseline, own, segment))
        return segment_findings(incidents, plot.render)


def read_captures(captures: Sequence[str | Path], profile: CraneProfile | None = None) -> ProcessSink:
    """Run the capture pipeline over ``captures`` into a process sink (checks not yet run).
    ``profile``: the loaded profile; without one no register is a crane signal."""
    from cranewatch.pipeline import analyze

    sink = ProcessSink(profile=_loaded(profile))
    analyze(list(captures), sinks=[sink])
    return sink


def learn_from_captures(captures: Sequence[str | Path], profile: CraneProfile | None = None,
                        *, learned_mode: bool = False) -> ProcessBaseline:
    """The process baseline of clean captures."""
    return envelopes_of(read_captures(captures, profile), learned_mode=learned_mode)


def envelopes_of(sink: ProcessSink, *, learned_mode: bool = False) -> ProcessBaseline:
    """The process baseline of what a sink collected from clean captures (``learn_from_sink``;
    with no samples at all, that of the empty frame)."""
    learned = learn_from_sink(sink, learned_mode=learned_mode)
    if learned is None:
        frame = sink.frame()
        return learn_baseline(frame, sink.resolved(frame), learned_mode=learned_mode)
    return learned


def learn_from_sink(sink: ProcessSink, *, learned_mode: bool = False) -> ProcessBaseline | None:
    """The process baseline of what a sink collected, learned per segment (never across the
    join of two recordings) and merged; None when it holds no samples."""
    parts = [learn_baseline(frame, sink.resolved(frame), learned_mode=learned_mode)
             for _, frame, _ in sink.frames() if len(frame.t)]
    return merge(parts) if parts else None


def build_sink(profile: CraneProfile | None = None, baseline: ProcessBaseline | None = None,
               crane: str | None = None) -> ProcessSink:
    """The process sink for a run, judged against a loaded profile and process baseline.

    Both come loaded from the edge (``judging``: a saved baseline's process part, or the
    envelopes learned from clean captures there); building the sink reads no file and runs no
    pipeline. Without a baseline the checks use physics and the register map alone.
    """
    if baseline is not None and not isinstance(baseline, ProcessBaseline):
        raise TypeError(f"baseline: a loaded ProcessBaseline (cranewatch.judging), not {type(baseline).__name__}")
    return ProcessSink(profile=_loaded(profile), baseline=baseline, crane=crane, slices=True)


def _loaded(profile: CraneProfile | None) -> CraneProfile | None:
    """``profile`` as given, refused when it is a path: a profile is loaded once, at the edge."""
    if isinstance(profile, str | Path):
        raise TypeError(f"profile: a loaded CraneProfile (cranewatch.profile.load_profile), not the path {profile}")
    return profile


def collect(series: Sequence[RegisterSeries], events: Sequence[object] = (),
            config: ProcessConfig | None = None) -> SignalFrame:
    """An aligned frame straight from series and events (no pipeline)."""
    config = config or ProcessConfig()
    return build_frame(extract_signals(series, events, config.register_map))


def _point_high(profile: object, name: str) -> float | None:
    for point in getattr(profile, "registers", ()):
        if getattr(point, "name", None) == name:
            high = getattr(point, "high", None)
            return None if high is None else float(high)
    return None


def maintenance_intervals(profile: object, start: float, end: float,
                          step: float = 60.0) -> tuple[tuple[float, float], ...]:
    """The profile's maintenance windows that overlap [start, end], as epoch intervals.

    Windows are weekly hours or dated spans (``MaintenanceWindow.covers``): sampled every
    ``step`` seconds, each edge then refined to 0.1 s by bisection.
    """
    windows = tuple(getattr(profile, "maintenance", ()))
    if not windows or end < start:
        return ()

    def covered(ts: float) -> bool:
        return any(w.covers(ts) for w in windows)

    def edge(lo: float, hi: float, inside_lo: bool) -> float:
        while hi - lo > 0.1:
            mid = (lo + hi) / 2
            if covered(mid) == inside_lo:
                lo = mid
            else:
                hi = mid
        return hi if inside_lo else lo

    samples = [start + i * step for i in range(int((end - start) // step) + 1)] + [end]
    flags = [covered(ts) for ts in samples]
    out: list[tuple[float, float]] = []
    begin = start if flags[0] else None
    for i in range(1, len(samples)):
        if flags[i] and not flags[i - 1]:
            begin = edge(samples[i - 1], samples[i], False)
        elif not flags[i] and flags[i - 1] and begin is not None:
            out.append((begin, edge(samples[i - 1], samples[i], True)))
            begin = None
    if begin is not None:
        out.append((begin, end))
    return tuple(out)


def config_from_profile(profile: object, start: float = 0.0, end: float = 0.0) -> ProcessConfig:
    """The process configuration a crane profile gives (register map, limits, maintenance
    windows between ``start`` and ``end``)."""
    limits = CraneLimits(  # the profile's only: a limit it does not give is not judged
        rated_load=_point_high(profile, "hoist_load"),
        overload_limit=_point_high(profile, "overload_limit"),
        wind_stop_limit=_point_high(profile, "wind_stop_limit"),
        hoist_speed_limit=_point_high(profile, "hoist_speed_limit"),
        trolley_speed_limit=_point_high(profile, "trolley_speed_limit"),
    )
    return ProcessConfig(
        register_map=RegisterMap.from_profile(profile),
        limits=limits,
        maintenance=maintenance_intervals(profile, start, end),
        crane=getattr(profile, "crane_id", None),
    )
