"""Scheduled tasks (``Windows/System32/Tasks``) that start programs from unusual places.

Each task is an XML file; its ``Exec`` actions name a ``Command`` and ``Arguments``. A download
cradle, an encoded PowerShell command or a tunnel is critical, a program in a user-writable
folder (or a script host running a script from one) high, a program outside Windows and
Program Files medium. Microsoft's own tasks that run Windows programs give nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import (
    cradle_in,
    decoded_powershell,
    paths_in,
    place_of,
    program_of,
)
from cranewatch.forensics.windows.safe_xml import local
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_tasks"
_TECH = ("T0889", "T1053.005")
_SCRIPT_HOSTS = ("powershell.exe", "pwsh.exe", "cmd.exe", "wscript.exe", "cscript.exe", "mshta.exe", "rundll32.exe", "regsvr32.exe")


def exec_actions(win: WindowsTree) -> Iterator[tuple[str, str, str, str]]:
    """(task file, task name, command, arguments) of every Exec action of every task."""
    folder = win.find("Windows/System32/Tasks")
    if folder is None:
        return
    for path in win.files_under(folder):
        root = win.read_xml(path, "scheduled task")
        if root is None:
            continue
        for element in root.iter():
            if local(element.tag) != "Exec":
                continue
            fields = {local(child.tag): (child.text or "").strip() for child in element}
            if fields.get("Command"):
                yield path, path[len(folder) + 1:], fields["Command"], fields.get("Arguments", "")


def check(win: WindowsTree) -> Iterator[Finding]:
    for path, name, command, arguments in exec_actions(win):
        finding = _judge(win, path, name, command, arguments)
        if finding is not None:
            yield finding


def _judge(win: WindowsTree, path: str, name: str, command: str, arguments: str) -> Finding | None:
    line = f"{command} {arguments}".strip()
    program = program_of(command)
    place = place_of(program)
    argument_place = "user-writable" if any(place_of(p) == "user-writable" for p in paths_in(arguments)) else "system"
    cradle = cradle_in(line)
    if cradle is not None:
        severity, why = Severity.CRITICAL, cradle
    elif place == "user-writable":
        severity, why = Severity.HIGH, f"runs {program} from a user-writable folder"
    elif program.rsplit("\\", 1)[-1] in _SCRIPT_HOSTS and argument_place == "user-writable":
        severity, why = Severity.HIGH, f"runs a script from a user-writable folder with {program.rsplit(chr(92), 1)[-1]}"
    elif place == "other":
        severity, why = Severity.MEDIUM, f"runs {program} outside Windows and Program Files"
    else:
        return None
    decoded = decoded_powershell(line)
    return win.ctx.finding(
        rule="windows.scheduled-task", category="persistence", severity=severity,
        title=f"scheduled task {name}: {why}", path=path, excerpt_text=line, technique=_TECH, key=(line.lower(),),
        values={"task": name, "command": command, "arguments": arguments, **({"decoded": decoded} if decoded else {})},
        remedy=(f"Delete the task (schtasks /Delete /TN \"\\{name.replace('/', chr(92))}\") and the program it starts; "
                "check the task's Author and RegistrationInfo against the vendor's documentation."),
    )
