"""What a Windows command line starts and from where: the program's place and download cradles.

Shared by the checks that read start-up commands (services, Run keys, scheduled tasks, start-up
folders): ``program_of`` finds the program a command starts, with the usual environment
variables expanded; ``place_of`` says whether it lies in Windows' own folders, under Program
Files, in a folder any user can write (ProgramData, Users, Temp) or somewhere else;
``cradle_in`` names a download-and-run or encoded PowerShell command.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

Place = Literal["system", "program-files", "user-writable", "other"]

_EXPAND = (
    ("%systemroot%", "c:\\windows"), ("%windir%", "c:\\windows"), ("\\systemroot\\", "c:\\windows\\"),
    ("%programfiles(x86)%", "c:\\program files (x86)"), ("%programfiles%", "c:\\program files"),
    ("%programw6432%", "c:\\program files"), ("%commonprogramfiles%", "c:\\program files\\common files"),
    ("%programdata%", "c:\\programdata"), ("%allusersprofile%", "c:\\programdata"),
    ("%systemdrive%", "c:"), ("%userprofile%", "c:\\users\\%user%"), ("%appdata%", "c:\\users\\%user%\\appdata\\roaming"),
    ("%localappdata%", "c:\\users\\%user%\\appdata\\local"), ("%temp%", "c:\\windows\\temp"), ("%tmp%", "c:\\windows\\temp"),
    ("%public%", "c:\\users\\public"),
)
# Microsoft Defender keeps its updated engine under ProgramData: a stock service, not an implant.
_STOCK_PROGRAMDATA = ("c:\\programdata\\microsoft\\windows defender\\",)
_USER_WRITABLE = re.compile(
    r"^c:\\(programdata|users|perflogs|recycler|\$recycle\.bin|windows\\temp|temp|tmp)\\|\\appdata\\|\\temp\\", re.I
)


def expand(command: str) -> str:
    """Lower-case command with the common environment variables and NT prefixes expanded."""
    text = command.strip().lower()
    if text.startswith("\\??\\"):
        text = text[4:]
    for var, value in _EXPAND:
        text = text.replace(var, value)
    if text.startswith(("system32\\", "syswow64\\")):
        text = "c:\\windows\\" + text
    return text


def program_of(command: str) -> str:
    """The program a command line starts, expanded and lower-case ('' for an empty command)."""
    text = expand(command)
    if text.startswith('"'):
        return text[1:].split('"', 1)[0]
    match = re.match(r"^(.+?\.(exe|com|bat|cmd|ps1|vbs|js|dll|sys|scr))(\s|,|$)", text)
    return match.group(1) if match else text.split(" ", 1)[0]


_PATH = re.compile(r"[a-z]:\\[^\"'\s,;|&<>]+")


def paths_in(arguments: str) -> list[str]:
    """Absolute paths in a command's arguments, expanded and lower-case."""
    return _PATH.findall(expand(arguments))


def place_of(program: str) -> Place:
    """Where ``program`` (as from ``program_of``) lies."""
    if program.startswith(_STOCK_PROGRAMDATA):
        return "system"
    if _USER_WRITABLE.search(program):
        return "user-writable"
    if program.startswith("c:\\windows\\") or "\\" not in program:
        return "system"  # a bare name is searched in the system folders first
    if program.startswith(("c:\\program files\\", "c:\\program files (x86)\\")):
        return "program-files"
    return "other"


_CRADLES = (
    ("PowerShell download cradle", re.compile(
        r"(downloadstring|downloadfile|downloaddata|net\.webclient|invoke-webrequest|\biwr\b|invoke-restmethod|\birm\b"
        r"|start-bitstransfer)[^\n]{0,400}?(https?://|\\\\)|(https?://)[^\n]{0,400}?\|\s*(iex|invoke-expression)\b|\biex\s*\(", re.I)),
    ("encoded PowerShell command", re.compile(r"powershell[^\n]{0,200}?\s[-/]e(nc(odedcommand)?|c)?\s+[a-z0-9+/=]{16,}", re.I)),
    ("certutil download", re.compile(r"certutil[^\n]{0,80}-urlcache[^\n]{0,80}https?://", re.I)),
    ("bitsadmin download", re.compile(r"bitsadmin[^\n]{0,80}/transfer[^\n]{0,200}https?://", re.I)),
    ("script from the network", re.compile(r"(mshta|regsvr32|rundll32)[^\n]{0,200}?(https?://|javascript:|vbscript:)", re.I)),
    ("reverse tunnel", re.compile(r"\b(plink|ssh)(\.exe)?\b[^\n]{0,200}?\s-R\s*\d|\b(ngrok|frpc|chisel)(\.exe)?\b", re.I)),
)
_ENCODED = re.compile(r"\s[-/]e(nc(odedcommand)?|c)?\s+([A-Za-z0-9+/=]{16,})", re.I)


def cradle_in(command: str) -> str | None:
    """The name of the download-and-run, encoded or tunnel pattern in ``command``, if any."""
    for name, pattern in _CRADLES:
        if pattern.search(command):
            return name
    return None


def decoded_powershell(command: str) -> str | None:
    """The script of ``powershell -EncodedCommand BASE64`` (UTF-16LE), when there is one."""
    match = _ENCODED.search(command)
    if match is None:
        return None
    try:
        return base64.b64decode(match.group(3), validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
