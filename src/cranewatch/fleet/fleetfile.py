"""Read a fleet TOML file (``[[crane]]`` tables with ``[[crane.component]]``) into Crane records.

Every problem is collected, located at ``file:line`` (found by scanning the text for the key,
as tomllib gives no line numbers), and raised together as one ``InputError``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

from cranewatch.errors import CranewatchError, InputError, Location, ProfileError
from cranewatch.store.records import Component, Crane

COMPONENT_KINDS = ("plc", "cms", "ocr", "camera", "modem", "gateway", "sensor", "drive", "other")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
CRANE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")


def check_crane_name(name: str, location: Location | None = None) -> str:
    if not CRANE_NAME_RE.match(name):
        raise InputError(
            f"crane name {name!r} must be 1-41 letters, digits, '-', '_' or '.' (e.g. STS-07)", location
        )
    return name


def parse_component(spec: dict[str, Any], where: Location) -> Component:
    """One component from a TOML table or a CLI ``key=value`` dict; checks kind, MAC and IP."""
    name = str(spec.get("name", "")).strip()
    kind = str(spec.get("kind", "")).strip().lower()
    if not name:
        raise InputError("component needs a name", where)
    if kind not in COMPONENT_KINDS:
        raise InputError(f"component {name}: kind {kind!r} is not one of {', '.join(COMPONENT_KINDS)}", where)
    mac = spec.get("mac")
    if mac is not None:
        mac = str(mac).strip().lower().replace("-", ":")
        if not MAC_RE.match(mac):
            raise InputError(f"component {name}: MAC {spec['mac']!r} is not like 02:00:5e:10:07:0a", where)
    ip = spec.get("ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(str(ip).strip()))
        except ValueError:
            raise InputError(f"component {name}: {ip!r} is not an IP address", where) from None
    firmware = spec.get("firmware")
    return Component(name, kind, mac, ip, None if firmware is None else str(firmware))


def check_zone(zone: str | None, where: Location) -> str | None:
    if zone is None:
        return None
    try:
        return str(ipaddress.ip_network(zone, strict=False))
    except ValueError:
        raise InputError(f"zone {zone!r} is not a CIDR like 10.20.7.0/24", where) from None


def check_date(text: Any, where: Location) -> str | None:
    if text is None:
        return None
    if isinstance(text, date):
        return text.isoformat()
    try:
        return date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise InputError(f"commissioning date {text!r} is not YYYY-MM-DD", where) from None


def _line_of(lines: list[str], pattern: str, start: int = 0) -> int | None:
    for number, line in enumerate(lines[start:], start=start + 1):
        if pattern in line:
            return number
    return None


def _key_line(lines: list[str], key: str, start: int | None) -> int | None:
    """The first ``key = ...`` line after line ``start`` (1-based), or ``start`` itself."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(lines[start or 0:], start=(start or 0) + 1):
        if pattern.match(line):
            return number
    return start


def load_fleet(path: str | Path) -> list[Crane]:
    """Cranes of a fleet file; a ``profile`` path is resolved against the file's folder."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise InputError(f"cannot read fleet file: {exc.strerror}", Location(file=str(file))) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", Location(file=str(file))) from None
    lines = text.splitlines()
    problems: list[CranewatchError] = []
    cranes: list[Crane] = []
    tables = data.get("crane", [])
    if not isinstance(tables, list) or not tables:
        raise InputError("a fleet file lists cranes as [[crane]] tables", Location(file=str(file)))
    seen: set[str] = set()
    for table in tables:
        name = str(table.get("name", ""))
        line = _line_of(lines, f'"{name}"') if name else None
        where = Location(file=str(file), line=line)
        try:
            check_crane_name(name, where)
            if name in seen:
                raise InputError(f"crane {name} is listed twice", where)
            seen.add(name)
            parts = []
            for spec in table.get("component", []):
                part_line = _line_of(lines, f'"{spec.get("name", "")}"', line or 0)
                parts.append(parse_component(spec, Location(file=str(file), line=part_line)))
            profile = table.get("profile")
            cranes.append(
                Crane(
                    name=name,
                    maker=str(table.get("maker", "")),
                    model=str(table.get("model", "")),
                    commissioned=check_date(
                        table.get("commissioned"), Location(file=str(file), line=_key_line(lines, "commissioned", line))
                    ),
                    control_vendor=str(table.get("control_vendor", "")),
                    profile_path=None if profile is None else str((file.parent / str(profile)).resolve()),
                    zone=check_zone(table.get("zone"), Location(file=str(file), line=_key_line(lines, "zone", line))),
                    components=tuple(parts),
                )
            )
        except CranewatchError as exc:
            problems.append(exc)
    if problems:
        raise ProfileError(f"{len(problems)} problem(s) in fleet file", Location(file=str(file)), problems)
    return cranes
