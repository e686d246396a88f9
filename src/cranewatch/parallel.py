"""``analyze --jobs N``: captures analysed in worker processes, the document unchanged.

Why this design (measured on 20 crane-zone captures, 1 M packets, 2.4 CPU s serial): reading,
inflating and decoding is ~0.3 s of it, the sinks (detectors, process checks) ~0.4-0.5 s, the
flows, reassembly and protocol decoders the rest (~1.5 s). Reading ahead alone (``ReadAhead``,
below) made ``--jobs 2`` 0.78x: the main process kept ~85 % of the work and waited for batches
pickled through a pipe. Moving only the detectors out would leave ~75 % in one process (at best
~1.3x before the hand-over). So the work that dominates, flows and protocols, is split:

**Split by groups of captures** (``split_plan``, ``SplitRun``: what the CLI does). A port's
analysis station gets one SPAN capture per crane zone, hourly rotated; zones share servers (the
SCADA server polls every zone's PLC) but not conversations. ``plan_groups`` reads the first
``PROBE_PACKETS`` of each capture and puts captures with a host pair in common (rotated files of
one zone, two taps on one link) into one group; groups go to ``N`` workers by bytes. One group:
no split (said on stderr), the run is serial.

Each worker follows the serial run exactly where it matters: it runs the same timestamp merge
of *every* capture (``pipeline.merged_batches``), so it sees the same pieces in the same order
and sweeps its flow table at the same capture times. It reads only its own captures, one batch
ahead (``_telling``), and tells each batch's timestamps (and each capture's end) to the other
workers through pipes between them (``_Peers``); the other workers' captures come to its merge
as those timestamps (``_times_only``: the merge and the sweeps look at nothing else), with the
batch boundaries their reader made. It decodes and analyses only the pieces of its own captures (hosts, flows, reassembly, decoders, protocol state) and ships, to
the main process, what the serial run would have given the sinks: events (only the classes a
sink of the run does something with: ``event_filter``), finished flows, unclaimed payloads,
register series, warnings. Every item carries its place in the serial run's order: the piece
(or read) it came from, and within a sweep or the final drain the order the one flow table
would have ended the flows in (their creation). The main process merges the workers' streams by
that place and runs the real sinks as the serial run would, then sums the workers' tables into
the document: hosts, protocol tallies, event counters, Modbus masters and slaves (a SCADA
server seen by several groups), register series (in their book's key order). The document is
the serial one because every sink call, and every table, is.

What would make groups meet is checked when they are done (``_merge``), and then the run is done
again in one process and stderr says why: a flow (or register series) in two groups, IP
fragments in several, a bound of the flow, host or protocol tables reached (their sum over the
groups), warnings beyond their bound where once-per-run warnings were dropped. Zeek logs, a
capture given twice, or one capture: no split.

The workers are started before the main process loads the detectors (they read meanwhile);
``SplitRun.configure`` then tells them whether a sink takes payloads and which event classes a
sink does something with. Costs: each capture's timestamps are pickled to every other worker
(8 bytes a packet), and events, flows and series are pickled once and unpickled once (``_Packer``: slots dataclasses by
their fields); a group is never cut, so one group holding most of the bytes bounds the gain. On
2 cores ``--jobs 2`` runs two workers and the main process; see benchmarks/README.md.

Errors: an exception in a worker is raised in the main process where the serial run would have
met it (same message, exit code); a worker that dies (killed for memory) is ``ReaderFailed``
(exit 4); a worker left waiting for the timestamps of a worker that ended so stops and says
"gone" (the other's error or death is what the main process reports); workers ignore SIGINT,
and Ctrl-C in the main process ends them. ``TELL_TIMES = False`` makes each worker read every
capture itself instead (the earlier way; for comparison).

**Read-ahead** (``ReadAhead``; ``pipeline.analyze(jobs=N)``). The serial run reads all captures
as one stream in timestamp order (``pipeline.merged_batches``); what each file needs alone is its
read: pcap/pcapng parsing, gzip inflation, the sha256 of its bytes and the L2-L4 decode into the
batch's columns (``decode.decode_batch``, row by row, so a piece of a decoded batch is the
decode of that piece). ``ReadAhead`` runs that in ``readers`` worker processes, each owning some
of the files (file *i* goes to reader *i* mod ``readers``), and hands each file's batches,
warnings and summary to the main process in the order the file's own reader would give them;
the main process merges them exactly as the serial run does and does the rest. The document is
therefore the serial one by construction.

Memory stays bounded by credits: a reader gives a file at most ``window`` batches the main
process has not taken yet, and serves whichever of its files has credit left, so the main
process never waits on a reader that waits on it. Workers ignore SIGINT (Ctrl-C reaches the
main process, which ends them); an exception in a worker's read is raised again in the main
process at the point the serial run would have met it.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from cranewatch.decode import DecodedBatch, decode_batch
from cranewatch.errors import EnvironmentProblem
from cranewatch.result import InputWarning
from cranewatch.sources.pcap import PacketBatch
from cranewatch.weirds import GapWarning

WINDOW = 2  # batches a file may have read ahead of the main process (~6 MB each at 64 k packets)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def clamp_jobs(jobs: int) -> tuple[int, str | None]:
    """``jobs`` limited to the usable CPUs, with a note when it was lowered."""
    cpus = usable_cpus()
    if jobs > cpus:
        return cpus, f"--jobs {jobs}: this machine lets cranewatch use {cpus} CPU(s); using {cpus}"
    return jobs, None


@dataclass(slots=True)
class DecodedPacketBatch(PacketBatch):
    """A batch that comes with its decoded columns (read and decoded by a worker)."""

    decoded: DecodedBatch | None = None


def slice_decoded(batch: DecodedPacketBatch, piece: PacketBatch, rows: np.ndarray) -> PacketBatch:
    """``piece`` (rows of ``batch``) with the matching rows of the decode: no second decode."""
    decoded = batch.decoded
    if decoded is None:
        return piece
    columns = {f.name: getattr(decoded, f.name)[rows] for f in fields(DecodedBatch) if f.name != "batch"}
    return _with_decode(piece, DecodedBatch(batch=piece, **columns))


def _with_decode(batch: PacketBatch, decoded: DecodedBatch) -> DecodedPacketBatch:
    # ``decoded.batch`` stays the plain batch (same buffer and columns), so the two hold no
    # reference cycle: a batch is freed as soon as the run drops it, not at a collection.
    own = {f.name: getattr(batch, f.name) for f in fields(PacketBatch)}
    return DecodedPacketBatch(**own, decoded=decoded)


class _Digest:
    """The sha256 a worker took of a file's bytes, where the run reads ``state.sha``."""

    def __init__(self, hexdigest: str) -> None:
        self._hex = hexdigest

    def hexdigest(self) -> str:
        return self._hex


@dataclass(frozen=True, slots=True)
class _FileEnd:
    """What a file's read found besides its batches (``pipeline._InputState`` fields)."""

    format: str
    complete: bool
    problems: list[str]
    headers: tuple[Any, ...]
    sha256: str


# -------------------------------------------------------------------------- worker side

def _serve(conn: Connection, files: list[tuple[int, str]], batch_packets: int, window: int) -> None:
    """A reader: read and decode its files, each as far as its credit allows."""
    from cranewatch.pipeline import _file_batches, _InputState

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    credit = {index: window for index, _ in files}
    said: dict[int, list[InputWarning]] = {index: [] for index, _ in files}
    states = {index: _InputState(path, 0) for index, path in files}
    reads = {index: _file_batches(states[index], said[index].append, batch_packets)
             for index, _ in files}
    live = [index for index, _ in files]
    try:
        while live:
            while conn.poll():
                _take_credit(conn.recv(), credit)
            ready = [index for index in live if credit[index] > 0]
            if not ready:
                _take_credit(conn.recv(), credit)
                continue
            index = ready[0]
            try:
                batch = next(reads[index], None)
            except Exception as exc:  # raised in the main process where the serial run meets it
                _send_said(conn, index, said[index])
                _send_error(conn, index, exc)
                live.remove(index)
                continue
            _send_said(conn, index, said[index])
            if batch is None:
                state = states[index]
                conn.send((index, "end", _FileEnd(state.format, state.complete, state.problems,
                                                  state.headers, state.sha.hexdigest())))
                live.remove(index)
                continue
            conn.send((index, "batch", _with_decode(batch, decode_batch(batch))))
            credit[index] -= 1
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the main process is gone
        return


def _take_credit(message: tuple[int, int], credit: dict[int, int]) -> None:
    index, more = message
    credit[index] += more


def _send_said(conn: Connection, index: int, said: list[InputWarning]) -> None:
    for warning in said:
        conn.send((index, "warn", warning))
    said.clear()


def _send_error(conn: Connection, index: int, exc: Exception) -> None:
    try:
        conn.send((index, "error", exc))
    except Exception:  # the exception does not pickle: its name and message do
        conn.send((index, "error", RuntimeError(f"{type(exc).__name__}: {exc}")))


# ---------------------------------------------------------------------------- main side

class ReaderFailed(EnvironmentProblem):
    """A reader process ended without finishing its files (killed, e.g. by the kernel when
    memory ran out): the machine's doing, not the input's (exit 4; ``--jobs 1`` does without)."""


class ReadAhead:
    """Worker processes reading the captures among ``paths`` ahead (Zeek logs are left to the
    main process). Start it (as a context manager, which also ends the workers) as early as
    possible: the workers read while the main process loads its detectors. ``streams()``
    then gives each capture's batches as ``pipeline._file_batches`` would."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], batch_packets: int, readers: int,
                 window: int = WINDOW) -> None:
        from cranewatch.pipeline import _is_zeek

        self.paths = [str(p) for p in paths if not _is_zeek(str(p))]
        self.readers = max(1, min(readers, len(self.paths))) if self.paths else 0
        self.window = window
        self.batch_packets = batch_packets
        self.states: list[Any] = []
        self.warn: Callable[[InputWarning], None] = lambda warning: None
        self._owner = [index % self.readers for index in range(len(self.paths))]
        self._waiting: list[deque[tuple[str, Any]]] = [deque() for _ in self.paths]
        self._conns: list[Connection] = []
        self._processes: list[Any] = []

    def __enter__(self) -> ReadAhead:
        # fork: the worker starts with the modules loaded (no re-import per worker); the CLI
        # runs one analysis in its main thread.
        context = multiprocessing.get_context("fork")
        try:
            for reader in range(self.readers):
                files = [(index, path) for index, path in enumerate(self.paths)
                         if self._owner[index] == reader]
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(target=_serve, name=f"cranewatch-reader-{reader}",
                                          args=(theirs, files, self.batch_packets, self.window),
                                          daemon=True)
                process.start()
                theirs.close()
                self._conns.append(mine)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        self._conns, self._processes = [], []

    def streams(self, states: Sequence[Any], warn: Callable[[InputWarning], None]) -> list[Iterator[PacketBatch]]:
        """The batches of each capture's ``pipeline._InputState`` (the captures of ``paths``,
        in order); ``warn`` gets each file's warnings where its own reader would give them."""
        if [state.path for state in states] != self.paths:
            raise ValueError("ReadAhead.streams: not the captures the readers were started for")
        self.states, self.warn = list(states), warn
        return [self._stream(index) for index in range(len(self.states))]

    def _stream(self, index: int) -> Iterator[PacketBatch]:
        state = self.states[index]
        conn = self._conns[self._owner[index]]
        while True:
            kind, value = self._next(index)
            if kind == "warn":
                self.warn(value)
            elif kind == "batch":
                self._credit(conn, index)
                yield value
            elif kind == "error":
                raise value
            else:
                state.format = value.format
                state.complete = state.complete and value.complete
                state.problems.extend(value.problems)
                state.headers = value.headers
                state.sha = _Digest(value.sha256)
                return

    @staticmethod
    def _credit(conn: Connection, index: int) -> None:
        """A batch was taken: the reader may read one more of this file."""
        try:
            conn.send((index, 1))
        except OSError:  # the reader has read all its files and ended (or died: ``_next`` says)
            pass

    def _next(self, index: int) -> tuple[str, Any]:
        """The next message for file ``index``; its reader's messages for other files wait."""
        waiting = self._waiting[index]
        reader = self._owner[index]
        while not waiting:
            try:
                other, kind, value = self._conns[reader].recv()
            except (EOFError, OSError):
                code = self._processes[reader].exitcode if self._processes else None
                raise ReaderFailed(f"reader process {reader} ended (exit code {code}) before "
                                   f"finishing {self.paths[index]}; try --jobs 1") from None
            self._waiting[other].append((kind, value))
        return waiting.popleft()


# ============================================================ split by groups of captures
#
# ``analyze --jobs N`` over several captures: the captures are put into groups that share no
# conversation (``plan_groups``), each group is analysed by one worker process, and the main
# process runs the sinks (detectors, process checks) on what the workers hand it, in the
# order the serial run would have given it, then writes the document (see the module
# docstring for why and for what makes the merge exact).

TELL_TIMES = True  # False: each worker reads every capture itself (as before; for comparison)
PROBE_PACKETS = 4096  # packets of each capture looked at to group the captures
PROBE_BYTES = 256 * 1024  # at most this much of each capture is read for it


def _probe_pairs(path: str) -> set[bytes]:
    """The host pairs (IP, or MAC for frames without IP) among a capture's first packets.

    The reader reads a block of ``pcap.CHUNK_BYTES`` and finds every record in it: for these
    few packets the block is made small, so a probe costs ~1 ms, not a scan of 8 MB."""
    from cranewatch.sources import pcap

    pairs: set[bytes] = set()
    chunk = pcap.CHUNK_BYTES
    pcap.CHUNK_BYTES = PROBE_BYTES
    try:
        with pcap.open_capture(path) as reader:
            batch = next(iter(reader.batches(PROBE_PACKETS)), None)
    except Exception:  # the worker reads it again and reports what is wrong with it
        return pairs
    finally:
        pcap.CHUNK_BYTES = chunk
    if batch is None or not len(batch):
        return pairs
    decoded = decode_batch(batch)
    has_ip = decoded.ip_version != 0
    ips = set(zip(decoded.src_ip[has_ip].tolist(), decoded.dst_ip[has_ip].tolist(), strict=True))
    pairs.update(bytes(min(a, b)) + bytes(max(a, b)) for a, b in ips)
    macs = set(zip(decoded.eth_src[~has_ip].tolist(), decoded.eth_dst[~has_ip].tolist(), strict=True))
    pairs.update(b"mac" + min(a, b).to_bytes(8, "big") + max(a, b).to_bytes(8, "big")
                 for a, b in macs)
    return pairs


def plan_groups(paths: Sequence[str], workers: int) -> list[list[int]]:
    """The captures (indices into ``paths``) each worker analyses.

    Captures whose first packets show a host pair in common (the same conversation: rotated
    files of one crane zone, two taps on one link) are in one group; groups go to the worker
    with the fewest bytes so far, largest first. A plan of one group means: do not split.
    """
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[bytes, int] = {}
    for index, path in enumerate(paths):
        for pair in _probe_pairs(path):
            other = seen.setdefault(pair, index)
            parent[root(other)] = root(index)
    groups: dict[int, list[int]] = {}
    for index in range(len(paths)):
        groups.setdefault(root(index), []).append(index)
    sizes = [_file_size(p) for p in paths]
    loads = [0] * max(1, min(workers, len(groups)))
    plan: list[list[int]] = [[] for _ in loads]
    for group in sorted(groups.values(), key=lambda g: (-sum(sizes[i] for i in g), g[0])):
        lightest = min(range(len(loads)), key=lambda w: (loads[w], w))
        plan[lightest].extend(group)
        loads[lightest] += sum(sizes[i] for i in group)
    return [sorted(files) for files in plan if files]


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _slot_fields(cls: type) -> list[str] | None:
    """The fields of a dataclass whose whole state is its slots (else None)."""
    import dataclasses
    import types

    if not dataclasses.is_dataclass(cls):
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(isinstance(getattr(cls, name, None), types.MemberDescriptorType) for name in names):
        return None
    return names


_MAKERS: dict[type, Callable[[tuple[Any, ...]], Any]] = {}


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    """An object of a slots dataclass from its fields' values (``_Packer``'s other half)."""
    make = _MAKERS.get(cls)
    if make is None:
        names = _slot_fields(cls) or []
        # one function per class, the slots set one after another: dataclasses' own
        # ``__setstate__`` looks the fields up again for every object (5x slower)
        code = ["def make(v):", "    o = new(cls)"]
        code += [f"    s{i}(o, v[{i}])" for i in range(len(names))]
        code += ["    return o"]
        space: dict[str, Any] = {"new": object.__new__, "cls": cls}
        space.update({f"s{i}": getattr(cls, name).__set__ for i, name in enumerate(names)})
        exec("\n".join(code), space)  # code made here from field counts only
        make = _MAKERS[cls] = space["make"]
    return make(values)


class _Packer:
    """Pickles what a worker ships: slots dataclasses (events, flows) as their fields' values,
    finished flows without their decoder and reassembly buffers (the sinks read neither)."""

    def __init__(self) -> None:
        import copyreg

        from cranewatch.flows import Flow, Side

        self.table: dict[type, Any] = dict(copyreg.dispatch_table)
        self.plain: set[type] = set()  # pickled as pickle does it
        self.learn(Flow, strip="decoder")
        self.learn(Side, strip="stream")

    def learn(self, cls: type, strip: str | None = None) -> None:
        import operator

        if cls in self.table or cls in self.plain:
            return
        names = _slot_fields(cls)
        if names is None:
            self.plain.add(cls)
            return
        get = operator.attrgetter(*names)
        if len(names) == 1:
            self.table[cls] = lambda obj: (_rebuild, (cls, (get(obj),)))
        elif strip is None:
            self.table[cls] = lambda obj: (_rebuild, (cls, get(obj)))
        else:
            at = names.index(strip)
            self.table[cls] = lambda obj: (_rebuild, (cls, (*get(obj)[:at], None, *get(obj)[at + 1:])))

    def dumps(self, message: Any) -> bytes:
        import io

        out = io.BytesIO()
        pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = self.table
        pickler.dump(message)
        return out.getvalue()


class _Outbox:
    """A worker's messages, sent by a thread so the worker never waits on the main process."""

    def __init__(self, conn: Connection) -> None:
        import queue
        import threading

        self.packer = _Packer()
        self.conn = conn
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        while (message := self.queue.get()) is not None:
            try:
                self.conn.send_bytes(message)
            except OSError:  # the main process is gone
                return

    def put(self, message: Any) -> None:
        self.queue.put(self.packer.dumps(message))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _series_key(series: Any) -> tuple[Any, ...]:
    """The order ``ModbusBook.take_series`` gives series in (its key); () for other series."""
    try:
        return (series.master, series.slave, series.unit_id, series.function, series.address,
                series.quantity)
    except AttributeError:
        return ()


def event_filter(sinks: Sequence[Any]) -> Callable[[type], bool]:
    """Whether any of ``sinks`` does something with events of a class: a worker ships the
    others' events not at all (counted, folded, but no sink would have looked at them).

    Known sinks say it by their own routing (the detection sink's handler for an event class
    is fixed at its first event: ``detect.engine._ignore`` when no detector of the run
    judges it); a sink not known here gets every event."""
    import sys

    from cranewatch.conversations import ConversationBook

    detection = sys.modules.get("cranewatch.detect.engine")
    process = sys.modules.get("cranewatch.process.engine")
    tests: list[Callable[[type], bool]] = []
    for sink in sinks:
        if isinstance(sink, ConversationBook):
            continue
        if detection is not None and isinstance(sink, detection.DetectionSink):
            tests.append(functools.partial(_detection_wants, sink, detection._ignore))
        elif process is not None and isinstance(sink, process.ProcessSink):
            tests.append(_process_wants)
        else:
            return lambda cls: True
    answers: dict[type, bool] = {}

    def wanted(cls: type) -> bool:
        answer = answers.get(cls)
        if answer is None:
            answer = answers[cls] = any(test(cls) for test in tests)
        return answer

    return wanted


def _detection_wants(sink: Any, ignore: Any, cls: type) -> bool:
    handler = sink.handlers.get(cls)
    if handler is None:
        handler = sink.handlers[cls] = sink._handler(cls, getattr(cls, "kind", ""))
    return handler is not ignore


def _process_wants(cls: type) -> bool:
    # ``process.signals.is_write_event``: Modbus requests and responses (it keeps the writes
    # among them), MQTT publishes
    from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse

    return issubclass(cls, ModbusRequest | ModbusResponse) or cls.__name__ == "MqttPublishRequest"


def _event_classes() -> set[type]:
    """Every event class the loaded protocols define (those their modules name now: a module
    imported again leaves its old classes behind as subclasses too)."""
    import sys

    from cranewatch.protocols.base import Event

    found: set[type] = set()
    todo: list[type] = [Event]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return {cls for cls in found
            if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is cls}


def _name(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


class _NoDigest:
    """A capture a worker reads only for the merge's timing: its sha256 is its owner's."""

    def update(self, data: Any) -> None:
        return None

    def hexdigest(self) -> str:
        return ""


class _Ship:
    """The worker's one sink: what the real sinks would get, tagged with its place in the
    serial run's order, for the main process."""

    def __init__(self, owner: Any, packer: _Packer, wanted: Callable[[type], bool]) -> None:
        self.owner = owner
        self.packer = packer
        self.wanted = wanted
        self.known: dict[type, bool] = {}  # event class -> shipped (wanted by a sink)

    def on_event(self, event: Any) -> None:
        kind = type(event)
        ship = self.known.get(kind)
        if ship is None:
            ship = self.known[kind] = self.wanted(kind)
            self.packer.learn(kind)
        if ship:
            self.owner.put("event", event)

    def on_series(self, series: Any) -> None:
        self.owner.put("series", series)

    def on_flow(self, flow: Any) -> None:
        self.owner.put("flow", flow)  # ended: it changes no more (pickled without its decoder)

    def on_flow_end(self, flow: Any) -> None:  # pragma: no cover - on_flow is used
        raise AssertionError("on_flow is given")

    def finish(self) -> list[Any]:
        return []


class _ShipPayloads(_Ship):
    def on_payload(self, flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> None:
        # the flow as it is now (later packets change it): pickled at once
        self.owner.put("payload", self.packer.dumps((flow, from_client, bytes(data), ts, frame)))


class _PeerGone(Exception):
    """A worker whose captures' timestamps this worker waits for ended first (its error, or
    its death, is what the main process reports)."""


def _times_only(source: str, ts: np.ndarray) -> PacketBatch:
    """A batch of a capture another worker analyses: its timestamps, which are all the merge
    and the sweeps look at (the other columns are zeros, the bytes empty)."""
    zeros = np.zeros(len(ts), dtype=np.int64)
    return PacketBatch(source=source, buf=b"", frame=zeros, ts=ts, ts_ns=zeros, linktype=zeros,
                       interface=zeros, offset=zeros, caplen=zeros, origlen=zeros)


class _Peers:
    """The timestamps of each capture's batches, told by the worker that reads the capture to
    every other worker: a worker reads only its own captures and follows the serial run's
    merge of all of them (every batch boundary and timestamp as the capture's reader gives
    them). One sending thread per peer, so the analysis never waits on a peer's pipe; a
    worker that waits for a timestamp drains every peer's pipe meanwhile (no cycle of full
    pipes between three workers)."""

    def __init__(self, links: dict[int, tuple[Connection, Connection]]) -> None:
        import queue
        import threading

        self.receive = {peer: inbox for peer, (inbox, _) in links.items()}
        self.queues: dict[int, queue.SimpleQueue[bytes | None]] = {}
        self.threads = []
        for peer, (_, outbox) in links.items():
            self.queues[peer] = queue.SimpleQueue()
            thread = threading.Thread(target=self._send, args=(outbox, self.queues[peer]),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        self.waiting: dict[int, deque[np.ndarray | None]] = {}
        self.open = set(self.receive)

    @staticmethod
    def _send(conn: Connection, todo: Any) -> None:
        try:
            while (message := todo.get()) is not None:
                conn.send_bytes(message)
        except OSError:  # that peer is gone (it ended, or failed: the main process says)
            pass
        finally:
            conn.close()

    def tell(self, index: int, ts: np.ndarray | None) -> None:
        message = pickle.dumps((index, ts), protocol=pickle.HIGHEST_PROTOCOL)
        for todo in self.queues.values():
            todo.put(message)

    def told(self, owner: int, index: int, source: str) -> Iterator[PacketBatch]:
        """Capture ``index``'s batches (timestamps only), as ``owner`` reads them."""
        waiting = self.waiting.setdefault(index, deque())
        while True:
            while not waiting:
                self._take(owner)
            ts = waiting.popleft()
            if ts is None:
                return
            yield _times_only(source, ts)

    def _take(self, owner: int) -> None:
        from multiprocessing.connection import wait

        if owner not in self.open:
            raise _PeerGone(owner)
        for conn in wait([self.receive[peer] for peer in self.open]):
            peer = next(p for p in self.open if self.receive[p] is conn)
            try:
                index, ts = pickle.loads(conn.recv_bytes())  # type: ignore[union-attr]
            except (EOFError, OSError):
                self.open.discard(peer)
                continue
            self.waiting.setdefault(index, deque()).append(ts)

    def close(self) -> None:
        for todo in self.queues.values():
            todo.put(None)
        for thread in self.threads:
            thread.join()


def _group_analysis(outbox: _Outbox, worker: int, paths: list[str], owned: set[int],
                    several: bool, batch_packets: int, configure: Callable[[], Any],
                    peers: _Peers | None = None, owners: Sequence[int] = ()) -> None:
    """A worker: follow the serial run's merge of every capture (the same pieces, the same
    sweeps), decode and analyse the pieces of its own captures, ship the sinks' input.

    With ``peers`` it reads only its own captures and tells their batches' timestamps to the
    other workers, and takes theirs (capture ``i`` is read by worker ``owners[i]``); without,
    it reads every capture itself."""
    from cranewatch.flows import FlowTable
    from cranewatch.pipeline import (
        MAX_WARNINGS,
        Analysis,
        _file_batches,
        _InputState,
        merged_batches,
    )

    class KeyedTable(FlowTable):
        def update(self, decoded: Any, batch: Any, source: str) -> Any:
            found = super().update(decoded, batch, source)
            for rank, flow in enumerate(found.new):
                analysis.created[flow.key] = (analysis.tick, rank)
                analysis.flow_hashes.add(hash(flow.key))
            return found

    class GroupAnalysis(Analysis):
        def __init__(self) -> None:
            self.tick = self.reads = 0
            self.place: tuple[int, int, tuple[Any, ...]] = (0, 1, ())
            self.seq = 0
            self.items: list[Any] = []
            self.created: dict[bytes, tuple[int, int]] = {}
            self.flow_hashes: set[int] = set()
            self.peak_flows = self.peak_held = self.warned = self.dropped = 0
            self.fragments = False
            self.told: set[str] = set()
            self.ship = _ShipPayloads(self, outbox.packer, lambda cls: True)
            super().__init__([self.ship], flow_table=KeyedTable())
            self.configured = False

        def configure(self) -> None:
            """What the main process's sinks take (they are loaded while this worker reads
            its first batches): payloads or not, and which event classes."""
            payloads, wanted, known = configure()
            self._payload_sinks = [self.ship] if payloads else []
            # a class the main process did not know of goes to it (its sinks will judge)
            self.ship.wanted = lambda cls: _name(cls) in wanted or _name(cls) not in known
            self.configured = True

        def put(self, kind: str, value: Any) -> None:
            self.items.append(((self.place, self.seq, worker), kind, value))
            self.seq += 1

        def warn(self, warning: InputWarning) -> None:
            new = self._limits_hit - self.told
            self.told |= new
            if not isinstance(warning, GapWarning):  # the main process tallies gaps (weirds)
                if self.warned >= MAX_WARNINGS:
                    self.dropped += 1
                    return
                self.warned += 1
            self.put("warn", (warning, min(new) if new else None))

        def clocked(self, stream: Iterator[PacketBatch]) -> Iterator[PacketBatch]:
            """A capture's batches; what its read says is placed by the merge's reads so
            far (every worker makes the same reads in the same order: a common clock)."""
            while True:
                self.reads += 1
                self.place = (self.tick, 0, (self.reads,))
                batch = next(stream, None)
                if batch is None:
                    return
                yield batch

        def _end_flow(self, flow: Any) -> None:
            place = self.place
            self.place = (self.tick, 2, self.created.pop(flow.key, (-1, -1)))
            try:
                super()._end_flow(flow)
            finally:
                self.place = place

        def _sweep_due(self, batch: PacketBatch) -> None:
            self.peak_flows = max(self.peak_flows, len(self.flows.flows))
            super()._sweep_due(batch)

        def _sweep(self, now: float, source: str) -> None:
            held = sum(side.stream.held_bytes for flow in self.flows.flows.values()
                       for side in (flow.to_server, flow.to_client) if side.stream is not None)
            self.peak_held = max(self.peak_held, held)
            super()._sweep(now, source)

        def take_series(self) -> Iterator[Any]:
            for index, run in enumerate(self.runs):
                for series in run.take_series():
                    self.place = (self.tick, 3, (index, _series_key(series)))
                    yield series

        def flush(self) -> None:
            if self.items:
                items, self.items = self.items, []
                try:
                    outbox.put(("items", items))
                except Exception as exc:  # something a sink would get does not pickle
                    raise _CannotShip(f"{type(exc).__name__}: {exc}") from None

    analysis = GroupAnalysis()
    analysis._several_captures = several
    states = [_InputState(path, 0) if index in owned else _InputState(path, 0, _NoDigest())
              for index, path in enumerate(paths)]
    streams = []
    for index, state in enumerate(states):
        if peers is not None and index not in owned:
            streams.append(analysis.clocked(peers.told(owners[index], index, state.path)))
            continue
        if peers is not None:
            streams.append(analysis.clocked(_telling(
                peers, index, analysis.warn,
                lambda said, state=state: analysis._counted(  # type: ignore[misc]
                    state, _file_batches(state, said, batch_packets)))))
            continue
        warn = analysis.warn if index in owned else _ignore
        streams.append(analysis.clocked(analysis._counted(state, _file_batches(state, warn,
                                                                               batch_packets))))
    mine = {paths[index] for index in owned}
    try:
        for piece in merged_batches(streams):
            if not analysis.configured:
                analysis.configure()
            if piece.source in mine:
                analysis.place = (analysis.tick, 1, ())
                decoded = decode_batch(piece)
                analysis.fragments = analysis.fragments or bool(decoded.fragment.any())
                analysis.process(_with_decode(piece, decoded))
                analysis.put("progress", int(piece.caplen.sum()) + 16 * len(piece))
            else:
                analysis._sweep_due(piece)
            analysis.tick += 1
            analysis.flush()
        analysis.place = (analysis.tick, 1, (worker,))
        analysis.put("states", {index: _FileState.of(states[index]) for index in owned})
        analysis.close_all()
    except _CannotShip as exc:
        outbox.put(("fallback", f"what a worker hands over could not be pickled ({exc})"))
        return
    except _PeerGone:  # that worker's error (or death) is what the main process reports
        analysis.flush()
        outbox.put(("gone", None))
        return
    except Exception as exc:  # raised in the main process where the serial run meets it
        analysis.put("error", _picklable(exc))
        analysis.flush()
        return
    analysis.flush()
    runs = analysis.runs
    outbox.put(("end", _Report(
        hosts=analysis.hosts, tally=analysis.protocol_tally, events=analysis.events,
        packets=analysis.packets, flows=analysis.flow_count, dropped=analysis.dropped,
        flow_hashes=analysis.flow_hashes, peak_flows=analysis.peak_flows,
        peak_held=analysis.peak_held, fragments=analysis.fragments,
        limits=set(analysis._limits_hit), evicted=analysis.flows.evicted,
        summaries=[run.summary() for run in runs],
        tallies=[(run.book.masters, run.book.slaves) if hasattr(run, "book") else None
                 for run in runs])))


def _ignore(warning: InputWarning) -> None:
    return None


def _telling(peers: _Peers, index: int, warn: Callable[[InputWarning], None],
             read: Callable[[Callable[[InputWarning], None]], Iterator[PacketBatch]],
             ) -> Iterator[PacketBatch]:
    """A worker's own capture, read one batch ahead: when a batch is taken, the next one is
    read and its timestamps (or the capture's end) told to the other workers, so they wait
    for this worker's reading, not for its analysis. What a read says (warnings, or an
    exception) is given when its batch is taken, where the serial run's read says it."""
    said: list[InputWarning] = []
    stream = read(lambda warning: said.append(warning))

    def fetch() -> tuple[PacketBatch | None, Exception | None, list[InputWarning]]:
        nonlocal said
        mine: list[InputWarning] = []
        said = mine
        try:
            batch = next(stream, None)
        except Exception as exc:  # raised when the batch it stands for is taken
            return None, exc, mine
        peers.tell(index, None if batch is None else batch.ts)
        return batch, None, mine

    pending = fetch()
    while True:
        batch, error, told = pending
        for warning in told:
            warn(warning)
        if error is not None:
            raise error
        if batch is None:
            return
        pending = fetch()
        yield batch


class _CannotShip(Exception):
    """A worker could not pickle what it hands over: the run is done serially instead."""


@dataclass(frozen=True, slots=True)
class _FileState:
    """What the read of one capture found (``pipeline._InputState``'s fields)."""

    packets: int
    first: float | None
    last: float | None
    format: str
    complete: bool
    problems: list[str]
    headers: tuple[Any, ...]
    silence: float
    sha256: str

    @classmethod
    def of(cls, state: Any) -> _FileState:
        return cls(state.packets, state.first, state.last, state.format, state.complete,
                   state.problems, state.headers, state.silence, state.sha.hexdigest())

    def into(self, state: Any) -> None:
        state.packets, state.first, state.last = self.packets, self.first, self.last
        state.format, state.complete, state.problems = self.format, self.complete, self.problems
        state.headers, state.silence, state.sha = self.headers, self.silence, _Digest(self.sha256)


@dataclass(slots=True)
class _Report:
    """A worker's state at the end: what the document sums over the groups, and what tells
    whether the groups really were independent."""

    hosts: dict[Any, Any]
    tally: dict[str, Any]
    events: dict[str, int]
    packets: int
    flows: int
    dropped: int
    flow_hashes: set[int]
    peak_flows: int
    peak_held: int
    fragments: bool
    limits: set[str]
    evicted: int
    summaries: list[dict[str, Any]]
    tallies: list[Any]


def _split_worker(conn: Connection, worker: int, paths: list[str], owned: list[int],
                  several: bool, batch_packets: int, plan: list[list[int]] | None = None,
                  links: dict[tuple[int, int], tuple[Connection, Connection]] | None = None,
                  ) -> None:
    """One group's worker; ``links[(a, b)]`` is the pipe (receiving end, sending end) by which
    worker ``a`` tells worker ``b`` its captures' timestamps (every worker's ends: this one
    closes the others', so a peer's end is seen when it ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    peers = None
    owners: list[int] = []
    if links:
        inboxes: dict[int, Connection] = {}
        sends: dict[int, Connection] = {}
        for (sender, receiver), (inbox, send) in links.items():
            if receiver == worker:
                inboxes[sender] = inbox
            else:
                inbox.close()
            if sender == worker:
                sends[receiver] = send
            else:
                send.close()
        mine = {peer: (inboxes[peer], sends[peer]) for peer in inboxes}
        peers = _Peers(mine)
        owners = [0] * len(paths)
        for index, files in enumerate(plan or []):
            for file in files:
                owners[file] = index
    outbox = _Outbox(conn)
    try:
        _group_analysis(outbox, worker, paths, set(owned), several, batch_packets, conn.recv,
                        peers, owners)
    except BaseException as exc:  # pragma: no cover - _group_analysis ships its errors
        outbox.put(("items", [(((-1, 0, ()), 0, worker), "error", _picklable(exc))]))
    finally:
        if peers is not None:
            peers.close()
        outbox.close()


class NotIndependent(Exception):
    """The groups met after all (the reason): the run is done again serially."""


class _Summaries:
    """Stands in for the protocols' runs when the document is made: their merged summaries."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self._summary = summary

    def summary(self) -> dict[str, Any]:
        return self._summary


class SplitRun:
    """Worker processes analysing groups of captures; ``replay`` feeds the sinks in the main
    process and gives the document (or raises ``NotIndependent``)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], plan: list[list[int]],
                 batch_packets: int) -> None:
        self.paths = [str(p) for p in paths]
        self.plan = plan
        self.batch_packets = batch_packets
        self.sinks: list[Any] = []
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        self.tell_times = TELL_TIMES  # workers tell each other their captures' timestamps

    def __enter__(self) -> SplitRun:
        context = multiprocessing.get_context("fork")
        links: dict[tuple[int, int], tuple[Connection, Connection]] = {}
        try:
            if self.tell_times:
                for sender in range(len(self.plan)):
                    for receiver in range(len(self.plan)):
                        if sender != receiver:
                            links[sender, receiver] = context.Pipe(duplex=False)
            for worker, owned in enumerate(self.plan):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(
                    target=_split_worker, name=f"cranewatch-group-{worker}", daemon=True,
                    args=(theirs, worker, self.paths, owned, len(self.paths) > 1,
                          self.batch_packets, self.plan, links))
                process.start()
                theirs.close()
                self._conns.append(mine)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise
        finally:
            for inbox, send in links.values():  # the workers' own: a worker's end is seen
                inbox.close()
                send.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        self._conns, self._processes = [], []

    def _items(self, worker: int, reports: dict[int, _Report]) -> Iterator[Any]:
        conn = self._conns[worker]
        while True:
            try:
                kind, value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                code = None
                if self._processes:
                    self._processes[worker].join(timeout=2)  # ended: its exit code is there
                    code = self._processes[worker].exitcode
                files = ", ".join(self.paths[i] for i in self.plan[worker])
                raise ReaderFailed(f"worker process {worker} ended (exit code {code}) before "
                                   f"finishing {files}; try --jobs 1") from None
            if kind == "end":
                reports[worker] = value
                return
            if kind == "fallback":
                raise NotIndependent(value)
            if kind == "gone":  # another worker failed first: its stream says how
                return
            yield from value
            if value and value[-1][1] == "error":
                return

    def configure(self, sinks: Sequence[Any]) -> None:
        """The sinks the run feeds (loaded after the workers started): the workers learn
        whether any takes payloads and which event classes any does something with."""
        self.sinks = list(sinks)
        payloads = any(hasattr(sink, "on_payload") for sink in sinks)
        wanted = event_filter(sinks)
        known = _event_classes()
        message = (payloads, frozenset(_name(cls) for cls in known if wanted(cls)),
                   frozenset(_name(cls) for cls in known))
        for conn in self._conns:
            try:
                conn.send(message)
            except OSError:  # that worker is gone: replay says so
                pass

    def replay(self, progress: Callable[[int, int], None] | None, profile: str | None,
               baseline: str | None) -> Any:
        import heapq

        from cranewatch.pipeline import Analysis, _InputState, _size
        from cranewatch.segments import SegmentPlanner

        main = Analysis(self.sinks)
        states = [_InputState(path, _size(path)) for path in self.paths]
        total = sum(state.size for state in states)
        done = 0
        reports: dict[int, _Report] = {}
        payload_sinks = [sink for sink in main.sinks if hasattr(sink, "on_payload")]
        told: set[str] = set()
        limits_dropped = False
        series_seen: set[Any] = set()
        planner: SegmentPlanner | None = None
        streams = [self._items(worker, reports) for worker in range(len(self.plan))]
        for place, kind, value in heapq.merge(*streams):  # keys differ: tuples compare by them
            if kind == "event":
                for sink in main.sinks:
                    try:
                        sink.on_event(value)
                    except Exception as exc:  # as in Analysis.emit
                        main._sink_failed(sink, "on_event", exc, value.source or None, value.frame)
            elif kind == "flow":
                main._hand_flows([value])
            elif kind == "payload":
                flow, from_client, data, ts, frame = pickle.loads(value)
                for sink in payload_sinks:
                    try:
                        sink.on_payload(flow, from_client, data, ts, frame)
                    except Exception as exc:  # as in Analysis._slow
                        main._sink_failed(sink, "on_payload", exc, flow.source, frame)
            elif kind == "warn":
                warning, limit = value
                if limit is not None:
                    if limit in told:
                        limits_dropped = True
                        continue
                    told.add(limit)
                main.warn(warning)
            elif kind == "series":
                if place[0] in series_seen:
                    raise NotIndependent("two groups gave the same register series")
                series_seen.add(place[0])
                if planner is None:
                    planner = SegmentPlanner(_spans(states))
                main.series_count += 1
                planner.observe(value)
                for sink in main.sinks:
                    try:
                        sink.on_series(value)
                    except Exception as exc:  # as in Analysis.close_all
                        main._sink_failed(sink, "on_series", exc, value.source or None,
                                          int(value.frame[0]) if len(value.frame) else None)
            elif kind == "progress":
                done += value
                if progress is not None:
                    progress(min(done, total), total)
            elif kind == "states":
                for index, found in value.items():
                    found.into(states[index])
            elif kind == "error":
                raise value
        missing = [worker for worker in range(len(self.plan)) if worker not in reports]
        if missing:  # pragma: no cover - the worker that failed first raised above
            raise ReaderFailed(f"worker process {missing[0]} stopped early; try --jobs 1")
        _merge(main, [reports[worker] for worker in range(len(self.plan))], limits_dropped)
        if planner is None:
            planner = SegmentPlanner(_spans(states))
        return main.finish(states, planner.segments(), profile, baseline)


def _spans(states: Sequence[Any]) -> list[Any]:
    from cranewatch.segments import FileSpan

    return [FileSpan(s.path, s.first, s.last, s.packets, s.headers, s.silence)
            for s in states if s.packets and s.first is not None and s.last is not None]


# Limits whose effect is more than a warning: a group that reached one was not independent.
_STATEFUL_LIMITS = frozenset({"flows", "held", "hosts", "protocols"})


def _merge(main: Any, reports: list[_Report], limits_dropped: bool) -> None:
    """The groups' tables summed into ``main``, exactly as one run would have kept them, or
    ``NotIndependent`` when they met (shared flows, bounds reached together)."""
    from cranewatch.pipeline import MAX_HELD_BYTES, MAX_HOSTS, MAX_IPS_PER_HOST, MAX_PROTOCOL_NAMES

    seen: set[int] = set()
    for report in reports:
        if seen & report.flow_hashes:
            raise NotIndependent("a flow is in captures of two groups")
        seen |= report.flow_hashes
        if report.limits & _STATEFUL_LIMITS or report.evicted:
            raise NotIndependent("a group reached a bound of the flow, host or protocol tables")
    if sum(r.peak_flows for r in reports) > main.flows.max_flows:
        raise NotIndependent("the groups' flows together exceed the flow table")
    if sum(r.peak_held for r in reports) > MAX_HELD_BYTES:
        raise NotIndependent("the groups' held TCP bytes together exceed their bound")
    if sum(r.fragments for r in reports) > 1:
        raise NotIndependent("IP fragments in several groups")
    if limits_dropped and any(r.dropped for r in reports):
        raise NotIndependent("warnings beyond the bound in a group")
    for report in reports:
        main.packets += report.packets
        main.flow_count += report.flows
        main.suppressed += report.dropped
        for name, count in report.events.items():
            main.events[name] = main.events.get(name, 0) + count
        for key, host in report.hosts.items():
            known = main.hosts.get(key)
            if known is None:
                main.hosts[key] = host
                continue
            known.first, known.last = min(known.first, host.first), max(known.last, host.last)
            known.packets += host.packets
            known.wire += host.wire
            known.ips |= host.ips
            if len(known.ips) > MAX_IPS_PER_HOST:
                raise NotIndependent("a host's addresses in several groups exceed their bound")
        for name, tally in report.tally.items():
            known = main.protocol_tally.get(name)
            if known is None:
                main.protocol_tally[name] = tally
                continue
            known.flows += tally.flows
            known.packets += tally.packets
            known.wire += tally.wire
            known.clients |= tally.clients
            known.servers |= tally.servers
            if len(known.clients) >= 100_000:
                raise NotIndependent("a protocol's clients in several groups exceed their bound")
    if len(main.hosts) > MAX_HOSTS or len(main.protocol_tally) >= MAX_PROTOCOL_NAMES:
        raise NotIndependent("the groups' hosts or protocols together exceed their bound")
    main.events = dict(main.events)
    main.runs = [_Summaries(_merge_summaries(index, run, reports))
                 for index, run in enumerate(main.runs)]


def _merge_summaries(index: int, run: Any, reports: list[_Report]) -> dict[str, Any]:
    fresh = type(run)().summary()
    merged: dict[str, Any] = {}
    for name, empty in fresh.items():
        values = [r.summaries[index][name] for r in reports
                  if _differs(r.summaries[index][name], empty)]
        if len(values) <= 1:
            merged[name] = values[0] if values else empty
        elif all(r.tallies[index] is not None for r in reports):
            merged = _merge_modbus(run, [r.tallies[index] for r in reports])
            break
        else:
            joined = run.merge_summaries([r.summaries[index] for r in reports])
            if joined is None:
                raise NotIndependent(f"{name} in several groups")
            merged = joined
            break
    return merged


def _differs(value: Any, empty: Any) -> bool:
    try:
        return bool(value != empty)
    except Exception:  # e.g. arrays inside: not the empty value
        return True


def _merge_modbus(run: Any, tallies: list[Any]) -> dict[str, Any]:
    """Modbus masters and slaves seen in several groups (a SCADA server polling every
    crane's PLC): their tallies summed, as one book would have kept them."""
    from cranewatch.protocols.modbus import MAX_PEERS, MAX_RANGES, PeerTally

    book = type(run)().book
    for masters, slaves in tallies:
        for mine, theirs in ((book.masters, masters), (book.slaves, slaves)):
            for address, tally in theirs.items():
                known = mine.setdefault(address, PeerTally(address))
                known.peers |= tally.peers
                known.units |= tally.units
                for function, count in tally.functions.items():
                    known.functions[function] = known.functions.get(function, 0) + count
                for key, count in tally.ranges.items():
                    known.ranges[key] = known.ranges.get(key, 0) + count
                known.exceptions += tally.exceptions
                known.first_seen = min(known.first_seen, tally.first_seen)
                known.last_seen = max(known.last_seen, tally.last_seen)
                if len(known.peers) >= MAX_PEERS or len(known.ranges) >= MAX_RANGES:
                    raise NotIndependent("a Modbus peer's tally in several groups reached its bound")
            if len(mine) >= MAX_PEERS:
                raise NotIndependent("the Modbus peers of several groups reached their bound")
    fresh = type(run)()
    fresh.book = book
    return fresh.summary()


def split_plan(paths: Sequence[str | os.PathLike[str]], jobs: int) -> tuple[list[list[int]] | None, str | None]:
    """The groups to analyse apart, or None and why not (then the run is serial)."""
    from cranewatch.pipeline import _is_zeek

    names = [str(p) for p in paths]
    if len(names) < 2 or any(_is_zeek(name) for name in names):
        return None, None
    if len(set(names)) < len(names):
        return None, "a capture is given twice"
    plan = plan_groups(names, jobs)
    if len(plan) < 2:
        return None, "the captures all share conversations"
    return plan, None
