"""Each process check on series from the lab's physics model, honest, tampered and near-misses.

The crane is the lab's 10 Hz STS-07 model polled at 5 Hz (``process.simulate``); faults are the
lab's own compromised-PLC behaviours (``lab.faults.Tamper``) or small hooks that change what the
PLC serves. Near-misses (a gust both anemometers see, a snag load that trips the overload, a
parked crane, a maintenance window with the bypass set, an e-stop) must raise nothing.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.lab.faults import Tamper
from cranewatch.lab.physics import Panel, ProcessImage, Setpoints
from cranewatch.lab.registers import STS07_LIMITS, STS07_REGISTER_MAP
from cranewatch.model import Finding
from cranewatch.process.checks import constant_runs, rolling_max, runs
from cranewatch.process.engine import ProcessConfig, learn_baseline
from cranewatch.process.engine import run_checks as _run_checks
from cranewatch.process.envelope import ProcessBaseline, learn
from cranewatch.process.simulate import simulate
from cranewatch.process.state import crane_states

# The simulator is STS-07: its limits and map (no crane is built into the library).
STS07 = ProcessConfig(register_map=STS07_REGISTER_MAP, limits=STS07_LIMITS)


def run_checks(frame: object, config: ProcessConfig | None = None, baseline: object = None,
               **options: object) -> list[Finding]:
    return _run_checks(frame, config or STS07, baseline, **options)  # type: ignore[arg-type]


T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def baseline() -> ProcessBaseline:
    return learn_baseline(simulate(600, seed=7, start=T0 - 10_000))


def _by_rule(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.rule, []).append(f)
    return out


def _one(findings: list[Finding], rule: str, signal: str) -> Finding:
    hits = [f for f in findings if f.rule == rule and f.evidence[0].values["signal"] == signal]
    assert hits, f"no {rule} on {signal}; got {[(f.rule, f.title) for f in findings]}"
    return hits[0]


def _image(image: ProcessImage, ir: dict[int, int] | None = None,
           di: dict[int, bool] | None = None) -> ProcessImage:
    words = list(image.ir)
    bits = list(image.di)
    for k, v in (ir or {}).items():
        words[k] = v & 0xFFFF
    for k, b in (di or {}).items():
        bits[k] = b
    return ProcessImage(tuple(words), tuple(bits))


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_honest_crane_raises_nothing(baseline: ProcessBaseline, seed: int) -> None:
    assert run_checks(simulate(300, seed=seed, start=T0), baseline=baseline) == []


def test_honest_crane_without_baseline_raises_nothing() -> None:
    assert run_checks(simulate(300, seed=12, start=T0)) == []


def test_false_load_is_caught_by_torque(baseline: ProcessBaseline) -> None:
    frame = simulate(120, seed=11, start=T0, tamper=Tamper("false-load", T0 + 10, T0 + 40))
    findings = run_checks(frame, baseline=baseline)
    f = _one(findings, "process-torque-load", "hoist_load")
    assert f.category == "false-reading"
    ev = f.evidence[0].values
    assert T0 + 10 <= ev["onset"] < T0 + 40
    assert 0 < ev["detection_delay_s"] <= 2.0
    assert ev["residual_max"] > 8.0 and ev["threshold"] >= 8.0
    assert "hoist_torque" in ev["window"] and "hoist_load" in ev["window"]
    assert {g.category for g in findings} == {"false-reading"}
    # The lab's fault holds the load cell at 0 t while the hoist lifts boxes: stuck, not off.
    assert f.title.startswith("hoist_load stuck at 0.0 t while the hoist torque says"), f.title
    # The relation reads as arithmetic a person can check: no "+ -0.001".
    assert re.fullmatch(r"hoist_torque ≈ [\d.]+ %/t × hoist_load [+−] [\d.]+ % \(± [\d.]+ % of "
                        r"rated torque\) while the hoist is steady", ev["relation"]), ev["relation"]


def test_wind_freeze_names_the_stuck_anemometer(baseline: ProcessBaseline) -> None:
    frame = simulate(120, seed=11, start=T0, tamper=Tamper("wind-freeze", T0 + 60, T0 + 90))
    findings = run_checks(frame, baseline=baseline)
    frozen = _one(findings, "process-frozen", "wind_speed_2")
    ev = frozen.evidence[0].values
    assert ev["onset"] == pytest.approx(T0 + 60, abs=1.0)
    assert ev["detection_delay_s"] <= 12.0
    assert all(f.evidence[0].values["signal"] == "wind_speed_2" for f in findings)


def test_replay_is_reported_with_its_lag(baseline: ProcessBaseline) -> None:
    frame = simulate(120, seed=11, start=T0, tamper=Tamper("replay", T0 + 60, T0 + 90))
    findings = run_checks(frame, baseline=baseline)
    replay = [f for f in findings if f.rule == "process-replay"]
    assert len(replay) == 1
    ev = replay[0].evidence[0].values
    assert ev["replay_lag_s"] == pytest.approx(10.0, abs=0.2)  # the tamper loops 10 s back
    assert ev["onset"] == pytest.approx(T0 + 60, abs=0.5)
    assert ev["detection_delay_s"] <= 3.0
    assert {"hoist_load", "wind_speed_1", "hoist_height"} <= {ev["signal"], *ev["replayed_signals"]}


def test_replay_with_the_heartbeat_shows_it_going_back(baseline: ProcessBaseline) -> None:
    history: list[ProcessImage] = []

    def replay_all(now: float, image: ProcessImage) -> ProcessImage:
        history.append(image)
        if now >= T0 + 60:
            return history[len(history) - 1 - 150]  # 15 s ago, heartbeat included
        return image

    findings = run_checks(simulate(90, seed=11, start=T0, hook=replay_all), baseline=baseline)
    back = _one(findings, "process-heartbeat-back", "heartbeat")
    assert back.evidence[0].values["replay_lag_s"] == pytest.approx(15.0, abs=0.3)
    assert back.first_seen == pytest.approx(T0 + 60, abs=0.3)


def test_near_replay_search_starts_only_after_quiet_stretches() -> None:
    from cranewatch.process.checks.replay import _isolated

    # Jumps at 100 and 400 follow a quiet window; 105 and 120 come in the first one's wake.
    assert _isolated(np.array([100, 105, 120, 400]), 30).tolist() == [100, 400]
    assert _isolated(np.array([10, 41, 72]), 30).tolist() == [10, 41, 72]
    assert _isolated(np.array([10, 40]), 30).tolist() == [10]


def test_erratic_values_do_not_make_the_replay_search_quadratic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A mis-mapped or noisy register map: every position and speed leaps every cycle. The
    # near-replay search used to run from every jump (minutes of CPU for a minute of data).
    from cranewatch.process.checks import replay

    rng = np.random.default_rng(5)

    def erratic(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, ir={i: int(rng.integers(0, 60000)) for i in range(1, 12)})

    frame = simulate(120, seed=11, start=T0, hook=erratic)
    searched: list[int] = []
    real = replay._best_sources

    def counted(around: object, sources: np.ndarray, k: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        searched.append(k)
        return real(around, sources, k, w)  # type: ignore[arg-type]

    monkeypatch.setattr(replay, "_best_sources", counted)
    findings = run_checks(frame)
    w = round(replay.REPLAY_WINDOW_S / frame.dt)
    assert len(searched) <= len(frame.t) // w + 1
    assert [f for f in findings if f.rule == "process-replay"] == []


def test_stuck_heartbeat() -> None:
    def stuck(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, ir={0: 4242}) if now >= T0 + 30 else image

    findings = run_checks(simulate(60, seed=3, start=T0, hook=stuck))
    f = _one(findings, "process-heartbeat", "heartbeat")
    assert f.first_seen == pytest.approx(T0 + 30, abs=0.5)
    assert f.evidence[0].values["detection_delay_s"] == pytest.approx(1.2, abs=0.3)


def test_frozen_position_while_the_drive_runs() -> None:
    frozen_at: list[int] = []

    def freeze_trolley(now: float, image: ProcessImage) -> ProcessImage:
        if now < T0 + 20:
            return image
        if not frozen_at:
            frozen_at.append(image.ir[5])
        return _image(image, ir={5: frozen_at[0]})

    findings = run_checks(simulate(120, seed=4, start=T0, hook=freeze_trolley))
    f = _one(findings, "process-frozen", "trolley_position")
    assert f.category == "false-reading"
    _one(findings, "process-position-speed", "trolley_position")


def test_safety_bypass_and_raised_limit(baseline: ProcessBaseline) -> None:
    def tampered(now: float) -> Setpoints:
        on = now >= T0 + 60
        return Setpoints(safety_bypass=on, overload_limit=1000 if on else 715)

    findings = run_checks(simulate(120, seed=11, start=T0, setpoints=tampered), baseline=baseline)
    bypass = _one(findings, "process-safety-bypass", "safety_bypass")
    assert bypass.category == "safety-override"
    assert bypass.first_seen == pytest.approx(T0 + 60, abs=0.3)
    limit = _one(findings, "process-limit-raised", "overload_limit")
    assert "100" in limit.title and "71.5" in limit.title
    assert {f.category for f in findings} == {"safety-override"}


def test_overload_without_trip_under_bypass() -> None:
    # The PLC's interlock is bypassed; a 80 t load is hoisted and no trip comes.
    def heavy(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 40 <= now < T0 + 50:
            return _image(image, ir={1: 800, 4: round(800 / 650 * 1000)}, di={2: False})
        return image

    findings = run_checks(simulate(60, seed=5, start=T0, hook=heavy,
                                   setpoints=lambda now: Setpoints(safety_bypass=now >= T0 + 39)))
    f = _one(findings, "process-overload-no-trip", "overload_trip")
    assert f.severity.name == "CRITICAL"
    assert f.first_seen == pytest.approx(T0 + 40, abs=0.3)
    assert f.evidence[0].values["detection_delay_s"] == pytest.approx(1.0, abs=0.3)


def test_wind_over_limit_without_stop() -> None:
    def storm(now: float, image: ProcessImage) -> ProcessImage:
        if now >= T0 + 30:
            return _image(image, ir={9: 250, 10: 245}, di={3: False})
        return image

    findings = run_checks(simulate(60, seed=5, start=T0, hook=storm))
    f = _one(findings, "process-wind-no-stop", "wind_stop")
    assert f.category == "safety-override"
    assert f.first_seen == pytest.approx(T0 + 30, abs=0.3)


def test_motion_under_estop_status() -> None:
    # The e-stop bit says stopped while the drives keep moving: the stop is overridden.
    def estop_bit(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, di={5: True}) if T0 + 20 <= now < T0 + 60 else image

    findings = run_checks(simulate(80, seed=6, start=T0, hook=estop_bit))
    moving = [f for f in findings if f.rule == "process-motion-under-stop"]
    assert moving and all(f.category == "safety-override" for f in moving)
    assert min(f.first_seen or 0 for f in moving) >= T0 + 23 - 0.3  # after the braking grace


def test_twistlocks_locking_in_the_air() -> None:
    # seed 6: the spreader lifts a 31 t box at ~7 s, sets it down at ~38 s, lifts empty at ~40 s.
    def lock_in_air(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 45 <= now < T0 + 46:
            return _image(image, di={0: True})
        return image

    findings = run_checks(simulate(60, seed=6, start=T0, hook=lock_in_air))
    f = _one(findings, "process-twistlock-logic", "twistlocks_locked")
    assert f.first_seen == pytest.approx(T0 + 45, abs=0.3)
    assert "not landed" in f.title


def test_load_hoisted_with_open_twistlocks() -> None:
    def unlocked(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 10 <= now < T0 + 20:
            return _image(image, di={0: False})
        return image

    findings = run_checks(simulate(30, seed=6, start=T0, hook=unlocked))
    f = _one(findings, "process-twistlock-logic", "twistlocks_locked")
    assert "unlocked" in f.title
    assert f.evidence[0].values["detection_delay_s"] == pytest.approx(1.8, abs=0.3)


def test_spoofed_trip_without_cause() -> None:
    def trip(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, di={2: True}) if now >= T0 + 20 else image

    findings = run_checks(simulate(40, seed=6, start=T0, hook=trip))
    f = _one(findings, "process-trip-cause", "overload_trip")
    assert f.category == "false-reading"


def test_range_impossible_wind() -> None:
    def gale(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, ir={9: 900}) if T0 + 20 <= now < T0 + 21 else image

    findings = run_checks(simulate(40, seed=6, start=T0, hook=gale))
    _one(findings, "process-range", "wind_speed_1")


# --- near-misses: real events that must not alert --------------------------------------------

def test_gust_both_anemometers_see(baseline: ProcessBaseline) -> None:
    def gust(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 30 <= now < T0 + 38:
            ramp = min(1.0, (now - T0 - 30) / 2.0) * 60  # +6 m/s over 2 s, held
            return _image(image, ir={9: image.ir[9] + round(ramp), 10: image.ir[10] + round(ramp * 0.97)})
        return image

    assert run_checks(simulate(60, seed=13, start=T0, hook=gust), baseline=baseline) == []


def test_snag_load_with_trip(baseline: ProcessBaseline) -> None:
    # A container snags in the cell guides: load and torque jump together, the PLC trips.
    def snag(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 30 <= now < T0 + 31.5:
            return _image(image, ir={1: 750, 4: round(750 / 650 * 1000)}, di={0: True, 2: True})
        return image

    findings = run_checks(simulate(60, seed=13, start=T0, hook=snag), baseline=baseline)
    assert [f for f in findings if f.category == "safety-override"] == []
    assert [f for f in findings if f.rule in ("process-range", "process-trip-cause",
                                              "process-torque-load")] == []


def test_parked_crane_with_storm_pins(baseline: ProcessBaseline) -> None:
    frame = simulate(400, seed=14, start=T0, panel=lambda now: Panel(storm_pins=now >= T0 + 20))
    assert run_checks(frame, baseline=baseline) == []


def test_estop_really_stops(baseline: ProcessBaseline) -> None:
    frame = simulate(120, seed=14, start=T0, panel=lambda now: Panel(estop=T0 + 30 <= now < T0 + 60))
    assert run_checks(frame, baseline=baseline) == []


def test_bypass_inside_a_maintenance_window(baseline: ProcessBaseline) -> None:
    def maintenance(now: float) -> Setpoints:
        inside = T0 + 30 <= now < T0 + 90
        return Setpoints(safety_bypass=inside, overload_limit=800 if inside else 715)

    frame = simulate(120, seed=15, start=T0, setpoints=maintenance,
                     panel=lambda now: Panel(storm_pins=T0 + 25 <= now < T0 + 95))
    config = replace(STS07, maintenance=((T0 + 28, T0 + 92),))
    assert run_checks(frame, config, baseline) == []
    # The same bypass outside the window is an override.
    outside = run_checks(frame, replace(config, maintenance=()), baseline)
    assert {f.rule for f in outside} == {"process-safety-bypass", "process-limit-raised"}


def test_position_jump_breaks_the_rate_envelope(baseline: ProcessBaseline) -> None:
    def jump(now: float, image: ProcessImage) -> ProcessImage:
        if T0 + 30 <= now < T0 + 30.2:
            return _image(image, ir={5: image.ir[5] + 2000})  # trolley 20 m away for one poll
        return image

    findings = run_checks(simulate(60, seed=13, start=T0, hook=jump), baseline=baseline)
    f = _one(findings, "process-rate", "trolley_position")
    assert f.first_seen == pytest.approx(T0 + 30, abs=0.3)
    assert f.evidence[0].values["detection_delay_s"] == 0.0


# --- envelopes learned from a short clean period --------------------------------------------

@pytest.mark.parametrize("seed", [12, 21, 29])
def test_a_short_light_baseline_does_not_flag_heavy_lifts(seed: int) -> None:
    # 30 s of one 4.4 t box (seed 3) is all the baseline saw; seeds 12, 21 and 29 lift 62–65 t
    # boxes: an honest take-up of a heavy box is faster than anything that period showed.
    short = learn_baseline(simulate(30, seed=3, start=T0 - 10_000))
    assert short.rate_any["hoist_load"] < 30.0  # t/s: a light box's ramp
    frame = simulate(90, seed=seed, start=T0)
    assert float(np.nanmax(frame["hoist_load"])) > 60.0
    assert run_checks(frame, baseline=short, with_plots=False) == []


def test_rate_margin_shrinks_with_the_clean_period() -> None:
    short = learn_baseline(simulate(30, seed=3, start=T0 - 10_000))
    longer = learn_baseline(simulate(600, seed=3, start=T0 - 10_000))
    assert short.duration_s == pytest.approx(30, abs=1) and longer.duration_s == pytest.approx(600, abs=1)
    # 1 + sqrt(600 s / T): the fewer the samples, the less their fastest tells
    assert short.rate_margin() == pytest.approx(1 + (600 / short.duration_s) ** 0.5)
    assert longer.rate_margin() == pytest.approx(2.0, abs=0.01)
    assert ProcessBaseline().rate_margin() == pytest.approx(1 + 60 ** 0.5)  # unknown: widest


def test_states_seen_briefly_get_no_envelope_of_their_own() -> None:
    frame = simulate(60, seed=3, start=T0 - 10_000)
    states = crane_states(frame)
    base = learn(frame, states)
    seconds = {int(s): float((states == s).sum() * frame.dt) for s in np.unique(states)}
    for name, by_state in base.rate.items():
        for state in by_state:
            assert seconds[state] >= 10.0, (name, state)
    short_states = [s for s, secs in seconds.items() if secs < 10.0]
    assert short_states, "the minute must glimpse some state only briefly"
    for state in short_states:
        # judged by the fastest change in any state (which includes the brief ones)
        assert base.max_rate("hoist_speed", state) == base.rate_any["hoist_speed"]
    assert base.rate_any["hoist_speed"] >= max(base.rate["hoist_speed"].values())
    # Saved and loaded; a baseline saved before rate_any falls back on the per-state maxima.
    again = ProcessBaseline.from_json(base.to_json())
    assert again == base
    old = base.to_json()
    del old["rate_any"]
    assert ProcessBaseline.from_json(old).max_rate("hoist_speed", None) == max(
        base.rate["hoist_speed"].values())


def test_a_load_step_no_rope_makes_breaks_the_physics_envelope() -> None:
    # Without any baseline: a 60 t box appearing within one 0.2 s poll (300 t/s) while the
    # ropes take up at most the rated 65 t over 0.5 s.
    def appear(now: float, image: ProcessImage) -> ProcessImage:
        return _image(image, ir={1: 600}) if T0 + 20 <= now < T0 + 20.2 else image

    findings = run_checks(simulate(40, seed=36, start=T0, hook=appear), with_plots=False)
    f = _one(findings, "process-rate", "hoist_load")
    assert f.first_seen == pytest.approx(T0 + 20, abs=0.3)
    assert f.evidence[0].values["threshold"] == pytest.approx(1.5 * 65 / 0.5 + 2 * 0.1 / 0.2, abs=1.5)
    assert run_checks(simulate(40, seed=36, start=T0), with_plots=False) == []


def test_both_anemometers_frozen_need_the_baseline(baseline: ProcessBaseline) -> None:
    # Both stuck: the twins agree, so only the baseline's "never flat this long" can tell.
    frozen: dict[int, int] = {}

    def freeze_both(now: float, image: ProcessImage) -> ProcessImage:
        if now < T0 + 20:
            return image
        frozen.setdefault(9, image.ir[9])
        frozen.setdefault(10, image.ir[10])
        return _image(image, ir=frozen)

    frame = simulate(60, seed=13, start=T0, hook=freeze_both)
    assert [f for f in run_checks(frame) if f.rule == "process-frozen"] == []
    findings = run_checks(frame, baseline=baseline)
    for name in ("wind_speed_1", "wind_speed_2"):
        f = _one(findings, "process-frozen", name)
        assert f.first_seen == pytest.approx(T0 + 20, abs=0.5)
        assert f.evidence[0].values["detection_delay_s"] < 10.0


def test_an_hour_of_work_with_stops_and_drifting_polls(baseline: ProcessBaseline) -> None:
    # E-stops, storm pins and anti-collision stops every 20 minutes, fault resets, a master
    # whose polls drift against the PLC cycle: an honest hour raises nothing.
    def panel(now: float) -> Panel:
        m = (now - T0) % 1200
        return Panel(estop=100 <= m < 160, storm_pins=600 <= m < 700, anti_collision=900 <= m < 930)

    def setpoints(now: float) -> Setpoints:
        return Setpoints(fault_reset=((now - T0) % 60) < 0.3)

    frame = simulate(3600, seed=2, start=T0, drift=0.3, panel=panel, setpoints=setpoints)
    assert run_checks(frame, baseline=baseline, with_plots=False) == []


# --- the vectorised helpers every check stands on, against plain loops ------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=60), st.integers(1, 12))
def test_rolling_max_is_the_windowed_max(values: list[int], w: int) -> None:
    expected = [max(values[max(0, i - w + 1): i + 1]) for i in range(len(values))]
    assert rolling_max(np.array(values, dtype=float), w).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(0, 3))
def test_runs_are_the_stretches_of_true(mask: list[bool], min_len: int, gap: int) -> None:
    # Plain loop: stretches of True, merged across gaps of at most `gap`, at least `min_len` long.
    stretches: list[list[int]] = []
    for i, on in enumerate(mask):
        if on:
            if stretches and i - stretches[-1][1] - 1 <= gap:
                stretches[-1][1] = i
            else:
                stretches.append([i, i])
    expected = [(s, e) for s, e in stretches if e - s + 1 >= min_len]
    assert runs(np.array(mask, dtype=bool), min_len, gap) == expected


@given(st.lists(st.integers(0, 2), min_size=1, max_size=40))
def test_constant_runs_count_repeats(values: list[int]) -> None:
    expected = []
    for i, v in enumerate(values):
        expected.append(expected[-1] + 1 if i and values[i - 1] == v else 1)
    assert constant_runs(np.array(values)).tolist() == expected


def test_lowered_overload_limit_explains_its_trips() -> None:
    # Someone lowers overload_limit to 10 t: a 31 t lift trips, honestly by the PLC's logic.
    frame = simulate(60, seed=6, start=T0, setpoints=lambda now: Setpoints(
        overload_limit=100 if now >= T0 + 3 else 715, fault_reset=False))
    findings = run_checks(frame)
    rules = {f.rule for f in findings}
    assert "process-limit-lowered" in rules
    assert "process-trip-cause" not in rules  # the trip is real, not spoofed
    f = _one(findings, "process-limit-lowered", "overload_limit")
    assert f.category == "safety-override" and "10 t" in f.title
