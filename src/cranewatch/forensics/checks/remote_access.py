"""Remote-access tools: remote desktops, tunnels, VPNs pointing outside, clear-text logins.

TeamViewer, AnyDesk, RustDesk and VNC servers by their files and configuration; frp, ngrok,
chisel and reverse-SSH tunnels by binaries, configs and command lines; OpenVPN and WireGuard
configurations whose peer is outside the crane and terminal networks; telnet, rsh and ftp
services enabled through inetd or systemd.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.base import FileView, ScanContext, active_lines, grep
from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.model import Finding, Severity

NAME = "remote_access"
_TECH = ("T0822", "T0886")

# Tool name → path pattern of its binaries, install directories or configuration.
_TOOL_PATHS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("TeamViewer", re.compile(r"(^|/)(teamviewer[^/]*|TeamViewer[^/]*)(/|$)", re.I)),
    ("AnyDesk", re.compile(r"(^|/)anydesk[^/]*(/|$)", re.I)),
    ("RustDesk", re.compile(r"(^|/)rustdesk[^/]*(/|$)", re.I)),
    ("VNC server", re.compile(r"(^|/)(x11vnc|Xvnc|vncserver|Xtightvnc|tigervncserver|x0vncserver|vino-server|wayvnc)$")),
    ("frp tunnel", re.compile(r"(^|/)(frpc|frps)(\.(ini|toml|ya?ml|json))?$")),
    ("ngrok tunnel", re.compile(r"(^|/)(ngrok|\.?ngrok2?/ngrok\.yml|ngrok\.yml)$")),
    ("chisel tunnel", re.compile(r"(^|/)chisel$")),
    ("autossh tunnel", re.compile(r"(^|/)autossh$")),
)
_BIN_DIR = re.compile(r"^(usr/|usr/local/)?s?bin/|^opt/|^usr/lib/|^etc/")
_TEXT_PATTERNS = (
    # the gap stops at the next ssh word (linear on "ssh ssh ssh ..."; that word matches instead)
    ("reverse-ssh", re.compile(r"\b(auto)?ssh\b(?:(?!\b(?:auto)?ssh\b)[^\n#])*\s-[a-zA-Z]*R\s*\d+(:[\w.\-]+)?:\d+")),
    ("frp-server", re.compile(r"^\s*(server_addr|serverAddr)\s*[=:]", re.I)),
    ("ngrok-token", re.compile(r"^\s*authtoken\s*:", re.I)),
    ("chisel-client", re.compile(r"\bchisel\s+client\b")),
)
_AUTOSTART = re.compile(r"^(etc/xdg/autostart/|(root|home/[^/]+)/\.config/autostart/|usr/share/gnome/autostart/).*\.desktop$")
_AUTOSTART_TOOL = re.compile(
    r"^(Exec|TryExec)\s*=.*\b(x11vnc|vncserver|x0vncserver|wayvnc|vino-server|teamviewer|anydesk|rustdesk|ngrok|frpc|"
    r"chisel|autossh)\b", re.I
)
_TEXT_TRIGGER = re.compile(r"ssh|server_?addr|authtoken|chisel", re.I)  # on every line a _TEXT_PATTERNS one matches
_INETD_CLEAR = re.compile(r"^(telnet|shell|login|exec|ftp|tftp|rsh|rlogin)\s", re.I)
_CLEAR_TEXT_UNITS = re.compile(r"^(etc|(usr/)?lib)/systemd/system/.*(telnet|rsh|rlogin|rexec|vsftpd|proftpd|tftp)[^/]*\.(service|socket)$")


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    path = view.path
    if _BIN_DIR.match(path):
        for tool, pattern in _TOOL_PATHS:
            if pattern.search(path):
                yield ctx.finding(
                    rule="remote-access.tool", category="remote-access-tool", severity=Severity.HIGH,
                    title=f"{tool} installed ({path.rsplit('/', 1)[-1]})", path=path, technique=_TECH,
                    key=(tool,), remedy=f"Remove {tool}; vendor access, if any, goes through the port's own remote-access gateway.",
                )
                return
    if _CLEAR_TEXT_UNITS.match(path):
        yield ctx.finding(
            rule="remote-access.clear-text-service", category="remote-access-tool", severity=Severity.HIGH,
            title="clear-text login or file service unit (telnet/rsh/ftp)", path=path, technique=_TECH,
            remedy="Remove the service; use SSH with keys held by the port.",
        )
        return
    if view.kind != "text" or not view.in_config_scope:
        return
    if path == "etc/inetd.conf" or path.startswith("etc/xinetd.d/"):
        for number, line in active_lines(view.lines):
            if _INETD_CLEAR.match(line) or re.search(r"disable\s*=\s*no", line):
                yield ctx.finding(
                    rule="remote-access.clear-text-service", category="remote-access-tool", severity=Severity.HIGH,
                    title="clear-text login or file service enabled in inetd", path=path, line=number,
                    excerpt_text=line, technique=_TECH, remedy="Disable the service; use SSH with keys held by the port.",
                )
                return
    if _AUTOSTART.match(path):
        start = next(((n, line) for n, line in active_lines(view.lines) if _AUTOSTART_TOOL.search(line)), None)
        if start:
            yield ctx.finding(
                rule="remote-access.autostart", category="remote-access-tool", severity=Severity.HIGH,
                title="desktop session starts a remote-access tool at log-in (XDG autostart)",
                path=path, line=start[0], excerpt_text=start[1], technique=_TECH,
                remedy="Remove the entry and the tool; vendor access, if any, goes through the port's own gateway.",
            )
            return
    if path.startswith("etc/openvpn/") or path.endswith(".ovpn") or path.startswith("etc/wireguard/"):
        yield from _vpn(view, ctx)
        return
    for name, number, line in grep(view, _TEXT_PATTERNS, _TEXT_TRIGGER):
        yield ctx.finding(
            rule=f"remote-access.{name}", category="remote-access-tool", severity=Severity.HIGH,
            title={"reverse-ssh": "reverse SSH tunnel opens the crane to an outside host",
                   "frp-server": "frp tunnel client configuration", "ngrok-token": "ngrok tunnel with an auth token",
                   "chisel-client": "chisel tunnel client command"}[name],
            path=path, line=number, excerpt_text=line, technique=_TECH, key=(name,),
            remedy="Remove the tunnel; it bypasses the crane firewall.",
        )
        return


def _vpn(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    for number, line in active_lines(view.lines):
        match = re.match(r"^(remote\s+|Endpoint\s*=\s*)(\[?[\w.:\-]+?\]?)(?::\d+)?(\s|$)", line, re.I)
        if not match:
            continue
        host = match.group(2).strip("[]")
        zone = classify_host(host, ctx.endpoints)
        if zone in ("public", "private"):
            yield ctx.finding(
                rule="remote-access.vpn-outside", category="remote-access-tool",
                severity=Severity.HIGH if zone == "public" else Severity.MEDIUM,
                title=f"VPN tunnel to {zone} peer {host}", path=view.path, line=number, excerpt_text=line,
                technique=_TECH, key=(host,), remedy="Remove the VPN or name the peer in the crane profile's allowed endpoints.",
            )
