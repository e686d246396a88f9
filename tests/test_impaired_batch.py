"""The Modbus batch path on an impaired connection equals the per-packet path (the reference).

One polling connection with every impairment of the benchmark's shape d, each at a cycle of
its own: Ethernet padding with junk bytes (pure ACKs and data frames), an exact retransmission
after the answers (RTO), a retransmission that overlaps old bytes and carries new ones,
two requests reordered, a request the capture lost (the PLC got it: its answers acknowledge
past it) whose late copies show up after that ACK, and answers the capture lost (their
requests stay pending, and are superseded when the transaction id comes round again).

The batch path (``ModbusRun.batch`` with the screens of ``pipeline._screen``/``_rescreen``)
must give the events, series and warnings of ``fast_path=False`` for any batch size, and take
all but the irregular segments itself. Counts are by hand (below) and checked against tshark,
which dissects every request and answer but the retransmitted copies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cranewatch.pipeline import Analysis
from cranewatch.protocols import modbus
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse
from modbus_capture import ACK, Conversation, read_request, read_response, write_pcap
from proto_walk import tshark_fields
from test_pipeline import Recorder, series_rows

CYCLES = 240
TIDS = 50  # transaction ids go round: a request whose answer was lost is superseded later
JUNK = b"\xde\xad\xbe\xef\x55\xaa"


def _request(tid: int, cycle: int, k: int) -> bytes:
    return read_request(tid, 3, 100 * k, 2)


def impaired_capture(path: Path, plain: tuple[int, ...] = ()) -> tuple[Path, dict[str, int]]:
    """Each cycle: two requests back to back, two answers, the master's ACK; the cycles of
    the impairments in ``plain`` are left healthy. Returns the capture and the counts of what
    the capture shows once (requests, answers)."""
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    counts = {"requests": 0, "responses": 0, "lost_requests": 0, "lost_responses": 0}
    tid = 0
    for cycle in range(CYCLES):
        tids = [(tid + 1) % TIDS, (tid + 2) % TIDS]
        tid += 2
        requests = [_request(t, cycle, k) for k, t in enumerate(tids)]
        answers = [read_response(t, 3, [cycle, t]) for t in tids]
        kind = cycle % 12
        kind = -1 if kind in plain else kind
        if kind == 3:  # reordered: the second request overtakes the first
            seq0 = c.seq[True]
            first = c.frame(True, 0x18, requests[0], seq=seq0)
            second = c.frame(True, 0x18, requests[1], seq=seq0 + len(requests[0]))
            c.seq[True] = seq0 + len(requests[0]) + len(requests[1])
            frames += [second, first]
            counts["requests"] += 2
        elif kind == 5:  # the capture lost the first request; its copies come late
            lost = c.send(True, requests[0])
            frames.append(c.send(True, requests[1]))
            counts["requests"] += 1
            counts["lost_requests"] += 1
        elif kind == 7:  # overlap: the retransmission of request 1 carries request 2 as well
            seq0 = c.seq[True]
            frames.append(c.send(True, requests[0]))
            frames.append(c.frame(True, 0x18, requests[0] + requests[1], seq=seq0))
            c.seq[True] = seq0 + len(requests[0]) + len(requests[1])
            counts["requests"] += 2
        else:
            for request in requests:
                data = c.send(True, request)
                frames.append(data + JUNK if kind == 1 else data)  # padding on data frames
            counts["requests"] += 2
        for k, answer in enumerate(answers):
            sent = c.send(False, answer)
            if kind == 9 and k == 0:  # the capture lost this answer
                counts["lost_responses"] += 1
                continue
            frames.append(sent)
            counts["responses"] += 1
        if kind == 5:  # the lost request shown late, twice, after the answers passed it
            frames += [lost, lost]
        frames.append(c.send(True, b"", ACK) + JUNK)  # a pure ACK padded with junk
        if kind == 11:  # an exact retransmission of the last request after the RTO
            seq_before = c.seq[True] - len(requests[1])
            frames.append(c.frame(True, 0x18, requests[1], seq=seq_before))
    frames += c.close()
    return write_pcap(path, frames), counts


@pytest.mark.parametrize("listed", [None, 0])
@pytest.mark.parametrize("batch", [64, 200, 1000, 65536])
def test_the_batch_path_equals_the_per_packet_path_on_an_impaired_connection(
        tmp_path: Path, batch: int, listed: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``listed=0``: the pending requests of the lost answers are sorted out for each pass
    (``modbus._pending_in_play``, which a connection with many pending requests takes)."""
    if listed is not None:
        monkeypatch.setattr(modbus, "PENDING_LISTED", listed)
    path, counts = impaired_capture(tmp_path / "impaired.pcap")
    fast, slow = Recorder(), Recorder()
    fast_result = Analysis([fast]).run([path], batch_packets=batch)
    slow_result = Analysis([slow], fast_path=False).run([path], batch_packets=batch)
    assert fast.events == slow.events
    assert series_rows(fast) == series_rows(slow)
    assert fast_result.warnings == slow_result.warnings
    assert fast.flows == slow.flows
    # By hand: every request the capture shows once is tallied once (copies dropped).
    requests = sum(s.requests for s in fast.series)
    assert requests == counts["requests"] == 2 * CYCLES - CYCLES // 12
    answered = sum(len(s.ts) for s in fast.series)
    # an answer whose request the capture lost has no request: not a series row
    assert answered == counts["responses"] - CYCLES // 12
    if batch == 1000:  # (smaller batches: each one's last 64 rows go per packet)
        # The batch path took all but the segments around each impairment (at most three
        # per impaired cycle; 6 kinds of 12 cycles are impaired). Before BatchView.screen and
        # .stops it stopped at every late copy and gave up after 16 passes: 22 of 920 PDUs.
        impaired = 6 * (CYCLES // 12)
        assert fast_result.events["modbus_fast_pdus"] >= 2 * counts["requests"] - 3 * impaired


def test_the_counts_are_tsharks(tmp_path: Path, tshark: str) -> None:
    """tshark dissects each request and answer the capture shows (not the retransmitted
    copies): as many as we count, by transaction id and function. Without the reordered and
    the overlapping cycles: tshark (no out-of-order reassembly) does not dissect the
    overtaken segment nor the new bytes of a retransmission, which we decode."""
    path, counts = impaired_capture(tmp_path / "impaired.pcap", plain=(3, 7))
    rows = tshark_fields(tshark, path, "mbtcp", ["mbtcp.trans_id", "modbus.func_code", "tcp.dstport"])
    theirs = sorted((int(tid), int(fc), dport == "502") for _, tid, fc, dport in rows)
    rec = Recorder()
    Analysis([rec], fold_reads=False).run([path], batch_packets=200)
    ours = sorted((e.transaction_id, e.function, isinstance(e, ModbusRequest))
                  for e in rec.events if isinstance(e, ModbusRequest | ModbusResponse))
    assert len([t for t in theirs if t[2]]) == counts["requests"]
    assert len([t for t in theirs if not t[2]]) == counts["responses"]
    assert ours == theirs
