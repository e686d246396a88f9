"""The Windows checks, one module each; ``WINDOWS_CHECKS`` lists them, ``run`` runs them.

Adding a check is one module plus one line here. Each takes a ``WindowsTree`` and yields
findings; what cannot be read (a corrupted hive, a task that does not parse) becomes a located
problem in the image's warnings and the other checks carry on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cranewatch.forensics.checks.base import ScanContext
from cranewatch.forensics.image import Image
from cranewatch.forensics.windows import (
    active_setup,
    amcache,
    autologon,
    bam,
    com_hijack,
    eventlogs,
    firewall,
    hosts,
    ifeo,
    portproxy,
    powershell_profiles,
    prefetch,
    programs,
    proxy,
    rdp,
    remote_passwords,
    remote_tools,
    run_keys,
    sam,
    services,
    shimcache,
    startup,
    tasks,
    unattend,
    vpn,
    winlogon,
    wmi,
    wwan,
)
from cranewatch.forensics.windows.tree import HIVE_ERRORS, WindowsTree
from cranewatch.model import Finding

WindowsCheck = Callable[[WindowsTree], Iterator[Finding]]

WINDOWS_CHECKS: tuple[tuple[str, WindowsCheck], ...] = (
    (services.NAME, services.check),
    (run_keys.NAME, run_keys.check),
    (winlogon.NAME, winlogon.check),
    (active_setup.NAME, active_setup.check),
    (ifeo.NAME, ifeo.check),
    (rdp.NAME, rdp.check),
    (firewall.NAME, firewall.check),
    (portproxy.NAME, portproxy.check),
    (remote_tools.NAME, remote_tools.check),
    (remote_passwords.NAME, remote_passwords.check),
    (amcache.NAME, amcache.check),
    (shimcache.NAME, shimcache.check),
    (bam.NAME, bam.check),
    (prefetch.NAME, prefetch.check),
    (autologon.NAME, autologon.check),
    (sam.NAME, sam.check),
    (tasks.NAME, tasks.check),
    (startup.NAME, startup.check),
    (programs.NAME, programs.check),
    (powershell_profiles.NAME, powershell_profiles.check),
    (unattend.NAME, unattend.check),
    (hosts.NAME, hosts.check),
    (wwan.NAME, wwan.check),
    (vpn.NAME, vpn.check),
    (proxy.NAME, proxy.check),
    (eventlogs.NAME, eventlogs.check),
    (com_hijack.NAME, com_hijack.check),
    (wmi.NAME, wmi.check),
)


def run(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    """Every Windows check over ``image``, a Windows tree.

    Problems are appended to ``image.warnings`` as ``image:path: what``; a check that breaks
    on a hive regipy cannot walk is reported and the next check runs.
    """
    win = WindowsTree(image, ctx)
    try:
        for name, check in WINDOWS_CHECKS:
            try:
                yield from check(win)
            except HIVE_ERRORS as exc:
                win.problem("Windows", f"check {name} stopped on unreadable registry data ({exc})")
    finally:
        image.warnings.extend(p for p in win.problems if p not in image.warnings)
        win.close()
