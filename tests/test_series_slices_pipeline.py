"""The pipeline hands register values out in time slices (issue 13: flat memory): the process
checks take them slice by slice, the detectors a summary of each series at the end, and the
analysis document is the one a run that keeps every series whole gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cranewatch import pipeline
from cranewatch.judging import load_judging
from cranewatch.pipeline import analyze
from cranewatch.process import slices
from cranewatch.process.engine import ProcessSink, read_captures
from cranewatch.process.signals import grid_step
from cranewatch.profile import load_profile
from cranewatch.protocols.modbus import ModbusBook, RegisterSeries
from cranewatch.report.jsonl import render as to_jsonl
from cranewatch.sinks import build_sinks

DATA = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data"
PROFILE = DATA / "profiles" / "sts-07.toml"


class _WholeSeries:
    """A sink that wants every series whole: the pipeline then keeps them to the end."""

    def on_event(self, event: Any) -> None:
        return None

    def on_series(self, series: Any) -> None:
        return None

    def on_flow_end(self, flow: Any) -> None:
        return None

    def finish(self) -> list[Any]:
        return []


def _document(capture: Path, whole: bool) -> str:
    """The JSON-lines document, read 64 packets a batch (values go out between batches)."""
    sinks = [*build_sinks(load_judging(PROFILE).profile), *([_WholeSeries()] if whole else [])]
    return to_jsonl(analyze([capture], sinks=sinks, batch_packets=64))


def _short_slices(monkeypatch: pytest.MonkeyPatch, capture: Path, **options: float) -> list[Any]:
    """Values handed out every 3 s of capture time, checked in 5 s slices (the lab captures
    last 33-180 s; the default slices would hold each whole) on the whole run's grid step (a
    first slice measures its own: ``slices``' documented limit); the checkers made are returned."""
    dt = grid_step(read_captures([capture], load_profile(PROFILE)).signals())
    made: list[Any] = []
    real = slices.SlicedChecks

    def make(sink: ProcessSink) -> slices.SlicedChecks:
        checks = real(sink, slice_s=5.0, dt=dt, **{"lookback_s": 20.0, "lookahead_s": 15.0, **options})
        made.append(checks)
        return checks

    monkeypatch.setattr(pipeline, "SERIES_EVERY", 3.0)
    monkeypatch.setattr(slices, "SlicedChecks", make)
    return made


@pytest.mark.parametrize("scenario", ["false-load", "replay", "safety-bypass", "rogue-master", "normal-2"])
def test_a_sliced_run_writes_the_document_a_whole_run_writes(monkeypatch: pytest.MonkeyPatch,
                                                             scenario: str) -> None:
    capture = DATA / "lab" / scenario / "crane-lan.pcap"
    made = _short_slices(monkeypatch, capture)
    sliced = _document(capture, whole=False)
    assert made and made[0].runs > 3, "the values should have gone out in slices"
    assert sliced == _document(capture, whole=True)
    lines = [json.loads(line) for line in sliced.splitlines()]
    if scenario != "normal-2":
        assert any(line.get("rule", "").startswith("process-") for line in lines)


def test_the_book_holds_only_what_came_since_the_last_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-series retention fails this: after every hand-out the Modbus book is empty of
    answers, and what the process checks hold spans their look-back, not the capture."""
    held: list[tuple[int, float]] = []
    books: list[ModbusBook] = []
    real = pipeline.Analysis.hand_slices

    def spy(self: pipeline.Analysis, until: float | None) -> None:
        real(self, until)
        book = next(run.book for run in self.runs if hasattr(run, "book"))
        books.append(book)
        answers = sum(len(parts.ts) + len(parts.row_ts) + len(parts.packed) for parts in book.series.values())
        checks = next(s._sliced for s in self.sinks if isinstance(s, ProcessSink))
        if checks is not None and checks._series:
            span = max(float(p.ts[-1]) for p in checks._series) - min(float(p.ts[0]) for p in checks._series)
            held.append((answers, span))

    monkeypatch.setattr(pipeline.Analysis, "hand_slices", spy)

    capture = DATA / "lab" / "normal-2" / "crane-lan.pcap"
    made = _short_slices(monkeypatch, capture, lookback_s=10.0, lookahead_s=5.0)
    result = analyze([capture], sinks=build_sinks(load_judging(PROFILE).profile), batch_packets=64)
    assert len(held) > 30 and made[0].runs > 10  # 180 s of capture in 3 s hand-outs
    assert all(answers == 0 for answers, _ in held)
    # look-back + the hold sample + a slice + look-ahead + one hand-out
    assert max(span for _, span in held) <= 10.0 + slices.HOLD_S + 5.0 + 5.0 + 3.0 + 1e-6
    assert books[-1].heads == {} and books[-1].series == {}
    assert result.series > 0


def test_a_summary_counts_what_every_slice_carried() -> None:
    book = ModbusBook()
    key = ("10.0.0.1", "10.0.0.2", 1, 3, 100, 2)
    book.read_requests(key, 3, "a.pcap")
    book.read_answers(key, np.array([5.0, 6.0]), np.array([7, 9]), np.array([[1, 2], [3, 4]], np.uint16))
    first = list(book.take_slices())
    book.read_requests(key, 2, "a.pcap")
    book.read_unanswered(key)
    # a late answer that sorts before the first one handed out
    book.read_answer(key, 4.5, 3, (5, 6))
    second = list(book.take_slices())
    assert [len(p.ts) for p in first + second] == [2, 1]
    assert book.series == {}
    (summary,) = list(book.take_series())
    assert isinstance(summary, RegisterSeries) and summary.summary
    assert (len(summary.ts), float(summary.ts[0]), int(summary.frame[0])) == (3, 4.5, 3)
    assert (summary.requests, summary.unanswered, summary.source) == (5, 1, "a.pcap")
    assert summary.values.shape == (3, 2)
    assert list(book.take_series()) == []


def test_the_process_sink_ignores_summaries_and_learning_keeps_series_whole() -> None:
    sink = ProcessSink()
    assert sink.series_use == "whole"
    summary = RegisterSeries("m", "s", 1, 3, 0, 1, np.broadcast_to(np.float64(1.0), (4,)),
                             np.broadcast_to(np.int64(1), (4,)), np.zeros((4, 1), np.uint16),
                             summary=True)
    sink.on_series(summary)
    assert sink.series == []
