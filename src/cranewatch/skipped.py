"""What an analysis could not check, and why: said in the output, never left silent.

No crane is built in (issue #15), so what a run can judge depends on what it was given. The
process checks need a register map (which registers are which signals) and, for the limit
checks, the limits (``CraneLimits.missing``); the detectors that judge what is *new* (a host,
a master, a conversation, a gateway) need an inventory — a profile or a baseline — and say so
through their ``judges(ctx)``; the crane-zone rules need the crane's zone (a profile's
``[zones] crane``, or a baseline's crane networks), without which any private address counts
as the crane's.

``skipped_checks(sinks)`` reads this off the sinks a run was built with, so it says exactly
what that run did not do. Each ``SkippedCheck`` is a line of the text report ("Not checked")
and a ``"type": "skipped"`` record of the JSON lines (``data/schemas/skipped.schema.json``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The point whose ``max`` gives each limit (``process.engine.config_from_profile``) and the
# checks that are not run without it.
LIMIT_POINTS = {
    "rated_load": ("hoist_load", "the hoist load/torque relation (without a learned fit)"),
    "overload_limit": ("overload_limit", "overload without trip, overload limit raised"),
    "wind_stop_limit": ("wind_stop_limit", "wind without stop, wind-stop limit raised"),
    "hoist_speed_limit": ("hoist_speed_limit", "hoist speed limit raised"),
    "trolley_speed_limit": ("trolley_speed_limit", "trolley speed limit raised"),
}


@dataclass(frozen=True, slots=True)
class SkippedCheck:
    """Checks a run did not do (``partly``: some of what they judge), why, and what they need."""

    checks: str  # "process", "process-limits", "crane-zone", or a detector's name
    reason: str
    needs: str
    missing: tuple[str, ...] = ()
    partly: bool = False

    def __str__(self) -> str:
        what = f"{self.checks} (partly)" if self.partly else self.checks
        return f"{what}: {self.reason}; needs {self.needs}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "skipped", "checks": self.checks, "partly": self.partly,
                "reason": self.reason, "needs": self.needs, "missing": list(self.missing)}


def skipped_checks(sinks: Sequence[object]) -> tuple[SkippedCheck, ...]:
    """What the run of these sinks will not check (in report order)."""
    from cranewatch.detect.engine import DetectionSink
    from cranewatch.process.engine import ProcessSink

    detection = next((s for s in sinks if isinstance(s, DetectionSink)), None)
    process = next((s for s in sinks if isinstance(s, ProcessSink)), None)
    out: list[SkippedCheck] = []
    if detection is not None or process is not None:
        out += _process(process)
    if detection is not None:
        out += _detectors(detection)
    return tuple(out)


def _process(sink: Any) -> list[SkippedCheck]:
    profile = getattr(sink, "profile", None) if sink is not None else None
    if sink is None or not getattr(profile, "registers", ()):
        reason = ("the profile has no register map" if profile is not None
                  else "no register map (no --profile)")
        return [SkippedCheck("process", reason + ": which registers are which crane signals is "
                             "unknown, so no process check ran",
                             "a --profile with [[registers]] (cranewatch profile draft proposes one)")]
    from cranewatch.process.engine import config_from_profile

    missing = config_from_profile(profile).limits.missing()
    if not missing:
        return []
    checks = "; ".join(LIMIT_POINTS[m][1] for m in missing)
    points = ", ".join(LIMIT_POINTS[m][0] for m in missing)
    return [SkippedCheck("process-limits", f"the profile gives no {', '.join(missing)}: not checked: {checks}",
                         f"max on the register points {points}", missing=missing)]


def _detectors(sink: Any) -> list[SkippedCheck]:
    from cranewatch.detect.engine import judged_types

    ctx = sink.ctx
    out: list[SkippedCheck] = []
    if ctx.profile is None and (ctx.baseline is None or not ctx.baseline.crane_networks):
        out.append(SkippedCheck(
            "crane-zone", "no crane zone: every private address was judged as the crane LAN's, "
            "so egress, remote access and data leaks are judged by public versus private addresses",
            "a --profile ([zones] crane) or a --baseline with the crane's hosts"))
    for detector in sink.detectors:
        judged = set(judged_types(detector, ctx))
        if judged >= set(detector.accepts):
            continue
        doc = inspect.getdoc(getattr(detector, "judges", None)) or "Not judged without a profile or baseline."
        reason = " ".join(doc.split("\n\n")[0].split()).rstrip(".")
        if reason[1:2].islower():  # "Nothing ..." reads on after the name; "TLS ..." stays
            reason = reason[:1].lower() + reason[1:]
        out.append(SkippedCheck(str(detector.name), reason,
                                _needs(detector), partly=bool(judged)))
    return out


def _needs(detector: Any) -> str:
    """Which of a profile or a baseline would let ``detector`` judge everything it accepts."""
    from cranewatch.baseline import Baseline
    from cranewatch.detect.base import Context
    from cranewatch.detect.engine import judged_types
    from cranewatch.profile import Allowance, CraneProfile

    accepts = set(detector.accepts)
    a_profile = CraneProfile("?", allowed=(Allowance("*", "*", "any", None),))
    by_profile = set(judged_types(detector, Context(profile=a_profile))) >= accepts
    by_baseline = set(judged_types(detector, Context(baseline=Baseline()))) >= accepts
    if by_profile and not by_baseline:
        return "a --profile"
    if by_baseline and not by_profile:
        return "a --baseline"
    return "a --profile or a --baseline"
