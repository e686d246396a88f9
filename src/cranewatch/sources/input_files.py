"""Opening inputs the attacker may have written: regular files only, gzip inflated within limits.

Two guards shared by the capture reader and the Zeek log reader:

- ``open_regular_file`` refuses devices, FIFOs, sockets and directories *before* reading a byte:
  ``/dev/zero`` never ends, a FIFO blocks until someone writes to it, and opening some devices
  has side effects. It raises ``NotARegularFile`` (an ``InputError``: exit 3).
- ``GunzipStream`` inflates gzip data in bounded pieces. Limits that come from this module,
  never from the input, stop a decompression bomb early and with a clear problem:
  ``MAX_RATIO`` decompressed bytes per compressed byte (judged once ``RATIO_FREE_BYTES`` are out)
  and ``MAX_DECOMPRESSED_BYTES`` in all. Damaged data loses nothing that came before the damage:
  like ``gzip -dc``, every byte inflated before a corrupt one is handed over, then the problem
  (with the compressed byte offset) is raised once.
"""

from __future__ import annotations

import os
import stat
import zlib
from typing import BinaryIO

from cranewatch.errors import InputError, Location

__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "MAX_RATIO",
    "RATIO_FREE_BYTES",
    "DamagedCompression",
    "GunzipStream",
    "NotARegularFile",
    "open_regular_file",
]

GZIP_MAGIC = b"\x1f\x8b"
# Real captures compress 3-40:1 (the public ICS captures: at most 40:1, an HTTP upload of one
# repeated byte); deflate cannot exceed ~1032:1, which runs of zeros reach. 250:1 leaves six
# times the headroom of the most compressible real capture and stops a zero bomb at 16 MiB.
MAX_RATIO = 250
RATIO_FREE_BYTES = 16 * 1024 * 1024  # small inputs are never judged by their ratio
MAX_DECOMPRESSED_BYTES = 64 * 1024**3  # 64 GiB from one file: weeks of one crane's traffic
_IN_PIECE = 64 * 1024  # compressed bytes per inflate call: what a damaged piece re-reads
_OUT_PIECE = 4 * 1024 * 1024  # decompressed bytes per inflate call: bounds memory per call


class NotARegularFile(InputError):
    """An input that is a device, FIFO, socket or directory: refused before reading."""


class DamagedCompression(InputError):
    """Compressed data that is corrupt, cut short, or inflates past a limit (a bomb)."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def refuse_unless_regular(name: str, mode: int, what: str) -> None:
    """Raise ``NotARegularFile`` for anything but a regular file (``mode`` from ``os.stat``)."""
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"refused: {_kind(mode)}, not a {what} file; cranewatch reads only "
                              "regular files (a device or FIFO never ends or blocks)", Location(file=name))


def open_regular_file(name: str, what: str = "capture") -> BinaryIO:
    """Open ``name`` for binary reading if it is a regular file (symbolic links followed).

    ``os.stat`` first, so a device is never opened at all; the open itself does not block
    (O_NONBLOCK) and is checked again with ``fstat``, in case the path changed in between.
    ``OSError`` (no such file, no permission) is left to the caller.
    """
    refuse_unless_regular(name, os.stat(name).st_mode, what)
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        refuse_unless_regular(name, os.fstat(fd).st_mode, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class GunzipStream:
    """Streaming gzip inflation within limits, handing over every byte it could inflate.

    ``read(size)`` returns at most ``size`` bytes, ``b""`` at the end. A damaged or cut-short
    stream, or one past a limit, first returns what was inflated before the problem; the next
    read raises ``DamagedCompression`` once (located at the compressed byte), later reads give
    ``b""``. Concatenated gzip members are read one after the other, as gzip(1) does; bytes
    after the last member that do not start another are reported, not inflated.
    """

    def __init__(self, raw: BinaryIO, name: str) -> None:
        self._raw = raw
        self._name = name
        self._inflate = zlib.decompressobj(wbits=31)
        self._member_open = False  # bytes of the current member were given to _inflate
        self._pending = b""  # compressed bytes read but not yet consumed by _inflate
        self._ready = b""  # inflated bytes not yet handed out
        self._consumed = 0  # compressed bytes consumed: the offset of _pending in the file
        self._produced = 0  # decompressed bytes inflated so far
        self._failure: DamagedCompression | None = None
        self._done = False

    @property
    def compressed_offset(self) -> int:
        return self._consumed

    def read(self, size: int) -> bytes:
        parts = [self._ready]
        have = len(self._ready)
        while have < size and not self._done and self._failure is None:
            data = self._step(min(size - have, _OUT_PIECE))
            if data:
                parts.append(data)
                have += len(data)
        ready = parts[0] if len(parts) == 1 else b"".join(parts)
        if not ready and self._failure is not None:
            failure, self._failure = self._failure, None
            self._done = True
            raise failure
        self._ready = ready[size:]
        return ready[:size] if len(ready) > size else ready

    def close(self) -> None:
        self._raw.close()

    # ----------------------------------------------------------------- one inflate call

    def _fail(self, message: str, offset: int) -> None:
        self._failure = DamagedCompression(message, Location(file=self._name, offset=offset))

    def _more_input(self, need: int) -> bool:
        """Read compressed bytes until ``_pending`` holds ``need``; False at end of file."""
        while len(self._pending) < need:
            more = self._raw.read(_IN_PIECE)
            if not more:
                return False
            self._pending += more
        return True

    def _step(self, want: int) -> bytes:
        """One bounded inflate call: at most ``want`` bytes out (possibly none)."""
        if not self._member_open:
            if not self._more_input(2):
                if self._pending:
                    self._fail(f"{len(self._pending)} stray byte(s) after the gzip data ignored",
                               self._consumed)
                self._done = True
                return b""
            if not self._pending.startswith(GZIP_MAGIC):
                self._fail("data after the end of the gzip stream ignored (not another gzip member)",
                           self._consumed)
                return b""
            self._member_open = True
        elif not self._pending and not self._more_input(1):
            # the file ended; the last call may have held output back at its size limit
            data = self._inflate.decompress(b"", want)
            if data or self._inflate.eof:
                self._account(data, b"")
                return data
            self._fail("compressed file ended before the end of its gzip stream (cut short)",
                       self._consumed)
            return b""
        before = self._inflate.copy()
        try:
            data = self._inflate.decompress(self._pending, want)
        except zlib.error:
            return self._salvage(before)
        self._account(data, self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail)
        return data

    def _account(self, data: bytes, left: bytes) -> None:
        """Note what one call consumed and produced; a finished member opens the next one."""
        self._consumed += len(self._pending) - len(left)
        self._pending = left
        self._produced += len(data)
        if self._inflate.eof:
            self._inflate = zlib.decompressobj(wbits=31)
            self._member_open = False
        if self._produced > MAX_DECOMPRESSED_BYTES:
            self._fail(f"more than {MAX_DECOMPRESSED_BYTES:,} bytes inflated from one file: "
                       "stopped there (cranewatch's limit)", self._consumed)
        elif self._produced > RATIO_FREE_BYTES and self._produced > MAX_RATIO * self._consumed:
            self._fail(f"decompression bomb: {self._produced // 1024**2} MiB inflated from "
                       f"{self._consumed} compressed bytes, over the {MAX_RATIO}:1 that any real "
                       "capture or log stays under; stopped there", self._consumed)

    def _salvage(self, inflate: zlib._Decompress) -> bytes:
        """Re-inflate the damaged piece byte by byte from before it: keep all before the damage."""
        pieces: list[bytes] = []
        pending = self._pending
        at = 0
        reason = ""
        while at < len(pending) and not inflate.eof:
            try:
                pieces.append(inflate.decompress(pending[at : at + 1]))
            except zlib.error as exc:
                reason = str(exc).removeprefix("Error -3 while decompressing data: ")
                break
            at += 1
        data = b"".join(pieces)
        self._inflate = inflate
        self._account(data, pending[at:])
        self._fail(f"compressed data is damaged ({reason or 'corrupt'}); the "
                   f"{self._produced} bytes inflated before it were kept", self._consumed)
        return data
