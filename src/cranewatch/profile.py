"""Crane profile: what one crane's network and process image are supposed to look like (TOML).

A profile names the crane, its zones (crane LAN, terminal, outside) as CIDRs, its hosts with
role, MAC and IP, the sanctioned gateway, the allowed communications (and for Modbus/S7 the
function codes and register ranges each client may use, and who may write), the outside
endpoints a port allows (none by default), the EWS maintenance windows, the safety-relevant
points, the hosts allowed to receive container data, and the register map.

``load_profile`` collects every problem at once, each located at ``file:line`` (tomllib gives
no line numbers for values, so the line of a key is found by scanning the text), and raises
one ``ProfileError`` whose ``problems`` lists them all.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cranewatch.configschema import (
    BOOL,
    DATETIME,
    INT,
    NUMBER,
    TEXT,
    TIME,
    AnyOf,
    ListOf,
    Problem,
    Shape,
    Table,
    check,
    toml_error_location,
)
from cranewatch.errors import CranewatchError, InputError, Location, ProfileError
from cranewatch.protocols.registry import profile_protocols

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ZONES = ("crane", "terminal", "outside")
TABLES = ("CO", "DI", "HR", "IR")
REGISTER_TYPES = ("uint16", "int16", "bit")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The protocol names allow rules may use: each protocol module declares its own (the registry).
PROTOCOLS = profile_protocols()
# Function codes that change a Modbus slave's state (mirrors protocols.modbus.WRITE_FUNCTIONS).
MODBUS_WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 21, 22, 23})
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
RANGE_RE = re.compile(r"^(CO|DI|HR|IR):(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, slots=True)
class Host:
    """One known host: its name, role, addresses and zone."""

    name: str
    role: str
    ip: str
    mac: str | None
    zone: str


@dataclass(frozen=True, slots=True)
class Gateway:
    """The crane's one sanctioned router to the terminal."""

    ip: str
    mac: str | None


@dataclass(frozen=True, slots=True)
class RegisterRange:
    """A span of one Modbus table, both ends included: ``HR:0-3``."""

    table: str
    start: int
    end: int

    def covers(self, table: str, start: int, count: int = 1) -> bool:
        return table == self.table and start >= self.start and start + max(count, 1) - 1 <= self.end

    def __str__(self) -> str:
        return f"{self.table}:{self.start}" + (f"-{self.end}" if self.end != self.start else "")

    @classmethod
    def parse(cls, text: str) -> RegisterRange:
        m = RANGE_RE.match(text.strip().upper())
        if not m:
            raise ValueError(f"register range {text!r} is not TABLE:START[-END] (e.g. HR:0-3)")
        start = int(m.group(2))
        end = int(m.group(3)) if m.group(3) else start
        if end < start or end > 65535:
            raise ValueError(f"register range {text!r} runs backwards or past 65535")
        return cls(m.group(1), start, end)


@dataclass(frozen=True, slots=True)
class Allowance:
    """One allowed communication. ``client``/``server`` are host names, IPs, CIDRs or ``*``.

    For Modbus, ``functions`` and ``ranges`` bound what the client may do (empty = no bound)
    and ``write`` says whether it may write at all.
    """

    client: str
    server: str
    protocol: str
    port: int | None
    functions: frozenset[int] = frozenset()
    ranges: tuple[RegisterRange, ...] = ()
    write: bool = False
    line: int | None = None


@dataclass(frozen=True, slots=True)
class OutsideEndpoint:
    """An outside address a port allows a crane host to reach (e.g. a vendor's diagnostics)."""

    name: str
    network: IpNetwork
    port: int | None
    protocol: str
    clients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """When a host (the EWS) may write: weekly hours in a timezone, or one dated span."""

    hosts: tuple[str, ...]
    timezone: str = "UTC"
    weekdays: tuple[int, ...] = ()
    start: time | None = None
    end: time | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None

    def covers(self, ts: float) -> bool:
        if self.start_at is not None and self.end_at is not None:
            return self.start_at.timestamp() <= ts <= self.end_at.timestamp()
        if self.start is None or self.end is None:
            return False
        local = datetime.fromtimestamp(ts, _zone(self.timezone))
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        now = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # a window across midnight


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """One named point of the PLC process image (the process checks read values through it)."""

    table: str
    address: int
    name: str
    type: str = "uint16"
    scale: float = 1.0
    unit: str = ""
    low: float | None = None
    high: float | None = None
    safety: bool = False


@dataclass(frozen=True, slots=True)
class CraneProfile:
    """One crane's expected network and process image (see module docstring)."""

    crane_id: str
    model: str = ""
    zones: dict[str, tuple[IpNetwork, ...]] = field(default_factory=dict)
    hosts: tuple[Host, ...] = ()
    gateway: Gateway | None = None
    allowed: tuple[Allowance, ...] = ()
    outside_endpoints: tuple[OutsideEndpoint, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    safety_points: frozenset[str] = frozenset()
    registers: tuple[RegisterPoint, ...] = ()
    data_receivers: tuple[str, ...] = ()
    source: str = ""

    # -- who is who ------------------------------------------------------------------------
    # Lookup tables built once (profiles are asked about every flow).
    _by_ip: dict[str, Host] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, Host] = field(init=False, repr=False, compare=False)
    _zone_cache: dict[str, str] = field(init=False, repr=False, compare=False)
    _verdicts: dict[tuple[object, ...], object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_ip", {h.ip: h for h in reversed(self.hosts)})
        object.__setattr__(self, "_by_name", {h.name: h for h in reversed(self.hosts)})
        object.__setattr__(self, "_zone_cache", {})
        object.__setattr__(self, "_verdicts", {})

    def host_by_ip(self, ip: str) -> Host | None:
        return self._by_ip.get(ip)

    def host_by_name(self, name: str) -> Host | None:
        return self._by_name.get(name)

    def zone_of(self, ip: str) -> str:
        """``crane``, ``terminal`` or ``outside`` (anything not in the first two)."""
        zone = self._zone_cache.get(ip)
        if zone is None:
            zone = self._zone_cache[ip] = self._find_zone(ip)
        return zone

    def _find_zone(self, ip: str) -> str:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "outside"
        for zone in ("crane", "terminal"):
            if any(addr in net for net in self.zones.get(zone, ())):
                return zone
        return "outside"

    def matches(self, pattern: str, ip: str) -> bool:
        """Does ``ip`` match a host name, an IP, a CIDR, ``zone:NAME`` or ``*``?"""
        if pattern == "*":
            return True
        if pattern.startswith("zone:"):
            return self.zone_of(ip) == pattern[5:]
        host = self.host_by_name(pattern)
        if host is not None:
            return host.ip == ip
        return _ip_in(ip, pattern)

    # -- what is allowed -------------------------------------------------------------------
    def allowances(self, client: str, server: str, protocol: str | None = None) -> list[Allowance]:
        key = ("allowances", client, server, protocol)
        found = self._verdicts.get(key)
        if found is None:
            found = self._verdicts[key] = self._allowances(client, server, protocol)
        return found  # type: ignore[return-value]

    def _allowances(self, client: str, server: str, protocol: str | None) -> list[Allowance]:
        return [
            a for a in self.allowed
            if self.matches(a.client, client) and self.matches(a.server, server)
            and (protocol is None or a.protocol in (protocol, "any"))
        ]

    def allows(self, client: str, server: str, protocol: str | None, port: int | None) -> bool:
        for a in self.allowances(client, server, protocol):
            if a.port is None or port is None or a.port == port:
                return True
        return self.allowed_outside(client, server, port)

    def allowed_outside(self, client: str, server: str, port: int | None) -> bool:
        for end in self.outside_endpoints:
            if port is not None and end.port is not None and end.port != port:
                continue
            if not any(_ip_in(ip, str(end.network)) for ip in (client, server)):
                continue
            other = client if _ip_in(server, str(end.network)) else server
            if not end.clients or any(self.matches(c, other) for c in end.clients):
                return True
        return False

    def may_write(self, client: str, server: str, table: str, address: int, count: int) -> bool:
        """Whether the profile lets ``client`` write this span of ``server``'s process image."""
        key = ("write", client, server, table, address, count)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._may_write(client, server, table, address, count)
        return bool(verdict)

    def _may_write(self, client: str, server: str, table: str, address: int, count: int) -> bool:
        for a in self.allowances(client, server, "modbus"):
            if not a.write:
                continue
            if a.functions and not (a.functions & MODBUS_WRITE_FUNCTIONS):
                continue
            if not a.ranges or any(r.covers(table, address, count) for r in a.ranges):
                return True
        return False

    def writers(self) -> frozenset[str]:
        """Names/patterns of every client any allowance lets write."""
        return frozenset(a.client for a in self.allowed if a.write)

    def in_maintenance(self, client: str, ts: float) -> bool | None:
        """True inside one of the client's windows, False outside; None when it has none."""
        key = ("windows", client)
        windows = self._verdicts.get(key)
        if windows is None:
            windows = self._verdicts[key] = [w for w in self.maintenance
                                             if any(self.matches(h, client) for h in w.hosts)]
        assert isinstance(windows, list)
        if not windows:
            return None
        return any(w.covers(ts) for w in windows)

    def may_receive_container_data(self, ip: str) -> bool:
        key = ("receiver", ip)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = any(self.matches(r, ip) for r in self.data_receivers)
        return bool(verdict)

    # -- the process image -----------------------------------------------------------------
    def has_register_map(self, ip: str) -> bool:
        """Whether the register map describes this host: the profile's PLCs (any host when
        the profile names no PLC)."""
        plcs = [h.ip for h in self.hosts if h.role == "plc"]
        return not plcs or ip in plcs

    def point_at(self, table: str, address: int) -> RegisterPoint | None:
        for point in self.registers:
            if point.table == table and point.address == address:
                return point
        return None

    def safety_points_in(self, table: str, address: int, count: int) -> list[RegisterPoint]:
        key = ("safety", table, address, count)
        found = self._verdicts.get(key)
        if found is None:
            found = self._verdicts[key] = self._safety_points_in(table, address, count)
        return found  # type: ignore[return-value]

    def _safety_points_in(self, table: str, address: int, count: int) -> list[RegisterPoint]:
        return [
            p for p in self.registers
            if p.table == table and address <= p.address < address + max(count, 1)
            and (p.safety or p.name in self.safety_points)
        ]


# -- loading -------------------------------------------------------------------------------

# Every key a profile may hold and its type: anything else is a located error, so a misspelt
# `regsiters` or `clients` can never silently drop a limit or widen an allow-list.
PROFILE_SHAPE: Shape = Table({
    "crane": Table({"id": TEXT, "model": TEXT, "extends": TEXT}),
    "zones": Table({zone: AnyOf((TEXT, ListOf(TEXT))) for zone in ZONES}),
    "hosts": ListOf(Table({"name": TEXT, "role": TEXT, "ip": TEXT, "mac": TEXT, "zone": TEXT})),
    "gateway": Table({"ip": TEXT, "mac": TEXT}),
    "allow": ListOf(Table({"client": TEXT, "server": TEXT, "protocol": TEXT, "port": INT,
                           "functions": ListOf(INT), "registers": ListOf(TEXT), "write": BOOL})),
    "outside": ListOf(Table({"name": TEXT, "address": TEXT, "port": INT, "protocol": TEXT,
                             "clients": ListOf(TEXT)})),
    "maintenance": ListOf(Table({"hosts": ListOf(TEXT), "host": TEXT, "timezone": TEXT,
                                 "weekdays": ListOf(TEXT), "start": TIME, "end": TIME,
                                 "from": DATETIME, "until": DATETIME})),
    "safety": Table({"points": ListOf(TEXT)}),
    "registers": ListOf(Table({"table": TEXT, "address": INT, "name": TEXT, "type": TEXT,
                               "scale": NUMBER, "unit": TEXT, "min": NUMBER, "max": NUMBER,
                               "safety": BOOL})),
    "data": Table({"container_receivers": ListOf(TEXT)}),
})


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def _ip_in(ip: str, pattern: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return False


class _Lines:
    """Finds the line of a key in TOML text: tomllib reports values without positions."""

    HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\-\"]+)\s*\]")

    def __init__(self, text: str) -> None:
        self.headers: list[tuple[int, str, bool]] = []  # (line, table name, array-of-tables)
        self.lines = text.splitlines()
        for number, line in enumerate(self.lines, 1):
            m = self.HEADER.match(line)
            if m:
                self.headers.append((number, m.group(2).replace('"', ""), bool(m.group(1))))

    def of(self, table: str | None, index: int | None = None, key: str | None = None) -> int:
        """Line of ``key`` inside ``[table]`` (or the ``index``-th ``[[table]]``)."""
        start, end = 1, len(self.lines) + 1
        if table is not None:
            found = [h for h in self.headers if h[1] == table]
            if index is not None:
                found = [h for h in found if h[2]]
            if not found:
                return self._key_anywhere(key) or 1
            pick = found[min(index or 0, len(found) - 1)]
            start = pick[0]
            later = [h[0] for h in self.headers if h[0] > start]
            end = later[0] if later else len(self.lines) + 1
        else:
            end = self.headers[0][0] if self.headers else end
        if key is None:
            return start
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for number in range(start, end):
            if pattern.match(self.lines[number - 1]):
                return number
        return start

    def find(self, table: str, key: str | None) -> int | None:
        """Line of ``[table]`` (and ``key`` in it) when this file has them, else None."""
        if not any(h[1] == table for h in self.headers):
            return None
        line = self.of(table, None, key)
        if key is None:
            return line
        return line if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", self.lines[line - 1]) else None

    def _key_anywhere(self, key: str | None) -> int | None:
        if key is None:
            return None
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                return number
        return None


@dataclass
class _Layer:
    """One file of a profile: the crane's own, or a model profile it ``extends``."""

    path: str
    lines: _Lines
    data: dict[str, Any]


class _Collector:
    """Gathers located problems while a profile is read.

    A profile may extend a model profile: ``origins`` says, for each entry of a merged array
    of tables, which file and which entry of that file it came from, so a problem is located
    in the file that says it.
    """

    def __init__(self, layers: list[_Layer], origins: dict[str, list[tuple[int, int]]] | None = None) -> None:
        self.layers = layers
        self.origins = origins or {}
        self.problems: list[InputError] = []
        # (table, index, key) already reported by the schema: no second problem there
        self.flagged: set[tuple[str | None, int | None, str | None]] = set()

    @property
    def path(self) -> str:
        return self.layers[0].path

    def where(self, table: str | None, index: int | None = None, key: str | None = None) -> tuple[str, int]:
        if table is not None and index is not None and table in self.origins:
            entries = self.origins[table]
            if 0 <= index < len(entries):
                number, original = entries[index]
                return self.layers[number].path, self.layers[number].lines.of(table, original, key)
        if table is not None and index is None:
            for layer in self.layers:
                line = layer.lines.find(table, key)
                if line is not None:
                    return layer.path, line
        return self.path, self.layers[0].lines.of(table, index, key)

    def add(self, message: str, table: str | None, index: int | None = None,
            key: str | None = None) -> None:
        if (table, index, key) in self.flagged:
            return
        path, line = self.where(table, index, key)
        self.problems.append(InputError(message, Location(file=path, line=line)))

    def add_schema(self, problem: Problem) -> None:
        """A schema problem, located by its path: ``(table[, index][, key, ...])``."""
        parts = problem.path
        table = str(parts[0]) if parts else None
        index = parts[1] if len(parts) > 1 and isinstance(parts[1], int) else None
        rest = parts[2:] if index is not None else parts[1:]
        key = str(rest[0]) if rest else (table if len(parts) == 1 else None)
        self.add(problem.message, table, index, key)
        self.flagged.add((table, index, key))


# Arrays of tables and what identifies an entry: a crane's entry replaces the model's entry
# with the same identity; entries without identity are added to the model's.
ARRAY_TABLES: dict[str, Callable[[dict[str, Any]], object] | None] = {
    "hosts": lambda h: h.get("name"),
    "registers": lambda r: (str(r.get("table", "")).upper(), r.get("address")),
    "allow": None,
    "outside": None,
    "maintenance": None,
}
MAX_EXTENDS = 5


def _merge(layers: list[_Layer]) -> tuple[dict[str, Any], dict[str, list[tuple[int, int]]]]:
    """The crane's profile over its model profiles (``layers[0]`` wins)."""
    merged: dict[str, Any] = {}
    origins: dict[str, list[tuple[int, int]]] = {}
    for number in range(len(layers) - 1, -1, -1):  # the deepest model first
        data = layers[number].data
        for key, value in data.items():
            identity = ARRAY_TABLES.get(key)
            if key in ARRAY_TABLES and isinstance(value, list):
                entries = list(merged.get(key, []))
                where = list(origins.get(key, []))
                if identity is not None:
                    mine = {identity(v) for v in value if isinstance(v, dict)}
                    keep = [i for i, e in enumerate(entries) if not (isinstance(e, dict) and identity(e) in mine)]
                    entries = [entries[i] for i in keep]
                    where = [where[i] for i in keep]
                merged[key] = entries + value
                origins[key] = where + [(number, i) for i in range(len(value))]
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    if isinstance(merged.get("crane"), dict):
        merged["crane"] = {k: v for k, v in merged["crane"].items() if k != "extends"}
    return merged, origins


def load_profile(path: str | Path) -> CraneProfile:
    """Read and check a profile; raise one ``ProfileError`` listing every problem."""
    path = Path(path)
    return parse_profile(_read(path, "profile", Location(file=str(path))), str(path))


def _read(path: Path, what: str, where: Location) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read {what}: {exc.strerror}", where) from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", where) from None


def parse_profile(text: str, source: str = "<profile>") -> CraneProfile:
    """Parse profile text (``source`` names it in problems; relative ``extends`` paths are
    resolved from its directory)."""
    layers = _layers(text, source, [])
    if len(layers) == 1:
        problems = _Collector(layers)
        data = layers[0].data
    else:
        data, origins = _merge(layers)
        problems = _Collector(layers, origins)
    profile = _build(data, problems, source)
    if problems.problems:
        count = len(problems.problems)
        raise ProfileError(
            f"profile has {count} problem{'s' if count > 1 else ''}",
            Location(file=source),
            problems=sorted(problems.problems, key=_in_file_order),
        )
    return profile


def _in_file_order(problem: CranewatchError) -> tuple[str, int]:
    where = problem.location or Location()
    return (where.file or "", where.line or 0)


def _layers(text: str, source: str, seen: list[str]) -> list[_Layer]:
    """This file and the model profiles it extends, the crane's own first."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", toml_error_location(exc, text, source)) from None
    except RecursionError:
        raise ProfileError("not valid TOML: nested too deeply", Location(file=source)) from None
    lines = _Lines(text)
    layer = _Layer(source, lines, data)
    crane = data.get("crane")
    base = crane.get("extends") if isinstance(crane, dict) else None
    if base is None:
        return [layer]
    where = Location(file=source, line=lines.of("crane", None, "extends"))
    if not isinstance(base, str) or not base.strip() or not base.isprintable():
        raise ProfileError(f"crane.extends: expected the path of a model profile, got {base!r}", where)
    path = (Path(source).parent / base) if not Path(base).is_absolute() else Path(base)
    try:
        key = str(path.resolve())
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise ProfileError(f"crane.extends: cannot use {base[:80]!r}: {exc}", where) from None
    if key in seen or len(seen) >= MAX_EXTENDS:
        raise ProfileError(f"crane.extends: {base} extends itself (or nests deeper than {MAX_EXTENDS})", where)
    base_text = _read(path, f"model profile {base[:80]} (crane.extends)", where)
    return [layer, *_layers(base_text, str(path), [*seen, str(Path(source).resolve()), key])]


def _str(d: dict[str, Any], key: str, p: _Collector, table: str, index: int | None = None,
         required: bool = True, default: str = "") -> str:
    value = d.get(key)
    if value is None:
        if required:
            p.add(f"{table}: missing {key!r}", table, index, key)
        return default
    if not isinstance(value, str) or not value.strip():
        p.add(f"{table}.{key}: expected a non-empty string, got {value!r}", table, index, key)
        return default
    return value.strip()


def _ip(value: str, p: _Collector, table: str, index: int | None, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        p.add(f"{table}.{key}: {value!r} is not an IP address", table, index, key)
        return value


def _mac(value: Any, p: _Collector, table: str, index: int | None, key: str = "mac") -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower().replace("-", ":")
    if not MAC_RE.match(text):
        p.add(f"{table}.{key}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)", table, index, key)
        return None
    return text


def _port(value: Any, p: _Collector, table: str, index: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        p.add(f"{table}.port: {value!r} is not a port number (1-65535)", table, index, "port")
        return None
    return value


def _list_of_tables(data: dict[str, Any], key: str, p: _Collector) -> Iterable[tuple[int, dict[str, Any]]]:
    value = data.get(key, [])
    if not isinstance(value, list):
        p.add(f"{key}: expected an array of tables ([[{key}]])", None, None, key)
        return []
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            p.add(f"{key}[{i}]: expected a table", key, i)
            continue
        out.append((i, item))
    return out


def _build(data: dict[str, Any], p: _Collector, source: str) -> CraneProfile:
    data, problems = check(data, PROFILE_SHAPE)
    for problem in problems:
        p.add_schema(problem)
    crane = data.get("crane", {})
    if not isinstance(crane, dict):
        p.add("crane: expected a table [crane]", None, None, "crane")
        crane = {}
    crane_id = _str(crane, "id", p, "crane", default="?")
    model = _str(crane, "model", p, "crane", required=False)

    zones: dict[str, tuple[IpNetwork, ...]] = {}
    zone_data = data.get("zones", {})
    if not isinstance(zone_data, dict):
        zone_data = {}
    for name, nets in zone_data.items():
        parsed: list[IpNetwork] = []
        for net in nets if isinstance(nets, list) else [nets]:
            try:
                parsed.append(ipaddress.ip_network(str(net), strict=False))
            except ValueError:
                p.add(f"zones.{name}: {net!r} is not a CIDR network", "zones", None, name)
        zones[name] = tuple(parsed)
    if not zones.get("crane"):
        p.add("zones: the crane LAN ('crane = [\"192.168.7.0/24\"]') is required", "zones")

    hosts: list[Host] = []
    seen_names: set[str] = set()
    for i, h in _list_of_tables(data, "hosts", p):
        name = _str(h, "name", p, "hosts", i)
        role = _str(h, "role", p, "hosts", i, required=False, default="host")
        ip = _ip(_str(h, "ip", p, "hosts", i), p, "hosts", i, "ip") if "ip" in h else ""
        if not ip:
            p.add(f"hosts: {name or i!r} has no 'ip'", "hosts", i)
        mac = _mac(h.get("mac"), p, "hosts", i)
        if name in seen_names:
            p.add(f"hosts: duplicate host name {name!r}", "hosts", i, "name")
        seen_names.add(name)
        zone = h.get("zone")
        if zone is not None and zone not in ZONES:
            p.add(f"hosts.zone: unknown zone {zone!r}", "hosts", i, "zone")
        hosts.append(Host(name, role, ip, mac, str(zone) if zone else ""))
    profile_zones = zones

    def zone_of(ip: str) -> str:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "outside"
        for z in ("crane", "terminal"):
            if any(addr in n for n in profile_zones.get(z, ())):
                return z
        return "outside"

    hosts = [Host(h.name, h.role, h.ip, h.mac, h.zone or zone_of(h.ip)) for h in hosts]
    names = {h.name for h in hosts}

    gateway = None
    gw = data.get("gateway")
    if isinstance(gw, dict):
        gw_ip = _ip(_str(gw, "ip", p, "gateway"), p, "gateway", None, "ip")
        gateway = Gateway(gw_ip, _mac(gw.get("mac"), p, "gateway", None))

    def check_endpoint(value: str, i: int, key: str) -> None:
        if value == "*" or value in names:
            return
        if value.startswith("zone:") and value[5:] in ZONES:
            return
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            p.add(f"allow.{key}: {value!r} is not a host name, IP, CIDR, zone:NAME or '*'", "allow", i, key)

    allowed: list[Allowance] = []
    for i, a in _list_of_tables(data, "allow", p):
        client = _str(a, "client", p, "allow", i)
        server = _str(a, "server", p, "allow", i)
        for key, value in (("client", client), ("server", server)):
            if value:
                check_endpoint(value, i, key)
        protocol = _str(a, "protocol", p, "allow", i, default="any").lower()
        if protocol not in PROTOCOLS:
            p.add(f"allow.protocol: unknown protocol {protocol!r}", "allow", i, "protocol")
        functions = a.get("functions", [])
        if not isinstance(functions, list) or not all(isinstance(f, int) and 0 < f < 128 for f in functions):
            p.add(f"allow.functions: {functions!r} is not a list of function codes 1-127", "allow", i, "functions")
            functions = []
        ranges: list[RegisterRange] = []
        for text in a.get("registers", []):
            try:
                ranges.append(RegisterRange.parse(str(text)))
            except ValueError as exc:
                p.add(f"allow.registers: {exc}", "allow", i, "registers")
        write = a.get("write", False)
        if not isinstance(write, bool):
            p.add(f"allow.write: expected true or false, got {write!r}", "allow", i, "write")
            write = False
        allowed.append(Allowance(client, server, protocol, _port(a.get("port"), p, "allow", i),
                                 frozenset(functions), tuple(ranges), write,
                                 p.where("allow", i)[1]))

    outside: list[OutsideEndpoint] = []
    for i, o in _list_of_tables(data, "outside", p):
        address = _str(o, "address", p, "outside", i)
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            p.add(f"outside.address: {address!r} is not an IP or CIDR", "outside", i, "address")
            continue
        clients = o.get("clients", [])
        outside.append(OutsideEndpoint(_str(o, "name", p, "outside", i, required=False, default=address),
                                       network, _port(o.get("port"), p, "outside", i),
                                       str(o.get("protocol", "any")), tuple(str(c) for c in clients)))

    windows: list[MaintenanceWindow] = []
    for i, w in _list_of_tables(data, "maintenance", p):
        window = _window(w, i, p, names)
        if window is not None:
            windows.append(window)

    safety = data.get("safety", {})
    safety_points = safety.get("points", []) if isinstance(safety, dict) else []
    if not isinstance(safety_points, list):
        p.add("safety.points: expected a list of point names", "safety", None, "points")
        safety_points = []

    registers: list[RegisterPoint] = []
    seen_points: set[tuple[str, int]] = set()
    for i, r in _list_of_tables(data, "registers", p):
        point = _register(r, i, p)
        if point is None:
            continue
        if (point.table, point.address) in seen_points:
            p.add(f"registers: {point.table}:{point.address} is defined twice", "registers", i, "address")
        seen_points.add((point.table, point.address))
        registers.append(point)
    point_names = {r.name for r in registers}
    for name in safety_points:
        if registers and name not in point_names:
            p.add(f"safety.points: {name!r} is not a point of the register map", "safety", None, "points")

    data_section = data.get("data", {})
    receivers = data_section.get("container_receivers", []) if isinstance(data_section, dict) else []
    for r in receivers:
        if r not in names and not r.startswith("zone:"):
            try:
                ipaddress.ip_network(r, strict=False)
            except ValueError:
                p.add(f"data.container_receivers: {r!r} is not a host name, IP, CIDR or zone:NAME",
                      "data", None, "container_receivers")

    return CraneProfile(
        crane_id=crane_id,
        model=model,
        zones=zones,
        hosts=tuple(hosts),
        gateway=gateway,
        allowed=tuple(allowed),
        outside_endpoints=tuple(outside),
        maintenance=tuple(windows),
        safety_points=frozenset(str(s) for s in safety_points),
        registers=tuple(registers),
        data_receivers=tuple(str(r) for r in receivers),
        source=source,
    )


def _clock(value: Any, p: _Collector, i: int, key: str) -> time | None:
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            pass
    p.add(f"maintenance.{key}: {value!r} is not a time of day (HH:MM)", "maintenance", i, key)
    return None


def _window(w: dict[str, Any], i: int, p: _Collector, names: set[str]) -> MaintenanceWindow | None:
    hosts = w.get("hosts", [w["host"]] if "host" in w else [])
    if not hosts:
        p.add("maintenance: missing 'hosts'", "maintenance", i, "hosts")
    for h in hosts:
        if h not in names and not _looks_like_net(str(h)):
            p.add(f"maintenance.hosts: {h!r} is not a host of the profile", "maintenance", i, "hosts")
    tz = str(w.get("timezone", "UTC"))
    try:
        _zone(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        p.add(f"maintenance.timezone: unknown timezone {tz!r}", "maintenance", i, "timezone")
        tz = "UTC"
    if "from" in w or "until" in w:
        start_at, end_at = w.get("from"), w.get("until")
        spans: list[datetime] = []
        for key, value in (("from", start_at), ("until", end_at)):
            if isinstance(value, datetime):
                spans.append(value if value.tzinfo else value.replace(tzinfo=_zone(tz)))
            elif isinstance(value, date):
                spans.append(datetime.combine(value, time(0), _zone(tz)))
            else:
                p.add(f"maintenance.{key}: {value!r} is not a date-time", "maintenance", i, key)
        if len(spans) != 2:
            return None
        if spans[1] <= spans[0]:
            p.add("maintenance: 'until' is not after 'from'", "maintenance", i, "until")
        return MaintenanceWindow(tuple(hosts), tz, start_at=spans[0].astimezone(UTC),
                                 end_at=spans[1].astimezone(UTC))
    days: list[int] = []
    for d in w.get("weekdays", list(WEEKDAYS)):
        day = str(d).lower()[:3]
        if day not in WEEKDAYS:
            p.add(f"maintenance.weekdays: {d!r} is not a weekday", "maintenance", i, "weekdays")
        else:
            days.append(WEEKDAYS.index(day))
    start = _clock(w.get("start"), p, i, "start")
    end = _clock(w.get("end"), p, i, "end")
    if start is None or end is None:
        return None
    return MaintenanceWindow(tuple(hosts), tz, tuple(days), start, end)


def _looks_like_net(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _register(r: dict[str, Any], i: int, p: _Collector) -> RegisterPoint | None:
    for key in ("table", "address"):
        if key not in r:
            p.add(f"registers: missing {key!r}", "registers", i, key)
            return None
    table = str(r.get("table", "")).upper()
    if table not in TABLES:
        p.add(f"registers.table: {r.get('table')!r} is not one of {', '.join(TABLES)}", "registers", i, "table")
        return None
    address = r.get("address")
    if not isinstance(address, int) or not 0 <= address <= 65535:
        p.add(f"registers.address: {address!r} is not an address 0-65535", "registers", i, "address")
        return None
    name = _str(r, "name", p, "registers", i)
    kind = str(r.get("type", "bit" if table in ("CO", "DI") else "uint16"))
    if kind not in REGISTER_TYPES:
        p.add(f"registers.type: {kind!r} is not one of {', '.join(REGISTER_TYPES)}", "registers", i, "type")
    if table in ("CO", "DI") and kind != "bit":
        p.add(f"registers.type: {table} points are bits, not {kind}", "registers", i, "type")
    scale = r.get("scale", 1.0)
    if not isinstance(scale, int | float) or scale == 0:
        p.add(f"registers.scale: {scale!r} is not a non-zero number", "registers", i, "scale")
        scale = 1.0
    low, high = r.get("min"), r.get("max")
    for key, value in (("min", low), ("max", high)):
        if value is not None and not isinstance(value, int | float):
            p.add(f"registers.{key}: {value!r} is not a number", "registers", i, key)
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        p.add(f"registers: min {low} is above max {high}", "registers", i, "max")
    safety = r.get("safety", False)
    return RegisterPoint(table, address, name, kind, float(scale), str(r.get("unit", "")),
                         float(low) if isinstance(low, int | float) else None,
                         float(high) if isinstance(high, int | float) else None, bool(safety))


def bundled_profile(name: str = "sts-07") -> Path:
    """Path of a profile shipped inside the package (``data/profiles/<name>.toml``)."""
    return Path(__file__).parent / "data" / "profiles" / f"{name}.toml"
