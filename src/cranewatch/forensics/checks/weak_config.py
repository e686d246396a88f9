"""Weak configuration: sshd, sudoers, PAM, world-writable start-up paths, SUID/SGID programs.

sshd settings that let root or empty passwords in or forward ports; sudo rules without a
password; PAM stacks that accept anyone; start-up files or directories anyone can write; and
SUID/SGID programs no package installed (a classic way back to root).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator

from cranewatch.forensics.checks.base import FileView, ScanContext, active_lines
from cranewatch.forensics.image import Image
from cranewatch.model import Finding, Severity

NAME = "weak_config"

_SSHD = re.compile(r"^etc/ssh/sshd_config(\.d/[^/]+\.conf)?$")
# keyword → (bad values, severity, why)
_SSHD_RULES: dict[str, tuple[tuple[str, ...], Severity, str]] = {
    "permitrootlogin": (("yes",), Severity.HIGH, "root may log in over SSH with a password"),
    "permitemptypasswords": (("yes",), Severity.CRITICAL, "accounts without a password may log in over SSH"),
    "passwordauthentication": (("yes",), Severity.MEDIUM, "SSH accepts passwords (guessable) instead of keys only"),
    "gatewayports": (("yes", "clientspecified"), Severity.MEDIUM, "SSH forwards ports to other hosts"),
    "permittunnel": (("yes", "point-to-point", "ethernet"), Severity.MEDIUM, "SSH may carry a VPN tunnel"),
    "allowtcpforwarding": (("yes", "all", "remote"), Severity.LOW, "SSH TCP forwarding allowed (tunnels through the crane)"),
}
_SUDOERS = re.compile(r"^etc/sudoers(\.d/[^/]+)?$")
_PAM = re.compile(r"^etc/pam\.d/[^/]+$")
_STARTUP_DIRS = re.compile(
    r"^(etc/(init\.d|rc[0-6S]\.d|cron\.(d|hourly|daily|weekly|monthly)|systemd/system|profile\.d|udev/rules\.d|"
    r"xdg/autostart)|(usr/)?lib/systemd/system|var/spool/cron(/crontabs)?|usr/local/s?bin|(usr/)?s?bin)(/|$)"
)


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    if view.kind != "text":
        return
    if _SSHD.match(view.path):
        yield from _sshd(view, ctx)
    elif _SUDOERS.match(view.path):
        for number, line in active_lines(view.lines):
            if "NOPASSWD" in line:
                everything = re.search(r"NOPASSWD\s*:\s*ALL\b", line) is not None
                yield ctx.finding(
                    rule="config.sudo-nopasswd", category="weak-config",
                    severity=Severity.HIGH if everything else Severity.MEDIUM,
                    title="sudo without a password" + (" for every command" if everything else ""),
                    path=view.path, line=number, excerpt_text=line, technique=("T0859",), key=(number,),
                    remedy="Require a password (remove NOPASSWD) or limit the rule to the one command needed.",
                )
    elif _PAM.match(view.path):
        for number, line in active_lines(view.lines):
            fields = line.split()
            if len(fields) >= 3 and fields[0].lstrip("-") == "auth" and fields[1] == "sufficient" and fields[2] == "pam_permit.so":
                yield ctx.finding(
                    rule="config.pam-permit", category="weak-config", severity=Severity.CRITICAL,
                    title="PAM accepts any password (auth sufficient pam_permit.so)", path=view.path, line=number,
                    excerpt_text=line, technique=("T0859",),
                    remedy="Restore the distribution's PAM stack (dpkg-reconfigure / reinstall libpam-runtime).",
                )
                return


def _sshd(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    seen: set[str] = set()
    for number, line in active_lines(view.lines):
        if line.lower().startswith("match "):
            break  # first value wins in sshd, and Match blocks apply only to some clients
        keyword, _, value = line.partition(" ")
        keyword = keyword.lower()
        if keyword in seen or keyword not in _SSHD_RULES:
            continue
        seen.add(keyword)
        bad, severity, why = _SSHD_RULES[keyword]
        if value.strip().lower() in bad:
            yield ctx.finding(
                rule=f"config.sshd-{keyword}", category="weak-config", severity=severity,
                title=f"sshd: {why}", path=view.path, line=number, excerpt_text=line, technique=("T0822",),
                key=(keyword,), remedy=f"Set {line.split()[0]} to a safe value (e.g. 'no') in sshd_config.",
            )


def check_image(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    for entry in image.entries.values():
        world_writable = entry.mode & stat.S_IWOTH and not entry.mode & stat.S_ISVTX
        if world_writable and entry.type != "symlink" and _STARTUP_DIRS.match(entry.path):
            yield ctx.finding(
                rule="config.world-writable-startup", category="weak-config", severity=Severity.HIGH,
                title=f"anyone can write this start-up {'directory' if entry.type == 'dir' else 'file'}",
                path=entry.path, values={"mode": oct(entry.mode)}, technique=("T0807",),
                remedy=f"chmod o-w /{entry.path}; whoever writes here runs code as root at boot.",
            )
        if entry.is_suid:
            owner = ctx.owner.get(entry.path)
            bits = "SUID" if entry.mode & stat.S_ISUID else "SGID"
            if owner is None:
                yield ctx.finding(
                    rule="config.suid-unowned", category="weak-config",
                    severity=Severity.HIGH if entry.uid == 0 or bits == "SGID" else Severity.MEDIUM,
                    title=f"{bits} program that no package installed (runs as uid {entry.uid})",
                    path=entry.path, values={"mode": oct(entry.mode), "uid": entry.uid}, technique=("T0859",),
                    remedy=f"Remove the {bits} bit (chmod u-s,g-s) or the program; ask the vendor why it needs it.",
                )
            elif entry.mode & stat.S_IWOTH:
                yield ctx.finding(
                    rule="config.suid-writable", category="weak-config", severity=Severity.CRITICAL,
                    title=f"{bits} program anyone can overwrite", path=entry.path,
                    values={"mode": oct(entry.mode)}, remedy="chmod o-w; reinstall the package.",
                )
