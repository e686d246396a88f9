"""Automatic logon with the password stored in the registry in clear text.

``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon`` ``AutoAdminLogon`` 1 with
``DefaultUserName`` and ``DefaultPassword``: anyone who reads the SOFTWARE hive (a backup, a
service laptop's image, this collection) has the account's password.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_autologon"
_WINLOGON = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    key = win.key(software, _WINLOGON) if software is not None else None
    if software is None or key is None:
        return
    values = win.values(software, key, _WINLOGON)
    password = text_of(values.get("defaultpassword"))
    user = text_of(values.get("defaultusername"))
    automatic = text_of(values.get("autoadminlogon")).strip() == "1"
    if not password and not automatic:
        return
    yield registry_finding(
        win, software, _WINLOGON, "DefaultPassword" if password else "AutoAdminLogon",
        f"<{len(password)} characters>" if password else "1",
        rule="windows.autologon", category="credential", severity=Severity.HIGH if password else Severity.MEDIUM,
        title=(f"automatic logon as {user or '?'} with the password stored in clear text" if password
               else f"automatic logon as {user or '?'} (no stored password)"),
        remedy=("Turn automatic logon off (AutoAdminLogon=0), delete DefaultPassword, and change that account's "
                "password: it is readable by anyone holding a copy of the disk."),
        technique=("T0859", "T1552.002"), extra={"user": user, "AutoAdminLogon": automatic},
    )
