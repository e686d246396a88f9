"""Image File Execution Options debuggers: the sethc/utilman backdoor and its relatives.

``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\<program>``
with a ``Debugger`` value starts that program instead of the one named: on the accessibility
programs of the logon screen (sethc, utilman, osk, narrator, magnify, displayswitch, atbroker)
it gives a SYSTEM shell to anyone at the login prompt or over RDP, without a password.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_ifeo"
_LOGON_SCREEN = {"sethc.exe", "utilman.exe", "osk.exe", "narrator.exe", "magnify.exe", "displayswitch.exe", "atbroker.exe"}


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    if software is None:
        return
    for root in ("", "Wow6432Node\\"):
        base = f"{root}Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options"
        options = win.key(software, base)
        if options is None:
            continue
        for program in win.subkeys(software, options, base):
            where = f"{base}\\{program.name}"
            debugger = win.values(software, program, where).get("debugger")
            data = text_of(debugger)
            if debugger is None or not data:
                continue
            backdoor = program.name.lower() in _LOGON_SCREEN
            yield registry_finding(
                win, software, where, debugger.name, data,
                rule="windows.ifeo-debugger", category="backdoor" if backdoor else "persistence",
                severity=Severity.CRITICAL if backdoor else Severity.HIGH,
                title=(f"{program.name} replaced by {data} at the logon screen (accessibility backdoor)" if backdoor
                       else f"{program.name} starts {data} instead (IFEO debugger)"),
                remedy=f"Delete the Debugger value under {program.name}'s Image File Execution Options key and the program it names.",
                technique=("T0889", "T1546.008" if backdoor else "T1546.012"),
            )
