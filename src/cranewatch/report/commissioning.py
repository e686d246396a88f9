"""The commissioning report as one frozen document, built from the store, read by every renderer.

``build_report`` gathers a crane's facts, its life-cycle history and audit trail (dispositions,
supersedes, re-recordings), the latest gate decision and the evidence it rests on (every run,
superseded ones marked, with hashed inputs; the incidents the traffic findings make; every
finding with its state; SBOM summaries), the communication map of its traffic runs and the
firewall rulesets. ``report_records`` is its JSON-lines form; ``report_digest`` a sha256 over
those records that the signature block quotes, so a signed paper copy can be matched to data.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cranewatch import __version__
from cranewatch.commap import CommMap, communication_map
from cranewatch.fleet import require_crane
from cranewatch.gate import (
    GateDecision,
    disposition_text,
    finding_sources,
    gather_evidence,
    latest_decision,
)
from cranewatch.incidents import Incident, group_incidents
from cranewatch.model import Finding, iso_time
from cranewatch.store import AuditEvent, Crane, Disposition, HistoryEntry, Run, Store, StoredRuleset

SIGNATURE_ROLES = ("Analyst", "OT security lead", "Facility security officer")


@dataclass(frozen=True, slots=True)
class SbomSummary:
    """What one image scan's SBOM holds, in brief."""

    run: int
    component: str | None
    image: str
    os: str | None
    packages: int
    by_manager: tuple[tuple[str, int], ...]
    vulnerabilities: int
    sample: tuple[tuple[str, str, str], ...]  # (name, version, manager), first of the sorted list


@dataclass(frozen=True, slots=True)
class CommissioningReport:
    crane: Crane
    history: tuple[HistoryEntry, ...]
    decision: GateDecision | None
    findings: tuple[Finding, ...]
    finding_sources: dict[str, str]  # finding id → "image scan of CMS (run 3)"
    runs: tuple[Run, ...]  # every analysis run of the crane (superseded ones too), for the inputs table
    sboms: tuple[SbomSummary, ...]
    rulesets: tuple[StoredRuleset, ...]
    generated_at: float
    tool_version: str = __version__
    audit: tuple[AuditEvent, ...] = ()
    dispositions: dict[str, Disposition] = field(default_factory=dict)  # finding id → latest
    incidents: tuple[Incident, ...] = ()  # the traffic findings of one cause together
    comm_map: CommMap | None = None  # who talked to whom in the recorded traffic runs

    def state(self, finding: str) -> str:
        """The finding's state when the report was made (open unless a disposition says otherwise)."""
        d = self.dispositions.get(finding)
        return "open" if d is None else d.effective(self.generated_at)

    def disposition_text(self, finding: str) -> str | None:
        d = self.dispositions.get(finding)
        return None if d is None else disposition_text(d, self.generated_at)


def _sbom_summary(store: Store, run: Run) -> SbomSummary | None:
    text = store.run_artifact(run.id, "sbom")
    if text is None:
        return None
    doc = json.loads(text)
    components = doc.get("components", [])
    managers: Counter[str] = Counter()
    rows: list[tuple[str, str, str]] = []
    for c in components:
        props = {p.get("name"): p.get("value") for p in c.get("properties", [])}
        manager = str(props.get("cranewatch:manager", c.get("type", "?")))
        managers[manager] += 1
        rows.append((str(c.get("name", "?")), str(c.get("version", "")), manager))
    meta = doc.get("metadata", {}).get("component", {})
    return SbomSummary(
        run=run.id,
        component=run.component,
        image=str(meta.get("name", "")),
        os=meta.get("description"),
        packages=len(components),
        by_manager=tuple(sorted(managers.items())),
        vulnerabilities=len(doc.get("vulnerabilities", [])),
        sample=tuple(sorted(rows)[:25]),
    )


def build_report(store: Store, crane: str, *, decision: GateDecision | None = None) -> CommissioningReport:
    """Everything the commissioning report shows, read from the store (decision: latest recorded)."""
    record = require_crane(store, crane)
    decision = decision or latest_decision(store, record.name)
    now = time.time()
    evidence = gather_evidence(store, record, now=now)
    findings = {f.id: f for r in evidence.runs for f in evidence.findings_by_run.get(r.id, ())}
    ordered = tuple(sorted(findings.values(), key=lambda f: (-int(f.severity), f.category, f.id)))
    latest_scans = [r for r in store.latest_complete_runs(record.name) if r.kind == "scan-image"]
    sboms = tuple(s for s in (_sbom_summary(store, r) for r in latest_scans) if s)
    rulesets = tuple(r for r in (store.latest_ruleset(record.name, p) for p in ("quarantine", "in-service")) if r)
    return CommissioningReport(
        crane=record,
        history=tuple(store.history(record.name)),
        decision=decision,
        findings=ordered,
        finding_sources=finding_sources(evidence),
        runs=tuple(r for r in store.runs(record.name) if r.kind != "gate"),
        sboms=sboms,
        rulesets=rulesets,
        generated_at=now,
        audit=tuple(store.audit_events(record.name)),
        dispositions=evidence.dispositions,
        incidents=group_incidents(ordered),
        comm_map=communication_map(store, record.name),
    )


def run_record(run: Run) -> dict[str, Any]:
    """A run as a JSON-lines record (``"type": "run"``): superseded runs are listed, never dropped."""
    return {"type": "run", "run": run.id, "kind": run.kind, "component": run.component, "status": run.status,
            "started": iso_time(run.started_at), "finished": iso_time(run.finished_at),
            "tool_version": run.tool_version, "recordings": run.recordings, "recorded_by": run.recorded_by,
            "note": run.note,
            "superseded": None if not run.superseded else {
                "at": iso_time(run.superseded_at), "by": run.superseded_by, "reason": run.superseded_reason}}


def report_records(report: CommissioningReport) -> list[dict[str, Any]]:
    """The report as JSON-lines records, each with a ``type`` (findings exactly ``Finding.to_json()``)."""
    out: list[dict[str, Any]] = [
        {"type": "report", "crane": report.crane.name, "generated": iso_time(report.generated_at),
         "tool_version": report.tool_version},
        {"type": "crane", **report.crane.to_json()},
    ]
    if report.decision is not None:
        out.append(report.decision.to_json())
    else:
        out.append({"type": "decision", "crane": report.crane.name, "decision": None,
                    "reasons": [{"kind": "missing-evidence", "text": "the gate has not been run"}]})
    out.extend(n.to_json() for n in report.incidents)
    for f in report.findings:
        d = report.dispositions.get(f.id)
        out.append({**f.to_json(), "evidence_run": report.finding_sources.get(f.id), "state": report.state(f.id),
                    "disposition": None if d is None else d.to_json()})
    for s in report.sboms:
        out.append({"type": "sbom-summary", "run": s.run, "component": s.component, "image": s.image,
                    "os": s.os, "packages": s.packages, "by_manager": dict(s.by_manager),
                    "vulnerabilities": s.vulnerabilities})
    for r in report.rulesets:
        out.append({"type": "ruleset", "purpose": r.purpose, "at": iso_time(r.at), "who": r.who,
                    "sha256": r.sha256, "text": r.text})
    for run in report.runs:
        out.append(run_record(run))
        for i in run.inputs or ():
            out.append({"type": "input", "run": run.id, "kind": run.kind, "component": run.component,
                        "status": run.status, "tool_version": run.tool_version,
                        "started": iso_time(run.started_at), "path": i.path, "size": i.size,
                        "sha256": i.sha256})
    for h in report.history:
        out.append({"type": "history", "at": iso_time(h.at), "who": h.who, "why": h.why,
                    "from": h.from_state, "to": h.to_state})
    out.extend(e.to_json() for e in report.audit)
    out.append({"type": "signature", "digest": report_digest(out), "roles": list(SIGNATURE_ROLES)})
    return out


def report_digest(records: list[dict[str, Any]]) -> str:
    """sha256 over the records (without the report header's time and the signature record)."""
    body = [r for r in records if r.get("type") not in ("report", "signature")]
    text = "\n".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in body)
    return hashlib.sha256(text.encode()).hexdigest()
