"""``cranewatch rules lint [FILE...]``: check rule files against their schemas, every problem
with file and line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cranewatch.errors import ExitCode


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="check the detectors' rule files (YAML) against their schemas",
        description="Work with the detectors' rule files (detect/rules/*.yaml).\n\n"
        "Example:\n  cranewatch rules lint\n  cranewatch rules lint my-plc_control.yaml --kind plc_control",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    lint = sub.add_parser(
        "lint",
        help="check rule files: OK, or every problem with file:line (exit 3)",
        description="Check rule files against their JSON Schemas (detect/rules/schemas): a key "
        "given twice, a value of the wrong type or range, an unknown key, a missing one. Without "
        "FILE, the rule files cranewatch ships. Prints OK per file, or every problem with "
        "file:line; exits 3 when any file has a problem.\n\n"
        "Example:\n  cranewatch rules lint\n  cranewatch rules lint edited/c2.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint.add_argument("files", nargs="*", metavar="FILE", help="rule files (default: the shipped ones)")
    lint.add_argument("--kind", metavar="NAME",
                      help="the schema to check against (default: each file's name, e.g. c2 for c2.yaml)")
    lint.set_defaults(func=run_lint)


def run_lint(args: argparse.Namespace) -> int:
    from cranewatch.detect.rules import lint
    from cranewatch.report.terminal import printable

    bad = 0
    paths = [Path(f) for f in args.files] if args.files else None
    for path, problems in lint(paths, args.kind):
        if not problems:
            print(f"OK {printable(str(path))}")
            continue
        bad += 1
        print(f"{printable(str(path))}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {printable(str(problem))}", file=sys.stderr)
    return int(ExitCode.INPUT) if bad else int(ExitCode.OK)
