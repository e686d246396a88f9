"""The distribution's genuine packages: what each file of each installed package really holds.

The image's package records (dpkg status, ``*.md5sums``) are the maker's claims: a maker who
trojans ``usr/bin/which.debianutils`` rewrites its md5sums line too. ``GenuineIndex`` is read
from the distribution's own package files instead (``.deb`` from an apt cache, a mirror's
pool, or ``apt-get download`` of the installed versions, see ``fetch_packages``): every regular
file of every package's ``data.tar`` is hashed, nothing is unpacked to disk and nothing of a
package is run. A file of the image is then *genuine* (its content is what a genuine package of
its owner ships at that path), *differs* (the genuine package of the claimed version ships other
content there) or *unverified* (no genuine package to compare with).

Indexes are cached per ``.deb`` (by its sha256) under ``$CRANEWATCH_CACHE/genuine`` (default
``~/.cache/cranewatch/genuine``), so a second scan does not decompress the packages again.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from cranewatch.errors import EnvironmentProblem, InputError, Location
from cranewatch.forensics.packages import (
    RPM_ARCH,
    RPM_NAME,
    RPM_PAYLOADCOMPRESSOR,
    Package,
    parse_stanzas,
    rpm_digest_algorithm,
    rpm_files,
    rpm_header,
    rpm_text,
    rpm_version,
)

_CACHE_VERSION = 3  # 2: hard links of a package hashed as their targets; 3: .rpm/.apk/.ipk, manager and digests


@dataclass(frozen=True)
class GenuinePackage:
    """One genuine package: its identity and the md5 of each regular file it ships."""

    name: str
    version: str
    arch: str
    files: dict[str, str]  # path as in the package (no leading "./" or "/") -> md5 of the content
    conffiles: frozenset[str]
    source: str  # the package file it was read from
    manager: str = "dpkg"  # dpkg | opkg | rpm | apk: whose database names this package
    # path -> the content's checksum as that manager's database writes it (rpm: the package's
    # digest algorithm, apk: sha1), ``algorithm:hex``, computed here from the content
    digests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenuineIndex:
    """Genuine packages by name (several versions may be present)."""

    packages: dict[str, tuple[GenuinePackage, ...]]
    sources: tuple[str, ...]  # the directories or files read
    problems: tuple[str, ...] = ()  # package files that could not be read

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.packages.values())

    def md5s(self) -> frozenset[str]:
        """Every genuine file content: an unowned copy of one of them (a template a maintainer
        script copied into /etc) is the distribution's."""
        return frozenset(md5 for group in self.packages.values() for p in group for md5 in p.files.values())


def _cache_root() -> Path:
    base = os.environ.get("CRANEWATCH_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "cranewatch"


def _cache_dir() -> Path:
    return _cache_root() / "genuine"


def default_package_cache() -> Path:
    """Where ``--fetch-packages`` keeps the downloaded .deb files."""
    return _cache_root() / "debs"


def _ar_members(fh: IO[bytes], where: str) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of each member of an ar archive (the .deb container)."""
    if fh.read(8) != b"!<arch>\n":
        raise InputError("not a Debian package (no ar magic)", Location(file=where))
    offset = 8
    while True:
        fh.seek(offset)
        header = fh.read(60)
        if len(header) < 60:
            return
        if header[58:60] != b"`\n":
            raise InputError("corrupt ar member header", Location(file=where, offset=offset))
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii", "replace").strip() or 0)
        yield name, offset + 60, size
        offset += 60 + size + (size & 1)


class _Slice(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``offset`` of an open file."""

    def __init__(self, fh: IO[bytes], offset: int, size: int) -> None:
        self.fh = fh
        self.pos = offset
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        self.fh.seek(self.pos)
        data = self.fh.read(n)
        buffer[: len(data)] = data
        self.pos += len(data)
        self.left -= len(data)
        return len(data)


def _decompressed(name: str, raw: IO[bytes]) -> IO[bytes]:
    if name.endswith(".xz"):
        return lzma.open(raw)
    if name.endswith(".gz"):
        return gzip.open(raw)  # type: ignore[return-value]
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(raw)
    if name.endswith(".bz2"):
        return bz2.open(raw)
    return raw


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


@dataclass
class _Reading:
    """What is gathered while one package file is read."""

    control: dict[str, str] = field(default_factory=dict)
    conffiles: frozenset[str] = frozenset()
    files: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    digest: str = ""  # the algorithm of the manager's own per-file checksums ("" for none)


def _hash(stream: IO[bytes], reading: _Reading, name: str) -> None:
    """md5 of one file's content (the index's common key), and the manager's own digest."""
    md5 = hashlib.md5(usedforsecurity=False)
    other = hashlib.new(reading.digest) if reading.digest and reading.digest != "md5" else None
    while block := stream.read(1 << 20):
        md5.update(block)
        if other is not None:
            other.update(block)
    reading.files[name] = md5.hexdigest()
    if reading.digest:
        reading.digests[name] = f"{reading.digest}:{(other or md5).hexdigest()}"


def _read_tar(name: str, stream: IO[bytes], reading: _Reading) -> None:
    """A .deb/.ipk member: ``control.tar*`` (control, conffiles) or ``data.tar*`` (hashed)."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.islnk() and name.startswith("data.tar"):
                target = reading.files.get(_clean(member.linkname))  # hashed already: links come after
                if target is not None:
                    reading.files[_clean(member.name)] = target
                continue
            if not member.isreg():
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            if name.startswith("control.tar"):
                text = extracted.read(4 << 20).decode("utf-8", "replace")
                if _clean(member.name) == "control":
                    reading.control = next(parse_stanzas(text), {})
                elif _clean(member.name) == "conffiles":
                    reading.conffiles = frozenset(_clean(line.split()[-1]) for line in text.splitlines() if line.strip())
                continue
            _hash(extracted, reading, _clean(member.name))


_READ_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, lzma.LZMAError, zstandard.ZstdError, zlib.error)


def read_deb(path: Path, manager: str = "dpkg") -> GenuinePackage:
    """Hash every regular file of one .deb, or of an .ipk (``InputError`` if it is not a readable
    package). An .ipk is an ar archive like a .deb, or (OpenWrt) a tar.gz of the same members."""
    where = str(path)
    reading = _Reading()
    try:
        with open(path, "rb") as fh:
            if manager == "opkg" and fh.read(2) == b"\x1f\x8b":
                fh.seek(0)
                with tarfile.open(fileobj=fh, mode="r|gz") as outer:
                    for member in outer:
                        inner = _clean(member.name)
                        extracted = outer.extractfile(member) if member.isreg() else None
                        if extracted is not None and inner.startswith(("control.tar", "data.tar")):
                            _read_tar(inner, _decompressed(inner, extracted), reading)
            else:
                fh.seek(0)
                for name, offset, size in list(_ar_members(fh, where)):
                    if name.startswith(("control.tar", "data.tar")):
                        _read_tar(name, _decompressed(name, io.BufferedReader(_Slice(fh, offset, size), 1 << 20)), reading)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read this package: {exc}", Location(file=where)) from None
    if "Package" not in reading.control:
        raise InputError("no control file with a Package field", Location(file=where))
    control = reading.control
    return GenuinePackage(
        control["Package"], control.get("Version", ""), control.get("Architecture", ""), reading.files,
        reading.conffiles, path.name, manager,
    )


def read_apk(path: Path) -> GenuinePackage:
    """Hash every file of an Alpine .apk (v2: gzip'ed tar segments, signature, ``.PKGINFO``,
    data, read as one stream); apk's database checksums are SHA-1."""
    where = str(path)
    reading = _Reading(digest="sha1")
    info: dict[str, str] = {}
    try:
        with gzip.open(path) as stream, tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True) as tar:
            for member in tar:
                name = _clean(member.name)
                extracted = tar.extractfile(member) if member.isreg() else None
                if extracted is None or name.startswith(".SIGN."):
                    continue
                if name == ".PKGINFO":
                    for line in extracted.read(4 << 20).decode("utf-8", "replace").splitlines():
                        key, sep, value = line.partition(" = ")
                        if sep and not key.startswith("#"):
                            info.setdefault(key.strip(), value.strip())
                elif not name.startswith("."):
                    _hash(extracted, reading, name)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read this package: {exc}", Location(file=where)) from None
    if "pkgname" not in info:
        raise InputError("no .PKGINFO with a pkgname", Location(file=where))
    return GenuinePackage(info["pkgname"], info.get("pkgver", ""), info.get("arch", ""), reading.files, frozenset(),
                          path.name, "apk", reading.digests)


_RPM_LEAD = b"\xed\xab\xee\xdb"
_RPM_HEADER = b"\x8e\xad\xe8\x01"


def _rpm_header_from(fh: IO[bytes], where: str) -> bytes:
    intro = fh.read(16)
    if len(intro) < 16 or intro[:4] != _RPM_HEADER:
        raise InputError("corrupt rpm header (no header magic)", Location(file=where, offset=fh.tell() - len(intro)))
    count, size = struct.unpack_from(">II", intro, 8)
    if count > 100_000 or size > 64 << 20:
        raise InputError(f"impossible rpm header ({count} entries, {size} bytes)", Location(file=where))
    return intro[8:] + fh.read(16 * count + size)


def read_rpm(path: Path) -> GenuinePackage:
    """Hash every regular file of an .rpm's payload (a compressed cpio archive), read with
    Python alone: lead, signature header, header (names, versions, digest algorithm), payload."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(96)[:4] != _RPM_LEAD:
                raise InputError("not an rpm package (no lead magic)", Location(file=where))
            signature = _rpm_header_from(fh, where)
            fh.seek((-(len(signature) + 8)) % 8, 1)  # the signature header is padded to 8 bytes
            tags = rpm_header(_rpm_header_from(fh, where))
            reading = _Reading(digest=rpm_digest_algorithm(tags))
            compressor = rpm_text(tags, RPM_PAYLOADCOMPRESSOR) or "gzip"
            suffix = {"gzip": ".gz", "xz": ".xz", "lzma": ".xz", "zstd": ".zst", "bzip2": ".bz2"}.get(compressor, "")
            _read_cpio(_decompressed(f"payload{suffix}", fh), reading)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read this package: {exc}", Location(file=where)) from None
    name = rpm_text(tags, RPM_NAME)
    if not name:
        raise InputError("no package name in the rpm header", Location(file=where))
    config = frozenset(p for p, _digest, is_config in rpm_files(tags) if is_config)
    return GenuinePackage(name, rpm_version(tags), rpm_text(tags, RPM_ARCH), reading.files, config, path.name, "rpm",
                          reading.digests)


def _read_cpio(stream: IO[bytes], reading: _Reading) -> None:
    """Hash the regular files of a newc cpio stream (rpm's payload). A hard-linked file's
    content comes with its last name; the earlier names get the same checksums."""
    waiting: dict[int, list[str]] = {}
    while True:
        header = stream.read(110)
        if len(header) < 110 or header[:6] not in (b"070701", b"070702"):
            raise ValueError("bad cpio header in the payload")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        ino, mode, nlink, filesize, namesize = fields[0], fields[1], fields[4], fields[6], fields[11]
        name = _clean(stream.read(namesize)[:-1].decode("utf-8", "surrogateescape"))
        stream.read((-(110 + namesize)) % 4)
        if name == "TRAILER!!!":
            return
        body = io.BytesIO() if filesize == 0 else _Bounded(stream, filesize)
        if stat.S_ISREG(mode) and (filesize or nlink <= 1):
            _hash(body, reading, name)  # type: ignore[arg-type]
            for other in waiting.pop(ino, []):
                reading.files[other] = reading.files[name]
                if name in reading.digests:
                    reading.digests[other] = reading.digests[name]
        elif stat.S_ISREG(mode):
            waiting.setdefault(ino, []).append(name)
        if isinstance(body, _Bounded):
            body.drain()
        stream.read((-filesize) % 4)


class _Bounded:
    """The next ``size`` bytes of a stream."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n) if n > 0 else b""
        if n and not data:
            raise EOFError("truncated cpio payload")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left and self.read(1 << 20):
            pass


def read_package(path: Path) -> GenuinePackage:
    """One genuine package file by its suffix: .deb, .ipk, .rpm or .apk."""
    suffix = path.suffix.lower()
    if suffix == ".rpm":
        return read_rpm(path)
    if suffix == ".apk":
        return read_apk(path)
    return read_deb(path, "opkg" if suffix == ".ipk" else "dpkg")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cached_read(path: Path, cache: Path | None) -> GenuinePackage:
    if cache is None:
        return read_package(path)
    key = cache / f"{_sha256(path)}.json"
    try:
        data = json.loads(key.read_text())
        if data.get("v") == _CACHE_VERSION:
            return GenuinePackage(
                data["name"], data["version"], data["arch"], dict(data["files"]), frozenset(data["conffiles"]), path.name,
                data["manager"], dict(data["digests"]),
            )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package = read_package(path)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "v": _CACHE_VERSION, "name": package.name, "version": package.version, "arch": package.arch,
            "files": package.files, "conffiles": sorted(package.conffiles), "manager": package.manager,
            "digests": package.digests,
        }))
        tmp.replace(key)
    except OSError:
        pass  # a read-only home: the index is simply not kept
    return package


def load_index(paths: Iterable[str | os.PathLike[str]], *, cache: bool = True) -> GenuineIndex:
    """The genuine packages in ``paths`` (directories searched for ``*.deb``, ``*.ipk``, ``*.rpm``
    and ``*.apk``, or such files)."""
    found: dict[str, list[GenuinePackage]] = {}
    problems: list[str] = []
    sources: list[str] = []
    cache_dir = _cache_dir() if cache else None
    for item in paths:
        root = Path(item)
        sources.append(str(root))
        if root.is_dir():
            debs = sorted(p for p in root.rglob("*") if p.suffix.lower() in _PACKAGE_SUFFIXES and p.is_file())
        elif root.is_file():
            debs = [root]
        else:
            raise InputError("no such directory or package file", Location(file=str(root)))
        for deb in debs:
            try:
                package = _cached_read(deb, cache_dir)
            except InputError as exc:
                problems.append(str(exc))
                continue
            found.setdefault(package.name, []).append(package)
    return GenuineIndex({k: tuple(v) for k, v in found.items()}, tuple(sources), tuple(problems))


_PACKAGE_SUFFIXES = (".deb", ".ipk", ".rpm", ".apk")


def _deb_name(package: Package) -> str:
    """The file name apt gives a package: name_version_arch.deb, the epoch's colon as %3a."""
    return f"{package.name}_{package.version.replace(':', '%3a')}_{package.arch or 'all'}.deb"


ARCHIVE_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
MAX_ARCHIVE_DEB = 1 << 30  # a .deb larger than 1 GiB from an archive is refused


def pool_paths(package: Package) -> list[str]:
    """Where a Debian archive keeps a package's .deb (``pool/COMPONENT/PREFIX/SOURCE/FILE``),
    one path per component: PREFIX is the source's first letter, or ``libX`` for ``lib*``; the
    file name drops the version's epoch."""
    source = (package.source or package.name).split(" ")[0]
    prefix = source[:4] if source.startswith("lib") and len(source) > 3 else source[:1]
    version = package.version.split(":", 1)[-1]
    name = f"{package.name}_{version}_{package.arch or 'all'}.deb"
    return [f"pool/{component}/{prefix}/{source}/{name}" for component in ARCHIVE_COMPONENTS]


def _download(url: str, dest: Path, timeout: float = 60.0) -> bool:
    """Fetch ``url`` into ``dest`` whole or not at all (a 404 is False; a bad body is too)."""
    import urllib.error
    import urllib.request

    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            got = 0
            while chunk := response.read(1 << 20):
                got += len(chunk)
                if got > MAX_ARCHIVE_DEB:
                    raise OSError(f"larger than {MAX_ARCHIVE_DEB} bytes")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError):
        tmp.unlink(missing_ok=True)
        return False
    with tmp.open("rb") as fh:
        if fh.read(8) != b"!<arch>\n":  # not a .deb (an HTML error page with status 200)
            tmp.unlink(missing_ok=True)
            return False
    tmp.replace(dest)
    return True


def fetch_from_archive(packages: Iterable[Package], into: Path, archive: str) -> tuple[list[str], list[str]]:
    """Download the exact installed versions of ``packages`` from a Debian-layout archive —
    a mirror, or a snapshot such as ``https://snapshot.debian.org/archive/debian/20240101T000000Z``
    for versions a mirror no longer carries — into ``into``; those already there are kept.
    The .deb files are then read like any genuine package (what they hold is the archive's
    word, as apt's would be: give an archive you trust, over HTTPS).

    Returns (fetched or present file names, packages the archive did not have).
    """
    into.mkdir(parents=True, exist_ok=True)
    base = archive.rstrip("/")
    failed: list[str] = []
    present: list[str] = []
    for package in (p for p in packages if p.manager == "dpkg" and p.version):
        dest = into / _deb_name(package)
        if dest.is_file() or any(_download(f"{base}/{path}", dest) for path in pool_paths(package)):
            present.append(dest.name)
        else:
            failed.append(f"{package.name}={package.version}")
    return present, failed


def fetch_packages(packages: Iterable[Package], into: Path) -> tuple[list[str], list[str]]:
    """Download the exact installed versions of ``packages`` with the machine's apt
    (``apt-get download NAME:ARCH=VERSION``) into ``into``; those already there are kept.

    Returns (fetched or present file names, packages apt could not provide).
    """
    apt = shutil.which("apt-get")
    if apt is None:
        raise EnvironmentProblem("--fetch-packages needs apt-get (a Debian or Ubuntu analysis station)")
    into.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in packages if p.manager == "dpkg" and p.version]
    missing = [p for p in wanted if not (into / _deb_name(p)).is_file()]

    def spec(p: Package) -> str:
        return f"{p.name}:{p.arch}={p.version}" if p.arch and p.arch != "all" else f"{p.name}={p.version}"

    failed: list[str] = []
    if missing:
        batch = subprocess.run([apt, "download", *map(spec, missing)], cwd=into, capture_output=True, text=True, check=False)
        if batch.returncode != 0:  # one unknown version fails the batch: ask for each alone
            for package in missing:
                one = subprocess.run([apt, "download", spec(package)], cwd=into, capture_output=True, text=True, check=False)
                if one.returncode != 0:
                    failed.append(spec(package))
    present = [_deb_name(p) for p in wanted if (into / _deb_name(p)).is_file()]
    return present, failed
