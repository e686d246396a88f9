"""Integrity: what separates the vendor's additions from the distribution.

Package files whose content differs from dpkg's recorded md5sum (a replaced binary or script),
changed configuration files (reported quietly: admins change them), and files in system paths
that no package installed — executables, systemd units, kernel modules and PAM modules get a
severity of their own, everything else is listed for review. Executables in temporary
directories are flagged wherever they come from.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator

from cranewatch.forensics.checks.base import FileView, ScanContext
from cranewatch.forensics.elf import elf_end
from cranewatch.forensics.image import Image
from cranewatch.model import Finding, Severity

NAME = "integrity"

_SYSTEM = re.compile(r"^(usr/|bin/|sbin/|lib\w*/|etc/systemd/|etc/init\.d/)")
_SKIP = re.compile(
    r"^(usr/share/(info/dir|mime/|icons/.*cache|fonts/.*cache|glib-2\.0/schemas/gschemas\.compiled)|"
    r"usr/lib/(\w+-linux-gnu/)?(gconv/gconv-modules\.cache|gdk-pixbuf.*cache|locale/locale-archive)|"
    r"usr/lib/python3[^/]*/.*__pycache__/|usr/lib/locale/|lib/apk/db/)|\.pyc$"
)
_UNIT = re.compile(r"^(etc|usr/lib|lib)/systemd/(system|user)/.*\.(service|timer|socket|path|mount)$")
_KMOD = re.compile(r"^(usr/)?lib/modules/.*\.ko(\.(xz|zst|gz))?$")
_PAM_MODULE = re.compile(r"^(usr/)?lib\w*/(.*/)?security/pam_[^/]+\.so$")
_TMP = re.compile(r"^(tmp|var/tmp|dev/shm|run|dev)/")


_CRITICAL_KIND = re.compile(
    r"(^|/)(s?bin|libexec)/|\.so(\.[\d.]+)?$|(^|/)security/pam_|\.ko(\.(xz|zst|gz))?$|"
    r"^(etc|usr/lib|lib)/systemd/|^etc/(init\.d|rc\.local|cron|profile|bash\.bashrc|ld\.so)|^usr/lib/udev/|^lib/udev/"
)


def _differs_from_genuine(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    path, owner = view.path, view.owner
    conffile = path in ctx.conffiles or path in ctx.config
    runs = view.kind == "elf" or view.is_script or bool(view.entry.mode & 0o111) or bool(_CRITICAL_KIND.search(path))
    if conffile:
        # Admins change configuration files: reported quietly, the content checks judge it.
        severity, what = Severity.LOW, "configuration file differs from the genuine package's default"
    else:
        severity = Severity.CRITICAL if runs else Severity.HIGH
        what = f"{'program or library' if runs else 'file'} differs from the genuine package {owner}"
    yield ctx.finding(
        rule="integrity.differs-from-genuine", category="weak-config" if conffile else "backdoor",
        severity=severity, title=what, path=path, technique=() if conffile else ("T0839",),
        values={"package": owner, "genuine_md5": view.genuine_md5, "md5": view.md5},
        remedy=f"Compare with {owner} from the distribution; a replaced distribution file is a trojan until "
        "the vendor proves otherwise. Re-image from a trusted source.",
    )


def _appended_to_program(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    end = elf_end(view.data)
    if end is None or end >= len(view.data):
        return
    owned = view.owner is not None
    yield ctx.finding(
        rule="integrity.elf-appended-data", category="backdoor", severity=Severity.HIGH if owned else Severity.MEDIUM,
        title=f"{len(view.data) - end} bytes appended past the end of the program"
        + (f" (of package {view.owner}, whose programs carry none)" if owned else ""),
        path=view.path, offset=end, excerpt_text=view.data[end : end + 80].decode("latin-1"), technique=("T0839",),
        values={"elf_end": end, "size": len(view.data)},
        remedy="Find out what reads the appended data (configuration, address, a second program); "
        "distribution programs end where their headers say.",
    )


def _changed_from_claim(view: FileView, ctx: ScanContext, values: dict[str, object]) -> Finding:
    return ctx.finding(
        rule="integrity.package-file-changed", category="backdoor", severity=Severity.HIGH,
        title=f"file of package {view.owner} differs from the package's checksum",
        path=view.path, technique=("T0839",), values={"package": view.owner, **values},
        remedy=f"Reinstall {view.owner} and compare the vendor's change with the original; a replaced system file is a trojan until proven otherwise.",
    )


def _config_changed(view: FileView, ctx: ScanContext) -> Finding:
    return ctx.finding(
        rule="integrity.conffile-changed", category="weak-config", severity=Severity.INFO,
        title=f"configuration file of package {view.owner} changed from the package default",
        path=view.path, values={"package": view.owner},
        remedy="Review the change (the other checks report risky settings in it).",
    )


def _differs_from_reference(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    """The known-good image of the same computer holds other content at this path."""
    runs = view.kind == "elf" or view.is_script or bool(view.entry.mode & 0o111) or bool(_CRITICAL_KIND.search(view.path))
    if view.distribution:
        severity, what = Severity.LOW, "file differs from the reference image (it is the distribution's genuine file)"
    elif runs:
        severity, what = Severity.HIGH, "program, library or start-up file differs from the reference image"
    else:
        severity, what = Severity.MEDIUM, "file differs from the reference image"
    yield ctx.finding(
        rule="integrity.differs-from-reference", category="backdoor", severity=severity, title=what, path=view.path,
        technique=() if view.distribution else ("T0839",),
        values={"sha256": view.sha256, "reference_sha256": view.reference_sha256, "package": view.owner},
        remedy="Ask the vendor for the change (release note, package, reason) and compare the two files; an "
        "unexplained change to a commissioned computer is a trojan until proven otherwise.",
    )


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    path = view.path
    if view.genuine_md5 is not None and view.md5 is not None:
        yield from _differs_from_genuine(view, ctx)
    if view.reference_sha256 is not None and view.sha256 is not None and view.reference_sha256 != view.sha256:
        yield from _differs_from_reference(view, ctx)
    if view.kind == "elf" and view.complete and not view.distribution:
        yield from _appended_to_program(view, ctx)
    if view.owner is None:
        return
    if view.md5 is not None:
        recorded = ctx.md5.get(path)
        if recorded is not None and recorded != view.md5:
            yield _changed_from_claim(view, ctx, {"recorded_md5": recorded, "md5": view.md5})
        conf = ctx.conffiles.get(path)
        if conf is not None and conf != view.md5:
            yield _config_changed(view, ctx)
    claim = ctx.digests.get(path)  # rpm's and apk's own checksums
    if claim is not None and view.digest is not None and claim != view.digest:
        yield _config_changed(view, ctx) if path in ctx.config else _changed_from_claim(
            view, ctx, {"recorded": claim, "digest": view.digest})


_STATUS = ("var/lib/dpkg/status", "usr/lib/opkg/status", "var/lib/opkg/status")
_DATABASES = ("lib/apk/db/installed", "var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite",
              "var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages")


def _rewritten_records(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    """The image's checksums that disagree with the genuine package of the claimed version:
    a package database rewritten to match changed files."""
    by_package: dict[tuple[str, str], list[str]] = {}
    for records, where, genuine_records in ((ctx.md5, "md5sums", ctx.genuine_claimed),
                                            (ctx.conffiles, "status", ctx.genuine_claimed),
                                            (ctx.digests, "database", ctx.genuine_digests)):
        for path, recorded in records.items():
            genuine = genuine_records.get(path)
            if genuine is not None and recorded != genuine:
                by_package.setdefault((ctx.owner.get(path, "?"), where), []).append(path)
    for (package, where), paths in sorted(by_package.items()):
        record = next((p for p in _STATUS if p in image.entries), _STATUS[0])
        if where == "database":  # rpm's or apk's
            record = next((p for p in _DATABASES if p in image.entries), _DATABASES[0])
        elif where == "md5sums":
            plain = f"var/lib/dpkg/info/{package}.md5sums"
            record = plain if plain in image.entries else next(
                (p for p in image.entries if p.startswith(f"var/lib/dpkg/info/{package}:") and p.endswith(".md5sums")), plain
            )
        yield ctx.finding(
            rule="integrity.package-records-rewritten", category="backdoor", severity=Severity.HIGH,
            title=f"the image's checksums of {len(paths)} file(s) of {package} disagree with the genuine package",
            path=record, key=(package, where), technique=("T0839",),
            values={"package": package, "files": sorted(paths)[:20]},
            remedy="The package database was edited to match changed files: treat every file it vouches for as "
            "suspect and re-image from a trusted source.",
        )


def check_image(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    if ctx.genuine_claimed or ctx.genuine_digests:
        yield from _rewritten_records(image, ctx)
    if not ctx.owner:
        return  # no package database: every file would be "unowned", which says nothing
    for entry in image.files():
        path = entry.path
        executable = bool(entry.mode & 0o111)
        if _TMP.match(path) and executable:
            yield ctx.finding(
                rule="integrity.tmp-executable", category="backdoor", severity=Severity.HIGH,
                title="executable file in a temporary directory", path=path, values={"mode": oct(entry.mode)},
                technique=("T0807",), remedy="Remove it; nothing legitimate ships executables in temporary directories.",
            )
            continue
        if path in ctx.owner or path in ctx.conffiles or not _SYSTEM.match(path) or _SKIP.search(path):
            continue
        if entry.mode & (stat.S_ISUID | stat.S_ISGID):
            continue  # reported by weak_config as an unowned SUID/SGID program
        if _KMOD.match(path) or _PAM_MODULE.match(path):
            kind, severity = ("kernel module" if _KMOD.match(path) else "PAM module"), Severity.HIGH
        elif _UNIT.match(path):
            kind, severity = "systemd unit", Severity.MEDIUM
        elif executable and re.match(r"^(usr/)?(local/)?s?bin/", path):
            kind, severity = "program in a system path", Severity.MEDIUM
        else:
            kind, severity = "file in a system path", Severity.INFO
        yield ctx.finding(
            rule="integrity.unowned", category="persistence" if kind == "systemd unit" else "backdoor",
            severity=severity, title=f"{kind} that no installed package owns", path=path,
            values={"mode": oct(entry.mode), "size": entry.size},
            remedy="Ask the vendor what installed it and why; compare with the golden image (--reference).",
        )
