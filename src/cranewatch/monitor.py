"""Live monitoring: an endless stream of packet batches through the pipeline, findings as they
are confirmed.

The capture pipeline (``pipeline.Analysis``) is built for a stream that ends; a monitoring
session never does. ``Monitor`` composes the pipeline's public pieces for that: it gives each
batch to ``Analysis.process`` as it arrives, and every ``window`` seconds (wall clock) asks the
sinks for their findings so far (``finish()`` only reads the detectors' aggregated incidents,
so asking again is safe). ``Ledger`` (pure) decides what is worth reporting: a finding the
first time it is seen, then again only when its count, title or severity changed, at most
every ``update_every`` seconds (at once when the severity rises), and its last state when the
session ends. One incident stays one finding with a growing count, never one per packet.

Modbus register series are handed to the sinks every ``series_every`` seconds of capture time
(the book is emptied each time, which also bounds the memory a long session holds), and flows
end when the flow table sweeps them idle, as in a file analysis. The process checks need a
stretch of values, not a running tally: ``RollingProcessChecks`` keeps the last ``span``
seconds of register values and writes and runs the checks over them every ``every`` seconds
of capture time, merging what each run finds into one finding per id.

Outputs get the findings the ledger lets through (``emit``) and, at each window, the whole set
(``checkpoint``): text lines on stdout, JSON lines appended to a file, checkpoints in the store.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from cranewatch.errors import StoreUnreachable
from cranewatch.heartbeat import HeartbeatWriter
from cranewatch.incidents import group_incidents
from cranewatch.model import Finding, Severity, iso_time
from cranewatch.pipeline import Analysis, Sink
from cranewatch.protocols.modbus import RegisterSeries
from cranewatch.report.jsonl import json_line
from cranewatch.report.terminal import printable
from cranewatch.sources.live import RingWriter
from cranewatch.sources.pcap import PacketBatch

MAX_STORE_RETRY = 300.0  # seconds between tries of a central store that is away

__all__ = [
    "FindingOutput",
    "JsonLinesOutput",
    "Ledger",
    "Monitor",
    "MonitorSettings",
    "MonitorSummary",
    "RollingProcessChecks",
    "StoreOutput",
    "TextOutput",
    "finding_line",
]


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    window: float = 2.0  # seconds between looks at the detectors' findings
    update_every: float = 60.0  # least time between two reports of one finding's growth
    series_every: float = 10.0  # capture seconds of register values handed to the sinks at a time
    seconds: float | None = None  # stop after this long (None: until stopped)


@dataclass(frozen=True, slots=True)
class MonitorSummary:
    packets: int
    batches: int
    seconds: float
    findings: tuple[Finding, ...]
    reported_lines: int  # finding reports written (new + updates)
    ring_files: tuple[str, ...] = ()
    process_runs: int = 0
    process_slowest: float = 0.0  # seconds of the longest run of the process checks
    process_every: float | None = None  # seconds between runs at the end (stretched if slow)

    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


# ---------------------------------------------------------------------------------- the ledger

Signature = tuple[int, Severity, str]


@dataclass(slots=True)
class Ledger:
    """What was reported of each finding, and when (pure: time is given, not read)."""

    update_every: float = 60.0
    reported: dict[str, Signature] = field(default_factory=dict)
    reported_at: dict[str, float] = field(default_factory=dict)

    def due(self, findings: Sequence[Finding], now: float,
            final: bool = False) -> tuple[list[Finding], list[Finding]]:
        """(new findings, findings grown since last reported and due a report now)."""
        new: list[Finding] = []
        grown: list[Finding] = []
        for f in findings:
            signature = (f.count, f.severity, f.title)
            before = self.reported.get(f.id)
            if before is None:
                new.append(f)
            elif before == signature:
                continue
            elif final or f.severity > before[1] or now - self.reported_at[f.id] >= self.update_every:
                grown.append(f)
            else:
                continue
            self.reported[f.id] = signature
            self.reported_at[f.id] = now
        return new, grown


# ---------------------------------------------------------------------------------- outputs


class FindingOutput(Protocol):
    def emit(self, finding: Finding, new: bool) -> None: ...

    def checkpoint(self, findings: Sequence[Finding], now: float, final: bool) -> None: ...

    def close(self) -> None: ...


def finding_line(finding: Finding, new: bool) -> str:
    """One line per report: time, severity, category, src → dst, title, count, id."""
    mark = "" if new else "(update) "
    ends = f"{finding.src or '-'} → {finding.dst or '-'}"
    return printable(f"{iso_time(finding.last_seen) or '-'} {str(finding.severity).upper():8} "
                     f"{finding.category:15} {ends}  {mark}{finding.title} [count {finding.count}, "
                     f"id {finding.id}]")


@dataclass(slots=True)
class TextOutput:
    """Finding lines on a terminal or a pipe. When the pipe's reader has gone
    (``monitor eth1 | head -3``; the CLI's guarded stdout says ``reader_gone``), ``reader_gone``
    is set: the command stops the session cleanly, as SIGPIPE would have, summary and all."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    reader_gone: threading.Event | None = None

    def emit(self, finding: Finding, new: bool) -> None:
        self.stream.write(finding_line(finding, new) + "\n")
        self.stream.flush()
        if self.reader_gone is not None and getattr(self.stream, "reader_gone", False):
            self.reader_gone.set()

    def checkpoint(self, findings: Sequence[Finding], now: float, final: bool) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass(slots=True)
class JsonLinesOutput:
    """Appends each report as one ``Finding.to_json()`` line, flushed at once.

    A finding reported again (it grew) gets another line with the same id; the last line of
    an id is its latest state. A session starts with ``skipped`` records (``note``): what it
    cannot check. Readers keep ``type == "finding"``.
    """

    path: Path
    _handle: TextIO | None = None

    def emit(self, finding: Finding, new: bool) -> None:
        self.note([finding.to_json()])

    def note(self, records: Sequence[dict[str, Any]]) -> None:
        """Append other records (the ``skipped`` ones a session starts with), one a line."""
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        for record in records:
            self._handle.write(json_line(record))
        self._handle.flush()

    def checkpoint(self, findings: Sequence[Finding], now: float, final: bool) -> None:
        return None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass(slots=True)
class StoreOutput:
    """Checkpoints the session's findings into the store, each in one transaction.

    The store's public API records a run's findings when the run completes; a checkpoint is
    therefore one complete run (kind ``analyze``, component ``monitor:<source>``) holding
    every finding of the session so far, so the latest checkpoint is the crane's current
    monitoring evidence and a crash loses nothing already checkpointed. A checkpoint is
    written when a new finding appeared, else at most every ``every`` seconds while
    findings change, and at the end.

    With ``url`` (a central PostgreSQL store), a checkpoint the store cannot take — it was away
    at the start (``store`` None) or went away — is kept in the local spool (``store.spool``;
    only the latest of this sensor, which holds all of the earlier ones) and the store is tried
    again with back-off (``retry`` seconds, doubling to ``MAX_STORE_RETRY``); at the first
    contact the spool is recorded, then the checkpoint.
    """

    store: Any  # cranewatch.store.Store, or None while a central store is away
    crane: str
    component: str
    every: float = 30.0
    url: str | None = None
    retry: float = 5.0
    runs: list[int] = field(default_factory=list)
    _written: dict[str, tuple[int, float | None, Severity]] = field(default_factory=dict)
    _at: float | None = None
    _retry_at: float = 0.0
    _spooled: bool = False
    _session: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _checkpoints: int = 0

    def emit(self, finding: Finding, new: bool) -> None:
        return None

    def checkpoint(self, findings: Sequence[Finding], now: float, final: bool) -> None:
        state = {f.id: (f.count, f.last_seen, f.severity) for f in findings}
        if state == self._written and not (final and not self.runs) and not self._spooled:
            return
        appeared = bool(set(state) - set(self._written))
        if not (final or appeared or self._spooled or self._at is None
                or now - self._at >= self.every):
            return
        from cranewatch.store.spool import Spool, SpooledRun

        self._checkpoints += 1
        run = SpooledRun(self.crane, "analyze", [], list(findings), component=self.component,
                         incidents=list(group_incidents(findings)),
                         options={"checkpoint": f"{self._session}:{self._checkpoints}"})
        try:
            store = self._reach(final)
            if store is None:
                raise StoreUnreachable("the central store is still away")
            self.runs.append(run.record(store))
            self._spooled = False
        except StoreUnreachable as exc:
            if self.url is None:
                raise
            self._away(exc)
            path = Spool(self.url).put(run, key=self.component)
            if not self._spooled:
                print(f"cranewatch: warning: {exc.message}; checkpoints are kept in {path.parent} "
                      "and recorded when the store is back", file=sys.stderr, flush=True)
            self._spooled = True
        self._written, self._at = state, now

    def _reach(self, final: bool) -> Any:
        if self.store is not None or self.url is None:
            return self.store
        if time.monotonic() < self._retry_at and not final:
            return None
        from cranewatch.store.spool import Spool
        from cranewatch.store.sqlite import Store

        store = Store(self.url, create=False)
        self.store = store
        done = Spool(self.url).replay(store, lambda text: print(f"cranewatch: {text}",
                                                                 file=sys.stderr, flush=True))
        if done:
            print(f"cranewatch: the store is back: recorded {done} spooled checkpoint(s)",
                  file=sys.stderr, flush=True)
        self.retry = 5.0
        return store

    def _away(self, exc: StoreUnreachable) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        self.store = None
        self._retry_at = time.monotonic() + self.retry
        self.retry = min(self.retry * 2, MAX_STORE_RETRY)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# ------------------------------------------------------------------------- process checks


class ProcessChecks(Protocol):
    """What ``RollingProcessChecks`` needs of a fresh process sink (``process.engine``)."""

    def on_event(self, event: Any) -> None: ...

    def on_series(self, series: RegisterSeries) -> None: ...

    def finish(self) -> list[Finding]: ...


def merge_finding(before: Finding, now: Finding) -> Finding:
    """One finding from two runs of the checks over overlapping stretches of values.

    An incident both runs saw (it overlaps in time) counts once, with the larger count; one
    that started after the last one ended adds its count. The first evidence stays.
    """
    overlaps = (now.first_seen or 0.0) <= (before.last_seen or 0.0)
    count = max(before.count, now.count) if overlaps else before.count + now.count
    firsts = [t for t in (before.first_seen, now.first_seen) if t is not None]
    lasts = [t for t in (before.last_seen, now.last_seen) if t is not None]
    return replace(before, count=count, severity=max(before.severity, now.severity),
                   first_seen=min(firsts, default=None), last_seen=max(lasts, default=None))


class RollingProcessChecks:
    """Process checks over the last ``span`` seconds of values, run every ``every`` seconds.

    A pipeline sink: keeps register series and the events that carry values (writes,
    telemetry), drops what is older than ``span`` and, when ``check`` is called (by the
    monitor, as capture time passes), runs a fresh process sink from ``make_checks`` over what
    it holds. ``finish`` returns the merged findings so far (cheap: asked every window).

    The checks run in the thread that reads the packets: a run that takes long holds the
    capture back. When a run takes more than ``budget`` of the time between runs, the time
    between runs is stretched (``every``) so that the packets keep flowing; ``slowest`` and
    ``every`` tell how it went.
    """

    def __init__(self, make_checks: Callable[[], ProcessChecks], keeps: Callable[[Any], bool],
                 span: float = 120.0, every: float = 30.0, budget: float = 0.25) -> None:
        self.make_checks = make_checks
        self.keeps = keeps
        self.span = span
        self.every = every
        self.asked_every = every
        self.budget = budget
        self.slowest = 0.0
        self.series: deque[RegisterSeries] = deque()
        self.events: deque[Any] = deque()
        self.findings: dict[str, Finding] = {}
        self.last_check: float | None = None
        self.runs = 0

    def on_event(self, event: Any) -> None:
        if self.keeps(event):
            self.events.append(event)

    def on_series(self, series: RegisterSeries) -> None:
        if len(series.ts):
            self.series.append(series)

    def on_flow_end(self, flow: Any) -> None:
        return None

    def due(self, now: float) -> bool:
        return self.last_check is None or now - self.last_check >= self.every

    def check(self, now: float) -> None:
        """Run the checks over the values of the last ``span`` seconds before ``now``."""
        self.last_check = now
        horizon = now - self.span
        while self.series and float(self.series[0].ts[-1]) < horizon:
            self.series.popleft()
        while self.events and float(getattr(self.events[0], "ts", now)) < horizon:
            self.events.popleft()
        if not self.series and not self.events:
            return
        started = time.perf_counter()
        checks = self.make_checks()
        for series in self.series:
            checks.on_series(series)
        for event in self.events:
            checks.on_event(event)
        self.runs += 1
        for finding in checks.finish():
            before = self.findings.get(finding.id)
            self.findings[finding.id] = finding if before is None else merge_finding(before, finding)
        took = time.perf_counter() - started
        self.slowest = max(self.slowest, took)
        self.every = max(self.asked_every, took / self.budget)

    def finish(self) -> list[Finding]:
        return list(self.findings.values())


# ---------------------------------------------------------------------------------- the loop

_END = object()
# Batches read ahead of the analysis, in bytes (packet data and the per-packet arrays): a
# count of batches would hold ~500 MB of 65,536-packet batches while the analysis lags.
READ_AHEAD_BYTES = 32 << 20


def _batch_bytes(item: Any) -> int:
    if isinstance(item, PacketBatch):
        return max(1, len(item.buf) + 44 * len(item))  # 44: the arrays' bytes per packet
    return 1  # the end mark, an error


class _ReadAhead(queue.Queue[Any]):
    """The reader thread's queue bounded in bytes: ``put`` waits while ``maxsize`` bytes are
    held (the batch that passes the bound is the last one in)."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.held = 0

    def _qsize(self) -> int:
        return self.held

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.held += _batch_bytes(item)

    def _get(self) -> Any:
        item = super()._get()
        self.held -= _batch_bytes(item)
        return item


def _pump(batches: Iterator[PacketBatch], out: queue.Queue[Any]) -> None:
    """Reader thread: batches into the queue, then the end mark (or the error that ended it)."""
    try:
        for batch in batches:
            out.put(batch)
    except BaseException as exc:  # handed to the main thread, which raises it there
        out.put(exc)
    out.put(_END)


class Monitor:
    """One monitoring session over a stream of batches."""

    def __init__(self, sinks: Sequence[Sink], outputs: Sequence[FindingOutput],
                 settings: MonitorSettings = MonitorSettings(), *, ring: RingWriter | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: HeartbeatWriter | None = None) -> None:
        self.heartbeat = heartbeat  # told packets, last packet time and findings at every look
        self.sinks = list(sinks)
        self.outputs = list(outputs)
        self.settings = settings
        self.ring = ring
        self.clock = clock
        self.analysis = Analysis(self.sinks)
        self.ledger = Ledger(settings.update_every)
        self.batches = 0
        self.reported_lines = 0
        self.findings: list[Finding] = []
        self.capture_time: float | None = None  # timestamp of the last packet analysed
        self._next_series: float | None = None
        self.read_ahead = READ_AHEAD_BYTES

    def run(self, batches: Iterator[PacketBatch], stop: threading.Event,
            end_capture: Callable[[], None]) -> MonitorSummary:
        """Analyse until the stream ends; ``stop`` (or ``settings.seconds``) ends the capture.

        After ``end_capture()`` the stream is read to its end, so the last packets the capture
        tool held are analysed too.
        """
        started = self.clock()
        deadline = started + self.settings.seconds if self.settings.seconds is not None else None
        arrivals: queue.Queue[Any] = _ReadAhead(maxsize=self.read_ahead)
        reader = threading.Thread(target=_pump, args=(batches, arrivals), daemon=True,
                                  name="cranewatch-capture")
        reader.start()
        next_window = started + self.settings.window
        ending = False
        failure: BaseException | None = None
        while True:
            now = self.clock()
            if not ending and (stop.is_set() or (deadline is not None and now >= deadline)):
                ending = True
                end_capture()
            wait = max(0.0, min(next_window, deadline or next_window) - now)
            try:
                item = arrivals.get(timeout=min(wait, 0.25))
            except queue.Empty:
                item = None
            if item is _END:
                break
            if isinstance(item, BaseException):
                failure = item
                continue
            if isinstance(item, PacketBatch) and len(item):
                self.feed(item)
            now = self.clock()
            if now >= next_window:
                self.look(now, final=False)
                next_window = now + self.settings.window
        reader.join(1.0)
        self.analysis.close_all()
        if self.capture_time is not None:
            self.run_process_checks(self.capture_time, force=True)
        self.look(self.clock(), final=True)
        for output in self.outputs:
            output.close()
        if self.ring is not None:
            self.ring.close()
        if failure is not None:
            raise failure
        return MonitorSummary(
            packets=self.analysis.packets, batches=self.batches,
            seconds=self.clock() - started, findings=tuple(self.findings),
            reported_lines=self.reported_lines,
            ring_files=tuple(str(p) for p in self.ring.written) if self.ring else (),
            **self._process_stats())

    def _process_stats(self) -> dict[str, Any]:
        rolling = [s for s in self.sinks if isinstance(s, RollingProcessChecks)]
        if not rolling:
            return {}
        return {"process_runs": sum(r.runs for r in rolling),
                "process_slowest": max(r.slowest for r in rolling),
                "process_every": max(r.every for r in rolling)}

    def feed(self, batch: PacketBatch) -> None:
        if self.ring is not None:
            batch = self.ring.write(batch)
        self.batches += 1
        self.analysis.process(batch)
        # Register values go to the sinks by capture time, so a capture replayed faster than
        # it was taken is cut into the same stretches as the live wire.
        self.capture_time = now = float(batch.ts[-1])
        if self._next_series is None:
            self._next_series = now + self.settings.series_every
        elif now >= self._next_series:
            self._next_series = now + self.settings.series_every
            self.hand_series()
            self.run_process_checks(now)

    def hand_series(self) -> None:
        """Give the sinks the register values gathered since the last time."""
        for series in self.analysis.take_series():
            self.analysis.series_count += 1
            for sink in self.sinks:
                sink.on_series(series)

    def run_process_checks(self, now: float, force: bool = False) -> None:
        for sink in self.sinks:
            if isinstance(sink, RollingProcessChecks) and (force or sink.due(now)):
                sink.check(now)

    def look(self, now: float, final: bool) -> None:
        """Ask the sinks for their findings; report what is new or grew; checkpoint."""
        findings: list[Finding] = []
        for sink in self.sinks:
            findings.extend(sink.finish())
        findings.sort(key=lambda f: (-f.severity, f.first_seen or 0, f.id))
        self.findings = findings
        new, grown = self.ledger.due(findings, now, final)
        reports = [*((f, True) for f in new), *((f, False) for f in grown)]
        self.reported_lines += len(reports)
        # Output by output, in the order given: durable ones first (the command puts the
        # screen last), so a finding shown is a finding already on disk.
        for output in self.outputs:
            for finding, is_new in reports:
                output.emit(finding, is_new)
            output.checkpoint(findings, now, final)
        if self.ring is not None:
            self.ring.pin([e.source for f in findings for e in f.evidence if e.source])
        if self.heartbeat is not None:
            self.heartbeat.beat(self.analysis.packets, self.capture_time, findings, final)
