"""The crane state machine on the lab physics: hoisting loaded/empty, trolleying, landed,
locked by storm pins, tripped, maintenance; flickers shorter than the dwell are smoothed."""

from __future__ import annotations

import numpy as np

from cranewatch.lab.physics import Panel
from cranewatch.process.signals import SignalFrame
from cranewatch.process.simulate import simulate
from cranewatch.process.state import CraneState, crane_states

T0 = 1_700_000_000.0


def test_states_follow_a_container_move() -> None:
    frame = simulate(60, seed=6, start=T0)  # seed 6: lifts 31 t at ~7 s, sets down at ~38 s
    states = crane_states(frame)

    def at(seconds: float) -> CraneState:
        return CraneState(int(states[frame.index_at(T0 + seconds)]))

    assert at(2) is CraneState.HOISTING_EMPTY  # lowering onto the first pick
    assert at(5) is CraneState.LANDED
    assert at(9) is CraneState.HOISTING_LOADED
    assert at(30) is CraneState.HOISTING_LOADED
    assert at(44) is CraneState.HOISTING_EMPTY
    seen = {CraneState(int(s)) for s in np.unique(states)}
    assert CraneState.TROLLEYING in seen


def test_storm_pins_lock_and_maintenance_wins() -> None:
    frame = simulate(60, seed=6, start=T0, panel=lambda now: Panel(storm_pins=now >= T0 + 20))
    states = crane_states(frame, maintenance=((T0 + 40, T0 + 50),))
    assert states[frame.index_at(T0 + 30)] == CraneState.LOCKED
    assert states[frame.index_at(T0 + 45)] == CraneState.MAINTENANCE
    assert states[frame.index_at(T0 + 55)] == CraneState.LOCKED


def test_trip_and_flicker() -> None:
    t = T0 + 0.1 * np.arange(100)
    speed = np.zeros(100)
    speed[10:40] = 1.0
    speed[60] = 1.0  # one noisy sample: not hoisting
    trip = np.zeros(100)
    trip[80:] = 1
    frame = SignalFrame.from_columns(t, {"hoist_speed": speed, "hoist_load": np.zeros(100),
                                         "overload_trip": trip})
    states = crane_states(frame)
    assert states[20] == CraneState.HOISTING_EMPTY
    assert states[60] == CraneState.IDLE
    assert states[90] == CraneState.TRIPPED
