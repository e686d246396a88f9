"""``cranewatch evidence pcap FINDING-ID --out FILE``: a stored finding's evidence frames as a
small capture, cut from the capture its run recorded (``cranewatch.evidence_pcap``)."""

from __future__ import annotations

import argparse
import errno
import io
import sys
from pathlib import Path
from typing import Any

from cranewatch.errors import EnvironmentProblem, Location, UsageError
from cranewatch.store.options import add_db_option, store_from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evidence",
        help="a stored finding's evidence: its frames cut from the recorded capture as a small pcap",
        description="Work with a stored finding's evidence.\n\n"
        "Example:\n  cranewatch evidence pcap cw-e2b3ddd8a5a4 --out ssh-session.pcap --db cranewatch.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    pcap = sub.add_parser(
        "pcap",
        help="cut the finding's evidence frames into a small pcap",
        description="Cut exactly a stored finding's evidence frames out of the capture (pcap or pcapng, "
        "plain or gzip/xz/zstd-compressed) that the run which recorded it read, into a small capture: "
        "packet bytes, lengths, link type and nanosecond timestamps kept (a pcap; a pcapng when the "
        "frames' link types differ). The capture must still be where the run recorded it, with the "
        "sha256 recorded then: a changed file would give other packets under the same frame numbers.\n\n"
        "Exit codes: 0 written; 2 unknown or ambiguous finding, a finding without evidence frames, no "
        "store; 3 the recorded capture is missing, its sha256 changed, or it lacks an evidence frame.\n\n"
        "Example:\n  cranewatch evidence pcap cw-e2b3ddd8a5a4 --out ssh-session.pcap --db cranewatch.db\n"
        "  tshark -r ssh-session.pcap",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pcap.add_argument("finding", metavar="FINDING-ID", help="the stored finding's id (or an unambiguous start of it)")
    pcap.add_argument("--out", metavar="FILE", required=True, help="where to write the capture ('-': standard output)")
    pcap.add_argument("--crane", help="the crane, when a finding id is not unique across cranes")
    add_db_option(pcap)
    pcap.set_defaults(func=run_pcap)


def run_pcap(args: argparse.Namespace) -> int:
    from cranewatch.evidence_pcap import evidence_pcap

    buffer = io.BytesIO()  # nothing is written unless the whole cut succeeded
    with store_from_args(args, readonly=True) as store:
        cut = evidence_pcap(store, args.finding, buffer, crane=args.crane)
    if args.out == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
    else:
        try:
            Path(args.out).write_bytes(buffer.getvalue())
        except OSError as exc:
            problem = EnvironmentProblem if exc.errno == errno.ENOSPC else UsageError
            raise problem(f"cannot write: {exc.strerror}", Location(file=args.out)) from exc
    frames = sum(len(v) for v in cut.frames.values())
    print(f"cranewatch: {frames} evidence frame{'s' if frames != 1 else ''} of {cut.finding} ({cut.crane}) "
          f"written as {cut.format}" + ("" if args.out == "-" else f" to {args.out}"), file=sys.stderr)
    return 0
