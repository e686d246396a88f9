"""The lab's scenarios: one module each, ``SCENARIO`` in it, the docstring says what it shows.

``SCENARIO_MODULES`` lists them in the order `cranewatch lab list` shows; adding a
scenario is one module plus one line here.
"""

from __future__ import annotations

import importlib

from cranewatch.errors import UsageError
from cranewatch.lab.scenario import Scenario

__all__ = ["SCENARIO_MODULES", "all_scenarios", "get"]

SCENARIO_MODULES: tuple[str, ...] = (
    "normal",
    "normal_2",
    "remote_ssh",
    "vendor_vnc",
    "ocr_exfil",
    "dns_exfil",
    "beacon",
    "safety_bypass",
    "false_load",
    "wind_freeze",
    "replay",
    "plc_restart",
    "recon",
    "rogue_master",
)


def _load(module: str) -> Scenario:
    scenario = importlib.import_module(f"cranewatch.lab.scenarios.{module}").SCENARIO
    assert isinstance(scenario, Scenario)
    return scenario


def all_scenarios() -> list[Scenario]:
    return [_load(module) for module in SCENARIO_MODULES]


def get(name: str) -> Scenario:
    module = name.replace("-", "_")
    if module not in SCENARIO_MODULES:
        known = ", ".join(m.replace("_", "-") for m in SCENARIO_MODULES)
        raise UsageError(f"unknown lab scenario {name!r}; known: {known}")
    return _load(module)
