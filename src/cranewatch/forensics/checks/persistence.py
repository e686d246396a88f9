"""Persistence: start-up places that run network or shell-spawning commands.

Looks at cron (system and user crontabs), systemd units and timers, rc.local and init.d
scripts, shell start-up files (profile, bashrc), udev rules, XDG autostart entries,
``ld.so.preload`` and the kernel modules loaded at boot. A start-up place is normal; one that
opens a reverse shell, pipes a download into a shell or decodes a base64 blob into a shell is
how backdoors survive a reboot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.base import FileView, ScanContext, active_lines
from cranewatch.model import Finding, Severity

NAME = "persistence"

_STARTUP = re.compile(
    r"^(etc/crontab$|etc/cron\.(d|hourly|daily|weekly|monthly)/|var/spool/cron/|"
    r"etc/systemd/(system|user)/|(usr/)?lib/systemd/(system|user)/|etc/rc\.local$|etc/init\.d/|"
    r"etc/rc[0-6S]\.d/|etc/profile$|etc/profile\.d/|etc/bash\.bashrc$|etc/(zsh/)?zshrc$|"
    r"(root|home/[^/]+)/\.(bashrc|profile|bash_profile|bash_login|zshrc)$|"
    r"etc/(udev|(usr/)?lib/udev)/rules\.d/|(usr/)?lib/udev/rules\.d/|etc/xdg/autostart/|"
    r"etc/inittab$|etc/supervisor/|etc/ld\.so\.preload$|etc/modules$|etc/modules-load\.d/|"
    r"(usr/)?lib/modules-load\.d/|etc/modprobe\.d/|etc/environment$|etc/security/pam_env\.conf$)"
)

# (name, severity, what it is, pattern). Ordered from worst to mildest; one finding per file
# carries the worst hit.
# Linear time on a hostile line (a line of "nc nc nc ..." cost n² steps): where a command word
# is followed by "anything, then X", the anything stops at the next same command word
# (``(?:(?!WORD)[^...])*``): a match from a later word is found from that word, so search()
# answers as before; ``socket.socket(`` is anchored at its first occurrence (a later one can
# match only where the first does).
_COMMANDS: tuple[tuple[str, Severity, str, re.Pattern[str]], ...] = (
    ("reverse-shell", Severity.CRITICAL, "reverse shell",
     re.compile(r"/dev/(tcp|udp)/[\w.\-]+/\d+|\b(nc|ncat|netcat)\b(?:(?!\b(?:nc|ncat|netcat)\b)[^|;&])*\s-[a-z]*[ec]\s|"
                r"\bbash\s+-i\s*>&|socat\b(?:(?!socat\b)[^\n])*\bexec:|\bpty\.spawn\(|"
                r"^(?:(?!socket\.socket\().)*+socket\.socket\([^)]*+\).*connect|"
                r"mkfifo\b(?:(?!mkfifo\b)[^\n])*\|\s*(nc|ncat|netcat)\b|"
                r"\bsh\s+-i\b(?:(?!\bsh\s+-i\b)[^\n])*\|\s*(nc|ncat)\b", re.I)),
    ("download-exec", Severity.HIGH, "downloads and runs code",
     re.compile(r"\b(curl|wget|fetch)\b(?:(?!\b(?:curl|wget|fetch)\b)[^|;\n])*\|\s*(sudo\s+)?(ba|da|z)?sh\b|"
                r"\b(curl|wget)\b(?:(?!\b(?:curl|wget)\b)[^;\n])*&&\s*(ba)?sh\s|"
                r"(ba)?sh\s+-c\s+[\"']?\$\((curl|wget)\b", re.I)),
    ("encoded-exec", Severity.HIGH, "decodes a hidden command and runs it",
     re.compile(r"base64\s+(-d|--decode)(?:(?!base64\s+(?:-d|--decode))[^|\n])*\|\s*(ba)?sh\b|"
                r"echo\s+[A-Za-z0-9+/=]{40,}+\s*\|\s*base64|"
                r"\beval\s+\"?\$\(\s*echo\s+[A-Za-z0-9+/=]{20,}", re.I)),
    ("tunnel", Severity.HIGH, "starts a tunnel to the outside",
     re.compile(r"(^|[\s;|&=/\"'])(autossh|frpc|ngrok|chisel|sshuttle|iodine|ptunnel|openvpn|wg-quick|stunnel4?)(\s|$)|"
                # the gap stops at the next ssh word (linear on "ssh ssh ssh ..."; that word matches instead)
                r"\bssh\b(?:(?!\bssh\b)[^\n#])*\s-[a-zA-Z]*[RD]\s*\d")),
    ("preload-env", Severity.HIGH, "preloads a library into every program it starts",
     re.compile(r"\bLD_PRELOAD\s*=")),
    ("network-tool", Severity.MEDIUM, "runs a network tool at start-up",
     re.compile(r"(^|[\s;|&=/\"'])(nc|ncat|netcat|socat|telnet|curl|wget|ssh|autossh|frpc|ngrok|chisel)(\s|$)")),
)

_PRELOAD = "etc/ld.so.preload"
_MODULE_FILES = re.compile(r"^(etc/modules|etc/modules-load\.d/.*|(usr/)?lib/modules-load\.d/.*)$")
# Modules that give a crane an uplink or a covert channel when loaded at boot.
_RISKY_MODULES = re.compile(r"^(qmi_wwan|cdc_mbim|cdc_ncm|option|usb_wwan|huawei_cdc_ncm|sierra(_net)?|rndis_host|ppp_generic|ppp_async|wireguard|tun)$")


_PACKAGE_UNIT = re.compile(r"^(usr/)?lib/systemd/(system|user)/[^/]+$")


def _enabled(ctx: ScanContext, unit_path: str) -> bool:
    """Whether a ``*.wants``/``*.requires`` link starts the unit (templates by their instances)."""
    unit = unit_path.rsplit("/", 1)[-1]
    if "@" not in unit:
        return unit in ctx.enabled_units
    stem = unit.split("@", 1)[0] + "@"
    return any(name.startswith(stem) for name in ctx.enabled_units)


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    if view.kind != "text" or not _STARTUP.match(view.path):
        return
    if view.path == _PRELOAD:
        lines = list(active_lines(view.lines))
        if lines:
            number, line = lines[0]
            yield ctx.finding(
                rule="persistence.ld-preload", category="persistence", severity=Severity.HIGH,
                title=f"ld.so.preload injects a library into every program: {line}",
                path=view.path, line=number, excerpt_text=line, technique=("T0807",),
                remedy="Remove the entry unless the vendor documents it; preloading is a classic rootkit hook.",
            )
        return
    if _MODULE_FILES.match(view.path):
        for number, line in active_lines(view.lines):
            module = line.split()[0]
            if _RISKY_MODULES.match(module):
                # A modem or tunnel driver loaded at boot is a way out that starts by itself.
                yield ctx.finding(
                    rule="persistence.boot-module", category="persistence", severity=Severity.HIGH,
                    title=f"kernel module {module} loaded at boot (modem, tunnel or VPN driver)",
                    path=view.path, line=number, excerpt_text=line, technique=("T0883",), key=(module,),
                    remedy="Ask the vendor why this driver is needed; a crane PC needs no modem or tunnel driver.",
                )
            elif ctx.owner:
                unowned = [p for p in ctx.kernel_modules.get(module.replace("-", "_"), ()) if p not in ctx.owner]
                if unowned:
                    yield ctx.finding(
                        rule="persistence.unowned-boot-module", category="persistence", severity=Severity.HIGH,
                        title=f"kernel module {module} loaded at boot is in no installed package",
                        path=view.path, line=number, excerpt_text=line, technique=("T0839",), key=(module,),
                        values={"module_files": unowned[:5]},
                        remedy="Find out who built and installed this module; an out-of-tree module loaded at boot "
                        "is how kernel rootkits persist.",
                    )
        return
    worst: tuple[str, Severity, str, int, str] | None = None
    for number, line in active_lines(view.lines):
        for name, severity, what, pattern in _COMMANDS:
            if pattern.search(line):
                if worst is None or severity > worst[1]:
                    worst = (name, severity, what, number, line)
                break
    if worst is None:
        return
    name, severity, what, number, line = worst
    if name == "network-tool" and view.distribution:
        return  # a genuine distribution start-up script fetching updates is not a vendor addition
    if name == "tunnel" and _PACKAGE_UNIT.match(view.path) and not _enabled(ctx, view.path):
        severity, what = Severity.MEDIUM, what + " (a unit that is not enabled)"
    yield ctx.finding(
        rule=f"persistence.{name}", category="persistence", severity=severity,
        title=f"start-up file {what}", path=view.path, line=number, excerpt_text=line,
        technique=("T0807", "T0869"),
        remedy="Remove the entry and find out who planted it; re-image if its origin is unknown.",
    )
