"""Package inventory of an image: what the package managers say is installed, and what they own.

Reads dpkg (``var/lib/dpkg/status`` plus ``info/*.list``/``*.md5sums``), opkg (same stanza
format), apk (``lib/apk/db/installed``), rpm (``var/lib/rpm/rpmdb.sqlite`` headers), Python
(``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO``) and npm (``node_modules/*/package.json``).
Pure functions of an opened ``Image``: nothing here executes the image's package tools.
"""

from __future__ import annotations

import base64
import contextlib
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
    # rpm's and apk's claimed content checksums, ``algorithm:hex`` (``sha256:…``, ``sha1:…``)
    digests: dict[str, str] = field(default_factory=dict)
    config: set[str] = field(default_factory=set)  # rpm %config files: admins change them (their digests are in ``digests``)


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


def _apk(image: Image, db: PackageDb) -> list[Package]:
    """Alpine's ``lib/apk/db/installed``: a block per package, ``F:`` a directory, ``R:`` a file
    in it and ``Z:`` that file's checksum (``Q1`` + base64 of its SHA-1)."""
    text = image.read_text("lib/apk/db/installed", limit=64 << 20)
    if text is None:
        return []
    found = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        directory = path = ""
        for line in block.splitlines():
            if len(line) < 2 or line[1] != ":":
                continue
            key, value = line[0], line[2:]
            fields.setdefault(key, value)
            if key == "F":
                directory = value.strip("/")
            elif key == "R" and "P" in fields:
                path = image.canonical(f"{directory}/{value}" if directory else value)
                db.owner.setdefault(path, fields["P"])
            elif key == "Z" and path and value.startswith("Q1"):
                with contextlib.suppress(ValueError):
                    db.digests[path] = "sha1:" + base64.b64decode(value[2:], validate=True).hex()
        if "P" in fields:
            found.append(Package("apk", fields["P"], fields.get("V", ""), fields.get("o"), fields.get("A"), "lib/apk/db/installed"))
    return found


# rpm header tags read here, and the type of each entry (rpm's rpmTagType).
RPM_NAME, RPM_VERSION, RPM_RELEASE, RPM_EPOCH, RPM_ARCH, RPM_SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
RPM_FILEDIGESTS, RPM_FILEFLAGS, RPM_DIRINDEXES, RPM_BASENAMES, RPM_DIRNAMES = 1035, 1037, 1116, 1117, 1118
RPM_PAYLOADCOMPRESSOR, RPM_FILEDIGESTALGO = 1125, 5011
RPM_DIGEST_ALGORITHMS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512"}
_RPM_INT = {2: (">b", 1), 3: (">h", 2), 4: (">i", 4), 5: (">q", 8)}


def rpm_header(blob: bytes) -> dict[int, str | list[str] | list[int]]:
    """The entries of an rpm header (from its entry count on: the database's blob, or a
    package's header after its 8-byte magic): strings, string arrays and integer arrays."""
    if len(blob) < 8:
        return {}
    count, store_size = struct.unpack_from(">II", blob, 0)
    index_end = 8 + 16 * count
    if count > 100_000 or index_end + store_size > len(blob):
        return {}
    store = blob[index_end : index_end + store_size]
    tags: dict[int, str | list[str] | list[int]] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if not 0 <= offset < len(store):
            continue
        if kind in (6, 9):
            tags[tag] = store[offset : store.find(b"\x00", offset)].decode("utf-8", "replace")
        elif kind == 8:
            items, at = [], offset
            for _ in range(min(n, len(store))):
                end = store.find(b"\x00", at)
                if end < 0:
                    break
                items.append(store[at:end].decode("utf-8", "surrogateescape"))
                at = end + 1
            tags[tag] = items
        elif kind in _RPM_INT:
            fmt, width = _RPM_INT[kind]
            if offset + n * width <= len(store):
                tags[tag] = [struct.unpack_from(fmt, store, offset + width * j)[0] for j in range(n)]
    return tags


def rpm_text(tags: dict[int, str | list[str] | list[int]], tag: int) -> str:
    value = tags.get(tag)
    return value if isinstance(value, str) else ""


def rpm_version(tags: dict[int, str | list[str] | list[int]]) -> str:
    """``[epoch:]version-release`` as rpm prints it."""
    epoch = tags.get(RPM_EPOCH)
    version = f"{rpm_text(tags, RPM_VERSION)}-{rpm_text(tags, RPM_RELEASE)}"
    return f"{epoch[0]}:{version}" if isinstance(epoch, list) and epoch else version


def rpm_digest_algorithm(tags: dict[int, str | list[str] | list[int]]) -> str:
    """The file digests' algorithm (md5 when the header does not say, as rpm assumes)."""
    value = tags.get(RPM_FILEDIGESTALGO)
    number = value[0] if isinstance(value, list) and value and isinstance(value[0], int) else 1
    return RPM_DIGEST_ALGORITHMS.get(number, "")


def rpm_files(tags: dict[int, str | list[str] | list[int]]) -> list[tuple[str, str, bool]]:
    """(path without the leading slash, ``algorithm:hex`` or ``""``, %config?) of each file."""
    names, dirs, index = tags.get(RPM_BASENAMES), tags.get(RPM_DIRNAMES), tags.get(RPM_DIRINDEXES)
    digests, flags = tags.get(RPM_FILEDIGESTS) or [], tags.get(RPM_FILEFLAGS) or []
    algorithm = rpm_digest_algorithm(tags)
    if not isinstance(names, list) or not isinstance(dirs, list) or not isinstance(index, list):
        return []
    out = []
    for i, name in enumerate(names):
        j = index[i] if i < len(index) else -1
        if not isinstance(j, int) or not 0 <= j < len(dirs):
            continue
        digest = digests[i] if i < len(digests) and isinstance(digests[i], str) else ""
        flag = flags[i] if i < len(flags) else 0
        config = isinstance(flag, int) and bool(flag & 1)
        out.append((f"{dirs[j]}{name}".strip("/"), f"{algorithm}:{digest}" if digest and algorithm else "", config))
    return out


_RPM_DATABASES = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite",  # rpm >= 4.16
                  "var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages")  # Berkeley DB (RHEL/CentOS 7 and 8)
_MAX_RPMDB = 1 << 30


def _rpm(image: Image, db: PackageDb) -> list[Package]:
    path = next((p for p in map(image.resolve, _RPM_DATABASES) if p is not None and image.entries[p].type == "file"), None)
    if path is None:
        return []
    found = []
    for blob in _rpm_sqlite_headers(image, path) if path.endswith(".sqlite") else _rpm_bdb_headers(image, path):
        tags = rpm_header(blob)
        name = rpm_text(tags, RPM_NAME)
        if not name:
            continue
        found.append(Package("rpm", name, rpm_version(tags), rpm_text(tags, RPM_SOURCERPM) or None,
                             rpm_text(tags, RPM_ARCH) or None, path))
        for file_path, digest, is_config in rpm_files(tags):
            canonical = image.canonical(file_path)
            db.owner.setdefault(canonical, name)
            if digest:
                db.digests[canonical] = digest
            if is_config:
                db.config.add(canonical)
    return found


def _rpm_sqlite_headers(image: Image, path: str) -> list[bytes]:
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
                return [bytes(blob) for (blob,) in conn.execute("SELECT blob FROM Packages")]
            finally:
                conn.close()
        except sqlite3.Error:
            return []


# Berkeley DB hash database, read-only, as rpm's own bdb_ro backend reads it: the meta page's
# magic and page size, then every hash page's key/data items; a data item too big for its page
# is a chain of overflow pages.
_BDB_HASH_MAGIC = 0x061561
_P_HASH_UNSORTED, _P_HASH, _P_OVERFLOW = 2, 13, 7
_H_KEYDATA, _H_OFFPAGE = 1, 3


def _rpm_bdb_headers(image: Image, path: str) -> list[bytes]:
    if image.entries[path].size > _MAX_RPMDB:
        return []
    with image.open(path) as fh:
        data = fh.read(_MAX_RPMDB)
    return bdb_hash_values(data)


def bdb_hash_values(data: bytes) -> list[bytes]:
    """The data items of a Berkeley DB hash database (``[]`` if it is not one)."""
    if len(data) < 512:
        return []
    for order in ("<", ">"):
        if struct.unpack_from(order + "I", data, 12)[0] == _BDB_HASH_MAGIC:
            break
    else:
        return []
    page_size = struct.unpack_from(order + "I", data, 20)[0]
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return []
    pages = len(data) // page_size
    values: list[bytes] = []
    for number in range(1, pages):
        page = data[number * page_size : (number + 1) * page_size]
        if page[25] not in (_P_HASH, _P_HASH_UNSORTED):
            continue
        entries = struct.unpack_from(order + "H", page, 20)[0]
        offsets = [struct.unpack_from(order + "H", page, 26 + 2 * i)[0] for i in range(min(entries, (page_size - 26) // 2))]
        for i in range(1, len(offsets), 2):  # items alternate key, data
            start, end = offsets[i], offsets[i - 1] if i else page_size
            if not 26 <= start < end <= page_size:
                continue
            kind = page[start]
            if kind == _H_KEYDATA:
                values.append(page[start + 1 : end])
            elif kind == _H_OFFPAGE and end - start >= 12:
                first, total = struct.unpack_from(order + "II", page, start + 4)
                values.append(_bdb_overflow(data, page_size, pages, first, total, order))
    return [v for v in values if v]


def _bdb_overflow(data: bytes, page_size: int, pages: int, first: int, total: int, order: str) -> bytes:
    chunks: list[bytes] = []
    got, number, seen = 0, first, set()
    while 0 < number < pages and number not in seen and got < total:
        seen.add(number)
        page = data[number * page_size : (number + 1) * page_size]
        if page[25] != _P_OVERFLOW:
            return b""
        length = struct.unpack_from(order + "H", page, 22)[0]
        chunk = page[26 : 26 + min(length, page_size - 26)]
        chunks.append(chunk)
        got += len(chunk)
        number = struct.unpack_from(order + "I", page, 16)[0]
    blob = b"".join(chunks)
    return blob if len(blob) == total else b""


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
    packages += _apk(image, db)
    packages += _rpm(image, db)
    packages += _language_packages(image)
    packages.sort(key=lambda p: (p.manager, p.name, p.version, p.path))
    return PackageDb(tuple(packages), db.owner, db.md5, db.conffiles, db.os_release, db.digests, db.config)
