"""What ran: one judgement of the programs Windows recorded as run (ShimCache, BAM, Prefetch).

Each trace module reads its artefact into ``Ran`` records (the program's path as Windows wrote
it, a time, the evidence that locates it) and hands them to ``judge``, which yields per artefact
(``shimcache``, ``bam``, ``prefetch``; the rule is ``windows.<artefact>-<what>``):

- ``-tool``: a remote-control tool (``remote_tools.tool_named``: TeamViewer, AnyDesk, VNC,
  ScreenConnect, ngrok, frp, plink ...) ran: high, one finding per tool;
- ``-attack-tool``: an attacker's tool (``amcache.attack_tool``: Mimikatz, netcat, chisel high;
  PsExec, ProcDump, rclone medium), one finding per tool;
- ``-removable``: programs ran from another drive or a network share (a USB stick, a second
  disk, ``\\\\host\\share``): medium, one finding listing them;
- ``-gone``: programs that ran from a folder any user can write (ProgramData, Users, Temp) or
  from outside Windows and Program Files, and are no longer in the image: medium, one finding.
  Judged only when the image holds Windows' own programs (a full copy of the drive); a triage
  collection holds none, and every program would look gone;
- ``-user-folder``: the other programs that ran from a folder any user can write: low, one
  finding (Windows itself runs Defender's MpSigStub and installers from Temp every day).

The tool lists are those of Amcache and the remote-tool check, not copies.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cranewatch.forensics.windows.amcache import attack_tool
from cranewatch.forensics.windows.commands import expand, place_of
from cranewatch.forensics.windows.remote_tools import tool_named
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Evidence, Finding, Severity

_LISTED = 20  # evidence entries kept in one finding; the count says how many there were
_FILETIME_START = datetime(1601, 1, 1, tzinfo=UTC)
_OTHER_DRIVE = re.compile(r"^[abd-z]:\\")
_NETWORK = re.compile(r"^(\\\\|\\device\\(mup|lanmanredirector)\\)")
_DEVICE = re.compile(r"^(\\device\\harddiskvolume\d+|\\volume\{[^}]*\})(\\.*)$", re.I)
_FULL_COPY = ("windows/explorer.exe", "windows/system32/ntoskrnl.exe", "windows/system32/svchost.exe")


@dataclass(frozen=True)
class Ran:
    """One program Windows recorded as run.

    ``program`` is the Windows path (``C:\\...``, ``\\\\host\\share\\...``; a device path such as
    ``\\Device\\HarddiskVolume5\\...`` names a volume other than the system one, see
    ``drive_path``); ``when`` an ISO 8601 UTC time or ''; ``evidence`` locates the record (hive,
    key and value, or the Prefetch file).
    """

    program: str
    when: str
    evidence: Evidence


@dataclass(frozen=True)
class Artefact:
    """Which trace the records come from, as the rules and titles name it."""

    key: str  # shimcache, bam, prefetch
    label: str  # ShimCache (AppCompatCache), BAM ...
    path: str  # image path the findings are filed under (hive or Prefetch folder)
    when: str  # what the time is: "last_run", "file_modified" ...
    ran_at: bool  # the time is when the program ran (the finding's first/last seen), not a file time


def filetime(value: int) -> str:
    """A FILETIME (100 ns since 1601) as ISO 8601 UTC to the microsecond (truncated), '' for 0
    or out of range."""
    if value <= 0:
        return ""
    try:
        moment = _FILETIME_START + timedelta(microseconds=value // 10)
    except OverflowError:
        return ""
    return moment.isoformat().replace("+00:00", "Z")


def system_volume(paths: Iterable[str]) -> str | None:
    """The device (``\\device\\harddiskvolume2``, ``\\volume{...}``, lower-case) holding most of
    the ``\\Windows\\`` paths among ``paths``: the system drive, C:."""
    counts = Counter(
        match.group(1).lower() for path in paths
        if (match := _DEVICE.match(path)) is not None and match.group(2).lower().startswith("\\windows\\")
    )
    return counts.most_common(1)[0][0] if counts else None


def drive_path(path: str, system: str | None) -> str:
    """``path`` on the system device as ``C:\\...``; any other path as recorded."""
    match = _DEVICE.match(path)
    if match is None or system is None or match.group(1).lower() != system:
        return path
    return "C:" + match.group(2)


def holds_programs(win: WindowsTree) -> bool:
    """The image holds Windows' own programs: a full copy of the drive, not a triage collection."""
    return any(win.find(path) is not None for path in _FULL_COPY)


def _on_disk(win: WindowsTree, program: str) -> bool:
    return program.startswith("c:\\") and win.find(program[3:]) is not None


def judge(win: WindowsTree, artefact: Artefact, records: Iterable[Ran]) -> Iterator[Finding]:
    """The findings of one artefact's records (see the module's docstring)."""
    tools: dict[str, list[Ran]] = {}
    attacks: dict[str, tuple[Severity, str, list[Ran]]] = {}
    removable: list[Ran] = []
    gone: list[Ran] = []
    user: list[Ran] = []
    full = holds_programs(win)
    seen: set[str] = set()
    for ran in records:
        program = _win32(expand(ran.program))
        tool = tool_named(program.rsplit("\\", 1)[-1]) or tool_named(program)
        if tool is not None:
            tools.setdefault(tool, []).append(ran)
        attack = attack_tool(program)
        if attack is not None:
            attacks.setdefault(attack[0], (attack[1], attack[2], []))[2].append(ran)
        if program in seen:
            continue
        seen.add(program)
        if _OTHER_DRIVE.match(program) or _NETWORK.match(program) or _DEVICE.match(program):
            removable.append(ran)
            continue
        place = place_of(program)
        if place not in ("user-writable", "other"):
            continue
        if full and not _on_disk(win, program):
            gone.append(ran)
        elif place == "user-writable":
            user.append(ran)
    for tool, runs in tools.items():
        yield _finding(
            win, artefact, runs, rule="tool", category="remote-access-tool", severity=Severity.HIGH,
            title=f"{tool} ran ({_named(runs)}, {artefact.label})", technique=("T0822", "T1219"), id_key=(tool,),
            remedy=(f"Find when and by whom {tool} was used (event logs, the tool's own logs); remove it if it is still "
                    "present and change the passwords of accounts used while it was; vendor access goes through the "
                    "port's own remote-access gateway."),
        )
    for tool, (severity, category, runs) in attacks.items():
        yield _finding(
            win, artefact, runs, rule="attack-tool", category=category, severity=severity,
            title=f"{tool} ran ({_named(runs)}, {artefact.label}): an attacker's tool was used on this computer",
            technique=("T1003", "T1572", "T1570") if category != "remote-access-tool" else ("T1570", "T1219"),
            id_key=("attack", tool),
            remedy=(f"Find when and by whom {tool} was run (Security and Sysmon logs around the recorded time); treat "
                    "the accounts used on this computer as compromised and change their passwords; remove the tool "
                    "and whatever brought it."),
        )
    if removable:
        yield _finding(
            win, artefact, removable, rule="removable", category="backdoor", severity=Severity.MEDIUM,
            title=(f"{_count(removable)} ran from another drive or a network share ({_named(removable)}, "
                   f"{artefact.label}): removable media or a share brought code to this computer"),
            technique=("T0847", "T1091"), id_key=("removable",),
            remedy=("Find out whose USB stick or share each program came from and what it was; crane computers take "
                    "software only through the port's checked transfer station."),
        )
    if gone:
        yield _finding(
            win, artefact, gone, rule="gone", category="backdoor", severity=Severity.MEDIUM,
            title=(f"{_count(gone)} ran from a user-writable folder or outside Windows and Program Files and "
                   f"{'is' if len(gone) == 1 else 'are'} no longer on disk ({_named(gone)}, {artefact.label})"),
            technique=("T1070.004",), id_key=("gone",),
            remedy=("Find out what each program was (Amcache SHA-1, the vendor, the user who ran it) and who deleted "
                    "it; installers and Defender's updates delete themselves, tools an intruder brought are deleted "
                    "by hand."),
        )
    if user:
        yield _finding(
            win, artefact, user, rule="user-folder", category="backdoor", severity=Severity.LOW,
            title=(f"{_count(user)} ran from folders any user can write (ProgramData, Users, Temp: "
                   f"{_named(user)}, {artefact.label})"),
            technique=("T1204.002",), id_key=("user-folder",),
            remedy=("Check that each program is one the crane's vendor or the port installed; a CMS computer runs "
                    "its software from Program Files."),
        )


def _win32(program: str) -> str:
    """Without the Win32 long-path prefix: ``\\\\?\\c:\\...`` is ``c:\\...``, ``\\\\?\\unc\\h\\s`` is ``\\\\h\\s``."""
    if program.startswith("\\\\?\\unc\\"):
        return "\\" + program[7:]
    return program[4:] if program.startswith("\\\\?\\") else program


def _count(runs: list[Ran]) -> str:
    return "1 program" if len(runs) == 1 else f"{len(runs)} programs"


def _named(runs: list[Ran]) -> str:
    names = []
    for ran in runs:
        name = ran.program.rsplit("\\", 1)[-1]
        if name not in names:
            names.append(name)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _finding(
    win: WindowsTree, artefact: Artefact, runs: list[Ran], *, rule: str, category: str, severity: Severity,
    title: str, technique: tuple[str, ...], id_key: tuple[object, ...], remedy: str,
) -> Finding:
    newest = sorted(runs, key=lambda r: r.when, reverse=True)
    times = [r.when for r in runs if r.when] if artefact.ran_at else []
    first = win.ctx.finding(
        rule=f"windows.{artefact.key}-{rule}", category=category, severity=severity, title=title,
        path=artefact.path, remedy=remedy, technique=technique, key=id_key,
    )
    evidence = tuple(
        replace(r.evidence, values={**r.evidence.values, "program": r.program, artefact.when: r.when})
        for r in newest[:_LISTED]
    )
    note = (f"{len(runs)} records; the {_LISTED} newest shown" if len(runs) > _LISTED else None)
    if note:
        evidence = (*evidence[:-1], replace(evidence[-1], note=note))
    return replace(first, evidence=evidence, count=len(runs),
                   first_seen=_epoch(min(times)) if times else None, last_seen=_epoch(max(times)) if times else None)


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
