"""Read-only access to a crane's filesystem image, whatever its container.

One abstraction, ``Image``: a table of ``Entry`` records (image-relative path, type, mode, uid,
gid, size, link target) and a way to stream a regular file's content. Directory trees are read
in place; tar (gz/xz/bz2/zst), zip and cpio (newc) archives are unpacked by this module's own
code, and squashfs (``unsquashfs``) and ext2/3/4 images (``debugfs rdump``, never mounted) by
the e2fsprogs/squashfs tools, into a private temporary directory, so that every later check
reads plain files and each file once.

Safety rules, the lessons of the tools analysts use today:
- nothing from the image is ever executed, and symlinks are never followed on the host: they
  are entries, resolved (``Image.resolve``) against the image root, absolute links included;
- member names that climb out of the root (``../``, absolute paths) are refused;
- device files, FIFOs and sockets are skipped with a note;
- member counts, sizes, path lengths and depths, total bytes and the expansion ratio of
  archives are capped (``Limits``). The image is the adversary's: no limit ends the scan. A
  member over a per-member limit is skipped, a limit of the whole image stops the unpacking,
  and what was read is scanned; each is a *problem* (``Image.problems``) that marks the scan
  incomplete, with the member it concerns.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import zstandard

from cranewatch.errors import EnvironmentProblem, ImageError, Location

EntryType = Literal["file", "dir", "symlink"]
ImageFormat = Literal["dir", "tar", "zip", "cpio", "squashfs", "ext", "ntfs", "disk", "firmware"]

_COPY_BLOCK = 1 << 20
_RAW_RATIO = 4.0  # content bytes per byte of an uncompressed filesystem image
_MAX_LINK_HOPS = 40


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep a hostile or broken image from exhausting the analysis station."""

    max_total_bytes: int = 16 << 30  # content bytes unpacked or read
    max_files: int = 1_000_000  # members of every kind (files, directories, links)
    max_ratio: float = 200.0  # unpacked bytes per archive byte, checked past ``ratio_floor``
    ratio_floor: int = 64 << 20  # small archives of zeros are not bombs
    max_member_bytes: int = 4 << 30  # one file's content
    max_path_bytes: int = 4096  # PATH_MAX: no running system can open a longer path
    max_depth: int = 256  # directory levels of one path
    # Members per MiB of archive, checked past ``member_floor`` members: empty members cost a
    # few bytes each compressed, but time each; real images hold content (Debian minbase:
    # ~200/MiB; a zip of 60,000 small source files: ~1,200/MiB).
    max_members_per_mib: int = 2_000
    member_floor: int = 20_000


_MAX_PROBLEMS = 50  # problems listed one by one; the rest are counted


def shown(name: str, limit: int = 120) -> str:
    """A member name fit for a message: control characters escaped, a long name shortened
    (head and tail kept, with its length)."""
    clean = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in name)
    if len(clean) <= limit:
        return clean
    return f"{clean[: limit * 2 // 3]}…{clean[-limit // 4 :]} ({len(name.encode('utf-8', 'surrogateescape'))} bytes)"


def summarise(problems: list[str]) -> list[str]:
    """``problems`` with at most ``_MAX_PROBLEMS`` listed and the rest counted."""
    if len(problems) <= _MAX_PROBLEMS:
        return problems
    return [*problems[:_MAX_PROBLEMS], f"… and {len(problems) - _MAX_PROBLEMS} more problem(s) of the same kinds"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of the image. ``path`` is image-relative POSIX, without a leading slash."""

    path: str
    type: EntryType
    mode: int  # permission bits including setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    link: str | None = None  # symlink target exactly as stored

    @property
    def is_suid(self) -> bool:
        return self.type == "file" and bool(self.mode & (stat.S_ISUID | stat.S_ISGID))


@dataclass
class Image:
    """An opened image: its entries and where each regular file's bytes are on disk.

    Use as a context manager; a private unpack directory is removed on close.
    """

    source: Path
    format: ImageFormat
    root: Path  # directory holding the content (the input itself for a directory tree)
    entries: dict[str, Entry]
    warnings: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    # What could not be read: members skipped or not reached, unreadable files and directories.
    # Not empty means the scan is incomplete (exit 3), though everything else was scanned.
    problems: list[str] = field(default_factory=list)

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def disk_path(self, path: str) -> Path:
        """Where a regular file's content lies (inside ``root``; never a symlink's target)."""
        return self.root / path

    def open(self, path: str) -> BinaryIO:
        """Open a regular file for streaming; refuses anything but a regular file in the image."""
        entry = self.entries.get(path)
        if entry is None or entry.type != "file":
            raise ImageError("not a regular file in the image", Location(file=str(self.source), path=path))
        try:
            fd = os.open(self.disk_path(path), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOCTTY", 0))
        except FileNotFoundError:
            if entry.size == 0 and self._tmp is not None:
                return io.BytesIO(b"")  # unpacked archives keep empty files as entries only
            raise
        return os.fdopen(fd, "rb")

    def read_text(self, path: str, limit: int = 4 << 20) -> str | None:
        """A small text file's content (``None`` if missing, not a file or larger than ``limit``)."""
        real = self.resolve(path)
        entry = self.entries.get(real) if real is not None else None
        if entry is None or entry.type != "file" or entry.size > limit or real is None:
            return None
        try:
            with self.open(real) as fh:
                return fh.read(limit).decode("utf-8", "replace")
        except OSError:
            return None  # unreadable: the file pass reports it as a problem of the scan

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        """Resolve ``path`` inside the image as a chroot would; ``None`` if it does not exist.

        Absolute link targets resolve against the image root and ``..`` stops at the root,
        so no link, however written, leads out of the image. Loops give ``None``.
        """
        parts = [p for p in path.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            entry = self.entries.get(candidate)
            if entry is None:
                return None
            if entry.type == "symlink" and (parts or follow_last):
                hops += 1
                if hops > _MAX_LINK_HOPS or entry.link is None:
                    return None
                target = [p for p in entry.link.split("/") if p not in ("", ".")]
                if entry.link.startswith("/"):
                    resolved = []
                parts = target + parts
                continue
            resolved.append(part)
        return "/".join(resolved)

    def canonical(self, path: str) -> str:
        """``path`` with its directories resolved (the last part kept), for package lists.

        dpkg records ``/bin/ls`` while the file is ``usr/bin/ls`` behind the ``bin`` link.
        """
        clean = path.strip("/")
        parent, _, name = clean.rpartition("/")
        if not parent:
            return clean
        real_parent = self.resolve(parent)
        if real_parent is None:
            return clean
        return f"{real_parent}/{name}" if real_parent else name

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries.values() if e.type == "file")


def _clean_member_name(name: str) -> str | None:
    """The image-relative form of an archive member name, or ``None`` if it escapes the root."""
    name = name.replace("\\", "/")
    if name.startswith("/"):
        return None  # absolute member names are how archives overwrite host files
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or "\x00" in name:
        return None
    return "/".join(parts)


class _LimitReached(Exception):
    """A limit of the whole image was reached: unpacking stops, what was unpacked is scanned."""


class _SkipMember(Exception):
    """This member cannot be kept (the message says why); the next one is read."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class _Budget:
    """Counts members and bytes while unpacking, against the limits.

    Sizes are counted as each member declares them, before its content is decompressed, so a
    bomb is stopped by its header; the running count of written bytes guards formats whose
    declared sizes could lie.
    """

    def __init__(self, limits: Limits, packed_size: int) -> None:
        self.limits = limits
        self.packed_size = max(packed_size, 1)
        self.members = 0
        self.bytes = 0  # content kept
        self.seen = 0  # content decompressed, kept or not: the bomb ratio's numerator
        self.written = 0

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_files:
            raise _LimitReached(
                f"more than {self.limits.max_files} members (file-count limit; raise it with --max-files "
                "if the image is genuine)"
            )
        if self.members > self.limits.member_floor and self.members > self.limits.max_members_per_mib * self.packed_size / (1 << 20):
            raise _LimitReached(
                f"more than {self.limits.max_members_per_mib} members per MiB of archive ({self.members} from "
                f"{self.packed_size} bytes): looks like a member-count bomb"
            )

    def add_content(self, size: int) -> None:
        """Count one member's ``size`` content bytes; ``_SkipMember`` if it alone is too large."""
        self.seen += size
        if size <= self.limits.max_member_bytes and self.bytes + size > self.limits.max_total_bytes:
            raise _LimitReached(
                f"content exceeds {self.limits.max_total_bytes} bytes (size limit; raise it with --max-bytes "
                "if the image is genuine)"
            )
        if self.seen > self.limits.ratio_floor and self.seen / self.packed_size > self.limits.max_ratio:
            # Skipped members count too: the decompressor still has to run through them.
            raise _LimitReached(
                f"content expands more than {self.limits.max_ratio:.0f}x ({self.seen} bytes from "
                f"{self.packed_size}): looks like an archive bomb (or sparse-file bomb)"
            )
        if size > self.limits.max_member_bytes:
            raise _SkipMember(
                f"{size} bytes, more than the {self.limits.max_member_bytes}-byte limit of one file"
            )
        self.bytes += size

    def add_written(self, n: int) -> None:
        self.written += n
        if self.written > self.bytes:
            raise _LimitReached("a member holds more content than its header declares")


class _Unpacker:
    """Writes members into a private directory; only regular files and directories touch disk."""

    def __init__(self, source: Path, limits: Limits, packed_size: int) -> None:
        self.source = source
        self.limits = limits
        self.tmp = tempfile.TemporaryDirectory(prefix="cranewatch-image-")
        self.root = Path(self.tmp.name) / "root"
        self.root.mkdir(mode=0o700)
        self.entries: dict[str, Entry] = {}
        self.warnings: list[str] = []
        self.problems: list[str] = []
        self.budget = _Budget(limits, packed_size)
        self._made: set[str] = set()  # directories created on disk (they never become anything else)
        self.skipped_special: list[str] = []
        self.refused: list[str] = []
        self.partial = False  # a member was skipped or unpacking stopped early

    def name(self, raw: str) -> str | None:
        """The member's image path, or ``None`` (with the reason recorded) if it is not kept."""
        clean = _clean_member_name(raw)
        if clean is None:
            self.refused.append(raw)
            return None
        size = len(clean.encode("utf-8", "surrogateescape"))
        if size > self.limits.max_path_bytes:
            self.skip(clean, f"path of {size} bytes, longer than the {self.limits.max_path_bytes}-byte limit")
            return None
        depth = clean.count("/") + 1
        if depth > self.limits.max_depth:
            self.skip(clean, f"{depth} directory levels deep, more than the limit of {self.limits.max_depth}")
            return None
        return clean

    def skip(self, path: str, why: str) -> None:
        self.partial = True
        self.problems.append(f"{shown(path)}: {why}: not scanned")

    def stop(self, path: str, why: str) -> None:
        """Unpacking ends at member ``path``: the members before it are scanned, the rest are not."""
        self.partial = True
        where = f" at member {self.budget.members} ({shown(path)})" if path else ""
        self.problems.append(
            f"stopped reading the image{where}: {why}; the {len(self.entries)} entries before it are "
            "scanned, the rest of the image is not"
        )

    def add_dir(self, path: str, mode: int, uid: int, gid: int) -> None:
        if not path:
            return
        self._mkdirs(path)  # counts the directory as a member if it is new
        self.entries[path] = Entry(path, "dir", stat.S_IMODE(mode), uid, gid, 0)

    def add_symlink(self, path: str, target: str, mode: int, uid: int, gid: int) -> None:
        existing = self.entries.get(path)
        if existing is not None and existing.type == "dir":
            raise _SkipMember("a symlink and a directory share this name; kept the directory")
        self.budget.add_member()
        self._mkdirs(path.rpartition("/")[0])
        self.entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), uid, gid, len(target), target)

    def add_special(self, path: str) -> None:
        self.skipped_special.append(path)

    def add_file(
        self, path: str, stream: IO[bytes] | BinaryIO | _Limited, mode: int, uid: int, gid: int, size: int
    ) -> None:
        """Write one member of ``size`` declared bytes (the limits are checked before reading)."""
        self.budget.add_member()
        self.budget.add_content(size)
        dest = self._destination(path)
        if size == 0:  # nothing to write: ``Image.open`` gives empty content for it
            self.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, 0)
            return
        self._copy(stream, dest, path)
        self.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, os.stat(dest).st_size)

    def add_hardlink(self, path: str, raw_target: str, mode: int, uid: int, gid: int) -> None:
        """A second name for an unpacked file: linked on disk (no copy), counted as read again."""
        target = _clean_member_name(raw_target) or ""
        entry = self.entries.get(target)
        if entry is None or entry.type != "file":
            self.warnings.append(f"{shown(path)}: hard link to missing or unsafe {shown(raw_target)!r} skipped")
            return
        self.budget.add_member()
        self.budget.add_content(entry.size)  # every name is scanned: a thousand links are read a thousand times
        dest = self._destination(path)
        try:
            if entry.size:
                os.link(self.root / target, dest, follow_symlinks=False)
        except OSError as exc:
            raise _SkipMember(f"cannot be stored ({exc.strerror})") from None
        self.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, entry.size)

    def _destination(self, path: str) -> str:
        self._mkdirs(path.rpartition("/")[0])
        dest = f"{self.root}/{path}"
        existing = self.entries.get(path)
        if existing is not None and existing.type == "dir":
            raise _SkipMember("a file and a directory share this name; kept the directory")
        if existing is not None:
            # A member given twice: the later one wins, as with tar -x. Unlink first: the old
            # name may share its inode with a hard link, which must keep its own content.
            del self.entries[path]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
        return dest

    def _copy(self, stream: IO[bytes] | BinaryIO | _Limited, dest: str, path: str) -> None:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise self._no_room(exc, path) from None
            raise _SkipMember(f"cannot be stored ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(_COPY_BLOCK)  # a read error is the archive's: reported by the caller
                    if not block:
                        break
                    self.budget.add_written(len(block))
                    try:
                        out.write(block)
                    except OSError as exc:
                        if exc.errno in _DISK_FULL:
                            raise self._no_room(exc, path) from None
                        raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(dest)  # no half-written member is scanned
            raise

    def _no_room(self, exc: OSError, path: str) -> EnvironmentProblem:
        return EnvironmentProblem(
            f"cannot unpack into {tempfile.gettempdir()}: {exc.strerror} (set TMPDIR to a "
            "directory on a disk with room for the unpacked image)",
            Location(file=str(self.source), path=shown(path)),
        )

    def _mkdirs(self, path: str) -> None:
        if not path or path in self._made:
            return
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in self.entries and self.entries[sub].type != "dir":
                # A member below a symlink or file: never write through it on disk.
                raise _SkipMember(f"below the non-directory {shown(sub)}")
        try:
            os.makedirs(f"{self.root}/{path}", mode=0o700, exist_ok=True)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise self._no_room(exc, path) from None
            raise _SkipMember(f"cannot be stored ({exc.strerror})") from None
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self.entries:
                self.budget.add_member()
                self.entries[sub] = Entry(sub, "dir", 0o755, 0, 0, 0)
            self._made.add(sub)

    def finish(self, fmt: ImageFormat) -> Image:
        if self.refused:
            listed = ", ".join(repr(shown(r)) for r in self.refused[:5])
            self.problems.append(
                f"refused {len(self.refused)} member(s) whose names leave the image root "
                f"(path traversal), not scanned: {listed}"
            )
        if self.skipped_special:
            listed = ", ".join(shown(p) for p in self.skipped_special[:5])
            self.warnings.append(
                f"skipped {len(self.skipped_special)} device file(s), FIFO(s) or socket(s): {listed}"
            )
        return Image(
            self.source, fmt, self.root, self.entries, self.warnings, self.tmp, summarise(self.problems)
        )


# --- format detection -------------------------------------------------------------------------

_COMPRESSIONS: dict[bytes, str] = {
    b"\x1f\x8b": "gz",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bz2",
    b"\x28\xb5\x2f\xfd": "zst",
}


def _compression(head: bytes) -> str | None:
    for magic, name in _COMPRESSIONS.items():
        if head.startswith(magic):
            return name
    return None


_DECOMPRESSORS = {"gz": ("gzip", "-dc"), "xz": ("xz", "-dc"), "bz2": ("bzip2", "-dc"), "zst": ("zstd", "-dcq")}


class _PipeReader(io.RawIOBase):
    """stdout of a decompressor process (the image's bytes go in, never out to a shell)."""

    def __init__(self, argv: list[str], path: Path) -> None:
        self._source = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(argv, stdin=self._source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self._proc.stdout is not None
        self._out = self._proc.stdout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._out.read1(len(buffer)) if hasattr(self._out, "read1") else self._out.read(len(buffer))
        if not data:
            if self._proc.wait() != 0:
                err = self._proc.stderr.read().decode("utf-8", "replace").strip() if self._proc.stderr else ""
                raise OSError(f"decompression failed: {err[-200:]}")
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._out.close()
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._source.close()
        super().close()


def _open_decompressed(path: Path, compression: str | None) -> BinaryIO:
    """A stream of the decompressed bytes; the standard tool in a second process when it is
    installed (decompression then runs on another core), else Python's own module."""
    tool = _DECOMPRESSORS.get(compression or "")
    if tool is not None and shutil.which(tool[0]):
        return io.BufferedReader(_PipeReader([shutil.which(tool[0]) or tool[0], tool[1]], path), 1 << 20)
    if compression == "gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if compression == "zst":
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return open(path, "rb")


def detect_format(path: Path) -> tuple[ImageFormat, str | None]:
    """The container format and outer compression of ``path``; ``ImageError`` if unknown."""
    where = Location(file=str(path))
    if path.is_dir():
        return "dir", None
    if not path.exists():
        raise ImageError("no such image file or directory", where)
    if not path.is_file():
        raise ImageError("not a regular file or directory (device, FIFO or socket)", where)
    size = path.stat().st_size
    if size == 0:
        raise ImageError("the image is empty (0 bytes)", where)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"hsqs"):
        return "squashfs", None
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext", None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip", None
    if head[3:11] == b"NTFS    " and head[510:512] == b"\x55\xaa":
        return "ntfs", None
    compression = _compression(head)
    if compression is not None:
        try:
            with _open_decompressed(path, compression) as inner:
                head = inner.read(512)
        except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise ImageError(f"corrupt {compression} stream: {exc}", where) from None
    if head.startswith((b"070701", b"070702", b"070707")):
        return "cpio", compression
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar", compression
    from cranewatch.forensics import disk  # disk.py builds on this module's Image

    if (disk.looks_like_partition_table(head) if compression else disk.sniff_container(path) is not None):
        return "disk", compression
    # Anything else may be a vendor's update package or firmware: searched for embedded
    # filesystems and archives (forensics/carve.py), the unknown format when none is found.
    return "firmware", None


def open_image(path: str | os.PathLike[str], limits: Limits | None = None) -> Image:
    """Open ``path`` read-only as an ``Image``; the caller closes it (or uses ``with``).

    ``ImageError`` only when nothing at all can be read; a limit reached or damage met after
    the first members is a problem of the returned image. A root filesystem wrapped in a
    folder (``tar czf x.tgz rootfs/``) is found and becomes the image's root.
    """
    source = Path(path)
    limits = limits or Limits()
    fmt, compression = detect_format(source)
    if fmt == "dir":
        return _rooted(_open_dir(source, limits))
    if fmt == "disk":
        from cranewatch.forensics.disk import open_disk

        return open_disk(source, limits, compression)
    if fmt == "firmware":
        from cranewatch.forensics.carve import open_firmware

        return open_firmware(source, limits)
    packed = source.stat().st_size
    unpacker = _Unpacker(source, limits, packed)
    try:
        if fmt == "tar":
            _unpack_tar(source, compression, unpacker)
        elif fmt == "zip":
            _unpack_zip(source, unpacker)
        elif fmt == "cpio":
            _unpack_cpio(source, compression, unpacker)
        elif fmt == "squashfs":
            return _rooted(_open_squashfs(source, unpacker))
        elif fmt == "ext":
            return _rooted(_open_ext(source, unpacker, limits))
        elif fmt == "ntfs":
            from cranewatch.forensics.ntfs import open_ntfs

            unpacker.tmp.cleanup()
            return _rooted(open_ntfs(source, limits))
    except BaseException:
        unpacker.tmp.cleanup()
        raise
    return _rooted(unpacker.finish(fmt))


# What makes a directory the root of an operating system: its package databases first, then
# the directories every Linux root has.
_PACKAGE_DATABASES = ("var/lib/dpkg/status", "usr/lib/opkg/status", "var/lib/opkg/status", "lib/apk/db/installed",
                      "var/lib/rpm", "usr/lib/sysimage/rpm")


def _looks_like_root(entries: dict[str, Entry], prefix: str) -> int:
    """How strongly ``prefix`` (``""`` or ``"dir/"``) looks like a root: 2 with a package
    database, 1 with ``etc/`` beside ``usr/`` or ``bin/``, 0 otherwise."""
    def has(path: str) -> bool:
        return prefix + path in entries

    if any(has(db) for db in _PACKAGE_DATABASES):
        return 2
    etc = entries.get(prefix + "etc")
    return int(etc is not None and etc.type == "dir" and (has("usr") or has("bin")))


_WINDOWS_CONFIG = "windows/system32/config"


def find_root(entries: dict[str, Entry]) -> str:
    """The directory holding the operating system (``""`` when it is the image's top), e.g.
    ``"rootfs"`` for an archive made with ``tar czf x.tgz rootfs/``."""
    if _looks_like_root(entries, ""):
        return ""  # a root already (a chroot inside it is part of it)
    if any(path.lower() == _WINDOWS_CONFIG for path in entries):
        return ""  # a Windows system drive: Git for Windows or Cygwin inside it carry etc/ and usr/ too
    # A collection tool's layout: the drive in a folder of its own (KAPE's "C/", Velociraptor's
    # "uploads/auto/C%3A/"); the shallowest such drive.
    drives = sorted((path[: -len(_WINDOWS_CONFIG) - 1], path.count("/")) for path, entry in entries.items()
                    if entry.type == "dir" and path.lower().endswith("/" + _WINDOWS_CONFIG))
    drive = min(drives, key=lambda d: (d[1], d[0]))[0] if drives else None
    best = ("", 0, 0)
    for path, entry in entries.items():
        if entry.type != "dir" or not path.endswith("/etc"):
            continue
        parent = path[: -len("/etc")]
        score = _looks_like_root(entries, parent + "/")
        depth = parent.count("/")
        if score > best[1] or (score == best[1] and score and depth < best[2]):
            best = (parent, score, depth)
    if drive is not None and not (best[1] and (drive.startswith(best[0] + "/") or best[2] < drive.count("/"))):
        return drive  # a Windows drive, not one inside (or beside and below) a Linux root
    return best[0]


def _rooted(image: Image) -> Image:
    """``image`` re-rooted at the folder holding the operating system, if it is wrapped."""
    root = find_root(image.entries)
    if not root:
        return image
    prefix = root + "/"
    inside = {path[len(prefix) :]: replace(entry, path=path[len(prefix) :])
              for path, entry in image.entries.items() if path.startswith(prefix)}
    outside = sorted(path for path in image.entries if not path.startswith(prefix) and not root.startswith(path + "/") and path != root)
    image.warnings.append(
        f"the root filesystem is the folder {shown(root)}/ of the image (its paths are reported from there)"
        + (f"; {len(outside)} entries beside it are not part of it and not scanned: "
           f"{', '.join(shown(p) for p in outside[:5])}" if outside else "")
    )
    image.entries = inside
    image.root = image.root / root
    return image


def _damaged(out: _Unpacker, what: str, where: Location) -> None:
    """The archive is damaged: an error if nothing was read, else a problem (the rest is scanned)."""
    if not out.entries:
        raise ImageError(what, where)
    out.partial = True
    out.problems.append(f"{where}: {what}; the {len(out.entries)} entries before the damage are scanned")


# --- directory tree -----------------------------------------------------------------------------


def _open_dir(root: Path, limits: Limits, fmt: ImageFormat = "dir") -> Image:
    entries: dict[str, Entry] = {}
    special: list[str] = []
    problems: list[str] = []
    total = 0
    over: list[str] = []  # files past the size limit, listed but not scanned
    stack = [""]
    stopped = False
    while stack and not stopped:
        rel = stack.pop()
        try:
            scan = os.scandir(root / rel if rel else root)
        except OSError as exc:
            problems.append(f"{shown(rel or '.')}/: directory cannot be listed ({exc.strerror}): what it holds is not scanned")
            continue
        with scan:
            for item in scan:
                path = f"{rel}/{item.name}" if rel else item.name
                if len(entries) >= limits.max_files:
                    problems.append(
                        f"stopped listing at {shown(path)}: more than {limits.max_files} entries (file-count "
                        "limit; raise it with --max-files if the image is genuine); the rest is not scanned"
                    )
                    stopped = True
                    break
                try:
                    st = item.stat(follow_symlinks=False)
                    link = os.readlink(item.path) if stat.S_ISLNK(st.st_mode) else None
                except OSError as exc:
                    problems.append(f"{shown(path)}: cannot be read ({exc.strerror}): not scanned")
                    continue
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    entries[path] = Entry(path, "dir", stat.S_IMODE(mode), st.st_uid, st.st_gid, 0)
                    stack.append(path)
                elif link is not None:
                    entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), st.st_uid, st.st_gid, len(link), link)
                elif stat.S_ISREG(mode):
                    if st.st_size > limits.max_member_bytes or total + st.st_size > limits.max_total_bytes:
                        over.append(path)
                        continue
                    total += st.st_size
                    entries[path] = Entry(path, "file", stat.S_IMODE(mode), st.st_uid, st.st_gid, st.st_size)
                else:
                    special.append(path)
    if over:
        problems.append(
            f"{len(over)} file(s) over the size limits ({limits.max_member_bytes} bytes a file, "
            f"{limits.max_total_bytes} in all; --max-bytes) not scanned: {', '.join(shown(p) for p in over[:5])}"
        )
    warnings = []
    if special:
        listed = ", ".join(shown(p) for p in sorted(special)[:5])
        warnings.append(f"skipped {len(special)} device file(s), FIFO(s) or socket(s): {listed}")
    return Image(root, fmt, root, entries, warnings, problems=summarise(problems))


# --- tar ------------------------------------------------------------------------------------------

_MAX_EXTENDED_HEADER = 1 << 20  # a pax or GNU long-name header: names and attributes, not content


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers over 1 MiB, which tarfile would read whole."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > _MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(f"an extended header of {self.size} bytes (limit {_MAX_EXTENDED_HEADER})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _unpack_tar(source: Path, compression: str | None, out: _Unpacker) -> None:
    name = ""
    try:
        with (
            _open_decompressed(source, compression) as raw,
            tarfile.open(fileobj=raw, mode="r|", tarinfo=_GuardedTarInfo) as tar,
        ):
            for member in tar:
                tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header it read; a stream needs none
                name = member.name
                clean = out.name(member.name)
                if not clean:
                    continue
                try:
                    if member.isdir():
                        out.add_dir(clean, member.mode, member.uid, member.gid)
                    elif member.issym():
                        out.add_symlink(clean, member.linkname, member.mode | 0o777, member.uid, member.gid)
                    elif member.islnk():
                        out.add_hardlink(clean, member.linkname, member.mode, member.uid, member.gid)
                    elif member.isreg():
                        stream = tar.extractfile(member)
                        if stream is not None:
                            out.add_file(clean, stream, member.mode, member.uid, member.gid, member.size)
                    else:
                        out.add_special(clean)
                except _SkipMember as skip:
                    out.skip(clean, str(skip))
    except _LimitReached as limit:
        out.stop(name, str(limit))
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as exc:
        _damaged(out, f"corrupt or truncated tar archive: {exc}", Location(file=str(source), path=shown(name) or None))


# --- zip ------------------------------------------------------------------------------------------


def _unpack_zip(source: Path, out: _Unpacker) -> None:
    name = ""
    try:
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = info.filename
                clean = out.name(info.filename)
                if not clean:
                    continue
                mode = info.external_attr >> 16
                try:
                    if info.is_dir() or stat.S_ISDIR(mode):
                        out.add_dir(clean, mode or 0o755, 0, 0)
                    elif stat.S_ISLNK(mode):
                        if info.file_size > out.limits.max_path_bytes:
                            raise _SkipMember(f"a symlink target of {info.file_size} bytes")
                        target = archive.read(info).decode("utf-8", "replace")
                        out.add_symlink(clean, target, mode, 0, 0)
                    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                        out.add_special(clean)  # zips without Unix type bits hold plain files
                    elif info.file_size == 0:  # nothing to read: not even its local header
                        out.add_file(clean, io.BytesIO(b""), stat.S_IMODE(mode) or 0o644, 0, 0, 0)
                    else:
                        with archive.open(info) as stream:
                            out.add_file(clean, stream, stat.S_IMODE(mode) or 0o644, 0, 0, info.file_size)
                except _SkipMember as skip:
                    out.skip(clean, str(skip))
                except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError) as exc:
                    # One damaged or encrypted member: the others have their own offsets.
                    out.skip(clean, f"damaged or unsupported member ({exc})")
    except _LimitReached as limit:
        out.stop(name, str(limit))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, ValueError) as exc:
        _damaged(out, f"corrupt or unsupported zip archive: {exc}", Location(file=str(source), path=shown(name) or None))


# --- cpio (newc / crc) ---------------------------------------------------------------------------


class _Limited:
    """A read-only view of the next ``size`` bytes of a stream."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n)
        if len(data) < n:
            raise EOFError("truncated member data")
        self.left -= len(data)
        return data


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("truncated cpio archive")
    return data


def _skip_bytes(stream: BinaryIO, n: int) -> None:
    while n > 0:
        block = stream.read(min(n, _COPY_BLOCK))
        if not block:
            raise EOFError("truncated cpio archive")
        n -= len(block)


def _cpio_header(stream: BinaryIO) -> tuple[int, int, int, int, int, int, int]:
    """(mode, uid, gid, file size, name size, header size, alignment) of the next member:
    newc/crc (hex fields, names and data aligned to 4 bytes) or odc (octal, unaligned)."""
    magic = _read_exact(stream, 6)
    if magic == b"070707":
        header = _read_exact(stream, 70)
        def octal(at: int, width: int) -> int:
            return _cpio_number(header[at - 6 : at - 6 + width], "01234567", 8)
        return octal(18, 6), octal(24, 6), octal(30, 6), octal(65, 11), octal(59, 6), 76, 1
    if magic not in (b"070701", b"070702"):
        raise ValueError("bad cpio header magic (newc, crc and odc cpio are read)")
    header = _read_exact(stream, 104)
    fields = [_cpio_number(header[8 * i : 8 + 8 * i], "0123456789abcdefABCDEF", 16) for i in range(13)]
    return fields[1], fields[2], fields[3], fields[6], fields[11], 110, 4


def _cpio_number(field: bytes, digits: str, base: int) -> int:
    """A fixed-width header field of digits only (``int`` would take a sign, spaces or 0x)."""
    if not field or field.strip(digits.encode()):
        raise ValueError(f"bad cpio header field {field!r}")
    return int(field, base)


def _unpack_cpio(source: Path, compression: str | None, out: _Unpacker) -> None:
    offset = 0  # in the decompressed stream, for the error message
    name = ""
    try:
        with _open_decompressed(source, compression) as stream:
            while True:
                mode, uid, gid, filesize, namesize, size, align = _cpio_header(stream)
                name_padding = (-(size + namesize)) % align
                if namesize > out.limits.max_path_bytes + 1:
                    _skip_bytes(stream, namesize + name_padding)  # never held in memory
                    raw_name = ""
                    out.budget.add_member()
                    out.skip(f"<member at byte {offset}>", f"name of {namesize} bytes, longer than the limit")
                else:
                    raw_name = _read_exact(stream, namesize)[:-1].decode("utf-8", "surrogateescape")
                    _read_exact(stream, name_padding)
                offset += size + namesize + name_padding
                if raw_name == "TRAILER!!!":
                    break
                name = raw_name
                body = _Limited(stream, filesize)
                clean = out.name(raw_name) if raw_name else None
                try:
                    if clean:
                        if stat.S_ISDIR(mode):
                            out.add_dir(clean, mode, uid, gid)
                        elif stat.S_ISLNK(mode):
                            if filesize > out.limits.max_path_bytes:
                                raise _SkipMember(f"a symlink target of {filesize} bytes")
                            out.add_symlink(clean, body.read().decode("utf-8", "surrogateescape"), mode, uid, gid)
                        elif stat.S_ISREG(mode):
                            out.add_file(clean, body, mode, uid, gid, filesize)
                        else:
                            out.add_special(clean)
                except _SkipMember as skip:
                    out.skip(clean or raw_name, str(skip))
                _skip_bytes(stream, body.left)
                _read_exact(stream, (-filesize) % align)
                offset += filesize + (-filesize) % align
    except _LimitReached as limit:
        out.stop(name, str(limit))
    except (EOFError, OSError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
        _damaged(out, f"corrupt or truncated cpio archive: {exc}", Location(file=str(source), offset=offset))


# --- squashfs and ext: unpacked by their own tools into the private directory ----------------------


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise EnvironmentProblem(f"{name} is needed to read this image: install it (scripts/install-deps.sh)")
    return found


_LLN_LINE = re.compile(
    r"^(?P<mode>[-dlcbps][-rwxsStT]{9})\s+(?P<uid>\d+)/(?P<gid>\d+)\s+(?P<size>\d+|\d+,\s*\d+)\s+"
    r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?\s(?P<rest>.*)$"
)


def _mode_from_ls(text: str) -> int:
    bits = 0
    for i, (char, bit) in enumerate(zip(text[1:], (0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 4, 2, 1), strict=True)):
        if char not in "-ST":
            bits |= bit
        if i == 2 and char in "sS":
            bits |= stat.S_ISUID
        if i == 5 and char in "sS":
            bits |= stat.S_ISGID
        if i == 8 and char in "tT":
            bits |= stat.S_ISVTX
    return bits


def _open_squashfs(source: Path, out: _Unpacker) -> Image:
    unsquashfs = _tool("unsquashfs")
    where = Location(file=str(source))
    listing = subprocess.run(
        [unsquashfs, "-lln", "-UTC", "-d", "", str(source)],
        capture_output=True, text=True, errors="surrogateescape", check=False,
    )
    if listing.returncode != 0:
        raise ImageError(f"unsquashfs cannot read the image: {listing.stderr.strip()[-300:]}", where)
    wanted: list[str] = []
    path = ""
    try:
        for line in listing.stdout.splitlines():
            match = _LLN_LINE.match(line)
            if not match:
                continue
            kind = match["mode"][0]
            rest = match["rest"]
            if kind == "l":
                name, _, target = rest.partition(" -> ")
            else:
                name, target = rest, ""
            path = out.name(name.lstrip("/")) or ""
            if not path:
                continue
            mode, uid, gid = _mode_from_ls(match["mode"]), int(match["uid"]), int(match["gid"])
            try:
                out.budget.add_member()
                if kind == "d":
                    out.entries[path] = Entry(path, "dir", mode, uid, gid, 0)
                elif kind == "l":
                    out.entries[path] = Entry(path, "symlink", mode, uid, gid, len(target), target)
                elif kind == "-":
                    size = int(match["size"])
                    out.budget.add_content(size)
                    out.entries[path] = Entry(path, "file", mode, uid, gid, size)
                    wanted.append("/" + path)
                else:
                    out.add_special(path)
            except _SkipMember as skip:
                out.skip(path, str(skip))
    except _LimitReached as limit:
        out.stop(path, str(limit))
    list_file = Path(out.tmp.name) / "extract.list"
    # -no-wildcards so names are taken literally; only regular files (and their directories) are
    # written: no devices, FIFOs or symlinks reach the disk.
    list_file.write_text("".join(f"{w}\n" for w in wanted), errors="surrogateescape")
    target_dir = Path(out.tmp.name) / "sq"
    run = subprocess.run(
        [unsquashfs, "-no-xattrs", "-no-wildcards", "-q", "-n", "-d", str(target_dir), "-ef", str(list_file), str(source)],
        capture_output=True, text=True, errors="replace", check=False,
    )
    if run.returncode not in (0, 2):
        out.problems.append(f"{where}: unsquashfs failed: {run.stderr.strip()[-300:]}")
    out.root.rmdir()
    if target_dir.is_dir():
        _make_readable(target_dir)
        target_dir.rename(out.root)
    else:
        out.root.mkdir(mode=0o700)
    missing = [e.path for e in out.entries.values() if e.type == "file" and not (out.root / e.path).is_file()]
    if missing:
        out.problems.append(
            f"unsquashfs did not extract {len(missing)} file(s), not scanned: {', '.join(shown(m) for m in missing[:5])}"
        )
        for missed in missing:
            out.entries.pop(missed, None)
    return out.finish("squashfs")


def _make_readable(tree: Path) -> None:
    """Give the owner (us) read access to what a tool unpacked with the image's modes.

    unsquashfs and debugfs restore modes, so a mode-000 file or directory of the image would be
    unreadable to a non-root analyst. Only real files and directories of the private directory
    are changed; a symlink is never followed.
    """
    stack = [tree]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
        try:
            items = list(os.scandir(directory))
        except OSError:
            continue
        for item in items:
            if item.is_dir(follow_symlinks=False):
                stack.append(Path(item.path))
            elif item.is_file(follow_symlinks=False):
                st = item.stat(follow_symlinks=False)
                if not st.st_mode & stat.S_IRUSR:
                    with contextlib.suppress(OSError):
                        os.chmod(item.path, stat.S_IMODE(st.st_mode) | stat.S_IRUSR)


def _debugfs_ls(debugfs: str, source: str | Path, directories: list[str], scratch: Path) -> list[tuple[str, int, int, int, int]]:
    """(path, mode, uid, gid, size) of every entry of ``directories``, in one debugfs run."""
    commands = scratch / "ls.cmds"
    safe = [d for d in directories if '"' not in d and "\n" not in d]
    commands.write_text("".join(f'ls -p "/{d}"\n' for d in safe), errors="surrogateescape")
    listing = subprocess.run(
        [debugfs, "-f", str(commands), str(source)],
        capture_output=True, text=True, errors="surrogateescape", check=False,
    )
    rows = []
    current: str | None = None
    for line in listing.stdout.splitlines():
        if line.startswith("debugfs: ls -p "):
            current = line[len("debugfs: ls -p ") :].strip('"').strip("/")
            continue
        fields = line.split("/")
        if current is None or len(fields) < 8 or fields[5] in (".", ".."):
            continue
        name = "/".join(fields[5:-2])
        path = f"{current}/{name}" if current else name
        if _clean_member_name(path) != path:
            continue
        rows.append((path, int(fields[2], 8), int(fields[3]), int(fields[4]), int(fields[-2] or 0)))
    return rows


def _open_ext(source: Path, out: _Unpacker, limits: Limits, offset: int = 0, size: int | None = None) -> Image:
    debugfs = _tool("debugfs")
    where = Location(file=str(source), offset=offset or None)
    spec = f"{source}?offset={offset}" if offset else str(source)  # a partition of a disk, read in place
    scratch = Path(out.tmp.name)
    # A raw partition holds at most its own size; content several times larger is sparse files.
    out.budget = _Budget(replace(limits, max_ratio=min(limits.max_ratio, _RAW_RATIO)), size or source.stat().st_size)
    check = subprocess.run([debugfs, "-R", "stats", spec], capture_output=True, text=True, errors="replace", check=False)
    if check.returncode != 0 or "Filesystem magic number" not in check.stdout:
        raise ImageError(f"debugfs cannot read the ext image: {check.stderr.strip()[-300:]}", where)
    # List every inode first, level by level (one debugfs run per directory depth), so the
    # size and count limits apply before anything is written: a sparse-file bomb is refused
    # here. Modes, owners and setuid bits come from the inodes themselves.
    level = [""]
    path = ""
    try:
        while level:
            rows = _debugfs_ls(debugfs, spec, level, scratch)
            level = []
            for path, mode, uid, gid, size in rows:
                if not out.name(path):
                    continue
                try:
                    out.budget.add_member()
                    if stat.S_ISDIR(mode):
                        out.entries[path] = Entry(path, "dir", stat.S_IMODE(mode), uid, gid, 0)
                        level.append(path)
                    elif stat.S_ISLNK(mode):
                        out.entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), uid, gid, size, "")
                    elif stat.S_ISREG(mode):
                        out.budget.add_content(size)
                        out.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, size)
                    else:
                        out.add_special(path)
                except _SkipMember as skip:
                    out.skip(path, str(skip))
    except _LimitReached as limit:
        out.stop(path, str(limit))
    target_dir = scratch / "ext"
    target_dir.mkdir(mode=0o700)
    if out.partial:
        _debugfs_dump_listed(debugfs, spec, out, target_dir)
    else:
        # debugfs opens the image read-only (no -w); rdump writes only directories, regular
        # files and symlinks (device files, FIFOs and sockets are left out).
        run = subprocess.run(
            [debugfs, "-R", f"rdump / {target_dir}", spec],
            capture_output=True, text=True, errors="replace", check=False,
        )
        if run.returncode != 0:
            raise ImageError(f"debugfs cannot dump the ext image: {run.stderr.strip()[-300:]}", where)
        _make_readable(target_dir)
        for path, entry in list(out.entries.items()):
            on_disk = target_dir / path
            if entry.type == "symlink":
                if on_disk.is_symlink():
                    link = os.readlink(on_disk)
                    out.entries[path] = Entry(path, "symlink", entry.mode, entry.uid, entry.gid, len(link), link)
                else:
                    del out.entries[path]
    not_dumped = [p for p, e in out.entries.items() if e.type == "file" and (
        (target_dir / p).is_symlink() or not (target_dir / p).is_file())]
    if not_dumped:
        out.problems.append(
            f"debugfs did not dump {len(not_dumped)} file(s), not scanned: {', '.join(shown(p) for p in not_dumped[:5])}"
        )
        for path in not_dumped:
            del out.entries[path]
    out.root.rmdir()
    target_dir.rename(out.root)
    return out.finish("ext")


def _debugfs_dump_listed(debugfs: str, source: str | Path, out: _Unpacker, target_dir: Path) -> None:
    """Dump only the listed files and read the listed symlinks' targets (when a limit stopped
    the listing, ``rdump /`` would write what the limit refused)."""
    commands: list[str] = []
    links = [p for p, e in out.entries.items() if e.type == "symlink"]
    for path, entry in out.entries.items():
        if entry.type == "dir":
            (target_dir / path).mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, entry in out.entries.items():
        if entry.type == "file" and '"' not in path and "\n" not in path:
            commands.append(f'dump "/{path}" "{target_dir}/{path}"')
    link_dir = Path(out.tmp.name) / "links"
    link_dir.mkdir(mode=0o700)
    for number, path in enumerate(links):
        commands.append(f'stat "/{path}"')
        commands.append(f'dump "/{path}" "{link_dir}/{number}"')
    script = Path(out.tmp.name) / "dump.cmds"
    script.write_text("".join(c + "\n" for c in commands), errors="surrogateescape")
    run = subprocess.run(
        [debugfs, "-f", str(script), str(source)], capture_output=True, text=True, errors="surrogateescape", check=False,
    )
    fast: dict[str, str] = {}
    current = ""
    for line in run.stdout.splitlines():
        if line.startswith('debugfs: stat "/'):
            current = line[len('debugfs: stat "/') : -1]
        elif line.startswith('Fast link dest: "') and current:
            fast[current] = line[len('Fast link dest: "') : -1]
    for number, path in enumerate(links):
        entry = out.entries[path]
        target = fast.get(path)
        if target is None:
            dumped = link_dir / str(number)
            target = dumped.read_bytes()[: out.limits.max_path_bytes].decode("utf-8", "surrogateescape") if dumped.is_file() else ""
        out.entries[path] = Entry(path, "symlink", entry.mode, entry.uid, entry.gid, len(target), target)


@contextmanager
def opened(path: str | os.PathLike[str], limits: Limits | None = None) -> Iterator[Image]:
    image = open_image(path, limits)
    try:
        yield image
    finally:
        image.close()
