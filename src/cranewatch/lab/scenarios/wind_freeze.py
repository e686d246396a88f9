"""wind-freeze: one anemometer is stuck while the other keeps moving.

During the labelled window wind_speed_2 (IR 10) repeats the value it had when the fault
began while wind_speed_1 (IR 9) follows the gusts: a frozen sensor that would hide a storm.
"""

from cranewatch.lab.scenario import AttackPlan, Scenario

SCENARIO = Scenario(
    name="wind-freeze",
    summary="wind_speed_2 stuck at one value while wind_speed_1 keeps moving",
    plc_fault="wind-freeze",
    attacks=(AttackPlan("frozen-anemometer", "false-reading", ("T0856", "T0832"), "10.20.7.10",
                        "10.20.7.30", "wind_speed_2 frozen", signal="wind_speed_2"),),
)
