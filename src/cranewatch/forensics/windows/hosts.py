"""The hosts file (``Windows/System32/drivers/etc/hosts``) redirecting names.

Stock Windows ships it with comments only. A name pointed at a routable address sends that
traffic elsewhere (medium; high when the name is Microsoft's update or Defender service or the
address is outside the crane and terminal networks); a security name pointed at 0.0.0.0 or
127.0.0.1 blocks updates and Defender's cloud (high).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.base import active_lines
from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_hosts"
_SECURITY = re.compile(r"(windowsupdate|update\.microsoft|microsoft\.com|wdcp|smartscreen|defender|msftncsi|mp\.microsoft"
                       r"|sophos|mcafee|symantec|kaspersky|eset|trendmicro|crowdstrike|sentinelone)", re.I)


def check(win: WindowsTree) -> Iterator[Finding]:
    path = win.find("Windows/System32/drivers/etc/hosts")
    data = win.read_bytes(path, limit=4 << 20) if path is not None else None
    if path is None or data is None:
        return
    for number, line in active_lines(data.decode("utf-8", "replace").splitlines()):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address, names = fields[0], [n.lower() for n in fields[1:]]
        if names in (["localhost"],) or all(n in ("localhost", "localhost.localdomain") for n in names):
            continue
        zone = classify_host(address, win.ctx.endpoints)
        security = [n for n in names if _SECURITY.search(n)]
        if zone == "local" and not security:
            continue
        severity = Severity.HIGH if security or zone == "public" else Severity.MEDIUM
        yield win.ctx.finding(
            rule="windows.hosts-redirect", category="weak-config" if zone == "local" else "hardcoded-endpoint",
            severity=severity,
            title=(f"hosts file {'blocks' if zone == 'local' else 'redirects'} {', '.join(security or names)}"
                   f"{'' if zone == 'local' else ' to ' + address}"),
            path=path, line=number, excerpt_text=line, key=(address, *names), technique=("T1565", "T1562.001"),
            values={"address": address, "names": names, "zone": zone},
            remedy="Restore the stock hosts file (comments only) and resolve names through the port's DNS.",
        )
