"""``cranewatch quarantine CRANE``: write the nftables ruleset that isolates a crane's zone."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.commands import out_file
from cranewatch.fleet import quarantine_crane, require_crane
from cranewatch.store.options import add_db_option, store_from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quarantine",
        help="write the nftables ruleset isolating a crane (only the analysis station passes)",
        description="Write the nftables ruleset that isolates a registered crane's zone: nothing in "
        "or out but the analysis station; everything else dropped, logged with the prefix "
        "'cw CRANE quarantine drop: ' and counted. The ruleset is also kept in the store for the "
        "commissioning report.\n\nExample:\n"
        "  cranewatch quarantine STS-07 --station 10.20.0.100 --out sts-07-quarantine.nft --check --set-state",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("crane", help="a registered crane, e.g. STS-07")
    parser.add_argument("--station", action="append", required=True, metavar="IP",
                        help="the analysis station's address (repeatable)")
    parser.add_argument("--zone", action="append", metavar="CIDR",
                        help="the crane zone (default: the zone registered with the crane)")
    parser.add_argument("--interface", help="the firewall's crane-side interface, when known")
    parser.add_argument("--out", metavar="FILE", help="write the ruleset here (default, or -: standard output)")
    parser.add_argument("--check", action="store_true", help="have `nft -c` check the ruleset (needs root)")
    parser.add_argument("--set-state", action="store_true",
                        help="also move the crane to quarantined in its life cycle")
    parser.add_argument("--by", help="who (default: $USER)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        before = require_crane(store, args.crane).state
        stored = quarantine_crane(store, args.crane, args.station, zone=args.zone, interface=args.interface,
                                  out=out_file(args.out), check=args.check, move=args.set_state, by=args.by)
        after = require_crane(store, args.crane).state
    report_written(stored.text, out_file(args.out))
    if after != before:
        print(f"{args.crane}: {before} → {after}")
    return 0


def report_written(text: str, out: str | None) -> None:
    if out is None:
        print(text, end="")
    else:
        print(f"ruleset written to {out} (load with: nft -f {out})")
