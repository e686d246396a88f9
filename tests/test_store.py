"""Store: migrations, finding upserts with stable ids, one writer with concurrent readers, crashes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cranewatch.errors import StateError
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Component, Crane, open_store
from cranewatch.store import sqlite as store_sqlite
from cranewatch.store.dialect import is_postgres_url
from cranewatch.store.schema import MIGRATIONS, Migration
from cranewatch.store.sqlite import Store


def make_finding(n: int, *, crane: str = "STS-07", first: float = 1000.0, count: int = 1) -> Finding:
    return Finding(
        id=finding_id("remote-access.ssh", crane, f"10.20.0.{n}", "10.20.7.10:22"),
        rule="remote-access.ssh",
        category="remote-access",
        severity=Severity.HIGH,
        title=f"SSH session from 10.20.0.{n} into the crane PLC",
        first_seen=first,
        last_seen=first + 60,
        count=count,
        crane=crane,
        src=f"10.20.0.{n}",
        dst="10.20.7.10:22",
        technique=("T0822",),
        evidence=(Evidence(source="q.pcap", frames=(3, 4), times=(first,), excerpt="SSH-2.0-OpenSSH"),),
        remedy="Block SSH into the crane zone.",
    )


def tables(db: str | Path) -> set[str]:
    """The tables of a store, read past cranewatch (sqlite3, or psycopg for a URL)."""
    if is_postgres_url(db):
        import psycopg

        with psycopg.connect(str(db)) as conn:
            return {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def integrity_error(db: str) -> type[Exception]:
    """What the backend raises when the schema itself refuses a row."""
    if is_postgres_url(db):
        import psycopg

        return psycopg.IntegrityError
    return sqlite3.IntegrityError


def test_migrations_from_empty_are_recorded_in_order(store_at: str) -> None:
    db = store_at
    with open_store(db) as store:
        assert store.applied_migrations() == [m.name for m in MIGRATIONS]
        assert store.migrate() == []  # idempotent
    assert {"cranes", "crane_components", "crane_history", "runs", "run_inputs", "findings",
            "run_findings", "run_artifacts", "gate_decisions", "rulesets", "schema_migrations"} <= tables(db)
    if not is_postgres_url(db):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("earlier", range(len(MIGRATIONS)))
def test_migrations_from_each_earlier_schema_keep_data(store_at: str, earlier: int) -> None:
    db = store_at
    old = Store(db, migrate=False)
    old.migrate(upto=earlier)
    assert old.applied_migrations() == [m.name for m in MIGRATIONS[:earlier]]
    if earlier >= 1:  # the fleet tables exist: put a crane in them
        old.add_crane(Crane("STS-07", maker="m", components=(Component("PLC", "plc", ip="10.20.7.10"),)),
                      who="tester", why="before upgrade")
    if earlier >= 2:  # runs and findings exist: written as the schema of then had them
        with old._write() as conn:
            conn.execute("INSERT INTO runs(crane, kind, tool_version, started_at, finished_at, status)"
                         " VALUES ('STS-07', 'analyze', 'old', 1.0, 2.0, 'complete')")
            # the columns of 0002 (later migrations add more: the statement of today would not fit)
            row = store_sqlite._finding_row("STS-07", make_finding(1), "traffic")
            del row["source"], row["search"]
            conn.execute(f"INSERT INTO findings({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
            conn.execute("INSERT INTO run_findings(run_id, crane, finding_id, count) VALUES (1, 'STS-07', ?, 1)",
                       (make_finding(1).id,))
    old.close()

    with open_store(db) as store:
        assert store.applied_migrations() == [m.name for m in MIGRATIONS]
        if earlier >= 1:
            crane = store.crane("STS-07")
            assert crane is not None and crane.components[0].ip == "10.20.7.10"
            assert [h.why for h in store.history("STS-07")] == ["before upgrade"]
        if earlier >= 2:
            assert [f.id for f in store.current_findings("STS-07")] == [make_finding(1).id]
        # the newest tables work after the upgrade
        store.record_gate("STS-07", "needs-review", [{"kind": "missing"}], {}, who="tester")
        assert store.latest_gate("STS-07") is not None
        store.record_ruleset("STS-07", "quarantine", "table inet x {}\n", who="tester")
        stored = store.latest_ruleset("STS-07")
        assert stored is not None and stored.purpose == "quarantine"


def test_a_failing_migration_leaves_nothing_behind(store_at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = (*MIGRATIONS, Migration("9999_broken", ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL")))
    monkeypatch.setattr(store_sqlite, "MIGRATIONS", broken)
    if is_postgres_url(store_at):
        import psycopg

        refused: type[Exception] = psycopg.errors.SyntaxError
    else:
        refused = sqlite3.OperationalError
    with pytest.raises(refused):
        Store(store_at)
    assert "half_done" not in tables(store_at)
    monkeypatch.undo()
    with open_store(store_at) as store:
        assert store.applied_migrations() == [m.name for m in MIGRATIONS]


def test_same_input_recorded_twice_replaces_its_run_with_the_same_ids(tmp_path: Path, store_at: str) -> None:
    capture = tmp_path / "quarantine.pcap"
    capture.write_bytes(b"not really a capture, but hashed all the same")
    copy = tmp_path / "elsewhere.pcap"
    copy.write_bytes(capture.read_bytes())
    with open_store(store_at) as store:
        first = store.record_run("STS-07", "analyze", [capture], [make_finding(1, first=1000.0, count=5),
                                                                  make_finding(2)], who="ana")
        # the same bytes under another name, same options: the same run, recorded a second time
        second = store.record_run("STS-07", "analyze", [copy], [make_finding(1, first=900.0, count=3)], who="ben")
        assert second == first
        assert store.count_findings("STS-07") == 2  # finding 2 stays stored (and open) all the same
        one = {f.id: f for f in store.findings("STS-07")}[make_finding(1).id]
        assert one.first_seen == 900.0  # earliest of both recordings
        assert one.last_seen == 1060.0  # latest of both recordings
        assert one.count == 3  # from the latest recording
        assert [f.id for f in store.findings("STS-07", [first])] == [make_finding(1).id]
        (run,) = store.runs("STS-07")
        assert (run.status, run.recordings, run.recorded_by) == ("complete", 2, "ben")
        import hashlib
        assert run.inputs == (store_sqlite.RunInput(str(copy), hashlib.sha256(capture.read_bytes()).hexdigest(),
                                                    copy.stat().st_size),)
        (event,) = store.audit_events("STS-07")
        assert (event.action, event.subject, event.who) == ("re-record", f"run {first}", "ben")
        assert event.detail["findings_before"] == 2 and event.detail["recording"] == 2
        assert store.findings("STS-07")[0].evidence[0].excerpt == "SSH-2.0-OpenSSH"
        # other options, another component, or no inputs at all (a live checkpoint): new runs
        third = store.record_run("STS-07", "analyze", [capture], [], options={"reference": "abc"})
        fourth = store.record_run("STS-07", "scan-image", [capture], [], component="CMS")
        fifth = store.record_run("STS-07", "analyze", [], [])
        sixth = store.record_run("STS-07", "analyze", [], [])
        assert len({first, third, fourth, fifth, sixth}) == 5


def test_a_superseded_run_is_not_replaced_and_stays(tmp_path: Path, store_at: str) -> None:
    capture = tmp_path / "q.pcap"
    capture.write_bytes(b"bytes")
    with open_store(store_at) as store:
        first = store.record_run("STS-07", "analyze", [capture], [make_finding(1)])
        store.supersede_run(first, who="ana", why="wrong mirror port")
        with pytest.raises(StateError, match="already superseded by ana"):
            store.supersede_run(first, who="ana", why="again")
        second = store.record_run("STS-07", "analyze", [capture], [])
        assert second != first
        runs = store.runs("STS-07")
        assert [(r.id, r.superseded, r.superseded_reason) for r in runs] == [
            (first, True, "wrong mirror port"), (second, False, None)]
        assert [r.id for r in store.latest_complete_runs("STS-07")] == [second]
        # its finding stays stored and counting: only a disposition takes a finding out
        assert [f.id for f in store.current_findings("STS-07")] == [make_finding(1).id]
        assert [(e.action, e.subject, e.who, e.why) for e in store.audit_events("STS-07")] == [
            ("supersede", f"run {first}", "ana", "wrong mirror port")]


def test_a_clean_rescan_does_not_drop_an_earlier_finding(store_at: str) -> None:
    """Regression: current findings were those of the latest run, so a clean rescan hid them."""
    with open_store(store_at) as store:
        store.record_run("STS-07", "scan-image", [], [make_finding(1)], component="CMS")
        store.record_run("STS-07", "scan-image", [], [make_finding(2)], component="OCR")
        store.record_run("STS-07", "scan-image", [], [], component="CMS")  # CMS re-scanned, clean
        assert sorted(f.src or "" for f in store.current_findings("STS-07")) == ["10.20.0.1", "10.20.0.2"]
        store.record_disposition("STS-07", make_finding(1).id, "false-positive", who="ana", why="lab key")
        assert [f.src for f in store.current_findings("STS-07")] == ["10.20.0.2"]
        assert store.count_findings("STS-07") == 2  # history is kept


def test_dispositions_are_recorded_with_an_audit_event_each(store_at: str) -> None:
    with open_store(store_at) as store:
        run = store.record_run("STS-07", "analyze", [], [make_finding(1)])
        fid = make_finding(1).id
        with pytest.raises(StateError, match="no stored finding"):
            store.record_disposition("STS-07", "cw-nope", "acknowledged", who="ana", why="x")
        with pytest.raises(integrity_error(store_at)):  # the schema itself refuses an acceptance without expiry
            store.record_disposition("STS-07", fid, "accepted-risk", who="ana", why="x")
        store.record_disposition("STS-07", fid, "acknowledged", who="ana", why="looking", at=10.0)
        store.record_disposition("STS-07", fid, "accepted-risk", who="fso", why="ticket 1", until=100.0, at=20.0)
        store.record_disposition("STS-07", fid, "remediated", who="ana", why="fixed", evidence_run=run, at=30.0)
        assert [(d.state, d.who) for d in store.dispositions("STS-07", fid)] == [
            ("acknowledged", "ana"), ("accepted-risk", "fso"), ("remediated", "ana")]
        assert [(e.action, e.detail) for e in store.audit_events("STS-07")] == [
            ("disposition", {"state": "acknowledged"}),
            ("disposition", {"state": "accepted-risk", "until": "1970-01-01T00:01:40.000000Z"}),
            ("disposition", {"state": "remediated", "evidence_run": run})]
        accepted = store.dispositions("STS-07", fid)[1]
        assert accepted.effective(99.9) == "accepted-risk" and accepted.effective(100.0) == "open"


def test_finishing_a_run_twice_is_refused(store_at: str) -> None:
    with open_store(store_at) as store:
        run = store.begin_run("STS-07", "analyze")
        store.finish_run(run, [])
        with pytest.raises(StateError):
            store.finish_run(run, [make_finding(1)])
        assert store.count_findings() == 0


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store import make_finding
    from cranewatch.store import open_store
    store = open_store({db!r})
    for r in range({runs}):
        findings = [make_finding(n, crane="STS-%02d" % r) for n in range({per_run})]
        store.record_run("STS-%02d" % r, "analyze", [], findings)
        time.sleep(0.05)  # leave the readers time to look between runs, even on a loaded machine
    print("done", flush=True)
    """
)


def test_concurrent_readers_never_see_half_a_run(store_at: str) -> None:
    db = store_at
    open_store(db).close()
    runs, per_run = 40, 25
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent), db=str(db), runs=runs, per_run=per_run)],
        stdout=subprocess.PIPE, text=True,
    )
    problems: list[str] = []
    observations = [0]

    def read() -> None:
        with open_store(db) as reader:
            while writer.poll() is None:
                for crane in {f"STS-{r:02d}" for r in range(runs)}:
                    done = [r for r in reader.runs(crane) if r.status == "complete"]
                    n = len(reader.findings(crane, [r.id for r in done]))
                    if n not in (0, per_run) or (done and n != per_run):
                        problems.append(f"{crane}: {len(done)} complete runs, {n} findings")
                observations[0] += 1

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    out, _ = writer.communicate(timeout=120)
    for t in readers:
        t.join()
    assert writer.returncode == 0 and out.strip() == "done"
    assert problems == []
    assert observations[0] > 3  # the readers really read while the writer wrote
    with open_store(db) as store:
        assert store.count_findings() == runs * per_run


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store import make_finding
    from cranewatch.store import open_store
    store = open_store({db!r})
    run = store.begin_run("STS-07", "analyze", [{capture!r}])
    findings = [make_finding(n) for n in range({count})]
    print("analysing", flush=True)
    time.sleep({pause})
    print("writing", flush=True)
    store.finish_run(run, findings)
    print("finished", flush=True)
    """
)


def run_until_killed(db: str, capture: Path, *, count: int, pause: float, kill_at: str, kill_after: float) -> str:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN.format(tests=str(Path(__file__).parent), db=str(db),
                                                 capture=str(capture), count=count, pause=pause)],
        stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    while (line := child.stdout.readline().strip()) != kill_at:
        assert line, "child ended before the kill point"
    time.sleep(kill_after)
    os.kill(child.pid, signal.SIGKILL)
    out = child.communicate(timeout=30)[0]
    assert child.returncode == -signal.SIGKILL
    return out


def test_a_run_killed_mid_analysis_leaves_no_findings_and_a_rerun_completes(tmp_path: Path, store_at: str) -> None:
    db, capture = store_at, tmp_path / "q.pcap"
    capture.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(100))
    open_store(db).close()
    run_until_killed(db, capture, count=50, pause=30, kill_at="analysing", kill_after=0.2)
    with open_store(db) as store:
        (killed,) = store.runs("STS-07")
        assert killed.status == "running" and killed.finished_at is None
        assert store.count_findings() == 0
        assert store.current_findings("STS-07") == []
        rerun = store.record_run("STS-07", "analyze", [capture], [make_finding(n) for n in range(50)])
        assert store.count_findings() == 50
        assert [r.id for r in store.latest_complete_runs("STS-07")] == [rerun]


def test_a_run_killed_while_writing_its_findings_leaves_all_or_nothing(tmp_path: Path, store_at: str) -> None:
    db, capture = store_at, tmp_path / "q.pcap"
    capture.write_bytes(b"capture")
    open_store(db).close()
    count = 40000  # the write transaction takes ~0.6 s on a 2-core box: the kill lands inside it
    out = run_until_killed(db, capture, count=count, pause=0, kill_at="writing", kill_after=0.02)
    assert "finished" not in out
    with open_store(db) as store:
        (run,) = store.runs("STS-07")
        assert run.status == "running"
        assert store.count_findings() == 0
        assert store.findings("STS-07", [run.id]) == []
        rerun = store.record_run("STS-07", "analyze", [capture], [make_finding(n) for n in range(50)])
        assert store.count_findings() == 50
        assert [r.id for r in store.latest_complete_runs("STS-07")] == [rerun]


def test_history_and_components_round_trip(store_at: str) -> None:
    with open_store(store_at) as store:
        crane = Crane("STS-07", maker="Harbour Heavy", model="STS-65", commissioned="2026-11-20",
                      control_vendor="CraneSoft", zone="10.20.7.0/24",
                      components=(Component("PLC", "plc", "02:00:00:07:00:10", "10.20.7.10", "4.2.1"),))
        store.add_crane(crane, who="ana", why="arrived on the quay")
        with pytest.raises(StateError, match="already registered"):
            store.add_crane(crane, who="ana", why="again")
        store.set_state("STS-07", expected="delivered", to_state="quarantined", who="ben", why="firewall up")
        with pytest.raises(StateError, match="moved meanwhile"):
            store.set_state("STS-07", expected="delivered", to_state="quarantined", who="ben", why="twice")
        got = store.crane("STS-07")
        assert got is not None and got.state == "quarantined" and got.components == crane.components
        assert [(h.who, h.from_state, h.to_state) for h in store.history("STS-07")] == [
            ("ana", None, "delivered"), ("ben", "delivered", "quarantined")]
        assert json.loads(json.dumps(got.to_json()))["components"][0]["mac"] == "02:00:00:07:00:10"


def test_a_readonly_store_reads_but_cannot_write(tmp_path: Path) -> None:
    from cranewatch.errors import EnvironmentProblem
    from cranewatch.store import MissingStore

    db = tmp_path / "cw.db"
    with pytest.raises(MissingStore, match="no such database"):
        open_store(db, readonly=True)
    with pytest.raises(MissingStore, match="no such database"):
        open_store(tmp_path / "nowhere" / "cw.db", create=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created, not even a directory
    with open_store(db) as writer:
        writer.add_crane(Crane("STS-07"), who="a", why="b")
        with open_store(db, readonly=True) as reader:
            assert [c.name for c in reader.cranes()] == ["STS-07"]
            with pytest.raises(EnvironmentProblem, match="read-only"):
                reader.add_crane(Crane("STS-08"), who="a", why="b")


def test_an_old_store_written_by_the_old_code_migrates_and_its_gate_rejects(tmp_path: Path) -> None:
    """The fixture was written by cranewatch before 0005 (see its header): safety-bypass, then
    normal-2, and that code's gate said NEEDS-REVIEW. Migrated, nothing is lost and it rejects."""
    from cranewatch.gate import decide

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript((Path(__file__).parent / "data" / "store" / "old-0004.sql").read_text())
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY seq")] == [
            m.name for m in MIGRATIONS[:4]]
    # a reader upgrades it first (the file exists: nothing is created), then reads with mode=ro
    with open_store(db, readonly=True) as reader:
        assert reader.applied_migrations() == [m.name for m in MIGRATIONS]
        runs = reader.runs("STS-07")
        assert [(r.id, r.kind, r.status, r.fingerprint, r.recordings) for r in runs] == [
            (1, "analyze", "complete", None, 1), (2, "analyze", "complete", None, 1), (3, "gate", "complete", None, 1)]
        assert len(reader.findings("STS-07", [1])) == 4 and reader.findings("STS-07", [2]) == []
        assert [h.to_state for h in reader.history("STS-07")] == ["delivered", "quarantined", "under-analysis"]
    with open_store(db) as store:
        decision = decide(store, "STS-07", who="ana", move=False)
        blocking = [r for r in decision.reasons if r.kind == "blocking-finding"]
        assert decision.decision == "rejected" and len(blocking) == 4
        assert {r.source for r in blocking} == {"quarantine traffic analysis (run 1)"}
        # runs of the old code say nothing of the hosts they saw: that is a gap, said as such
        assert any(r.kind == "evidence-gap" and "run(s) 1, 2" in r.text for r in decision.reasons)


def test_a_foreign_or_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    from cranewatch.errors import InputError

    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
    before = foreign.read_bytes()
    with pytest.raises(InputError, match=r"not a cranewatch database: it holds the tables \['customers'\]"):
        open_store(foreign)
    assert foreign.read_bytes() == before and tables(foreign) == {"customers"}
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is no SQLite file at all, " * 200)
    with pytest.raises(InputError, match="not a cranewatch database: file is not a database"):
        open_store(garbage)


def test_two_writers_take_turns_instead_of_failing(store_at: str) -> None:
    """BEGIN IMMEDIATE + busy timeout: a second writer waits for the first, nothing is lost."""
    db = store_at
    open_store(db).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent), db=str(db), runs=15, per_run=40)
             .replace('"STS-%02d" % r', f'"W{w}-%02d" % r')],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(2)
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and out.strip() == "done", err
    with open_store(db) as store:
        assert store.count_findings() == 2 * 15 * 40
        assert len(store.cranes()) == 0 and len(store.runs("W0-00")) == len(store.runs("W1-14")) == 1
