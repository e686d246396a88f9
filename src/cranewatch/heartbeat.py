"""In-service health: ``cranewatch monitor`` writes a heartbeat to the store; the console asks
per crane whether its sensors are alive and hearing traffic.

A heartbeat is the latest word of one sensor (``monitor:IFACE``) on one crane: when it was
written, when the session started, the time of the last packet analysed, packets so far,
findings of the session last seen in the past 24 hours, how often it beats and whether the
session ended cleanly. The store keeps the latest per (crane, sensor), counting the beats.

``in_service_health`` judges each crane (thresholds are three beat intervals, at least
``MIN_STALE`` seconds):

- ``never``: no sensor ever beat for it;
- ``stopped``: every sensor's session ended cleanly (nobody is watching now);
- ``stale``: a sensor's last beat is too old (the monitor died or lost the store);
- ``silent``: sensors beat, but no packet arrived lately (the mirror port or tap is dead);
- ``ok``: a sensor beats and hears traffic.

It also counts the crane's stored findings recorded by monitoring (source ``monitor``) last
seen in the past 24 hours.

API::

    HeartbeatWriter(store, crane, sensor, every=60.0, clock=time.time)
        .beat(packets, last_packet, findings, final=False) -> Heartbeat | None   (None: not due)
    Store.record_heartbeat(beat: Heartbeat) -> Heartbeat          Store.heartbeats(crane=None)
    in_service_health(store, crane=None, *, now=None) -> list[CraneHealth]   (every crane, or one)
    CraneHealth(crane, status, sensors, last_heartbeat, last_packet, findings_24h,
                stored_findings_24h)  .to_json()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cranewatch.errors import CranewatchError, StoreUnreachable
from cranewatch.model import Finding, iso_time

if TYPE_CHECKING:
    from cranewatch.store import Store

__all__ = ["DAY", "CraneHealth", "Heartbeat", "HeartbeatWriter", "in_service_health"]

DAY = 86_400.0
MIN_STALE = 120.0
HEALTH_STATES = ("ok", "silent", "stale", "stopped", "never")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The latest word of one monitoring sensor on one crane."""

    crane: str
    sensor: str
    at: float
    started_at: float
    last_packet: float | None
    packets: int
    findings_24h: int
    every: float
    stopped: bool = False
    beats: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"crane": self.crane, "sensor": self.sensor, "at": iso_time(self.at),
                "started": iso_time(self.started_at), "last_packet": iso_time(self.last_packet),
                "packets": self.packets, "findings_24h": self.findings_24h, "every": self.every,
                "stopped": self.stopped, "beats": self.beats}


class HeartbeatWriter:
    """Writes a monitoring session's heartbeat at most every ``every`` seconds (wall clock),
    and always its last one. ``Monitor`` calls ``beat`` at each look."""

    def __init__(self, store: Store | None, crane: str, sensor: str, every: float = 60.0,
                 clock: Callable[[], float] = time.time, url: str | None = None) -> None:
        # ``url``: a central store that may go away; it is opened again at the next beat
        self.store = store
        self.url = url
        self.crane = crane
        self.sensor = sensor
        self.every = every
        self.clock = clock
        self.started_at = clock()
        self._last: float | None = None
        self.failures = 0  # heartbeats the store refused (the session goes on)
        self.last_error: str | None = None

    def beat(self, packets: int, last_packet: float | None, findings: Sequence[Finding],
             final: bool = False) -> Heartbeat | None:
        now = self.clock()
        if not final and self._last is not None and now - self._last < self.every:
            return None
        recent = sum(1 for f in findings if f.last_seen is not None and f.last_seen >= now - DAY)
        beat = Heartbeat(self.crane, self.sensor, now, self.started_at, last_packet, packets, recent, self.every,
                         stopped=final)
        self._last = now
        try:
            if self.store is None and self.url is not None:
                from cranewatch.store.sqlite import Store as Opened

                self.store = Opened(self.url, create=False)
            if self.store is None:
                return None
            return self.store.record_heartbeat(beat)
        except StoreUnreachable as exc:  # tried again at the next beat, on a new connection
            self.close()
            self.failures += 1
            self.last_error = str(exc)
            return None
        except CranewatchError as exc:  # a store that cannot be written must not end the watch
            self.failures += 1
            self.last_error = str(exc)
            return None

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(CranewatchError):
                self.store.close()
        self.store = None


@dataclass(frozen=True, slots=True)
class CraneHealth:
    """How a crane is watched in service, now."""

    crane: str
    status: str  # one of HEALTH_STATES
    sensors: tuple[Heartbeat, ...]
    last_heartbeat: float | None
    last_packet: float | None
    findings_24h: int  # as the sensors counted them (their sessions' findings)
    stored_findings_24h: int  # monitoring findings in the store last seen in the past 24 h
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"crane": self.crane, "status": self.status, "reason": self.reason,
                "last_heartbeat": iso_time(self.last_heartbeat), "last_packet": iso_time(self.last_packet),
                "findings_24h": self.findings_24h, "stored_findings_24h": self.stored_findings_24h,
                "sensors": [s.to_json() for s in self.sensors]}


def _judge(sensors: Sequence[Heartbeat], now: float) -> tuple[str, str]:
    if not sensors:
        return "never", "no monitoring sensor has reported for this crane"
    live = [s for s in sensors if not s.stopped]
    if not live:
        last = max(s.at for s in sensors)
        return "stopped", f"every monitoring session ended (last at {iso_time(last)})"
    fresh = [s for s in live if now - s.at <= max(3 * s.every, MIN_STALE)]
    if len(fresh) < len(live):
        names = ", ".join(s.sensor for s in live if s not in fresh)
        return "stale", f"no heartbeat lately from {names}: the monitor stopped without saying so"
    hearing = [s for s in fresh if s.last_packet is not None and now - s.last_packet <= max(3 * s.every, MIN_STALE)]
    if not hearing:
        return "silent", "the sensors run but no packet arrived lately: check the mirror port or tap"
    return "ok", f"{len(hearing)} of {len(fresh)} sensor(s) hear traffic"


def in_service_health(store: Store, crane: str | None = None, *, now: float | None = None) -> list[CraneHealth]:
    """Every registered crane's in-service health (or one crane's), by name."""
    at = time.time() if now is None else now
    names = [crane] if crane is not None else [c.name for c in store.cranes()]
    beats = store.heartbeats(crane)
    out = []
    for name in names:
        sensors = tuple(b for b in beats if b.crane == name)
        status, reason = _judge(sensors, at)
        stored = store.count_recent_findings(name, since=at - DAY, source="monitor")
        out.append(CraneHealth(
            name, status, sensors, max((s.at for s in sensors), default=None),
            max((s.last_packet for s in sensors if s.last_packet is not None), default=None),
            sum(s.findings_24h for s in sensors), stored, reason))
    return out

