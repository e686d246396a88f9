"""Write small but real crane captures for the end-to-end detector tests.

Packets are built byte by byte (``sources.pcapwrite``): TCP sessions with handshakes and
sequence numbers, Modbus/TCP, MQTT, DNS and TLS ClientHellos, so the whole pipeline (reader,
flows, reassembly, decoders, detectors) runs as on a real capture. Addresses, ports and
timings are parameters: the tests use other crane layouts than the lab's too.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cranewatch.sources.pcapwrite import (
    PcapWriter,
    ethernet_frame,
    ipv4_address,
    ipv4_packet,
    tcp_segment,
    udp_datagram,
)

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


@dataclass
class Host:
    ip: str
    mac: str


@dataclass
class Capture:
    """Packets of a capture on one LAN (``lan``, a CIDR); ``write`` sorts them by time.

    Traffic between a LAN host and an off-LAN host goes through a router: the gateway's MAC
    by default, another one (a hidden modem) for addresses listed in ``routes``.
    """

    lan: str
    gateway_mac: str
    routes: dict[str, str] = field(default_factory=dict)
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def local(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(self.lan)

    def frame(self, ts: float, src: Host, dst: Host, l4: bytes, proto: int) -> None:
        src_mac, dst_mac = src.mac, dst.mac
        if self.local(src.ip) and not self.local(dst.ip):
            dst_mac = self.routes.get(dst.ip, self.gateway_mac)
        elif self.local(dst.ip) and not self.local(src.ip):
            src_mac = self.routes.get(src.ip, self.gateway_mac)
        self.packets.append((ts, ethernet_frame(dst_mac, src_mac, 0x0800,
                                                ipv4_packet(src.ip, dst.ip, proto, l4))))

    def tcp(self, t0: float, client: Host, server: Host, sport: int, dport: int,
            exchanges: list[tuple[bool, bytes, float]]) -> float:
        """A whole TCP session: handshake, (from_client, payload, delay) exchanges, FIN."""
        seq_c, seq_s = self.rng.getrandbits(32), self.rng.getrandbits(32)
        ts = t0

        def seg(from_client: bool, flags: int, data: bytes = b"") -> None:
            nonlocal seq_c, seq_s
            if from_client:
                body = tcp_segment(sport, dport, seq_c, seq_s, flags, data,
                                   src=ipv4_address(client.ip), dst=ipv4_address(server.ip))
                self.frame(ts, client, server, body, 6)
                seq_c += len(data) + (1 if flags & (SYN | FIN) else 0)
            else:
                body = tcp_segment(dport, sport, seq_s, seq_c, flags, data,
                                   src=ipv4_address(server.ip), dst=ipv4_address(client.ip))
                self.frame(ts, server, client, body, 6)
                seq_s += len(data) + (1 if flags & (SYN | FIN) else 0)

        seg(True, SYN)
        ts += 0.0005
        seg(False, SYN | ACK)
        ts += 0.0005
        seg(True, ACK)
        for from_client, data, delay in exchanges:
            ts += delay
            seg(from_client, PSH | ACK, data)
        ts += 0.001
        seg(True, FIN | ACK)
        ts += 0.0005
        seg(False, FIN | ACK)
        ts += 0.0005
        seg(True, ACK)
        return ts

    def udp(self, ts: float, src: Host, dst: Host, sport: int, dport: int, data: bytes) -> None:
        body = udp_datagram(sport, dport, data, src=ipv4_address(src.ip), dst=ipv4_address(dst.ip))
        self.frame(ts, src, dst, body, 17)

    def write(self, path: Path) -> Path:
        with open(path, "wb") as out:
            writer = PcapWriter(out)
            for ts, data in sorted(self.packets, key=lambda p: p[0]):
                writer.write(round(ts * 1e9), data)
        return path


# -- application payloads ----------------------------------------------------------------------

def modbus(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_request(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def read_response(function: int, values: list[int]) -> bytes:
    if function in (1, 2):
        packed = bytearray((len(values) + 7) // 8)
        for i, v in enumerate(values):
            packed[i // 8] |= (v & 1) << (i % 8)
        return bytes([function, len(packed)]) + bytes(packed)
    return bytes([function, 2 * len(values)]) + b"".join(struct.pack(">H", v & 0xFFFF) for v in values)


def mqtt_connect(client_id: str) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(client_id)) + client_id.encode()
    return bytes([0x10, len(body)]) + body


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    body = struct.pack(">H", len(topic)) + topic.encode() + payload
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x30]) + bytes(encoded) + body


def dns_query(tid: int, name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", qtype, 1)


def tls_client_hello(sni: str) -> bytes:
    name = sni.encode()
    server_name = struct.pack(">HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack(">HH", 0, len(server_name)) + server_name
    extensions += struct.pack(">HHH", 10, 4, 2) + b"\x00\x1d"  # supported groups: x25519
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack(">H", 4) + b"\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack(">H", len(extensions)) + extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def ocr_event(container: str, pol: str = "CNSHA", pod: str = "USORF") -> bytes:
    return json.dumps({"crane": "STS-07", "container": container, "move": "discharge", "bay": 14,
                       "row": 6, "tier": 82, "pol": pol, "pod": pod, "weight_t": 24.7}).encode()


# -- a crane's day -------------------------------------------------------------------------------

@dataclass
class Crane:
    """Addresses of one crane network (defaults: STS-07 of crane-reference.md)."""

    plc: Host = field(default_factory=lambda: Host("10.20.7.10", "02:00:0a:14:07:0a"))
    ocr: Host = field(default_factory=lambda: Host("10.20.7.20", "02:00:0a:14:07:14"))
    cms: Host = field(default_factory=lambda: Host("10.20.7.30", "02:00:0a:14:07:1e"))
    gateway: Host = field(default_factory=lambda: Host("10.20.7.254", "02:00:0a:14:07:fe"))
    broker: Host = field(default_factory=lambda: Host("10.20.0.6", "02:00:0a:14:00:06"))
    ntp: Host = field(default_factory=lambda: Host("10.20.0.7", "02:00:0a:14:00:07"))
    dns: Host = field(default_factory=lambda: Host("10.20.0.8", "02:00:0a:14:00:08"))
    modbus_port: int = 502
    lan: str = "10.20.7.0/24"
    ocr_topic: str = "terminal/cranes/STS-07/ocr"


CONTAINERS = ["CSQU3054383", "MSCU1234566", "TGHU6192450", "HLXU8034110", "ZIMU0000001"]


def valid_containers() -> list[str]:
    from cranewatch.detect.content import check_digit

    return [c[:10] + str(check_digit(c[:10])) for c in CONTAINERS]


def new_capture(crane: Crane, seed: int = 11) -> Capture:
    return Capture(lan=crane.lan, gateway_mac=crane.gateway.mac, rng=random.Random(seed))


def normal_day(cap: Capture, crane: Crane, t0: float, seconds: float) -> None:
    """CMS polls the PLC at 5 Hz, OCR at 1 Hz, OCR publishes moves, NTP and DNS."""
    for master, period, sport, requests in ((crane.cms, 0.2, 40100, ((4, 0, 12), (2, 0, 7))),
                                            (crane.ocr, 1.0, 40200, ((2, 0, 7),))):
        exchanges: list[tuple[bool, bytes, float]] = []
        tid = 0
        for cycle in range(int((seconds - 2) / period)):
            for k, (function, address, count) in enumerate(requests):
                tid += 1
                values = [cap.rng.randrange(0, 2 if function == 2 else 650) for _ in range(count)]
                delay = period - 0.003 * len(requests) if k == 0 and cycle else 0.001
                exchanges.append((True, modbus(tid, 1, read_request(function, address, count)), delay))
                exchanges.append((False, modbus(tid, 1, read_response(function, values)), 0.002))
        cap.tcp(t0 + 0.1, master, crane.plc, sport, crane.modbus_port, exchanges)
    moves = [(True, mqtt_connect("ocr-sts07"), 0.01), (False, b"\x20\x02\x00\x00", 0.002)]
    for container in valid_containers():
        moves.append((True, mqtt_publish(crane.ocr_topic, ocr_event(container)), seconds / 6))
    cap.tcp(t0 + 0.5, crane.ocr, crane.broker, 41000, 1883, moves)
    for i in range(int(seconds // 16)):
        ts = t0 + 2 + 16 * i
        cap.udp(ts, crane.cms, crane.ntp, 123, 123, b"\x23" + bytes(47))
        cap.udp(ts + 0.01, crane.ntp, crane.cms, 123, 123, b"\x24\x02" + bytes(46))
        cap.udp(ts + 1, crane.ocr, crane.dns, 35000 + i, 53, dns_query(i, "broker.terminal.example"))


# -- attacks -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Label:
    """Ground truth of one attack in a synthetic capture (as the lab's labels.json has it)."""

    category: str
    src: str
    dst: str
    start: float
    end: float


MODEM_MAC = "02:99:00:00:00:c7"


def attacks(cap: Capture, crane: Crane, t0: float, ews: Host, outside: dict[str, Host]) -> list[Label]:
    """Every network attack of the lab's scenarios, once each, at known times."""
    labels: list[Label] = []
    rogue = Host(str(ipaddress.ip_network(crane.lan).network_address + 66), "02:66:00:00:00:42")
    port = crane.modbus_port

    # safety bypass from the EWS outside its window: coil 0 = 1, HR 0 = 900
    t = t0 + 5
    end = cap.tcp(t, ews, crane.plc, 50500, port, [
        (True, modbus(1, 1, struct.pack(">BHH", 5, 0, 0xFF00)), 0.01),
        (False, modbus(1, 1, struct.pack(">BHH", 5, 0, 0xFF00)), 0.002),
        (True, modbus(2, 1, struct.pack(">BHH", 6, 0, 900)), 0.01),
        (False, modbus(2, 1, struct.pack(">BHH", 6, 0, 900)), 0.002)])
    labels.append(Label("safety-override", ews.ip, f"{crane.plc.ip}:{port}", t, end))

    # OCR events also published to an outside broker
    leak = outside["broker"]
    t = t0 + 8
    moves = [(True, mqtt_connect("ocr-mirror"), 0.01), (False, b"\x20\x02\x00\x00", 0.002)]
    moves += [(True, mqtt_publish("mirror/ocr", ocr_event(c)), 0.5) for c in valid_containers()]
    end = cap.tcp(t, crane.ocr, leak, 41500, 1883, moves)
    labels.append(Label("data-leak", crane.ocr.ip, f"{leak.ip}:1883", t, end))

    # TLS beacon every 5 s with jitter
    c2 = outside["c2"]
    t = start = t0 + 3
    for i in range(10):
        cap.tcp(t, crane.cms, c2, 42000 + i, 443, [(True, tls_client_hello("update.crane-vendor.example.com"), 0.01)])
        t += 5 * (1 + cap.rng.uniform(-0.2, 0.2))
    labels.append(Label("c2", crane.cms.ip, f"{c2.ip}:443", start, t))

    # SSH from outside through a hidden modem
    vendor = outside["vendor"]
    cap.routes[vendor.ip] = MODEM_MAC
    t = t0 + 12
    end = cap.tcp(t, vendor, crane.cms, 51000, 22, [
        (False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 0.01),
        (True, b"SSH-2.0-OpenSSH_9.2p1\r\n", 0.01), (True, bytes(600), 0.05), (False, bytes(900), 0.05)])
    labels.append(Label("hidden-uplink", crane.cms.ip, vendor.ip, t, end))
    labels.append(Label("remote-access", vendor.ip, f"{crane.cms.ip}:22", t, end))

    # container numbers in DNS names through the terminal resolver
    t = start = t0 + 20
    for i, container in enumerate(valid_containers()):
        rest = base64.b32encode(b'{"pol":"CNSHA","pod":"USORF","w":24.7}').decode().rstrip("=").lower()
        name = f"{i:03d}-0-{container}.{rest[:50]}.telemetry-cdn.example.net"
        cap.udp(t + i * 0.3, crane.ocr, crane.dns, 36000 + i, 53, dns_query(100 + i, name, 16))
    labels.append(Label("data-leak", crane.ocr.ip, f"{crane.dns.ip}:53", start, t + 2))

    # a port scan of the PLC and a device identification sweep, by an unknown host
    t = start = t0 + 25
    for i, p in enumerate((21, 22, 23, 80, 102, 443, 554, 1883, 2404, 4840, 5900, 8080, 20000, 44818)):
        body = tcp_segment(33333, p, 1000, 0, SYN, src=ipv4_address(rogue.ip), dst=ipv4_address(crane.plc.ip))
        cap.frame(t + i * 0.001, rogue, crane.plc, body, 6)
        back = tcp_segment(p, 33333, 0, 1001, 0x14, src=ipv4_address(crane.plc.ip), dst=ipv4_address(rogue.ip))
        cap.frame(t + i * 0.001 + 0.0002, crane.plc, rogue, back, 6)
    ident = [(True, modbus(u, u, b"\x2b\x0e\x01\x00"), 0.01) for u in range(1, 5)]
    end = cap.tcp(t + 1, rogue, crane.plc, 33400, port, ident)
    labels.append(Label("recon", rogue.ip, crane.lan, start, end))

    # another unknown host polls the PLC and restarts its communications
    rogue = Host(str(ipaddress.ip_network(crane.lan).network_address + 67), "02:66:00:00:00:43")
    t = t0 + 30
    polls = []
    for i in range(10):
        polls.append((True, modbus(10 + i, 1, read_request(3, 0, 4)), 0.2))
        polls.append((False, modbus(10 + i, 1, read_response(3, [715, 200, 100, 100])), 0.002))
    polls.append((True, modbus(40, 1, struct.pack(">BHH", 8, 1, 0)), 0.1))
    end = cap.tcp(t, rogue, crane.plc, 33500, port, polls)
    labels.append(Label("rogue-master", rogue.ip, f"{crane.plc.ip}:{port}", t, end))
    labels.append(Label("plc-control", rogue.ip, f"{crane.plc.ip}:{port}", t, end))
    return labels


def dhcp_offer(xid: int, client_mac: str, offered: str, server: str, router: str, message_type: int = 2) -> bytes:
    """A BOOTP reply carrying DHCP options 53 (type), 54 (server id), 3 (router), 51 (lease)."""
    chaddr = bytes(int(x, 16) for x in client_mac.split(":")) + bytes(10)
    fixed = struct.pack(">BBBBIHH4s4s4s4s", 2, 1, 6, 0, xid, 0, 0, bytes(4), ipv4_address(offered),
                        ipv4_address(server), bytes(4)) + chaddr + bytes(64) + bytes(128)
    options = (b"\x63\x82\x53\x63" + bytes([53, 1, message_type]) + bytes([54, 4]) + ipv4_address(server)
               + bytes([3, 4]) + ipv4_address(router) + bytes([51, 4]) + struct.pack(">I", 3600) + b"\xff")
    return fixed + options
