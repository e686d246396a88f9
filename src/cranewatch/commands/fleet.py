"""``cranewatch fleet``: register cranes, import a fleet file, list, show, change life-cycle state."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cranewatch import fleet as registry
from cranewatch.errors import Location, UsageError
from cranewatch.fleet import STATES, import_fleet, parse_component, require_crane, transition
from cranewatch.model import iso_time
from cranewatch.report.terminal import printable
from cranewatch.store import Crane, Store
from cranewatch.store.options import add_db_option, store_from_args


def say(text: str) -> None:
    """One line of text output: names, reasons and makers come from fleet files and people,
    so control characters in them are escaped (``report.terminal``)."""
    print(printable(text))


def register_parser(parent: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(
        name,
        help=help_text,
        description=f"{help_text}\n\nExample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    return parser


def register(subparsers: Any) -> None:
    fleet = subparsers.add_parser(
        "fleet",
        help="the crane registry and life cycle",
        description="Register cranes and move them through the life cycle "
        f"({' → '.join(STATES)}).\n\nExample:\n"
        "  cranewatch fleet import profiles/fleet-example.toml\n"
        "  cranewatch fleet set-state STS-07 quarantined --reason 'firewall installed'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    add = register_parser(sub, "add", "register a delivered crane",
                          "cranewatch fleet add STS-09 --maker 'Harbour Heavy' --model STS-65 "
                          "--zone 10.20.9.0/24 --component name=PLC,kind=plc,ip=10.20.9.10")
    add.add_argument("name", help="crane name, e.g. STS-07")
    add.add_argument("--maker", default="")
    add.add_argument("--model", default="")
    add.add_argument("--commissioned", metavar="YYYY-MM-DD")
    add.add_argument("--vendor", default="", help="control software vendor")
    add.add_argument("--profile", metavar="FILE", help="the crane's profile (TOML)")
    add.add_argument("--zone", metavar="CIDR", help="the crane LAN, e.g. 10.20.7.0/24")
    add.add_argument("--component", action="append", default=[], metavar="K=V,...",
                     help="a part: name=,kind=plc|cms|ocr|camera|modem|...,ip=,mac=,firmware= (repeatable)")
    add.add_argument("--by", help="who registers it (default: $USER)")
    add.add_argument("--reason", default="delivered to the terminal")
    add.set_defaults(func=run_add)

    imp = register_parser(sub, "import", "register (or update) the cranes of a fleet TOML file",
                          "cranewatch fleet import profiles/fleet-example.toml")
    imp.add_argument("file")
    imp.add_argument("--by", help="who imports (default: $USER)")
    imp.set_defaults(func=run_import)

    lst = register_parser(sub, "list", "list registered cranes and their state", "cranewatch fleet list")
    lst.add_argument("--format", choices=("text", "jsonl"), default="text")
    lst.set_defaults(func=run_list)

    show = register_parser(sub, "show", "a crane's facts, components and life-cycle history",
                           "cranewatch fleet show STS-07")
    show.add_argument("name")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=run_show)

    state = register_parser(sub, "set-state", "move a crane to another life-cycle state",
                            "cranewatch fleet set-state STS-07 under-analysis --reason 'image scan starts'")
    state.add_argument("name")
    state.add_argument("state", choices=STATES)
    state.add_argument("--reason", required=True, help="why (recorded in the history)")
    state.add_argument("--by", help="who (default: $USER)")
    state.set_defaults(func=run_set_state)


def parse_component_option(text: str) -> dict[str, str]:
    spec: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--component {text!r}: expected key=value pairs separated by commas")
        spec[key.strip()] = value.strip()
    return spec


def run_add(args: argparse.Namespace) -> int:
    from cranewatch.fleet.fleetfile import check_date, check_zone

    where = Location(file="<command line>")
    crane = Crane(
        name=args.name,
        maker=args.maker,
        model=args.model,
        commissioned=check_date(args.commissioned, where),
        control_vendor=args.vendor,
        profile_path=args.profile,
        zone=check_zone(args.zone, where),
        components=tuple(parse_component(parse_component_option(c), where) for c in args.component),
    )
    with store_from_args(args, create=True) as store:
        added = registry.register(store, crane, by=args.by, reason=args.reason)
    say(f"{added.name}: registered, state {added.state}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    with store_from_args(args, create=True) as store:
        for result in import_fleet(store, args.file, by=args.by):
            say(f"{result.crane}: {result.action}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store_from_args(args, readonly=True) as store:
        cranes = store.cranes()
        if args.format == "jsonl":
            for crane in cranes:
                print(json.dumps({"type": "crane", **crane.to_json()}))
            return 0
        if not cranes:
            print("no cranes registered; try: cranewatch fleet import profiles/fleet-example.toml")
            return 0
        say(f"{'crane':<10} {'state':<15} {'gate':<13} {'maker':<36} model")
        for crane in cranes:
            gate = store.latest_gate(crane.name)
            decision = gate.decision if gate else "-"
            say(f"{crane.name:<10} {crane.state:<15} {decision:<13} {crane.maker:<36} {crane.model}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with store_from_args(args, readonly=True) as store:
        crane = require_crane(store, args.name)
        if args.format == "json":
            doc = crane.to_json()
            doc["history"] = [
                {"at": iso_time(h.at), "who": h.who, "why": h.why, "from": h.from_state, "to": h.to_state}
                for h in store.history(crane.name)
            ]
            doc["audit"] = [e.to_json() for e in store.audit_events(crane.name)]
            json.dump(doc, sys.stdout, indent=2)
            print()
            return 0
        print_crane(store, crane)
    return 0


def print_crane(store: Store, crane: Crane) -> None:
    say(f"{crane.name}  ({crane.state})")
    for label, value in (
        ("maker", crane.maker), ("model", crane.model), ("commissioned", crane.commissioned),
        ("control vendor", crane.control_vendor), ("crane zone", crane.zone), ("profile", crane.profile_path),
    ):
        say(f"  {label + ':':<16}{value or '-'}")
    if crane.components:
        say("  components:")
        for c in crane.components:
            say(f"    {c.name:<10} {c.kind:<8} ip {c.ip or '-':<15} mac {c.mac or '-':<17} firmware {c.firmware or '-'}")
    gate = store.latest_gate(crane.name)
    if gate is not None:
        say(f"  gate:           {gate.decision} ({iso_time(gate.at)}, {len(gate.reasons)} reason(s); "
              f"details: cranewatch report {crane.name})")
    say("  history:")
    for h in store.history(crane.name):
        step = f"{h.from_state} → {h.to_state}" if h.from_state else f"registered as {h.to_state}"
        say(f"    {iso_time(h.at)}  {h.who:<10} {step}: {h.why}")
    audit = store.audit_events(crane.name)
    if audit:
        say("  audit (dispositions, supersedes, re-recordings):")
        for e in audit:
            state = e.detail.get("state")
            what = f"{e.action} {e.subject}" + (f" → {state}" if state else "")
            extra = "".join(f", {k} {e.detail[k]}" for k in ("until", "evidence_run") if k in e.detail)
            say(f"    {iso_time(e.at)}  {e.who:<10} {what}{extra}: {e.why}")


def run_set_state(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        entry = transition(store, args.name, args.state, by=args.by, reason=args.reason)
    say(f"{entry.crane}: {entry.from_state} → {entry.to_state} (by {entry.who}: {entry.why})")
    return 0
