"""Windows Overlay Filter (WOF) compressed files: ``compact /exe``, CompactOS, Windows Update.

Such a file's unnamed data stream is sparse (it reads as zeros); the content is in the alternate
data stream ``WofCompressedData`` and a reparse point (tag ``IO_REPARSE_TAG_WOF``) names the
algorithm. The stream is a chunk table (one offset per chunk after the first, 4 bytes each, or 8
when the file is 4 GiB or more, counted from the end of the table) followed by the chunks; each
chunk holds ``chunk_size`` bytes of the file (the last one fewer) compressed on its own, or stored
as is when compressing did not make it smaller.

Two decoders give the same bytes. The built-in one is written from the formats' documentation:
XPRESS Huffman from [MS-XCA] section 2.2 and LZX as Windows uses it for WIM and WOF (32 KiB
window, no header, x86 call translation always on with a file size of 12,000,000, recent offsets
reset per chunk); no licence-compatible maintained Python implementation was found (dissect.* is
AGPL). It runs at 7-9 MB per CPU second, too slow for a fully compressed system (CompactOS
compresses several GB). So when the system's wimlib is there (Debian ``libwim15``: the library
is LGPL-3.0-or-later, loaded at run time through ctypes, neither shipped nor changed by us), its
public compression API (``wimlib_decompress``: the same formats, made for WIM resources, whose
chunk layout WOF reuses) decodes each chunk at some 100-300 MB/s. ``CRANEWATCH_LIBWIM`` names
another library file, or is empty to use the built-in decoder only. A chunk wimlib refuses is
given to the built-in decoder, which either reads it or says where it is damaged, so the errors
are the same located ones on both paths. Every read is bounded: a corrupt stream raises
``WofError`` naming the chunk and its offset.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import struct
import threading
from collections.abc import Callable

TAG_WOF = 0x80000017
_PROVIDER_FILE = 2
ALGORITHMS = {0: ("XPRESS4K", 4096), 1: ("LZX", 32768), 2: ("XPRESS8K", 8192), 3: ("XPRESS16K", 16384)}
STREAM = "WofCompressedData"


class WofError(ValueError):
    """The reparse data or the compressed stream cannot be decoded (the message says where)."""


def algorithm(reparse: bytes) -> int:
    """The algorithm number of a WOF reparse buffer (tag, length, reserved, WOF_EXTERNAL_INFO,
    FILE_PROVIDER_EXTERNAL_INFO_V1)."""
    if len(reparse) < 24:
        raise WofError(f"WOF reparse data is {len(reparse)} bytes, not 24")
    tag, _length, _reserved, _version, provider, _file_version, algo = struct.unpack_from("<IHHIIII", reparse)
    if tag != TAG_WOF:
        raise WofError(f"reparse tag 0x{tag:08x} is not WOF")
    if provider != _PROVIDER_FILE:
        raise WofError(f"WOF provider {provider} is not the file provider (2): the data is in a WIM, not this volume")
    if algo not in ALGORITHMS:
        raise WofError(f"unknown WOF compression algorithm {algo}")
    return int(algo)


# --- canonical Huffman ---------------------------------------------------------------------------


def _table(lengths: list[int], bits: int, what: str) -> list[int]:
    """A ``2**bits`` lookup table of (symbol << 5 | length) for MSB-first canonical codes; -1
    where no code lands (an incomplete code); ``WofError`` for an over-subscribed one."""
    size = 1 << bits
    table = [-1] * size
    by_length: list[list[int]] = [[] for _ in range(bits + 1)]
    for symbol, n in enumerate(lengths):
        if n:
            by_length[n].append(symbol)
    pos = 0
    for length in range(1, bits + 1):
        span = 1 << (bits - length)
        if pos + span * len(by_length[length]) > size:
            raise WofError(f"{what}: over-subscribed Huffman code")
        for symbol in by_length[length]:
            table[pos : pos + span] = [symbol << 5 | length] * span
            pos += span
    return table


# --- XPRESS Huffman ([MS-XCA] 2.2.4) --------------------------------------------------------------


def xpress_huffman(data: bytes, size: int) -> bytes:
    """``size`` bytes decompressed from one XPRESS Huffman stream."""
    out = bytearray()
    pos = 0
    while len(out) < size:
        if pos + 256 > len(data):
            raise WofError(f"XPRESS: Huffman table truncated at byte {pos}")
        lengths: list[int] = []
        for b in data[pos : pos + 256]:
            lengths += (b & 15, b >> 4)
        table = _table(lengths, 15, "XPRESS")
        pos += 256
        if pos + 4 > len(data):
            raise WofError(f"XPRESS: bitstream truncated at byte {pos}")
        padded = data + bytes(8)  # a little run-out past the end, as an encoder may leave its last bits unflushed
        bits = (padded[pos] | padded[pos + 1] << 8) << 16 | padded[pos + 2] | padded[pos + 3] << 8
        pos += 4
        extra = 16
        have = len(out)
        end = min(size, have + 65536)
        limit = len(padded)
        append = out.append
        while have < end:
            entry = table[bits >> 17]
            if entry < 0:
                raise WofError(f"XPRESS: invalid Huffman code at byte {pos}")
            length = entry & 31
            bits = (bits << length) & 0xFFFFFFFF
            extra -= length
            if extra < 0:
                if pos + 2 > limit:
                    raise WofError("XPRESS: read beyond the end of the stream")
                bits |= (padded[pos] | padded[pos + 1] << 8) << -extra
                extra += 16
                pos += 2
            symbol = entry >> 5
            if symbol < 256:
                append(symbol)
                have += 1
                continue
            symbol -= 256
            match, offset_bits = symbol & 15, symbol >> 4
            if match == 15:
                if pos >= len(data):
                    raise WofError(f"XPRESS: match length truncated at byte {pos}")
                match = data[pos]
                pos += 1
                if match == 255:
                    if pos + 2 > len(data):
                        raise WofError(f"XPRESS: match length truncated at byte {pos}")
                    match = struct.unpack_from("<H", data, pos)[0]
                    pos += 2
                    if match == 0:
                        if pos + 4 > len(data):
                            raise WofError(f"XPRESS: match length truncated at byte {pos}")
                        match = struct.unpack_from("<I", data, pos)[0]
                        pos += 4
                    if match < 15:
                        raise WofError(f"XPRESS: bad match length at byte {pos}")
                    match -= 15
                match += 15
            match += 3
            offset = (1 << offset_bits) + (bits >> (32 - offset_bits) if offset_bits else 0)
            bits = (bits << offset_bits) & 0xFFFFFFFF
            extra -= offset_bits
            if extra < 0:
                if pos + 2 > limit:
                    raise WofError("XPRESS: read beyond the end of the stream")
                bits |= (padded[pos] | padded[pos + 1] << 8) << -extra
                extra += 16
                pos += 2
            if offset > have:
                raise WofError(f"XPRESS: match offset {offset} before the start of the data (near byte {pos})")
            if match > end - have:
                match = end - have
            if offset >= match:
                out += out[have - offset : have - offset + match]
            else:
                _copy_match(out, offset, match, end, "XPRESS", pos)
            have += match
    return bytes(out[:size])


def _copy_match(out: bytearray, offset: int, length: int, end: int, what: str, where: int) -> None:
    if offset > len(out) or offset <= 0:
        raise WofError(f"{what}: match offset {offset} before the start of the data (near byte {where})")
    length = min(length, end - len(out))
    start = len(out) - offset
    if offset >= length:
        out += out[start : start + length]
    else:  # an overlapping copy repeats the last ``offset`` bytes
        pattern = out[start:]
        out += (pattern * (length // offset + 1))[:length]


# --- LZX (the WIM/WOF variant) -------------------------------------------------------------------

_LZX_SLOTS = 30  # 32 KiB window
_LZX_MAIN = 256 + 8 * _LZX_SLOTS
_LZX_LENGTHS = 249
_LZX_EXTRA = [0, 0, 0, 0] + [n for n in range(1, 17) for _ in (0, 1)]
_LZX_BASE = [0]
for _n in _LZX_EXTRA[:-1]:
    _LZX_BASE.append(_LZX_BASE[-1] + (1 << _n))


class _Bits:
    """LZX's bitstream: 16-bit little-endian words, each read from its top bit."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.buf, self.left = data, 0, 0, 0

    def ensure(self, n: int) -> None:
        while self.left < n:
            if self.pos + 2 <= len(self.data):
                word = self.data[self.pos] | self.data[self.pos + 1] << 8
            elif self.pos < len(self.data) + 8:
                word = 0  # a little run-out past the end, as the encoder may leave its last bits unflushed
            else:
                raise WofError("LZX: read beyond the end of the chunk")
            self.pos += 2
            self.buf = self.buf << 16 | word
            self.left += 16

    def read(self, n: int) -> int:
        if n == 0:
            return 0
        self.ensure(n)
        self.left -= n
        value = self.buf >> self.left
        self.buf &= (1 << self.left) - 1
        return value

    def symbol(self, table: list[int], bits: int) -> int:
        self.ensure(bits)
        entry = table[self.buf >> (self.left - bits) & ((1 << bits) - 1)]
        if entry < 0:
            raise WofError(f"LZX: invalid Huffman code near byte {self.pos}")
        self.left -= entry & 31
        self.buf &= (1 << self.left) - 1
        return entry >> 5

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WofError(f"LZX: uncompressed block runs past the end of the chunk (byte {self.pos})")
        block = self.data[self.pos : self.pos + n]
        self.pos += n
        return block


def _lzx_lengths(bits: _Bits, lengths: list[int], start: int, stop: int) -> None:
    pre = _table([bits.read(4) for _ in range(20)], 15, "LZX pretree")
    i = start
    while i < stop:
        sym = bits.symbol(pre, 15)
        if sym < 17:
            lengths[i] = (lengths[i] - sym) % 17
            i += 1
            continue
        if sym == 17:
            run, value = 4 + bits.read(4), 0
        elif sym == 18:
            run, value = 20 + bits.read(5), 0
        else:
            run = 4 + bits.read(1)
            sym2 = bits.symbol(pre, 15)
            if sym2 > 16:
                raise WofError("LZX: bad pretree symbol in a run")
            value = (lengths[i] - sym2) % 17
        if i + run > stop:
            raise WofError("LZX: code length run past the end of the code")
        lengths[i : i + run] = [value] * run
        i += run


def lzx(data: bytes, size: int) -> bytes:
    """``size`` bytes decompressed from one LZX chunk (at most 32 KiB)."""
    bits = _Bits(data)
    out = bytearray()
    main = [0] * _LZX_MAIN
    lens = [0] * _LZX_LENGTHS
    r0 = r1 = r2 = 1
    while len(out) < size:
        kind = bits.read(3)
        block = 32768 if bits.read(1) else bits.read(16)
        if kind not in (1, 2, 3) or block == 0:
            raise WofError(f"LZX: bad block header (type {kind}, size {block}) at output byte {len(out)}")
        end = min(size, len(out) + block)
        if kind == 3:
            bits.ensure(1)  # then pad to the next 16-bit word: 1 to 16 bits
            while bits.left > 16:  # a whole word read ahead is not padding: give it back
                bits.pos -= 2
                bits.left -= 16
            bits.buf, bits.left = 0, 0
            r0, r1, r2 = struct.unpack("<III", bits.raw(12))
            out += bits.raw(end - len(out))
            if block & 1:
                bits.pos += 1
            continue
        aligned = _table([bits.read(3) for _ in range(8)], 7, "LZX aligned") if kind == 2 else None
        _lzx_lengths(bits, main, 0, 256)
        _lzx_lengths(bits, main, 256, _LZX_MAIN)
        _lzx_lengths(bits, lens, 0, _LZX_LENGTHS)
        main_table = _table(main, 16, "LZX main")
        length_table = _table(lens, 16, "LZX length") if any(lens) else None
        source, available, append = bits.data, len(bits.data), out.append
        have = len(out)
        while have < end:
            buf, left = bits.buf, bits.left  # bits.symbol(main_table, 16), inlined: the hot path
            if left < 16:
                pos = bits.pos
                if pos + 2 <= available:
                    buf = buf << 16 | source[pos] | source[pos + 1] << 8
                elif pos < available + 8:
                    buf <<= 16
                else:
                    raise WofError("LZX: read beyond the end of the chunk")
                bits.pos = pos + 2
                left += 16
            entry = main_table[buf >> (left - 16) & 0xFFFF]
            if entry < 0:
                raise WofError(f"LZX: invalid Huffman code near byte {bits.pos}")
            left -= entry & 31
            bits.buf, bits.left = buf & ((1 << left) - 1), left
            sym = entry >> 5
            if sym < 256:
                append(sym)
                have += 1
                continue
            sym -= 256
            length, slot = sym & 7, sym >> 3
            if length == 7:
                if length_table is None:
                    raise WofError("LZX: a long match with an empty length code")
                length += bits.symbol(length_table, 16)
            length += 2
            if slot == 0:
                offset = r0
            elif slot == 1:
                offset, r1 = r1, r0
                r0 = offset
            elif slot == 2:
                offset, r2 = r2, r0
                r0 = offset
            else:
                extra = _LZX_EXTRA[slot]
                if aligned is not None and extra >= 3:
                    value = bits.read(extra - 3) << 3
                    value += bits.symbol(aligned, 7)
                else:
                    value = bits.read(extra)
                offset = _LZX_BASE[slot] + value - 2
                r2, r1, r0 = r1, r0, offset
            if length > end - have:
                length = end - have
            if 0 < offset <= have and offset >= length:
                out += out[have - offset : have - offset + length]
            else:
                _copy_match(out, offset, length, end, "LZX", bits.pos)  # overlapping, or an error to report
            have += length
    _undo_e8(out)
    return bytes(out[:size])


def _undo_e8(out: bytearray) -> None:
    """Undo the x86 CALL translation: absolute targets back to relative ones."""
    if len(out) <= 10:
        return
    i = out.find(0xE8, 0, len(out) - 10)
    while i >= 0:
        absolute = struct.unpack_from("<i", out, i + 1)[0]
        if -i <= absolute < 12_000_000:
            relative = absolute - i if absolute >= 0 else absolute + 12_000_000
            struct.pack_into("<i", out, i + 1, relative)
        i = out.find(0xE8, i + 5, len(out) - 10)


_DECODERS: dict[int, Callable[[bytes, int], bytes]] = {0: xpress_huffman, 1: lzx, 2: xpress_huffman, 3: xpress_huffman}


# --- wimlib's decompressors (optional) -----------------------------------------------------------

LIBWIM_ENV = "CRANEWATCH_LIBWIM"
_LIBWIM_DEFAULT = "libwim.so.15"
_WIMLIB_TYPES = {0: 1, 1: 2, 2: 1, 3: 1}  # WIMLIB_COMPRESSION_TYPE_XPRESS = 1, _LZX = 2


class Wimlib:
    """wimlib's compression API: one decompressor per algorithm and thread (they keep tables)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.wimlib_create_decompressor.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        lib.wimlib_create_decompressor.restype = ctypes.c_int
        lib.wimlib_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.c_void_p]
        lib.wimlib_decompress.restype = ctypes.c_int
        self.lib, self.local = lib, threading.local()

    def _decompressor(self, algo: int) -> ctypes.c_void_p:
        made: dict[int, ctypes.c_void_p] = self.local.__dict__.setdefault("made", {})
        if algo not in made:
            handle = ctypes.c_void_p()
            # the chunk size is the largest block: for LZX it sets the 32 KiB window (30 offset slots)
            code = self.lib.wimlib_create_decompressor(_WIMLIB_TYPES[algo], ALGORITHMS[algo][1], ctypes.byref(handle))
            if code or not handle:
                raise WofError(f"wimlib cannot make a {ALGORITHMS[algo][0]} decompressor (error {code})")
            made[algo] = handle
        return made[algo]

    def decode(self, data: bytes, size: int, algo: int) -> bytes | None:
        """``size`` bytes from one chunk, or None when wimlib says the chunk is damaged."""
        out = ctypes.create_string_buffer(size)
        if self.lib.wimlib_decompress(data, len(data), out, size, self._decompressor(algo)):
            return None
        return out.raw


@functools.cache
def wimlib() -> tuple[Wimlib | None, str]:
    """wimlib's decoder when the library loads, else None and why."""
    name = os.environ.get(LIBWIM_ENV, _LIBWIM_DEFAULT)
    if not name:
        return None, f"{LIBWIM_ENV} is empty"
    try:
        return Wimlib(ctypes.CDLL(name)), name
    except (OSError, AttributeError) as exc:
        return None, f"{name} cannot be loaded ({exc})"


def slow_note() -> str | None:
    """A line for the user when WOF files are decoded by the slow built-in decoder by default."""
    fast, why = wimlib()
    if fast is not None or not os.environ.get(LIBWIM_ENV, _LIBWIM_DEFAULT):
        return None
    return (f"WOF-compressed files are decoded by the built-in decoder (7-9 MB/s): {why}; install Debian's "
            "libwim15 (or set CRANEWATCH_LIBWIM to wimlib's library) for some 100-300 MB/s")


class WofStream(io.RawIOBase):
    """The file's content, decompressed chunk by chunk from its ``WofCompressedData`` stream
    (``read_at(offset, n)`` reads that stream of ``packed`` bytes). ``decoder`` is "wimlib",
    "python" or None (wimlib when it loads)."""

    def __init__(self, read_at: Callable[[int, int], bytes], packed: int, size: int, algo: int,
                 decoder: str | None = None) -> None:
        self.read_at, self.packed, self.size, self.algo = read_at, packed, size, algo
        self.fast = wimlib()[0] if decoder != "python" else None
        if decoder == "wimlib" and self.fast is None:
            raise WofError(f"wimlib is not available: {wimlib()[1]}")
        self.chunk = ALGORITHMS[algo][1]
        self.count = -(-size // self.chunk)
        width = 8 if size > 0xFFFFFFFF else 4
        table_size = (self.count - 1) * width if self.count else 0
        if table_size > packed:
            raise WofError(f"{STREAM}: chunk table of {self.count} chunks ({table_size} bytes) is longer than "
                           f"the {packed}-byte stream")
        raw = read_at(0, table_size) if table_size else b""
        if len(raw) != table_size:
            raise WofError(f"{STREAM}: chunk table of {table_size} bytes cannot be read whole")
        offsets = [0, *struct.unpack(f"<{self.count - 1}{'Q' if width == 8 else 'I'}", raw)] if self.count else []
        self.starts = [table_size + o for o in offsets] + [packed]
        for k in range(self.count):
            if not self.starts[k] <= self.starts[k + 1] or self.starts[k + 1] > packed:
                raise WofError(f"{STREAM}: chunk table entry {k} points outside the stream "
                               f"(offset {self.starts[k]} .. {self.starts[k + 1]} of {packed} bytes)")
        self.next, self.pending = 0, b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self.pending and self.next < self.count:
            self.pending = self._chunk(self.next)
            self.next += 1
        if n < 0:
            n = len(self.pending)
        block, self.pending = self.pending[:n], self.pending[n:]
        return block

    def _chunk(self, k: int) -> bytes:
        want = min(self.chunk, self.size - k * self.chunk)
        start, stop = self.starts[k], self.starts[k + 1]
        if stop - start > want:  # checked before reading: a damaged table must not make us read gigabytes
            raise WofError(f"{STREAM}: chunk {k} at byte {start} is {stop - start} bytes, more than its {want}")
        data = self.read_at(start, stop - start)
        if len(data) != stop - start:
            raise WofError(f"{STREAM}: chunk {k} at byte {start} cannot be read whole")
        if len(data) == want:
            return data  # stored: compressing did not make it smaller
        if self.fast is not None and (out := self.fast.decode(data, want, self.algo)) is not None:
            return out
        try:  # the reference, also for what wimlib refused: it reads the chunk or says where it is damaged
            return _DECODERS[self.algo](data, want)
        except (WofError, IndexError, struct.error) as exc:
            raise WofError(f"{STREAM}: chunk {k} at byte {start} ({ALGORITHMS[self.algo][0]}): {exc}") from None


def decompress(stream: bytes, size: int, algo: int, decoder: str | None = None) -> bytes:
    """A whole file from its ``WofCompressedData`` bytes (for tests and small files)."""
    reader = WofStream(lambda off, n: stream[off : off + n], len(stream), size, algo, decoder)
    out = bytearray()
    while block := reader.read():
        out += block
    return bytes(out)
