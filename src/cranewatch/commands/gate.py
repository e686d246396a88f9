"""``cranewatch gate CRANE``: decide cleared, rejected or needs-review from the recorded evidence."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cranewatch.errors import UsageError
from cranewatch.fleet import require_crane
from cranewatch.gate import (
    GateDecision,
    GatePolicy,
    analyze_and_record,
    decide,
    load_gate_policy,
    policy_to_toml,
    run_label,
    scan_and_record,
)
from cranewatch.report.terminal import printable_lines
from cranewatch.store import Store
from cranewatch.store.options import add_db_option, store_from_args

HEADINGS = {
    "blocking-finding": "blocking findings",
    "review-finding": "findings to review",
    "incomplete-run": "incomplete runs",
    "review-component": "components to confirm",
    "review-baseline": "baseline beyond the profile",
    "evidence-gap": "evidence gaps",
    "missing-evidence": "missing evidence",
    "closed-finding": "findings closed by a disposition (not counted)",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="decide whether a crane may enter service, from its recorded evidence",
        description="Combine a crane's recorded image scans, the analysis of its quarantine traffic "
        "and its profile into a decision — cleared, rejected or needs-review — with the reasons "
        "(which findings block, which evidence is missing or has gaps). Every finding of every run "
        "recorded for the crane counts until a disposition (cranewatch triage) takes it out; a later "
        "clean capture does not. The decision is recorded, and a crane "
        "under analysis moves to cleared or rejected. By default any critical or high finding "
        "blocks, and oob-connectivity, hidden-uplink, remote-access-tool and remote-access findings "
        "always block; change that with --policy.\n\n"
        "Exit codes: 0 decided (1 with --exit-code unless cleared), 2 usage (unknown crane, missing "
        "store), 3 a capture or image could not be read, 4 the store cannot be written (read-only, "
        "disk full).\n\nExample:\n"
        "  cranewatch gate STS-07 --image CMS=cms-rootfs.tar.gz --capture quarantine.pcap\n"
        "  cranewatch gate --print-policy > gate-policy.toml   # the default, to edit\n"
        "  cranewatch gate STS-07 --policy gate-policy.toml --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("crane", nargs="?", help="a registered crane, e.g. STS-07")
    parser.add_argument("--print-policy", action="store_true",
                        help="print the policy in use (default, or --policy) as TOML and exit")
    parser.add_argument("--policy", metavar="FILE",
                        help="gate policy TOML: block_severity, review_severity, always_block, required_evidence")
    parser.add_argument("--image", action="append", default=[], metavar="COMPONENT=PATH",
                        help="first scan this component's filesystem image and record it (repeatable)")
    parser.add_argument("--capture", action="append", default=[], metavar="FILE",
                        help="first analyse this capture recorded in quarantine and record it (repeatable; "
                        "all captures form one analysis, with the crane's registered profile)")
    parser.add_argument("--baseline", nargs="+", metavar="FILE",
                        help="review a saved baseline (or clean captures) against the crane's profile")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--no-move", action="store_true", help="record the decision but leave the life cycle alone")
    parser.add_argument("--exit-code", action="store_true", help="exit 1 unless the crane is cleared")
    parser.add_argument("--by", help="who runs the gate (default: $USER)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    policy = load_gate_policy(args.policy) if args.policy else GatePolicy()
    if args.print_policy:
        print(policy_to_toml(policy), end="")
        return 0
    if not args.crane:
        raise UsageError("name the crane to decide on, e.g. cranewatch gate STS-07")
    images = [parse_image_option(text) for text in args.image]
    from cranewatch.judging import load_judging

    # the baseline to review, loaded once before any evidence is recorded (captures: learned)
    baseline = load_judging(baseline=args.baseline).baseline if args.baseline else None
    with store_from_args(args) as store:
        record_evidence(store, args.crane, images, args.capture, who=args.by)
        decision = decide(store, args.crane, policy, who=args.by, move=not args.no_move, baseline=baseline)
    if args.format == "json":
        print(json.dumps(decision.to_json(), indent=2))
    else:
        print(format_decision(decision))
    return 1 if args.exit_code and decision.decision != "cleared" else 0


def parse_image_option(text: str) -> tuple[str, str]:
    component, sep, path = text.partition("=")
    if not sep or not component or not path:
        raise UsageError(f"--image {text!r}: expected COMPONENT=PATH, e.g. CMS=cms-rootfs.tar.gz")
    return component, path


def record_evidence(store: Store, crane: str, images: list[tuple[str, str]], captures: list[str],
                    *, who: str | None = None) -> None:
    """Scan images and analyse captures into the store before the decision (runs recorded first)."""
    record = require_crane(store, crane)
    for component, path in images:
        run = scan_and_record(store, record.name, path, component=component, who=who)
        print(f"recorded image scan of {component}: run {run}", file=sys.stderr)
    if captures:
        run = analyze_and_record(store, record.name, captures, profile=record.profile_path, who=who)
        print(f"recorded quarantine traffic analysis: run {run}", file=sys.stderr)


def format_decision(decision: GateDecision) -> str:
    lines = [f"{decision.crane}: {decision.decision.upper()}"]
    for kind, heading in HEADINGS.items():
        reasons = [r for r in decision.reasons if r.kind == kind]
        if not reasons:
            continue
        lines.append(f"  {heading}:")
        for r in reasons:
            where = f"  [{r.source}]" if r.source and r.finding else ""
            ident = f" ({r.finding})" if r.finding else ""
            lines.append(f"    - {r.text}{ident}{where}")
    if decision.runs:
        lines.append("  evidence considered:")
        lines.extend(f"    - {run_label(r)}" for r in decision.runs)
    if decision.state_change:
        lines.append(f"  life cycle: {decision.state_change}")
    return printable_lines(lines).rstrip("\n")

