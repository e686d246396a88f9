"""No input can end an analysis: malformed PDUs, hostile payloads and mutated captures end as
findings and located warnings, never as an escaped exception (issue 19).

The regression cases come first (each failed before the fix: exit 70 with a NumPy error);
then the isolation of a failing decoder or detector; then bounded fuzzing: Hypothesis
strategies per decoder family through the real pipeline, and a seeded mutation fuzzer over
lab and public captures. The long run is ``benchmarks/fuzz/fuzz_captures.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cranewatch.cli import main
from cranewatch.errors import DecodeError
from cranewatch.pipeline import Analysis, AnalysisResult, analyze
from cranewatch.profile import load_profile
from cranewatch.protocols.base import REGISTRY, DecoderSpec, FlowContext
from cranewatch.sinks import build_sinks
from fuzz_payloads import (
    FAMILIES,
    FAMILY,
    frames_of,
    gzipped,
    mutate,
    pcap_bytes,
    pcapng_bytes,
    write,
)
from modbus_capture import Conversation, mbap, read_request, read_response

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
LAB_SSH = LAB / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
SSH_FINDING = "SSH session into the crane zone"

# The malformed answers and requests of the red-team report, and their kin. Each replaces
# poll 2 of three polls of one holding register (FC 3, address 100) from 10.20.7.30 to the
# PLC 10.20.7.10; frames: 1-3 handshake, 4/5 poll 1, 6/7 poll 2, 8/9 poll 3.
BAD_POLLS: dict[str, tuple[bytes, bytes, int, str]] = {
    # name: (request, answer, frame of the warning, what the warning says)
    "byte count 17, 2 bytes": (read_request(2, 3, 100, 1), mbap(2, 1, bytes([3, 17, 0, 42])), 7,
                               "byte count 17 but 2 data bytes"),
    "quantity 0": (read_request(2, 3, 100, 0), read_response(2, 3, []), 6, "quantity 0 outside 1..125"),
    "quantity 126": (read_request(2, 3, 100, 126), read_response(2, 3, [7] * 126), 6,
                     "quantity 126 outside 1..125"),
    "odd byte count": (read_request(2, 3, 100, 1), mbap(2, 1, bytes([3, 3, 0, 42, 1])), 7,
                       "odd register byte count 3"),
    "two registers for one": (read_request(2, 3, 100, 1), read_response(2, 3, [1, 2]), 7,
                              "2 registers for 1 asked"),
    "bits for registers": (read_request(2, 1, 100, 9), read_response(2, 1, [1]), 7,
                           "1 bytes for 9 bits"),
}


def polls(path: Path, request: bytes, answer: bytes) -> Path:
    conversation = Conversation("10.20.7.30", "10.20.7.10")
    frames = conversation.handshake()
    for tid in (1, 2, 3):
        frames.append(conversation.send(True, request if tid == 2 else read_request(tid, 3, 100, 1)))
        frames.append(conversation.send(False, answer if tid == 2 else read_response(tid, 3, [40 + tid])))
    frames += conversation.close()
    return write(path, pcap_bytes(frames))


class Recorder:
    """A sink that keeps every series and event."""

    def __init__(self) -> None:
        self.series: list[Any] = []
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event)

    def on_series(self, series: Any) -> None:
        self.series.append(series)

    def on_flow_end(self, flow: Any) -> None:
        return None

    def finish(self) -> list[Any]:
        return []


@pytest.mark.parametrize("case", sorted(BAD_POLLS))
def test_malformed_poll_is_a_warning_and_the_good_polls_stay_a_series(tmp_path: Path, case: str) -> None:
    request, answer, frame, message = BAD_POLLS[case]
    capture = polls(tmp_path / "polls.pcap", request, answer)
    recorder = Recorder()
    result = analyze([capture], sinks=[recorder])
    assert [(w.kind, w.file, w.frame) for w in result.warnings] == [("decode", str(capture), frame)]
    assert message in result.warnings[0].message
    # polls 1 and 3 (values 41, 43 in frames 5 and 9) are the one series of FC 3 address 100
    (series,) = [s for s in recorder.series if (s.function, s.address, s.quantity) == (3, 100, 1)]
    assert series.frame.tolist() == [5, 9] and series.values[:, 0].tolist() == [41, 43]
    # the malformed exchange stays visible as events (the evidence of a probing master)
    assert any(getattr(e, "frame", None) == frame for e in recorder.events)


@pytest.mark.parametrize("case", sorted(BAD_POLLS))
def test_malformed_poll_with_the_lab_ssh_capture_keeps_the_critical_finding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    request, answer, frame, message = BAD_POLLS[case]
    capture = polls(tmp_path / "polls.pcap", request, answer)
    assert main(["analyze", str(capture), str(LAB_SSH), "--profile", str(PROFILE),
                 "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    critical = [x for x in lines if x["type"] == "finding" and x["severity"] == "critical"]
    assert any(SSH_FINDING in x["title"] for x in critical)
    warnings = [x for x in lines if x["type"] == "warning"]
    assert [(w["file"], w["frame"]) for w in warnings] == [(str(capture), frame)]
    assert message in warnings[0]["message"]


@pytest.mark.parametrize("case", ["byte count 17, 2 bytes", "quantity 0"])
def test_baseline_signals_and_gate_read_a_malformed_poll(tmp_path: Path, case: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    request, answer, _, _ = BAD_POLLS[case]
    capture = str(polls(tmp_path / "polls.pcap", request, answer))
    assert main(["baseline", capture, str(LAB_SSH), "--profile", str(PROFILE),
                 "--out", str(tmp_path / "b.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())
    assert main(["signals", capture, "--profile", str(PROFILE), "--out", str(tmp_path / "s.csv")]) == 0
    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    for state in ("quarantined", "under-analysis"):
        assert main(["fleet", "set-state", "STS-07", state, "--reason", "test", "--db", db]) == 0
    capsys.readouterr()
    main(["gate", "STS-07", "--db", db, "--capture", capture, "--capture", str(LAB_SSH),
          "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "rejected"
    assert any(r["category"] == "remote-access" for r in doc["reasons"] if r["kind"] == "blocking-finding")


# ------------------------------------------------------------------------ isolation


class Exploding:
    """A decoder that fails with a bug (not a DecodeError) on its second payload."""

    finished = False

    def __init__(self, context: FlowContext) -> None:
        self.context = context
        self.fed = 0

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Any]:
        self.fed += 1
        if self.fed == 2:
            raise IndexError("index out of range")
        return []

    def gap(self, from_client: bool) -> None:
        return None


def test_a_decoder_bug_is_a_located_problem_and_the_flow_is_given_up(tmp_path: Path) -> None:
    spec = DecoderSpec(name="exploding", transport="tcp", ports=frozenset({502}), factory=Exploding,
                       priority=0)
    capture = polls(tmp_path / "polls.pcap", read_request(2, 3, 100, 1), read_response(2, 3, [5]))
    analysis = Analysis([], decoders=[spec, *sorted(REGISTRY, key=lambda s: s.priority)])
    result = analysis.run([capture])
    (warning,) = result.warnings
    assert warning.kind == "internal" and (warning.file, warning.frame) == (str(capture), 5)
    assert "IndexError" in warning.message
    assert "tcp 10.20.7.30:40000 -> 10.20.7.10:502" in warning.message
    assert result.events["decoder_failures"] == 1 and result.packets == 12


class Broken:
    """A detector that fails on every fact it gets."""

    name = "broken"
    accepts = (object,)

    def observe(self, fact: Any, ctx: Any) -> None:
        raise ValueError("setting an array element with a sequence")

    def finish(self, ctx: Any) -> list[Any]:
        raise KeyError("x")


def test_a_failing_detector_does_not_cost_the_other_detectors_their_findings(tmp_path: Path) -> None:
    from cranewatch.detect.base import Context
    from cranewatch.detect.engine import DetectionSink, all_detectors

    sink = DetectionSink(Context(profile=load_profile(PROFILE), baseline=None, crane="STS-07"),
                         [Broken(), *all_detectors()])
    result = analyze([LAB_SSH], sinks=[sink])
    assert any(SSH_FINDING in f.title and f.severity.name == "CRITICAL" for f in result.findings)
    internal = [w.message for w in result.warnings if w.kind == "internal"]
    assert internal[0].startswith("detector broken failed on a ") and "ValueError" in internal[0]
    assert any("detector broken failed" in m and "KeyError" in m for m in internal)
    assert any(m.startswith("detector broken failed ") and " times with ValueError" in m for m in internal)


class FailingSink(Recorder):
    def on_event(self, event: Any) -> None:
        raise RuntimeError("boom")

    def finish(self) -> list[Any]:
        raise RuntimeError("boom at the end")


def test_a_failing_sink_is_noted_once_and_the_other_sinks_go_on() -> None:
    recorder = Recorder()
    result = analyze([LAB_SSH], sinks=[FailingSink(), recorder])
    assert recorder.events and recorder.series
    messages = [w.message for w in result.warnings if w.kind == "internal"]
    assert len(messages) == 2 and "FailingSink.on_event failed (RuntimeError: boom)" in messages[0]
    assert "FailingSink.finish failed" in messages[1]
    assert result.events["sink_failures"] == len(recorder.events) + 1


def test_the_modbus_decoder_never_raises_and_reports_problems_beside_events() -> None:
    from cranewatch.protocols.modbus import ModbusDecoder

    decoder = ModbusDecoder(FlowContext("10.20.7.30", 40000, "10.20.7.10", 502, "tcp", "t.pcap"))
    data = mbap(1, 1, b"\x03\x00\x00\x00\x01") + b"junk!junk!junk!" + mbap(2, 1, b"\x03\x00\x00\x00\x00")
    events = decoder.feed(True, data, 1.0, 4)
    assert [e.transaction_id for e in events] == [1, 2]
    assert [p.message.split(";")[0] for p in decoder.problems] == [
        "not a Modbus/TCP header (protocol id 28267, length 8554)",
        "FC 3 request: quantity 0 outside 1..125"]
    assert all(isinstance(p, DecodeError) and p.location.frame == 4 for p in decoder.problems)


# ------------------------------------------------------------------------ fuzzing

_PROFILE = None


def _profile() -> Any:
    global _PROFILE
    if _PROFILE is None:
        _PROFILE = load_profile(PROFILE)
    return _PROFILE


def run_all(path: Path) -> AnalysisResult:
    """The whole analysis as ``analyze --profile`` runs it: detectors and process checks."""
    result = analyze([path], sinks=build_sinks(_profile()))
    internal = [str(w) for w in result.warnings if w.kind == "internal"]
    assert not internal, internal
    return result


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_hostile_payloads_of_each_family_end_as_events_and_warnings(
        tmp_path: Path, family: str, rng: random.Random) -> None:
    fam = FAMILY[family]
    capture = write(tmp_path / f"{family}.pcap", pcap_bytes(frames_of(fam, fam.messages(rng), rng)))
    result = run_all(capture)
    assert result.packets >= 1 and all(w.frame is None or w.frame >= 1 for w in result.warnings)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), min_size=1, max_size=6),
       st.sampled_from([f.name for f in FAMILIES]), st.randoms(use_true_random=False))
def test_random_bytes_on_every_decoder_port(tmp_path: Path, messages: list[tuple[bool, bytes]],
                                           family: str, rng: random.Random) -> None:
    fam = FAMILY[family]
    run_all(write(tmp_path / "random.pcap", pcap_bytes(frames_of(fam, messages, rng))))


SHARED = ("ICS-Security-Tools/pcaps/ModbusTCP/modbus_test_data_part2.pcap",
          "ICS-Security-Tools/pcaps/bro/modbus/fuzz-72.pcap",
          "ICS-Security-Tools/pcaps/s7/s7comm_varservice_libnodavedemo.pcap",
          "ICS-Security-Tools/pcaps/s7/step7_s300_rwVarTab.pcapng")


@pytest.mark.parametrize("name", SHARED)
def test_mutated_public_captures(tmp_path: Path, shared_data: Path, name: str) -> None:
    data = (shared_data / "pcaps" / name).read_bytes()
    rng = random.Random(name)
    for i in range(40):
        run_all(write(tmp_path / f"m{i}{Path(name).suffix}", mutate(data, rng)))


@pytest.mark.parametrize("scenario", ["remote-ssh", "safety-bypass"])
def test_mutated_lab_captures_keep_reading(tmp_path: Path, scenario: str) -> None:
    # Seeds chosen so no mutation moves a timestamp weeks ahead: that case is slow today
    # (see test_one_late_timestamp_does_not_stretch_the_signal_grid), not an escape.
    data = (LAB / scenario / "crane-lan.pcap").read_bytes()
    rng = random.Random(scenario + "-2")
    for i in range(6):
        mutated = mutate(data, rng)
        kind = i % 3
        if kind == 1:
            mutated = gzipped(mutated)
        run_all(write(tmp_path / (f"m{i}.pcap.gz" if kind == 1 else f"m{i}.pcap"), mutated))


def test_mutated_pcapng_of_hostile_payloads(tmp_path: Path) -> None:
    rng = random.Random(19)
    for i in range(40):
        fam = FAMILIES[i % len(FAMILIES)]
        data = pcapng_bytes(frames_of(fam, fam.messages(rng), rng))
        run_all(write(tmp_path / f"n{i}.pcapng", mutate(data, rng)))


def test_series_values_stay_rectangular_under_fuzzing(tmp_path: Path) -> None:
    """Every series the fuzzed Modbus conversations give has one column per register."""
    rng = random.Random(7)
    for i in range(60):
        fam = FAMILY["modbus"]
        recorder = Recorder()
        analyze([write(tmp_path / f"s{i}.pcap", pcap_bytes(frames_of(fam, fam.messages(rng), rng)))],
                sinks=[recorder])
        for series in recorder.series:
            assert series.values.shape == (len(series.ts), series.quantity)
            assert series.values.dtype == np.uint16 and 1 <= series.quantity <= 2000


def test_one_late_timestamp_does_not_stretch_the_signal_grid(tmp_path: Path) -> None:
    import time

    conversation = Conversation("10.20.7.30", "10.20.7.10")
    frames = conversation.handshake()
    for tid in range(1, 40):  # the hoist load block of STS-07, read every 200 ms
        frames.append(conversation.send(True, read_request(tid, 4, 0, 10)))
        frames.append(conversation.send(False, read_response(tid, 4, [tid] * 10)))
    stamps = [1_700_000_000.0 + 0.1 * i for i in range(len(frames))]
    stamps[-1] += 4_194_000.0  # the last answer 48.5 days late: one corrupt timestamp
    from io import BytesIO

    from cranewatch.sources.pcapwrite import PcapWriter

    out = BytesIO()
    writer = PcapWriter(out, nanosecond=True)
    for ts, data in zip(stamps, frames, strict=True):
        writer.write(round(ts * 1e9), data)
    capture = write(tmp_path / "late.pcap", out.getvalue())
    started = time.monotonic()
    run_all(capture)
    assert time.monotonic() - started < 5


def _publish(topic: bytes, payload: bytes = b"x", qos_bits: int = 0) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    return bytes([0x30 | qos_bits, len(body)]) + body


def test_a_bad_pdu_in_a_reassembled_buffer_is_consumed_not_given_again() -> None:
    """A packet that breaks its decoder after the buffer held a partial one: the packets
    before it are not decoded twice and the flow is not stuck on the broken one (before,
    every later segment re-decoded the same bytes and raised again). The decoder reports the
    broken packet and returns the packets around it from the same call (before the decoders
    returned problems, the call raised: crane/a was lost and crane/c came a segment late)."""
    from cranewatch.protocols.mqtt import MqttDecoder

    decoder = MqttDecoder(FlowContext("10.20.7.20", 40000, "10.20.0.50", 1883, "tcp", "t.pcap"))
    first, bad, after = _publish(b"crane/a"), _publish(b"crane/b", qos_bits=0b110), _publish(b"crane/c")
    assert decoder.feed(True, first[:4], 1.0, 1) == []
    around = decoder.feed(True, first[4:] + bad + after, 2.0, 2)
    assert [e.topic for e in around] == ["crane/a", "crane/c"]  # type: ignore[attr-defined]
    assert [(p.message, p.location.frame if p.location else None) for p in decoder.problems] == [
        ("MQTT: PUBLISH with QoS 3", 2)]
    later = decoder.feed(True, _publish(b"crane/d"), 3.0, 3)
    assert [e.topic for e in later] == ["crane/d"]  # type: ignore[attr-defined]


def test_a_master_sending_malformed_requests_is_a_recon_finding(tmp_path: Path) -> None:
    conversation = Conversation("10.20.7.30", "10.20.7.10")
    frames = conversation.handshake()
    bad = [mbap(1, 1, b"\x03\x00\x00"), read_request(2, 3, 100, 0), mbap(3, 1, b"\x10\x00\x01\x00\x02\x09")]
    for adu in bad:  # frames 4, 6, 8, each answered with exception 3 (illegal data value)
        frames.append(conversation.send(True, adu))
        frames.append(conversation.send(False, mbap(int.from_bytes(adu[:2], "big"), 1, b"\x83\x03")))
    capture = write(tmp_path / "fuzzing.pcap", pcap_bytes(frames))
    result = run_all(capture)
    (finding,) = [f for f in result.findings if "malformed Modbus request" in f.title]
    assert finding.severity.name == "MEDIUM" and finding.count == 3
    assert (finding.src, finding.dst) == ("10.20.7.30", "10.20.7.10:502")
    assert finding.evidence[0].frames == (4, 6, 8)
    assert len([w for w in result.warnings if w.kind == "decode"]) == 3


@pytest.mark.parametrize("fast_path", [True, False])
def test_an_answer_from_another_unit_is_not_the_answer(tmp_path: Path, fast_path: bool) -> None:
    """Found by comparing both decode paths on fuzzed conversations: the fast path paired an
    answer from unit 255 with a request to unit 1 (one series), the slow path did not (a
    second series, of unit 255, without requests). Neither pairs it now, as tshark's unit
    column would make an analyst expect."""
    capture = polls(tmp_path / "polls.pcap", read_request(2, 3, 100, 1), read_response(2, 3, [42], unit=255))
    recorder = Recorder()
    analyze([capture], sinks=[recorder], fast_path=fast_path)
    (series,) = recorder.series
    assert (series.unit_id, series.frame.tolist(), series.requests, series.unanswered) == (1, [5, 9], 3, 1)
    (answer,) = [e for e in recorder.events if getattr(e, "unit_id", None) == 255]
    assert (answer.frame, answer.request_frame, answer.values) == (7, None, (42,))


class Everything(Recorder):
    """Series and events as comparable values."""

    def on_event(self, event: Any) -> None:
        self.events.append(repr(event))

    def on_series(self, series: Any) -> None:
        self.series.append((series.master, series.slave, series.unit_id, series.function,
                            series.address, series.quantity, series.ts.tolist(),
                            series.frame.tolist(), series.values.tolist(), series.requests,
                            series.exceptions, series.unanswered))


@pytest.mark.parametrize("family", ["modbus", "modbus-polling"])
def test_fast_and_slow_paths_agree_on_fuzzed_modbus(tmp_path: Path, family: str) -> None:
    for i in range(120):
        rng = random.Random(f"paths-{i}")
        fam = FAMILY[family]
        capture = write(tmp_path / "paths.pcap", pcap_bytes(frames_of(fam, fam.messages(rng), rng)))
        batch = rng.choice((5, 16, 64, 65536))  # small batches carry requests from batch to batch
        fast, slow = Everything(), Everything()
        fast_result = analyze([capture], sinks=[fast], fast_path=True, batch_packets=batch)
        slow_result = analyze([capture], sinks=[slow], fast_path=False, batch_packets=batch)
        assert fast.series == slow.series, i
        assert fast.events == slow.events, i
        assert [str(w) for w in fast_result.warnings] == [str(w) for w in slow_result.warnings], i


@pytest.mark.parametrize("head", [
    b"POST /upload HTTP/1.1\r\nHost: tos\r\nContent-Length: 9999999999\xb9\r\n\r\n",  # superscript 1
    b"HTTP/1.1 2\xb2\xb3 OK\r\nContent-Length: 3\r\n\r\nabc",  # superscript 2 and 3 as status
])
def test_unicode_digits_in_http_are_not_numbers(tmp_path: Path, head: bytes) -> None:
    """Found by the long run (pcapng #4764): latin-1 header text passed ``str.isdigit`` with
    "¹", then ``int`` raised ValueError inside the decoder (an internal failure, exit 70 before
    issue 19). Now it is a located decode warning."""
    fam = FAMILY["http"]
    capture = write(tmp_path / "http.pcap", pcap_bytes(frames_of(fam, [(b"HTTP" not in head[:4], head)],
                                                               random.Random(1))))
    result = run_all(capture)
    assert [(w.kind, w.frame) for w in result.warnings] == [("decode", 4)]
    assert "is not a number" in result.warnings[0].message or "status line" in result.warnings[0].message


def test_s7_block_names_want_ascii_digits() -> None:
    from cranewatch.protocols.s7comm import parse_block_name

    assert parse_block_name("_0800001P") == "OB1"
    assert parse_block_name("_08\u00b90001P") is None
