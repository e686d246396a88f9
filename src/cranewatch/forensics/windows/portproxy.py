"""netsh interface portproxy rules: the Windows computer relays connections to another host.

``SYSTEM\\CurrentControlSet\\Services\\PortProxy\\v4tov4\\tcp`` (and v4tov6, v6tov4, v6tov6)
holds one value per rule, ``listenaddress/listenport`` = ``connectaddress/connectport``. A
rule to a host on the crane network lets whoever reaches this computer talk to the PLC through
it: critical. Any other rule is a hidden relay: high.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_portproxy"


def check(win: WindowsTree) -> Iterator[Finding]:
    system = win.machine_hive("SYSTEM")
    if system is None:
        return
    for family in ("v4tov4", "v4tov6", "v6tov4", "v6tov6"):
        where = f"{win.control_set(system)}\\Services\\PortProxy\\{family}\\tcp"
        key = win.key(system, where)
        if key is None:
            continue
        for rule in win.values(system, key, where).values():
            target = text_of(rule)
            host = target.rsplit("/", 1)[0] if "/" in target else target
            zone = classify_host(host, win.ctx.endpoints)
            to_crane = zone == "crane-lan"
            yield registry_finding(
                win, system, where, rule.name, target,
                rule="windows.portproxy", category="backdoor",
                severity=Severity.CRITICAL if to_crane else Severity.HIGH,
                title=f"port proxy relays {rule.name} to {target}" + (" on the crane network" if to_crane else ""),
                remedy=(f"Remove the rule (netsh interface portproxy delete {family} listenport=... listenaddress=...) "
                        "and block the relay at the crane firewall; nothing should reach the PLC through a workstation."),
                technique=("T0886", "T1090"), extra={"zone": zone},
            )
