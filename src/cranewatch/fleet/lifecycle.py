"""The crane life cycle as data: which step may follow which, and why a refused step is refused.

delivered → quarantined → under-analysis → cleared | rejected → in-service → retired.
Pure rules, no I/O: ``check_transition`` either returns or raises ``StateError`` with an
explanation a port engineer can act on.
"""

from __future__ import annotations

from cranewatch.errors import StateError

STATES: tuple[str, ...] = (
    "delivered",
    "quarantined",
    "under-analysis",
    "cleared",
    "rejected",
    "in-service",
    "retired",
)

# The allowed next states. Some steps back are allowed on purpose: a rejected crane goes back
# to quarantine after the vendor's fix, a cleared crane after a late software change, and a
# crane in service when an incident needs it isolated again.
NEXT: dict[str, tuple[str, ...]] = {
    "delivered": ("quarantined",),
    "quarantined": ("under-analysis",),
    "under-analysis": ("cleared", "rejected"),
    "cleared": ("in-service", "quarantined"),
    "rejected": ("quarantined", "retired"),
    "in-service": ("quarantined", "retired"),
    "retired": (),
}

# Only the gate sets these, from the recorded evidence; a person may still reject by hand.
GATE_ONLY = frozenset({"cleared"})


def check_state(name: str) -> str:
    if name not in STATES:
        raise StateError(f"unknown life-cycle state {name!r} (one of: {', '.join(STATES)})")
    return name


def check_transition(
    crane: str, current: str, target: str, *, by_gate: bool = False, cleared_by_gate: bool = False
) -> None:
    """Refuse a step the life cycle does not allow, saying why and what is possible instead.

    ``by_gate``: the step is made by ``cranewatch gate``. ``cleared_by_gate``: the crane's
    latest recorded gate decision is ``cleared`` (needed for in-service).
    """
    check_state(current)
    check_state(target)
    options = ", ".join(NEXT[current]) or "nothing"
    if target == current:
        raise StateError(f"{crane} is already {current}")
    if current == "retired":
        raise StateError(f"{crane} is retired; retirement is final")
    if target == "in-service" and (current != "cleared" or not cleared_by_gate):
        raise StateError(
            f"in-service needs a clearance from `cranewatch gate` ({crane} is {current}; "
            f"run `cranewatch gate {crane}` once the analysis evidence is recorded)"
        )
    if target in GATE_ONLY and not by_gate:
        raise StateError(
            f"{target} is decided by `cranewatch gate {crane}` from the recorded evidence, not set by hand"
        )
    if target in ("cleared", "rejected") and current != "under-analysis":
        raise StateError(
            f"{crane} is {current}: a crane is cleared or rejected after analysis in quarantine "
            f"(from {current} it can go to: {options})"
        )
    if target == "under-analysis" and current != "quarantined":
        raise StateError(
            f"analysis happens in quarantine: quarantine {crane} first (from {current} it can go to: {options})"
        )
    if target not in NEXT[current]:
        raise StateError(f"{crane} cannot go from {current} to {target} (from {current} it can go to: {options})")
