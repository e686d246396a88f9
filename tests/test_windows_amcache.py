"""Amcache beyond remote-control tools: attackers' tools by name, and programs replaced since
Windows inventoried them (the SHA-1 Amcache keeps of a file's first 30 MiB).

A real Amcache.hve (regipy's test data, from an analyst's Windows 10 VM) with entries added
by hivex; each expected SHA-1 is computed by ``sha1sum`` (over ``head -c 31457280`` for the big
file), not by the code under test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.windows.amcache import HASHED_BYTES, attack_tool
from cranewatch.model import Finding, Severity
from test_forensics_windows import STS07
from windows_helpers import REG_SZ, set_values, stock_tree, write

FILES = "Root\\InventoryApplicationFile"


def sha1sum(path: Path, head: int | None = None) -> str:
    command = f'head -c {head} "$1" | sha1sum' if head else 'sha1sum < "$1"'
    return subprocess.run(["sh", "-c", command, "sh", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def entry(key: str, path: str, sha1: str) -> list[tuple[str, str, int, str]]:
    return [(f"{FILES}\\{key}", "LowerCaseLongPath", REG_SZ, path), (f"{FILES}\\{key}", "FileId", REG_SZ, "0000" + sha1)]


@pytest.fixture(scope="module")
def scanned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Finding, ...], Path]:
    work = tmp_path_factory.mktemp("amcache")
    root = stock_tree(shared_data, work / "C")
    original = work / "cmsagent-original.exe"
    original.write_bytes(b"MZ" + b"genuine crane agent " * 200)
    write(root, "Windows/System32/cmsagent.exe", b"MZ" + b"trojaned crane agent" * 200)  # swapped since
    write(root, "Program Files/Crane Vendor/hmi.exe", b"MZ" + b"crane hmi 4.2" * 300)  # as inventoried
    write(root, "Program Files/Crane Vendor/viewer.exe", b"MZ" + b"crane viewer 2" * 300)  # updated since
    big = root / "Program Files/Crane Vendor/maps.dll"
    big.write_bytes(b"MZ" + bytes(HASHED_BYTES) + b"tail beyond what Amcache hashes")
    values = (
        entry("mimikatz.exe|1", "c:\\users\\cms\\appdata\\local\\temp\\x\\mimikatz.exe", "11" * 20)
        + entry("nc64.exe|2", "c:\\programdata\\nc64.exe", "22" * 20)
        + entry("psexec.exe|3", "c:\\users\\cms\\downloads\\psexec.exe", "33" * 20)
        + entry("psexec64.exe|4", "c:\\tools\\psexec64.exe", "44" * 20)  # the same tool: one finding
        + entry("cmsagent.exe|5", "c:\\windows\\system32\\cmsagent.exe", sha1sum(original))
        + entry("hmi.exe|6", "c:\\program files\\crane vendor\\hmi.exe", sha1sum(root / "Program Files/Crane Vendor/hmi.exe"))
        + entry("viewer.exe|7", "c:\\program files\\crane vendor\\viewer.exe", "77" * 20)
        + entry("maps.dll|8", "c:\\program files\\crane vendor\\maps.dll", sha1sum(big, head=31457280))
    )
    set_values(root / "Windows/AppCompat/Programs/Amcache.hve", values)
    return scan_image(root, workers=1, policy=STS07).findings, root


@pytest.fixture(scope="module")
def findings(scanned: tuple[tuple[Finding, ...], Path]) -> tuple[Finding, ...]:
    return scanned[0]


def _rule(findings: tuple[Finding, ...], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def test_attackers_tools_in_amcache(findings: tuple[Finding, ...]) -> None:
    found = {(f.evidence[0].values["tool"], f.severity, f.category) for f in _rule(findings, "windows.amcache-attack-tool")}
    assert found == {("Mimikatz", Severity.HIGH, "credential"), ("netcat", Severity.HIGH, "backdoor"),
                     ("PsExec", Severity.MEDIUM, "remote-access-tool")}
    (mimikatz,) = [f for f in _rule(findings, "windows.amcache-attack-tool") if "Mimikatz" in f.title]
    assert mimikatz.evidence[0].values["key"] == "Amcache\\Root\\InventoryApplicationFile\\mimikatz.exe|1"
    assert mimikatz.evidence[0].values["sha1"] == "11" * 20


def test_programs_replaced_since_windows_inventoried_them(scanned: tuple[tuple[Finding, ...], Path]) -> None:
    findings, root = scanned
    changed = {f.evidence[0].values["path"]: f for f in _rule(findings, "windows.amcache-changed")}
    assert set(changed) == {"Windows/System32/cmsagent.exe", "Program Files/Crane Vendor/viewer.exe"}
    agent = changed["Windows/System32/cmsagent.exe"]
    assert agent.severity == Severity.HIGH and "Windows folder replaced" in agent.title
    assert agent.evidence[0].values["sha1_now"] == sha1sum(root / "Windows/System32/cmsagent.exe")
    assert changed["Program Files/Crane Vendor/viewer.exe"].severity == Severity.MEDIUM
    # hmi.exe is as inventoried; maps.dll differs only past the 30 MiB Amcache hashes: neither is reported


@pytest.mark.parametrize(("path", "tool"), [
    ("c:\\tools\\mimikatz_trunk\\x64\\mimikatz.exe", "Mimikatz"), ("c:\\temp\\nc.exe", "netcat"),
    ("c:\\windows\\system32\\ncpa.cpl", None), ("c:\\program files\\sync\\ncsync.exe", None),
    ("c:\\users\\a\\chisel.exe", "tunnel (chisel, ligolo, socat)"), ("c:\\x\\secretsdump.exe", "Impacket"),
    ("c:\\program files\\wireshark\\tshark.exe", None)])
def test_tool_names(path: str, tool: str | None) -> None:
    found = attack_tool(path)
    assert (found[0] if found else None) == tool
