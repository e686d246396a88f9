"""The acceptance test of issue 7 on a real Debian: clean → nothing high; planted → exactly
the planted artefacts, with path and category, in every input format; --reference diffs.

The clean tree is a debootstrap minbase (scripts/build-test-rootfs.sh, cached); the planted
copy gets ``cranewatch.forensics.artefacts.plant`` (one realistic artefact per check).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cranewatch.forensics import ScanResult, scan_image
from cranewatch.forensics.artefacts import Planted, plant
from cranewatch.model import Severity
from forensics_helpers import copy_tree, make_ext4, make_squashfs, make_tar, make_zip, rootfs

OSV = Path(__file__).parent / "data" / "forensics" / "osv"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_tree() -> Path:
    return rootfs()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, clean_tree: Path) -> tuple[Path, list[Planted]]:
    tree = copy_tree(clean_tree, tmp_path_factory.mktemp("planted"))
    return tree, plant(tree)


@pytest.fixture(scope="module")
def clean_result(clean_tree: Path) -> ScanResult:
    return scan_image(clean_tree, vulndb=OSV)


@pytest.fixture(scope="module")
def planted_result(planted: tuple[Path, list[Planted]]) -> ScanResult:
    return scan_image(planted[0], vulndb=OSV)


def _keys(result: ScanResult) -> set[tuple[str, str]]:
    return {(f.rule, f.evidence[0].path or "") for f in result.findings}


def test_clean_debian_has_no_high_finding(clean_result: ScanResult) -> None:
    assert [f.to_json() for f in clean_result.findings if f.severity >= Severity.HIGH] == []
    inv = clean_result.inventory
    assert inv.packages and all(p.manager == "dpkg" for p in inv.packages)
    assert "usr/bin/su" in inv.setuid  # package-owned SUID programs are inventory, not findings
    assert inv.elf > 100


def _assert_planted_found(result: ScanResult, clean: ScanResult, artefacts: list[Planted]) -> None:
    for artefact in artefacts:
        hits = [
            f for f in result.findings
            if f.evidence and f.evidence[0].path == artefact.path and f.category == artefact.category
            and (not artefact.token or artefact.token in f.title + (f.evidence[0].excerpt or ""))
        ]
        assert hits, f"not found: {artefact}"
    planted_paths = {a.path for a in artefacts}
    new = _keys(result) - _keys(clean)
    stray = sorted(k for k in new if k[1] not in planted_paths)
    assert stray == [], "findings about files nobody planted"


def test_planted_artefacts_are_all_found_and_nothing_else(
    planted_result: ScanResult, clean_result: ScanResult, planted: tuple[Path, list[Planted]]
) -> None:
    _assert_planted_found(planted_result, clean_result, planted[1])
    categories = {a.category for a in planted[1]}
    assert categories == {
        "backdoor", "remote-access-tool", "oob-connectivity", "persistence", "credential",
        "hardcoded-endpoint", "vulnerable-component", "weak-config",
    }
    assert planted_result.worst() == Severity.CRITICAL


def test_ids_are_stable_across_runs(planted: tuple[Path, list[Planted]], planted_result: ScanResult) -> None:
    again = scan_image(planted[0], vulndb=OSV, workers=1)  # single process: same ids as the pool
    assert [f.id for f in again.findings] == [f.id for f in planted_result.findings]


def _wrapped(tree: Path, out: Path) -> Path:
    """``tar czf cms.tgz rootfs/``: every path starts with the folder's name."""
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--transform", "s,^\\.,rootfs,", "-czf", str(out), "."],
                   check=True, env={**os.environ, "GZIP": "-1"})
    return out


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {
    "tar.gz": lambda tree, out: make_tar(tree, out / "cms.tar.gz"),
    "wrapped tar.gz": lambda tree, out: _wrapped(tree, out / "cms-wrapped.tgz"),
    "zip": lambda tree, out: make_zip(tree, out / "cms.zip"),
    "squashfs": lambda tree, out: make_squashfs(tree, out / "cms.sqfs"),
    "ext4": lambda tree, out: make_ext4(tree, out / "cms.ext4"),
}


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_every_format_gives_the_same_findings(
    tmp_path: Path, fmt: str, planted: tuple[Path, list[Planted]], planted_result: ScanResult
) -> None:
    image = BUILDERS[fmt](planted[0], tmp_path)
    result = scan_image(image, vulndb=OSV)
    assert result.inputs[0].format == {"tar.gz": "tar", "wrapped tar.gz": "tar", "zip": "zip", "squashfs": "squashfs", "ext4": "ext"}[fmt]
    assert _keys(result) == _keys(planted_result)
    assert [f.id for f in result.findings] == [f.id for f in planted_result.findings]


def test_reference_reports_changes_and_suppresses_what_it_has(
    tmp_path: Path, clean_tree: Path, planted: tuple[Path, list[Planted]]
) -> None:
    tree, artefacts = planted
    # The "golden image" already had everything but the cron job: only that remains new.
    golden = copy_tree(tree, tmp_path / "golden")
    (golden / "etc/cron.d/cms-sync").unlink()
    (golden / "etc/chatscripts/lte-vendor").write_text("# placeholder\n")
    result = scan_image(tree, reference=golden)
    assert {f.evidence[0].path for f in result.findings} == {"etc/cron.d/cms-sync", "etc/chatscripts/lte-vendor"}
    assert result.suppressed and all(f.evidence[0].path not in ("etc/cron.d/cms-sync",) for f in result.suppressed)
    assert result.diff is not None
    assert result.diff.added == ("etc/cron.d/cms-sync",)
    assert result.diff.changed == ("etc/chatscripts/lte-vendor",)
    assert result.diff.removed == ()
    against_clean = scan_image(tree, reference=clean_tree)
    assert against_clean.diff is not None
    added = set(against_clean.diff.added)
    assert {a.path for a in artefacts if a.path not in ("etc/passwd", "etc/shadow", "usr/bin/which.debianutils")} <= added
    assert {"etc/passwd", "etc/shadow", "usr/bin/which.debianutils"} <= set(against_clean.diff.changed)


def test_scan_never_changes_the_image(tmp_path: Path, planted: tuple[Path, list[Planted]]) -> None:
    tree = planted[0]
    before = sorted((p.relative_to(tree).as_posix(), p.lstat().st_mtime_ns, p.lstat().st_size) for p in tree.rglob("*"))
    scan_image(tree)
    after = sorted((p.relative_to(tree).as_posix(), p.lstat().st_mtime_ns, p.lstat().st_size) for p in tree.rglob("*"))
    assert before == after
