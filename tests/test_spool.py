"""The local spool: a run the central store could not take is kept and recorded at the next
contact, in order, once (``store.spool``), against a real PostgreSQL stopped and started again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.model import Evidence, Finding, Severity
from cranewatch.store import Crane, RunInput, open_store
from cranewatch.store.spool import Spool, SpooledRun
from pg_helpers import Cluster, postgres_bin, start_cluster, stop_cluster

LAB = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data" / "lab"


def _finding(fid: str, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(id=fid, rule="r", category="plc-control", severity=severity, title=f"t {fid}",
                   first_seen=1.0e9, last_seen=1.0e9 + 1, crane="C1", src="10.0.0.1",
                   evidence=(Evidence(source="a.pcap", frames=(1, 2)),))


def _run(*fids: str, sha: str = "a" * 64) -> SpooledRun:
    return SpooledRun("C1", "analyze", [RunInput("a.pcap", sha, 10)], [_finding(f) for f in fids],
                      who="tester", note=None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[object]:
    with open_store(tmp_path / "cw.db") as s:
        s.add_crane(Crane(name="C1"), who="t", why="test")
        yield s


def test_a_spooled_run_survives_the_round_trip(tmp_path: Path) -> None:
    run = _run("f1", "f2")
    again = SpooledRun.from_json(json.loads(json.dumps(run.to_json())))
    assert again == run


def test_replay_is_ordered_and_removes_what_it_recorded(tmp_path: Path, store: object) -> None:
    spool = Spool("postgresql://u:secret@db.example/cw", tmp_path / "state")
    first = spool.put(_run("f1", sha="1" * 64))
    second = spool.put(_run("f2", sha="2" * 64))
    assert spool.pending() == [first, second]
    assert "secret" not in first.read_text()  # the password never reaches the disk
    assert spool.replay(store) == 2  # type: ignore[arg-type]
    assert spool.pending() == []
    runs = store.runs("C1")  # type: ignore[attr-defined]
    assert [[i.sha256 for i in r.inputs] for r in runs] == [["1" * 64], ["2" * 64]]


def test_replaying_the_same_run_twice_adds_nothing(tmp_path: Path, store: object) -> None:
    spool = Spool("postgresql://db.example/cw", tmp_path / "state")
    path = spool.put(_run("f1", "f2"))
    kept = path.read_bytes()
    spool.replay(store)  # type: ignore[arg-type]
    path.write_bytes(kept)  # a crash after recording, before the file went
    spool.replay(store)  # type: ignore[arg-type]
    assert len(store.runs("C1")) == 1  # type: ignore[attr-defined]
    assert sorted(f.id for f in store.findings("C1")) == ["f1", "f2"]  # type: ignore[attr-defined]


def test_a_run_of_an_unregistered_crane_stays_spooled_with_the_reason(tmp_path: Path,
                                                                      store: object) -> None:
    spool = Spool("postgresql://db.example/cw", tmp_path / "state")
    bad = SpooledRun("C9", "analyze", [], [], who="t")
    spool.put(bad)
    spool.put(_run("f1"))
    said: list[str] = []
    assert spool.replay(store, said.append) == 0  # type: ignore[arg-type]
    assert len(spool.pending()) == 2  # order kept: the later run waits behind it
    assert "C9" in said[0] and "not recorded yet" in said[0]


def test_a_sensor_keeps_only_its_latest_checkpoint(tmp_path: Path) -> None:
    spool = Spool("postgresql://db.example/cw", tmp_path / "state")
    a = spool.put(_run("f1"), key="monitor:eth1")
    b = spool.put(_run("f1", "f2"), key="monitor:eth1")
    assert a == b and len(spool.pending()) == 1
    assert len(json.loads(b.read_text())["run"]["findings"]) == 2


# ------------------------------------------------------------------ a real PostgreSQL


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test alone: it is stopped and started in the middle."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    cluster = start_cluster(bindir)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def cranewatch(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
           "CRANEWATCH_STATE": str(state)}
    env.pop("CRANEWATCH_DB", None)
    return subprocess.run([sys.executable, "-m", "cranewatch", *args], capture_output=True,
                          text=True, env=env, timeout=180)


def _run_ids(cluster: Cluster, db: str) -> list[tuple[int, str]]:
    rows = cluster.admin("SELECT id, status FROM runs ORDER BY id", database=db)
    return [(int(r[0]), str(r[1])) for r in rows]


def test_postgresql_away_in_the_middle_nothing_lost_nothing_doubled(own_cluster: Cluster,
                                                                    tmp_path: Path) -> None:
    db = own_cluster.new_database()
    url = own_cluster.url(db, tcp=True)
    state = tmp_path / "state"
    added = cranewatch("fleet", "add", "STS-01", "--db", url, state=state)
    assert added.returncode == 0, added.stderr
    one = cranewatch("analyze", str(LAB / "recon" / "crane-lan.pcap"), "--db", url,
                     "--crane", "STS-01", state=state)
    assert one.returncode == 0, one.stderr
    assert len(_run_ids(own_cluster, db)) == 1

    own_cluster.pg_ctl("stop")
    two = cranewatch("analyze", str(LAB / "remote-ssh" / "crane-lan.pcap"), "--db", url,
                     "--crane", "STS-01", "--format", "jsonl", "--out", str(tmp_path / "two.jsonl"),
                     state=state)
    assert two.returncode == 0, two.stderr
    assert "cannot reach the PostgreSQL store" in two.stderr and "kept in" in two.stderr
    assert own_cluster.url(db, tcp=True).split("@")[0].split(":")[-1] not in two.stderr  # no password
    spooled = list(state.glob("spool/*/*.json"))
    assert len(spooled) == 1
    kept = spooled[0].read_bytes()

    own_cluster.pg_ctl("start")
    later = cranewatch("runs", "STS-01", "--db", url, "--format", "jsonl", state=state)
    assert later.returncode == 0, later.stderr
    assert "recorded 1 spooled run(s)" in later.stderr
    assert not list(state.glob("spool/*/*.json"))
    assert [s for _, s in _run_ids(own_cluster, db)] == ["complete", "complete"]
    want = {json.loads(line)["id"] for line in (tmp_path / "two.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "finding"}
    stored = {r[0] for r in own_cluster.admin(
        "SELECT finding_id FROM run_findings WHERE run_id = (SELECT max(id) FROM runs)",
        database=db)}
    assert want and want == stored
    # the hosts and conversations the analysis saw came through the spool too (the inventory's)
    hosts = own_cluster.admin("SELECT count(*) FROM run_hosts WHERE run_id = (SELECT max(id) FROM runs)",
                              database=db)[0][0]
    convs = own_cluster.admin("SELECT count(*) FROM run_conversations WHERE run_id = "
                              "(SELECT max(id) FROM runs)", database=db)[0][0]
    assert hosts > 0 and convs > 0

    # the same spooled run once more (a crash before its file went): nothing doubles
    spooled[0].parent.mkdir(parents=True, exist_ok=True)
    spooled[0].write_bytes(kept)
    findings_before = own_cluster.admin("SELECT count(*) FROM findings", database=db)[0][0]
    again = cranewatch("runs", "STS-01", "--db", url, state=state)
    assert again.returncode == 0, again.stderr
    assert len(_run_ids(own_cluster, db)) == 2
    assert own_cluster.admin("SELECT count(*) FROM findings", database=db)[0][0] == findings_before
    own_cluster.drop_database(db)


def test_a_bad_spool_file_is_set_aside_not_fatal(tmp_path: Path, store: object) -> None:
    spool = Spool("postgresql://db.example/cw", tmp_path / "state")
    spool.dir.mkdir(parents=True)
    (spool.dir / "00000000000000000001-1.json").write_text("{not json")
    spool.put(_run("f1"))
    said: list[str] = []
    assert spool.replay(store, said.append) == 1  # type: ignore[arg-type]
    assert list(spool.dir.glob("*.broken")) and "cannot be read" in said[0]
    shutil.rmtree(spool.dir)


def test_a_sensor_spools_checkpoints_while_the_store_is_away(own_cluster: Cluster,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cranewatch.monitor import StoreOutput

    monkeypatch.setenv("CRANEWATCH_STATE", str(tmp_path / "state"))
    db = own_cluster.new_database()
    url = own_cluster.url(db, tcp=True)
    with open_store(url) as s:
        s.add_crane(Crane(name="C1"), who="t", why="test")
    own_cluster.pg_ctl("stop")
    out = StoreOutput(None, "C1", "monitor:eth9", url=url, retry=0.0)
    out.checkpoint([_finding("f1")], 10.0, False)
    out.checkpoint([_finding("f1"), _finding("f2")], 20.0, False)
    spool = Spool(url, tmp_path / "state")
    assert len(spool.pending()) == 1  # the later checkpoint holds the earlier one
    assert out.runs == []
    own_cluster.pg_ctl("start")
    kept = spool.pending()[0].read_bytes()
    out.checkpoint([_finding("f1"), _finding("f2"), _finding("f3")], 30.0, True)
    out.close()
    assert spool.pending() == []
    runs = own_cluster.admin("SELECT id, component, status FROM runs", database=db)
    # the spooled checkpoint, then the final one: each a run, as when the store never left
    assert [(r[1], r[2]) for r in runs] == [("monitor:eth9", "complete")] * 2
    # the spooled checkpoint replayed again (a crash before its file went) adds no run
    spool.dir.mkdir(parents=True, exist_ok=True)
    (spool.dir / "00000000000000000001-again.json").write_bytes(kept)
    with open_store(url):
        pass
    assert len(own_cluster.admin("SELECT id FROM runs", database=db)) == 2
    ids = {r[0] for r in own_cluster.admin("SELECT id FROM findings", database=db)}
    assert ids == {"f1", "f2", "f3"}
