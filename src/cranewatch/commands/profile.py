"""``cranewatch profile check FILE``: read a crane profile and report every problem at once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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
