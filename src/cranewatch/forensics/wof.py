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
AGPL). It runs at 6-9 MB per CPU second, too slow for a fully compressed system (CompactOS
compresses several GB). So when the system's wimlib is there (Debian ``libwim15``: the library
is LGPL-3.0-or-later, loaded at run time through ctypes, neither shipped nor changed by us), its
public compression API (``wimlib_decompress``: the same formats, made for WIM resources, whose
chunk layout WOF reuses) decodes the same chunks at 220-300 MB/s (``benchmarks/bench_wof.py``). ``CRANEWATCH_LIBWIM`` names
another library file, or is empty to use the built-in decoder only. A chunk wimlib refuses is
given to the built-in decoder, which either reads it or says where it is damaged, so the errors
are the same located ones on both paths. (Where they differ: wimlib reads a damaged chunk's bits
past its end as zeros, and so gives bytes where the built-in decoder, after 8 bytes of such
run-out, reports the chunk.) Every read is bounded: a corrupt stream raises
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

_FAST = 10  # code bits looked up at once; longer codes (improbable symbols) are searched by length


class _Code:
    """An MSB-first canonical Huffman code. ``fast[w]`` is (symbol << 5 | length) when a code of at
    most ``fast_bits`` bits starts the ``fast_bits``-bit window w, else -1; ``find(window)`` does
    the same for any code from a ``bits``-bit window, -1 where no code lands (an incomplete code).
    A 1,024-entry table instead of 2**15 or 2**16 entries, whose building took a sixth to a quarter of
    the time."""

    __slots__ = ("bits", "fast", "fast_bits", "longs")

    def __init__(self, lengths: list[int], bits: int, what: str) -> None:
        counts = [lengths.count(n) for n in range(bits + 1)]
        if sum(counts[n] << (bits - n) for n in range(1, bits + 1)) > 1 << bits:
            raise WofError(f"{what}: over-subscribed Huffman code")
        order = sorted(range(len(lengths)), key=lengths.__getitem__)  # stable: by length, then symbol (canonical)
        self.bits, self.fast_bits = bits, min(bits, _FAST)
        self.fast: list[int] = []
        self.longs: list[tuple[int, int, int, list[int]]] = []  # (length, first code, count, symbols)
        first, i = 0, counts[0]
        for n in range(1, bits + 1):
            count = counts[n]
            if n <= self.fast_bits:
                for symbol in order[i : i + count]:
                    self.fast += [symbol << 5 | n] * (1 << (self.fast_bits - n))
            elif count:
                self.longs.append((n, first, count, order[i : i + count]))
            i += count
            first = (first + count) << 1
        self.fast += [-1] * ((1 << self.fast_bits) - len(self.fast))

    def find(self, window: int) -> int:
        for n, first, count, symbols in self.longs:
            k = (window >> (self.bits - n)) - first
            if 0 <= k < count:
                return symbols[k] << 5 | n
        return -1


def _copy_match(out: bytearray, offset: int, length: int, end: int, what: str, where: int) -> int:
    """Append ``length`` bytes (cut at ``end``) from ``offset`` bytes back (an overlapping copy
    repeats the last ``offset`` bytes); the new length of ``out``."""
    have = len(out)
    if offset > have or offset <= 0:
        raise WofError(f"{what}: match offset {offset} before the start of the data (near byte {where})")
    length = min(length, end - have)
    start = have - offset
    if offset >= length:
        out += out[start : start + length]
    else:
        out += (out[start:] * (length // offset + 1))[:length]
    return have + length


# --- XPRESS Huffman ([MS-XCA] 2.2.4) --------------------------------------------------------------


def _xpress_long_match(data: bytes, pos: int) -> tuple[int, int]:
    """A match length of 15 or more (its 4-bit field was 15) from the bytes at ``pos``: one byte,
    or if it is 255 two more, or if those are 0 four more; the length and the position after."""

    def field(at: int, kind: str) -> int:
        if at + struct.calcsize(kind) > len(data):
            raise WofError(f"XPRESS: match length truncated at byte {at}")
        return int(struct.unpack_from(kind, data, at)[0])

    match = field(pos, "B")
    if match < 255:
        return match + 15, pos + 1
    match, after = field(pos + 1, "<H"), pos + 3
    if match == 0:
        match, after = field(pos + 3, "<I"), pos + 7
    if match < 15:
        raise WofError(f"XPRESS: bad match length at byte {pos}")
    return match, after


_LOW_NIBBLE = bytes(b & 15 for b in range(256))
_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))


def xpress_huffman(data: bytes, size: int) -> bytes:
    """``size`` bytes decompressed from one XPRESS Huffman stream."""
    out = bytearray()
    append = out.append
    padded = data + bytes(8)  # a little run-out past the end, as an encoder may leave its last bits unflushed
    limit = len(padded)
    pos = 0
    while len(out) < size:
        if pos + 256 > len(data):
            raise WofError(f"XPRESS: Huffman table truncated at byte {pos}")
        lengths = [0] * 512  # 4 bits a symbol, the low half first
        lengths[0::2] = data[pos : pos + 256].translate(_LOW_NIBBLE)
        lengths[1::2] = data[pos : pos + 256].translate(_HIGH_NIBBLE)
        code = _Code(lengths, 15, "XPRESS")
        fast, find = code.fast, code.find
        pos += 256
        if pos + 4 > len(data):
            raise WofError(f"XPRESS: bitstream truncated at byte {pos}")
        bits = (data[pos] | data[pos + 1] << 8) << 16 | data[pos + 2] | data[pos + 3] << 8
        pos += 4
        extra = 16
        have = len(out)
        end = min(size, have + 65536)
        while have < end:
            entry = fast[bits >> 22]
            if entry < 0 and (entry := find(bits >> 17)) < 0:
                raise WofError(f"XPRESS: invalid Huffman code at byte {pos}")
            length = entry & 31
            bits = (bits << length) & 0xFFFFFFFF
            extra -= length
            if extra < 0:  # [MS-XCA]'s refill, here and after the offset bits: inline, a call costs a quarter
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
                match, pos = _xpress_long_match(data, pos)
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
            if 0 < offset <= have and match <= offset and match <= end - have:  # the usual match, inline: a call costs 10 %
                out += out[have - offset : have - offset + match]
                have += match
            else:  # overlapping, cut at the end, or an error to report
                have = _copy_match(out, offset, match, end, "XPRESS", pos)
    return bytes(out[:size])


# --- LZX (the WIM/WOF variant) -------------------------------------------------------------------

_LZX_SLOTS = 30  # 32 KiB window
_LZX_MAIN = 256 + 8 * _LZX_SLOTS
_LZX_LENGTHS = 249
_LZX_EXTRA = [0, 0, 0, 0] + [n for n in range(1, 17) for _ in (0, 1)]
_LZX_BASE = [0]
for _n in _LZX_EXTRA[:-1]:
    _LZX_BASE.append(_LZX_BASE[-1] + (1 << _n))
_LZX_RUN_OUT = 8  # bytes of zeros read past a chunk's end, as the encoder may leave its last bits unflushed


class _Bits:
    """LZX's bitstream: 16-bit little-endian words, each read from its top bit (``buf`` holds
    ``left`` bits)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.buf, self.left = data, 0, 0, 0

    def ensure(self, n: int) -> None:
        while self.left < n:
            if self.pos + 2 <= len(self.data):
                word = self.data[self.pos] | self.data[self.pos + 1] << 8
            elif self.pos < len(self.data) + _LZX_RUN_OUT:
                word = 0
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

    def symbol(self, code: _Code) -> int:
        self.ensure(code.bits)
        window = self.buf >> (self.left - code.bits)
        entry = code.fast[window >> (code.bits - code.fast_bits)]
        if entry < 0 and (entry := code.find(window)) < 0:
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
    pre = _Code([bits.read(4) for _ in range(20)], 15, "LZX pretree")
    i = start
    while i < stop:
        sym = bits.symbol(pre)
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
            sym2 = bits.symbol(pre)
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
    recent = (1, 1, 1)
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
            recent = struct.unpack("<III", bits.raw(12))
            out += bits.raw(end - len(out))
            if block & 1:
                bits.pos += 1
            continue
        aligned = _Code([bits.read(3) for _ in range(8)], 7, "LZX aligned") if kind == 2 else None
        _lzx_lengths(bits, main, 0, 256)
        _lzx_lengths(bits, main, 256, _LZX_MAIN)
        _lzx_lengths(bits, lens, 0, _LZX_LENGTHS)
        lengths = _Code(lens, 16, "LZX length") if any(lens) else None
        recent = _lzx_block(bits, out, end, _Code(main, 16, "LZX main"), lengths, aligned, recent)
    _undo_e8(out)
    return bytes(out[:size])


def _lzx_block(bits: _Bits, out: bytearray, end: int, main: _Code, lengths: _Code | None, aligned: _Code | None,
               recent: tuple[int, int, int]) -> tuple[int, int, int]:
    """Decode a verbatim or aligned block's matches and literals up to output byte ``end``; the
    recent offsets after it. The hot loop: the bitstream is in locals, 64 bits refilled at once
    (one match takes at most 16 + 16 + 17 bits), and the run-out checked when it is refilled."""
    data, pos = bits.data, bits.pos
    source = data[: pos + ((len(data) - pos) & ~1)] + bytes(_LZX_RUN_OUT + 40)  # an odd last byte reads as 0
    limit = (len(data) + _LZX_RUN_OUT) * 8  # no bit may come from beyond this
    buf, left = bits.buf, bits.left
    fast, find = main.fast, main.find
    r0, r1, r2 = recent
    have, append = len(out), out.append
    while have < end:
        if left < 49:
            if pos * 8 - left > limit:
                raise WofError("LZX: read beyond the end of the chunk")
            buf = ((buf & ((1 << left) - 1)) << 64 | source[pos + 1] << 56 | source[pos] << 48
                   | source[pos + 3] << 40 | source[pos + 2] << 32 | source[pos + 5] << 24 | source[pos + 4] << 16
                   | source[pos + 7] << 8 | source[pos + 6])
            left += 64
            pos += 8
        entry = fast[buf >> (left - 10) & 0x3FF]
        if entry < 0 and (entry := find(buf >> (left - 16) & 0xFFFF)) < 0:
            raise WofError(f"LZX: invalid Huffman code near byte {pos}")
        left -= entry & 31
        sym = entry >> 5
        if sym < 256:
            append(sym)
            have += 1
            continue
        sym -= 256
        length, slot = (sym & 7) + 2, sym >> 3
        if length == 9:
            if lengths is None:
                raise WofError("LZX: a long match with an empty length code")
            entry = lengths.fast[buf >> (left - 10) & 0x3FF]
            if entry < 0 and (entry := lengths.find(buf >> (left - 16) & 0xFFFF)) < 0:
                raise WofError(f"LZX: invalid Huffman code near byte {pos}")
            left -= entry & 31
            length += entry >> 5
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
                left -= extra - 3
                value = (buf >> left & ((1 << (extra - 3)) - 1)) << 3
                entry = aligned.fast[buf >> (left - 7) & 0x7F]  # aligned codes are at most 7 bits: all fast
                if entry < 0:
                    raise WofError(f"LZX: invalid Huffman code near byte {pos}")
                left -= entry & 31
                value += entry >> 5
            else:
                left -= extra
                value = buf >> left & ((1 << extra) - 1)
            offset = _LZX_BASE[slot] + value - 2
            r2, r1, r0 = r1, r0, offset
        if 0 < offset <= have and length <= offset and length <= end - have:  # the usual match, inline: a call costs 10 %
            out += out[have - offset : have - offset + length]
            have += length
        else:  # overlapping, cut at the end, or an error to report
            have = _copy_match(out, offset, length, end, "LZX", pos)
    if pos * 8 - left > limit:
        raise WofError("LZX: read beyond the end of the chunk")
    bits.buf, bits.left, bits.pos = buf & ((1 << left) - 1), left, pos
    return r0, r1, r2


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
    return (f"WOF-compressed files are decoded by the built-in decoder (6-9 MB/s): {why}; install Debian's "
            "libwim15 (or set CRANEWATCH_LIBWIM to wimlib's library) for 220-300 MB/s")


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
