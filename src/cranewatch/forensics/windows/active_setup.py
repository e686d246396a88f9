"""Active Setup: a command every user runs once at logon, ``StubPath`` of each component.

``SOFTWARE\\Microsoft\\Active Setup\\Installed Components\\<GUID>`` (and Wow6432Node): Windows'
own components start programs in the system folders. A cradle or encoded command is critical,
a program in a user-writable folder high, one outside Windows and Program Files medium.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import cradle_in, place_of, program_of
from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_active_setup"


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    if software is None:
        return
    for root in ("", "Wow6432Node\\"):
        base = f"{root}Microsoft\\Active Setup\\Installed Components"
        components = win.key(software, base)
        for component in win.subkeys(software, components, base) if components is not None else ():
            where = f"{base}\\{component.name}"
            command = text_of(win.values(software, component, where).get("stubpath"))
            if not command:
                continue
            program = program_of(command)
            place = place_of(program)
            cradle = cradle_in(command)
            if cradle is not None:
                severity, why = Severity.CRITICAL, cradle
            elif place == "user-writable":
                severity, why = Severity.HIGH, f"{program} from a user-writable folder"
            elif place == "other":
                severity, why = Severity.MEDIUM, f"{program} outside Windows and Program Files"
            else:
                continue
            yield registry_finding(
                win, software, where, "StubPath", command,
                rule="windows.active-setup", category="persistence", severity=severity,
                title=f"Active Setup component {component.name} runs {why} at each user's first logon",
                remedy="Delete the component's key and the program it starts.",
                technique=("T0889", "T1547.014"),
            )
