"""The daemons and parts of the reference network, configured and started in their hosts.

Terminal zone: mosquitto (:1883), dnsmasq (:53, forwarding two outside domains to the
outside resolver), chronyd as NTP server (when installed; ``-x``: it never touches the
clock), a syslog receiver. Outside: a resolver (dnsmasq) and an HTTP collector. Crane zone:
the PLC (and, when asked for, two IP cameras), then the CMS, the OCR controller (Modbus,
MQTT, RTSP from the cameras) and the TOS that depend on them. Routers: the crane
gateway (forwarding and NAT to the outside, nftables) and the hidden modem (NAT).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cranewatch.lab import topology

if TYPE_CHECKING:
    from cranewatch.lab.runner import Lab, Part

__all__ = [
    "BEACON_DOMAIN",
    "EXFIL_DOMAIN",
    "configure_routers",
    "start_crane",
    "start_sshd",
    "start_terminal",
]

# Reserved names (RFC 2606): they look like a vendor's telemetry, and resolve only in the lab.
EXFIL_DOMAIN = "telemetry-cdn.example.net"
BEACON_DOMAIN = "update.crane-vendor.example.com"
TERMINAL_NAMES = {
    "tos.terminal.lan": "10.20.0.5", "mqtt.terminal.lan": "10.20.0.6",
    "ntp.terminal.lan": "10.20.0.7", "dns.terminal.lan": "10.20.0.8",
    "syslog.terminal.lan": "10.20.0.9", "ews.terminal.lan": "10.20.0.50",
    "plc.sts07.crane.lan": "10.20.7.10", "ocr.sts07.crane.lan": "10.20.7.20",
    "cms.sts07.crane.lan": "10.20.7.30",
}

GATEWAY_RULES = """
table ip cwlab_gw {
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "eth2" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "eth0" accept comment "crane LAN to terminal and out"
        iifname "eth1" oifname "eth0" accept comment "terminal to crane"
        iifname "eth1" oifname "eth2" accept comment "terminal services out"
        ct status dnat accept comment "port forwards"
    }
}
"""

MODEM_RULES = """
table ip cwlab_modem {
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "eth1" masquerade
    }
}
"""


def configure_routers(lab: Lab) -> None:
    lab.nft("gw", GATEWAY_RULES)
    lab.nft("modem", MODEM_RULES)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def start_terminal(lab: Lab) -> None:
    """Broker, DNS, NTP, syslog, and the outside resolver and collector."""
    mosquitto_conf = _write(lab.tmp / "mosquitto.conf", (
        "listener 1883 0.0.0.0\nallow_anonymous true\npersistence false\n"
        "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
        "connection_messages true\n"))
    broker = lab.start("mqtt", ["mosquitto", "-c", str(mosquitto_conf)], "mosquitto")

    records = [f"--host-record={name},{ip}" for name, ip in TERMINAL_NAMES.items()]
    dns = lab.start("dns", [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", "--listen-address=10.20.0.8", "--pid-file=", "--user=root",
        "--log-queries", "--log-facility=-", "--domain-needed", *records,
        # The terminal resolver forwards names it does not own to the outside resolver;
        # this is the path DNS tunnelling and beacons use.
        f"--server=/{EXFIL_DOMAIN}/203.0.113.53", f"--server=/{BEACON_DOMAIN}/203.0.113.53",
    ], "dnsmasq")
    resolver = lab.start("resolver", [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", "--listen-address=203.0.113.53", "--pid-file=", "--user=root",
        "--log-queries", "--log-facility=-",
        f"--address=/{EXFIL_DOMAIN}/203.0.113.80", f"--address=/{BEACON_DOMAIN}/203.0.113.80",
    ], "dnsmasq-outside")
    syslog = lab.python("syslog", "parts.sink", "syslog", name="syslog")
    collector = lab.python("collector", "parts.sink", "http", "--port", "80", name="collector")
    ntp = _start_chrony(lab)

    lab.wait_listening("mqtt", 1883, broker)
    lab.wait_listening("dns", 53, dns, udp=True)
    lab.wait_listening("resolver", 53, resolver, udp=True)
    lab.wait_listening("syslog", 514, syslog, udp=True)
    lab.wait_listening("collector", 80, collector)
    if ntp is not None:
        lab.wait_listening("ntp", 123, ntp, udp=True)


def _start_chrony(lab: Lab) -> Part | None:
    if shutil.which("chronyd") is None:
        return None  # NTP is optional: the crane hosts then just get no answer
    conf = _write(lab.tmp / "chrony.conf", (
        "local stratum 8\nallow 10.20.0.0/16\nbindaddress 10.20.0.7\ncmdport 0\n"
        f"pidfile {lab.tmp}/chronyd.pid\n"))
    # -x: serve time but never adjust this machine's clock; -d: foreground; -U: no user drop
    return lab.start("ntp", ["chronyd", "-d", "-x", "-U", "-f", str(conf)], "chronyd")


def start_crane(lab: Lab, fault: str | None, fault_start: float, fault_end: float) -> None:
    """The PLC and the cameras, then their clients: CMS and OCR; then the TOS."""
    args = ["--seed", str(lab.seed)]
    if fault:
        args += ["--fault", fault, "--fault-start", f"{fault_start:.3f}",
                 "--fault-end", f"{fault_end:.3f}"]
    plc = lab.python("plc", "plc", *args, name="plc")
    with_cameras = any(h.name in topology.CAMERAS for h in lab.hosts)
    names = {"cam1": "spreader", "cam2": "trolley"}
    cameras = [lab.python(cam, "parts.camera", "server", "--name", names[cam],
                          name=f"camera-{names[cam]}")
               for cam in topology.CAMERAS] if with_cameras else []
    lab.wait_listening("plc", 502, plc)
    for cam, camera in zip(topology.CAMERAS, cameras, strict=False):
        lab.wait_listening(cam, 554, camera)
    cms = lab.python("cms", "parts.cms", name="cms")
    lab.python("ocr", "parts.ocr", "--seed", str(lab.seed),
               "--journal", str(lab.tmp / "ocr-journal.jsonl"), name="ocr")
    if with_cameras:
        lab.python("ocr", "parts.camera", "client", "--cameras",
                   *(lab.host(cam).ip for cam in topology.CAMERAS), name="ocr-cameras")
    lab.wait_listening("cms", 8080, cms)
    lab.python("tos", "parts.tos", "--seed", str(lab.seed), name="tos")


def start_sshd(lab: Lab, host: str, authorized_key: str, banner_command: str) -> None:
    """A real OpenSSH server in ``host`` with one authorized key and a forced command."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    host_key = lab.tmp / "ssh_host_ed25519_key"
    lab.run(host, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    keys = _write(lab.tmp / "authorized_keys", authorized_key)
    conf = _write(lab.tmp / "sshd_config", (
        f"Port 22\nListenAddress {lab.host(host).ip}\nHostKey {host_key}\n"
        f"PidFile {lab.tmp}/sshd.pid\nAuthorizedKeysFile {keys}\nStrictModes no\n"
        "UsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
        f"ForceCommand {banner_command}\nLogLevel VERBOSE\n"))
    sshd = lab.start(host, ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], "sshd")
    lab.wait_listening(host, 22, sshd)
