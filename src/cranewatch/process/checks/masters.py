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
    if signal.spec.type == "bit":
        tolerance = 0.0
    else:
        # Sensor noise: two reads of different PLC cycles differ by about what one master's
        # consecutive reads differ by.
        steps = np.abs(np.diff(vb))
        steps = steps[steps > 0]
        noise = float(np.median(steps)) if len(steps) else 0.0
        tolerance = 2.0 * signal.spec.scale + 3.0 * noise
    residual = va - vb[before]
    bad = close & stable & (np.abs(residual) > tolerance)
    return bad, residual


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
