"""What every command shares (``cranewatch.commands``): inputs checked before any output, and
``--out -`` meaning standard output."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.commands import check_inputs
from cranewatch.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"
FLEET = REPO / "profiles" / "fleet-example.toml"
NORMAL = REPO / "src" / "cranewatch" / "data" / "lab" / "normal" / "crane-lan.pcap"
IMAGE = REPO / "src" / "cranewatch" / "data" / "images" / "sts07-cms.tar.gz"


def cranewatch(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "cranewatch", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# -- inputs are checked before anything is printed or written ------------------------------------


def test_analyze_of_a_missing_capture_prints_no_report(tmp_path: Path) -> None:
    done = cranewatch("analyze", "/nonexistent/nope.pcap", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stdout == ""  # before: a whole empty report with the sha256 of no bytes
    assert done.stderr == ("cranewatch: error: /nonexistent/nope.pcap: cannot read this capture "
                           "or Zeek log: No such file or directory\n")


def test_analyze_names_every_missing_input_and_reads_none(tmp_path: Path) -> None:
    out = tmp_path / "report.jsonl"
    done = cranewatch("analyze", str(NORMAL), "a.pcap", "b.pcap", "--format", "jsonl",
                      "--out", str(out), cwd=tmp_path)
    assert done.returncode == 3 and done.stdout == ""
    assert not out.exists()
    lines = done.stderr.splitlines()
    assert lines[0] == "cranewatch: error: 2 of 3 inputs cannot be read:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["a.pcap", "b.pcap"]


@pytest.mark.parametrize("command", ["baseline", "signals"])
def test_baseline_and_signals_fail_before_writing(command: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / ("b.json" if command == "baseline" else "s.csv")
    assert main([command, str(NORMAL), str(tmp_path / "gone.pcap"), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{tmp_path / 'gone.pcap'}: cannot read this capture: No such file" in captured.err
    assert not out.exists()


def test_a_directory_is_an_input_and_an_unreadable_file_is_not(tmp_path: Path) -> None:
    check_inputs([str(tmp_path)])  # Zeek logs come as a directory
    # a file that opens but cannot be read, even by root (the tests run as root here)
    with pytest.raises(InputError) as err:
        check_inputs(["/proc/self/mem"])
    assert str(err.value) == "/proc/self/mem: cannot read this capture: Input/output error"


def test_a_fifo_is_refused_before_a_byte_is_read(tmp_path: Path) -> None:
    # issue 19: non-regular inputs are refused before reading (a FIFO or device may never end);
    # no writer is started, so opening the FIFO would hang until the timeout
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    done = cranewatch("analyze", str(fifo), "--format", "jsonl", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stdout == ""
    assert "FIFO" in done.stderr


def test_a_full_disk_is_an_environment_problem(tmp_path: Path) -> None:
    done = cranewatch("analyze", str(NORMAL), "--out", "/dev/full", cwd=tmp_path)
    assert done.returncode == 4
    assert done.stderr == "cranewatch: error: /dev/full: cannot write: No space left on device\n"


# -- --out - is standard output ------------------------------------------------------------------


def test_analyze_out_dash_writes_the_report_to_stdout(tmp_path: Path) -> None:
    to_file = cranewatch("analyze", str(NORMAL), "--format", "jsonl", "--out", "r.jsonl", cwd=tmp_path)
    to_stdout = cranewatch("analyze", str(NORMAL), "--format", "jsonl", "--out", "-", cwd=tmp_path)
    assert to_file.returncode == to_stdout.returncode == 0
    assert not (tmp_path / "-").exists()  # before: a file named "-"
    assert to_file.stdout == ""
    assert to_stdout.stdout == (tmp_path / "r.jsonl").read_text(encoding="utf-8")
    assert json.loads(to_stdout.stdout.splitlines()[0])["type"] == "input"


def test_every_out_option_takes_a_dash_for_stdout(tmp_path: Path) -> None:
    db = str(tmp_path / "cw.db")
    assert cranewatch("fleet", "import", str(FLEET), "--db", db, cwd=tmp_path).returncode == 0
    runs = {
        "baseline": (["baseline", str(NORMAL), "--out", "-"], '"schema": 1'),
        "signals": (["signals", str(NORMAL), "--profile", str(PROFILE), "--out", "-"],
                    "time,epoch,signal,value,unit,origin,frame\n"),
        "scan-image": (["scan-image", str(IMAGE), "--format", "jsonl", "--out", "-"], '"type": "scan"'),
        "report": (["report", "STS-07", "--db", db, "--format", "jsonl", "--out", "-"],
                   '"type": "report"'),
        "quarantine": (["quarantine", "STS-07", "--station", "10.20.0.100", "--db", db, "--out", "-"],
                       "table inet cranewatch"),
        "policy": (["policy", "STS-07", "--profile", str(PROFILE), "--db", db, "--out", "-"],
                   "table inet cranewatch"),
    }
    for name, (argv, expected) in runs.items():
        done = cranewatch(*argv, cwd=tmp_path)
        assert done.returncode == 0, (name, done.stderr)
        assert expected in done.stdout, (name, done.stdout[:300])
        assert not (tmp_path / "-").exists(), name
    # what went to stdout is the whole output, nothing else mixed in
    signals = cranewatch(*runs["signals"][0], cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(signals.stdout)))
    assert signals.stderr.startswith(f"19 signals, {len(rows)} rows written to standard output")
    baseline = cranewatch(*runs["baseline"][0], cwd=tmp_path)
    assert json.loads(baseline.stdout)["schema"] == 1


def test_monitor_out_dash_writes_json_lines_to_stdout_and_finding_lines_to_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    import argparse
    import threading

    from cranewatch.commands import monitor
    from cranewatch.model import Finding, Severity

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(out="-", db=None, quiet=False, forward=None, forward_format="ecs",
                              forward_ca=None, forward_state=None)
    outputs = monitor._outputs(args, "lo", threading.Event())
    finding = Finding(id="cw-1", rule="r", category="recon", severity=Severity.HIGH, title="scan",
                      first_seen=1.0, last_seen=2.0)
    for output in outputs:
        output.emit(finding, True)
        output.close()
    captured = capfd.readouterr()
    assert json.loads(captured.out) == finding.to_json()
    assert "scan" in captured.err
    assert not (tmp_path / "-").exists()


# -- --fail-on says which findings met it ---------------------------------------------------------


def test_scan_image_fail_on_names_the_findings_that_met_it(tmp_path: Path) -> None:
    report = cranewatch("scan-image", str(IMAGE), "--format", "jsonl", cwd=tmp_path)
    findings = [json.loads(line) for line in report.stdout.splitlines()]
    high = [f for f in findings if f["type"] == "finding" and f["severity"] in ("high", "critical")]
    critical = [f for f in high if f["severity"] == "critical"]
    assert len(high) > 5 and critical  # the bundled image is a compromised one
    done = cranewatch("scan-image", str(IMAGE), "--fail-on", "high", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"cranewatch: --fail-on high met by {len(high)} findings:"
    shown = [line.split()[:2] for line in lines[1:6]]
    # worst first, each with its id; the rest counted
    assert [s for s, _ in shown] == ["CRITICAL"] * min(5, len(critical)) + ["HIGH"] * (5 - min(5, len(critical)))
    assert {i for _, i in shown} <= {f["id"] for f in high}
    assert lines[6:] == [f"  … {len(high) - 5} more"]
