"""Two masters, one register, two answers: a reading spoofed on one master's path.

When the CMS and the OCR both poll ``spreader_landed`` they must read the same bit (and the same
analog value within one poll's change), unless the value changed between their two polls. A
man-in-the-middle that rewrites the PLC's answers to one master only leaves exactly this trace.
Judged on the raw samples (``Signal``), not the grid: each sample of one master is compared with
the other master's samples just before and after it; when those two agree with each other and
the sample differs from both, the masters disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, locate, persistent
from cranewatch.process.signals import Signal

MAX_GAP_S = 0.6  # the other master's bracketing samples must be this close
MIN_DISAGREEING = 3  # consecutive samples
# The signal's typical poll-to-poll change is measured around each sample: over the blocks of
# this many seconds (on the epoch, not on the capture's start) holding it and its two
# neighbours. Local, so a check of any stretch holding those blocks (a slice of the run with
# its look-back, ``process.slices``) judges each sample exactly as the whole run does.
NOISE_BLOCK_S = 5.0


def _disagreements(signal: Signal, one: int, other: int) -> tuple[np.ndarray, np.ndarray]:
    """Times of ``one``'s samples that contradict ``other``'s stable readings, and residuals."""
    a = signal.origin == one
    b = signal.origin == other
    ts_a, va = signal.ts[a], signal.values[a]
    ts_b, vb = signal.ts[b], signal.values[b]
    if len(ts_a) == 0 or len(ts_b) < 2:
        return np.zeros(0), np.zeros(0)
    after = np.searchsorted(ts_b, ts_a, side="left")
    ok = (after > 0) & (after < len(ts_b))
    after = np.clip(after, 1, len(ts_b) - 1)
    before = after - 1
    close = ok & (ts_a - ts_b[before] <= MAX_GAP_S) & (ts_b[after] - ts_a <= MAX_GAP_S)
    stable = vb[before] == vb[after]
    tolerance: float | np.ndarray = 0.0  # bits: exactly
    if signal.spec.type != "bit":
        # Sensor noise: two reads of different PLC cycles differ by about what one master's
        # consecutive reads differ by (there and then).
        noise = local_noise(ts_b, vb, ts_a)
        tolerance = 2.0 * signal.spec.scale + 3.0 * noise
    residual = va - vb[before]
    bad = close & stable & (np.abs(residual) > tolerance)
    return bad, residual


def local_noise(ts: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each instant of ``at``: the median of the non-zero changes between consecutive
    ``values`` (each dated by its later sample) in the ``NOISE_BLOCK_S`` block of the epoch
    holding the instant and the blocks either side; 0 where there is none."""
    steps = np.abs(np.diff(values))
    keep = steps > 0
    out = np.zeros(len(at))
    if not keep.any() or not len(at):
        return out
    steps = steps[keep]
    blocks = np.floor(ts[1:][keep] / NOISE_BLOCK_S).astype(np.int64)
    # every change counts for its own block and both neighbours (the centres it is near)
    centre = np.concatenate((blocks - 1, blocks, blocks + 1))
    pooled = np.concatenate((steps, steps, steps))
    order = np.lexsort((pooled, centre))
    centre, pooled = centre[order], pooled[order]
    wanted = np.floor(at / NOISE_BLOCK_S).astype(np.int64)
    lo = np.searchsorted(centre, wanted, side="left")
    hi = np.searchsorted(centre, wanted, side="right")
    n = hi - lo
    has = n > 0
    # np.median: the middle value, or the mean of the two middle values of an even count
    left = lo[has] + (n[has] - 1) // 2
    right = lo[has] + n[has] // 2
    out[has] = (pooled[left] + pooled[right]) / 2.0
    return out


def check_masters_disagree(ctx: CheckContext) -> list[Incident]:
    out: list[Incident] = []
    frame = ctx.frame
    for name, signal in ctx.signals.items():
        readers = [i for i, o in enumerate(signal.origins) if o.startswith("read by ")]
        if len(readers) < 2 or name not in frame:
            continue
        for one in readers:
            for other in readers:
                if one == other:
                    continue
                bad, residual = _disagreements(signal, one, other)
                if not len(bad) or not bad.any():
                    continue
                ts = signal.ts[signal.origin == one]
                for s, e, d in persistent(bad, MIN_DISAGREEING):
                    start, end, detect = (frame.index_at(float(ts[i])) for i in (s, e, d))
                    who = signal.origins[one].removeprefix("read by ")
                    peer = signal.origins[other].removeprefix("read by ")
                    out.append(Incident(
                        rule="process-masters-disagree", category="false-reading",
                        severity=Severity.HIGH,
                        title=f"{who} reads {name} differently from {peer}",
                        signal=name, related=(),
                        relation=f"every master reads the same {name} (within one poll's "
                                 "change)",
                        start=start, end=max(end, start), detect=max(detect, start),
                        residual=residual[s: e + 1], threshold=0.0,
                        extra={"master": who, "other_master": peer,
                               "frames": _frames(ctx, signal, one, s, e)},
                        remedy=f"The PLC's answers to {who} are altered on the way (or {who}'s "
                               "readings are): look for ARP spoofing or a device in the path.",
                    ))
    return out


def _frames(ctx: CheckContext, signal: Signal, reader: int, s: int, e: int) -> list[Any]:
    """The frames of one master's disagreeing reads (the first 20): numbers, or where the
    segment's rotated files split them, ``{"source", "frames"}`` per file."""
    mine = signal.origin == reader
    frames = signal.frames[mine][s: e + 1]
    if ctx.segment is None or len(ctx.segment.files) == 1:
        return frames[:20].tolist()
    located = locate(ctx.segment, signal.ts[mine][s: e + 1], frames, limit=20)
    return [{"source": path, "frames": numbers} for path, numbers in located]
