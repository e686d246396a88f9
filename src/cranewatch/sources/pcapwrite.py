"""Write small pcap and pcapng files, and build the frames that go in them.

Used by the tests (byte-exact captures of every format variant the reader must accept) and by
the benchmark generator (millions of crane-terminal frames, streamed to disk). The frame
builders compute real IPv4/TCP/UDP checksums so that tshark sees clean traffic.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import BinaryIO

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PCAP_MAGIC_MICRO = 0xA1B2C3D4
PCAP_MAGIC_NANO = 0xA1B23C4D

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete Packet Block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_IPV6 = 0x86DD


# --------------------------------------------------------------------------- frame builders


def internet_checksum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum, folded; returns the value to put in the header.

    A big integer modulo 0xFFFF is the ones'-complement sum of its 16-bit words, which lets
    CPython do the summing in C instead of a Python loop over words.
    """
    if len(data) % 2:
        data += b"\x00"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF
    return (~total) & 0xFFFF


def mac_bytes(mac: str | bytes | int) -> bytes:
    """'02:00:00:00:00:01', six bytes or an int -> six bytes."""
    if isinstance(mac, bytes):
        return mac
    if isinstance(mac, int):
        return mac.to_bytes(6, "big")
    return bytes(int(part, 16) for part in mac.split(":"))


def ethernet_frame(
    dst: str | bytes | int,
    src: str | bytes | int,
    ethertype: int,
    payload: bytes,
    vlans: Sequence[int] = (),
    pad: bool = False,
) -> bytes:
    """Ethernet II frame; ``vlans`` are tags outermost first (two = QinQ, outer 0x88A8)."""
    tags = b""
    for depth, vid in enumerate(vlans):
        tpid = ETHERTYPE_QINQ if depth == 0 and len(vlans) > 1 else ETHERTYPE_VLAN
        tags += struct.pack("!HH", tpid, vid & 0x0FFF)
    frame = mac_bytes(dst) + mac_bytes(src) + tags + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < 60:
        frame += b"\x00" * (60 - len(frame))
    return frame


def ipv4_address(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def ipv4_packet(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    ttl: int = 64,
    ident: int = 0,
    dont_fragment: bool = True,
    more_fragments: bool = False,
    fragment_offset: int = 0,
    options: bytes = b"",
    total_length: int | None = None,
) -> bytes:
    """IPv4 header (with checksum) + payload. ``fragment_offset`` is in bytes (multiple of 8)."""
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)
    ihl = 5 + len(options) // 4
    flags = (0x4000 if dont_fragment else 0) | (0x2000 if more_fragments else 0)
    flags |= (fragment_offset // 8) & 0x1FFF
    length = total_length if total_length is not None else ihl * 4 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        ident & 0xFFFF,
        flags,
        ttl,
        proto,
        0,
        ipv4_address(src),
        ipv4_address(dst),
    ) + options
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def ipv6_packet(
    src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64, flow_label: int = 0
) -> bytes:
    """IPv6 header + payload; ``payload`` may start with extension headers."""
    import ipaddress

    return (
        struct.pack("!IHBB", (6 << 28) | (flow_label & 0xFFFFF), len(payload), next_header, hop_limit)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def _pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


def tcp_segment(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 64240,
    options: bytes = b"",
    src: bytes = b"",
    dst: bytes = b"",
) -> bytes:
    """TCP header + payload; with ``src``/``dst`` address bytes the checksum is filled in."""
    if len(options) % 4:
        options += b"\x01" * (4 - len(options) % 4)
    offset = (5 + len(options) // 4) << 4
    header = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset, flags, window, 0, 0
    ) + options
    if not src:
        return header + payload
    checksum = internet_checksum(_pseudo_header(src, dst, 6, len(header) + len(payload)) + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def udp_datagram(sport: int, dport: int, payload: bytes, src: bytes = b"", dst: bytes = b"") -> bytes:
    """UDP header + payload; with ``src``/``dst`` address bytes the checksum is filled in."""
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    if not src:
        return header + payload
    checksum = internet_checksum(_pseudo_header(src, dst, 17, length) + header + payload) or 0xFFFF
    return header[:6] + struct.pack("!H", checksum) + payload


def sll_header(protocol: int, address: bytes = b"\x02\x00\x00\x00\x00\x01", packet_type: int = 0) -> bytes:
    """Linux cooked capture v1 header (16 bytes)."""
    return struct.pack("!HHH8sH", packet_type, 1, len(address), address.ljust(8, b"\x00"), protocol)


def sll2_header(
    protocol: int, address: bytes = b"\x02\x00\x00\x00\x00\x01", ifindex: int = 2, packet_type: int = 0
) -> bytes:
    """Linux cooked capture v2 header (20 bytes)."""
    return struct.pack(
        "!HHIHBB8s", protocol, 0, ifindex, 1, packet_type, len(address), address.ljust(8, b"\x00")
    )


# --------------------------------------------------------------------------- capture writers


class PcapWriter:
    """Classic libpcap file: either byte order, micro- or nanosecond timestamps."""

    def __init__(
        self,
        out: BinaryIO,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        nanosecond: bool = False,
        big_endian: bool = False,
    ) -> None:
        self.out = out
        self.nanosecond = nanosecond
        self._order = ">" if big_endian else "<"
        self._record = struct.Struct(self._order + "IIII")
        magic = PCAP_MAGIC_NANO if nanosecond else PCAP_MAGIC_MICRO
        out.write(struct.pack(self._order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def record(self, ts_ns: int, data: bytes, origlen: int | None = None) -> bytes:
        """The bytes of one record (header + data), without writing them."""
        seconds, rest = divmod(ts_ns, 1_000_000_000)
        fraction = rest if self.nanosecond else rest // 1000
        orig = len(data) if origlen is None else origlen
        return self._record.pack(seconds, fraction, len(data), orig) + data

    def write(self, ts_ns: int, data: bytes, origlen: int | None = None) -> None:
        self.out.write(self.record(ts_ns, data, origlen))


def _option(code: int, value: bytes, order: str) -> bytes:
    padded = value + b"\x00" * (-len(value) % 4)
    return struct.pack(order + "HH", code, len(value)) + padded


class PcapngWriter:
    """pcapng file: sections, interfaces with tsresol/tsoffset, EPB, SPB and obsolete PB."""

    def __init__(self, out: BinaryIO, big_endian: bool = False) -> None:
        self.out = out
        self._order = ">" if big_endian else "<"
        self.interfaces: list[tuple[int, int, int]] = []  # (linktype, units per second, offset s)
        self.section()

    def block(self, block_type: int, body: bytes) -> None:
        """Any block: type, total length, body (padded to 4), total length again."""
        body += b"\x00" * (-len(body) % 4)
        length = 12 + len(body)
        self.out.write(struct.pack(self._order + "II", block_type, length) + body)
        self.out.write(struct.pack(self._order + "I", length))

    def section(self, big_endian: bool | None = None) -> None:
        """Start a new section (its interfaces start again at id 0)."""
        if big_endian is not None:
            self._order = ">" if big_endian else "<"
        self.interfaces = []
        self.block(PCAPNG_SHB, struct.pack(self._order + "IHHq", PCAPNG_BOM, 1, 0, -1))

    def interface(
        self,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        tsresol: int | None = None,
        tsoffset: int | None = None,
        name: str | None = None,
    ) -> int:
        """Add an interface; ``tsresol`` is the raw option byte (bit 7 set = power of 2)."""
        options = b""
        if name is not None:
            options += _option(2, name.encode(), self._order)
        if tsresol is not None:
            options += _option(9, bytes([tsresol]), self._order)
        if tsoffset is not None:
            options += _option(14, struct.pack(self._order + "q", tsoffset), self._order)
        if options:
            options += _option(0, b"", self._order)
        self.block(PCAPNG_IDB, struct.pack(self._order + "HHI", linktype, 0, snaplen) + options)
        if tsresol is None:
            units = 1_000_000
        elif tsresol & 0x80:
            units = 2 ** (tsresol & 0x7F)
        else:
            units = 10 ** tsresol
        self.interfaces.append((linktype, units, tsoffset or 0))
        return len(self.interfaces) - 1

    def _ticks(self, interface: int, ts_ns: int) -> int:
        _, units, offset = self.interfaces[interface]
        return (ts_ns - offset * 1_000_000_000) * units // 1_000_000_000

    def write(self, interface: int, ts_ns: int, data: bytes, origlen: int | None = None) -> None:
        """An Enhanced Packet Block."""
        ticks = self._ticks(interface, ts_ns)
        orig = len(data) if origlen is None else origlen
        head = struct.pack(
            self._order + "IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig
        )
        self.block(PCAPNG_EPB, head + data)

    def write_simple(self, data: bytes, origlen: int | None = None) -> None:
        """A Simple Packet Block (interface 0, no timestamp)."""
        orig = len(data) if origlen is None else origlen
        self.block(PCAPNG_SPB, struct.pack(self._order + "I", orig) + data)

    def write_obsolete(self, interface: int, ts_ns: int, data: bytes, origlen: int | None = None) -> None:
        """An obsolete Packet Block (type 2): 16-bit interface id and drops count."""
        ticks = self._ticks(interface, ts_ns)
        orig = len(data) if origlen is None else origlen
        head = struct.pack(
            self._order + "HHIIII", interface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig
        )
        self.block(PCAPNG_PB, head + data)
