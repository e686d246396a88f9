"""``cranewatch monitor IFACE``: watch a live interface with the same detectors as ``analyze``.

Exit codes: 0 stopped cleanly (SIGINT/SIGTERM, --seconds, --packets); 1 --fail-on met;
2 bad options (a --profile or --baseline that does not exist too); 3 no such interface or
namespace, the interface vanished, a filter tcpdump rejects, an invalid profile or baseline;
4 tcpdump missing, not allowed to capture, or the interface is down.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from cranewatch.commands import STDOUT, fail_on_met, severity_option
from cranewatch.commands.analyze import detector_sinks
from cranewatch.errors import ExitCode, UsageError
from cranewatch.forward import ForwardOutput, add_forward_options, forwarder_from_args
from cranewatch.heartbeat import HeartbeatWriter
from cranewatch.judging import Judging, load_judging
from cranewatch.model import iso_time
from cranewatch.monitor import (
    FindingOutput,
    JsonLinesOutput,
    Monitor,
    MonitorSettings,
    MonitorSummary,
    RollingProcessChecks,
    StoreOutput,
    TextOutput,
)
from cranewatch.report.terminal import printable, printable_lines
from cranewatch.skipped import SkippedCheck, skipped_checks
from cranewatch.sources.live import CaptureTool, LiveCapture, RingWriter


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="watch a live interface: findings as they happen (tcpdump underneath)",
        description="Capture IFACE with tcpdump and run the analyze pipeline and detectors on "
        "the packets as they arrive. Each finding is printed on stdout as one line when it is "
        "confirmed, and again when it grows (count, severity), at most every --update-every "
        "seconds; --out appends the same reports as JSON lines (Finding objects, stable ids: "
        "the last line of an id is its latest state); --db checkpoints the session's findings "
        "into the store. --ring keeps the raw packets in rolling pcap files, and the findings' "
        "evidence names those files and their frame numbers. SIGINT/SIGTERM stop cleanly: "
        "last packets analysed, final reports, a summary on stderr. What the session cannot "
        "check (no profile, register map, limit or baseline: no crane is built in) is said on "
        "stderr when it starts, and as skipped records at the start of --out.\n\n"
        "Stopped cleanly it exits 0; it exits 3 when there is no such interface or "
        "namespace (or it vanished), a filter tcpdump rejects, an invalid profile/baseline; "
        "and 4 when tcpdump is missing, capturing is not allowed, or the interface is down.\n\n"
        "Example:\n  cranewatch monitor eth1 --profile profiles/sts-07.toml --out findings.jsonl\n"
        "  cranewatch monitor veth0 --netns crane-lan --ring /var/lib/cranewatch/ring "
        "--ring-size 100 --ring-files 20 --db cranewatch.db\n"
        "  cranewatch monitor eth1 --seconds 600 --fail-on high --filter 'not port 443'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("interface", metavar="IFACE", help="network interface to capture on")
    parser.add_argument("--filter", metavar="BPF",
                        help="capture filter in tcpdump syntax, e.g. 'tcp port 502 or tcp port 22'")
    parser.add_argument("--netns", metavar="NAME", help="capture inside this network namespace")
    parser.add_argument("--snaplen", type=_positive_int, metavar="BYTES",
                        help="bytes kept per packet (tcpdump -s; default: whole packets)")
    parser.add_argument("--buffer", type=_positive_int, metavar="MB",
                        help="kernel capture buffer in MB (tcpdump -B; default tcpdump's 2 MB): "
                        "absorbs bursts faster than the analysis")
    parser.add_argument("--profile", metavar="P", help="crane profile (TOML)")
    parser.add_argument("--baseline", metavar="B",
                        help="baseline: a saved baseline file, or a clean capture to learn from")
    parser.add_argument("--crane", metavar="ID", help="crane id for the findings and the store")
    parser.add_argument("--out", metavar="FILE",
                        help="append findings here as JSON lines; - for standard output (the "
                        "finding lines then go to stderr)")
    parser.add_argument("--db", metavar="FILE",
                        help="checkpoint findings into this cranewatch database")
    parser.add_argument("--heartbeat", type=_positive_float, default=60.0, metavar="S",
                        help="with --db: seconds between two heartbeats in the store (sensor, last packet "
                        "time, packets, findings of the last 24 h; default 60); the console's in-service "
                        "health reads them")
    parser.add_argument("--quiet", action="store_true", help="no finding lines on stdout")
    parser.add_argument("--ring", metavar="DIR", help="keep the raw packets in rolling pcap files here")
    parser.add_argument("--ring-size", type=_positive_float, default=100.0, metavar="MB",
                        help="size of one ring file in MB (default 100)")
    parser.add_argument("--ring-files", type=_positive_int, default=10, metavar="N",
                        help="ring files kept, besides those holding evidence (default 10)")
    parser.add_argument("--seconds", type=_positive_float, metavar="N", help="stop after N seconds")
    parser.add_argument("--packets", type=_positive_int, metavar="N", help="stop after N packets")
    parser.add_argument("--window", type=_positive_float, default=2.0, metavar="S",
                        help="seconds between looks at the detectors (default 2)")
    parser.add_argument("--update-every", type=_positive_float, default=60.0, metavar="S",
                        help="least seconds between two reports of a growing finding (default 60)")
    parser.add_argument("--process-span", type=_positive_float, default=120.0, metavar="S",
                        help="seconds of register values the process checks look at (default 120)")
    parser.add_argument("--process-every", type=_positive_float, default=30.0, metavar="S",
                        help="seconds of capture between two runs of the process checks (default 30)")
    add_forward_options(parser)
    parser.add_argument("--fail-on", metavar="SEVERITY", type=severity_option,
                        help="exit 1 when a finding of this severity or higher was reported")
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def judging_of(args: argparse.Namespace) -> Judging:
    """``--profile`` and ``--baseline``, loaded once for the session (``judging``: a baseline
    given as a capture is learned here, not at every run of the checks)."""
    judging = getattr(args, "judging", None)
    if judging is None:
        judging = args.judging = load_judging(args.profile, args.baseline)
    return judging


def _crane_of(args: argparse.Namespace) -> str | None:
    if args.crane:
        return str(args.crane)
    return judging_of(args).crane_id


def process_checks(args: argparse.Namespace) -> list[RollingProcessChecks]:
    """The process checks over a rolling stretch of values.

    Only with a profile: its register map says what the values mean. Without one the checks
    would have no register map (no crane is built in; ``cranewatch.sinks`` skips them too).
    """
    judging = judging_of(args)
    if judging.profile is None:
        return []
    from cranewatch.process.engine import build_sink
    from cranewatch.process.signals import is_write_event

    template = build_sink(profile=judging.profile, baseline=judging.process_baseline,
                          crane=args.crane)
    return [RollingProcessChecks(lambda: replace(template, series=[], writes=[]), is_write_event,
                                 span=args.process_span, every=args.process_every)]


def _outputs(args: argparse.Namespace, source: str, stop: threading.Event) -> list[FindingOutput]:
    outputs: list[FindingOutput] = []
    to_stdout = args.out == STDOUT
    if to_stdout:  # the JSON lines own stdout; the finding lines go to stderr
        outputs.append(JsonLinesOutput(Path(STDOUT), _handle=_stdout_copy()))
    elif args.out:
        outputs.append(JsonLinesOutput(Path(args.out)))
    if args.db:
        crane, store, central = _recording_store(args, "checkpoints will be spooled")
        outputs.append(StoreOutput(store, crane, f"monitor:{source}", url=central))
    forwarder = forwarder_from_args(args.forward, args.forward_format, args.forward_ca,
                                    args.forward_state)
    if forwarder is not None:
        outputs.append(ForwardOutput(forwarder))
    if not args.quiet:
        # last: what is shown is already on disk
        outputs.append(TextOutput(sys.stderr if to_stdout else sys.stdout, stop))
    return outputs


def _heartbeat(args: argparse.Namespace, source: str) -> HeartbeatWriter | None:
    """With --db, the session's heartbeat (``cranewatch.heartbeat``) every --heartbeat seconds."""
    if not args.db:
        return None
    crane, store, url = _recording_store(args, None)  # resumes when a central store is back
    return HeartbeatWriter(store, crane, f"monitor:{source}", every=args.heartbeat, url=url)


def _recording_store(args: argparse.Namespace, away: str | None) -> tuple[str, Any, str | None]:
    """The crane, the store of --db (None while a central store cannot be reached: a sensor
    starts anyway, saying ``away`` when given) and its URL when it is a central store."""
    crane = _crane_of(args)
    if not crane:
        raise UsageError("--db needs the crane: give --crane or a --profile that names it")
    from cranewatch.errors import StoreUnreachable
    from cranewatch.store import open_store
    from cranewatch.store.dialect import is_postgres_url

    central = str(args.db) if is_postgres_url(args.db) else None
    try:
        return crane, open_store(args.db), central
    except StoreUnreachable as exc:
        if away:
            print(f"cranewatch: warning: {printable(str(exc))}; {away}", file=sys.stderr)
        return crane, None, central


def _stdout_copy() -> TextIO:
    """Standard output as a file of its own (closing it leaves ``sys.stdout`` open)."""
    sys.stdout.flush()
    return open(os.dup(sys.stdout.fileno()), "a", encoding="utf-8")


class _StopOnSignal:
    """SIGINT and SIGTERM set an event instead of raising: the session then ends cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self.event

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    for option in ("profile", "baseline"):
        value = getattr(args, option)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{option} {value}: no such file")
    tool = CaptureTool(interface=args.interface, netns=args.netns, snaplen=args.snaplen,
                       packets=args.packets, bpf=(args.filter,) if args.filter else (),
                       buffer_kib=args.buffer * 1024 if args.buffer else None)
    crane = args.crane
    judging = judging_of(args)  # a bad profile or baseline stops here, before any capture
    detectors = detector_sinks(judging.profile, judging.baseline, crane)
    rolling = process_checks(args)
    sinks = [*detectors, *rolling]
    # What this session cannot check, said once on stderr (the --out file holds findings only)
    not_checked = skipped_checks([*detectors, *(r.make_checks() for r in rolling)])
    ring = None
    if args.ring:
        prefix = f"{tool.netns + '-' if tool.netns else ''}{tool.interface}"
        ring = RingWriter(Path(args.ring), prefix, int(args.ring_size * 1024 * 1024),
                          args.ring_files)
    stopper = _StopOnSignal()
    outputs = _outputs(args, tool.source_name, stopper.event)
    settings = MonitorSettings(window=args.window, update_every=args.update_every,
                               seconds=args.seconds)
    heartbeat = _heartbeat(args, tool.source_name)
    monitor = Monitor(sinks, outputs, settings, ring=ring, heartbeat=heartbeat)
    with stopper as stop, LiveCapture(tool) as capture:
        print(f"cranewatch: monitoring {tool.source_name} (capture pid "
              f"{capture.process.pid if capture.process else '?'}); Ctrl-C to stop",
              file=sys.stderr, flush=True)
        announce_not_checked(not_checked, outputs)
        batches: Iterator[Any] = capture.batches()
        summary = monitor.run(batches, stop, capture.stop)
        failure = capture.failure()
    _print_summary(summary, capture.statistics())
    if heartbeat is not None:
        heartbeat.close()
        if heartbeat.failures:
            print(f"cranewatch: warning: {heartbeat.failures} heartbeat(s) could not be written: "
                  f"{heartbeat.last_error}", file=sys.stderr)
    if failure is not None:
        raise failure
    if fail_on_met(summary.findings, args.fail_on):
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def announce_not_checked(not_checked: Sequence[SkippedCheck], outputs: Sequence[FindingOutput]) -> None:
    """What the session cannot check: a line each on stderr, and ``skipped`` records at the
    start of the JSON lines (``--out``)."""
    if not not_checked:
        return
    print(printable_lines(f"cranewatch: not checked: {check}" for check in not_checked),
          file=sys.stderr, end="", flush=True)
    for output in outputs:
        if isinstance(output, JsonLinesOutput):
            output.note([check.to_json() for check in not_checked])


def _print_summary(summary: MonitorSummary, counts: dict[str, int]) -> None:
    by_severity: dict[str, int] = {}
    for f in summary.findings:
        by_severity[str(f.severity)] = by_severity.get(str(f.severity), 0) + 1
    severities = ", ".join(f"{n} {s}" for s, n in by_severity.items()) or "none"
    dropped = counts.get("packets dropped by kernel")
    lines = [f"cranewatch: stopped after {summary.seconds:.1f} s: {summary.packets} packets "
             f"in {summary.batches} batches, {len(summary.findings)} findings ({severities})"
             + (f"; {dropped} packets dropped by the kernel (analysis slower than the wire: "
                "use --filter, a larger --buffer, or analyze the ring files)" if dropped else "")]
    for f in summary.findings:
        lines.append(f"  {str(f.severity).upper():8} {f.category:15} {f.src or '-'} → "
                     f"{f.dst or '-'}  count {f.count}, last {iso_time(f.last_seen)}")
    if summary.process_runs:
        lines.append(f"  process checks: {summary.process_runs} run(s), longest "
                     f"{summary.process_slowest:.1f} s, every {summary.process_every:.0f} s of capture")
    if summary.ring_files:
        lines.append(f"  raw packets: {len(summary.ring_files)} ring file(s), last "
                     f"{summary.ring_files[-1]}")
    print(printable_lines(lines), file=sys.stderr, end="", flush=True)
