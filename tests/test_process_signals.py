"""Register map → crane signals: scaling, int16, two masters as one signal, writes, grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cranewatch.lab.registers import STS07_REGISTER_MAP
from cranewatch.process.signals import (
    RegisterMap,
    build_frame,
    extract_signals,
)
from cranewatch.profile import load_profile
from cranewatch.protocols.modbus import ModbusRequest, RegisterSeries

PROFILE = "src/cranewatch/data/profiles/sts-07.toml"


def _series(master: str, ts: list[float], rows: list[list[int]], function: int = 4,
            address: int = 0) -> RegisterSeries:
    values = np.array(rows, dtype=np.int64)
    return RegisterSeries(master=master, slave="10.20.7.10", unit_id=1, function=function,
                          address=address, quantity=values.shape[1], ts=np.array(ts),
                          frame=np.arange(1, len(ts) + 1), values=values, source="t.pcap")


def test_input_registers_scale_and_sign() -> None:
    # hoist_load 0.1 t, hoist_height int16 cm (-150 cm = 0xFF6A), hoist_speed int16 cm/s.
    s = _series("10.20.7.30", [1.0, 1.2], [[5, 305, 0xFF6A, 0xFFCE], [6, 306, 0xFF60, 0x0032]])
    signals = extract_signals([s], register_map=STS07_REGISTER_MAP)
    assert signals["heartbeat"].values.tolist() == [5.0, 6.0]
    assert signals["hoist_load"].values.tolist() == pytest.approx([30.5, 30.6])
    assert signals["hoist_height"].values.tolist() == pytest.approx([-1.50, -1.60])
    assert signals["hoist_speed"].values.tolist() == pytest.approx([-0.50, 0.50])
    assert signals["hoist_load"].origins == ("read by 10.20.7.30",)


def test_two_masters_reading_one_register_are_one_signal() -> None:
    cms = _series("10.20.7.30", [1.0, 1.2, 1.4], [[1], [3], [5]], function=2)
    ocr = _series("10.20.7.20", [1.1, 1.3], [[0], [1]], function=2)
    signals = extract_signals([cms, ocr], register_map=STS07_REGISTER_MAP)
    landed = signals["twistlocks_locked"]
    assert landed.ts.tolist() == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert landed.values.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert set(landed.origins) == {"read by 10.20.7.30", "read by 10.20.7.20"}
    assert [landed.origins[i] for i in landed.origin] == [
        "read by 10.20.7.30", "read by 10.20.7.20", "read by 10.20.7.30",
        "read by 10.20.7.20", "read by 10.20.7.30"]


def test_writes_are_samples_of_setpoints_and_coils() -> None:
    events = [
        ModbusRequest(ts=5.0, frame=9, src="10.20.0.50", dst="10.20.7.10", transaction_id=1,
                      unit_id=1, function=5, address=0, quantity=1, values=(0xFF00,)),
        ModbusRequest(ts=6.0, frame=12, src="10.20.0.50", dst="10.20.7.10", transaction_id=2,
                      unit_id=1, function=6, address=0, quantity=1, values=(1000,)),
        ModbusRequest(ts=7.0, frame=15, src="10.20.0.50", dst="10.20.7.10", transaction_id=3,
                      unit_id=9, function=6, address=1, quantity=1, values=(999,)),
    ]
    signals = extract_signals([], events, STS07_REGISTER_MAP)
    assert signals["safety_bypass"].values.tolist() == [1.0]
    assert signals["safety_bypass"].origins == ("written by 10.20.0.50",)
    assert signals["overload_limit"].values.tolist() == pytest.approx([100.0])
    assert "wind_stop_limit" not in signals  # unit 9 is not the crane PLC


def test_frame_holds_the_last_sample_and_its_age() -> None:
    s = _series("10.20.7.30", [10.0, 10.1, 10.2, 10.5], [[1], [2], [3], [4]])
    frame = build_frame(extract_signals([s], register_map=STS07_REGISTER_MAP))
    assert frame.dt == pytest.approx(0.1)
    assert frame.t.tolist() == pytest.approx([10.0, 10.1, 10.2, 10.3, 10.4, 10.5])
    assert frame["heartbeat"].tolist() == [1, 2, 3, 3, 3, 4]
    assert frame.age["heartbeat"].tolist() == pytest.approx([0, 0, 0, 0.1, 0.2, 0])


def test_profile_register_map_in_si_units() -> None:
    regmap = RegisterMap.from_profile(load_profile(PROFILE))
    by_name = regmap.by_name()
    # The profile carries cm and cm/s; the checks judge metres and m/s.
    assert by_name["hoist_height"].unit == "m"
    assert by_name["hoist_height"].scale == pytest.approx(0.01)
    assert by_name["hoist_height"].normal_min == pytest.approx(-20.0)
    assert by_name["hoist_speed"].unit == "m/s"
    assert by_name["gantry_position"].unit == "m"
    assert by_name["gantry_position"].scale == pytest.approx(STS07_REGISTER_MAP.by_name()["gantry_position"].scale)
    assert by_name["overload_limit"].normal_max == pytest.approx(71.5)
    assert by_name["safety_bypass"].type == "bit"
    assert {s.name for s in regmap.registers} == {s.name for s in STS07_REGISTER_MAP.registers}


def _two_masters(spoof_b: bool) -> dict:
    from cranewatch.process.simulate import run_polls

    polls = run_polls(60, seed=6, start=1000.0, poll_cycles=1)  # every PLC cycle
    ir = polls.tables["IR"].copy()
    # The CMS reads the even cycles, a second master (the OCR) the odd ones.
    cms = _series("10.20.7.30", polls.t[0::2].tolist(), ir[0::2].tolist())
    ocr_rows = ir[1::2].copy()
    if spoof_b:
        window = (polls.t[1::2] >= 1010.0) & (polls.t[1::2] < 1030.0)
        ocr_rows[window, 1] = 0  # the OCR's answers have hoist_load zeroed on the way
    ocr = _series("10.20.7.20", polls.t[1::2].tolist(), ocr_rows.tolist())
    return extract_signals([cms, ocr], register_map=STS07_REGISTER_MAP)


def test_masters_reading_different_values() -> None:
    from cranewatch.process.engine import run_checks

    honest = _two_masters(spoof_b=False)
    assert run_checks(build_frame(honest), signals=honest) == []
    spoofed = _two_masters(spoof_b=True)
    findings = [f for f in run_checks(build_frame(spoofed), signals=spoofed)
                if f.rule == "process-masters-disagree"]
    assert findings, "the zeroed answers to one master went unnoticed"
    ev = findings[0].evidence[0].values
    assert ev["signal"] == "hoist_load"
    # Two masters alone cannot say whose answers were altered: the pair is named.
    assert {ev["master"], ev["other_master"]} == {"10.20.7.20", "10.20.7.30"}
    assert 1010.0 <= ev["onset"] <= 1030.0


def test_profile_map_reads_only_the_crane_plc() -> None:
    regmap = RegisterMap.from_profile(load_profile(PROFILE))
    assert regmap.slaves == ("10.20.7.10",)
    plc = _series("10.20.7.30", [1.0, 1.2, 1.4], [[1], [2], [3]])
    other = RegisterSeries(master="10.20.7.30", slave="10.20.7.99", unit_id=1, function=4,
                           address=0, quantity=1, ts=np.array([1.1, 1.3, 1.5]),
                           frame=np.array([7, 8, 9]), values=np.array([[7], [7], [7]]))
    signals = extract_signals([plc, other], register_map=regmap)
    assert signals["heartbeat"].values.tolist() == [1.0, 2.0, 3.0]


def test_public_modbus_captures_run_clean(shared_data: Path) -> None:
    """Every public Modbus capture goes through the process sink without an error or a
    warning; with the STS-07 profile none of them is this crane's PLC, so nothing is found."""
    from cranewatch.pipeline import analyze
    from cranewatch.process.engine import build_sink
    from cranewatch.profile import load_profile

    captures = sorted(p for p in (shared_data / "pcaps").rglob("*")
                      if p.suffix in (".pcap", ".pcapng") and "modbus" in str(p).lower())
    assert len(captures) >= 10
    for capture in captures:
        for profile in (None, load_profile(PROFILE)):
            sink = build_sink(profile=profile)
            result = analyze([capture], sinks=[sink])
            process = [f for f in result.findings if f.rule.startswith("process-")]
            if profile is not None:
                assert process == [], capture


def test_refused_write_is_no_sample() -> None:
    from cranewatch.protocols.modbus import ModbusResponse

    events = [
        ModbusRequest(ts=5.0, frame=9, src="10.20.7.66", dst="10.20.7.10", transaction_id=7,
                      unit_id=1, function=5, address=0, quantity=1, values=(0xFF00,)),
        ModbusResponse(ts=5.01, frame=10, src="10.20.7.10", dst="10.20.7.66", transaction_id=7,
                       unit_id=1, function=5, exception_code=1),
    ]
    assert "safety_bypass" not in extract_signals([], events, STS07_REGISTER_MAP)


def test_mqtt_telemetry_where_mapped() -> None:
    from dataclasses import replace

    from cranewatch.process.engine import ProcessConfig, run_checks
    from cranewatch.process.signals import TelemetryPoint
    from cranewatch.protocols.mqtt import MqttPublishRequest

    point = TelemetryPoint("terminal/cranes/+/ocr", "weight_kg", "ocr_weight", scale=0.001,
                           unit="t", normal_min=0.0, normal_max=65.0)
    regmap = replace(STS07_REGISTER_MAP, telemetry=(point,))

    def publish(ts: float, weight: object, topic: str = "terminal/cranes/STS-07/ocr",
                from_client: bool = True) -> MqttPublishRequest:
        payload = json.dumps({"container": "CSQU3054383", "weight_kg": weight}).encode()
        return MqttPublishRequest(ts=ts, frame=int(ts * 10), src="10.20.7.20", dst="10.20.0.6",
                                  topic=topic, qos=1, payload=payload,
                                  payload_size=len(payload), from_client=from_client)

    events = [
        publish(10.0, 21800),
        publish(10.1, 21800, from_client=False),  # the broker's copy to the TOS
        publish(20.0, 9600),
        publish(25.0, "heavy"),  # not a number: no sample
        publish(30.0, 250000),  # 250 t: impossible for this crane
        publish(31.0, 5000, topic="terminal/cranes/STS-07/status"),
    ]
    signals = extract_signals([], events, regmap)
    weight = signals["ocr_weight"]
    assert weight.ts.tolist() == [10.0, 20.0, 30.0]
    assert weight.values.tolist() == pytest.approx([21.8, 9.6, 250.0])
    assert weight.origins == ("published by 10.20.7.20",)
    assert point.matches("terminal/cranes/STS-07/ocr") and not point.matches("terminal/cranes/ocr")
    assert TelemetryPoint("terminal/#", "x", "x").matches("terminal/cranes/STS-07/ocr")
    frame = build_frame(signals, dt=1.0)
    findings = run_checks(frame, ProcessConfig(register_map=regmap), signals=signals)
    assert [(f.rule, f.evidence[0].values["signal"]) for f in findings] == [
        ("process-range", "ocr_weight")]
