"""PowerShell profiles: scripts PowerShell runs at every start, for every user or one.

Stock Windows has none. ``Windows/System32/WindowsPowerShell/v1.0/*profile.ps1`` (all users,
also SysWOW64) and each user's ``Documents/WindowsPowerShell`` and ``Documents/PowerShell``
``*profile.ps1``: present is medium, a download cradle, encoded command or tunnel inside critical.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import cradle_in
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_powershell_profiles"
_MACHINE = ("Windows/System32/WindowsPowerShell/v1.0", "Windows/SysWOW64/WindowsPowerShell/v1.0")
_USER = ("Documents/WindowsPowerShell", "Documents/PowerShell")


def _folders(win: WindowsTree) -> Iterator[str]:
    yield from _MACHINE
    for _user, profile in win.users():
        for folder in _USER:
            yield f"{profile}/{folder}"


def check(win: WindowsTree) -> Iterator[Finding]:
    for folder in _folders(win):
        real = win.find(folder)
        if real is None:
            continue
        for path in win.files_under(real):
            name = path.rsplit("/", 1)[-1]
            if "/" in path[len(real) + 1:] or not name.lower().endswith("profile.ps1"):
                continue
            text = (win.read_bytes(path, limit=4 << 20) or b"").decode("utf-8", "replace")
            hit = next(((n, line) for n, line in enumerate(text.splitlines(), 1) if cradle_in(line)), None)
            yield win.ctx.finding(
                rule="windows.powershell-profile", category="persistence",
                severity=Severity.CRITICAL if hit else Severity.MEDIUM,
                title=f"PowerShell profile {name}{' with a ' + str(cradle_in(hit[1])) if hit else ''}",
                path=path, line=hit[0] if hit else None, excerpt_text=hit[1] if hit else None,
                technique=("T0889", "T1546.013"),
                remedy="Delete the profile script unless the vendor documents it; PowerShell runs it at every start.",
            )
