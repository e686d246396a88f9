"""Built-in Windows VPN connections (RAS phonebooks) to peers outside the crane.

``rasphone.pbk`` (all users under ``ProgramData/Microsoft/Network/Connections/Pbk``, each user's
under ``AppData/Roaming/...``) holds one ``[entry]`` per connection; ``PhoneNumber`` is the VPN
server. A public peer is high, a private one outside the crane and terminal networks medium.
OpenVPN and WireGuard files are the generic checks' (``remote_access``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_vpn"
_PBK = "Microsoft/Network/Connections/Pbk/rasphone.pbk"
_ENTRY = re.compile(r"^\[(.+)\]\s*$")


def _phonebooks(win: WindowsTree) -> Iterator[str]:
    common = win.find(f"ProgramData/{_PBK}")
    if common is not None:
        yield common
    for _user, profile in win.users():
        own = win.find(f"{profile}/AppData/Roaming/{_PBK}")
        if own is not None:
            yield own


def check(win: WindowsTree) -> Iterator[Finding]:
    for path in _phonebooks(win):
        text = (win.read_bytes(path, limit=4 << 20) or b"").decode("utf-8", "replace")
        entry = ""
        for number, line in enumerate(text.splitlines(), 1):
            header = _ENTRY.match(line.strip())
            if header:
                entry = header.group(1)
                continue
            name, sep, value = line.strip().partition("=")
            if not sep or name.lower() != "phonenumber" or not value.strip():
                continue
            host = value.strip()
            zone = classify_host(host, win.ctx.endpoints)
            if zone not in ("public", "private"):
                continue
            yield win.ctx.finding(
                rule="windows.vpn-outside", category="remote-access-tool",
                severity=Severity.HIGH if zone == "public" else Severity.MEDIUM,
                title=f"Windows VPN connection {entry or '?'} to {zone} peer {host}", path=path, line=number,
                excerpt_text=line, key=(entry, host), values={"entry": entry, "server": host, "zone": zone},
                technique=("T0822", "T1133"),
                remedy="Remove the VPN connection or name the peer in the crane profile's allowed endpoints.",
            )
