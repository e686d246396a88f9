"""The scan: open the image, read each file once, run every check, build one result document.

One pass over the regular files, in a process pool over the available cores for large
images: each file is read once (whole when small enough, streamed for its checksums when
large), sniffed (text, ELF, other binary) and handed to the per-file checks, YARA included.
Checks that need the whole picture (accounts, SUID bits, ownership) run once afterwards.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cranewatch.forensics.checks import FILE_CHECKS, IMAGE_CHECKS
from cranewatch.forensics.checks.base import EndpointPolicy, FileKind, FileView, ScanContext
from cranewatch.forensics.image import Entry, Image
from cranewatch.forensics.packages import Package, PackageDb
from cranewatch.forensics.windows import check_windows
from cranewatch.model import Finding, Severity

_TEXT_CAP = 4 << 20  # text checks read at most this much of a text file
_BINARY_CAP = 64 << 20  # binaries up to this size are read whole (YARA, strings)
_HEAD = 8192
_TEMPLATE_MAX = 1 << 20  # unowned files up to this size are compared with the distribution's
_POOL_THRESHOLD = 3000  # below this many files a pool costs more than it saves


@dataclass(frozen=True, slots=True)
class InputInfo:
    """An input of the scan, identified by content."""

    path: str
    format: str
    size: int
    sha256: str  # of the file; for a directory, of its sorted manifest (path, type, mode, size)


@dataclass(frozen=True, slots=True)
class Inventory:
    """What the image holds, for the report and the SBOM."""

    files: int
    directories: int
    symlinks: int
    bytes: int
    elf: int
    text: int
    packages: tuple[Package, ...]
    os_release: dict[str, str] = field(default_factory=dict)
    setuid: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileOutcome:
    path: str
    kind: FileKind | None  # None when the file could not be read
    findings: tuple[Finding, ...]
    sha256: str | None
    warning: str | None = None


@dataclass(frozen=True)
class PassResult:
    """The per-file pass over one image (also used for a reference image)."""

    findings: tuple[Finding, ...]
    digests: dict[str, str]
    kinds: dict[str, int]
    warnings: tuple[str, ...]


def _sniff(head: bytes, size: int) -> FileKind:
    if size == 0:
        return "empty"
    if head.startswith(b"\x7fELF"):
        return "elf"
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multibyte char cut at the end of the head is fine
            printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
            if printable < 0.95 * len(head):
                return "binary"
    return "text"


@dataclass(frozen=True)
class _PassState:
    root: Path
    ctx: ScanContext
    want_digest: bool


_STATE: _PassState | None = None


def _scan_file(state: _PassState, entry: Entry) -> FileOutcome:
    ctx = state.ctx
    path = entry.path
    owner = ctx.owner.get(path)
    # Unowned files are hashed too: a maintainer script's copy of a template the distribution
    # ships (etc/ppp/peers/provider from usr/share/ppp/provider.peer) is the distribution's.
    template = owner is None and entry.size <= _TEMPLATE_MAX
    md5 = hashlib.md5(usedforsecurity=False) if (template or path in ctx.md5 or path in ctx.conffiles) else None
    sha = hashlib.sha256() if state.want_digest else None
    hashers = [h for h in (md5, sha) if h is not None]
    fd = os.open(state.root / path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(_HEAD)
        kind = _sniff(head, entry.size)
        cap = _TEXT_CAP if kind == "text" else _BINARY_CAP
        for h in hashers:
            h.update(head)
        chunks = [head]
        kept = len(head)
        complete = True
        # Stream the rest: checksums see every byte, the checks at most ``cap`` of them,
        # so memory stays bounded whatever the file's size.
        while block := fh.read(1 << 20):
            for h in hashers:
                h.update(block)
            room = cap - kept
            if room > 0:
                chunks.append(block[:room])
                kept += min(len(block), room)
            if len(block) > room:
                complete = False
    data = b"".join(chunks)
    digest_md5 = md5.hexdigest() if md5 is not None else None
    recorded = ctx.md5.get(path) or ctx.conffiles.get(path)
    pristine = owner is not None and (recorded is None or recorded == digest_md5)
    distribution = (pristine and owner in ctx.distribution_packages) or (
        owner is None and digest_md5 is not None and digest_md5 in ctx.distribution_md5
    )
    view = FileView(entry, kind, data, complete, owner, pristine, digest_md5, distribution)
    findings: list[Finding] = []
    for _name, check in FILE_CHECKS:
        findings.extend(check(view, ctx))
    if distribution:
        # Exactly what the distribution shipped: the finding is that the package is installed
        # at all (a review item), not evidence of tampering, so it never ranks above medium.
        findings = [replace(f, severity=min(f.severity, Severity.MEDIUM)) for f in findings]
    return FileOutcome(path, kind, tuple(findings), sha.hexdigest() if sha is not None else None)


def _scan_or_note(state: _PassState, entry: Entry) -> FileOutcome:
    try:
        return _scan_file(state, entry)
    except OSError as exc:
        return FileOutcome(entry.path, None, (), None, f"{entry.path}: cannot read ({exc.strerror or exc})")


def _scan_chunk(entries: Sequence[Entry]) -> list[FileOutcome]:
    assert _STATE is not None, "worker started without scan state"
    return [_scan_or_note(_STATE, entry) for entry in entries]


def _chunks(entries: list[Entry], workers: int) -> list[list[Entry]]:
    # Big files first, dealt round-robin into many small chunks so both cores finish together.
    ordered = sorted(entries, key=lambda e: -e.size)
    count = max(workers * 16, len(ordered) // 400)
    return [ordered[i::count] for i in range(count) if ordered[i::count]]


def file_pass(image: Image, ctx: ScanContext, *, workers: int, want_digest: bool) -> PassResult:
    """Run the per-file checks over every regular file of ``image``."""
    global _STATE
    entries = list(image.files())
    state = _PassState(image.root, ctx, want_digest)
    outcomes: list[FileOutcome] = []
    warnings: list[str] = []
    if workers > 1 and len(entries) >= _POOL_THRESHOLD:
        _STATE = state
        try:
            # fork: workers inherit the compiled YARA rules and the context without pickling.
            mp = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=mp) as pool:
                for result in pool.map(_scan_chunk, _chunks(entries, workers)):
                    outcomes.extend(result)
        finally:
            _STATE = None
    else:
        outcomes.extend(_scan_or_note(state, entry) for entry in entries)
    kinds: dict[str, int] = {}
    digests: dict[str, str] = {}
    findings: list[Finding] = []
    for outcome in sorted(outcomes, key=lambda o: o.path):
        if outcome.warning is not None:
            warnings.append(outcome.warning)
        if outcome.kind is not None:
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
        findings.extend(outcome.findings)
        if outcome.sha256 is not None:
            digests[outcome.path] = outcome.sha256
    return PassResult(tuple(findings), digests, kinds, tuple(warnings))


_DISTRIBUTION_MAINTAINER = re.compile(
    r"@([\w.-]+\.)?(debian\.(org|net)|ubuntu\.com|canonical\.com|raspberrypi\.(com|org)|openwrt\.org)>", re.I
)


# Debian's stable updates, binary rebuilds and backports carry these version suffixes.
# Linear on the maker's text (the image's dpkg database): digit runs are taken whole (++,
# "~deb" and 16,000 digits cost 2.3 s as \d+u?\d*), and an Ubuntu suffix is at most 64
# characters ("ubuntu1ubuntu1..." cost n² steps); a longer one only loses the "distribution"
# label, which means more inspection, not less.
_DISTRIBUTION_VERSION = re.compile(r"(\+deb\d++u\d++|~deb\d++u?\d*+|\+b\d++|ubuntu\d[\w.~+]{0,64})$")


def distribution_packages(db: PackageDb) -> frozenset[str]:
    """Packages the distribution itself built: a Debian/Ubuntu maintainer address or a
    distribution version suffix. A heuristic (no signature survives installation): a vendor
    package that imitates both is treated as the distribution's."""
    return frozenset(
        p.name for p in db.packages
        if p.manager in ("dpkg", "opkg")
        and ((p.maintainer and _DISTRIBUTION_MAINTAINER.search(p.maintainer)) or _DISTRIBUTION_VERSION.search(p.version))
    )


def make_context(image: Image, db: PackageDb, crane: str | None, policy: EndpointPolicy) -> ScanContext:
    distro = distribution_packages(db)
    distro_md5 = frozenset(
        checksum for path, checksum in (*db.md5.items(), *db.conffiles.items()) if db.owner.get(path) in distro
    )
    return ScanContext(crane, image.entries, db.owner, db.md5, db.conffiles, policy, distro, distro_md5)


def image_checks(image: Image, ctx: ScanContext) -> list[Finding]:
    findings: list[Finding] = []
    for _name, check in IMAGE_CHECKS:
        findings.extend(check(image, ctx))
    findings.extend(check_windows(image, ctx))  # a Windows tree's registry, tasks and files
    return findings


def input_info(path: Path, image: Image) -> InputInfo:
    if path.is_dir():
        manifest = hashlib.sha256()
        for key in sorted(image.entries):
            e = image.entries[key]
            manifest.update(f"{e.path}\0{e.type}\0{e.mode:o}\0{e.size}\0{e.link or ''}\n".encode("utf-8", "surrogateescape"))
        return InputInfo(str(path), image.format, sum(e.size for e in image.files()), manifest.hexdigest())
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return InputInfo(str(path), image.format, path.stat().st_size, digest.hexdigest())


def inventory(image: Image, db: PackageDb, kinds: dict[str, int]) -> Inventory:
    counts = {"file": 0, "dir": 0, "symlink": 0}
    total = 0
    for e in image.entries.values():
        counts[e.type] += 1
        if e.type == "file":
            total += e.size
    return Inventory(
        files=counts["file"], directories=counts["dir"], symlinks=counts["symlink"], bytes=total,
        elf=kinds.get("elf", 0), text=kinds.get("text", 0), packages=db.packages, os_release=db.os_release,
        setuid=tuple(sorted(e.path for e in image.files() if e.is_suid)),
    )


def dedupe(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """One finding per id (the most severe kept), ordered most severe first, then by path."""
    best: dict[str, Finding] = {}
    for f in findings:
        if f.id not in best or f.severity > best[f.id].severity:
            best[f.id] = f
    return tuple(sorted(best.values(), key=lambda f: (-f.severity, f.evidence[0].path or "" if f.evidence else "", f.rule, f.id)))


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))

