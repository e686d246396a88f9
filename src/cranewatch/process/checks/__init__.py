"""Process checks: each module yields ``Incident`` records from an aligned ``SignalFrame``.

A check is a pure function ``check(ctx) -> list[Incident]``; ``ALL_CHECKS`` lists them (adding
a check is one module plus one line). ``incidents_to_findings`` folds the incidents of one
rule and signal into one ``Finding`` with the window of values as evidence, the expected
relation, the residual and the detection delay (from the first sample that broke the relation
to the sample where the check was sure enough to alert). Incidents of several segments (each
checked on its own frame, ``segments``) fold the same way with ``segment_findings``.

A process finding names its hosts: ``src`` is the device whose values are false or whose
interlock was overridden (the PLC), ``dst`` the master that read them, or wrote them where a
write is part of the incident (each evidence lists every master).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.process.signals import Signal, SignalFrame

if TYPE_CHECKING:
    from cranewatch.process.envelope import ProcessBaseline
    from cranewatch.segments import Segment

FALSE_READING_TECHNIQUES = ("T0856", "T0832")
SAFETY_OVERRIDE_TECHNIQUES = ("T0836", "T0880")


@dataclass(frozen=True, slots=True)
class CraneLimits:
    """The configured safety limits (the profile's, never the values read off the wire: an
    attacker who raises a limit on the PLC must not move the yardstick with it).

    No crane is built in: a limit the profile does not give is None, and the checks that need
    it are skipped (``missing`` names them)."""

    rated_load: float | None = None  # t
    overload_limit: float | None = None  # t
    wind_stop_limit: float | None = None  # m/s
    hoist_speed_limit: float | None = None  # %
    trolley_speed_limit: float | None = None  # %

    def missing(self) -> tuple[str, ...]:
        """The limits not configured (their checks are not run)."""
        return tuple(name for name in ("rated_load", "overload_limit", "wind_stop_limit",
                                       "hoist_speed_limit", "trolley_speed_limit")
                     if getattr(self, name) is None)


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What every check may read: the aligned signals, the crane state, limits, the baseline."""

    frame: SignalFrame
    states: np.ndarray
    limits: CraneLimits = CraneLimits()
    baseline: ProcessBaseline | None = None
    maintenance: tuple[tuple[float, float], ...] = ()
    crane: str | None = None
    signals: Mapping[str, Signal] = field(default_factory=dict)  # raw samples, where known
    segment: Segment | None = None  # the recording the frame covers, when captures were cut

    def seconds(self, s: float) -> int:
        """A duration as a number of grid samples (at least 1)."""
        return max(1, round(s / self.frame.dt))


@dataclass(frozen=True, slots=True)
class Incident:
    """One stretch of time where a check saw a broken relation or an override.

    ``start``/``end`` are grid indices (end inclusive) of the stretch, ``detect`` the index
    where the check alerted; ``residual`` is the measured deviation per sample over the
    stretch (same length), ``threshold`` what it was compared with.
    """

    rule: str
    category: str
    severity: Severity
    title: str
    signal: str  # the signal the finding accuses
    related: tuple[str, ...]  # other signals in the relation
    relation: str  # the expected relation, in words
    start: int
    end: int
    detect: int
    residual: np.ndarray | None = None
    threshold: float | None = None
    remedy: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Check = Callable[[CheckContext], list[Incident]]


def runs(mask: np.ndarray, min_len: int = 1, merge_gap: int = 0) -> list[tuple[int, int]]:
    """Stretches of True in ``mask`` as (start, end inclusive), merging gaps of at most
    ``merge_gap`` samples and keeping those of at least ``min_len`` samples."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return []
    padded = np.concatenate(([False], m, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2] - 1
    if merge_gap > 0 and len(starts) > 1:
        gaps = starts[1:] - ends[:-1] - 1
        keep = np.flatnonzero(np.concatenate(([True], gaps > merge_gap)))
        # A merged stretch ends where the last run before the next kept start ends.
        ends = ends[np.concatenate((keep[1:] - 1, [len(ends) - 1]))]
        starts = starts[keep]
    lengths = ends - starts + 1
    ok = lengths >= min_len
    return [(int(s), int(e)) for s, e in zip(starts[ok], ends[ok], strict=True)]


def persistent(mask: np.ndarray, min_len: int, merge_gap: int = 0) -> list[tuple[int, int, int]]:
    """Runs that last ``min_len`` samples: (start, end, detect) with detect = start+min_len-1,
    the sample at which a streaming check would alert."""
    return [(s, e, s + min_len - 1) for s, e in runs(mask, min_len, merge_gap)]


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sum over the last ``w`` samples (fewer at the start)."""
    c = np.cumsum(np.concatenate(([0.0], np.asarray(x, dtype=np.float64))))
    idx = np.arange(1, len(x) + 1)
    return c[idx] - c[np.maximum(idx - w, 0)]


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    n = np.minimum(np.arange(1, len(x) + 1), w)
    return rolling_sum(x, w) / n


def rolling_max(x: np.ndarray, w: int) -> np.ndarray:
    """Max over the last ``w`` samples, O(n) whatever ``w`` (van Herk / Gil-Werman): block-wise
    running maxima from the left and from the right; a window straddles at most two blocks.
    The first ``w - 1`` samples see only the samples before them."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if w <= 1 or n == 0:
        return x.copy()
    blocks = -(-n // w)
    padded = np.full(blocks * w, -np.inf)
    padded[:n] = x
    grid = padded.reshape(blocks, w)
    prefix = np.maximum.accumulate(grid, axis=1).ravel()
    suffix = np.maximum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    idx = np.arange(n)
    start = idx - w + 1
    out = prefix[:n].copy()
    full = start >= 0
    out[full] = np.maximum(suffix[start[full]], prefix[idx[full]])
    out[~full] = np.maximum.accumulate(x[: min(n, w - 1)])[: int((~full).sum())]
    return out


def rolling_extent(x: np.ndarray, w: int) -> np.ndarray:
    """max − min over the last ``w`` samples (NaN for the first ``w - 1``)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < w or w <= 1:
        return np.zeros(len(x))
    ext = rolling_max(x, w) + rolling_max(-x, w)
    ext[: w - 1] = np.nan
    return ext


def flat_for(x: np.ndarray, w: int) -> np.ndarray:
    """True where the last ``w`` samples are all equal (and known)."""
    return (constant_runs(x) >= w) & ~np.isnan(np.asarray(x, dtype=np.float64))


def constant_runs(x: np.ndarray) -> np.ndarray:
    """For each sample, for how many samples (including it) the value has not changed."""
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.concatenate(([True], x[1:] != x[:-1]))
    last_change = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    return np.arange(n) - last_change + 1


def _round(values: np.ndarray, digits: int = 4) -> list[float | None]:
    out: list[float | None] = []
    for v in np.round(np.asarray(values, dtype=np.float64), digits).tolist():
        out.append(None if v != v else v)  # NaN → null
    return out


MAX_EVIDENCE_POINTS = 240


def evidence_window(ctx: CheckContext, incident: Incident) -> dict[str, Any]:
    """The values around an incident: relative times and each involved signal, decimated."""
    frame = ctx.frame
    span = incident.end - incident.start + 1
    pad = max(ctx.seconds(5.0), span // 2)
    lo = max(0, incident.start - pad)
    hi = min(len(frame.t), incident.end + pad + 1)
    step = max(1, (hi - lo) // MAX_EVIDENCE_POINTS)
    idx = np.arange(lo, hi, step)
    t0 = float(frame.t[incident.start])
    names = [incident.signal, *[r for r in incident.related if r != incident.signal]]
    window: dict[str, Any] = {"t_offset_s": _round(frame.t[idx] - t0, 3)}
    for name in names:
        if name in frame:
            window[name] = _round(frame[name][idx])
    return window


def incidents_to_findings(ctx: CheckContext, incidents: Sequence[Incident],
                          plot: Callable[[CheckContext, Incident], str] | None = None,
                          max_evidence: int = 3) -> list[Finding]:
    """One finding per (rule, accused signal), with up to ``max_evidence`` windows."""
    return segment_findings([(ctx, inc) for inc in incidents], plot, max_evidence)


def segment_findings(incidents: Sequence[tuple[CheckContext, Incident]],
                     plot: Callable[[CheckContext, Incident], str] | None = None,
                     max_evidence: int = 3) -> list[Finding]:
    """One finding per (rule, accused signal) over the incidents of every segment, each
    incident with the context (frame, segment) it was found in."""
    groups: dict[tuple[str, str], list[tuple[CheckContext, Incident]]] = {}
    for ctx, inc in incidents:
        groups.setdefault((inc.rule, inc.signal), []).append((ctx, inc))
    findings: list[Finding] = []
    for (rule, signal), group in groups.items():
        # The earliest alert first: evidence[0] states how soon the checks knew.
        group.sort(key=lambda pair: (float(pair[0].frame.t[pair[1].detect]),
                                     float(pair[0].frame.t[pair[1].start])))
        first_ctx, first = group[0]
        evidence = []
        src, dst = _hosts(first_ctx, first)
        for n, (ctx, inc) in enumerate(group[:max_evidence]):
            frame = ctx.frame
            delay = float(frame.t[inc.detect] - frame.t[inc.start])
            values: dict[str, Any] = {
                "signal": inc.signal,
                "related": list(inc.related),
                "relation": inc.relation,
                "state": [str(s) for s in _states_in(ctx, inc)],
                "onset": float(frame.t[inc.start]),
                "detected": float(frame.t[inc.detect]),
                "detection_delay_s": round(delay, 3),
                "duration_s": round(float(frame.t[inc.end] - frame.t[inc.start]), 3),
                "window": evidence_window(ctx, inc),
            }
            if inc.residual is not None and len(inc.residual):
                res = np.asarray(inc.residual, dtype=np.float64)
                values["residual_max"] = round(float(np.nanmax(np.abs(res))), 4)
                step = max(1, len(res) // MAX_EVIDENCE_POINTS)
                values["residual"] = _round(res[::step])
            if inc.threshold is not None:
                values["threshold"] = round(float(inc.threshold), 4)
            masters = _masters(ctx, inc)
            if masters:
                values["masters"] = masters
            values.update(inc.extra)
            if plot is not None and n == 0:
                values["svg"] = plot(ctx, inc)
            source, frames, elsewhere = _frames_of(ctx, inc)
            if elsewhere:
                values["frames_in"] = elsewhere
            evidence.append(
                Evidence(
                    source=source,
                    frames=frames,
                    times=(float(frame.t[inc.start]), float(frame.t[inc.detect]),
                           float(frame.t[inc.end])),
                    values=values,
                    note=f"{inc.relation}; detected {delay:.1f} s after onset",
                )
            )
        techniques = (FALSE_READING_TECHNIQUES if first.category == "false-reading"
                      else SAFETY_OVERRIDE_TECHNIQUES)
        findings.append(
            Finding(
                id=finding_id(rule, first_ctx.crane, signal),
                rule=rule,
                category=first.category,
                severity=max(i.severity for _, i in group),
                title=first.title,
                first_seen=min(float(c.frame.t[i.start]) for c, i in group),
                last_seen=max(float(c.frame.t[i.end]) for c, i in group),
                count=len(group),
                crane=first_ctx.crane,
                src=src,
                dst=dst,
                technique=techniques,
                evidence=tuple(evidence),
                remedy=first.remedy,
            )
        )
    findings.sort(key=lambda f: (f.first_seen or 0.0, f.rule))
    return findings


MAX_EVIDENCE_FRAMES = 20


def _frames_of(ctx: CheckContext, inc: Incident
               ) -> tuple[str | None, tuple[int, ...], list[dict[str, Any]]]:
    """Where the accused signal's samples during the incident are (the first ones): the
    capture, its frames and, where the segment's rotated files split them, the frames in each
    further file (``[{"source", "frames"}]``)."""
    frame = ctx.frame
    segment = ctx.segment
    held = frame.frames.get(inc.signal)
    if segment is None or len(segment.files) == 1 or held is None:
        source = segment.files[0].path if segment is not None else (frame.source or None)
        if held is None:
            return source, (), []
        seen = np.unique(held[inc.start: inc.end + 1])
        return source, tuple(int(f) for f in seen[seen > 0][:MAX_EVIDENCE_FRAMES]), []
    span = slice(inc.start, inc.end + 1)
    frames = held[span]
    known = frames > 0
    located = locate(segment, frame.sample_time(inc.signal)[span][known], frames[known], distinct=True)
    if not located:
        return segment.files[0].path, (), []
    (source, numbers), *rest = located
    return source, tuple(numbers), [{"source": path, "frames": more} for path, more in rest]


def locate(segment: Segment, ts: np.ndarray, frames: np.ndarray, *, distinct: bool = False,
           limit: int = MAX_EVIDENCE_FRAMES) -> list[tuple[str, list[int]]]:
    """The first ``limit`` samples (times, file-local frame numbers) of a segment of several
    files, as (file, frames) in time order: each file's frames in its order, the files in
    theirs. ``distinct``: each frame once."""
    files = segment.file_of(ts, frames)
    pairs = np.stack((files, np.asarray(frames, dtype=np.int64)))
    if distinct:
        pairs = np.unique(pairs, axis=1)
    by_file: dict[int, list[int]] = {}
    for index, number in pairs[:, :limit].T.tolist():
        by_file.setdefault(index, []).append(number)
    return [(segment.files[i].path, numbers) for i, numbers in by_file.items()]


def _masters(ctx: CheckContext, inc: Incident) -> list[str]:
    """Who read (or wrote) the accused signal's samples during the incident, first first."""
    signal = ctx.signals.get(inc.signal)
    if signal is None:
        return []
    frame = ctx.frame
    start = float(frame.t[inc.start])
    if inc.signal in frame:  # the value held at the start may have been read before it
        held = frame.sample_time(inc.signal)[inc.start: inc.end + 1]
        if np.isfinite(held).any():
            start = min(start, float(np.nanmin(held)))
    return signal.masters(start, float(frame.t[inc.end]))


def _hosts(ctx: CheckContext, inc: Incident) -> tuple[str | None, str | None]:
    """``src``: the device whose value the incident accuses (the PLC); ``dst``: the master
    that wrote it, where a write is part of the incident, else the first that read it."""
    signal = ctx.signals.get(inc.signal)
    if signal is None:
        return None, None
    if inc.extra.get("master"):  # the check names the master it accuses
        return signal.device or None, str(inc.extra["master"])
    masters = _masters(ctx, inc)
    written = [m for m in masters if m.startswith("written by ")]
    read = [m for m in masters if m.startswith("read by ")]
    chosen = (written or read or [""])[0]
    dst = chosen.split(" by ", 1)[1] if " by " in chosen else None
    return signal.device or None, dst


def _states_in(ctx: CheckContext, inc: Incident) -> list[str]:
    from cranewatch.process.state import CraneState

    seen = np.unique(ctx.states[inc.start: inc.end + 1])
    return [str(CraneState(int(s))) for s in seen]


def all_checks() -> tuple[Check, ...]:
    """Every crane check, in the order they run."""
    from cranewatch.process.checks import (
        frozen,
        learned_mode,
        masters,
        override,
        range_rate,
        relations,
        replay,
    )

    return (
        range_rate.check_range,
        range_rate.check_rate,
        relations.check_position_vs_speed,
        relations.check_torque_vs_load,
        relations.check_anemometers,
        relations.check_twistlock_logic,
        relations.check_trip_causes,
        relations.check_motion_under_stop,
        frozen.check_frozen_vs_motion,
        frozen.check_frozen_sensor,
        frozen.check_heartbeat,
        replay.check_replay,
        masters.check_masters_disagree,
        override.check_overload_without_trip,
        override.check_wind_without_stop,
        override.check_bypass,
        override.check_limits_raised,
        override.check_limits_lowered,
        learned_mode.check_learned,
    )
