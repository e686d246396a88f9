"""``cranewatch profile check FILE``: read a crane profile and report every problem at once.
``cranewatch profile draft CAPTURE... --out FILE``: a profile skeleton from a quarantine capture."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cranewatch.commands import OUT_HELP, check_inputs, write_out
from cranewatch.errors import ExitCode, ProfileError
from cranewatch.profile import load_profile


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="check a crane profile (TOML)",
        description="Work with crane profiles.\n\nExample:\n  cranewatch profile check profiles/sts-07.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="load a profile and print OK or every problem with file:line",
        description="Load a profile and print OK, or every problem with file:line (exit 3).\n\n"
        "Example:\n  cranewatch profile check profiles/sts-07.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", help="the profile (TOML)")
    check.set_defaults(func=run_check)
    draft = sub.add_parser(
        "draft",
        help="draft a profile skeleton from a quarantine capture (every guess marked for review)",
        description="Analyse clean captures of one crane and write a profile skeleton: the crane "
        "zone and gateway, hosts with MAC, IP, vendor (OUI, from Debian's ieee-data or Wireshark's "
        "manuf when installed) and a guessed role, one [[allow]] per service seen with its users "
        "(for Modbus each master's function codes, read and write sets), and register-map "
        "candidates with a guessed kind (constant, counter, boolean, bounded analogue with the "
        "observed range). Every guess is marked GUESS in a comment; nothing outside is allowed "
        "and no safety point is named. The draft passes `profile check`.\n\n"
        "Example:\n  cranewatch profile draft quarantine.pcap --crane STS-09 --out sts-09.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    draft.add_argument("captures", nargs="+", metavar="CAPTURE", help="clean pcap/pcapng captures")
    draft.add_argument("--out", metavar="FILE", help="where to write the draft" + OUT_HELP)
    draft.add_argument("--crane", metavar="ID", help="the crane's id (default: from the file name)")
    draft.set_defaults(func=run_draft)


def run_check(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.file)
    except ProfileError as exc:
        if not exc.problems:
            raise
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return int(ExitCode.INPUT)
    print(
        f"OK {args.file}: crane {profile.crane_id}, {len(profile.hosts)} hosts, "
        f"{len(profile.allowed)} allowed communications, {len(profile.registers)} register points, "
        f"{len(profile.maintenance)} maintenance windows"
    )
    return int(ExitCode.OK)


def run_draft(args: argparse.Namespace) -> int:
    from cranewatch.draft import draft_profile, guess_roles, render_draft

    check_inputs(args.captures)
    draft = draft_profile(args.captures, crane_id=args.crane)
    write_out(render_draft(draft), args.out)
    hosts = guess_roles(draft)
    roles = ", ".join(f"{h.name} {h.ip}" for h in hosts)
    print(f"cranewatch: drafted {len(hosts)} hosts ({roles}), {len(draft.drafter.points)} register "
          f"candidates; vendors: {draft.oui.source}; review every GUESS", file=sys.stderr)
    incomplete = [i for i in draft.inputs if not i.complete]
    for item in incomplete:
        print(f"cranewatch: error: {item.path}: {'; '.join(item.warnings) or 'not read whole'}",
              file=sys.stderr)
    return int(ExitCode.INPUT) if incomplete else int(ExitCode.OK)
