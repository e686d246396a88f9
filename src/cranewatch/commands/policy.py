"""``cranewatch policy CRANE``: write the in-service nftables allow-list from profile and baseline."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.baseline import load_baseline
from cranewatch.commands.quarantine import write_ruleset
from cranewatch.errors import UsageError
from cranewatch.fleet import current_user, require_crane
from cranewatch.policy import check_ruleset, inservice_ruleset
from cranewatch.profile import load_profile
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
    parser.add_argument("--out", metavar="FILE", help="write the ruleset here (default: standard output)")
    parser.add_argument("--check", action="store_true", help="have `nft -c` check the ruleset (needs root)")
    parser.add_argument("--by", help="who (default: $USER)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        crane = require_crane(store, args.crane)
        profile_path = args.profile or crane.profile_path
        if not profile_path:
            raise UsageError(f"{crane.name} has no registered profile: give --profile FILE")
        profile = load_profile(profile_path)
        baseline = load_baseline(args.baseline) if args.baseline else None
        text = inservice_ruleset(profile, baseline, crane=crane.name, interface=args.interface)
        if args.check:
            check_ruleset(text)
        write_ruleset(text, args.out)
        store.record_ruleset(crane.name, "in-service", text, who=args.by or current_user())
    return 0
