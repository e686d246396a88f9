"""The store: its API over an SQLite file, and every SQL statement (which PostgreSQL takes too).

``Store`` is the API; ``Store(url)`` of a ``postgresql://`` URL is a ``postgres.PostgresStore``,
which changes only how it connects, locks, reads the catalogue and names its errors.

One writer: every write is one ``BEGIN IMMEDIATE`` transaction, so a writer waits for another
writer (busy timeout) instead of failing, and readers never see half a write (WAL mode lets
them read while the writer works). A run's findings are written in the transaction that marks
the run complete, so a run killed mid-analysis leaves a ``running`` row and no findings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cranewatch import __version__
from cranewatch.errors import (
    CranewatchError,
    EnvironmentProblem,
    InputError,
    Location,
    StateError,
    UsageError,
)
from cranewatch.incidents import Incident
from cranewatch.model import Finding, iso_time
from cranewatch.store.console import ConsoleQueries
from cranewatch.store.dialect import Connection, Row, is_postgres_url, redact_url, statements_for
from cranewatch.store.records import (
    COUNTING_STATES,
    FINDING_STATES,
    AuditEvent,
    Component,
    Coverage,
    Crane,
    Disposition,
    GateRecord,
    HistoryEntry,
    Run,
    RunInput,
    Session,
    StoredRuleset,
    User,
)
from cranewatch.store.schema import AUDIT_ACTIONS, MIGRATIONS, SCHEMA_MIGRATIONS_TABLE, USER_ROLES

RUN_KINDS = ("analyze", "scan-image", "gate")
BUSY_TIMEOUT_S = 30.0


def default_db_path() -> Path:
    """``$CRANEWATCH_HOME/cranewatch.db``, else ``./.cranewatch/cranewatch.db``."""
    home = os.environ.get("CRANEWATCH_HOME")
    base = Path(home) if home else Path.cwd() / ".cranewatch"
    return base / "cranewatch.db"


def default_store() -> str | Path:
    """The store when ``--db`` is not given: ``$CRANEWATCH_DB`` (a file or a ``postgresql://``
    URL), else ``default_db_path()``."""
    named = os.environ.get("CRANEWATCH_DB")
    return named if named else default_db_path()


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


class MissingStore(UsageError):
    """The named store does not exist (and this command does not create one)."""

    def __init__(self, path: str | Path) -> None:
        where = redact_url(str(path)) if is_postgres_url(path) else str(path)
        super().__init__(
            "no such database: no cranewatch store here (register a crane first with "
            f"`cranewatch fleet add NAME --db {where}`, or point --db, $CRANEWATCH_DB or "
            "$CRANEWATCH_HOME at the store)",
            Location(file=where),
        )


# primary SQLite result codes that are the machine's fault, not the database's, and what they mean
_ENVIRONMENT_CODES = {
    3: "permission denied",
    5: "the database is locked by another writer (busy timeout passed)",
    6: "the database is locked",
    8: "the store is read-only (file, directory or filesystem): cannot write",
    10: "disk I/O error",
    13: "the disk is full: cannot write",
    14: "the store file cannot be opened (missing directory or no permission)",
}
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def store_error(exc: sqlite3.Error, path: Path) -> CranewatchError | None:
    """The cranewatch error an SQLite failure stands for, naming its cause; None for a bug.

    An OS fault (read-only, full disk, I/O error, no permission) exits 4 and says so; only a
    file SQLite itself rejects as no database is called "not a cranewatch database".
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    where = Location(file=str(path))
    if primary in _ENVIRONMENT_CODES:
        return EnvironmentProblem(f"{_os_cause(path) or _ENVIRONMENT_CODES[primary]} ({exc})", where)
    if primary == _SQLITE_NOTADB:
        return InputError(f"not a cranewatch database: {exc}", where)
    if primary == _SQLITE_CORRUPT:
        return InputError(f"the cranewatch database is corrupt: {exc}", where)
    return None


def _os_cause(path: Path) -> str | None:
    """What the filesystem says is wrong with the store's place, when SQLite cannot tell
    (it reports a full disk or a read-only mount as "unable to open" or "I/O error")."""
    where = path if path.exists() else path.parent
    try:
        fs = os.statvfs(where)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "the store's filesystem is mounted read-only: cannot write"
    if fs.f_bavail == 0:
        return "the disk is full: cannot write"
    if path.exists() and not os.access(path, os.W_OK):
        return "the store file is read-only: cannot write"
    if not os.access(path.parent, os.W_OK):
        return "the store's directory is read-only: cannot write"
    return None


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turn SQLite and OS failures into located cranewatch errors (exit 3 or 4), bugs aside."""
    try:
        yield
    except sqlite3.Error as exc:
        mapped = store_error(exc, path)
        if mapped is None:
            raise
        raise mapped from exc
    except OSError as exc:
        raise EnvironmentProblem(f"cannot use the store: {exc.strerror or exc}", Location(file=str(path))) from exc


class Store(ConsoleQueries):
    """A cranewatch database. Use ``open_store(path)``; close with ``close()`` or ``with``.

    ``readonly`` opens an existing database with SQLite ``mode=ro`` (it can never write);
    ``create=False`` refuses a path where no database exists yet instead of creating one.
    """

    dialect = "sqlite"
    _db: Connection

    def __new__(cls, path: str | Path, **_options: Any) -> Store:
        # a ``postgresql://`` URL names the central store: the same API over PostgreSQL
        if cls is Store and is_postgres_url(path):
            from cranewatch.store.postgres import PostgresStore

            return super().__new__(PostgresStore)
        return super().__new__(cls)

    def __init__(self, path: str | Path, *, migrate: bool = True, readonly: bool = False,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.where = str(self.path)  # how errors and messages name the store
        self.readonly = readonly
        if (readonly or not create) and not self.path.is_file():
            raise MissingStore(self.path)
        self._open_or_close(migrate)

    def _open_or_close(self, migrate: bool) -> None:
        """Open (and migrate); a store that fails half-way closes what it opened."""
        try:
            self._open(migrate)
        except BaseException:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise

    def _open(self, migrate: bool) -> None:
        readonly = self.readonly
        with self._translated():
            if readonly:
                if migrate:
                    self._upgrade_before_reading()
                # a reader (the dashboard, report, fleet show) can never write, whatever the code asks
                self._db = db = self._connect_readonly()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per write
                self._db = db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
                self._refuse_foreign()  # before WAL mode, which would already change the file
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            if migrate and not readonly:
                self.migrate()

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        if os.statvfs(self.path).f_flag & os.ST_RDONLY:
            # on a read-only mount nobody can write it, and a WAL database could not be opened
            # otherwise (its shared-memory file cannot be made): read it as the immutable file it is
            uri += "&immutable=1"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)

    def _upgrade_before_reading(self) -> None:
        """A store written by an older cranewatch is migrated (it exists: nothing is created)
        before a reader opens it, so read-side commands find today's schema."""
        probe = self._connect_readonly()
        try:
            probe.row_factory = sqlite3.Row
            done = _applied(probe)
            tables = _user_tables(probe)
        finally:
            probe.close()
        if not tables:
            raise InputError("not a cranewatch database: it is empty (no cranewatch schema to read)",
                             Location(file=str(self.path)))
        self._upgrade_for_reader(done)

    def _upgrade_for_reader(self, done: Sequence[str]) -> None:
        if done and set(done) >= {m.name for m in MIGRATIONS}:
            return
        try:
            Store(self._target(), create=False).close()
        except EnvironmentProblem as exc:
            raise EnvironmentProblem(f"the store was written by an older cranewatch and needs its schema "
                                     f"upgraded, which it cannot be: {exc.message}", exc.location) from None

    def _target(self) -> str | Path:
        """What to open this store again with (a path, or the URL with its password)."""
        return self.path

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        """Database and OS failures as located cranewatch errors (exit 3 or 4), bugs aside."""
        return _translated(self.path)

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction that holds the one writer's lock from its start (SQLite's
        BEGIN IMMEDIATE; PostgreSQL's transaction advisory lock)."""
        with self._translated():
            self._begin_write()
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _begin_write(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A consistent snapshot for several SELECTs."""
        with self._translated():
            self._db.execute(self._begin_read_sql)
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    _begin_read_sql = "BEGIN"

    def applied_migrations(self) -> list[str]:
        with self._translated():
            return _applied(self._db)

    def migrate(self, upto: int | None = None) -> list[str]:
        """Apply the missing migrations (the first ``upto`` only, if given); return their names."""
        with self._translated():
            return self._migrate(upto)

    def _refuse_foreign(self) -> None:
        """A database that holds tables but no cranewatch schema is some other program's."""
        foreign = _user_tables(self._db) - {"schema_migrations"}
        if foreign and not _applied(self._db):
            raise InputError(f"not a cranewatch database: it holds the tables {sorted(foreign)[:5]} "
                             "but no cranewatch schema", Location(file=self.where))

    def _migrate(self, upto: int | None) -> list[str]:
        wanted = MIGRATIONS if upto is None else MIGRATIONS[:upto]
        known = {m.name for m in MIGRATIONS}
        done = set(self.applied_migrations())
        if done - known:
            raise UsageError(f"database was written by a newer cranewatch (migrations {sorted(done - known)})",
                             Location(file=self.where))
        if all(m.name in done for m in wanted):
            return []  # nothing to write: a role that may only read opens an up-to-date store too
        with self._write() as db:
            db.execute(statements_for(SCHEMA_MIGRATIONS_TABLE, self.dialect)[0])
        applied_now: list[str] = []
        for seq, migration in enumerate(wanted, start=1):
            with self._write() as db:
                # re-check inside the write lock: another process may have migrated meanwhile
                done = {r["name"] for r in db.execute("SELECT name FROM schema_migrations")}
                unknown = done - known
                if unknown:
                    raise UsageError(
                        f"database was written by a newer cranewatch (migrations {sorted(unknown)})",
                        Location(file=self.where),
                    )
                if migration.name in done:
                    continue
                for statement in statements_for(migration, self.dialect):
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
    def _write_components(db: Connection, crane: str, parts: Sequence[Component]) -> None:
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
        by_crane: dict[str, list[Row]] = {}
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
        with self._read() as db:
            rows = db.execute("SELECT * FROM crane_history WHERE crane=? ORDER BY seq", (name,)).fetchall()
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
        options: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> int:
        """Record that a run started (status ``running``) with its hashed inputs; return its id.

        ``options`` are what shaped the result besides the inputs (e.g. a reference image); with
        the inputs' sha256 they make the run's fingerprint: a complete run recorded again with the
        same fingerprint replaces the earlier one when it completes (see ``finish_run``).
        """
        if kind not in RUN_KINDS:
            raise UsageError(f"unknown run kind {kind!r} (expected {'|'.join(RUN_KINDS)})")
        hashed = [i if isinstance(i, RunInput) else hash_input(i) for i in inputs]
        opts = dict(options or {})
        fingerprint = run_fingerprint(kind, component, hashed, opts) if kind != "gate" else None
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs(crane, kind, component, tool_version, started_at, status, fingerprint,"
                " options, recorded_by) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?) RETURNING id",
                (crane, kind, component, tool_version, time.time(), fingerprint,
                 json.dumps(opts, sort_keys=True), who),
            )
            run_id = int(cur.fetchone()[0])
            db.executemany(
                _PUT_INPUT,
                [(run_id, i.path, i.sha256, i.size, input_location(i.path)) for i in hashed],
            )
        return run_id

    def finish_run(
        self,
        run_id: int,
        findings: Iterable[Finding],
        *,
        artifacts: dict[str, str] | None = None,
        note: str | None = None,
        coverage: Coverage | None = None,
        inputs: Sequence[RunInput] | None = None,
        options: dict[str, Any] | None = None,
        incidents: Iterable[Incident] = (),
    ) -> int:
        """Write a run's findings, its artifacts (e.g. ``sbom``) and mark it complete: one transaction.

        ``inputs`` and ``options``, when given, restate what the run read and how, as known only
        at its end (e.g. the reference image a scan also read); the fingerprint follows them.

        Returns the id the run is kept under: when a complete run with the same fingerprint (same
        input digests, kind, component and options) exists and is not superseded, that run is
        replaced in place — same id, this recording's findings, artifacts and times, one more
        recording — the placeholder row goes, and the replacement is an audit event.

        A finding is keyed by (crane, id): seen again, it keeps the earliest ``first_seen`` and
        the latest ``last_seen``; ``count`` and the rest come from this (the latest) recording.
        A finding remediated on the evidence of an earlier-or-this run that this run sees again
        is reopened, recorded as a disposition by cranewatch. ``incidents`` (of these findings)
        are kept the same way by (crane, id), the latest recording's record winning.
        """
        items = list(findings)
        grouped = list(incidents)
        arts = dict(artifacts or {})
        if coverage is not None:
            arts["coverage"] = json.dumps(coverage.to_json(), sort_keys=True)
        now = time.time()
        with self._write() as db:
            run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None:
                raise StateError(f"no run {run_id}")
            if run["status"] != "running":
                raise StateError(f"run {run_id} is already {run['status']}")
            crane = run["crane"]
            if inputs is not None or options is not None:
                run = self._restate_run(db, run, inputs, options)
            kept = self._replaced_run(db, run, now)
            source = finding_source(run["kind"], run["component"])
            db.executemany(_UPSERT_FINDING, [_finding_row(crane, f, source) for f in items])
            db.executemany(
                "INSERT INTO run_findings(run_id, crane, finding_id, count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(run_id, finding_id) DO UPDATE SET crane=excluded.crane, count=excluded.count",
                [(kept, crane, f.id, f.count) for f in items],
            )
            db.executemany(_UPSERT_INCIDENT, [_incident_row(crane, n) for n in grouped])
            db.executemany(
                "INSERT INTO run_incidents(run_id, crane, incident_id) VALUES (?, ?, ?)"
                " ON CONFLICT(run_id, incident_id) DO UPDATE SET crane=excluded.crane",
                [(kept, crane, n.id) for n in grouped],
            )
            if arts:
                db.executemany(
                    "INSERT INTO run_artifacts(run_id, name, content) VALUES (?, ?, ?)"
                    " ON CONFLICT(run_id, name) DO UPDATE SET content=excluded.content",
                    [(kept, k, v) for k, v in sorted(arts.items())],
                )
            db.execute("UPDATE runs SET status='complete', finished_at=?, note=? WHERE id=?", (now, note, kept))
            self._reopen_seen_again(db, crane, kept, [f.id for f in items], now)
        return kept

    @staticmethod
    def _restate_run(db: Connection, run: Row, inputs: Sequence[RunInput] | None,
                     options: dict[str, Any] | None) -> Row:
        if inputs is not None:
            db.execute("DELETE FROM run_inputs WHERE run_id=?", (run["id"],))
            db.executemany(_PUT_INPUT,
                           [(run["id"], i.path, i.sha256, i.size, input_location(i.path)) for i in inputs])
        opts = json.loads(run["options"]) if options is None else dict(options)
        stated = [RunInput(r["path"], r["sha256"], r["size"])
                  for r in db.execute("SELECT * FROM run_inputs WHERE run_id=?", (run["id"],))]
        fingerprint = run_fingerprint(run["kind"], run["component"], stated, opts) if run["kind"] != "gate" else None
        db.execute("UPDATE runs SET options=?, fingerprint=? WHERE id=?",
                   (json.dumps(opts, sort_keys=True), fingerprint, run["id"]))
        row: Row = db.execute("SELECT * FROM runs WHERE id=?", (run["id"],)).fetchone()
        return row

    @staticmethod
    def _replaced_run(db: Connection, run: Row, now: float) -> int:
        """The id the finishing ``run`` is kept under: an earlier complete run with its fingerprint
        (emptied, to be filled with this recording), else its own."""
        if run["fingerprint"] is None:
            return int(run["id"])
        old = db.execute(
            "SELECT * FROM runs WHERE crane=? AND fingerprint=? AND status='complete'"
            " AND superseded_at IS NULL AND id != ? ORDER BY id LIMIT 1",
            (run["crane"], run["fingerprint"], run["id"]),
        ).fetchone()
        if old is None:
            return int(run["id"])
        before = db.execute("SELECT count(*) FROM run_findings WHERE run_id=?", (old["id"],)).fetchone()[0]
        for table in ("run_findings", "run_incidents", "run_artifacts", "run_inputs"):
            db.execute(f"DELETE FROM {table} WHERE run_id=?", (old["id"],))
        db.execute("UPDATE run_inputs SET run_id=? WHERE run_id=?", (old["id"], run["id"]))
        db.execute(
            "UPDATE runs SET tool_version=?, started_at=?, recorded_by=?, recordings=recordings+1,"
            " status='running' WHERE id=?",
            (run["tool_version"], run["started_at"], run["recorded_by"], old["id"]),
        )
        db.execute("DELETE FROM runs WHERE id=?", (run["id"],))
        _audit(db, run["crane"], now, run["recorded_by"] or "cranewatch", "re-record", f"run {old['id']}",
               "the same inputs recorded again with the same options: the run is replaced, not duplicated",
               {"run": old["id"], "recording": old["recordings"] + 1, "findings_before": before,
                "fingerprint": run["fingerprint"]})
        return int(old["id"])

    @staticmethod
    def _reopen_seen_again(db: Connection, crane: str, run_id: int, ids: Sequence[str],
                           now: float) -> None:
        remediated = {r["finding_id"]: r["evidence_run"] for r in db.execute(
            "SELECT d.finding_id, d.evidence_run FROM finding_dispositions d WHERE d.crane=? AND d.state='remediated'"
            " AND d.seq=(SELECT max(seq) FROM finding_dispositions WHERE crane=d.crane AND finding_id=d.finding_id)",
            (crane,))}
        for finding_id in ids:
            evidence = remediated.get(finding_id)
            if evidence is None or run_id < evidence:
                continue
            why = f"seen again in run {run_id} after its remediation (evidence run {evidence})"
            _dispose(db, crane, finding_id, "open", now, "cranewatch", why, None, None, action="reopen")

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
        options: dict[str, Any] | None = None,
        coverage: Coverage | None = None,
        who: str | None = None,
        note: str | None = None,
        incidents: Iterable[Incident] = (),
    ) -> int:
        """``begin_run`` + ``finish_run`` for a result already computed (e.g. a ScanResult)."""
        run_id = self.begin_run(crane, kind, inputs, component=component, tool_version=tool_version,
                                options=options, who=who)
        return self.finish_run(run_id, findings, artifacts=artifacts, coverage=coverage, note=note,
                               incidents=incidents)

    def runs(self, crane: str, kind: str | None = None) -> list[Run]:
        """Every run of the crane (superseded ones too), oldest first."""
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
        return [_run_from_row(r, by_run.get(r["id"], [])) for r in rows]

    def run(self, run_id: int) -> Run | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return None
            inputs = db.execute("SELECT * FROM run_inputs WHERE run_id=? ORDER BY path", (run_id,)).fetchall()
        return _run_from_row(row, [RunInput(i["path"], i["sha256"], i["size"]) for i in inputs])

    def latest_complete_runs(self, crane: str) -> list[Run]:
        """The newest complete, not superseded analysis run of each (kind, component)."""
        latest: dict[tuple[str, str | None], Run] = {}
        for run in self.runs(crane):
            if run.kind != "gate" and run.status == "complete" and not run.superseded:
                latest[(run.kind, run.component)] = run
        return sorted(latest.values(), key=lambda r: r.id)

    def supersede_run(self, run_id: int, *, who: str, why: str, at: float | None = None) -> Run:
        """Set a run aside (it stays, visible, with who, when and why): it no longer counts as
        evidence that exists, nor as remediation evidence; its findings stay until disposed of.
        Findings remediated on its evidence are reopened."""
        if not why.strip():
            raise UsageError("say why the run is superseded (--reason)")
        now = time.time() if at is None else at
        with self._write() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StateError(f"no run {run_id}")
            if row["kind"] == "gate":
                raise StateError(f"run {run_id} is a gate decision, not evidence: it cannot be superseded")
            if row["superseded_at"] is not None:
                raise StateError(f"run {run_id} was already superseded by {row['superseded_by']} "
                                 f"({iso_time(row['superseded_at'])}): {row['superseded_reason']}")
            db.execute("UPDATE runs SET superseded_at=?, superseded_by=?, superseded_reason=? WHERE id=?",
                       (now, who, why, run_id))
            crane = row["crane"]
            _audit(db, crane, now, who, "supersede", f"run {run_id}", why,
                   {"run": run_id, "kind": row["kind"], "component": row["component"]})
            resting = db.execute(
                "SELECT DISTINCT finding_id FROM finding_dispositions WHERE crane=? AND evidence_run=?",
                (crane, run_id),
            ).fetchall()
            for r in resting:
                last = _latest_disposition_row(db, crane, r[0])
                if last is not None and last["state"] == "remediated" and last["evidence_run"] == run_id:
                    _dispose(db, crane, r[0], "open", now, "cranewatch",
                             f"its remediation evidence, run {run_id}, was superseded", None, None,
                             action="reopen")
        stored = self.run(run_id)
        assert stored is not None
        return stored

    def run_artifact(self, run_id: int, name: str) -> str | None:
        with self._read() as db:
            row = db.execute(
                "SELECT content FROM run_artifacts WHERE run_id=? AND name=?", (run_id, name)
            ).fetchone()
        return None if row is None else str(row["content"])

    def run_coverage(self, run_id: int) -> Coverage | None:
        """What the run examined (None for a run recorded without saying: e.g. by an older cranewatch)."""
        text = self.run_artifact(run_id, "coverage")
        return None if text is None else Coverage.from_json(json.loads(text))

    def findings(self, crane: str, run_ids: Sequence[int] | None = None) -> list[Finding]:
        """Stored findings of a crane (all, or those linked to the given runs), most severe first."""
        with self._read() as db:
            rows = _crane_rows(db, "findings", "*", "run_findings", "finding_id", crane, run_ids)
        found = [_finding_from_row(r) for r in rows]
        return sorted(found, key=lambda f: (-int(f.severity), f.category, f.id))

    def incidents(self, crane: str, run_ids: Sequence[int] | None = None) -> list[Incident]:
        """Stored incidents of a crane (all, or those the given runs made), most severe first."""
        with self._read() as db:
            rows = _crane_rows(db, "incidents", "record", "run_incidents", "incident_id", crane, run_ids)
        found = [Incident.from_json(json.loads(r["record"])) for r in rows]
        return sorted(found, key=lambda n: (-int(n.severity), n.first_seen or 0.0, n.id))

    def finding_runs(self, crane: str) -> dict[str, tuple[int, ...]]:
        """finding id → the runs that saw it, oldest first (one stored finding, every run as evidence)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT finding_id, run_id FROM run_findings WHERE crane=? ORDER BY run_id", (crane,)
            ).fetchall()
        out: dict[str, list[int]] = {}
        for r in rows:
            out.setdefault(r["finding_id"], []).append(int(r["run_id"]))
        return {k: tuple(v) for k, v in out.items()}

    def locate_finding(self, finding: str, crane: str | None = None) -> list[tuple[str, str]]:
        """(crane, id) of the stored findings whose id is ``finding`` or starts with it."""
        pattern = finding.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = "SELECT crane, id FROM findings WHERE (id=? OR id LIKE ? ESCAPE '\\')"
        params: tuple[Any, ...] = (finding, pattern)
        if crane is not None:
            query += " AND crane=?"
            params += (crane,)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY crane, id", params).fetchall()
        exact = [(r["crane"], r["id"]) for r in rows if r["id"] == finding]
        return exact or [(r["crane"], r["id"]) for r in rows]

    def current_findings(self, crane: str, *, now: float | None = None) -> list[Finding]:
        """The findings that count now: every stored finding of the crane (of every run) whose
        state — by its latest disposition, an expired acceptance being open — is open or
        acknowledged."""
        at = time.time() if now is None else now
        latest = self.latest_dispositions(crane)
        return [f for f in self.findings(crane)
                if f.id not in latest or latest[f.id].effective(at) in COUNTING_STATES]

    def count_findings(self, crane: str | None = None) -> int:
        with self._read() as db:
            if crane is None:
                return int(db.execute("SELECT count(*) FROM findings").fetchone()[0])
            return int(db.execute("SELECT count(*) FROM findings WHERE crane=?", (crane,)).fetchone()[0])

    # -- dispositions and the audit trail -------------------------------------------------------

    def record_disposition(
        self,
        crane: str,
        finding: str,
        state: str,
        *,
        who: str,
        why: str,
        until: float | None = None,
        evidence_run: int | None = None,
        at: float | None = None,
    ) -> Disposition:
        """Record a person's disposition of a stored finding and its audit event, atomically.

        The rules about which disposition is allowed (an expiry, the remediation evidence) are
        ``cranewatch.triage``'s; this refuses only what would make the record meaningless.
        """
        if state not in FINDING_STATES:
            raise UsageError(f"unknown finding state {state!r} (one of: {', '.join(FINDING_STATES)})")
        if not why.strip() or not who.strip():
            raise UsageError("a disposition needs who and why")
        now = time.time() if at is None else at
        with self._write() as db:
            if db.execute("SELECT 1 FROM findings WHERE crane=? AND id=?", (crane, finding)).fetchone() is None:
                raise StateError(f"{crane} has no stored finding {finding}")
            seq = _dispose(db, crane, finding, state, now, who, why, until, evidence_run, action="disposition")
        return Disposition(crane, finding, state, now, who, why, until, evidence_run, seq)

    def dispositions(self, crane: str, finding: str | None = None) -> list[Disposition]:
        """Every disposition of the crane's findings (or of one), in the order they were made."""
        query = "SELECT * FROM finding_dispositions WHERE crane=?" + (" AND finding_id=?" if finding else "")
        params = (crane, finding) if finding else (crane,)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        return [_disposition_from_row(r) for r in rows]

    def latest_dispositions(self, crane: str) -> dict[str, Disposition]:
        """finding id → its latest disposition (findings never disposed of are absent: open)."""
        return {d.finding: d for d in self.dispositions(crane)}

    def audit_events(self, crane: str) -> list[AuditEvent]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM audit_events WHERE crane=? ORDER BY seq", (crane,)).fetchall()
        return [AuditEvent(r["crane"], r["at"], r["who"], r["action"], r["subject"], r["why"],
                           json.loads(r["detail"]), r["seq"]) for r in rows]

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
        with self._read() as db:
            rows = db.execute("SELECT * FROM gate_decisions WHERE crane=? ORDER BY seq", (crane,)).fetchall()
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
        with self._read() as db:
            row = db.execute(query + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        return StoredRuleset(row["crane"], row["purpose"], row["at"], row["who"], row["sha256"], row["text"])

    # -- notes and assignments ----------------------------------------------------------------

    def record_finding_note(self, crane: str, finding: str, *, who: str, why: str,
                            assignee: str | None = None, at: float | None = None) -> AuditEvent:
        """A note on a stored finding, or (``assignee`` given) its assignment to a person: an
        audit event of the crane; the finding's state does not change."""
        if not why.strip() or not who.strip():
            raise UsageError("a note needs who and what")
        action = "note" if assignee is None else "assign"
        assert action in AUDIT_ACTIONS
        detail: dict[str, Any] = {} if assignee is None else {"assignee": assignee}
        now = time.time() if at is None else at
        with self._write() as db:
            if db.execute("SELECT 1 FROM findings WHERE crane=? AND id=?", (crane, finding)).fetchone() is None:
                raise StateError(f"{crane} has no stored finding {finding}")
            _audit(db, crane, now, who, action, finding, why, detail)
        return AuditEvent(crane, now, who, action, finding, why, detail)

    # -- console users and sessions -----------------------------------------------------------

    def add_user(self, name: str, role: str, password: str, *, by: str, at: float | None = None) -> User:
        """A new console user; ``password`` is the KDF's encoded hash."""
        if role not in USER_ROLES:
            raise UsageError(f"unknown role {role!r} (one of: {', '.join(USER_ROLES)})")
        now = time.time() if at is None else at
        with self._write() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is not None:
                raise StateError(f"user {name} exists (change it with `cranewatch users passwd` or `role`)")
            db.execute("INSERT INTO users(name, role, password, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                       (name, role, password, now, by))
        return User(name, role, password, now, by)

    def change_user(self, name: str, *, role: str | None = None, password: str | None = None,
                    at: float | None = None) -> User:
        """Change a user's role or password hash; the user's sessions end (log in again)."""
        if role is not None and role not in USER_ROLES:
            raise UsageError(f"unknown role {role!r} (one of: {', '.join(USER_ROLES)})")
        now = time.time() if at is None else at
        with self._write() as db:
            row = db.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise StateError(f"no user {name}")
            db.execute("UPDATE users SET role=?, password=?, changed_at=? WHERE name=?",
                       (role or row["role"], password or row["password"], now, name))
            db.execute("DELETE FROM sessions WHERE user_name=?", (name,))
        user = self.user(name)
        assert user is not None
        return user

    def remove_user(self, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE user_name=?", (name,))
            if db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise StateError(f"no user {name}")

    def user(self, name: str) -> User | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        return None if row is None else _user_from_row(row)

    def users(self) -> list[User]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_user_from_row(r) for r in rows]

    def create_session(self, token_sha256: str, user: str, csrf: str, *, expires_at: float,
                       client: str | None = None, at: float | None = None) -> None:
        now = time.time() if at is None else at
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))  # expired ones go as new ones come
            db.execute("INSERT INTO sessions(token_sha256, user_name, csrf, created_at, expires_at, last_seen, client)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (token_sha256, user, csrf, now, expires_at, now, client))

    def session(self, token_sha256: str) -> Session | None:
        """The session kept under this token digest, with its user's current role (None: unknown)."""
        with self._read() as db:
            row = db.execute(
                "SELECT s.*, u.role FROM sessions s JOIN users u ON u.name=s.user_name WHERE s.token_sha256=?",
                (token_sha256,)).fetchone()
        if row is None:
            return None
        return Session(row["token_sha256"], row["user_name"], row["role"], row["csrf"], row["created_at"],
                       row["expires_at"], row["last_seen"])

    def touch_session(self, token_sha256: str, at: float) -> None:
        with self._write() as db:
            db.execute("UPDATE sessions SET last_seen=? WHERE token_sha256=?", (at, token_sha256))

    def end_session(self, token_sha256: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256=?", (token_sha256,))

    def finding_run_ids(self, crane: str, finding: str) -> tuple[int, ...]:
        """The runs that saw one finding, oldest first (``finding_runs`` reads every finding's)."""
        with self._read() as db:
            rows = db.execute("SELECT run_id FROM run_findings WHERE crane=? AND finding_id=? ORDER BY run_id",
                              (crane, finding)).fetchall()
        return tuple(int(r["run_id"]) for r in rows)

    # -- incidents for the console (tens of thousands: counted and paged in SQL) ---------------

    def incident_counts(self, crane: str, closed: Iterable[str] = ()) -> dict[str, int]:
        """severity → how many of the crane's incidents are open: those with a member finding
        not in ``closed`` (the findings a disposition took out; few, so only the incidents
        naming one of them are read whole)."""
        shut = sorted(set(closed))
        with self._read() as db:
            counts = {r["severity"]: int(r["n"]) for r in db.execute(
                "SELECT severity, count(*) AS n FROM incidents WHERE crane=? GROUP BY severity", (crane,))}
            if not shut:
                return counts
            candidates: dict[str, Row] = {}
            for i in range(0, len(shut), 50):
                part = shut[i:i + 50]
                likes = " OR ".join("record LIKE ? ESCAPE '\\'" for _ in part)
                for r in db.execute(f"SELECT id, severity, record FROM incidents WHERE crane=? AND ({likes})",
                                    (crane, *(f'%"{_escape_like(f)}"%' for f in part))):
                    candidates[r["id"]] = r
        closed_set = set(shut)
        for r in candidates.values():
            if set(json.loads(r["record"]).get("findings", ())) <= closed_set:
                counts[r["severity"]] -= 1
        return {k: v for k, v in counts.items() if v > 0}

    def incidents_page(self, crane: str, *, limit: int, offset: int = 0) -> tuple[list[Incident], int]:
        """One page of the crane's incidents, most severe first then newest, and how many there
        are (each severity read through the console index, so a deep page costs no sort)."""
        records: list[str] = []
        with self._read() as db:
            counts = {r["severity"]: int(r["n"]) for r in db.execute(
                "SELECT severity, count(*) AS n FROM incidents WHERE crane=? GROUP BY severity", (crane,))}
            skip, want = offset, limit
            for severity in ("critical", "high", "medium", "low", "info"):
                n = counts.get(severity, 0)
                if want <= 0:
                    break
                if skip >= n:
                    skip -= n
                    continue
                rows = db.execute("SELECT record FROM incidents WHERE crane=? AND severity=?"
                                  " ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?",
                                  (crane, severity, want, skip)).fetchall()
                records.extend(r["record"] for r in rows)
                want -= len(rows)
                skip = 0
        return [Incident.from_json(json.loads(r)) for r in records], sum(counts.values())

_UPSERT_INCIDENT = """
INSERT INTO incidents(crane, id, severity, title, first_seen, last_seen, record)
VALUES (:crane, :id, :severity, :title, :first_seen, :last_seen, :record)
ON CONFLICT(crane, id) DO UPDATE SET
    severity=excluded.severity, title=excluded.title, first_seen=excluded.first_seen,
    last_seen=excluded.last_seen, record=excluded.record
"""


def _crane_rows(db: Connection, table: str, columns: str, links: str, link_id: str, crane: str,
                run_ids: Sequence[int] | None) -> list[Any]:
    """A crane's rows of ``table`` (findings, incidents): all, or those ``links`` ties to the
    given runs. Table and column names are this module's constants, never input."""
    if run_ids is None:
        return list(db.execute(f"SELECT {columns} FROM {table} WHERE crane=?", (crane,)).fetchall())
    marks = ",".join("?" * len(run_ids)) or "NULL"
    picked = ", ".join(f"t.{c.strip()}" for c in columns.split(","))
    return list(db.execute(
        f"SELECT DISTINCT {picked} FROM {table} t JOIN {links} l"
        f" ON l.crane=t.crane AND l.{link_id}=t.id WHERE t.crane=? AND l.run_id IN ({marks})",
        (crane, *run_ids),
    ).fetchall())


def _incident_row(crane: str, n: Incident) -> dict[str, Any]:
    return {"crane": crane, "id": n.id, "severity": str(n.severity), "title": n.title,
            "first_seen": n.first_seen, "last_seen": n.last_seen,
            "record": json.dumps(n.to_json(), sort_keys=True, ensure_ascii=False)}


_UPSERT_FINDING = """
INSERT INTO findings(crane, id, rule, category, severity, title, first_seen, last_seen, count,
                     src, dst, technique, evidence, remedy, source, search)
VALUES (:crane, :id, :rule, :category, :severity, :title, :first_seen, :last_seen, :count,
        :src, :dst, :technique, :evidence, :remedy, :source, :search)
ON CONFLICT(crane, id) DO UPDATE SET
    rule=excluded.rule, category=excluded.category, severity=excluded.severity,
    title=excluded.title,
    first_seen=CASE WHEN excluded.first_seen < findings.first_seen THEN excluded.first_seen
                    ELSE coalesce(findings.first_seen, excluded.first_seen) END,
    last_seen=CASE WHEN excluded.last_seen > findings.last_seen THEN excluded.last_seen
                   ELSE coalesce(findings.last_seen, excluded.last_seen) END,
    count=excluded.count, src=excluded.src, dst=excluded.dst, technique=excluded.technique,
    evidence=excluded.evidence, remedy=excluded.remedy, source=excluded.source, search=excluded.search
"""

_PUT_INPUT = ("INSERT INTO run_inputs(run_id, path, sha256, size, location) VALUES (?, ?, ?, ?, ?)"
              " ON CONFLICT(run_id, path) DO UPDATE SET sha256=excluded.sha256, size=excluded.size,"
              " location=excluded.location")


def run_fingerprint(kind: str, component: str | None, inputs: Sequence[RunInput],
                    options: dict[str, Any]) -> str | None:
    """sha256 over what makes a run's result: kind, component, the inputs' digests (not their
    paths: a copy is the same input) and the options. None for a run with no inputs and no
    ``checkpoint`` option: there is nothing to recognise it by. A live monitoring checkpoint
    names itself (``{"checkpoint": "SESSION:N"}``), so recording it again (a replayed spool)
    replaces it instead of adding a run."""
    if not inputs and not options.get("checkpoint"):
        return None
    text = json.dumps([kind, (component or "").lower(), sorted(i.sha256 for i in inputs), options],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def input_location(path: str) -> str | None:
    """Where an input file is, absolute, as it is recorded (an evidence pcap is cut from it
    later, from whatever directory); None when it is not a file here (e.g. a live interface)."""
    p = Path(path)
    return str(p.resolve()) if p.is_file() else None


def finding_source(kind: str, component: str | None) -> str:
    """Where a run's findings come from, as the console filters them: ``image`` (scan-image),
    ``monitor`` (a monitoring checkpoint), else ``traffic`` (``_finding_row`` makes a process
    check's ``process``)."""
    if kind == "scan-image":
        return "image"
    if component is not None and component.startswith("monitor:"):
        return "monitor"
    return "traffic"


def _audit(db: Connection, crane: str, at: float, who: str, action: str, subject: str, why: str,
           detail: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO audit_events(crane, at, who, action, subject, why, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (crane, at, who, action, subject, why, json.dumps(detail, sort_keys=True)),
    )


def _dispose(db: Connection, crane: str, finding: str, state: str, at: float, who: str, why: str,
             until: float | None, evidence_run: int | None, *, action: str) -> int:
    """Insert a disposition and its audit event (one call, so neither exists without the other)."""
    cur = db.execute(
        "INSERT INTO finding_dispositions(crane, finding_id, state, at, who, why, until, evidence_run)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        (crane, finding, state, at, who, why, until, evidence_run),
    )
    seq = int(cur.fetchone()[0])
    # the state kept on the finding's row, so the console filters tens of thousands by index
    db.execute("UPDATE findings SET state=?, state_until=? WHERE crane=? AND id=?", (state, until, crane, finding))
    detail: dict[str, Any] = {"state": state}
    if until is not None:
        detail["until"] = iso_time(until)
    if evidence_run is not None:
        detail["evidence_run"] = evidence_run
    _audit(db, crane, at, who, action, finding, why, detail)
    return seq


def _latest_disposition_row(db: Connection, crane: str, finding: str) -> Row | None:
    row: Row | None = db.execute(
        "SELECT * FROM finding_dispositions WHERE crane=? AND finding_id=? ORDER BY seq DESC LIMIT 1",
        (crane, finding),
    ).fetchone()
    return row


def _disposition_from_row(r: Row) -> Disposition:
    return Disposition(r["crane"], r["finding_id"], r["state"], r["at"], r["who"], r["why"], r["until"],
                       r["evidence_run"], r["seq"])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _user_from_row(r: Row) -> User:
    return User(r["name"], r["role"], r["password"], r["created_at"], r["created_by"], r["changed_at"])


def _run_from_row(r: Row, inputs: Sequence[RunInput]) -> Run:
    return Run(r["id"], r["crane"], r["kind"], r["component"], r["tool_version"], r["started_at"],
               r["finished_at"], r["status"], r["note"], tuple(inputs), json.loads(r["options"]),
               r["fingerprint"], r["recorded_by"], r["recordings"], r["superseded_at"], r["superseded_by"],
               r["superseded_reason"])


def _finding_row(crane: str, f: Finding, source: str) -> dict[str, Any]:
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
        "source": source if source != "traffic" or not f.rule.startswith("process-") else "process",
        "search": "\n".join((f.title, f.rule, f.category, f.id, f.src or "", f.dst or "")).lower(),
    }


def _finding_from_row(row: Row) -> Finding:
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


def _crane_from_row(row: Row, parts: Iterable[Row]) -> Crane:
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


def _applied(db: Connection) -> list[str]:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [r[0] for r in db.execute("SELECT name FROM schema_migrations ORDER BY seq")]


def _user_tables(db: Connection) -> set[str]:
    return {r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}


def open_store(path: str | Path | None = None, *, readonly: bool = False, create: bool = True) -> Store:
    """Open (creating and migrating as needed) the store at ``path`` or the default location.

    ``path`` is an SQLite file or a ``postgresql://user@host/db`` URL (the central store);
    ``None`` is ``$CRANEWATCH_DB``, else the default file. ``readonly`` opens an existing
    store for reading only (SQLite ``mode=ro``, a PostgreSQL read-only session); it and
    ``create=False`` raise ``MissingStore`` where no store exists, creating nothing.
    """
    target = default_store() if path is None else path
    if is_postgres_url(target):
        # runs spooled while this central store was away are recorded at the next contact
        from cranewatch.store.spool import replay_pending

        replay_pending(str(target), say=_say)
    return Store(target, readonly=readonly, create=create)


def _say(text: str) -> None:
    print(f"cranewatch: {text}", file=sys.stderr)
