#!/usr/bin/env python3
"""Write a synthetic crane-terminal capture for the benchmarks: N packets, deterministic, streamed.

The terminal has several STS cranes (zone 10.20.<crane>.0/24, PLC at .10 as in
crane-reference.md). On each crane the OCR controller (.20) and the CMS PC (.30) poll the PLC
over Modbus/TCP, and a terminal SCADA server (10.20.0.40) polls every PLC: FC 4 reads of the
sensor block, FC 3 reads of setpoints, FC 2 status bits, occasional FC 6/16 writes and FC 5
coils, each with its response. Around that: ARP, DNS, NTP, MQTT publishes from the OCR
controllers to the terminal broker, TLS to the TOS, and SSH sessions. Connections churn: each
Modbus connection is closed after a few hundred transactions (FIN) and reopened from a new
source port (SYN). Same ``--seed``, same bytes.

Example:
  python benchmarks/gen_crane_capture.py --packets 1000000 --out /tmp/crane-1m.pcap
  python benchmarks/gen_crane_capture.py --packets 5000000 --seed 7 --out /tmp/crane-5m.pcap
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cranewatch.sources.pcapwrite import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    PcapWriter,
    ethernet_frame,
    ipv4_address,
    ipv4_packet,
    tcp_segment,
    udp_datagram,
)

START_NS = 1_764_000_000_000_000_000  # 2025-11-24 16:00 UTC
MEAN_GAP_NS = 60_000  # ~16 k packets/s across the terminal
TRANSACTIONS_PER_CONNECTION = (150, 600)
BROKER, TOS, NTP, DNS, SCADA, EWS = "10.20.0.6", "10.20.0.5", "10.20.0.7", "10.20.0.8", "10.20.0.40", "10.20.0.50"


def mac_of(ip: str) -> bytes:
    """A stable locally administered MAC per IPv4 address."""
    return b"\x02\x00" + ipv4_address(ip)


class Host:
    """Remembers per-host IPv4 identification so the frames look like one stack's output."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.ip_bytes = ipv4_address(ip)
        self.mac = mac_of(ip)
        self.ident = random.Random(ip).randrange(65536)

    def next_ident(self) -> int:
        self.ident = (self.ident + 1) & 0xFFFF
        return self.ident


HOSTS: dict[str, Host] = {}


def host(ip: str) -> Host:
    if ip not in HOSTS:
        HOSTS[ip] = Host(ip)
    return HOSTS[ip]


def ip_frame(src: Host, dst: Host, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    packet = ipv4_packet(src.ip, dst.ip, proto, payload, ttl=ttl, ident=src.next_ident())
    return ethernet_frame(dst.mac, src.mac, 0x0800, packet, pad=True)


@dataclass
class TcpConnection:
    """One TCP connection's state: sequence numbers both ways, and frames for what happens."""

    client: Host
    server: Host
    sport: int
    dport: int
    client_seq: int
    server_seq: int

    def segment(self, from_client: bool, flags: int, payload: bytes = b"") -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        seq, ack = (self.client_seq, self.server_seq) if from_client else (self.server_seq, self.client_seq)
        data = tcp_segment(sport, dport, seq, ack, flags, payload, window=29200, src=src.ip_bytes, dst=dst.ip_bytes)
        advance = len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        if from_client:
            self.client_seq = (self.client_seq + advance) & 0xFFFFFFFF
        else:
            self.server_seq = (self.server_seq + advance) & 0xFFFFFFFF
        return ip_frame(src, dst, 6, data)

    def open(self) -> list[bytes]:
        return [
            self.segment(True, TCP_SYN),
            self.segment(False, TCP_SYN | TCP_ACK),
            self.segment(True, TCP_ACK),
        ]

    def close(self) -> list[bytes]:
        return [
            self.segment(True, TCP_FIN | TCP_ACK),
            self.segment(False, TCP_FIN | TCP_ACK),
            self.segment(True, TCP_ACK),
        ]


@dataclass
class ModbusPoller:
    """A master polling one PLC: reads most of the time, now and then a write."""

    rng: random.Random
    master: Host
    plc: Host
    unit: int = 1
    connection: TcpConnection | None = None
    transactions_left: int = 0
    transaction_id: int = 0
    tick: int = 0
    registers: list[int] = field(default_factory=lambda: [0] * 64)

    def _connect(self) -> list[bytes]:
        self.connection = TcpConnection(
            self.master, self.plc, self.rng.randrange(32768, 61000), 502,
            self.rng.randrange(1 << 32), self.rng.randrange(1 << 32),
        )  # fmt: skip
        self.transactions_left = self.rng.randint(*TRANSACTIONS_PER_CONNECTION)
        return self.connection.open()

    def _process_image(self) -> list[int]:
        """Sensor registers that move like a crane working: heartbeat, load, height, positions."""
        self.tick += 1
        t = self.tick
        phase = (t % 600) / 600
        load = 250 + int(200 * (phase < 0.5))
        return [
            t & 0xFFFF, load, (1500 + int(2500 * phase)) & 0xFFFF, 120, load * 1000 // 650,
            int(4500 + 4000 * (phase - 0.5)) & 0xFFFF, 200, 6000, 0, 80 + t % 7, 82 + t % 5,
            (t * 3) % 200,
        ]  # fmt: skip

    def _request(self) -> tuple[bytes, bytes]:
        roll = self.rng.random()
        unit = self.unit
        if roll < 0.55:  # sensors: FC 4 input registers 0..11
            values = self._process_image()
            pdu = struct.pack("!BHH", 4, 0, len(values))
            reply = struct.pack("!BB", 4, 2 * len(values)) + struct.pack(f"!{len(values)}H", *values)
        elif roll < 0.85:  # setpoints: FC 3 holding registers
            start = self.rng.choice((0, 16, 32))
            count = self.rng.choice((8, 16, 32))
            values = self.registers[start : start + count] + [0] * max(0, start + count - 64)
            pdu = struct.pack("!BHH", 3, start, count)
            reply = struct.pack("!BB", 3, 2 * count) + struct.pack(f"!{count}H", *values[:count])
        elif roll < 0.97:  # status bits: FC 2 discrete inputs 0..15
            pdu = struct.pack("!BHH", 2, 0, 16)
            reply = struct.pack("!BBH", 2, 2, 0x0013)
        elif roll < 0.985:  # FC 6 write single register
            address, value = self.rng.randrange(16), self.rng.randrange(700)
            self.registers[address] = value
            pdu = struct.pack("!BHH", 6, address, value)
            reply = pdu
        elif roll < 0.995:  # FC 16 write multiple registers
            address = self.rng.randrange(8)
            values = [self.rng.randrange(700) for _ in range(4)]
            self.registers[address : address + 4] = values
            pdu = struct.pack("!BHHB", 16, address, 4, 8) + struct.pack("!4H", *values)
            reply = struct.pack("!BHH", 16, address, 4)
        else:  # FC 5 write single coil
            coil = self.rng.randrange(8)
            pdu = struct.pack("!BHH", 5, coil, 0xFF00)
            reply = pdu
        self.transaction_id = (self.transaction_id + 1) & 0xFFFF
        mbap = struct.pack("!HHHB", self.transaction_id, 0, len(pdu) + 1, unit)
        mbap_reply = struct.pack("!HHHB", self.transaction_id, 0, len(reply) + 1, unit)
        return mbap + pdu, mbap_reply + reply

    def frames(self) -> list[bytes]:
        out: list[bytes] = []
        if self.connection is None:
            out += self._connect()
        connection = self.connection
        assert connection is not None
        request, response = self._request()
        out.append(connection.segment(True, TCP_PSH | TCP_ACK, request))
        out.append(connection.segment(False, TCP_PSH | TCP_ACK, response))
        if self.rng.random() < 0.2:  # delayed ACK from the master now and then
            out.append(connection.segment(True, TCP_ACK))
        self.transactions_left -= 1
        if self.transactions_left <= 0:
            out += connection.close()
            self.connection = None
        return out


class Background:
    """The rest of a terminal's chatter: ARP, DNS, NTP, MQTT, TLS and SSH."""

    def __init__(self, rng: random.Random, cranes: int, first: int = 1) -> None:
        self.rng = rng
        self.crane_hosts = [host(f"10.20.{c}.{last}") for c in range(first, first + cranes)
                            for last in (10, 20, 30)]
        self.mqtt: dict[str, TcpConnection] = {}
        self.tls: TcpConnection | None = None
        self.ssh: TcpConnection | None = None
        self.dns_id = 0

    def frames(self) -> list[bytes]:
        roll = self.rng.random()
        if roll < 0.15:
            return self._arp()
        if roll < 0.30:
            return self._dns()
        if roll < 0.40:
            return self._ntp()
        if roll < 0.75:
            return self._mqtt()
        if roll < 0.90:
            return self._tls()
        return self._ssh()

    def _arp(self) -> list[bytes]:
        asker, target = self.rng.sample(self.crane_hosts, 2)
        request = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, asker.mac, asker.ip_bytes, bytes(6), target.ip_bytes)
        reply = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, target.mac, target.ip_bytes, asker.mac, asker.ip_bytes)
        return [
            ethernet_frame(b"\xff" * 6, asker.mac, 0x0806, request, pad=True),
            ethernet_frame(asker.mac, target.mac, 0x0806, reply, pad=True),
        ]

    def _dns(self) -> list[bytes]:
        client, server = self.rng.choice(self.crane_hosts), host(DNS)
        self.dns_id = (self.dns_id + 1) & 0xFFFF
        name = self.rng.choice((b"\x03tos\x08terminal\x04port\x00", b"\x06broker\x08terminal\x04port\x00"))
        question = name + struct.pack("!HH", 1, 1)
        query = struct.pack("!HHHHHH", self.dns_id, 0x0100, 1, 0, 0, 0) + question
        answer = struct.pack("!HHHHHH", self.dns_id, 0x8180, 1, 1, 0, 0) + question
        answer += struct.pack("!HHHIH4s", 0xC00C, 1, 1, 300, 4, ipv4_address(TOS))
        sport = self.rng.randrange(32768, 61000)
        return [
            ip_frame(client, server, 17, udp_datagram(sport, 53, query, client.ip_bytes, server.ip_bytes)),
            ip_frame(server, client, 17, udp_datagram(53, sport, answer, server.ip_bytes, client.ip_bytes)),
        ]

    def _ntp(self) -> list[bytes]:
        client, server = self.rng.choice(self.crane_hosts), host(NTP)
        request = bytes([0x23]) + bytes(47)
        reply = bytes([0x24, 2, 6, 0xE9]) + bytes(44)
        return [
            ip_frame(client, server, 17, udp_datagram(123, 123, request, client.ip_bytes, server.ip_bytes)),
            ip_frame(server, client, 17, udp_datagram(123, 123, reply, server.ip_bytes, client.ip_bytes)),
        ]

    def _mqtt(self) -> list[bytes]:
        ocr = self.rng.choice([h for h in self.crane_hosts if h.ip.endswith(".20")])
        out: list[bytes] = []
        connection = self.mqtt.get(ocr.ip)
        if connection is None:
            connection = TcpConnection(ocr, host(BROKER), self.rng.randrange(32768, 61000), 1883,
                                       self.rng.randrange(1 << 32), self.rng.randrange(1 << 32))  # fmt: skip
            self.mqtt[ocr.ip] = connection
            out += connection.open()
            client_id = b"ocr-" + ocr.ip.encode()
            body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id
            out.append(connection.segment(True, TCP_PSH | TCP_ACK, bytes([0x10, len(body)]) + body))
            out.append(connection.segment(False, TCP_PSH | TCP_ACK, b"\x20\x02\x00\x00"))
        topic = b"terminal/sts/ocr/container"
        message = b'{"container":"MSCU%07d","lane":%d}' % (self.rng.randrange(10**7), self.rng.randrange(1, 9))
        body = struct.pack("!H", len(topic)) + topic + message
        out.append(connection.segment(True, TCP_PSH | TCP_ACK, bytes([0x30, len(body)]) + body))
        out.append(connection.segment(False, TCP_ACK))
        return out

    def _tls(self) -> list[bytes]:
        out: list[bytes] = []
        if self.tls is None or self.rng.random() < 0.02:
            if self.tls is not None:
                out += self.tls.close()
            cms = self.rng.choice([h for h in self.crane_hosts if h.ip.endswith(".30")])
            self.tls = TcpConnection(cms, host(TOS), self.rng.randrange(32768, 61000), 443,
                                     self.rng.randrange(1 << 32), self.rng.randrange(1 << 32))  # fmt: skip
            out += self.tls.open()
            body = b"\x03\x03" + self.rng.randbytes(32) + b"\x00\x00\x02\x13\x01\x01\x00\x00\x00"
            handshake = b"\x01" + len(body).to_bytes(3, "big") + body
            hello = b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake
            out.append(self.tls.segment(True, TCP_PSH | TCP_ACK, hello))
        record = b"\x17\x03\x03" + struct.pack("!H", 96) + self.rng.randbytes(96)
        out.append(self.tls.segment(self.rng.random() < 0.5, TCP_PSH | TCP_ACK, record))
        return out

    def _ssh(self) -> list[bytes]:
        out: list[bytes] = []
        if self.ssh is None or self.rng.random() < 0.01:
            if self.ssh is not None:
                out += self.ssh.close()
            self.ssh = TcpConnection(host(EWS), self.rng.choice(self.crane_hosts), self.rng.randrange(32768, 61000), 22,
                                     self.rng.randrange(1 << 32), self.rng.randrange(1 << 32))  # fmt: skip
            out += self.ssh.open()
            out.append(self.ssh.segment(False, TCP_PSH | TCP_ACK, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
            out.append(self.ssh.segment(True, TCP_PSH | TCP_ACK, b"SSH-2.0-OpenSSH_9.6\r\n"))
        out.append(self.ssh.segment(self.rng.random() < 0.5, TCP_PSH | TCP_ACK, self.rng.randbytes(52)))
        return out


def crane_terminal(seed: int, cranes: int, first: int = 1) -> Iterator[bytes]:
    """Endless frames of a terminal with ``cranes`` cranes (numbered from ``first``), in capture order."""
    rng = random.Random(seed)
    pollers: list[ModbusPoller] = []
    for crane in range(first, first + cranes):
        plc = host(f"10.20.{crane}.10")
        for master in (f"10.20.{crane}.20", f"10.20.{crane}.30", SCADA):
            pollers.append(ModbusPoller(random.Random(rng.random()), host(master), plc))
    background = Background(random.Random(rng.random()), cranes, first)
    while True:
        if rng.random() < 0.85:
            yield from rng.choice(pollers).frames()
        else:
            yield from background.frames()


def write_capture(path: Path, packets: int, seed: int, cranes: int, first: int = 1,
                  hour: int = 0) -> int:
    """Stream ``packets`` frames to ``path``; returns the number written."""
    rng = random.Random(seed ^ 0x5EED)
    written = 0
    ts = START_NS + hour * 3600 * 10**9
    with open(path, "wb") as out:
        writer = PcapWriter(out, snaplen=65535)
        pending: list[bytes] = []
        for frame in crane_terminal(seed, cranes, first):
            ts += int(rng.expovariate(1 / MEAN_GAP_NS)) + 1
            pending.append(writer.record(ts, frame))
            written += 1
            if len(pending) >= 20_000:
                out.write(b"".join(pending))
                pending = []
            if written >= packets:
                break
        out.write(b"".join(pending))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets to write (default 1 M)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same file)")
    parser.add_argument("--cranes", type=int, default=8, help="cranes in the terminal (default 8)")
    parser.add_argument("--zone", type=int, default=1, metavar="K",
                        help="number of the first crane (default 1): --cranes 1 --zone K is crane "
                        "K's zone alone, as its SPAN port sees it (the SCADA server and the "
                        "terminal's servers are in every zone's capture)")
    parser.add_argument("--hour", type=int, default=0,
                        help="start this many hours later (hourly rotated captures of one zone)")
    parser.add_argument("--out", type=Path, default=Path("crane-terminal.pcap"), help="output pcap")
    args = parser.parse_args(argv)
    count = write_capture(args.out, args.packets, args.seed, args.cranes, args.zone, args.hour)
    print(f"wrote {count} packets to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
