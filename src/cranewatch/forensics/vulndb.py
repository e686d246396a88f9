"""Offline vulnerability matching: OSV JSON exports and the Debian security tracker's JSON.

The analyst supplies the database (``--vulndb PATH``, a file or a directory of ``*.json``);
nothing is fetched at scan time. OSV records match by ecosystem and package name with
``ECOSYSTEM``/``SEMVER`` ranges (introduced/fixed/last_affected) or exact ``versions``;
Debian tracker records match the image's release (``VERSION_CODENAME``) by source package,
``open`` meaning every version and ``resolved`` every version below ``fixed_version``.
Versions are compared the way each ecosystem does: dpkg's algorithm for Debian and opkg,
PEP 440 for Python, semver for npm.

Windows programs (the Uninstall keys) have no package ecosystem: they match NVD CVE JSON (the
2.0 API's ``vulnerabilities`` list or the 1.1 feeds' ``CVE_Items``) by the CPE of each
vulnerable ``cpeMatch`` (part ``a``): the CPE product must be the program's ``DisplayName``
without its version, architecture and language words (``Mozilla Firefox 115.0 (x64 en-US)`` is
``mozilla_firefox`` or ``firefox``), and the CPE vendor must be named in the ``Publisher`` or
the name, or be the product itself (``teamviewer:teamviewer``). OSV-style records with the
ecosystem ``Windows`` match the same name. Windows versions compare by their dotted numbers
(``15.8.3`` = ``15.8.3.0`` < ``15.10``), anything after them ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from cranewatch.errors import InputError, Location
from cranewatch.forensics.checks.base import ScanContext
from cranewatch.forensics.packages import Package
from cranewatch.model import Finding, Severity

# --- version comparison ---------------------------------------------------------------------------


def _dpkg_order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if not char:
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _dpkg_part(a: str, b: str) -> int:
    """dpkg's verrevcmp for one upstream or revision string."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) else 0
            bc = _dpkg_order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_dpkg(version: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in version:
        head, _, version = version.partition(":")
        epoch = int(head) if head.isdigit() else 0
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        upstream, revision = version, ""
    return epoch, upstream, revision


def compare_dpkg(a: str, b: str) -> int:
    """<0, 0, >0 like ``dpkg --compare-versions``."""
    ea, ua, ra = _split_dpkg(a)
    eb, ub, rb = _split_dpkg(b)
    if ea != eb:
        return ea - eb
    return _dpkg_part(ua, ub) or _dpkg_part(ra, rb)


def _semver_key(version: str) -> tuple[tuple[int, ...], int, str]:
    core, _, pre = version.lstrip("v").partition("-")
    nums = tuple(int(x) if x.isdigit() else 0 for x in core.split("+")[0].split("."))
    return nums + (0,) * (3 - len(nums)), 0 if pre else 1, pre


def _windows_key(version: str) -> tuple[int, ...] | None:
    found = re.search(r"\d+(?:\.\d+)*", version)
    if found is None:
        return None
    numbers = [int(x) for x in found.group().split(".")]
    while numbers and numbers[-1] == 0:
        numbers.pop()  # 15.8.3.0 is 15.8.3
    return tuple(numbers)


def compare_windows(a: str, b: str) -> int:
    """Windows program versions by their dotted numbers; one without numbers sorts first."""
    ka, kb = _windows_key(a), _windows_key(b)
    if ka is None or kb is None:
        return (ka is not None) - (kb is not None)
    return (ka > kb) - (ka < kb)


def compare(ecosystem: str, a: str, b: str) -> int:
    eco = ecosystem.split(":")[0].lower()
    if eco in ("windows", "cpe"):
        return compare_windows(a, b)
    if eco in ("debian", "ubuntu", "opkg", "openwrt"):
        return compare_dpkg(a, b)
    if eco == "pypi":
        try:
            va, vb = Version(a), Version(b)
            return (va > vb) - (va < vb)
        except InvalidVersion:
            pass
    ka, kb = _semver_key(a), _semver_key(b)
    return (ka > kb) - (ka < kb)


# --- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advisory:
    """One vulnerability as it applies to one package name in one ecosystem."""

    id: str
    aliases: tuple[str, ...]
    ecosystem: str  # OSV ecosystem ("Debian:12", "PyPI", "npm") or "debian-tracker:<release>"
    package: str
    summary: str
    severity: Severity
    events: tuple[tuple[str, str], ...]  # (introduced|fixed|last_affected, version) in order
    versions: tuple[str, ...]  # exact affected versions
    fixed: str | None
    source: str


_MANAGER_ECOSYSTEMS = {"windows": ("windows", "cpe"), "dpkg": ("debian", "ubuntu"), "opkg": ("openwrt", "opkg"), "python": ("pypi",), "npm": ("npm",), "apk": ("alpine",), "rpm": ("rocky linux", "almalinux", "red hat", "suse")}
_URGENCY = {"unimportant": Severity.LOW, "low": Severity.LOW, "medium": Severity.MEDIUM, "high": Severity.HIGH, "critical": Severity.CRITICAL}


def _osv_severity(record: dict[str, Any]) -> Severity:
    text = json.dumps(record.get("database_specific", {})).lower() + json.dumps(record.get("severity", [])).lower()
    for word, severity in (("critical", Severity.CRITICAL), ("high", Severity.HIGH), ("moderate", Severity.MEDIUM), ("medium", Severity.MEDIUM), ("low", Severity.LOW)):
        if f'"{word}"' in text:
            return severity
    for entry in record.get("severity", []) or []:
        score = re.search(r"CVSS:3\.\d/AV:(\w)/AC:(\w)", str(entry.get("score", "")))
        if score:
            return Severity.HIGH if score.group(1) == "N" else Severity.MEDIUM
    return Severity.MEDIUM


def _osv_advisories(record: dict[str, Any], source: str) -> Iterator[Advisory]:
    for affected in record.get("affected", []) or []:
        pkg = affected.get("package", {}) or {}
        name, ecosystem = pkg.get("name"), pkg.get("ecosystem")
        if not name or not ecosystem:
            continue
        events: list[tuple[str, str]] = []
        fixed = None
        for rng in affected.get("ranges", []) or []:
            if rng.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue
            for event in rng.get("events", []) or []:
                for key in ("introduced", "fixed", "last_affected"):
                    if key in event:
                        events.append((key, str(event[key])))
                        if key == "fixed":
                            fixed = str(event[key])
        yield Advisory(
            id=str(record.get("id", "?")), aliases=tuple(record.get("aliases", []) or []), ecosystem=str(ecosystem),
            package=str(name), summary=str(record.get("summary") or record.get("details", "")[:160]),
            severity=_osv_severity(record), events=tuple(events),
            versions=tuple(str(v) for v in affected.get("versions", []) or []), fixed=fixed, source=source,
        )


def _tracker_advisories(data: dict[str, Any], source: str, packages: set[str] | None = None) -> Iterator[Advisory]:
    """Advisories of a tracker dump, only for ``packages`` (source names) when given: the full
    dump names tens of thousands of packages, an image a few hundred."""
    names = data.keys() if packages is None else (p for p in packages if p in data)
    for package in names:
        issues = data[package]
        if not isinstance(issues, dict):
            continue
        for issue_id, issue in issues.items():
            if not isinstance(issue, dict):
                continue
            for release, info in (issue.get("releases") or {}).items():
                status = info.get("status")
                if status == "open":
                    events: tuple[tuple[str, str], ...] = (("introduced", "0"),)
                    fixed = None
                elif status == "resolved" and info.get("fixed_version") not in (None, "0"):
                    fixed = str(info["fixed_version"])
                    events = (("introduced", "0"), ("fixed", fixed))
                else:
                    continue
                yield Advisory(
                    id=str(issue_id), aliases=(), ecosystem=f"debian-tracker:{release}", package=str(package),
                    summary=str(issue.get("description", ""))[:160],
                    severity=_URGENCY.get(str(info.get("urgency", "medium")).rstrip("*"), Severity.MEDIUM),
                    events=events, versions=(), fixed=fixed, source=source,
                )


_CPE_SEVERITY = {"CRITICAL": Severity.CRITICAL, "HIGH": Severity.HIGH, "MEDIUM": Severity.MEDIUM, "LOW": Severity.LOW}


def _cpe_fields(cpe: str) -> list[str]:
    """The fields of a CPE 2.3 name, escapes (``\\+``) undone."""
    fields, current, escaped = [], "", False
    for char in cpe:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(current)
            current = ""
        else:
            current += char
    return [*fields, current]


def _nvd_severity(metrics: dict[str, Any]) -> Severity:
    for key in ("cvssMetricV40", "cvssMetricV31", "cvssMetricV30", "baseMetricV3", "cvssMetricV2", "baseMetricV2"):
        entries = metrics.get(key)
        for entry in entries if isinstance(entries, list) else [entries] if isinstance(entries, dict) else []:
            data = entry.get("cvssData") or entry.get("cvssV3") or {}
            text = str(data.get("baseSeverity") or entry.get("baseSeverity") or entry.get("severity") or "").upper()
            if text in _CPE_SEVERITY:
                return _CPE_SEVERITY[text]
    return Severity.MEDIUM


def _nvd_matches(nodes: Any) -> Iterator[dict[str, Any]]:
    """Every ``cpeMatch`` (2.0) or ``cpe_match`` (1.1) below ``nodes``, children included."""
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        for entry in node.get("cpeMatch", node.get("cpe_match", [])) or []:
            if isinstance(entry, dict):
                yield entry
        yield from _nvd_matches(node.get("children"))


def _nvd_advisories(item: dict[str, Any], source: str) -> Iterator[Advisory]:
    """Advisories of one NVD CVE item (API 2.0 ``{"cve": {...}}`` or feed 1.1), one per
    vulnerable application CPE range; ecosystem ``cpe``, package ``vendor:product``."""
    cve = item.get("cve", item)
    if not isinstance(cve, dict):
        return
    meta = cve.get("CVE_data_meta") or {}
    cve_id = str(cve.get("id") or meta.get("ID") or "?")
    texts = cve.get("descriptions") or ((cve.get("description") or {}).get("description_data")) or []
    summary = next((str(t.get("value", "")) for t in texts if isinstance(t, dict) and t.get("lang") == "en"), "")
    severity = _nvd_severity(cve.get("metrics") or item.get("impact") or {})
    configurations = cve.get("configurations", item.get("configurations"))
    if isinstance(configurations, dict):  # feed 1.1: {"nodes": [...]}
        configurations = [configurations]
    for configuration in configurations if isinstance(configurations, list) else []:
        if not isinstance(configuration, dict):
            continue
        for entry in _nvd_matches(configuration.get("nodes")):
            if not entry.get("vulnerable", False):
                continue
            fields = _cpe_fields(str(entry.get("criteria") or entry.get("cpe23Uri") or ""))
            if len(fields) < 6 or fields[:3] != ["cpe", "2.3", "a"]:
                continue
            vendor, product, version = fields[3].lower(), fields[4].lower(), fields[5]
            events: list[tuple[str, str]] = []
            if "versionStartIncluding" in entry:
                events.append(("introduced", str(entry["versionStartIncluding"])))
            elif "versionStartExcluding" in entry:
                events.append(("after", str(entry["versionStartExcluding"])))
            elif any(k in entry for k in ("versionEndExcluding", "versionEndIncluding")):
                events.append(("introduced", "0"))
            fixed = str(entry["versionEndExcluding"]) if "versionEndExcluding" in entry else None
            if fixed is not None:
                events.append(("fixed", fixed))
            elif "versionEndIncluding" in entry:
                events.append(("last_affected", str(entry["versionEndIncluding"])))
            versions: tuple[str, ...] = ()
            if not events:
                if version in ("*", ""):
                    events = [("introduced", "0")]  # every version
                elif version != "-":
                    versions = (version,)
                else:
                    continue
            yield Advisory(id=cve_id, aliases=(), ecosystem="cpe", package=f"{vendor}:{product}", summary=summary[:160],
                           severity=severity, events=tuple(events), versions=versions, fixed=fixed, source=source)


_WINDOWS_NOISE = re.compile(
    r"\((?:[^()]*\b(?:x64|x86|64-bit|32-bit|amd64|arm64|[a-z]{2}-[a-z]{2})\b[^()]*)\)"  # (x64 en-US), (64-bit)
    r"|\b(?:x64|x86|amd64|arm64|64-bit|32-bit|win64|win32|release|version|v?\d+(?:\.\d+)+(?:-\w+)*)\b",
    re.I,
)


def _name_key(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9+\-._]", "", re.sub(r"\s+", "_", text.lower().replace("\u00ae", "").replace("\u2122", "")))).strip("_.-")


def windows_products(name: str) -> set[str]:
    """The CPE products a program's DisplayName may stand for: the name without version,
    architecture and language words (and a trailing major version), whole and without its
    first word (the vendor's)."""
    core = _name_key(_WINDOWS_NOISE.sub(" ", name))
    keys = {core, re.sub(r"_\d+$", "", core)} - {""}  # "TeamViewer 15": a major version in the name
    keys |= {key.split("_", 1)[1] for key in keys if "_" in key}
    return {key for key in keys if not key.isdigit()}


def _cpe_applies(advisory: Advisory, package: Package) -> bool:
    vendor, _, product = advisory.package.partition(":")
    if product not in windows_products(package.name):
        return False
    said = f"{_name_key(package.maintainer or '')}_{_name_key(package.name)}".replace("-", "_")
    return vendor == product or vendor.replace("-", "_") in said


@dataclass(frozen=True)
class VulnDb:
    """OSV advisories, and Debian tracker dumps kept as read (expanded per image in ``match``)."""

    advisories: tuple[Advisory, ...]
    sources: tuple[str, ...]
    trackers: tuple[tuple[str, dict[str, Any]], ...] = ()


def load_vulndb(path: Path) -> VulnDb:
    """Read every ``*.json`` under ``path`` (or ``path`` itself): OSV records or tracker dumps."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not path.exists():
        raise InputError("no such vulnerability database", Location(file=str(path)))
    advisories: list[Advisory] = []
    trackers: list[tuple[str, dict[str, Any]]] = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"not a JSON vulnerability database: {exc}", Location(file=str(file))) from None
        records = data if isinstance(data, list) else [data]
        nvd = data.get("vulnerabilities", data.get("CVE_Items")) if isinstance(data, dict) else None
        if isinstance(nvd, list):
            records = nvd  # NVD: an API 2.0 answer or a 1.1 feed
        for record in records:
            if isinstance(record, dict) and "affected" in record:
                advisories.extend(_osv_advisories(record, str(file)))
            elif isinstance(record, dict) and isinstance(record.get("cve"), dict):
                advisories.extend(_nvd_advisories(record, str(file)))
            elif isinstance(record, dict):
                trackers.append((str(file), record))
    return VulnDb(tuple(advisories), tuple(str(f) for f in files), tuple(trackers))


def _affected(advisory: Advisory, version: str, ecosystem: str) -> bool:
    if version in advisory.versions:
        return True
    if not advisory.events:
        return False
    state = False
    for kind, bound in advisory.events:
        if kind == "introduced":
            if bound == "0" or compare(ecosystem, version, bound) >= 0:
                state = True
        elif kind == "fixed":
            if compare(ecosystem, version, bound) >= 0:
                state = False
        elif kind == "after":
            if compare(ecosystem, version, bound) > 0:
                state = True
        elif kind == "last_affected" and compare(ecosystem, version, bound) > 0:
            state = False
    return state


def _applies(advisory: Advisory, package: Package, release: str) -> bool:
    eco = advisory.ecosystem.lower()
    if eco.startswith("debian-tracker:"):
        return package.manager == "dpkg" and eco.split(":", 1)[1] == release and advisory.package == (package.source or package.name)
    family = eco.split(":")[0]
    if family not in _MANAGER_ECOSYSTEMS.get(package.manager, ()):
        return False
    if package.manager == "windows":
        if not package.version:
            return False
        if family == "cpe":
            return _cpe_applies(advisory, package)
        return advisory.package.lower() in {package.name.lower(), _WINDOWS_NOISE.sub(" ", package.name).strip().lower()}
    if package.manager == "python":
        return _norm_py(advisory.package) == _norm_py(package.name)
    if package.manager == "dpkg":
        return advisory.package in (package.source, package.name)
    return advisory.package == package.name


def _norm_py(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def match(db: VulnDb, packages: tuple[Package, ...], os_release: dict[str, str], ctx: ScanContext) -> Iterator[Finding]:
    """Findings for every installed package a record of ``db`` says is vulnerable."""
    release = os_release.get("VERSION_CODENAME", "")
    sources = {p.source or p.name for p in packages if p.manager == "dpkg"}
    tracked = [a for source, dump in db.trackers for a in _tracker_advisories(dump, source, sources)]
    by_name: dict[str, list[Advisory]] = {}
    for advisory in (*db.advisories, *tracked):
        by_name.setdefault(advisory.package.lower(), []).append(advisory)
        by_name.setdefault(_norm_py(advisory.package), []).append(advisory)
    by_product: dict[str, list[Advisory]] = {}
    for advisory in db.advisories:
        if advisory.ecosystem == "cpe":
            by_product.setdefault(advisory.package.partition(":")[2], []).append(advisory)
    seen: set[tuple[str, str, str, str | None, str]] = set()
    for package in packages:
        keys = {package.name.lower(), (package.source or "").lower(), _norm_py(package.name)}
        if package.manager == "windows":
            keys.add(_WINDOWS_NOISE.sub(" ", package.name).strip().lower())
        candidates = {id(a): a for key in keys for a in by_name.get(key, [])}
        if package.manager == "windows":
            candidates.update({id(a): a for key in windows_products(package.name) for a in by_product.get(key, [])})
        for advisory in candidates.values():
            once = (advisory.id, package.manager, package.name, package.arch, package.version)
            if advisory.ecosystem == "cpe" and once in seen:
                continue  # one CVE lists several ranges of the same product
            ecosystem = "debian" if advisory.ecosystem.startswith("debian-tracker") else advisory.ecosystem
            if _applies(advisory, package, release) and _affected(advisory, package.version, ecosystem):
                seen.add(once)
                names = ", ".join((advisory.id, *advisory.aliases))
                yield ctx.finding(
                    rule="vuln.package", category="vulnerable-component", severity=advisory.severity,
                    title=f"{package.name} {package.version} is affected by {names}" + (f": {advisory.summary}" if advisory.summary else ""),
                    path=package.path, excerpt_text=f"{package.name} {package.version}", technique=("T0866",),
                    key=(advisory.id, package.manager, package.name, package.version),
                    values={"package": package.name, "version": package.version, "fixed": advisory.fixed, "advisory": advisory.id, "database": advisory.source,
                            **({"cpe": advisory.package} if advisory.ecosystem == "cpe" else {})},
                    remedy=f"Update {package.name} to {advisory.fixed} or later." if advisory.fixed else f"No fixed version of {package.name} yet: mitigate or remove it.",
                )
