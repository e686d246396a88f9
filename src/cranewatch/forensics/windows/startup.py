"""Start-up folders: whatever lies there runs at every logon.

``ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp`` (all users) and each user's
``AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup``. Scripts and programs are
high, a tunnel or download cradle inside them critical; shortcuts are read for their target
(the strings of the .lnk, ASCII and UTF-16) and judged like a command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.windows.commands import cradle_in
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_startup"
_TECH = ("T0889", "T1547.001")
_ALL_USERS = "ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp"
_PER_USER = "AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup"
_RUNNABLE = (".bat", ".cmd", ".ps1", ".vbs", ".vbe", ".js", ".jse", ".wsf", ".hta", ".exe", ".scr", ".com", ".pif", ".lnk", ".url")
_STRINGS = re.compile(rb"[\x20-\x7e]{6,}")
_WIDE = re.compile(rb"(?:[\x20-\x7e]\x00){6,}")


def _folders(win: WindowsTree) -> Iterator[str]:
    common = win.find(_ALL_USERS)
    if common is not None:
        yield common
    for _user, profile in win.users():
        own = win.find(f"{profile}/{_PER_USER}")
        if own is not None:
            yield own


def _text(data: bytes) -> str:
    ascii_strings = [m.group().decode("ascii") for m in _STRINGS.finditer(data)]
    wide = [m.group().decode("utf-16-le") for m in _WIDE.finditer(data)]
    return "\n".join(ascii_strings + wide)


def check(win: WindowsTree) -> Iterator[Finding]:
    for folder in _folders(win):
        for path in win.files_under(folder):
            name = path.rsplit("/", 1)[-1]
            if name.lower() == "desktop.ini":
                continue
            data = win.read_bytes(path, limit=4 << 20) or b""
            text = data.decode("utf-8", "replace") if not name.lower().endswith((".lnk", ".exe", ".scr", ".com", ".pif")) else _text(data)
            cradle = cradle_in(text)
            runnable = name.lower().endswith(_RUNNABLE)
            severity = Severity.CRITICAL if cradle else Severity.HIGH if runnable else Severity.MEDIUM
            line = next((ln for ln in text.splitlines() if cradle_in(ln)), None) if cradle else None
            yield win.ctx.finding(
                rule="windows.startup-folder", category="persistence", severity=severity,
                title=f"{cradle + ' in ' if cradle else ''}start-up folder item {name}", path=path,
                excerpt_text=line, technique=_TECH,
                remedy=f"Delete {name} from the start-up folder and whatever it starts; find who put it there.",
            )
