"""The scan: open the image, read each file once, run every check, build one result document.

One pass over the regular files, in a process pool over the available cores for large
images: each file is read once (whole when small enough, streamed for its checksums when
large), sniffed (text, ELF, other binary) and handed to the per-file checks, YARA included.
Checks that need the whole picture (accounts, SUID bits, ownership) run once afterwards.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cranewatch.forensics.checks import FILE_CHECKS, IMAGE_CHECKS
from cranewatch.forensics.checks.base import EndpointPolicy, FileKind, FileView, ScanContext
from cranewatch.forensics.checks.yara_rules import Incomplete
from cranewatch.forensics.genuine import GenuineIndex
from cranewatch.forensics.image import Entry, Image, shown, summarise
from cranewatch.forensics.packages import Package, PackageDb
from cranewatch.forensics.windows import check_windows
from cranewatch.model import Finding, Severity

_TEXT_CAP = 4 << 20  # text checks read at most this much of a text file
_BINARY_CAP = 64 << 20  # binaries up to this size are read whole (YARA, strings)
_HEAD = 8192
_TEMPLATE_MAX = 1 << 20  # unowned files up to this size are compared with the distribution's
_NAMED = re.compile(r"(^|/)(s?bin|libexec|teamviewer|anydesk|rustdesk)/|\.(service|socket|timer|rules|desktop)$", re.I)
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
    # Regular files by trust (genuine, differs, unverified, unowned) and the genuine packages read.
    trust: dict[str, int] = field(default_factory=dict)
    genuine_sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileOutcome:
    path: str
    kind: FileKind | None  # None when the file could not be read
    findings: tuple[Finding, ...]
    sha256: str | None
    problem: str | None = None  # why the file could not be read (then it was not scanned)
    # genuine | differs (from the genuine package) | reference (identical to the known-good
    # image's file, not verified by a package) | unverified (package-owned) | unowned
    trust: str = "unowned"
    notes: tuple[str, ...] = ()  # checks that stopped short on the file (the others' findings stand)


@dataclass(frozen=True)
class PassResult:
    """The per-file pass over one image (also used for a reference image)."""

    findings: tuple[Finding, ...]
    digests: dict[str, str]
    kinds: dict[str, int]
    problems: tuple[str, ...]  # files that could not be read
    trust: dict[str, int] = field(default_factory=dict)  # files by FileOutcome.trust


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
    # Checksums are taken where something independent or claimed can be compared: the genuine
    # packages' contents, the image's md5sums (a claim: a mismatch proves a change, a match
    # proves nothing), and unowned files that may be copies of a genuine template.
    template = owner is None and entry.size <= _TEMPLATE_MAX and bool(ctx.genuine_md5)
    compared = path in ctx.genuine or path in ctx.md5 or path in ctx.conffiles
    md5 = hashlib.md5(usedforsecurity=False) if (template or compared) else None
    sha = hashlib.sha256() if state.want_digest else None
    claim = ctx.digests.get(path)  # rpm's or apk's checksum of the file, ``algorithm:hex``
    claimed = hashlib.new(claim.partition(":")[0]) if claim else None
    hashers = [h for h in (md5, sha, claimed) if h is not None]
    # An empty file has nothing to read (unpacked archives do not even write one).
    fd = os.open(state.root / path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOCTTY", 0)) if entry.size else None
    with os.fdopen(fd, "rb") if fd is not None else io.BytesIO(b"") as fh:
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
    digest = f"{claimed.name}:{claimed.hexdigest()}" if claimed is not None else None
    pristine = owner is not None and (recorded is None or recorded == digest_md5) and digest == claim
    genuine = digest_md5 is not None and (
        digest_md5 in ctx.genuine.get(path, ()) if owner is not None else digest_md5 in ctx.genuine_md5
    )
    expected = ctx.genuine_claimed.get(path) if owner is not None and not genuine else None
    sha256 = sha.hexdigest() if sha is not None else None
    golden = ctx.reference.get(path)
    view = FileView(entry, kind, data, complete, owner, pristine, digest_md5, genuine, expected, digest, sha256, golden)
    findings: list[Finding] = []
    notes: list[str] = []
    # An empty file says something only by its name (a modem tool, a remote-access program) or
    # by differing from its genuine package; a hundred thousand of them must stay cheap.
    checks = FILE_CHECKS if entry.size or expected is not None or _NAMED.search(path) else ()
    for _name, check in checks:
        try:
            findings.extend(check(view, ctx))
        except Incomplete as exc:
            notes.append(f"{shown(path)}: {exc}")
    if genuine:
        # Exactly what the distribution shipped: the finding is that the package is installed
        # at all (a review item), not evidence of tampering, so it never ranks above medium.
        findings = [replace(f, severity=min(f.severity, Severity.MEDIUM)) for f in findings]
    trust = ("genuine" if genuine else "differs" if expected is not None else
             "reference" if golden is not None and golden == sha256 else "unowned" if owner is None else "unverified")
    return FileOutcome(path, kind, tuple(findings), sha256, trust=trust, notes=tuple(notes))


def _scan_or_note(state: _PassState, entry: Entry) -> FileOutcome:
    try:
        return _scan_file(state, entry)
    except OSError as exc:
        return FileOutcome(entry.path, None, (), None, f"{shown(entry.path)}: cannot be read ({exc.strerror or exc}): not scanned")


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
    problems: list[str] = []
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
    trust: dict[str, int] = {}
    digests: dict[str, str] = {}
    findings: list[Finding] = []
    for outcome in sorted(outcomes, key=lambda o: o.path):
        if outcome.problem is not None:
            problems.append(outcome.problem)
        problems.extend(outcome.notes)
        if outcome.kind is not None:
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
            trust[outcome.trust] = trust.get(outcome.trust, 0) + 1
        findings.extend(outcome.findings)
        if outcome.sha256 is not None:
            digests[outcome.path] = outcome.sha256
    return PassResult(tuple(findings), digests, kinds, tuple(summarise(problems)), trust)


def make_context(
    image: Image, db: PackageDb, crane: str | None, policy: EndpointPolicy, index: GenuineIndex | None = None,
    reference: dict[str, str] | None = None,
) -> ScanContext:
    """The checks' context; with ``index``, what the genuine packages ship at each image path;
    with ``reference``, the sha256 of each file of the known-good image."""
    genuine: dict[str, set[str]] = {}
    claimed: dict[str, str] = {}
    claimed_digests: dict[str, str] = {}
    if index is not None:
        for package in db.packages:
            for candidate in index.packages.get(package.name, ()):
                if candidate.manager != package.manager:
                    continue  # an rpm and a deb of the same name are not the same package
                exact = candidate.version == package.version
                for name, checksum in candidate.files.items():
                    path = image.canonical(name)
                    genuine.setdefault(path, set()).add(checksum)
                    if exact:
                        claimed[path] = checksum
                        if name in candidate.digests:
                            claimed_digests[path] = candidate.digests[name]
    return ScanContext(
        crane, image.entries, db.owner, db.md5, db.conffiles, policy,
        {path: frozenset(sums) for path, sums in genuine.items()}, claimed,
        index.md5s() if index is not None else frozenset(), db.digests, frozenset(db.config), claimed_digests,
        reference or {},
    )


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


def inventory(
    image: Image, db: PackageDb, kinds: dict[str, int], trust: dict[str, int] | None = None,
    genuine_sources: tuple[str, ...] = (),
) -> Inventory:
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
        trust=dict(trust or {}), genuine_sources=genuine_sources,
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

