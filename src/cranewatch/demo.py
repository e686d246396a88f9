"""The whole STS-07 story on the bundled data, as one library call that returns one document.

A crane arrives, is registered, isolated behind its quarantine ruleset and moved under
analysis; the image of its crane management PC is scanned; the traffic recorded in quarantine
is analysed against the crane's profile and a clean baseline; the gate decides (rejected, as
the bundled crane is compromised) and the commissioning report is written; finally the
in-service watch is shown on a quiet capture and on an attack. Everything runs on package data
(``cranewatch/data``), in a workspace folder, without root or network.

``run_demo`` does the I/O through the other parts' Python APIs (store, fleet, policy, forensics,
pipeline, detectors, process checks, gate, report) and returns a frozen ``DemoResult`` that the
``cranewatch demo`` command renders as text or JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch.errors import EnvironmentProblem, InputError, Location, UsageError
from cranewatch.fleet import (
    current_user,
    import_fleet,
    inservice_policy,
    quarantine_crane,
    require_crane,
    transition,
)
from cranewatch.forensics.result import ScanResult
from cranewatch.gate import GateDecision, decide
from cranewatch.incidents import group_incidents
from cranewatch.model import Finding
from cranewatch.store import HistoryEntry, Store, open_store

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.process.envelope import ProcessBaseline
    from cranewatch.profile import CraneProfile

CRANE = "STS-07"
# The quarantine captures that show the four headline findings, read one after another (each is
# a separate recording; read as one, the minutes between them would look like frozen signals).
QUARANTINE_SCENARIOS = ("remote-ssh", "ocr-exfil", "safety-bypass", "false-load")
BASELINE_SCENARIO = "normal"
INSERVICE_SCENARIOS = ("normal-2", "beacon")  # a quiet day, then an implant calling home
ANALYSIS_STATION = "10.20.0.100"  # the port's analysis station in the terminal zone
MARKER = ".cranewatch-demo"  # marks a workspace the demo made, so a fresh run may replace its files
STORE_FILES = ("cranewatch.db", "cranewatch.db-wal", "cranewatch.db-shm")


@dataclass(frozen=True, slots=True)
class RulesetFile:
    """A generated nftables ruleset, where it was written and whether ``nft -c`` accepted it."""

    purpose: str  # quarantine | in-service
    path: Path
    sha256: str
    checked: bool
    check_note: str  # "accepted by nft -c" or why it was not checked


@dataclass(frozen=True, slots=True)
class ImageScan:
    component: str
    image: Path
    run: int
    result: ScanResult
    sbom: Path


@dataclass(frozen=True, slots=True)
class TrafficAnalysis:
    """One analysis of captures against the profile and baseline (detectors + process checks)."""

    label: str  # the scenario(s) it read
    captures: tuple[Path, ...]
    packets: int
    findings: tuple[Finding, ...]
    run: int | None = None  # the store run, for the quarantine analysis the gate reads
    out: Path | None = None  # JSON lines of the analysis, for the in-service watch


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Everything the story did and found, in the order it happened."""

    workspace: Path
    db: Path
    crane: str
    registration: str  # added | updated
    facts: dict[str, Any]  # the registered crane (Crane.to_json())
    history: tuple[HistoryEntry, ...]  # the life-cycle changes this run made
    quarantine: RulesetFile
    scans: tuple[ImageScan, ...]
    quarantine_analysis: TrafficAnalysis
    decision: GateDecision
    report_html: Path
    report_jsonl: Path
    inservice_ruleset: RulesetFile
    inservice: tuple[TrafficAnalysis, ...]
    seconds: float

    @property
    def stored_findings(self) -> tuple[Finding, ...]:
        """The findings the decision rests on (image scans and quarantine traffic)."""
        return self.decision.findings


def data_path(*parts: str) -> Path:
    """A bundled data file (installed with the package)."""
    path = Path(str(resources.files("cranewatch").joinpath("data", *parts)))
    if not path.exists():
        raise EnvironmentProblem(f"bundled data {'/'.join(parts)} is missing: reinstall cranewatch")
    return path


def capture_path(scenario: str) -> Path:
    return data_path("lab", scenario, "crane-lan.pcap")


def prepare_workspace(workspace: str | Path, *, keep: bool) -> Path:
    """Create the workspace; without ``keep`` start the story afresh (only in a demo workspace)."""
    ws = Path(workspace).expanduser().resolve()
    if ws.exists() and not ws.is_dir():
        raise UsageError(f"--workspace {ws}: not a folder")
    ws.mkdir(parents=True, exist_ok=True)
    if any(ws.iterdir()) and not (ws / MARKER).exists():
        # never touch a store the demo did not make: it may be the port's real one, with a real STS-07
        raise UsageError(f"--workspace {ws} holds files the demo did not make: choose a new or empty folder")
    if not keep:
        for name in STORE_FILES:
            (ws / name).unlink(missing_ok=True)
    (ws / MARKER).write_text("made by cranewatch demo; a new demo run without --keep replaces its files\n",
                             encoding="utf-8")
    return ws


def check_with_nft(text: str) -> tuple[bool, str]:
    """Have ``nft -c`` check a ruleset when it can (nft installed, root); else say why not."""
    if shutil.which("nft") is None:
        return False, "not checked: nft is not installed (Debian package nftables)"
    if os.geteuid() != 0:
        return False, "not checked: nft -c needs root (run as root: nft -c -f FILE)"
    from cranewatch.policy import check_ruleset

    try:
        check_ruleset(text)
    except EnvironmentProblem as exc:
        return False, f"not checked: {exc.message}"
    return True, "accepted by nft -c"


def register_crane(store: Store, who: str) -> str:
    """Register STS-07 from the bundled fleet file (facts updated when it is already known)."""
    results = import_fleet(store, data_path("fleet", "sts-07.toml"), by=who)
    return next(r.action for r in results if r.crane == CRANE)


def quarantine(store: Store, ws: Path, who: str) -> RulesetFile:
    """Write the quarantine ruleset and move the crane to quarantined, then under analysis."""
    record = require_crane(store, CRANE)
    if record.state == "retired":
        raise UsageError(f"{CRANE} is retired in the store of {ws}: run the demo in a new workspace")
    out = ws / "sts-07-quarantine.nft"
    # a crane left under analysis by an interrupted run is already behind its firewall
    stored = quarantine_crane(store, CRANE, ANALYSIS_STATION, out=out, move=record.state != "under-analysis",
                              by=who)
    checked, note = check_with_nft(stored.text)
    if require_crane(store, CRANE).state == "quarantined":
        transition(store, CRANE, "under-analysis", by=who,
                   reason="image scan of the CMS and analysis of the traffic recorded in quarantine")
    return RulesetFile("quarantine", out, stored.sha256, checked, note)


def scan_cms(store: Store, ws: Path) -> ImageScan:
    """Scan the bundled CMS image, record it with its SBOM and write the SBOM (CycloneDX)."""
    from cranewatch.forensics.api import endpoint_policy, scan_image
    from cranewatch.forensics.sbom import cyclonedx
    from cranewatch.gate import record_image_scan

    record = require_crane(store, CRANE)
    image = data_path("images", "sts07-cms.tar.gz")
    policy, _ = endpoint_policy(profile=record.profile_path)
    result = scan_image(image, crane=CRANE, policy=policy)
    run = record_image_scan(store, CRANE, result, component="CMS")
    sbom = ws / "sts-07-cms.cdx.json"
    sbom.write_text(json.dumps(cyclonedx(result), indent=2) + "\n", encoding="utf-8")
    return ImageScan("CMS", image, run, result, sbom)


@dataclass(frozen=True, slots=True)
class Judges:
    """What captures are judged against: the profile, and the baselines learned from a clean capture."""

    profile_path: Path
    profile: CraneProfile
    baseline: Baseline | None  # communications
    process_baseline: ProcessBaseline | None  # signal envelopes


def learn_judges(profile_path: str) -> Judges:
    from cranewatch.judging import learn_judging
    from cranewatch.profile import load_profile

    profile = load_profile(profile_path)
    learned = learn_judging([capture_path(BASELINE_SCENARIO)], profile)  # one pass: both baselines
    return Judges(Path(profile_path), profile, learned.baseline, learned.process_baseline)


def analyse(captures: Sequence[Path], judges: Judges) -> tuple[int, tuple[Finding, ...], Any, Any]:
    """Network detectors and process checks over each capture; findings of all, once each, and
    what the captures together examined (the gate's coverage of the run)."""
    from cranewatch.gate import merge_coverage, traffic_coverage
    from cranewatch.pipeline import analyze
    from cranewatch.sinks import build_sinks

    packets = 0
    found: dict[str, Finding] = {}
    last: Any = None
    parts = []
    for capture in captures:
        sinks = build_sinks(judges.profile, judges.baseline, CRANE, process_baseline=judges.process_baseline)
        last = analyze([str(capture)], sinks=sinks)
        if not last.complete:
            raise InputError("bundled capture did not read whole: reinstall cranewatch", Location(file=str(capture)))
        packets += last.packets
        parts.append(traffic_coverage(last, process=judges.profile is not None))
        for f in last.findings:
            found.setdefault(f.id, f)
    ordered = tuple(sorted(found.values(), key=lambda f: (-int(f.severity), f.first_seen or 0, f.id)))
    return packets, ordered, last, merge_coverage(parts)


def analyse_quarantine_traffic(store: Store, judges: Judges) -> TrafficAnalysis:
    """Analyse the quarantine captures as one recorded run: begun first, findings only when complete."""
    captures = tuple(capture_path(s) for s in QUARANTINE_SCENARIOS)
    # the baseline capture and the profile are read too: the report lists them with their hashes
    run = store.begin_run(CRANE, "analyze", [*captures, capture_path(BASELINE_SCENARIO), judges.profile_path])
    try:
        packets, findings, _, coverage = analyse(captures, judges)
    except BaseException as exc:
        store.fail_run(run, f"{type(exc).__name__}: {exc}")
        raise
    summary = {"packets": packets, "captures": [str(c) for c in captures], "baseline": BASELINE_SCENARIO,
               "read": "one after another"}
    store.finish_run(run, findings, artifacts={"analysis": json.dumps(summary)}, coverage=coverage,
                     incidents=group_incidents(findings))
    return TrafficAnalysis(", ".join(QUARANTINE_SCENARIOS), captures, packets, findings, run=run)


def write_report(store: Store, ws: Path, decision: GateDecision) -> tuple[Path, Path]:
    from cranewatch.report.commissioning import build_report, report_records
    from cranewatch.report.html import render_html

    report = build_report(store, CRANE, decision=decision)
    html = ws / "sts-07-commissioning.html"
    jsonl = ws / "sts-07-commissioning.jsonl"
    html.write_text(render_html(report), encoding="utf-8")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in report_records(report)), encoding="utf-8")
    return html, jsonl


def inservice_ruleset(store: Store, ws: Path, judges: Judges, who: str) -> RulesetFile:
    """The allow-list the crane would run under once cleared (profile + learned baseline)."""
    out = ws / "sts-07-inservice.nft"
    stored = inservice_policy(store, CRANE, profile=judges.profile, baseline=judges.baseline, out=out, by=who)
    checked, note = check_with_nft(stored.text)
    return RulesetFile("in-service", out, stored.sha256, checked, note)


def watch_in_service(ws: Path, judges: Judges) -> tuple[TrafficAnalysis, ...]:
    """The in-service watch: each capture judged alone; not recorded as quarantine evidence."""
    from cranewatch.report import jsonl

    watched = []
    for scenario in INSERVICE_SCENARIOS:
        capture = capture_path(scenario)
        packets, findings, result, _ = analyse([capture], judges)
        out = ws / f"in-service-{scenario}.jsonl"
        out.write_text(jsonl.render(result), encoding="utf-8")
        watched.append(TrafficAnalysis(scenario, (capture,), packets, findings, out=out))
    return tuple(watched)


def run_demo(workspace: str | Path, *, keep: bool = False, who: str | None = None) -> DemoResult:
    """Run the STS-07 story in ``workspace`` and return what happened.

    ``keep``: add this run to the store already in the workspace (the rejected crane goes back
    to quarantine and is analysed again; finding ids stay the same). Without it the story
    starts afresh in a workspace the demo made (or a new or empty one).
    """
    started = time.perf_counter()
    ws = prepare_workspace(workspace, keep=keep)
    actor = f"cranewatch demo ({who or current_user()})"
    db = ws / "cranewatch.db"
    with open_store(db) as store:
        history_before = len(store.history(CRANE)) if store.crane(CRANE) else 0
        registration = register_crane(store, actor)
        quarantined = quarantine(store, ws, actor)
        scans = (scan_cms(store, ws),)
        judges = learn_judges(str(require_crane(store, CRANE).profile_path))
        analysis = analyse_quarantine_traffic(store, judges)
        decision = decide(store, CRANE, who=actor)
        # the allow-list it would run under once cleared goes into the report with the quarantine one
        allow_list = inservice_ruleset(store, ws, judges, actor)
        html, jsonl = write_report(store, ws, decision)
        inservice = watch_in_service(ws, judges)
        record = require_crane(store, CRANE)
        history = tuple(store.history(CRANE))[history_before:]
    return DemoResult(
        workspace=ws, db=db, crane=CRANE, registration=registration, facts=record.to_json(),
        history=history, quarantine=quarantined, scans=scans, quarantine_analysis=analysis,
        decision=decision, report_html=html, report_jsonl=jsonl, inservice_ruleset=allow_list,
        inservice=inservice, seconds=time.perf_counter() - started,
    )
