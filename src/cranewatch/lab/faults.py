"""Compromised-PLC behaviours: what a tampered PLC reports instead of the truth.

Pure: a ``Tamper`` takes the honest process image of one cycle and the wall-clock time and
returns what the PLC serves. Outside its window it passes the image through unchanged.

- ``false-load``: hoist_load reads 0 while torque keeps showing the real load.
- ``wind-freeze``: wind_speed_2 sticks at its value when the fault starts.
- ``replay``: sensor registers (IR 1–11) and status bits repeat the window just before the
  fault, cycle by cycle; the heartbeat keeps counting, as a careful attacker would do.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cranewatch.lab.physics import ProcessImage

__all__ = ["FAULTS", "Tamper"]

FAULTS = ("false-load", "wind-freeze", "replay")
HOIST_LOAD, WIND_SPEED_2 = 1, 10


@dataclass
class Tamper:
    """A fault active from ``start`` to ``end`` (epoch seconds)."""

    fault: str
    start: float
    end: float
    replay_cycles: int = 100  # how far back a replay reaches: 10 s of cycles
    _history: deque[ProcessImage] = field(init=False)
    _frozen: int | None = field(init=False, default=None)
    _replayed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown PLC fault {self.fault!r}; known: {', '.join(FAULTS)}")
        self._history = deque(maxlen=self.replay_cycles)

    def apply(self, image: ProcessImage, now: float) -> ProcessImage:
        active = self.start <= now < self.end
        if not active:
            if now < self.start:
                self._history.append(image)
            return image
        ir = list(image.ir)
        di = image.di
        if self.fault == "false-load":
            ir[HOIST_LOAD] = 0
        elif self.fault == "wind-freeze":
            if self._frozen is None:
                self._frozen = ir[WIND_SPEED_2]
            ir[WIND_SPEED_2] = self._frozen
        elif self._history:
            recorded = self._history[self._replayed % len(self._history)]
            self._replayed += 1
            ir = [ir[0], *recorded.ir[1:]]
            di = recorded.di
        return ProcessImage(tuple(ir), di)
