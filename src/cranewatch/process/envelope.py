"""What a clean capture teaches the process checks about one crane (the process baseline).

- the range each sensor really covered (widens the register map's normal range, never narrows);
- per crane state, the fastest change of each sensor (the rate envelopes), kept only for
  states the capture saw long enough; and the fastest change in any state;
- for each sensor that changes often, the longest time it stayed flat;
- the torque-vs-load line fitted on steady hoisting;
- optionally the learned-mode model (relations between signals, CUSUM thresholds) when the
  clean capture is long enough.

A short clean capture shows only part of honest operation: ``rate_margin`` widens what it
saw the more, the shorter it was, and the checks never judge tighter than the crane's physics.

Saved as JSON (``to_json``/``from_json``, versioned); the crane baseline file embeds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cranewatch.configschema import (
    INT,
    MODERATE,
    STR,
    ListOf,
    MapOf,
    Nullable,
    Shape,
    Table,
    Tuple,
    check,
)
from cranewatch.errors import Location, ProfileError
from cranewatch.process.checks import constant_runs, rolling_mean
from cranewatch.process.learned import LearnedModel, fit
from cranewatch.process.signals import SignalFrame

VERSION = 1
# Shorter clean captures cannot calibrate a false-alarm rate (measured on the lab physics: 30 min
# still gave a false alarm now and then, 1 h none in 9 honest hours).
LEARNED_MIN_SECONDS = 1800.0
# A per-state rate envelope needs this much time in the state: a state glimpsed for a few
# samples (one gantry creep, one lift) says little about its fastest honest change.
MIN_STATE_SECONDS = 10.0
# The rate margin is 2× what the capture saw at this length and grows as 1 + sqrt(REF / T) for
# shorter ones (the fastest of N samples underestimates the fastest honest change the less, the
# more samples): ×5.5 at 30 s, ×2.8 at 3 min, ×1.4 at 1 h.
MARGIN_REFERENCE_S = 600.0
MARGIN_MIN_SECONDS = 10.0  # a baseline of unknown or tiny length gets the widest margin
DRIVES = frozenset({"hoist_height", "trolley_position", "gantry_position", "hoist_speed",
                    "trolley_speed", "gantry_speed"})


_NUMBERS = ListOf(MODERATE)
LEARNED_SHAPE: Shape = Table(
    {"names": ListOf(STR), "mean": _NUMBERS, "std": _NUMBERS, "coef": ListOf(_NUMBERS),
     "resid_std": _NUMBERS, "threshold": _NUMBERS, "drift": MODERATE, "target_per_day": MODERATE,
     "samples_per_day": MODERATE, "level_gain": Nullable(_NUMBERS)},
    required=frozenset({"names", "mean", "std", "coef", "resid_std", "threshold", "drift",
                        "target_per_day", "samples_per_day"}),
)
# What ``ProcessBaseline.to_json`` writes; a saved baseline is checked against it on loading.
# Learned envelopes are finite and moderate: a NaN, an infinity or 1e308 there can only come
# from a damaged file (and would overflow the checks' arithmetic).
PROCESS_SHAPE: Shape = Table(
    {"version": INT, "duration_s": MODERATE,
     "value_range": MapOf(Tuple((MODERATE, MODERATE))),
     "rate": MapOf(MapOf(MODERATE, re.compile(r"-?\d{1,9}"), "a crane state number")),
     "rate_any": MapOf(MODERATE), "longest_flat_s": MapOf(MODERATE),
     "torque_fit": Nullable(Tuple((MODERATE, MODERATE, MODERATE))),
     "learned": Nullable(LEARNED_SHAPE)},
    required=frozenset({"version", "value_range", "rate", "longest_flat_s"}),
)


def process_problems(obj: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every way ``obj`` is not a saved process baseline: (path, message) pairs."""
    cleaned, problems = check(obj, PROCESS_SHAPE)
    found = [(p.path, p.message) for p in problems]
    if not found and cleaned.get("version") != VERSION:
        found.append((("version",), f"process baseline version {cleaned.get('version')!r} is not {VERSION}"))
    if not found:
        found += _envelope_problems(cleaned)
    learned = cleaned.get("learned")
    if not found and learned:
        n = len(learned["names"])
        sizes = {k: len(learned[k]) for k in ("mean", "std", "resid_std", "threshold")}
        if learned.get("level_gain") is not None:
            sizes["level_gain"] = len(learned["level_gain"])
        for key, size in sizes.items():
            if size != n:
                found.append((("learned", key), f"learned.{key}: {size} values for {n} signals"))
        rows = learned["coef"]
        if len(rows) != 2 * n + 1 or any(len(r) != n for r in rows):
            found.append((("learned", "coef"), f"learned.coef: expected {2 * n + 1} rows of {n} values"))
        # The checks divide by these; ``fit`` never gives a spread below 1e-9 nor a threshold below 1.
        for key, least in (("std", 1e-9), ("resid_std", 1e-9), ("threshold", 1.0)):
            if any(v < least for v in learned[key]):
                found.append((("learned", key), f"learned.{key}: a value below {least:g}, which fit() never gives"))
        # The check samples the frame every 86400 / samples_per_day seconds.
        if learned["samples_per_day"] < 1:
            found.append((("learned", "samples_per_day"), "learned.samples_per_day: fewer than one a day"))
        if learned["target_per_day"] <= 0:
            found.append((("learned", "target_per_day"), "learned.target_per_day: not above zero"))
    return found


def _envelope_problems(obj: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """What a learned envelope cannot be: a range running backwards, a negative rate, time or
    spread (the checks divide by some of them)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for name, (low, high) in obj["value_range"].items():
        if low > high:
            found.append((("value_range", name), f"value_range.{name}: low {low} is above high {high}"))
    negative: list[tuple[tuple[str | int, ...], str]] = [
        (("rate", name, state), f"rate.{name}.{state}") for name, by_state in obj["rate"].items()
        for state, value in by_state.items() if value < 0]
    negative += [((key, name), f"{key}.{name}") for key in ("rate_any", "longest_flat_s")
                 for name, value in obj.get(key, {}).items() if value < 0]
    negative += [(("duration_s",), "duration_s")] if obj.get("duration_s", 0.0) < 0 else []
    fit = obj.get("torque_fit")
    negative += [(("torque_fit",), "torque_fit (its residual spread)")] if fit and fit[2] < 0 else []
    learned = obj.get("learned")
    negative += [(("learned", "drift"), "learned.drift")] if learned and learned["drift"] < 0 else []
    found += [(path, f"{what}: is negative") for path, what in negative]
    if fit and fit[0] == 0:  # the torque check divides by it: a hoist's torque follows its load
        found.append((("torque_fit",), "torque_fit: a slope of 0 (torque not following load)"))
    return found


@dataclass(frozen=True, slots=True)
class ProcessBaseline:
    value_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    rate: dict[str, dict[int, float]] = field(default_factory=dict)  # signal → state → max |rate|
    longest_flat_s: dict[str, float] = field(default_factory=dict)
    torque_fit: tuple[float, float, float] | None = None  # slope, offset, residual σ
    learned: LearnedModel | None = None
    duration_s: float = 0.0
    rate_any: dict[str, float] = field(default_factory=dict)  # signal → max |rate| in any state

    def max_rate(self, name: str, state: int | None) -> float | None:
        """Fastest change seen in ``state`` (in any state when None or not seen long enough)."""
        by_state = self.rate.get(name, {})
        if state is not None and state in by_state:
            return by_state[state]
        if name in self.rate_any:
            return self.rate_any[name]
        return max(by_state.values()) if by_state else None

    def rate_margin(self) -> float:
        """How many times the fastest change seen an honest change may reach (2 at 10 min)."""
        seconds = max(self.duration_s, MARGIN_MIN_SECONDS)
        return 1.0 + math.sqrt(MARGIN_REFERENCE_S / seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "duration_s": self.duration_s,
            "value_range": {k: list(v) for k, v in self.value_range.items()},
            "rate": {k: {str(s): r for s, r in v.items()} for k, v in self.rate.items()},
            "rate_any": self.rate_any,
            "longest_flat_s": self.longest_flat_s,
            "torque_fit": list(self.torque_fit) if self.torque_fit else None,
            "learned": self.learned.to_json() if self.learned else None,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: Location | None = None) -> ProcessBaseline:
        """The envelopes saved by ``to_json``; anything else is a ``ProfileError`` listing every
        problem (checked against ``PROCESS_SHAPE``), never a stray exception."""
        found = process_problems(obj)
        if found:
            raise ProfileError(
                f"process baseline: {found[0][1]}" if len(found) == 1
                else f"process baseline has {len(found)} problems", where,
                [ProfileError(f"process.{m}", where) for _, m in found] if len(found) > 1 else None)
        fit_ = obj.get("torque_fit")
        return cls(
            value_range={k: (float(v[0]), float(v[1])) for k, v in obj["value_range"].items()},
            rate={k: {int(s): float(r) for s, r in v.items()} for k, v in obj["rate"].items()},
            longest_flat_s={k: float(v) for k, v in obj["longest_flat_s"].items()},
            torque_fit=(float(fit_[0]), float(fit_[1]), float(fit_[2])) if fit_ else None,
            learned=LearnedModel.from_json(obj["learned"]) if obj.get("learned") else None,
            duration_s=float(obj.get("duration_s", 0.0)),
            # baselines saved before rate_any fall back on the per-state maxima
            rate_any={k: float(v) for k, v in obj.get("rate_any", {}).items()},
        )


def _analog(frame: SignalFrame) -> list[str]:
    return [n for n, s in frame.specs.items() if s.table == "IR" and s.type != "bit"
            and n != "heartbeat"]


def learn(frame: SignalFrame, states: np.ndarray, *, learned_mode: bool = False) -> ProcessBaseline:
    """Learn the process baseline from a clean, aligned capture and its crane states."""
    value_range: dict[str, tuple[float, float]] = {}
    rate: dict[str, dict[int, float]] = {}
    rate_any: dict[str, float] = {}
    longest: dict[str, float] = {}
    names = _analog(frame)
    duration = frame.duration
    for name in names:
        x = frame[name]
        known = ~np.isnan(x)
        if known.sum() < 10:
            continue
        value_range[name] = (float(np.min(x[known])), float(np.max(x[known])))
        sample_time = frame.sample_time(name)
        gap = np.diff(sample_time)
        fresh = (gap > 1e-6) & known[1:] & known[:-1]
        # As the rate check measures it: over at least one grid step.
        step_rate = np.abs(np.diff(x))[fresh] / np.maximum(gap[fresh], frame.dt)
        prior = states[:-1][fresh]
        if len(step_rate):
            rate_any[name] = float(np.max(step_rate))
        # Time in each state, counted on the grid (every instant, fresh sample or not).
        state_seconds = {int(s): float((states == s).sum() * frame.dt) for s in np.unique(prior)}
        rate[name] = {int(s): float(np.max(step_rate[prior == s]))
                      for s in np.unique(prior)
                      if (prior == s).sum() >= 5 and state_seconds[int(s)] >= MIN_STATE_SECONDS}
        changes = int((np.diff(x[known]) != 0).sum())
        flat = float((constant_runs(x[known]).max() - 1) * frame.dt)
        # Only a sensor that changed often and was never flat for long can be judged frozen.
        if changes >= 20 and flat < 0.25 * duration:
            longest[name] = flat
    torque_fit = None
    if frame.has("hoist_torque", "hoist_load", "hoist_speed"):
        speed = np.nan_to_num(frame["hoist_speed"], nan=0.0)
        accel = np.gradient(rolling_mean(speed, max(1, round(0.5 / frame.dt))), frame.t)
        steady = (np.abs(accel) < 0.1) & ~frame.bit("spreader_landed")
        load, torque = frame["hoist_load"], frame["hoist_torque"]
        use = steady & ~np.isnan(load) & ~np.isnan(torque)
        if use.sum() >= 20 and np.ptp(load[use]) > 5.0:
            slope, offset = np.polyfit(load[use], torque[use], 1)
            resid = torque[use] - (slope * load[use] + offset)
            torque_fit = (float(slope), float(offset), float(np.std(resid)))
    learned = None
    # Positions wander from bay to bay and drive speeds follow the move planner (patterns a
    # clean capture may never have seen): the learned relations use the sensors of load and
    # weather, and the drive relations judge positions and speeds.
    stationary = [n for n in names if n not in DRIVES]
    if learned_mode and duration >= LEARNED_MIN_SECONDS and stationary:
        step = max(1, round(1.0 / frame.dt))  # the learned mode runs at 1 Hz
        matrix = np.column_stack([frame[n][::step] for n in stationary])
        ok = ~np.isnan(matrix).any(axis=1)
        if ok.sum() > 10 * len(stationary):
            # Anemometers and load cells carry noise proportional to their reading.
            learned = fit(matrix[ok], tuple(stationary),
                          samples_per_day=86400.0 / (step * frame.dt), level_noise=True)
    return ProcessBaseline(value_range, rate, longest, torque_fit, learned, duration, rate_any)


def merge(parts: Sequence[ProcessBaseline]) -> ProcessBaseline:
    """One baseline from those learned on separate recordings (segments), as if learned on
    all of them without the joins: ranges and rates the widest seen, durations added. A
    sensor is judged for freezing only where every recording that saw it could judge it; the
    torque fit and the learned model are the longest recording's."""
    if len(parts) == 1:
        return parts[0]
    value_range: dict[str, tuple[float, float]] = {}
    rate: dict[str, dict[int, float]] = {}
    rate_any: dict[str, float] = {}
    for part in parts:
        for name, (low, high) in part.value_range.items():
            old = value_range.get(name, (low, high))
            value_range[name] = (min(old[0], low), max(old[1], high))
        for name, by_state in part.rate.items():
            mine = rate.setdefault(name, {})
            for state, fastest in by_state.items():
                mine[state] = max(mine.get(state, fastest), fastest)
        for name, fastest in part.rate_any.items():
            rate_any[name] = max(rate_any.get(name, fastest), fastest)
    longest = {name: max(p.longest_flat_s[name] for p in parts if name in p.longest_flat_s)
               for part in parts for name in part.longest_flat_s
               if all(name in p.longest_flat_s for p in parts if name in p.value_range)}
    by_length = sorted(parts, key=lambda p: p.duration_s, reverse=True)
    torque_fit = next((p.torque_fit for p in by_length if p.torque_fit is not None), None)
    learned = next((p.learned for p in by_length if p.learned is not None), None)
    return ProcessBaseline(value_range, rate, longest, torque_fit, learned,
                           sum(p.duration_s for p in parts), rate_any)

