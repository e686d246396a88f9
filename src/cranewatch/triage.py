"""Triage: a person's dispositions of stored findings, and setting runs aside, with their rules.

The library API the CLI (``cranewatch triage``, ``runs``, ``supersede``) and the web console
call. A finding's state changes only here, by a recorded disposition (who, when, why):

- ``open`` / ``acknowledged``: the finding counts in the gate's decision (acknowledged: a
  person has seen it and works on it);
- ``false-positive``: the rule is wrong about this target; the finding leaves the decision;
- ``accepted-risk``: an officer accepts it until a date (``until``, required, in the future);
  past that date it is open again;
- ``remediated``: names the evidence — a later complete run of the same component (an image
  scan) or of traffic that saw the finding's host, in which the finding's rule was actually
  checked and no longer fires on the same target (its stable id is absent). Seen again in a
  later run, or its evidence superseded, the finding is reopened by cranewatch itself.

Finding ids are stable across runs (``model.finding_id``): the same finding in two runs is one
stored finding with both runs as its evidence, so a disposition covers it wherever it recurs.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from cranewatch.errors import StateError, UsageError
from cranewatch.fleet import current_user, require_crane
from cranewatch.model import Finding, iso_time
from cranewatch.store import COUNTING_STATES, FINDING_STATES, Disposition, Run, Store


@dataclass(frozen=True, slots=True)
class TriagedFinding:
    """A stored finding with the state it is in now and why."""

    finding: Finding
    state: str  # effective now: an expired acceptance is open
    disposition: Disposition | None  # the latest one (None: never disposed of, open)
    runs: tuple[int, ...]  # every run that saw it

    @property
    def counts(self) -> bool:
        """Whether it still counts in the gate's decision."""
        return self.state in COUNTING_STATES

    def to_json(self) -> dict[str, object]:
        return {"type": "triage", "id": self.finding.id, "crane": self.finding.crane, "state": self.state,
                "counts": self.counts, "severity": str(self.finding.severity), "category": self.finding.category,
                "rule": self.finding.rule, "title": self.finding.title, "runs": list(self.runs),
                "disposition": None if self.disposition is None else self.disposition.to_json()}


def triaged(store: Store, crane: str, *, now: float | None = None) -> list[TriagedFinding]:
    """Every stored finding of the crane with its state now, most severe first."""
    at = time.time() if now is None else now
    record = require_crane(store, crane)
    latest = store.latest_dispositions(record.name)
    runs = store.finding_runs(record.name)
    out = []
    for f in store.findings(record.name):
        d = latest.get(f.id)
        out.append(TriagedFinding(f, "open" if d is None else d.effective(at), d, runs.get(f.id, ())))
    return out


def parse_until(text: str, *, now: float | None = None) -> float:
    """An expiry as epoch seconds: ``YYYY-MM-DD`` means the end of that day (UTC); an ISO 8601
    time is taken as given (UTC unless it says otherwise). It must lie in the future."""
    at = time.time() if now is None else now
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            # the last instant of that day: "accepted until 31 January" holds all of the 31st
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, microseconds=-1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"--until {text!r}: expected a date YYYY-MM-DD or an ISO 8601 time") from None
    if moment.timestamp() <= at:
        raise UsageError(f"--until {text}: the expiry must lie in the future (now {iso_time(at)})")
    return moment.timestamp()


def resolve_finding(store: Store, ref: str, crane: str | None = None) -> tuple[str, str]:
    """(crane, finding id) of the one stored finding ``ref`` names (its id or an unambiguous start)."""
    if not ref.strip():
        raise UsageError("name the finding (its id, e.g. cw-7a202b043f052f65f043)")
    matches = store.locate_finding(ref.strip(), crane)
    if not matches:
        where = f" of {crane}" if crane else ""
        raise UsageError(f"no stored finding{where} is {ref} (list them: cranewatch triage --list CRANE)")
    if len(matches) > 1:
        shown = ", ".join(f"{c}:{i}" for c, i in matches[:6])
        raise UsageError(f"{ref} names {len(matches)} findings ({shown}{' ...' if len(matches) > 6 else ''}): "
                         "give more of the id, or --crane")
    return matches[0]


def dispose(
    store: Store,
    ref: str,
    state: str,
    *,
    reason: str,
    by: str | None = None,
    until: str | float | None = None,
    evidence: int | None = None,
    crane: str | None = None,
    now: float | None = None,
) -> Disposition:
    """Record a disposition of a stored finding after checking it is one the rules allow."""
    at = time.time() if now is None else now
    if state not in FINDING_STATES:
        raise UsageError(f"--state {state}: one of {', '.join(FINDING_STATES)}")
    if not reason.strip():
        raise UsageError("say why (--reason): the disposition is recorded with it")
    crane_name, finding_id = resolve_finding(store, ref, crane)
    expiry: float | None = None
    if state == "accepted-risk":
        if until is None:
            raise UsageError("accepted-risk needs an expiry: --until YYYY-MM-DD")
        if not by:
            raise UsageError("accepted-risk needs the officer who accepts the risk: --by NAME")
        expiry = parse_until(until, now=at) if isinstance(until, str) else float(until)
        if expiry <= at:
            raise UsageError("the expiry of an accepted risk must lie in the future")
    elif until is not None:
        raise UsageError("--until is for accepted-risk only")
    if state == "remediated":
        if evidence is None:
            raise UsageError("remediated needs the evidence: --evidence RUN (a later run in which the finding's "
                             "rule was checked and no longer fires; list runs: cranewatch runs CRANE)")
        check_remediation(store, crane_name, finding_id, evidence)
    elif evidence is not None:
        raise UsageError("--evidence is for remediated only")
    return store.record_disposition(crane_name, finding_id, state, who=by or current_user(), why=reason.strip(),
                                    until=expiry, evidence_run=evidence, at=at)


def check_remediation(store: Store, crane: str, finding_id: str, evidence: int) -> None:
    """Refuse, saying why, unless run ``evidence`` shows the finding gone: a later complete run,
    not superseded, of the same component (image scan) or of traffic holding the finding's
    host, that ran the finding's rule and has no finding with its id (suppressed counts as there)."""
    (finding,) = [f for f in store.findings(crane) if f.id == finding_id]
    run = store.run(evidence)
    refuse = f"run {evidence} cannot show {finding_id} remediated:"
    if run is None or run.crane != crane:
        raise StateError(f"{refuse} {crane} has no run {evidence} (list them: cranewatch runs {crane})")
    if run.kind == "gate":
        raise StateError(f"{refuse} it is a gate decision, not a rescan or capture")
    if run.status != "complete":
        raise StateError(f"{refuse} it is {run.status}, not complete")
    if run.superseded:
        raise StateError(f"{refuse} it was superseded ({run.superseded_reason})")
    seen = store.finding_runs(crane).get(finding_id, ())
    if evidence in seen:
        raise StateError(f"{refuse} the finding still fires in it")
    if seen and evidence < max(seen):
        raise StateError(f"{refuse} it is not later than run {max(seen)}, which saw the finding")
    seen_runs = [r for r in (store.run(i) for i in seen) if r is not None]
    last = seen_runs[-1] if seen_runs else None
    _check_same_subject(refuse, run, last)
    coverage = store.run_coverage(evidence)
    if coverage is None:
        raise StateError(f"{refuse} it does not record what it examined (recorded by an older cranewatch or "
                         "without coverage): record the rescan or capture with `--db` and name that run")
    family = rule_family(finding.rule, run.kind)
    if family not in coverage.checks:
        raise StateError(f"{refuse} the {family} checks, which raise {finding.rule}, did not run in it "
                         f"(it ran: {', '.join(coverage.checks) or 'none'})")
    if finding_id in coverage.suppressed:
        raise StateError(f"{refuse} the finding is still there, suppressed by the scan's reference image")
    if run.kind == "analyze":
        hosts = finding_hosts(finding)
        observed = {ip for h in coverage.hosts for ip in h.ips}
        if hosts and not hosts & observed:
            raise StateError(f"{refuse} its traffic never shows {', '.join(sorted(hosts))}, so it cannot show "
                             "the finding gone")


def _check_same_subject(refuse: str, run: Run, last: Run | None) -> None:
    if last is None:
        return
    if last.kind != run.kind:
        what = "an image scan" if last.kind == "scan-image" else "a traffic analysis"
        raise StateError(f"{refuse} the finding came from {what} (run {last.id}); the evidence must be one too")
    if run.kind == "scan-image" and (run.component or "").lower() != (last.component or "").lower():
        raise StateError(f"{refuse} it scanned {run.component or 'no named component'}, but the finding is of "
                         f"{last.component or 'an unnamed image'} (run {last.id})")


def rule_family(rule: str, kind: str) -> str:
    """Which check family raises ``rule`` (what a run's coverage must list for it to count)."""
    if kind == "scan-image":
        if rule.startswith("vuln."):
            return "image-vulndb"
        if rule.startswith("yara."):
            return "image-yara"
        return "image"
    return "process" if rule.startswith("process-") else "network"


def finding_hosts(finding: Finding) -> set[str]:
    """The IP addresses a finding names in ``src``/``dst`` (ports stripped)."""
    out = set()
    for value in (finding.src, finding.dst):
        if not value:
            continue
        text = value
        if text.startswith("["):
            text = text[1:].split("]", 1)[0]
        elif text.count(":") == 1:
            text = text.split(":", 1)[0]
        try:
            out.add(str(ipaddress.ip_address(text)))
        except ValueError:
            continue
    return out


def supersede(store: Store, run_id: int, *, reason: str, by: str | None = None) -> Run:
    """Set a run aside with who and why; it stays in the store and the report, marked."""
    return store.supersede_run(run_id, who=by or current_user(), why=reason.strip())
