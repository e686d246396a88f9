"""Remote-control tools installed: TeamViewer, AnyDesk, the VNC family, ScreenConnect, ngrok ...

Found three ways, one finding per tool with every trace as evidence: a service whose name or
program names the tool (``SYSTEM\\CurrentControlSet\\Services``), an entry in the machine's or
a user's ``Uninstall`` keys, and the tool's program folder or executable in the tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from cranewatch.forensics.windows.tree import Hive, WindowsTree, registry_finding, text_of
from cranewatch.model import Evidence, Finding, Severity

NAME = "windows_remote_tools"
_TECH = ("T0822", "T1219")
_TOOLS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("TeamViewer", re.compile(r"teamviewer", re.I)),
    ("AnyDesk", re.compile(r"anydesk", re.I)),
    ("VNC server", re.compile(r"\b(tightvnc|tvnserver|ultravnc|uvnc_service|winvnc|realvnc|vncserver|tigervnc)", re.I)),
    ("ScreenConnect", re.compile(r"screenconnect|connectwise control", re.I)),
    ("Radmin", re.compile(r"\bradmin|\brserver3", re.I)),
    ("RustDesk", re.compile(r"rustdesk", re.I)),
    ("Splashtop", re.compile(r"splashtop", re.I)),
    ("ngrok tunnel", re.compile(r"\bngrok", re.I)),
    ("frp tunnel", re.compile(r"(^|[\\/ \"])frp[cs](\.exe)?\b", re.I)),
    ("PuTTY plink", re.compile(r"(^|[\\/ \"])plink(\.exe)?\b", re.I)),
)
_UNINSTALL = ("Microsoft\\Windows\\CurrentVersion\\Uninstall", "Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall")
_PROGRAM_ROOTS = ("program files/", "program files (x86)/", "programdata/", "users/")


def tool_named(text: str) -> str | None:
    for tool, pattern in _TOOLS:
        if pattern.search(text):
            return tool
    return None


def check(win: WindowsTree) -> Iterator[Finding]:
    found: dict[str, list[Finding]] = {}
    for tool, finding in (*_services(win), *_uninstall(win), *_files(win)):
        found.setdefault(tool, []).append(finding)
    for tool, traces in found.items():
        first = traces[0]
        evidence: tuple[Evidence, ...] = tuple(e for t in traces for e in t.evidence)
        yield replace(first, title=f"{tool} installed ({len(traces)} trace{'s' if len(traces) > 1 else ''})",
                      evidence=evidence[:20])


def _remedy(tool: str) -> str:
    return (f"Uninstall {tool}, remove its service and program folder, and reset any password it stored; vendor "
            "access goes through the port's own remote-access gateway.")


def _make(win: WindowsTree, hive: Hive, where: str, value: str, data: str, tool: str) -> Finding:
    return registry_finding(
        win, hive, where, value, data, rule="windows.remote-tool", category="remote-access-tool",
        severity=Severity.HIGH, title=f"{tool} installed", remedy=_remedy(tool), technique=_TECH, id_key=(tool,),
    )


def _services(win: WindowsTree) -> Iterator[tuple[str, Finding]]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    for service in win.services():
        image = text_of(service.values.get("imagepath"))
        tool = tool_named(service.name) or tool_named(image)
        if tool is not None:
            yield tool, _make(win, system, service.key_path, "ImagePath", image, tool)


def _uninstall(win: WindowsTree) -> Iterator[tuple[str, Finding]]:
    hives: list[tuple[Hive, str]] = []
    software = win.machine_hive("SOFTWARE")
    if software is not None:
        hives.append((software, ""))
    hives.extend((hive, "Software\\") for _user, hive in win.user_hives())
    for hive, prefix in hives:
        for path in _UNINSTALL:
            base = prefix + path
            key = win.key(hive, base)
            for product in win.subkeys(hive, key, base) if key is not None else ():
                where = f"{base}\\{product.name}"
                name = text_of(win.values(hive, product, where).get("displayname")) or product.name
                tool = tool_named(name)
                if tool is not None:
                    yield tool, _make(win, hive, where, "DisplayName", name, tool)


def _files(win: WindowsTree) -> Iterator[tuple[str, Finding]]:
    seen: set[str] = set()
    for path, entry in sorted(win.image.entries.items()):
        lower = path.lower()
        if entry.type != "file" or not lower.startswith(_PROGRAM_ROOTS) or not lower.endswith((".exe", ".yml", ".ini", ".conf")):
            continue
        tool = tool_named(path)
        if tool is None or tool in seen:
            continue
        seen.add(tool)
        finding = win.ctx.finding(
            rule="windows.remote-tool", category="remote-access-tool", severity=Severity.HIGH,
            title=f"{tool} installed", path=path, remedy=_remedy(tool), technique=_TECH, key=(tool,),
        )
        yield tool, finding
