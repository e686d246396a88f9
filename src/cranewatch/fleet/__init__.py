"""Crane registry and life-cycle state machine with an audit trail."""

from cranewatch.fleet.fleetfile import COMPONENT_KINDS, load_fleet, parse_component
from cranewatch.fleet.isolation import inservice_policy, quarantine_crane
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
    "inservice_policy",
    "load_fleet",
    "parse_component",
    "quarantine_crane",
    "register",
    "require_crane",
    "transition",
]
