"""Read captures ahead in worker processes (``analyze --jobs N``), the document unchanged.

The serial run reads all captures as one stream in timestamp order (``pipeline.merged_batches``);
flows span files and the protocols' and detectors' state spans the whole run, so the work after
the read cannot be split by file without changing what it finds. What each file needs alone is
its read: pcap/pcapng parsing, gzip inflation, the sha256 of its bytes and the L2-L4 decode into
the batch's columns (``decode.decode_batch``, row by row, so a piece of a decoded batch is the
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

import multiprocessing
import os
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
