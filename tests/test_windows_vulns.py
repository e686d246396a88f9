"""Vulnerability matching of Windows programs (Uninstall keys) against the user's offline data.

The installed programs are Uninstall entries written with hivex into real hives; the
vulnerability data is written here by hand in NVD's CVE JSON (the 2.0 API's answer and a 1.1
feed) and as an OSV-style record with the ``Windows`` ecosystem. Every expected match and
non-match is worked out by hand in the comments (dotted numbers compared left to right).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.vulndb import compare_windows, load_vulndb, windows_products
from cranewatch.model import Severity
from test_forensics_windows import STS07
from windows_helpers import REG_SZ, set_values, stock_tree

UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
PROGRAMS = {  # key: (DisplayName, DisplayVersion, Publisher)
    "TeamViewer": ("TeamViewer", "15.4.4445", "TeamViewer Germany GmbH"),
    "AnyDesk": ("AnyDesk", "6.3.0", "philandro Software GmbH"),
    "Mozilla Firefox 115.0.2 (x64 en-US)": ("Mozilla Firefox (x64 en-US)", "115.0.2", "Mozilla"),
    "7-Zip": ("7-Zip 19.00 (x64)", "19.00", "Igor Pavlov"),
    "{A1B2C3D4-0000-4000-8000-000000000001}": ("Crane CMS Client", "4.2.1", "Crane Vendor GmbH"),
    "VNC Server": ("VNC Server 6.7.2", "6.7.2", "RealVNC"),
}


def cpe_match(cpe: str, vulnerable: bool = True, **bounds: str) -> dict[str, object]:
    return {"vulnerable": vulnerable, "criteria": cpe, **bounds}


def nvd2(cve: str, severity: str, matches: list[dict[str, object]], platform: str | None = None) -> dict[str, object]:
    nodes: list[dict[str, object]] = [{"operator": "OR", "negate": False, "cpeMatch": matches}]
    if platform:
        nodes.append({"operator": "OR", "negate": False, "cpeMatch": [cpe_match(platform, vulnerable=False)]})
    return {"cve": {"id": cve, "descriptions": [{"lang": "en", "value": f"{cve} test description"}],
                    "metrics": {"cvssMetricV31": [{"cvssData": {"baseSeverity": severity}}]},
                    "configurations": [{"operator": "AND" if platform else "OR", "nodes": nodes}]}}


TV = "cpe:2.3:a:teamviewer:teamviewer:*:*:*:*:*:windows:*:*"
NVD2 = {"format": "NVD_CVE", "version": "2.0", "vulnerabilities": [
    # TeamViewer 15.4.4445: in 15.0 <= v < 15.8.3 (4 < 8) -> affected, once although three ranges are listed
    nvd2("CVE-2020-13699", "HIGH", [cpe_match(TV, versionStartIncluding="8.0", versionEndExcluding="8.0.258861"),
                                    cpe_match(TV, versionStartIncluding="14.0", versionEndExcluding="14.7.48644"),
                                    cpe_match(TV, versionStartIncluding="15.0", versionEndExcluding="15.8.3")],
         platform="cpe:2.3:o:microsoft:windows:-:*:*:*:*:*:*:*"),
    # TeamViewer fixed in 15.4.4445 exactly: 15.4.4445 is not below it -> not affected
    nvd2("CVE-2099-0001", "CRITICAL", [cpe_match(TV, versionEndExcluding="15.4.4445.0")]),
    # AnyDesk 6.3.0 above 6.2.6 (3 > 2) -> not affected
    nvd2("CVE-2021-40854", "HIGH", [cpe_match("cpe:2.3:a:anydesk:anydesk:*:*:*:*:*:*:*:*", versionEndExcluding="6.2.6")]),
    # Firefox 115.0.2 below 115.0.3 -> affected (CPE product "firefox", vendor "mozilla" in the publisher)
    nvd2("CVE-2023-4045", "CRITICAL", [cpe_match("cpe:2.3:a:mozilla:firefox:*:*:*:*:*:*:*:*", versionEndExcluding="115.0.3")]),
    # 7-Zip 19.00 through 21.07 (19 < 21) -> affected (vendor 7-zip is the product itself)
    nvd2("CVE-2022-29072", "HIGH", [cpe_match("cpe:2.3:a:7-zip:7-zip:*:*:*:*:*:*:*:*", versionEndIncluding="21.07")]),
    # A TeamViewer of another vendor: the publisher does not name it -> not matched
    nvd2("CVE-2099-0002", "HIGH", [cpe_match("cpe:2.3:a:other_vendor:teamviewer:*:*:*:*:*:*:*:*")]),
    # RealVNC's VNC Server 6.7.2 after 6.7.2 exclusive -> not affected; the product for 6.7.x up to 6.7.2 is
    nvd2("CVE-2099-0003", "MEDIUM", [cpe_match("cpe:2.3:a:realvnc:vnc_server:*:*:*:*:*:*:*:*",
                                               versionStartExcluding="6.7.2", versionEndExcluding="7.0")]),
    nvd2("CVE-2099-0004", "LOW", [cpe_match("cpe:2.3:a:realvnc:vnc_server:*:*:*:*:*:*:*:*",
                                            versionStartIncluding="6.7", versionEndIncluding="6.7.2")]),
]}
NVD11 = {"CVE_data_type": "CVE", "CVE_Items": [{  # Crane CMS Client 4.2.1 exactly -> affected (vendor in the publisher)
    "cve": {"CVE_data_meta": {"ID": "CVE-2099-0005"},
            "description": {"description_data": [{"lang": "en", "value": "CMS client test"}]}},
    "configurations": {"CVE_data_version": "4.0", "nodes": [{"operator": "OR", "cpe_match": [
        {"vulnerable": True, "cpe23Uri": "cpe:2.3:a:crane_vendor:cms_client:4.2.1:*:*:*:*:*:*:*"},
        {"vulnerable": True, "cpe23Uri": "cpe:2.3:a:crane_vendor:cms_client:4.2.0:*:*:*:*:*:*:*"}]}]},
    "impact": {"baseMetricV3": {"cvssV3": {"baseSeverity": "CRITICAL"}}},
}]}
OSV = [{"id": "CRANE-2026-1", "summary": "CMS client default password", "affected": [{  # 4.2.1 < 4.2.2 -> affected
    "package": {"ecosystem": "Windows", "name": "Crane CMS Client"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "4.0"}, {"fixed": "4.2.2"}]}]}]}]
EXPECTED = {("CVE-2020-13699", "TeamViewer", Severity.HIGH), ("CVE-2023-4045", "Mozilla Firefox (x64 en-US)", Severity.CRITICAL),
            ("CVE-2022-29072", "7-Zip 19.00 (x64)", Severity.HIGH), ("CVE-2099-0004", "VNC Server 6.7.2", Severity.LOW),
            ("CVE-2099-0005", "Crane CMS Client", Severity.CRITICAL), ("CRANE-2026-1", "Crane CMS Client", Severity.MEDIUM)}


@pytest.fixture(scope="module")
def tree(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = stock_tree(shared_data, tmp_path_factory.mktemp("vuln") / "C")
    values = []
    for key, (name, version, publisher) in PROGRAMS.items():
        values += [(f"{UNINSTALL}\\{key}", "DisplayName", REG_SZ, name), (f"{UNINSTALL}\\{key}", "DisplayVersion", REG_SZ, version),
                   (f"{UNINSTALL}\\{key}", "Publisher", REG_SZ, publisher)]
    set_values(root / "Windows/System32/config/SOFTWARE", values)
    return root


def test_windows_programs_match_nvd_cpes_and_windows_records(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "vulns"
    db.mkdir()
    (db / "nvd-2.0.json").write_text(json.dumps(NVD2))
    (db / "nvdcve-1.1-2099.json").write_text(json.dumps(NVD11))
    (db / "osv-windows.json").write_text(json.dumps(OSV))
    found = [f for f in scan_image(tree, workers=1, policy=STS07, vulndb=db).findings if f.rule == "vuln.package"]
    assert {(f.evidence[0].values["advisory"], f.evidence[0].values["package"], f.severity) for f in found} == EXPECTED
    (tv,) = [f for f in found if f.evidence[0].values["package"] == "TeamViewer"]
    assert tv.evidence[0].values["fixed"] == "15.8.3" and tv.evidence[0].values["cpe"] == "teamviewer:teamviewer"
    assert tv.evidence[0].values["version"] == "15.4.4445" and "Update TeamViewer to 15.8.3" in tv.remedy


def test_an_escaped_cpe_and_a_platform_only_cve_are_read_right(tmp_path: Path) -> None:
    data = {"vulnerabilities": [
        nvd2("CVE-2099-0006", "HIGH", [cpe_match("cpe:2.3:a:notepad-plus-plus:notepad\\+\\+:*:*:*:*:*:*:*:*",
                                                  versionEndExcluding="8.5.2")]),
        nvd2("CVE-2099-0007", "HIGH", [cpe_match("cpe:2.3:o:microsoft:windows_10:1809:*:*:*:*:*:*:*")]),
    ]}
    file = tmp_path / "nvd.json"
    file.write_text(json.dumps(data))
    advisories = load_vulndb(file).advisories
    assert [(a.id, a.ecosystem, a.package, a.events) for a in advisories] == [
        ("CVE-2099-0006", "cpe", "notepad-plus-plus:notepad++", (("introduced", "0"), ("fixed", "8.5.2")))]
    assert "notepad++" in windows_products("Notepad++ (64-bit x64)")


@pytest.mark.parametrize(("a", "b", "order"), [
    ("15.8.3", "15.8.3.0", 0), ("15.10", "15.8.3", 1), ("19.00", "19.0", 0), ("2.5.1-I601", "2.5.1", 0),
    ("6.2.6", "6.3.0", -1), ("v4.2", "4.2.0.0", 0), ("", "1.0", -1), ("115.0.2", "115.0.3", -1)])
def test_windows_version_order(a: str, b: str, order: int) -> None:
    assert compare_windows(a, b) == order
    assert compare_windows(b, a) == -order
