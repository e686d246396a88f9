"""Honest (and tampered) crane signal frames from the lab's physics model, without a network.

For tests and benchmarks: the lab's 10 Hz model of STS-07 (``cranewatch.lab.physics``) runs
cycle by cycle, a master "polls" every ``poll_cycles`` cycles, and the registers become a
``SignalFrame`` exactly as the register map reads them off the wire. ``setpoints`` and
``panel`` callbacks let a test write the PLC's holding registers and coils or press the
operator's buttons at given times; ``tamper`` applies one of the lab's compromised-PLC faults
(``cranewatch.lab.faults.Tamper``) to what the PLC serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from cranewatch.lab.faults import Tamper
from cranewatch.lab.physics import DT, Crane, Panel, ProcessImage, Setpoints
from cranewatch.process.signals import STS07_REGISTER_MAP, RegisterMap, SignalFrame

ImageHook = Callable[[float, ProcessImage], ProcessImage]
SETPOINT_NAMES = ("overload_limit", "wind_stop_limit", "hoist_speed_limit", "trolley_speed_limit")


def simulate(seconds: float, *, seed: int = 7, start: float = 1_700_000_000.0,
             poll_cycles: int = 2, setpoints: Callable[[float], Setpoints] | None = None,
             panel: Callable[[float], Panel] | None = None, tamper: Tamper | None = None,
             hook: ImageHook | None = None,
             register_map: RegisterMap = STS07_REGISTER_MAP) -> SignalFrame:
    """Run the crane for ``seconds`` and return what a master polling it would have read."""
    crane = Crane(seed=seed)
    cycles = round(seconds / DT)
    polls = (cycles + poll_cycles - 1) // poll_cycles
    ir = np.zeros((polls, 12), dtype=np.int64)
    di = np.zeros((polls, 7), dtype=np.int64)
    hr = np.zeros((polls, 4), dtype=np.int64)
    co = np.zeros((polls, 2), dtype=np.int64)
    t = np.zeros(polls)
    row = 0
    for cycle in range(cycles):
        now = start + cycle * DT
        sp = setpoints(now) if setpoints else Setpoints()
        image = crane.step(sp, panel(now) if panel else Panel())
        if tamper is not None:
            image = tamper.apply(image, now)
        if hook is not None:
            image = hook(now, image)
        if cycle % poll_cycles == 0:
            t[row] = now
            ir[row] = image.ir
            di[row] = image.di
            values = asdict(sp)
            hr[row] = [values[n] for n in SETPOINT_NAMES]
            co[row] = [int(sp.safety_bypass), int(sp.fault_reset)]
            row += 1
    columns: dict[str, np.ndarray] = {}
    for table, block in (("IR", ir), ("DI", di), ("HR", hr), ("CO", co)):
        for address in range(block.shape[1]):
            spec = register_map.lookup(table, address)
            if spec is not None:
                columns[spec.name] = spec.engineering(block[:, address])
    return SignalFrame.from_columns(t, columns, register_map, source="simulated")
