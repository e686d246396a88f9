"""Build Windows triage trees for the tests from real hives, changed with Debian's hivex.

The hives are regipy's test data (MIT) in ``../shared/data/windows/hives``, xz-compressed.
Implants are written into copies with ``python3-hivex`` (a system module of Debian's Python,
run as ``/usr/bin/python3`` in a subprocess): real hive files with real cells, never a mock.
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7

# Runs under Debian's own Python, where the hivex module lives.
_HIVEX_SCRIPT = r"""
import json, struct, sys
import hivex
job = json.load(sys.stdin)
h = hivex.Hivex(job["hive"], write=True)
def walk(path):
    node = h.root()
    for part in [p for p in path.split("\\") if p]:
        child = h.node_get_child(node, part)
        node = child if child else h.node_add_child(node, part)
    return node
for key, name, kind, data in job["set"]:
    node = walk(key)
    if kind == 4:
        raw = struct.pack("<I", data)
    elif kind == 3:
        raw = bytes.fromhex(data)
    elif kind == 7:
        raw = b"".join(s.encode("utf-16-le") + b"\0\0" for s in data) + b"\0\0"
    else:
        raw = (data + "\0").encode("utf-16-le")
    h.node_set_value(node, {"key": name, "t": kind, "value": raw})
h.commit(job["hive"])
"""


def hivex_available() -> None:
    run = subprocess.run([SYSTEM_PYTHON, "-c", "import hivex"], capture_output=True, check=False)
    if run.returncode != 0:
        pytest.fail("python3-hivex is not installed for /usr/bin/python3: run scripts/install-deps.sh")


def unpack_hive(shared: Path, name: str, dest: Path) -> Path:
    """``hives/NAME.xz`` decompressed to ``dest`` (parents created)."""
    source = shared / "windows" / "hives" / f"{name}.xz"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(source) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    return dest


def set_values(hive: Path, values: list[tuple[str, str, int, Any]]) -> None:
    """Write (key path, value name, type, data) into ``hive`` with hivex, creating keys."""
    job = json.dumps({"hive": str(hive), "set": values})
    subprocess.run([SYSTEM_PYTHON, "-c", _HIVEX_SCRIPT], input=job, text=True, check=True, capture_output=True)


def write(root: Path, path: str, data: str | bytes) -> Path:
    dest = root / path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        dest.write_text(data)
    else:
        dest.write_bytes(data)
    return dest


def task_xml(command: str, arguments: str = "", author: str = "Microsoft Corporation") -> bytes:
    """A scheduled task as Windows writes it: UTF-16 with a BOM, the task namespace."""
    args = f"<Arguments>{arguments}</Arguments>" if arguments else ""
    text = (
        '<?xml version="1.0" encoding="UTF-16"?>\r\n'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\r\n'
        f"  <RegistrationInfo><Author>{author}</Author></RegistrationInfo>\r\n"
        "  <Triggers><BootTrigger><Enabled>true</Enabled></BootTrigger></Triggers>\r\n"
        '  <Principals><Principal id="Author"><UserId>S-1-5-18</UserId></Principal></Principals>\r\n'
        f'  <Actions Context="Author"><Exec><Command>{command}</Command>{args}</Exec></Actions>\r\n'
        "</Task>\r\n"
    )
    return b"\xff\xfe" + text.encode("utf-16-le")


STOCK_HOSTS = (
    "# Copyright (c) 1993-2009 Microsoft Corp.\r\n#\r\n# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.\r\n"
    "#\r\n#      102.54.94.97     rhino.acme.com          # source server\r\n"
    "#       38.25.63.10     x.acme.com              # x client host\r\n\r\n"
    "# localhost name resolution is handled within DNS itself.\r\n#\t127.0.0.1       localhost\r\n#\t::1             localhost\r\n"
)


def stock_tree(shared: Path, root: Path) -> Path:
    """A Windows 10 collection with only stock content (the traps): real hives, stock tasks."""
    hivex_available()
    config = root / "Windows/System32/config"
    unpack_hive(shared, "SYSTEM_WIN_10_1709", config / "SYSTEM")
    # HKCU\Software of a real Windows 10 user: its root has Microsoft, Wow6432Node, Policies
    # like HKLM\SOFTWARE's, and a stock OneDrive Run entry.
    unpack_hive(shared, "ntuser_software_partial", config / "SOFTWARE")
    unpack_hive(shared, "SAM", config / "SAM")
    unpack_hive(shared, "SECURITY", config / "SECURITY")
    unpack_hive(shared, "NTUSER.DAT", root / "Users/cms/NTUSER.DAT")
    unpack_hive(shared, "UsrClass.dat", root / "Users/cms/AppData/Local/Microsoft/Windows/UsrClass.dat")
    unpack_hive(shared, "amcache.hve", root / "Windows/AppCompat/Programs/Amcache.hve")
    set_values(config / "SOFTWARE", [
        ("Microsoft\\Windows\\CurrentVersion\\Run", "SecurityHealth", REG_EXPAND_SZ,
         "%windir%\\system32\\SecurityHealthSystray.exe"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "Userinit", REG_SZ, "C:\\Windows\\system32\\userinit.exe,"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "Shell", REG_SZ, "explorer.exe"),
        ("Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\chrome.exe", "MitigationOptions", REG_DWORD, 1),
    ])
    set_values(root / "Users/cms/NTUSER.DAT", [
        ("Software\\Microsoft\\Windows\\CurrentVersion\\Run", "OneDrive", REG_SZ,
         '"C:\\Users\\cms\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe" /background'),
    ])
    tasks = "Windows/System32/Tasks/Microsoft/Windows"
    write(root, f"{tasks}/Defrag/ScheduledDefrag", task_xml("%windir%\\system32\\defrag.exe", "-c -h -o -$"))
    write(root, f"{tasks}/Windows Defender/Windows Defender Scheduled Scan", task_xml(
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.1904.1-0\\MpCmdRun.exe", "Scan -ScheduleJob"))
    write(root, f"{tasks}/Diagnosis/Scheduled", task_xml("%windir%\\system32\\sdiagschd.exe"))
    write(root, "ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp/desktop.ini",
          "\r\n[.ShellClassInfo]\r\nLocalizedResourceName=@%SystemRoot%\\system32\\shell32.dll,-21787\r\n")
    write(root, "Windows/System32/drivers/etc/hosts", STOCK_HOSTS)
    write(root, "Windows/System32/notepad.exe", b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode.")
    return root
