"""Read a fleet TOML file (``[[crane]]`` tables with ``[[crane.component]]``) into Crane records.

Every problem is collected — unknown keys and wrong types against ``FLEET_SHAPE`` first, then
bad names, addresses, MACs, dates and zones — located at ``file:line`` (found by scanning the
text for the key, as tomllib gives no line numbers), and raised together as one ``ProfileError``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

from cranewatch.configschema import (
    DATE,
    TEXT,
    ListOf,
    Shape,
    Table,
    check,
    toml_error_location,
    toml_line,
)
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
            raise InputError(f"component {name}: MAC {spec['mac']!r} is not like 02:c7:07:00:00:0a", where)
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
        raise InputError(f"zone {zone!r} is not a CIDR like 192.168.7.0/24", where) from None


def check_date(text: Any, where: Location) -> str | None:
    if text is None:
        return None
    if isinstance(text, date):
        return text.isoformat()
    try:
        return date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise InputError(f"commissioning date {text!r} is not YYYY-MM-DD", where) from None


FLEET_SHAPE: Shape = Table({
    "crane": ListOf(Table({
        "name": TEXT, "maker": TEXT, "model": TEXT, "commissioned": DATE, "control_vendor": TEXT,
        "profile": TEXT, "zone": TEXT,
        "component": ListOf(Table({"name": TEXT, "kind": TEXT, "mac": TEXT, "ip": TEXT, "firmware": TEXT})),
    })),
})


def read_toml(file: Path, what: str) -> tuple[str, dict[str, Any]]:
    """The text and data of a TOML file; every way it can fail is a located ``InputError``."""
    where = Location(file=str(file))
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", where) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc.reason})", Location(file=str(file), offset=exc.start)) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", toml_error_location(exc, text, str(file))) from None
    except RecursionError:
        raise InputError("not valid TOML: nested too deeply", where) from None


def _profile_path(file: Path, profile: str, where: Location) -> str:
    try:
        return str((file.parent / profile).resolve())
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise InputError(f"profile {profile[:80]!r} is not a usable path: {exc}", where) from None


def load_fleet(path: str | Path) -> list[Crane]:
    """Cranes of a fleet file; a ``profile`` path is resolved against the file's folder.

    Unknown keys and wrong types (``FLEET_SHAPE``) and every bad value are collected, each at
    its ``file:line``, and raised together as one ``ProfileError``.
    """
    file = Path(path)
    text, raw = read_toml(file, "fleet file")

    def at(*keys: str | int) -> Location:
        return Location(file=str(file), line=toml_line(text, keys))

    data, shape_problems = check(raw, FLEET_SHAPE)
    problems: list[CranewatchError] = [InputError(p.message, at(*p.path)) for p in shape_problems]
    flagged = {p.path for p in shape_problems}
    cranes: list[Crane] = []
    tables = data.get("crane", [])
    if not tables and not problems:
        raise InputError("a fleet file lists cranes as [[crane]] tables", Location(file=str(file)))
    seen: set[str] = set()
    for i, table in enumerate(tables):
        if ("crane", i, "name") in flagged:
            continue
        name = str(table.get("name", ""))
        where = at("crane", i, "name") if name else at("crane", i)
        try:
            check_crane_name(name, where)
            if name in seen:
                raise InputError(f"crane {name} is listed twice", where)
            seen.add(name)
            parts = []
            for j, spec in enumerate(table.get("component", [])):
                parts.append(parse_component(spec, at("crane", i, "component", j, "name")))
            profile = table.get("profile")
            cranes.append(
                Crane(
                    name=name,
                    maker=str(table.get("maker", "")),
                    model=str(table.get("model", "")),
                    commissioned=check_date(table.get("commissioned"), at("crane", i, "commissioned")),
                    control_vendor=str(table.get("control_vendor", "")),
                    profile_path=None if profile is None else _profile_path(file, str(profile), at("crane", i, "profile")),
                    zone=check_zone(table.get("zone"), at("crane", i, "zone")),
                    components=tuple(parts),
                )
            )
        except CranewatchError as exc:
            problems.append(exc)
    if problems:
        problems.sort(key=lambda e: (e.location.line or 0) if e.location else 0)
        raise ProfileError(f"{len(problems)} problem(s) in fleet file", Location(file=str(file)), problems)
    return cranes
