"""BAM and DAM: the Background and Desktop Activity Moderators' last run time of each program.

Windows 10 (1709 on) keeps, per user SID, one value per program under
``SYSTEM\\<current control set>\\Services\\bam\\State\\UserSettings\\<SID>`` (``bam\\UserSettings``
before 1809; ``dam`` likewise): the value's name is the program's device path
(``\\Device\\HarddiskVolume2\\Windows\\System32\\cmd.exe``) or a packaged app's name, its data
begins with the FILETIME the program last ran. ``SequenceNumber`` and ``Version`` are not
programs. The device that holds the ``\\Windows\\`` paths is taken as C:; a program on another
device ran from a USB stick or another disk. Each record names its user as ``ACCOUNT (SID)``
(``accounts``: SAM, well-known SIDs, ProfileList) and says when that is the built-in
Administrator or a local account created on the computer. Findings: ``execution.judge``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cranewatch.forensics.checks.base import excerpt
from cranewatch.forensics.windows.accounts import read_accounts
from cranewatch.forensics.windows.execution import (
    Artefact,
    Ran,
    drive_path,
    filetime,
    judge,
    system_volume,
)
from cranewatch.forensics.windows.tree import Hive, WindowsTree
from cranewatch.model import Evidence, Finding

NAME = "windows_bam"
_KEYS = tuple(f"Services\\{moderator}\\{layout}UserSettings" for moderator in ("bam", "dam")
              for layout in ("State\\", ""))
_NOT_PROGRAMS = {"sequencenumber", "version"}


def records(win: WindowsTree, system: Hive) -> list[tuple[str, str, str, str]]:
    """(key path, value name, SID, last-run ISO time) of every program the moderators list."""
    found: list[tuple[str, str, str, str]] = []
    for path in _KEYS:
        base = f"{win.control_set(system)}\\{path}"
        key = win.key(system, base)
        for user in win.subkeys(system, key, base) if key is not None else ():
            where = f"{base}\\{user.name}"
            for value in win.values(system, user, where).values():
                if value.name.lower() in _NOT_PROGRAMS or not isinstance(value.data, bytes):
                    continue
                when = filetime(struct.unpack_from("<q", value.data)[0]) if len(value.data) >= 8 else ""
                found.append((where, value.name, str(user.name), when))
    return found


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    listed = records(win, system)
    device = system_volume(name for _key, name, _sid, _when in listed)
    accounts = read_accounts(win) if listed else None
    runs = []
    for where, name, sid, when in listed:
        if "\\" not in name or accounts is None:
            continue  # packaged apps are named, not pathed
        values = {"key": f"{system.label}\\{where}", "value": name, "sid": sid, "account": accounts.label(sid)}
        if (note := accounts.note(sid)) is not None:
            values["account_note"] = note
        runs.append(Ran(drive_path(name, device), when, Evidence(
            path=system.path, excerpt=excerpt(f"{system.label}\\{where}{'' if name.startswith(chr(92)) else chr(92)}{name} = {when or '?'}", 240),
            values=values)))
    yield from judge(win, Artefact("bam", "BAM", system.path, "last_run", ran_at=True), runs)
