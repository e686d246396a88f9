"""XFS partitions read in place, in Python, without mounting.

Neither libtsk as the pytsk3 wheel builds it (its own subset of TSK's readers: no XFS) nor
Debian 12's xfsprogs 6.1 (``xfs_db`` walks metadata but cannot copy a file out) extracts files
from an unmounted XFS, so this module reads the on-disk format itself (the layout of the kernel's
``xfs_format.h``/``xfs_da_format.h``): the superblock, inodes (v2 and v3), data forks in local,
extent and B+tree form, and directories in short form and in data blocks (block, leaf and node
directories share the data blocks, which is all a walk needs).

The walk lists every entry first (count, declared sizes, path length and depth checked against
``Limits``), then writes the regular files into a private directory with ``O_EXCL|O_NOFOLLOW``.
A symbolic link is written as a link (its target text, never followed); one whose target lives
in blocks rather than in the inode is counted in a warning. Damaged structures raise
``ImageError`` with the byte offset of what could not be read; a directory seen twice (a loop in
a crafted image) is read once.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cranewatch.errors import EnvironmentProblem, ImageError, Location
from cranewatch.forensics.image import Image, Limits, open_image

_MAX_EXTENTS = 1 << 20  # extents of one fork
_DIFLAG2_NREXT64 = 1 << 4
_MAX_BTREE_LEVELS = 8  # a 64-bit file system needs fewer
_LEAF_OFFSET = 32 << 30  # directory data blocks lie below this byte offset of the directory
_MAX_DIRECTORY_BYTES = 256 << 20  # ~4 million entries of short names


@dataclass(frozen=True)
class _Super:
    block: int
    agblocks: int
    agblklog: int
    inopblog: int
    inodesize: int
    dirblock: int
    rootino: int
    v5: bool
    ftype: bool


@dataclass(frozen=True)
class _Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    fmt: int
    fork: bytes
    nextents: int
    at: int


class _Reader:
    def __init__(self, raw: Path, offset: int, size: int) -> None:
        self.fh = open(raw, "rb")  # noqa: SIM115 - closed by close()
        self.raw, self.offset, self.size = raw, offset, size
        sb = self.read(0, 512)
        if sb[:4] != b"XFSB":
            raise self.error("no XFS superblock", 0)
        version = struct.unpack_from(">H", sb, 100)[0] & 0xF
        block = struct.unpack_from(">I", sb, 4)[0]
        features2 = struct.unpack_from(">I", sb, 200)[0]
        incompat = struct.unpack_from(">I", sb, 216)[0] if version == 5 else 0
        self.sb = _Super(
            block=block, agblocks=struct.unpack_from(">I", sb, 84)[0], agblklog=sb[124], inopblog=sb[123],
            inodesize=struct.unpack_from(">H", sb, 104)[0], dirblock=block << sb[192],
            rootino=struct.unpack_from(">Q", sb, 56)[0], v5=version == 5,
            ftype=bool(incompat & 0x1) if version == 5 else bool(features2 & 0x200),
        )
        if not (512 <= block <= 65536 and block & (block - 1) == 0 and 256 <= self.sb.inodesize <= 2048
                and self.sb.agblocks > 0 and self.sb.dirblock <= 65536):
            raise self.error(f"implausible XFS geometry (block {block}, inode {self.sb.inodesize})", 0)

    def close(self) -> None:
        self.fh.close()

    def error(self, what: str, at: int) -> ImageError:
        return ImageError(f"XFS: {what}", Location(file=str(self.raw), offset=self.offset + at))

    def read(self, at: int, length: int) -> bytes:
        if at < 0 or at + length > self.size:
            raise self.error(f"read of {length} bytes at byte {at} beyond the {self.size}-byte partition", max(at, 0))
        self.fh.seek(self.offset + at)
        data = self.fh.read(length)
        if len(data) != length:
            raise self.error("the disk image ends inside the partition", at)
        return data

    def fsb_byte(self, fsb: int) -> int:
        agno, agbno = fsb >> self.sb.agblklog, fsb & ((1 << self.sb.agblklog) - 1)
        return (agno * self.sb.agblocks + agbno) * self.sb.block

    def inode(self, ino: int) -> _Inode:
        sb = self.sb
        agno = ino >> (sb.agblklog + sb.inopblog)
        agino = ino & ((1 << (sb.agblklog + sb.inopblog)) - 1)
        at = (agno * sb.agblocks + (agino >> sb.inopblog)) * sb.block + (agino & ((1 << sb.inopblog) - 1)) * sb.inodesize
        raw = self.read(at, sb.inodesize)
        if raw[:2] != b"IN":
            raise self.error(f"inode {ino}: bad magic", at)
        mode, version, fmt = struct.unpack_from(">HBB", raw, 2)
        uid, gid = struct.unpack_from(">II", raw, 8)
        size, _nblocks, _extsize, nextents = struct.unpack_from(">QQII", raw, 56)
        forkoff = raw[82]
        if version == 3 and struct.unpack_from(">Q", raw, 120)[0] & _DIFLAG2_NREXT64:
            nextents = struct.unpack_from(">Q", raw, 24)[0]  # large extent counts (xfsprogs 6.x nrext64)
        start = 176 if version == 3 else 100
        end = start + forkoff * 8 if forkoff else sb.inodesize
        if end > sb.inodesize or end < start:
            raise self.error(f"inode {ino}: attribute fork offset {forkoff} outside the inode", at)
        return _Inode(ino, mode, uid, gid, size, fmt, raw[start:end], nextents, at)

    def extents(self, node: _Inode) -> list[tuple[int, int, int, bool]]:
        """(logical block, fs block, count, unwritten) of a data fork in extent or B+tree form."""
        if node.fmt == 2:
            if node.nextents * 16 > len(node.fork):
                raise self.error(f"inode {node.ino}: {node.nextents} extents do not fit its fork", node.at)
            return [_extent(node.fork, i * 16) for i in range(node.nextents)]
        if node.fmt == 3:
            level, numrecs = struct.unpack_from(">HH", node.fork, 0)
            maxrecs = (len(node.fork) - 4) // 16
            if numrecs > maxrecs or level == 0 or level > _MAX_BTREE_LEVELS:
                raise self.error(f"inode {node.ino}: damaged B+tree root", node.at)
            ptrs = [struct.unpack_from(">Q", node.fork, 4 + maxrecs * 8 + i * 8)[0] for i in range(numrecs)]
            out: list[tuple[int, int, int, bool]] = []
            for ptr in ptrs:
                self._btree(ptr, level - 1, out, node)
            return out
        raise self.error(f"inode {node.ino}: data fork format {node.fmt} has no blocks", node.at)

    def _btree(self, fsb: int, level: int, out: list[tuple[int, int, int, bool]], node: _Inode) -> None:
        at = self.fsb_byte(fsb)
        block = self.read(at, self.sb.block)
        magic, blevel, numrecs = struct.unpack_from(">4sHH", block, 0)
        header = 72 if magic == b"BMA3" else 24 if magic == b"BMAP" else 0
        if not header or blevel != level:
            raise self.error(f"inode {node.ino}: bad B+tree block (magic {magic!r}, level {blevel})", at)
        if level == 0:
            if header + numrecs * 16 > len(block):
                raise self.error(f"inode {node.ino}: B+tree leaf holds more records than fit", at)
            out.extend(_extent(block, header + i * 16) for i in range(numrecs))
            if len(out) > _MAX_EXTENTS:
                raise self.error(f"inode {node.ino}: more than {_MAX_EXTENTS} extents", at)
            return
        maxrecs = (len(block) - header) // 16
        if numrecs > maxrecs:
            raise self.error(f"inode {node.ino}: B+tree node holds more records than fit", at)
        for i in range(numrecs):
            self._btree(struct.unpack_from(">Q", block, header + maxrecs * 8 + i * 8)[0], level - 1, out, node)

    def chunks(self, node: _Inode, limit: int) -> Iterator[bytes]:
        """The first ``limit`` bytes of a file or directory, holes and unwritten extents as zeros."""
        if node.fmt == 1:
            yield node.fork[:limit]
            return
        pos = 0
        block = self.sb.block
        for logical, fsb, count, unwritten in sorted(self.extents(node)):
            start = logical * block
            if start >= limit:
                break
            if start > pos:
                yield bytes(start - pos)  # a hole
                pos = start
            length = min(count * block, limit - start)
            if start < pos:  # overlapping extents in a damaged map: skip what was given
                length -= pos - start
                if length <= 0:
                    continue
            at = self.fsb_byte(fsb) + (pos - start)
            for off in range(0, length, 1 << 20):
                n = min(1 << 20, length - off)
                yield bytes(n) if unwritten else self.read(at + off, n)
            pos += length
        if pos < limit:
            yield bytes(limit - pos)

    def entries(self, node: _Inode) -> list[tuple[str, int]]:
        """(name, inode) of a directory, without ``.`` and ``..``."""
        if node.fmt == 1:
            return self._short_form(node)
        out: list[tuple[str, int]] = []
        dirblock = self.sb.dirblock
        size = min(node.size, _LEAF_OFFSET)
        if size > _MAX_DIRECTORY_BYTES:
            raise self.error(f"directory inode {node.ino} declares {node.size} bytes", node.at)
        data = b"".join(self.chunks(node, size))
        for start in range(0, len(data) - dirblock + 1, dirblock):
            out.extend(self._data_block(data[start : start + dirblock], node))
        return out

    def _short_form(self, node: _Inode) -> list[tuple[str, int]]:
        fork = node.fork
        count, i8 = fork[0], fork[1]
        width = 8 if i8 else 4
        pos = 2 + width
        out = []
        for _ in range(count):
            namelen = fork[pos]
            name = fork[pos + 3 : pos + 3 + namelen]
            pos += 3 + namelen + (1 if self.sb.ftype else 0)
            if pos + width > len(fork) or len(name) != namelen:
                raise self.error(f"directory inode {node.ino}: short-form entries run past the fork", node.at)
            ino = int.from_bytes(fork[pos : pos + width], "big")
            pos += width
            out.append((name, ino))
        return [(_name(n, node, self), ino) for n, ino in out]

    def _data_block(self, data: bytes, node: _Inode) -> list[tuple[str, int]]:
        magic = data[:4]
        if magic in (b"XDB3", b"XDD3"):
            pos = 64
        elif magic in (b"XD2B", b"XD2D"):
            pos = 16
        else:
            return []  # a hole in a sparse directory, or a free block
        end = len(data)
        if magic in (b"XDB3", b"XD2B"):  # a single-block directory: its leaf and tail at the end
            count = struct.unpack_from(">I", data, end - 8)[0]
            end = end - 8 - count * 8
        out = []
        while pos + 8 <= end:
            if data[pos : pos + 2] == b"\xff\xff":  # an unused region
                length = struct.unpack_from(">H", data, pos + 2)[0]
                if length < 8 or length % 8:
                    raise self.error(f"directory inode {node.ino}: free region of {length} bytes", node.at)
                pos += length
                continue
            ino = struct.unpack_from(">Q", data, pos)[0]
            namelen = data[pos + 8]
            name = data[pos + 9 : pos + 9 + namelen]
            length = (8 + 1 + namelen + (1 if self.sb.ftype else 0) + 2 + 7) & ~7
            if len(name) != namelen or namelen == 0:
                raise self.error(f"directory inode {node.ino}: damaged entry", node.at)
            pos += length
            if name not in (b".", b".."):
                out.append((_name(name, node, self), ino))
        return out


def _extent(buf: bytes, at: int) -> tuple[int, int, int, bool]:
    l0, l1 = struct.unpack_from(">QQ", buf, at)
    return ((l0 & ((1 << 63) - 1)) >> 9, ((l0 & 0x1FF) << 43) | (l1 >> 21), l1 & ((1 << 21) - 1), bool(l0 >> 63))


def _name(raw: bytes, node: _Inode, reader: _Reader) -> str:
    if b"/" in raw or b"\x00" in raw or raw in (b"", b".", b".."):
        raise reader.error(f"directory inode {node.ino}: entry name {raw!r} is not a file name", node.at)
    return raw.decode("utf-8", "surrogateescape")


def open_xfs(raw: Path, offset: int, size: int, dest: Path, limits: Limits) -> Image:
    """The XFS filesystem at ``offset`` of ``raw``, its files written under ``dest`` (created)."""
    reader = _Reader(raw, offset, size)
    try:
        return _extract(reader, dest, limits)
    except ImageError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # a structure shorter than it says
        raise reader.error(f"damaged structure ({type(exc).__name__}: {exc})", 0) from None
    finally:
        reader.close()


def _extract(reader: _Reader, dest: Path, limits: Limits) -> Image:
    files: list[tuple[str, _Inode]] = []
    dirs: list[str] = []
    links: list[tuple[str, bytes]] = []
    remote_links = 0
    seen = {reader.sb.rootino}
    stack = [("", reader.inode(reader.sb.rootino))]
    count = total = 0
    while stack:
        path, node = stack.pop()
        for name, ino in reader.entries(node):
            child = f"{path}/{name}" if path else name
            count += 1
            if count > limits.max_files:
                raise reader.error(f"more than {limits.max_files} entries: beyond the file-count limit", 0)
            if len(child.encode("utf-8", "surrogateescape")) > limits.max_path_bytes or child.count("/") >= limits.max_depth:
                raise reader.error(f"path {child[:120]!r} beyond the path length or depth limit", node.at)
            inode = reader.inode(ino)
            kind = stat.S_IFMT(inode.mode)
            if kind == stat.S_IFDIR:
                if ino in seen:
                    continue  # a second name for a directory: a loop in a crafted image
                seen.add(ino)
                dirs.append(child)
                stack.append((child, inode))
            elif kind == stat.S_IFREG:
                if inode.size > limits.max_member_bytes:
                    raise reader.error(f"{child[:120]!r} declares {inode.size} bytes: beyond the one-file limit",
                                       inode.at)
                total += inode.size
                if total > limits.max_total_bytes:
                    raise reader.error(f"the files declare more than {limits.max_total_bytes} bytes: beyond the size "
                                       "limit", inode.at)
                files.append((child, inode))
            elif kind == stat.S_IFLNK:
                if inode.fmt == 1 and 0 < inode.size <= len(inode.fork):
                    links.append((child, inode.fork[: inode.size]))
                else:
                    remote_links += 1
    dest.mkdir(mode=0o700)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for d in sorted(dirs):
            os.mkdir(d, 0o700, dir_fd=root_fd)  # parents first (sorted); an existing name raises
        for path, node in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=root_fd)
            try:
                for chunk in reader.chunks(node, node.size):
                    os.write(fd, chunk)
                os.fchmod(fd, stat.S_IMODE(node.mode))  # setuid bits kept: dest is private (0700)
            finally:
                os.close(fd)
        for path, target in links:
            os.symlink(os.fsdecode(target), path, dir_fd=root_fd)
    except FileExistsError as exc:
        raise reader.error(f"two entries named {exc.filename!r}", 0) from None
    except OSError as exc:  # no room, or a name the host cannot store
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EnvironmentProblem(f"extracting the XFS filesystem into {dest.parent}: {exc.strerror} (set TMPDIR to "
                                     "a disk with room)", Location(file=str(reader.raw), offset=reader.offset)) from None
        raise reader.error(f"cannot write {exc.filename!r}: {exc.strerror}", 0) from None
    finally:
        os.close(root_fd)
    for d in dirs:
        os.chmod(dest / d, 0o755)
    image = open_image(dest, limits)
    if remote_links:
        image.warnings.append(f"{remote_links} symbolic link(s) of the XFS filesystem with targets in blocks not restored")
    return image
