"""What the console's pages show, read from the store: plain data in, plain data out.

Every function takes an open ``Store`` and returns JSON-ready dicts (the JSON API returns them
as they are; the templates render the same dicts), so a page and its API cannot disagree.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cranewatch.evidence_pcap import finding_frames
from cranewatch.fleet import require_crane
from cranewatch.gate import disposition_text, run_label
from cranewatch.heartbeat import in_service_health
from cranewatch.model import CATEGORIES, Finding, Severity, iso_time
from cranewatch.store import COUNTING_STATES, FINDING_STATES, Run, Store
from cranewatch.store.console import (
    FINDING_SORTS,
    FINDING_SOURCES,
    MAX_PAGE,
    FindingQuery,
    FindingRow,
)

MONITOR_PREFIX = "monitor:"
SEVERITIES = tuple(str(s) for s in Severity)  # info .. critical
SORTS = FINDING_SORTS  # time (newest first), severity (worst first), rule
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
CLOSED_STATES = tuple(s for s in FINDING_STATES if s not in COUNTING_STATES)
CSV_COLUMNS = ("id", "crane", "state", "severity", "category", "rule", "title", "first_seen", "last_seen",
               "count", "src", "dst", "technique", "source", "until", "remedy")


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """A filtered, sorted, searched page of a crane's findings (``limit`` None: all), as the
    console's pages and API take it from a query string; ``Store.query_findings`` does the work."""

    severity: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    host: str = ""
    q: str = ""
    sort: str = "severity"
    offset: int = 0
    limit: int | None = None

    @classmethod
    def from_query(cls, query: Any, *, default_limit: int | None = None) -> FindingFilter:
        def many(key: str, allowed: Sequence[str]) -> tuple[str, ...]:
            values = query.getlist(key) if hasattr(query, "getlist") else [query.get(key)]
            return tuple(v for v in values if v in allowed)  # an unknown value selects nothing else

        def number(key: str, default: int | None, top: int) -> int | None:
            text = query.get(key)
            if not text:
                return default
            try:
                return max(0, min(int(text), top))
            except ValueError:
                return default

        sort = query.get("sort") or "severity"
        limit = number("limit", default_limit, MAX_PAGE)
        return cls(many("severity", SEVERITIES), many("category", CATEGORIES), many("state", FINDING_STATES),
                   many("source", FINDING_SOURCES), (query.get("host") or "").strip()[:200],
                   (query.get("q") or "").strip()[:200], sort if sort in SORTS else "severity",
                   number("offset", 0, 10**9) or 0, limit or None)

    def query_string(self, **change: Any) -> str:
        from urllib.parse import urlencode

        pairs: list[tuple[str, Any]] = []
        for key in ("severity", "category", "state", "source"):
            pairs.extend((key, v) for v in change.get(key, getattr(self, key)))
        for key in ("host", "q", "sort", "offset", "limit"):
            value = change.get(key, getattr(self, key))
            if value not in ("", None):
                pairs.append((key, value))
        return urlencode(pairs)

    def query(self, crane: str, *, limit: int, offset: int) -> FindingQuery:
        return FindingQuery(crane=crane, severity=self.severity, category=self.category, state=self.state,
                            source=self.source, host=self.host or None, text=self.q or None, sort=self.sort,
                            limit=limit, offset=offset)


def finding_record(row: FindingRow) -> dict[str, Any]:
    """The Finding contract plus ``state``, ``source``, ``until`` and whether it counts in the gate."""
    return {**row.to_json(), "counts": row.state in COUNTING_STATES}


def findings(store: Store, crane: str, flt: FindingFilter | None = None) -> tuple[list[dict[str, Any]], int]:
    """(the page of the crane's findings the filter asks for — all when its limit is None —,
    how many match in all)."""
    flt = flt or FindingFilter()
    record = require_crane(store, crane)
    if flt.limit is not None:
        page = store.query_findings(flt.query(record.name, limit=flt.limit, offset=flt.offset))
        return [finding_record(r) for r in page.rows], page.total
    rows: list[dict[str, Any]] = []
    offset = flt.offset
    while True:
        page = store.query_findings(flt.query(record.name, limit=MAX_PAGE, offset=offset))
        rows.extend(finding_record(r) for r in page.rows)
        offset += MAX_PAGE
        if offset >= page.total or not page.rows:
            return rows, page.total


def closed_findings(store: Store, crane: str) -> set[str]:
    """Ids of the crane's findings a disposition took out of the gate (usually few)."""
    rows, _ = findings(store, crane, FindingFilter(state=CLOSED_STATES))
    return {r["id"] for r in rows}


def finding_facets() -> dict[str, list[str]]:
    """The values the filter offers."""
    return {"severity": list(reversed(SEVERITIES)), "state": list(FINDING_STATES), "category": list(CATEGORIES),
            "source": list(FINDING_SOURCES)}


def finding_detail(store: Store, crane: str, finding: str) -> dict[str, Any] | None:
    """One finding with its state, runs, dispositions and notes (None: no such finding)."""
    record = require_crane(store, crane)
    now = time.time()
    row = store.finding_row(record.name, finding, now=now)
    if row is None:
        return None
    runs = {r.id: r for r in store.runs(record.name)}
    seen_ids = store.finding_run_ids(record.name, finding)
    history = [{**d.to_json(), "text": disposition_text(d, now)} for d in store.dispositions(record.name, finding)]
    events = [e.to_json() for e in store.audit_events(record.name)
              if e.subject == finding and e.action in ("note", "assign")]
    assigned = next((e["detail"].get("assignee") for e in reversed(events) if e["action"] == "assign"), None)
    seen = [{"run": runs[i].id, "label": run_label(runs[i]), "kind": runs[i].kind,
             "inputs": [{"path": x.path, "sha256": x.sha256} for x in runs[i].inputs]}
            for i in seen_ids if i in runs]
    return {**finding_record(row), "runs": list(seen_ids), "history": history, "notes": events,
            "assignee": assigned, "seen_in": seen, "frames": {k: list(v) for k, v in finding_frames(row.finding).items()},
            "attack": [{"id": tid, "url": attack_url(tid)} for tid in row.finding.technique]}


def attack_url(technique: str) -> str:
    """MITRE ATT&CK's page of a technique id (T0836, T1021.004); a link, nothing is fetched."""
    base, _, sub = technique.partition(".")
    return f"https://attack.mitre.org/techniques/{base}/" + (f"{sub}/" if sub else "")


def open_incidents(store: Store, crane: str, closed: set[str] | None = None, *, limit: int | None = None,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of the crane's incidents (all when ``limit`` is None), most severe first, each
    open when a member finding still counts in the gate; and how many there are."""
    if closed is None:
        closed = closed_findings(store, crane)
    if limit is None:
        found, total = store.incidents(crane), -1
    else:
        found, total = store.incidents_page(crane, limit=limit, offset=offset)
    out = []
    for n in found:
        shut = sum(f in closed for f in n.findings)
        out.append({**n.to_json(), "open": shut < len(n.findings), "closed_findings": shut})
    return out, len(out) if total < 0 else total


def grouped_incidents(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings grouped by rule and asset, for a crane whose runs stored no incidents."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["rule"], r.get("src") or r.get("dst") or "-"), []).append(r)
    out = []
    for (rule, asset), members in groups.items():
        worst = max(members, key=lambda r: _RANK.get(r["severity"], 0))
        out.append({"id": f"{rule}@{asset}", "title": f"{rule} on {asset}", "severity": worst["severity"],
                    "findings": [m["id"] for m in members], "assets": [asset],
                    "open": any(m["state"] in ("open", "acknowledged") for m in members),
                    "first_seen": min((m["first_seen"] or "" for m in members), default=""),
                    "last_seen": max((m["last_seen"] or "" for m in members), default=""), "timeline": []})
    return sorted(out, key=lambda n: (-_RANK.get(n["severity"], 0), n["id"]))


def monitor_runs(store: Store, crane: str) -> list[Run]:
    return [r for r in store.runs(crane, "analyze") if (r.component or "").startswith(MONITOR_PREFIX)]


def crane_tile(store: Store, crane: str, now: float | None = None) -> dict[str, Any]:
    """A crane as the quay shows it: life cycle, gate, open incidents by severity, evidence, monitor."""
    at = time.time() if now is None else now
    record = require_crane(store, crane)
    gate = store.latest_gate(record.name)
    total = store.query_findings(FindingQuery(crane=record.name, limit=1)).total
    counting = store.query_findings(FindingQuery(crane=record.name, state=tuple(COUNTING_STATES), limit=1)).total
    by_severity = store.incident_counts(record.name, closed_findings(store, record.name))
    runs = [r for r in store.runs(record.name) if r.kind != "gate" and r.status == "complete"]
    evidence = [r for r in runs if not (r.component or "").startswith(MONITOR_PREFIX)]
    health = next(iter(in_service_health(store, record.name, now=at)), None)
    return {
        "crane": record.name, "maker": record.maker, "model": record.model, "state": record.state,
        "decision": gate.decision if gate else None, "decided_by": gate.who if gate else None,
        "decided_at": iso_time(gate.at) if gate else None,
        "open_findings": counting, "findings": total,
        "open_incidents": {s: by_severity.get(s, 0) for s in reversed(SEVERITIES) if by_severity.get(s)},
        "last_evidence": iso_time(max((r.finished_at or 0 for r in evidence), default=None) or None),
        "last_evidence_run": run_label(evidence[-1]) if evidence else None,
        "monitor": health.to_json() if health is not None else {"status": "never"},
    }


def quay(store: Store) -> list[dict[str, Any]]:
    return [crane_tile(store, c.name) for c in store.cranes()]


def timeline(store: Store, crane: str) -> list[dict[str, Any]]:
    """The crane's life cycle (``Store.timeline``: transitions, runs, dispositions, gate decisions,
    supersedes, re-recordings, rulesets) with the console's notes and assignments, in time order."""
    out = []
    for entry in store.timeline(crane):
        record = entry.to_json()
        if entry.kind == "gate":  # its "why" is the reasons' JSON: say how many
            try:
                record["why"] = f"{len(json.loads(entry.why))} reason(s)"
            except ValueError:
                pass
        out.append((entry.at, record))
    for e in store.audit_events(crane):
        if e.action in ("note", "assign"):
            text = f"{e.subject}" + (f" → {e.detail.get('assignee')}" if e.action == "assign" else "")
            out.append((e.at, {"at": iso_time(e.at), "kind": e.action, "who": e.who, "why": e.why,
                               "subject": e.subject, "text": text, "detail": e.detail}))
    out.sort(key=lambda pair: pair[0])
    return [record for _, record in out]


def images(store: Store, crane: str) -> list[dict[str, Any]]:
    """Every image scan of the crane, newest first, with its findings by severity and its SBOM summary."""
    record = require_crane(store, crane)
    out = []
    for r in reversed(store.runs(record.name, "scan-image")):
        found = store.findings(record.name, [r.id])
        sbom = _sbom(store.run_artifact(r.id, "sbom"))
        out.append({"run": r.id, "component": r.component, "status": r.status, "label": run_label(r),
                    "finished": iso_time(r.finished_at), "superseded": r.superseded,
                    "inputs": [{"path": i.path, "sha256": i.sha256, "size": i.size} for i in r.inputs],
                    "by_severity": dict(Counter(str(f.severity) for f in found)), "findings": len(found),
                    "top": [f.to_json() for f in found[:10]], "sbom": sbom})
    return out


def _sbom(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    components = doc.get("components", []) if isinstance(doc, dict) else []
    packages = [{"name": c.get("name"), "version": c.get("version"), "purl": c.get("purl")}
                for c in components if isinstance(c, dict)]
    return {"packages": len(packages), "list": packages[:500],
            "vulnerabilities": len(doc.get("vulnerabilities", []) if isinstance(doc, dict) else [])}


def monitor_findings(store: Store, *, after_run: int = 0, crane: str | None = None,
                     limit: int = 200) -> tuple[list[dict[str, Any]], int]:
    """In-service findings, newest first, and the newest monitor run id of all (the live
    stream's cursor; 0 when there is none).

    A monitor checkpoint is a run holding every finding of its session so far, so each sensor's
    latest checkpoint is its current picture: with ``after_run`` 0, the findings of those; after
    a cursor, only what the checkpoints since then added (not in the sensor's checkpoint before)
    or saw again (last seen after that checkpoint was recorded)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    cursor = 0
    for c in store.cranes():
        if crane and c.name != crane:
            continue
        by_sensor: dict[str, list[Run]] = {}
        for r in monitor_runs(store, c.name):
            cursor = max(cursor, r.id)
            if r.status == "complete":
                by_sensor.setdefault(r.component or "", []).append(r)
        for component, runs in by_sensor.items():
            fresh = [r for r in runs if r.id > after_run]
            if not fresh:
                continue
            if after_run <= 0:
                fresh = fresh[-1:]  # the current picture
            earlier = [r for r in runs if r.id < fresh[0].id]
            previous = earlier[-1] if earlier and after_run > 0 else None
            before = {f.id for f in store.findings(c.name, [previous.id])} if previous else set()
            since = (previous.finished_at or 0.0) if previous else 0.0
            for r in fresh:
                now = store.findings(c.name, [r.id])
                for f in now:
                    # the store keeps a finding once (latest count, last sighting): new to the
                    # sensor's picture, or seen again since its checkpoint before
                    if f.id not in before or (f.last_seen or 0.0) > since:
                        out[(c.name, f.id)] = {**f.to_json(), "crane": c.name, "run": r.id,
                                               "sensor": component[len(MONITOR_PREFIX):],
                                               "recorded": iso_time(r.finished_at)}
                before, since = {f.id for f in now}, r.finished_at or since
    latest = sorted(out.values(), key=lambda x: (x["run"], x["last_seen"] or ""), reverse=True)
    return latest[:limit], cursor


def findings_csv(rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_csv_cell(";".join(r[c]) if isinstance(r.get(c), list) else r.get(c))
                         for c in CSV_COLUMNS])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def jsonl(rows: Iterable[dict[str, Any]]) -> str:
    from cranewatch.report.jsonl import json_line

    return "".join(json_line(r) for r in rows)


def finding_from_record(rec: dict[str, Any]) -> Finding:
    keys = ("id", "rule", "category", "severity", "crane", "title", "first_seen", "last_seen", "count", "src",
            "dst", "technique", "evidence", "remedy")
    return Finding.from_json({k: rec[k] for k in keys})


def process_plots(store: Store, crane: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The crane's process findings, worst first, each with the indexes of its evidence that
    carry a plot of the signals around the incident (``process/plot.py``, shaded)."""
    page = store.query_findings(FindingQuery(crane=require_crane(store, crane).name, source=("process",),
                                             sort="severity", limit=limit))
    out = []
    for row in page.rows:
        plots = [i for i, e in enumerate(row.finding.evidence) if isinstance(e.values.get("svg"), str)]
        if plots:
            out.append({"id": row.finding.id, "title": row.finding.title, "severity": str(row.finding.severity),
                        "state": row.state, "plots": plots})
    return out
