"""The Modbus book's bulk paths for many series keys (shape e: hundreds of masters and slaves,
short connections): the tally of a batch's read requests summed per host with NumPy
(``_tally_groups``), series of a few answers taken without a sort each (``_in_order``), and
the summaries of sliced series (``_repeated``) give what the per-key reference gives."""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cranewatch.pipeline import analyze
from cranewatch.protocols import modbus
from cranewatch.protocols.modbus import (
    ModbusBook,
    _peers,
    _repeated,
    _series_keys,
    _tally_groups,
)


def _keys(rng: np.random.Generator, npairs: int, nkeys: int) -> np.ndarray:
    pair = rng.integers(0, npairs, nkeys)
    unit = rng.integers(0, 3, nkeys)
    fc = rng.integers(1, 5, nkeys)
    address = rng.choice([0, 100, 200, 4000], nkeys)
    qty = rng.choice([1, 2, 10], nkeys)
    return np.unique(_series_keys(pair, unit, fc, address, qty))


def _per_key(book: ModbusBook, pairs: list[tuple[str, str]], keys: np.ndarray, first: np.ndarray,
             last: np.ndarray, counts: np.ndarray) -> None:
    """The reference: one ``tally_request`` per key, as ``_fold_reads`` did before."""
    for key, lo, hi, n in zip(keys.tolist(), first.tolist(), last.tolist(), counts.tolist(),
                              strict=True):
        master, slave = pairs[key >> 48]
        book.tally_request(master, slave, (key >> 40) & 0xFF, (key >> 32) & 0xFF,
                           (key >> 16) & 0xFFFF, key & 0xFFFF, lo, hi, n)


def _document(book: ModbusBook) -> tuple[object, object]:
    return _peers("master", book.masters), _peers("slave", book.slaves)


def test_a_batch_tallied_in_bulk_is_the_per_key_tally() -> None:
    rng = np.random.default_rng(5)
    # 60 masters x 150 slaves, some hosts both (a gateway polls and is polled), over 3 batches
    hosts = [f"10.1.{i // 250}.{i % 250}" for i in range(200)]
    bulk, reference = ModbusBook(), ModbusBook()
    for _ in range(3):
        pairs = list({(hosts[int(m)], hosts[50 + int(s)])
                      for m, s in zip(rng.integers(0, 60, 900), rng.integers(0, 150, 900),
                                      strict=True)})
        keys = _keys(rng, len(pairs), 3000)
        first = 1_700_000_000 + rng.random(len(keys)) * 100
        last = first + rng.random(len(keys))
        counts = rng.integers(1, 5, len(keys))
        assert _tally_groups(bulk, pairs, keys, first, last, counts)
        _per_key(reference, pairs, keys, first, last, counts)
    assert len(bulk.masters) > 50 and len(bulk.slaves) > 140
    assert _document(bulk) == _document(reference)


def test_bulk_tally_counts_checked_by_hand() -> None:
    pairs = [("10.0.0.1", "10.0.0.9"), ("10.0.0.2", "10.0.0.9"), ("10.0.0.1", "10.0.0.8")]
    # (pair, unit, function, address, quantity)
    rows = [(0, 1, 3, 100, 4), (0, 1, 4, 100, 4), (1, 2, 3, 100, 4), (2, 1, 3, 100, 4),
            (2, 1, 1, 0, 16)]
    keys = _series_keys(*(np.array(column) for column in zip(*rows, strict=True)))
    book = ModbusBook()
    assert _tally_groups(book, pairs, keys, np.array([10.0, 11.0, 12.0, 5.0, 20.0]),
                         np.array([15.0, 11.0, 13.0, 6.0, 30.0]), np.array([3, 1, 2, 5, 7]))
    one = book.masters["10.0.0.1"]
    assert one.peers == {"10.0.0.8", "10.0.0.9"} and one.units == {1}
    assert one.functions == {3: 8, 4: 1, 1: 7}
    assert one.ranges == {("HR", 100, 4, "read"): 8, ("IR", 100, 4, "read"): 1,
                          ("CO", 0, 16, "read"): 7}
    assert (one.first_seen, one.last_seen) == (5.0, 30.0)
    nine = book.slaves["10.0.0.9"]
    assert nine.peers == {"10.0.0.1", "10.0.0.2"} and nine.units == {1, 2}
    assert nine.functions == {3: 5, 4: 1}
    assert nine.ranges == {("HR", 100, 4, "read"): 5, ("IR", 100, 4, "read"): 1}
    assert (nine.first_seen, nine.last_seen) == (10.0, 15.0)


@pytest.mark.parametrize("bound", ["MAX_RANGES", "MAX_PEERS"])
def test_bulk_tally_leaves_a_batch_that_could_reach_a_bound_to_the_per_key_tally(
        monkeypatch: pytest.MonkeyPatch, bound: str) -> None:
    monkeypatch.setattr(modbus, bound, 3)
    pairs = [(f"10.0.0.{i}", "10.0.1.1") for i in range(4)]
    keys = _series_keys(np.arange(4), np.ones(4), np.full(4, 3), np.arange(4) * 10, np.ones(4))
    book = ModbusBook()
    assert not _tally_groups(book, pairs, keys, np.zeros(4), np.zeros(4), np.ones(4, np.int64))
    assert not book.masters and not book.slaves  # nothing changed: the caller tallies per key


def _answers(book: ModbusBook, key: tuple[str, str, int, int, int, int], ts: list[float],
             frames: list[int]) -> None:
    values = np.arange(len(ts) * key[5], dtype=np.uint16).reshape(len(ts), key[5])
    book.read_answers(key, np.array(ts), np.array(frames, dtype=np.int64), values)


def _as_lists(series: list[modbus.RegisterSeries]) -> list[tuple[object, ...]]:
    return [(s.master, s.slave, s.unit_id, s.function, s.address, s.quantity,
             s.ts.view(np.int64).tolist(), s.frame.tolist(), s.values.tolist(), s.requests,
             s.source) for s in series]


def test_many_small_series_come_out_as_the_sorting_reference_gives_them() -> None:
    def fill(book: ModbusBook) -> None:
        rng = np.random.default_rng(3)
        for i in range(9000):  # more than one chunk of series
            key = (f"10.2.{i % 200}.1", f"10.3.{i // 200}.2", 1, 3, i % 7, 1 + i % 3)
            book.read_requests(key, 2, "e.pcap")
            kind = i % 6
            if kind == 0:
                continue  # requests only
            base = 1000.0 + i
            if kind == 1:  # in order, two batches
                _answers(book, key, [base, base + 0.5], [10, 20])
                _answers(book, key, [base + 1], [30])
            elif kind == 2:  # out of order across batches
                _answers(book, key, [base + 1], [30])
                _answers(book, key, [base], [10])
            elif kind == 3:  # same time, frames decide
                _answers(book, key, [base, base], [11, 10])
            elif kind == 4:  # a NaN time: left to the sort
                _answers(book, key, [base, math.nan], [1, 2])
            else:  # more answers than SMALL_SERIES: the sort's way
                n = modbus.SMALL_SERIES + 1 + int(rng.integers(0, 3))
                _answers(book, key, list(base + rng.random(n)), list(range(n)))

    taken, reference = ModbusBook(), ModbusBook()
    fill(taken)
    fill(reference)
    got = list(taken._take())
    want = [reference._take_one(key) for key in sorted(reference.series)]
    assert not taken.series
    assert _as_lists(got) == _as_lists(want)
    # Hand-checked: kind 2 sorted by time, kind 3 by frame at equal times.
    by_address = {(s.master, s.slave, s.address): s for s in got}
    two = by_address[("10.2.2.1", "10.3.0.2", 2)]
    assert two.ts.tolist() == [1002.0, 1003.0] and two.frame.tolist() == [10, 30]
    three = by_address[("10.2.3.1", "10.3.0.2", 3)]
    assert three.frame.tolist() == [10, 11]


def _summaries(book: ModbusBook) -> list[tuple[object, ...]]:
    return [(s.master, s.slave, s.address, s.summary, len(s.ts),
             float(s.ts[0]) if len(s.ts) else None, int(s.frame[0]) if len(s.frame) else None,
             s.requests, s.exceptions, s.unanswered, s.source) for s in book.take_series()]


def test_slices_nobody_takes_leave_the_summaries_taken_slices_leave() -> None:
    folded, taken = ModbusBook(), ModbusBook()
    for book in (folded, taken):
        for round_ in range(3):  # three slices, then the end
            for i in range(600):
                key = (f"10.2.{i % 30}.1", f"10.3.{i // 30}.2", 1, 4, i % 5, 2)
                book.read_requests(key, 1 + round_, "e.pcap" if i % 2 else "")
                if i % 4 == 0:
                    book.read_unanswered(key)
                base = 100.0 * round_ + i
                kind = i % 5
                if kind == 1:
                    _answers(book, key, [base, base + 1], [2 * i, 2 * i + 1])
                elif kind == 2:  # out of order: built and sorted
                    _answers(book, key, [base + 1, base], [2 * i + 1, 2 * i])
                elif kind == 3:  # packed: built
                    n = modbus.SEAL_ROWS
                    _answers(book, key, list(base + np.arange(n) / n), list(range(n)))
                elif kind == 4:  # the earliest answer comes in a later slice
                    _answers(book, key, [1000.0 - 100.0 * round_ + i], [i])
            if book is folded:
                book.fold_slices()
            else:
                assert len(list(book.take_slices())) == 600
    want = _summaries(taken)
    assert _summaries(folded) == want
    assert all(s[3] for s in want) and len(want) == 600
    # Hand-checked: kind 4 (address 4) keeps the earliest answer, that of the last slice.
    four = next(s for s in want if s[2] == 4 and s[0] == "10.2.4.1" and s[1] == "10.3.0.2")
    assert four[4:7] == (3, 804.0, 4) and four[7:10] == (6, 0, 3)


def test_a_taken_series_owns_its_arrays() -> None:
    book = ModbusBook()
    key = ("10.0.0.1", "10.0.0.2", 1, 3, 0, 2)
    batch_ts = np.array([1.0, 2.0, 3.0])
    book.read_answers(key, batch_ts[:2], np.array([1, 2]), np.zeros((2, 2), np.uint16))
    (series,) = list(book._take())
    assert series.ts.base is None and series.values.base is None
    batch_ts[0] = 99.0
    assert series.ts.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(("item", "count"), [
    (np.array(3.5), 4), (np.array(7, dtype=np.int64), 0), (np.zeros(3, np.uint16), 5),
    (np.zeros(0, np.uint16), 3), (np.arange(2, dtype=np.uint16), 0)])
def test_repeated_is_broadcast_to(item: np.ndarray, count: int) -> None:
    got = _repeated(item, count)
    want = np.broadcast_to(item, (count, *item.shape))
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tolist() == want.tolist() and not got.flags.writeable


# --- Through the pipeline, on a capture of the many-pairs shape (200 masters x 500 slaves)

REPO = Path(__file__).resolve().parent.parent


class _Collect:
    def __init__(self) -> None:
        self.series: list[modbus.RegisterSeries] = []

    def on_event(self, event: object) -> None:
        pass

    def on_series(self, series: modbus.RegisterSeries) -> None:
        self.series.append(series)

    def on_flow_end(self, flow: object) -> None:
        pass

    def finish(self) -> list[object]:
        return []


@pytest.fixture(scope="module")
def many_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("gen_shapes", REPO / "benchmarks/gen_shapes.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_shapes"] = gen
    spec.loader.exec_module(gen)
    path = tmp_path_factory.mktemp("shape-e") / "e.pcap"
    gen.write_shape(path, "e", 40_000, 3)
    return path


def _run(path: Path) -> tuple[object, list[tuple[object, ...]]]:
    sink = _Collect()
    result = analyze([path], sinks=[sink])  # type: ignore[list-item]
    return (result.modbus_masters, result.modbus_slaves), _as_lists(sink.series)


def test_many_pairs_through_the_pipeline_as_the_per_key_path(
        many_pairs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk = _run(many_pairs)
    monkeypatch.setattr(modbus, "_tally_groups", lambda *args: False)
    monkeypatch.setattr(modbus, "_in_order", lambda keys, series: set())
    reference = _run(many_pairs)
    masters, slaves = bulk[0]  # type: ignore[misc]
    assert len(masters) == 200 and len(slaves) == 500 and len(bulk[1]) > 5000
    assert bulk == reference


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_many_pairs_request_counts_are_tsharks(many_pairs: Path) -> None:
    out = subprocess.run(
        ["tshark", "-r", str(many_pairs), "-Y", "modbus && tcp.dstport == 502", "-T", "fields",
         "-e", "ip.src", "-e", "ip.dst", "-e", "modbus.func_code"],
        capture_output=True, text=True, check=True).stdout
    by_master: Counter[tuple[str, int]] = Counter()
    by_slave: Counter[tuple[str, int]] = Counter()
    for line in out.splitlines():
        src, dst, function = line.split("\t")
        by_master[src, int(function)] += 1
        by_slave[dst, int(function)] += 1
    (masters, slaves), _ = _run(many_pairs)
    assert {(m.address, f): n for m in masters for f, n in m.functions} == dict(by_master)
    assert {(s.address, f): n for s in slaves for f, n in s.functions} == dict(by_slave)
