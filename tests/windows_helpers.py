"""Build Windows triage trees for the tests from real hives, changed with Debian's hivex.

The hives are regipy's test data (MIT) in ``../shared/data/windows/hives``, xz-compressed.
Implants are written into copies with ``python3-hivex`` (a system module of Debian's Python,
run as ``/usr/bin/python3`` in a subprocess): real hive files with real cells, never a mock.
"""

from __future__ import annotations

import json
import lzma
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prefetch_build import PfSpec, build, mam

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


def hivex_value(hive: Path, key: str, value: str) -> bytes:
    """A value's raw data read by hivex (not regipy)."""
    script = ("import hivex, sys\nh = hivex.Hivex(sys.argv[1])\nn = h.root()\n"
              "for p in sys.argv[2].split('\\\\'): n = h.node_get_child(n, p)\n"
              "sys.stdout.buffer.write(h.value_value(h.node_get_value(n, sys.argv[3]))[1])\n")
    return subprocess.run([SYSTEM_PYTHON, "-c", script, str(hive), key, value], capture_output=True,
                          check=True).stdout


def entry_10ts(path: str, stamp: int) -> bytes:
    """One Windows 10 ShimCache entry as documented: "10ts", CRC32 (not checked by Windows' readers,
    left 0), entry length, path length, UTF-16 path, FILETIME, data length, data (none)."""
    name = path.encode("utf-16-le")
    body = struct.pack("<H", len(name)) + name + struct.pack("<QI", stamp, 0)
    return b"10ts" + struct.pack("<II", 0, len(body)) + body


def shimcache_with(hive: Path, control_set: str, entries: list[tuple[str, int]]) -> bytes:
    """The hive's real AppCompatCache (read by hivex) with ``entries`` (path, FILETIME) put in front
    (the newest place), written back; returns the real blob."""
    key = f"{control_set}\\Control\\Session Manager\\AppCompatCache"
    blob = hivex_value(hive, key, "AppCompatCache")
    header = struct.unpack_from("<I", blob)[0]
    new = blob[:header] + b"".join(entry_10ts(p, t) for p, t in entries) + blob[header:]
    set_values(hive, [(key, "AppCompatCache", REG_BINARY, new.hex())])
    return blob


def bam_value(stamp: int) -> str:
    """A BAM value's data as hex: the FILETIME of the last run, then 16 bytes Windows leaves zero."""
    return (struct.pack("<Q", stamp) + bytes(16)).hex()


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
    for exe, path in STOCK_PREFETCH.items():  # as Windows 10 writes them: compressed (MAM)
        spec = PfSpec(30, exe, 120, [STOCK_RUN], [*(f"{PF_C}\\WINDOWS\\SYSTEM32\\{d}" for d in ("NTDLL.DLL", "KERNEL32.DLL")), path])
        write(root, f"Windows/Prefetch/{exe}-0BADF00D.pf", mam(root.parent, build(spec)))
    return root


PF_C = "\\VOLUME{01d8a1b2c3d4e5f6-5a6b7c8d}"  # the system volume as Prefetch names it
STOCK_RUN = (1_793_653_200 + 11_644_473_600) * 10_000_000  # 2026-11-02 21:00:00 UTC as a FILETIME
# Programs every Windows 10 runs (the traps): Defender's engine lives under ProgramData, OneDrive in AppData.
STOCK_PREFETCH = {
    "SVCHOST.EXE": f"{PF_C}\\WINDOWS\\SYSTEM32\\SVCHOST.EXE", "EXPLORER.EXE": f"{PF_C}\\WINDOWS\\EXPLORER.EXE",
    "MSMPENG.EXE": f"{PF_C}\\PROGRAMDATA\\MICROSOFT\\WINDOWS DEFENDER\\PLATFORM\\4.18.2104.14-0\\MSMPENG.EXE",
    "ONEDRIVE.EXE": f"{PF_C}\\USERS\\CMS\\APPDATA\\LOCAL\\MICROSOFT\\ONEDRIVE\\ONEDRIVE.EXE",
}


# --- PE programs: built by mingw-w64, signed by osslsigncode with a test CA made by openssl ----------

_PROGRAM_C = '#include <windows.h>\nint main(void) { MessageBoxA(0, "%s", "cms", 0); return 0; }\n'
_VERSION_RC = """1 VERSIONINFO
FILEVERSION 1,0,0,0
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904b0"
    BEGIN
      VALUE "CompanyName", "%s"
      VALUE "OriginalFilename", "%s"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
"""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/install-deps.sh")
    return found


def build_pe(out: Path, text: str, company: str = "", original: str = "") -> Path:
    """A real Windows x86-64 program (mingw-w64), with a version resource when ``company`` is given."""
    work = out.parent / f".{out.name}.build"
    work.mkdir(parents=True, exist_ok=True)
    (work / "main.c").write_text(_PROGRAM_C % text)
    objects = [str(work / "main.c")]
    if company:
        (work / "version.rc").write_text(_VERSION_RC % (company, original or out.name))
        subprocess.run([_tool("x86_64-w64-mingw32-windres"), str(work / "version.rc"), "-O", "coff", "-o",
                        str(work / "version.o")], check=True, capture_output=True)
        objects.append(str(work / "version.o"))
    subprocess.run([_tool("x86_64-w64-mingw32-gcc"), "-O1", "-s", *objects, "-o", str(out)], check=True, capture_output=True)
    shutil.rmtree(work)
    return out


def make_test_ca(work: Path, signer: str = "Crane Vendor GmbH") -> tuple[Path, Path, Path]:
    """(CA certificate, code-signing certificate, its key): a root and a leaf made by openssl."""
    openssl = _tool("openssl")
    work.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, leaf, ext = (work / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem", "leaf.ext"))
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
                    "-days", "30", "-subj", "/CN=Crane Test Root CA/O=cranewatch tests",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    subprocess.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={signer}/O={signer}"], check=True, capture_output=True)
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n")
    subprocess.run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                    "-out", str(leaf), "-days", "30", "-extfile", str(ext)], check=True, capture_output=True)
    return ca, leaf, key


def sign_pe(program: Path, out: Path, ca: tuple[Path, Path, Path]) -> Path:
    """``program`` signed (Authenticode, SHA-256) with the test CA's code-signing certificate."""
    root, leaf, key = ca
    subprocess.run([_tool("osslsigncode"), "sign", "-certs", str(leaf), "-key", str(key), "-ac", str(root),
                    "-h", "sha256", "-n", out.stem, "-in", str(program), "-out", str(out)], check=True, capture_output=True)
    return out


def tamper(program: Path, text: str) -> Path:
    """Change one byte of ``text`` in ``program`` (after signing: the digest no longer matches)."""
    data = bytearray(program.read_bytes())
    at = data.index(text.encode())
    data[at] ^= 0x20
    program.write_bytes(bytes(data))
    return program
