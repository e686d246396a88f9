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

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, persistent, rolling_sum
from cranewatch.process.checks.range_rate import analog_signals
from cranewatch.process.signals import RegisterSpec, SignalFrame

REPLAY_WINDOW_S = 3.0
# Share of rows in the window that repeat an earlier row exactly at a steady lag. Polls and PLC
# cycles drift against each other, so a replayed poll often reads a cycle its original poll
# skipped (noise differs): a third of the rows is already far beyond chance.
MIN_MATCHING = 0.3
LAG_WOBBLE = 2  # rows
MIN_CHANGING_SIGNALS = 3
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


def check_replay(ctx: CheckContext) -> list[Incident]:
    """Exact replays anywhere, and near replays that start with a jump back in time."""
    found = sorted(exact_replays(ctx) + near_replays(ctx), key=lambda i: i.start)
    # One replay seen both ways is one incident: the earliest view of it, to the latest end.
    merged: list[Incident] = []
    for inc in found:
        if merged and inc.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = replace(last, end=max(last.end, inc.end),
                                 residual=None if last.residual is None else
                                 np.resize(last.residual, max(last.end, inc.end) - last.start + 1))
        else:
            merged.append(inc)
    return merged


def exact_replays(ctx: CheckContext, near: float = 1.0) -> list[Incident]:
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
    # A row repeats an earlier one when the same values were served more than a window ago;
    # it repeats "at a steady lag" when the previous repeating row had (nearly) the same lag.
    matched = lag >= w
    last = np.maximum.accumulate(np.where(matched, idx, -1))
    before = np.concatenate(([-1], last[:-1]))
    prev_lag = np.where(before >= 0, lag[np.maximum(before, 0)], -10 * w)
    steady = matched & (np.abs(lag - prev_lag) <= LAG_WOBBLE)
    share = rolling_sum(steady, w) / w
    candidate = busy & (share >= MIN_MATCHING)
    out: list[Incident] = []
    for s, e, d in persistent(candidate, 1, merge_gap=ctx.seconds(1.0)):
        # The replay began at the first repeating row of the window that gave it away.
        lo = max(0, s - w + 1)
        onset = lo + int(np.argmax(matched[lo: e + 1]))
        run_lags = lag[onset: e + 1][steady[onset: e + 1]]
        lag_rows = int(np.median(run_lags)) if len(run_lags) else int(lag[s])
        active = [names[i] for i in np.flatnonzero(moving[:, onset: e + 1].any(axis=1))]
        counts = changed[:, onset: e + 1].sum(axis=1)
        accused = names[int(np.argmax(counts))]
        lag_s = lag_rows * frame.dt
        share_matching = float(np.mean(steady[onset: e + 1]))
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
                   "replayed_signals": active, "rows_matching": round(share_matching, 3)},
            remedy="The crane's answers are replayed from a recording: someone sits between the "
                   "PLC and its masters, or the PLC is tampered with. Trace the path (ARP, "
                   "switch ports) and check the PLC program.",
        ))
    return out


# --- near replays ------------------------------------------------------------------------------
# A replayed PLC serves old cycles; a master's polls drift against the PLC's cycles, so what it
# reads during the replay is the old trajectory sampled at other instants: each value lies
# within one poll's change of the old value (plus the sensor's noise), not on it. Searching
# every window for such near copies costs O(n²); but a replay that starts while the crane moves
# starts with a jump back in time (a position leaps to where it was), so the search runs only
# from the rows where a position or a drive speed jumps.

NEAR_SEARCH_S = 600.0  # how far back a replay's source is looked for
NEAR_MATCHING = 0.8  # share of rows within tolerance of the earlier window
SPEED_JUMP = 1.0  # m/s between two polls: no drive accelerates so
POSITION_SPEED = (("hoist_height", "hoist_speed"), ("trolley_position", "trolley_speed"),
                  ("gantry_position", "gantry_speed"))


def _jumps(ctx: CheckContext) -> np.ndarray:
    """Rows where a position or a drive speed leaps further than the crane can move."""
    frame = ctx.frame
    n = len(frame.t)
    jump = np.zeros(n, dtype=bool)
    for position, speed in POSITION_SPEED:
        if position in frame:
            spec = frame.specs.get(speed)
            top = max(abs(spec.normal_max or 0.0), abs(spec.normal_min or 0.0)) if spec else 0.0
            limit = 1.5 * (top or 4.0) * frame.dt + 0.1
            jump[1:] |= np.abs(np.diff(frame.filled(position))) > limit
        if speed in frame:
            jump[1:] |= np.abs(np.diff(frame.filled(speed))) > SPEED_JUMP
    return jump


@dataclass(frozen=True, slots=True)
class _Slice:
    """Values and tolerances of rows [lo, hi): how far a value read one PLC cycle off may
    honestly lie from each (one poll's change either side, two register steps, 3 % noise)."""

    lo: int
    x: np.ndarray  # (signals, rows)
    tol: np.ndarray

    @classmethod
    def of(cls, ctx: CheckContext, names: list[str], lo: int, hi: int) -> _Slice:
        frame = ctx.frame
        a, b = max(0, lo - 1), min(len(frame.t), hi + 1)
        x = np.stack([frame.filled(n)[a:b] for n in names])
        step = np.abs(np.diff(x, axis=1))
        zero = np.zeros((len(names), 1))
        local = np.maximum(np.hstack((zero, step)), np.hstack((step, zero)))
        resolution = np.array([max(frame.specs[n].scale, 0.0) for n in names])[:, None]
        tol = local + 2.0 * resolution + 0.03 * np.abs(x)
        return cls(a, x, tol)

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[:, idx - self.lo], self.tol[:, idx - self.lo]


def _follow(ctx: CheckContext, names: list[str], k: int, lag: int, w: int,
            chunk: int = 20_000) -> int:
    """The last row of a replay that starts at ``k`` with ``lag``: rows keep matching the rows
    one lag earlier (half of every window); followed chunk by chunk, not to the end of a day."""
    n = len(ctx.frame.t)
    start = k
    while True:
        stop = min(n, start + chunk)
        rows = np.arange(start, stop)
        part = _Slice.of(ctx, names, start - lag, stop)
        now, _ = part.rows(rows)
        then, tol = part.rows(rows - lag)
        near_rows = (np.abs(now - then) <= tol).all(axis=0)
        keep = rolling_sum(near_rows, w) / np.minimum(np.arange(1, len(rows) + 1), w) >= 0.5
        broken = np.flatnonzero(~keep)
        if len(broken):
            return max(int(rows[broken[0] - 1]) if broken[0] > 0 else start, k + w - 1)
        if stop == n:
            return n - 1
        start = stop - w  # overlap one window so the rolling share stays honest


def _isolated(jumps: np.ndarray, w: int) -> np.ndarray:
    """Jumps after at least a window without one: where a replay can begin.

    An honest crane never jumps, so a replay's onset follows a quiet stretch; where jumps come
    thick (a noisy or mis-mapped signal) they tell nothing, and searching from each would cost
    a window's comparison against the whole horizon per row.
    """
    if len(jumps) == 0:
        return jumps
    gaps = np.diff(jumps, prepend=-(w + 1))
    return jumps[gaps > w]


def _best_sources(around: _Slice, sources: np.ndarray, k: int,
                  w: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows whose window matches rows [k, k + w) in ``NEAR_MATCHING`` of rows, with
    their share of matching rows.

    Row by row, a source that has missed more rows than the share allows is dropped: few
    sources survive the first rows, so the search costs about one comparison per source.
    """
    replayed, _ = around.rows(np.arange(k, k + w))
    allowed = int(np.floor((1.0 - NEAR_MATCHING) * w + 1e-9))
    alive = sources
    misses = np.zeros(len(alive), dtype=np.int64)
    for i in range(w):
        if len(alive) == 0:
            break
        then, tol = around.rows(alive + i)
        misses += ~(np.abs(replayed[:, i][:, None] - then) <= tol).all(axis=0)
        keep = misses <= allowed
        alive, misses = alive[keep], misses[keep]
    return alive, (w - misses) / w


def near_replays(ctx: CheckContext) -> list[Incident]:
    frame = ctx.frame
    names = [n for n in analog_signals(ctx) if n in frame]
    w = ctx.seconds(REPLAY_WINDOW_S)
    n = len(frame.t)
    if len(names) < MIN_CHANGING_SIGNALS or n < 3 * w:
        return []
    anchors = _isolated(np.flatnonzero(_jumps(ctx)), w)
    if len(anchors) == 0:
        return []
    resolution = np.array([max(frame.specs[m].scale, 1e-9) for m in names])
    horizon = ctx.seconds(NEAR_SEARCH_S)
    out: list[Incident] = []
    covered_until = -1
    for k in anchors.tolist():
        if k <= covered_until or k + w > n:
            continue
        first = max(0, k - horizon)
        last = k - w  # the source window ends before the replayed one starts
        if last <= first:
            continue
        around = _Slice.of(ctx, names, first, k + w)
        sources, score = _best_sources(around, np.arange(first, last), k, w)
        if len(sources) == 0:
            continue
        best = int(np.flatnonzero(score == score.max())[-1])  # the most recent best source
        j = int(sources[best])
        source, _ = around.rows(np.arange(j, j + w))
        busy = int((np.ptp(source, axis=1) > 10 * resolution).sum())
        if busy < MIN_CHANGING_SIGNALS - 1:
            continue  # a flat source window would match any flat stretch
        lag = k - j
        end = _follow(ctx, names, k, lag, w)
        covered_until = end
        span = _Slice.of(ctx, names, k - lag, end + 1)
        now, _ = span.rows(np.arange(k, end + 1))
        then, _ = span.rows(np.arange(k - lag, end + 1 - lag))
        active = [names[i] for i in np.flatnonzero(np.ptp(now, axis=1) > 10 * resolution)]
        accused = active[0] if active else names[0]
        lag_s = float(frame.t[k] - frame.t[j])
        out.append(Incident(
            rule="process-replay", category="false-reading", severity=Severity.HIGH,
            title=f"{len(active)} sensors jump back to what they read {lag_s:.1f} s earlier and "
                  "repeat it",
            signal=accused, related=tuple(a for a in active if a != accused),
            relation=f"after a jump, the next {REPLAY_WINDOW_S:g} s stay within one poll's "
                     f"change of a window {lag_s:.1f} s earlier in {NEAR_MATCHING:.0%} of rows",
            start=k, end=end, detect=k + w - 1,
            residual=np.abs(now - then).max(axis=0),
            threshold=NEAR_MATCHING,
            extra={"replay_lag_s": round(lag_s, 3), "replayed_from": float(frame.t[j]),
                   "replayed_signals": active,
                   "rows_matching": round(float(score[best]), 3), "match": "near"},
            remedy="The crane's answers are replayed from a recording: someone sits between the "
                   "PLC and its masters, or the PLC is tampered with. Trace the path (ARP, "
                   "switch ports) and check the PLC program.",
        ))
    return out


# --- a frame with a compact past ----------------------------------------------------------------
# Checked in time slices (``process.slices``), a frame reaches a minute before its slice; a
# replay's source lies up to ``NEAR_SEARCH_S`` back. What replay needs of those rows is only
# the sensor columns (``analog_signals``): the slices keep them (8 bytes a row and sensor) and
# the replay check runs over them and the frame together, as over one longer frame.


def replay_columns(frame: SignalFrame) -> dict[str, np.ndarray]:
    """The columns of ``frame`` the replay check reads (sensors; see ``analog_signals``)."""
    return {name: frame.columns[name] for name, spec in frame.specs.items()
            if name in frame.columns and spec.table == "IR" and spec.type != "bit"
            and name != "heartbeat"}


def check_replay_after(ctx: CheckContext, past_t: np.ndarray, past: Mapping[str, np.ndarray],
                       specs: Mapping[str, RegisterSpec]) -> list[Incident]:
    """``check_replay`` over the rows ``past_t`` (the grid rows just before the frame, with the
    sensor columns ``past``) and the frame, as over one frame; incidents in the frame's rows
    (one that began in the past starts at the frame's first row, its residual cut to match)."""
    n_past = len(past_t)
    if n_past == 0:
        return check_replay(ctx)
    frame = ctx.frame
    now = replay_columns(frame)
    names = [*now, *(name for name in past if name not in now)]
    columns: dict[str, np.ndarray] = {}
    for name in names:
        before = past.get(name)
        if before is None:
            before = np.full(n_past, np.nan)
        after = now.get(name)
        if after is None:  # no sample since: its last value is held on
            after = np.full(len(frame.t), before[-1])
        columns[name] = np.concatenate((before, after))
    longer = SignalFrame(np.concatenate((past_t, frame.t)), frame.dt, columns, {},
                         {name: frame.specs.get(name) or specs[name] for name in names},
                         frame.source)
    out: list[Incident] = []
    for inc in check_replay(replace(ctx, frame=longer, states=np.zeros(len(longer.t), dtype=np.int8))):
        if inc.end < n_past:
            continue
        start = max(0, inc.start - n_past)
        residual = inc.residual
        if residual is not None and inc.start < n_past:
            residual = residual[n_past - inc.start:]
        out.append(replace(inc, start=start, end=inc.end - n_past,
                           detect=max(start, inc.detect - n_past), residual=residual))
    return out
