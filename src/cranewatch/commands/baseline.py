"""``cranewatch baseline CAPTURE... --out FILE``: learn a crane's normal traffic and save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cranewatch.baseline import baseline_text, learn_baseline, summary_text
from cranewatch.commands import check_inputs, out_file, write_out
from cranewatch.errors import ExitCode
from cranewatch.report.terminal import printable


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="learn normal traffic from clean captures and save it as JSON",
        description="Learn hosts, MAC/IP bindings, gateways, DHCP/DNS servers, the communication "
        "graph, Modbus function codes and register ranges per master, polling periods, DNS and "
        "TLS names and fingerprints from clean captures; save them as versioned JSON and print "
        "a readable summary. Use the file with `cranewatch analyze --baseline FILE`.\n\n"
        "With --profile, the register map turns the values read into signals and the baseline "
        "also keeps the process checks' envelopes.\n\n"
        "Example:\n  cranewatch baseline normal.pcap --out sts-07.baseline.json\n"
        "  cranewatch baseline normal.pcap --profile profiles/sts-07.toml --out sts-07.baseline.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("captures", nargs="+", metavar="CAPTURE", help="clean pcap/pcapng captures")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="where to write the baseline (JSON); - for standard output (the "
                        "summary then goes to stderr)")
    parser.add_argument("--profile", metavar="P",
                        help="crane profile (TOML): also learn the process envelopes")
    parser.add_argument("--quiet", action="store_true", help="do not print the summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_inputs(args.captures)
    profile = None
    if args.profile is not None:
        from cranewatch.profile import load_profile

        profile = load_profile(args.profile)
    learned = learn_baseline(args.captures, profile)
    write_out(baseline_text(learned), args.out)
    if not args.quiet:
        summary = sys.stdout if out_file(args.out) else sys.stderr  # stdout may hold the JSON
        print(summary_text(learned), end="", file=summary)
        print(f"saved to {args.out}" if out_file(args.out) else "written to standard output",
              file=summary)
    # A capture cut short still teaches what it holds; the baseline is saved, the exit code
    # says the input was not read whole.
    incomplete = [i for i in learned.inputs if not i.get("complete", True)]
    for item in incomplete:
        for warning in item.get("warnings", ["capture not read whole"]):
            print(printable(f"cranewatch: error: {item['path']}: {warning}"), file=sys.stderr)
    return int(ExitCode.INPUT if incomplete else ExitCode.OK)
