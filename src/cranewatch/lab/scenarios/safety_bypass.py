"""safety-bypass: the EWS, outside any maintenance window, disables the crane's interlocks.

From 10.20.0.50 a pymodbus client reads the setpoints, writes safety_bypass=1 (FC 5 to
coil 0) and raises overload_limit from 71.5 t to 90.0 t (FC 6 to HR 0). The PLC honours
both: the overload and wind trips are disabled from then on.
"""

from __future__ import annotations

from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def act(lab: Lab, until: float) -> None:
    lab.run_part("ews", "parts.modbus_tool", "bypass", "--overload-limit", "900",
                 name="modbus-bypass")


SCENARIO = Scenario(
    name="safety-bypass",
    summary="the EWS outside a maintenance window writes safety_bypass=1 and raises overload_limit",
    attacks=(AttackPlan("safety-bypass-write", "safety-override", ("T0836", "T0855", "T0880"),
                        "10.20.0.50", "10.20.7.10:502",
                        "FC 5 coil 0 (safety_bypass)=1 and FC 6 HR 0 (overload_limit)=900",
                        signal="safety_bypass,overload_limit"),),
    act=act,
)
