"""Bounded state of a run: the host table, the protocol tallies, the Modbus master/slave
tallies and each flow's reassembly buffer stop growing at their bounds, and say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from cranewatch import pipeline
from cranewatch.flows import Stream
from cranewatch.pipeline import Analysis
from cranewatch.protocols import modbus
from modbus_capture import Conversation, read_request, read_response, udp_frame, write_pcap


def test_the_host_table_stops_at_its_bound_and_counts_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MAX_HOSTS", 3)
    frames = [udp_frame(f"10.30.0.{i}", "10.30.0.250", 40000, 9999, b"x",
                        smac=f"02:00:00:00:01:{i:02x}") for i in range(1, 7)]
    result = Analysis().run([write_pcap(tmp_path / "hosts.pcap", frames)])
    # three of the six senders are listed (which three: the order a batch groups them in)
    assert len(result.hosts) == 3 and {h.packets for h in result.hosts} == {1}
    assert result.events["hosts_untracked_packets"] == 3
    (warning,) = [w for w in result.warnings if w.kind == "limit"]
    assert "more than 3 hosts" in warning.message


def test_unclaimed_ports_beyond_the_bound_are_summed_as_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MAX_PROTOCOL_NAMES", 2)
    frames = [udp_frame("10.30.0.1", "10.30.0.2", 40000, port, b"probe") for port in (7001, 7002, 7003, 7004)]
    result = Analysis().run([write_pcap(tmp_path / "ports.pcap", frames)])
    named = sorted((p.protocol, p.flows) for p in result.protocols)
    assert [n for n, _ in named if n != "udp/other"] != [] and len(named) == 3
    assert dict(named)["udp/other"] == 2 and sum(f for _, f in named) == 4
    assert any("summed as udp/other" in w.message for w in result.warnings if w.kind == "limit")


def test_modbus_tallies_keep_at_most_their_bound_of_ranges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modbus, "MAX_RANGES", 2)
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    for tid, address in enumerate((100, 200, 300, 100), start=1):
        frames.append(c.send(True, read_request(tid, 3, address, 1)))
        frames.append(c.send(False, read_response(tid, 3, [7])))
    result = Analysis().run([write_pcap(tmp_path / "scan.pcap", frames)])
    (master,) = result.modbus_masters  # type: ignore[attr-defined]
    assert master.functions == ((3, 4),)  # every request still counted by function
    assert master.ranges == (("HR", 100, 1, "read", 2), ("HR", 200, 1, "read", 1))


def test_a_full_reassembly_buffer_gives_up_its_hole_with_a_located_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Stream.__init__, "__defaults__", (100, 3.0))  # 100 bytes per direction
    c = Conversation("10.20.7.30", "10.20.7.10")
    frames = c.handshake()
    frames.append(c.send(True, read_request(1, 3, 0, 1)))
    c.seq[True] += 12  # a request the capture lost: a hole
    for tid in range(3, 13):  # 10 requests of 12 bytes wait behind it: 120 > 100
        frames.append(c.send(True, read_request(tid, 3, 0, 1)))
    result = Analysis(fast_path=False).run([write_pcap(tmp_path / "hole.pcap", frames)])
    (warning,) = [w for w in result.warnings if w.kind == "limit"]
    # frames 1-3 handshake, 4 the first request; behind the hole frames 5-12 hold 8 x 12 = 96
    # bytes, frame 13 makes 108 > 100: the hole is given up there
    assert warning.frame == 13 and "more than 100 bytes waited behind a hole" in warning.message
    assert result.events["reassembly_overflows"] == 1
    assert result.events["modbus_request"] == 11  # the rest is decoded once the hole is given up


def test_slow_path_answers_of_many_series_are_packed_by_a_global_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand series each below ROWS_PACKED kept every answer as a Python row (0.5-5 KB)
    until the end; a budget over all of them packs them, and the series come out the same."""

    def fill(book: modbus.ModbusBook) -> None:
        for i in range(30):
            for unit in (1, 2, 3):
                key = ("10.0.0.1", "10.0.0.2", unit, 3, 100, 2)
                book.read_answer(key, 1000.0 + i, 10 * i + unit, (i, unit * 1000 + i))

    whole = modbus.ModbusBook()
    fill(whole)
    assert sum(len(p.row_ts) for p in whole.series.values()) == 90  # nothing packed
    monkeypatch.setattr(modbus, "ROW_BUDGET", 10)
    budgeted = modbus.ModbusBook()
    fill(budgeted)
    assert sum(len(p.row_ts) for p in budgeted.series.values()) < 10  # packed as it went
    for a, b in zip(whole.take_series(), budgeted.take_series(), strict=True):
        assert (a.unit_id, a.ts.tolist(), a.frame.tolist(), a.values.tolist()) == (
            b.unit_id, b.ts.tolist(), b.frame.tolist(), b.values.tolist())
