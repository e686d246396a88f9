"""Series nobody reads the values of are only counted (issue 13, shape e): when the values go
out in slices no sink takes, the Modbus book keeps per series an array row (answers, the first
answer, requests, exceptions, unanswered requests; ``modbus._Counted``) instead of the answers,
and the summaries at the end are those the reference path (answers kept, slices folded) gives."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cranewatch.pipeline import analyze
from cranewatch.protocols import modbus
from cranewatch.protocols.modbus import ModbusBook, RegisterSeries

REPO = Path(__file__).resolve().parent.parent


def _summaries(series: list[RegisterSeries]) -> list[tuple[object, ...]]:
    return [(s.master, s.slave, s.unit_id, s.function, s.address, s.quantity, s.summary,
             len(s.ts), float(s.ts[0]) if len(s.ts) else None,
             int(s.frame[0]) if len(s.frame) else None, s.values.shape, s.requests, s.exceptions,
             s.unanswered, s.source) for s in series]


def _feed(book: ModbusBook, slices: int) -> None:
    """Requests, unanswered requests, exceptions and answers (some out of time order, the
    earliest in a later slice) of 300 keys over ``slices`` slices."""
    for round_ in range(slices):
        for i in range(300):
            key = (f"10.2.{i % 30}.1", f"10.3.{i // 30}.2", 1, 3, i % 5, 2)
            if not (i % 7 == 6 and round_ == 0):  # some keys are first seen by an answer
                book.read_requests(key, 1 + round_, "e.pcap")
            if i % 4 == 0:
                book.read_unanswered(key)
            if i % 9 == 0:
                book.read_exception(key)
            base = 100.0 * round_ + i
            times = {0: [], 1: [base, base + 1], 2: [base + 1, base],
                     3: [1000.0 - 100.0 * round_ + i]}[i % 4]
            frames = [2 * i + k for k in range(len(times))]
            if book.values_wanted:
                if times:
                    book.read_answers(key, np.array(times), np.array(frames, dtype=np.int64),
                                      np.ones((len(times), 2), dtype=np.uint16))
            else:
                for t, f in zip(times, frames, strict=True):
                    book.read_answer(key, t, f, (1, 1))
        book.fold_slices()


def test_counted_series_are_the_summaries_of_folded_slices() -> None:
    reference, counted = ModbusBook(), ModbusBook()
    counted.values_wanted = False
    _feed(reference, 3)
    _feed(counted, 3)
    assert not counted.series and not counted.heads and len(counted.counted) == 300
    want = _summaries(list(reference.take_series()))
    got = _summaries(list(counted.take_series()))
    assert got == want and len(got) == 300
    by_key = {s[:6]: s for s in got}
    # By hand: key i=8 (10.2.8.1 -> 10.3.0.2, address 3): answers of kind 0 (none); requests
    # 1+2+3, unanswered 3 (i % 4 == 0), no exception; no answer, so no first answer.
    assert by_key["10.2.8.1", "10.3.0.2", 1, 3, 3, 2][7:] == (0, None, None, (0, 2), 6, 0, 3,
                                                               "e.pcap")
    # i=27 (10.2.27.1 -> 10.3.0.2, address 2, kind 3): one answer per slice at 1027, 927, 827:
    # the earliest is the last slice's, frame 54; no request in the first slice (27 % 7 == 6):
    # requests 2+3; exceptions 3 (27 % 9 == 0), the first of them its first sight: source "".
    assert by_key["10.2.27.1", "10.3.0.2", 1, 3, 2, 2][7:] == (3, 827.0, 54, (3, 2), 5, 3, 0, "")
    # i=6 (10.2.6.1 -> 10.3.0.2, address 1, kind 2): first seen by its answers: source "";
    # answers 7.0 (frame 12) then 6.0 (frame 13) each slice: the earliest is 6.0, frame 13.
    assert by_key["10.2.6.1", "10.3.0.2", 1, 3, 1, 2][7:] == (6, 6.0, 13, (6, 2), 5, 0, 0, "")
    assert not counted.counted  # taken: the table starts over
    assert list(counted.take_series()) == []


class _Summaries:
    """A sink that reads each series' summary only (as the detectors do)."""

    series_use = "summary"

    def __init__(self) -> None:
        self.series: list[RegisterSeries] = []

    def on_event(self, event: object) -> None:
        pass

    def on_series(self, series: RegisterSeries) -> None:
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
    path = tmp_path_factory.mktemp("shape-e-counted") / "e.pcap"
    gen.write_shape(path, "e", 60_000, 5)
    return path


def _run(path: Path, batch_packets: int) -> tuple[Any, list[tuple[object, ...]]]:
    sink = _Summaries()
    result = analyze([path], sinks=[sink], batch_packets=batch_packets)  # type: ignore[list-item]
    return (result.modbus_masters, result.modbus_slaves, result.flows), _summaries(sink.series)


def test_counted_pipeline_run_is_the_reference_run(many_pairs: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = modbus._count_answers

    def spy(*args: Any) -> None:
        calls.append(len(args[2]))
        real(*args)

    monkeypatch.setattr(modbus, "_count_answers", spy)
    counted = _run(many_pairs, 4096)
    assert sum(calls) > 10_000  # the answers went the counted way
    monkeypatch.setattr(modbus.ModbusRun, "keep_values", lambda self, keep: None)
    reference = _run(many_pairs, 4096)
    assert counted == reference
    assert len(counted[1]) > 5000 and all(s[6] for s in counted[1])
    assert _run(many_pairs, 1000) == reference  # whatever the batches


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_counted_requests_and_answers_are_tsharks(many_pairs: Path) -> None:
    out = subprocess.run(
        ["tshark", "-r", str(many_pairs), "-Y", "modbus.func_code <= 4 && !modbus.exception_code",
         "-T", "fields", "-e", "tcp.dstport"],
        capture_output=True, text=True, check=True).stdout.split()
    requests, answers = out.count("502"), len(out) - out.count("502")
    _, series = _run(many_pairs, 4096)
    assert sum(s[11] for s in series) == requests  # type: ignore[misc]
    assert sum(s[7] for s in series) == answers  # type: ignore[misc]
    assert requests > 10_000 and answers > 10_000
