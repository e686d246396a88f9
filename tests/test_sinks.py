"""analyze, the gate and the demo judge captures with the detectors and the process checks alike.

Ground truth is the lab's labels.json beside each bundled capture (written by the scenario that
injected the fault): the zeroed load cell of ``false-load`` must come out of ``cranewatch
analyze`` as a false-reading finding on hoist_load inside the labelled window, and a second
normal day judged against the first must raise nothing of medium severity or above.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.detect.engine import DetectionSink
from cranewatch.fleet import import_fleet
from cranewatch.gate import analyze_and_record
from cranewatch.judging import load_judging
from cranewatch.process.engine import ProcessSink, learn_from_captures
from cranewatch.profile import load_profile
from cranewatch.sinks import build_sinks, process_sinks
from cranewatch.store import open_store

DATA = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data"
LAB = DATA / "lab"
PROFILE = DATA / "profiles" / "sts-07.toml"
NORMAL = LAB / "normal" / "crane-lan.pcap"
FALSE_LOAD = LAB / "false-load" / "crane-lan.pcap"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _findings(out: str) -> list[dict]:
    return [r for r in map(json.loads, out.splitlines()) if r.get("type") == "finding"]


def _labelled_attack(scenario: str, category: str) -> dict:
    labels = json.loads((LAB / scenario / "labels.json").read_text())
    return next(a for a in labels["attacks"] if a["category"] == category)


def _assert_false_load_reported(findings: list[dict]) -> None:
    attack = _labelled_attack("false-load", "false-reading")
    on_load = [f for f in findings if f["category"] == "false-reading"
               and any(e.get("values", {}).get("signal") == attack["signal"] for e in f["evidence"])]
    assert on_load, [(f["category"], f["title"]) for f in findings]
    f = on_load[0]
    assert attack["signal"] == "hoist_load"
    assert attack["start"] <= _epoch(f["first_seen"]) <= _epoch(f["last_seen"]) <= attack["end"]
    assert f["severity"] in ("high", "critical")
    assert f["src"] == attack["src"] or f["src"] is None


def test_analyze_cli_reports_the_false_load_inside_its_labelled_window(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--baseline", str(NORMAL),
                 "--format", "jsonl"])
    assert code == 0
    _assert_false_load_reported(_findings(capsys.readouterr().out))


def test_analyze_cli_with_a_saved_baseline_still_checks_the_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a communications baseline file without a "process" part: physics and the register map judge
    saved = tmp_path / "sts-07.baseline.json"
    assert main(["baseline", str(NORMAL), "--out", str(saved), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--baseline", str(saved),
                 "--format", "jsonl"]) == 0
    _assert_false_load_reported(_findings(capsys.readouterr().out))


def test_second_normal_day_against_the_first_raises_nothing_medium_or_above(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["analyze", str(LAB / "normal-2" / "crane-lan.pcap"), "--profile", str(PROFILE),
                 "--baseline", str(NORMAL), "--format", "jsonl", "--fail-on", "medium"])
    findings = _findings(capsys.readouterr().out)
    assert [f for f in findings if f["severity"] not in ("info", "low")] == []
    assert code == 0


def test_build_sinks_takes_what_the_edge_loaded() -> None:
    # a clean capture as the baseline: learned at the edge, both parts in one pass
    judging = load_judging(PROFILE, NORMAL)
    by_judging = build_sinks(judging.profile, judging.baseline, "STS-07",
                             process_baseline=judging.process_baseline)
    assert [type(s) for s in by_judging] == [DetectionSink, ProcessSink]
    process = by_judging[1]
    assert isinstance(process, ProcessSink) and process.baseline is judging.process_baseline
    assert judging.process_baseline == learn_from_captures([NORMAL], load_profile(PROFILE))

    learned = learn_from_captures([NORMAL], load_profile(PROFILE))
    loaded = build_sinks(load_profile(PROFILE), judging.baseline, "STS-07", process_baseline=learned)
    assert isinstance(loaded[1], ProcessSink) and loaded[1].baseline is learned
    # a communications baseline without a process part: the process checks go without
    without = build_sinks(load_profile(PROFILE), judging.baseline, "STS-07")
    assert isinstance(without[1], ProcessSink) and without[1].baseline is None


def test_gate_quarantine_analysis_records_process_findings(tmp_path: Path) -> None:
    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, DATA / "fleet" / "sts-07.toml")
        run = analyze_and_record(store, "STS-07", [FALSE_LOAD], profile=str(PROFILE), baseline=str(NORMAL))
        stored = store.findings("STS-07", [run])
    assert any(f.category == "false-reading" and f.rule.startswith("process-") for f in stored)


def test_saved_baseline_with_a_process_part_gives_the_envelopes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the crane baseline file as the process checks ask it to be: the communications, and the
    # signal envelopes of the same clean capture under "process"
    saved = tmp_path / "sts-07.baseline.json"
    assert main(["baseline", str(NORMAL), "--out", str(saved), "--quiet"]) == 0
    capsys.readouterr()
    document = json.loads(saved.read_text())
    document["process"] = learn_from_captures([NORMAL], load_profile(PROFILE)).to_json()
    saved.write_text(json.dumps(document))

    judging = load_judging(PROFILE, saved)
    process = build_sinks(judging.profile, judging.baseline, "STS-07")[1]
    assert isinstance(process, ProcessSink) and process.baseline is not None
    assert process.baseline.to_json() == document["process"]

    assert main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--baseline", str(saved),
                 "--format", "jsonl"]) == 0
    _assert_false_load_reported(_findings(capsys.readouterr().out))
    assert main(["analyze", str(LAB / "normal-2" / "crane-lan.pcap"), "--profile", str(PROFILE),
                 "--baseline", str(saved), "--format", "jsonl", "--fail-on", "medium"]) == 0


def test_a_loaded_baseline_carrying_process_json_gives_the_envelopes() -> None:
    from dataclasses import replace

    profile = load_profile(PROFILE)
    judging = load_judging(None, NORMAL)
    learned = learn_from_captures([NORMAL], profile)
    with_process = replace(judging.baseline, process=learned.to_json())
    process = build_sinks(profile, with_process, "STS-07")[1]
    assert isinstance(process, ProcessSink) and process.baseline is not None
    assert process.baseline.to_json() == learned.to_json()
    (alone,) = process_sinks(profile, learned, "STS-07")
    assert isinstance(alone, ProcessSink) and alone.baseline is learned


def test_without_a_profile_no_process_checks_guess_at_another_plants_registers(
        shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a public Modbus test capture (not a crane): read with STS-07's register map it looked
    # like a load cell of 2,145 t and a stopped PLC heartbeat
    capture = shared_data / "pcaps" / "ICS-Security-Tools" / "pcaps" / "ModbusTCP" / "Modbus" / "modbus_test.pcap"
    if not capture.exists():
        pytest.skip(f"{capture} not present")
    assert [type(s) for s in build_sinks(None, None, None)] == [DetectionSink]
    assert main(["analyze", str(capture), "--format", "jsonl"]) == 0
    findings = _findings(capsys.readouterr().out)
    assert not [f for f in findings if f["rule"].startswith("process-")]
