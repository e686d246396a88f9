"""Where flows end: idle timeouts, FIN/RST, and a new connection on the same addresses and ports.

The rules (``flows.FlowTable``) are applied to each packet as it comes, so the flows of a
capture do not depend on how it is cut into batches nor on when the table is swept. Expected
flow counts are worked out by hand from the frames; where tshark is installed, its
``tcp.stream`` numbers (a new stream for a SYN with another initial sequence number on the
same ports) are checked to agree.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cranewatch.flows import FlowSummary, FlowTable
from cranewatch.pipeline import Analysis
from cranewatch.sources.pcapwrite import PcapWriter
from modbus_capture import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Conversation,
    read_request,
    read_response,
    udp_frame,
)

T0 = 1_700_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.flows: list[FlowSummary] = []

    def on_event(self, event: Any) -> None:
        return None

    def on_series(self, series: Any) -> None:
        return None

    def on_flow_end(self, flow: FlowSummary) -> None:
        self.flows.append(flow)

    def finish(self) -> list[Any]:
        return []


def write(path: Path, timed: list[tuple[float, bytes]]) -> Path:
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, nanosecond=True)
    for at, data in timed:
        writer.write(round((T0 + at) * 1e9), data)
    path.write_bytes(buffer.getvalue())
    return path


def flows_of(path: Path, batch: int = 65536, **table: Any) -> list[FlowSummary]:
    recorder = Recorder()
    Analysis([recorder], flow_table=FlowTable(**table)).run([path], batch_packets=batch)
    return sorted(recorder.flows, key=lambda f: f.first_frame)


def tshark_streams(path: Path) -> list[int] | None:
    """tshark's ``tcp.stream`` of each TCP frame, None without tshark."""
    if shutil.which("tshark") is None:
        return None
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "tcp", "-T", "fields", "-e", "tcp.stream"],
                         capture_output=True, text=True, check=True).stdout
    return [int(line) for line in out.split()]


def transaction(c: Conversation, tid: int) -> list[bytes]:
    return [c.send(True, read_request(tid, 3, 0, 2)), c.send(False, read_response(tid, 3, [tid, 7]))]


BATCHES = [1, 2, 5, 65536]


@pytest.mark.parametrize("batch", BATCHES)
def test_rst_after_one_transaction_then_the_same_ports_again(tmp_path: Path, batch: int) -> None:
    """A master polls once, resets, and reconnects from the same port 0.5 s later (well within
    the 5 s a closed flow lingers): the new SYN (another ISN) is a second flow."""
    first = Conversation("10.20.7.30", "10.20.7.10", client_port=40100)
    frames = [*first.handshake(), *transaction(first, 1), first.send(True, b"", RST | ACK)]
    second = Conversation("10.20.7.30", "10.20.7.10", client_port=40100,
                          seq={True: 900_000, False: 700_000})
    frames += [*second.handshake(), *transaction(second, 2), *second.close()]
    timed = [(0.01 * i, f) for i, f in enumerate(frames[:6])] + \
        [(0.5 + 0.01 * i, f) for i, f in enumerate(frames[6:])]
    path = write(tmp_path / "reuse.pcap", timed)
    flows = flows_of(path, batch)
    # frames 1-6: SYN, SYN-ACK, ACK, request, response, RST; frames 7-14: the second connection
    assert [(f.first_frame, f.packets_to_server, f.packets_to_client) for f in flows] == [
        (1, 4, 2), (7, 5, 3)]
    assert [f.closed for f in flows] == [True, True]
    assert all(f.handshake and f.client_port == 40100 for f in flows)
    streams = tshark_streams(path)
    if streams is not None:
        assert streams == [0] * 6 + [1] * 8


@pytest.mark.parametrize("batch", BATCHES)
def test_fin_both_sides_then_a_new_syn_on_the_same_ports(tmp_path: Path, batch: int) -> None:
    first = Conversation("10.20.7.31", "10.20.7.10", client_port=40200)
    frames = [*first.handshake(), *transaction(first, 1), *first.close()]  # 8 frames
    second = Conversation("10.20.7.31", "10.20.7.10", client_port=40200,
                          seq={True: 123_456, False: 654_321})
    frames += [*second.handshake(), *transaction(second, 1)]  # 5 frames, never closed
    path = write(tmp_path / "fin.pcap", [(0.1 * i, f) for i, f in enumerate(frames)])
    flows = flows_of(path, batch)
    assert [(f.first_frame, f.packets, f.closed) for f in flows] == [(1, 8, True), (9, 5, False)]
    streams = tshark_streams(path)
    if streams is not None:
        assert streams == [0] * 8 + [1] * 5


def test_a_retransmitted_syn_is_the_same_flow(tmp_path: Path) -> None:
    c = Conversation("10.20.7.32", "10.20.7.10", client_port=40300)
    syn = c.frame(True, SYN)
    frames = [syn, syn]  # no answer to the first: the client sends it again (same ISN)
    c.seq[True] += 1
    frames += [c.send(False, b"", SYN | ACK), c.send(True, b"", ACK), *transaction(c, 1)]
    path = write(tmp_path / "retx.pcap", [(0.0, frames[0]), *((1.0 + 0.01 * i, f) for i, f in enumerate(frames[1:]))])
    for batch in (1, 65536):
        (flow,) = flows_of(path, batch)
        assert (flow.packets_to_server, flow.packets_to_client) == (4, 2)
    streams = tshark_streams(path)
    if streams is not None:
        assert streams == [0] * 6


@pytest.mark.parametrize("batch", BATCHES)
def test_a_tcp_flow_idle_past_its_timeout_is_ended_when_touched(tmp_path: Path, batch: int) -> None:
    """Two requests 301 s apart on one connection (no handshake seen, no FIN): two flows with the
    300 s timeout, whatever the batches (before, a sweep had to fall in the silence)."""
    c = Conversation("10.20.7.33", "10.20.7.10", client_port=40400)
    frames = [*transaction(c, 1), *transaction(c, 2)]
    path = write(tmp_path / "idle.pcap", [(0.0, frames[0]), (0.1, frames[1]), (301.2, frames[2]),
                                          (301.3, frames[3])])
    flows = flows_of(path, batch)
    assert [(f.first_frame, f.packets, f.first_seen - T0) for f in flows] == [
        (1, 2, pytest.approx(0.0)), (3, 2, pytest.approx(301.2))]
    # 299 s apart: one flow
    path = write(tmp_path / "busy.pcap", [(0.0, frames[0]), (0.1, frames[1]), (299.2, frames[2]),
                                          (299.3, frames[3])])
    assert [f.packets for f in flows_of(path, batch)] == [4]


@pytest.mark.parametrize("batch", [1, 3, 65536])
def test_udp_idle_timeout_on_touch(tmp_path: Path, batch: int) -> None:
    query = udp_frame("10.20.7.30", "10.20.0.8", 40001, 53, b"q" * 12)
    answer = udp_frame("10.20.0.8", "10.20.7.30", 53, 40001, b"a" * 12)
    # 0, 0.1, then 61 s later (a new flow), then 59 s later (the same one)
    path = write(tmp_path / "dns.pcap", [(0.0, query), (0.1, answer), (61.2, query), (120.2, answer)])
    assert [(f.first_frame, f.packets) for f in flows_of(path, batch)] == [(1, 2), (3, 2)]


@pytest.mark.parametrize("batch", [1, 65536])
def test_a_closed_flow_lingers_five_seconds(tmp_path: Path, batch: int) -> None:
    """After a RST a late ACK within 5 s belongs to the flow; one 6 s later starts another."""
    c = Conversation("10.20.7.34", "10.20.7.10", client_port=40500)
    frames = [*c.handshake(), c.send(True, b"", RST | ACK)]
    late = c.frame(False, ACK)
    timed = [(0.01 * i, f) for i, f in enumerate(frames)] + [(2.0, late), (8.5, late)]
    flows = flows_of(write(tmp_path / "linger.pcap", timed), batch)
    assert [(f.first_frame, f.packets, f.closed) for f in flows] == [(1, 5, True), (6, 1, False)]


def test_many_short_connections_reuse_the_table_slots(tmp_path: Path) -> None:
    """Shape e in small: connections of 1-4 transactions closed by FIN or RST; every packet
    counted once, every flow its own, while the table's slots are reused."""
    frames: list[tuple[float, bytes]] = []
    expected: list[int] = []
    at = 0.0
    for n in range(60):
        c = Conversation(f"10.20.{n % 3}.{50 + n % 7}", "10.20.7.10", client_port=41000 + n)
        part = c.handshake()
        for tid in range(1 + n % 4):
            part += transaction(c, tid)
        part += c.close() if n % 3 else [c.send(True, b"", RST | ACK)]
        expected.append(len(part))
        for f in part:
            frames.append((at, f))
            at += 0.05
    path = write(tmp_path / "short.pcap", frames)
    for batch in (7, 65536):
        flows = flows_of(path, batch, closed_linger=1.0)
        assert sorted(f.packets for f in flows) == sorted(expected)
        assert [f.client_port for f in flows] == [41000 + n for n in range(60)]


def test_reused_ports_inside_one_batch_keep_their_events(tmp_path: Path) -> None:
    """Three connections on the same ports in one batch: each flow's Modbus events are its own
    and each request is answered (no pairing across the connections)."""
    from cranewatch.protocols.modbus import ModbusResponse

    class Events(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.responses: list[ModbusResponse] = []

        def on_event(self, event: Any) -> None:
            if isinstance(event, ModbusResponse):
                self.responses.append(event)

    frames: list[bytes] = []
    for k in range(3):
        c = Conversation("10.20.7.35", "10.20.7.10", client_port=40600,
                         seq={True: 10_000 * (k + 1), False: 90_000 * (k + 1)})
        frames += [*c.handshake(), *transaction(c, 1), c.send(True, b"", RST | ACK)]
    path = write(tmp_path / "three.pcap", [(0.01 * i, f) for i, f in enumerate(frames)])
    recorder = Events()
    Analysis([recorder], fold_reads=False).run([path])
    assert [f.first_frame for f in recorder.flows] == [1, 7, 13]
    assert [(r.frame, r.request_frame) for r in recorder.responses] == [(5, 4), (11, 10), (17, 16)]
    assert PSH and FIN and SYN  # the helpers' flags, imported for the frames above


def test_shared_capture_flows_do_not_depend_on_batches(shared_data: Path) -> None:
    """PROFINET CM over UDP, several captures one after the other with silences of minutes to
    months: 117 flows by the 60 s UDP timeout (counted by hand from tshark's fields: a flow per
    5-tuple, a new one after each silence > 60 s), the same whatever the batch size. Before, the
    count depended on where the sweeps fell (77 with the default batch)."""
    path = shared_data / "pcaps" / "icsnpp-profinet-io-cm" / "testing" / "traces" / "profinet_io_cm.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not in the shared data")
    counts = {batch: len(flows_of(path, batch)) for batch in (64, 1000, 65536)}
    assert counts == {64: 117, 1000: 117, 65536: 117}


def test_the_conversation_book_folds_flow_runs_as_it_folds_summaries() -> None:
    """``ConversationBook.on_flows`` (the flow table's flows in runs) gives what
    ``on_flow_end`` gives from each flow's summary, on a lab capture with many flows."""
    from cranewatch.conversations import ConversationBook

    capture = Path(__file__).resolve().parent.parent / "src" / "cranewatch" / "data" / "lab" / "normal" / "crane-lan.pcap"

    class SummariesOnly:  # the book as a sink that only has on_flow_end
        def __init__(self) -> None:
            self.book = ConversationBook()

        def on_event(self, event: Any) -> None:
            return None

        def on_series(self, series: Any) -> None:
            return None

        def on_flow_end(self, flow: FlowSummary) -> None:
            self.book.on_flow_end(flow)

        def finish(self) -> list[Any]:
            return []

    bulk, single = ConversationBook(), SummariesOnly()
    result = Analysis([bulk, single]).run([capture])
    assert bulk.conversations() == single.book.conversations()
    assert sum(c.flows for c in bulk.conversations()) == result.flows > 10


def test_grouping_gives_the_rows_in_group_order() -> None:
    """The row order the flow table reads restarts in: ``argsort(group, stable)``, also when
    the hash grouping falls back to the exact sort (keys made to collide on purpose)."""
    import numpy as np

    from cranewatch import flows

    rng = np.random.default_rng(7)
    for count in (1, 2, 9, 5000):
        keys = np.zeros(count, dtype=flows._KEY_DTYPE)
        keys["pa"] = rng.integers(0, 30, count)
        keys["proto"] = 6
        _, _, inverse, order = flows._group_rows(keys)
        assert (order == np.argsort(inverse, kind="stable")).all()
    original = flows._HASH_MULTIPLIERS.copy()
    try:
        flows._HASH_MULTIPLIERS[:] = 0  # every key hashes alike: the exact path
        _, _, inverse, order = flows._group_rows(keys)
        assert len(set(inverse.tolist())) == len(set(keys["pa"].tolist()))
        assert (order == np.argsort(inverse, kind="stable")).all()
    finally:
        flows._HASH_MULTIPLIERS[:] = original


def test_flow_keys_of_many_hosts_and_ports_do_not_collide() -> None:
    """Shape e's keys (200 masters x 500 slaves, ephemeral ports to 502): the 48 bits the
    grouping sorts on tell every key apart, so no batch needs the exact (slow) sort. The
    earlier hash (each word mixed alone, XOR-ed) gave 210 collisions among these 60,000 keys."""
    import ipaddress

    import numpy as np

    from cranewatch import flows

    rng = np.random.default_rng(3)
    count = 60_000

    def mapped(text: str) -> bytes:
        return b"\x00" * 10 + b"\xff\xff" + ipaddress.IPv4Address(text).packed

    masters = [mapped(f"10.30.{i // 250}.{i % 250 + 1}") for i in range(200)]
    slaves = [mapped(f"10.40.{i // 250}.{i % 250 + 1}") for i in range(500)]
    keys = np.zeros(count, dtype=flows._KEY_DTYPE)
    keys["a"] = np.array([masters[i] for i in rng.integers(0, 200, count)], dtype="V16")
    keys["b"] = np.array([slaves[i] for i in rng.integers(0, 500, count)], dtype="V16")
    keys["pa"] = rng.integers(49152, 65535, count)
    keys["pb"] = 502
    keys["proto"] = 6
    distinct = len(np.unique(keys.view("V40")))
    top = flows._digest(keys.view(np.uint64).reshape(count, -1)) >> np.uint64(16)
    assert len(np.unique(top)) == distinct
    first, _, inverse, _ = flows._group_rows(keys)
    assert len(first) == distinct
    assert (keys.view("V40")[first][inverse] == keys.view("V40")).all()


@pytest.mark.parametrize("batch", [3, 65536])
def test_flows_ending_together_reach_the_sinks_in_capture_order(tmp_path: Path, batch: int) -> None:
    """Flows that end at the same moment (here: the end of the capture) are given to sinks in
    the order their first packets came, not in the order of a hash of their addresses."""
    frames = []
    for n in range(40):
        c = Conversation(f"10.20.{n % 5}.{100 - n}", "10.20.7.10", client_port=40000 + 7 * n)
        frames.append(c.send(True, read_request(1, 3, 0, 1)))
    flows = Recorder()
    Analysis([flows]).run([write(tmp_path / "order.pcap", [(0.01 * i, f) for i, f in enumerate(frames)])],
                          batch_packets=batch)
    assert [f.first_frame for f in flows.flows] == list(range(1, 41))
