"""Out-of-band connectivity: cellular modems and dial-up links that bypass the crane gateway.

Finds NetworkManager GSM/CDMA connections, ModemManager, ppp peers and chat scripts with AT
commands and APNs, wvdial, QMI/MBIM tooling, SIM PINs, and udev/usb_modeswitch rules that flip
a USB stick into modem mode. Any of these on a crane is an uplink nobody contracted for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.checks.base import FileView, ScanContext, active_lines, grep
from cranewatch.forensics.image import Image
from cranewatch.model import Finding, Severity

NAME = "oob"
_TECH = ("T0883", "T0884")
_REMEDY = "Remove the modem configuration and the modem itself; the crane's only uplink is its gateway."

_AT_PATTERNS = (
    ("apn", re.compile(r"AT\+CGDCONT\s*=|\bapn\s*[=:]|\bAPN\b\s*=", re.I)),
    ("dial", re.compile(r"ATD\s*\*99|ATDT\s*\*99|\*99\*\*\*\d#|\*99#")),
    ("sim-pin", re.compile(r"AT\+CPIN\s*=|\bpin\s*=\s*\d{4,8}\b", re.I)),
)
_AT_TRIGGER = re.compile(r"cgdcont|apn|\*99|cpin|pin", re.I)  # on every line an _AT_PATTERNS one matches
_NM_GSM = re.compile(r"^\s*type\s*=\s*(gsm|cdma)\s*$|^\s*\[(gsm|cdma)\]\s*$", re.I | re.M)
_PPP_MODEM = re.compile(r"/dev/(ttyUSB|ttyACM|cdc-wdm|ttyS\d|ttyHS)|\bconnect\s+[\"']?/usr/sbin/chat|\bchat\s+-[vVsSf]", re.I)
_MODESWITCH = re.compile(r"usb_modeswitch|MessageContent\s*=|TargetVendor", re.I)
_UDEV_DIALER = re.compile(
    r"\b(RUN|PROGRAM)\+?=.*\b(pppd|pon|wvdial|chat|mmcli|qmi-network|mbim-network|qmicli|uqmi|comgt|sakis3g|"
    r"ifup\s+\S*(ppp|wwan|lte|gsm)|nmcli\b.*\bup)\b"
)
_MODEMMANAGER_UNITS = ("ModemManager.service", "dbus-org.freedesktop.ModemManager1.service")
_MODEM_FILE = re.compile(r"apn|modem|sim|lte|gsm|wwan|cellular|[345]g|umts|ppp", re.I)


def names_of(hits: list[tuple[str, int, str]]) -> set[str]:
    return {name for name, _, _ in hits}


_MODEM_TOOLS = re.compile(
    r"^(usr/)?(s?bin|local/s?bin)/(ModemManager|mmcli|qmicli|qmi-network|mbimcli|mbim-network|uqmi|"
    r"usb_modeswitch|wvdial|pppd|comgt|gcom|sakis3g|atinout)$"
)


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    path = view.path
    if _MODEM_TOOLS.match(path):
        tool = path.rsplit("/", 1)[-1]
        yield ctx.finding(
            rule="oob.modem-tool", category="oob-connectivity", severity=Severity.MEDIUM,
            title=f"cellular modem tool {tool} installed", path=path, technique=_TECH,
            remedy=f"Remove {tool} unless the contract names a modem; it exists to drive one.",
        )
        return
    if view.kind != "text":
        return
    if path.startswith("etc/NetworkManager/system-connections/") and _NM_GSM.search(view.text):
        apn = next(((n, line) for n, line in active_lines(view.lines) if line.lower().startswith("apn")), None)
        yield ctx.finding(
            rule="oob.nm-gsm-connection", category="oob-connectivity", severity=Severity.HIGH,
            title="NetworkManager cellular (GSM/LTE) connection" + (f" with {apn[1]}" if apn else ""),
            path=path, line=apn[0] if apn else None, excerpt_text=apn[1] if apn else None,
            technique=_TECH, remedy=_REMEDY,
        )
        return
    if path.startswith("etc/ModemManager/") or path.startswith(("etc/ppp/peers/", "etc/wvdial")):
        hit = next((n_l for n_l in active_lines(view.lines) if _PPP_MODEM.search(n_l[1]) or "Modem" in n_l[1]), None)
        if hit is not None or path.startswith("etc/wvdial"):
            number, line = hit or (None, None)
            yield ctx.finding(
                rule="oob.ppp-peer", category="oob-connectivity", severity=Severity.HIGH,
                title="dial-up/cellular link configured (ppp peer, wvdial or ModemManager)",
                path=path, line=number, excerpt_text=line, technique=_TECH, remedy=_REMEDY,
            )
            return
    if not view.in_config_scope:
        return
    hits = list(grep(view, _AT_PATTERNS, _AT_TRIGGER))
    at_command = any("AT" in line.upper() and ("+" in line or "*99" in line) for _, _, line in hits)
    if hits and (at_command or "chat" in path or "ppp" in path):
        names = {name for name, _, _ in hits}
        first = next((h for h in hits if h[0] == "apn"), hits[0])
        severity = Severity.CRITICAL if "sim-pin" in names else Severity.HIGH
        yield ctx.finding(
            rule="oob.chat-script", category="oob-connectivity", severity=severity,
            title="modem chat script with AT commands (" + ", ".join(sorted(names)) + ")",
            path=path, line=first[1], excerpt_text=first[2], technique=_TECH, remedy=_REMEDY,
        )
        return
    if hits and _MODEM_FILE.search(path.rsplit("/", 1)[-1]) and names_of(hits) & {"apn", "sim-pin"}:
        first = hits[0]
        yield ctx.finding(
            rule="oob.apn-file", category="oob-connectivity", severity=Severity.HIGH,
            title="cellular APN or SIM PIN configuration", path=path, line=first[1], excerpt_text=first[2],
            technique=_TECH, remedy=_REMEDY,
        )
        return
    if "udev" in path and "rules" in path:
        dialer = next(((n, line) for n, line in active_lines(view.lines) if _UDEV_DIALER.search(line)), None)
        if dialer:
            yield ctx.finding(
                rule="oob.udev-dialer", category="oob-connectivity", severity=Severity.HIGH,
                title="udev rule brings up a cellular or dial-up link when a device appears",
                path=path, line=dialer[0], excerpt_text=dialer[1], technique=_TECH, remedy=_REMEDY,
            )
            return
    if ("udev" in path and "rules" in path) or path.startswith("etc/usb_modeswitch"):
        match = next(((n, line) for n, line in active_lines(view.lines) if _MODESWITCH.search(line)), None)
        if match:
            yield ctx.finding(
                rule="oob.modeswitch", category="oob-connectivity", severity=Severity.HIGH,
                title="USB mode-switch rule turns a USB stick into a cellular modem",
                path=path, line=match[0], excerpt_text=match[1], technique=_TECH, remedy=_REMEDY,
            )


def check_image(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    """ModemManager enabled: it brings up any modem plugged in, at every boot."""
    for path, entry in image.entries.items():
        if entry.type == "symlink" and path.startswith("etc/systemd/system/") and path.endswith(_MODEMMANAGER_UNITS):
            yield ctx.finding(
                rule="oob.modemmanager-enabled", category="oob-connectivity", severity=Severity.HIGH,
                title="ModemManager starts at boot (any cellular modem plugged in is brought up)",
                path=path, technique=_TECH, values={"link": entry.link},
                remedy="Disable and remove ModemManager unless the contract names a modem.",
            )
            return
