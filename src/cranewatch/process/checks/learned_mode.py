"""The learned mode as a check: relations learned from the clean capture, CUSUM on residuals.

Runs only when the process baseline carries a learned model (a clean capture of ten minutes or
more); the signal accused is the one whose CUSUM stands highest over its threshold.
"""

from __future__ import annotations

import numpy as np

from cranewatch.model import Severity
from cranewatch.process.checks import CheckContext, Incident, persistent


def check_learned(ctx: CheckContext) -> list[Incident]:
    model = ctx.baseline.learned if ctx.baseline is not None else None
    frame = ctx.frame
    if model is None or not all(n in frame for n in model.names):
        return []
    step = max(1, round(86400.0 / model.samples_per_day / frame.dt))
    rows = np.arange(0, len(frame.t), step)
    matrix = np.column_stack([frame[n][rows] for n in model.names])
    matrix = np.where(np.isnan(matrix), model.mean, matrix)
    ratio = model.statistic(matrix) / model.threshold
    alarm = (ratio > 1.0).any(axis=1)
    out = []
    for s, e, d in persistent(alarm, 1, merge_gap=2):
        worst = int(np.argmax(ratio[s: e + 1].max(axis=0)))
        # Onset: where the accused signal's CUSUM last left zero before the alarm.
        before = np.flatnonzero(ratio[: s + 1, worst] <= 0)
        onset = int(before[-1]) + 1 if len(before) else 0
        onset = min(onset, s)
        name = model.names[worst]
        out.append(Incident(
            rule="process-learned", category="false-reading", severity=Severity.MEDIUM,
            title=f"{name} departs from the relations learned on the clean capture",
            signal=name, related=tuple(n for n in model.names if n != name)[:4],
            relation=f"{name} ≈ its regression on the other signals (CUSUM, drift "
                     f"{model.drift:g} σ, threshold for {model.target_per_day:g} false alarms "
                     "per day)",
            start=int(rows[onset]), end=int(rows[e]), detect=int(rows[d]),
            residual=ratio[onset: e + 1, worst] * model.threshold[worst],
            threshold=float(model.threshold[worst]),
            remedy=f"Compare {name} with an independent reading; the learned relations say it "
                   "no longer fits the rest of the crane.",
        ))
    return out
