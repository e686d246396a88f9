"""``cranewatch triage``: dispose of stored findings, or list them with their states; the work of
``cranewatch runs`` and ``cranewatch supersede`` (their modules only register them).

Thin over ``cranewatch.triage`` (the web console calls the same functions). Listing opens the
store read-only; a disposition or a supersede is recorded with who, when and why, and shows in
``fleet show``, the commissioning report and its JSON lines (``"type": "audit"``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cranewatch.errors import UsageError
from cranewatch.fleet import require_crane
from cranewatch.gate import disposition_text, run_label
from cranewatch.model import iso_time
from cranewatch.report.commissioning import run_record
from cranewatch.store import FINDING_STATES, Store
from cranewatch.store.options import add_db_option, store_from_args
from cranewatch.triage import dispose, supersede, triaged


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "triage",
        help="record a disposition of a stored finding (who, when, why), or list findings with their states",
        description="Change a stored finding's state by a recorded disposition: open, acknowledged, "
        "false-positive, accepted-risk (needs --until and the officer, --by) or remediated (needs "
        "--evidence RUN: a later run of the same component or host in which the finding's rule was "
        "checked and no longer fires). Only open and acknowledged findings count in the gate; an "
        "accepted risk past its expiry is open again, and a remediated finding seen again is reopened.\n\n"
        "Exit codes: 0 done, 2 refused (unknown finding, a remediation the evidence does not show, "
        "a missing store), 4 the store cannot be written (read-only, disk full).\n\n"
        "Example:\n"
        "  cranewatch triage --list STS-07\n"
        "  cranewatch triage cw-7a202b043f05 --state false-positive --reason 'maintenance window "
        "not in the profile' --by ana\n"
        "  cranewatch triage cw-1200fc97a2d4 --state accepted-risk --until 2027-01-31 --by 'FSO B. Meyer' "
        "--reason 'limit raise approved by the maker, ticket 4711'\n"
        "  cranewatch triage cw-fac1240da0ff --state remediated --evidence 5 --reason 'EWS rebuilt'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("finding", nargs="?", metavar="FINDING-ID",
                        help="the stored finding's id (or an unambiguous start of it)")
    parser.add_argument("--list", metavar="CRANE", help="list the crane's stored findings with their states")
    parser.add_argument("--state", choices=FINDING_STATES, help="the new state")
    parser.add_argument("--reason", help="why (recorded)")
    parser.add_argument("--until", metavar="DATE", help="accepted-risk: expiry, YYYY-MM-DD (end of that day, UTC)")
    parser.add_argument("--evidence", metavar="RUN", type=int, help="remediated: the later run that shows it gone")
    parser.add_argument("--by", help="who decides (default: $USER; accepted-risk needs it named)")
    parser.add_argument("--crane", help="the crane, when a finding id is not unique across cranes")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text", help="output of --list")
    add_db_option(parser)
    parser.set_defaults(func=run_triage)


def run_triage(args: argparse.Namespace) -> int:
    if args.list:
        if args.finding or args.state:
            raise UsageError("--list CRANE lists; to dispose of a finding give FINDING-ID --state STATE --reason")
        with store_from_args(args, readonly=True) as store:
            print_triage(store, args.list, args.format)
        return 0
    if not args.finding or not args.state or args.reason is None:
        raise UsageError("give FINDING-ID --state STATE --reason TEXT (or --list CRANE)")
    with store_from_args(args) as store:
        d = dispose(store, args.finding, args.state, reason=args.reason, by=args.by, until=args.until,
                    evidence=args.evidence, crane=args.crane)
    print(f"{d.crane} {d.finding}: {disposition_text(d, d.at)}")
    return 0


def print_triage(store: Store, crane: str, fmt: str) -> None:
    now = time.time()
    items = triaged(store, crane, now=now)
    if fmt == "jsonl":
        for item in items:
            print(json.dumps(item.to_json()))
        return
    if not items:
        print(f"{crane}: no stored findings")
        return
    counting = sum(item.counts for item in items)
    print(f"{crane}: {len(items)} stored finding(s), {counting} counting in the gate (open or acknowledged)")
    for item in items:
        f = item.finding
        runs = ",".join(str(r) for r in item.runs) or "-"
        print(f"  {f.id}  {item.state:<14} {f.severity!s:<8} {f.category:<18} runs {runs:<8} {f.title}")
        if item.disposition is not None:
            print(f"      {disposition_text(item.disposition, now)}")


def run_runs(args: argparse.Namespace) -> int:
    with store_from_args(args, readonly=True) as store:
        record = require_crane(store, args.crane)
        runs = [r for r in store.runs(record.name) if r.kind != "gate"]
        counts = {r.id: len(store.findings(record.name, [r.id])) for r in runs}
    if args.format == "jsonl":
        for r in runs:
            inputs = [{"path": i.path, "sha256": i.sha256, "size": i.size} for i in r.inputs]
            print(json.dumps({**run_record(r), "crane": r.crane, "findings": counts[r.id], "inputs": inputs}))
        return 0
    if not runs:
        print(f"{record.name}: no runs recorded")
        return 0
    for r in runs:
        times = f" ×{r.recordings}" if r.recordings > 1 else ""
        print(f"run {r.id:<4} {r.kind:<10} {r.component or '-':<10} {r.status:<9} {iso_time(r.started_at)}"
              f"{times}  {counts[r.id]} finding(s)  {run_label(r)}")
        if r.superseded:
            print(f"           superseded {iso_time(r.superseded_at)} by {r.superseded_by}: {r.superseded_reason}")
        if r.note:
            print(f"           note: {r.note}")
        for i in r.inputs:
            print(f"           {i.sha256[:16]}  {i.path}")
    return 0


def run_supersede(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        run = supersede(store, args.run, reason=args.reason, by=args.by)
    print(f"{run.crane}: run {run.id} superseded by {run.superseded_by}: {run.superseded_reason} "
          "(it stays in the store and the report)")
    return 0
