"""Holes the capture lost: the peer's ACK past a hole ends the wait for it at once.

A SPAN port drops a segment the receiver got: the receiver acknowledges past it, so no
retransmission will come and waiting ``flows.HOLE_SECONDS`` only delays the bytes behind the
hole (and keeps the flow off the batch path). Expected values are built by hand (which frame
carries which transaction) and, for the frames after the hole, checked against tshark's
``mbtcp``/``modbus`` fields (its defaults: TCP desegmentation on, no out-of-order reassembly; a
segment after a hole it has not seen is dissected on its own, as a new PDU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cranewatch.flows import Chunk, Gap, Stream
from cranewatch.pipeline import Analysis
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse
from modbus_capture import ACK, Conversation, read_request, read_response, write_pcap
from proto_walk import tshark_fields
from test_flows import modbus_frames
from test_pipeline import Recorder, series_rows

# ----------------------------------------------------------------------------- Stream alone


def test_an_ack_past_a_hole_gives_it_up_at_once() -> None:
    s = Stream()
    s.syn(99)  # next 100
    assert s.segment(110, b"B" * 5, frame=7, ts=1.0) == []  # 100-109 missing
    assert s.acked(100) == []  # nothing acknowledged beyond what was seen
    assert s.held
    assert s.acked(105) == [Gap(7, 1.0), Chunk(b"B" * 5, 7, 1.0)]  # the receiver had 100-104
    assert s.next_seq == 115 and not s.held
    # the lost bytes shown late (reordered on the SPAN path): given up already, dropped
    assert s.segment(100, b"A" * 10, frame=9, ts=1.2) == []
    assert s.segment(115, b"C", frame=10, ts=1.3) == [Chunk(b"C", 10, 1.3)]


def test_an_ack_gives_up_only_the_holes_before_it() -> None:
    s = Stream()
    s.syn(99)
    s.segment(110, b"B" * 5, frame=7, ts=1.0)  # hole 100-109
    s.segment(120, b"D" * 5, frame=8, ts=1.1)  # hole 115-119
    assert s.acked(115) == [Gap(7, 1.0), Chunk(b"B" * 5, 7, 1.0)]
    assert s.next_seq == 115 and list(s.held) == [120]
    assert s.segment(115, b"C" * 5, frame=9, ts=1.2) == [Chunk(b"C" * 5, 9, 1.2),
                                                         Chunk(b"D" * 5, 9, 1.2)]


def test_an_ack_without_held_bytes_or_behind_changes_nothing() -> None:
    s = Stream()
    s.syn(99)
    assert s.acked(500) == []  # nothing waits: nothing to give up (no gap without bytes)
    assert s.next_seq == 100
    s.segment(110, b"B", frame=7, ts=1.0)
    assert s.acked(90) == [] and s.acked(100 + 0x80000000) == []  # behind, or half the space away


def test_an_ack_past_a_hole_across_the_sequence_wrap() -> None:
    s = Stream()
    s.syn(0xFFFFFFF0)  # next 0xFFFFFFF1
    s.segment(0x00000005, b"B" * 3, frame=4, ts=0.5)
    assert s.acked(0x00000008) == [Gap(4, 0.5), Chunk(b"B" * 3, 4, 0.5)]
    assert s.next_seq == 8


# -------------------------------------------------------------------------------- captures


def lost_request_capture(path: Path, cycles: int = 150, lost_at: int = 60,
                         late_copy: bool = False) -> tuple[Path, dict[str, int]]:
    """A master polling one PLC; in cycle ``lost_at`` it writes two requests back to back and
    the capture misses the first (the PLC got it: it answers both and its answers acknowledge
    both). ``late_copy``: the missed segment shows up after the answers all the same (the SPAN
    path reordered it). Returns the capture and the frame numbers of interest."""
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()  # frames 1-3
    where: dict[str, int] = {}
    tid = 0
    for cycle in range(cycles):
        if cycle != lost_at:
            tid += 1
            frames.append(c.send(True, read_request(tid, 3, 0, 2)))
            frames.append(c.send(False, read_response(tid, 3, [cycle, tid])))
            frames.append(c.send(True, b"", ACK))
            continue
        lost_tid, seen_tid = tid + 1, tid + 2
        tid += 2
        lost = c.send(True, read_request(lost_tid, 4, 100, 1))  # not in the capture
        frames.append(c.send(True, read_request(seen_tid, 3, 200, 1)))
        where["seen_request"] = len(frames)
        frames.append(c.send(False, read_response(lost_tid, 4, [1])))  # acknowledges both
        where["lost_response"] = len(frames)
        frames.append(c.send(False, read_response(seen_tid, 3, [2])))
        where["seen_response"] = len(frames)
        if late_copy:
            frames.append(lost)
            where["late_copy"] = len(frames)
        frames.append(c.send(True, b"", ACK))
    frames += c.close()
    # 10 ms a frame: the hole would be waited for 3 s = 300 frames (longer than the rest).
    return write_pcap(path, frames), where


def _run(path: Path, **options: Any) -> tuple[Recorder, Any]:
    """Per segment, every event given out (no folding of reads)."""
    recorder = Recorder()
    result = Analysis([recorder], fold_reads=False, fast_path=False, **options).run([path])
    return recorder, result


def test_a_hole_acknowledged_by_the_peer_is_decoded_past_at_once(tmp_path: Path) -> None:
    path, where = lost_request_capture(tmp_path / "lost.pcap")
    rec, result = _run(path)
    events = modbus_frames(rec)
    seen = where["seen_request"]
    after = [e for e in events if e[2] >= seen]
    # The request behind the hole comes at its own frame, before the answers (it used to
    # wait 3 s of capture time, after them); the lost request's answer has no request.
    assert after[:3] == [("modbus_request", 62, seen), ("modbus_response", 61, seen + 1),
                         ("modbus_response", 62, seen + 2)]
    responses = {e.transaction_id: e for e in rec.events if isinstance(e, ModbusResponse)}
    assert responses[62].request_frame == seen
    assert responses[62].values == (2,)
    assert responses[61].request_frame is None
    # every transaction but the lost request is seen once
    requests = [e.transaction_id for e in rec.events if isinstance(e, ModbusRequest)]
    assert requests == [t for t in range(1, 152) if t != 61]
    assert [(w.kind, w.frame) for w in result.warnings] == [("capture", seen)]  # the content gap


@pytest.mark.parametrize("batch", [64, 200, 65536])
def test_the_batch_path_takes_the_flow_back_right_after_the_acknowledged_hole(
        tmp_path: Path, batch: int) -> None:
    path, where = lost_request_capture(tmp_path / "lost.pcap")
    fast, slow = Recorder(), Recorder()
    fast_result = Analysis([fast]).run([path], batch_packets=batch)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=batch)
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert fast_result.warnings == slow_result.warnings
    (gap,) = fast_result.warnings  # given up at the ACK once, whichever path met it
    assert gap.frame == where["seen_request"] and "content_gap: 12 bytes" in gap.message
    # the answer to the request behind the hole was paired: its row is in the series, at
    # the answer's frame (it was unpaired while the request waited behind the hole)
    (behind,) = [s for s in fast.series if s.address == 200]
    assert behind.frame.tolist() == [where["seen_response"]]
    assert behind.values.tolist() == [[2]]
    assert behind.unanswered == 0
    if batch < 65536:  # (one batch: nothing is known about the flow before it, all goes slow)
        # the batch path had nearly all of the 300 PDUs: it left the flow to the decoder for
        # the hole's few segments only, not for the 3 s (300 frames) the hole used to wait
        assert fast_result.events["modbus_fast_pdus"] >= 280


@pytest.mark.parametrize("fast_path", [False, True])
def test_the_lost_segment_shown_late_is_ignored_as_given_up(tmp_path: Path,
                                                           fast_path: bool) -> None:
    """The capture shows the 'lost' segment after the ACK that passed it (reordered on the SPAN
    path, not lost): the hole was given up at that ACK and the late copy is dropped as bytes
    already passed, like tshark (which marks it a spurious retransmission and does not dissect
    it as Modbus): no event for it, nothing after it shifted."""
    path, where = lost_request_capture(tmp_path / "late.pcap", late_copy=True)
    rec = Recorder()
    Analysis([rec], fold_reads=fast_path, fast_path=fast_path).run([path], batch_packets=64)
    if fast_path:
        (behind,) = [s for s in rec.series if s.address == 200]
        assert behind.frame.tolist() == [where["seen_response"]]
        assert not [s for s in rec.series if s.address == 100]  # the lost request: unpaired
        assert sum(s.requests for s in rec.series) == 150
        return
    requests = [(e.transaction_id, e.frame) for e in rec.events if isinstance(e, ModbusRequest)]
    assert (62, where["seen_request"]) in requests
    assert 61 not in [t for t, _ in requests]
    assert len(requests) == 150
    assert all(e.frame != where["late_copy"] for e in rec.events)


def test_after_the_hole_the_events_are_tsharks(tmp_path: Path, tshark: str) -> None:
    """Frames from the one after the hole on: (frame, transaction id, function code, query or
    response) of our Modbus events equal tshark's ``mbtcp.trans_id``/``modbus.func_code``."""
    path, where = lost_request_capture(tmp_path / "lost.pcap")
    seen = where["seen_request"]
    rows = tshark_fields(tshark, path, f"mbtcp && frame.number >= {seen}",
                         ["mbtcp.trans_id", "modbus.func_code", "tcp.dstport"])
    theirs = [(int(frame), int(tid), int(fc), dport == "502") for frame, tid, fc, dport in rows]
    rec, _ = _run(path)
    ours = [(e.frame, e.transaction_id, e.function, isinstance(e, ModbusRequest))
            for e in rec.events if isinstance(e, ModbusRequest | ModbusResponse)
            and e.frame >= seen]
    assert theirs[:3] == [(seen, 62, 3, True), (seen + 1, 61, 4, False), (seen + 2, 62, 3, False)]
    assert ours == theirs


def test_a_hole_given_up_at_the_ack_is_a_content_gap_warning_as_tshark_sees_it(
        tmp_path: Path, tshark: str) -> None:
    """The lost request is 12 bytes (MBAP 7 + function, address, quantity 5: counted by hand).
    tshark flags the segment after it ``tcp.analysis.lost_segment`` (its sequence number is
    the hole's size past the client's previous segment) and the PLC's answer that
    acknowledges past it ``tcp.analysis.ack_lost_segment``: the warning is at the first, names
    the second, the flow and the 12 bytes, in either path (the hole used to be given up
    without a word)."""
    path, where = lost_request_capture(tmp_path / "lost.pcap")
    flagged = tshark_fields(tshark, path, "tcp.analysis.lost_segment", [])
    acked = tshark_fields(tshark, path, "tcp.analysis.ack_lost_segment", [])
    assert [int(r[0]) for r in flagged] == [where["seen_request"]]
    assert [int(r[0]) for r in acked] == [where["lost_response"]]
    client = tshark_fields(tshark, path, f"tcp.srcport == 40000 && tcp.len > 0 && frame.number <= {where['seen_request']}",
                           ["tcp.seq", "tcp.nxtseq"])
    lost = int(client[-1][1]) - max(int(r[2]) for r in client[:-1])
    assert lost == 12
    for fast_path in (False, True):
        result = Analysis([Recorder()], fast_path=fast_path).run([path], batch_packets=64)
        (gap,) = result.warnings
        assert (gap.kind, gap.file, gap.frame) == ("capture", str(path), where["seen_request"])
        assert gap.message == (
            f"modbus: content_gap: {lost} bytes of tcp 10.20.7.30:40000 -> 10.20.7.10:502 were not "
            f"in the capture before this frame; the peer acknowledged them in frame "
            f"{where['lost_response']}, so they were given up (lost by the capture, not the network)")


def test_the_lost_byte_count_of_each_hole_an_ack_gives_up() -> None:
    s = Stream()
    s.syn(99)  # next 100
    s.segment(110, b"B" * 5, frame=7, ts=1.0)  # 100-109: 10 bytes lost
    s.segment(120, b"D" * 5, frame=8, ts=1.1)  # 115-119: 5 more
    assert [p.lost for p in s.acked(125) if isinstance(p, Gap)] == [10, 5]
    w = Stream()
    w.syn(0xFFFFFFF0)  # next 0xFFFFFFF1: 0xFFFFFFF1 ... 0x00000004 lost, 20 bytes across the wrap
    w.segment(0x00000005, b"B" * 3, frame=4, ts=0.5)
    assert [p.lost for p in w.acked(0x00000008) if isinstance(p, Gap)] == [20]


# ----------------------------------------------------------- screen_segments against Stream


@pytest.mark.parametrize("seed", range(40))
def test_screened_segments_are_those_the_stream_drops(seed: int) -> None:
    """Random segments of one stream (in order, duplicates, retransmissions, holes, overlaps;
    across the sequence wrap): a segment ``behind`` changes nothing when fed to ``Stream``
    (dropping it is safe), one ``ahead`` is held behind a hole."""
    import random

    import numpy as np

    from cranewatch.flows import screen_segments

    rng = random.Random(seed)
    isn = rng.choice([1000, 0xFFFFFF00])
    sent: list[tuple[int, bytes]] = []
    at = 0
    for _ in range(60):
        roll = rng.random()
        if roll < 0.2 and sent:
            sent.append(rng.choice(sent))  # a copy of an earlier segment
        elif roll < 0.3 and sent:
            start, data = rng.choice(sent)  # overlapping: part old, maybe part new
            cut = rng.randrange(len(data))
            sent.append((start + cut, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))))
        elif roll < 0.4:
            at += rng.randrange(1, 20)  # a hole
        else:
            size = rng.randrange(1, 12)
            sent.append((at, bytes(rng.randrange(256) for _ in range(size))))
            at += size
    seq = np.array([(isn + 1 + s) & 0xFFFFFFFF for s, _ in sent], dtype=np.int64)
    size = np.array([len(d) for _, d in sent], dtype=np.int64)
    ahead, behind = screen_segments(np.zeros(len(sent), dtype=np.int64), seq, size,
                                    np.array([(isn + 1) & 0xFFFFFFFF]), np.zeros(1, dtype=bool))
    full, screened = Stream(max_hole_age=1e9), Stream(max_hole_age=1e9)
    full.syn(isn)
    screened.syn(isn)
    out_full: list[Chunk | Gap] = []
    out_screened: list[Chunk | Gap] = []
    for i, (s, (_, data)) in enumerate(zip(seq.tolist(), sent, strict=True)):
        before = (full.next_seq, dict(full.held))
        got = full.segment(s, data, i, float(i))
        out_full += got
        if behind[i]:
            assert got == [] and (full.next_seq, dict(full.held)) == before
        else:
            out_screened += screened.segment(s, data, i, float(i))
        if ahead[i]:
            assert got == [] and s in full.held
    assert out_screened == out_full
    assert behind.any()  # the copies were found


@pytest.mark.parametrize("name", ["S7-1511_db3_var1_HMI.pcap", "S7-1511_db6w0_HMI.pcap",
                                  "S7-1511-opc-request-all-types.pcap"])
def test_bytes_before_the_decoder_was_chosen_are_no_content_gap(shared_data: Path, tshark: str,
                                                                name: str) -> None:
    """S7 connections captured from their SYN: the COTP connect request and confirm (50 bytes
    each way) are no S7 yet, so the decoder is chosen at the first data TPDU. Those bytes were
    in the capture (tshark flags no lost segment): the decoder begins mid-stream there, and no
    hole waits for them (it used to, until the peer's ACK gave them up as if lost)."""
    path = shared_data / "pcaps" / "ICS-Security-Tools" / "pcaps" / "s7" / name
    assert tshark_fields(tshark, path, "tcp.analysis.lost_segment", []) == []
    for fast_path in (False, True):
        result = Analysis([Recorder()], fast_path=fast_path).run([path])
        assert [w.message for w in result.warnings if "content_gap" in w.message] == []
