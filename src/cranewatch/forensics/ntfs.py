"""NTFS volumes read without mounting: a bare partition image or a partition of a whole disk.

The reader is The Sleuth Kit through ``pytsk3`` (Apache-2.0 bindings; libtsk is CPL-1.0/IPL-1.0
and talloc LGPL-3.0, built into the wheel and used unmodified). pytsk3's own README warns that
libtsk has defects on hostile input, so the walk runs in a child process (``python -m
cranewatch.forensics.ntfs``) under address-space and CPU limits: a crash or a loop in libtsk
ends the child, not the scan, and what it extracted before is kept and the rest reported.

The same rules as the Linux inputs: names are checked (no ``..``, no ``/`` inside a name, path
length and depth), every file's declared size counts against the limits before a byte is
written, only regular files and directories are written, deleted entries and the NTFS metadata
files (``$MFT``, ``$LogFile`` …) are left out. A reparse point (junction, symbolic link, mount
point) becomes a symlink entry whose target is the Windows path it names: never followed, never
written to disk. Alternate data streams are extracted beside their file as ``name:stream`` so
every content check reads them; ``Zone.Identifier`` (the mark of the web) is counted, not kept.
A WOF-compressed file (``compact /exe``, CompactOS) is written decompressed (``forensics/wof.py``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from cranewatch.errors import EnvironmentProblem, ImageError, Location
from cranewatch.forensics import wof
from cranewatch.forensics.image import (
    _RAW_RATIO,
    Entry,
    Image,
    Limits,
    _Budget,
    _LimitReached,
    _SkipMember,
    _Unpacker,
    shown,
    summarise,
)

BOOT_MAGIC = b"NTFS    "  # bytes 3-10 of an NTFS volume boot record
_CHILD_MEMORY = 3 << 30  # libtsk holds the MFT's runs and directory indexes; far beyond a real volume's need
_CHILD_CPU_SECONDS = 3600
_ATTR_DATA = 0x80  # TSK_FS_ATTR_TYPE_NTFS_DATA
_ATTR_REPARSE = 0xC0  # TSK_FS_ATTR_TYPE_NTFS_REPARSE
_MAX_REPARSE = 16 << 10  # a reparse buffer is at most 16 KiB
_ZONE = "zone.identifier"
_REPARSE_TAGS = {0xA0000003: "junction", 0xA000000C: "symbolic link", 0x80000017: "WOF (compressed) file",
                 0x8000001B: "AppExecLink", 0x9000001A: "OneDrive placeholder"}


def is_ntfs(head: bytes) -> bool:
    """The first sector is an NTFS volume boot record."""
    return len(head) >= 512 and head[3:11] == BOOT_MAGIC


def open_ntfs(source: Path, limits: Limits, offset: int = 0, size: int | None = None) -> Image:
    """The NTFS volume at byte ``offset`` of ``source`` (a bare volume or a raw disk), extracted
    into a private directory by the child walker; ``ImageError`` when nothing can be read."""
    if importlib.util.find_spec("pytsk3") is None:
        raise EnvironmentProblem("NTFS volumes are read with pytsk3: install the 'windows' extra "
                                 "(pip install 'cranewatch[windows]')", Location(file=str(source), offset=offset or None))
    packed = size or source.stat().st_size
    out = _Unpacker(source, limits, packed)
    where = Location(file=str(source), offset=offset or None)
    try:
        job = {"source": str(source), "offset": offset, "size": packed, "root": str(out.root),
               "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__}}
        import cranewatch

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(cranewatch.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
        run = subprocess.run([sys.executable, "-m", "cranewatch.forensics.ntfs"], input=json.dumps(job), env=env,
                             capture_output=True, text=True, errors="surrogateescape", check=False,
                             preexec_fn=_child_limits)
        done = False
        for line in run.stdout.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "e" in record:
                path, kind, size_, link = record["e"]
                out.entries[path] = Entry(path, kind, 0o755 if kind == "dir" else 0o644, 0, 0, size_, link)
            elif "w" in record:
                out.warnings.append(record["w"])
            elif "p" in record:
                out.problems.append(record["p"])
            elif "error" in record:
                raise ImageError(f"not a readable NTFS volume: {record['error']}", where)
            elif "done" in record:
                done = True
        if not done:
            why = (f"killed by signal {-run.returncode}" if run.returncode < 0 else f"exit status {run.returncode}")
            tail = run.stderr.strip().splitlines()[-1:] if run.stderr.strip() else []
            text = (f"the NTFS reader (libtsk) stopped ({why}{': ' + tail[0][-200:] if tail else ''}) at byte "
                    f"{offset} of {source}")
            if not out.entries:
                raise ImageError(text, where)
            out.problems.append(f"{text}; the {len(out.entries)} entries read before it are scanned, the rest is not")
        image = out.finish("ntfs")
        image.problems = summarise(image.problems)
        return image
    except BaseException:
        out.tmp.cleanup()
        raise


def _child_limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_MEMORY, _CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (_CHILD_CPU_SECONDS, _CHILD_CPU_SECONDS))


# --- the child ----------------------------------------------------------------------------------


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()  # a crash later keeps what was said


class _Stream(io.RawIOBase):
    """One attribute of a TSK file as a stream, read in bounded blocks."""

    def __init__(self, handle: Any, attr_type: int, attr_id: int, size: int) -> None:
        self.handle, self.attr_type, self.attr_id, self.size, self.pos = handle, attr_type, attr_id, size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        want = left if n < 0 else min(n, left)
        if want <= 0:
            return b""
        block: bytes = self.handle.read_random(self.pos, want, self.attr_type, self.attr_id)
        if not block:
            raise OSError(f"libtsk read nothing at byte {self.pos} of a {self.size}-byte stream")
        self.pos += len(block)
        return block


def reparse_target(data: bytes) -> tuple[str, str]:
    """(kind, Windows path) of a reparse buffer: a junction's or symbolic link's substitute name."""
    if len(data) < 8:
        return "reparse point", ""
    tag = struct.unpack_from("<I", data)[0]
    kind = _REPARSE_TAGS.get(tag, f"reparse point (tag 0x{tag:08x})")
    if tag not in (0xA0000003, 0xA000000C) or len(data) < 16:
        return kind, ""
    sub_off, sub_len, print_off, print_len = struct.unpack_from("<HHHH", data, 8)
    base = 16 + (4 if tag == 0xA000000C else 0)
    off, length = (print_off, print_len) if print_len else (sub_off, sub_len)
    return kind, data[base + off : base + off + length].decode("utf-16-le", "replace")


def _tsk_message(exc: BaseException) -> str:
    """libtsk's error without pytsk3's source locations: ``Cannot determine file system type``."""
    text = " ".join(str(exc).split())
    found = re.search(r"with error: (.*)", text)
    text = found[1] if found else re.sub(r"\w+: \(tsk3\.cpp:\d+\) ", "", text)
    return text[-240:]


def _walk(job: dict[str, Any]) -> None:  # pragma: no cover - runs in the child, tested through open_ntfs
    import pytsk3

    limits = Limits(**job["limits"])
    out = _Unpacker(Path(job["source"]), limits, job["size"])
    out.tmp.cleanup()  # the parent's directory is written instead
    out.root = Path(job["root"])
    out.budget = _Budget(replace(limits, max_ratio=min(limits.max_ratio, _RAW_RATIO)), job["size"])
    try:
        fs = pytsk3.FS_Info(pytsk3.Img_Info(job["source"]), offset=job["offset"])
        if fs.info.ftype not in (pytsk3.TSK_FS_TYPE_NTFS,):
            _emit({"error": f"libtsk reads it as filesystem type {fs.info.ftype}, not NTFS"})
            return
        top = fs.open_dir(path="/")
    except OSError as exc:
        _emit({"error": _tsk_message(exc) or "libtsk cannot open it"})
        return
    seen: dict[int, str] = {}  # MFT entry -> first path (hard links)
    zone = 0
    said = 0
    stack: list[tuple[str, Any, int]] = [("", top, 0)]
    path = ""

    def report() -> None:
        nonlocal said
        for text in out.problems[said:]:
            _emit({"p": text})
        said = len(out.problems)

    try:
        while stack:
            parent, directory, depth = stack.pop()
            try:
                members = list(directory)
            except OSError as exc:
                out.skip(parent or ".", f"directory cannot be listed by libtsk ({_tsk_message(exc)})")
                report()
                continue
            for member in members:
                info = member.info
                raw = info.name.name
                name = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
                if name in (".", "..") or info.meta is None:
                    continue
                if not int(info.name.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC):
                    continue  # deleted: its clusters may hold anything by now
                if not parent and (name.startswith("$") or name == "System Volume Information"):
                    continue  # NTFS metadata, TSK's virtual $OrphanFiles, shadow copies
                path = f"{parent}/{name}" if parent else name
                if "/" in name or "\x00" in name:
                    out.refused.append(path)
                    continue
                clean = out.name(path)
                if not clean:
                    report()
                    continue
                try:
                    zone += _member(out, member, clean, depth, stack, seen)
                except _SkipMember as skip:
                    out.skip(clean, str(skip))
                except OSError as exc:
                    out.skip(clean, f"libtsk cannot read it ({_tsk_message(exc)})")
                report()
    except _LimitReached as limit:
        out.stop(path, str(limit))
    report()
    if zone:
        _emit({"w": f"{zone} alternate data stream(s) Zone.Identifier (the mark of the web of downloaded files) "
                    "not extracted"})
    out.finish("ntfs")  # adds the refused names to the problems
    for text in out.warnings:
        _emit({"w": text})
    report()
    _emit({"done": True})


def _member(out: _Unpacker, member: Any, path: str, depth: int, stack: list[tuple[str, Any, int]],
            seen: dict[int, str]) -> int:  # pragma: no cover - runs in the child
    """Extract one directory entry; the number of Zone.Identifier streams left out."""
    import pytsk3

    meta = member.info.meta
    attrs = list(member)
    reparse = next((a for a in attrs if int(a.info.type) == _ATTR_REPARSE), None)
    wof_algo = None
    if reparse is not None:
        size = min(int(reparse.info.size), _MAX_REPARSE)
        data = member.read_random(0, size, _ATTR_REPARSE, reparse.info.id) if size else b""
        kind, target = reparse_target(data)
        if kind == "WOF (compressed) file":  # an ordinary file that Windows decompresses itself: so do we
            try:
                wof_algo = wof.algorithm(data)
            except wof.WofError as exc:
                out.problems.append(f"{shown(path)}: {exc}: its content is not read")
        else:
            out.add_symlink(path, target, 0o777, 0, 0)
            _emit({"e": [path, "symlink", len(target), target]})
            if meta.type == pytsk3.TSK_FS_META_TYPE_DIR:
                out.warnings.append(f"{shown(path)}: {kind} to {shown(target)!r} not followed")
            return 0
    if meta.type == pytsk3.TSK_FS_META_TYPE_DIR:
        out.add_dir(path, 0o755, 0, 0)
        _emit({"e": [path, "dir", 0, None]})
        stack.append((path, member.as_directory(), depth + 1))
        return 0
    if meta.type != pytsk3.TSK_FS_META_TYPE_REG:
        out.add_special(path)
        return 0
    first = seen.get(int(meta.addr))
    if first is not None:
        out.add_hardlink(path, first, 0o644, 0, 0)
        _emit({"e": [path, "file", out.entries[path].size, None]})
        return 0
    seen[int(meta.addr)] = path
    zone = 0
    default = None
    streams = []
    for attr in attrs:
        if int(attr.info.type) != _ATTR_DATA:
            continue
        stream = attr.info.name
        stream = stream.decode("utf-8", "surrogateescape") if isinstance(stream, bytes) else (stream or "")
        if stream in ("", "$Data"):
            default = default or attr
        elif stream.lower() == _ZONE:
            zone += 1
        else:
            streams.append((stream, attr))
    size = int(default.info.size) if default is not None else 0
    packed = next((a for name, a in streams if name == wof.STREAM), None)
    if wof_algo is not None and packed is not None and size:
        if (note := wof.slow_note()) and note not in out.warnings:
            out.warnings.append(note)
        try:
            content = wof.WofStream(_reader(member, int(packed.info.id)), int(packed.info.size), size, wof_algo)
            out.add_file(path, cast(BinaryIO, content), 0o644, 0, 0, size)
        except wof.WofError as exc:
            out.problems.append(f"{shown(path)}: WOF-compressed ({wof.ALGORITHMS[wof_algo][0]}) but {exc}; its "
                                f"compressed stream is scanned as {shown(path)}:{wof.STREAM} instead")
        else:
            _emit({"e": [path, "file", out.entries[path].size, None]})
            return zone + _streams(out, member, path, [(n, a) for n, a in streams if a is not packed])
    elif wof_algo is not None:
        out.problems.append(f"{shown(path)}: a WOF reparse point without its {wof.STREAM} stream: its content "
                            "is not read")
    if default is None or size == 0:
        out.add_file(path, io.BytesIO(b""), 0o644, 0, 0, 0)
    else:
        out.add_file(path, cast(BinaryIO, _Stream(member, _ATTR_DATA, int(default.info.id), size)), 0o644, 0, 0, size)
    _emit({"e": [path, "file", out.entries[path].size, None]})
    return zone + _streams(out, member, path, streams)


def _reader(member: Any, attr_id: int) -> Any:  # pragma: no cover - runs in the child
    """``read_at(offset, n)`` over one data attribute of a TSK file."""

    def read_at(offset: int, n: int) -> bytes:
        parts = []
        while n > 0:
            block: bytes = member.read_random(offset, n, _ATTR_DATA, attr_id)
            if not block:
                break
            parts.append(block)
            offset += len(block)
            n -= len(block)
        return b"".join(parts)

    return read_at


def _streams(out: _Unpacker, member: Any, path: str, streams: list[tuple[str, Any]]) -> int:  # pragma: no cover
    """Extract a file's named streams beside it as ``name:stream``."""
    for stream, attr in streams:
        ads = out.name(f"{path}:{stream}") if "/" not in stream else None
        if ads is None:
            out.refused.append(f"{path}:{stream}")
            continue
        ads_size = int(attr.info.size)
        try:
            out.add_file(ads, cast(BinaryIO, _Stream(member, _ATTR_DATA, int(attr.info.id), ads_size)), 0o644, 0, 0, ads_size)
        except _SkipMember as skip:
            out.skip(ads, str(skip))
            continue
        out.warnings.append(f"{shown(path)}: alternate data stream {shown(stream)!r} ({ads_size} bytes) scanned as "
                            f"{shown(ads)}")
        _emit({"e": [ads, "file", out.entries[ads].size, None]})
    return 0


def main() -> None:  # pragma: no cover - the child's entry point
    _walk(json.loads(sys.stdin.read()))


if __name__ == "__main__":  # pragma: no cover
    main()
