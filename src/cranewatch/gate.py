"""The commissioning gate: from a crane's recorded evidence to cleared, rejected or needs-review.

The evidence is what the store holds for the crane: the latest complete image scan of each
component, the latest complete analysis of traffic recorded in quarantine, and the crane's
profile. ``assess`` is the pure core (evidence and policy in, decision and reasons out);
``decide`` reads the store, records the decision and moves the life cycle
(under-analysis → cleared | rejected). The ``record_*`` / ``*_and_record`` functions put scan
and analysis results into the store as runs the gate can read.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cranewatch.errors import CranewatchError, InputError, Location, UsageError
from cranewatch.fleet import current_user, require_crane, transition
from cranewatch.model import CATEGORIES, Finding, Severity, iso_time
from cranewatch.store import Crane, Run, RunInput, Store

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

    kind: str  # blocking-finding | review-finding | missing-evidence | incomplete-run | review-component
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
    """What the store holds for a crane: the runs that count now and their findings."""

    runs: tuple[Run, ...]
    findings_by_run: dict[int, tuple[Finding, ...]]
    stale_runs: tuple[Run, ...] = ()  # started but never completed, with no complete rerun
    profile_problem: str | None = None  # None when the profile loaded
    profile_hosts: dict[str, tuple[str, str | None]] | None = None  # ip → (host name, MAC) of the profile
    baseline_beyond_profile: tuple[str, ...] = ()  # learned communications the profile does not allow


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
        return f"image scan of {run.component or 'the crane'} (run {run.id})"
    if run.kind == "analyze":
        return f"quarantine traffic analysis (run {run.id})"
    return f"{run.kind} (run {run.id})"


def assess(crane: Crane, evidence: Evidence, policy: GatePolicy) -> tuple[str, tuple[Reason, ...]]:
    """The decision and its reasons (blocking first, then review, then missing evidence)."""
    blocking: list[Reason] = []
    review: list[Reason] = []
    seen: set[str] = set()
    for run in evidence.runs:
        for f in evidence.findings_by_run.get(run.id, ()):
            if f.id in seen:
                continue
            seen.add(f.id)
            reason_args = dict(finding=f.id, severity=str(f.severity), category=f.category, source=run_label(run))
            if f.severity >= policy.block_severity:
                blocking.append(Reason("blocking-finding", f"{f.severity} {f.category}: {f.title}", **reason_args))
            elif f.category in policy.always_block:
                blocking.append(Reason("blocking-finding",
                                       f"{f.category} always blocks: {f.title}", **reason_args))
            elif policy.review_severity is not None and f.severity >= policy.review_severity:
                review.append(Reason("review-finding", f"{f.severity} {f.category}: {f.title}", **reason_args))

    missing: list[Reason] = []
    scans = [r for r in evidence.runs if r.kind == "scan-image"]
    if "image-scan" in policy.required_evidence:
        scanned = {(r.component or "").lower() for r in scans}
        parts = [c for c in crane.components if c.kind in policy.image_scan_kinds]
        for part in parts:
            if part.name.lower() not in scanned:
                missing.append(Reason("missing-evidence", f"no image scan recorded for {part.name}",
                                      source=f"component {part.name} ({part.kind})"))
        if not parts and not scans:
            missing.append(Reason("missing-evidence", f"no image scan recorded for {crane.name}"))
    if "quarantine-capture" in policy.required_evidence and not any(r.kind == "analyze" for r in evidence.runs):
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
    return decision, (*blocking, *review, *missing)


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


def baseline_beyond_profile(profile: Any, baseline: Any) -> tuple[str, ...]:
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


def gather_evidence(store: Store, crane: Crane, baseline: Any = None) -> Evidence:
    runs = store.runs(crane.name)
    latest = store.latest_complete_runs(crane.name)
    # a run that never completed matters only if nothing of its kind completed after it
    stale = tuple(
        r for r in runs
        if r.kind != "gate" and r.status != "complete"
        and not any((d.kind, d.component) == (r.kind, r.component) and d.id > r.id for d in latest)
    )
    findings = {r.id: tuple(store.findings(crane.name, [r.id])) for r in latest}
    problem, profile = read_profile(crane)
    hosts = None if profile is None else {h.ip: (h.name, h.mac) for h in profile.hosts}
    beyond: tuple[str, ...] = ()
    if baseline is not None and profile is not None:
        from cranewatch.baseline import Baseline, load_baseline

        if not isinstance(baseline, Baseline):
            baseline = load_baseline(baseline)
        beyond = baseline_beyond_profile(profile, baseline)
    return Evidence(tuple(latest), findings, stale, problem, hosts, beyond)


def read_profile(crane: Crane) -> tuple[str | None, Any]:
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
    baseline: Any = None,
) -> GateDecision:
    """Decide on ``crane`` from its recorded evidence, record the decision, move the life cycle.

    ``baseline`` (a ``Baseline``, a saved baseline or clean captures) is reviewed against the
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
        else:
            change = (f"life cycle unchanged: {record.name} is {record.state} "
                      "(the gate moves only a crane under analysis)")
    findings = tuple(f for r in evidence.runs for f in evidence.findings_by_run.get(r.id, ()))
    unique = {f.id: f for f in findings}
    ordered = tuple(sorted(unique.values(), key=lambda f: (-int(f.severity), f.category, f.id)))
    return GateDecision(record.name, decision, reasons, ordered, evidence.runs, policy, change, stored.at)


def latest_decision(store: Store, crane: str) -> GateDecision | None:
    """The last recorded decision with the policy it used and today's evidence; None if never gated."""
    record = require_crane(store, crane)
    gate = store.latest_gate(crane)
    if gate is None:
        return None
    evidence = gather_evidence(store, record)
    reasons = tuple(Reason(**r) for r in gate.reasons)
    findings = {f.id: f for r in evidence.runs for f in evidence.findings_by_run.get(r.id, ())}
    ordered = tuple(sorted(findings.values(), key=lambda f: (-int(f.severity), f.category, f.id)))
    return GateDecision(crane, gate.decision, reasons, ordered, evidence.runs, policy_from_json(gate.policy),
                        None, gate.at)


# -- evidence intake --------------------------------------------------------------------------


def record_image_scan(store: Store, crane: str, result: Any, *, component: str | None = None) -> int:
    """Store a finished ``forensics.ScanResult`` as a complete scan-image run (with its SBOM)."""
    from cranewatch.forensics.sbom import cyclonedx

    inputs = [RunInput(i.path, i.sha256, i.size) for i in result.inputs]
    artifacts = {"scan": json.dumps(result.summary_json()), "sbom": json.dumps(cyclonedx(result))}
    return store.record_run(crane, "scan-image", inputs, result.findings, component=component, artifacts=artifacts)


def scan_and_record(store: Store, crane: str, image: str | Path, *, component: str | None = None,
                    **scan_options: Any) -> int:
    """Scan an image into the store: the run is recorded first, its findings only when it completes."""
    from cranewatch.forensics.api import scan_image
    from cranewatch.forensics.sbom import cyclonedx

    run_id = store.begin_run(crane, "scan-image", [image], component=component)
    try:
        result = scan_image(image, crane=crane, **scan_options)
    except BaseException as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, result.findings,
                     artifacts={"scan": json.dumps(result.summary_json()), "sbom": json.dumps(cyclonedx(result))})
    return run_id


def record_traffic_analysis(store: Store, crane: str, result: Any) -> int:
    """Store a finished ``pipeline.AnalysisResult`` (quarantine traffic) as a complete analyze run.

    Its inputs are the captures and the profile and baseline files it was judged against, each
    with its sha256. A capture not read whole is said in the run's note.
    """
    inputs = [RunInput(i.path, i.sha256, _size(i.path)) for i in result.inputs]
    judged_by = [p for p in (result.profile, result.baseline) if p and Path(p).is_file()]
    run_id = store.begin_run(crane, "analyze", [*inputs, *judged_by])
    note = None if result.complete else "an input was truncated or corrupt; findings cover what was read"
    store.finish_run(run_id, result.findings, artifacts={"analysis": json.dumps(_analysis_summary(result))},
                     note=note)
    return run_id


def open_recording_store(db: str | Path) -> Store:
    """The database a command records its result into (``--db``). It must exist already (the
    crane is registered there with ``cranewatch fleet``): a mistyped path creates nothing."""
    from cranewatch.store import open_store

    if not Path(db).is_file():
        raise UsageError(f"--db {db}: no such database (register the crane first: "
                         f"cranewatch fleet add ... --db {db})")
    return open_store(db)


def recording_crane(store: Store, crane: str | None, *, component: str | None = None,
                    profile: str | None = None) -> str:
    """The registered crane a command's result will be recorded for, checked before the work.

    ``crane`` defaults to the profile's crane id. A ``component`` must be one of the crane's
    registered parts when it has any (the gate matches image scans to parts by name).
    """
    if crane is None and profile is not None:
        from cranewatch.profile import load_profile

        crane = load_profile(profile).crane_id
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
    baseline: str | None = None,
) -> int:
    """Analyse captures recorded in quarantine into the store, findings written when complete."""
    from cranewatch.pipeline import analyze
    from cranewatch.sinks import build_sinks

    run_id = store.begin_run(crane, "analyze", list(captures))
    try:
        sinks = build_sinks(profile, baseline, crane)
        result = analyze([str(c) for c in captures], sinks=sinks, profile=profile, baseline=baseline)
    except BaseException as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    note = None if result.complete else "an input was truncated or corrupt; findings cover what was read"
    store.finish_run(run_id, result.findings, artifacts={"analysis": json.dumps(_analysis_summary(result))},
                     note=note)
    return run_id


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
    }
