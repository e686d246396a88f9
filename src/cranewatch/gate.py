"""The commissioning gate: from a crane's recorded evidence to cleared, rejected or needs-review.

The evidence is everything the store holds for the crane: every finding of every complete run
(traffic and process analyses, image scans of each component, in quarantine and before, a
superseded run included), each in the state its latest disposition gave it, and the crane's
profile. A finding leaves the decision only by a recorded disposition (``cranewatch.triage``):
a later clean run does not make an earlier finding go away. Which evidence exists (an image
scan per component, a quarantine capture) is judged from the runs not superseded; registered
parts never seen in the quarantine traffic, and hosts seen there that are not registered, are
evidence gaps. ``assess`` is the pure core (evidence and policy in, decision and reasons out);
``decide`` reads the store, records the decision and moves the life cycle
(under-analysis → cleared | rejected). The ``record_*`` / ``*_and_record`` functions put scan
and analysis results into the store as runs the gate can read, with what each examined.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch.conversations import Conversation, ConversationBook
from cranewatch.errors import CranewatchError, InputError, Location, UsageError
from cranewatch.fleet import current_user, require_crane, transition
from cranewatch.model import CATEGORIES, Finding, Severity, iso_time
from cranewatch.store import (
    COUNTING_STATES,
    Coverage,
    Crane,
    Disposition,
    ObservedHost,
    Run,
    RunInput,
    Store,
    hash_input,
)
from cranewatch.store.spool import SpooledRun

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile

DECISIONS = ("cleared", "rejected", "needs-review")
EVIDENCE_KINDS = ("image-scan", "quarantine-capture", "profile")


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """What blocks, what needs a person's review, and which evidence must exist."""

    block_severity: Severity = Severity.HIGH
    review_severity: Severity | None = Severity.MEDIUM
    always_block: frozenset[str] = frozenset(
        {"oob-connectivity", "hidden-uplink", "remote-access-tool", "remote-access"}
    )
    required_evidence: tuple[str, ...] = EVIDENCE_KINDS
    # component kinds that need their own image scan; a crane without such parts needs one scan
    image_scan_kinds: tuple[str, ...] = ("cms", "ocr")
    # registered parts a person must confirm (e.g. a cellular modem no contract asked for)
    review_component_kinds: tuple[str, ...] = ("modem",)

    def to_json(self) -> dict[str, Any]:
        return {
            "block_severity": str(self.block_severity),
            "review_severity": None if self.review_severity is None else str(self.review_severity),
            "always_block": sorted(self.always_block),
            "required_evidence": list(self.required_evidence),
            "image_scan_kinds": list(self.image_scan_kinds),
            "review_component_kinds": list(self.review_component_kinds),
        }


def policy_from_json(data: dict[str, Any]) -> GatePolicy:
    """The inverse of ``GatePolicy.to_json`` (a recorded decision keeps the policy it used)."""
    if not data:
        return GatePolicy()
    review = data.get("review_severity")
    return GatePolicy(
        block_severity=Severity.parse(data["block_severity"]),
        review_severity=None if review is None else Severity.parse(review),
        always_block=frozenset(data.get("always_block", ())),
        required_evidence=tuple(data.get("required_evidence", EVIDENCE_KINDS)),
        image_scan_kinds=tuple(data.get("image_scan_kinds", ())),
        review_component_kinds=tuple(data.get("review_component_kinds", ())),
    )


def policy_to_toml(policy: GatePolicy) -> str:
    """A gate policy as the TOML ``load_gate_policy`` reads (``cranewatch gate --print-policy``)."""
    def strings(values: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    review = "none" if policy.review_severity is None else str(policy.review_severity)
    return "\n".join([
        "# cranewatch gate policy: what blocks a crane from service, and which evidence must exist.",
        "# Use with: cranewatch gate CRANE --policy FILE",
        "[gate]",
        "# findings of this severity or above reject the crane (info|low|medium|high|critical)",
        f'block_severity = "{policy.block_severity}"',
        '# findings of this severity or above (but below block_severity) need a person\'s review; "none" to skip',
        f'review_severity = "{review}"',
        "# finding categories that reject the crane whatever their severity",
        f"always_block = {strings(sorted(policy.always_block))}",
        f"# evidence that must be recorded: {', '.join(EVIDENCE_KINDS)}",
        f"required_evidence = {strings(policy.required_evidence)}",
        "# component kinds that each need their own image scan",
        f"image_scan_kinds = {strings(policy.image_scan_kinds)}",
        "# registered component kinds a person must confirm (e.g. a cellular modem)",
        f"review_component_kinds = {strings(policy.review_component_kinds)}",
        "",
    ])


def load_gate_policy(path: str | Path) -> GatePolicy:
    """A gate policy from TOML (a ``[gate]`` table or top-level keys); unknown keys are errors."""
    file = Path(path)
    where = Location(file=str(file))
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read gate policy: {exc.strerror}", where) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"gate policy is not valid TOML: {exc}", where) from None
    table = data.get("gate", data)
    known = set(GatePolicy.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"unknown gate policy keys {unknown} (known: {sorted(known)})", where)
    kwargs: dict[str, Any] = {}
    try:
        if "block_severity" in table:
            kwargs["block_severity"] = Severity.parse(str(table["block_severity"]))
        if "review_severity" in table:
            value = table["review_severity"]
            kwargs["review_severity"] = None if value in ("", "none") else Severity.parse(str(value))
    except ValueError as exc:
        raise InputError(str(exc), where) from None
    if "always_block" in table:
        bad = [c for c in table["always_block"] if c not in CATEGORIES]
        if bad:
            raise InputError(f"always_block: unknown categories {bad}", where)
        kwargs["always_block"] = frozenset(table["always_block"])
    if "required_evidence" in table:
        bad = [e for e in table["required_evidence"] if e not in EVIDENCE_KINDS]
        if bad:
            raise InputError(f"required_evidence: unknown kinds {bad} (known: {list(EVIDENCE_KINDS)})", where)
        kwargs["required_evidence"] = tuple(table["required_evidence"])
    for key in ("image_scan_kinds", "review_component_kinds"):
        if key in table:
            kwargs[key] = tuple(str(k).lower() for k in table[key])
    return GatePolicy(**kwargs)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a decision: a blocking or questionable finding, or missing evidence."""

    # blocking-finding | review-finding | missing-evidence | incomplete-run | review-component |
    # review-baseline | evidence-gap | closed-finding (a disposition took it out: shown, not counted)
    kind: str
    text: str
    finding: str | None = None  # finding id
    severity: str | None = None
    category: str | None = None
    source: str | None = None  # which evidence: "image scan of CMS (run 3)"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (
            ("kind", self.kind), ("text", self.text), ("finding", self.finding),
            ("severity", self.severity), ("category", self.category), ("source", self.source),
        ) if v is not None}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the store holds for a crane: every complete run, its findings and their states."""

    runs: tuple[Run, ...]  # every complete analysis run, superseded ones too
    findings_by_run: dict[int, tuple[Finding, ...]]
    stale_runs: tuple[Run, ...] = ()  # started but never completed, with no complete rerun
    profile_problem: str | None = None  # None when the profile loaded
    profile_hosts: dict[str, tuple[str, str | None]] | None = None  # ip → (host name, MAC) of the profile
    baseline_beyond_profile: tuple[str, ...] = ()  # learned communications the profile does not allow
    dispositions: dict[str, Disposition] = field(default_factory=dict)  # finding id → latest
    coverage: dict[int, Coverage] = field(default_factory=dict)  # run id → what it examined
    now: float = 0.0  # when the states are judged (an acceptance may have expired)

    @property
    def standing_runs(self) -> tuple[Run, ...]:
        """The runs not superseded: what counts as evidence that exists."""
        return tuple(r for r in self.runs if not r.superseded)


@dataclass(frozen=True, slots=True)
class GateDecision:
    crane: str
    decision: str
    reasons: tuple[Reason, ...]
    findings: tuple[Finding, ...]
    runs: tuple[Run, ...]
    policy: GatePolicy
    state_change: str | None = None  # "under-analysis → rejected", or why the state did not move
    at: float | None = None
    who: str | None = None  # who decided (signs it: the report names them)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "decision",
            "crane": self.crane,
            "decision": self.decision,
            "at": iso_time(self.at),
            "reasons": [r.to_json() for r in self.reasons],
            "evidence": [run_label(r) for r in self.runs],
            "policy": self.policy.to_json(),
            "state_change": self.state_change,
        }


def run_label(run: Run) -> str:
    if run.kind == "scan-image":
        label = f"image scan of {run.component or 'the crane'} (run {run.id})"
    elif run.kind == "analyze":
        label = f"quarantine traffic analysis (run {run.id})"
    else:
        label = f"{run.kind} (run {run.id})"
    return label + (", superseded" if run.superseded else "")


def finding_sources(evidence: Evidence) -> dict[str, str]:
    """finding id → the runs that saw it, e.g. "quarantine traffic analysis (run 1); image scan of CMS (run 3)"."""
    out: dict[str, list[str]] = {}
    for run in evidence.runs:
        for f in evidence.findings_by_run.get(run.id, ()):
            out.setdefault(f.id, []).append(run_label(run))
    return {k: "; ".join(v) for k, v in out.items()}


def disposition_text(d: Disposition, now: float) -> str:
    """A disposition in one line: "accepted-risk by ana on 2026-12-07 until 2027-01-31: why"."""
    day = (iso_time(d.at) or "")[:10]
    text = f"{d.state} by {d.who} on {day}"
    if d.until is not None:
        text += f" until {(iso_time(d.until) or '')[:10]}"
    if d.evidence_run is not None:
        text += f" (evidence: run {d.evidence_run})"
    if d.effective(now) != d.state:
        text += " — expired, open again"
    return f"{text}: {d.why}"


def assess(crane: Crane, evidence: Evidence, policy: GatePolicy) -> tuple[str, tuple[Reason, ...]]:
    """The decision and its reasons (blocking first, then review, then missing evidence)."""
    blocking: list[Reason] = []
    review: list[Reason] = []
    closed: list[Reason] = []
    sources = finding_sources(evidence)
    for f in unique_findings(evidence):
        reason_args = dict(finding=f.id, severity=str(f.severity), category=f.category, source=sources.get(f.id))
        latest = evidence.dispositions.get(f.id)
        state = "open" if latest is None else latest.effective(evidence.now)
        if state not in COUNTING_STATES:
            assert latest is not None
            closed.append(Reason("closed-finding", f"{f.severity} {f.category}: {f.title} — "
                                 f"{disposition_text(latest, evidence.now)}", **reason_args))
            continue
        # acknowledged, an expired acceptance, reopened (by a person, or seen again): say so
        note = "" if latest is None else f" [{disposition_text(latest, evidence.now)}]"
        if f.severity >= policy.block_severity:
            blocking.append(Reason("blocking-finding", f"{f.severity} {f.category}: {f.title}{note}", **reason_args))
        elif f.category in policy.always_block:
            blocking.append(Reason("blocking-finding",
                                   f"{f.category} always blocks: {f.title}{note}", **reason_args))
        elif policy.review_severity is not None and f.severity >= policy.review_severity:
            review.append(Reason("review-finding", f"{f.severity} {f.category}: {f.title}{note}", **reason_args))

    missing: list[Reason] = []
    standing = evidence.standing_runs
    scans = [r for r in standing if r.kind == "scan-image"]
    if "image-scan" in policy.required_evidence:
        scanned = {(r.component or "").lower() for r in scans}
        parts = [c for c in crane.components if c.kind in policy.image_scan_kinds]
        for part in parts:
            if part.name.lower() not in scanned:
                missing.append(Reason("missing-evidence", f"no image scan recorded for {part.name}",
                                      source=f"component {part.name} ({part.kind})"))
        if not parts and not scans:
            missing.append(Reason("missing-evidence", f"no image scan recorded for {crane.name}"))
    if "quarantine-capture" in policy.required_evidence and not any(r.kind == "analyze" for r in standing):
        missing.append(Reason("missing-evidence",
                              f"no analysis of traffic recorded in quarantine for {crane.name}"))
    if "profile" in policy.required_evidence and evidence.profile_problem is not None:
        missing.append(Reason("missing-evidence", evidence.profile_problem))
    review.extend(profile_review(crane, evidence.profile_hosts))
    review.extend(Reason("review-baseline", f"the baseline saw {text}, which the profile does not allow",
                         source="baseline") for text in evidence.baseline_beyond_profile)
    for run in evidence.stale_runs:
        review.append(Reason("incomplete-run", f"{run_label(run)} did not complete ({run.status}"
                             f"{': ' + run.note if run.note else ''}); re-run it", source=run_label(run)))
    review.extend(evidence_gaps(crane, [(r, evidence.coverage.get(r.id)) for r in standing if r.kind == "analyze"]))
    for part in crane.components:
        if part.kind in policy.review_component_kinds:
            review.append(Reason("review-component",
                                 f"{part.name} ({part.kind}) is registered on the crane: confirm it is "
                                 "contracted and cannot reach outside the terminal",
                                 source=f"component {part.name}"))

    if blocking:
        decision = "rejected"
    elif missing or review:
        decision = "needs-review"
    else:
        decision = "cleared"
    return decision, (*blocking, *review, *missing, *closed)


def unique_findings(evidence: Evidence) -> tuple[Finding, ...]:
    """Every finding of every run once, most severe first."""
    unique = {f.id: f for r in evidence.runs for f in evidence.findings_by_run.get(r.id, ())}
    return tuple(sorted(unique.values(), key=lambda f: (-int(f.severity), f.category, f.id)))


def evidence_gaps(crane: Crane, traffic: Sequence[tuple[Run, Coverage | None]]) -> list[Reason]:
    """Registered parts never seen in the quarantine traffic (by IP or MAC), a registered part's
    IP seen with another MAC, and hosts of the crane zone seen there that are not registered."""
    if not traffic:
        return []  # no quarantine capture at all is missing evidence, said elsewhere
    hosts = [h for _, c in traffic if c is not None for h in c.hosts]
    if not hosts:
        runs = ", ".join(str(r.id) for r, c in traffic if c is None)
        return [Reason("evidence-gap", f"the recorded traffic (run(s) {runs}) does not say which hosts it saw "
                       "(recorded without coverage, e.g. by an older cranewatch): registered parts cannot be "
                       "matched to it; record the quarantine capture again", source="quarantine traffic")]
    seen_ips = {ip for h in hosts for ip in h.ips}
    seen_macs = {h.mac.lower() for h in hosts if h.mac}
    macs_of: dict[str, set[str]] = {}
    for h in hosts:
        for ip in h.ips:
            if h.mac:
                macs_of.setdefault(ip, set()).add(h.mac.lower())
    gaps: list[Reason] = []
    for part in crane.components:
        mac = part.mac.lower() if part.mac else None
        if part.ip is None and mac is None:
            continue
        where = ", ".join(x for x in (part.ip, mac) if x)
        if part.ip not in seen_ips and mac not in seen_macs:
            gaps.append(Reason("evidence-gap", f"{part.name} ({part.kind}, {where}) is registered but never seen "
                               "in the quarantine traffic: is it connected, and was the capture taken where "
                               "its traffic passes?", source=f"component {part.name}"))
        elif part.ip in seen_ips and mac and macs_of.get(part.ip) and mac not in macs_of[part.ip]:
            others = ", ".join(sorted(macs_of[part.ip]))
            gaps.append(Reason("evidence-gap", f"{part.name} ({part.ip}) is registered with MAC {mac} but its "
                               f"address was seen with MAC {others}", source=f"component {part.name}"))
    gaps.extend(_unregistered_hosts(crane, hosts))
    return gaps


def _unregistered_hosts(crane: Crane, hosts: Sequence[ObservedHost]) -> list[Reason]:
    if not crane.zone:
        return []
    zone = ipaddress.ip_network(crane.zone, strict=False)
    known_ips = {c.ip for c in crane.components if c.ip}
    known_macs = {c.mac.lower() for c in crane.components if c.mac}
    found: dict[str, set[str]] = {}
    for h in hosts:
        if h.mac and h.mac.lower() in known_macs:
            continue
        for ip in h.ips:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                continue
            if (addr not in zone or ip in known_ips or addr.is_multicast or addr.is_unspecified
                    or addr in (zone.network_address, zone.broadcast_address)):
                continue
            found.setdefault(ip, set()).update({h.mac.lower()} if h.mac else set())
    return [Reason("evidence-gap", f"{ip}{' (MAC ' + ', '.join(sorted(macs)) + ')' if macs else ''} was seen in "
                   f"the quarantine traffic inside the crane zone {crane.zone} but is not a registered part "
                   f"of {crane.name}", source="quarantine traffic")
            for ip, macs in sorted(found.items(), key=lambda kv: ipaddress.ip_address(kv[0]))]


def profile_review(crane: Crane, hosts: dict[str, tuple[str, str | None]] | None) -> list[Reason]:
    """Registered parts the profile does not know, or knows with another MAC: the profile is wrong
    or the crane is not what was delivered; either way a person must look."""
    if hosts is None:
        return []
    reasons: list[Reason] = []
    for part in crane.components:
        if part.ip is None:
            continue
        known = hosts.get(part.ip)
        if known is None:
            reasons.append(Reason("review-component", f"{part.name} ({part.ip}) is not a host of the profile",
                                  source=f"component {part.name}"))
        elif part.mac and known[1] and part.mac != known[1].lower():
            reasons.append(Reason("review-component",
                                  f"{part.name} has MAC {part.mac} but the profile's {known[0]} has {known[1]}",
                                  source=f"component {part.name}"))
    return reasons


def baseline_beyond_profile(profile: CraneProfile, baseline: Baseline) -> tuple[str, ...]:
    """Communications a learned baseline saw that the profile does not allow (``client → server:port``).

    Before a crane enters service its baseline becomes the allow-list; anything it adds to the
    profile is a question for a person (a forgotten allowance, or traffic that should not be).
    """
    names = {(server, port): name for server, port, name in getattr(baseline, "protocols", ())}
    out = []
    for client, server, port in sorted(getattr(baseline, "pairs", ())):
        protocol = names.get((server, port))
        if not profile.allows(client, server, protocol, port):
            out.append(f"{client} → {server}:{port}" + (f" ({protocol})" if protocol else ""))
    return tuple(out)


def gather_evidence(store: Store, crane: Crane, baseline: Baseline | None = None, *,
                    now: float | None = None) -> Evidence:
    runs = store.runs(crane.name)
    complete = tuple(r for r in runs if r.kind != "gate" and r.status == "complete")
    standing = [r for r in complete if not r.superseded]
    # a run that never completed matters only if nothing of its kind completed after it
    stale = tuple(
        r for r in runs
        if r.kind != "gate" and r.status != "complete" and not r.superseded
        and not any((d.kind, d.component) == (r.kind, r.component) and d.id > r.id for d in standing)
    )
    findings = {r.id: tuple(store.findings(crane.name, [r.id])) for r in complete}
    coverage = {r.id: c for r in complete if (c := store.run_coverage(r.id)) is not None}
    problem, profile = read_profile(crane)
    hosts = None if profile is None else {h.ip: (h.name, h.mac) for h in profile.hosts}
    beyond: tuple[str, ...] = ()
    if baseline is not None and profile is not None:
        beyond = baseline_beyond_profile(profile, baseline)
    return Evidence(complete, findings, stale, problem, hosts, beyond, store.latest_dispositions(crane.name),
                    coverage, time.time() if now is None else now)


def read_profile(crane: Crane) -> tuple[str | None, CraneProfile | None]:
    """(what is wrong with the crane's profile or None, the loaded ``CraneProfile`` or None)."""
    if not crane.profile_path:
        return f"no profile registered for {crane.name} (cranewatch fleet add --profile, or in the fleet file)", None
    from cranewatch.profile import load_profile

    try:
        return None, load_profile(crane.profile_path)
    except CranewatchError as exc:
        return f"the profile of {crane.name} does not load: {exc.message}", None


def decide(
    store: Store,
    crane: str,
    policy: GatePolicy | None = None,
    *,
    who: str | None = None,
    move: bool = True,
    baseline: Baseline | None = None,
) -> GateDecision:
    """Decide on ``crane`` from its recorded evidence, record the decision, move the life cycle.

    ``baseline`` (a loaded ``Baseline``: ``judging``) is reviewed against the
    profile: what it saw beyond the profile needs a person's review.
    """
    policy = policy or GatePolicy()
    record = require_crane(store, crane)
    evidence = gather_evidence(store, record, baseline)
    decision, reasons = assess(record, evidence, policy)
    actor = who or current_user()
    run_id = store.begin_run(
        record.name, "gate",
        [RunInput(f"run:{r.id}", i.sha256, i.size) for r in evidence.runs for i in r.inputs],
    )
    stored = store.record_gate(record.name, decision, [r.to_json() for r in reasons], policy.to_json(),
                               who=actor, run_id=run_id)
    store.finish_run(run_id, [], artifacts={"decision": json.dumps({"decision": decision})})
    change: str | None = None
    if decision in ("cleared", "rejected"):
        if move and record.state == "under-analysis":
            blocking = sum(r.kind == "blocking-finding" for r in reasons)
            why = f"gate {decision}" + (f": {blocking} blocking finding(s)" if blocking else ": no blocking finding")
            entry = transition(store, record.name, decision, by=f"cranewatch gate ({actor})", reason=why, by_gate=True)
            change = f"{entry.from_state} → {entry.to_state}"
        elif not move:
            change = f"life cycle unchanged: {record.name} stays {record.state} (asked not to move it)"
        else:
            change = (f"life cycle unchanged: {record.name} is {record.state} "
                      "(the gate moves only a crane under analysis)")
    return GateDecision(record.name, decision, reasons, unique_findings(evidence), evidence.runs, policy, change,
                        stored.at, actor)


def latest_decision(store: Store, crane: str) -> GateDecision | None:
    """The last recorded decision with the policy it used and today's evidence; None if never gated."""
    record = require_crane(store, crane)
    gate = store.latest_gate(crane)
    if gate is None:
        return None
    evidence = gather_evidence(store, record)
    reasons = tuple(Reason(**r) for r in gate.reasons)
    return GateDecision(crane, gate.decision, reasons, unique_findings(evidence), evidence.runs,
                        policy_from_json(gate.policy), None, gate.at, gate.who)


# -- evidence intake --------------------------------------------------------------------------


def scan_coverage(result: Any) -> Coverage:
    """What an image scan examined: every forensic check, the vulnerability and YARA rules only
    when it had them, and the findings a reference suppressed (they were there all the same)."""
    checks = ["image"]
    if result.vulndb:
        checks.append("image-vulndb")
    if result.rules:
        checks.append("image-yara")
    return Coverage(tuple(checks), suppressed=tuple(sorted({f.id for f in result.suppressed})))


def scan_options(result: Any) -> dict[str, Any]:
    """What shaped a scan besides its inputs (part of the run's fingerprint)."""
    return {"rules": [str(r) for r in result.rules], "vulndb": [str(v) for v in result.vulndb]}


def traffic_coverage(result: Any, *, process: bool) -> Coverage:
    """What an analysis of traffic examined: the network detectors always, the process checks
    when a profile gave the register map and Modbus traffic gave them values, and every host
    the traffic held."""
    hosts = tuple(ObservedHost(h.mac.lower() if h.mac else None, tuple(h.ips)) for h in result.hosts)
    # the process checks examined something only when there was register traffic to read
    checked = process and bool(result.modbus_slaves)
    return Coverage(("network", "process") if checked else ("network",), hosts)


def merge_coverage(parts: Sequence[Coverage]) -> Coverage:
    """One run's coverage from its parts (e.g. captures analysed one after another): a check
    family counts only if every part ran it; hosts and suppressed findings are the union."""
    if not parts:
        return Coverage(())
    checks = [c for c in parts[0].checks if all(c in p.checks for p in parts[1:])]
    hosts = tuple(dict.fromkeys(h for p in parts for h in p.hosts))
    suppressed = tuple(sorted({s for p in parts for s in p.suppressed}))
    return Coverage(tuple(checks), hosts, suppressed)


def record_image_scan(store: Store, crane: str, result: Any, *, component: str | None = None,
                      who: str | None = None, run_id: int | None = None) -> int:
    """Store a finished ``forensics.ScanResult`` as a complete scan-image run (with its SBOM);
    ``run_id``: the run begun for it (else one is begun now). Returns the id it is kept under."""
    from cranewatch.forensics.sbom import cyclonedx

    inputs = [RunInput(i.path, i.sha256, i.size) for i in result.inputs]
    if run_id is None:
        run_id = store.begin_run(crane, "scan-image", inputs, component=component, who=who or current_user())
    artifacts = {"scan": json.dumps(result.summary_json()), "sbom": json.dumps(cyclonedx(result))}
    return store.finish_run(run_id, result.findings, artifacts=artifacts, coverage=scan_coverage(result),
                            inputs=inputs, options=scan_options(result))


def scan_and_record(store: Store, crane: str, image: str | Path, *, component: str | None = None,
                    who: str | None = None, **scan_options: Any) -> int:
    """Scan an image into the store: the run is recorded first (a scan killed midway stays as
    an incomplete run), its findings only when it completes."""
    from cranewatch.forensics.api import scan_image

    run_id = store.begin_run(crane, "scan-image", [image], component=component, who=who or current_user())
    try:
        result = scan_image(image, crane=crane, **scan_options)
    except BaseException as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return record_image_scan(store, crane, result, component=component, run_id=run_id)


def record_traffic_analysis(store: Store, crane: str, result: Any, *, who: str | None = None,
                            run_id: int | None = None, conversations: Sequence[Conversation] = ()) -> int:
    """Store a finished ``pipeline.AnalysisResult`` (quarantine traffic) as a complete analyze run.

    Its inputs are the captures and the profile and baseline files it was judged against, each
    with its sha256. A capture not read whole is said in the run's note. The same captures
    judged by the same files again replace this run (``Store.finish_run``). The hosts it saw
    and ``conversations`` (a ``ConversationBook``'s, when the analysis had one) are kept for
    the asset inventory and the communication map.
    """
    run = traffic_run(crane, result, who=who, conversations=conversations)
    if run_id is None:
        run_id = store.begin_run(crane, "analyze", run.inputs, who=run.who)
    kept = store.finish_run(run_id, run.findings, artifacts=run.artifacts, note=run.note,
                            coverage=run.coverage, inputs=run.inputs, incidents=run.incidents)
    run.record_summary(store, kept)
    return kept


def traffic_run(crane: str, result: Any, *, who: str | None = None,
                conversations: Sequence[Conversation] = ()) -> SpooledRun:
    """What ``record_traffic_analysis`` records, as one value (kept in the spool when the
    central store is away)."""
    captures = [RunInput(i.path, i.sha256, _size(i.path)) for i in result.inputs]
    judged_by = [hash_input(p) for p in (result.profile, result.baseline) if p and Path(p).is_file()]
    note = None if result.complete else "an input was truncated or corrupt; findings cover what was read"
    hosts = [{"mac": h.mac, "ips": list(h.ips), "first_seen": h.first_seen, "last_seen": h.last_seen,
              "packets": h.packets, "bytes": h.bytes} for h in result.hosts]
    return SpooledRun(crane, "analyze", [*captures, *judged_by], list(result.findings),
                      artifacts={"analysis": json.dumps(_analysis_summary(result))},
                      coverage=traffic_coverage(result, process=result.profile is not None),
                      who=who or current_user(), note=note, incidents=list(result.incidents),
                      hosts=hosts, conversations=[dataclasses.asdict(c) for c in conversations])


def open_recording_store(db: str | Path) -> Store:
    """The database a command records its result into (``--db``). It must exist already (the
    crane is registered there with ``cranewatch fleet``): a mistyped path creates nothing."""
    from cranewatch.store import open_store

    return open_store(db, create=False)


def recording_crane(store: Store, crane: str | None, *, component: str | None = None) -> str:
    """The registered crane a command's result will be recorded for, checked before the work
    (``crane``: as given, or the loaded profile's crane id). A ``component`` must be one of the
    crane's registered parts when it has any (the gate matches image scans to parts by name).
    """
    if not crane:
        raise UsageError("--db needs --crane ID (the registered crane to record the result for)")
    record = require_crane(store, crane)
    if component is not None and record.components:
        names = {c.name.lower() for c in record.components}
        if component.lower() not in names:
            known = ", ".join(c.name for c in record.components)
            raise UsageError(f"--component {component}: {record.name} has no such registered part "
                             f"(registered: {known})")
    return record.name


def analyze_and_record(
    store: Store, crane: str, captures: Sequence[str | Path], *, profile: str | None = None,
    baseline: str | None = None, who: str | None = None,
) -> int:
    """Analyse captures recorded in quarantine into the store: the run is recorded first (an
    analysis killed midway stays as an incomplete run), its findings only when it completes.
    ``profile`` and ``baseline`` (files, recorded as the run's inputs too) are loaded once here
    (``judging``: a baseline given as a clean capture is learned from it)."""
    from cranewatch.judging import load_judging
    from cranewatch.pipeline import analyze
    from cranewatch.sinks import judged_sinks

    judged_by = [p for p in (profile, baseline) if p and Path(p).is_file()]
    run_id = store.begin_run(crane, "analyze", [*captures, *judged_by], who=who or current_user())
    book = ConversationBook()
    try:
        sinks = [*judged_sinks(load_judging(profile, baseline), crane), book]
        result = analyze([str(c) for c in captures], sinks=sinks, profile=profile, baseline=baseline)
    except BaseException as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return record_traffic_analysis(store, crane, result, run_id=run_id, conversations=book.conversations())


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _analysis_summary(result: Any) -> dict[str, Any]:
    return {
        "packets": result.packets,
        "flows": result.flows,
        "hosts": len(result.hosts),
        "complete": bool(result.complete),
        "inputs": [{"path": i.path, "sha256": i.sha256, "packets": i.packets} for i in result.inputs],
        "segments": [s.to_json() for s in getattr(result, "segments", ())],
    }
