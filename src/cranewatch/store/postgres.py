"""The store on a PostgreSQL server: the central store many sensors and analysts share.

The same ``Store`` API, statements and named migrations as the SQLite file (see ``dialect``
for the few words that differ). Writers take turns as they do on SQLite: every write
transaction first takes one transaction-level advisory lock, so the check-then-write steps
(re-recording a run, reopening a finding) see every earlier write and no run is lost or doubled;
readers read a REPEATABLE READ snapshot and never wait. A store opened ``readonly`` is a
read-only session; a role granted only SELECT can read but not write (exit 4, said as such).

psycopg 3 (LGPL-3.0-only) is imported only here and only when a ``postgresql://`` store is
opened: install it with the ``postgres`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cranewatch.errors import (
    CranewatchError,
    EnvironmentProblem,
    InputError,
    Location,
    StoreUnreachable,
    UsageError,
)
from cranewatch.store.dialect import Connection, pyformat, redact_url, url_password
from cranewatch.store.sqlite import MissingStore, Store

CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key of the one writer: "crane" in ASCII, so no other program's by chance
WRITER_LOCK = 0x6372616E65


class PgRow:
    """A row by column name or position, as ``sqlite3.Row`` reads."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: str | int) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class PgConnection:
    """A psycopg connection that takes the store's ``?``/``:name`` statements (``Connection``)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None, /) -> Any:
        if parameters is None:
            return self._conn.execute(sql)
        return self._conn.execute(pyformat(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | Mapping[str, Any]], /) -> Any:
        rows = list(parameters)
        cursor = self._conn.cursor()
        if rows:
            cursor.executemany(pyformat(sql), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        """In a transaction that can be rolled back (not on a connection the server dropped)."""
        import psycopg

        status = psycopg.pq.TransactionStatus
        return bool(self._conn.info.transaction_status in (status.INTRANS, status.INERROR))

    def close(self) -> None:
        self._conn.close()


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise EnvironmentProblem("a postgresql:// store needs psycopg 3: pip install 'cranewatch[postgres]' "
                                 "(or 'psycopg[binary]')") from None
    return psycopg


class PostgresStore(Store):
    """A cranewatch store in a PostgreSQL database (it must exist; cranewatch makes its tables)."""

    dialect = "postgresql"

    def __init__(self, path: str | Path, *, migrate: bool = True, readonly: bool = False,
                 create: bool = True) -> None:
        self.url = str(path)
        self.where = redact_url(self.url)
        self.readonly = readonly
        self._create = create
        self._open_or_close(migrate)

    def _target(self) -> str | Path:
        return self.url

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return _translated(self.url)

    def _open(self, migrate: bool) -> None:
        psycopg = _driver()
        with self._translated():
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="cranewatch", row_factory=_row_factory)
            self._db: Connection = PgConnection(conn)
            done = self.applied_migrations()
            if not done:
                self._refuse_foreign()
                if self.readonly or not self._create:
                    raise MissingStore(self.url)
            if self.readonly:
                if migrate:
                    self._upgrade_for_reader(done)
                # a reader (the dashboard, report, fleet show) can never write, whatever the code asks
                conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            elif migrate:
                self.migrate()

    def _begin_write(self) -> None:
        self._db.execute("BEGIN")
        self._db.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))

    _begin_read_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ"

    def applied_migrations(self) -> list[str]:
        with self._translated():
            exists = self._db.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
            if exists is None:
                return []
            return [r[0] for r in self._db.execute("SELECT name FROM schema_migrations ORDER BY seq")]

    def _refuse_foreign(self) -> None:
        foreign = {r[0] for r in self._db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_name <> 'schema_migrations'")}
        if foreign:
            raise InputError(f"not a cranewatch database: it holds the tables {sorted(foreign)[:5]} "
                             "but no cranewatch schema", Location(file=self.where))


# SQLSTATE classes and codes that are the environment's doing, not a bug, and what they mean
_ENVIRONMENT_STATES = {
    "42501": "this database role may not do that (a read-only role can read, not record or triage)",
    "25006": "the store is open read-only: cannot write",
    "53100": "the PostgreSQL server's disk is full: cannot write",
    "53200": "the PostgreSQL server is out of memory",
    "53300": "the PostgreSQL server has too many connections",
    "57P01": "the PostgreSQL server was shut down",
    "57P03": "the PostgreSQL server is starting up or shutting down",
    "58030": "the PostgreSQL server had an I/O error",
}


def store_error(exc: Exception, url: str) -> CranewatchError | None:
    """The cranewatch error a psycopg failure stands for (password never shown); None for a bug."""
    psycopg = _driver()
    where = Location(file=redact_url(url))
    text = str(exc).strip()
    secret = url_password(url)
    if secret:
        text = text.replace(secret, "***")
    state = getattr(exc, "sqlstate", None) or ""
    if state in _ENVIRONMENT_STATES:
        return EnvironmentProblem(f"{_ENVIRONMENT_STATES[state]} ({text})", where)
    if state.startswith("08") or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnreachable(f"cannot reach the PostgreSQL store: {text}", where)
    if (isinstance(exc, psycopg.ProgrammingError) and "invalid connection option" in text) or \
            "invalid dsn" in text.lower() or "missing \"=\"" in text:
        return UsageError(f"not a usable PostgreSQL URL: {text}", where)
    return None


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    psycopg = _driver()
    try:
        yield
    except psycopg.Error as exc:
        mapped = store_error(exc, url)
        if mapped is None:
            raise
        raise mapped from None  # the driver's exception may repeat the URL: not chained

