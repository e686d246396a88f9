"""Live capture: packets of a network interface, through tcpdump, as the reader's batches.

``LiveCapture`` spawns ``tcpdump -i IFACE -U -w - [-s SNAP] [-c N] [BPF]`` (inside a network
namespace with ``ip netns exec`` when asked) and streams its pcap output through the same
``CaptureReader`` that reads files. The reader asks for 8 MB blocks; from a pipe that would
wait for 8 MB of traffic, so the pipe is read through ``PromptPipe``, which hands over what has
arrived once the pipe has been quiet or busy for ``linger`` seconds: batches come at least
every ``linger`` seconds under load and as soon as a packet arrives when the wire is quiet.

``RingWriter`` keeps the raw evidence: it writes every batch to rolling pcap files of a
bounded size and number, and relabels the batch so that its ``source`` and ``frame`` numbers
name the ring file and the frame in it, as tshark would number them. Files holding evidence of
a finding are pinned (``pin``) and never rotated away.

Failures to start become located errors: tcpdump missing or not allowed to capture →
``EnvironmentProblem`` (exit 4); an interface or namespace that does not exist →
``InputError`` naming it (exit 3).

tcpdump dies with cranewatch, however cranewatch ends (SIGKILL, the OOM killer, a crash): it
runs under a small ``sh`` (``CAPTURE_GUARD``) to which the kernel sends SIGTERM when the
thread that started it ends (``PR_SET_PDEATHSIG``), and which then stops tcpdump. The signal
cannot be set on tcpdump itself: the kernel clears it when tcpdump drops root for its own user
(``-Z``, Debian's default), and a capture left running would hold the interface and fill a
pipe nobody reads. Start a ``LiveCapture`` from the thread that outlives it (the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cranewatch.errors import CaptureError, EnvironmentProblem, InputError, Location
from cranewatch.sources.pcap import CaptureReader, PacketBatch

__all__ = [
    "CaptureTool",
    "LiveCapture",
    "PromptPipe",
    "RingWriter",
    "capture_argv",
    "classify_failure",
]

LINGER_S = 0.05  # longest a batch waits for more packets once the first has arrived
PR_SET_PDEATHSIG = 1
# Runs "$@" (the capture) and stops it on SIGTERM/HUP/INT (sent by cranewatch's stop(), or by
# the kernel when cranewatch ends); exits with the capture's status. ``wait`` returns early
# when a trapped signal arrives, so it is repeated until the capture has really ended.
CAPTURE_GUARD = r"""
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM HUP INT
while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || exit "$status"
done
"""
READY_TIMEOUT_S = 10.0  # how long tcpdump may take to open the interface
DEFAULT_SNAPLEN = 262144


@dataclass(frozen=True, slots=True)
class CaptureTool:
    """What to run: the interface, optional namespace, snap length, packet limit and filter."""

    interface: str
    netns: str | None = None
    snaplen: int | None = None
    packets: int | None = None  # tcpdump -c: stop after this many packets
    bpf: tuple[str, ...] = ()
    buffer_kib: int | None = None  # tcpdump -B: kernel capture buffer, absorbs bursts

    @property
    def source_name(self) -> str:
        """How batches name their origin when no ring file holds them."""
        where = f"{self.netns}/" if self.netns else ""
        return f"live:{where}{self.interface}"


def capture_argv(tool: CaptureTool, tcpdump: str = "tcpdump", ip: str = "ip") -> list[str]:
    """The command line that captures ``tool.interface`` as pcap on stdout, packet-buffered."""
    argv = [tcpdump, "-i", tool.interface, "-U", "-w", "-", "-n"]
    if tool.snaplen is not None:
        argv += ["-s", str(tool.snaplen)]
    if tool.packets is not None:
        argv += ["-c", str(tool.packets)]
    if tool.buffer_kib is not None:
        argv += ["-B", str(tool.buffer_kib)]
    argv += list(tool.bpf)
    if tool.netns:
        argv = [ip, "netns", "exec", tool.netns, *argv]
    return argv


def classify_failure(tool: CaptureTool, stderr: str) -> Exception:
    """Turn what tcpdump (or ip netns) said when it failed into a located cranewatch error."""
    # What it said beyond its banner and its closing packet counts
    lines = [line.strip() for line in stderr.splitlines() if line.strip()
             and "listening on" not in line and not line.split()[0].isdigit()]
    text = "\n".join(lines)
    low = text.lower()
    said = lines[-1].strip("()") if lines else "tcpdump exited without saying why"
    where = Location(file=tool.source_name)
    inside = f" in namespace {tool.netns!r}" if tool.netns else ""
    if tool.netns and ("cannot open network namespace" in low or "setting the network namespace" in low):
        return InputError(f"network namespace {tool.netns!r} does not exist ({said})", where)
    if "interface disappeared" in low:
        return InputError(f"interface {tool.interface!r}{inside} disappeared during the capture "
                          f"({said})", where)
    if "no such device" in low or "doesn't exist" in low or "no such interface" in low:
        return InputError(f"interface {tool.interface!r} does not exist{inside} ({said})", where)
    if "device is not up" in low or "went down" in low:
        return EnvironmentProblem(f"interface {tool.interface!r}{inside} is down: bring it up "
                                  f"(ip link set {tool.interface} up) ({said})", where)
    if "permission" in low or "not permitted" in low or "cap_net_raw" in low:
        return EnvironmentProblem(
            f"not allowed to capture on {tool.interface!r}: run as root or give tcpdump "
            f"CAP_NET_RAW and CAP_NET_ADMIN ({said})", where)
    if "syntax error" in low or "can't parse filter" in low or "illegal" in low:
        return InputError(f"capture filter rejected by tcpdump: {said}", where)
    return EnvironmentProblem(f"tcpdump failed on {tool.interface!r}{inside}: {said}", where)


def guarded_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``CAPTURE_GUARD`` (see the module docstring)."""
    return ["/bin/sh", "-c", CAPTURE_GUARD, "cranewatch-capture", *argv]


def die_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send the child SIGTERM when its parent ends (and
    ending the child at once if the parent already has); None where prctl is unavailable."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:  # in the child, between fork and exec: as little as can be
        prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class PromptPipe:
    """A pipe's read end with ``read(n)`` that returns what arrived, without waiting for ``n``.

    ``read`` blocks until the first bytes come (or end of file), then keeps reading while more
    arrives within ``linger`` seconds, up to ``n`` bytes. End of file gives ``b""``. The file
    descriptor stays its owner's to close (``close`` only marks this reader done).
    """

    def __init__(self, fd: int, linger: float = LINGER_S) -> None:
        self.fd = fd
        self.linger = linger
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        want = size if size > 0 else 1 << 20
        first = self._read_some(want, None)
        if not first:
            return b""
        parts, have = [first], len(first)
        deadline = time.monotonic() + self.linger
        while have < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = self._read_some(want - have, left)
            if not more:
                break
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def _read_some(self, size: int, timeout: float | None) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, min(size, 1 << 20))
        except OSError:
            return b""

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class LiveCapture:
    """A running tcpdump and the reader over its output; use as a context manager.

    ``start()`` waits until tcpdump listens (it says so on stderr), so traffic sent after
    ``start`` returns is captured. ``batches()`` ends when tcpdump ends (``stop()``, ``-c``,
    or the interface went away); ``failure()`` then tells why, if it was not asked to.
    """

    def __init__(self, tool: CaptureTool, *, linger: float = LINGER_S,
                 batch_packets: int = 65536) -> None:
        self.tool = tool
        self.linger = linger
        self.batch_packets = batch_packets
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_lines: list[str] = []
        self.listening = threading.Event()
        self.stopping = False
        self.reader: CaptureReader | None = None
        self._stderr_thread: threading.Thread | None = None

    def __enter__(self) -> LiveCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        """Close the pipes (after ``stop``, once the batches were read to their end)."""
        process = self.process
        if process is None:
            return
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def start(self) -> None:
        tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin:/usr/bin")
        if tcpdump is None:
            raise EnvironmentProblem("tcpdump is not installed (apt-get install tcpdump); "
                                     "cranewatch monitor captures through it")
        ip = "ip"
        if self.tool.netns:
            found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin")
            if found is None:
                raise EnvironmentProblem("ip (iproute2) is not installed; --netns needs it")
            ip = found
        if not self.tool.netns and not Path("/sys/class/net", self.tool.interface).exists():
            raise InputError(f"interface {self.tool.interface!r} does not exist on this host",
                             Location(file=self.tool.source_name))
        try:
            self.process = subprocess.Popen(
                guarded_argv(capture_argv(self.tool, tcpdump, ip)), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                # its own session: a Ctrl-C at the terminal reaches cranewatch only, which then
                # stops tcpdump itself after the last packets are read
                start_new_session=True, preexec_fn=die_with_this_process())
        except OSError as exc:
            raise EnvironmentProblem(f"cannot run tcpdump: {exc}") from None
        self._stderr_thread = threading.Thread(target=self._watch_stderr, daemon=True)
        self._stderr_thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.listening.wait(0.05):
            if self.process.poll() is not None:
                self._stderr_thread.join(1.0)
                self.close()
                raise classify_failure(self.tool, "\n".join(self.stderr_lines))
            if time.monotonic() > deadline:
                self.stop()
                self.close()
                raise EnvironmentProblem(
                    f"tcpdump did not start listening on {self.tool.interface!r} within "
                    f"{READY_TIMEOUT_S:.0f} s", Location(file=self.tool.source_name))

    def _watch_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if len(self.stderr_lines) < 200:
                self.stderr_lines.append(line)
            if "listening on" in line:
                self.listening.set()

    def batches(self) -> Iterator[PacketBatch]:
        """Batches as packets arrive; ends when tcpdump ends."""
        assert self.process is not None and self.process.stdout is not None
        pipe = PromptPipe(self.process.stdout.fileno(), self.linger)
        head = b""
        while len(head) < 4:
            more = pipe.read(4 - len(head))
            if not more:
                return  # tcpdump ended before its first packet: nothing was captured
            head += more
        stream: BinaryIO = pipe  # type: ignore[assignment]
        self.reader = CaptureReader(self.tool.source_name, stream, head)
        try:
            yield from self.reader.batches(self.batch_packets)
        except CaptureError as exc:
            if not self.stopping:
                raise
            del exc  # a record cut by stopping tcpdump is expected

    def stop(self) -> None:
        """End tcpdump (it flushes what it holds, then closes the pipe)."""
        self.stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # the guard passes it on to tcpdump
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the guard and tcpdump: its own session
            process.wait(5.0)

    def failure(self) -> Exception | None:
        """Why tcpdump ended, when nobody asked it to and it did not reach its -c count."""
        process = self.process
        if process is None or self.stopping or process.poll() in (None, 0):
            return None
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
        return classify_failure(self.tool, "\n".join(self.stderr_lines))

    def statistics(self) -> dict[str, int]:
        """tcpdump's closing counts: packets captured, received by filter, dropped by kernel."""
        out: dict[str, int] = {}
        for line in self.stderr_lines:
            words = line.split()
            if len(words) >= 3 and words[0].isdigit() and words[1] == "packets":
                out[" ".join(words[1:])] = int(words[0])
        return out


# ----------------------------------------------------------------------------------- the ring

_PCAP_NANO_MAGIC = 0xA1B23C4D


@dataclass(slots=True)
class RingWriter:
    """Rolling pcap files in ``directory``: at most ``files`` unpinned files of ~``size_bytes``.

    Files are named ``<prefix>-<start time>-<seq>.pcap`` (nanosecond pcap, the batch's link
    type). A batch is written whole into one file, so a batch's frames all name that file.
    """

    directory: Path
    prefix: str
    size_bytes: int
    files: int
    current: Path | None = None
    written: list[Path] = field(default_factory=list)
    pinned: set[Path] = field(default_factory=set)
    _handle: BinaryIO | None = None
    _size: int = 0
    _frames: int = 0
    _linktype: int | None = None
    _seq: int = 0

    def __post_init__(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the ring directory: {exc.strerror}",
                             Location(file=str(self.directory))) from None

    def write(self, batch: PacketBatch) -> PacketBatch:
        """Write ``batch`` to the ring; return it renamed to its ring file and frames there."""
        if not len(batch):
            return batch
        linktype = int(batch.linktype[0])
        if self._handle is None or self._size >= self.size_bytes or linktype != self._linktype:
            self._rotate(linktype)
        assert self._handle is not None and self.current is not None
        data = _pcap_records(batch)
        self._handle.write(data)
        self._handle.flush()  # the evidence is on disk before the finding that names it
        self._size += len(data)
        first = self._frames + 1
        self._frames += len(batch)
        frames = np.arange(first, first + len(batch), dtype=np.int64)
        return replace(batch, source=str(self.current), frame=frames)

    def _rotate(self, linktype: int) -> None:
        self.close()
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.directory / f"{self.prefix}-{stamp}-{self._seq:05d}.pcap"
        try:
            self._handle = path.open("wb")
        except OSError as exc:
            raise InputError(f"cannot write the ring file: {exc.strerror}",
                             Location(file=str(path))) from None
        header = struct.pack("<IHHiIII", _PCAP_NANO_MAGIC, 2, 4, 0, 0, DEFAULT_SNAPLEN, linktype)
        self._handle.write(header)
        self._size, self._frames, self._linktype = len(header), 0, linktype
        self.current = path
        self.written.append(path)
        self._drop_old()

    def _drop_old(self) -> None:
        unpinned = [p for p in self.written if p not in self.pinned]
        for old in unpinned[: max(0, len(unpinned) - self.files)]:
            with contextlib.suppress(OSError):
                old.unlink()
            self.written.remove(old)

    def pin(self, paths: Sequence[str]) -> None:
        """Keep these ring files (evidence of findings) whatever the rotation."""
        mine = set(self.written)
        self.pinned.update(p for p in map(Path, paths) if p in mine)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _pcap_records(batch: PacketBatch) -> bytes:
    """The batch's packets as classic pcap records (nanosecond timestamps)."""
    seconds = (batch.ts_ns // 1_000_000_000).tolist()
    nanos = (batch.ts_ns % 1_000_000_000).tolist()
    starts = batch.offset.tolist()
    caplens = batch.caplen.tolist()
    origlens = batch.origlen.tolist()
    buf = batch.buf
    pack = struct.Struct("<IIII").pack
    parts: list[bytes] = []
    for sec, nsec, start, caplen, origlen in zip(seconds, nanos, starts, caplens, origlens,
                                                 strict=True):
        parts.append(pack(sec, nsec, caplen, origlen))
        parts.append(buf[start : start + caplen])
    return b"".join(parts)
