"""Run and RunOnce entries of the machine and of every user.

``SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run``, ``RunOnce``, their ``Wow6432Node`` twins
and ``Policies\\Explorer\\Run``, then the same keys in each user's ``NTUSER.DAT``. A download
cradle or an encoded PowerShell command is critical; a program in a user-writable folder high
(Microsoft's own OneDrive and Teams updaters excepted); outside Windows and Program Files medium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.windows.commands import (
    cradle_in,
    decoded_powershell,
    place_of,
    program_of,
)
from cranewatch.forensics.windows.tree import Hive, WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_run_keys"
_TECH = ("T0889", "T1547.001")
_KEYS = tuple(
    f"{root}Microsoft\\Windows\\CurrentVersion\\{leaf}"
    for root in ("", "Wow6432Node\\")
    for leaf in ("Run", "RunOnce", "RunOnceEx", "RunServices", "RunServicesOnce", "Policies\\Explorer\\Run")
)
# Per-user programs Microsoft installs under AppData: stock Run entries, not implants.
_STOCK_USER_PROGRAMS = re.compile(
    r"\\appdata\\local\\microsoft\\(onedrive\\onedrive\.exe|teams\\update\.exe|windowsapps\\[^\\]+\.exe)$", re.I
)


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    if software is not None:
        yield from _run_keys(win, software, "")
    for _user, hive in win.user_hives():
        yield from _run_keys(win, hive, "Software\\")


def _run_keys(win: WindowsTree, hive: Hive, prefix: str) -> Iterator[Finding]:
    for path in _KEYS:
        where = prefix + path
        key = win.key(hive, where)
        if key is None:
            continue
        for value in win.values(hive, key, where).values():
            finding = _judge(win, hive, where, value.name, text_of(value))
            if finding is not None:
                yield finding


def _judge(win: WindowsTree, hive: Hive, where: str, name: str, command: str) -> Finding | None:
    if not command:
        return None
    program = program_of(command)
    place = place_of(program)
    cradle = cradle_in(command)
    if cradle is not None:
        severity, title = Severity.CRITICAL, f"{cradle} started at logon ({name})"
    elif place == "user-writable" and not _STOCK_USER_PROGRAMS.search(program):
        severity, title = Severity.HIGH, f"logon start of {program} from a user-writable folder ({name})"
    elif place == "other":
        severity, title = Severity.MEDIUM, f"logon start of {program} outside Windows and Program Files ({name})"
    else:
        return None
    decoded = decoded_powershell(command)
    return registry_finding(
        win, hive, where, name, command,
        rule="windows.run-key", category="persistence", severity=severity, title=title,
        remedy=(f"Delete the value {name!r} from {hive.label}\\{where} (reg delete) and the program it starts, "
                "then find how it got there: the user's downloads, the vendor's installer, a service laptop."),
        technique=_TECH, extra={"program": program, **({"decoded": decoded} if decoded else {})},
    )
