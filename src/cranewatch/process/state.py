"""The crane's operating state at every grid instant, derived from its own signals.

Checks ask the state before they judge a value: a frozen trolley position is normal when the
crane is parked, not while the trolley drive runs. States, highest priority first:

- ``maintenance``: inside an announced maintenance window (from the profile);
- ``tripped``: an overload trip, wind stop, e-stop or anti-collision stop is active;
- ``locked``: storm pins engaged (crane secured, nothing may move);
- ``hoisting_loaded`` / ``hoisting_empty``: the hoist moves, with or without a load;
- ``trolleying``, ``gantry``: the trolley or the whole crane travels;
- ``landed``: the spreader sits on a container or the quay;
- ``idle``: none of the above.

A state must hold for ``min_dwell`` seconds before it replaces the previous one, so one noisy
speed sample does not flip the crane between hoisting and idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from cranewatch.process.signals import SignalFrame


class CraneState(IntEnum):
    IDLE = 0
    LANDED = 1
    GANTRY = 2
    TROLLEYING = 3
    HOISTING_EMPTY = 4
    HOISTING_LOADED = 5
    LOCKED = 6
    TRIPPED = 7
    MAINTENANCE = 8

    def __str__(self) -> str:
        return self.name.lower()


MOVING_STATES = frozenset({CraneState.GANTRY, CraneState.TROLLEYING, CraneState.HOISTING_EMPTY,
                           CraneState.HOISTING_LOADED})


@dataclass(frozen=True, slots=True)
class StateThresholds:
    """What counts as moving and as loaded (engineering units)."""

    hoist_moving: float = 0.05  # m/s
    trolley_moving: float = 0.05  # m/s
    gantry_moving: float = 0.03  # m/s
    loaded: float = 2.0  # t: below this the spreader is empty (it is tared out)
    min_dwell: float = 0.3  # s


def _speed(frame: SignalFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.zeros(len(frame.t))
    return np.abs(frame.filled(name))


def raw_states(frame: SignalFrame, maintenance: Sequence[tuple[float, float]] = (),
               limits: StateThresholds = StateThresholds()) -> np.ndarray:
    """Per-instant state from the signals, before dwell smoothing (int8 of ``CraneState``)."""
    n = len(frame.t)
    state = np.full(n, CraneState.IDLE, dtype=np.int8)
    # Assign from lowest to highest priority so the higher one wins.
    state[frame.bit("spreader_landed")] = CraneState.LANDED
    state[_speed(frame, "gantry_speed") > limits.gantry_moving] = CraneState.GANTRY
    state[_speed(frame, "trolley_speed") > limits.trolley_moving] = CraneState.TROLLEYING
    hoisting = _speed(frame, "hoist_speed") > limits.hoist_moving
    load = frame.filled("hoist_load") if "hoist_load" in frame else np.zeros(n)
    state[hoisting & (load < limits.loaded)] = CraneState.HOISTING_EMPTY
    state[hoisting & (load >= limits.loaded)] = CraneState.HOISTING_LOADED
    state[frame.bit("storm_pins_engaged")] = CraneState.LOCKED
    tripped = (frame.bit("overload_trip") | frame.bit("wind_stop") | frame.bit("estop_active")
               | frame.bit("anti_collision_stop"))
    state[tripped] = CraneState.TRIPPED
    for start, end in maintenance:
        state[(frame.t >= start) & (frame.t <= end)] = CraneState.MAINTENANCE
    return state


def crane_states(frame: SignalFrame, maintenance: Sequence[tuple[float, float]] = (),
                 limits: StateThresholds = StateThresholds()) -> np.ndarray:
    """The crane's state at each grid instant, with short flickers (< ``min_dwell``) removed."""
    state = raw_states(frame, maintenance, limits)
    dwell = max(1, round(limits.min_dwell / frame.dt)) if len(state) else 1
    if dwell <= 1 or len(state) < 2:
        return state
    # Runs of equal state shorter than the dwell take the state of the run before them;
    # safety states (tripped, locked, maintenance) are never smoothed away.
    change = np.flatnonzero(np.diff(state)) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [len(state)])))
    run_state = state[starts]
    short = (lengths < dwell) & (run_state < CraneState.LOCKED)
    short[0] = False
    keep = ~short
    # Each short run inherits the state of the nearest kept run before it.
    kept_idx = np.maximum.accumulate(np.where(keep, np.arange(len(starts)), 0))
    return np.repeat(run_state[kept_idx], lengths).astype(np.int8)


def state_names(states: np.ndarray) -> list[str]:
    return [str(CraneState(int(s))) for s in states]
