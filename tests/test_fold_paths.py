"""Batch paths that fold what no consumer reads (``registry.FoldRun``): S7 read/write var,
OPC UA services, EtherNet/IP explicit messages.

A folded PDU keeps its decoder's state and is counted as the event it stands for, never
built; everything a detector, baseline or process check reads comes out as on the decoders'
way (``fast_path=False``), checked here on real captures and against tshark's fields.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cranewatch.detect import adapt
from cranewatch.detect.base import Context
from cranewatch.detect.engine import DetectionSink
from cranewatch.detect.facts import PlcCommand, where
from cranewatch.pipeline import Analysis
from cranewatch.protocols import registry
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext
from cranewatch.protocols.framing import endpoints
from cranewatch.protocols.registry import (
    IGNORED,
    Adapter,
    FoldRun,
    ProtocolSpec,
    register_protocol,
    unregister_protocol,
)
from modbus_capture import ACK, PSH, Conversation, write_pcap

TSHARK = shutil.which("tshark")


class _Facts:
    """A sink that keeps every fact the events give (what any detector could read), the
    events themselves that give facts, and nothing else."""

    def __init__(self) -> None:
        self.facts: list[str] = []

    def on_event(self, event: Any) -> None:
        for fact in adapt.facts_from_event(event):
            self.facts.append(repr(fact))

    def on_series(self, series: Any) -> None:
        return None

    def on_flow_end(self, flow: Any) -> None:
        return None

    def finish(self) -> list[Any]:
        return []


def _run(path: Path, fast: bool) -> tuple[Any, _Facts]:
    sink = _Facts()
    return Analysis([sink], fast_path=fast).run([path]), sink


def _protocol_counts(events: dict[str, int], prefixes: tuple[str, ...]) -> dict[str, int]:
    return {k: v for k, v in events.items() if k.startswith(prefixes) and not k.endswith("_pdus")}


def _tshark(path: Path, *args: str) -> list[str]:
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-r", str(path), *args], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return out.split("\n")


def _same_as_the_decoders_way(path: Path, prefixes: tuple[str, ...], folded: str) -> Any:
    fast, fast_facts = _run(path, True)
    slow, slow_facts = _run(path, False)
    assert fast.events.get(folded, 0) > 0  # the batch path did take some
    assert folded not in slow.events
    assert _protocol_counts(fast.events, prefixes) == _protocol_counts(slow.events, prefixes)
    assert fast_facts.facts == slow_facts.facts
    assert [(w.message, w.frame) for w in fast.warnings] == [(w.message, w.frame) for w in slow.warnings]
    return fast


# ------------------------------------------------------------------------------ real captures

@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_s7_read_and_write_var_are_folded_and_counted_as_tshark_sees_them(shared_data: Path) -> None:
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/s7/s7comm_varservice_libnodavedemo_bench.pcap"
    result = _same_as_the_decoders_way(path, ("s7comm_",), "s7comm_folded_pdus")
    rows = [line.split("\t") for line in _tshark(path, "-Y", "s7comm", "-T", "fields",
                                                  "-e", "s7comm.header.rosctr", "-e", "s7comm.param.func")
            if line]
    jobs = sum(1 for rosctr, _ in rows if rosctr == "1")
    polled = sum(1 for rosctr, func in rows if rosctr in ("1", "3") and func in ("0x04", "0x05"))
    assert result.events["s7comm_job_request"] == jobs == 5003  # 3,000 reads, 2,002 writes, a setup
    assert result.events["s7comm_folded_pdus"] == polled == 10004


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_s7comm_plus_and_empty_data_units_are_folded_and_counted_as_tshark_sees_them(
        shared_data: Path) -> None:
    """TIA Portal uploading OB1 from an S7-1200: S7comm-plus PDUs (protocol id 0x72; tshark
    4.0 has no dissector for them, so counted by the byte after the COTP header) and COTP
    data units without data (7-byte TPKTs) are all folded (before: none)."""
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/s7/S7-1200-Uploading-OB1-TIAV12.pcap"
    result = _same_as_the_decoders_way(path, ("s7comm",), "s7comm_folded_pdus")
    plus = [line for line in _tshark(path, "-Y", "tpkt && cotp.type == 0x0f && tcp.payload[7:1] == 72")
            if line]
    empty = [line for line in _tshark(path, "-Y", "tpkt && cotp.type == 0x0f && tcp.len == 7")
             if line]
    assert result.events["s7commplus_pdu_request"] == len(plus) == 88
    assert result.events["s7comm_folded_pdus"] == len(plus) + len(empty) == 131


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", ["CIP/cip_only.pcap", "EthernetIP/EthernetIP-CIP.pcap"])
def test_cip_explicit_messages_are_folded_and_counted_as_tshark_sees_them(
        shared_data: Path, name: str) -> None:
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps" / name
    result = _same_as_the_decoders_way(path, ("cip_", "enip_"), "enip_folded_pdus")
    services = [int(v, 16) for line in _tshark(path, "-Y", "enip && tcp", "-T", "fields",
                                              "-e", "cip.service")
                for v in line.split(",") if v]
    # every CIP message, the ones inside multiple-service packets too (EthernetIP-CIP.pcap)
    assert result.events["cip_service_request"] == sum(1 for s in services if s < 0x80)
    assert result.events["cip_service_response"] == sum(1 for s in services if s >= 0x80)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_logix_polling_unconnected_sends_and_stacked_encapsulations_are_all_folded(
        shared_data: Path) -> None:
    """EthernetIP-CIP.pcap polls a Logix controller: multiple-service packets of Read Tag
    (0x4C) and Read Modify Write Tag (0x4E, which is forward close only on the connection
    manager), Unconnected Sends (0x52) of Get_Attributes_All, and segments of two
    SendUnitData encapsulations (8,799 in 7,917 segments). Every ENIP segment of it is folded, none left to the
    decoder, and the counts are the decoder's way's (before: 6,409 of 7,917 segments)."""
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/EthernetIP/EthernetIP-CIP.pcap"
    result = _same_as_the_decoders_way(path, ("cip_", "enip_"), "enip_folded_pdus")
    segments = [line for line in _tshark(path, "-Y", "enip && tcp", "-T", "fields",
                                         "-e", "enip.command", "-e", "cip.service") if line]
    assert sum(1 for line in segments if "0x52" in line.split("\t")[1].split(",")) == 218
    assert sum(1 for line in segments if "0x4e" in line.split("\t")[1].split(",")) == 442
    assert sum(1 for line in segments if "," in line.split("\t")[0]) == 410  # two or more encapsulations
    assert result.events["enip_folded_pdus"] == len(segments) == 7917
    encapsulations = sum(len(line.split("\t")[0].split(",")) for line in segments)
    assert result.events["enip_command_request"] + result.events["enip_command_response"] \
        == encapsulations


@pytest.mark.parametrize("name", ["EIP-RebootorRestart.pcap", "EIP-SoftwareDownload.pcap",
                                  "EIP-FirmwareChange.pcap", "EIP-LockPLCAttempt.pcap"])
def test_a_cip_command_among_folded_polling_still_reaches_plc_control(
        shared_data: Path, name: str) -> None:
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/openics" / name
    result = _same_as_the_decoders_way(path, ("cip_", "enip_"), "enip_folded_pdus")
    _, facts = _run(path, True)
    assert any("PlcCommand(" in f and "protocol='enip'" in f for f in facts.facts)
    assert result.events["cip_service_request"] > 0


@pytest.mark.parametrize("name", ["open62541_client-server_mainloop.pcap",
                                  "open62541_client-server_mainloop-no-handshake.pcap",
                                  "opcua_with-gap_with-handshake.pcap"])
def test_opcua_services_are_folded_like_the_decoder_reads_them(shared_data: Path, name: str) -> None:
    path = shared_data / "pcaps/icsnpp-opcua-binary/tests/traces" / name
    _same_as_the_decoders_way(path, ("opcua_",), "opcua_folded_pdus")


def test_s7_mixed_capture_keeps_its_warnings_in_capture_order(shared_data: Path) -> None:
    """mb2.pcap mixes Modbus, S7 and ENIP flows with broken PDUs: the batch paths hand some
    segments to their decoders ahead of the other rows, the warnings still come in capture
    order (as the decoders' way gives them)."""
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/ModbusTCP/mb2.pcap"
    fast = _same_as_the_decoders_way(path, ("s7comm_", "cip_", "enip_"), "s7comm_folded_pdus")
    assert fast.events["enip_folded_pdus"] > 0


# ------------------------------------------------------------------------------ a toy protocol

TOY_PORT = 47998


def _toy_module() -> types.ModuleType:
    module = types.ModuleType("cranewatch_test_toy_fold")
    sys.modules[module.__name__] = module

    @dataclass(frozen=True, slots=True, kw_only=True)
    class ToyPollRequest(Event):
        kind: ClassVar[str] = "toyfold_poll_request"
        number: int

    @dataclass(frozen=True, slots=True, kw_only=True)
    class ToyStopRequest(Event):
        kind: ClassVar[str] = "toyfold_stop_request"
        target: str
        polls_before: int

    ToyPollRequest.__module__ = ToyStopRequest.__module__ = module.__name__

    class ToyDecoder:
        """Lines of text: "POLL" (a poll no detector reads) or "STOP <target>"."""

        fed: ClassVar[list[bytes]] = []

        def __init__(self, ctx: FlowContext) -> None:
            self.ctx = ctx
            self.polls = 0  # state a fold must keep as feed does
            self.gaps = 0

        def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
            ToyDecoder.fed.append(data)
            if data == b"POLL\n":
                self.polls += 1
                return [ToyPollRequest(ts=ts, frame=frame, number=self.polls,
                                       **endpoints(self.ctx, from_client))]
            if data.startswith(b"STOP "):
                return [ToyStopRequest(ts=ts, frame=frame, target=data[5:].decode().strip(),
                                       polls_before=self.polls + 100 * self.gaps,
                                       **endpoints(self.ctx, from_client))]
            return []

        def gap(self, from_client: bool) -> None:
            self.gaps += 1

    class ToyRun(FoldRun):
        decoder_type = ToyDecoder

        def fold(self, decoder: Any, from_client: bool, buf: bytes, off: int, size: int,
                 frame: int) -> tuple[str, ...] | None:
            if buf[off:off + size] != b"POLL\n":
                return None
            decoder.polls += 1
            return (ToyPollRequest.kind,)

    def stop_command(event: Any) -> list[PlcCommand]:
        return [PlcCommand(**where(event), protocol="toyfold", operation="cpu-stop",
                           target=f"{event.target}/{event.polls_before}")]

    for name, value in (("ToyPollRequest", ToyPollRequest), ("ToyStopRequest", ToyStopRequest),
                        ("ToyDecoder", ToyDecoder), ("ToyRun", ToyRun),
                        ("stop_command", stop_command)):
        setattr(module, name, value)
    return module


class _Recorder:
    name: ClassVar[str] = "recorder"
    accepts: ClassVar[tuple[type, ...]] = (PlcCommand,)

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def observe(self, fact: Any, ctx: Context) -> None:
        self.seen.append((fact.target, fact.frame))

    def finish(self, ctx: Context) -> list[Any]:
        return []


def test_a_protocol_declares_a_fold_through_the_registry(tmp_path: Path) -> None:
    toy = _toy_module()
    register_protocol(ProtocolSpec(
        name="toyfold", module=toy.__name__, run=toy.ToyRun,
        decoders=(DecoderSpec(name="toyfold", transport="tcp", ports=frozenset({TOY_PORT}),
                              factory=toy.ToyDecoder),),
        adapters={toy.ToyPollRequest: IGNORED,
                  toy.ToyStopRequest: Adapter(toy.stop_command, (PlcCommand,))},
    ))
    try:
        one = Conversation("10.9.0.5", "10.9.0.10", 40001, TOY_PORT)
        frames = [*one.handshake(), one.send(True, b"POLL\n"), one.send(True, b"POLL\n")]
        again = one.frame(True, PSH | ACK, b"POLL\n", seq=one.seq[True] - 5)  # a retransmission
        frames += [again, one.send(True, b"STOP hoist\n"), one.send(True, b"POLL\n"),
                   one.send(True, b"noise\n"), one.send(True, b"POLL\n"), one.send(True, b"STOP trolley\n")]
        # a connection the capture joined in the middle (no handshake): a gap first
        two = Conversation("10.9.0.6", "10.9.0.10", 40002, TOY_PORT)
        frames += [two.send(True, b"POLL\n"), two.send(True, b"STOP spreader\n")]
        capture = write_pcap(tmp_path / "toy.pcap", frames)
        runs = {}
        for fast in (True, False):
            toy.ToyDecoder.fed.clear()
            recorder = _Recorder()
            result = Analysis([DetectionSink(Context(), [recorder])], fast_path=fast).run([capture])
            runs[fast] = (recorder.seen, result.events, list(toy.ToyDecoder.fed))
    finally:
        unregister_protocol("toyfold")
        del sys.modules[toy.__name__]
    seen, events, fed = runs[True]
    # the STOPs count the polls before them (the fold kept the decoder's count; the
    # retransmitted POLL is not a poll) and the mid-stream flow's gap
    assert seen == runs[False][0] == [("hoist/2", 7), ("trolley/4", 11), ("spreader/101", 13)]
    assert events["toyfold_poll_request"] == runs[False][1]["toyfold_poll_request"] == 5
    assert events["toyfold_folded_pdus"] == 5 and "toyfold_folded_pdus" not in runs[False][1]
    assert b"POLL\n" not in fed  # folded, never decoded
    assert fed == [b"STOP hoist\n", b"noise\n", b"STOP trolley\n", b"STOP spreader\n"]
    assert runs[False][2].count(b"POLL\n") == 5
    assert "toyfold" not in registry.PROTOCOLS


def test_warnings_come_in_capture_order_when_the_batch_path_feeds_decoders(tmp_path: Path) -> None:
    """S7 flow a has a hole (its rows go the decoders' way, after the batch path), flow b's
    broken segment is fed by the batch path: a's problem (frame 8) is still told first."""
    COTP_CONNECT = bytes.fromhex("0300001611e00000000100c1020100c2020102c0010a")
    a = Conversation("10.9.0.5", "10.9.0.20", 40010, 102)
    b = Conversation("10.9.0.6", "10.9.0.20", 40011, 102)
    frames = [*a.handshake(), *b.handshake()]
    start = a.seq[True]
    frames.append(a.frame(True, PSH | ACK, b"\x05" * 6, seq=start + 6))  # 7: after a hole
    frames.append(a.frame(True, PSH | ACK, b"\x01" * 6, seq=start))  # 8: the hole's bytes
    frames.append(b.send(True, COTP_CONNECT))  # 9: b's first bytes, S7 by its probe
    frames.append(b.send(True, b"\x02" * 8))  # 10: in order, no TPKT either
    capture = write_pcap(tmp_path / "s7.pcap", frames)
    told = {fast: [(w.message, w.frame) for w in Analysis([], fast_path=fast).run([capture]).warnings]
            for fast in (True, False)}
    assert told[True] == told[False] == [("s7comm: not a TPKT header", 8),
                                         ("s7comm: not a TPKT header", 10)]
