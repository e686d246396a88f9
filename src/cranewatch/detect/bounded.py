"""Bounded summaries of facts that a detector judges only at the end (issue 13: flat memory).

A detector that kept every fact of a key (each callback of a client to a server, each probe of
a scanner) grew with the capture. ``Earliest`` keeps of them what the finding is made of:
how many there were, the first and last time, and the first ``MAX_FRAMES`` of them in time
order (the evidence ``base.Incident`` keeps), so that the finding built from the kept ones is
the one built from all of them. Facts arrive when their flow ends, not in start order: the
order kept is (ts, arrival), as a stable sort by ts of the whole list gives it.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cranewatch.detect.base import MAX_FRAMES, Incident, Incidents

_arrivals = itertools.count()  # one order for every summary: arrival


@dataclass(slots=True)
class Earliest:
    """Count, first/last time and the first facts in (ts, arrival) order of one key.

    ``framed`` holds the ``MAX_FRAMES`` earliest facts that name a frame (a max-heap on
    (ts, arrival)); ``first`` the earliest of all (it names the incident's capture).
    """

    count: int = 0
    first_seen: float = float("inf")
    last_seen: float = float("-inf")
    first: tuple[float, int, Any] | None = None
    framed: list[tuple[float, int, Any]] = field(default_factory=list)

    def add(self, fact: Any) -> int:
        """Note one fact; returns its arrival number (for orders kept beside this one)."""
        arrival = next(_arrivals)
        ts = fact.ts
        self.count += 1
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        if self.first is None or (ts, arrival) < self.first[:2]:
            self.first = (ts, arrival, fact)
        if fact.frame:
            item = (-ts, -arrival, fact)
            if len(self.framed) < MAX_FRAMES:
                heapq.heappush(self.framed, item)
            elif (ts, arrival) < (-self.framed[0][0], -self.framed[0][1]):
                heapq.heapreplace(self.framed, item)
        return arrival

    def kept(self) -> list[Any]:
        """The kept facts in (ts, arrival) order."""
        items = {(-ts, -arrival): fact for ts, arrival, fact in self.framed}
        if self.first is not None:
            items[self.first[:2]] = self.first[2]
        return [items[k] for k in sorted(items)]

    def incident(self, key: tuple[Any, ...], values: Callable[[Any], dict[str, Any] | None]) -> Incident:
        """The incident ``Incidents.add`` makes of every fact in (ts, arrival) order (with
        ``values(fact)`` each): the kept facts give its capture, frames and times, this summary
        its count and times. Lists in ``values`` hold only what the kept facts carried: set
        them afterwards where they need every fact (``first_values``)."""
        incidents = Incidents()
        for fact in self.kept():
            incidents.add(key, fact, values(fact))
        incident = incidents.by_key[key]
        incident.count = self.count
        incident.first_seen, incident.last_seen = self.first_seen, self.last_seen
        return incident


@dataclass(slots=True)
class FirstValues:
    """Distinct values in the order of their first (ts, arrival): what ``Incident`` keeps
    of a list value (its first ``limit`` distinct items) when the facts come in that order.
    Holds one entry per distinct value, up to ``cap`` of them (values beyond are not noted)."""

    cap: int = 4096
    first: dict[Any, tuple[float, int]] = field(default_factory=dict)

    def add(self, value: Any, ts: float, arrival: int) -> None:
        held = self.first.get(value)
        if held is None:
            if len(self.first) < self.cap:
                self.first[value] = (ts, arrival)
        elif (ts, arrival) < held:
            self.first[value] = (ts, arrival)

    def ordered(self, limit: int = 50) -> list[Any]:
        return [v for v, _ in sorted(self.first.items(), key=lambda item: item[1])[:limit]]


@dataclass(slots=True)
class EarliestTimes:
    """The start times of a key's facts for interval statistics: every one up to ``cap``,
    then the ``cap`` earliest (a max-heap), so a pair calling back for days is judged on its
    first ``cap`` callbacks instead of holding them all."""

    cap: int = 1 << 16
    times: array[float] = field(default_factory=lambda: array("d"))
    _heap: list[float] | None = None

    def add(self, ts: float) -> None:
        if self._heap is None:
            if len(self.times) < self.cap:
                self.times.append(ts)
                return
            self._heap = [-t for t in self.times]
            heapq.heapify(self._heap)
            self.times = array("d")
        if -self._heap[0] > ts:
            heapq.heapreplace(self._heap, -ts)

    def values(self) -> list[float]:
        if self._heap is not None:
            return [-t for t in self._heap]
        return list(self.times)

    def __len__(self) -> int:
        return len(self._heap) if self._heap is not None else len(self.times)

