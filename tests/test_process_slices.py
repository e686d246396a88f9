"""Process checks in time slices (``process.slices``) find exactly what the whole-series run
finds, on the bundled lab captures with the lab profile, while holding only a bounded stretch
of values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cranewatch.process.engine import ProcessSink, read_captures
from cranewatch.process.signals import grid_step
from cranewatch.process.slices import HOLD_S, SlicedChecks, _cut_open, sliced_findings
from cranewatch.profile import load_profile
from cranewatch.protocols.modbus import RegisterSeries

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


def _hoist_load(master: str, ts: np.ndarray, raw: np.ndarray) -> RegisterSeries:
    """Answers of one master to reads of IR 1 (hoist_load, 0.1 t a step) from the crane PLC."""
    return RegisterSeries(master=master, slave="10.20.7.10", unit_id=1, function=4, address=1,
                          quantity=1, ts=ts, frame=np.arange(1, len(ts) + 1),
                          values=raw.astype(np.int64).reshape(-1, 1), source="t.pcap")


def test_masters_disagree_across_slice_boundaries_counts_as_the_whole_run() -> None:
    """Two masters poll hoist_load at 5 Hz, 0.1 s apart. The PLC's value is flat (10.0 t) for
    60 s, then swings by 2.0 t every 0.8 s for 60 s (a typical poll-to-poll change of 2.0 t
    there). One master's answers are raised by 1.0 t in the flat minute at 20.0-30.8 s (55
    answers: one incident across the 5 s slices' boundaries at 25 and 30 s), 45.0-45.4 s (3
    answers: the shortest incident) and 50.0-50.2 s (2: too short). In the flat minute the
    tolerance is 2 register steps (0.2 t) + 3 x 0 t, so by hand: 2 incidents, first seen at
    20.1 s, last seen at 45.5 s (the grid's rows are at the second master's reads, x.1 s, x.3 s
    ...: a raised answer is on the grid from the next row on). Before, the typical change was the median over the whole
    series handed to the check (2.0 t: tolerance 6.2 t, nothing found in a whole run) or over
    each slice's frame (0 t in the flat minute: both incidents), so sliced and whole differed."""
    t0 = 1_000_000.0  # on the epoch's 5 s blocks
    k = np.arange(600)
    ts_b = t0 + 0.2 * k + 0.1
    raw_b = np.where(0.2 * k + 0.1 < 60.0, 100, 100 + 20 * ((k // 4) % 2))
    ts_a = t0 + 0.2 * k[1:]
    raw_a = raw_b[:-1].copy()  # what the PLC held when the first master read it, 0.1 s before
    offset = 0.2 * k[1:]
    raw_a[(offset >= 19.99) & (offset < 30.9)] += 10
    raw_a[(offset >= 44.99) & (offset < 45.5)] += 10
    raw_a[(offset >= 49.99) & (offset < 50.3)] += 10
    series = [_hoist_load("10.20.7.30", ts_a, raw_a), _hoist_load("10.20.7.20", ts_b, raw_b)]
    sink = ProcessSink(profile=load_profile(PROFILE), series=series)
    whole = sink.finish()
    sliced = sliced_findings(sink, series, step_s=3.0, slice_s=5.0, lookback_s=20.0,
                             lookahead_s=15.0, dt=grid_step(sink.signals()))
    assert sliced == whole
    disagree = [f for f in whole if f.rule == "process-masters-disagree"]
    # the first master's raised answers against the second's; the second's honest answers,
    # bracketed by the first's raised and honest ones, never have two that agree around them
    assert [(f.count, f.evidence[0].values["master"]) for f in disagree] == [(2, "10.20.7.30")]
    assert disagree[0].first_seen == pytest.approx(t0 + 20.1, abs=0.01)
    assert disagree[0].last_seen == pytest.approx(t0 + 45.5, abs=0.01)


def test_a_frame_too_long_leaves_what_it_judged_at_its_edge_to_the_next_slice() -> None:
    """Frames longer than ``max_span_s`` (here every frame after the first few): an incident
    that starts in the frame's last ``lookahead_s`` is judged without what follows it. The PLC's
    value is flat for 55 s, then swings by 2.0 t every 0.8 s; one master's answers are 1.0 t
    higher at 50.0-53.8 s. Their tolerance comes from the 5 s blocks around them, 45-60 s, where
    the swings from 55 s on make the typical change 2.0 t (6.2 t): no incident in a whole run.
    Before, a frame ending at 53.9 s (values handed out every 3 s) saw no change there
    (tolerance 0.2 t), took the stretch as an incident, and the sliced run found one the whole
    run does not."""
    t0 = 1_000_000.0
    k = np.arange(600)
    ts_b = t0 + 0.2 * k + 0.1
    raw_b = np.where(0.2 * k + 0.1 < 55.0, 100, 100 + 20 * ((k // 4) % 2))
    ts_a = t0 + 0.2 * k[1:]
    raw_a = raw_b[:-1].copy()
    offset = 0.2 * k[1:]
    raw_a[(offset >= 49.99) & (offset < 53.9)] += 10
    series = [_hoist_load("10.20.7.30", ts_a, raw_a), _hoist_load("10.20.7.20", ts_b, raw_b)]
    sink = ProcessSink(profile=load_profile(PROFILE), series=series)
    assert sink.finish() == []
    for step_s in (1.0, 2.0, 3.0):
        sliced = sliced_findings(sink, series, step_s=step_s, slice_s=5.0, lookback_s=20.0,
                                 lookahead_s=15.0, max_span_s=30.0, dt=grid_step(sink.signals()))
        assert sliced == [], f"values handed out every {step_s} s"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_short_frames_with_a_compact_past_find_what_the_whole_run_finds(
        sinks: dict[str, ProcessSink], scenario: str) -> None:
    """Frames that reach only 12 s back (less than the bypass's evidence window before its
    onset, 11 s, plus a 5 s slice): replay searches the sensor columns the
    slices keep, evidence windows are rebuilt from the values held for ``lookback_s``."""
    sink = sinks[scenario]
    sliced = sliced_findings(sink, sink.series, sink.writes, step_s=3.0, slice_s=5.0,
                             lookback_s=40.0, frame_lookback_s=12.0, lookahead_s=15.0,
                             dt=grid_step(sink.signals()))
    assert sliced == sink.finish()


def test_the_replay_check_over_a_compact_past_is_the_check_over_the_longer_frame(
        sinks: dict[str, ProcessSink]) -> None:
    from dataclasses import replace

    from cranewatch.process.checks import CheckContext
    from cranewatch.process.checks.replay import check_replay, check_replay_after, replay_columns
    from cranewatch.process.engine import check_frame
    from cranewatch.process.signals import SignalFrame

    sink = sinks["replay"]
    frame = sink.frame()
    whole = [inc for ctx, inc in check_frame(frame, sink.resolved(frame), None, sink.signals())
             if inc.rule == "process-replay"]
    assert whole
    lag = whole[0].extra["replay_lag_s"]
    assert isinstance(lag, float) and lag > 5.0
    # the frame starts a few seconds before the replay, after the rows it replays
    split = whole[0].start - round(3.0 / frame.dt)
    rows = slice(split, None)
    later = SignalFrame(frame.t[rows], frame.dt, {k: v[rows] for k, v in frame.columns.items()},
                        {k: v[rows] for k, v in frame.age.items()}, frame.specs, frame.source)
    ctx = CheckContext(frame=later, states=np.zeros(len(later.t), dtype=np.int8))
    past = {k: v[:split] for k, v in replay_columns(frame).items()}
    found = check_replay_after(ctx, frame.t[:split], past, frame.specs)
    expected = [replace(inc, start=max(0, inc.start - split), end=inc.end - split,
                        detect=max(0, inc.detect - split), residual=None)
                for inc in whole if inc.end >= split]
    assert [replace(inc, residual=None) for inc in found] == expected
    assert all(np.array_equal(a.residual, b.residual[max(0, split - b.start):])
               for a, b in zip(found, [inc for inc in whole if inc.end >= split], strict=True))
    # without the past, the replayed rows are not there to be found
    alone = check_replay(ctx)
    assert [(i.start, i.extra.get("replay_lag_s")) for i in alone] != [(i.start, i.extra.get("replay_lag_s")) for i in found]


@pytest.mark.parametrize("scenario", ["replay", "wind-freeze"])
def test_a_replay_further_back_than_the_frame_is_found_in_the_kept_past(
        sinks: dict[str, ProcessSink], scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture played three times back to back (replays 14 s and 44 s back, more than
    the 12 s the frames reach back): the sliced run finds them through the sensor columns it
    keeps (``lookback_s`` 120 s) and rebuilds evidence windows reaching before the frame from
    the values it holds: the whole run's findings, byte for byte."""
    from dataclasses import replace

    from cranewatch.process import slices

    sink = sinks[scenario]
    start = min(float(s.ts[0]) for s in sink.series if len(s.ts))
    shift = max(float(s.ts[-1]) for s in sink.series if len(s.ts)) - start + 1.0
    series = [replace(s, ts=s.ts + i * shift) for i in range(3) for s in sink.series]
    writes = [replace(w, ts=w.ts + i * shift) for i in range(3) for w in sink.writes]  # type: ignore[type-var]
    three = ProcessSink(profile=sink.profile, series=series, writes=writes)
    whole = three.finish()
    assert any(e.values["replay_lag_s"] > 12.0 for f in whole if f.rule == "process-replay"
               for e in f.evidence)
    used: list[str] = []
    before, past_rows = slices.SlicedChecks._before, slices.SlicedChecks._past_rows

    def counted_before(self: SlicedChecks, *args: object) -> object:
        made = before(self, *args)  # type: ignore[arg-type]
        if made is not None:
            used.append("evidence")
        return made

    def counted_past(self: SlicedChecks, first: int, stop: int) -> object:
        made = past_rows(self, first, stop)
        if made is not None:
            used.append("past")
        return made

    monkeypatch.setattr(slices.SlicedChecks, "_before", counted_before)
    monkeypatch.setattr(slices.SlicedChecks, "_past_rows", counted_past)
    sliced = sliced_findings(three, series, writes, step_s=3.0, slice_s=5.0, lookback_s=120.0,
                             frame_lookback_s=12.0, lookahead_s=15.0, dt=grid_step(three.signals()))
    assert sliced == whole
    assert "past" in used and "evidence" in used


def test_a_frame_holds_each_pieces_last_sample_before_it_not_the_minute_before() -> None:
    """The frame's first rows hold the last sample before it: ``_signals(..., hold=HOLD_S)``
    gives each piece's last row before the frame (per master and register range) instead of
    the 60 s of samples before it (a shape whose masters poll 8 times as often held ~30 % more
    raw samples per frame for that). The grid's rows, ages and capture frames are those of the
    whole minute; the samples from the frame's start on are the same; who read a held value is
    the same; and the sliced run (5 s slices, 20 s look-back: every frame has a minute of
    samples before it) finds what the whole run finds. Before, ``_signals`` took no ``hold``."""
    from cranewatch.process.signals import frame_on_grid

    t0 = 1_000_000.0
    k = np.arange(600)
    ts_b = t0 + 0.2 * k + 0.1
    # the PLC's value steps at 50 and 70 s (the held values before each frame differ)
    raw_b = 100 + 5 * (0.2 * k + 0.1 >= 50.0) + 3 * (0.2 * k + 0.1 >= 70.0)
    ts_a = t0 + 0.2 * k[1:]
    raw_a = raw_b[:-1].copy()
    raw_a[(0.2 * k[1:] >= 80.0) & (0.2 * k[1:] < 89.0)] += 10  # a master lied 9 s, a minute in
    series = [_hoist_load("10.20.7.30", ts_a, raw_a), _hoist_load("10.20.7.20", ts_b, raw_b)]
    sink = ProcessSink(profile=load_profile(PROFILE), series=series)
    checks = SlicedChecks(sink)
    for edge in np.arange(t0, t0 + 120.0, 3.0):  # handed out in 3 s pieces
        checks._series.extend(cut for s in series if (cut := _cut_open(s, edge, edge + 3.0)) is not None)
    dt = grid_step(sink.signals())
    for fx0 in (t0 + 61.05, t0 + 75.0, t0 + 90.3):
        end = fx0 + 20.0
        held = checks._signals(fx0, end, hold=HOLD_S)["hoist_load"]
        minute = checks._signals(fx0 - HOLD_S, end)["hoist_load"]
        # one row of each 3 s piece of the minute before, not the minute's 600 samples
        assert int((held.ts < fx0).sum()) <= 2 * 21 < int((minute.ts < fx0).sum()) == 600
        assert held.ts[held.ts >= fx0].tolist() == minute.ts[minute.ts >= fx0].tolist()
        assert held.values[held.ts >= fx0].tolist() == minute.values[minute.ts >= fx0].tolist()
        t = fx0 + dt * np.arange(int(20.0 / dt))
        a = frame_on_grid({"hoist_load": held}, t, dt)
        b = frame_on_grid({"hoist_load": minute}, t, dt)
        for got, want in ((a.columns, b.columns), (a.age, b.age), (a.frames, b.frames)):
            assert got["hoist_load"].tolist() == want["hoist_load"].tolist()
        start = float(held.ts[held.ts < fx0][-1])  # the value held at the frame's start
        assert held.masters(start, end) == minute.masters(start, end)
    whole = sink.finish()
    assert [f.rule for f in whole] == ["process-masters-disagree"]
    sliced = sliced_findings(sink, series, step_s=3.0, slice_s=5.0, lookback_s=20.0,
                             lookahead_s=15.0, dt=dt)
    assert sliced == whole
