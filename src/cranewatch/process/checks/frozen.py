"""Frozen values: a reading that stops changing when the crane says it must change.

- a position that stands still while its drive runs (``hoist_height`` flat, ``hoist_speed``
  at 1 m/s);
- a sensor flat while its twin moves (one anemometer stuck while the other follows the gusts);
- a sensor flat for much longer than the baseline ever saw it flat (needs a baseline);
- a heartbeat that stops advancing, or jumps back (the PLC's cycle counter never does either;
  a jump back means old answers are being replayed).

A parked crane's positions are flat and that is normal: positions are judged only while their
drive runs.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import (
    CheckContext,
    Incident,
    constant_runs,
    flat_for,
    persistent,
    rolling_extent,
    rolling_mean,
)
from cranewatch.process.checks.range_rate import analog_signals
from cranewatch.process.checks.relations import AXES

FROZEN_WINDOW_S = 2.0
TWINS = (("wind_speed_1", "wind_speed_2"), ("wind_speed_2", "wind_speed_1"))
TWIN_WINDOW_S = 10.0
TWIN_MOVES = 1.0  # m/s: the twin's extent over the window that shows real gusts


def check_frozen_vs_motion(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    out: list[Incident] = []
    w = ctx.seconds(FROZEN_WINDOW_S)
    for position, speed, axis in AXES:
        if not frame.has(position, speed):
            continue
        flat = flat_for(frame[position], w)
        drive = rolling_mean(np.abs(frame.filled(speed)), w)
        frozen = flat & (drive > 0.1)
        for s, e, d in persistent(frozen, ctx.seconds(1.0), merge_gap=ctx.seconds(1.0)):
            onset = max(0, s - w + 1)
            out.append(Incident(
                rule="process-frozen", category="false-reading", severity=Severity.HIGH,
                title=f"{position} is frozen while the {axis} runs",
                signal=position, related=(speed,),
                relation=f"{position} changes while |{speed}| > 0.1 m/s",
                start=onset, end=e, detect=d, residual=drive[onset: e + 1], threshold=0.1,
                remedy=f"{position} repeats one value: the sensor or its reading is stuck or "
                       "spoofed.",
            ))
    for name, twin in TWINS:
        if not frame.has(name, twin):
            continue
        wt = ctx.seconds(TWIN_WINDOW_S)
        flat = flat_for(frame[name], wt)
        twin_moves = rolling_extent(frame[twin], wt) >= TWIN_MOVES
        frozen = flat & twin_moves
        for s, e, d in persistent(frozen, 1, merge_gap=ctx.seconds(2.0)):
            onset = max(0, s - wt + 1)
            out.append(Incident(
                rule="process-frozen", category="false-reading", severity=Severity.HIGH,
                title=f"{name} is frozen while {twin} moves",
                signal=name, related=(twin,),
                relation=f"{name} follows the gusts {twin} sees (both move)",
                start=onset, end=e, detect=d,
                residual=rolling_extent(frame[twin], wt)[onset: e + 1], threshold=TWIN_MOVES,
                remedy=f"{name} is stuck or replaced by a constant: the wind interlock may not "
                       "see a storm.",
            ))
    return out


def check_frozen_sensor(ctx: CheckContext) -> list[Incident]:
    """Flat far longer than the baseline ever saw (only sensors the baseline saw move often)."""
    base = ctx.baseline
    if base is None:
        return []
    frame = ctx.frame
    out: list[Incident] = []
    for name in analog_signals(ctx):
        if name in STATE_DRIVEN:
            continue
        longest = base.longest_flat_s.get(name)
        if longest is None or name not in frame:
            continue
        # 3× the longest flat a 10-minute capture saw, more after a shorter one (its longest
        # flat stretch underestimates the honest longest the more, the fewer stretches it saw)
        limit = max(1.5 * base.rate_margin() * longest, longest + 5.0)
        x = frame[name]
        flat_s = (constant_runs(x) - 1) * frame.dt
        frozen = (flat_s > limit) & ~np.isnan(x)
        for s, e, _d in persistent(frozen, 1, merge_gap=0):
            onset = max(0, s - round(limit / frame.dt))
            out.append(Incident(
                rule="process-frozen", category="false-reading", severity=Severity.MEDIUM,
                title=f"{name} has not changed for {float(flat_s[e]):.0f} s; the baseline never "
                      f"saw it flat for more than {longest:.1f} s",
                signal=name, related=(), relation=f"{name} changes at least every {limit:.1f} s",
                start=onset, end=e, detect=s, residual=flat_s[onset: e + 1], threshold=limit,
                remedy=f"{name} is stuck or replaced by a constant.",
            ))
    return out


# Flat is normal for these whenever the crane stands or carries nothing; the drive relations
# and the torque-vs-load relation judge them instead.
STATE_DRIVEN = frozenset({"hoist_height", "hoist_speed", "trolley_position", "trolley_speed",
                          "gantry_position", "gantry_speed", "hoist_load", "hoist_torque",
                          "sway_angle"})

HEARTBEAT_STUCK_S = 1.0  # ten PLC cycles


def check_heartbeat(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    if "heartbeat" not in frame or len(frame.t) < 2:
        return []
    out: list[Incident] = []
    hb = frame["heartbeat"]
    fresh = frame.age["heartbeat"] < 1.5 * frame.dt
    flat_s = (constant_runs(hb) - 1) * frame.dt
    stuck = (flat_s > HEARTBEAT_STUCK_S) & fresh & ~np.isnan(hb)
    for s, e, d in persistent(stuck, 1, merge_gap=ctx.seconds(HEARTBEAT_STUCK_S)):
        onset = max(0, s - round(HEARTBEAT_STUCK_S / frame.dt))
        out.append(Incident(
            rule="process-heartbeat", category="false-reading", severity=Severity.HIGH,
            title="the PLC heartbeat stopped advancing",
            signal="heartbeat", related=(),
            relation="heartbeat advances by 1 every 100 ms PLC cycle",
            start=onset, end=e, detect=d, residual=flat_s[onset: e + 1],
            threshold=HEARTBEAT_STUCK_S,
            remedy="Frozen answers: the PLC has stopped or something answers in its place.",
        ))
    # Steps between successive fresh samples, modulo the 16-bit wrap.
    sample_time = frame.sample_time("heartbeat")
    new = np.concatenate(([False], np.diff(sample_time) > 1e-6)) & ~np.isnan(hb)
    idx = np.flatnonzero(new)
    if len(idx) > 1:
        prev = idx[:-1]
        cur = idx[1:]
        step = np.mod(hb[cur] - hb[prev], 65536)
        back = cur[step > 32768]
        for k in back:
            jump = float(np.mod(hb[k] - hb[k - 1], 65536) - 65536)
            out.append(Incident(
                rule="process-heartbeat-back", category="false-reading", severity=Severity.HIGH,
                title=f"the PLC heartbeat jumped back by {-jump:.0f} cycles",
                signal="heartbeat", related=(),
                relation="heartbeat only advances (wrapping at 65536)",
                start=int(k), end=int(k), detect=int(k), residual=np.array([jump]), threshold=0.0,
                extra={"replay_lag_s": round(-jump * 0.1, 1)},
                remedy="Old PLC answers are being replayed (or the PLC restarted): compare with "
                       "the PLC's own diagnostics.",
            ))
    return out
