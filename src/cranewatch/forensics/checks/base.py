"""What every forensic check is given and how it reports: the file view, the context, findings.

A check module exposes ``NAME`` and one or both of
``check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]`` (called once per regular
file, in a worker process, with the bytes already read) and
``check_image(image: Image, ctx: ScanContext) -> Iterator[Finding]`` (called once, for checks
that need the whole picture: accounts, SUID bits, file ownership). Checks are pure: data in,
findings out. ``ScanContext.finding`` builds findings with stable ids keyed on the
image-relative path, so the same image scanned twice yields the same ids.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from cranewatch.forensics.image import Entry
from cranewatch.model import Evidence, Finding, Severity, finding_id

FileKind = Literal["text", "elf", "binary", "empty"]

# Paths where a vendor's configuration, scripts and start-up hooks live: the text checks look
# here (and at every file no package owns) rather than at /usr/share's documentation.
CONFIG_PREFIXES = (
    "etc/", "opt/", "srv/", "usr/local/", "home/", "root/", "var/spool/", "var/www/",
    "lib/systemd/", "usr/lib/systemd/", "lib/udev/", "usr/lib/udev/", "var/lib/", "boot/",
)
# Package-manager databases and caches: records about packages, not configuration.
PACKAGE_DB_PREFIXES = (
    "var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/lib/opkg/", "usr/lib/opkg/", "lib/apk/db/",
    "var/lib/rpm/", "usr/lib/sysimage/rpm/", "var/lib/ucf/", "var/lib/pam/", "var/lib/systemd/deb-systemd",
    "var/log/",
)
_SHEBANG = re.compile(rb"^#!\s*/")


@dataclass(frozen=True)
class FileView:
    """One regular file of the image with its bytes (all of them, or a head if very large)."""

    entry: Entry
    kind: FileKind
    data: bytes
    complete: bool
    owner: str | None  # package owning the file, if any
    pristine: bool  # owned, and its content matches the package's recorded checksum
    md5: str | None = None  # of the whole content, when a package recorded one to compare

    @property
    def path(self) -> str:
        return self.entry.path

    @cached_property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @property
    def is_script(self) -> bool:
        return self.kind == "text" and bool(_SHEBANG.match(self.data))

    @property
    def in_config_scope(self) -> bool:
        """Worth reading as configuration or script: vendor places, scripts, unowned or changed."""
        if self.kind != "text" or self.path.startswith(PACKAGE_DB_PREFIXES):
            return False
        if self.path.startswith(CONFIG_PREFIXES) or self.is_script:
            return True
        return not self.pristine

    def line_at(self, offset: int) -> int:
        """1-based line number of a character offset into ``text``."""
        return self.text.count("\n", 0, offset) + 1


def excerpt(text: str, limit: int = 160) -> str:
    """A short printable extract for evidence: control bytes shown as escapes, long text cut."""
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text.strip())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def active_lines(lines: Iterable[str], comment: str = "#") -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of lines that are neither blank nor comments."""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(comment):
            yield number, stripped


@dataclass(frozen=True)
class EndpointPolicy:
    """How addresses are classified: the crane's LAN, the terminal, and what is allowed."""

    crane_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (ipaddress.ip_network("10.20.7.0/24"),)
    terminal_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (ipaddress.ip_network("10.20.0.0/24"),)
    allowed_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ScanContext:
    """What checks know about the image besides the file at hand. Picklable (sent to workers)."""

    crane: str | None
    entries: dict[str, Entry]
    owner: dict[str, str]
    md5: dict[str, str]
    conffiles: dict[str, str]
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)

    def finding(
        self,
        *,
        rule: str,
        category: str,
        severity: Severity,
        title: str,
        path: str,
        remedy: str,
        line: int | None = None,
        offset: int | None = None,
        excerpt_text: str | None = None,
        technique: tuple[str, ...] = (),
        key: tuple[object, ...] = (),
        values: dict[str, object] | None = None,
        note: str | None = None,
    ) -> Finding:
        """A forensic finding about ``path`` (image-relative), with one piece of evidence."""
        evidence = Evidence(
            path=path, line=line, offset=offset,
            excerpt=excerpt(excerpt_text) if excerpt_text else None,
            values=dict(values or {}), note=note,
        )
        return Finding(
            id=finding_id(rule, self.crane, path, *key),
            rule=rule, category=category, severity=severity, title=title,
            first_seen=None, last_seen=None, crane=self.crane,
            technique=technique, evidence=(evidence,), remedy=remedy,
        )


def grep(view: FileView, patterns: Iterable[tuple[str, re.Pattern[str]]]) -> Iterator[tuple[str, int, str]]:
    """(pattern name, line number, line) for every active line matching one of ``patterns``.

    One hit per pattern name and file: a file with a hundred AT commands is one piece of proof.
    """
    seen: set[str] = set()
    compiled = list(patterns)
    for number, line in active_lines(view.lines):
        for name, pattern in compiled:
            if name not in seen and pattern.search(line):
                seen.add(name)
                yield name, number, line
