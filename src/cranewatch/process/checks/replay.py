"""Replay: a window of several sensor values repeating an earlier window.

Honest sensors never repeat a busy stretch sample for sample: the wind gusts differently, the
load cell and the torque carry noise, positions pass at other speeds. When several sensors
change and each grid row of their values (at register resolution) equals a row a fixed time
earlier, row after row for ``REPLAY_WINDOW_S``, old values are being served again. Polls and
PLC cycles do not line up exactly, so the lag may wobble by a grid step and a few rows may miss.

Vectorised: each row of quantised values is hashed to 64 bits; sorting the hashes gives, for
every row, the latest earlier row with the same values (its lag); a replay is a busy stretch
where that lag stays constant (± one step). Flat stretches (a parked crane, a calm day) are
never judged: they repeat honestly, and the frozen checks cover them.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, persistent, rolling_sum
from cranewatch.process.checks.range_rate import analog_signals

REPLAY_WINDOW_S = 2.0
MIN_MATCHING = 0.8  # share of rows in the window that repeat at the lag
MIN_CHANGING_SIGNALS = 2
_ROW_SALTS = np.random.default_rng(0x6372616E).integers(1, 2**63, size=64, dtype=np.uint64) | 1


UNKNOWN = -(2**40)


def _quantised(ctx: CheckContext, names: list[str], near: float) -> np.ndarray:
    """Register counts (at ``near`` × resolution), one *row* per signal (contiguous in time);
    unknown = UNKNOWN."""
    frame = ctx.frame
    q = np.empty((len(names), len(frame.t)), dtype=np.int64)
    for i, name in enumerate(names):
        step = frame.specs[name].scale if frame.specs[name].scale > 0 else 1.0
        x = np.rint(frame[name] / (step * near))
        x[np.isnan(x)] = UNKNOWN
        q[i] = x
    return q


def row_hashes(q: np.ndarray) -> np.ndarray:
    """One 64-bit hash per instant of quantised values (``q``: one row per signal)."""
    m = q.shape[0]
    salts = _ROW_SALTS[np.arange(m) % len(_ROW_SALTS)]
    words = q.view(np.uint64)
    rows = np.zeros(q.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(m):
            rows += words[i] * salts[i]
        rows ^= rows >> np.uint64(29)
        rows *= np.uint64(0xBF58476D1CE4E5B9)
        rows ^= rows >> np.uint64(32)
    return rows


def previous_occurrence(h: np.ndarray) -> np.ndarray:
    """For each row, the latest earlier row with the same hash (-1 when none)."""
    order = np.argsort(h, kind="stable")  # equal hashes stay in time order
    sorted_h = h[order]
    same = np.concatenate(([False], sorted_h[1:] == sorted_h[:-1]))
    prev = np.full(len(h), -1, dtype=np.int64)
    prev[order[same]] = order[np.flatnonzero(same) - 1]
    return prev


def check_replay(ctx: CheckContext, near: float = 1.0) -> list[Incident]:
    frame = ctx.frame
    names = [n for n in analog_signals(ctx) if n in frame]
    w = ctx.seconds(REPLAY_WINDOW_S)
    n = len(frame.t)
    if len(names) < MIN_CHANGING_SIGNALS or n < 2 * w:
        return []
    q = _quantised(ctx, names, near)
    changed = np.zeros_like(q, dtype=bool)
    changed[:, 1:] = q[:, 1:] != q[:, :-1]
    # Per signal: did it change within the window? A busy window has several that did.
    counts = np.cumsum(changed, axis=1, dtype=np.int32)
    window_changes = counts.copy()
    window_changes[:, w:] -= counts[:, :-w]
    moving = window_changes >= 2
    busy = moving.sum(axis=0) >= MIN_CHANGING_SIGNALS
    unknown = (q == UNKNOWN).any(axis=0)
    h = row_hashes(q)
    prev = previous_occurrence(h)
    idx = np.arange(n)
    lag = np.where((prev >= 0) & ~unknown, idx - prev, 0)
    # A row "repeats at the window's lag" when its lag is within one step of the lag of the
    # row before it and reaches back further than the window itself.
    steady = np.zeros(n, dtype=bool)
    steady[1:] = (np.abs(np.diff(lag)) <= 1) & (lag[1:] >= w) & (lag[:-1] >= w)
    share = rolling_sum(steady, w) / w
    candidate = busy & (share >= MIN_MATCHING)
    out: list[Incident] = []
    for s, e, d in persistent(candidate, 1, merge_gap=ctx.seconds(1.0)):
        onset = max(0, s - w + 1)
        run_lags = lag[onset: e + 1][steady[onset: e + 1]]
        lag_rows = int(np.median(run_lags)) if len(run_lags) else int(lag[s])
        active = [names[i] for i in np.flatnonzero(moving[:, onset: e + 1].any(axis=1))]
        counts = changed[:, onset: e + 1].sum(axis=1)
        accused = names[int(np.argmax(counts))]
        lag_s = lag_rows * frame.dt
        matched = float(np.mean(steady[onset: e + 1]))
        out.append(Incident(
            rule="process-replay", category="false-reading", severity=Severity.HIGH,
            title=f"{len(active)} sensors repeat, value for value, what they read {lag_s:.1f} s "
                  "earlier",
            signal=accused, related=tuple(a for a in active if a != accused),
            relation=f"honest sensors never repeat a {REPLAY_WINDOW_S:g} s window in which "
                     f"{MIN_CHANGING_SIGNALS}+ of them change",
            start=onset, end=e, detect=d, residual=lag[onset: e + 1] * frame.dt,
            threshold=REPLAY_WINDOW_S,
            extra={"replay_lag_s": round(lag_s, 3),
                   "replayed_from": float(frame.t[onset] - lag_s),
                   "replayed_signals": active, "rows_matching": round(matched, 3)},
            remedy="The crane's answers are replayed from a recording: someone sits between the "
                   "PLC and its masters, or the PLC is tampered with. Trace the path (ARP, "
                   "switch ports) and check the PLC program.",
        ))
    return out
