"""Installed programs (Uninstall keys) into the SBOM, and COM hijacks in a user's UsrClass.dat.

Real hives (regipy's test data) changed with hivex: Uninstall entries of the machine (64- and
32-bit) and of a user, an update entry that must not count; a user CLSID shadowing a machine one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.sbom import cyclonedx
from cranewatch.model import Severity
from test_forensics_windows import STS07
from windows_helpers import REG_DWORD, REG_SZ, set_values, stock_tree

UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
THUMBS = "{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}"  # a shell CLSID of Windows (thumbcache.dll)
CRANE_COM = "{5D1E4C7A-2B3F-4C61-9A8E-0C7F1B2D3E4F}"
USRCLASS = "Users/cms/AppData/Local/Microsoft/Windows/UsrClass.dat"


@pytest.fixture(scope="module")
def tree(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = stock_tree(shared_data, tmp_path_factory.mktemp("inst") / "C")
    config = root / "Windows/System32/config"
    set_values(config / "SOFTWARE", [
        (f"{UNINSTALL}\\{{A1B2C3D4-0000-4000-8000-000000000001}}", "DisplayName", REG_SZ, "Crane CMS Client"),
        (f"{UNINSTALL}\\{{A1B2C3D4-0000-4000-8000-000000000001}}", "DisplayVersion", REG_SZ, "4.2.1"),
        (f"{UNINSTALL}\\{{A1B2C3D4-0000-4000-8000-000000000001}}", "Publisher", REG_SZ, "Crane Vendor GmbH"),
        (f"{UNINSTALL}\\KB5005565", "DisplayName", REG_SZ, "Security Update for Crane CMS Client"),
        (f"{UNINSTALL}\\KB5005565", "ParentKeyName", REG_SZ, "{A1B2C3D4-0000-4000-8000-000000000001}"),
        (f"Wow6432Node\\{UNINSTALL}\\TeamViewer", "DisplayName", REG_SZ, "TeamViewer"),
        (f"Wow6432Node\\{UNINSTALL}\\TeamViewer", "DisplayVersion", REG_SZ, "15.4.4445"),
        (f"Wow6432Node\\{UNINSTALL}\\TeamViewer", "Publisher", REG_SZ, "TeamViewer"),
        (f"{UNINSTALL}\\HiddenBits", "DisplayName", REG_SZ, "Hidden component"),
        (f"{UNINSTALL}\\HiddenBits", "SystemComponent", REG_DWORD, 1),
        (f"Classes\\CLSID\\{THUMBS}\\InprocServer32", "", REG_SZ, "%SystemRoot%\\system32\\thumbcache.dll"),
    ])
    set_values(root / "Users/cms/NTUSER.DAT", [
        (f"Software\\{UNINSTALL}\\ngrok", "DisplayName", REG_SZ, "ngrok agent"),
        (f"Software\\{UNINSTALL}\\ngrok", "DisplayVersion", REG_SZ, "3.3.1"),
    ])
    set_values(root / USRCLASS, [
        (f"CLSID\\{THUMBS}\\InprocServer32", "", REG_SZ, "C:\\Users\\cms\\AppData\\Roaming\\Vendor\\thumbs.dll"),
        (f"CLSID\\{THUMBS}\\InprocServer32", "ThreadingModel", REG_SZ, "Apartment"),
        (f"CLSID\\{CRANE_COM}\\InprocServer32", "", REG_SZ, "C:\\ProgramData\\CraneSync\\cmsext.dll"),
    ])
    return root


def test_uninstall_entries_are_the_sbom_components(tree: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    result = scan_image(tree, workers=1, policy=STS07)
    windows = [(p.name, p.version, p.arch, p.maintainer, p.path) for p in result.inventory.packages if p.manager == "windows"]
    sw = "Windows/System32/config/SOFTWARE"
    assert windows == [
        ("Crane CMS Client", "4.2.1", "x64", "Crane Vendor GmbH", sw),
        # the real hive's own entries (a Windows 10 user's Software hive stands in for SOFTWARE)
        ("GitKraken", "5.0.4", "x64", "Axosoft, LLC", sw),
        ("Microsoft OneDrive", "20.028.0206.0009", "x64", "Microsoft Corporation", sw),
        ("Microsoft Visual Studio Code (User)", "1.33.1", "x64", "Microsoft Corporation", sw),
        ("ngrok agent", "3.3.1", None, None, "Users/cms/NTUSER.DAT"),
        ("Python 3.7 distorm3-3.3.4", "", "x64", None, sw),
        ("Python 3.7.0 (Anaconda3 5.3.0 64-bit)", "5.3.0", "x64", "Anaconda, Inc.", sw),
        ("TeamViewer", "15.4.4445", "x86", "TeamViewer", sw),
    ]  # not the update of the CMS client, not the hidden versionless component
    document = cyclonedx(result)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(document)) is None
    purls = {c["purl"]: c for c in document["components"]}
    assert purls["pkg:generic/Crane%20CMS%20Client@4.2.1?arch=x64"]["supplier"] == {"name": "Crane Vendor GmbH"}
    assert "pkg:generic/TeamViewer@15.4.4445?arch=x86" in purls
    assert "pkg:generic/ngrok%20agent@3.3.1" in purls
    assert "pkg:generic/Python%203.7%20distorm3-3.3.4?arch=x64" in purls  # no version: no '@'
    assert len(document["components"]) == len(result.inventory.packages)


def test_a_user_class_shadowing_a_machine_clsid_is_a_com_hijack(tree: Path) -> None:
    findings = [f for f in scan_image(tree, workers=1, policy=STS07).findings if f.rule == "windows.com-hijack"]
    by_clsid = {f.evidence[0].values["clsid"]: f for f in findings}
    assert set(by_clsid) == {THUMBS, CRANE_COM}  # the stock OneDrive and shell32 registrations give nothing
    shadow = by_clsid[THUMBS]
    assert shadow.severity == Severity.HIGH
    assert shadow.evidence[0].path == USRCLASS
    assert shadow.evidence[0].values["key"] == f"HKU\\cms_Classes\\CLSID\\{THUMBS}\\InprocServer32"
    assert shadow.evidence[0].values["machine_server"] == "%SystemRoot%\\system32\\thumbcache.dll"
    assert by_clsid[CRANE_COM].severity == Severity.MEDIUM


def test_the_stock_user_classes_give_no_com_finding(shared_data: Path, tmp_path: Path) -> None:
    root = stock_tree(shared_data, tmp_path / "C")
    findings = scan_image(root, workers=1, policy=STS07).findings
    assert [f.title for f in findings if f.rule == "windows.com-hijack"] == []
