"""Installed software of a Windows tree, from the Uninstall keys, for the inventory and the SBOM.

``SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*`` (64-bit programs), its
``WOW6432Node`` twin (32-bit programs) and each user's own ``Uninstall`` key in ``NTUSER.DAT``:
one package per entry with a ``DisplayName`` (``DisplayVersion``, ``Publisher`` as the supplier),
updates and hotfixes of another entry (``ParentKeyName``, ``ReleaseType``) left out. Windows
software has no package-URL type of its own, so the SBOM names it ``pkg:generic/NAME@VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from cranewatch.forensics.checks.base import ScanContext
from cranewatch.forensics.image import Image
from cranewatch.forensics.packages import Package
from cranewatch.forensics.windows.tree import HIVE_ERRORS, Hive, WindowsTree, int_of, text_of

UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
_UPDATE_TYPES = {"update", "hotfix", "security update", "service pack"}


@dataclass(frozen=True, slots=True)
class InstalledProgram(Package):
    """A program from an Uninstall key (``manager`` is ``windows``)."""

    @property
    def purl(self) -> str:
        text = f"pkg:generic/{quote(self.name, safe='')}" + (f"@{quote(self.version, safe='')}" if self.version else "")
        return text + (f"?arch={self.arch}" if self.arch else "")


def installed_programs(image: Image) -> tuple[Package, ...]:
    """The programs the Uninstall keys of a Windows tree list (nothing without regipy or hives)."""
    win = WindowsTree(image, ScanContext(crane=None, entries=image.entries, owner={}, md5={}, conffiles={}))
    found: list[Package] = []
    try:
        software = win.machine_hive("SOFTWARE")
        if software is not None:
            found += _entries(win, software, UNINSTALL, "x64")
            found += _entries(win, software, f"Wow6432Node\\{UNINSTALL}", "x86")
        for _user, hive in win.user_hives():
            found += _entries(win, hive, f"Software\\{UNINSTALL}", None)
    except HIVE_ERRORS as exc:
        win.problem("Windows", f"installed programs not fully read ({exc})")
    finally:
        image.warnings.extend(p for p in win.problems if p not in image.warnings)
        win.close()
    unique = {(p.name, p.version, p.arch, p.path): p for p in found}
    return tuple(sorted(unique.values(), key=lambda p: (p.name.lower(), p.version)))


def _entries(win: WindowsTree, hive: Hive, where: str, arch: str | None) -> list[Package]:
    key = win.key(hive, where)
    if key is None:
        return []
    out: list[Package] = []
    for sub in win.subkeys(hive, key, where):
        values = win.values(hive, sub, f"{where}\\{sub.name}")
        name = text_of(values.get("displayname")).strip()
        if not name or text_of(values.get("parentkeyname")) or text_of(values.get("releasetype")).lower() in _UPDATE_TYPES:
            continue
        if int_of(values.get("systemcomponent")) == 1 and not text_of(values.get("displayversion")):
            continue  # components Windows hides from Programs and Features and that name no version
        out.append(InstalledProgram(
            manager="windows", name=name, version=text_of(values.get("displayversion")).strip(), arch=arch,
            path=f"{hive.path}", maintainer=text_of(values.get("publisher")).strip() or None,
        ))
    return out
