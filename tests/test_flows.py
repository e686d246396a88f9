"""Flow table and TCP reassembly: directions, counters, and the bytes decoders get.

The reassembly cases are played through the whole pipeline with Modbus traffic so each
test states the frames in which the events must be reported (the frame that completes a PDU,
as tshark reports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch import flows as flows_module
from cranewatch.flows import Chunk, FlowSummary, Gap, Stream
from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import Event
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse, RegisterSeries
from modbus_capture import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Conversation,
    mbap,
    read_request,
    read_response,
    write_pcap,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flows: list[FlowSummary] = []
        self.series: list[RegisterSeries] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_series(self, series: RegisterSeries) -> None:
        self.series.append(series)

    def on_flow_end(self, flow: FlowSummary) -> None:
        self.flows.append(flow)

    def finish(self) -> list[Any]:
        return []


def run(tmp_path: Path, frames: list[bytes], **options: Any) -> tuple[Recorder, Any]:
    path = write_pcap(tmp_path / "t.pcap", frames)
    recorder = Recorder()
    result = Analysis([recorder], fold_reads=False, **options).run([path])
    return recorder, result


def modbus_frames(recorder: Recorder) -> list[tuple[str, int, int]]:
    """(kind, transaction id, frame) of every Modbus event, in order."""
    return [(e.kind, e.transaction_id, e.frame) for e in recorder.events
            if isinstance(e, ModbusRequest | ModbusResponse)]


# ----------------------------------------------------------------------------- Stream alone


def test_stream_in_order_delivers_each_segment() -> None:
    s = Stream()
    s.syn(99)
    assert s.segment(100, b"abc", 1, 1.0) == [Chunk(b"abc", 1, 1.0)]
    assert s.segment(103, b"de", 2, 2.0) == [Chunk(b"de", 2, 2.0)]
    assert s.next_seq == 105


def test_stream_out_of_order_waits_for_the_hole() -> None:
    s = Stream()
    s.syn(99)
    assert s.segment(103, b"de", 1, 1.0) == []
    # The held bytes become contiguous with frame 2: that frame completes them.
    assert s.segment(100, b"abc", 2, 2.0) == [Chunk(b"abc", 2, 2.0), Chunk(b"de", 2, 2.0)]


def test_stream_retransmission_and_overlap_are_trimmed() -> None:
    s = Stream()
    s.syn(99)
    s.segment(100, b"abc", 1, 1.0)
    assert s.segment(100, b"abc", 2, 2.0) == []  # pure retransmission
    assert s.segment(101, b"bcdef", 3, 3.0) == [Chunk(b"def", 3, 3.0)]  # overlap: new part only


def test_stream_mid_stream_start_is_a_gap() -> None:
    s = Stream()
    assert s.segment(5000, b"xy", 7, 1.0) == [Gap(7, 1.0), Chunk(b"xy", 7, 1.0)]


def test_stream_sequence_wraps_around() -> None:
    s = Stream()
    s.syn(0xFFFFFFFE)
    assert s.segment(0xFFFFFFFF, b"ab", 1, 1.0) == [Chunk(b"ab", 1, 1.0)]
    assert s.next_seq == 1
    assert s.segment(1, b"c", 2, 2.0) == [Chunk(b"c", 2, 2.0)]


def test_stream_buffer_is_bounded_and_a_lost_hole_becomes_a_gap() -> None:
    s = Stream(max_buffer=10)
    s.syn(99)
    assert s.segment(110, b"x" * 6, 1, 1.0) == []
    out = s.segment(116, b"y" * 6, 2, 2.0)  # 12 bytes held > 10: give up on bytes 100..109
    assert out == [Gap(1, 1.0, overflow=True), Chunk(b"x" * 6, 1, 1.0), Chunk(b"y" * 6, 2, 2.0)]
    assert s.held_bytes == 0


def test_stream_flush_gives_what_waits_behind_a_hole() -> None:
    s = Stream()
    s.syn(99)
    s.segment(105, b"zz", 4, 1.0)
    assert s.flush() == [Gap(4, 1.0), Chunk(b"zz", 4, 1.0)]


def test_stream_in_order_takes_only_the_exact_next_segment() -> None:
    s = Stream()
    s.syn(99)
    assert s.in_order(100, 3) and s.next_seq == 103
    assert not s.in_order(100, 3)  # a retransmission: segment() trims it
    assert not s.in_order(110, 2)  # ahead of a hole: segment() holds it
    assert not s.in_order(103, 0)  # no bytes: nothing to take
    assert s.next_seq == 103


def test_stream_in_order_waits_while_bytes_are_held_and_wraps() -> None:
    s = Stream()
    s.syn(0xFFFFFFFE)
    s.segment(2, b"cd", 2, 2.0)  # held behind the hole 0xFFFFFFFF..1
    assert not s.in_order(0xFFFFFFFF, 3)  # the hole filler must release what waits
    assert s.segment(0xFFFFFFFF, b"abc", 3, 3.0) == [Chunk(b"abc", 3, 3.0), Chunk(b"cd", 3, 3.0)]
    assert s.in_order(4, 2) and s.next_seq == 6


def test_stream_in_order_without_a_known_start_is_refused() -> None:
    s = Stream()  # mid-stream: the first segment must report the gap
    assert not s.in_order(5000, 2)
    assert s.segment(5000, b"xy", 7, 1.0) == [Gap(7, 1.0), Chunk(b"xy", 7, 1.0)]


# -------------------------------------------------------------------- reassembly + Modbus


def test_out_of_order_segments_are_decoded_in_order(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()  # frames 1-3
    first = read_request(1, 3, 0, 2)
    second = read_request(2, 3, 10, 2)
    seq = c.seq[True]
    late = c.frame(True, PSH | ACK, first, seq=seq)
    early = c.frame(True, PSH | ACK, second, seq=seq + len(first))
    frames += [early, late]  # frames 4 (second request), 5 (first request)
    rec, _ = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 1, 5), ("modbus_request", 2, 5)]


def test_retransmission_gives_no_duplicate_event(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    request = read_request(1, 4, 0, 3)
    seq = c.seq[True]
    frames.append(c.send(True, request))  # 4
    frames.append(c.frame(True, PSH | ACK, request, seq=seq))  # 5: retransmission
    frames.append(c.send(False, read_response(1, 4, [7, 8, 9])))  # 6
    rec, _ = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 1, 4), ("modbus_response", 1, 6)]
    (response,) = [e for e in rec.events if isinstance(e, ModbusResponse)]
    assert response.values == (7, 8, 9) and response.request_frame == 4


def test_overlapping_retransmission_with_new_pdus_decodes_only_the_new(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    one, two = read_request(1, 3, 0, 1), read_request(2, 3, 1, 1)
    seq = c.seq[True]
    frames.append(c.send(True, one))  # 4
    frames.append(c.frame(True, PSH | ACK, one + two, seq=seq))  # 5: overlaps 4, adds request 2
    rec, _ = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 1, 4), ("modbus_request", 2, 5)]


def test_pdu_split_across_segments_reported_in_last_segment(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    write = mbap(7, 1, bytes.fromhex("10 0000 0005 0a 0001 0002 0003 0004 0005"))
    frames += [c.send(True, write[:4]), c.send(True, write[4:11]), c.send(True, write[11:])]
    rec, _ = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 7, 6)]
    (event,) = rec.events
    assert isinstance(event, ModbusRequest)
    assert (event.function, event.address, event.quantity) == (16, 0, 5)


def test_several_pdus_in_one_segment_share_its_frame(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    frames.append(c.send(True, read_request(1, 1, 0, 8) + read_request(2, 2, 0, 8)))  # 4
    frames.append(c.send(False, read_response(2, 2, [1, 0] * 4) + read_response(1, 1, [0] * 8)))  # 5
    rec, _ = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 1, 4), ("modbus_request", 2, 4),
                                  ("modbus_response", 2, 5), ("modbus_response", 1, 5)]


def test_capture_starting_mid_stream_and_mid_pdu(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    previous = read_request(1, 3, 0, 2)
    c.send(True, previous[:5])  # the start of this PDU was before the capture
    frames = [c.send(True, previous[5:])]  # 1: the tail: must be skipped, not misread
    frames.append(c.send(True, read_request(2, 3, 0, 2)))  # 2
    frames.append(c.send(False, read_response(2, 3, [1, 2])))  # 3
    rec, result = run(tmp_path, frames)
    assert modbus_frames(rec) == [("modbus_request", 2, 2), ("modbus_response", 2, 3)]
    assert result.warnings == ()  # resynchronising after a gap is not an error
    (flow,) = rec.flows
    assert (flow.client, flow.server, flow.handshake) == ("10.20.7.30", "10.20.7.10", False)


# ----------------------------------------------------------------------------- flow table


def test_client_is_the_syn_sender_even_on_a_high_port(tmp_path: Path) -> None:
    c = Conversation("10.20.7.10", "10.20.7.99", client_port=502, server_port=40000)
    frames = [*c.handshake(), c.send(True, b"hello"), *c.close()]
    rec, _ = run(tmp_path, frames)
    (flow,) = rec.flows
    assert (flow.client, flow.client_port, flow.server_port) == ("10.20.7.10", 502, 40000)
    assert flow.handshake and flow.closed


def test_syn_ack_first_makes_its_receiver_the_client(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10", client_port=3000, server_port=6000)
    c.send(True, b"", SYN)  # not captured
    frames = [c.send(False, b"", SYN | ACK), c.send(True, b"", ACK)]
    rec, _ = run(tmp_path, frames)
    (flow,) = rec.flows
    assert (flow.client, flow.client_port) == ("10.20.7.30", 3000)


def test_without_handshake_the_lower_port_is_the_server(tmp_path: Path) -> None:
    c = Conversation("10.20.7.10", "10.20.7.30", client_port=502, server_port=40001)
    frames = [c.send(True, b"x"), c.send(False, b"y")]  # first packet from the 502 side
    rec, _ = run(tmp_path, frames)
    (flow,) = rec.flows
    assert (flow.client, flow.client_port, flow.server, flow.server_port) == (
        "10.20.7.30", 40001, "10.20.7.10", 502)


def test_counters_per_direction_and_macs_per_side(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10", client_mac="02:00:00:00:00:30",
                     server_mac="02:00:00:00:00:10")
    frames = c.handshake()  # 2 to server, 1 to client
    frames.append(c.send(True, b"12345"))
    c.server_mac = "02:00:00:00:00:66"  # a second MAC answering for the server's IP
    frames.append(c.send(False, b"123"))
    frames.append(c.send(False, b"", RST | ACK))
    rec, _ = run(tmp_path, frames)
    (flow,) = rec.flows
    assert (flow.packets_to_server, flow.packets_to_client) == (3, 3)
    assert flow.bytes_to_server == sum(len(f) for i, f in enumerate(frames) if i in (0, 2, 3))
    assert flow.bytes_to_client == sum(len(f) for i, f in enumerate(frames) if i in (1, 4, 5))
    assert flow.client_macs == ("02:00:00:00:00:30",)
    assert flow.server_macs == ("02:00:00:00:00:10", "02:00:00:00:00:66")
    assert flow.closed and flow.first_frame == 1


@pytest.mark.parametrize("batch", [1, 2, 3, 1000])
def test_flow_counts_do_not_depend_on_batch_size(tmp_path: Path, batch: int) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    for tid in range(1, 6):
        frames.append(c.send(True, read_request(tid, 3, 0, 1)))
        frames.append(c.send(False, read_response(tid, 3, [tid])))
    frames += c.close()
    path = write_pcap(tmp_path / "t.pcap", frames)
    rec = Recorder()
    Analysis([rec], fold_reads=False).run([path], batch_packets=batch)
    (flow,) = rec.flows
    assert (flow.packets_to_server, flow.packets_to_client) == (2 + 5 + 2, 1 + 5 + 1)
    assert [e.frame for e in rec.events] == list(range(4, 14))


def test_idle_flows_are_ended_by_the_sweep(tmp_path: Path) -> None:
    from cranewatch.flows import FlowTable

    c = Conversation("10.20.7.30", "10.20.7.10")
    d = Conversation("10.20.7.31", "10.20.7.10", client_port=40002)
    frames = c.handshake() + [d.send(True, b"x")] * 40
    path = write_pcap(tmp_path / "t.pcap", frames, step=1.0)  # 43 s of capture
    rec = Recorder()
    analysis = Analysis([rec], flow_table=FlowTable(idle_timeout=20.0))
    analysis.run([path], batch_packets=5)
    assert next(f.client for f in rec.flows) == "10.20.7.30"  # ended first, by the sweep
    assert len(rec.flows) == 2


def test_fin_from_both_sides_closes(tmp_path: Path) -> None:
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = [*c.handshake(), c.send(True, b"", FIN | ACK), c.send(False, b"", FIN | ACK)]
    rec, _ = run(tmp_path, frames)
    assert rec.flows[0].closed
    assert ACK  # imported for the helpers above


def test_udp_flows_go_idle_sooner_than_tcp(tmp_path: Path) -> None:
    from modbus_capture import udp_frame

    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = [udp_frame("10.20.7.30", "10.20.0.8", 40001, 53, b"q"), *c.handshake()]
    frames += [c.send(True, b"", ACK) for _ in range(100)]  # 100 s of a quiet TCP connection
    path = write_pcap(tmp_path / "t.pcap", frames, step=1.0)
    rec = Recorder()
    Analysis([rec]).run([path], batch_packets=10)
    ended = [(f.transport, f.last_seen - 1_700_000_000.0) for f in rec.flows]
    # The DNS query ended in a sweep (after 60 s idle); the TCP flow only at the end.
    assert ended == [("udp", 0.0), ("tcp", 103.0)]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.data())
def test_stream_rebuilds_the_bytes_whatever_the_segmentation(payload: bytes, data: Any) -> None:
    """Cut into segments, some repeated or overlapping, sent in any order: the same bytes."""
    isn = data.draw(st.integers(0, 0xFFFFFFFF))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(payload) - 1), max_size=12))
                      if len(payload) > 1 else []))
    bounds = [0, *cuts, len(payload)]
    segments = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    extra = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1),
                                         st.integers(1, 50)), max_size=5))
    segments += [(start, min(len(payload), start + size)) for start, size in extra]
    order = data.draw(st.permutations(range(len(segments))))
    stream = Stream()
    stream.syn(isn)
    out = b""
    for frame, k in enumerate(order, 1):
        start, end = segments[k]
        for piece in stream.segment((isn + 1 + start) & 0xFFFFFFFF, payload[start:end], frame, 0.0):
            assert isinstance(piece, Chunk)  # nothing is lost: never a gap
            out += piece.data
    assert out == payload
    assert stream.held_bytes == 0


@pytest.mark.parametrize("rows", [1, 2, 1000, 70_000])
def test_group_rows_matches_np_unique(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(rows)
    distinct = rng.integers(0, 256, size=(max(rows // 50, 1), 40), dtype=np.uint8)
    keys = distinct[rng.integers(0, len(distinct), size=rows)].view("V40").reshape(rows)
    _, want_first, want_inverse = np.unique(keys, return_index=True, return_inverse=True)
    want_last = np.array([np.flatnonzero(want_inverse == g).max() for g in range(len(want_first))])
    first, last, inverse = flows_module.group_rows(keys)
    # the same grouping (group numbers may differ: hash order, not byte order)
    assert np.array_equal(want_first[want_inverse], first[inverse])
    assert np.array_equal(np.sort(first), np.sort(want_first))
    assert np.array_equal(want_last[want_inverse], last[inverse])
    # every hash the same (a collision on every row): the byte-for-byte check catches it
    monkeypatch.setattr(flows_module, "_HASH_MULTIPLIERS", np.zeros(5, dtype=np.uint64))
    first, last, inverse = flows_module.group_rows(keys)
    assert np.array_equal(want_first, first) and np.array_equal(want_inverse, inverse)
    assert np.array_equal(want_last, last)


def test_many_segments_behind_one_hole_are_delivered_in_one_pass() -> None:
    """40 000 segments wait behind a lost one; the retransmission delivers them all, in order
    (before, each delivered segment rescanned every held one: ~8e8 steps, minutes; now a sort)."""
    import time

    s = Stream(max_buffer=1 << 30, max_hole_age=float("inf"))
    s.syn(0)
    for i in range(1, 40_001):
        assert s.segment(1 + 10 * i, bytes([i % 251]) * 10, i + 1, float(i)) == []
    started = time.process_time()
    out = s.segment(1, b"h" * 10, 50_000, 9.0)
    assert time.process_time() - started < 5.0
    assert len(out) == 40_001 and all(isinstance(c, Chunk) and c.frame == 50_000 for c in out)
    assert b"".join(c.data for c in out if isinstance(c, Chunk)) == b"h" * 10 + b"".join(
        bytes([i % 251]) * 10 for i in range(1, 40_001))
    assert s.held_bytes == 0 and s.next_seq == 1 + 10 * 40_001


def test_a_hole_still_open_after_a_few_retransmission_timeouts_is_given_up() -> None:
    """The capture lost a segment (a SPAN drop): no retransmission will fill the hole, so the
    segments behind it are given out once the hole is older than HOLE_SECONDS of capture
    time, not held (and their events delayed) until the buffer or the flow ends."""
    s = Stream(max_hole_age=3.0)
    s.syn(99)
    assert s.segment(110, b"a" * 5, 1, 10.0) == []  # bytes 100..109 lost
    assert s.segment(115, b"b" * 5, 2, 12.5) == []  # 2.5 s: a retransmission may still come
    out = s.segment(120, b"c" * 5, 3, 13.5)  # 3.5 s: given up
    assert out == [Gap(1, 10.0), Chunk(b"a" * 5, 1, 10.0), Chunk(b"b" * 5, 2, 12.5),
                   Chunk(b"c" * 5, 3, 13.5)]
    assert s.held_bytes == 0 and s.next_seq == 125
    # a new hole is timed from its own first held segment
    assert s.segment(130, b"d" * 5, 4, 20.0) == []
    assert s.segment(135, b"e" * 5, 5, 22.0) == []
