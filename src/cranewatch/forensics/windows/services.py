"""Services and drivers of the current control set that start programs from unusual places.

``SYSTEM\\CurrentControlSet\\Services\\*``: the ``ImagePath`` (and a service DLL's
``Parameters\\ServiceDll``) of every service or driver that starts at boot, automatically or on
demand. A program in a folder any user can write (ProgramData, Users, Temp) runs as SYSTEM from
a place an unprivileged user or a dropper controls: high, critical for a boot or system driver
or a download cradle. A program outside Windows and Program Files is worth a look: medium.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import cradle_in, place_of, program_of
from cranewatch.forensics.windows.tree import Hive, WindowsTree, int_of, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_services"
_TECH = ("T0859", "T1543.003")
_START = {0: "boot", 1: "system", 2: "automatic", 3: "manual", 4: "disabled"}


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    for service in win.services():
        start = int_of(service.values.get("start"))
        if start == 4:
            continue  # disabled: never started
        commands = [("ImagePath", text_of(service.values.get("imagepath"))), ("Parameters\\ServiceDll", service.service_dll)]
        for value_name, command in commands:
            if command:
                finding = _judge(win, system, service.key_path, value_name, command, start, service.name)
                if finding is not None:
                    yield finding


def _judge(
    win: WindowsTree, system: Hive, where: str, value_name: str, command: str, start: int | None, name: str
) -> Finding | None:
    program = program_of(command)
    place = place_of(program)
    cradle = cradle_in(command)
    started = _START.get(start if start is not None else -1, "unknown")
    if cradle is not None:
        severity, why = Severity.CRITICAL, cradle
    elif place == "user-writable":
        severity = Severity.CRITICAL if start in (0, 1) else Severity.HIGH
        why = "a folder any user can write"
    elif place == "other":
        severity, why = Severity.MEDIUM, "outside Windows and Program Files"
    else:
        return None
    key_path, _, value = f"{where}\\{value_name}".rpartition("\\")
    return registry_finding(
        win, system, key_path, value, command,
        rule="windows.service-path", category="persistence", severity=severity,
        title=f"service {name} ({started} start) runs {program} from {why}",
        remedy=(f"Check who installed service {name!r} (event 7045 in System.evtx) and whether the program is the "
                "vendor's signed binary; remove it with `sc.exe delete` and delete the program if it is not."),
        technique=_TECH, extra={"start": started, "program": program},
    )
