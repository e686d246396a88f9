"""Passwords of remote-control tools stored in the registry, where they can be recovered.

VNC servers keep their password DES-encrypted with a key published in their source
(RealVNC ``vncserver\\Password``, TightVNC ``Server\\Password``/``PasswordViewOnly``, the old
``ORL\\WinVNC3\\Password``), TeamViewer its unattended-access password AES-encrypted with a key
that is public too (``SecurityPasswordAES``, ``OptionsPasswordAES``, ``PermanentPassword``).
Anyone with this collection can log in to the tool: high. The value is never reported.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.tree import Hive, WindowsTree, registry_finding
from cranewatch.model import Finding, Severity

NAME = "windows_remote_passwords"
_STORED = (
    ("RealVNC", "RealVNC\\vncserver", ("Password", "PasswordViewOnly")),
    ("RealVNC", "RealVNC\\WinVNC4", ("Password",)),
    ("TightVNC", "TightVNC\\Server", ("Password", "PasswordViewOnly", "ControlPassword")),
    ("VNC", "ORL\\WinVNC3", ("Password",)),
    ("TeamViewer", "TeamViewer", ("SecurityPasswordAES", "OptionsPasswordAES", "PermanentPassword", "SecurityPasswordExported")),
)


def check(win: WindowsTree) -> Iterator[Finding]:
    hives: list[tuple[Hive, str]] = []
    software = win.machine_hive("SOFTWARE")
    if software is not None:
        hives.extend((software, root) for root in ("", "Wow6432Node\\"))
    hives.extend((hive, "Software\\") for _user, hive in win.user_hives())
    for hive, root in hives:
        for tool, path, names in _STORED:
            where = root + path
            key = win.key(hive, where)
            if key is None:
                continue
            values = win.values(hive, key, where)
            for name in names:
                value = values.get(name.lower())
                if value is None or not value.data:
                    continue
                size = len(value.data) if isinstance(value.data, (bytes, str)) else 0
                yield registry_finding(
                    win, hive, where, value.name, f"<{size} bytes, recoverable>",
                    rule="windows.remote-tool-password", category="credential", severity=Severity.HIGH,
                    title=f"{tool} password stored in {value.name} (encrypted with a published key)",
                    technique=("T0859", "T1552.002"),
                    remedy=f"Remove {tool}; if it must stay, change its password and treat the old one as known to the vendor.",
                )
