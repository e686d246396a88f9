"""The reference crane STS-07's register map (crane-reference.md), for the lab, the demo,
the simulator and tests. Library code knows no crane: it takes a map from a profile."""

from __future__ import annotations

from cranewatch.process.checks import CraneLimits
from cranewatch.process.signals import RegisterMap, RegisterSpec


def _ir(address: int, name: str, type_: str, scale: float, unit: str, low: float, high: float,
        safety: bool = False) -> RegisterSpec:
    return RegisterSpec("IR", address, name, type_, scale, unit, low, high, safety)


# The reference crane STS-07 (crane-reference.md), in engineering units.
STS07_REGISTER_MAP = RegisterMap(
    (
        _ir(0, "heartbeat", "uint16", 1.0, "count", 0, 65535),
        _ir(1, "hoist_load", "uint16", 0.1, "t", 0, 65.0, safety=True),
        _ir(2, "hoist_height", "int16", 0.01, "m", -20.0, 45.0),
        _ir(3, "hoist_speed", "int16", 0.01, "m/s", -3.0, 3.0),
        _ir(4, "hoist_torque", "int16", 0.1, "%", -150.0, 150.0),
        _ir(5, "trolley_position", "uint16", 0.01, "m", 0, 90.0),
        _ir(6, "trolley_speed", "int16", 0.01, "m/s", -4.0, 4.0),
        _ir(7, "gantry_position", "uint16", 0.1, "m", 0, 1200.0),
        _ir(8, "gantry_speed", "int16", 0.01, "m/s", -0.75, 0.75),
        _ir(9, "wind_speed_1", "uint16", 0.1, "m/s", 0, 40.0, safety=True),
        _ir(10, "wind_speed_2", "uint16", 0.1, "m/s", 0, 40.0, safety=True),
        _ir(11, "sway_angle", "int16", 0.01, "deg", -3.0, 3.0),
        RegisterSpec("DI", 0, "twistlocks_locked", "bit", safety=True),
        RegisterSpec("DI", 1, "spreader_landed", "bit", safety=True),
        RegisterSpec("DI", 2, "overload_trip", "bit", safety=True),
        RegisterSpec("DI", 3, "wind_stop", "bit", safety=True),
        RegisterSpec("DI", 4, "storm_pins_engaged", "bit", safety=True),
        RegisterSpec("DI", 5, "estop_active", "bit", safety=True),
        RegisterSpec("DI", 6, "anti_collision_stop", "bit", safety=True),
        RegisterSpec("HR", 0, "overload_limit", "uint16", 0.1, "t", 0, 71.5, safety=True),
        RegisterSpec("HR", 1, "wind_stop_limit", "uint16", 0.1, "m/s", 0, 20.0, safety=True),
        RegisterSpec("HR", 2, "hoist_speed_limit", "uint16", 1.0, "%", 0, 100.0, safety=True),
        RegisterSpec("HR", 3, "trolley_speed_limit", "uint16", 1.0, "%", 0, 100.0, safety=True),
        RegisterSpec("CO", 0, "safety_bypass", "bit", safety=True),
        RegisterSpec("CO", 1, "fault_reset", "bit"),
    ),
    unit_id=1,
)


# STS-07's configured limits (its profile's ranges): rated load, trip limits, speed limits.
STS07_LIMITS = CraneLimits(rated_load=65.0, overload_limit=71.5, wind_stop_limit=20.0,
                           hoist_speed_limit=100.0, trolley_speed_limit=100.0)
