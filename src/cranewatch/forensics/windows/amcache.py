"""Amcache: remote-control tools and tunnels that were on the computer, even if removed since.

``Windows/AppCompat/Programs/Amcache.hve`` records programs Windows saw run or installed
(``Root\\InventoryApplicationFile\\*\\LowerCaseLongPath``, with the file's SHA-1 in ``FileId``).
A TeamViewer, AnyDesk, VNC, ScreenConnect, ngrok, frp or plink program there is high: the tool
was present, and the record outlives its uninstallation. One finding per tool.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.remote_tools import tool_named
from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_amcache"
_FILES = "Root\\InventoryApplicationFile"


def check(win: WindowsTree) -> Iterator[Finding]:
    amcache = win.hive_at("Windows/AppCompat/Programs/Amcache.hve", "Amcache")
    files = win.key(amcache, _FILES) if amcache is not None else None
    if amcache is None or files is None:
        return
    seen: set[str] = set()
    for entry in win.subkeys(amcache, files, _FILES):
        where = f"{_FILES}\\{entry.name}"
        values = win.values(amcache, entry, where)
        path = text_of(values.get("lowercaselongpath"))
        tool = tool_named(path) if path else None
        if tool is None or tool in seen:
            continue
        seen.add(tool)
        sha1 = text_of(values.get("fileid"))[4:]  # "0000" + SHA-1
        yield registry_finding(
            win, amcache, where, "LowerCaseLongPath", path,
            rule="windows.amcache-tool", category="remote-access-tool", severity=Severity.HIGH,
            title=f"{tool} recorded by Amcache ({path.rsplit(chr(92), 1)[-1]})", technique=("T0822", "T1219"),
            remedy=(f"Find when and by whom {tool} was used (event logs, the tool's own logs); remove it if it is "
                    "still present and change the passwords of accounts used while it was."),
            extra={"sha1": sha1}, id_key=(tool,),
        )
