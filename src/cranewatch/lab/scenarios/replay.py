"""replay: the PLC serves sensor values recorded in an earlier window.

During the labelled window input registers 1–11 and the status bits repeat, cycle by
cycle, the last 10 s before the window (the heartbeat keeps counting): the operator sees a
crane that is not the one moving.
"""

from cranewatch.lab.scenario import AttackPlan, Scenario

SCENARIO = Scenario(
    name="replay",
    summary="sensor registers replay the 10 s before the window while the heartbeat advances",
    plc_fault="replay",
    attacks=(AttackPlan("sensor-replay", "false-reading", ("T0856", "T0832"), "10.20.7.10",
                        "10.20.7.30", "IR 1-11 and DI 0-6 repeat the preceding 10 s",
                        signal="hoist_load,hoist_height,hoist_speed,hoist_torque,trolley_position,"
                               "trolley_speed,gantry_position,gantry_speed,wind_speed_1,"
                               "wind_speed_2,sway_angle"),),
)
