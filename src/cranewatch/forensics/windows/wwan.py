"""Mobile-broadband (WWAN) profiles: a cellular way out that bypasses the terminal's network.

Windows keeps each mobile-broadband profile as XML under ``ProgramData/Microsoft/WwanSvc/
Profiles``; its ``AccessString`` is the APN. Any profile means the computer has used, or is
set up to use, a cellular modem: high.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.safe_xml import texts
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_wwan"


def check(win: WindowsTree) -> Iterator[Finding]:
    folder = win.find("ProgramData/Microsoft/WwanSvc/Profiles")
    if folder is None:
        return
    for path in win.files_under(folder):
        root = win.read_xml(path, "mobile-broadband profile") if path.lower().endswith(".xml") else None
        if root is None:
            continue
        apn = next(iter(texts(root, "AccessString")), "")
        name = next(iter(texts(root, "Name")), "")
        yield win.ctx.finding(
            rule="windows.wwan-profile", category="oob-connectivity", severity=Severity.HIGH,
            title=f"mobile-broadband profile {name or '?'} (APN {apn or '?'})", path=path,
            excerpt_text=f"Name={name} AccessString={apn}", key=(apn,), values={"apn": apn, "profile": name},
            technique=("T0884", "T1133"),
            remedy="Remove the cellular modem and the profile (netsh mbn delete profile); the crane reaches outside only through the terminal's firewall.",
        )
