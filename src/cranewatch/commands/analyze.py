"""``cranewatch analyze CAPTURE...``: run the pipeline, the detectors and the process checks;
print the result as text, JSON lines or one HTML page; with ``--db`` record it in the store.

Exit codes: 0 analysis complete; 1 ``--fail-on`` met; 3 an input could not be read whole
(not a capture, truncated, corrupt: the analysis of what was read is still printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch.commands import (
    OUT_HELP,
    check_inputs,
    fail_on_met,
    severity_option,
    write_out,
)
from cranewatch.conversations import ConversationBook
from cranewatch.errors import ExitCode, StoreUnreachable, UsageError
from cranewatch.forward import Forwarder, add_forward_options, forwarder_from_args
from cranewatch.pipeline import AnalysisResult, Sink, analyze
from cranewatch.progress import ProgressBar, wants_progress
from cranewatch.report.terminal import printable
from cranewatch.skipped import SkippedCheck, skipped_checks

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.judging import Judging
    from cranewatch.profile import CraneProfile

FORMATS = ("text", "jsonl", "html")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="analyse captures: hosts, flows, Modbus masters/slaves, findings",
        description="Read one or several pcap/pcapng captures (gzip too) or Zeek logs (a log "
        "file or a directory of them: conn, dns, ssl, x509, http, ssh, modbus and the ICSNPP "
        "logs, TSV or JSON) in timestamp order, cut into segments where separate recordings do not "
        "join (process checks never compare across a cut); report hosts (MAC/IP), flows by protocol, Modbus masters and slaves "
        "with function-code and register-range counts, warnings about the input, and the "
        "findings of the detectors (judged against --profile and/or --baseline when given) and, "
        "with --profile (its register map), of the process checks on the crane's signals. "
        "Related findings of one cause are grouped into incidents, which lead every output. "
        "--format jsonl writes one JSON object per line, each with a type: input, skipped, host, "
        "flow-summary, modbus-master, modbus-slave, segment, warning and incident records in the "
        "same stream as the finding records (docs/jsonl.md; a JSON Schema per type in "
        "cranewatch/data/schemas). "
        "What the run could not check for lack of a profile, register map, limit or baseline "
        "(no crane is built in) is said first: 'Not checked' in the text, skipped records in "
        "the JSON lines. "
        "--format html writes one self-contained page with a plot per process finding; "
        "--db records the run for a registered crane.\n\n"
        "Exit 2 also when --db is not a database or the crane is not registered there; exit 3 "
        "when an input is missing or unreadable (nothing is reported) or is not a capture or is "
        "truncated/corrupt (what could be read is still reported).\n\n"
        "Example:\n  cranewatch analyze sts-07-monday.pcapng --profile sts-07.toml --fail-on high\n"
        "  cranewatch analyze part1.pcap part2.pcap.gz --format jsonl --out result.jsonl\n"
        "  cranewatch analyze zeek-logs/ --profile sts-07.toml   # a directory of Zeek logs\n"
        "  cranewatch analyze false-load.pcap --profile sts-07.toml --baseline normal.pcap "
        "--format html --out analysis.html\n"
        "  cranewatch analyze quarantine.pcap --profile sts-07.toml --db cranewatch.db --crane STS-07",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("captures", nargs="+", metavar="CAPTURE",
                        help="pcap/pcapng files (gzip too), or Zeek log files or directories")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument("--out", metavar="FILE", help="write the report here instead of stdout" + OUT_HELP)
    parser.add_argument("--fail-on", metavar="SEVERITY", type=severity_option,
                        help="exit 1 when a finding of this severity or higher is reported "
                        "(info|low|medium|high|critical)")
    parser.add_argument("--profile", metavar="P", help="crane profile (TOML)")
    parser.add_argument("--baseline", metavar="B",
                        help="baseline: a saved baseline file, or a clean capture to learn from")
    parser.add_argument("--crane", metavar="ID", help="crane id for the findings (with --db: the "
                        "registered crane to record for; default: the profile's crane id)")
    parser.add_argument("--db", metavar="FILE",
                        help="record the run (inputs with sha256, findings) in this cranewatch "
                        "database for --crane; without --db nothing is written")
    add_forward_options(parser)
    parser.add_argument("--jobs", metavar="N", type=jobs_option, default=1,
                        help="worker processes (default 1): with N > 1 the captures are put "
                        "into groups that share no conversation (e.g. one per crane zone, its "
                        "rotated files together), N workers analyse the groups and this process "
                        "runs the detectors and process checks; the document is the one of "
                        "--jobs 1. Captures that all share conversations, or groups found to "
                        "meet, are analysed in one process (said on stderr). An N above the CPUs "
                        "this machine lets cranewatch use is lowered to them (with a warning)")
    parser.add_argument("--progress", action="store_true",
                        help="draw the progress bar even when stderr is not a terminal")
    parser.set_defaults(func=run)


def jobs_option(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 or more)")
    return jobs


def _usable_jobs(jobs: int) -> int:
    if jobs == 1:
        return 1
    from cranewatch.parallel import clamp_jobs

    usable, note = clamp_jobs(jobs)
    if note is not None:
        print(f"cranewatch: warning: {note}", file=sys.stderr)
    return usable


def detector_sinks(profile: CraneProfile | None, baseline: Baseline | None,
                   crane: str | None) -> list[Sink]:
    """The network detectors alone (``cranewatch monitor`` asks them window after window)."""
    from cranewatch import sinks

    return sinks.detector_sinks(profile, baseline, crane)


def analysis_sinks(judging: Judging, crane: str | None) -> list[Sink]:
    """What ``analyze`` runs: the network detectors and the process checks (``sinks.build_sinks``)."""
    from cranewatch.sinks import judged_sinks

    # the detectors through this module's hook, which monitor shares and tests swap
    return judged_sinks(judging, crane, detectors=detector_sinks)


def render(result: AnalysisResult, fmt: str, skipped: Sequence[SkippedCheck] = ()) -> str:
    """The report; ``skipped`` (what the run could not check) is said in every format."""
    if fmt == "html":
        from cranewatch.report import analysis_html

        return analysis_html.render(result, skipped)
    if fmt == "jsonl":
        from cranewatch.report import jsonl

        return jsonl.render(result, skipped)
    from cranewatch.report import text

    return text.render(result, skipped)


def run(args: argparse.Namespace) -> int:
    for option in ("profile", "baseline"):
        value = getattr(args, option)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{option} {value}: no such file")
    check_inputs(args.captures, "capture or Zeek log")  # before any output
    from cranewatch.judging import load_judging

    # --profile and --baseline loaded once, before a capture is analysed: a bad one is one
    # located error (a baseline given as a clean capture is learned here)
    judging = load_judging(args.profile, args.baseline)
    forwarder = forwarder_from_args(args.forward, args.forward_format, args.forward_ca,
                                    args.forward_state)
    store = None
    spool = None  # the central store is away: the run goes to the local spool
    if args.db:  # the store and the fleet take ~40 ms to import: only when recording
        from cranewatch.gate import open_recording_store

        try:
            store = open_recording_store(args.db)
        except StoreUnreachable as exc:
            from cranewatch.store.spool import Spool

            spool = Spool(str(args.db))
            print(f"cranewatch: warning: {printable(str(exc))}; the run will be kept in the local "
                  "spool", file=sys.stderr)
    try:
        if store is not None:
            from cranewatch.gate import recording_crane

            crane = recording_crane(
                store, args.crane if args.crane is not None else judging.crane_id)
        elif spool is not None:
            crane = _crane_named(args, judging)
        else:
            crane = args.crane
        # a recorded run keeps who talked to whom (the console's inventory and map)
        result, skipped, book = _analyze(args, judging, crane,
                                         store is not None or spool is not None)
        report = render(result, args.format, skipped)
        write_out(report, args.out)
        if (store is not None or spool is not None) and crane is not None:
            _record(store, spool, str(args.db), crane, result,
                     book.conversations() if book is not None else [])
        if forwarder is not None:
            _forward(forwarder, result)
    finally:
        if store is not None:
            store.close()
    if not result.complete:
        for warning in result.warnings:
            if warning.kind == "capture":
                print(f"cranewatch: error: {printable(warning)}", file=sys.stderr)
        return int(ExitCode.INPUT)
    if fail_on_met(result.findings, args.fail_on):
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def _crane_named(args: argparse.Namespace, judging: Judging) -> str:
    """The crane a spooled run is for, from ``--crane`` or the profile (its registration is
    checked when the run is recorded)."""
    if args.crane:
        return str(args.crane)
    if judging.crane_id:
        return str(judging.crane_id)
    raise UsageError("--db needs --crane ID (the registered crane to record the result for)")


def _record(store: Any, spool: Any, url: str, crane: str, result: AnalysisResult,
            conversations: Sequence[Any]) -> None:
    from cranewatch.gate import traffic_run
    from cranewatch.store.spool import Spool

    run = traffic_run(crane, result, conversations=conversations)
    if store is not None:
        try:
            run_id = run.record(store)
        except StoreUnreachable as exc:
            spool = Spool(url)
            print(f"cranewatch: warning: {printable(str(exc))}", file=sys.stderr)
        else:
            print(f"cranewatch: recorded as run {run_id} of {crane} in {store.where}",
                  file=sys.stderr)
            return
    path = spool.put(run)
    print(f"cranewatch: warning: the run is kept in {path}; it is recorded when the store can "
          "be reached (by any later command against it)", file=sys.stderr)


def _forward(forwarder: Forwarder, result: AnalysisResult) -> None:
    with forwarder:
        report = forwarder.send(result.findings, result.incidents)
    note = report.describe(forwarder.destination.url, forwarder.queue_path)
    print(f"cranewatch: forwarded {report.sent} message(s) to {forwarder.destination.url}"
          f" ({report.unchanged} unchanged since the last send)", file=sys.stderr)
    if note:
        print(f"cranewatch: warning: {printable(note)}", file=sys.stderr)


def _analyze(args: argparse.Namespace, judging: Judging, crane: str | None,
             keep_conversations: bool
             ) -> tuple[AnalysisResult, tuple[SkippedCheck, ...], ConversationBook | None]:
    jobs = _usable_jobs(getattr(args, "jobs", 1))
    if jobs > 1:
        from cranewatch.parallel import split_plan

        plan, why = split_plan(args.captures, jobs)
        if plan is not None:
            done = _analyze_split(args, judging, crane, keep_conversations, plan)
            if done is not None:
                return done
        elif why is not None:
            print(f"cranewatch: note: --jobs {args.jobs}: {why}; analysed in one process",
                  file=sys.stderr)
    book = ConversationBook() if keep_conversations else None
    sinks = analysis_sinks(judging, crane)
    bar = ProgressBar(sys.stderr) if wants_progress(sys.stderr, args.progress) else None
    try:
        result = analyze(args.captures, progress=bar, sinks=[*sinks, *([book] if book else [])],
                         profile=args.profile, baseline=args.baseline)
        return result, skipped_checks(sinks), book
    finally:
        if bar is not None:
            bar.close()


def _analyze_split(args: argparse.Namespace, judging: Judging, crane: str | None,
                   keep_conversations: bool, plan: list[list[int]],
                   ) -> tuple[AnalysisResult, tuple[SkippedCheck, ...], ConversationBook | None] | None:
    """The captures' groups analysed by worker processes, the sinks run here (``parallel``);
    None when the groups turned out to meet (said on stderr: the caller runs serially)."""
    from cranewatch.parallel import NotIndependent, SplitRun
    from cranewatch.pipeline import BATCH_PACKETS

    bar = None
    try:
        with SplitRun(args.captures, plan, BATCH_PACKETS) as split:  # the workers start reading
            book = ConversationBook() if keep_conversations else None
            sinks = analysis_sinks(judging, crane)
            split.configure([*sinks, *([book] if book else [])])
            bar = ProgressBar(sys.stderr) if wants_progress(sys.stderr, args.progress) else None
            result = split.replay(bar, args.profile, args.baseline)
    except NotIndependent as exc:
        print(f"cranewatch: note: --jobs {args.jobs}: {exc}; analysed again in one process",
              file=sys.stderr)
        return None
    finally:
        if bar is not None:
            bar.close()
    return result, skipped_checks(sinks), book
