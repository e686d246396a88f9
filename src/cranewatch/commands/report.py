"""``cranewatch report CRANE``: the commissioning report (HTML, or JSON lines of the same)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cranewatch.commands import out_file, write_out
from cranewatch.report.commissioning import build_report, report_records
from cranewatch.report.html import render_html
from cranewatch.store.options import add_db_option, store_from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a crane's commissioning report (self-contained HTML or JSON lines)",
        description="Write the commissioning report of a crane from the store: crane facts, the gate "
        "decision and its reasons, findings with evidence and remedies, SBOM summary, firewall "
        "rulesets, inputs with their sha256, life-cycle history and a signature block. The HTML is "
        "one self-contained file that prints well to PDF.\n\nExample:\n"
        "  cranewatch report STS-07 --out sts-07-commissioning.html\n"
        "  cranewatch report STS-07 --format jsonl > sts-07-commissioning.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("crane", help="a registered crane, e.g. STS-07")
    parser.add_argument("--format", choices=("html", "jsonl"), default="html")
    parser.add_argument("--out", metavar="FILE", help="write here (default, or -: standard output)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with store_from_args(args, readonly=True) as store:
        report = build_report(store, args.crane)
    if args.format == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in report_records(report))
    else:
        text = render_html(report)
    write_out(text, args.out)
    if out_file(args.out) is not None:
        print(f"{args.format} report of {args.crane} written to {args.out}")
    return 0
