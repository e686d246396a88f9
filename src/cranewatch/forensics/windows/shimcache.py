"""ShimCache (AppCompatCache): programs Windows checked for compatibility shims, newest first.

``SYSTEM\\<current control set>\\Control\\Session Manager\\AppCompatCache\\AppCompatCache`` is one
binary value: a header, then an entry per program (Windows 10/11: ``10ts``, CRC32, length, the
path in UTF-16, the file's last-modified FILETIME, a data blob; Windows 7/8 and older have their
own layouts). The blob is parsed by regipy's ShimCache parser (Mandiant's, Apache-2.0, maintained
in regipy); this module finds the value in the current control set and turns a parse that breaks
into a located problem with the entries read before it.

The time is the program file's last modification, not when it ran: a ShimCache entry says the
file was on this computer (and, before Windows 10, usually that it ran), which is why a tool
found here ranks like one found in Amcache. Findings: ``execution.judge``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from regipy.plugins.system.external.ShimCacheParser import get_shimcache_entries

from cranewatch.forensics.checks.base import excerpt
from cranewatch.forensics.windows.execution import Artefact, Ran, judge
from cranewatch.forensics.windows.tree import WindowsTree, shown_key
from cranewatch.model import Evidence, Finding

NAME = "windows_shimcache"
KEY = "Control\\Session Manager\\AppCompatCache"
VALUE = "AppCompatCache"


def entries(blob: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """(path, last-modified ISO time) of each entry in cache order, and why the parse stopped
    early (None when it read the whole blob)."""
    found: list[tuple[str, str]] = []
    try:
        for entry in get_shimcache_entries(blob) or ():
            modified = entry.get("last_mod_date")
            when = ""
            if isinstance(modified, datetime):
                when = modified.astimezone(UTC).isoformat().replace("+00:00", "Z")
            found.append((str(entry.get("path", "")), when))
    except Exception as exc:  # the parser raises bare Exception and struct.error on damaged data
        return found, f"{type(exc).__name__}: {exc}"
    return found, None


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    where = f"{win.control_set(system)}\\{KEY}"
    key = win.key(system, where)
    if key is None:
        return
    value = win.values(system, key, where).get(VALUE.lower())
    if value is None or not isinstance(value.data, bytes):
        return
    records, stopped = entries(value.data)
    if stopped is not None:
        win.problem(system.path, f"value {shown_key(system, where)}\\{VALUE} read only to entry {len(records)} "
                                 f"({stopped})")
    full_key = f"{system.label}\\{where}"
    runs = [
        Ran(path, when, Evidence(path=system.path, excerpt=excerpt(f"{full_key}\\{VALUE}[{index}] = {path}", 240),
                                 values={"key": full_key, "value": VALUE, "entry": index}))
        for index, (path, when) in enumerate(records) if path
    ]
    yield from judge(win, Artefact("shimcache", "ShimCache", system.path, "file_modified", ran_at=False), runs)
