"""Vendor update packages and firmware blobs: find the filesystems and archives inside, by signature.

A maker's update is rarely a bare filesystem: a vendor header (a version string, a checksum,
a model number), then a squashfs or a gzip'ed root tarball, a cpio initramfs, an ext image, a
FAT partition, sometimes behind a U-Boot uImage header, and trailing padding or a signature.
``open_firmware`` scans the blob for the magic numbers of the formats this package reads and
keeps a candidate only when its structure holds (a magic alone is four bytes any binary may
hold): a squashfs superblock's version, block size and table offsets; an ext superblock's
block and inode geometry; the walk of every cpio/tar header to the archive's end; a FAT boot
sector's geometry; an xz stream header's CRC, a bzip2 block magic, a zstd frame's block chain;
a gzip/lzma stream that decompresses. Each piece is copied (or decompressed, under the size and
ratio limits of ``Limits``) into the scan's private directory and opened by ``open_image``, so
the safety rules of every format hold unchanged. A decompressed stream that is no archive of
its own is scanned again as a blob, down to ``_MAX_DEPTH`` levels.

Why our own scanner and not binwalk (MIT, Debian) or unblob (MIT, PyPI): both extract with
their own rules (binwalk 2 runs external extractors on whatever matches and keeps links;
unblob pulls in a dozen native extractors); here the extraction is the one already hardened
against hostile archives, and the scanner itself only reads bytes. The pieces are volumes of a
``DiskImage``: findings name the piece (``@512:/etc/init.d/S99x``) and say where it was carved.
"""

from __future__ import annotations

import bz2
import lzma
import mmap
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import zstandard

from cranewatch.errors import EnvironmentProblem, ImageError, Location
from cranewatch.forensics.disk import DiskImage, Partition, Volume, _is_root, _open_fat
from cranewatch.forensics.image import Image, Limits, open_image

_MAX_DEPTH = 4  # decompressed content scanned again as a blob, at most this many levels down
_MAX_PIECES = 64  # pieces carved from one blob
_MAX_CANDIDATES = 100_000  # signatures looked at in one blob (cheap checks)
_MAX_TRIALS = 2_000  # of those, streams trial-decompressed (each at most _TRIAL_OUT bytes)
_TRIAL_IN = 1 << 16
_TRIAL_OUT = 1 << 16
_MIN_STREAM_OUT = 4096  # a stream that neither ends nor yields this much is not taken for one
_BLOCK = 1 << 20
_SCAN_CHUNK = 16 << 20  # bytes of the blob looked at in one NumPy step

UNKNOWN_FORMAT = (
    "unknown image format (expected a directory, tar[.gz|.xz|.bz2|.zst], zip, cpio (newc/odc), "
    "squashfs, an ext2/3/4 or NTFS partition image, a whole disk: raw MBR/GPT, qcow2, VMDK, VHD, VHDX, E01, "
    "or a firmware blob holding one of these)"
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A structure found in a blob: where it starts, how many bytes it spans, what it is."""

    offset: int
    size: int
    kind: str  # squashfs | ext | fat | cpio | tar | gzip | xz | bzip2 | zstd | lzma
    detail: str = ""

    @property
    def compressed(self) -> bool:
        return self.kind in _STREAMS


@dataclass(frozen=True, slots=True)
class Header:
    """A container header that is only described (its payload is found by its own signature)."""

    offset: int
    text: str


class _Bytes(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: slice) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., end: int = ...) -> int: ...


# --- structural checks, one per format: (blob, offset of the magic) -> Candidate or None -------------


def _squashfs(data: _Bytes, at: int) -> Candidate | None:
    sb = data[at : at + 96]
    if len(sb) < 96:
        return None
    inodes, _time, block_size, _frags, comp, block_log, _flags, ids, major, minor = struct.unpack_from("<IIIIHHHHHH", sb, 4)
    root, used, id_table, _xattr, inode_table, dir_table, _frag_table, _export = struct.unpack_from("<QQQQQQQQ", sb, 32)
    if (major, minor) != (4, 0) or not 12 <= block_log <= 20 or block_size != 1 << block_log or not 1 <= comp <= 6:
        return None
    if inodes == 0 or ids == 0 or not 96 <= used <= len(data) - at:
        return None
    if not 96 <= inode_table < dir_table < used or not dir_table < id_table < used or (root >> 16) > dir_table - inode_table:
        return None
    return Candidate(at, used, "squashfs", f"squashfs 4.0, {inodes} inodes")


def _ext(data: _Bytes, at: int) -> Candidate | None:
    start = at - 1080
    if start < 0:
        return None
    sb = data[start + 1024 : start + 1024 + 0x160]
    if len(sb) < 0x160:
        return None
    inodes, blocks_lo = struct.unpack_from("<II", sb, 0)
    first_data, log_block, _log_cluster, per_group, _clusters_group, inodes_per_group = struct.unpack_from("<IIIIII", sb, 20)
    state, errors = struct.unpack_from("<HH", sb, 58)
    rev = struct.unpack_from("<I", sb, 76)[0]
    incompat = struct.unpack_from("<I", sb, 96)[0]
    if log_block > 6 or rev > 1 or not 1 <= errors <= 3 or state > 7:
        return None
    block = 1024 << log_block
    blocks = blocks_lo | (struct.unpack_from("<I", sb, 0x150)[0] << 32 if incompat & 0x80 else 0)
    if first_data != (1 if block == 1024 else 0) or not 0 < per_group <= 8 * block or inodes_per_group == 0:
        return None
    groups = -(-(blocks - first_data) // per_group)
    if blocks <= first_data or inodes != groups * inodes_per_group:
        return None
    size = blocks * block
    if size > len(data) - start:
        return None  # the superblock claims more than the blob holds (a truncated copy, or chance)
    return Candidate(start, size, "ext", f"ext2/3/4, {blocks} blocks of {block} bytes")


def _fat(data: _Bytes, at: int, label_at: int) -> Candidate | None:
    start = at - label_at
    if start < 0:
        return None
    boot = data[start : start + 512]
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
        return None
    bps, spc, reserved, fats, _roots, total16 = struct.unpack_from("<HBHBHH", boot, 11)
    total32 = struct.unpack_from("<I", boot, 32)[0]
    total = total16 or total32
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or reserved == 0 or fats not in (1, 2) or total == 0:
        return None
    size = total * bps
    if size > len(data) - start:
        return None
    return Candidate(start, size, "fat", f"{bytes(boot[label_at : label_at + 5]).decode()}, {total} sectors of {bps} bytes")


def _cpio(data: _Bytes, at: int, limits: Limits) -> Candidate | None:
    """Walk the headers to ``TRAILER!!!``: newc/crc (hex fields, 4-byte alignment) or odc (octal)."""
    odc = data[at : at + 6] == b"070707"
    pos = at
    members = 0
    end = len(data)
    while members <= limits.max_files:
        if odc:
            header = data[pos : pos + 76]
            if len(header) < 76 or header[:6] != b"070707":
                break
            namesize, filesize = _number(header[59:65], 8), _number(header[65:76], 8)
            if namesize is None or filesize is None:
                break
            name_at, data_at = pos + 76, pos + 76 + namesize
            next_at = data_at + filesize
        else:
            header = data[pos : pos + 110]
            if len(header) < 110 or header[:6] not in (b"070701", b"070702"):
                break
            namesize, filesize = _number(header[94:102], 16), _number(header[54:62], 16)
            if namesize is None or filesize is None or any(_number(header[6 + 8 * i : 14 + 8 * i], 16) is None for i in range(13)):
                break
            name_at = pos + 110
            data_at = name_at + namesize + (-(110 + namesize)) % 4
            next_at = data_at + filesize + (-filesize) % 4
        if not 1 <= namesize <= limits.max_path_bytes + 1 or next_at > end:
            break
        name = data[name_at : name_at + namesize]
        if name[-1:] != b"\x00":
            break
        members += 1
        pos = next_at
        if name[:-1] == b"TRAILER!!!":
            kind = "odc" if odc else "newc"
            return Candidate(at, pos - at, "cpio", f"cpio ({kind}), {members - 1} members")
    if members == 0:
        return None
    kind = "odc" if odc else "newc"
    return Candidate(at, pos - at, "cpio", f"cpio ({kind}), {members} members, no trailer (truncated)")


_DIGITS = {8: frozenset(b"01234567"), 16: frozenset(b"0123456789abcdefABCDEF")}


def _number(field: bytes, base: int) -> int | None:
    """A fixed-width cpio field: digits of ``base`` only (``int`` would take signs, spaces, 0x)."""
    if not field or not set(field) <= _DIGITS[base]:
        return None
    return int(field, base)


def _tar_header_ok(block: bytes) -> bool:
    if len(block) < 512:
        return False
    stored = _number(block[148:156].split(b"\x00", 1)[0].strip(), 8)
    return stored is not None and stored == sum(block[:148]) + 8 * 32 + sum(block[156:512])


def _tar_size(field: bytes) -> int | None:
    if field[:1] == b"\x80":  # GNU base-256
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\x00", 1)[0].strip()
    return _number(digits, 8) if digits else 0


def _tar(data: _Bytes, at: int, limits: Limits) -> Candidate | None:
    start = at - 257
    if start < 0 or not _tar_header_ok(data[start : start + 512]):
        return None
    pos, members, end = start, 0, len(data)
    while members <= limits.max_files:
        block = data[pos : pos + 512]
        if len(block) < 512:
            break
        if block == bytes(512):
            pos = min(pos + 1024, end)  # the end-of-archive marker: two zero blocks
            return Candidate(start, pos - start, "tar", f"tar, {members} members")
        size = _tar_size(block[124:136])
        if not _tar_header_ok(block) or size is None:
            break
        members += 1
        pos += 512 + -(-size // 512) * 512
    return Candidate(start, min(pos, end) - start, "tar", f"tar, {members} members, no end marker (truncated)")


# Compressed streams: a cheap header check, then a trial decompression of the first bytes.

_STREAMS = ("gzip", "xz", "bzip2", "zstd", "lzma")


def _gzip_header(data: _Bytes, at: int) -> bool:
    head = data[at : at + 10]
    return len(head) == 10 and head[3] & 0xE0 == 0 and head[9] in (*range(14), 255)


def _xz_header(data: _Bytes, at: int) -> bool:
    head = data[at : at + 12]
    return len(head) == 12 and head[6] == 0 and head[7] & 0xF0 == 0 and zlib.crc32(head[6:8]) == struct.unpack_from("<I", head, 8)[0]


def _bzip2_header(data: _Bytes, at: int) -> bool:
    head = data[at : at + 10]
    return len(head) == 10 and 0x31 <= head[3] <= 0x39 and head[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")


def _lzma_header(data: _Bytes, at: int) -> bool:
    head = data[at : at + 13]
    if len(head) < 13:
        return False
    dictionary, unpacked = struct.unpack_from("<IQ", head, 1)
    shape = dictionary >> (dictionary.bit_length() - 2) if dictionary else 0
    return dictionary >= 1 << 12 and shape in (2, 3) and dictionary & ((1 << (dictionary.bit_length() - 2)) - 1) == 0 and (
        unpacked == (1 << 64) - 1 or unpacked < 1 << 40)


def _zstd_frame(data: _Bytes, at: int) -> int | None:
    """The length of the zstd frame at ``at`` by walking its block headers (no decompression)."""
    head = data[at : at + 18]
    if len(head) < 6:
        return None
    descriptor = head[4]
    if descriptor & 0x08:  # reserved bit
        return None
    single = descriptor >> 5 & 1
    size_field = (0, 2, 4, 8)[descriptor >> 6] if (descriptor >> 6 or single) else 0
    if descriptor >> 6 == 0 and single:
        size_field = 1
    header = 1 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + size_field
    pos, end = at + 4 + header, len(data)
    while True:
        block = data[pos : pos + 3]
        if len(block) < 3:
            return None
        value = block[0] | block[1] << 8 | block[2] << 16
        last, kind, size = value & 1, value >> 1 & 3, value >> 3
        if kind == 3 or size > 1 << 17:
            return None
        pos += 3 + (1 if kind == 1 else size)
        if pos > end:
            return None
        if last:
            return pos + (4 if descriptor & 0x04 else 0) - at


def _decompressor(kind: str) -> _Decompressor:
    if kind == "gzip":
        return _ZlibStream(zlib.decompressobj(31))
    if kind == "xz":
        return _LzmaStream(lzma.LZMADecompressor(lzma.FORMAT_XZ))
    if kind == "lzma":
        return _LzmaStream(lzma.LZMADecompressor(lzma.FORMAT_ALONE))
    return _LzmaStream(bz2.BZ2Decompressor())  # zstd frames go through _inflate's bounded reader


class _Decompressor(Protocol):
    eof: bool

    def feed(self, data: bytes, max_out: int) -> bytes: ...
    def pending(self) -> bool: ...  # output is waiting without new input
    def unused(self) -> int: ...  # input bytes after the end of the stream


class _ZlibStream:
    def __init__(self, obj: zlib._Decompress) -> None:
        self.obj = obj
        self.eof = False
        self.tail = b""

    def feed(self, data: bytes, max_out: int) -> bytes:
        out = self.obj.decompress(self.tail + data, max_out)
        self.tail = self.obj.unconsumed_tail
        self.eof = self.obj.eof
        return out

    def pending(self) -> bool:
        return bool(self.tail)

    def unused(self) -> int:
        return len(self.obj.unused_data)


class _LzmaStream:
    def __init__(self, obj: lzma.LZMADecompressor | bz2.BZ2Decompressor) -> None:
        self.obj = obj
        self.eof = False

    def feed(self, data: bytes, max_out: int) -> bytes:
        out = self.obj.decompress(data, max_out)
        self.eof = self.obj.eof
        return out

    def pending(self) -> bool:
        return not self.obj.needs_input and not self.obj.eof

    def unused(self) -> int:
        return len(self.obj.unused_data)


def _trial(data: _Bytes, at: int, kind: str) -> bool:
    """Does the stream at ``at`` decompress: its end reached or ``_MIN_STREAM_OUT`` bytes out?"""
    try:
        if kind == "zstd":
            length = _zstd_frame(data, at)
            if length is None:
                return False
            reader = zstandard.ZstdDecompressor().stream_reader(bytes(data[at : at + min(length, _TRIAL_IN)]))
            got = reader.read(_TRIAL_OUT)
            return bool(got) and (length <= _TRIAL_IN or len(got) >= _MIN_STREAM_OUT)
        stream = _decompressor(kind)
        out = stream.feed(data[at : at + _TRIAL_IN], _TRIAL_OUT)
        return stream.eof or len(out) >= _MIN_STREAM_OUT
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, zstandard.ZstdError):
        return False


# --- finding the candidates ----------------------------------------------------------------------------

_STRUCTURES: tuple[tuple[bytes, str], ...] = (
    (b"hsqs", "squashfs"), (b"\x53\xef", "ext"), (b"070701", "cpio"), (b"070702", "cpio"), (b"070707", "cpio"),
    (b"ustar", "tar"), (b"FAT12   ", "fat54"), (b"FAT16   ", "fat54"), (b"FAT32   ", "fat82"),
    (b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"), (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x5d\x00\x00", "lzma"),
)
_HEADERS: tuple[tuple[bytes, str], ...] = ((b"\x27\x05\x19\x56", "uimage"), (b"ANDROID!", "android"), (b"\xd0\x0d\xfe\xed", "fdt"))
_STREAM_HEADER: dict[str, Callable[[_Bytes, int], bool]] = {
    "gzip": _gzip_header, "xz": _xz_header, "bzip2": _bzip2_header, "lzma": _lzma_header,
    "zstd": lambda data, at: _zstd_frame(data, at) is not None,
}


_START_BEFORE_MAGIC = {"ext": 1080, "tar": 257, "fat54": 54, "fat82": 82}


@dataclass(frozen=True, slots=True)
class Signature:
    """A magic number found in a blob: where its structure would start, where the magic is."""

    start: int
    at: int
    kind: str


def _magics(data: _Bytes) -> tuple[list[tuple[int, str]], bool]:
    """(offset, kind) of every magic of ``_STRUCTURES`` and ``_HEADERS`` in ``data``, and
    whether there were more than ``_MAX_CANDIDATES``.

    One pass over the blob in NumPy (a table of the magics' first two bytes; ~175 MB/s on one
    core), not one ``find`` per magic (17 passes, ~35 MB/s).
    """
    by_pair: dict[int, list[tuple[bytes, str]]] = {}
    for magic, kind in (*_STRUCTURES, *_HEADERS):
        by_pair.setdefault(magic[0] | magic[1] << 8, []).append((magic, kind))
    first = np.zeros(256, dtype=bool)
    pairs = np.zeros(1 << 16, dtype=bool)
    for pair in by_pair:
        first[pair & 0xFF] = True
        pairs[pair] = True
    found: list[tuple[int, str]] = []
    view = np.frombuffer(data, dtype=np.uint8)  # type: ignore[call-overload]
    try:
        for start in range(0, max(len(view) - 1, 0), _SCAN_CHUNK):
            chunk = view[start : start + _SCAN_CHUNK + 1]
            at = np.flatnonzero(first.take(chunk[:-1]))
            pair = chunk[at].astype(np.uint16) | (chunk[at + 1].astype(np.uint16) << 8)
            for pos, key in zip((at[pairs.take(pair)] + start).tolist(), pair[pairs.take(pair)].tolist(), strict=True):
                for magic, kind in by_pair[key]:
                    if data[pos : pos + len(magic)] == magic:
                        found.append((pos, kind))
            del chunk, at, pair
            if len(found) > _MAX_CANDIDATES:
                return found[:_MAX_CANDIDATES], True
    finally:
        del view  # the mmap cannot close while NumPy holds its buffer
    return found, False


def signatures(data: _Bytes, scanned: tuple[list[tuple[int, str]], bool] | None = None) -> tuple[list[Signature], list[str]]:
    """Every magic of ``_STRUCTURES`` in ``data``, ordered by where its structure would start
    (at most ``_MAX_CANDIDATES``; the problem said when there were more). ``scanned`` is
    ``_magics(data)`` when it was taken already."""
    magics, more = scanned or _magics(data)
    structures = {kind for _, kind in _STRUCTURES}
    found = [Signature(pos - _START_BEFORE_MAGIC.get(kind, 0), pos, kind) for pos, kind in magics
             if kind in structures and pos >= _START_BEFORE_MAGIC.get(kind, 0)]
    problems = []
    if more:
        problems.append(f"more than {_MAX_CANDIDATES} signatures in the blob: those after offset {magics[-1][0]} were "
                        "not looked at")
    return sorted(found, key=lambda s: (s.start, s.kind)), problems


class _Checker:
    """Checks signatures' structures; counts what did not hold and the trial decompressions."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rejected = 0
        self.trials = 0

    def check(self, data: _Bytes, sig: Signature) -> Candidate | None:
        kind, pos = sig.kind, sig.at
        candidate: Candidate | None = None
        if kind == "squashfs":
            candidate = _squashfs(data, pos)
        elif kind == "ext":
            candidate = _ext(data, pos)
        elif kind == "cpio":
            candidate = _cpio(data, pos, self.limits)
        elif kind == "tar":
            candidate = _tar(data, pos, self.limits)
        elif kind.startswith("fat"):
            candidate = _fat(data, pos, int(kind[3:]))
        elif _STREAM_HEADER[kind](data, pos):
            self.trials += 1
            if self.trials <= _MAX_TRIALS and _trial(data, pos, kind):
                candidate = Candidate(pos, len(data) - pos, kind, f"{kind}-compressed")
        if candidate is None:
            self.rejected += 1
        return candidate


def survey(data: _Bytes, limits: Limits) -> list[Candidate]:
    """Every structure of ``data`` whose check holds, by offset (nested ones included)."""
    checker = _Checker(limits)
    found = (checker.check(data, sig) for sig in signatures(data)[0])
    return [c for c in found if c is not None]


def headers(data: _Bytes, magics: list[tuple[int, str]] | None = None) -> list[Header]:
    """The container headers of ``data`` (uImage, FIT/device tree, Android boot), described."""
    kinds = {kind for _, kind in _HEADERS}
    out: list[Header] = []
    for pos, kind in _magics(data)[0] if magics is None else magics:
        if kind in kinds and len(out) < _MAX_PIECES:
            text = _describe_header(data, pos, kind)
            if text:
                out.append(Header(pos, text))
    return out


_UIMAGE_COMPRESSION = {0: "none", 1: "gzip", 2: "bzip2", 3: "lzma", 4: "lzo", 5: "lz4", 6: "zstd"}
_UIMAGE_TYPE = {2: "kernel", 3: "ramdisk", 4: "multi-file", 5: "firmware", 6: "script", 7: "filesystem", 8: "flat device tree"}


def _describe_header(data: _Bytes, at: int, kind: str) -> str | None:
    if kind == "uimage":
        head = data[at : at + 64]
        if len(head) < 64:
            return None
        stored = struct.unpack_from(">I", head, 4)[0]
        if zlib.crc32(head[:4] + bytes(4) + head[8:]) != stored:
            return None
        size, _load, _entry, data_crc = struct.unpack_from(">IIII", head, 12)
        payload = data[at + 64 : at + 64 + size]
        intact = "data CRC ok" if len(payload) == size and zlib.crc32(payload) == data_crc else "data CRC MISMATCH or truncated"
        name = bytes(head[32:64]).split(b"\x00", 1)[0].decode("ascii", "replace")
        return (f"U-Boot uImage {name!r} ({_UIMAGE_TYPE.get(head[30], f'type {head[30]}')}, "
                f"{_UIMAGE_COMPRESSION.get(head[31], f'compression {head[31]}')}, {size} bytes of data, {intact})")
    if kind == "android":
        head = data[at : at + 48]
        if len(head) < 48:
            return None
        kernel, _kaddr, ramdisk, _raddr, second, _saddr, _tags, page = struct.unpack_from("<8I", head, 8)
        if page not in (2048, 4096, 8192, 16384) or kernel + ramdisk + second > len(data) - at:
            return None
        return f"Android boot image (kernel {kernel} bytes, ramdisk {ramdisk} bytes, page {page})"
    head = data[at : at + 40]  # flattened device tree: a U-Boot FIT image or a device tree
    if len(head) < 40:
        return None
    total, struct_at, strings_at, _rsv, version = struct.unpack_from(">5I", head, 4)
    if not 16 <= version <= 17 or not 40 <= struct_at < total or not 40 <= strings_at < total or total > len(data) - at:
        return None
    fit = b"images" in data[at + struct_at : at + min(total, struct_at + 4096)]
    return f"{'U-Boot FIT image' if fit else 'flattened device tree'} ({total} bytes)"


# --- carving ---------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """A carved and opened piece: where it came from (a chain of offsets) and its image."""

    chain: tuple[tuple[int, str], ...]  # (offset, kind) from the outer blob inwards
    size: int
    image: Image

    @property
    def label(self) -> str:
        return "/".join(f"@{offset}" for offset, _ in self.chain)


@dataclass
class _Carving:
    """The state of one carving run: the budget left, the private directory, what was said."""

    scratch: Path
    limits: Limits
    warnings: list[str]
    problems: list[str]
    pieces: list[Piece]
    counter: int = 0
    rejected: int = 0  # signatures whose structure did not hold

    def spend(self, image: Image) -> None:
        self.limits = replace(self.limits, max_total_bytes=self.limits.max_total_bytes - sum(e.size for e in image.files()),
                              max_files=self.limits.max_files - len(image.entries))

    def scratch_file(self, kind: str) -> Path:
        self.counter += 1
        return self.scratch / f"piece{self.counter}.{kind}"


def _where(chain: tuple[tuple[int, str], ...]) -> str:
    steps = [f"at offset {chain[0][0]} ({chain[0][1]})"]
    steps.extend(f"at offset {offset} of its decompressed content ({kind})" for offset, kind in chain[1:])
    return ", then ".join(steps)


def _carve_blob(blob: Path, chain: tuple[tuple[int, str], ...], run: _Carving, name: str) -> None:
    """Carve every piece of ``blob`` (``chain`` says where the blob itself came from)."""
    with open(blob, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            scanned = _magics(data)
            found, problems = signatures(data, scanned)
            run.problems.extend(f"{name}: {p}" for p in problems)
            for header in headers(data, scanned[0]):
                run.warnings.append(f"{name}: {_where((*chain, (header.offset, 'header')))}: {header.text}")
            checker = _Checker(run.limits)
            claimed_to = 0
            pieces = 0
            for sig in found:
                if sig.start < claimed_to:
                    continue  # inside a piece already carved: its own bytes, read when it is opened
                candidate = checker.check(data, sig)
                if candidate is None:
                    continue
                if pieces >= _MAX_PIECES:
                    run.problems.append(f"{name}: more than {_MAX_PIECES} pieces: the rest of the blob is not carved")
                    break
                here = (*chain, (candidate.offset, candidate.kind))
                try:
                    size = _carve_one(data, candidate, here, run, name)
                except ImageError as exc:
                    run.problems.append(f"{name}: {_where(here)}: {candidate.detail} not readable: {exc.message}")
                    continue
                pieces += 1
                if size:
                    claimed_to = candidate.offset + size
            run.rejected += checker.rejected
            if checker.trials > _MAX_TRIALS:
                run.problems.append(f"{name}: {checker.trials} compressed-stream signatures: only the first {_MAX_TRIALS} "
                                    "were tried")


def _carve_one(data: mmap.mmap, candidate: Candidate, chain: tuple[tuple[int, str], ...], run: _Carving, name: str) -> int:
    """Open one candidate; the bytes it spans (0 when nothing was carved from it)."""
    if run.limits.max_total_bytes <= 0 or run.limits.max_files <= 0:
        raise ImageError("the pieces before it used up the size or file-count limit (--max-bytes, --max-files)")
    if not candidate.compressed:
        copy = run.scratch_file(candidate.kind)
        _copy_out(data, candidate.offset, candidate.size, copy)
        try:
            if candidate.kind == "fat":
                image = _open_fat(copy, run.scratch_file("fat-tree"), run.limits)
            else:
                image = open_image(copy, run.limits)
        finally:
            copy.unlink(missing_ok=True)
        _keep(Piece(chain, candidate.size, image), run)
        return candidate.size
    out = run.scratch_file("out")
    consumed, complete = _inflate(data, candidate, out, run.limits, name)
    if not complete:
        run.problems.append(f"{name}: {_where(chain)}: the {candidate.kind} stream is damaged or was stopped after "
                            f"{out.stat().st_size} bytes of content: what came before is scanned")
    inner = _inner_format(out)
    if inner is not None:
        try:
            image = open_image(out, run.limits)
        finally:
            out.unlink(missing_ok=True)
        _keep(Piece(chain, consumed, image), run)
        return consumed
    if len(chain) >= _MAX_DEPTH:
        run.problems.append(f"{name}: {_where(chain)}: {out.stat().st_size} bytes of decompressed content not searched: "
                            f"more than {_MAX_DEPTH} levels of nesting")
        out.unlink(missing_ok=True)
        return consumed
    before = len(run.pieces)
    try:
        _carve_blob(out, chain, run, name)
    finally:
        out.unlink(missing_ok=True)
    if len(run.pieces) == before:
        run.warnings.append(f"{name}: {_where(chain)}: {consumed} compressed bytes hold no filesystem or archive "
                            "(a kernel or data): not scanned as files")
    return consumed


def _keep(piece: Piece, run: _Carving) -> None:
    run.pieces.append(piece)
    run.spend(piece.image)
    run.warnings.extend(f"{piece.label}: {w}" for w in piece.image.warnings)
    piece.image.warnings = []


def _inner_format(path: Path) -> str | None:
    """The archive or filesystem that decompressed content is, if ``open_image`` reads it."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith((b"070701", b"070702", b"070707")):
        return "cpio"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"hsqs"):
        return "squashfs"
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext"
    return None


def _copy_out(data: mmap.mmap, offset: int, size: int, dest: Path) -> None:
    try:
        with open(dest, "xb") as out:
            for at in range(offset, offset + size, _BLOCK):
                out.write(data[at : min(at + _BLOCK, offset + size)])
    except OSError as exc:
        raise EnvironmentProblem(f"cannot copy a carved piece into {dest.parent}: {exc.strerror} (set TMPDIR to a disk "
                                 "with room)", Location(offset=offset)) from None


def _inflate(data: mmap.mmap, candidate: Candidate, dest: Path, limits: Limits, name: str) -> tuple[int, bool]:
    """Decompress the stream at the candidate into ``dest`` under the size and ratio limits.

    Returns (compressed bytes the stream spans, whether it ended cleanly).
    """
    where = Location(file=name, offset=candidate.offset)
    if candidate.kind == "zstd":
        length = _zstd_frame(data, candidate.offset) or 0
        source = zstandard.ZstdDecompressor().stream_reader(memoryview(data)[candidate.offset : candidate.offset + length])
        stream: _Decompressor | None = None
    else:
        stream = _decompressor(candidate.kind)
    written = 0
    consumed = 0
    complete = True
    try:
        with open(dest, "xb") as out:
            pos = candidate.offset
            while True:
                if stream is None:
                    chunk = source.read(_BLOCK)
                    if not chunk:
                        consumed = length
                        break
                elif stream.pending():
                    chunk = stream.feed(b"", _BLOCK)
                else:
                    fed = data[pos : pos + _BLOCK]
                    if not fed:
                        complete = False  # the blob ends inside the stream
                        consumed = pos - candidate.offset
                        break
                    pos += len(fed)
                    chunk = stream.feed(fed, _BLOCK)
                written += len(chunk)
                packed = max(consumed or pos - candidate.offset, 1)
                if written > limits.max_total_bytes or (written > limits.ratio_floor and written / packed > limits.max_ratio):
                    complete = False
                    consumed = packed
                    break
                out.write(chunk)
                if stream is not None and stream.eof:
                    consumed = pos - candidate.offset - stream.unused()
                    break
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, zstandard.ZstdError) as exc:
        if isinstance(exc, OSError) and exc.errno in (28, 122):
            raise EnvironmentProblem(f"cannot decompress a carved stream into {dest.parent}: {exc.strerror} (set TMPDIR "
                                     "to a disk with room)", where) from None
        complete = False
        consumed = consumed or (pos - candidate.offset if stream is not None else length)
    if written == 0:
        raise ImageError(f"the {candidate.kind} stream yields nothing", where)
    return consumed, complete


# --- the blob as an image ---------------------------------------------------------------------------------


def open_firmware(source: Path, limits: Limits, name: str | None = None) -> DiskImage:
    """Open a firmware blob or update package: every carved piece is a volume of the result.

    ``name`` is how findings name the blob (its file name by default). ``ImageError`` (the
    unknown-format message) when no piece is found.
    """
    name = name or source.name
    size = source.stat().st_size
    if size > limits.max_total_bytes:
        raise ImageError(f"{UNKNOWN_FORMAT}; at {size} bytes it is larger than the size limit, so it was not searched "
                         "for embedded filesystems (raise it with --max-bytes if it is a firmware blob)",
                         Location(file=str(source)))
    tmp = tempfile.TemporaryDirectory(prefix="cranewatch-carve-")
    run = _Carving(Path(tmp.name), limits, [], [], [])
    try:
        _carve_blob(source, (), run, name)
    except BaseException:
        for piece in run.pieces:
            piece.image.close()
        tmp.cleanup()
        raise
    if not run.pieces:
        tmp.cleanup()
        said = "; ".join([*run.problems, *run.warnings][:3])
        raise ImageError(f"{UNKNOWN_FORMAT}; no embedded filesystem or archive was found in it ({run.rejected} "
                         "signature(s) whose structure did not hold)" + (f": {said}" if said else ""),
                         Location(file=str(source)))
    volumes = []
    for number, piece in enumerate(run.pieces, 1):
        offset = piece.chain[0][0]
        partition = Partition(number, offset, piece.size, "carve", "/".join(k for _, k in piece.chain))
        note = f"carved from {name} {_where(piece.chain)}"
        volumes.append(Volume(partition, piece.chain[-1][1], piece.image, name=piece.label, note=note))
    roots = [v for v in volumes if _is_root(v.image)] or [max(volumes, key=lambda v: len(v.image.entries))]
    roots[0].is_root = True
    summary = ", ".join(f"{v.label} {v.partition.type} ({v.partition.size} bytes)" for v in volumes)
    warnings = [f"firmware blob {name}: carved {len(volumes)} piece(s) by signature: {summary}", *run.warnings]
    return DiskImage(source, "firmware", roots[0].image.root, roots[0].image.entries, warnings, tmp,
                     problems=run.problems, container="firmware", volumes=volumes)


# --- update packages inside an image ----------------------------------------------------------------------

# Names vendors give update packages and firmware images. Only files no package owns are
# searched (a distribution's own firmware, /usr/lib/firmware, is the package's business).
_BLOB_NAME = re.compile(r"\.(bin|img|fw|upd|update|swu|rom|itb|ub|trx|chk|pkg|squashfs|sqfs|sqsh|cpio|ext[234]|uimage)$",
                        re.IGNORECASE)
_BLOB_MIN = 4096
MAX_NESTED_BLOBS = 32  # update packages searched in one image


def nested_blobs(image: Image, owner: dict[str, str], limits: Limits) -> tuple[list[tuple[str, DiskImage]], list[str]]:
    """The vendor update packages of ``image`` that hold filesystems or archives, opened.

    A candidate is a regular file no package owns, named like an update package or firmware
    image, at least 4 KiB; carved pieces are not searched again for blobs (one level). The
    caller closes each returned image. Returns (image path, opened blob) and the problems.
    """
    found: list[tuple[str, DiskImage]] = []
    problems: list[str] = []
    candidates = sorted(e.path for e in image.files()
                        if e.path not in owner and e.size >= _BLOB_MIN and _BLOB_NAME.search(e.path))
    for path in candidates:
        if len(found) >= MAX_NESTED_BLOBS:
            problems.append(f"more than {MAX_NESTED_BLOBS} update packages or firmware images in the image: "
                            f"{len(candidates) - MAX_NESTED_BLOBS} not searched for embedded filesystems")
            break
        try:
            blob = open_firmware(image.disk_path(path), limits, name=path)
        except ImageError as exc:
            if "no embedded filesystem or archive was found" not in exc.message:
                problems.append(f"{path}: {exc.message}")
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot be searched for embedded filesystems ({exc.strerror})")
            continue
        found.append((path, blob))
    return found, problems


__all__ = ["UNKNOWN_FORMAT", "Candidate", "Header", "headers", "nested_blobs", "open_firmware", "signatures", "survey"]
