"""The batch framing of whole Modbus/TCP streams (several ADUs in a segment, ADUs split over
segments and over batches): the ADUs it cuts are the decoder's, ADU by ADU; the analysis it
gives is the per-segment path's; and the per-segment path's own events match tshark's."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.errors import DecodeError
from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import Event, FlowContext
from cranewatch.protocols.mbap_streams import Segments, frame_streams
from cranewatch.protocols.modbus import (
    MAX_FRAMING_LENGTH,
    ModbusDecoder,
    ModbusRequest,
    ModbusResponse,
)
from modbus_capture import ACK, Conversation, mbap, read_request, read_response, write_pcap
from test_pipeline import Recorder, series_rows

_CTX = FlowContext("10.0.0.1", 40000, "10.0.0.2", 502, "tcp", "unit")


# --- frame_streams against the decoder, ADU by ADU


class _Cutting(ModbusDecoder):
    """The decoder, noting each ADU it frames (direction, the frame that completed it, bytes)."""

    def __init__(self) -> None:
        super().__init__(_CTX)
        self.adus: list[tuple[bool, int, bytes]] = []

    def _decode_adu(self, from_client: bool, adu: bytes, ts: float,
                    frame: int) -> tuple[Event, DecodeError | None]:
        self.adus.append((from_client, frame, adu))
        return super()._decode_adu(from_client, adu, ts, frame)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], dict[int, bytes], set[int]]:
    """Segments of two flows' four streams in capture order (slot, bytes), held bytes, and
    the flows given a header that does not fit."""
    pieces: dict[int, list[bytes]] = {}
    carry: dict[int, bytes] = {}
    broken: set[int] = set()
    for slot in range(4):
        adus = []
        for _ in range(draw(st.integers(0, 8))):
            body = draw(st.binary(min_size=2, max_size=40))
            header = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
            if draw(st.integers(0, 30)) == 0:  # now and then a header that does not fit
                header += draw(st.sampled_from([b"\x00\x01", b"\x12\x34"])) + len(body).to_bytes(2, "big")
                broken.add(slot >> 1)
            else:
                header += b"\x00\x00" + len(body).to_bytes(2, "big")
            adus.append(header + body)
        stream = b"".join(adus)
        held = draw(st.integers(0, 5)) if adus and draw(st.booleans()) else 0
        carry[slot] = stream[:held]
        stream = stream[held:]
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=12))))
        bounds = [0, *[c for c in cuts if c < len(stream)], len(stream)]
        pieces[slot] = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    order: list[tuple[int, bytes]] = []
    queues = {slot: list(p) for slot, p in pieces.items()}
    while any(queues.values()):
        slot = draw(st.sampled_from(sorted(s for s, q in queues.items() if q)))
        order.append((slot, queues[slot].pop(0)))
    return order, {s: c for s, c in carry.items() if c}, broken


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_streams())
def test_the_adus_cut_from_whole_streams_are_the_decoders_adu_by_adu(
        case: tuple[list[tuple[int, bytes]], dict[int, bytes], set[int]]) -> None:
    segments, carry, broken = case
    payload = b"".join(data for _, data in segments)
    lengths = [len(data) for _, data in segments]
    offsets = np.cumsum([0, *lengths])[:-1]
    seq = np.zeros(len(segments), dtype=np.int64)
    next_seq = np.array([100, 200, 300, 400], dtype=np.int64)
    at = next_seq.copy()
    for i, (slot, data) in enumerate(segments):
        seq[i] = at[slot]
        at[slot] += len(data)
    adus = frame_streams(Segments(
        buf=np.frombuffer(payload, dtype=np.uint8), slot=np.array([s for s, _ in segments], dtype=np.int64),
        seq=seq, offset=offsets.astype(np.int64), length=np.array(lengths, dtype=np.int64),
        next_seq=next_seq, carry=carry), MAX_FRAMING_LENGTH)

    for flow in (0, 1):
        decoders = _Cutting()
        trouble = len(segments)  # the first segment after which the decoder is out of step
        for side in (False, True):
            if carry.get(2 * flow + side):
                decoders.hold(side, carry[2 * flow + side])
        for i, (slot, data) in enumerate(segments):
            if slot >> 1 != flow:
                continue
            decoders.feed(bool(slot & 1), data, 0.0, i)
            if trouble == len(segments) and any(
                    "not a Modbus/TCP header" in p.message for p in decoders.problems):
                trouble = i
        cut = int(adus.cut[2 * flow])
        assert cut == adus.cut[2 * flow + 1]  # a flow's streams are left to the decoder together
        assert cut <= trouble  # never past a header that does not fit
        mine = [(bool(slot & 1), int(seg), adus.buf[off : off + size].tobytes())
                for slot, seg, off, size in zip(adus.slot, adus.segment, adus.offset, adus.length,
                                                strict=True) if slot >> 1 == flow]
        assert mine == [a for a in decoders.adus if a[1] < cut]
        if flow not in broken:  # well framed throughout: all of it is taken
            assert cut == len(segments)


def test_a_stream_out_of_order_is_left_to_the_decoder_from_that_segment() -> None:
    adu = read_request(1, 3, 0, 2)
    payload = adu + adu[:4] + adu[4:] + adu
    segments = [(0, len(adu)), (len(adu), 4), (len(adu) + 4, len(adu) - 4), (2 * len(adu), len(adu))]
    seq = np.array([1000, 1000 + len(adu), 1000 + len(adu) + 4 + 50, 1000 + 2 * len(adu) + 50])
    adus = frame_streams(Segments(
        buf=np.frombuffer(payload, dtype=np.uint8), slot=np.ones(4, dtype=np.int64), seq=seq,
        offset=np.array([o for o, _ in segments]), length=np.array([n for _, n in segments]),
        next_seq=np.array([-1, 1000]), carry={}), MAX_FRAMING_LENGTH)
    assert adus.cut.tolist() == [2, 2]  # the third segment leaves a hole of 50 bytes
    assert adus.segment.tolist() == [0]  # the second one holds the start of an ADU only


# --- the batch path gives the per-segment path's analysis


def gateway_capture(path: Path, seed: int = 1, hole: bool = False, cycles: int = 300,
                    first_piece: int = 1) -> Path:
    """Masters polling PLCs through serial gateways: a poll cycle's requests in one segment,
    answers cut where the UART delivered them (inside headers too, one ADU's tail riding with
    the next one's head), writes and exception answers among them. With ``hole`` one answer
    segment of the first connection is lost (never captured) and one request retransmitted.
    ``first_piece``: the fewest bytes an ADU's first piece has."""
    rng = random.Random(seed)
    conversations = [Conversation(master, plc, client_port=42000 + i,
                                  client_mac=f"02:00:00:00:01:{i:02x}")
                     for i, (master, plc) in enumerate([("10.20.0.40", "10.20.1.10"),
                                                        ("10.20.0.41", "10.20.1.10"),
                                                        ("10.20.0.40", "10.20.2.10")])]
    frames: list[bytes] = []
    for c in conversations:
        frames += c.handshake()
    tid = {k: rng.randrange(65536) for k in range(len(conversations))}
    for cycle in range(cycles):
        k = cycle % len(conversations)
        c = conversations[k]
        requests, answers = [], []
        for _ in range(rng.randint(1, 4)):
            tid[k] = (tid[k] + 1) & 0xFFFF
            t = tid[k]
            kind = rng.random()
            if kind < 0.08:  # a write
                pdu = bytes([6]) + rng.randrange(100).to_bytes(2, "big") + rng.randrange(65536).to_bytes(2, "big")
                requests.append(mbap(t, 1, pdu))
                answers.append(mbap(t, 1, pdu))
                continue
            fc, address, quantity = rng.choice([(3, 100, 60), (4, 0, 12), (2, 0, 7), (3, 0, 2)])
            requests.append(read_request(t, fc, address, quantity))
            if kind < 0.09:  # now and then an exception (a flow's rest of the batch goes slow)
                answers.append(mbap(t, 1, bytes([fc | 0x80, 2])))
                continue
            values = ([rng.randrange(2) for _ in range(quantity)] if fc <= 2
                      else [rng.randrange(65536) for _ in range(quantity)])
            answers.append(read_response(t, fc, values))
        frames.append(c.send(True, b"".join(requests)))
        if hole and k == 0 and cycle == 150:  # a request sent twice (the first ACK was lost)
            frames.append(c.frame(True, 0x18, b"".join(requests), seq=c.seq[True] - len(b"".join(requests))))
        rng.shuffle(answers)
        pieces: list[bytes] = []
        for answer in answers:
            cuts = sorted(rng.sample(range(first_piece, len(answer)),
                                     min(rng.choice((0, 1, 2)), len(answer) - first_piece)))
            parts = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
            if pieces and rng.random() < 0.4:
                pieces[-1] += parts.pop(0)
            pieces.extend(parts)
        for n, piece in enumerate(pieces):
            lost = hole and k == 0 and cycle == 90 and n == 0
            frame = c.send(False, piece)
            if not lost:
                frames.append(frame)
        frames.append(c.send(True, b"", ACK))
    return write_pcap(path, frames, step=0.001)


def _analyses(path: Path, batch: int) -> tuple[Recorder, Recorder, Any, Any]:
    fast, slow = Recorder(), Recorder()
    fast_result = Analysis([fast]).run([path], batch_packets=batch)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=batch)
    return fast, slow, fast_result, slow_result


@pytest.mark.parametrize("batch", [5, 64, 333, 2000, 65536])
def test_the_batch_path_gives_the_per_segment_paths_analysis(tmp_path: Path, batch: int) -> None:
    """Several ADUs a segment, ADUs split over segments and (small batches) over batches."""
    path = gateway_capture(tmp_path / "gateway.pcap")
    fast, slow, fast_result, slow_result = _analyses(path, batch)
    if batch < 65536:  # one batch: nothing is known about a flow before it, all goes slow
        assert fast_result.events["modbus_fast_pdus"] > 1000
    if batch == 2000:  # exception answers stop flows mid-batch: they are taken back after
        assert fast_result.events["modbus_fast_pdus"] > 0.9 * 1500
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert fast_result.modbus_masters == slow_result.modbus_masters
    assert fast_result.modbus_slaves == slow_result.modbus_slaves
    assert [f.packets for f in fast.flows] == [f.packets for f in slow.flows]
    assert fast_result.warnings == slow_result.warnings


@pytest.mark.parametrize("batch", [7, 100, 2000])
def test_a_hole_and_a_retransmission_fall_back_to_the_decoder_and_come_back(
        tmp_path: Path, batch: int) -> None:
    path = gateway_capture(tmp_path / "hole.pcap", hole=True)
    fast, slow, fast_result, slow_result = _analyses(path, batch)
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert fast_result.modbus_masters == slow_result.modbus_masters
    assert fast_result.warnings == slow_result.warnings
    # The answer whose first piece was lost is not seen (its request stays unanswered), the
    # decoder took the flow around the hole, and the batch path took it back after.
    assert sum(s.unanswered for s in fast.series) == 1
    assert fast_result.events["modbus_response"] > 0
    assert fast_result.events["modbus_fast_pdus"] > 1000


# --- the per-segment path (the reference) against tshark on the same capture


def _tshark(path: Path, fields: list[str]) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "mbtcp", "-T", "fields", "-E", "separator=\t",
         "-o", "tcp.desegment_tcp_streams:TRUE", *[arg for f in fields for arg in ("-e", f)]],
        capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_split_and_coalesced_adus_decode_as_tshark_decodes_them(tmp_path: Path) -> None:
    # tshark's Modbus/TCP dissector declines a stream segment too short to show it an MBAP
    # header (it takes the stream for something else; we frame it): first pieces of 8 bytes.
    path = gateway_capture(tmp_path / "gateway.pcap", cycles=60, first_piece=8)
    reference = Recorder()
    Analysis([reference], fast_path=False, fold_reads=False).run([path])
    # Per frame, in stream order: (transaction id, function, request?), and how many answers
    # were exceptions (tshark gives the function without the exception bit, as we do).
    ours: dict[int, list[tuple[int, int, bool]]] = {}
    our_exceptions: dict[int, int] = {}
    for e in reference.events:
        if isinstance(e, ModbusRequest | ModbusResponse):
            ours.setdefault(e.frame, []).append((e.transaction_id, e.function,
                                                 isinstance(e, ModbusRequest)))
            if isinstance(e, ModbusResponse) and e.exception_code is not None:
                our_exceptions[e.frame] = our_exceptions.get(e.frame, 0) + 1
    theirs: dict[int, list[tuple[int, int, bool]]] = {}
    their_exceptions: dict[int, int] = {}
    for frame, tids, fcs, port, exceptions in _tshark(
            path, ["frame.number", "mbtcp.trans_id", "modbus.func_code", "tcp.dstport",
                   "modbus.exception_code"]):
        for t, f in zip(tids.split(","), fcs.split(","), strict=True):
            theirs.setdefault(int(frame), []).append((int(t), int(f), port == "502"))
        if exceptions:
            their_exceptions[int(frame)] = len(exceptions.split(","))
    assert our_exceptions and our_exceptions == their_exceptions
    assert len(ours) > 100
    assert ours == theirs
    # The batch path folds the answers of reads: their frames and values are tshark's too.
    fast = Recorder()
    Analysis([fast]).run([path], batch_packets=50)
    values: dict[int, list[int]] = {}
    for frame, regs in _tshark(path, ["frame.number", "modbus.regval_uint16"]):
        if regs:
            values.setdefault(int(frame), []).extend(int(v) for v in regs.split(","))
    folded: dict[int, list[int]] = {}
    for s in fast.series:
        if s.function in (3, 4):
            for frame, row in zip(s.frame.tolist(), s.values.tolist(), strict=True):
                folded.setdefault(frame, []).extend(row)
    assert folded and {f: sorted(v) for f, v in folded.items()} == {
        f: sorted(v) for f, v in values.items() if f in folded}


def test_a_batch_of_one_byte_is_held_not_refused() -> None:
    """Fewer bytes than an MBAP header in the whole batch (fuzzing found it): nothing framed,
    the byte waits for the next segment."""
    adus = frame_streams(Segments(
        buf=np.frombuffer(b"\x00", dtype=np.uint8), slot=np.ones(1, dtype=np.int64),
        seq=np.array([1000]), offset=np.zeros(1, dtype=np.int64), length=np.ones(1, dtype=np.int64),
        next_seq=np.array([-1, 1000]), carry={}), MAX_FRAMING_LENGTH)
    assert len(adus.offset) == 0 and adus.cut.tolist() == [1, 1]
    assert adus.buf[adus.stream_start[1] : adus.segment_end[0]].tobytes() == b"\x00"
