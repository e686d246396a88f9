"""Monitor heartbeats and in-service health: a monitoring session over a lab capture leaves a
heartbeat whose packets and last packet time are tshark's; beats are written at the interval
and at the end; each health state judged on hand-set heartbeats, on both backends."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.commands.analyze import detector_sinks
from cranewatch.heartbeat import DAY, Heartbeat, HeartbeatWriter, in_service_health
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.monitor import Monitor, MonitorSettings
from cranewatch.profile import load_profile
from cranewatch.sources.pcap import PacketBatch, open_capture
from cranewatch.store import Crane, open_store

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"
LAB_CAPTURE = REPO / "src" / "cranewatch" / "data" / "lab" / "safety-bypass" / "crane-lan.pcap"
TSHARK = shutil.which("tshark")


def lab_batches(size: int) -> Iterator[PacketBatch]:
    with open_capture(LAB_CAPTURE) as reader:
        yield from reader.batches(size)


class Clock:
    """Wall time the test sets: each read returns the next value, the last one forever after."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_a_monitoring_session_leaves_a_heartbeat_with_tsharks_counts(store_at: str) -> None:
    epochs = subprocess.run([TSHARK or "tshark", "-r", str(LAB_CAPTURE), "-T", "fields", "-e", "frame.time_epoch"],
                            capture_output=True, text=True, check=True).stdout.split()
    end = float(epochs[-1])
    with open_store(store_at) as setup:
        setup.add_crane(Crane("STS-07"), who="t", why="t")
    writer = HeartbeatWriter(open_store(store_at), "STS-07", "monitor:eth1", every=1e9, clock=Clock(end + 3600))
    monitor = Monitor(detector_sinks(load_profile(PROFILE), None, "STS-07"), [],
                      MonitorSettings(window=1e-9, update_every=0.0, series_every=1e-9), heartbeat=writer)
    summary = monitor.run(lab_batches(5000), threading.Event(), lambda: None)
    writer.close()
    with open_store(store_at, readonly=True) as store:
        [beat] = store.heartbeats("STS-07")
    assert (beat.sensor, beat.packets, beat.stopped) == ("monitor:eth1", len(epochs), True)
    assert beat.last_packet == pytest.approx(end, abs=1e-6)
    assert beat.beats == 2  # the first look, then the last (the interval never passed)
    assert beat.findings_24h == len(summary.findings) > 0  # all last seen within the hour before


def test_beats_come_at_the_interval_and_at_the_end(store_at: str) -> None:
    old = Finding(id="cw-old", rule="r", category="c2", severity=Severity.LOW, title="t", first_seen=0.0,
                  last_seen=1000.0)
    new = Finding(id="cw-new", rule="r", category="c2", severity=Severity.LOW, title="t", first_seen=0.0,
                  last_seen=1000.0 + DAY + 50)
    with open_store(store_at) as store:
        writer = HeartbeatWriter(store, "STS-07", "monitor:eth1", every=60, clock=Clock(1000.0 + DAY, 1000.0 + DAY + 30,
                                                                                          1000.0 + DAY + 61, 1000.0 + DAY + 90,
                                                                                          1000.0 + DAY + 95))
        written = [writer.beat(10 * i, 500.0 + i, [old, new], final=(i == 4)) for i in range(5)]
        assert [w is not None for w in written] == [True, False, True, False, True]
        [beat] = store.heartbeats()
    assert (beat.at, beat.started_at, beat.packets, beat.last_packet, beat.beats, beat.stopped) == \
        (1000.0 + DAY + 95, 1000.0 + DAY, 40, 504.0, 3, True)
    assert beat.findings_24h == 1  # "old" was last seen 24 h and 95 s before


def test_each_health_state(store_at: str) -> None:
    now = 1_800_000_000.0
    with open_store(store_at) as store:
        for name in ("A-never", "B-ok", "C-silent", "D-stale", "E-stopped"):
            store.add_crane(Crane(name), who="t", why="t")
        beat = {"started_at": now - 7200, "packets": 10, "findings_24h": 2, "every": 60.0}
        store.record_heartbeat(Heartbeat("B-ok", "monitor:eth1", now - 30, last_packet=now - 31, **beat))
        store.record_heartbeat(Heartbeat("B-ok", "monitor:eth2", now - 500, last_packet=now - 500, stopped=True, **beat))
        store.record_heartbeat(Heartbeat("C-silent", "monitor:eth1", now - 30, last_packet=now - 900, **beat))
        store.record_heartbeat(Heartbeat("D-stale", "monitor:eth1", now - 200, last_packet=now - 200, **beat))
        store.record_heartbeat(Heartbeat("E-stopped", "monitor:eth1", now - 5, last_packet=now - 6, stopped=True, **beat))
        f = [Finding(id=finding_id("r", "B-ok", i), rule="r", category="c2", severity=Severity.HIGH, title="t",
                     first_seen=t - 1, last_seen=t, evidence=(Evidence(source="eth1", frames=(1,)),))
             for i, t in enumerate((now - 3600, now - DAY - 1, now - 60))]
        store.record_run("B-ok", "analyze", [], f[:2], component="monitor:eth1")
        store.record_run("B-ok", "analyze", [], f[2:])  # a file analysis: not in-service
        health = {h.crane: h for h in in_service_health(store, now=now)}
        one = in_service_health(store, "C-silent", now=now)
    assert {k: h.status for k, h in health.items()} == {"A-never": "never", "B-ok": "ok", "C-silent": "silent",
                                                       "D-stale": "stale", "E-stopped": "stopped"}
    ok = health["B-ok"]
    assert (ok.last_heartbeat, ok.last_packet, ok.findings_24h, ok.stored_findings_24h) == (now - 30, now - 31, 4, 1)
    assert [s.sensor for s in ok.sensors] == ["monitor:eth1", "monitor:eth2"]
    assert [h.crane for h in one] == ["C-silent"] and "mirror port" in one[0].reason
    assert ok.to_json()["sensors"][0]["sensor"] == "monitor:eth1" and ok.to_json()["status"] == "ok"
