"""``cranewatch supersede RUN --reason``: set a recorded run aside; it stays, marked, in the store."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.commands.triage import run_supersede
from cranewatch.store.options import add_db_option


def register(subparsers: Any) -> None:
    sup = subparsers.add_parser(
        "supersede",
        help="set a recorded run aside (it stays in the store and the report, marked, with the reason)",
        description="Mark a run superseded: it stays visible, but no longer counts as evidence that exists "
        "(e.g. the image scan a component needs) nor as remediation evidence. Its findings stay in the "
        "gate until each is disposed of (cranewatch triage).\n\n"
        "Example:\n  cranewatch supersede 3 --reason 'captured on the wrong mirror port' --by ana",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sup.add_argument("run", type=int, metavar="RUN", help="the run id (cranewatch runs CRANE)")
    sup.add_argument("--reason", required=True, help="why (recorded)")
    sup.add_argument("--by", help="who (default: $USER)")
    add_db_option(sup)
    sup.set_defaults(func=run_supersede)
