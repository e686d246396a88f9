"""plc-restart: an unknown host on the crane LAN sends Modbus diagnostics restart commands.

From 10.20.7.66 a pymodbus client sends FC 8 sub-function 1 (restart communications
option) to the PLC twice, 2 s apart.
"""

from __future__ import annotations

from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def act(lab: Lab, until: float) -> None:
    lab.run_part("rogue", "parts.modbus_tool", "restart", "--count", "2", name="modbus-restart")


SCENARIO = Scenario(
    name="plc-restart",
    summary="an unknown host sends Modbus FC 8/1 restart-communications to the PLC",
    extra_hosts=("rogue",),
    attacks=(AttackPlan("diagnostics-restart", "plc-control", ("T0816",), "10.20.7.66",
                        "10.20.7.10:502", "FC 8 sub-function 1 restart communications, twice"),),
    act=act,
)
