"""``cranewatch demo``: the whole STS-07 story on the bundled data, printed as numbered steps.

``cranewatch.demo.run_demo`` does the work; this module parses the options and renders the
result document as text for a person at a terminal, or as JSON lines for other tools.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cranewatch import __version__
from cranewatch.demo import (
    ANALYSIS_STATION,
    BASELINE_SCENARIO,
    DemoResult,
    RulesetFile,
    TrafficAnalysis,
    capture_path,
    data_path,
    run_demo,
)
from cranewatch.model import Evidence, Finding, Severity, evidence_value, iso_time
from cranewatch.report.jsonl import json_line

# ATT&CK for ICS technique names, for the IDs the bundled story shows (others print as bare IDs).
TECHNIQUES = {
    "T0802": "Automated Collection",
    "T0807": "Command-Line Interface",
    "T0812": "Default Credentials",
    "T0822": "External Remote Services",
    "T0832": "Manipulation of View",
    "T0836": "Modify Parameter",
    "T0839": "Module Firmware",
    "T0846": "Remote System Discovery",
    "T0855": "Unauthorized Command Message",
    "T0856": "Spoof Reporting Message",
    "T0859": "Valid Accounts",
    "T0869": "Standard Application Layer Protocol",
    "T0880": "Loss of Safety",
    "T0882": "Theft of Operational Information",
    "T0883": "Internet Accessible Device",
    "T0884": "Connection Proxy",
    "T0886": "Remote Services",
}
# evidence values that are plots or long series: the report shows them, a terminal line cannot
BULKY_VALUES = frozenset({"window", "svg", "residual", "residual_max", "threshold", "related", "state",
                          "onset", "detected", "detection_delay_s", "duration_s", "sanctioned_gateway_macs"})
EVIDENCE_WIDTH = 220
BLOCKING_SHOWN = 6
REVIEW_KINDS = {
    "review-finding": "findings below the blocking severity",
    "incomplete-run": "incomplete runs",
    "review-component": "components to confirm",
    "review-baseline": "communications the baseline saw beyond the profile",
}  # blocking reasons listed per evidence source; the report lists them all


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole STS-07 story on the bundled data (under a minute, no root)",
        description=_paragraphs(
            "Run the commissioning story of the reference crane STS-07 on the bundled data: register "
            "it, write its quarantine firewall, scan its CMS image, analyse the traffic recorded in "
            "quarantine against its profile and a clean baseline, let the gate decide (rejected: the "
            "bundled crane is compromised), write the commissioning report, then show the in-service "
            "watch on a quiet capture and on an attack. Needs no root and no network.",
            "The workspace keeps the store, the rulesets, the SBOM and the reports. Without "
            "--workspace a new temporary folder is made (and kept, so the report can be opened). "
            "Without --keep the story starts afresh in a workspace the demo made; with --keep the "
            "run is added to the store there (the rejected crane goes back to quarantine and the "
            "same findings keep their ids).",
        ) + "\n\nExample:\n  cranewatch demo\n  cranewatch demo --workspace demo-sts07 --keep\n"
        "  cranewatch demo --format jsonl > demo.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", metavar="DIR",
                        help="folder for the store, rulesets, SBOM and reports: new, empty or made by an earlier "
                        "demo (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="add this run to the store already in --workspace instead of starting afresh")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text", help="output format")
    parser.set_defaults(func=run)


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(t, 92) for t in texts)


def run(args: argparse.Namespace) -> int:
    workspace = args.workspace or tempfile.mkdtemp(prefix="cranewatch-demo-")
    result = run_demo(workspace, keep=args.keep)
    text = render_jsonl(result) if args.format == "jsonl" else render_text(result, cranewatch_command())
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


# -- text -------------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    """ISO 8601 UTC to the millisecond, as in the JSON lines (which keep the microseconds)."""
    text = iso_time(ts)
    return f"{text[:23]}Z" if text else "-"


def _short_source(source: str) -> str:
    path = Path(source)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _value(value: Any, width: int = 48) -> str:
    if isinstance(value, list | tuple):
        shown = ", ".join(_value(v, 24) for v in value[:3])
        return shown + (f" … ({len(value)})" if len(value) > 3 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v, 24)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def evidence_line(evidence: Evidence) -> str:
    """One line: where (capture and frames, or image path and line), when, and the values that matter."""
    parts: list[str] = []
    if evidence.source:
        where = _short_source(evidence.source)
        if evidence.frames:
            frames = ", ".join(str(n) for n in evidence.frames[:5])
            more = f" (+{len(evidence.frames) - 5})" if len(evidence.frames) > 5 else ""
            where += f" frame{'s' if len(evidence.frames) > 1 else ''} {frames}{more}"
        parts.append(where)
    if evidence.path:
        parts.append(evidence.path + (f":{evidence.line}" if evidence.line else ""))
    if evidence.times:
        parts.append(_when(evidence.times[0]))
    # a process finding's note already states the relation it checked
    skip = BULKY_VALUES | ({"relation"} if evidence.note else set())
    values = [f"{k}={_value(evidence_value(k, v))}" for k, v in evidence.values.items()
              if k not in skip]
    if values:
        parts.append(" ".join(values))
    elif evidence.excerpt:
        parts.append(repr(_value(evidence.excerpt, 60)))
    if evidence.note:
        parts.append(evidence.note)
    line = " · ".join(parts)
    return line if len(line) <= EVIDENCE_WIDTH else line[: EVIDENCE_WIDTH - 1] + "…"


def techniques(ids: Sequence[str]) -> str:
    return ", ".join(f"{t} {TECHNIQUES[t]}" if t in TECHNIQUES else t for t in ids) or "-"


def finding_lines(findings: Sequence[Finding], indent: str = "   ") -> list[str]:
    """Findings grouped by severity, each with one line of evidence, its techniques and the remedy."""
    lines: list[str] = []
    for severity in sorted(Severity, reverse=True):
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        lines.append(f"{indent}{str(severity).upper()}")
        for f in group:
            lines.append(f"{indent}  [{f.category}] {f.title}  ({f.id})")
            if f.evidence:
                lines.append(f"{indent}      evidence   {evidence_line(f.evidence[0])}")
            lines.append(f"{indent}      ATT&CK     {techniques(f.technique)}")
            if f.remedy:
                lines.append(f"{indent}      do         {f.remedy}")
    return lines


def _count_line(findings: Sequence[Finding]) -> str:
    counts = Counter(f.severity for f in findings)
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, reverse=True)) or "none"


def _ruleset_lines(rules: RulesetFile) -> list[str]:
    return [f"   {rules.purpose} ruleset  {rules.path}  (sha256 {rules.sha256[:16]}…)",
            f"   nft -c     {rules.check_note}"]


def _analysis_heading(analysis: TrafficAnalysis) -> str:
    return (f"{len(analysis.captures)} capture{'s' if len(analysis.captures) > 1 else ''}, "
            f"{analysis.packets:,} packets: {len(analysis.findings)} finding(s)"
            + (f" ({_count_line(analysis.findings)})" if analysis.findings else ""))


def render_text(result: DemoResult, command: str = "cranewatch") -> str:
    """The story for a terminal; ``command`` starts the "Next:" commands (``cranewatch_command``)."""
    out: list[str] = []
    add = out.append
    facts = result.facts
    add(f"cranewatch demo: crane {result.crane} from delivery to the commissioning decision, then in service")
    add("")
    add("1. Workspace")
    add(f"   {result.workspace}")
    add(f"   store  {result.db}")
    add("")
    add(f"2. Register {result.crane} ({result.registration} from the bundled fleet file)")
    add(f"   {facts['maker']}, {facts['model']}; control software {facts['control_vendor']}")
    add(f"   crane zone {facts['zone']}, profile {facts['profile']}")
    for part in facts["components"]:
        add(f"   {part['name']:5} {part['kind']:8} {part['ip'] or '-':13} {part['mac'] or '-':18} {part['firmware'] or ''}")
    registered = [h for h in result.history if h.from_state is None]
    for h in registered:
        add(f"   state {h.to_state}  (by {h.who}: {h.why})")
    add("")
    add(f"3. Quarantine: only the analysis station {ANALYSIS_STATION} may reach {facts['zone']}; "
        f"everything else is dropped, counted and logged as 'cw {result.crane} quarantine drop: '")
    out.extend(_ruleset_lines(result.quarantine))
    for h in result.history:
        if h.from_state is not None and h.to_state in ("quarantined", "under-analysis"):
            add(f"   {h.from_state} → {h.to_state}  by {h.who}: {h.why}")
    add("")
    for scan in result.scans:
        inv = scan.result.inventory
        os_name = inv.os_release.get("PRETTY_NAME", "unknown OS")
        add(f"4. Scan the {scan.component} image {scan.image.name} ({inv.files} files, "
            f"{len(inv.packages)} packages, {os_name}) in {scan.result.seconds:.1f} s")
        add(f"   {len(scan.result.findings)} findings ({_count_line(scan.result.findings)}), by category:")
        by_category: dict[str, list[Finding]] = defaultdict(list)
        for f in scan.result.findings:
            by_category[f.category].append(f)
        ranked = sorted(by_category.items(), key=lambda kv: (-max(int(f.severity) for f in kv[1]), kv[0]))
        for category, group in ranked:
            worst = max(group, key=lambda f: (int(f.severity), -group.index(f)))
            where = ""
            if worst.evidence and worst.evidence[0].path:
                e = worst.evidence[0]
                where = f"  [{e.path}{':' + str(e.line) if e.line else ''}]"
            add(f"   {category:20} {len(group):3}  worst {worst.severity}: {worst.title}{where}")
        add(f"   SBOM (CycloneDX)  {scan.sbom}")
    add("")
    analysis = result.quarantine_analysis
    add(f"5. Analyse the traffic recorded in quarantine ({analysis.label}) against the profile and "
        f"the baseline learned from '{BASELINE_SCENARIO}'")
    add(f"   {_analysis_heading(analysis)}")
    out.extend(finding_lines(analysis.findings))
    add("")
    decision = result.decision
    add(f"6. Gate: {decision.decision.upper()}" + (f"  ({decision.state_change})" if decision.state_change else ""))
    blocking = [r for r in decision.reasons if r.kind == "blocking-finding"]
    by_source: dict[str, list[Any]] = defaultdict(list)
    for reason in blocking:
        by_source[reason.source or "-"].append(reason)
    if blocking:
        add(f"   blocking findings ({len(blocking)}):")
    for source, reasons in by_source.items():
        add(f"     from the {source}: {len(reasons)}")
        for reason in reasons[:BLOCKING_SHOWN]:
            add(f"       - {reason.text}")
        if len(reasons) > BLOCKING_SHOWN:
            add(f"       … {len(reasons) - BLOCKING_SHOWN} more in the report")
    review = Counter(r.kind for r in decision.reasons if r.kind not in ("blocking-finding", "missing-evidence"))
    if review:
        add("   to review as well: " + ", ".join(f"{n} {REVIEW_KINDS.get(kind, kind)}" for kind, n in review.items()))
    missing = [r for r in decision.reasons if r.kind == "missing-evidence"]
    add("   missing evidence: " + ("; ".join(r.text for r in missing) if missing else "none"))
    add("")
    add(f"7. Commissioning report ({len(result.stored_findings)} findings, the decision and its reasons, "
        "SBOM summary, both rulesets, inputs with sha256, history, signature block)")
    add(f"   HTML         {result.report_html}")
    add(f"   JSON lines   {result.report_jsonl}")
    add("")
    add("8. In service (once cleared): the allow-list it would run under, and the watch against the baseline")
    out.extend(_ruleset_lines(result.inservice_ruleset))
    for watched in result.inservice:
        add(f"   {watched.label}: {_analysis_heading(watched)}" + ("  (quiet)" if not watched.findings else ""))
        out.extend(finding_lines(watched.findings, indent="     "))
        add(f"     JSON lines   {watched.out}")
    add("")
    add(f"Done in {result.seconds:.1f} s. Everything is in {result.workspace}:")
    files = [result.db, result.quarantine.path, *(s.sbom for s in result.scans), result.report_html,
             result.report_jsonl, result.inservice_ruleset.path, *(w.out for w in result.inservice if w.out)]
    for path in files:
        add(f"   {path.name}")
    add("")
    add("Next:")
    out.extend(f"   {line}" for line in next_commands(result, command))
    return "\n".join(out) + "\n"


def cranewatch_command() -> str:
    """How a shell runs this very cranewatch, as it can be pasted from any folder.

    ``scripts/demo.sh`` installs into the checkout's ``.venv``, which is not on PATH: the bare
    name works only when PATH finds this same program. Otherwise the absolute path of the
    running script (``.venv/bin/cranewatch``), or, run as ``python -m cranewatch``, this
    interpreter with ``-m`` (and the source folder it was imported from, when PYTHONPATH
    brought it).
    """
    script = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "cranewatch" and script.is_file():
        found = shutil.which("cranewatch")
        if found is not None and Path(found).resolve() == script.resolve():
            return "cranewatch"
        return shlex.quote(str(script))
    command = f"{shlex.quote(sys.executable)} -m cranewatch"
    package_root = Path(__file__).resolve().parents[2]
    searched = [Path(p).absolute() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root in searched:
        command = f"PYTHONPATH={shlex.quote(str(package_root))} {command}"
    return command


def next_commands(result: DemoResult, command: str = "cranewatch") -> list[str]:
    """What to try next, each command under a comment saying what it shows; ``command`` runs
    cranewatch (``cranewatch_command``)."""
    db = shlex.quote(str(result.db))
    crane = result.crane
    profile = shlex.quote(str(result.facts["profile"]))
    report = shlex.quote(str(result.report_html))
    pairs: list[tuple[str | None, str | None]] = [
        ("the commissioning report", f"xdg-open {report}") if shutil.which("xdg-open")
        else (f"the commissioning report, to open in a browser: {result.report_html.as_uri()}", None),
        ("the crane, its parts and its history", f"{command} fleet show {crane} --db {db}"),
        ("the decision again, with every reason", f"{command} gate {crane} --db {db} --no-move"),
        ("one quarantine capture on its own",
         f"{command} analyze {shlex.quote(str(capture_path('remote-ssh')))} --profile {profile} "
         f"--baseline {shlex.quote(str(capture_path(BASELINE_SCENARIO)))}"),
        ("the CMS image on its own",
         f"{command} scan-image {shlex.quote(str(data_path('images', 'sts07-cms.tar.gz')))}"),
        ("a console user for yourself (it asks for a password), then the console on http://127.0.0.1:8077/",
         f"{command} users add \"$USER\" --role officer --db {db}"),
        (None, f"{command} serve --db {db}"),
    ]
    return [line for comment, text in pairs for line in (comment and f"# {comment}", text) if line is not None]


# -- JSON lines -------------------------------------------------------------------------------


def records(result: DemoResult) -> Iterator[dict[str, Any]]:
    """The demo as JSON-lines records, each with a ``type``; findings are ``Finding.to_json()``
    plus the ``stage`` that found them (``image-scan:CMS``, ``quarantine``, ``in-service:SCENARIO``)."""
    yield {"type": "demo", "crane": result.crane, "workspace": str(result.workspace), "db": str(result.db),
           "seconds": round(result.seconds, 3), "tool_version": __version__}
    yield {"type": "crane", "registration": result.registration, **result.facts}
    for h in result.history:
        yield {"type": "history", "at": iso_time(h.at), "who": h.who, "why": h.why, "from": h.from_state,
               "to": h.to_state}
    yield _ruleset_record(result.quarantine)
    for scan in result.scans:
        yield {**scan.result.summary_json(), "component": scan.component, "run": scan.run,
               "sbom": str(scan.sbom)}
        for f in scan.result.findings:
            yield {**f.to_json(), "stage": f"image-scan:{scan.component}"}
    yield from _analysis_records(result.quarantine_analysis, "quarantine")
    yield result.decision.to_json()
    yield {"type": "report", "html": str(result.report_html), "jsonl": str(result.report_jsonl),
           "findings": [f.id for f in result.stored_findings]}
    yield _ruleset_record(result.inservice_ruleset)
    for watched in result.inservice:
        yield from _analysis_records(watched, f"in-service:{watched.label}")


def _ruleset_record(rules: RulesetFile) -> dict[str, Any]:
    return {"type": "ruleset", "purpose": rules.purpose, "path": str(rules.path), "sha256": rules.sha256,
            "checked": rules.checked, "check": rules.check_note}


def _analysis_records(analysis: TrafficAnalysis, stage: str) -> Iterator[dict[str, Any]]:
    yield {"type": "analysis", "stage": stage, "captures": [str(c) for c in analysis.captures],
           "packets": analysis.packets, "findings": len(analysis.findings), "run": analysis.run,
           "out": None if analysis.out is None else str(analysis.out)}
    for f in analysis.findings:
        yield {**f.to_json(), "stage": stage}


def render_jsonl(result: DemoResult) -> str:
    return "".join(json_line(r) for r in records(result))
