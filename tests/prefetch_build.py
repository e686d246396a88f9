"""Prefetch files for the tests, laid out field by field from libscca's documentation of the format.

No licence-compatible real ``.pf`` sample could be had here (plaso's are Apache-2.0 but not in
its released package; the other parsers ship none), so the files are written by ``build``: every
offset below is the documentation's (Windows Prefetch File (PF) format, J. Metz), not the
reader's. Windows 10's compressed form is made by ``mam``: the payload is XPRESS Huffman as
wimlib (an independent compressor) writes it for a WIM resource with 64 KiB chunks, one chunk per
64 KiB block of the MAM stream. What is independent: the compressor (wimlib) and the check of
every built file by libscca's ``sccainfo`` (Debian's libscca-utils, a separate reader of both the
layout and the compression). What is not: the layout is written from the same documentation the
reader follows, so a misreading of it shared by both would go unseen, were it not for sccainfo.
Files longer than one 64 KiB block: see ``mam``.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FILE_INFO = {17: 68, 23: 156, 26: 220, 30: 220}  # v30 "variant 2" (Windows 10 1903 on): 212
METRIC = {17: 20, 23: 32, 26: 32, 30: 32}
CHAIN = {17: 12, 23: 12, 26: 12, 30: 8}
VOLUME = {17: 40, 23: 104, 26: 104, 30: 96}


@dataclass
class PfSpec:
    version: int
    executable: str
    run_count: int
    last_runs: list[int]  # FILETIMEs, newest first (one kept before version 26)
    files: list[str]  # referenced files, device paths
    volume: str = "\\VOLUME{01d8a1b2c3d4e5f6-5a6b7c8d}"
    serial: int = 0x5A6B7C8D
    created: int = 132_000_000_000_000_000
    directories: list[str] = field(default_factory=list)
    prefetch_hash: int = 0x1A2B3C4D
    variant2: bool = False  # Windows 10 1903 on: 212-byte file information, run count at +116


def build(spec: PfSpec) -> bytes:
    v = spec.version
    info_size = 212 if spec.variant2 else FILE_INFO[v]
    metrics_at = 84 + info_size
    names = b"".join(f.encode("utf-16-le") + b"\0\0" for f in spec.files)
    offsets, at = [], 0
    for f in spec.files:
        offsets.append(at)
        at += 2 * len(f) + 2
    metrics = b""
    for index, (offset, name) in enumerate(zip(offsets, spec.files, strict=True)):
        if v == 17:
            metrics += struct.pack("<IIIII", index, 1, offset, len(name), 0x200)
        else:
            metrics += struct.pack("<IIIIIIQ", index, 1, 0, offset, len(name), 0x200, 0x0001_0000_0000_1000 + index)
    chains_at = metrics_at + len(metrics)
    chains = b"".join(
        (struct.pack("<IIBBH", 0xFFFFFFFF, 1, 2, 1, 1) if v != 30 else struct.pack("<IBBH", 1, 2, 1, 1))
        for _ in spec.files)
    names_at = chains_at + len(chains)
    volumes_at = names_at + len(names) + (-len(names) % 8)
    # one volume: the entry, then its device path, file references and directory strings
    device = spec.volume.encode("utf-16-le") + b"\0\0"
    refs = struct.pack("<II", 3 if v != 17 else 1, len(spec.files)) + bytes(8) + b"".join(
        struct.pack("<Q", 0x0001_0000_0000_1000 + i) for i in range(len(spec.files)))
    dirs = b"".join(struct.pack("<H", len(d)) + d.encode("utf-16-le") + b"\0\0" for d in spec.directories)
    entry_size = VOLUME[v]
    device_at = entry_size
    refs_at = device_at + len(device) + (-len(device) % 8)
    dirs_at = refs_at + len(refs)
    entry = struct.pack("<IIqIIIII", device_at, len(spec.volume), spec.created, spec.serial, refs_at, len(refs),
                        dirs_at, len(spec.directories))
    entry += bytes(entry_size - len(entry))
    volumes = entry + device + bytes(-len(device) % 8) + refs + dirs
    total = volumes_at + len(volumes)
    info = bytearray(info_size)
    struct.pack_into("<9I", info, 0, metrics_at, len(spec.files), chains_at, len(spec.files), names_at, len(names),
                     volumes_at, 1, len(volumes))
    if v == 17:
        struct.pack_into("<q", info, 36, spec.last_runs[0])
        struct.pack_into("<I", info, 60, spec.run_count)
    elif v == 23:
        struct.pack_into("<q", info, 44, spec.last_runs[0])
        struct.pack_into("<I", info, 68, spec.run_count)
    else:
        struct.pack_into("<8q", info, 44, *(spec.last_runs + [0] * 8)[:8])
        struct.pack_into("<I", info, 116 if spec.variant2 else 124, spec.run_count)
    name = spec.executable.encode("utf-16-le")[:58] + b"\0\0"
    header = struct.pack("<I4sII", v, b"SCCA", 0x11 if v >= 23 else 0x0F, total) + name + bytes(60 - len(name))
    header += struct.pack("<II", spec.prefetch_hash, 0)
    body = header + bytes(info) + metrics + chains + names + bytes(-len(names) % 8) + volumes
    assert len(body) == total
    return body


def _wim_chunks(work: Path, content: bytes) -> list[bytes]:
    """``content`` as wimlib compresses it: XPRESS (Huffman) chunks of 64 KiB from a WIM resource."""
    src = work / "mam-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "f").write_bytes(content)
    wim = work / "mam.wim"
    subprocess.run(["wimlib-imagex", "capture", str(src), str(wim), "--compress=xpress", "--chunk-size=65536",
                    "--no-acls"], check=True, capture_output=True)
    data = wim.read_bytes()
    table_size = int.from_bytes(data[0x30:0x37], "little")
    (table_at,) = struct.unpack_from("<Q", data, 0x38)
    table = data[table_at: table_at + table_size]
    digest = hashlib.sha1(content).digest()
    for at in range(0, len(table), 50):
        if table[at + 30: at + 50] != digest:
            continue
        stored = int.from_bytes(table[at: at + 7], "little")
        flags = table[at + 7]
        (where, original) = struct.unpack_from("<QQ", table, at + 8)
        assert original == len(content) and flags & 0x04, "wimlib stored it compressed"
        resource = data[where: where + stored]
        count = (len(content) + 65535) // 65536
        ends = [*struct.unpack_from(f"<{count - 1}I", resource), stored - 4 * (count - 1)]
        body = resource[4 * (count - 1):]
        starts = [0, *ends[:-1]]
        return [body[s:e] for s, e in zip(starts, ends, strict=True)]
    raise AssertionError("the file's blob is not in the WIM")


def mam(work: Path, raw: bytes) -> bytes:
    """``raw`` as Windows 10 stores a Prefetch file: ``MAM\\x04``, the size, the XPRESS Huffman stream.

    Longer than 64 KiB, the stream is wimlib's independent chunks laid end to end: one valid
    stream only when each chunk's bits end on the word where the next block's table starts (no
    padding word after them), which holds for some files and not others; sccainfo says which,
    and a test using such a file fails when it does not hold. The chunks never refer back into
    the previous block, which Windows' own stream may do."""
    chunks = _wim_chunks(work, raw)
    assert all(len(c) < 65536 for c in chunks), "a chunk was stored, not compressed"
    return b"MAM\x04" + struct.pack("<I", len(raw)) + b"".join(chunks)
