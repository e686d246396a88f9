"""``cranewatch quarantine CRANE``: write the nftables ruleset that isolates a crane's zone."""

from __future__ import annotations

import argparse
import sys
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
        "  cranewatch quarantine STS-07 --station 10.20.0.100 --out sts-07-quarantine.nft --check --set-state\n\n"
        "Interface names are checked (at most 15 letters, digits, '_', '.' or '-'); a station wider "
        "than a /16 (IPv4) or /48 (IPv6), such as 0.0.0.0/0, is refused without --force.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("crane", help="a registered crane, e.g. STS-07")
    parser.add_argument("--station", action="append", required=True, metavar="IP",
                        help="the analysis station's address (repeatable)")
    parser.add_argument("--zone", action="append", metavar="CIDR",
                        help="the crane zone (default: the zone registered with the crane)")
    parser.add_argument("--interface", help="the firewall's crane-side interface, when known")
    parser.add_argument("--out", metavar="FILE", help="write the ruleset here (default, or -: standard output)")
    parser.add_argument("--check", action="store_true",
                        help="require `nft -c` to check the ruleset (needs root; without --check it is "
                        "checked whenever nft can, and a refused ruleset is never written)")
    parser.add_argument("--force", action="store_true",
                        help="accept a station network wider than a /16 (IPv4) or /48 (IPv6), even "
                        "0.0.0.0/0; the ruleset then carries a warning")
    parser.add_argument("--set-state", action="store_true",
                        help="also move the crane to quarantined in its life cycle")
    parser.add_argument("--by", help="who (default: $USER)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        before = require_crane(store, args.crane).state
        stored = quarantine_crane(store, args.crane, args.station, zone=args.zone, interface=args.interface,
                                  out=out_file(args.out), check=args.check, move=args.set_state, by=args.by,
                                  force=args.force)
        after = require_crane(store, args.crane).state
    report_written(stored.text, out_file(args.out), checked=args.check)
    if after != before:
        print(f"{args.crane}: {before} → {after}")
    return 0


def report_written(text: str, out: str | None, *, checked: bool = False) -> None:
    """The ruleset on standard output, or where it was written; with ``--check`` say that nft
    accepted it (on standard error when the ruleset itself is on standard output)."""
    if out is None:
        print(text, end="")
    else:
        print(f"ruleset written to {out} (load with: nft -f {out})")
    if checked:
        print("nft -c accepted the ruleset", file=sys.stderr if out is None else sys.stdout)
