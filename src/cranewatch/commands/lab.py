"""`cranewatch lab`: run the STS-07 reference crane in network namespaces, list, clean up."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cranewatch.errors import UsageError

EXAMPLE = """\
Example:
  sudo cranewatch lab run normal --out /tmp/lab-normal --seconds 30
  sudo cranewatch lab run safety-bypass --out /tmp/lab-bypass --outside-capture
  cranewatch lab list
  sudo cranewatch lab clean
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lab", help="run the reference crane STS-07 with real protocol stacks (root)",
        description="The reference crane STS-07 on real protocol stacks in Linux network "
        "namespaces, captured like a SPAN port, with ground-truth labels.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=_no_action, lab_parser=parser)
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION")

    run = actions.add_parser(
        "run", help="run one scenario and write crane-lan.pcap + labels.json to --out",
        epilog="Example:\n  sudo cranewatch lab run recon --out /tmp/recon --seconds 40\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", help="scenario name (see `cranewatch lab list`)")
    run.add_argument("--out", type=Path, required=True, help="directory for capture and labels")
    run.add_argument("--seconds", type=float, default=30.0, help="capture length (default 30)")
    run.add_argument("--seed", type=int, help="physics/cargo seed (default: the scenario's)")
    run.add_argument("--outside-capture", action="store_true",
                     help="also capture the gateway's outside interface (outside.pcap)")
    run.add_argument("--cameras", action="store_true",
                     help="add two IP cameras streaming RTSP/RTP to the OCR controller")
    run.add_argument("--no-logs", action="store_true", help="do not keep the parts' logs")
    run.set_defaults(func=_run)

    listing = actions.add_parser("list", help="the scenarios, one line each",
                                 epilog="Example:\n  cranewatch lab list\n",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    listing.set_defaults(func=_list)

    clean = actions.add_parser("clean", help="remove namespaces and processes a killed run left",
                               epilog="Example:\n  sudo cranewatch lab clean\n",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    clean.set_defaults(func=_clean)


def _no_action(args: argparse.Namespace) -> int:
    args.lab_parser.print_help(sys.stderr)
    return 2


def _list(args: argparse.Namespace) -> int:
    from cranewatch.lab.scenarios import all_scenarios

    scenarios = all_scenarios()
    width = max(len(s.name) for s in scenarios)
    for scenario in scenarios:
        print(f"{scenario.name:<{width}}  {scenario.summary}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from cranewatch.lab.runner import run_scenario
    from cranewatch.lab.scenarios import get

    scenario = get(args.scenario)
    if args.seconds > 3600:
        raise UsageError("--seconds above 3600: the lab is for short captures")
    labels = run_scenario(scenario, args.out, args.seconds, seed=args.seed,
                          outside_capture=args.outside_capture, keep_logs=not args.no_logs,
                          cameras=args.cameras)
    attacks = ", ".join(f"{a['name']} {a['start_iso']}..{a['end_iso']}" for a in labels["attacks"])
    print(f"{scenario.name}: {args.out / labels['captures']['crane_lan']} "
          f"({labels['end'] - labels['start']:.1f} s)" + (f"; attack {attacks}" if attacks else ""))
    return 0


def _clean(args: argparse.Namespace) -> int:
    from cranewatch.lab import netns

    netns.require_root_and_tools(("ip",))
    removed = netns.clean()
    print(f"removed {len(removed)} lab namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
    return 0
