"""Remote Desktop: enabled, without Network Level Authentication, or on a changed port.

``SYSTEM\\CurrentControlSet\\Control\\Terminal Server`` ``fDenyTSConnections`` 0 means RDP
accepts connections; ``WinStations\\RDP-Tcp`` ``UserAuthentication`` 0 turns NLA off (the logon
screen, and any accessibility backdoor on it, is reachable before any credential), and a
``PortNumber`` other than 3389 hides the service from a port scan. Group policy
(``SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services``) overrides both.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.windows.tree import WindowsTree, int_of, registry_finding
from cranewatch.model import Finding, Severity

NAME = "windows_rdp"
_TECH = ("T0822", "T1021.001")
_POLICY = "Policies\\Microsoft\\Windows NT\\Terminal Services"


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    base = f"{win.control_set(system)}\\Control\\Terminal Server"
    server = win.key(system, base)
    if server is None:
        return
    deny = int_of(win.values(system, server, base).get("fdenytsconnections"))
    station_path = f"{base}\\WinStations\\RDP-Tcp"
    station = win.key(system, station_path)
    station_values = win.values(system, station, station_path) if station is not None else {}
    nla = int_of(station_values.get("userauthentication"))
    port = int_of(station_values.get("portnumber"))
    # Group policy wins over the local settings when it sets them.
    software = win.machine_hive("SOFTWARE")
    policy = win.key(software, _POLICY) if software is not None else None
    if software is not None and policy is not None:
        policy_values = win.values(software, policy, _POLICY)
        deny = int_of(policy_values.get("fdenytsconnections")) if "fdenytsconnections" in policy_values else deny
        nla = int_of(policy_values.get("userauthentication")) if "userauthentication" in policy_values else nla
    enabled = deny == 0
    if enabled and nla == 0:
        yield registry_finding(
            win, system, station_path, "UserAuthentication", 0,
            rule="windows.rdp-no-nla", category="weak-config", severity=Severity.HIGH,
            title="Remote Desktop enabled without Network Level Authentication",
            remedy=("Disable Remote Desktop on the crane computer (fDenyTSConnections=1) or at least require NLA "
                    "(UserAuthentication=1); vendor access goes through the port's remote-access gateway."),
            technique=_TECH, extra={"fDenyTSConnections": deny},
        )
    elif enabled:
        yield registry_finding(
            win, system, base, "fDenyTSConnections", 0,
            rule="windows.rdp-enabled", category="remote-access-tool", severity=Severity.MEDIUM,
            title="Remote Desktop accepts connections", technique=_TECH,
            remedy="Disable Remote Desktop unless the crane profile lists who may use it and from where.",
        )
    if port is not None and port != 3389:
        yield registry_finding(
            win, system, station_path, "PortNumber", port,
            rule="windows.rdp-port", category="remote-access-tool", severity=Severity.HIGH if enabled else Severity.MEDIUM,
            title=f"Remote Desktop moved to port {port}", technique=_TECH,
            remedy="Set PortNumber back to 3389 and find who moved it: a changed port hides RDP from port scans and firewall rules.",
        )
