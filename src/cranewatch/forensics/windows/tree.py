"""A Windows tree inside an image: case-insensitive paths, registry hives, located problems.

``WindowsTree`` is what every Windows check is given. Paths are looked up without regard to
case (``windows/system32/CONFIG/system`` finds ``Windows/System32/config/SYSTEM``), hives are
opened once with regipy, transaction logs (``SYSTEM.LOG1``/``.LOG2``) applied to a private copy
when the hive is dirty, and ``CurrentControlSet`` resolved through ``Select\\Current``. A hive
that cannot be read, or a key that breaks mid-way, becomes a located problem in ``problems``;
the checks carry on with what can be read.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from construct.core import ConstructError
from regipy.exceptions import RegipyException
from regipy.recovery import apply_transaction_logs
from regipy.registry import NKRecord, RegistryHive
from regipy.registry import VKRecord as _VKRecord
from regipy.structs import REGF_HEADER_SIZE

from cranewatch.forensics.checks.base import ScanContext, excerpt
from cranewatch.forensics.image import Image
from cranewatch.forensics.windows.safe_xml import UnsafeXml, parse_xml
from cranewatch.model import Finding, Severity


def _read_value(vk: Any, stream: Any) -> Any:
    """regipy's ``NKRecord.read_value`` without its cost on small values.

    regipy 6.5 reads ``data_size`` bytes even when the top bit marks the data as stored inline
    in the offset field (every DWORD): a read to the end of the hive, 10 MB per value on a
    Windows 10 SYSTEM hive (80 s for its services). Inline data is taken from ``vk.data_offset``
    by regipy itself, so nothing needs to be read for it.
    """
    size = vk.data_size
    if size >= 0x80000000:
        return _VKRecord(value_type=vk.data_type, value_type_str=str(vk.data_type), value=b"", size=size)
    stream.seek(REGF_HEADER_SIZE + 4 + vk.data_offset)
    return _VKRecord(value_type=vk.data_type, value_type_str=str(vk.data_type), value=stream.read(size), size=size)


NKRecord.read_value = staticmethod(_read_value)  # type: ignore[method-assign]

# regipy logs every unreadable cell at ERROR; the scan reports them itself, once, located.
logging.getLogger("regipy").addHandler(logging.NullHandler())
logging.getLogger("regipy").propagate = False

# What regipy and construct raise on a broken hive (bad offsets, short cells, bad UTF-16).
HIVE_ERRORS: tuple[type[BaseException], ...] = (
    RegipyException, ConstructError, ValueError, IndexError, KeyError, EOFError, OSError,
    UnicodeError, AttributeError, TypeError, OverflowError,
)

MAX_HIVE_BYTES = 1 << 30  # real SOFTWARE hives reach a few hundred MB; regipy reads a hive whole
_PROBLEMS_PER_FILE = 10  # a badly broken hive gives this many warnings, not one per key
CONFIG_DIR = "windows/system32/config"  # where the machine hives lie (any case)
_MACHINE_HIVES = {"SYSTEM": "HKLM\\SYSTEM", "SOFTWARE": "HKLM\\SOFTWARE", "SAM": "HKLM\\SAM", "SECURITY": "HKLM\\SECURITY"}


@dataclass(frozen=True)
class Hive:
    """One opened hive: its image path, the name analysts use for it, and the parsed hive."""

    path: str  # image-relative path of the hive file
    label: str  # HKLM\SYSTEM, HKU\alice (NTUSER.DAT) …
    registry: RegistryHive


@dataclass(frozen=True)
class RegValue:
    """A value read from a key: name, data (str, int, list or bytes as regipy decodes them)."""

    name: str
    data: Any
    type: str


@dataclass(frozen=True)
class Service:
    """A service or driver key: its name, key path in SYSTEM, values and ServiceDll."""

    name: str
    key_path: str
    values: dict[str, RegValue]
    service_dll: str


@dataclass
class WindowsTree:
    """The Windows part of an image, as the checks see it."""

    image: Image
    ctx: ScanContext
    problems: list[str] = field(default_factory=list)
    _index: dict[str, str] = field(default_factory=dict)
    _hives: dict[str, Hive | None] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _services: list[Service] | None = None
    _control_set: str | None = None
    _problem_count: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {path.lower(): path for path in self.image.entries}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- files ---------------------------------------------------------------------------

    def find(self, path: str) -> str | None:
        """The image path of ``path`` (any case, ``/`` or ``\\``), or ``None`` if absent."""
        return self._index.get(path.replace("\\", "/").strip("/").lower())

    def files_under(self, folder: str) -> Iterator[str]:
        """Image paths of the regular files below ``folder`` (any case), sorted."""
        prefix = folder.replace("\\", "/").strip("/").lower() + "/"
        for lower, path in sorted(self._index.items()):
            if lower.startswith(prefix) and self.image.entries[path].type == "file":
                yield path

    def users(self) -> Iterator[tuple[str, str]]:
        """(user name, image path of the profile folder) for each folder under ``Users``."""
        for lower, path in sorted(self._index.items()):
            parts = lower.split("/")
            if len(parts) == 2 and parts[0] == "users" and self.image.entries[path].type == "dir":
                yield path.split("/")[1], path

    def read_bytes(self, path: str, limit: int = 16 << 20) -> bytes | None:
        entry = self.image.entries.get(path)
        if entry is None or entry.type != "file" or entry.size > limit:
            return None
        with self.image.open(path) as fh:
            return fh.read(limit)

    def read_xml(self, path: str, what: str, limit: int = 1 << 20) -> ElementTree.Element | None:
        """The root element of the XML file at ``path`` (at most ``limit`` bytes), or None; a
        DTD or a document that does not parse is noted as a problem naming ``what`` it is."""
        data = self.read_bytes(path, limit=limit)
        if data is None:
            return None
        try:
            return parse_xml(data)
        except UnsafeXml as exc:
            self.problem(path, f"{what} not read: {exc}")
            return None

    # -- hives ---------------------------------------------------------------------------

    def machine_hive(self, name: str) -> Hive | None:
        """``SYSTEM``, ``SOFTWARE``, ``SAM`` or ``SECURITY`` from ``Windows/System32/config``."""
        return self._hive(f"{CONFIG_DIR}/{name}", _MACHINE_HIVES[name])

    def user_hives(self) -> Iterator[tuple[str, Hive]]:
        """(user name, NTUSER.DAT hive) of every profile that has one."""
        for user, folder in self.users():
            hive = self._hive(f"{folder}/NTUSER.DAT", f"HKU\\{user}")
            if hive is not None:
                yield user, hive

    def hive_at(self, path: str, label: str) -> Hive | None:
        """Any other hive of the tree (``Windows/AppCompat/Programs/Amcache.hve`` ...), any case."""
        return self._hive(path, label)

    def _hive(self, path: str, label: str) -> Hive | None:
        real = self.find(path)
        if real is None or self.image.entries[real].type != "file":
            return None
        if real in self._hives:
            return self._hives[real]
        hive: Hive | None = None
        size = self.image.entries[real].size
        if size > MAX_HIVE_BYTES:  # regipy holds the whole hive in memory
            self.problem(real, f"registry hive of {size} bytes is larger than {MAX_HIVE_BYTES} and was not read")
            self._hives[real] = None
            return None
        try:
            hive = Hive(real, label, RegistryHive(str(self._recovered(real))))
        except HIVE_ERRORS as exc:
            self.problem(real, f"registry hive not readable, its checks skipped ({exc})")
        self._hives[real] = hive
        return hive

    def _recovered(self, real: str) -> Path:
        """The hive file, or a private copy with its transaction logs applied when it is dirty."""
        disk = self.image.disk_path(real)
        logs = [self.find(f"{real}.LOG1"), self.find(f"{real}.LOG2")]
        present = [log for log in logs if log is not None and self.image.entries[log].size > 512]
        if not present:
            return disk
        try:
            header = RegistryHive(str(disk)).header
            if header.primary_sequence_num == header.secondary_sequence_num:
                return disk  # clean: the logs hold nothing newer
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="cranewatch-hive-")
            restored = Path(self._tmp.name) / f"{len(self._hives)}.hive"
            primary, *secondary = [str(self.image.disk_path(log)) for log in present]
            apply_transaction_logs(str(disk), primary, secondary[0] if secondary else None, str(restored))
            return restored
        except HIVE_ERRORS as exc:
            self.problem(real, f"transaction logs not applied ({exc}); read the hive as stored")
            return disk

    def problem(self, path: str, text: str) -> None:
        """Note what could not be read, at ``image:path``: printable, short, at most a few per file."""
        count = self._problem_count.get(path, 0) + 1
        self._problem_count[path] = count
        if count > _PROBLEMS_PER_FILE:
            return
        if count == _PROBLEMS_PER_FILE:
            text = "more unreadable keys or values; the rest of this file is not reported one by one"
        note = f"{self.image.source}:{path}: {excerpt(text, 240)}"
        if note not in self.problems:
            self.problems.append(note)

    # -- keys and values -----------------------------------------------------------------

    def key(self, hive: Hive, key_path: str) -> NKRecord | None:
        """The key at ``key_path`` (``\\``-separated, from the hive root, any case) or ``None``."""
        try:
            return hive.registry.get_key("\\" + key_path.strip("\\"))
        except RegipyException as exc:
            if "Did not find" in str(exc) or "No subkey" in str(exc):
                return None
            self.problem(hive.path, f"key {shown_key(hive, key_path)} unreadable ({exc})")
        except HIVE_ERRORS as exc:
            self.problem(hive.path, f"key {shown_key(hive, key_path)} unreadable ({exc})")
        return None

    def subkeys(self, hive: Hive, key: NKRecord, where: str) -> list[NKRecord]:
        try:
            return list(key.iter_subkeys() or ())
        except HIVE_ERRORS as exc:
            self.problem(hive.path, f"subkeys of {shown_key(hive, where)} unreadable ({exc})")
            return []

    def values(self, hive: Hive, key: NKRecord, where: str) -> dict[str, RegValue]:
        """The key's values by lower-case name; corrupted ones reported and left out."""
        out: dict[str, RegValue] = {}
        try:
            for value in key.iter_values(trim_values=False) or ():
                if value.is_corrupted:
                    self.problem(hive.path, f"value {shown_key(hive, where + chr(92) + str(value.name))} is corrupted")
                    continue
                out[str(value.name).lower()] = RegValue(str(value.name), value.value, str(value.value_type))
        except HIVE_ERRORS as exc:
            self.problem(hive.path, f"values of {shown_key(hive, where)} unreadable ({exc})")
        return out

    def child(self, hive: Hive, key: NKRecord, name: str, where: str) -> NKRecord | None:
        """The subkey ``name`` of ``key`` (any case), without walking again from the root."""
        try:
            found = key.get_subkey(name, raise_on_missing=False)
        except HIVE_ERRORS as exc:
            self.problem(hive.path, f"subkey {shown_key(hive, where + chr(92) + name)} unreadable ({exc})")
            return None
        return found if isinstance(found, NKRecord) else None

    def services(self) -> list[Service]:
        """The services and drivers of the current control set (read once, shared by checks)."""
        if self._services is not None:
            return self._services
        self._services = []
        system = self.machine_hive("SYSTEM")
        if system is None:
            return self._services
        base = f"{self.control_set(system)}\\Services"
        services = self.key(system, base)
        for key in self.subkeys(system, services, base) if services is not None else ():
            where = f"{base}\\{key.name}"
            values = self.values(system, key, where)
            params = self.child(system, key, "Parameters", where) if key.subkey_count else None
            dll = text_of(self.values(system, params, f"{where}\\Parameters").get("servicedll")) if params is not None else ""
            self._services.append(Service(str(key.name), where, values, dll))
        return self._services

    def control_set(self, system: Hive) -> str:
        """``ControlSet00N`` named by ``Select\\Current`` (``ControlSet001`` when unreadable)."""
        if self._control_set is None:
            self._control_set = self._current_control_set(system)
        return self._control_set

    def _current_control_set(self, system: Hive) -> str:
        select = self.key(system, "Select")
        if select is not None:
            current = self.values(system, select, "Select").get("current")
            if current is not None and isinstance(current.data, int) and 0 < current.data < 1000:
                name = f"ControlSet{current.data:03d}"
                if self.key(system, name) is not None:
                    return name
        return "ControlSet001"


def shown_key(hive: Hive, where: str) -> str:
    """``hive``'s name and key path for a message, cut at the first garbage name of a broken hive."""
    parts = where.split("\\")
    for index, part in enumerate(parts):
        if len(part) > 120 or not part.isprintable() or "\ufffd" in part:
            parts = [*parts[:index], "<unreadable name>"]
            break
    return "\\".join([hive.label, *parts])


def text_of(value: RegValue | None) -> str:
    """A value's data as text ('' when absent); a multi-string joined with commas."""
    if value is None or value.data is None:
        return ""
    if isinstance(value.data, list):
        return ",".join(str(v) for v in value.data)
    if isinstance(value.data, bytes):
        return value.data.decode("utf-16-le", "replace").rstrip("\x00")
    return str(value.data).rstrip("\x00")


def int_of(value: RegValue | None) -> int | None:
    if value is None:
        return None
    if isinstance(value.data, int):
        return value.data
    try:
        return int(str(value.data), 0)
    except ValueError:
        return None


def registry_finding(
    win: WindowsTree, hive: Hive, key_path: str, value: str | None, data: object, *,
    rule: str, category: str, severity: Severity, title: str, remedy: str, technique: tuple[str, ...] = (),
    note: str | None = None, extra: dict[str, object] | None = None, id_key: tuple[object, ...] | None = None,
) -> Finding:
    """A finding whose evidence is a registry value: hive file, full key, value name and data."""
    full_key = f"{hive.label}\\{key_path}"
    shown = "(Default)" if value == "" else value
    excerpt = f"{full_key}\\{shown} = {data}" if value is not None else full_key
    values: dict[str, object] = {"key": full_key, "value": shown, "data": data, **(extra or {})}
    return win.ctx.finding(
        rule=rule, category=category, severity=severity, title=title, path=hive.path, remedy=remedy,
        excerpt_text=excerpt, technique=technique,
        key=id_key if id_key is not None else (key_path.lower(), (value or "").lower()),
        values=values, note=note,
    )
