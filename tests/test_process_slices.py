"""Process checks in time slices (``process.slices``) find exactly what the whole-series run
finds, on the bundled lab captures with the lab profile, while holding only a bounded stretch
of values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cranewatch.process.engine import ProcessSink, read_captures
from cranewatch.process.signals import grid_step
from cranewatch.process.slices import HOLD_S, SlicedChecks, _cut_open, sliced_findings
from cranewatch.profile import load_profile

DATA = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data"
PROFILE = DATA / "profiles" / "sts-07.toml"
# The scenarios whose captures give process findings (and one clean one).
SCENARIOS = ("false-load", "replay", "rogue-master", "safety-bypass", "wind-freeze", "normal")


@pytest.fixture(scope="module")
def sinks() -> dict[str, ProcessSink]:
    profile = load_profile(PROFILE)
    return {name: read_captures([DATA / "lab" / name / "crane-lan.pcap"], profile)
            for name in (*SCENARIOS, "normal-2")}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_short_slices_find_what_the_whole_run_finds(sinks: dict[str, ProcessSink], scenario: str) -> None:
    sink = sinks[scenario]
    whole = sink.finish()
    # 5 s slices that look 20 s back and 15 s ahead, values handed out every 3 s: a 33-180 s
    # capture is checked in 7-36 slices, each incident's start, detection, end, evidence
    # window and plot computed on a frame that is not the whole one
    sliced = sliced_findings(sink, sink.series, sink.writes, step_s=3.0, slice_s=5.0,
                             lookback_s=20.0, lookahead_s=15.0, dt=grid_step(sink.signals()))
    assert sliced == whole
    if scenario != "normal":
        assert whole, "the scenario's capture should give process findings"


@pytest.mark.parametrize("scenario", ["replay", "wind-freeze"])
def test_measured_grid_step_is_the_whole_runs_when_the_first_slice_sees_the_polling(
        sinks: dict[str, ProcessSink], scenario: str) -> None:
    sink = sinks[scenario]
    sliced = sliced_findings(sink, sink.series, sink.writes, step_s=5.0, slice_s=10.0)
    assert sliced == sink.finish()


def test_values_held_stay_within_the_slice_and_its_look_back(sinks: dict[str, ProcessSink]) -> None:
    sink = sinks["normal-2"]  # the longest capture: 180 s
    series = sink.series
    checks = SlicedChecks(sink, slice_s=5.0, lookback_s=10.0, lookahead_s=5.0)
    start = min(float(s.ts[0]) for s in series if len(s.ts))
    end = max(float(s.ts[-1]) for s in series if len(s.ts))
    widest = 0.0
    edge = start
    while edge <= end:
        checks.add([cut for s in series if (cut := _cut_open(s, edge, edge + 2.0)) is not None],
                   [w for w in sink.writes if edge <= float(getattr(w, "ts", 0.0)) < edge + 2.0])
        checks.advance(edge + 2.0)
        held = [float(t) for piece in checks._series for t in (piece.ts[0], piece.ts[-1])]
        if held:
            widest = max(widest, max(held) - min(held))
        edge += 2.0
    assert end - start > 60  # the capture is much longer than what may be held
    # look-back + the hold sample + a slice + look-ahead + one hand-out
    assert widest <= 10.0 + HOLD_S + 5.0 + 5.0 + 2.0 + 1e-6
    assert checks.runs > 3
    assert checks.finish() == sink.finish()


def test_a_hole_in_the_recording_starts_a_new_piece(sinks: dict[str, ProcessSink]) -> None:
    """Values 2 hours apart are two pieces with their own grids, as ``split_at_holes`` makes
    them in a whole run: the sliced run then equals the whole run over both."""
    from dataclasses import replace

    sink = sinks["wind-freeze"]
    later = [replace(s, ts=s.ts + 7200.0) for s in sink.series]
    both = ProcessSink(profile=sink.profile, series=[*sink.series, *later])
    whole = both.finish()
    assert whole and math.isclose(whole[0].last_seen - whole[0].first_seen, 7200.0, abs_tol=200.0)
    assert sliced_findings(both, both.series, step_s=5.0, slice_s=10.0) == whole


@pytest.mark.parametrize("scenario", ["safety-bypass", "wind-freeze", "replay"])
def test_incidents_open_when_the_frame_is_cut_count_once_and_keep_their_end(
        sinks: dict[str, ProcessSink], scenario: str) -> None:
    """Every frame longer than ``max_span_s`` (a bypass left set all day): incidents still open
    are taken as they stand, and the later slices only move their last_seen on. The findings
    are the whole run's in id, count, first and last seen and severity (the evidence is of the
    frame the incident was taken in). Before, a cut incident ended where its frame did
    (safety-bypass: last seen 0.4 s early)."""
    sink = sinks[scenario]
    whole = sink.finish()
    sliced = sliced_findings(sink, sink.series, sink.writes, step_s=3.0, slice_s=5.0,
                             lookback_s=20.0, lookahead_s=15.0, max_span_s=30.0,
                             dt=grid_step(sink.signals()))

    def facts(findings: list) -> list:
        return [(f.id, f.count, f.first_seen, f.last_seen, f.severity) for f in findings]

    assert whole and facts(sliced) == facts(whole)
