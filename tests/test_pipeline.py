"""The pipeline: fast and slow Modbus paths agree, series fold correctly, captures merge in
time order, input problems become located warnings, and the result document adds up."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cranewatch.detect import adapt
from cranewatch.flows import FlowSummary
from cranewatch.model import Finding, Severity, finding_id
from cranewatch.pipeline import Analysis, analyze
from cranewatch.protocols import registry
from cranewatch.protocols.base import Event
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse, RegisterSeries
from modbus_capture import (
    ACK,
    Conversation,
    mbap,
    read_request,
    read_response,
    udp_frame,
    write_pcap,
)


class Recorder:
    def __init__(self, findings: list[Finding] | None = None) -> None:
        self.events: list[Event] = []
        self.flows: list[FlowSummary] = []
        self.series: list[RegisterSeries] = []
        self.findings = findings or []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_series(self, series: RegisterSeries) -> None:
        self.series.append(series)

    def on_flow_end(self, flow: FlowSummary) -> None:
        self.flows.append(flow)

    def finish(self) -> list[Finding]:
        return self.findings


def polling_capture(path: Path, seed: int = 7) -> Path:
    """Three masters polling two PLCs, with the irregular things real polling has.

    Transaction ids reused before an answer, unanswered requests, exception answers, writes,
    several PDUs in a segment, a PDU split over two segments, a retransmission and a
    reconnect; between them long runs of plain one-PDU-per-segment reads.
    """
    rng = random.Random(seed)
    conversations = [
        Conversation(master, plc, client_port=41000 + i, client_mac=f"02:00:00:00:01:{i:02x}",
                     server_mac=f"02:00:00:00:02:{j:02x}")
        for i, master in enumerate(("10.20.7.20", "10.20.7.30", "10.20.0.50"))
        for j, plc in enumerate(("10.20.7.10", "10.20.7.11"))
    ]
    frames: list[bytes] = []
    for c in conversations:
        frames += c.handshake()
    tid = dict.fromkeys(range(len(conversations)), 0)
    for step in range(1500):
        k = step % len(conversations)
        c = conversations[k]
        tid[k] = (tid[k] + 1) & 0xFFFF
        t = tid[k]
        fc, address, quantity = [(4, 0, 12), (2, 0, 7), (3, 100, 4), (1, 5, 3)][t % 4]
        values = [rng.randrange(2) for _ in range(quantity)] if fc <= 2 else \
            [rng.randrange(65536) for _ in range(quantity)]
        event = rng.random()
        if event < 0.01:  # unanswered
            frames.append(c.send(True, read_request(t, fc, address, quantity)))
        elif event < 0.02:  # exception answer
            frames.append(c.send(True, read_request(t, fc, address, quantity)))
            frames.append(c.send(False, mbap(t, 1, bytes([fc | 0x80, 2]))))
        elif event < 0.03:  # the id reused before the answer
            frames.append(c.send(True, read_request(t, fc, address, quantity)))
            frames.append(c.send(True, read_request(t, 3, 200, 2)))
            frames.append(c.send(False, read_response(t, 3, [1, 2])))
        elif event < 0.04:  # a write
            frames.append(c.send(True, mbap(t, 1, bytes.fromhex("06 0010 0100"))))
            frames.append(c.send(False, mbap(t, 1, bytes.fromhex("06 0010 0100"))))
        elif event < 0.05:  # two requests in one segment, answers in two
            frames.append(c.send(True, read_request(t, fc, address, quantity)
                                 + read_request(t + 1000, 4, 0, 1)))
            frames.append(c.send(False, read_response(t, fc, values)))
            frames.append(c.send(False, read_response(t + 1000, 4, [9])))
        elif event < 0.06:  # a response split over two segments
            frames.append(c.send(True, read_request(t, fc, address, quantity)))
            answer = read_response(t, fc, values)
            frames.append(c.send(False, answer[:5]))
            frames.append(c.send(False, answer[5:]))
        elif event < 0.065:  # a retransmitted request
            request = read_request(t, fc, address, quantity)
            seq = c.seq[True]
            frames.append(c.send(True, request))
            frames.append(c.frame(True, 0x18, request, seq=seq))
            frames.append(c.send(False, read_response(t, fc, values)))
        elif event < 0.068:  # reconnect from a new port
            frames += c.close()
            c.client_port += 100
            frames += c.handshake()
        else:
            frames.append(c.send(True, read_request(t, fc, address, quantity)))
            frames.append(c.send(False, read_response(t, fc, values)))
            if rng.random() < 0.5:
                frames.append(c.send(True, b"", ACK))
        if step % 97 == 0:
            frames.append(udp_frame("10.20.7.30", "10.20.0.8", 5353, 53, bytes.fromhex(
                "1234010000010000000000000377777707657861 6d706c6503636f6d0000010001".replace(" ", ""))))
    return write_pcap(path, frames, step=0.001)


def series_rows(recorder: Recorder) -> list[tuple[Any, ...]]:
    return [(s.master, s.slave, s.unit_id, s.function, s.address, s.quantity, s.requests,
             s.exceptions, s.unanswered, s.ts.tolist(), s.frame.tolist(), s.values.tolist())
            for s in recorder.series]


@pytest.mark.parametrize("batch", [64, 1000, 65536])
def test_fast_and_slow_paths_give_identical_events_and_series(tmp_path: Path, batch: int) -> None:
    path = polling_capture(tmp_path / "poll.pcap")
    fast, slow = Recorder(), Recorder()
    fast_result = Analysis([fast], fast_path=True).run([path], batch_packets=batch)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=batch)
    if batch < 65536:  # one batch: nothing is known about a flow before it, all goes slow
        assert fast_result.events.get("modbus_fast_pdus", 0) > 1000
    assert slow_result.events.get("modbus_fast_pdus", 0) == 0
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert fast_result.modbus_masters == slow_result.modbus_masters
    assert fast_result.modbus_slaves == slow_result.modbus_slaves
    assert [f.packets for f in fast.flows] == [f.packets for f in slow.flows]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_and_slow_paths_agree_whatever_the_irregularities(tmp_path: Path, seed: int) -> None:
    path = polling_capture(tmp_path / "poll.pcap", seed=seed)
    fast, slow = Recorder(), Recorder()
    Analysis([fast]).run([path], batch_packets=37)
    Analysis([slow], fast_path=False).run([path], batch_packets=37)
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)


def writes_capture(path: Path) -> Path:
    """A master polling and writing with every write code the fast path decodes.

    FC 5 with on, off and a non-standard value; FC 6; FC 15 and 16 with their data; an FC 16
    request whose byte count does not match its quantity (malformed: the slow path's warning);
    an exception answer to a write; each between runs of plain reads, over a few batches.
    """
    c = Conversation("10.20.7.20", "10.20.7.10")
    frames = c.handshake()
    writes = [
        "05 0010 FF00", "05 0011 0000", "05 0012 1234", "06 0020 BEEF",
        "0F 0030 000A 02 5501", "10 0040 0003 06 0001 0002 FFFF",
    ]
    malformed, refused = "10 0050 0002 02 0001", "10 0060 0001 02 0007"
    for step in range(400):
        tid = step + 1
        if step % 9 == 4:
            pdu = bytes.fromhex(malformed if step == 202 else refused if step == 301
                                else writes[(step // 9) % len(writes)])
            frames.append(c.send(True, mbap(tid, 1, pdu)))
            if pdu[0] == 16 and pdu[2] == 0x60:  # refused
                frames.append(c.send(False, mbap(tid, 1, bytes([0x90, 2]))))
            elif pdu[0] in (15, 16):  # echo of address and quantity
                frames.append(c.send(False, mbap(tid, 1, pdu[:5])))
            else:
                frames.append(c.send(False, mbap(tid, 1, pdu)))
        else:
            frames.append(c.send(True, read_request(tid, 3, 100, 3)))
            frames.append(c.send(False, read_response(tid, 3, [step, 7, step % 5])))
    return write_pcap(path, frames, step=0.001)


@pytest.mark.parametrize("batch", [29, 64, 500])
def test_fast_path_decodes_every_write_code_as_the_slow_path_does(tmp_path: Path,
                                                                  batch: int) -> None:
    path = writes_capture(tmp_path / "writes.pcap")
    fast, slow = Recorder(), Recorder()
    fast_result = Analysis([fast]).run([path], batch_packets=batch)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=batch)
    assert fast_result.events["modbus_fast_pdus"] > 500  # of 800 PDUs
    writes = [e for e in fast.events if isinstance(e, ModbusRequest | ModbusResponse)
              and e.function in (5, 6, 15, 16)]
    assert {(e.kind, e.function) for e in writes} == {
        (kind, fc) for kind in ("modbus_request", "modbus_response") for fc in (5, 6, 15, 16)}
    odd_coil = next(e for e in writes if isinstance(e, ModbusRequest) and e.address == 0x12)
    assert odd_coil.values == (1,) and odd_coil.detail == {"raw_value": 0x1234}
    echo = next(e for e in writes if isinstance(e, ModbusResponse) and e.address == 0x40)
    assert (echo.quantity, echo.values) == (3, ())
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert [w.message for w in fast_result.warnings] == [w.message for w in slow_result.warnings]
    assert any("FC 16 request" in w.message for w in fast_result.warnings)


@pytest.mark.parametrize(("capture", "fast_pdus"), [
    ("ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap", 5000),
    ("ICS-Security-Tools/pcaps/ModbusTCP/mb2.pcap", 1000),
    ("zeek/testing/btest/Traces/modbus/modbusBig.pcap", 3000),
    ("ICS-Security-Tools/pcaps/ModbusTCP/Modbus/modbus_test.pcap", 1000),
])
def test_fast_and_slow_paths_agree_on_public_captures(shared_data: Path, capture: str,
                                                      fast_pdus: int) -> None:
    path = shared_data / "pcaps" / capture
    fast, slow = Recorder(), Recorder()
    result = Analysis([fast]).run([path], batch_packets=100)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=100)
    assert result.events["modbus_fast_pdus"] > fast_pdus
    # The fast path folds other protocols' polling that gives no fact (registry.FoldRun):
    # counted, not given to sinks. Everything else comes out the same, in the same order.
    assert [e for e in fast.events if not _foldable(e)] == [e for e in slow.events if not _foldable(e)]
    assert all(not adapt.facts_from_event(e) for e in slow.events if e not in fast.events)
    kinds = {t.kind for spec in registry.PROTOCOLS.values()
             if isinstance(spec.run, type) and issubclass(spec.run, registry.FoldRun) for t in spec.adapters}
    assert {k: v for k, v in result.events.items() if k in kinds} == {
        k: v for k, v in slow_result.events.items() if k in kinds}
    assert series_rows(fast) == series_rows(slow)


def _foldable(event: Event) -> bool:
    """An event a protocol's fold may stand for: of a folding protocol, giving no fact."""
    folding = {type(run).__module__ for run in registry.runs() if isinstance(run, registry.FoldRun)}
    return type(event).__module__ in folding and not adapt.facts_from_event(event)


def test_series_hold_the_values_read(tmp_path: Path) -> None:
    c = Conversation("10.20.7.20", "10.20.7.10")
    frames = c.handshake()  # 1-3
    frames += [c.send(True, read_request(1, 4, 1, 3)),  # 4
               c.send(False, read_response(1, 4, [412, 1830, 65535])),  # 5
               c.send(True, read_request(2, 2, 0, 7)),  # 6
               c.send(False, read_response(2, 2, [1, 0, 0, 1, 0, 0, 0])),  # 7
               c.send(True, read_request(3, 4, 1, 3)),  # 8
               c.send(False, read_response(3, 4, [415, 1829, 0])),  # 9
               c.send(True, read_request(4, 4, 1, 3)),  # 10: never answered
               c.send(True, read_request(5, 2, 0, 7)),  # 11
               c.send(False, mbap(5, 1, bytes([0x82, 4])))]  # 12: exception
    path = write_pcap(tmp_path / "s.pcap", frames, start=1000.0, step=0.5)
    rec = Recorder()
    analyze([path], sinks=[rec])
    by_function = {s.function: s for s in rec.series}
    ir = by_function[4]
    assert (ir.master, ir.slave, ir.unit_id, ir.address, ir.quantity, ir.table) == (
        "10.20.7.20", "10.20.7.10", 1, 1, 3, "IR")
    assert ir.values.tolist() == [[412, 1830, 65535], [415, 1829, 0]]
    assert ir.frame.tolist() == [5, 9] and ir.ts.tolist() == [1002.0, 1004.0]
    assert (ir.requests, ir.exceptions, ir.unanswered) == (3, 0, 1)
    di = by_function[2]
    assert di.values.tolist() == [[1, 0, 0, 1, 0, 0, 0]] and (di.requests, di.exceptions) == (2, 1)
    # Reads are folded: only the exception is an event.
    (event,) = [e for e in rec.events if isinstance(e, ModbusRequest | ModbusResponse)]
    assert isinstance(event, ModbusResponse) and (event.exception_code, event.frame) == (4, 12)


def test_several_captures_are_read_as_one_in_time_order(tmp_path: Path) -> None:
    a = Conversation("10.20.7.20", "10.20.7.10")
    b = Conversation("10.20.7.30", "10.20.7.10", client_port=42000)
    a_frames = [a.send(True, mbap(i, 1, bytes.fromhex("06 0001 0002"))) for i in range(1, 6)]
    b_frames = [b.send(True, mbap(i, 1, bytes.fromhex("06 0001 0003"))) for i in range(1, 6)]
    first = write_pcap(tmp_path / "a.pcap", a_frames, start=100.0, step=1.0)  # 100, 101, ...
    second = write_pcap(tmp_path / "b.pcap", b_frames, start=100.5, step=1.0)  # 100.5, ...
    rec = Recorder()
    result = Analysis([rec]).run([second, first], batch_packets=2)
    order = [(Path(e.source).name, e.frame, e.ts) for e in rec.events]
    assert [t for _, _, t in order] == sorted(t for _, _, t in order)
    assert order[:3] == [("a.pcap", 1, 100.0), ("b.pcap", 1, 100.5), ("a.pcap", 2, 101.0)]
    assert [i.packets for i in result.inputs] == [5, 5]
    assert result.packets == 10


def test_malformed_pdu_is_a_warning_with_file_and_frame(tmp_path: Path) -> None:
    c = Conversation("10.20.7.20", "10.20.7.10")
    frames = c.handshake()
    frames.append(c.send(True, mbap(1, 1, bytes.fromhex("10 0000 0002 04 0001"))))  # 4: short
    frames.append(c.send(True, read_request(2, 3, 0, 1)))  # 5
    path = write_pcap(tmp_path / "bad.pcap", frames)
    rec = Recorder()
    result = analyze([path], sinks=[rec])
    (warning,) = result.warnings
    assert (warning.file, warning.frame, warning.kind) == (str(path), 4, "decode")
    assert "FC 16 request" in warning.message
    (malformed,) = [e for e in rec.events if isinstance(e, ModbusRequest)]
    assert malformed.frame == 4 and "malformed" in malformed.detail
    assert result.complete  # the capture itself was read whole
    assert sum(s.requests for s in rec.series) == 1  # frame 5 still decoded


def test_truncated_capture_keeps_what_was_read(tmp_path: Path) -> None:
    c = Conversation("10.20.7.20", "10.20.7.10")
    frames = [*c.handshake(), c.send(True, read_request(1, 3, 0, 1)),
              c.send(False, read_response(1, 3, [5]))]
    path = write_pcap(tmp_path / "cut.pcap", frames)
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record loses its end
    result = analyze([path])
    assert not result.complete
    capture_warnings = [w for w in result.warnings if w.kind == "capture"]
    assert capture_warnings and capture_warnings[0].file == str(path)
    assert capture_warnings[0].frame == 5
    assert result.inputs[0].packets == 4
    assert result.modbus_masters[0].functions == ((3, 1),)


def test_not_a_capture_is_reported_and_other_inputs_still_analysed(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a capture\n")
    c = Conversation("10.20.7.20", "10.20.7.10")
    good = write_pcap(tmp_path / "good.pcap", [*c.handshake()])
    result = analyze([text, good])
    assert [i.complete for i in result.inputs] == [False, True]
    assert "not a packet capture" in result.inputs[0].warnings[0]
    assert result.packets == 3


def test_result_document_hosts_protocols_and_findings(tmp_path: Path) -> None:
    path = polling_capture(tmp_path / "poll.pcap")
    finding = Finding(id=finding_id("test", None, "x"), rule="test", category="recon",
                      severity=Severity.HIGH, title="t", first_seen=1.0, last_seen=2.0)
    low = Finding(id=finding_id("test", None, "y"), rule="test", category="recon",
                  severity=Severity.LOW, title="t", first_seen=0.5, last_seen=2.0)
    rec = Recorder([low, finding])
    result = analyze([path], sinks=[rec])
    assert result.findings == (finding, low)  # most severe first
    assert result.max_severity() == Severity.HIGH
    masters = {h.mac: h for h in result.hosts}
    assert masters["02:00:00:00:01:00"].ips == ("10.20.7.20",)
    assert sum(h.packets for h in result.hosts) == result.packets
    protocols = {p.protocol: p for p in result.protocols}
    assert protocols["modbus"].clients == 3 and protocols["modbus"].servers == 2
    assert sum(p.packets for p in result.protocols) == result.packets
    assert result.flows == len(rec.flows)
    ranges = {r[:4] for r in result.modbus_masters[0].ranges}
    assert ("IR", 0, 12, "read") in ranges and ("DI", 0, 7, "read") in ranges
    assert ("HR", 16, 1, "write") in ranges
    assert len(rec.series) == result.series
    assert np.all(np.diff(rec.series[0].ts) >= 0)


def test_flow_table_cap_ends_the_quietest_flows_with_a_warning(tmp_path: Path) -> None:
    from cranewatch.flows import FlowTable

    frames = []
    for i in range(10):
        c = Conversation(f"10.20.7.{40 + i}", "10.20.7.10", client_port=43000 + i)
        frames += c.handshake()
    path = write_pcap(tmp_path / "many.pcap", frames)
    rec = Recorder()
    result = Analysis([rec], flow_table=FlowTable(max_flows=3)).run([path], batch_packets=6)
    assert len(rec.flows) == 10  # every flow still reported, some of them early
    (warning,) = [w for w in result.warnings if w.kind == "limit"]
    assert "more than 3 flows" in warning.message


def test_bytes_held_behind_holes_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cranewatch.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_HELD_BYTES", 20)
    c = Conversation("10.20.7.20", "10.20.7.10")
    frames = c.handshake()
    lost = read_request(1, 3, 0, 1)
    seq = c.seq[True]
    c.seq[True] += len(lost)  # this segment is never captured
    frames += [c.send(True, read_request(t, 3, 0, 1)) for t in range(2, 5)]  # 36 bytes held
    frames += [c.frame(True, 0x10, b"")] * 20  # 20 s of ACKs: a sweep comes
    path = write_pcap(tmp_path / "hole.pcap", frames, step=1.0)
    rec = Recorder()
    result = Analysis([rec], fold_reads=False).run([path], batch_packets=4)
    assert any(w.kind == "limit" and "TCP holes" in w.message for w in result.warnings)
    requests = [e for e in rec.events if isinstance(e, ModbusRequest)]
    assert [e.transaction_id for e in requests] == [2, 3, 4]
    assert seq  # the lost request's sequence number was skipped


def test_merge_survives_a_clock_stepping_back(tmp_path: Path) -> None:
    a = Conversation("10.20.7.20", "10.20.7.10")
    b = Conversation("10.20.7.30", "10.20.7.10", client_port=42000)
    first = write_pcap(tmp_path / "a.pcap", [a.send(True, b"x") for _ in range(6)], start=100.0)
    second = write_pcap(tmp_path / "b.pcap", [b.send(True, b"y") for _ in range(6)], start=100.02)
    data = bytearray(first.read_bytes())
    # Record 4 of a.pcap claims a time before record 3 (seconds field of its header).
    records_start = 24
    size = 16 + len(a.send(True, b"x"))
    at = records_start + 3 * size
    data[at : at + 4] = (99).to_bytes(4, "little")
    first.write_bytes(bytes(data))
    result = Analysis([]).run([first, second], batch_packets=2)
    assert result.packets == 12 and [i.packets for i in result.inputs] == [6, 6]


def test_arp_frames_become_events_in_capture_order(tmp_path: Path) -> None:
    from cranewatch.sources.pcapwrite import ETHERTYPE_ARP, ethernet_frame

    def arp(op: int, smac: str, sip: str, tmac: str, tip: str) -> bytes:
        body = (bytes.fromhex("0001 0800 06 04".replace(" ", "")) + op.to_bytes(2, "big")
                + bytes.fromhex(smac.replace(":", "")) + bytes(map(int, sip.split(".")))
                + bytes.fromhex(tmac.replace(":", "")) + bytes(map(int, tip.split("."))))
        return ethernet_frame("ff:ff:ff:ff:ff:ff", smac, ETHERTYPE_ARP, body, pad=True)

    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = [arp(1, "02:00:00:00:00:30", "10.20.7.30", "00:00:00:00:00:00", "10.20.7.10"),
              arp(2, "02:00:00:00:00:10", "10.20.7.10", "02:00:00:00:00:30", "10.20.7.30"),
              c.send(True, mbap(1, 1, bytes.fromhex("06 0001 0002"))),
              arp(2, "02:00:00:00:00:66", "10.20.7.10", "02:00:00:00:00:30", "10.20.7.30")]
    path = write_pcap(tmp_path / "arp.pcap", frames)
    rec = Recorder()
    result = analyze([path], sinks=[rec])
    kinds = [(e.kind, e.frame) for e in rec.events]
    assert [f for _, f in kinds] == [1, 2, 3, 4]
    replies = [e for e in rec.events if e.kind.startswith("arp") and e.frame in (2, 4)]
    assert [e.sender_mac for e in replies] == ["02:00:00:00:00:10", "02:00:00:00:00:66"]
    hosts = {h.mac for h in result.hosts}
    assert "02:00:00:00:00:66" in hosts  # an ARP-only sender is a host too


def test_a_finished_decoder_gets_no_more_bytes(tmp_path: Path) -> None:
    from cranewatch.protocols.base import DecoderSpec, FlowContext

    fed: list[int] = []

    class OneShot:
        finished = False

        def __init__(self, context: FlowContext) -> None:
            pass

        def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
            fed.append(frame)
            OneShot.finished = True
            return []

        def gap(self, from_client: bool) -> None:
            pass

    spec = DecoderSpec(name="oneshot", transport="tcp", ports=frozenset({7777}), factory=OneShot)
    c = Conversation("10.20.7.30", "10.20.7.10", server_port=7777)
    frames = [*c.handshake()] + [c.send(True, b"hello") for _ in range(5)]
    path = write_pcap(tmp_path / "one.pcap", frames)
    Analysis([], decoders=[spec]).run([path], batch_packets=100)
    assert fed == [4]  # frames 5-8 are in the same batch: not fed either


def test_fragmented_udp_datagram_reaches_its_decoder_whole(tmp_path: Path) -> None:
    from cranewatch.protocols.base import DecoderSpec, FlowContext
    from cranewatch.sources.pcapwrite import (
        ETHERTYPE_IPV4,
        ethernet_frame,
        ipv4_address,
        ipv4_packet,
        udp_datagram,
    )

    got: list[tuple[bool, bytes, int]] = []

    class Record:
        def __init__(self, context: FlowContext) -> None:
            pass

        def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
            got.append((from_client, data, frame))
            return []

        def gap(self, from_client: bool) -> None:
            pass

    spec = DecoderSpec(name="record", transport="udp", ports=frozenset({7778}), factory=Record)
    message = bytes(range(256)) * 8  # 2048 bytes: three fragments
    datagram = udp_datagram(40000, 7778, message, ipv4_address("10.20.7.30"),
                            ipv4_address("10.20.0.9"))
    frames = []
    for start in range(0, len(datagram), 800):
        part = datagram[start : start + 800]
        packet = ipv4_packet("10.20.7.30", "10.20.0.9", 17, part, ident=77, dont_fragment=False,
                             more_fragments=start + 800 < len(datagram), fragment_offset=start)
        frames.append(ethernet_frame("02:00:00:00:00:09", "02:00:00:00:00:30", ETHERTYPE_IPV4,
                                     packet))
    path = write_pcap(tmp_path / "frag.pcap", frames)
    Analysis([], decoders=[spec]).run([path])
    assert got == [(True, message, 3)]


def test_tcp_in_ipv4_fragments_is_reported_once_per_flow_with_its_frames(tmp_path: Path) -> None:
    from cranewatch.sources.pcapwrite import (
        ETHERTYPE_IPV4,
        ethernet_frame,
        ipv4_address,
        ipv4_packet,
        tcp_segment,
    )

    def fragmented(sport: int, seq: int, ident: int) -> list[bytes]:
        # a write request hidden in three fragments: a monitor reading packets alone sees none
        segment = tcp_segment(sport, 502, seq, 1, 0x18, mbap(ident, 1, bytes.fromhex("06 0001 0003")) * 40,
                              src=ipv4_address("10.20.7.66"), dst=ipv4_address("10.20.7.10"))
        out = []
        for start in range(0, len(segment), 200):
            packet = ipv4_packet("10.20.7.66", "10.20.7.10", 6, segment[start : start + 200],
                                 ident=ident, dont_fragment=False,
                                 more_fragments=start + 200 < len(segment), fragment_offset=start)
            out.append(ethernet_frame("02:00:00:00:00:10", "02:00:00:00:00:66", ETHERTYPE_IPV4, packet))
        return out

    first = fragmented(40000, 1000, 1)
    frames = first + fragmented(40000, 3000, 2) + fragmented(40001, 1000, 3)
    path = write_pcap(tmp_path / "tcpfrag.pcap", frames)
    result = Analysis([], decoders=[]).run([path])
    reported = [w for w in result.warnings if "fragments" in w.message]
    # once per flow: the second segment of the first flow is not reported again
    assert [w.frame for w in reported] == [len(first), 3 * len(first)]
    assert len(first) == 3
    assert "tcp 10.20.7.66:40000 -> 10.20.7.10:502" in reported[0].message
    assert "(frames 1, 2, 3)" in reported[0].message
    assert "(frames 7, 8, 9)" in reported[1].message
    assert result.complete  # the capture itself is whole


def test_captures_interleaved_packet_by_packet_are_merged_in_whole_pieces(
        tmp_path: Path) -> None:
    a = Conversation("10.20.7.20", "10.20.7.10")
    b = Conversation("10.20.7.30", "10.20.7.10", client_port=42000)
    frames_a = [a.send(True, mbap(i, 1, bytes.fromhex("06 0001 0002"))) for i in range(1, 301)]
    frames_b = [b.send(True, mbap(i, 1, bytes.fromhex("06 0001 0003"))) for i in range(1, 301)]
    first = write_pcap(tmp_path / "a.pcap", frames_a, start=100.0, step=1.0)
    second = write_pcap(tmp_path / "b.pcap", frames_b, start=100.5, step=1.0)
    rec = Recorder()
    result = Analysis([rec]).run([first, second], batch_packets=200)
    assert result.packets == 600
    per_file = {name: [e.frame for e in rec.events if Path(e.source).name == name]
                for name in ("a.pcap", "b.pcap")}
    assert per_file == {"a.pcap": list(range(1, 301)), "b.pcap": list(range(1, 301))}
    # Between the captures, order holds to within one batch (200 s here).
    times = [e.ts for e in rec.events]
    assert all(later > earlier - 200 for earlier, later in itertools.pairwise(times))


def test_zeek_logs_are_an_input_too_and_agree_with_the_capture(shared_data: Path) -> None:
    """Zeek's own logs of a trace and cranewatch's decode of the trace: the same Modbus roles."""
    logs = shared_data / "zeek-logs/scripts.base.protocols.modbus.modbus_and_non_modbus_on_port_502"
    trace = shared_data / "pcaps/zeek/testing/btest/Traces/modbus/modbus-and-non-modbus-p502.pcap"
    from_logs = analyze([logs])
    from_trace = analyze([trace])
    (source,) = from_logs.inputs
    assert (source.format, source.complete, source.events) == ("zeek", True, 20)
    assert {w.kind for w in from_logs.warnings} == {"zeek"}  # masked test timestamps, said so
    assert [(m.address, m.peers, m.functions) for m in from_logs.modbus_masters] == \
        [(m.address, m.peers, m.functions) for m in from_trace.modbus_masters] == \
        [("10.0.0.9", ("10.0.0.3",), ((1, 2), (3, 1), (5, 2), (6, 1)))]


def test_the_library_leaves_the_garbage_collector_alone(tmp_path: Path) -> None:
    """GC tuning is process-wide: the command line's choice (``runtime``), not the library's."""
    import gc

    path = polling_capture(tmp_path / "poll.pcap")
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []

    class Look(Recorder):
        def on_flow_end(self, flow: FlowSummary) -> None:
            seen.append(gc.get_threshold())
            super().on_flow_end(flow)

    Analysis([Look()]).run([path])
    assert seen and set(seen) == {before}
    assert gc.get_freeze_count() == 0


def test_the_command_lines_gc_settings_come_back_after_concurrent_runs() -> None:
    import gc
    import threading

    from cranewatch.runtime import GC_YOUNG_THRESHOLD, fewer_collections

    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []
    started = threading.Barrier(2)

    def run() -> None:
        with fewer_collections():
            started.wait()  # both inside at once, as the web server may run them
            seen.append(gc.get_threshold())

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert len(seen) == 2 and all(t[0] >= GC_YOUNG_THRESHOLD for t in seen)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
