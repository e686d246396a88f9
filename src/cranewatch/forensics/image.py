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
- member names that climb out of the root (``../``, absolute paths) are refused with a warning;
- device files, FIFOs and sockets are skipped with a note;
- total bytes, file count and the expansion ratio of archives are capped (``Limits``); a bomb
  stops the scan with a clear ``ImageError``.
"""

from __future__ import annotations

import bz2
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import zstandard

from cranewatch.errors import EnvironmentProblem, ImageError, Location

EntryType = Literal["file", "dir", "symlink"]
ImageFormat = Literal["dir", "tar", "zip", "cpio", "squashfs", "ext", "disk"]

_COPY_BLOCK = 1 << 20
_RAW_RATIO = 4.0  # content bytes per byte of an uncompressed filesystem image
_MAX_LINK_HOPS = 40


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep a hostile or broken image from exhausting the analysis station."""

    max_total_bytes: int = 16 << 30  # content bytes unpacked or read
    max_files: int = 1_000_000
    max_ratio: float = 200.0  # unpacked bytes per archive byte, checked past ``ratio_floor``
    ratio_floor: int = 64 << 20  # small archives of zeros are not bombs


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
        fd = os.open(self.disk_path(path), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOCTTY", 0))
        return os.fdopen(fd, "rb")

    def read_text(self, path: str, limit: int = 4 << 20) -> str | None:
        """A small text file's content (``None`` if missing, not a file or larger than ``limit``)."""
        real = self.resolve(path)
        entry = self.entries.get(real) if real is not None else None
        if entry is None or entry.type != "file" or entry.size > limit or real is None:
            return None
        with self.open(real) as fh:
            return fh.read(limit).decode("utf-8", "replace")

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


class _Budget:
    """Counts bytes and files while unpacking and stops at the limits."""

    def __init__(self, limits: Limits, source: Path, packed_size: int) -> None:
        self.limits = limits
        self.source = source
        self.packed_size = max(packed_size, 1)
        self.bytes = 0
        self.files = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ImageError(
                f"more than {self.limits.max_files} files: refusing to go on (file-count limit; "
                "raise it with --max-files if the image is genuine)",
                Location(file=str(self.source)),
            )

    def add_bytes(self, n: int, path: str) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_total_bytes:
            raise ImageError(
                f"unpacked content exceeds {self.limits.max_total_bytes} bytes: refusing to go on "
                "(size limit; raise it with --max-bytes if the image is genuine)",
                Location(file=str(self.source), path=path),
            )
        if self.bytes > self.limits.ratio_floor and self.bytes / self.packed_size > self.limits.max_ratio:
            raise ImageError(
                f"content expands more than {self.limits.max_ratio:.0f}x ({self.bytes} bytes from "
                f"{self.packed_size}): looks like an archive bomb (or sparse-file bomb), refusing to go on",
                Location(file=str(self.source), path=path),
            )


class _Unpacker:
    """Writes members into a private directory; only regular files and directories touch disk."""

    def __init__(self, source: Path, limits: Limits, packed_size: int) -> None:
        self.source = source
        self.tmp = tempfile.TemporaryDirectory(prefix="cranewatch-image-")
        self.root = Path(self.tmp.name) / "root"
        self.root.mkdir(mode=0o700)
        self.entries: dict[str, Entry] = {}
        self.warnings: list[str] = []
        self.budget = _Budget(limits, source, packed_size)
        self.skipped_special: list[str] = []
        self.refused: list[str] = []

    def name(self, raw: str) -> str | None:
        clean = _clean_member_name(raw)
        if clean is None:
            self.refused.append(raw)
        return clean

    def add_dir(self, path: str, mode: int, uid: int, gid: int) -> None:
        if not path:
            return
        self._mkdirs(path)
        self.entries[path] = Entry(path, "dir", stat.S_IMODE(mode), uid, gid, 0)

    def add_symlink(self, path: str, target: str, mode: int, uid: int, gid: int) -> None:
        self.budget.add_file()
        self._mkdirs(path.rpartition("/")[0])
        self.entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), uid, gid, len(target), target)

    def add_special(self, path: str) -> None:
        self.skipped_special.append(path)

    def add_file(self, path: str, stream: IO[bytes] | BinaryIO | _Limited, mode: int, uid: int, gid: int) -> None:
        self.budget.add_file()
        parent = path.rpartition("/")[0]
        self._mkdirs(parent)
        dest = self.root / path
        if dest.is_dir() and not dest.is_symlink():
            self.warnings.append(f"{path}: a file and a directory share this name; kept the directory")
            return
        size = 0
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(_COPY_BLOCK)
                    if not block:
                        break
                    size += len(block)
                    self.budget.add_bytes(len(block), path)
                    out.write(block)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise  # a read error of the archive: reported as a corrupt archive
            raise EnvironmentProblem(
                f"cannot unpack into {tempfile.gettempdir()}: {exc.strerror} (set TMPDIR to a "
                "directory on a disk with room for the unpacked image)",
                Location(file=str(self.source), path=path),
            ) from None
        self.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, size)

    def _mkdirs(self, path: str) -> None:
        if not path:
            return
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in self.entries and self.entries[sub].type != "dir":
                # A member below a symlink or file: never write through it on disk.
                raise _SkipMember(f"{path}: below the non-directory {sub}")
            if sub not in self.entries:
                self.entries[sub] = Entry(sub, "dir", 0o755, 0, 0, 0)
        (self.root / path).mkdir(parents=True, exist_ok=True, mode=0o700)

    def finish(self, fmt: ImageFormat) -> Image:
        if self.refused:
            shown = ", ".join(repr(r) for r in self.refused[:5])
            self.warnings.append(
                f"refused {len(self.refused)} member(s) whose names leave the image root "
                f"(path traversal): {shown}"
            )
        if self.skipped_special:
            shown = ", ".join(self.skipped_special[:5])
            self.warnings.append(
                f"skipped {len(self.skipped_special)} device file(s), FIFO(s) or socket(s): {shown}"
            )
        return Image(self.source, fmt, self.root, self.entries, self.warnings, self.tmp)


class _SkipMember(Exception):
    pass


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
    compression = _compression(head)
    if compression is not None:
        try:
            with _open_decompressed(path, compression) as inner:
                head = inner.read(512)
        except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise ImageError(f"corrupt {compression} stream: {exc}", where) from None
    if head.startswith((b"070701", b"070702")):
        return "cpio", compression
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar", compression
    from cranewatch.forensics import disk  # disk.py builds on this module's Image

    if (disk.looks_like_partition_table(head) if compression else disk.sniff_container(path) is not None):
        return "disk", compression
    raise ImageError(
        "unknown image format (expected a directory, tar[.gz|.xz|.bz2|.zst], zip, cpio (newc), "
        "squashfs, an ext2/3/4 partition image or a whole disk: raw MBR/GPT, qcow2, VMDK, VHD, VHDX, E01)",
        where,
    )


def open_image(path: str | os.PathLike[str], limits: Limits | None = None) -> Image:
    """Open ``path`` read-only as an ``Image``; the caller closes it (or uses ``with``)."""
    source = Path(path)
    limits = limits or Limits()
    fmt, compression = detect_format(source)
    if fmt == "dir":
        return _open_dir(source, limits)
    if fmt == "disk":
        from cranewatch.forensics.disk import open_disk

        return open_disk(source, limits, compression)
    packed = source.stat().st_size
    unpacker = _Unpacker(source, limits, packed)
    try:
        if fmt == "tar":
            _unpack_tar(source, compression, unpacker)
        elif fmt == "zip":
            _unpack_zip(source, unpacker, limits)
        elif fmt == "cpio":
            _unpack_cpio(source, compression, unpacker)
        elif fmt == "squashfs":
            return _open_squashfs(source, unpacker, limits)
        elif fmt == "ext":
            return _open_ext(source, unpacker, limits)
    except BaseException:
        unpacker.tmp.cleanup()
        raise
    return unpacker.finish(fmt)


# --- directory tree -----------------------------------------------------------------------------


def _open_dir(root: Path, limits: Limits, fmt: ImageFormat = "dir") -> Image:
    entries: dict[str, Entry] = {}
    special: list[str] = []
    total = 0
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            scan = os.scandir(root / rel if rel else root)
        except OSError as exc:
            special.append(f"{rel or '.'} (unreadable: {exc.strerror})")
            continue
        with scan:
            for item in scan:
                path = f"{rel}/{item.name}" if rel else item.name
                st = item.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    entries[path] = Entry(path, "dir", stat.S_IMODE(mode), st.st_uid, st.st_gid, 0)
                    stack.append(path)
                elif stat.S_ISLNK(mode):
                    target = os.readlink(item.path)
                    entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), st.st_uid, st.st_gid, len(target), target)
                elif stat.S_ISREG(mode):
                    total += st.st_size
                    entries[path] = Entry(path, "file", stat.S_IMODE(mode), st.st_uid, st.st_gid, st.st_size)
                else:
                    special.append(path)
                if len(entries) > limits.max_files:
                    raise ImageError(
                        f"more than {limits.max_files} entries: refusing to go on (file-count limit)",
                        Location(file=str(root)),
                    )
    if total > limits.max_total_bytes:
        raise ImageError(
            f"the tree holds {total} bytes, more than the {limits.max_total_bytes}-byte limit",
            Location(file=str(root)),
        )
    warnings = []
    if special:
        shown = ", ".join(sorted(special)[:5])
        warnings.append(f"skipped {len(special)} device file(s), FIFO(s) or socket(s): {shown}")
    return Image(root, fmt, root, entries, warnings)


# --- tar ------------------------------------------------------------------------------------------


def _unpack_tar(source: Path, compression: str | None, out: _Unpacker) -> None:
    where = Location(file=str(source))
    try:
        with _open_decompressed(source, compression) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                name = out.name(member.name)
                if name is None or not name:
                    continue
                try:
                    if member.isdir():
                        out.add_dir(name, member.mode, member.uid, member.gid)
                    elif member.issym():
                        out.add_symlink(name, member.linkname, member.mode | 0o777, member.uid, member.gid)
                    elif member.islnk():
                        target = _clean_member_name(member.linkname)
                        if target is None or out.entries.get(target, None) is None or out.entries[target].type != "file":
                            out.warnings.append(f"{name}: hard link to missing or unsafe {member.linkname!r} skipped")
                            continue
                        with open(out.root / target, "rb") as fh:
                            out.add_file(name, fh, member.mode, member.uid, member.gid)
                    elif member.isreg():
                        stream = tar.extractfile(member)
                        if stream is None:
                            continue
                        out.add_file(name, stream, member.mode, member.uid, member.gid)
                    else:
                        out.add_special(name)
                except _SkipMember as skip:
                    out.warnings.append(f"skipped member: {skip}")
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ImageError(f"corrupt or truncated tar archive: {exc}", where) from None


# --- zip ------------------------------------------------------------------------------------------


def _unpack_zip(source: Path, out: _Unpacker, limits: Limits) -> None:
    where = Location(file=str(source))
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            declared = sum(i.file_size for i in infos)
            packed = max(source.stat().st_size, 1)
            if declared > limits.max_total_bytes or (
                declared > limits.ratio_floor and declared / packed > limits.max_ratio
            ):
                raise ImageError(
                    f"zip declares {declared} bytes from {packed} ({declared / packed:.0f}x): looks "
                    "like a zip bomb, refusing to unpack",
                    where,
                )
            for info in infos:
                name = out.name(info.filename)
                if name is None or not name:
                    continue
                mode = info.external_attr >> 16
                try:
                    if info.is_dir() or stat.S_ISDIR(mode):
                        out.add_dir(name, mode or 0o755, 0, 0)
                    elif stat.S_ISLNK(mode):
                        target = archive.read(info).decode("utf-8", "replace")
                        out.add_symlink(name, target, mode, 0, 0)
                    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                        out.add_special(name)  # zips without Unix type bits hold plain files
                    else:
                        with archive.open(info) as stream:
                            out.add_file(name, stream, stat.S_IMODE(mode) or 0o644, 0, 0)
                except _SkipMember as skip:
                    out.warnings.append(f"skipped member: {skip}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise ImageError(f"corrupt or unsupported zip archive: {exc}", where) from None


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


def _unpack_cpio(source: Path, compression: str | None, out: _Unpacker) -> None:
    offset = 0  # in the decompressed stream, for the error message
    try:
        with _open_decompressed(source, compression) as stream:
            while True:
                header = _read_exact(stream, 110)
                if header[:6] not in (b"070701", b"070702"):
                    raise ImageError("bad cpio header magic (only newc/crc cpio is read)", Location(file=str(source), offset=offset))
                fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
                mode, uid, gid, filesize, namesize = fields[1], fields[2], fields[3], fields[6], fields[11]
                raw_name = _read_exact(stream, namesize)[:-1].decode("utf-8", "surrogateescape")
                _read_exact(stream, (-(110 + namesize)) % 4)
                offset += 110 + namesize + (-(110 + namesize)) % 4
                if raw_name == "TRAILER!!!":
                    break
                body = _Limited(stream, filesize)
                name = out.name(raw_name)
                try:
                    if name:
                        if stat.S_ISDIR(mode):
                            out.add_dir(name, mode, uid, gid)
                        elif stat.S_ISLNK(mode):
                            out.add_symlink(name, body.read().decode("utf-8", "surrogateescape"), mode, uid, gid)
                        elif stat.S_ISREG(mode):
                            out.add_file(name, body, mode, uid, gid)
                        else:
                            out.add_special(name)
                except _SkipMember as skip:
                    out.warnings.append(f"skipped member: {skip}")
                while body.read(_COPY_BLOCK):
                    pass
                _read_exact(stream, (-filesize) % 4)
                offset += filesize + (-filesize) % 4
    except (EOFError, OSError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ImageError(f"corrupt or truncated cpio archive: {exc}", Location(file=str(source), offset=offset)) from None


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


def _open_squashfs(source: Path, out: _Unpacker, limits: Limits) -> Image:
    unsquashfs = _tool("unsquashfs")
    where = Location(file=str(source))
    listing = subprocess.run(
        [unsquashfs, "-lln", "-UTC", "-d", "", str(source)],
        capture_output=True, text=True, errors="surrogateescape", check=False,
    )
    if listing.returncode != 0:
        raise ImageError(f"unsquashfs cannot read the image: {listing.stderr.strip()[-300:]}", where)
    wanted: list[str] = []
    total = 0
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
        path = _clean_member_name(name.lstrip("/"))
        if not path:
            continue
        mode, uid, gid = _mode_from_ls(match["mode"]), int(match["uid"]), int(match["gid"])
        size = int(match["size"]) if kind == "-" else 0
        if kind == "d":
            out.entries[path] = Entry(path, "dir", mode, uid, gid, 0)
        elif kind == "l":
            out.budget.add_file()
            out.entries[path] = Entry(path, "symlink", mode, uid, gid, len(target), target)
        elif kind == "-":
            out.budget.add_file()
            total += size
            out.entries[path] = Entry(path, "file", mode, uid, gid, size)
            wanted.append("/" + path)
        else:
            out.add_special(path)
    out.budget.add_bytes(total, "")
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
        raise ImageError(f"unsquashfs failed: {run.stderr.strip()[-300:]}", where)
    out.root.rmdir()
    if target_dir.is_dir():
        target_dir.rename(out.root)
    else:
        out.root.mkdir(mode=0o700)
    image = out.finish("squashfs")
    missing = [e.path for e in image.files() if not (image.root / e.path).is_file()]
    if missing:
        image.warnings.append(f"unsquashfs did not extract {len(missing)} file(s): {', '.join(missing[:5])}")
        for path in missing:
            image.entries.pop(path, None)
    return image


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
    out.budget = _Budget(replace(limits, max_ratio=min(limits.max_ratio, _RAW_RATIO)), source, size or source.stat().st_size)
    check = subprocess.run([debugfs, "-R", "stats", spec], capture_output=True, text=True, errors="replace", check=False)
    if check.returncode != 0 or "Filesystem magic number" not in check.stdout:
        raise ImageError(f"debugfs cannot read the ext image: {check.stderr.strip()[-300:]}", where)
    # List every inode first, level by level (one debugfs run per directory depth), so the
    # size and count limits apply before anything is written: a sparse-file bomb is refused
    # here. Modes, owners and setuid bits come from the inodes themselves.
    level = [""]
    files: list[str] = []
    while level:
        rows = _debugfs_ls(debugfs, spec, level, scratch)
        level = []
        for path, mode, uid, gid, size in rows:
            if stat.S_ISDIR(mode):
                out.entries[path] = Entry(path, "dir", stat.S_IMODE(mode), uid, gid, 0)
                level.append(path)
            elif stat.S_ISLNK(mode):
                out.budget.add_file()
                out.entries[path] = Entry(path, "symlink", stat.S_IMODE(mode), uid, gid, size, "")
            elif stat.S_ISREG(mode):
                out.budget.add_file()
                out.budget.add_bytes(size, path)
                out.entries[path] = Entry(path, "file", stat.S_IMODE(mode), uid, gid, size)
                files.append(path)
            else:
                out.add_special(path)
    target_dir = scratch / "ext"
    target_dir.mkdir(mode=0o700)
    # debugfs opens the image read-only (no -w); rdump writes only directories, regular files
    # and symlinks (device files, FIFOs and sockets are left out).
    run = subprocess.run(
        [debugfs, "-R", f"rdump / {target_dir}", spec],
        capture_output=True, text=True, errors="replace", check=False,
    )
    if run.returncode != 0:
        raise ImageError(f"debugfs cannot dump the ext image: {run.stderr.strip()[-300:]}", where)
    for path, entry in list(out.entries.items()):
        on_disk = target_dir / path
        if entry.type == "symlink":
            if on_disk.is_symlink():
                link = os.readlink(on_disk)
                out.entries[path] = Entry(path, "symlink", entry.mode, entry.uid, entry.gid, len(link), link)
            else:
                del out.entries[path]
        elif entry.type == "file" and (on_disk.is_symlink() or not on_disk.is_file()):
            out.warnings.append(f"{path}: debugfs did not dump this file")
            del out.entries[path]
    out.root.rmdir()
    target_dir.rename(out.root)
    return out.finish("ext")


@contextmanager
def opened(path: str | os.PathLike[str], limits: Limits | None = None) -> Iterator[Image]:
    image = open_image(path, limits)
    try:
        yield image
    finally:
        image.close()
