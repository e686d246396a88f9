"""Windows Firewall: turned off, or opened inbound for remote control.

``SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy``: a profile
(Domain, Standard = private, Public) with ``EnableFirewall`` 0 is high. Each value of
``FirewallRules`` is one rule, ``v2.30|Action=Allow|Active=TRUE|Dir=In|LPort=5900|App=...``: an
active inbound allow rule for a remote-control port (VNC, TeamViewer, AnyDesk, Radmin,
ScreenConnect, SSH, telnet, RDP) or for a program in a user-writable folder is medium, high when
both hold or the program is a remote-control tool.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.commands import place_of, program_of
from cranewatch.forensics.windows.remote_tools import tool_named
from cranewatch.forensics.windows.tree import WindowsTree, int_of, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_firewall"
_TECH = ("T0822", "T1562.004")
_REMOTE_PORTS = {
    "22": "SSH", "23": "telnet", "3389": "RDP", "5800": "VNC (HTTP)", "5900": "VNC", "5938": "TeamViewer",
    "7070": "AnyDesk", "6568": "AnyDesk", "4899": "Radmin", "8040": "ScreenConnect", "8041": "ScreenConnect",
}
_PROFILES = {"DomainProfile": "domain", "StandardProfile": "private", "PublicProfile": "public"}


def parse_rule(text: str) -> dict[str, list[str]]:
    """A firewall rule's fields: ``{"Action": ["Allow"], "LPort": ["5900"], ...}``."""
    fields: dict[str, list[str]] = {}
    for part in text.split("|"):
        name, sep, value = part.partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    return fields


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    base = f"{win.control_set(system)}\\Services\\SharedAccess\\Parameters\\FirewallPolicy"
    for profile, shown in _PROFILES.items():
        where = f"{base}\\{profile}"
        key = win.key(system, where)
        if key is not None and int_of(win.values(system, key, where).get("enablefirewall")) == 0:
            yield registry_finding(
                win, system, where, "EnableFirewall", 0,
                rule="windows.firewall-off", category="weak-config", severity=Severity.HIGH,
                title=f"Windows Firewall turned off for the {shown} profile", technique=_TECH,
                remedy="Turn the firewall back on for every profile (EnableFirewall=1) and review its inbound rules.",
            )
    where = f"{base}\\FirewallRules"
    rules = win.key(system, where)
    for value in win.values(system, rules, where).values() if rules is not None else ():
        finding = _judge(win, where, value.name, text_of(value))
        if finding is not None:
            yield finding


def _judge(win: WindowsTree, where: str, name: str, text: str) -> Finding | None:
    fields = parse_rule(text)
    first = {k: v[0] for k, v in fields.items()}
    if first.get("Action") != "Allow" or first.get("Active", "").upper() != "TRUE" or first.get("Dir") != "In":
        return None
    ports = [p for port_list in fields.get("LPort", ()) for p in port_list.split(",")]
    services = sorted({_REMOTE_PORTS[p] for p in ports if p in _REMOTE_PORTS})
    app = first.get("App", "")
    program = program_of(app) if app else ""
    writable = bool(program) and place_of(program) == "user-writable"
    tool = tool_named(app) if app else None
    if not services and not writable and tool is None:
        return None
    severity = Severity.HIGH if tool is not None or (services and writable) else Severity.MEDIUM
    what = ", ".join(services) or tool or "a program in a user-writable folder"
    system = win.machine_hive("SYSTEM")
    assert system is not None
    return registry_finding(
        win, system, where, name, text,
        rule="windows.firewall-inbound", category="remote-access-tool", severity=severity,
        title=f"firewall allows inbound {what} ({first.get('Name', name)})", technique=_TECH,
        remedy="Delete or disable the rule unless the crane profile lists this remote access; inbound service access goes through the port's gateway.",
        extra={"ports": ports, "app": app},
    )
