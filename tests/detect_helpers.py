"""Builders of small hand-made event sequences for the detector tests (tests/test_detect_*.py)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cranewatch.baseline import Baseline, BaselineLearner
from cranewatch.detect.base import Context
from cranewatch.detect.engine import DetectionSink
from cranewatch.detect.facts import Conversation
from cranewatch.model import Finding
from cranewatch.profile import CraneProfile, load_profile
from cranewatch.protocols.modbus import ModbusRequest, RegisterSeries

REPO = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, a Wednesday: outside STS-07's EWS window

PLC, OCR, CMS, GW = "10.20.7.10", "10.20.7.20", "10.20.7.30", "10.20.7.254"
TOS, BROKER, NTP, DNS, EWS = "10.20.0.5", "10.20.0.6", "10.20.0.7", "10.20.0.8", "10.20.0.50"
GW_MAC, MODEM_MAC = "02:42:0a:14:07:fe", "02:99:00:00:00:01"


def sts07() -> CraneProfile:
    return load_profile(REPO / "profiles" / "sts-07.toml")


def conv(src: str, dst: str, dport: int, ts: float = T0, *, transport: str = "tcp",
         protocol: str = "", client_macs: tuple[str, ...] = (), server_macs: tuple[str, ...] = (),
         to_server: int = 10, to_client: int = 10, bytes_to_server: int = 2000,
         bytes_to_client: int = 2000, handshake: bool = True, frame: int = 1, sport: int = 40000) -> Conversation:
    return Conversation(ts=ts, frame=frame, src=src, dst=dst, sport=sport, dport=dport,
                        source="test.pcap", transport=transport, protocol=protocol, last_ts=ts + 1,
                        packets_to_server=to_server, packets_to_client=to_client,
                        bytes_to_server=bytes_to_server, bytes_to_client=bytes_to_client,
                        client_macs=client_macs, server_macs=server_macs, handshake=handshake)


def write(src: str, dst: str, function: int, address: int, values: tuple[int, ...], ts: float = T0,
          frame: int = 7) -> ModbusRequest:
    return ModbusRequest(ts=ts, frame=frame, src=src, dst=dst, sport=50000, dport=502,
                         source="test.pcap", transaction_id=1, unit_id=1, function=function,
                         address=address, quantity=len(values), values=values)


def request(src: str, dst: str, function: int, ts: float = T0, frame: int = 3, **kw: Any) -> ModbusRequest:
    return ModbusRequest(ts=ts, frame=frame, src=src, dst=dst, sport=50000, dport=502,
                         source="test.pcap", transaction_id=1, unit_id=kw.pop("unit_id", 1),
                         function=function, **kw)


def series(master: str, slave: str, function: int, address: int, quantity: int,
           n: int = 50, ts: float = T0, period: float = 0.2) -> RegisterSeries:
    times = ts + period * np.arange(n)
    return RegisterSeries(master=master, slave=slave, unit_id=1, function=function, address=address,
                          quantity=quantity, ts=times, frame=np.arange(1, n + 1) * 2,
                          values=np.zeros((n, quantity), dtype=np.int64), requests=n, source="test.pcap")


def run(items: Iterable[Any], profile: CraneProfile | None = None, baseline: Baseline | None = None,
        crane: str | None = "STS-07") -> list[Finding]:
    """Feed facts/events to every detector and return the findings."""
    sink = DetectionSink(Context(profile=profile, baseline=baseline, crane=crane))
    for item in items:
        if isinstance(item, RegisterSeries):
            sink.on_series(item)
        elif isinstance(item, ModbusRequest):
            sink.on_event(item)
        else:
            sink.feed(item)
    return sink.finish()


def learn(items: Iterable[Any]) -> Baseline:
    learner = BaselineLearner()
    for item in items:
        learner.learn(item)
    return learner.baseline()


def normal_crane(ts: float = T0) -> list[Any]:
    """A few minutes of normal STS-07 traffic, as facts: polling, MQTT, NTP, DNS, syslog."""
    items: list[Any] = [
        series(CMS, PLC, 4, 0, 12, ts=ts), series(CMS, PLC, 2, 0, 7, ts=ts),
        series(OCR, PLC, 2, 0, 7, ts=ts, period=1.0),
        conv(CMS, PLC, 502, ts, client_macs=("02:00:00:00:07:30",), server_macs=("02:00:00:00:07:10",)),
        conv(OCR, PLC, 502, ts, client_macs=("02:00:00:00:07:20",), server_macs=("02:00:00:00:07:10",)),
    ]
    for i, (client, server, port, transport, proto) in enumerate([
            (OCR, BROKER, 1883, "tcp", "mqtt"), (TOS, CMS, 8080, "tcp", "http"),
            (CMS, NTP, 123, "udp", "ntp"), (OCR, DNS, 53, "udp", "dns"),
            (CMS, "10.20.0.9", 514, "udp", "syslog")]):
        cmac = GW_MAC if client.startswith("10.20.0.") else f"02:00:00:00:07:{client.split('.')[-1]}"
        smac = GW_MAC if server.startswith("10.20.0.") else f"02:00:00:00:07:{server.split('.')[-1]}"
        items.append(conv(client, server, port, ts + i, transport=transport, protocol=proto,
                          client_macs=(cmac,), server_macs=(smac,)))
    return items
