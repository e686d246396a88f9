"""Physical relations of the reference crane that an honest set of sensors always keeps.

- a position changes by its speed integrated over time (hoist, trolley, gantry);
- hoist torque follows the hoist load while the hoist runs steadily;
- the two anemometers agree (within ~15 % or 1.5 m/s, averaged over a second);
- twistlocks lock only on a landed spreader, and a lifted load needs locked twistlocks;
- a trip comes with its cause (an overload trip with a load near the limit, a wind stop with
  wind near the limit); a trip from nowhere is a spoofed status bit;
- nothing moves while e-stop, storm pins or the anti-collision stop hold the crane.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import (
    CheckContext,
    Incident,
    persistent,
    rolling_extent,
    rolling_max,
    rolling_mean,
)
from cranewatch.process.state import StateThresholds

AXES = (  # position, speed, what moves
    ("hoist_height", "hoist_speed", "hoist"),
    ("trolley_position", "trolley_speed", "trolley"),
    ("gantry_position", "gantry_speed", "gantry"),
)
INTEGRATION_WINDOW_S = 2.0
POSITION_TOLERANCE_M = 0.15  # fixed part: register resolution and poll jitter
POSITION_TOLERANCE_REL = 0.15  # of the distance travelled in the window


def _filled(ctx: CheckContext, name: str) -> np.ndarray:
    return ctx.frame.filled(name)


def check_position_vs_speed(ctx: CheckContext) -> list[Incident]:
    out: list[Incident] = []
    frame = ctx.frame
    n = len(frame.t)
    w = ctx.seconds(INTEGRATION_WINDOW_S)
    if n <= w:
        return out
    for position, speed, axis in AXES:
        if not frame.has(position, speed):
            continue
        p = frame[position]
        v = frame[speed]
        known = ~(np.isnan(p) | np.isnan(v))
        v0 = np.nan_to_num(v, nan=0.0)
        # Trapezoidal integral of the speed on the grid; the window difference is the travel.
        step = np.concatenate(([0.0], 0.5 * (v0[1:] + v0[:-1]) * np.diff(frame.t)))
        integral = np.cumsum(step)
        travel_abs = np.cumsum(np.abs(step))
        p0 = np.nan_to_num(p, nan=0.0)
        moved = np.zeros(n)
        expected = np.zeros(n)
        travelled = np.zeros(n)
        moved[w:] = p0[w:] - p0[:-w]
        expected[w:] = integral[w:] - integral[:-w]
        travelled[w:] = travel_abs[w:] - travel_abs[:-w]
        residual = moved - expected
        tol = POSITION_TOLERANCE_M + POSITION_TOLERANCE_REL * travelled
        valid = known.copy()
        valid[w:] &= known[:-w]
        valid[:w] = False
        broken = valid & (np.abs(residual) > tol)
        for s, e, d in persistent(broken, ctx.seconds(1.0), merge_gap=ctx.seconds(1.0)):
            out.append(Incident(
                rule="process-position-speed", category="false-reading", severity=Severity.HIGH,
                title=f"{position} does not follow the integrated {speed}",
                signal=position, related=(speed,),
                relation=f"Δ{position} over {INTEGRATION_WINDOW_S:g} s = ∫{speed} dt "
                         f"(± {POSITION_TOLERANCE_M} m + {POSITION_TOLERANCE_REL:.0%} of travel)",
                start=s, end=e, detect=d, residual=residual[s: e + 1],
                threshold=float(np.max(tol[s: e + 1])),
                remedy=f"One of {position} and {speed} is spoofed or faulty: compare with the "
                       f"{axis} drive's own encoder.",
            ))
    return out


def _signed(value: float) -> str:
    """An offset written as a person would: "+ 0.4", "− 0.4", or "+ 0" for a tiny one."""
    if abs(value) < 0.05:
        return "+ 0"
    return f"{'−' if value < 0 else '+'} {abs(value):.2g}"


def check_torque_vs_load(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    if not frame.has("hoist_torque", "hoist_load", "hoist_speed") or len(frame.t) < 3:
        return []
    load = frame["hoist_load"]
    torque = frame["hoist_torque"]
    speed = _filled(ctx, "hoist_speed")
    # Torque carries an acceleration term: judge only a steady hoist (at speed or holding the
    # load still), never while the drive ramps or brakes.
    accel = np.abs(np.gradient(rolling_mean(speed, ctx.seconds(0.5)), frame.t))
    steady = rolling_mean((accel < 0.1).astype(float), ctx.seconds(1.0)) > 0.999
    steady &= ~frame.bit("spreader_landed")  # a landed spreader rests on the box, ropes slack
    fit = ctx.baseline.torque_fit if ctx.baseline is not None else None
    if fit is not None:
        slope, offset, scale = fit
        tolerance = max(8.0, 4.0 * scale)
    elif ctx.limits.rated_load is None:  # neither a learned fit nor a rated load: not judged
        return []
    else:
        slope, offset = 100.0 / ctx.limits.rated_load, 0.0
        tolerance = 8.0  # % of rated torque: about 5 t on the reference crane
    expected = slope * load + offset
    residual = torque - expected
    broken = steady & (np.abs(np.nan_to_num(residual, nan=0.0)) > tolerance)
    out = []
    for s, e, d in persistent(broken, ctx.seconds(1.0), merge_gap=ctx.seconds(2.0)):
        seg = residual[s: e + 1]
        implied = float(np.nanmedian((torque[s: e + 1] - offset) / slope))
        # A load cell that repeats one value while the torque moves is stuck, not just off.
        stuck = float(np.nanmax(load[s: e + 1]) - np.nanmin(load[s: e + 1])) == 0.0 \
            and float(np.nanmax(torque[s: e + 1]) - np.nanmin(torque[s: e + 1])) > 0.0
        out.append(Incident(
            rule="process-torque-load", category="false-reading", severity=Severity.HIGH,
            title=f"hoist_load {'stuck at' if stuck else 'reads'} "
                  f"{float(np.nanmedian(load[s: e + 1])):.1f} t while the hoist torque says "
                  f"{implied:.1f} t",
            signal="hoist_load", related=("hoist_torque", "hoist_speed"),
            relation=f"hoist_torque ≈ {slope:.3g} %/t × hoist_load {_signed(offset)} % "
                     f"(± {tolerance:.3g} % of rated torque) while the hoist is steady",
            start=s, end=e, detect=d, residual=seg, threshold=tolerance,
            remedy="The load cell reading is spoofed or faulty; a false load defeats the "
                   "overload interlock. Check the load cell against the drive torque.",
        ))
    return out


def check_anemometers(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    if not frame.has("wind_speed_1", "wind_speed_2"):
        return []
    w = ctx.seconds(1.0)
    a = rolling_mean(_filled(ctx, "wind_speed_1"), w)
    b = rolling_mean(_filled(ctx, "wind_speed_2"), w)
    known = ~(np.isnan(frame["wind_speed_1"]) | np.isnan(frame["wind_speed_2"]))
    tolerance = np.maximum(1.5, 0.2 * np.maximum(a, b))
    residual = a - b
    broken = known & (np.abs(residual) > tolerance)
    out = []
    for s, e, d in persistent(broken, ctx.seconds(5.0), merge_gap=ctx.seconds(2.0)):
        # The sensor that moved less over the stretch is the suspect (a stuck one moves not at all).
        ext1 = float(np.ptp(frame["wind_speed_1"][s: e + 1]))
        ext2 = float(np.ptp(frame["wind_speed_2"][s: e + 1]))
        suspect, other = ("wind_speed_1", "wind_speed_2") if ext1 <= ext2 else \
            ("wind_speed_2", "wind_speed_1")
        out.append(Incident(
            rule="process-anemometers", category="false-reading", severity=Severity.HIGH,
            title=f"the two anemometers disagree; {suspect} is the suspect",
            signal=suspect, related=(other,),
            relation="wind_speed_1 ≈ wind_speed_2 (1 s means within 20 % or 1.5 m/s)",
            start=s, end=e, detect=d, residual=residual[s: e + 1],
            threshold=float(np.max(tolerance[s: e + 1])),
            remedy="A wrong anemometer hides a storm from the wind interlock: inspect both "
                   "anemometers and their signal path.",
        ))
    return out


def _rising(bit: np.ndarray) -> np.ndarray:
    return np.flatnonzero(bit[1:] & ~bit[:-1]) + 1


def check_twistlock_logic(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    out: list[Incident] = []
    if not frame.has("twistlocks_locked"):
        return out
    locked = frame.bit("twistlocks_locked")
    if frame.has("spreader_landed"):
        landed = frame.bit("spreader_landed")
        grace = ctx.seconds(1.0)
        recently_landed = rolling_mean(landed.astype(float), grace + 1) > 0
        for k in _rising(locked):
            if not recently_landed[k]:
                out.append(Incident(
                    rule="process-twistlock-logic", category="false-reading",
                    severity=Severity.HIGH,
                    title="twistlocks report locking while the spreader is not landed",
                    signal="twistlocks_locked", related=("spreader_landed",),
                    relation="twistlocks lock only when spreader_landed",
                    start=int(k), end=int(k), detect=int(k),
                    remedy="Twistlock or landed status is spoofed; check the spreader sensors.",
                ))
    if frame.has("hoist_load"):
        load = _filled(ctx, "hoist_load")
        # A load hangs on the ropes only through locked twistlocks, moving or not.
        suspended = (load >= StateThresholds().loaded) & ~frame.bit("spreader_landed")
        loose = suspended & ~locked
        for s, e, d in persistent(loose, ctx.seconds(2.0), merge_gap=ctx.seconds(1.0)):
            out.append(Incident(
                rule="process-twistlock-logic", category="false-reading", severity=Severity.HIGH,
                title="a load hangs on the spreader while the twistlocks report unlocked",
                signal="twistlocks_locked", related=("hoist_load", "hoist_speed"),
                relation="a suspended load (hoist_load > 0, not landed) needs twistlocks_locked",
                start=s, end=e, detect=d, residual=load[s: e + 1],
                threshold=StateThresholds().loaded,
                remedy="Either the load or the twistlock status is false; check both.",
            ))
    return out


def check_trip_causes(ctx: CheckContext) -> list[Incident]:
    """A trip that rises while its cause is far below the limit is a spoofed status bit."""
    frame = ctx.frame
    out: list[Incident] = []
    lookback = ctx.seconds(3.0)
    causes: list[tuple[str, tuple[str, ...], np.ndarray, float, str]] = []
    if frame.has("overload_trip", "hoist_load") and ctx.limits.overload_limit is not None:
        causes.append(("overload_trip", ("hoist_load",), _filled(ctx, "hoist_load"),
                       ctx.limits.overload_limit, "t"))
    if frame.has("wind_stop", "wind_speed_1") and ctx.limits.wind_stop_limit is not None:
        names = tuple(n for n in ("wind_speed_1", "wind_speed_2") if n in frame)
        wind = np.max(np.vstack([_filled(ctx, n) for n in names]), axis=0)
        causes.append(("wind_stop", names, wind, ctx.limits.wind_stop_limit, "m/s"))
    limit_of = {"overload_trip": "overload_limit", "wind_stop": "wind_stop_limit"}
    for trip, related, cause, limit, unit in causes:
        peak = rolling_max(cause, lookback)
        # A limit lowered on the PLC explains its trip (process-limit-lowered reports that).
        wire = limit_of[trip]
        acting = np.minimum(limit, np.nan_to_num(frame[wire], nan=limit)) if wire in frame \
            else np.full(len(frame.t), limit)
        for k in _rising(frame.bit(trip)):
            if peak[k] < 0.9 * acting[k]:
                out.append(Incident(
                    rule="process-trip-cause", category="false-reading", severity=Severity.MEDIUM,
                    title=f"{trip} set while {related[0]} peaks at {peak[k]:.1f} {unit}, "
                          f"under the {limit:g} {unit} limit",
                    signal=trip, related=related,
                    relation=f"{trip} follows {'/'.join(related)} > {limit:g} {unit}",
                    start=int(k), end=int(k), detect=int(k),
                    residual=np.array([peak[k] - limit]), threshold=limit,
                    remedy="A trip without its cause stops the crane on a spoofed status: check "
                           "who else talks to the PLC.",
                ))
    return out


STOPS = ("estop_active", "storm_pins_engaged", "anti_collision_stop")
STOP_GRACE_S = 3.0  # drives need a moment to brake to standstill


def check_motion_under_stop(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    present = [s for s in STOPS if s in frame]
    if not present:
        return []
    stop = np.zeros(len(frame.t), dtype=bool)
    for name in present:
        stop |= frame.bit(name)
    # Hold the stop for STOP_GRACE_S before judging motion under it.
    held = rolling_mean(stop.astype(float), ctx.seconds(STOP_GRACE_S)) > 0.999
    limits = StateThresholds()
    out: list[Incident] = []
    for position, speed, axis in AXES:
        if speed not in frame:
            continue
        threshold = limits.gantry_moving if axis == "gantry" else limits.hoist_moving
        moving = np.abs(_filled(ctx, speed)) > threshold
        if position in frame:
            moving |= rolling_extent(_filled(ctx, position), ctx.seconds(1.0)) > 0.1
        bad = held & moving
        for s, e, d in persistent(bad, ctx.seconds(0.5), merge_gap=ctx.seconds(1.0)):
            active = tuple(n for n in present if frame.bit(n)[s])
            out.append(Incident(
                rule="process-motion-under-stop", category="safety-override",
                severity=Severity.CRITICAL,
                title=f"the {axis} moves while {', '.join(active) or 'a stop'} holds the crane",
                signal=speed, related=(*active, *((position,) if position in frame else ())),
                relation=f"no {axis} motion while {' / '.join(present)}",
                start=s, end=e, detect=d, residual=_filled(ctx, speed)[s: e + 1],
                threshold=threshold,
                remedy="A stop interlock is overridden (or its status bit is false): stop the "
                       "crane locally and inspect the safety circuit.",
            ))
    return out
