"""Proxy settings that send a user's (or the machine's) web traffic through another host.

``Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings`` in each user's NTUSER.DAT
(and the machine's SOFTWARE, used when proxy settings are per machine): ``ProxyEnable`` 1 with
``ProxyServer``, or an ``AutoConfigURL`` (PAC script). A proxy outside the crane and terminal
networks sees and can change everything the computer fetches: high; a private one medium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.forensics.windows.tree import Hive, WindowsTree, int_of, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_proxy"
_SETTINGS = "Microsoft\\Windows\\CurrentVersion\\Internet Settings"
_HOST = re.compile(r"^(?:[a-z]+=)?(?:[a-z]+://)?\[?([^\]/:;\s]+)", re.I)


def check(win: WindowsTree) -> Iterator[Finding]:
    software = win.machine_hive("SOFTWARE")
    if software is not None:
        yield from _settings(win, software, _SETTINGS)
    for _user, hive in win.user_hives():
        yield from _settings(win, hive, f"Software\\{_SETTINGS}")


def _settings(win: WindowsTree, hive: Hive, where: str) -> Iterator[Finding]:
    key = win.key(hive, where)
    if key is None:
        return
    values = win.values(hive, key, where)
    candidates = []
    server = text_of(values.get("proxyserver"))
    if int_of(values.get("proxyenable")) == 1 and server:
        candidates.append(("ProxyServer", server))
    pac = text_of(values.get("autoconfigurl"))
    if pac:
        candidates.append(("AutoConfigURL", pac))
    for name, data in candidates:
        match = _HOST.match(data.split(";")[0].strip())
        host = match.group(1) if match else data
        zone = classify_host(host, win.ctx.endpoints)
        if zone not in ("public", "private"):
            continue
        yield registry_finding(
            win, hive, where, name, data,
            rule="windows.proxy", category="hardcoded-endpoint",
            severity=Severity.HIGH if zone == "public" else Severity.MEDIUM,
            title=f"web traffic sent through {zone} proxy {host} ({name})", technique=("T0885", "T1090"),
            remedy="Remove the proxy setting, or name the proxy in the crane profile's allowed endpoints.",
            extra={"host": host, "zone": zone},
        )
