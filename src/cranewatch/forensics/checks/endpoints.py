"""Hard-coded endpoints: addresses, host names and URLs in configs, scripts and binaries.

Each endpoint is classified as crane-LAN, terminal, private, local or public (``classify_host``)
and checked against the profile's allowed endpoints. Files verified against the genuine
distribution package are skipped (the image's own checksums verify nothing); binaries are read
as strings when no package owns them, and a package's unverified program only past its ELF end
(appended data). Distribution mirrors are ignored by name; a dotted word is a public host name
only under a real public suffix (``forensics.psl``, the Public Suffix List).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import replace

from cranewatch.forensics import psl
from cranewatch.forensics.checks.base import EndpointPolicy, FileView, ScanContext
from cranewatch.forensics.elf import elf_end
from cranewatch.model import Finding, Severity, finding_id

NAME = "endpoints"

_IPV4 = r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(?![\w.])"
_URL = r"\b(?:https?|ftp|mqtts?|tcp|udp|ssh|rtsp|wss?|opc\.tcp|sftp|tftp)://(?:[^\s/@\"'<>]+@)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+)"
# The key is one run of [\w.-] holding a keyword: looked for ahead, then taken whole
# (``*+``), so "server.server.server..." costs n steps, not n² (the same matches as
# ``[\w.\-]*(?:KEYWORD)[\w.\-]*``, whose continuation never starts with a key character).
# The value is a host name only when it ends there: ``workorders.serve(cfg, log)`` is a call.
_KEYED_HOST = (r"^\s*+(?=[\w.\-]*?(?:server|host|remote|endpoint|broker|peer|addr|address|url|gateway|target))"
               r"[\w.\-]*+\s*[=:]\s*[\"']?([A-Za-z][A-Za-z0-9\-]*+(?:\.[A-Za-z0-9\-]++)++)(?![\w.\-]|\s*\()")
_ENDPOINT_TEXT = re.compile(f"({_IPV4})|{_URL}|{_KEYED_HOST}", re.I | re.M)
# The same over a whole text at once: a key and its value stay on one line.
_ENDPOINT_WHOLE = re.compile(
    f"({_IPV4})|{_URL}|" + _KEYED_HOST.replace(r"^\s*", r"^[ \t]*").replace(r"\s*[=:]\s*", r"[ \t]*[=:][ \t]*"), re.I | re.M
)
_ENDPOINT_BYTES = re.compile(
    rb"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])|"
    rb"(?:https?|ftp|mqtts?|tcp|ssh|wss?)://[A-Za-z0-9.\-]{4,}"
)
# Package mirrors and standards bodies every distribution names; not a vendor's channel home.
_IGNORED_DOMAINS = re.compile(
    r"(^|\.)(debian\.org|ubuntu\.com|canonical\.com|gnu\.org|kernel\.org|freedesktop\.org|"
    r"w3\.org|ietf\.org|iana\.org|python\.org|example\.(com|org|net)|localhost|schemas\.\w+\.\w+)$",
    re.I,
)
_LOCAL_SUFFIX = re.compile(r"\.(local|lan|internal|home\.arpa|localdomain|intranet)$", re.I)
_VERSIONISH = re.compile(r"\b(version|ver|v|release|firmware|fw|build)[\s=:\"'_\-]*$", re.I)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# RFC 2606/6761 names stand for Internet names in examples and tests, as documentation ranges
# stand for public addresses
_DOCUMENTATION_TLDS = frozenset({"example", "invalid", "test"})


def classify_host(host: str, policy: EndpointPolicy) -> str:
    """``allowed``, ``crane-lan``, ``terminal``, ``private``, ``local``, ``ignored`` or ``public``.

    Documentation ranges (192.0.2.0/24 …) count as public: they stand for public addresses,
    as names under ``.example``, ``.invalid`` and ``.test`` stand for Internet names. Any other
    dotted name is public only under a real public suffix (``forensics.psl``): ``config.value``
    or ``plc.crane`` name no host on the Internet.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if host in policy.allowed_hosts:
        return "allowed"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if _IGNORED_DOMAINS.search(host):
            return "ignored"
        if _LOCAL_SUFFIX.search(host) or "." not in host:
            return "local"
        if host.rsplit(".", 1)[-1] not in _DOCUMENTATION_TLDS and not psl.is_internet_name(host):
            return "local"  # no real public suffix: an identifier or an internal name
        return "public"
    if any(address in net for net in policy.allowed_nets):
        return "allowed"
    if any(address in net for net in policy.crane_nets):
        return "crane-lan"
    if any(address in net for net in policy.terminal_nets):
        return "terminal"
    if address.is_loopback or address.is_unspecified or address.is_link_local or address.is_multicast:
        return "local"
    if address.version == 4 and (
        any(address in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
        or address in _CGNAT
    ):
        return "private"
    if address.version == 6 and address in ipaddress.ip_network("fc00::/7"):
        return "private"
    if address.version == 4 and (address.is_reserved or str(address).startswith(("0.", "255."))):
        return "local"
    return "public"


_SEVERITY = {"public": Severity.HIGH, "private": Severity.MEDIUM, "crane-lan": Severity.INFO, "terminal": Severity.INFO}


_MARKUP_ID = re.compile(r"xmlns|DOCTYPE|systemId|publicId|\.dtd\b|\.xsd\b|schemaLocation|\$schema|@context|^Documentation\s*=", re.I)


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    if view.distribution:
        return
    if view.kind == "text" and view.in_config_scope:
        yield from _text_endpoints(view, ctx)
    elif view.kind == "elf" and view.owner is None:
        yield from _binary_endpoints(view, ctx)
    elif view.kind == "elf":
        # A program a package claims, not verified: its own strings name the project's web
        # sites (and OIDs look like addresses), so only data appended past its ELF end is read.
        end = elf_end(view.data)
        if end is not None and end < len(view.data):
            yield from _binary_endpoints(view, ctx, start=end)


def _text_endpoints(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    reported: set[str] = set()
    text = view.text
    number, counted = 1, 0  # line number at offset ``counted``: matches come in text order
    for match in _ENDPOINT_WHOLE.finditer(text):  # one scan of the text, not a loop over its lines
        host = match.group(1) or match.group(2) or match.group(3)
        if not host or host in reported:
            continue
        at = match.start(1) if match.group(1) else match.start(2) if match.group(2) else match.start(3)
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        line = text[start : end if end >= 0 else len(text)].strip()
        if not line or line.startswith("#"):
            continue
        if match.group(1) and _VERSIONISH.search(text[start:at]):
            continue
        if match.group(2) and _MARKUP_ID.search(line):
            continue  # a namespace or schema identifier, not a place anything connects to
        zone = classify_host(host, ctx.endpoints)
        if zone not in _SEVERITY:
            continue
        reported.add(host)
        number += text.count("\n", counted, at)
        counted = at
        if view.owner is not None and view.pristine and not view.path.startswith("etc/"):
            # A package's own scripts and modules name their projects' sites (POD, docstrings,
            # bug-report addresses): listed once per package (see ``claimed_summary``), low. A
            # trojan in one is found by the behaviour rules and, with the genuine packages, as a
            # file that differs.
            yield ctx.finding(
                rule=CLAIMED_RULE, category="hardcoded-endpoint", severity=Severity.LOW,
                title=f"{zone} endpoint {host} in a file package {view.owner} claims", path=view.path, line=number,
                excerpt_text=line, key=(host,), values={"host": host, "zone": zone, "package": view.owner},
                remedy=_CLAIMED_REMEDY,
            )
            continue
        yield ctx.finding(
            rule=f"endpoint.{zone}", category="hardcoded-endpoint", severity=_SEVERITY[zone],
            title=f"hard-coded {zone} endpoint {host}", path=view.path, line=number, excerpt_text=line,
            technique=("T0883", "T0869") if zone == "public" else (), key=(host,), values={"host": host, "zone": zone},
            remedy="Name the endpoint in the crane profile's allowed endpoints if it is expected, "
            "otherwise remove it and ask the vendor what talks to it.",
        )


CLAIMED_RULE = "endpoint.in-package-file"
_CLAIMED_REMEDY = (
    "Verify the package against the distribution's genuine package (--distro-packages or --fetch-packages): "
    "genuine files are the distribution's business; a file that differs is reported as a backdoor."
)


def claimed_summary(findings: list[Finding], crane: str | None) -> list[Finding]:
    """``findings`` with the endpoints in package-claimed files folded into one per package
    (the first ten places as evidence, the number of endpoints as the count)."""
    by_package: dict[str, list[Finding]] = {}
    out: list[Finding] = []
    for finding in findings:
        if finding.rule == CLAIMED_RULE:
            by_package.setdefault(str(finding.evidence[0].values.get("package")), []).append(finding)
        else:
            out.append(finding)
    for package, group in sorted(by_package.items()):
        hosts = sorted({str(f.evidence[0].values.get("host")) for f in group})
        out.append(replace(
            group[0], id=finding_id(CLAIMED_RULE, crane, package), count=len(group),
            title=f"{len(hosts)} endpoint(s) named in files package {package} claims, not verified "
            f"against the genuine package: {', '.join(hosts[:5])}{' …' if len(hosts) > 5 else ''}",
            evidence=tuple(f.evidence[0] for f in group[:10]),
        ))
    return out


def _binary_endpoints(view: FileView, ctx: ScanContext, start: int = 0) -> Iterator[Finding]:
    reported: set[str] = set()
    appended = start > 0
    for match in _ENDPOINT_BYTES.finditer(view.data, start):
        text = match.group(0).decode("ascii", "replace")
        host = text.split("://", 1)[-1]
        if host in reported:
            continue
        zone = classify_host(host, ctx.endpoints)
        if zone not in ("public", "private"):
            continue
        reported.add(host)
        if appended:
            severity = Severity.HIGH if zone == "public" else Severity.MEDIUM
            title = f"{zone} endpoint {host} in data appended to program of package {view.owner}"
        else:
            severity = Severity.MEDIUM if zone == "public" else Severity.LOW
            title = f"{zone} endpoint {host} compiled into a binary no package owns"
        yield ctx.finding(
            rule=f"endpoint.binary-{zone}", category="hardcoded-endpoint", severity=severity, title=title, path=view.path,
            offset=match.start(), excerpt_text=text, technique=("T0869",) if zone == "public" else (), key=(host,),
            values={"host": host, "zone": zone},
            remedy="Ask the vendor what this program connects to; allow it in the profile or remove the program.",
        )
