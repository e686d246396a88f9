"""Test helper: build Modbus/TCP conversations frame by frame and write them as pcap files.

Frames are real Ethernet/IPv4/TCP with checksums (``sources.pcapwrite``), so tshark reads the
same files the tests give cranewatch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from cranewatch.sources.pcapwrite import (
    ETHERTYPE_IPV4,
    PcapWriter,
    ethernet_frame,
    ipv4_address,
    ipv4_packet,
    tcp_segment,
    udp_datagram,
)

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


def read_request(tid: int, fc: int, address: int, quantity: int, unit: int = 1) -> bytes:
    return mbap(tid, unit, bytes([fc]) + address.to_bytes(2, "big") + quantity.to_bytes(2, "big"))


def read_response(tid: int, fc: int, values: list[int], unit: int = 1) -> bytes:
    if fc in (1, 2):
        data = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                data[i // 8] |= 1 << (i % 8)
        body = bytes(data)
    else:
        body = b"".join(v.to_bytes(2, "big") for v in values)
    return mbap(tid, unit, bytes([fc, len(body)]) + body)


@dataclass
class Frame:
    ts: float
    data: bytes


@dataclass
class Conversation:
    """One TCP connection; ``send`` returns the frame and advances that side's sequence."""

    client: str
    server: str
    client_port: int = 40000
    server_port: int = 502
    client_mac: str = "02:00:00:00:00:30"
    server_mac: str = "02:00:00:00:00:10"
    seq: dict[bool, int] = field(default_factory=lambda: {True: 1000, False: 5000})

    def frame(self, from_client: bool, flags: int, payload: bytes = b"", seq: int | None = None) -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sport, dport = ((self.client_port, self.server_port) if from_client
                        else (self.server_port, self.client_port))
        smac, dmac = ((self.client_mac, self.server_mac) if from_client
                      else (self.server_mac, self.client_mac))
        s = self.seq[from_client] if seq is None else seq
        ack = self.seq[not from_client] if flags & ACK else 0
        segment = tcp_segment(sport, dport, s, ack, flags, payload,
                              src=ipv4_address(src), dst=ipv4_address(dst))
        return ethernet_frame(dmac, smac, ETHERTYPE_IPV4, ipv4_packet(src, dst, 6, segment))

    def send(self, from_client: bool, payload: bytes, flags: int = PSH | ACK) -> bytes:
        data = self.frame(from_client, flags, payload)
        self.seq[from_client] = (self.seq[from_client] + len(payload)
                                 + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return data

    def handshake(self) -> list[bytes]:
        return [self.send(True, b"", SYN), self.send(False, b"", SYN | ACK), self.send(True, b"", ACK)]

    def close(self) -> list[bytes]:
        return [self.send(True, b"", FIN | ACK), self.send(False, b"", FIN | ACK),
                self.send(True, b"", ACK)]


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes,
              smac: str = "02:00:00:00:00:07", dmac: str = "02:00:00:00:00:30") -> bytes:
    datagram = udp_datagram(sport, dport, payload, ipv4_address(src), ipv4_address(dst))
    return ethernet_frame(dmac, smac, ETHERTYPE_IPV4, ipv4_packet(src, dst, 17, datagram))


def write_pcap(path: Path, frames: list[bytes], start: float = 1_700_000_000.0,
               step: float = 0.01) -> Path:
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, nanosecond=True)
    for i, data in enumerate(frames):
        writer.write(round((start + i * step) * 1e9), data)
    path.write_bytes(buffer.getvalue())
    return path
