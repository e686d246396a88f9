"""A progress bar on stderr for long analyses: silent for short runs and non-terminals."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressBar:
    """Call with (done, total) as work advances; ``close()`` clears the line.

    Nothing is drawn before ``delay`` seconds have passed, so runs shorter than that print
    nothing; redraws are limited to ``rate`` per second so the bar costs nothing measurable.
    """

    def __init__(self, stream: TextIO | None = None, *, label: str = "analysing",
                 delay: float = 1.0, rate: float = 8.0, width: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.delay = delay
        self.interval = 1.0 / rate
        self.width = width
        self._clock = clock
        self._start = self._now()
        self._last_draw = float("-inf")
        self.drawn = False

    def _now(self) -> float:
        return float(self._clock())

    def __call__(self, done: int, total: int) -> None:
        now = self._now()
        elapsed = now - self._start
        if elapsed < self.delay or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        fraction = min(1.0, done / total) if total > 0 else 0.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}% "
                          f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB {rate:,.1f} MB/s {elapsed:,.0f} s")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * (self.width + 70) + "\r")
            self.stream.flush()
            self.drawn = False


def wants_progress(stream: TextIO, forced: bool) -> bool:
    """Draw only on a terminal, unless asked for explicitly."""
    if forced:
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
