"""COM hijacks: a user's class registration that shadows the machine's (``UsrClass.dat``).

Windows merges ``HKCU\\Software\\Classes`` over ``HKLM\\SOFTWARE\\Classes``: a ``CLSID\\{…}``
with an ``InprocServer32`` (or ``LocalServer32``) in the user's ``UsrClass.dat`` (or
``NTUSER.DAT\\Software\\Classes``) wins over the machine's, so any program that creates that
object, Explorer included, loads the user's DLL: persistence without administrator rights.

- a user registration of a CLSID the machine also registers, naming another server: high
  (critical when that server is a script from the network, ``scrobj.dll`` with a URL);
- a user-only registration whose server lies in a folder any user can write: medium
  (Microsoft's per-user OneDrive and Teams servers excepted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.windows.commands import cradle_in, expand, place_of, program_of
from cranewatch.forensics.windows.tree import Hive, WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_com_hijack"
_TECH = ("T1546.015",)
_SERVERS = ("InprocServer32", "LocalServer32")
_USRCLASS = "AppData/Local/Microsoft/Windows/UsrClass.dat"
_STOCK_USER_SERVERS = re.compile(r"\\appdata\\local\\microsoft\\(onedrive|teams)\\", re.I)


def _servers(win: WindowsTree, hive: Hive, base: str) -> dict[str, tuple[str, str, str]]:
    """{clsid (lower case): (server key name, key path, command)} of the CLSIDs under ``base``."""
    found: dict[str, tuple[str, str, str]] = {}
    root = win.key(hive, base)
    if root is None:
        return found
    for clsid in win.subkeys(hive, root, base):
        where = f"{base}\\{clsid.name}"
        for server in _SERVERS:
            key = win.child(hive, clsid, server, where) if clsid.subkey_count else None
            if key is None:
                continue
            command = text_of(win.values(hive, key, f"{where}\\{server}").get("(default)"))
            if command:
                found[str(clsid.name).lower()] = (server, f"{where}\\{server}", command)
                break
    return found


def check(win: WindowsTree) -> Iterator[Finding]:
    user_hives: list[tuple[str, Hive, str]] = []
    for user, folder in win.users():
        hive = win.hive_at(f"{folder}/{_USRCLASS}", f"HKU\\{user}_Classes")
        if hive is not None:
            user_hives.append((user, hive, "CLSID"))
    user_hives += [(user, hive, "Software\\Classes\\CLSID") for user, hive in win.user_hives()]
    if not user_hives:
        return
    software = win.machine_hive("SOFTWARE")
    machine = _servers(win, software, "Classes\\CLSID") if software is not None else {}
    for user, hive, base in user_hives:
        for clsid, (server, where, command) in _servers(win, hive, base).items():
            finding = _judge(win, hive, user, clsid, server, where, command, machine.get(clsid))
            if finding is not None:
                yield finding


def _judge(win: WindowsTree, hive: Hive, user: str, clsid: str, server: str, where: str, command: str,
           machine: tuple[str, str, str] | None) -> Finding | None:
    program = program_of(command.replace("%user%", user))
    place = place_of(program)
    script = "scrobj.dll" in program and (cradle_in(command) or re.search(r"https?://|\\\\", command, re.I))
    if machine is not None:
        if expand(machine[2]).strip('"') == expand(command).strip('"') or (place == "system" and not script):
            return None  # the same server, or one of Windows' own
        severity = Severity.CRITICAL if script else Severity.HIGH
        title = f"{user}'s {server} for {clsid.upper()} shadows the machine's ({machine[2]}) with {program}"
        extra = {"machine_server": machine[2]}
    elif place == "user-writable" and not _STOCK_USER_SERVERS.search(program):
        severity = Severity.MEDIUM
        title = f"{user} registers COM class {clsid.upper()} served by {program} from a user-writable folder"
        extra = {}
    else:
        return None
    key_path = where
    return registry_finding(
        win, hive, key_path, "", command,
        rule="windows.com-hijack", category="persistence", severity=severity, title=title, technique=_TECH,
        remedy=(f"Delete {hive.label}\\{key_path} (the user's registration) and the file it names; check the user's "
                "other Classes keys and how they were written."),
        extra={"clsid": clsid.upper(), "program": program, **extra},
    )
