"""Range and rate-of-change: values a sensor cannot honestly report.

Range: a sensor value beyond its register-map range by more than a quarter of the span (a
real overload or storm can exceed the *normal* range a little; a wind of 60 m/s or a load of
300 t is a lie). The baseline may only widen the range: it saw what this crane really does.

Rate: a step between two fresh samples faster than the crane can move. The crane's physics,
from the register map, is the floor of every envelope: positions change no faster than their
drive's top speed, drive speeds no faster than a drive accelerates, load and torque no faster
than the ropes take up the rated load. A baseline may only widen that: drives by the fastest
change it saw in the same crane state, the other sensors (wind, sway, and load and torque
beyond the physics) by the fastest change it saw in any state, each with a margin that grows
the shorter the clean capture was (``ProcessBaseline.rate_margin``). States the baseline saw
only briefly use its any-state envelope.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, persistent
from cranewatch.process.signals import TELEMETRY_TABLE, RegisterSpec
from cranewatch.process.state import CraneState

RANGE_MARGIN = 0.25  # fraction of the register-map span beyond which a value is impossible
# × the baseline's rate margin (2 for a 10-minute capture, wider for shorter ones)
RATE_MARGIN = 1.0  # drives: the fastest change the baseline saw in that state
OTHER_RATE_MARGIN = 1.5  # other sensors: the fastest change the baseline saw at all

# Positions move no faster than their drive: the speed signal's range bounds the rate.
POSITION_SPEED = {"hoist_height": "hoist_speed", "trolley_position": "trolley_speed",
                  "gantry_position": "gantry_speed"}
# A drive needs at least this long from standstill to its top speed (crane drives ramp at
# 0.2–0.8 m/s²: 4–5 s for hoist and trolley): its speed changes no faster than top speed / this.
# Independent of the unit the register map uses (m/s or cm/s).
MIN_SPEED_RAMP_S = 1.0
# The ropes take up (and give back) a container's weight over 0.5–2 s as they tension: the
# load cell and the hoist torque change no faster than their full scale over this time.
LOAD_SIGNALS = frozenset({"hoist_load", "hoist_torque"})
MIN_TAKE_UP_S = 0.5
# An e-stop, trip or storm-pin stop brakes the hoist within a PLC cycle: its torque may jump
# to the brake's and back when the stop is released. Not judged in those states.
BRAKED = frozenset({"hoist_torque"})
STOP_STATES = frozenset({CraneState.TRIPPED, CraneState.LOCKED})
PHYSICS_MARGIN = 1.5  # read noise, and two masters' polls a few ms apart across a PLC cycle


def analog_signals(ctx: CheckContext) -> list[str]:
    """Sensors (input registers) except the heartbeat, which has checks of its own."""
    return [n for n, spec in ctx.frame.specs.items()
            if spec.table == "IR" and spec.type != "bit" and n != "heartbeat"]


def check_range(ctx: CheckContext) -> list[Incident]:
    out: list[Incident] = []
    frame = ctx.frame
    telemetry = [n for n, spec in frame.specs.items() if spec.table == TELEMETRY_TABLE]
    for name in [*analog_signals(ctx), *telemetry]:
        spec = frame.specs[name]
        if spec.normal_min is None or spec.normal_max is None:
            continue
        low, high = spec.normal_min, spec.normal_max
        if ctx.baseline is not None and name in ctx.baseline.value_range:
            seen_low, seen_high = ctx.baseline.value_range[name]
            low, high = min(low, seen_low), max(high, seen_high)
        margin = RANGE_MARGIN * (spec.normal_max - spec.normal_min)
        x = frame[name]
        outside = (x < low - margin) | (x > high + margin)
        for s, e, d in persistent(outside, 1):
            seg = x[s: e + 1]
            residual = np.where(seg > high, seg - high, seg - low)
            out.append(Incident(
                rule="process-range", category="false-reading", severity=Severity.HIGH,
                title=f"{name} reads {float(seg[np.argmax(np.abs(residual))]):g} {spec.unit}, "
                      f"outside what the sensor can report",
                signal=name, related=(), relation=f"{low:g} ≤ {name} ≤ {high:g} {spec.unit}"
                f" (± {margin:g})", start=s, end=e, detect=d, residual=residual, threshold=margin,
                remedy="Check the sensor and its wiring; compare with a local reading at the crane.",
            ))
    return out


def _rate_bound(ctx: CheckContext, name: str, state: int) -> float | None:
    """The fastest honest change of ``name`` per second in ``state`` (None: not judged)."""
    frame = ctx.frame
    if name in BRAKED and state in STOP_STATES:
        return None
    resolution = frame.specs[name].scale if frame.specs[name].scale > 0 else 0.0
    bounds: list[float] = []
    drive = name in POSITION_SPEED or name.endswith("_speed")
    if name in POSITION_SPEED and POSITION_SPEED[name] in frame.specs:
        top = _full_scale(frame.specs[POSITION_SPEED[name]])
        if top is not None:
            bounds.append(PHYSICS_MARGIN * top)
    elif name.endswith("_speed"):
        top = _full_scale(frame.specs[name])
        if top is not None:
            bounds.append(PHYSICS_MARGIN * top / MIN_SPEED_RAMP_S)
    elif name in LOAD_SIGNALS:
        full = _full_scale(frame.specs[name])
        if full is not None:
            bounds.append(PHYSICS_MARGIN * full / MIN_TAKE_UP_S)
    if ctx.baseline is not None:
        margin = ctx.baseline.rate_margin()
        if drive:
            # Drives: what the baseline saw in the same state may only widen the physics.
            seen = ctx.baseline.max_rate(name, state)
            if seen is not None:
                bounds.append(RATE_MARGIN * margin * seen)
        else:
            # Load, torque, wind, sway change with the cargo and the weather, not with the
            # crane state: their envelope is the fastest change seen in any state.
            seen = ctx.baseline.max_rate(name, None)
            if seen is not None:
                bounds.append(OTHER_RATE_MARGIN * margin * seen)
    if not bounds:
        return None
    return max(bounds) + 2 * resolution / frame.dt


def _full_scale(spec: RegisterSpec) -> float | None:
    """The largest magnitude the register map lets a sensor read (None: no range given)."""
    if spec.normal_max is None:
        return None
    return max(abs(spec.normal_max), abs(spec.normal_min or 0.0))


def check_rate(ctx: CheckContext) -> list[Incident]:
    out: list[Incident] = []
    frame = ctx.frame
    if len(frame.t) < 2:
        return out
    states = ctx.states
    for name in analog_signals(ctx):
        x = frame[name]
        sample_time = frame.sample_time(name)
        gap = np.diff(sample_time)
        fresh = gap > 1e-6
        # Two masters may read the PLC a few ms apart across one of its cycles: a change is
        # judged over at least one grid step, the finest time the frame resolves.
        step = np.maximum(gap, frame.dt)
        rate = np.zeros(len(x))
        rate[1:][fresh] = np.abs(np.diff(x)[fresh]) / step[fresh]
        rate = np.nan_to_num(rate, nan=0.0)
        if name.endswith("_speed"):
            # Drives may brake hard (an e-stop halts them within a cycle): only a speed that
            # grows faster than a drive can accelerate is impossible.
            grows = np.zeros(len(x), dtype=bool)
            grows[1:] = np.abs(np.nan_to_num(x[1:])) > np.abs(np.nan_to_num(x[:-1]))
            rate = np.where(grows, rate, 0.0)
        # The state before the step is the one whose envelope applies.
        prior = np.concatenate(([states[0]], states[:-1])) if len(states) else states
        bound = np.full(len(x), np.inf)
        for state in np.unique(prior):
            b = _rate_bound(ctx, name, int(state))
            if b is not None:
                bound[prior == state] = b
        if name in BRAKED and len(states):
            # the step into a stop as well as the steps out of it
            bound[np.isin(states, list(STOP_STATES))] = np.inf
        if not np.isfinite(bound).any():
            continue
        too_fast = rate > bound
        for s, e, d in persistent(too_fast, 1, merge_gap=ctx.seconds(1.0)):
            seg_rate = rate[s: e + 1]
            peak = int(np.argmax(seg_rate))
            unit = frame.specs[name].unit
            out.append(Incident(
                rule="process-rate", category="false-reading", severity=Severity.MEDIUM,
                title=f"{name} jumps at {float(seg_rate[peak]):.3g} {unit}/s, faster than the "
                      f"crane can change it",
                signal=name, related=(),
                relation=f"|d{name}/dt| ≤ {float(bound[s + peak]):.3g} {unit}/s in state "
                         f"{CraneState(int(prior[s + peak]))}",
                start=s, end=e, detect=d, residual=seg_rate - bound[s: e + 1],
                threshold=float(bound[s + peak]),
                remedy="A step no drive can make means a spoofed or faulty reading: compare with "
                       "the crane's local display.",
            ))
    return out
