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
_COMMANDS: tuple[tuple[str, Severity, str, re.Pattern[str]], ...] = (
    ("reverse-shell", Severity.CRITICAL, "reverse shell",
     re.compile(r"/dev/(tcp|udp)/[\w.\-]+/\d+|\b(nc|ncat|netcat)\b[^|;&]*\s-[a-z]*[ec]\s|"
                r"\bbash\s+-i\s*>&|socat\b[^\n]*\bexec:|\bpty\.spawn\(|socket\.socket\([^)]*\).*connect|"
                r"mkfifo\b[^\n]*\|\s*(nc|ncat|netcat)\b|\bsh\s+-i\b[^\n]*\|\s*(nc|ncat)\b", re.I)),
    ("download-exec", Severity.HIGH, "downloads and runs code",
     re.compile(r"\b(curl|wget|fetch)\b[^|;\n]*\|\s*(sudo\s+)?(ba|da|z)?sh\b|"
                r"\b(curl|wget)\b[^;\n]*&&\s*(ba)?sh\s|(ba)?sh\s+-c\s+[\"']?\$\((curl|wget)\b", re.I)),
    ("encoded-exec", Severity.HIGH, "decodes a hidden command and runs it",
     re.compile(r"base64\s+(-d|--decode)[^|\n]*\|\s*(ba)?sh\b|echo\s+[A-Za-z0-9+/=]{40,}\s*\|\s*base64|"
                r"\beval\s+\"?\$\(\s*echo\s+[A-Za-z0-9+/=]{20,}", re.I)),
    ("preload-env", Severity.HIGH, "preloads a library into every program it starts",
     re.compile(r"\bLD_PRELOAD\s*=")),
    ("network-tool", Severity.MEDIUM, "runs a network tool at start-up",
     re.compile(r"(^|[\s;|&=/\"'])(nc|ncat|netcat|socat|telnet|curl|wget|ssh|autossh|frpc|ngrok|chisel)(\s|$)")),
)

_PRELOAD = "etc/ld.so.preload"
_MODULE_FILES = re.compile(r"^(etc/modules|etc/modules-load\.d/.*|(usr/)?lib/modules-load\.d/.*)$")
# Modules that give a crane an uplink or a covert channel when loaded at boot.
_RISKY_MODULES = re.compile(r"^(qmi_wwan|cdc_mbim|cdc_ncm|option|usb_wwan|huawei_cdc_ncm|sierra(_net)?|rndis_host|ppp_generic|ppp_async|wireguard|tun)$")


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
                yield ctx.finding(
                    rule="persistence.boot-module", category="persistence", severity=Severity.MEDIUM,
                    title=f"kernel module {module} loaded at boot (modem, tunnel or VPN driver)",
                    path=view.path, line=number, excerpt_text=line, technique=("T0883",), key=(module,),
                    remedy="Ask the vendor why this driver is needed; a crane PC needs no modem or tunnel driver.",
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
    yield ctx.finding(
        rule=f"persistence.{name}", category="persistence", severity=severity,
        title=f"start-up file {what}", path=view.path, line=number, excerpt_text=line,
        technique=("T0807", "T0869"),
        remedy="Remove the entry and find out who planted it; re-image if its origin is unknown.",
    )
