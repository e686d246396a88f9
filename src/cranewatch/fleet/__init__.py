"""Crane registry and life-cycle state machine with an audit trail."""

from cranewatch.fleet.fleetfile import COMPONENT_KINDS, load_fleet, parse_component
from cranewatch.fleet.lifecycle import NEXT, STATES, check_transition
from cranewatch.fleet.registry import (
    ImportResult,
    current_user,
    import_fleet,
    register,
    require_crane,
    transition,
)

__all__ = [
    "COMPONENT_KINDS",
    "NEXT",
    "STATES",
    "ImportResult",
    "check_transition",
    "current_user",
    "import_fleet",
    "load_fleet",
    "parse_component",
    "register",
    "require_crane",
    "transition",
]
