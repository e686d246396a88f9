"""Windows collections: a copy of a Windows system drive (``C:\\`` as triage tools lay it out).

``check_windows`` runs the checks of ``windows.checks`` when the tree holds
``Windows/System32/config`` (any case): registry hives through regipy, task and answer-file XML
through a hardened parser, start-up folders and the hosts file. regipy is the optional extra
``windows``: without it a Windows tree gets a warning saying so and the generic checks only.
"""

from __future__ import annotations

from collections.abc import Iterator

from cranewatch.forensics.checks.base import ScanContext
from cranewatch.forensics.image import Image
from cranewatch.forensics.packages import Package
from cranewatch.model import Finding

__all__ = ["check_windows", "is_windows", "windows_programs"]

CONFIG_DIR = "windows/system32/config"


def is_windows(image: Image) -> bool:
    """The tree holds ``Windows/System32/config`` (any case): a copy of a Windows system drive."""
    return any(path.lower() == CONFIG_DIR and e.type == "dir" for path, e in image.entries.items())


def check_windows(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    """The Windows checks over ``image`` (nothing unless it is a Windows tree)."""
    if not is_windows(image):
        return
    try:  # imported here: the registry reader is an optional extra
        from cranewatch.forensics.windows.checks import run
    except ImportError as exc:
        image.warnings.append(
            f"{image.source}: a Windows tree, but its registry cannot be read ({exc}); "
            "install the 'windows' extra (pip install 'cranewatch[windows]') for the Windows checks"
        )
        return
    yield from run(image, ctx)


def windows_programs(image: Image) -> tuple[Package, ...]:
    """The installed programs of a Windows tree's Uninstall keys (none without the registry reader)."""
    try:
        from cranewatch.forensics.windows.installed import installed_programs
    except ImportError:
        return ()  # check_windows says why the registry is not read
    return installed_programs(image)
