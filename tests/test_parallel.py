"""``analyze --jobs N``: captures read ahead in worker processes give the serial document byte
for byte, the read-ahead stays bounded, bad input and Ctrl-C end as in the serial run."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cranewatch import parallel, pipeline
from cranewatch.cli import main
from cranewatch.report import jsonl

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
LAB_CAPTURES = sorted(LAB.glob("*/crane-lan.pcap"))
PROFILE = REPO / "profiles" / "sts-07.toml"
# six real captures of other shapes: S7comm, EtherNet/IP, Modbus, pcapng, DNP3-free ICS mixes
SHARED = (
    "ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap",
    "ICS-Security-Tools/pcaps/s7/S7Comm/wrapup.pcapng",
    "ICS-Security-Tools/pcaps/EthernetIP/EthernetIP-CIP.pcap",
    "ICS-Security-Tools/pcaps/CIP/cip_only.pcap",
    "zeek/testing/btest/Traces/modbus/modbusBig.pcap",
    "zeek/testing/btest/Traces/http/206_example_b.pcap",
)


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(["analyze", "--format", "jsonl", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def without_note(run: tuple[int, str, str]) -> tuple[int, str, str]:
    """A run's outcome without the note that ``--jobs`` did not split (or split in vain):
    captures that share conversations are analysed in one process (test_parallel_split)."""
    code, out, err = run
    lines = err.splitlines(keepends=True)
    if lines and lines[0].startswith("cranewatch: note: --jobs"):
        assert "in one process" in lines[0]
        lines = lines[1:]
    return code, out, "".join(lines)


def test_lab_captures_cover_every_set() -> None:
    assert len(LAB_CAPTURES) >= 14  # the bundled lab scenarios, one capture each


@pytest.mark.parametrize("capture", LAB_CAPTURES, ids=lambda p: p.parent.name)
def test_each_lab_capture_set_same_bytes_with_two_jobs(capsys: pytest.CaptureFixture[str],
                                                       capture: Path) -> None:
    args = ["--profile", str(PROFILE), str(capture)]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    parallel_run = run_cli(capsys, ["--jobs", "2", *args])
    assert serial[1].count("\n") > 5  # a real document: inputs, hosts, flows, findings
    assert parallel_run == serial


def test_twenty_captures_together_same_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             shared_data: Path) -> None:
    captures = [*LAB_CAPTURES[:14], *(shared_data / "pcaps" / name for name in SHARED)]
    assert len(captures) == 20 and all(p.is_file() for p in captures)
    # two of them gzip'ed, as a sensor's rotation leaves them: the workers inflate those
    for index in (0, 15):
        packed = tmp_path / (captures[index].name + f".{index}.gz")
        packed.write_bytes(gzip.compress(captures[index].read_bytes()))
        captures[index] = packed
    args = ["--profile", str(PROFILE), *map(str, captures)]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    parallel_run = run_cli(capsys, ["--jobs", "2", *args])
    assert serial[1].count('"type": "input"') == 20 or serial[1].count('"type":"input"') == 20
    assert parallel_run == serial


def shifted_copy(capture: Path, out: Path, seconds: float) -> Path:
    """A classic pcap with every timestamp ``seconds`` later (the same traffic on another tap)."""
    data = bytearray(capture.read_bytes())
    order = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    assert data[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("a1b2c3d4"))
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen = struct.unpack_from(order + "III", data, pos)
        total = sec * 1_000_000 + usec + round(seconds * 1_000_000)
        struct.pack_into(order + "II", data, pos, total // 1_000_000, total % 1_000_000)
        pos += 16 + caplen
    out.write_bytes(bytes(data))
    return out


def test_small_batches_cut_and_merged_across_files_same_document(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Small batches make the timestamp merge cut the workers' decoded batches into pieces:
    each piece carries its rows of the decode, and the document stays the serial one."""
    captures = [LAB_CAPTURES[0], shifted_copy(LAB_CAPTURES[0], tmp_path / "later.pcap", 0.25),
                LAB_CAPTURES[1], shifted_copy(LAB_CAPTURES[1], tmp_path / "other.pcap", 3.5)]
    cuts = []
    real_slice = parallel.slice_decoded
    monkeypatch.setattr(parallel, "slice_decoded",
                        lambda *a: cuts.append(1) or real_slice(*a))  # type: ignore[func-returns-value]
    serial = jsonl.render(pipeline.analyze(captures, batch_packets=256, jobs=1))
    assert not cuts
    two = jsonl.render(pipeline.analyze(captures, batch_packets=256, jobs=2))
    assert cuts  # the merge did cut decoded batches
    assert two == serial


def test_damaged_and_non_captures_same_located_warnings_and_exit(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = LAB_CAPTURES[0]
    data = LAB_CAPTURES[1].read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])  # ends inside a record
    junk = tmp_path / "notes.pcap"
    junk.write_bytes(b"this is not a capture\n" * 10)
    bad_gzip = tmp_path / "bad.pcap.gz"
    bad_gzip.write_bytes(gzip.compress(LAB_CAPTURES[2].read_bytes())[:4000])
    args = [str(good), str(cut), str(junk), str(bad_gzip)]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    parallel_run = run_cli(capsys, ["--jobs", "2", *args])
    assert serial[0] == 3  # a damaged input: reported, exit 3 (README)
    for name in ("cut.pcap", "notes.pcap", "bad.pcap.gz"):
        assert name in serial[2]
    assert "frame" in serial[2] or "offset" in serial[2]
    assert parallel_run == serial


def test_exception_in_a_worker_ends_the_run_as_in_serial(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the reader (not bad input): the worker's exception comes back to the main
    process and ends the run with the same internal-error message and exit code."""
    from cranewatch.sources.pcap import CaptureReader

    real = CaptureReader.batches

    def failing(self: CaptureReader, max_packets: int = 65536):  # type: ignore[no-untyped-def]
        yield from real(self, max_packets)
        raise ValueError(f"reader bug in {self.path}")

    monkeypatch.setattr(CaptureReader, "batches", failing)  # the fork carries it to the worker
    args = [str(p) for p in LAB_CAPTURES[:3]]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    parallel_run = run_cli(capsys, ["--jobs", "2", *args])
    assert serial[0] == 70 or serial[0] != 0
    assert "ValueError: reader bug in" in serial[2]
    assert without_note(parallel_run) == serial


def test_read_ahead_is_bounded_by_the_window(window: int = 2) -> None:
    """Two files, one reader (which serves the first file first): while the main process
    takes the second file to its end, the first never has more than ``window`` batches
    waiting (without credits the reader would send all of it ahead)."""
    states = [pipeline._InputState(str(p), 0) for p in LAB_CAPTURES[:2]]
    seen = []
    with parallel.ReadAhead(LAB_CAPTURES[:2], 64, readers=1, window=window) as ahead:
        first, second = ahead.streams(states, lambda w: None)
        next(first)  # as the merge starts: one batch of every file
        taken = 0
        for _batch in second:
            taken += 1
            seen.append(sum(1 for kind, _ in ahead._waiting[0] if kind == "batch"))
        rest = 1 + sum(1 for _ in first)
    assert taken > 20 and rest > 20  # many batches each, so an unbounded reader would pile up
    assert max(seen) <= 2


def test_workers_read_before_they_are_asked() -> None:
    with parallel.ReadAhead(LAB_CAPTURES[:1], 64, readers=1) as ahead:
        assert ahead._conns[0].poll(10)  # a batch waits before the main process asks for one


def test_jobs_above_the_cpus_is_lowered_and_said(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    code, out, err = run_cli(capsys, ["--jobs", "64", str(LAB_CAPTURES[0])])
    assert "--jobs 64" in err and "using 2" in err
    assert (code, out) == run_cli(capsys, ["--jobs", "1", str(LAB_CAPTURES[0])])[:2]


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--jobs", value, str(LAB_CAPTURES[0])])
    assert exit_.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def test_jobs_in_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    assert "--jobs N" in capsys.readouterr().out
    assert "--jobs" in (REPO / "README.md").read_text()


_SLOW_ANALYSIS = """
import sys, time
import cranewatch.pipeline as p
real = p.Analysis.process
def slow(self, batch):
    print("processing", file=sys.stderr, flush=True)
    time.sleep(60)
    real(self, batch)
p.Analysis.process = slow
from cranewatch.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_ctrl_c_exits_130_and_leaves_no_worker(tmp_path: Path) -> None:
    marker = tmp_path / "ctrl-c-marker.pcap"
    shutil.copy(LAB_CAPTURES[0], marker)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with subprocess.Popen(
            [sys.executable, "-c", _SLOW_ANALYSIS, "analyze", "--jobs", "2", str(marker),
             str(LAB_CAPTURES[1])], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env=env, start_new_session=True) as child:
        assert child.stderr is not None
        first = child.stderr.readline()
        if first.startswith("cranewatch: note: --jobs"):  # one lab network: not split
            first = child.stderr.readline()
        assert first.strip() == "processing"  # the workers are running by now
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        err = child.stderr.read()
        assert child.wait(timeout=30) == 130
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _processes_naming(marker):
        time.sleep(0.1)
    assert not _processes_naming(marker)


def _processes_naming(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_every_shared_capture_in_one_run_same_bytes(capsys: pytest.CaptureFixture[str],
                                                    shared_data: Path) -> None:
    """All ~640 public captures at once (pcap, pcapng, many link types, some cut short or
    damaged): the same document, warnings, stderr and exit code with two jobs."""
    captures = sorted(str(p) for p in (shared_data / "pcaps").rglob("*")
                      if p.is_file() and p.name.endswith((".pcap", ".pcapng", ".cap", ".pcap.gz")))
    assert len(captures) > 500
    serial = run_cli(capsys, ["--jobs", "1", *captures])
    parallel_run = run_cli(capsys, ["--jobs", "2", *captures])
    assert serial[0] == 3  # some are cut short: reported, exit 3
    assert serial[1].count('"type":"warning"') > 100
    assert without_note(parallel_run) == serial


def test_zeek_logs_stay_in_the_main_process(capsys: pytest.CaptureFixture[str],
                                            shared_data: Path) -> None:
    logs = sorted((shared_data / "zeek-logs").rglob("conn*.log"))[:1]
    if not logs:
        pytest.skip("no Zeek conn log in the shared data")
    args = [str(logs[0]), str(LAB_CAPTURES[0])]
    assert run_cli(capsys, ["--jobs", "2", *args]) == run_cli(capsys, ["--jobs", "1", *args])
    with parallel.ReadAhead(args, 64, readers=1) as ahead:
        assert ahead.paths == [str(LAB_CAPTURES[0])]


def test_a_reader_killed_mid_run_is_an_environment_error() -> None:
    """The kernel may kill a worker (memory): the run stops with exit 4 and says so, rather
    than waiting for ever or passing it off as a bug."""
    states = [pipeline._InputState(str(LAB_CAPTURES[0]), 0)]
    with parallel.ReadAhead(LAB_CAPTURES[:1], 64, readers=1) as ahead:
        (stream,) = ahead.streams(states, lambda w: None)
        next(stream)
        ahead._processes[0].kill()
        ahead._processes[0].join()
        with pytest.raises(parallel.ReaderFailed, match=r"reader process 0 ended .* --jobs 1") as failed:
            for _batch in stream:
                pass
    assert failed.value.exit_code == 4
