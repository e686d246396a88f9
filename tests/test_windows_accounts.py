"""BAM findings name each user as ``ACCOUNT (SID)``, on real hives.

regipy's ``SAM`` (MIT) and ``SYSTEM_WIN_10_1709`` come from two machines: SAM's account domain
is S-1-5-21-1760460187-1592185332-161725925 (Administrator 500, Guest 501, Preston 1000), the
SYSTEM hive's BAM user is S-1-5-21-2595688666-2948619230-3055395256-1001 (its paths say tony).
BAM values for SAM's accounts are written into a copy of the SYSTEM hive with hivex, and a
ProfileList entry for the SYSTEM hive's user into a copy of a real SOFTWARE-shaped hive. The
expected names are read independently: account names and RIDs from SAM's ``Names`` subkeys
(each key's name, its default value's type the RID) through hivex, the domain SID by regipy's
own ``local_sid`` plugin and by hand from hivex's copy of the ``V`` value.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.windows.accounts import Accounts
from cranewatch.model import Finding, Severity
from test_forensics_windows import STS07
from windows_helpers import (
    REG_BINARY,
    REG_EXPAND_SZ,
    SYSTEM_PYTHON,
    bam_value,
    hivex_value,
    set_values,
    stock_tree,
    unpack_hive,
)

DOMAIN = "S-1-5-21-1760460187-1592185332-161725925"  # SAM's account domain (checked below)
ADMIN, PRESTON = f"{DOMAIN}-500", f"{DOMAIN}-1000"
TONY = "S-1-5-21-2595688666-2948619230-3055395256-1001"  # the real SYSTEM hive's BAM user
UNKNOWN = "S-1-5-21-111-222-333-1105"
WHEN = (1_793_672_047 + 11_644_473_600) * 10_000_000  # 2026-11-03 02:14:07 UTC
PROFILES = "Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
IMPLANTS = {  # program -> the SID whose BAM key lists it
    "\\Device\\HarddiskVolume2\\Program Files (x86)\\TeamViewer\\TeamViewer.exe": ADMIN,
    "\\Device\\HarddiskVolume2\\Users\\Preston\\Downloads\\nc64.exe": PRESTON,
    "\\Device\\HarddiskVolume2\\ProgramData\\Crane\\svc.exe": "S-1-5-18",
    "\\Device\\HarddiskVolume2\\Users\\Public\\plink.exe": UNKNOWN,
}
REAL = "\\Device\\HarddiskVolume2\\Users\\tony\\Desktop\\AsaGui-windows-2.1.14\\asa.exe"  # a run of tony's
LOCAL_NOTE = "a local account created on this computer (by the vendor or integrator who installed it)"

_NAMES = r"""
import hivex, sys
h = hivex.Hivex(sys.argv[1]); n = h.root()
for p in ["SAM", "Domains", "Account", "Users", "Names"]: n = h.node_get_child(n, p)
for c in h.node_children(n):
    print(h.node_name(c), h.value_type(h.node_values(c)[0])[0])
"""


def sam_names(sam: Path) -> dict[int, str]:
    """RID -> account name from SAM's Names subkeys (the default value's type is the RID), by hivex."""
    out = subprocess.run([SYSTEM_PYTHON, "-c", _NAMES, str(sam)], capture_output=True, text=True, check=True).stdout
    return {int(rid): name for name, rid in (line.rsplit(" ", 1) for line in out.splitlines())}


def tree(shared: Path, root: Path, profile: bool = True) -> Path:
    root = stock_tree(shared, root)
    config = root / "Windows/System32/config"
    bam = "ControlSet001\\Services\\bam\\State\\UserSettings"
    set_values(config / "SYSTEM", [(f"{bam}\\{sid}", name, REG_BINARY, bam_value(WHEN)) for name, sid in IMPLANTS.items()])
    if profile:
        set_values(config / "SOFTWARE", [(f"{PROFILES}\\{TONY}", "ProfileImagePath", REG_EXPAND_SZ, "C:\\Users\\tony")])
    return root


def accounts_by_program(findings: tuple[Finding, ...]) -> dict[str, tuple[str, str | None]]:
    return {e.values["value"]: (e.values["account"], e.values.get("account_note"))
            for f in findings if f.rule.startswith("windows.bam-") for e in f.evidence}


def test_the_expected_names_read_independently(shared_data: Path, tmp_path: Path) -> None:
    sam = unpack_hive(shared_data, "SAM", tmp_path / "SAM")
    assert sam_names(sam) == {500: "Administrator", 501: "Guest", 1000: "Preston"}
    from regipy.plugins.sam.local_sid import LocalSidPlugin
    from regipy.registry import RegistryHive
    plugin = LocalSidPlugin(RegistryHive(str(sam)), as_json=True)
    plugin.run()
    assert plugin.entries[0]["machine_sid"] == DOMAIN
    v = hivex_value(sam, "SAM\\Domains\\Account", "V")
    assert v[-24:-12] == bytes.fromhex("010400000000000515000000")  # revision 1, 4 parts, NT authority, 21
    assert "S-1-5-21-" + "-".join(map(str, struct.unpack("<3I", v[-12:]))) == DOMAIN


@pytest.fixture(scope="module")
def named(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Finding, ...]:
    result = scan_image(tree(shared_data, tmp_path_factory.mktemp("acc") / "C"), workers=1, policy=STS07)
    assert result.warnings == ()
    return result.findings


def test_bam_evidence_names_each_user(named: tuple[Finding, ...]) -> None:
    accounts = accounts_by_program(named)
    programs = list(IMPLANTS)
    assert accounts[programs[0]] == (f"Administrator ({ADMIN})", "the built-in Administrator")
    assert accounts[programs[1]] == (f"Preston ({PRESTON})", LOCAL_NOTE)
    assert accounts[programs[2]] == ("NT AUTHORITY\\SYSTEM (S-1-5-18)", None)
    assert accounts[programs[3]] == (UNKNOWN, None)  # no hive knows it: it stays a SID
    # the real hive's own runs (old bam\UserSettings layout), named by the ProfileList entry written
    assert accounts[REAL] == (f"tony ({TONY})", None)
    # severity stays as the program makes it: TeamViewer is high whoever ran it
    (teamviewer,) = [f for f in named if f.rule == "windows.bam-tool" and f.title.startswith("TeamViewer")]
    assert teamviewer.severity == Severity.HIGH
    assert teamviewer.evidence[0].values["sid"] == ADMIN


def test_without_a_profile_the_real_user_stays_a_sid(shared_data: Path, tmp_path: Path) -> None:
    findings = scan_image(tree(shared_data, tmp_path / "C", profile=False), workers=1, policy=STS07).findings
    assert accounts_by_program(findings)[REAL] == (TONY, None)


def test_domain_from_profile_list_when_sam_v_is_unreadable(shared_data: Path, tmp_path: Path) -> None:
    root = tree(shared_data, tmp_path / "C")
    config = root / "Windows/System32/config"
    set_values(config / "SAM", [("SAM\\Domains\\Account", "V", REG_BINARY, "00" * 8)])
    findings = scan_image(root, workers=1, policy=STS07).findings
    programs = list(IMPLANTS)
    assert accounts_by_program(findings)[programs[0]] == (ADMIN, "the built-in Administrator of a domain")
    # Preston's profile (RID 1000, folder Preston, as SAM names RID 1000) gives the machine's domain back
    set_values(config / "SOFTWARE", [(f"{PROFILES}\\{PRESTON}", "ProfileImagePath", REG_EXPAND_SZ,
                                      "%SystemDrive%\\Users\\Preston")])
    accounts = accounts_by_program(scan_image(root, workers=1, policy=STS07).findings)
    assert accounts[programs[0]] == (f"Administrator ({ADMIN})", "the built-in Administrator")
    assert accounts[programs[1]] == (f"Preston ({PRESTON})", LOCAL_NOTE)


def test_well_known_sids() -> None:
    accounts = Accounts()
    assert accounts.label("S-1-5-19") == "NT AUTHORITY\\LOCAL SERVICE (S-1-5-19)"
    assert accounts.label("S-1-5-20") == "NT AUTHORITY\\NETWORK SERVICE (S-1-5-20)"
    assert accounts.label("S-1-5-90-0-1") == "Window Manager\\DWM-1 (S-1-5-90-0-1)"
    assert accounts.label("S-1-5-96-0-12") == "Font Driver Host\\UMFD-12 (S-1-5-96-0-12)"
    assert accounts.label("S-1-5-21-1-2-3-500") == "S-1-5-21-1-2-3-500"
    assert accounts.note("S-1-5-21-1-2-3-500") == "the built-in Administrator of a domain"
    assert accounts.note("S-1-5-18") is None
