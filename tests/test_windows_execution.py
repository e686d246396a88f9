"""What ran, from the registry: ShimCache (AppCompatCache) and BAM, on a real Windows 10 SYSTEM hive.

The hive is regipy's ``SYSTEM_WIN_10_1709`` (MIT; an analyst's Windows 10 VM): its real ShimCache
holds 868 entries (Defender's MpSigStub from Temp, Sysinternals from Downloads, OneDrive ...) and
its BAM 55 values under the older ``bam\\UserSettings`` layout; they are the trap. Implants are
written into a copy with hivex (Debian's python3-hivex, a separate implementation of the hive
format): BAM values under the newer ``bam\\State\\UserSettings`` layout, and ShimCache entries put
in front of the real ones in a blob laid out here field by field from the documented Windows 10
format. The real blob is read back with hivex and parsed by this test's own few lines of
``struct`` (not regipy, which the product uses), so the product's entry list is checked against
an independent reading. Expected times are worked out by hand from the FILETIMEs written.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.windows import shimcache
from cranewatch.forensics.windows.execution import drive_path, filetime, system_volume
from cranewatch.model import Finding, Severity
from test_forensics_windows import STS07
from windows_helpers import (
    REG_BINARY,
    REG_DWORD,
    bam_value,
    entry_10ts,
    hivex_value,
    set_values,
    stock_tree,
    unpack_hive,
    write,
)

CACHE = "ControlSet001\\Control\\Session Manager\\AppCompatCache"
SID = "S-1-5-21-2595688666-2948619230-3055395256-1001"
BAM = f"ControlSet001\\Services\\bam\\State\\UserSettings\\{SID}"
# 2026-11-03 02:14:07 UTC as a FILETIME: (1793672047 s since 1970 + 11644473600 s) * 10^7
WHEN = (1_793_672_047 + 11_644_473_600) * 10_000_000
WHEN_ISO = "2026-11-03T02:14:07Z"


def parse_10ts(blob: bytes, ends: list[int] | None = None) -> list[tuple[str, int]]:
    """(path, FILETIME) of each Windows 10 entry: header size at 0, then "10ts", CRC32, entry
    length, path length, UTF-16 path, FILETIME, data length, data (``ends``: where each ends)."""
    out, at = [], struct.unpack_from("<I", blob)[0]
    while at < len(blob):
        magic, _crc, length = struct.unpack_from("<4sII", blob, at)
        assert magic == b"10ts"
        (size,) = struct.unpack_from("<H", blob, at + 12)
        path = blob[at + 14: at + 14 + size].decode("utf-16-le")
        (stamp,) = struct.unpack_from("<Q", blob, at + 14 + size)
        out.append((path, stamp))
        at += 12 + length
        if ends is not None:
            ends.append(at)
    return out


SHIM_IMPLANTS = [
    "C:\\Users\\cms\\Downloads\\AnyDesk.exe",  # a remote-control tool
    "E:\\tools\\mimikatz.exe",  # an attacker's tool, from a USB stick
    "\\\\?\\C:\\ProgramData\\CraneSync\\cranesync.exe",  # long-path prefix: a user-writable folder, no drive change
]
BAM_IMPLANTS = {
    "\\Device\\HarddiskVolume2\\Users\\Public\\nc64.exe": WHEN,  # netcat on C:
    "\\Device\\HarddiskVolume7\\svc\\chisel.exe": WHEN - 36_000_000_000,  # a tunnel on another volume, an hour before
    "\\Device\\HarddiskVolume2\\Program Files (x86)\\TeamViewer\\TeamViewer.exe": WHEN - 10_000_000,
}


def implanted_system(root: Path, blob: bytes) -> None:
    system = root / "Windows/System32/config/SYSTEM"
    header = struct.unpack_from("<I", blob)[0]
    new = blob[:header] + b"".join(entry_10ts(p, WHEN) for p in SHIM_IMPLANTS) + blob[header:]
    set_values(system, [(CACHE, "AppCompatCache", REG_BINARY, new.hex())]
               + [(BAM, name, REG_BINARY, bam_value(stamp)) for name, stamp in BAM_IMPLANTS.items()]
               + [(BAM, "Version", REG_DWORD, 1), (BAM, "SequenceNumber", REG_DWORD, 9)])


@pytest.fixture(scope="module")
def real_blob(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    hive = unpack_hive(shared_data, "SYSTEM_WIN_10_1709", tmp_path_factory.mktemp("hive") / "SYSTEM")
    return hivex_value(hive, CACHE, "AppCompatCache")


@pytest.fixture(scope="module")
def implanted(shared_data: Path, real_blob: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[Finding, ...]:
    root = stock_tree(shared_data, tmp_path_factory.mktemp("exec") / "C")
    implanted_system(root, real_blob)
    result = scan_image(root, workers=1, policy=STS07)
    assert result.warnings == ()
    return result.findings


def _rules(findings: tuple[Finding, ...], prefix: str) -> dict[str, Finding]:
    return {f.rule: f for f in findings if f.rule.startswith(prefix) and "tool" not in f.rule}


def _tools(findings: tuple[Finding, ...], rule: str) -> dict[str, Finding]:
    return {f.title.split(" ran ")[0]: f for f in findings if f.rule == rule}


def test_shimcache_entries_match_an_independent_reading_of_the_real_blob(real_blob: bytes) -> None:
    expected = [(path, filetime(stamp)) for path, stamp in parse_10ts(real_blob) if stamp]  # regipy skips time 0
    found, stopped = shimcache.entries(real_blob)
    assert stopped is None
    assert len(found) == len(expected) == 868
    assert [path for path, _ in found] == [path for path, _ in expected]
    # regipy rounds a FILETIME to the nearest microsecond, filetime() truncates: at most 1 µs apart
    assert all(abs(_iso(a) - _iso(b)) <= timedelta(microseconds=1) for (_, a), (_, b) in zip(found, expected, strict=True))
    assert found[1] == ("C:\\WINDOWS\\TEMP\\1654ED47-0058-4E4C-A1B1-FB0667919D7A\\MpSigStub.exe",
                        "2020-03-12T07:37:29.812000Z")


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_filetime_by_hand() -> None:
    assert filetime(WHEN) == WHEN_ISO
    assert datetime.fromisoformat(WHEN_ISO.replace("Z", "+00:00")) == datetime(2026, 11, 3, 2, 14, 7, tzinfo=UTC)
    assert filetime(0) == ""
    assert filetime(WHEN + 9) == WHEN_ISO  # 900 ns: truncated to the microsecond
    assert filetime(116_444_736_000_000_000) == "1970-01-01T00:00:00Z"


def test_tools_that_ran_are_found_in_shimcache(implanted: tuple[Finding, ...]) -> None:
    tools = _tools(implanted, "windows.shimcache-tool")
    assert set(tools) == {"AnyDesk"}
    assert tools["AnyDesk"].severity == Severity.HIGH and tools["AnyDesk"].category == "remote-access-tool"
    evidence = tools["AnyDesk"].evidence[0]
    assert evidence.path == "Windows/System32/config/SYSTEM"
    assert evidence.values["key"] == f"HKLM\\SYSTEM\\{CACHE}"
    assert evidence.values["value"] == "AppCompatCache" and evidence.values["entry"] == 0
    assert evidence.values["file_modified"] == WHEN_ISO
    attacks = _tools(implanted, "windows.shimcache-attack-tool")
    # Mimikatz planted; ProcDump is the real hive's own (an analyst's Sysinternals), medium
    assert {t: f.severity for t, f in attacks.items()} == {"Mimikatz": Severity.HIGH, "ProcDump": Severity.MEDIUM}
    assert attacks["Mimikatz"].category == "credential"


def test_shimcache_programs_from_removable_media_and_user_folders(implanted: tuple[Finding, ...]) -> None:
    rules = _rules(implanted, "windows.shimcache-")
    removable = rules["windows.shimcache-removable"]
    assert removable.severity == Severity.MEDIUM
    # E:\tools\mimikatz.exe; the real \\?\C:\...\WMIADAP.EXE is C: written with the long-path prefix
    assert [e.values["program"] for e in removable.evidence] == ["E:\\tools\\mimikatz.exe"]
    user = rules["windows.shimcache-user-folder"]
    assert user.severity == Severity.LOW
    assert user.count == 593 + 2  # the real hive's 593 (counted by hand over its entries) + AnyDesk, cranesync
    # no program is judged gone: a triage collection holds no Windows programs to compare with
    assert "windows.shimcache-gone" not in rules


def test_bam_last_runs(implanted: tuple[Finding, ...]) -> None:
    tools = _tools(implanted, "windows.bam-tool")
    assert set(tools) == {"TeamViewer"}
    attacks = _tools(implanted, "windows.bam-attack-tool")
    assert {t: (f.severity, f.category) for t, f in attacks.items()} == {
        "netcat": (Severity.HIGH, "backdoor"), "tunnel (chisel, ligolo, socat)": (Severity.HIGH, "backdoor")}
    netcat = attacks["netcat"]
    evidence = netcat.evidence[0]
    assert evidence.values["key"] == f"HKLM\\SYSTEM\\{BAM}"
    assert evidence.values["value"] == "\\Device\\HarddiskVolume2\\Users\\Public\\nc64.exe"
    assert evidence.values["program"] == "C:\\Users\\Public\\nc64.exe"  # volume 2 holds \Windows: it is C:
    assert evidence.values["last_run"] == WHEN_ISO and evidence.values["sid"] == SID
    assert netcat.first_seen == netcat.last_seen == 1_793_672_047.0
    rules = _rules(implanted, "windows.bam-")
    assert [e.values["program"] for e in rules["windows.bam-removable"].evidence] == [
        "\\Device\\HarddiskVolume7\\svc\\chisel.exe"]
    assert rules["windows.bam-removable"].evidence[0].values["last_run"] == "2026-11-03T01:14:07Z"
    # the real hive's three (RegistryExplorer, asa, the dotnet installer from Temp) and nc64.exe
    assert rules["windows.bam-user-folder"].count == 4


def test_programs_no_longer_on_disk_in_a_full_copy(shared_data: Path, real_blob: bytes, tmp_path: Path) -> None:
    root = stock_tree(shared_data, tmp_path / "C")
    implanted_system(root, real_blob)
    write(root, "Windows/explorer.exe", b"MZ")  # Windows' own programs are there: a full copy of the drive
    write(root, "Users/Public/nc64.exe", b"MZ")  # still present
    findings = scan_image(root, workers=1, policy=STS07).findings
    gone = {f.rule: f for f in findings if f.rule.endswith("-gone")}
    assert gone["windows.bam-gone"].severity == Severity.MEDIUM
    assert sorted(e.values["program"] for e in gone["windows.bam-gone"].evidence) == [
        "C:\\Users\\tony\\AppData\\Local\\Temp\\{F8586BAE-DAC2-4509-8F54-911F5AF1B416}\\.be\\"
        "dotnet-runtime-3.0.0-preview4-27615-11-win-x64.exe",
        "C:\\Users\\tony\\Desktop\\AsaGui-windows-2.1.14\\asa.exe",
        "C:\\Users\\tony\\Desktop\\misc_stuff\\RegistryExplorer\\RegistryExplorer.exe",
    ]
    assert [e.values["program"] for e in next(f for f in findings if f.rule == "windows.bam-user-folder").evidence] == [
        "C:\\Users\\Public\\nc64.exe"]
    assert gone["windows.shimcache-gone"].count >= 593  # every user-folder program of the real cache but nc64
    assert all(f.severity < Severity.HIGH for f in gone.values())


def test_a_damaged_cache_is_a_located_problem_and_its_first_entries_are_judged(
    shared_data: Path, real_blob: bytes, tmp_path: Path
) -> None:
    root = tmp_path / "C"
    system = unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "Windows/System32/config/SYSTEM")
    ends: list[int] = []
    parse_10ts(real_blob, ends)
    header = struct.unpack_from("<I", real_blob)[0]
    cut = ends[1] + 20  # the first two real entries whole, the third cut inside its header
    broken = real_blob[:header] + entry_10ts("C:\\Users\\cms\\ngrok.exe", WHEN) + real_blob[header:cut]
    set_values(system, [(CACHE, "AppCompatCache", REG_BINARY, broken.hex())])
    result = scan_image(root, workers=1, policy=STS07)
    assert [f.title.split(" ran ")[0] for f in result.findings if f.rule == "windows.shimcache-tool"] == ["ngrok tunnel"]
    (warning,) = [w for w in result.warnings if "AppCompatCache" in w]
    assert "Windows/System32/config/SYSTEM" in warning and f"HKLM\\SYSTEM\\{CACHE}\\AppCompatCache" in warning
    # the implant and the real cache's first two entries precede the cut
    assert "read only to entry 3" in warning


def test_bam_of_another_control_set_is_read_only_when_current(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "C"
    system = unpack_hive(shared_data, "SYSTEM_WIN_10_1709", root / "Windows/System32/config/SYSTEM")
    other = BAM.replace("ControlSet001", "ControlSet002")
    set_values(system, [(other, "\\Device\\HarddiskVolume2\\Users\\x\\anydesk.exe", REG_BINARY, bam_value(WHEN))])
    assert not [f for f in scan_image(root, workers=1, policy=STS07).findings if f.rule == "windows.bam-tool"]
    set_values(system, [("Select", "Current", REG_DWORD, 2)])
    (tool,) = [f for f in scan_image(root, workers=1, policy=STS07).findings if f.rule == "windows.bam-tool"]
    assert tool.evidence[0].values["key"] == f"HKLM\\SYSTEM\\{other}"


def test_device_paths_become_drive_paths() -> None:
    paths = ["\\Device\\HarddiskVolume4\\Windows\\System32\\cmd.exe", "\\Device\\HarddiskVolume4\\Windows\\x.exe",
             "\\Device\\HarddiskVolume1\\Windows\\old.exe", "\\VOLUME{01d2a3b4c5d6e7f8-1a2b3c4d}\\TOOLS\\A.EXE"]
    device = system_volume(paths)
    assert device == "\\device\\harddiskvolume4"
    assert drive_path(paths[0], device) == "C:\\Windows\\System32\\cmd.exe"
    assert drive_path(paths[2], device) == paths[2]
    assert drive_path("Microsoft.WindowsStore_8wekyb3d8bbwe", device) == "Microsoft.WindowsStore_8wekyb3d8bbwe"


@pytest.mark.parametrize(("blob", "why"), [
    (b"\x34\x00\x00\x00" + bytes(0x30) + b"XXXX" + bytes(40), "unrecognized magic"),
    (b"\x34\x00\x00\x00" + bytes(0x30) + b"10ts\x00\x00\x00\x00\xff\xff\x00\x00\x08\x00", "unpack requires"),
    (b"short", None),
])
def test_shimcache_parse_never_raises(blob: bytes, why: str | None) -> None:
    found, stopped = shimcache.entries(blob)
    assert found == []
    assert (stopped is None) if why is None else (why in str(stopped))


def test_windows_7_shimcache_and_its_psexec_service(shared_data: Path, tmp_path: Path) -> None:
    """regipy's ``SYSTEM`` hive is 32-bit Windows 7 (magic 0xBADC0FEE: a 0x80-byte header, the entry
    count at 4, then 0x20-byte entries whose path is a UNICODE_STRING: length, maximum length,
    offset into the blob); read here by hand from hivex's copy of the value."""
    root = tmp_path / "C"
    system = unpack_hive(shared_data, "SYSTEM", root / "Windows/System32/config/SYSTEM")
    blob = hivex_value(system, CACHE, "AppCompatCache")
    assert struct.unpack_from("<I", blob)[0] == 0xBADC0FEE
    (count,) = struct.unpack_from("<I", blob, 4)
    paths = []
    for index in range(count):
        length, _maximum, offset = struct.unpack_from("<HHI", blob, 0x80 + 0x20 * index)
        paths.append(blob[offset: offset + length].decode("utf-16-le"))
    found, stopped = shimcache.entries(blob)
    assert stopped is None and [p for p, _ in found] == paths and len(paths) == 330
    result = scan_image(root, workers=1, policy=STS07)
    assert result.warnings == ()
    (psexec,) = [f for f in result.findings if f.rule == "windows.shimcache-attack-tool"]
    assert psexec.title.startswith("PsExec ran") and psexec.severity == Severity.MEDIUM
    assert psexec.count == sum(1 for p in paths if p.lower().endswith(("\\psexesvc.exe", "\\psexec.exe")))
