"""The SQLite store: opens and migrates the database and owns every SQL statement.

One writer: every write is one ``BEGIN IMMEDIATE`` transaction, so a writer waits for another
writer (busy timeout) instead of failing, and readers never see half a write (WAL mode lets
them read while the writer works). A run's findings are written in the transaction that marks
the run complete, so a run killed mid-analysis leaves a ``running`` row and no findings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cranewatch import __version__
from cranewatch.errors import InputError, Location, StateError, UsageError
from cranewatch.model import Finding, iso_time
from cranewatch.store.records import (
    Component,
    Crane,
    GateRecord,
    HistoryEntry,
    Run,
    RunInput,
    StoredRuleset,
)
from cranewatch.store.schema import MIGRATIONS

RUN_KINDS = ("analyze", "scan-image", "gate")
BUSY_TIMEOUT_S = 30.0


def default_db_path() -> Path:
    """``$CRANEWATCH_HOME/cranewatch.db``, else ``./.cranewatch/cranewatch.db``."""
    home = os.environ.get("CRANEWATCH_HOME")
    base = Path(home) if home else Path.cwd() / ".cranewatch"
    return base / "cranewatch.db"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_input(path: str | Path) -> RunInput:
    """sha256 of a file; of a directory tree, sha256 over its sorted (path, file sha256) list."""
    p = Path(path)
    if p.is_file():
        return RunInput(str(p), file_sha256(p), p.stat().st_size)
    if p.is_dir():
        digest = hashlib.sha256()
        size = 0
        for child in sorted(c for c in p.rglob("*") if c.is_file() and not c.is_symlink()):
            rel = child.relative_to(p).as_posix()
            digest.update(f"{rel}\0{file_sha256(child)}\n".encode())
            size += child.stat().st_size
        return RunInput(str(p), digest.hexdigest(), size)
    raise InputError("input to record does not exist or is not a file", Location(file=str(p)))


class Store:
    """A cranewatch database. Use ``open_store(path)``; close with ``close()`` or ``with``."""

    def __init__(self, path: str | Path, *, migrate: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                # a reader (the web dashboard) can never write, whatever the code asks
                if not self.path.is_file():
                    raise InputError("no cranewatch database here yet", Location(file=str(self.path)))
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                           check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per write
                self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"not a cranewatch database: {exc}", Location(file=str(self.path))) from None
        self._db.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.row_factory = sqlite3.Row
        if migrate and not readonly:
            self.migrate()

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front (one writer)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    def applied_migrations(self) -> list[str]:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
        ).fetchone()
        if not exists:
            return []
        return [r["name"] for r in self._db.execute("SELECT name FROM schema_migrations ORDER BY seq")]

    def migrate(self, upto: int | None = None) -> list[str]:
        """Apply the missing migrations (the first ``upto`` only, if given); return their names."""
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "seq INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, applied_at REAL NOT NULL)"
        )
        wanted = MIGRATIONS if upto is None else MIGRATIONS[:upto]
        known = {m.name for m in MIGRATIONS}
        applied_now: list[str] = []
        for seq, migration in enumerate(wanted, start=1):
            with self._write() as db:
                # re-check inside the write lock: another process may have migrated meanwhile
                done = {r["name"] for r in db.execute("SELECT name FROM schema_migrations")}
                unknown = done - known
                if unknown:
                    raise UsageError(
                        f"database was written by a newer cranewatch (migrations {sorted(unknown)})",
                        Location(file=str(self.path)),
                    )
                if migration.name in done:
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations(seq, name, applied_at) VALUES (?, ?, ?)",
                    (seq, migration.name, time.time()),
                )
                applied_now.append(migration.name)
        return applied_now

    # -- cranes and their life cycle ----------------------------------------------------------

    def add_crane(self, crane: Crane, *, who: str, why: str, at: float | None = None) -> Crane:
        """Register a new crane in state ``crane.state`` and record that as its first history step."""
        now = time.time() if at is None else at
        with self._write() as db:
            if db.execute("SELECT 1 FROM cranes WHERE name=?", (crane.name,)).fetchone():
                raise StateError(f"crane {crane.name} is already registered")
            db.execute(
                "INSERT INTO cranes(name, maker, model, commissioned, control_vendor, profile_path,"
                " zone, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (crane.name, crane.maker, crane.model, crane.commissioned, crane.control_vendor,
                 crane.profile_path, crane.zone, crane.state, now),
            )
            self._write_components(db, crane.name, crane.components)
            db.execute(
                "INSERT INTO crane_history(crane, at, who, why, from_state, to_state)"
                " VALUES (?, ?, ?, ?, NULL, ?)",
                (crane.name, now, who, why, crane.state),
            )
        stored = self.crane(crane.name)
        assert stored is not None
        return stored

    def update_crane_facts(self, crane: Crane) -> Crane:
        """Replace a registered crane's facts and components; its state and history stay."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE cranes SET maker=?, model=?, commissioned=?, control_vendor=?,"
                " profile_path=?, zone=? WHERE name=?",
                (crane.maker, crane.model, crane.commissioned, crane.control_vendor,
                 crane.profile_path, crane.zone, crane.name),
            )
            if cur.rowcount == 0:
                raise StateError(f"crane {crane.name} is not registered")
            db.execute("DELETE FROM crane_components WHERE crane=?", (crane.name,))
            self._write_components(db, crane.name, crane.components)
        stored = self.crane(crane.name)
        assert stored is not None
        return stored

    @staticmethod
    def _write_components(db: sqlite3.Connection, crane: str, parts: Sequence[Component]) -> None:
        db.executemany(
            "INSERT INTO crane_components(crane, name, kind, mac, ip, firmware) VALUES (?, ?, ?, ?, ?, ?)",
            [(crane, c.name, c.kind, c.mac, c.ip, c.firmware) for c in parts],
        )

    def crane(self, name: str) -> Crane | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM cranes WHERE name=?", (name,)).fetchone()
            if row is None:
                return None
            parts = db.execute(
                "SELECT * FROM crane_components WHERE crane=? ORDER BY name", (name,)
            ).fetchall()
        return _crane_from_row(row, parts)

    def cranes(self) -> list[Crane]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM cranes ORDER BY name").fetchall()
            parts = db.execute("SELECT * FROM crane_components ORDER BY crane, name").fetchall()
        by_crane: dict[str, list[sqlite3.Row]] = {}
        for part in parts:
            by_crane.setdefault(part["crane"], []).append(part)
        return [_crane_from_row(r, by_crane.get(r["name"], [])) for r in rows]

    def set_state(
        self, name: str, *, expected: str, to_state: str, who: str, why: str, at: float | None = None
    ) -> HistoryEntry:
        """Move a crane from ``expected`` to ``to_state`` and record it, atomically.

        The life-cycle rules are checked by ``cranewatch.fleet``; this only refuses when the
        crane is no longer in ``expected`` (someone else moved it meanwhile).
        """
        now = time.time() if at is None else at
        with self._write() as db:
            row = db.execute("SELECT state FROM cranes WHERE name=?", (name,)).fetchone()
            if row is None:
                raise StateError(f"crane {name} is not registered")
            if row["state"] != expected:
                raise StateError(f"crane {name} is {row['state']}, not {expected} (moved meanwhile)")
            db.execute("UPDATE cranes SET state=? WHERE name=?", (to_state, name))
            db.execute(
                "INSERT INTO crane_history(crane, at, who, why, from_state, to_state)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, now, who, why, expected, to_state),
            )
        return HistoryEntry(name, now, who, why, expected, to_state)

    def history(self, name: str) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT * FROM crane_history WHERE crane=? ORDER BY seq", (name,)
        ).fetchall()
        return [
            HistoryEntry(r["crane"], r["at"], r["who"], r["why"], r["from_state"], r["to_state"])
            for r in rows
        ]

    # -- analysis runs and findings -----------------------------------------------------------

    def begin_run(
        self,
        crane: str,
        kind: str,
        inputs: Iterable[str | Path | RunInput] = (),
        *,
        component: str | None = None,
        tool_version: str = __version__,
    ) -> int:
        """Record that a run started (status ``running``) with its hashed inputs; return its id."""
        if kind not in RUN_KINDS:
            raise UsageError(f"unknown run kind {kind!r} (expected {'|'.join(RUN_KINDS)})")
        hashed = [i if isinstance(i, RunInput) else hash_input(i) for i in inputs]
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs(crane, kind, component, tool_version, started_at, status)"
                " VALUES (?, ?, ?, ?, ?, 'running')",
                (crane, kind, component, tool_version, time.time()),
            )
            run_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT OR REPLACE INTO run_inputs(run_id, path, sha256, size) VALUES (?, ?, ?, ?)",
                [(run_id, i.path, i.sha256, i.size) for i in hashed],
            )
        return run_id

    def finish_run(
        self,
        run_id: int,
        findings: Iterable[Finding],
        *,
        artifacts: dict[str, str] | None = None,
        note: str | None = None,
    ) -> None:
        """Write a run's findings, its artifacts (e.g. ``sbom``) and mark it complete: one transaction.

        A finding is keyed by (crane, id): seen again, it keeps the earliest ``first_seen`` and
        the latest ``last_seen``; ``count`` and the rest come from this (the latest) run.
        """
        items = list(findings)
        with self._write() as db:
            run = db.execute("SELECT crane, status FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None:
                raise StateError(f"no run {run_id}")
            if run["status"] != "running":
                raise StateError(f"run {run_id} is already {run['status']}")
            crane = run["crane"]
            for f in items:
                db.execute(_UPSERT_FINDING, _finding_row(crane, f))
            db.executemany(
                "INSERT OR REPLACE INTO run_findings(run_id, crane, finding_id, count) VALUES (?, ?, ?, ?)",
                [(run_id, crane, f.id, f.count) for f in items],
            )
            if artifacts:
                db.executemany(
                    "INSERT OR REPLACE INTO run_artifacts(run_id, name, content) VALUES (?, ?, ?)",
                    [(run_id, k, v) for k, v in sorted(artifacts.items())],
                )
            db.execute(
                "UPDATE runs SET status='complete', finished_at=?, note=? WHERE id=?",
                (time.time(), note, run_id),
            )

    def fail_run(self, run_id: int, note: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status='failed', finished_at=?, note=? WHERE id=? AND status='running'",
                (time.time(), note, run_id),
            )

    def record_run(
        self,
        crane: str,
        kind: str,
        inputs: Iterable[str | Path | RunInput],
        findings: Iterable[Finding],
        *,
        component: str | None = None,
        artifacts: dict[str, str] | None = None,
        tool_version: str = __version__,
    ) -> int:
        """``begin_run`` + ``finish_run`` for a result already computed (e.g. a ScanResult)."""
        run_id = self.begin_run(crane, kind, inputs, component=component, tool_version=tool_version)
        self.finish_run(run_id, findings, artifacts=artifacts)
        return run_id

    def runs(self, crane: str, kind: str | None = None) -> list[Run]:
        with self._read() as db:
            if kind is None:
                rows = db.execute("SELECT * FROM runs WHERE crane=? ORDER BY id", (crane,)).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM runs WHERE crane=? AND kind=? ORDER BY id", (crane, kind)
                ).fetchall()
            inputs = db.execute(
                "SELECT i.* FROM run_inputs i JOIN runs r ON r.id=i.run_id WHERE r.crane=?"
                " ORDER BY i.run_id, i.path",
                (crane,),
            ).fetchall()
        by_run: dict[int, list[RunInput]] = {}
        for i in inputs:
            by_run.setdefault(i["run_id"], []).append(RunInput(i["path"], i["sha256"], i["size"]))
        return [
            Run(r["id"], r["crane"], r["kind"], r["component"], r["tool_version"], r["started_at"],
                r["finished_at"], r["status"], r["note"], tuple(by_run.get(r["id"], [])))
            for r in rows
        ]

    def latest_complete_runs(self, crane: str) -> list[Run]:
        """The newest complete analysis run of each (kind, component): the evidence that counts now."""
        latest: dict[tuple[str, str | None], Run] = {}
        for run in self.runs(crane):
            if run.kind != "gate" and run.status == "complete":
                latest[(run.kind, run.component)] = run
        return sorted(latest.values(), key=lambda r: r.id)

    def run_artifact(self, run_id: int, name: str) -> str | None:
        row = self._db.execute(
            "SELECT content FROM run_artifacts WHERE run_id=? AND name=?", (run_id, name)
        ).fetchone()
        return None if row is None else str(row["content"])

    def findings(self, crane: str, run_ids: Sequence[int] | None = None) -> list[Finding]:
        """Stored findings of a crane (all, or those linked to the given runs), most severe first."""
        if run_ids is None:
            rows = self._db.execute("SELECT * FROM findings WHERE crane=?", (crane,)).fetchall()
        else:
            marks = ",".join("?" * len(run_ids)) or "NULL"
            rows = self._db.execute(
                f"SELECT DISTINCT f.* FROM findings f JOIN run_findings l"
                f" ON l.crane=f.crane AND l.finding_id=f.id WHERE f.crane=? AND l.run_id IN ({marks})",
                (crane, *run_ids),
            ).fetchall()
        found = [_finding_from_row(r) for r in rows]
        return sorted(found, key=lambda f: (-int(f.severity), f.category, f.id))

    def current_findings(self, crane: str) -> list[Finding]:
        """Findings of the latest complete run of each kind and component."""
        return self.findings(crane, [r.id for r in self.latest_complete_runs(crane)])

    def count_findings(self, crane: str | None = None) -> int:
        if crane is None:
            return int(self._db.execute("SELECT count(*) FROM findings").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM findings WHERE crane=?", (crane,)).fetchone()[0])

    # -- gate decisions -----------------------------------------------------------------------

    def record_gate(
        self,
        crane: str,
        decision: str,
        reasons: Sequence[dict[str, Any]],
        policy: dict[str, Any],
        *,
        who: str,
        run_id: int | None = None,
    ) -> GateRecord:
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO gate_decisions(crane, run_id, at, who, decision, reasons, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (crane, run_id, now, who, decision, json.dumps(list(reasons)), json.dumps(policy)),
            )
        return GateRecord(crane, now, who, decision, tuple(reasons), policy, run_id)

    def gate_decisions(self, crane: str) -> list[GateRecord]:
        rows = self._db.execute(
            "SELECT * FROM gate_decisions WHERE crane=? ORDER BY seq", (crane,)
        ).fetchall()
        return [
            GateRecord(r["crane"], r["at"], r["who"], r["decision"], tuple(json.loads(r["reasons"])),
                       json.loads(r["policy"]), r["run_id"])
            for r in rows
        ]

    def latest_gate(self, crane: str) -> GateRecord | None:
        decisions = self.gate_decisions(crane)
        return decisions[-1] if decisions else None

    # -- firewall rulesets --------------------------------------------------------------------

    def record_ruleset(self, crane: str, purpose: str, text: str, *, who: str) -> StoredRuleset:
        digest = hashlib.sha256(text.encode()).hexdigest()
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO rulesets(crane, purpose, at, who, sha256, text) VALUES (?, ?, ?, ?, ?, ?)",
                (crane, purpose, now, who, digest, text),
            )
        return StoredRuleset(crane, purpose, now, who, digest, text)

    def latest_ruleset(self, crane: str, purpose: str | None = None) -> StoredRuleset | None:
        """The newest ruleset of the crane (of one purpose, if given)."""
        query = "SELECT * FROM rulesets WHERE crane=?" + (" AND purpose=?" if purpose else "")
        params = (crane, purpose) if purpose else (crane,)
        row = self._db.execute(query + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        return StoredRuleset(row["crane"], row["purpose"], row["at"], row["who"], row["sha256"], row["text"])


_UPSERT_FINDING = """
INSERT INTO findings(crane, id, rule, category, severity, title, first_seen, last_seen, count,
                     src, dst, technique, evidence, remedy)
VALUES (:crane, :id, :rule, :category, :severity, :title, :first_seen, :last_seen, :count,
        :src, :dst, :technique, :evidence, :remedy)
ON CONFLICT(crane, id) DO UPDATE SET
    rule=excluded.rule, category=excluded.category, severity=excluded.severity,
    title=excluded.title,
    first_seen=min(coalesce(findings.first_seen, excluded.first_seen),
                   coalesce(excluded.first_seen, findings.first_seen)),
    last_seen=max(coalesce(findings.last_seen, excluded.last_seen),
                  coalesce(excluded.last_seen, findings.last_seen)),
    count=excluded.count, src=excluded.src, dst=excluded.dst, technique=excluded.technique,
    evidence=excluded.evidence, remedy=excluded.remedy
"""


def _finding_row(crane: str, f: Finding) -> dict[str, Any]:
    obj = f.to_json()
    return {
        "crane": crane,  # the run says whose finding it is (a detector may leave crane unset)
        "id": f.id,
        "rule": f.rule,
        "category": f.category,
        "severity": str(f.severity),
        "title": f.title,
        "first_seen": f.first_seen,
        "last_seen": f.last_seen,
        "count": f.count,
        "src": f.src,
        "dst": f.dst,
        "technique": json.dumps(obj["technique"]),
        "evidence": json.dumps(obj["evidence"], sort_keys=True),
        "remedy": f.remedy,
    }


def _finding_from_row(row: sqlite3.Row) -> Finding:
    return Finding.from_json(
        {
            "id": row["id"],
            "rule": row["rule"],
            "category": row["category"],
            "severity": row["severity"],
            "crane": row["crane"],
            "title": row["title"],
            "first_seen": iso_time(row["first_seen"]),
            "last_seen": iso_time(row["last_seen"]),
            "count": row["count"],
            "src": row["src"],
            "dst": row["dst"],
            "technique": json.loads(row["technique"]),
            "evidence": json.loads(row["evidence"]),
            "remedy": row["remedy"],
        }
    )


def _crane_from_row(row: sqlite3.Row, parts: Iterable[sqlite3.Row]) -> Crane:
    return Crane(
        name=row["name"],
        maker=row["maker"],
        model=row["model"],
        commissioned=row["commissioned"],
        control_vendor=row["control_vendor"],
        profile_path=row["profile_path"],
        zone=row["zone"],
        components=tuple(
            Component(p["name"], p["kind"], p["mac"], p["ip"], p["firmware"]) for p in parts
        ),
        state=row["state"],
        created_at=row["created_at"],
    )


def open_store(path: str | Path | None = None, *, readonly: bool = False) -> Store:
    """Open (creating and migrating as needed) the store at ``path`` or the default location.

    ``readonly`` opens an existing database for reading only (SQLite ``mode=ro``).
    """
    return Store(default_db_path() if path is None else path, readonly=readonly)
