"""Safety-interlock overrides seen in the values, whoever wrote them.

- overload with no trip: hoist_load above the configured overload limit, overload_trip clear;
- wind over the limit with no stop: either anemometer above the configured wind-stop limit,
  wind_stop clear;
- safety_bypass set outside an announced maintenance window (critical when the crane works
  under it);
- limits raised: a limit register above the configured (profile) value; limits lowered
  (the overload or wind-stop limit below it: the crane trips on honest loads and breezes, a
  stop of operations by parameter) at a lower severity.

The yardstick is always the configured limit, never the one read off the PLC: an attacker who
raised overload_limit to 100 t must not thereby make a 75 t lift look legal. Inside an announced
maintenance window (proof-load tests, anemometer calibration) none of these is an override.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, persistent
from cranewatch.process.state import MOVING_STATES, CraneState

TRIP_LATENCY_S = 1.0  # the PLC trips within a cycle; polls of IR and DI are not simultaneous


def _operating(ctx: CheckContext) -> np.ndarray:
    return ctx.states != CraneState.MAINTENANCE


def check_overload_without_trip(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    if not frame.has("hoist_load", "overload_trip"):
        return []
    limit = ctx.limits.overload_limit
    if limit is None:  # not configured: no crane's limit stands in
        return []
    load = frame.filled("hoist_load")
    bad = (load > limit) & ~frame.bit("overload_trip") & _operating(ctx)
    out = []
    for s, e, d in persistent(bad, ctx.seconds(TRIP_LATENCY_S), merge_gap=ctx.seconds(1.0)):
        bypassed = bool(frame.bit("safety_bypass")[s: e + 1].any())
        out.append(Incident(
            rule="process-overload-no-trip", category="safety-override",
            severity=Severity.CRITICAL,
            title=f"hoist_load {float(load[s: e + 1].max()):.1f} t over the {limit:g} t overload "
                  f"limit without an overload trip" + (" (safety_bypass set)" if bypassed else ""),
            signal="overload_trip",
            related=tuple(n for n in ("hoist_load", "safety_bypass", "overload_limit") if n in frame),
            relation=f"overload_trip = hoist_load > {limit:g} t",
            start=s, end=e, detect=d, residual=load[s: e + 1] - limit, threshold=limit,
            remedy="The overload interlock is overridden: stop lifting, reset safety_bypass and "
                   "the overload limit, and find who changed them.",
        ))
    return out


def check_wind_without_stop(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    names = [n for n in ("wind_speed_1", "wind_speed_2") if n in frame]
    if not names or "wind_stop" not in frame:
        return []
    limit = ctx.limits.wind_stop_limit
    if limit is None:  # not configured: no crane's limit stands in
        return []
    wind = np.max(np.vstack([frame.filled(n) for n in names]), axis=0)
    bad = (wind > limit) & ~frame.bit("wind_stop") & _operating(ctx)
    out = []
    for s, e, d in persistent(bad, ctx.seconds(TRIP_LATENCY_S), merge_gap=ctx.seconds(1.0)):
        out.append(Incident(
            rule="process-wind-no-stop", category="safety-override", severity=Severity.CRITICAL,
            title=f"wind {float(wind[s: e + 1].max()):.1f} m/s over the {limit:g} m/s limit "
                  "without a wind stop",
            signal="wind_stop", related=(*names, *(("safety_bypass",) if "safety_bypass" in frame else ())),
            relation=f"wind_stop = max(wind_speed_1, wind_speed_2) > {limit:g} m/s",
            start=s, end=e, detect=d, residual=wind[s: e + 1] - limit, threshold=limit,
            remedy="The wind interlock is overridden: secure the crane (storm pins) and restore "
                   "the interlock.",
        ))
    return out


def check_bypass(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    if "safety_bypass" not in frame:
        return []
    bypass = frame.bit("safety_bypass") & _operating(ctx)
    out = []
    for s, e, d in persistent(bypass, 1, merge_gap=ctx.seconds(1.0)):
        states = ctx.states[s: e + 1]
        working = bool(np.isin(states, [int(x) for x in MOVING_STATES]).any())
        out.append(Incident(
            rule="process-safety-bypass", category="safety-override",
            severity=Severity.CRITICAL if working else Severity.HIGH,
            title="safety_bypass set outside a maintenance window"
                  + (" while the crane works" if working else ""),
            signal="safety_bypass",
            related=tuple(n for n in ("hoist_load", "hoist_speed", "trolley_speed") if n in frame),
            relation="safety_bypass = 0 in operation (1 only in announced maintenance)",
            start=s, end=e, detect=d, residual=np.ones(e - s + 1), threshold=0.0,
            remedy="Reset safety_bypass, stop the crane until the overload and wind interlocks "
                   "are proven, and find who set it.",
        ))
    return out


def configured_limits(ctx: CheckContext) -> dict[str, float]:
    """The limits the profile configured (one it does not give is not judged)."""
    limits = {
        "overload_limit": ctx.limits.overload_limit,
        "wind_stop_limit": ctx.limits.wind_stop_limit,
        "hoist_speed_limit": ctx.limits.hoist_speed_limit,
        "trolley_speed_limit": ctx.limits.trolley_speed_limit,
    }
    return {name: value for name, value in limits.items() if value is not None}


TRIP_LIMITS = ("overload_limit", "wind_stop_limit")


def check_limits_lowered(ctx: CheckContext) -> list[Incident]:
    limits = configured_limits(ctx)
    return _limits_moved(ctx, {name: limits[name] for name in TRIP_LIMITS if name in limits}, raised=False)


def check_limits_raised(ctx: CheckContext) -> list[Incident]:
    return _limits_moved(ctx, configured_limits(ctx), raised=True)


def _limits_moved(ctx: CheckContext, configured: dict[str, float], raised: bool) -> list[Incident]:
    """Safety limits the PLC serves above (``raised``) or below the profile's values while
    the crane works: a raised limit lets an overload or a storm through; a lowered one trips
    the crane on honest work."""
    frame = ctx.frame
    out = []
    for name, value in configured.items():
        if name not in frame:
            continue
        x = frame[name]
        if raised:
            moved = np.nan_to_num(x, nan=-np.inf) > value * 1.001 + 1e-9
        else:
            moved = np.nan_to_num(x, nan=np.inf) < value * 0.999 - 1e-9
        unit = frame.specs[name].unit
        for s, e, d in persistent(moved & _operating(ctx), 1, merge_gap=ctx.seconds(1.0)):
            if raised:
                rule, severity, relation = ("process-limit-raised", Severity.HIGH,
                                            f"{name} ≤ {value:g} {unit} (the profile's value)")
                title = (f"{name} raised to {float(np.nanmax(x[s: e + 1])):g} {unit} "
                         f"(configured {value:g} {unit})")
            else:
                rule, severity, relation = ("process-limit-lowered", Severity.MEDIUM,
                                            f"{name} = {value:g} {unit} (the profile's value)")
                title = (f"{name} lowered to {float(np.nanmin(x[s: e + 1])):g} {unit} "
                         f"(configured {value:g} {unit}): the crane will trip on honest work")
            out.append(Incident(
                rule=rule, category="safety-override", severity=severity, title=title,
                signal=name, related=(), relation=relation,
                start=s, end=e, detect=d, residual=x[s: e + 1] - value, threshold=value,
                remedy=f"Restore {name} to {value:g} {unit} and find who wrote it.",
            ))
    return out
