"""Offline vulnerability matching and the CycloneDX SBOM.

Version order is checked against ``dpkg --compare-versions`` itself; the SBOM against the
CycloneDX 1.5 JSON schema (cyclonedx-python-lib's strict validator).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cranewatch.forensics import scan_image
from cranewatch.forensics.demo_image import build_tree, bundled_demo_image
from cranewatch.forensics.sbom import cyclonedx
from cranewatch.forensics.vulndb import compare, compare_dpkg

OSV = Path(__file__).parent / "data" / "forensics" / "osv"

PAIRS = [
    ("1.0", "1.0"), ("1.0", "1.0-1"), ("1.0~rc1", "1.0"), ("1:0.9", "2.0"), ("2.0-1", "2.0-1+deb12u1"),
    ("9.1-1", "9.1-1+b1"), ("5.2.15-2+b2", "5.2.15-2+b13"), ("1.34+dfsg-1.2", "1.34+dfsg-1.2+deb12u1"),
    ("3.0.11-1~deb12u2", "3.0.11-1"), ("1.2a", "1.2"), ("1.2.3", "1.2.10"), ("0:1.0", "1.0"),
    ("4.13+dfsg1-1+b1", "4.13+dfsg1-1"), ("1.0+", "1.0."), ("2.36-9+deb12u4", "2.36-9+deb12u10"),
]


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg as the reference implementation")
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_dpkg_version_order_agrees_with_dpkg(a: str, b: str) -> None:
    def dpkg(op: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0

    expected = -1 if dpkg("lt") else (0 if dpkg("eq") else 1)
    got = compare_dpkg(a, b)
    assert (got > 0) - (got < 0) == expected


def test_pypi_and_semver_order() -> None:
    assert compare("PyPI", "5.3.1", "5.4") < 0
    assert compare("PyPI", "5.4b2", "5.4") < 0
    assert compare("npm", "4.17.21", "4.17.3") > 0
    assert compare("npm", "1.0.0-rc.1", "1.0.0") < 0


def _tracker(tmp_path: Path) -> Path:
    # Debian security tracker JSON (https://security-tracker.debian.org/tracker/data/json layout):
    # keyed by source package; "resolved" with fixed_version, "open" for every version.
    data = {
        "debianutils": {
            "CVE-2099-0001": {"description": "which mishandles PATH", "scope": "local",
                               "releases": {"bookworm": {"status": "resolved", "fixed_version": "5.7-0.5~deb12u2", "urgency": "high"},
                                            "trixie": {"status": "resolved", "fixed_version": "5.8-1", "urgency": "high"}}},
            "CVE-2099-0002": {"description": "fixed before this version",
                               "releases": {"bookworm": {"status": "resolved", "fixed_version": "5.7-0.4", "urgency": "low"}}},
        },
        "shadow": {
            "CVE-2099-0003": {"description": "su issue", "releases": {"bookworm": {"status": "open", "urgency": "medium"}}},
            "CVE-2099-0004": {"description": "other release", "releases": {"trixie": {"status": "open", "urgency": "medium"}}},
        },
    }
    path = tmp_path / "tracker.json"
    path.write_text(json.dumps(data))
    return path


def test_debian_tracker_matches_by_source_package_and_release(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    status = tree / "var/lib/dpkg/status"
    # login is built from the shadow source package, as in Debian.
    status.write_text(status.read_text().replace("Package: login\n", "Package: login\nSource: shadow\n"))
    result = scan_image(tree, vulndb=_tracker(tmp_path), workers=1)
    vulns = [f for f in result.findings if f.category == "vulnerable-component"]
    hits = sorted((f.evidence[0].values["advisory"], f.evidence[0].values["package"], str(f.severity)) for f in vulns)
    assert hits == [("CVE-2099-0001", "debianutils", "high"), ("CVE-2099-0003", "login", "medium")]
    fixed = next(f for f in vulns if f.evidence[0].values["advisory"] == "CVE-2099-0001")
    assert fixed.evidence[0].values["fixed"] == "5.7-0.5~deb12u2"
    assert fixed.category == "vulnerable-component" and fixed.evidence[0].path == "var/lib/dpkg/status"


def test_osv_debian_ecosystem_ranges_and_exact_versions(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    records = [
        {"id": "DSA-9999-1", "aliases": ["CVE-2099-1000"], "summary": "coreutils issue",
         "affected": [{"package": {"ecosystem": "Debian:12", "name": "coreutils"},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9.1-1+deb12u1"}]}]}]},
        {"id": "DSA-9999-2", "summary": "already fixed",
         "affected": [{"package": {"ecosystem": "Debian:12", "name": "coreutils"},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "8.32-4"}]}]}]},
        {"id": "OSV-LAST", "summary": "last affected",
         "affected": [{"package": {"ecosystem": "Debian", "name": "base-files"},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "12.0"}, {"last_affected": "12.4+deb12u5"}]}]}]},
        {"id": "OSV-EXACT", "summary": "exact",
         "affected": [{"package": {"ecosystem": "Debian", "name": "cms-hmi"}, "versions": ["3.2.7-1"]}]},
        {"id": "OSV-PYPI", "summary": "wrong ecosystem",
         "affected": [{"package": {"ecosystem": "PyPI", "name": "coreutils"}, "versions": ["9.1-1"]}]},
    ]
    db = tmp_path / "osv"
    db.mkdir()
    (db / "all.json").write_text(json.dumps(records))
    ids = sorted(f.evidence[0].values["advisory"] for f in scan_image(tree, vulndb=db, workers=1).findings if f.category == "vulnerable-component")
    assert ids == ["DSA-9999-1", "OSV-EXACT", "OSV-LAST"]


def test_sbom_is_valid_cyclonedx_1_5_and_lists_vulnerabilities() -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    result = scan_image(bundled_demo_image(), vulndb=OSV, workers=1)
    document = cyclonedx(result)
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(document))
    assert errors is None, errors
    purls = {c["purl"] for c in document["components"]}
    assert "pkg:deb/debian/coreutils@9.1-1?arch=amd64" in purls
    assert "pkg:pypi/pyyaml@5.3.1" in purls
    assert len(document["components"]) == len(result.inventory.packages)
    (vuln,) = document["vulnerabilities"]
    assert vuln["id"] == "GHSA-8q59-q68h-6hv4" and vuln["affects"] == [{"ref": "pkg:pypi/pyyaml@5.3.1"}]
    assert document["metadata"]["component"]["hashes"][0]["content"] == result.inputs[0].sha256
