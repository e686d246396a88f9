"""``scan_image``: the Python API of the forensic scan (the CLI, the gate and the demo use it)."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from cranewatch.errors import InputError, Location, UsageError
from cranewatch.forensics.carve import nested_blobs
from cranewatch.forensics.checks import yara_rules
from cranewatch.forensics.checks.base import EndpointPolicy
from cranewatch.forensics.checks.endpoints import claimed_summary
from cranewatch.forensics.disk import (
    DiskImage,
    Volume,
    encrypted_findings,
    label_finding,
    labelled_path,
)
from cranewatch.forensics.genuine import (
    GenuineIndex,
    default_package_cache,
    fetch_from_archive,
    fetch_packages,
    load_index,
)
from cranewatch.forensics.image import Entry, Image, Limits, open_image
from cranewatch.forensics.packages import PackageDb, read_packages
from cranewatch.forensics.result import ReferenceDiff, ScanResult
from cranewatch.forensics.scanner import (
    InputInfo,
    Inventory,
    dedupe,
    default_workers,
    file_pass,
    image_checks,
    input_info,
    inventory,
    make_context,
)
from cranewatch.forensics.vulndb import VulnDb, load_vulndb, match
from cranewatch.forensics.windows import is_windows, windows_programs
from cranewatch.model import Finding, finding_id

NO_ZONE_WARNING = (
    "no crane zone given (no --profile, no --zone): endpoints were judged generically, "
    "private ranges (RFC 1918, RFC 6598, fc00::/7) as internal; none was checked against the crane's LAN"
)


def endpoint_policy(
    *, profile: str | os.PathLike[str] | None = None, allow: Iterable[str] = (), zone: Iterable[str] = ()
) -> tuple[EndpointPolicy, str | None]:
    """The endpoint classification from a crane profile, ``--zone`` CIDRs (the crane LAN) and
    ``--allow`` entries, plus the crane id. Without a profile or zone no address is the crane's
    LAN (no crane is built in); ``scan_image`` then says so in its warnings."""
    crane_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    terminal_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    allowed_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    allowed_hosts: set[str] = set()
    crane_id: str | None = None
    if profile is not None:
        from cranewatch.profile import load_profile

        loaded = load_profile(Path(profile))
        crane_id = loaded.crane_id or None
        crane_nets.extend(loaded.zones.get("crane", ()))
        terminal_nets.extend(loaded.zones.get("terminal", ()))
        for endpoint in loaded.outside_endpoints:
            allowed_nets.append(endpoint.network)
    for cidr in zone:
        try:
            crane_nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise UsageError(f"--zone {cidr!r} is not a CIDR like 192.168.1.0/24") from None
    for item in allow:
        item = item.strip()
        if not item:
            continue
        try:
            allowed_nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            allowed_hosts.add(item.lower().rstrip("."))
    return (
        EndpointPolicy(
            crane_nets=tuple(crane_nets),
            terminal_nets=tuple(terminal_nets),
            allowed_nets=tuple(allowed_nets),
            allowed_hosts=frozenset(allowed_hosts),
        ),
        crane_id,
    )


@dataclass(frozen=True)
class _Scanned:
    """One image's part of the result (the scanned image's, or the reference's)."""

    info: InputInfo
    findings: list[Finding]
    inventory: Inventory
    digests: dict[str, str]
    entries: dict[str, Entry]
    warnings: list[str]
    problems: list[str]


@dataclass(frozen=True)
class GenuineSource:
    """Where the distribution's genuine packages come from: folders or files of .deb
    (``--distro-packages``), and/or the installed versions fetched with apt into ``cache``."""

    paths: tuple[str, ...] = ()
    fetch: bool = False
    cache: Path | None = None
    archive: str | None = None  # fetch from this Debian-layout archive instead of apt

    def index(self, db: PackageDb) -> tuple[GenuineIndex | None, list[str]]:
        """The genuine packages for the image of ``db``, and warnings about what was missing."""
        if not self.paths and not self.fetch:
            return None, []
        notes: list[str] = []
        paths = list(self.paths)
        if self.fetch:
            cache = self.cache or default_package_cache()
            if self.archive:
                _present, failed = fetch_from_archive(db.packages, cache, self.archive)
            else:
                _present, failed = fetch_packages(db.packages, cache)
            if failed:
                where = self.archive or "apt"
                notes.append(
                    f"{where} could not provide {len(failed)} installed package version(s); their files stay "
                    f"unverified: {', '.join(failed[:5])}"
                )
            paths.append(str(cache))
        index = load_index(paths)
        notes.extend(f"genuine packages: {p}" for p in index.problems)
        return index, notes


def _trust_note(trust: dict[str, int], index: GenuineIndex | None) -> str | None:
    owned = trust.get("genuine", 0) + trust.get("differs", 0) + trust.get("unverified", 0)
    if not owned:
        return None
    if index is None:
        return (
            f"{owned} files are claimed by the image's package database; without the genuine packages "
            "(--distro-packages DIR or --fetch-packages) none is verified, so every one got every content check"
        )
    return (
        f"verified against {index.count} genuine package(s): {trust.get('genuine', 0)} of {owned} package files "
        f"genuine, {trust.get('differs', 0)} differ, {trust.get('unverified', 0)} unverified (fully checked)"
    )


def _reference_note(trust: dict[str, int], findings: Iterable[Finding]) -> str:
    differ = sum(1 for f in findings if f.rule == "integrity.differs-from-reference")
    return (f"compared with the reference image: {trust.get('reference', 0)} file(s) not verified by a genuine package "
            f"are identical to it (genuine by reference), {differ} differ from it (integrity.differs-from-reference)")


def _scan_whole(
    path: str | os.PathLike[str], *, crane: str | None, policy: EndpointPolicy, workers: int,
    want_digest: bool, limits: Limits | None, vulns: VulnDb | None, genuine: GenuineSource,
    reference: dict[str, str] | None = None,
) -> _Scanned:
    """Scan one image; ``reference`` is the known-good image's sha256 per path (as its
    ``_Scanned.digests`` name them)."""
    with open_image(path, limits) as image:
        if not image.entries:
            why = f": {image.problems[0]}" if image.problems else ""
            raise InputError(f"the image holds no files{why}", Location(file=str(path)))
        info = input_info(Path(path), image)
        if isinstance(image, DiskImage):
            primary = next(i for i, v in enumerate(image.volumes) if v.is_root)
            return _merge_volumes(image, info, crane, [
                _scan_opened(v.image, info, crane=crane, policy=policy, workers=workers, want_digest=want_digest,
                             vulns=vulns, genuine=genuine, reference=_volume_reference(reference, v, i == primary),
                             blob_limits=None if image.format == "firmware" else limits or Limits())
                for i, v in enumerate(image.volumes)
            ])
        return _scan_opened(image, info, crane=crane, policy=policy, workers=workers, want_digest=want_digest,
                            vulns=vulns, genuine=genuine, reference=reference, blob_limits=limits or Limits())


def _volume_reference(reference: dict[str, str] | None, volume: Volume, primary: bool) -> dict[str, str] | None:
    """The reference digests of one volume: the root's paths as they are, the others' below
    their label (``p3:/…``), as ``_merge_volumes`` names them."""
    if reference is None or primary:
        return reference
    prefix = labelled_path(volume, "")
    return {p[len(prefix) :]: d for p, d in reference.items() if p.startswith(prefix)}


def _merge_volumes(disk: DiskImage, info: InputInfo, crane: str | None, scans: list[_Scanned]) -> _Scanned:
    """One result for the disk: each finding names its partition; the first root's inventory;
    each encrypted volume a finding of its own."""
    primary = next(i for i, v in enumerate(disk.volumes) if v.is_root)
    findings: list[Finding] = encrypted_findings(disk, crane)
    digests: dict[str, str] = {}
    entries: dict[str, Entry] = {}
    for i, (volume, scanned) in enumerate(zip(disk.volumes, scans, strict=True)):
        findings.extend(label_finding(f, disk, volume, keep_id=i == primary) for f in scanned.findings)
        # The root keeps its own paths, so --reference compares it with a golden root tree.
        rename = (lambda p: p) if i == primary else partial(labelled_path, volume)
        digests.update({rename(p): d for p, d in scanned.digests.items()})
        entries.update({rename(p): e for p, e in scanned.entries.items()})
    warnings = [*disk.warnings, *(f"{v.label}: {w}" for v, s in zip(disk.volumes, scans, strict=True)
                                  for w in s.warnings[len(v.image.warnings):])]
    problems = [*disk.problems, *(f"{v.label}: {p}" for v, s in zip(disk.volumes, scans, strict=True)
                                  for p in s.problems)]
    return _Scanned(info, findings, scans[primary].inventory, digests, entries, warnings, problems)


def _scan_opened(
    image: Image, info: InputInfo, *, crane: str | None, policy: EndpointPolicy, workers: int,
    want_digest: bool, vulns: VulnDb | None, genuine: GenuineSource, reference: dict[str, str] | None = None,
    blob_limits: Limits | None = None,
) -> _Scanned:
    """Scan one opened tree; with ``blob_limits``, the vendor update packages in it are carved
    and scanned too (``carve.nested_blobs``: one level, never inside a carved piece)."""
    db = read_packages(image)
    if is_windows(image):  # the Uninstall keys' programs join the inventory and the SBOM
        db = replace(db, packages=(*db.packages, *windows_programs(image)))
    index, notes = genuine.index(db)
    ctx = make_context(image, db, crane, policy, index, reference)
    passed = file_pass(image, ctx, workers=workers, want_digest=want_digest)
    findings = claimed_summary([*passed.findings, *image_checks(image, ctx)], crane)
    if vulns is not None:
        findings.extend(match(vulns, db.packages, db.os_release, ctx))
    note = _trust_note(passed.trust, index)
    if reference is not None:
        notes.append(_reference_note(passed.trust, passed.findings))
    problems = [*image.problems, *passed.problems]
    if blob_limits is not None:
        blobs, blob_problems = nested_blobs(image, db.owner, blob_limits)
        problems.extend(blob_problems)
        for blob_path, blob in blobs:
            with blob:
                notes.extend(w if w.startswith(("firmware blob ", blob_path)) else f"{blob_path}{w}" for w in blob.warnings)
                problems.extend(f"{blob_path}: {p}" for p in blob.problems)
                for volume in blob.volumes:
                    inner = _scan_opened(volume.image, info, crane=crane, policy=policy, workers=workers,
                                         want_digest=False, vulns=None, genuine=GenuineSource())
                    findings.extend(_inside_blob(f, blob_path, blob, volume) for f in inner.findings)
                    notes.extend(f"{blob_path}{volume.label}: {w}" for w in inner.warnings if w != NO_ZONE_WARNING)
                    problems.extend(f"{blob_path}{volume.label}: {p}" for p in inner.problems)
    return _Scanned(
        info, findings,
        inventory(image, db, passed.kinds, passed.trust, index.sources if index is not None else ()),
        passed.digests, image.entries, [*image.warnings, *notes, *([note] if note else [])], problems,
    )


def _inside_blob(finding: Finding, blob_path: str, blob: DiskImage, volume: Volume) -> Finding:
    """A finding in a piece carved from an update package of the image: its paths start with
    the package's (``opt/vendor/update.bin@512:/etc/init.d/S99x``), its id includes it."""
    labelled = label_finding(finding, blob, volume, keep_id=False)
    evidence = tuple(replace(e, path=f"{blob_path}{e.path}") if e.path is not None else e for e in labelled.evidence)
    return replace(labelled, id=finding_id(finding.rule, finding.crane, blob_path, labelled.id), evidence=evidence)


def scan_image(
    path: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    crane: str | None = None,
    rules: str | os.PathLike[str] | None = None,
    vulndb: str | os.PathLike[str] | None = None,
    policy: EndpointPolicy | None = None,
    limits: Limits | None = None,
    workers: int | None = None,
    show_suppressed: bool = False,
    genuine: GenuineSource | None = None,
) -> ScanResult:
    """Scan one image (directory, archive, squashfs or ext image, whole disk) and return the result.

    With ``reference``, the reference image is scanned too: the result lists files added,
    changed and removed, and findings also present in the reference move to ``suppressed``
    (unless ``show_suppressed``). With ``genuine``, package files are verified against the
    distribution's genuine packages; without it nothing is spared a check on the image's word.
    """
    started = time.time()
    clock = time.perf_counter()
    ruleset = yara_rules.compile_rules(Path(rules) if rules is not None else None)
    vulns = load_vulndb(Path(vulndb)) if vulndb is not None else None
    scan = partial(
        _scan_whole, crane=crane, policy=policy or EndpointPolicy(), workers=workers or default_workers(),
        want_digest=reference is not None, limits=limits, vulns=vulns, genuine=genuine or GenuineSource(),
    )
    yara_rules.install(ruleset)
    try:
        # The known-good image first: each file of the image is then compared with it as it is read.
        golden = scan(reference) if reference is not None else None
        scanned = scan(path, reference=golden.digests if golden is not None else None)
        findings = scanned.findings
        diff = None
        suppressed: list[Finding] = []
        problems = scanned.problems
        if golden is not None:
            problems = [*problems, *(f"reference {golden.info.path}: {p}" for p in golden.problems)]
            diff = _diff(golden.info, scanned.entries, scanned.digests, golden.entries, golden.digests)
            known = {f.id for f in golden.findings}
            if not show_suppressed:
                suppressed = [f for f in findings if f.id in known]
                findings = [f for f in findings if f.id not in known]
    finally:
        yara_rules.install(None)
    notes = [] if (policy and policy.crane_nets) else [NO_ZONE_WARNING]
    return ScanResult(
        inputs=(scanned.info,) if diff is None else (scanned.info, diff.reference),
        crane=crane, inventory=scanned.inventory, findings=dedupe(findings), suppressed=dedupe(suppressed),
        diff=diff, warnings=(*problems, *scanned.warnings, *notes), problems=tuple(problems), rules=ruleset.sources,
        vulndb=vulns.sources if vulns else (), started=started, seconds=time.perf_counter() - clock,
    )


def _diff(
    ref_info: InputInfo, entries: dict[str, Entry], digests: dict[str, str],
    ref_entries: dict[str, Entry], ref_digests: dict[str, str],
) -> ReferenceDiff:
    added, changed = [], []
    for path, entry in entries.items():
        if entry.type == "dir":
            continue
        old = ref_entries.get(path)
        if old is None or old.type == "dir":
            added.append(path)
        elif (old.type, old.mode, old.link, ref_digests.get(path)) != (entry.type, entry.mode, entry.link, digests.get(path)):
            changed.append(path)
    removed = [p for p, e in ref_entries.items() if e.type != "dir" and p not in entries]
    return ReferenceDiff(ref_info, tuple(sorted(added)), tuple(sorted(changed)), tuple(sorted(removed)))
