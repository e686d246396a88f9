"""The store's queries for the operations console (and the CLI commands that share them).

``ConsoleQueries`` is mixed into ``Store``: each method below is a ``Store`` method, on SQLite
and PostgreSQL alike (migration ``0008_console_data`` made their tables and indexes).

API::

    Store.evidence_inputs(crane, finding_id) -> dict[str, RecordedInput]
        capture path as the evidence names it -> where it was recorded (path, absolute
        location, sha256, size) by the newest run that recorded the finding and read it

    Store.query_findings(query: FindingQuery) -> FindingPage
        one page of findings, filtered and sorted in SQL, with the total that match:
        FindingQuery(crane=None, severity=(), category=(), state=(), source=(), host=None,
                     text=None, sort="time"|"severity"|"rule", limit=50, offset=0, now=None)
        - severity, category, state, source: any of the values given (empty: all). state is
          the effective state (an accepted risk past its ``until`` is "open"); source is
          "traffic" | "process" | "image" | "monitor" (where the finding was recorded)
        - host: an address (or MAC) that is the finding's src or dst (with or without
          ":port") or a whole string value in its evidence; text: case-insensitive
          substring of title, rule, category, id, src or dst
        - sort "time": newest last_seen first; "severity": worst first, then newest;
          "rule": by rule, then newest; ties by crane and id (pages never overlap)
        FindingPage(rows: tuple[FindingRow, ...], total, limit, offset); FindingRow(finding,
        state, source, state_until); both have to_json() (the Finding contract plus "state",
        "source", "until")

    Store.finding_row(crane, finding_id, now=None) -> FindingRow | None
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cranewatch.errors import UsageError
from cranewatch.model import Finding, Severity, iso_time
from cranewatch.store.records import FINDING_STATES

if TYPE_CHECKING:
    from cranewatch.store.dialect import Connection, Row

FINDING_SOURCES: tuple[str, ...] = ("traffic", "process", "image", "monitor")
FINDING_SORTS: tuple[str, ...] = ("time", "severity", "rule")
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class FindingQuery:
    """What to list of the stored findings: filters (each "any of"; empty means all), order, page."""

    crane: str | None = None
    severity: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    host: str | None = None
    text: str | None = None
    sort: str = "time"
    limit: int = 50
    offset: int = 0
    now: float | None = None  # when an accepted risk's expiry is judged (default: now)

    def check(self) -> None:
        """Refuse values no finding can have (UsageError, exit 2), naming the allowed ones."""
        allowed = {"severity": tuple(str(s) for s in Severity), "state": FINDING_STATES, "source": FINDING_SOURCES}
        for name, values in allowed.items():
            bad = [v for v in getattr(self, name) if v not in values]
            if bad:
                raise UsageError(f"unknown {name} {bad[0]!r} (one of: {', '.join(values)})")
        if self.sort not in FINDING_SORTS:
            raise UsageError(f"unknown sort {self.sort!r} (one of: {', '.join(FINDING_SORTS)})")
        if not 1 <= self.limit <= MAX_PAGE or self.offset < 0:
            raise UsageError(f"a page is 1 to {MAX_PAGE} findings from an offset >= 0")


@dataclass(frozen=True, slots=True)
class FindingRow:
    """A stored finding with its effective state (as of the query's ``now``) and its source."""

    finding: Finding
    state: str
    source: str
    state_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.finding.to_json()
        out.update(state=self.state, source=self.source, until=iso_time(self.state_until))
        return out


@dataclass(frozen=True, slots=True)
class FindingPage:
    """One page of a findings query and how many findings match in all."""

    rows: tuple[FindingRow, ...]
    total: int
    limit: int
    offset: int
    query: FindingQuery = field(default_factory=FindingQuery)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset,
                "findings": [r.to_json() for r in self.rows]}


_SEVERITY_RANK = ("CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2"
                  " WHEN 'low' THEN 1 ELSE 0 END")
_EXPIRED = "(state='accepted-risk' AND state_until IS NOT NULL AND state_until <= :now)"
_EFFECTIVE_STATE = f"CASE WHEN {_EXPIRED} THEN 'open' ELSE state END"
_ORDER = {
    "time": "last_seen DESC NULLS LAST, id DESC, crane DESC",
    "severity": f"{_SEVERITY_RANK} DESC, last_seen DESC NULLS LAST, id DESC, crane DESC",
    "rule": "rule, last_seen DESC NULLS LAST, id DESC, crane DESC",
}
_COLUMNS = ("crane, id, rule, category, severity, title, first_seen, last_seen, count, src, dst, technique,"
            " evidence, remedy, source, state_until")


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (for ``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _any_of(column: str, name: str, values: tuple[str, ...], params: dict[str, Any]) -> str:
    marks = []
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
        marks.append(f":{name}{i}")
    return f"{column} IN ({', '.join(marks)})"


def findings_where(q: FindingQuery, now: float) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (named placeholders) and its parameters for a findings query."""
    params: dict[str, Any] = {"now": now}
    clauses: list[str] = []
    if q.crane is not None:
        clauses.append("crane=:crane")
        params["crane"] = q.crane
    for column, values in (("severity", q.severity), ("category", q.category), ("source", q.source)):
        if values:
            clauses.append(_any_of(column, column, tuple(values), params))
    if q.state:
        clauses.append(_any_of(_EFFECTIVE_STATE, "state", tuple(q.state), params))
    if q.host:
        host = _like(q.host.strip())
        params.update(host=q.host.strip(), host_port=host + ":%", host_json=f'%"{host}"%',
                      host_json_port=f'%"{host}:%')
        clauses.append("(src=:host OR dst=:host OR src LIKE :host_port ESCAPE '\\'"
                       " OR dst LIKE :host_port ESCAPE '\\' OR evidence LIKE :host_json ESCAPE '\\'"
                       " OR evidence LIKE :host_json_port ESCAPE '\\')")
    if q.text:
        # the row's ``search``: title, rule, category, id, src and dst in lower case, one a line
        params["text"] = "%" + _like(" ".join(q.text.split()).lower()) + "%"
        clauses.append("search LIKE :text ESCAPE '\\'")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass(frozen=True, slots=True)
class RecordedInput:
    """An input file as a run recorded it: the path it was given as, where that was on disk
    (None for a run recorded before locations were kept), its sha256 and size."""

    run_id: int
    path: str
    location: str | None
    sha256: str
    size: int


class ConsoleQueries:
    """The console's reads and writes; a mixin of ``Store`` (which gives ``_read``/``_write``)."""

    if TYPE_CHECKING:
        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

    def evidence_inputs(self, crane: str, finding_id: str) -> dict[str, RecordedInput]:
        """Input path -> its record by the newest run that both recorded ``finding_id`` and read it."""
        with self._read() as db:
            rows = db.execute(
                "SELECT i.run_id, i.path, i.location, i.sha256, i.size FROM run_inputs i"
                " JOIN run_findings l ON l.run_id=i.run_id WHERE l.crane=? AND l.finding_id=?"
                " ORDER BY i.run_id",
                (crane, finding_id),
            ).fetchall()
        return {r["path"]: RecordedInput(int(r["run_id"]), r["path"], r["location"], r["sha256"], int(r["size"]))
                for r in rows}

    def query_findings(self, query: FindingQuery) -> FindingPage:
        """One page of the findings ``query`` selects, in its order, and how many match in all.

        The page's keys come from the console index first; only its rows are read whole."""
        query.check()
        now = time.time() if query.now is None else query.now
        dialect = getattr(self, "dialect", "sqlite")
        where, params = findings_where(query, now)
        params.update(limit=query.limit, offset=query.offset)
        with self._read() as db:
            scan = "findings"
            if query.host or query.text:
                # a search reads the rows: in one scan (on SQLite not through the console index,
                # whose crane= lookup would fetch every row by key), the page's keys and the total
                if dialect == "sqlite":
                    scan = "findings NOT INDEXED"
                found = db.execute(f"SELECT crane, id, count(*) OVER () AS total FROM {scan}{where}"
                                   f" ORDER BY {_ORDER[query.sort]} LIMIT :limit OFFSET :offset", params).fetchall()
                total = int(found[0]["total"]) if found else -1
            else:
                # the console index alone: the count, then the page (which stops after it)
                total = int(db.execute(f"SELECT count(*) FROM findings{where}", params).fetchone()[0])
                found = db.execute(f"SELECT crane, id FROM findings{where}"
                                   f" ORDER BY {_ORDER[query.sort]} LIMIT :limit OFFSET :offset", params).fetchall()
            if total < 0:  # past the last page of a search: count alone
                total = int(db.execute(f"SELECT count(*) FROM {scan}{where}", params).fetchone()[0])
            keys = [(r["crane"], r["id"]) for r in found]
            rows: dict[tuple[str, str], Row] = {}
            for crane in dict.fromkeys(c for c, _ in keys):
                ids = [i for c, i in keys if c == crane]
                wanted: dict[str, Any] = {"crane": crane, "now": now}
                marks = _any_of("id", "id", tuple(ids), wanted)
                for r in db.execute(f"SELECT {_COLUMNS}, {_EFFECTIVE_STATE} AS effective FROM findings"
                                    f" WHERE crane=:crane AND {marks}", wanted):
                    rows[(r["crane"], r["id"])] = r
        return FindingPage(tuple(_finding_row(rows[k]) for k in keys), total, query.limit, query.offset, query)

    def finding_row(self, crane: str, finding_id: str, now: float | None = None) -> FindingRow | None:
        """One stored finding with its effective state and source (None: no such finding)."""
        at = time.time() if now is None else now
        with self._read() as db:
            row = db.execute(f"SELECT {_COLUMNS}, {_EFFECTIVE_STATE} AS effective FROM findings"
                             " WHERE crane=:crane AND id=:id", {"crane": crane, "id": finding_id, "now": at}).fetchone()
        return None if row is None else _finding_row(row)


def _finding_row(row: Row) -> FindingRow:
    from cranewatch.store.sqlite import _finding_from_row

    return FindingRow(_finding_from_row(row), row["effective"], row["source"], row["state_until"])
