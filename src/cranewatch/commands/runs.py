"""``cranewatch runs CRANE``: every run recorded for a crane, superseded ones too."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.commands.triage import run_runs
from cranewatch.store.options import add_db_option


def register(subparsers: Any) -> None:
    runs = subparsers.add_parser(
        "runs",
        help="list a crane's recorded runs (superseded ones too) with their inputs",
        description="List every run recorded for a crane: kind, component, status, how often the same "
        "inputs were recorded, whether and why it was superseded, its findings and inputs.\n\n"
        "Example:\n  cranewatch runs STS-07\n  cranewatch runs STS-07 --format jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runs.add_argument("crane")
    runs.add_argument("--format", choices=("text", "jsonl"), default="text")
    add_db_option(runs)
    runs.set_defaults(func=run_runs)
