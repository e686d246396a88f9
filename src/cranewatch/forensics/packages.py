"""Package inventory of an image: what the package managers say is installed, and what they own.

Reads dpkg (``var/lib/dpkg/status`` plus ``info/*.list``/``*.md5sums``), opkg (same stanza
format), apk (``lib/apk/db/installed``), rpm (``var/lib/rpm/rpmdb.sqlite`` headers), Python
(``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO``) and npm (``node_modules/*/package.json``).
Pure functions of an opened ``Image``: nothing here executes the image's package tools.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from urllib.parse import quote

from cranewatch.forensics.image import Image

_STATUS_FILES = {
    "dpkg": "var/lib/dpkg/status",
    "opkg": "usr/lib/opkg/status",
}
_OPKG_ALT = ("var/lib/opkg/status",)


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package or library, as its manager recorded it."""

    manager: str  # dpkg | opkg | apk | rpm | python | npm
    name: str
    version: str
    source: str | None = None  # source package (dpkg), used for security-tracker matching
    arch: str | None = None
    path: str = ""  # where the record was read, image-relative
    maintainer: str | None = None

    @property
    def purl(self) -> str:
        """Package URL (purl spec) for the SBOM."""
        kind = {"dpkg": "deb", "opkg": "opkg", "apk": "apk", "rpm": "rpm", "python": "pypi", "npm": "npm"}[self.manager]
        namespace = {"dpkg": "debian/", "apk": "alpine/", "rpm": ""}.get(self.manager, "")
        name = self.name.lower().replace("_", "-") if self.manager == "python" else self.name
        text = f"pkg:{kind}/{namespace}{quote(name, safe='@/')}@{quote(self.version, safe='')}"
        if self.arch:
            text += f"?arch={self.arch}"
        return text


@dataclass(frozen=True)
class PackageDb:
    """Installed packages plus what dpkg/opkg record about their files.

    ``owner`` maps a canonical image path to the owning package; ``md5`` the recorded content
    checksum of ordinary package files; ``conffiles`` those of configuration files, which
    admins may change.
    """

    packages: tuple[Package, ...]
    owner: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)
    conffiles: dict[str, str] = field(default_factory=dict)
    os_release: dict[str, str] = field(default_factory=dict)


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC-822-like stanzas of a dpkg/opkg status file (continuation lines kept joined)."""
    record: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record, key = {}, ""
        elif line[0] in " \t" and key:
            record[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            record[key.strip()] = value.strip()
    if record:
        yield record


def _installed(record: dict[str, str]) -> bool:
    status = record.get("Status", "install ok installed").split()
    return len(status) == 3 and status[2] in ("installed", "half-configured", "unpacked")


def _dpkg_like(image: Image, manager: str, status_path: str, db: PackageDb, info_dir: str) -> list[Package]:
    text = image.read_text(status_path, limit=64 << 20)
    if text is None:
        return []
    found: list[Package] = []
    for record in parse_stanzas(text):
        if "Package" not in record or not _installed(record):
            continue
        source = record.get("Source", "").split(" ")[0] or None
        found.append(
            Package(
                manager, record["Package"], record.get("Version", ""), source,
                record.get("Architecture"), status_path, record.get("Maintainer"),
            )
        )
        for line in record.get("Conffiles", "").splitlines():
            bits = line.split()
            if len(bits) >= 2 and len(bits[1]) == 32:
                db.conffiles[image.canonical(bits[0])] = bits[1]
    info = image.resolve(info_dir)
    if info is None:
        return found
    prefix = info + "/"
    for entry in list(image.entries.values()):
        if entry.type != "file" or not entry.path.startswith(prefix) or "/" in entry.path[len(prefix) :]:
            continue
        base = entry.path[len(prefix) :]
        if base.endswith(".list"):
            package = base[: -len(".list")].split(":")[0]
            listing = image.read_text(entry.path, limit=64 << 20) or ""
            for line in listing.splitlines():
                line = line.strip()
                if line and line != "/.":
                    db.owner.setdefault(image.canonical(line), package)
        elif base.endswith(".md5sums"):
            listing = image.read_text(entry.path, limit=64 << 20) or ""
            for line in listing.splitlines():
                checksum, _, name = line.partition("  ")
                if len(checksum) == 32 and name:
                    db.md5[image.canonical(name)] = checksum
    return found


def _apk(image: Image) -> list[Package]:
    text = image.read_text("lib/apk/db/installed", limit=64 << 20)
    if text is None:
        return []
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if len(line) > 2 and line[1] == ":")
        if "P" in fields:
            found.append(Package("apk", fields["P"], fields.get("V", ""), fields.get("o"), fields.get("A"), "lib/apk/db/installed"))
    return found


def _rpm_header_tags(blob: bytes) -> dict[int, str]:
    """Name (1000), version (1001), release (1002), epoch (1003), arch (1022) of an rpm header."""
    if len(blob) < 8:
        return {}
    count, store_size = struct.unpack(">II", blob[:8])
    index_end = 8 + 16 * count
    store = blob[index_end : index_end + store_size]
    tags: dict[int, str] = {}
    for i in range(count):
        tag, kind, offset, _n = struct.unpack(">IIiI", blob[8 + 16 * i : 24 + 16 * i])
        if tag in (1000, 1001, 1002, 1022, 1044) and kind == 6:
            end = store.find(b"\x00", offset)
            tags[tag] = store[offset:end].decode("utf-8", "replace")
        elif tag == 1003 and kind == 4:
            tags[tag] = str(struct.unpack(">I", store[offset : offset + 4])[0])
    return tags


def _rpm(image: Image) -> list[Package]:
    path = image.resolve("var/lib/rpm/rpmdb.sqlite") or image.resolve("usr/lib/sysimage/rpm/rpmdb.sqlite")
    if path is None or image.entries[path].type != "file":
        return []
    found = []
    # sqlite writes beside a database it opens (journal, WAL recovery): work on a private copy
    # of the database and its write-ahead log, never on the image.
    with tempfile.TemporaryDirectory(prefix="cranewatch-rpmdb-") as tmp:
        copy = Path(tmp) / "rpmdb.sqlite"
        for suffix in ("", "-wal"):
            member = image.resolve(path + suffix)
            if member is not None and image.entries[member].type == "file":
                with image.open(member) as src, open(f"{copy}{suffix}", "wb") as dst:
                    shutil.copyfileobj(src, dst)
        try:
            conn = sqlite3.connect(copy)
            try:
                for (blob,) in conn.execute("SELECT blob FROM Packages"):
                    tags = _rpm_header_tags(bytes(blob))
                    if 1000 in tags:
                        version = f"{tags.get(1001, '')}-{tags.get(1002, '')}"
                        if tags.get(1003):
                            version = f"{tags[1003]}:{version}"
                        found.append(Package("rpm", tags[1000], version, tags.get(1044), tags.get(1022), path))
            finally:
                conn.close()
        except sqlite3.Error:
            return []
    return found


_DIST_INFO = re.compile(r"(^|/)[^/]+\.(dist-info/METADATA|egg-info/PKG-INFO|egg-info)$")
_NPM = re.compile(r"(^|/)node_modules/(@[^/]+/)?[^/]+/package\.json$")


def _language_packages(image: Image) -> list[Package]:
    found = []
    for entry in image.files():
        if entry.size > 4 << 20:
            continue
        if _DIST_INFO.search(entry.path):
            text = image.read_text(entry.path) or ""
            headers = HeaderParser().parsestr(text, headersonly=True)
            name, version = headers.get("Name"), headers.get("Version")
            if name and version:
                found.append(Package("python", str(name), str(version), path=entry.path))
        elif _NPM.search(entry.path):
            try:
                meta = json.loads(image.read_text(entry.path) or "{}")
            except ValueError:
                continue
            if isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("version"), str):
                found.append(Package("npm", meta["name"], meta["version"], path=entry.path))
    return found


def _os_release(image: Image) -> dict[str, str]:
    text = image.read_text("etc/os-release") or image.read_text("usr/lib/os-release") or ""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def read_packages(image: Image) -> PackageDb:
    """Everything the image's package managers record, in one ``PackageDb``."""
    db = PackageDb(packages=(), os_release=_os_release(image))
    packages: list[Package] = []
    packages += _dpkg_like(image, "dpkg", _STATUS_FILES["dpkg"], db, "var/lib/dpkg/info")
    opkg_status = _STATUS_FILES["opkg"] if image.resolve(_STATUS_FILES["opkg"]) else _OPKG_ALT[0]
    packages += _dpkg_like(image, "opkg", opkg_status, db, opkg_status.rpartition("/")[0] + "/info")
    packages += _apk(image)
    packages += _rpm(image)
    packages += _language_packages(image)
    packages.sort(key=lambda p: (p.manager, p.name, p.version, p.path))
    return PackageDb(tuple(packages), db.owner, db.md5, db.conffiles, db.os_release)
