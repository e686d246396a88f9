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

    Store.record_traffic_summary(run_id, hosts, conversations) -> None
        what a traffic run saw: its hosts (``pipeline.HostSummary``: mac, ips, first/last
        seen, packets, bytes) and its conversations (``conversations.Conversation``); a run
        recorded again has them replaced
    Store.record_heartbeat(beat: heartbeat.Heartbeat) -> Heartbeat   (the latest per crane
        and sensor is kept, its beats counted)
    Store.heartbeats(crane=None) -> list[Heartbeat]   (by crane, sensor)
    Store.count_recent_findings(crane, since, source=None) -> int   (last_seen >= since)

    Store.timeline(crane, *, since=None, until=None) -> list[TimelineEntry]
        the crane's life cycle in one query, in time order: life-cycle transitions, analysis
        runs (start, end, status, inputs' count), dispositions (reopenings by cranewatch too),
        gate decisions, supersedes and re-recordings, generated rulesets
        TimelineEntry(at, kind, who, why, subject, detail)   .text, .to_json()
        kind: transition | run | disposition | gate | supersede | re-record | ruleset

    Store.observed_hosts(crane) -> list[HostSighting]
    Store.observed_conversations(crane, run_ids=None) -> list[ConversationSighting]
        per run, of the crane's complete runs that are not superseded, oldest run first
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cranewatch.conversations import Conversation
from cranewatch.errors import UsageError
from cranewatch.heartbeat import Heartbeat
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


def _any_of(column: str, name: str, values: tuple[Any, ...], params: dict[str, Any]) -> str:
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


TIMELINE_KINDS = ("transition", "run", "disposition", "gate", "supersede", "re-record", "ruleset")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a crane's life cycle: when, what kind, who, why, about what, and the rest."""

    at: float
    kind: str  # one of TIMELINE_KINDS
    who: str
    why: str
    subject: str  # the crane, "run N", a finding id, a ruleset's purpose
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """One line saying what happened."""
        d = self.detail
        if self.kind == "transition":
            return f"{d.get('from') or 'registered'} → {d.get('to')}"
        if self.kind == "run":
            what = d.get("run_kind", "run") + (f" of {d['component']}" if d.get("component") else "")
            return f"{self.subject}: {what}, {d.get('status')}"
        if self.kind == "disposition":
            return f"{self.subject} → {d.get('state')}"
        if self.kind == "gate":
            return f"gate decision: {d.get('decision')}"
        if self.kind == "ruleset":
            return f"{self.subject} ruleset generated (sha256 {str(d.get('sha256'))[:12]})"
        return f"{self.kind} {self.subject}"

    def to_json(self) -> dict[str, Any]:
        return {"at": iso_time(self.at), "kind": self.kind, "who": self.who, "why": self.why,
                "subject": self.subject, "text": self.text, "detail": self.detail}


# one statement over every table that records a step; each branch gives the same columns:
# at, kind, seq, who, why, subject, a (text), b (text), n (number), m (number)
_TIMELINE = """
SELECT at, 'transition' AS kind, seq, who, why, crane AS subject, from_state AS a, to_state AS b,
       CAST(NULL AS DOUBLE PRECISION) AS n, CAST(NULL AS DOUBLE PRECISION) AS m
  FROM crane_history WHERE crane=:crane
UNION ALL
SELECT r.started_at, 'run', r.id, coalesce(r.recorded_by, ''), coalesce(r.note, ''), 'run ' || CAST(r.id AS TEXT),
       r.kind || '|' || r.status, r.component, r.finished_at,
       CAST((SELECT count(*) FROM run_inputs i WHERE i.run_id=r.id) AS DOUBLE PRECISION)
  FROM runs r WHERE r.crane=:crane AND r.kind != 'gate'
UNION ALL
SELECT at, 'disposition', seq, who, why, finding_id, state, CAST(NULL AS TEXT), until,
       CAST(evidence_run AS DOUBLE PRECISION)
  FROM finding_dispositions WHERE crane=:crane
UNION ALL
SELECT at, 'gate', seq, who, reasons, coalesce('run ' || CAST(run_id AS TEXT), ''), decision, CAST(NULL AS TEXT),
       CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION)
  FROM gate_decisions WHERE crane=:crane
UNION ALL
SELECT at, action, seq, who, why, subject, detail, CAST(NULL AS TEXT), CAST(NULL AS DOUBLE PRECISION),
       CAST(NULL AS DOUBLE PRECISION)
  FROM audit_events WHERE crane=:crane AND action IN ('supersede', 're-record')
UNION ALL
SELECT at, 'ruleset', seq, who, '', purpose, sha256, CAST(NULL AS TEXT), CAST(NULL AS DOUBLE PRECISION),
       CAST(NULL AS DOUBLE PRECISION)
  FROM rulesets WHERE crane=:crane
"""
_KIND_ORDER = "CASE kind WHEN 'transition' THEN 0 WHEN 'run' THEN 1 WHEN 're-record' THEN 2 WHEN 'supersede' THEN 3" \
              " WHEN 'disposition' THEN 4 WHEN 'ruleset' THEN 5 ELSE 6 END"


def _timeline_entry(r: Row) -> TimelineEntry:
    kind = r["kind"]
    detail: dict[str, Any]
    why = r["why"]
    if kind == "transition":
        detail = {"from": r["a"], "to": r["b"]}
    elif kind == "run":
        run_kind, _, status = str(r["a"]).partition("|")
        detail = {"run": int(r["seq"]), "run_kind": run_kind, "status": status, "component": r["b"],
                  "finished": iso_time(r["n"]), "inputs": int(r["m"] or 0)}
    elif kind == "disposition":
        detail = {"state": r["a"], "until": iso_time(r["n"]),
                  "evidence_run": None if r["m"] is None else int(r["m"])}
    elif kind == "gate":
        reasons = json.loads(why)
        detail = {"decision": r["a"], "reasons": len(reasons)}
        why = "; ".join(str(x.get("text", x.get("kind", ""))) for x in reasons[:3])
    elif kind == "ruleset":
        detail = {"sha256": r["a"]}
    else:
        detail = json.loads(r["a"]) if r["a"] else {}
    return TimelineEntry(float(r["at"]), kind, r["who"], why, r["subject"], detail)


@dataclass(frozen=True, slots=True)
class HostSighting:
    """One (MAC, IP) a run saw sending: when, how much."""

    run_id: int
    mac: str | None
    ip: str | None
    first_seen: float | None
    last_seen: float | None
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ConversationSighting:
    """One conversation a run saw (``conversations.Conversation`` with its run)."""

    run_id: int
    conversation: Conversation


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


    def record_traffic_summary(self, run_id: int, hosts: Sequence[Any], conversations: Sequence[Conversation]) -> None:
        """Keep the hosts and conversations a traffic run saw (replacing any it had)."""
        with self._write() as db:
            run = db.execute("SELECT crane FROM runs WHERE id=:id", {"id": run_id}).fetchone()
            if run is None:
                raise UsageError(f"no run {run_id}")
            crane = run["crane"]
            db.execute("DELETE FROM run_hosts WHERE run_id=:id", {"id": run_id})
            db.execute("DELETE FROM run_conversations WHERE run_id=:id", {"id": run_id})
            db.executemany(
                "INSERT INTO run_hosts(run_id, crane, mac, ip, first_seen, last_seen, packets, bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, crane, h.mac.lower() if h.mac else None, ip, h.first_seen, h.last_seen, h.packets, h.bytes)
                 for h in hosts for ip in (h.ips or (None,))],
            )
            db.executemany(
                "INSERT INTO run_conversations(run_id, crane, client, server, transport, server_port, protocol,"
                " flows, packets, bytes, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, crane, c.client, c.server, c.transport, c.server_port, c.protocol, c.flows, c.packets,
                  c.bytes, c.first_seen, c.last_seen) for c in conversations],
            )

    def observed_hosts(self, crane: str) -> list[HostSighting]:
        """The hosts the crane's complete, not superseded runs saw, oldest run first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT h.* FROM run_hosts h JOIN runs r ON r.id=h.run_id WHERE h.crane=:crane"
                " AND r.status='complete' AND r.superseded_at IS NULL ORDER BY h.run_id, h.mac, h.ip",
                {"crane": crane}).fetchall()
        return [HostSighting(int(r["run_id"]), r["mac"], r["ip"], r["first_seen"], r["last_seen"], int(r["packets"]),
                             int(r["bytes"])) for r in rows]

    def observed_conversations(self, crane: str, run_ids: Sequence[int] | None = None) -> list[ConversationSighting]:
        """The conversations of the crane's complete, not superseded runs (or of the given runs)."""
        params: dict[str, Any] = {"crane": crane}
        only = ""
        if run_ids is not None:
            only = " AND " + _any_of("c.run_id", "run", tuple(run_ids), params) if run_ids else " AND 1=0"
        with self._read() as db:
            rows = db.execute(
                "SELECT c.* FROM run_conversations c JOIN runs r ON r.id=c.run_id WHERE c.crane=:crane"
                " AND r.status='complete' AND r.superseded_at IS NULL" + only +
                " ORDER BY c.run_id, c.client, c.server, c.transport, c.server_port", params).fetchall()
        return [ConversationSighting(int(r["run_id"]), Conversation(
            r["client"], r["server"], r["transport"], int(r["server_port"]), r["protocol"], int(r["flows"]),
            int(r["packets"]), int(r["bytes"]), r["first_seen"], r["last_seen"])) for r in rows]


    def record_heartbeat(self, beat: Heartbeat) -> Heartbeat:
        """Keep a sensor's latest heartbeat (one row per crane and sensor, its beats counted)."""
        with self._write() as db:
            row = db.execute(
                "INSERT INTO monitor_heartbeats(crane, sensor, at, started_at, last_packet, packets, findings_24h,"
                " every, stopped, beats) VALUES (:crane, :sensor, :at, :started_at, :last_packet, :packets,"
                " :findings_24h, :every, :stopped, 1)"
                " ON CONFLICT(crane, sensor) DO UPDATE SET at=excluded.at, started_at=excluded.started_at,"
                " last_packet=excluded.last_packet, packets=excluded.packets, findings_24h=excluded.findings_24h,"
                " every=excluded.every, stopped=excluded.stopped, beats=monitor_heartbeats.beats+1"
                " RETURNING beats",
                {"crane": beat.crane, "sensor": beat.sensor, "at": beat.at, "started_at": beat.started_at,
                 "last_packet": beat.last_packet, "packets": beat.packets, "findings_24h": beat.findings_24h,
                 "every": beat.every, "stopped": int(beat.stopped)}).fetchone()
        return replace(beat, beats=int(row[0]))

    def heartbeats(self, crane: str | None = None) -> list[Heartbeat]:
        """The latest heartbeat of every sensor (of one crane), by crane and sensor."""
        where, params = (" WHERE crane=:crane", {"crane": crane}) if crane is not None else ("", {})
        with self._read() as db:
            rows = db.execute(f"SELECT * FROM monitor_heartbeats{where} ORDER BY crane, sensor", params).fetchall()
        return [Heartbeat(r["crane"], r["sensor"], r["at"], r["started_at"], r["last_packet"], int(r["packets"]),
                          int(r["findings_24h"]), r["every"], bool(r["stopped"]), int(r["beats"])) for r in rows]

    def count_recent_findings(self, crane: str, since: float, source: str | None = None) -> int:
        """How many of the crane's stored findings were last seen at or after ``since`` (of one source)."""
        params: dict[str, Any] = {"crane": crane, "since": since}
        extra = ""
        if source is not None:
            extra, params["source"] = " AND source=:source", source
        with self._read() as db:
            return int(db.execute(f"SELECT count(*) FROM findings WHERE crane=:crane AND last_seen >= :since{extra}",
                                  params).fetchone()[0])


    def timeline(self, crane: str, *, since: float | None = None, until: float | None = None) -> list[TimelineEntry]:
        """Every step of the crane's life cycle in time order (one query; see TimelineEntry)."""
        params: dict[str, Any] = {"crane": crane}
        bounds = []
        if since is not None:
            bounds.append("at >= :since")
            params["since"] = since
        if until is not None:
            bounds.append("at <= :until")
            params["until"] = until
        where = (" WHERE " + " AND ".join(bounds)) if bounds else ""
        with self._read() as db:
            rows = db.execute(f"SELECT * FROM ({_TIMELINE}) steps{where} ORDER BY at, {_KIND_ORDER}, seq",
                              params).fetchall()
        return [_timeline_entry(r) for r in rows]


def _finding_row(row: Row) -> FindingRow:
    from cranewatch.store.sqlite import _finding_from_row

    return FindingRow(_finding_from_row(row), row["effective"], row["source"], row["state_until"])
