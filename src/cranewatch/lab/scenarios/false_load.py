"""false-load: the PLC reports hoist_load 0 while hoist_torque shows the real load.

A tampered PLC program zeroes input register 1 during the labelled window; the torque
(IR 4) still follows the container on the ropes, so the physical relation breaks.
"""

from cranewatch.lab.scenario import AttackPlan, Scenario

SCENARIO = Scenario(
    name="false-load",
    summary="the PLC reports hoist_load 0 while hoist_torque shows the real load",
    plc_fault="false-load",
    attacks=(AttackPlan("zeroed-load-cell", "false-reading", ("T0856", "T0832"), "10.20.7.10",
                        "10.20.7.30", "hoist_load reads 0 while torque follows the load",
                        signal="hoist_load"),),
)
