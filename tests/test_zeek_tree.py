"""Zeek at port scale: rotated, gzipped log trees of several sensors, read as one bounded stream.

The trees are built from the real records of ../shared/data/zeek-logs by
``benchmarks/zeek_tree.py`` (the hours a cluster's logger archives, logs/current, TSV and JSON
with ``_node_name``). What the reader found is checked against counts taken without it
(``gzip -dc | grep -vc '^#'``), and the analysis of the trees against the analysis of the same
records un-rotated.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cranewatch.cli import main
from cranewatch.sources import zeek
from cranewatch.sources.zeek import ConnEvent, ZeekStream, read_zeek, rotation_start

BUILDER = Path(__file__).resolve().parents[1] / "benchmarks" / "zeek_tree.py"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zeek_tree", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zeek_tree"] = module
    spec.loader.exec_module(module)
    return module


def _records_in(path: Path) -> int:
    """Record lines of a log, counted by gzip(1) and grep(1), not by the reader."""
    reader = f"gzip -dc '{path}'" if path.name.endswith(".gz") else f"cat '{path}'"
    out = subprocess.run(f"{reader} | grep -vc '^#'", shell=True, capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def _findings(doc: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["id"], r["rule"], r["severity"], r["count"], r["first_seen"], r["last_seen"])
                  for r in doc if r["type"] == "finding")


def _analyze(paths: list[Path], out: Path) -> tuple[int, list[dict[str, Any]]]:
    code = main(["analyze", *map(str, paths), "--format", "jsonl", "--out", str(out)])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


# --- pure parts -----------------------------------------------------------------------------

def test_rotation_start_reads_the_day_directory_and_the_hours_in_the_name() -> None:
    day = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # 1796083200 - 86400: checked below
    assert day == 1_795_996_800
    assert rotation_start(Path("logs/2026-11-30/conn.13:00:00-14:00:00.log.gz")) == day + 13 * 3600
    assert rotation_start(Path("logs/2026-11-30/dns.00:00:00-01:00:00.log")) == day
    assert rotation_start(Path("logs/current/conn.log")) is None
    assert rotation_start(Path("logs/2026-13-45/conn.01:00:00-02:00:00.log.gz")) is None
    assert rotation_start(Path("spool/conn.01:00:00-02:00:00.log.gz")) == 3600  # no day: the hour


def _conn_json(ts: float, uid: str) -> str:
    return json.dumps({"_path": "conn", "ts": ts, "uid": uid, "id.orig_h": "10.0.0.1", "id.orig_p": 40000,
                       "id.resp_h": "10.0.0.2", "id.resp_p": 502, "proto": "tcp"})


def test_reorder_window_sorts_within_it_and_counts_what_comes_later(tmp_path: Path) -> None:
    # Zeek writes a conn record when its connection ends: C3 began at 1005 but is written
    # after C4 (1400), whose time moves the window (300 s) past 1010; C5 (1390) is within it.
    log = tmp_path / "conn.log"
    rows = [(1010.0, "C2"), (1000.0, "C1"), (1400.0, "C4"), (1005.0, "C3"), (1390.0, "C5"), (1500.0, "C6")]
    log.write_text("".join(_conn_json(ts, uid) + "\n" for ts, uid in rows))
    stream = ZeekStream([log], window_seconds=300.0, window_records=100)
    order = [e.uid for batch in stream.batches() for e in batch if isinstance(e, ConnEvent)]  # type: ignore[attr-defined]
    assert order == ["C1", "C2", "C3", "C5", "C4", "C6"]
    assert stream.late == 1 and stream.latest_late == [(5.0, str(log), 4)]
    assert any(n.startswith("1 records came later than the reorder window (300 s / 100 records)")
               for n in stream.result().notes)
    # read_zeek (a list in memory) sorts whole
    assert [e.uid for e in read_zeek([log]).events] == ["C1", "C3", "C2", "C5", "C4", "C6"]  # type: ignore[attr-defined]
    # the record bound: with room for one record, 1002 leaves when 1003 comes, and 1001 is late
    log.write_text("".join(_conn_json(ts, uid) + "\n" for ts, uid in [(1003.0, "A"), (1002.0, "B"), (1001.0, "C")]))
    small = ZeekStream([log], window_seconds=300.0, window_records=1)
    assert [e.uid for b in small.batches() for e in b] == ["B", "C", "A"]  # type: ignore[attr-defined]
    assert small.late == 1
    whole = ZeekStream([log], window_seconds=300.0, window_records=100)
    assert [e.uid for b in whole.batches() for e in b] == ["C", "B", "A"] and whole.late == 0  # type: ignore[attr-defined]


def test_node_name_is_the_records_source_and_a_copy_is_read_once(tmp_path: Path) -> None:
    day = tmp_path / "sensorA" / "logs" / "2026-11-30"
    day.mkdir(parents=True)
    record = json.loads(_conn_json(1_795_996_900.0, "C1"))
    with gzip.open(day / "conn.00:00:00-01:00:00.log.gz", "wt") as out:
        out.write(json.dumps({**record, "_node_name": "worker-3"}) + "\n")
    copy = tmp_path / "sensorB" / "logs" / "2026-11-30" / "conn.00:00:00-01:00:00.log.gz"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(day / "conn.00:00:00-01:00:00.log.gz", copy)
    (tmp_path / "sensorA" / "logs" / "conn-latest.log.gz").symlink_to(day / "conn.00:00:00-01:00:00.log.gz")
    stream = ZeekStream([tmp_path / "sensorA" / "logs", tmp_path / "sensorB" / "logs"])
    events = [e for b in stream.batches() for e in b]
    assert [e.source for e in events] == [f"worker-3@{day / 'conn.00:00:00-01:00:00.log.gz'}"]
    assert sorted(d.path for d in stream.duplicates) == [str(tmp_path / "sensorA/logs/conn-latest.log.gz"), str(copy)]
    assert any("read once" in n and str(copy) in n for n in stream.inputs[1].found.notes)


# --- a cluster's trees built from the shared logs ------------------------------------------------

@pytest.fixture(scope="module")
def trees(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sensorA: 5 hours as TSV (the last in logs/current), a link and a copy of one archived
    log; sensorB: 4 hours as JSON from node worker-2; both also un-rotated in flatA/flatB."""
    zeek_tree = _builder()
    root = tmp_path_factory.mktemp("cluster")
    logs = shared_data / "zeek-logs"
    counts_a = zeek_tree.write_tree(root / "sensorA", logs, 5, 2, flat=root / "flatA")
    counts_b = zeek_tree.write_tree(root / "sensorB", logs, 4, 1, as_json=True, node="worker-2",
                                    flat=root / "flatB")
    archived = root / "sensorA" / "logs" / "2026-11-30" / "conn.01:00:00-02:00:00.log.gz"
    (root / "sensorA" / "logs" / "conn-last.log.gz").symlink_to(archived)
    backup = root / "sensorA" / "logs" / "backup"
    backup.mkdir()
    shutil.copyfile(archived, backup / archived.name)
    return {"root": root, "a": root / "sensorA" / "logs", "b": root / "sensorB" / "logs",
            "counts": (counts_a, counts_b), "archived": archived}


@pytest.mark.shared
def test_every_record_of_two_sensors_trees_is_read_once(trees: dict[str, Any]) -> None:
    a, b = trees["a"], trees["b"]
    conn_files = [*sorted(a.glob("2026-*/conn.*.log.gz")), a / "current" / "conn.log",
                  *sorted(b.glob("2026-*/conn.*.log.gz")), b / "current" / "conn.log"]
    expected = sum(_records_in(f) for f in conn_files)
    assert expected == trees["counts"][0]["conn"] + trees["counts"][1]["conn"]  # the builder agrees
    stream = ZeekStream([a, b])
    conns = [e for batch in stream.batches() for e in batch if isinstance(e, ConnEvent)]
    assert len(conns) == expected
    assert {d.path for d in stream.duplicates} == {str(a / "conn-last.log.gz"), str(a / "backup" / trees["archived"].name)}
    assert all(d.same_as == str(trees["archived"]) for d in stream.duplicates)
    by_sensor = {e.source.split("@")[0] if "@" in e.source else "A" for e in conns}
    assert by_sensor == {"A", "worker-2"}
    assert all(e.source.startswith(f"worker-2@{b}/") for e in conns if "@" in e.source)
    zeek_tree = sys.modules["zeek_tree"]
    for tally in stream.inputs:  # both sensors' first and last hour
        assert tally.first is not None and tally.last is not None
        assert zeek_tree.START - zeek_tree.LONG_SECONDS <= tally.first < zeek_tree.START + 3600
    # long connections (zeek_tree.LONG_SECONDS) end after the window has moved on: they are the
    # late ones, and everything else comes in time order
    long = sum(1 for f in conn_files for d in _conn_durations(f) if d == zeek_tree.LONG_SECONDS)
    assert 0 < stream.late <= long
    stream = ZeekStream([a, b])
    newest, behind = 0.0, 0
    for batch in stream.batches():
        for event in batch:
            behind += event.ts < newest
            newest = max(newest, event.ts)
    assert behind == stream.late


def _conn_durations(path: Path) -> list[float]:
    text = gzip.decompress(path.read_bytes()).decode() if path.name.endswith(".gz") else path.read_text()
    out = []
    fields: list[str] = []
    for line in text.splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line.startswith("{"):
            out.append(float(json.loads(line).get("duration", 0)))
        elif line and not line.startswith("#"):
            out.append(float(line.split("\t")[fields.index("duration")]))
    return out


@pytest.mark.shared
def test_trees_give_the_findings_of_the_same_logs_unrotated(trees: dict[str, Any], tmp_path: Path) -> None:
    root = trees["root"]
    code, rotated = _analyze([trees["a"], trees["b"]], tmp_path / "rotated.jsonl")
    flat_code, flat = _analyze([root / "flatA", root / "flatB"], tmp_path / "flat.jsonl")
    assert code == flat_code == 0
    assert _findings(rotated) and _findings(rotated) == _findings(flat)
    inputs = [r for r in rotated if r["type"] == "input"]
    assert [r["path"] for r in inputs] == [str(trees["a"]), str(trees["b"])] and all(r["complete"] for r in inputs)
    assert [r["events"] for r in inputs] == [r["events"] for r in flat if r["type"] == "input"]
    sources = {e.get("source") for r in rotated if r["type"] == "finding" for e in r["evidence"]}
    sources |= {s.get("source") for r in rotated if r["type"] == "finding" for e in r["evidence"]
                for s in e.get("values", {}).get("frames_in", [])}
    assert any(s and s.startswith(f"worker-2@{trees['b']}/2026-11-30/") for s in sources)
    assert any(s and s.startswith(f"{trees['a']}/2026-11-30/") for s in sources)
    warnings = [r["message"] for r in rotated if r["type"] == "warning"]
    assert any("read once" in w for w in warnings)


@pytest.mark.shared
def test_a_truncated_gzip_member_is_located_and_the_rest_is_read(trees: dict[str, Any], tmp_path: Path) -> None:
    tree = tmp_path / "sensorA"
    shutil.copytree(trees["a"].parent, tree, symlinks=False)
    shutil.rmtree(tree / "logs" / "backup")
    (tree / "logs" / "conn-last.log.gz").unlink()
    cut = tree / "logs" / "2026-11-30" / "conn.02:00:00-03:00:00.log.gz"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # what gzip(1) can inflate before the cut, in whole lines, counted without the reader
    inflated = subprocess.run(["gzip", "-dc", str(cut)], capture_output=True).stdout
    whole = [line for line in inflated.split(b"\n")[:-1] if not line.startswith(b"#")]
    assert 0 < len(whole) < _records_in(trees["a"] / "2026-11-30" / cut.name)
    others = [f for f in (tree / "logs").rglob("conn*.log*") if f != cut]
    stream = ZeekStream([tree / "logs"])
    conns = [e for b in stream.batches() for e in b if isinstance(e, ConnEvent)]
    problems = stream.result().problems
    assert len(conns) == len(whole) + sum(_records_in(f) for f in others) - _partial_line_read(inflated, problems)
    located = [p for p in problems if p.location and p.location.file == str(cut)]
    assert located and located[0].location.line is not None
    assert any("compressed byte" in p.message for p in located)
    code, doc = _analyze([tree / "logs"], tmp_path / "cut.jsonl")
    assert code == 3  # an input not read whole (README's exit codes)
    assert [r["complete"] for r in doc if r["type"] == "input"] == [False]
    assert _findings(doc)  # what was read is analysed


def _partial_line_read(inflated: bytes, problems: list[Any]) -> int:
    """0: the cut's unfinished last line was skipped as a located problem (wrong field count)."""
    tail = inflated.rsplit(b"\n", 1)[-1]
    skipped = any("values for" in p.message for p in problems)
    return 0 if not tail or skipped else -1


def _conn_log(path: Path, count: int) -> Path:
    """A conn.log of ``count`` records a second apart, every tenth written 200 s late."""
    with gzip.open(path, "wt") as out:
        for i in range(count):
            ts = 1_795_996_800.0 + i - (200.0 if i % 10 == 9 else 0.0)
            out.write(_conn_json(ts, f"C{i}") + "\n")
    return path


def test_memory_is_flat_in_the_logs_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # read_zeek (and the reader before the stream) holds every event: 8x the records, ~8x the
    # memory. The stream holds its window, a batch and a read block (here 64 KiB, so that both
    # logs are longer than one): the peak stays where it was.
    import tracemalloc

    monkeypatch.setattr(zeek, "_READ_BLOCK", 64 * 1024)

    def peak(count: int) -> int:
        log = _conn_log(tmp_path / f"conn.{count}.log.gz", count)
        tracemalloc.start()
        stream = ZeekStream([log], window_seconds=300.0, window_records=1000, batch=256)
        events = sum(len(batch) for batch in stream.batches())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert events == count and stream.late == 0  # 200 s late is within the window
        return top

    small, large = peak(2_000), peak(16_000)
    assert large < small * 1.5, (small, large)
