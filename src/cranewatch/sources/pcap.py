"""Stream packets out of pcap, pcapng and gzip-compressed capture files, in NumPy batches.

The reader reads large blocks (8 MB), walks the record headers in one tight Python loop that
only notes where each record starts, then gathers timestamps and lengths for the whole batch with
NumPy. A batch keeps one ``bytes`` block and offsets into it, so nothing is copied per packet
and memory stays flat whatever the size of the capture. Formats are told apart by magic number,
never by file name. Problems that leave the packets before them usable (a truncated last record,
a corrupt block length) are collected in ``CaptureReader.warnings``; a file that is not a
capture at all raises ``CaptureError``. Oddities that lose nothing (Simple Packet Blocks,
which carry no timestamp, take the previous packet's) are ``CaptureReader.notes``.

Given a digest (``open_capture(path, digest=hashlib.sha256())``), the reader feeds it the
file's bytes as it reads them, so the pipeline's sha256 of an input costs no second read.

The file is written by whoever we watch: no length in it decides an allocation. A packet is at
most ``MAX_PACKET_BYTES`` and a pcapng block ``MAX_RECORD_BYTES``, whatever the snaplen says;
gzip is inflated within the limits of ``input_files``; timestamps past 2262 are clipped and
reported; devices and FIFOs are refused before a byte is read (``NotARegularFile``).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from cranewatch.errors import CaptureError, Location
from cranewatch.sources.input_files import DamagedCompression, GunzipStream, open_regular_file

__all__ = ["CaptureHeader", "CaptureReader", "PacketBatch", "gather_bytes", "open_capture"]

CHUNK_BYTES = 8 * 1024 * 1024
# The largest packet cranewatch accepts, whatever the file's snaplen says: tcpdump's largest
# snaplen and Wireshark's limit for Ethernet, raw IP, Linux cooked and loopback captures
# (WTAP_MAX_PACKET_SIZE_STANDARD); jumbo frames (9 KB) and GSO/TSO loopback packets (64 KiB
# and more) fit. A record claiming more is a corrupt or hostile length: reported, never read.
MAX_PACKET_BYTES = 256 * 1024
# The largest pcapng block of any kind (name resolution, decryption secrets): Wireshark's
# MAX_BLOCK_SIZE. Nothing is allocated from a length in the file beyond these two limits.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# The last instant int64 nanoseconds since 1970 can hold: 2262-04-11T23:47:16.854775807Z.
MAX_TS_NS = 2**63 - 1

_GZIP_MAGIC = b"\x1f\x8b"
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
# classic pcap magic as read little-endian -> (byte order, nanosecond timestamps)
_PCAP_MAGICS = {
    0xA1B2C3D4: ("<", False),
    0xD4C3B2A1: (">", False),
    0xA1B23C4D: ("<", True),
    0x4D3CB2A1: (">", True),
}
_BLOCK_EPB = 6
_BLOCK_SPB = 3
_BLOCK_PB = 2
_BLOCK_IDB = 1


@dataclass(slots=True)
class PacketBatch:
    """Up to ``max_packets`` packets from one file: one bytes block and per-packet columns."""

    source: str  # file path as given
    buf: bytes  # one bytes object holding this batch's packet data
    frame: np.ndarray  # int64, 1-based frame number within the file (as tshark numbers them)
    ts: np.ndarray  # float64 epoch seconds
    ts_ns: np.ndarray  # int64 epoch nanoseconds (exact)
    linktype: np.ndarray  # uint16 LINKTYPE_* per packet
    interface: np.ndarray  # uint16 pcapng interface id (0 for classic pcap)
    offset: np.ndarray  # int64 start of each packet's bytes in buf
    caplen: np.ndarray  # int32 captured length
    origlen: np.ndarray  # int32 original length

    def __len__(self) -> int:
        return len(self.frame)

    def packet(self, index: int) -> bytes:
        """The captured bytes of one packet (a copy; for tests and slow paths)."""
        start = int(self.offset[index])
        return self.buf[start : start + int(self.caplen[index])]


@dataclass(frozen=True, slots=True)
class _Interface:
    """A pcapng interface: its link type and how to turn timestamp ticks into nanoseconds."""

    linktype: int
    snaplen: int
    units: int  # ticks per second (if_tsresol)
    offset_s: int  # if_tsoffset, seconds added to every timestamp
    name: str = ""  # if_name, when the capture tool wrote it
    problem: str = ""  # an if_tsresol or if_tsoffset that cannot be right, replaced by a default


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    """What a file header (classic pcap) or an interface block (pcapng) says about how the
    packets were taken: link type, snap length, interface name ("" when not written)."""

    linktype: int
    snaplen: int
    interface: str = ""


def gather_bytes(buf: bytes, starts: np.ndarray, width: int) -> np.ndarray:
    """An (N, width) uint8 matrix: the ``width`` bytes at each start; bytes past the end read 0.

    A strided view with one ``V<width>`` element starting at every byte turns N fancy-indexed
    reads of ``width`` bytes each into one gather of N fixed-size elements, about six times
    faster than indexing the bytes one by one.
    """
    count = len(starts)
    size = len(buf)
    if count == 0 or size == 0:
        return np.zeros((count, width), dtype=np.uint8)
    if size >= width and int(starts.min()) >= 0 and int(starts.max()) <= size - width:
        records = np.ndarray(shape=(size - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
        return records[starts].view(np.uint8).reshape(count, width)
    inside = (starts >= 0) & (starts <= size - width)
    out = np.zeros((count, width), dtype=np.uint8)
    if size >= width and inside.any():
        records = np.ndarray(shape=(size - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
        out[inside] = records[starts[inside]].view(np.uint8).reshape(-1, width)
    raw = np.frombuffer(buf, dtype=np.uint8)
    for row in np.flatnonzero(~inside):  # only rows at the very end of the buffer
        first = int(starts[row])
        piece = raw[max(first, 0) : max(first + width, 0)]
        if 0 <= first < size:
            out[row, : len(piece)] = piece
    return out


def _gather_words(buf: bytes, starts: np.ndarray, words: int, order: str) -> np.ndarray:
    """Read ``words`` consecutive 32-bit words at each start offset: an (N, words) int64 array."""
    matrix = gather_bytes(buf, starts, words * 4)
    return matrix.view(np.dtype(order + "u4")).astype(np.int64)


def _first_oversized(caplen: np.ndarray) -> int | None:
    """The index of the first captured length over ``MAX_PACKET_BYTES``, or None."""
    if not len(caplen) or int(caplen.max()) <= MAX_PACKET_BYTES:
        return None
    return int(np.argmax(caplen > MAX_PACKET_BYTES))


def _ticks_to_ns(ticks: np.ndarray, units: int) -> np.ndarray:
    """Integer nanoseconds from timestamp ticks at ``units`` per second, truncating like tshark."""
    ticks = ticks.astype(np.uint64)
    if units == 1_000_000_000:
        return ticks.astype(np.int64)
    if 1_000_000_000 % units == 0:
        return (ticks * np.uint64(1_000_000_000 // units)).astype(np.int64)
    if units % 1_000_000_000 == 0:
        return (ticks // np.uint64(units // 1_000_000_000)).astype(np.int64)
    seconds = ticks // np.uint64(units)
    fraction = ticks % np.uint64(units)
    if units < 2**33:
        frac_ns = fraction * np.uint64(1_000_000_000) // np.uint64(units)
    else:  # rare resolutions finer than ~0.1 ns: exact Python integers
        frac_ns = np.array([int(f) * 1_000_000_000 // units for f in fraction], dtype=np.uint64)
    return (seconds * np.uint64(1_000_000_000) + frac_ns).astype(np.int64)


def _max_ticks(units: int, offset_s: int) -> int:
    """The largest tick count at ``units`` per second whose nanoseconds (+ offset) fit int64."""
    # floor(t * 1e9 / units) must fit int64 itself, and after the offset is added
    room = MAX_TS_NS - max(offset_s, 0) * 1_000_000_000
    return min(((room + 1) * units - 1) // 1_000_000_000, 2**64 - 1)


class _DigestFile:
    """A raw capture file that hands every byte it reads, once and in order, to a digest.

    The reader reads each byte of a plain capture once (it seeks back only over bytes it read
    already), so the file's sha256 costs no second read of the file; ``digest_rest`` covers
    what the reader did not get to (a capture it stopped reading early).
    """

    def __init__(self, raw: BinaryIO, digest: Any) -> None:
        self._raw = raw
        self._digest = digest
        self._at = 0  # file offset of the next read
        self._hashed = 0  # bytes [0, _hashed) went to the digest

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        end = self._at + len(data)
        if end > self._hashed >= self._at:
            self._digest.update(memoryview(data)[self._hashed - self._at :])
            self._hashed = end
        self._at = end
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._at = self._raw.seek(offset, whence)
        return self._at

    def seekable(self) -> bool:
        return self._raw.seekable()

    def close(self) -> None:
        self._raw.close()

    def digest_rest(self) -> None:
        """Give the digest the bytes of the file that were not read yet."""
        try:
            self.seek(self._hashed)
            while self.read(4 * 1024 * 1024):
                pass
        except OSError:
            pass  # an unreadable rest: the digest covers what could be read, as before


class CaptureReader:
    """Streams ``PacketBatch``es out of one capture file; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], stream: BinaryIO, head: bytes,
                 digest_file: _DigestFile | None = None) -> None:
        self.path = os.fspath(path)
        self.warnings: list[CaptureError] = []
        # Oddities that leave every packet readable (the capture is still whole), e.g. packets
        # that were given a timestamp they do not carry.
        self.notes: list[CaptureError] = []
        self._last_ts_ns: int | None = None  # of the last packet given out
        self._untimed_noted = False
        self._late_warned = False  # a pcapng timestamp past 2262 was clipped (said once)
        self.packets_read = 0
        self.format = "pcapng" if head[:4] == struct.pack("<I", _PCAPNG_SHB) else "pcap"
        self._stream = stream
        self._buf = head  # bytes read from the (uncompressed) file, from _buf_at on
        self._pos = 0  # how far into _buf the records are consumed
        self._buf_at = 0  # file offset of _buf[0]
        self._eof = False
        self._started = False
        self._seekable = isinstance(stream, io.BufferedReader | _DigestFile) and stream.seekable()
        self._digest_file = digest_file
        # The capture's headers in the order read (one for classic pcap, one per pcapng
        # interface block): ``segments`` tells separate capture sessions apart by them.
        self.headers: list[CaptureHeader] = []

    # ----------------------------------------------------------------- plumbing

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()

    def digest_rest(self) -> None:
        """Complete the digest given to ``open_capture`` with the bytes not read (if any)."""
        if self._digest_file is not None:
            self._digest_file.digest_rest()

    def __iter__(self) -> Iterator[PacketBatch]:
        return self.batches()

    @property
    def _left(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` unconsumed bytes available; False at end of file.

        A plain file is read again from the first unconsumed byte (no copy of the tail); a
        gzip stream cannot seek, so its unconsumed tail is joined to the next block. Either
        way earlier batches keep their own ``buf`` (bytes are immutable).
        """
        if self._left >= need:
            return True
        if self._seekable and not self._eof:
            # read the unconsumed tail again from the file: no copy of it, no join
            start = self._buf_at + self._pos
            self._buf = b""  # let the old block go before the new one is allocated
            try:
                self._stream.seek(start)
                self._buf = self._stream.read(max(CHUNK_BYTES, need))
            except OSError as exc:
                self._warn(f"read error ({exc.strerror or exc}); stopped reading", None, start)
                self._buf = b""
            self._buf_at, self._pos = start, 0
            if len(self._buf) < max(CHUNK_BYTES, need):
                self._eof = True
            return len(self._buf) >= need
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        while have < need and not self._eof:
            try:
                more = self._stream.read(max(CHUNK_BYTES, need - have))
            except DamagedCompression as exc:
                # a gzip file cut short, damaged or a bomb: what was inflated before is kept
                where = exc.location.offset if exc.location else None
                self._warn(f"{exc.message} (decompressed byte {self._buf_at + self._pos + have})",
                           self.packets_read + 1, where)
                more = b""
            except OSError as exc:
                self._warn(f"read error ({exc.strerror or exc}); stopped reading", None, None)
                more = b""
            if not more:
                self._eof = True
            else:
                parts.append(more)
                have += len(more)
        self._buf_at += self._pos
        self._buf = parts[1] if len(parts) == 2 and not parts[0] else b"".join(parts)
        self._pos = 0
        return have >= need

    def _warn(self, message: str, frame: int | None, offset: int | None) -> None:
        self.warnings.append(CaptureError(message, Location(file=self.path, frame=frame, offset=offset)))

    def _corrupt(self, message: str, offset: int | None = None) -> CaptureError:
        return CaptureError(message, Location(file=self.path, offset=offset))

    def _oversized(self, caplen: int, snaplen: int, offset: int) -> None:
        """A record claims more bytes than any packet: a corrupt length; reading stops there."""
        self._warn(
            f"corrupt record: captured length {caplen} is larger than any packet (cranewatch reads "
            f"at most {MAX_PACKET_BYTES} bytes a packet; the file's snaplen says {snaplen}); "
            "stopped reading",
            self.packets_read + 1,
            offset,
        )

    # ----------------------------------------------------------------- public

    def batches(self, max_packets: int = 65536) -> Iterator[PacketBatch]:
        """Yield batches of at most ``max_packets`` packets in file order (once per reader)."""
        if max_packets < 1:
            raise ValueError("max_packets must be at least 1")
        if self._started:
            raise ValueError(f"{self.path}: a capture reader streams once; open the file again")
        self._started = True
        if self.format == "pcap":
            yield from self._pcap_batches(max_packets)
        else:
            yield from self._pcapng_batches(max_packets)

    def _batch(
        self,
        buf: bytes,
        data_offset: np.ndarray,
        ts_ns: np.ndarray,
        caplen: np.ndarray,
        origlen: np.ndarray,
        linktype: np.ndarray,
        interface: np.ndarray,
    ) -> PacketBatch:
        count = len(data_offset)
        if count:
            self._last_ts_ns = int(ts_ns[-1])
        frame = np.arange(self.packets_read + 1, self.packets_read + 1 + count, dtype=np.int64)
        self.packets_read += count
        return PacketBatch(
            source=self.path,
            buf=buf,
            frame=frame,
            # whole seconds and fraction apart: ns since 1970 do not fit a float exactly
            ts=(ts_ns // 1_000_000_000).astype(np.float64) + (ts_ns % 1_000_000_000) / 1e9,
            ts_ns=ts_ns,
            linktype=linktype,
            interface=interface,
            offset=data_offset,
            caplen=caplen.astype(np.int32),
            origlen=np.minimum(origlen, 2**31 - 1).astype(np.int32),  # a 4 GB claim must not wrap
        )

    # ----------------------------------------------------------------- classic pcap

    def _pcap_batches(self, max_packets: int) -> Iterator[PacketBatch]:
        if not self._fill(24):
            raise self._corrupt(f"pcap file header cut short ({self._left} of 24 bytes)", 0)
        order, nanosecond = _PCAP_MAGICS[struct.unpack_from("<I", self._buf)[0]]
        _, _, _, _, snaplen, network = struct.unpack_from(order + "HHiIII", self._buf, 4)
        linktype_value = network & 0xFFFF  # upper bits carry FCS information
        self.headers.append(CaptureHeader(linktype_value, snaplen))
        self._pos = 24
        length_at = struct.Struct(order + "I").unpack_from
        frac_scale = 1 if nanosecond else 1000
        while True:
            buf = self._buf
            size = len(buf)
            starts: list[int] = []
            note = starts.append
            pos = self._pos
            # The hot loop: only note where each record starts, until a header runs past the
            # end of the block (struct.error). Bounds are checked once afterwards, not per record.
            try:
                while True:
                    note(pos)
                    pos += 16 + length_at(buf, pos + 8)[0]
            except struct.error:
                pos = starts.pop()  # its header is not whole
            if starts and pos > size:
                pos = starts.pop()  # its data is not whole
            self._pos = pos
            for first in range(0, len(starts), max_packets):
                offsets = np.array(starts[first : first + max_packets], dtype=np.int64)
                words = _gather_words(buf, offsets, 4, order)
                oversized = _first_oversized(words[:, 2])
                if oversized is not None:
                    offsets, words = offsets[:oversized], words[:oversized]
                ts_ns = words[:, 0] * 1_000_000_000 + words[:, 1] * frac_scale
                count = len(offsets)
                if oversized is not None:
                    if count:
                        yield self._batch(buf, offsets + 16, ts_ns, words[:, 2], words[:, 3],
                                          np.full(count, linktype_value, dtype=np.uint16),
                                          np.zeros(count, dtype=np.uint16))
                    at = starts[first + oversized]
                    self._oversized(length_at(buf, at + 8)[0], snaplen, self._buf_at + at)
                    return
                yield self._batch(
                    buf,
                    offsets + 16,
                    ts_ns,
                    words[:, 2],
                    words[:, 3],
                    np.full(count, linktype_value, dtype=np.uint16),
                    np.zeros(count, dtype=np.uint16),
                )
            # the next record is not whole in memory: read more, or report why we stop
            need = 16
            if self._left >= 16:
                caplen = length_at(buf, pos + 8)[0]
                if caplen > MAX_PACKET_BYTES:
                    self._oversized(caplen, snaplen, self._buf_at + pos)
                    return
                need = 16 + caplen
            if self._fill(need):
                continue
            if self._left:
                self._warn(
                    f"capture cut short: last record has {self._left} of {need} bytes; "
                    f"the {self.packets_read} packets before it were read",
                    self.packets_read + 1,
                    self._buf_at + self._pos,
                )
            return

    # ----------------------------------------------------------------- pcapng

    def _pcapng_batches(self, max_packets: int) -> Iterator[PacketBatch]:
        order = "<"
        interfaces: list[_Interface] = []
        section_seen = False
        while True:
            buf = self._buf
            size = len(buf)
            head_at = struct.Struct(order + "II").unpack_from
            starts: list[int] = []
            note = starts.append
            odd: dict[int, tuple[int, int, int, int, int]] = {}  # SPB / obsolete PB fields
            first = pos = self._pos
            stop: str | None = None  # why the walk ended early, when it is not "need more bytes"
            while True:
                if section_seen:
                    # The hot loop: a run of Enhanced Packet Blocks, noting where each starts.
                    # Lengths are checked for alignment and overrun afterwards, with NumPy.
                    try:
                        while True:
                            block_type, length = head_at(buf, pos)
                            if block_type != _BLOCK_EPB or length < 32:
                                break
                            note(pos)
                            pos += length
                    except struct.error:
                        pass
                    if pos > size:  # the last EPB is not whole in this block
                        pos = starts.pop()
                        break
                if pos + 12 > size:
                    break
                # one block of any other kind (or a malformed EPB), the slow way
                block_type, length = head_at(buf, pos)
                if block_type == _PCAPNG_SHB:
                    if section_seen and pos != first:
                        stop = "section"  # flush this section's packets first
                        break
                    bom = struct.unpack_from("<I", buf, pos + 8)[0]
                    if bom == _PCAPNG_BOM:
                        order = "<"
                    elif bom == 0x4D3C2B1A:
                        order = ">"
                    else:
                        stop = f"corrupt section header: byte-order magic 0x{bom:08x}"
                        break
                    head_at = struct.Struct(order + "II").unpack_from
                    length = head_at(buf, pos)[1]
                    if length < 28 or length % 4 or length > MAX_RECORD_BYTES:
                        stop = f"corrupt section header length {length}"
                        break
                    if pos + length > size:
                        break
                    interfaces = []
                    section_seen = True
                    pos += length
                    continue
                if not section_seen:
                    stop = "first block is not a section header"
                    break
                if length < 12 or length % 4 or length > MAX_RECORD_BYTES:
                    stop = f"corrupt block length {length} (block type 0x{block_type:x})"
                    break
                end = pos + length
                if end > size:
                    break
                if block_type == _BLOCK_EPB:
                    stop = f"corrupt enhanced packet block length {length}"
                    break
                if block_type == _BLOCK_IDB:
                    if length < 20:
                        stop = f"corrupt interface description block length {length}"
                        break
                    interfaces.append(_parse_idb(buf, pos, length, order))
                    described = interfaces[-1]
                    self.headers.append(CaptureHeader(described.linktype, described.snaplen, described.name))
                    if described.problem:  # timestamps may be off; every packet is read
                        self._warn(f"interface {len(interfaces) - 1}: {described.problem}",
                                   self.packets_read + len(starts) + 1, self._buf_at + pos)
                elif block_type == _BLOCK_SPB:
                    if not interfaces:
                        stop = "simple packet block before any interface description"
                        break
                    if length < 16:
                        stop = f"corrupt simple packet block length {length}"
                        break
                    origlen = struct.unpack_from(order + "I", buf, pos + 8)[0]
                    caplen = min(origlen, length - 16)
                    if interfaces[0].snaplen:
                        caplen = min(caplen, interfaces[0].snaplen)
                    odd[len(starts)] = (0, -1, caplen, origlen, pos + 12)
                    note(pos)
                elif block_type == _BLOCK_PB:
                    if length < 32:
                        stop = f"corrupt packet block length {length}"
                        break
                    iface, _, high, low, caplen, origlen = struct.unpack_from(order + "HHIIII", buf, pos + 8)
                    odd[len(starts)] = (iface, (high << 32) | low, caplen, origlen, pos + 28)
                    note(pos)
                pos = end
            self._pos = pos
            if starts:
                columns, bad = self._pcapng_columns(buf, starts, odd, interfaces, order)
                yield from self._slices(buf, columns, max_packets)
                if bad is not None:
                    self._warn(bad[0] + "; stopped reading", self.packets_read + 1, self._buf_at + bad[1])
                    return
            if stop == "section":
                continue
            if stop is not None:
                self._warn(stop + "; stopped reading", self.packets_read + 1, self._buf_at + pos)
                return
            need = 12
            if self._left >= 12:
                block_type, length = struct.unpack_from(order + "II", buf, pos)
                if block_type == _PCAPNG_SHB:
                    bom = struct.unpack_from("<I", buf, pos + 8)[0]
                    length = struct.unpack_from(("<" if bom == _PCAPNG_BOM else ">") + "I", buf, pos + 4)[0]
                if length > MAX_RECORD_BYTES:
                    self._warn(
                        f"corrupt block length {length} (block type 0x{block_type:x}); stopped reading",
                        self.packets_read + 1,
                        self._buf_at + pos,
                    )
                    return
                need = max(12, length)
            if self._fill(need):
                continue
            if self._left:
                self._warn(
                    f"capture cut short: last block has {self._left} of {need} bytes; "
                    f"the {self.packets_read} packets before it were read",
                    self.packets_read + 1,
                    self._buf_at + self._pos,
                )
            return

    def _slices(self, buf: bytes, columns: tuple[np.ndarray, ...], max_packets: int) -> Iterator[PacketBatch]:
        """Cut the columns of one read block into batches of at most ``max_packets``."""
        for first in range(0, len(columns[0]), max_packets):
            yield self._batch(buf, *(c[first : first + max_packets] for c in columns))

    def _pcapng_columns(
        self,
        buf: bytes,
        starts: list[int],
        odd: dict[int, tuple[int, int, int, int, int]],
        interfaces: list[_Interface],
        order: str,
    ) -> tuple[tuple[np.ndarray, ...], tuple[str, int] | None]:
        """Packet columns of the blocks at ``starts``, cut at the first bad block.

        Returns (data offset, ts_ns, caplen, origlen, linktype, interface) and, when a block
        is bad, why and where.
        """
        offsets = np.array(starts, dtype=np.int64)
        words = _gather_words(buf, offsets, 7, order)
        lengths = words[:, 1]
        iface = words[:, 2]
        ticks = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4].astype(np.uint64)
        caplen = words[:, 5]
        origlen = words[:, 6]
        data_offset = offsets + 28
        has_ts = np.ones(len(offsets), dtype=bool)
        for index, (o_iface, o_ticks, o_caplen, o_origlen, o_data) in odd.items():
            iface[index] = o_iface
            ticks[index] = max(o_ticks, 0)
            has_ts[index] = o_ticks >= 0
            caplen[index] = o_caplen
            origlen[index] = o_origlen
            data_offset[index] = o_data
        checks = (
            (lengths % 4 != 0, "corrupt block length {length} (block type 0x6)"),
            (iface >= len(interfaces), "packet block names interface {iface} but only {known} are described"),
            (caplen > MAX_PACKET_BYTES, "corrupt packet block: captured length {caplen} is larger than any "
             f"packet (cranewatch reads at most {MAX_PACKET_BYTES} bytes a packet)"),
            (caplen > lengths - (data_offset - offsets) - 4, "packet block captured length {caplen} overruns its block"),
        )
        keep = len(offsets)
        bad: tuple[str, int] | None = None
        for failed, message in checks:
            where = np.flatnonzero(failed[:keep])
            if len(where):
                keep = int(where[0])
                text = message.format(
                    length=int(lengths[keep]), iface=int(iface[keep]), known=len(interfaces), caplen=int(caplen[keep])
                )
                bad = (text, int(offsets[keep]))
        sl = slice(0, keep)
        iface = iface[sl]
        ticks = ticks[sl]
        ts_ns = np.zeros(keep, dtype=np.int64)
        table = np.array([i.linktype for i in interfaces] or [0], dtype=np.uint16)
        # The packets of each interface, interfaces in number order (not np.unique: it imports
        # numpy.ma); one pass whatever the number of interfaces (a merged capture has hundreds).
        by_interface = np.argsort(iface, kind="stable")
        numbers = iface[by_interface]
        cuts = (np.flatnonzero(numbers[1:] != numbers[:-1]) + 1).tolist()
        for start, end in zip([0, *cuts], [*cuts, keep], strict=True):
            if start == end:
                continue
            rows = by_interface[start:end]
            info = interfaces[int(numbers[start])]
            ticks_here = self._clip_late_ticks(ticks[rows], info, rows, offsets)
            ts_ns[rows] = _ticks_to_ns(ticks_here, info.units) + info.offset_s * 1_000_000_000
        untimed = ~has_ts[sl]
        if untimed.any():
            ts_ns = self._borrow_timestamps(ts_ns, untimed)
        columns = (data_offset[sl], ts_ns, caplen[sl], origlen[sl], table[iface], iface.astype(np.uint16))
        return columns, bad


    def _clip_late_ticks(self, ticks: np.ndarray, info: _Interface, rows: np.ndarray,
                         offsets: np.ndarray) -> np.ndarray:
        """Timestamps past 2262-04-11 do not fit int64 nanoseconds: clip them, and say so once.

        ``rows`` are the packets' indexes among ``offsets`` (for the frame and byte reported).
        """
        top = _max_ticks(info.units, info.offset_s)
        late = ticks > np.uint64(top)
        if not late.any():
            return ticks
        if not self._late_warned:
            self._late_warned = True
            row = int(rows[int(np.argmax(late))])
            self._warn(
                f"timestamp of {int(ticks[int(np.argmax(late))])} ticks at {info.units}/s is past "
                "2262-04-11, the last instant nanoseconds since 1970 can hold: clipped to "
                "2262-04-11T23:47:16Z (this and any later such packet)",
                self.packets_read + 1 + row,
                self._buf_at + int(offsets[row]),
            )
        return np.minimum(ticks, np.uint64(top))

    def _borrow_timestamps(self, ts_ns: np.ndarray, untimed: np.ndarray) -> np.ndarray:
        """Simple Packet Blocks carry no timestamp: give each the previous packet's.

        Packets before any timestamped one take the first timestamp that follows them (0 if
        none does). Said once per capture, as a note: no packet is lost or misread.
        """
        rows = np.arange(len(ts_ns))
        timed = np.flatnonzero(~untimed)
        if not self._untimed_noted:
            self._untimed_noted = True
            first = self.packets_read + 1 + int(np.argmax(untimed))
            self.notes.append(CaptureError(
                "simple packet blocks carry no timestamp: each was given the timestamp of the "
                "packet before it", Location(file=self.path, frame=first)))
        previous = np.maximum.accumulate(np.where(untimed, -1, rows))
        if self._last_ts_ns is not None:
            lead = self._last_ts_ns
        else:
            lead = int(ts_ns[timed[0]]) if len(timed) else 0
        return np.where(previous >= 0, ts_ns[np.maximum(previous, 0)], lead)


def _parse_idb(buf: bytes, pos: int, length: int, order: str) -> _Interface:
    """Link type, snaplen and the timestamp options (if_tsresol 9, if_tsoffset 14) of an IDB."""
    linktype, _, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    units = 1_000_000
    offset_s = 0
    name = ""
    problem = ""
    at = pos + 16
    end = pos + length - 4
    while at + 4 <= end:
        code, size = struct.unpack_from(order + "HH", buf, at)
        value_at = at + 4
        if code == 0 or value_at + size > end:
            break
        if code == 2:  # if_name
            name = buf[value_at : value_at + size].split(b"\0", 1)[0].decode("utf-8", "replace")
        elif code == 9 and size >= 1:
            resol = buf[value_at]
            exponent = resol & 0x7F
            # finer than 2^-63 or 10^-19 s: more ticks than a 64-bit count can carry in a second
            if (exponent <= 63) if resol & 0x80 else (exponent <= 19):
                units = 2**exponent if resol & 0x80 else 10**exponent
            else:
                problem = f"if_tsresol 0x{resol:02x} is not a usable resolution: microseconds assumed"
        elif code == 14 and size >= 8:
            offset_s = struct.unpack_from(order + "q", buf, value_at)[0]
            # beyond ±2^32 s (136 years) it is a corrupt option, and it would overflow int64 ns
            if abs(offset_s) >= 2**32:
                problem = f"if_tsoffset {offset_s} s is over 136 years: ignored"
                offset_s = 0
        at = value_at + size + (-size % 4)
    return _Interface(linktype=linktype, snaplen=snaplen, units=max(units, 1), offset_s=offset_s,
                      name=name, problem=problem)


def open_capture(path: str | os.PathLike[str], digest: Any = None) -> CaptureReader:
    """Open a pcap, pcapng or gzip-compressed capture, telling them apart by magic number.

    With ``digest`` (e.g. ``hashlib.sha256()``), the file's bytes as stored (compressed, for
    gzip) go to ``digest.update`` as they are read; call ``digest_rest()`` on the reader when
    done with it to add the bytes it did not read.
    """
    name = os.fspath(path)
    try:
        raw: BinaryIO = open_regular_file(name)  # devices and FIFOs: NotARegularFile (exit 3)
    except OSError as exc:
        raise CaptureError(f"cannot open capture: {exc.strerror}", Location(file=name)) from None
    digest_file = None
    if digest is not None:
        digest_file = _DigestFile(raw, digest)
        raw = digest_file  # type: ignore[assignment]
    stream: BinaryIO = raw
    try:
        head = raw.read(4)
        if head[:2] == _GZIP_MAGIC:
            raw.seek(0)
            stream = GunzipStream(raw, name)  # type: ignore[assignment]
            try:
                head = stream.read(4)
            except DamagedCompression as exc:
                raise CaptureError(f"gzip data cannot be decompressed ({exc.message})",
                                   exc.location) from None
        if len(head) < 4:
            what = "empty file" if not head else f"file too short ({len(head)} bytes)"
            raise CaptureError(f"not a packet capture: {what}", Location(file=name, offset=0))
        magic = struct.unpack("<I", head)[0]
        if magic != _PCAPNG_SHB and magic not in _PCAP_MAGICS:
            raise CaptureError(
                f"not a packet capture: unknown magic 0x{head.hex()} (expected pcap, pcapng or gzip)",
                Location(file=name, offset=0),
            )
    except BaseException:
        stream.close()
        raw.close()
        raise
    return CaptureReader(name, stream, head, digest_file)
