"""rogue-master: a new host polls the PLC and writes a setpoint.

From 10.20.7.66 a pymodbus client reads IR 0–11 and HR 0–3 every second, raises
hoist_speed_limit to 120 % (FC 6 to HR 2) and sets it back to 100 % when it leaves.
"""

from __future__ import annotations

from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def act(lab: Lab, until: float) -> None:
    lab.run_part("rogue", "parts.modbus_tool", "rogue", "--until", f"{until:.3f}",
                 name="modbus-rogue")


SCENARIO = Scenario(
    name="rogue-master",
    summary="a new host polls the PLC every second and writes hoist_speed_limit",
    extra_hosts=("rogue",),
    attacks=(AttackPlan("new-master", "rogue-master", ("T0848", "T0855"), "10.20.7.66",
                        "10.20.7.10:502", "polls IR/HR at 1 Hz, writes HR 2 = 120 then 100",
                        signal="hoist_speed_limit"),),
    act=act,
)
