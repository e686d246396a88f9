"""The STS-07 reference network as data: segments, hosts, addresses, MACs and routes.

Three zones of ``crane-reference.md`` plus an "outside" made of TEST-NET ranges
(198.51.100.0/24 between the crane gateway, the hidden modem and an internet router;
203.0.113.0/24 behind it for vendors and attackers). All of it exists only inside the lab's
namespaces. ``build`` turns the table into namespaces, bridges and veths.
"""

from __future__ import annotations

from dataclasses import dataclass

from cranewatch.lab import netns

__all__ = ["CAMERAS", "HOSTS", "SEGMENTS", "Host", "Interface", "Segment", "build", "host", "hosts_for"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One layer-2 segment: a bridge in the switch namespace."""

    name: str
    bridge: str
    prefix: int = 24


@dataclass(frozen=True, slots=True)
class Interface:
    segment: str
    ip: str
    mac: str


@dataclass(frozen=True, slots=True)
class Host:
    """One lab host: its namespace, role, interfaces (eth0, eth1, ...) and routes."""

    name: str
    role: str
    zone: str
    interfaces: tuple[Interface, ...]
    gateway: str | None = None
    routes: tuple[tuple[str, str], ...] = ()  # (destination, via)
    forwards: bool = False  # routes between its interfaces
    optional: bool = False  # only started by scenarios that name it
    expected: bool = True  # part of the reference network (crane-reference.md)

    @property
    def netns(self) -> str:
        return f"{netns.PREFIX}{self.name}"

    @property
    def ip(self) -> str:
        return self.interfaces[0].ip

    @property
    def mac(self) -> str:
        return self.interfaces[0].mac


SEGMENTS: tuple[Segment, ...] = (
    Segment("crane", "br-crane"),
    Segment("terminal", "br-term"),
    Segment("outside", "br-out"),
    Segment("internet", "br-wan"),
)


def _mac(zone: int, last: int) -> str:
    # Locally administered (02:...), readable: 02:cw:zone:..:..:last-octet.
    return f"02:c7:{zone:02x}:00:00:{last:02x}"


CAMERAS = ("cam1", "cam2")  # optional: `lab run --cameras` adds them and their RTSP streams
CRANE_GW = "10.20.7.254"
TERMINAL_GW = "10.20.0.254"
OUTSIDE_ROUTER = "198.51.100.1"

HOSTS: tuple[Host, ...] = (
    Host("plc", "crane PLC (Modbus/TCP :502)", "crane",
         (Interface("crane", "10.20.7.10", _mac(7, 10)),), CRANE_GW),
    Host("ocr", "OCR controller", "crane", (Interface("crane", "10.20.7.20", _mac(7, 20)),), CRANE_GW),
    Host("cam1", "IP camera at the spreader (RTSP :554)", "crane",
         (Interface("crane", "10.20.7.21", _mac(7, 21)),), CRANE_GW, optional=True),
    Host("cam2", "IP camera at the trolley (RTSP :554)", "crane",
         (Interface("crane", "10.20.7.22", _mac(7, 22)),), CRANE_GW, optional=True),
    Host("cms", "crane management system PC (HTTP :8080)", "crane",
         (Interface("crane", "10.20.7.30", _mac(7, 30)),), CRANE_GW),
    Host("gw", "crane gateway (router/firewall, NAT to outside)", "crane",
         (Interface("crane", CRANE_GW, _mac(7, 254)),
          Interface("terminal", TERMINAL_GW, _mac(0, 254)),
          Interface("outside", "198.51.100.2", _mac(0x64, 2))),
         OUTSIDE_ROUTER, forwards=True),
    Host("modem", "hidden cellular modem router", "crane",
         (Interface("crane", "10.20.7.199", "02:5c:11:0a:77:c3"),
          Interface("outside", "198.51.100.77", "02:5c:11:0a:77:c4")),
         OUTSIDE_ROUTER, forwards=True, expected=False),
    Host("rogue", "unknown host on the crane LAN", "crane",
         (Interface("crane", "10.20.7.66", "02:66:66:00:07:42"),), CRANE_GW, optional=True,
         expected=False),
    Host("tos", "terminal operating system", "terminal",
         (Interface("terminal", "10.20.0.5", _mac(0, 5)),), TERMINAL_GW),
    Host("mqtt", "terminal MQTT broker (mosquitto :1883)", "terminal",
         (Interface("terminal", "10.20.0.6", _mac(0, 6)),), TERMINAL_GW),
    Host("ntp", "terminal NTP server (chronyd)", "terminal",
         (Interface("terminal", "10.20.0.7", _mac(0, 7)),), TERMINAL_GW),
    Host("dns", "terminal DNS server (dnsmasq)", "terminal",
         (Interface("terminal", "10.20.0.8", _mac(0, 8)),), TERMINAL_GW),
    Host("syslog", "terminal syslog receiver", "terminal",
         (Interface("terminal", "10.20.0.9", _mac(0, 9)),), TERMINAL_GW),
    Host("ews", "engineering workstation", "terminal",
         (Interface("terminal", "10.20.0.50", _mac(0, 50)),), TERMINAL_GW),
    Host("inet", "internet router (outside)", "outside",
         (Interface("outside", OUTSIDE_ROUTER, _mac(0x64, 1)),
          Interface("internet", "203.0.113.1", _mac(0x71, 1))),
         routes=(("10.20.0.0/16", "198.51.100.2"),), forwards=True, expected=False),
    Host("vendor", "outside host: vendor / attacker", "outside",
         (Interface("internet", "203.0.113.10", _mac(0x71, 10)),), "203.0.113.1", expected=False),
    Host("resolver", "outside DNS resolver (dnsmasq)", "outside",
         (Interface("internet", "203.0.113.53", _mac(0x71, 53)),), "203.0.113.1", expected=False),
    Host("collector", "outside collector: HTTP and TLS server", "outside",
         (Interface("internet", "203.0.113.80", _mac(0x71, 80)),), "203.0.113.1", expected=False),
)


def host(name: str) -> Host:
    for candidate in HOSTS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def hosts_for(extra: tuple[str, ...]) -> tuple[Host, ...]:
    """The hosts a run needs: every non-optional host plus the optional ones named."""
    return tuple(h for h in HOSTS if not h.optional or h.name in extra)


def build(hosts: tuple[Host, ...]) -> list[str]:
    """Create the switch, the bridges and every host; return the namespaces in creation order.

    The caller deletes the returned namespaces (also on failure: the list grows as it goes,
    so pass the same list object to cleanup code by catching and re-raising).
    """
    created: list[str] = []
    try:
        netns.add_namespace(netns.SWITCH)
        created.append(netns.SWITCH)
        for segment in SEGMENTS:
            netns.add_bridge(segment.bridge)
        prefix = {segment.name: segment.prefix for segment in SEGMENTS}
        bridge = {segment.name: segment.bridge for segment in SEGMENTS}
        for lab_host in hosts:
            netns.add_namespace(lab_host.netns)
            created.append(lab_host.netns)
            for index, iface in enumerate(lab_host.interfaces):
                ifname = f"eth{index}"
                port = f"{lab_host.name}-{index}"
                netns.plug(lab_host.netns, ifname, iface.mac, bridge[iface.segment], port)
                netns.ip("addr", "add", f"{iface.ip}/{prefix[iface.segment]}", "dev", ifname,
                         netns=lab_host.netns)
            if lab_host.gateway:
                netns.ip("route", "add", "default", "via", lab_host.gateway, netns=lab_host.netns)
            for destination, via in lab_host.routes:
                netns.ip("route", "add", destination, "via", via, netns=lab_host.netns)
            if lab_host.forwards:
                netns.sysctl(lab_host.netns, "net.ipv4.ip_forward=1")
    except BaseException as exc:
        exc.add_note(f"lab namespaces created so far: {created}")
        for name in reversed(created):
            netns.delete_namespace(name)
        raise
    return created
