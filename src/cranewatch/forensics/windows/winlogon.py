"""Winlogon's Userinit and Shell changed, and AppInit_DLLs loaded into every program.

``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon``: ``Userinit`` is
``C:\\Windows\\system32\\userinit.exe,`` and ``Shell`` is ``explorer.exe`` on a stock system;
anything added runs at every logon (a user's own ``Shell`` in ``NTUSER.DAT`` too). ``...\\Windows``
``AppInit_DLLs`` loads its DLLs into every program that uses user32.dll when
``LoadAppInit_DLLs`` is 1.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import expand
from cranewatch.forensics.windows.tree import Hive, WindowsTree, int_of, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_winlogon"
_WINLOGON = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
_STOCK = {
    "userinit": {"c:\\windows\\system32\\userinit.exe", "userinit.exe", "userinit"},
    "shell": {"explorer.exe", "explorer", "c:\\windows\\explorer.exe"},
}


_DEFAULT = {"userinit": "C:\\Windows\\system32\\userinit.exe,", "shell": "explorer.exe"}


def _stock(name: str, data: str) -> bool:
    parts = [p.strip().strip('"') for p in expand(data).split(",") if p.strip()]
    return bool(parts) and all(p in _STOCK[name] for p in parts)


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    if software is not None:
        yield from _winlogon(win, software, _WINLOGON)
        for root in ("", "Wow6432Node\\"):
            yield from _appinit(win, software, f"{root}Microsoft\\Windows NT\\CurrentVersion\\Windows")
    for _user, hive in win.user_hives():
        yield from _winlogon(win, hive, f"Software\\{_WINLOGON}")


def _winlogon(win: WindowsTree, hive: Hive, where: str) -> Iterator[Finding]:
    key = win.key(hive, where)
    if key is None:
        return
    values = win.values(hive, key, where)
    for name in ("userinit", "shell"):
        value = values.get(name)
        data = text_of(value)
        if value is None or not data or _stock(name, data):
            continue
        yield registry_finding(
            win, hive, where, value.name, data,
            rule="windows.winlogon", category="persistence", severity=Severity.HIGH,
            title=f"Winlogon {value.name} changed: {data}",
            remedy=f"Set {value.name} back to {_DEFAULT[name]} and remove the program added to it.",
            technique=("T0889", "T1547.004"),
        )


def _appinit(win: WindowsTree, hive: Hive, where: str) -> Iterator[Finding]:
    key = win.key(hive, where)
    if key is None:
        return
    values = win.values(hive, key, where)
    dlls = text_of(values.get("appinit_dlls")).strip()
    if not dlls:
        return
    loaded = int_of(values.get("loadappinit_dlls")) == 1
    yield registry_finding(
        win, hive, where, "AppInit_DLLs", dlls,
        rule="windows.appinit-dlls", category="persistence", severity=Severity.HIGH if loaded else Severity.MEDIUM,
        title=f"AppInit_DLLs {'loads' if loaded else 'names (not loaded)'} {dlls} into every program",
        remedy="Empty AppInit_DLLs, set LoadAppInit_DLLs to 0 and remove the DLL.",
        technique=("T0889", "T1546.010"), extra={"LoadAppInit_DLLs": loaded},
    )
