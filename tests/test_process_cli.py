"""From packets to signals and findings: a Modbus/TCP capture of the lab physics, exported by
``cranewatch signals`` and checked value for value against tshark; the process sink in the
capture pipeline finds the injected false load and stays quiet on an honest capture."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.judging import load_judging
from cranewatch.lab.faults import Tamper
from cranewatch.pipeline import analyze
from cranewatch.process.engine import build_sink, learn_from_captures
from cranewatch.process.simulate import run_polls, write_capture
from cranewatch.profile import load_profile

T0 = 1_700_000_000.0
PROFILE = "src/cranewatch/data/profiles/sts-07.toml"


@pytest.fixture(scope="module")
def false_load_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "false-load.pcap"
    write_capture(run_polls(120, seed=11, start=T0,
                            tamper=Tamper("false-load", T0 + 10, T0 + 40)), path)
    return path


def test_signals_csv_matches_tshark(false_load_capture: Path, tmp_path: Path, tshark: str) -> None:
    out = tmp_path / "signals.csv"
    assert main(["signals", str(false_load_capture), "--profile", PROFILE, "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    ours = {int(r["frame"]): float(r["value"]) for r in rows if r["signal"] == "hoist_load"}
    heights = {int(r["frame"]): float(r["value"]) for r in rows if r["signal"] == "hoist_height"}
    assert {r["unit"] for r in rows if r["signal"] == "hoist_height"} == {"m"}
    fields = subprocess.run(
        [tshark, "-r", str(false_load_capture), "-Y", "modbus.func_code == 4 && tcp.srcport == 502",
         "-T", "fields", "-e", "frame.number", "-e", "modbus.regval_uint16"],
        check=True, capture_output=True, text=True).stdout.splitlines()
    theirs = {}
    their_heights = {}
    for line in fields:
        frame, values = line.split("\t")
        words = [int(v) for v in values.split(",")]
        theirs[int(frame)] = words[1] * 0.1  # IR 1 hoist_load, 0.1 t
        height = words[2] - 0x10000 if words[2] & 0x8000 else words[2]
        their_heights[int(frame)] = height / 100.0  # IR 2 hoist_height, int16 cm
    assert len(theirs) == 600
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == pytest.approx(theirs[k]) for k in theirs)
    assert all(heights[k] == pytest.approx(their_heights[k]) for k in their_heights)


def test_wide_export(false_load_capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "wide.csv"
    assert main(["signals", str(false_load_capture), "--profile", PROFILE, "--wide", "--out", str(out)]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert "hoist_load [t]" in header and "twistlocks_locked" in header


def test_parquet_without_pyarrow_is_an_environment_problem(false_load_capture: Path,
                                                            tmp_path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert main(["signals", str(false_load_capture), "--profile", PROFILE, "--out", str(tmp_path / "s.parquet")]) == 4
    else:
        assert main(["signals", str(false_load_capture), "--profile", PROFILE, "--out", str(tmp_path / "s.parquet")]) == 0


def test_sink_in_the_pipeline_finds_the_false_load(false_load_capture: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean.pcap"
    write_capture(run_polls(300, seed=7, start=T0 - 5000), clean)
    baseline = learn_from_captures([clean], load_profile(PROFILE))
    sink = build_sink(profile=load_profile(PROFILE), baseline=baseline)
    result = analyze([false_load_capture], sinks=[sink])
    process = [f for f in result.findings if f.rule.startswith("process-")]
    assert [f.rule for f in process] == ["process-torque-load"]
    finding = process[0]
    assert finding.crane == "STS-07"
    assert finding.evidence[0].source == str(false_load_capture)
    ev = finding.evidence[0].values
    assert T0 + 10 <= ev["onset"] <= T0 + 40 and ev["detection_delay_s"] <= 2.0


def test_honest_capture_against_a_clean_baseline(tmp_path: Path) -> None:
    clean, other = tmp_path / "normal.pcap", tmp_path / "normal-2.pcap"
    write_capture(run_polls(300, seed=7, start=T0 - 5000), clean)
    write_capture(run_polls(120, seed=8, start=T0), other)
    judging = load_judging(PROFILE, clean)  # the clean capture learned at the edge
    sink = build_sink(profile=judging.profile, baseline=judging.process_baseline)
    assert sink.finish() == []
    result = analyze([other], sinks=[sink])
    assert [f for f in result.findings if f.rule.startswith("process-")] == []


def test_unwritable_output_is_a_usage_error(false_load_capture: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing-dir" / "signals.csv"
    assert main(["signals", str(false_load_capture), "--profile", PROFILE, "--out", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_signals_without_a_profile_is_a_usage_error_naming_it(
        false_load_capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No crane is built in: no STS-07 register map stands in for a missing profile."""
    out = tmp_path / "signals.csv"
    assert main(["signals", str(false_load_capture), "--out", str(out)]) == 2
    assert "signals needs --profile" in capsys.readouterr().err
    assert not out.exists()


def test_missing_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # exit 3 like analyze and baseline: an input that cannot be read (tests/test_commands.py)
    assert main(["signals", str(tmp_path / "nope.pcap"), "--out", str(tmp_path / "s.csv")]) == 3
    assert "No such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_evidence_names_the_capture_frames(false_load_capture: Path, tshark: str) -> None:
    sink = build_sink(profile=load_profile(PROFILE))
    result = analyze([false_load_capture], sinks=[sink])
    finding = next(f for f in result.findings if f.rule == "process-torque-load")
    frames = finding.evidence[0].frames
    assert frames
    # Each named frame is a PLC response carrying hoist_load 0 (tshark, independently).
    out = subprocess.run(
        [tshark, "-r", str(false_load_capture), "-Y",
         " || ".join(f"frame.number == {f}" for f in frames),
         "-T", "fields", "-e", "tcp.srcport", "-e", "modbus.func_code", "-e", "modbus.regval_uint16"],
        check=True, capture_output=True, text=True).stdout.splitlines()
    assert len(out) == len(frames)
    for line in out:
        port, function, values = line.split("\t")
        assert port == "502" and function == "4"
        assert values.split(",")[1] == "0"


def test_baseline_files_of_every_kind(false_load_capture: Path, tmp_path: Path) -> None:
    from cranewatch.baseline import learn_baseline, save_baseline
    from cranewatch.errors import ProfileError

    clean = tmp_path / "clean.pcap"
    write_capture(run_polls(120, seed=7, start=T0 - 5000), clean)
    profile = load_profile(PROFILE)
    learned = learn_from_captures([clean], profile)
    saved = tmp_path / "sts-07.baseline"  # no .json suffix: recognised by its content
    save_baseline(learn_baseline([clean], profile), saved)  # `cranewatch baseline --profile`
    assert load_judging(PROFILE, saved).process_baseline == learned
    network_only = tmp_path / "network.json"
    save_baseline(learn_baseline([clean]), network_only)
    assert load_judging(PROFILE, network_only).process_baseline is None  # physics and profile alone
    assert load_judging(PROFILE, clean).process_baseline == learned  # a capture: learned
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"version": 1, "hosts": []}))
    with pytest.raises(ProfileError, match="not a cranewatch baseline"):
        load_judging(PROFILE, foreign)
    # the sink itself takes only what was loaded: never a path to read or a capture to learn
    with pytest.raises(TypeError, match="ProcessBaseline"):
        build_sink(baseline=saved)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CraneProfile"):
        build_sink(profile=PROFILE)  # type: ignore[arg-type]
