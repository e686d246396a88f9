"""Prefetch: ``Windows/Prefetch/*.pf``, what ran, how often, when last, and the files it touched.

Windows writes one file per program (and per hash of its path) when it starts it. Read here from
the format as libscca documents it (Windows Prefetch File format, J. Metz): versions 17 (XP,
2003), 23 (Vista, 7), 26 (8.1) and 30 (10, 11). Windows 10 and 11 store the file compressed:
``MAM`` then a method byte (4: XPRESS Huffman, with 0x80 when a CRC32 follows) and the
uncompressed size, then one XPRESS Huffman stream in 64 KiB blocks that may refer back across
blocks; it is decoded by ``wof.xpress_huffman``, the project's one decoder of [MS-XCA] 2.2.4.

The file gives the executable's name (29 characters at most), the run count, the last run time
(eight of them from version 26 on), the referenced files (device paths such as
``\\VOLUME{01d...}\\WINDOWS\\SYSTEM32\\NTDLL.DLL``) and the volumes. The program's own path is
the referenced file that ends with its name; the volume that holds ``\\WINDOWS\\`` is C:.
A file that cannot be read is a located problem; the other files are still judged.
Findings: ``execution.judge``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cranewatch.forensics.checks.base import excerpt
from cranewatch.forensics.windows.execution import (
    Artefact,
    Ran,
    drive_path,
    filetime,
    judge,
    system_volume,
)
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.forensics.wof import WofError, xpress_huffman
from cranewatch.model import Evidence, Finding

NAME = "windows_prefetch"
MAX_PREFETCH_BYTES = 16 << 20  # real files are tens to hundreds of KiB
_MAM_XPRESS_HUFFMAN = 4
_VOLUME_ENTRY = {17: 40, 23: 104, 26: 104, 30: 96}
_METRIC_ENTRY = {17: 20, 23: 32, 26: 32, 30: 32}
_LISTED_FILES = 10


class PrefetchError(ValueError):
    """The file is not a Prefetch file this reader knows, or it is damaged (the message says where)."""


@dataclass(frozen=True)
class Volume:
    device: str  # \VOLUME{...} or \DEVICE\HARDDISKVOLUME2
    serial: int
    created: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Prefetch:
    version: int
    executable: str
    prefetch_hash: int
    run_count: int
    last_runs: tuple[str, ...]  # ISO 8601 UTC, newest first
    files: tuple[str, ...]  # referenced files, device paths as recorded
    volumes: tuple[Volume, ...]
    compressed: bool

    @property
    def program(self) -> str:
        """The executable's device path among the referenced files, else its bare name."""
        name = self.executable.upper()
        for path in self.files:
            last = path.rsplit("\\", 1)[-1].upper()
            if last == name or (len(name) >= 29 and last.startswith(name)):
                return path
        return self.executable


def decompressed(data: bytes) -> tuple[bytes, bool]:
    """The uncompressed file (and whether it was a MAM file)."""
    if data[:3] != b"MAM":
        return data, False
    if len(data) < 8:
        raise PrefetchError("MAM header truncated")
    method = data[3]
    if method & 0x0F != _MAM_XPRESS_HUFFMAN:
        raise PrefetchError(f"MAM compression method 0x{method:02x} is not XPRESS Huffman (4)")
    (size,) = struct.unpack_from("<I", data, 4)
    if size > MAX_PREFETCH_BYTES:
        raise PrefetchError(f"MAM header claims {size} bytes uncompressed, more than {MAX_PREFETCH_BYTES}")
    start = 12 if method & 0x80 else 8  # a CRC32 after the size when the top bit is set
    try:
        return xpress_huffman(data[start:], size), True
    except WofError as exc:
        raise PrefetchError(f"MAM data not decompressed: {exc}") from exc


def parse(data: bytes) -> Prefetch:
    """The Prefetch file in ``data`` (compressed or not)."""
    raw, compressed = decompressed(data)
    try:
        return _parse(raw, compressed)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise PrefetchError(f"damaged: {exc}") from exc


def _parse(raw: bytes, compressed: bool) -> Prefetch:
    if len(raw) < 84 or raw[4:8] != b"SCCA":
        raise PrefetchError("no SCCA signature at byte 4")
    (version,) = struct.unpack_from("<I", raw)
    if version not in _VOLUME_ENTRY:
        raise PrefetchError(f"format version {version} is not 17, 23, 26 or 30")
    executable = _utf16(raw[16:76])
    (prefetch_hash,) = struct.unpack_from("<I", raw, 76)
    metrics_at, _metrics, _chains_at, _chains, names_at, names_size, volumes_at, volumes, volumes_size = (
        struct.unpack_from("<9I", raw, 84))
    info = 84
    if version == 17:
        stamps = [struct.unpack_from("<q", raw, info + 36)[0]]
        (run_count,) = struct.unpack_from("<I", raw, info + 60)
    elif version == 23:
        stamps = [struct.unpack_from("<q", raw, info + 44)[0]]
        (run_count,) = struct.unpack_from("<I", raw, info + 68)
    else:
        stamps = list(struct.unpack_from("<8q", raw, info + 44))
        # Windows 10 from 1903 writes a 212-byte file information (metrics at 0x128) with the
        # run count 8 bytes earlier than 8.1 and the first Windows 10 versions
        (run_count,) = struct.unpack_from("<I", raw, info + (116 if metrics_at == 0x128 else 124))
    if names_at + names_size > len(raw) or volumes_at + volumes_size > len(raw):
        raise PrefetchError(f"filename strings or volumes lie past the end of the {len(raw)}-byte file")
    files = tuple(name for name in raw[names_at: names_at + names_size].decode("utf-16-le", "replace")
                  .split("\x00") if name)
    entry = _VOLUME_ENTRY[version]
    found: list[Volume] = []
    for index in range(min(volumes, 64)):
        at = volumes_at + index * entry
        path_at, path_chars, created, serial = struct.unpack_from("<IIqI", raw, at)
        start = volumes_at + path_at
        device = raw[start: start + 2 * path_chars].decode("utf-16-le", "replace")
        found.append(Volume(device, serial, filetime(created)))
    last_runs = tuple(sorted((filetime(s) for s in stamps if s > 0), reverse=True))
    return Prefetch(version, executable, prefetch_hash, run_count, last_runs, files, tuple(found), compressed)


def _utf16(data: bytes) -> str:
    text = data.decode("utf-16-le", "replace")
    return text.split("\x00", 1)[0]


def check(win: WindowsTree) -> Iterator[Finding]:
    folder = win.find("Windows/Prefetch")
    if folder is None:
        return
    runs: list[Ran] = []
    for path in win.files_under(folder):
        if not path.lower().endswith(".pf"):
            continue
        data = win.read_bytes(path, limit=MAX_PREFETCH_BYTES)
        if data is None:
            win.problem(path, f"Prefetch file larger than {MAX_PREFETCH_BYTES} bytes, not read")
            continue
        try:
            pf = parse(data)
        except PrefetchError as exc:
            win.problem(path, f"Prefetch file not read ({exc})")
            continue
        device = system_volume(pf.files)
        program = drive_path(pf.program, device)
        last = pf.last_runs[0] if pf.last_runs else ""
        runs.append(Ran(program, last, Evidence(
            path=path, excerpt=excerpt(f"{pf.executable} ran {pf.run_count} times, last {last or '?'}", 240),
            values={"executable": pf.executable, "run_count": pf.run_count, "last_runs": list(pf.last_runs),
                    "version": pf.version, "referenced_files": len(pf.files),
                    "files": [drive_path(f, device) for f in pf.files[:_LISTED_FILES]],
                    "volumes": [v.device for v in pf.volumes]})))
    yield from judge(win, Artefact("prefetch", "Prefetch", folder, "last_run", ran_at=True), runs)
