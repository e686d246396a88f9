"""``cranewatch policy CRANE``: write the in-service nftables allow-list from profile and baseline."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.commands import out_file
from cranewatch.commands.quarantine import report_written
from cranewatch.fleet import inservice_policy
from cranewatch.store.options import add_db_option, store_from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="write the in-service nftables allow-list of a crane from its profile and baseline",
        description="Write the in-service allow-list of a crane: only the communications its "
        "profile (and a learned baseline) allow cross the crane zone, per host, protocol and port; "
        "everything else is dropped, logged with the prefix 'cw CRANE in-service drop: ' and "
        "counted.\n\nExample:\n"
        "  cranewatch policy STS-07 --profile profiles/sts-07.toml --out sts-07-inservice.nft --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("crane", help="a registered crane, e.g. STS-07")
    parser.add_argument("--profile", metavar="FILE", help="the crane profile (default: the registered one)")
    parser.add_argument("--baseline", metavar="FILE", nargs="+",
                        help="a saved baseline (JSON) or clean captures to learn one from")
    parser.add_argument("--interface", help="the firewall's crane-side interface, when known")
    parser.add_argument("--out", metavar="FILE", help="write the ruleset here (default, or -: standard output)")
    parser.add_argument("--check", action="store_true",
                        help="require `nft -c` to check the ruleset (needs root; without --check it is "
                        "checked whenever nft can, and a refused ruleset is never written)")
    parser.add_argument("--by", help="who (default: $USER)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cranewatch.judging import load_judging

    # loaded once, before the store is touched (a clean capture as --baseline: learned here)
    judging = load_judging(args.profile, args.baseline)
    with store_from_args(args) as store:
        stored = inservice_policy(store, args.crane, profile=judging.profile, baseline=judging.baseline,
                                  interface=args.interface, out=out_file(args.out), check=args.check, by=args.by)
    report_written(stored.text, out_file(args.out), checked=args.check)
    return 0
