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
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from cranewatch.errors import EnvironmentProblem, InputError, Location
from cranewatch.forensics.packages import Package, parse_stanzas

_CACHE_VERSION = 2  # 2: hard links of a package hashed as their targets


@dataclass(frozen=True)
class GenuinePackage:
    """One genuine package: its identity and the md5 of each regular file it ships."""

    name: str
    version: str
    arch: str
    files: dict[str, str]  # path as in the package (no leading "./" or "/") -> md5 of the content
    conffiles: frozenset[str]
    source: str  # the .deb file it was read from


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


def read_deb(path: Path) -> GenuinePackage:
    """Hash every regular file of one .deb (``InputError`` if it is not a readable package)."""
    where = str(path)
    control: dict[str, str] = {}
    conffiles: frozenset[str] = frozenset()
    files: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            for name, offset, size in list(_ar_members(fh, where)):
                if not name.startswith(("control.tar", "data.tar")):
                    continue
                stream = _decompressed(name, io.BufferedReader(_Slice(fh, offset, size), 1 << 20))
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        if member.islnk() and name.startswith("data.tar"):
                            target = files.get(_clean(member.linkname))  # hashed already: links come after
                            if target is not None:
                                files[_clean(member.name)] = target
                            continue
                        if not member.isreg():
                            continue
                        extracted = tar.extractfile(member)
                        if extracted is None:
                            continue
                        if name.startswith("control.tar"):
                            text = extracted.read(4 << 20).decode("utf-8", "replace")
                            if _clean(member.name) == "control":
                                control = next(parse_stanzas(text), {})
                            elif _clean(member.name) == "conffiles":
                                conffiles = frozenset(_clean(line.split()[-1]) for line in text.splitlines() if line.strip())
                            continue
                        digest = hashlib.md5(usedforsecurity=False)
                        while block := extracted.read(1 << 20):
                            digest.update(block)
                        files[_clean(member.name)] = digest.hexdigest()
    except (OSError, EOFError, ValueError, tarfile.TarError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise InputError(f"cannot read this package: {exc}", Location(file=where)) from None
    if "Package" not in control:
        raise InputError("no control file with a Package field", Location(file=where))
    return GenuinePackage(
        control["Package"], control.get("Version", ""), control.get("Architecture", ""), files, conffiles, path.name
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cached_read(path: Path, cache: Path | None) -> GenuinePackage:
    if cache is None:
        return read_deb(path)
    key = cache / f"{_sha256(path)}.json"
    try:
        data = json.loads(key.read_text())
        if data.get("v") == _CACHE_VERSION:
            return GenuinePackage(
                data["name"], data["version"], data["arch"], dict(data["files"]), frozenset(data["conffiles"]), path.name
            )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package = read_deb(path)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "v": _CACHE_VERSION, "name": package.name, "version": package.version, "arch": package.arch,
            "files": package.files, "conffiles": sorted(package.conffiles),
        }))
        tmp.replace(key)
    except OSError:
        pass  # a read-only home: the index is simply not kept
    return package


def load_index(paths: Iterable[str | os.PathLike[str]], *, cache: bool = True) -> GenuineIndex:
    """The genuine packages in ``paths`` (directories searched for ``*.deb``, or .deb files)."""
    found: dict[str, list[GenuinePackage]] = {}
    problems: list[str] = []
    sources: list[str] = []
    cache_dir = _cache_dir() if cache else None
    for item in paths:
        root = Path(item)
        sources.append(str(root))
        if root.is_dir():
            debs = sorted(p for p in root.rglob("*.deb") if p.is_file())
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


def _deb_name(package: Package) -> str:
    """The file name apt gives a package: name_version_arch.deb, the epoch's colon as %3a."""
    return f"{package.name}_{package.version.replace(':', '%3a')}_{package.arch or 'all'}.deb"


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
