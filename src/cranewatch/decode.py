"""Decode link, network and transport headers of a whole packet batch at once, with NumPy.

``decode_batch`` turns a ``PacketBatch`` into columns (MACs, VLAN, addresses, ports, TCP
sequence numbers, where the payload starts) without a per-packet Python loop: each layer
gathers its header bytes for every packet that has that layer with one fancy-indexing read,
then works on whole columns. Variable parts (VLAN/QinQ tag stacks, IPv4 options, IPv6
extension header chains) are peeled in a few vectorised rounds, one round per header depth.
A packet that cannot be decoded keeps a ``DecodeStatus`` and zeros, never an exception.

IPv4 and IPv6 fragments are marked (``fragment`` 1 = first, 2 = later); later fragments have
no ports. ``Defragmenter`` reassembles the IPv4 datagrams of marked fragments for the layers
that want their payload.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from cranewatch.sources.pcap import PacketBatch, gather_bytes

__all__ = [
    "DecodeStatus",
    "DecodedBatch",
    "Defragmenter",
    "ReassembledDatagram",
    "decode_batch",
    "ip_text",
    "mac_text",
]


class DecodeStatus(IntEnum):
    """Why a packet's headers could not be decoded completely (0 = they could)."""

    OK = 0
    TRUNCATED_L2 = 1  # capture ends inside the link header or a VLAN tag
    TRUNCATED_L3 = 2  # capture ends inside the IP header or its options/extension headers
    TRUNCATED_L4 = 3  # capture ends inside the TCP/UDP header
    BAD_IP_HEADER = 4  # version does not match, header length < 20, total length < header
    BAD_TCP_OFFSET = 5  # TCP data offset < 20 bytes or beyond the segment
    UNKNOWN_LINKTYPE = 6  # a link type this decoder does not read (802.11, ...)
    IPV6_EXTENSION_CHAIN = 7  # more IPv6 extension headers than any real packet carries


LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = (0, 43, 44, 60, 51, 135, 139, 140)
_MAX_VLAN_TAGS = 8
_MAX_IPV6_EXTENSIONS = 16


@dataclass(slots=True)
class DecodedBatch:
    """Per-packet header columns of one ``PacketBatch`` (all arrays have one row per packet)."""

    batch: PacketBatch  # source, buf, frame, ts, ... reachable from here
    eth_src: np.ndarray  # uint64, MAC in the low 48 bits, 0 where the link has none
    eth_dst: np.ndarray  # uint64
    vlan: np.ndarray  # uint16 outer 802.1Q VLAN id, 0 = untagged (QinQ: outer tag)
    ethertype: np.ndarray  # uint16 after VLAN tags; 0 unknown
    l3_off: np.ndarray  # int64 offset in buf of the network header (-1 none)
    ip_version: np.ndarray  # uint8 0/4/6
    src_ip: np.ndarray  # 'V16': IPv4 as IPv4-mapped IPv6 ::ffff:a.b.c.d
    dst_ip: np.ndarray  # 'V16'
    ip_proto: np.ndarray  # uint8 after IPv6 extension headers
    ttl: np.ndarray  # uint8 TTL / hop limit
    fragment: np.ndarray  # uint8 0 not a fragment, 1 first fragment, 2 later fragment
    sport: np.ndarray  # uint16 (0 where not TCP/UDP or not decodable)
    dport: np.ndarray  # uint16
    tcp_flags: np.ndarray  # uint8
    tcp_seq: np.ndarray  # uint32
    tcp_ack: np.ndarray  # uint32
    payload_off: np.ndarray  # int64 offset in buf of the TCP/UDP payload (or L3 payload otherwise)
    payload_len: np.ndarray  # int32 payload bytes captured (no Ethernet padding)
    status: np.ndarray  # uint8 DecodeStatus
    ip_id: np.ndarray  # uint16 IPv4 identification (0 for IPv6), for fragment reassembly
    frag_offset: np.ndarray  # int32 fragment offset in bytes (IPv4 and IPv6)
    more_fragments: np.ndarray  # bool MF flag

    def __len__(self) -> int:
        return len(self.status)

    def payload(self, index: int) -> bytes:
        """The captured payload bytes of one packet (a copy)."""
        start = int(self.payload_off[index])
        return self.batch.buf[start : start + int(self.payload_len[index])]


def ip_text(addr: bytes) -> str:
    """16-byte address -> '192.0.2.10' for IPv4-mapped addresses, else IPv6 text."""
    raw = bytes(addr)
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in raw[12:])
    return str(ipaddress.IPv6Address(raw))


def mac_text(mac: int) -> str:
    """MAC in the low 48 bits of an integer -> '02:00:00:00:00:01'."""
    return ":".join(f"{b:02x}" for b in int(mac).to_bytes(8, "big")[2:])


# --------------------------------------------------------------------------- gathering

# Header layouts as NumPy record types: gathering N headers and viewing them with one of these
# gives every field as a column, with the network byte order handled by NumPy.
# Overlapping 8-byte fields: a MAC is the top 48 bits of the big-endian word read at its start.
_ETHERNET = np.dtype(
    {"names": ["dst", "src", "type"], "formats": [">u8", ">u8", ">u2"], "offsets": [0, 6, 12], "itemsize": 14}
)
_SLL = np.dtype(
    [("packet_type", ">u2"), ("hatype", ">u2"), ("halen", ">u2"), ("addr_hi", ">u2"),
     ("addr_lo", ">u4"), ("pad", ">u2"), ("protocol", ">u2")]
)
_SLL2 = np.dtype(
    [("protocol", ">u2"), ("reserved", ">u2"), ("ifindex", ">u4"), ("hatype", ">u2"),
     ("packet_type", "u1"), ("halen", "u1"), ("addr_hi", ">u2"), ("addr_lo", ">u4"), ("pad", ">u2")]
)
_VLAN = np.dtype([("tci", ">u2"), ("type", ">u2")])
_IPV4 = np.dtype(
    [("version_ihl", "u1"), ("tos", "u1"), ("length", ">u2"), ("ident", ">u2"), ("flags", ">u2"),
     ("ttl", "u1"), ("proto", "u1"), ("checksum", ">u2"), ("src", ">u4"), ("dst", ">u4")]
)
_IPV6 = np.dtype(
    [("version_class", "u1"), ("class_flow", "V3"), ("length", ">u2"), ("next_header", "u1"),
     ("hop_limit", "u1"), ("src_hi", ">u8"), ("src_lo", ">u8"), ("dst_hi", ">u8"), ("dst_lo", ">u8")]
)
_EXTENSION = np.dtype([("next_header", "u1"), ("length", "u1"), ("fragment", ">u2"), ("ident", ">u4")])
_TCP = np.dtype(
    [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("offset", "u1"),
     ("flags", "u1"), ("window", ">u2"), ("checksum", ">u2"), ("urgent", ">u2")]
)
_UDP = np.dtype([("sport", ">u2"), ("dport", ">u2"), ("length", ">u2"), ("checksum", ">u2")])
_IPV4_MAPPED = np.uint64(0xFFFF_0000_0000)


def _headers(buf: bytes, starts: np.ndarray, layout: np.dtype) -> np.ndarray:
    """One record of ``layout`` read at each start (1-D structured array)."""
    return gather_bytes(buf, starts, layout.itemsize).view(layout).reshape(len(starts))


def _mac(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)


def _addresses(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """16-byte 'V16' addresses from the high and low 64-bit halves."""
    pair = np.empty((len(hi), 2), dtype=">u8")
    pair[:, 0] = hi
    pair[:, 1] = lo
    return pair.view("V16").reshape(len(hi))


# --------------------------------------------------------------------------- the decoder


def decode_batch(batch: PacketBatch) -> DecodedBatch:
    """Decode L2-L4 headers of every packet in ``batch``; never raises on any bytes."""
    buf = batch.buf
    offset = np.asarray(batch.offset, dtype=np.int64)
    caplen = np.maximum(np.asarray(batch.caplen, dtype=np.int64), 0)
    # a packet's bytes are what lies inside both its record and the buffer
    start = np.clip(offset, 0, len(buf))
    end = np.clip(offset + caplen, start, len(buf))

    link = _link_layer(buf, np.asarray(batch.linktype), start, end)
    vlan = _vlan_tags(buf, end, link)
    net = _network_layer(buf, end, link)
    transport = _transport_layer(buf, end, link.status, net)
    status = link.status

    payload_off = np.where(link.l3 >= 0, link.l3, start)
    payload_off = np.where(net.version > 0, net.l4, payload_off)
    payload_off = np.where(transport.has_ports, transport.payload_off, payload_off)
    limit = np.where(net.version > 0, np.minimum(net.end, end), end)
    payload_len = np.clip(limit - payload_off, 0, None)
    broken = (status != DecodeStatus.OK) & (status != DecodeStatus.TRUNCATED_L4) & (net.version == 0)
    payload_len[broken] = 0

    return DecodedBatch(
        batch=batch,
        eth_src=link.eth_src,
        eth_dst=link.eth_dst,
        vlan=vlan,
        ethertype=link.ethertype.astype(np.uint16),
        l3_off=link.l3,
        ip_version=net.version,
        src_ip=_addresses(net.src_hi, net.src_lo),
        dst_ip=_addresses(net.dst_hi, net.dst_lo),
        ip_proto=net.proto,
        ttl=net.ttl,
        fragment=net.fragment,
        sport=transport.sport,
        dport=transport.dport,
        tcp_flags=transport.flags,
        tcp_seq=transport.seq,
        tcp_ack=transport.ack,
        payload_off=payload_off,
        payload_len=payload_len.astype(np.int32),
        status=status,
        ip_id=net.ident,
        frag_offset=net.frag_offset,
        more_fragments=net.more_fragments,
    )


@dataclass(slots=True)
class _Link:
    status: np.ndarray  # uint8, shared by every layer
    eth_src: np.ndarray
    eth_dst: np.ndarray
    ethertype: np.ndarray  # int64
    l3: np.ndarray  # int64, -1 none


def _link_layer(buf: bytes, linktype: np.ndarray, start: np.ndarray, end: np.ndarray) -> _Link:
    """MACs, ethertype and the network-header offset, for each link type present."""
    count = len(start)
    link = _Link(
        status=np.full(count, DecodeStatus.UNKNOWN_LINKTYPE, dtype=np.uint8),
        eth_src=np.zeros(count, dtype=np.uint64),
        eth_dst=np.zeros(count, dtype=np.uint64),
        ethertype=np.zeros(count, dtype=np.int64),
        l3=np.full(count, -1, dtype=np.int64),
    )
    caplen = end - start
    # One link type per capture is the rule (and np.unique would import numpy.ma, ~10 ms)
    first = int(linktype[0]) if count else 0
    kinds = [first] if not count or (linktype == first).all() else [int(k) for k in np.unique(linktype)]
    for value in kinds:
        lt = int(value)
        group: np.ndarray | slice = slice(None) if len(kinds) == 1 else linktype == value
        if lt == LINKTYPE_ETHERNET:
            _ethernet(buf, start, caplen, link, group)
        elif lt in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            _linux_cooked(buf, start, caplen, link, group, lt)
        elif lt in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
            _raw_ip(buf, start, caplen, link, group, lt)
        elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
            _loopback(buf, start, caplen, link, group, lt)
    return link


def _set_l3(link: _Link, group: np.ndarray | slice, ok: np.ndarray, kind: np.ndarray, l3: np.ndarray, short: int) -> None:
    """Store ethertype/l3 for the rows of ``group``; rows not ``ok`` are truncated at L2."""
    is_type = ok & (kind >= 0x0600)  # smaller values are 802.3 lengths / LLC, not ethertypes
    link.status[group] = np.where(ok, np.uint8(DecodeStatus.OK), np.uint8(short))
    if is_type.all():
        link.ethertype[group] = kind
        link.l3[group] = l3
    else:
        link.ethertype[group] = np.where(is_type, kind, 0)
        link.l3[group] = np.where(is_type, l3, -1)


def _ethernet(buf: bytes, start: np.ndarray, caplen: np.ndarray, link: _Link, group: np.ndarray | slice) -> None:
    first = start[group]
    ok = caplen[group] >= 14
    head = _headers(buf, first, _ETHERNET)
    link.eth_dst[group] = _only(ok, head["dst"] >> np.uint64(16))
    link.eth_src[group] = _only(ok, head["src"] >> np.uint64(16))
    _set_l3(link, group, ok, head["type"].astype(np.int64), first + 14, DecodeStatus.TRUNCATED_L2)


def _only(ok: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``ok``, else 0; skips the select when every row is ok (the usual case)."""
    return values if ok.all() else np.where(ok, values, values.dtype.type(0))


def _linux_cooked(
    buf: bytes, start: np.ndarray, caplen: np.ndarray, link: _Link, group: np.ndarray | slice, lt: int
) -> None:
    layout = _SLL if lt == LINKTYPE_LINUX_SLL else _SLL2
    first = start[group]
    ok = caplen[group] >= layout.itemsize
    head = _headers(buf, first, layout)
    has_mac = ok & (head["halen"] == 6)
    link.eth_src[group] = np.where(has_mac, _mac(head["addr_hi"], head["addr_lo"]), 0)
    kind = head["protocol"].astype(np.int64)
    _set_l3(link, group, ok, kind, first + layout.itemsize, DecodeStatus.TRUNCATED_L2)


def _raw_ip(
    buf: bytes, start: np.ndarray, caplen: np.ndarray, link: _Link, group: np.ndarray | slice, lt: int
) -> None:
    first = start[group]
    ok = caplen[group] >= 1
    if lt == LINKTYPE_IPV4:
        kind = np.full(len(first), ETHERTYPE_IPV4, dtype=np.int64)
    elif lt == LINKTYPE_IPV6:
        kind = np.full(len(first), ETHERTYPE_IPV6, dtype=np.int64)
    else:
        version = gather_bytes(buf, first, 1)[:, 0] >> 4
        kind = np.select([version == 4, version == 6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)
        ok = ok & (kind != 0)
    link.status[group] = np.where(ok, DecodeStatus.OK, np.where(caplen[group] >= 1, DecodeStatus.BAD_IP_HEADER, DecodeStatus.TRUNCATED_L3))
    link.ethertype[group] = np.where(ok, kind, 0)
    link.l3[group] = np.where(ok, first, -1)


def _loopback(
    buf: bytes, start: np.ndarray, caplen: np.ndarray, link: _Link, group: np.ndarray | slice, lt: int
) -> None:
    first = start[group]
    ok = caplen[group] >= 4
    head = gather_bytes(buf, first, 4)
    big = head.view(">u4").reshape(len(first)).astype(np.int64)
    little = head.view("<u4").reshape(len(first)).astype(np.int64)
    # NULL writes the address family in the capturing host's byte order, LOOP in network order
    family = big if lt == LINKTYPE_LOOP else np.where(big < 0x10000, big, little)
    kind = np.select([family == 2, np.isin(family, (10, 24, 28, 30))], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)
    link.status[group] = np.where(ok, DecodeStatus.OK, DecodeStatus.TRUNCATED_L2)
    link.ethertype[group] = np.where(ok, kind, 0)
    link.l3[group] = np.where(ok & (kind != 0), first + 4, -1)


def _vlan_tags(buf: bytes, end: np.ndarray, link: _Link) -> np.ndarray:
    """Peel 802.1Q / 802.1ad tags (any depth up to 8); return the outer VLAN id per packet."""
    vlan = np.zeros(len(end), dtype=np.uint16)
    tagged = np.zeros(len(end), dtype=bool)
    for _ in range(_MAX_VLAN_TAGS):
        kind = link.ethertype
        is_tag = ((kind == 0x8100) | (kind == 0x88A8) | (kind == 0x9100)) & (link.status == DecodeStatus.OK)
        if not is_tag.any():
            break
        short = is_tag & (link.l3 + 4 > end)
        link.status[short] = DecodeStatus.TRUNCATED_L2
        link.ethertype[short] = 0
        link.l3[short] = -1
        rows = np.flatnonzero(is_tag & ~short)
        tag = _headers(buf, link.l3[rows], _VLAN)
        outer = ~tagged[rows]
        vlan[rows[outer]] = tag["tci"][outer] & 0x0FFF
        tagged[rows] = True
        inner = tag["type"].astype(np.int64)
        link.ethertype[rows] = np.where(inner >= 0x0600, inner, 0)
        link.l3[rows] = np.where(inner >= 0x0600, link.l3[rows] + 4, -1)
    return vlan


@dataclass(slots=True)
class _Network:
    version: np.ndarray
    src_hi: np.ndarray  # uint64 halves of the 16-byte addresses
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    ttl: np.ndarray
    fragment: np.ndarray
    ident: np.ndarray
    frag_offset: np.ndarray
    more_fragments: np.ndarray
    l4: np.ndarray  # offset of the transport header (after options / extension headers)
    end: np.ndarray  # where the IP datagram ends by its own length field (no padding)


def _network_layer(buf: bytes, end: np.ndarray, link: _Link) -> _Network:
    count = len(end)
    net = _Network(
        version=np.zeros(count, dtype=np.uint8),
        src_hi=np.zeros(count, dtype=np.uint64),
        src_lo=np.zeros(count, dtype=np.uint64),
        dst_hi=np.zeros(count, dtype=np.uint64),
        dst_lo=np.zeros(count, dtype=np.uint64),
        proto=np.zeros(count, dtype=np.uint8),
        ttl=np.zeros(count, dtype=np.uint8),
        fragment=np.zeros(count, dtype=np.uint8),
        ident=np.zeros(count, dtype=np.uint16),
        frag_offset=np.zeros(count, dtype=np.int32),
        more_fragments=np.zeros(count, dtype=bool),
        l4=np.full(count, -1, dtype=np.int64),
        end=end.copy(),
    )
    ready = link.status == DecodeStatus.OK
    ipv4 = ready & (link.ethertype == ETHERTYPE_IPV4)
    if ipv4.any():
        _ipv4(buf, end, link, net, ipv4)
    ipv6 = ready & (link.ethertype == ETHERTYPE_IPV6)
    if ipv6.any():
        _ipv6(buf, end, link, net, np.flatnonzero(ipv6))
    return net


def _ipv4(buf: bytes, end: np.ndarray, link: _Link, net: _Network, mask: np.ndarray) -> None:
    """IPv4 over whole columns: most packets of a crane capture are IPv4, so no subsetting.

    Runs before IPv6 on freshly zeroed columns, so each column can be replaced outright with
    ``np.where`` (one pass) instead of a masked assignment (two).
    """
    l3 = link.l3
    status = link.status
    short = mask & (l3 + 20 > end)
    status[short] = DecodeStatus.TRUNCATED_L3
    mask = mask & ~short
    head = _headers(buf, np.where(mask, l3, 0), _IPV4)
    version_ihl = head["version_ihl"]
    header_len = (version_ihl & 0x0F).astype(np.int64) * 4
    total = head["length"].astype(np.int64)
    # total length 0 is what a capture on a host with TCP segmentation offload shows
    total = np.where(total == 0, end - l3, total)
    bad = mask & (((version_ihl >> 4) != 4) | (header_len < 20) | (total < header_len))
    status[bad] = DecodeStatus.BAD_IP_HEADER
    good = mask & ~bad
    status[good & (l3 + header_len > end)] = DecodeStatus.TRUNCATED_L3
    net.version = np.where(good, np.uint8(4), np.uint8(0))
    net.src_lo = np.where(good, head["src"].astype(np.uint64) | _IPV4_MAPPED, np.uint64(0))
    net.dst_lo = np.where(good, head["dst"].astype(np.uint64) | _IPV4_MAPPED, np.uint64(0))
    net.ttl = np.where(good, head["ttl"], np.uint8(0))
    net.proto = np.where(good, head["proto"], np.uint8(0))
    net.ident = np.where(good, head["ident"], 0).astype(np.uint16)
    flags = head["flags"]
    more = good & ((flags & 0x2000) != 0)
    offset = np.where(good, (flags & 0x1FFF).astype(np.int32) * 8, np.int32(0))
    net.more_fragments = more
    net.frag_offset = offset
    net.fragment = np.where(offset > 0, np.uint8(2), more.astype(np.uint8))
    net.l4 = np.where(good, l3 + header_len, -1)
    net.end = np.where(good, l3 + total, net.end)


def _ipv6(buf: bytes, end: np.ndarray, link: _Link, net: _Network, rows: np.ndarray) -> None:
    """IPv6 on the rows that carry it, walking extension header chains a round per depth."""
    status = link.status
    l3 = link.l3[rows]
    short = l3 + 40 > end[rows]
    status[rows[short]] = DecodeStatus.TRUNCATED_L3
    rows, l3 = rows[~short], l3[~short]
    head = _headers(buf, l3, _IPV6)
    bad = (head["version_class"] >> 4) != 6
    status[rows[bad]] = DecodeStatus.BAD_IP_HEADER
    rows, l3, head = rows[~bad], l3[~bad], head[~bad]
    if len(rows) == 0:
        return
    payload_len = head["length"].astype(np.int64)
    net.version[rows] = 6
    net.src_hi[rows] = head["src_hi"]
    net.src_lo[rows] = head["src_lo"]
    net.dst_hi[rows] = head["dst_hi"]
    net.dst_lo[rows] = head["dst_lo"]
    net.ttl[rows] = head["hop_limit"]
    next_header = head["next_header"].astype(np.int64)
    at = l3 + 40
    # payload length 0 means a jumbogram or segmentation offload: trust the captured length
    net.end[rows] = np.where(payload_len == 0, end[rows], at + payload_len)
    walking = np.ones(len(rows), dtype=bool)
    for _ in range(_MAX_IPV6_EXTENSIONS):
        walking &= np.isin(next_header, _IPV6_EXTENSIONS)
        if not walking.any():
            break
        sub = np.flatnonzero(walking)
        cut = at[sub] + 8 > end[rows[sub]]
        status[rows[sub[cut]]] = DecodeStatus.TRUNCATED_L3
        walking[sub[cut]] = False
        sub = sub[~cut]
        ext = _headers(buf, at[sub], _EXTENSION)
        kind = next_header[sub]
        length = ext["length"].astype(np.int64)
        size = np.where(kind == 44, 8, np.where(kind == 51, (length + 2) * 4, (length + 1) * 8))
        fragment = kind == 44
        if fragment.any():
            frag_rows = rows[sub[fragment]]
            field = ext["fragment"][fragment]
            offset = (field >> 3).astype(np.int32) * 8
            more = (field & 1) != 0
            net.frag_offset[frag_rows] = offset
            net.more_fragments[frag_rows] = more
            net.fragment[frag_rows] = np.where(offset > 0, 2, more.astype(np.uint8))
            # a later fragment's bytes are not a header: stop walking there
            walking[sub[fragment][offset > 0]] = False
        next_header[sub] = ext["next_header"]
        at[sub] += size
    else:
        chain = walking & np.isin(next_header, _IPV6_EXTENSIONS)
        status[rows[chain]] = DecodeStatus.IPV6_EXTENSION_CHAIN
    past = (at > end[rows]) & (status[rows] == DecodeStatus.OK)
    status[rows[past]] = DecodeStatus.TRUNCATED_L3
    net.proto[rows] = next_header.astype(np.uint8)
    net.l4[rows] = at


@dataclass(slots=True)
class _Transport:
    sport: np.ndarray
    dport: np.ndarray
    flags: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    payload_off: np.ndarray
    has_ports: np.ndarray


def _transport_layer(buf: bytes, end: np.ndarray, status: np.ndarray, net: _Network) -> _Transport:
    count = len(end)
    out = _Transport(
        sport=np.zeros(count, dtype=np.uint16),
        dport=np.zeros(count, dtype=np.uint16),
        flags=np.zeros(count, dtype=np.uint8),
        seq=np.zeros(count, dtype=np.uint32),
        ack=np.zeros(count, dtype=np.uint32),
        payload_off=np.zeros(count, dtype=np.int64),
        has_ports=np.zeros(count, dtype=bool),
    )
    ready = (net.version > 0) & (status == DecodeStatus.OK) & (net.fragment < 2)
    tcp = ready & (net.proto == 6)
    udp = ready & ((net.proto == 17) | (net.proto == 136))  # UDP-Lite has the same header
    either = tcp | udp
    if not either.any():
        return out
    room = np.minimum(end, net.end) - net.l4
    # one gather serves both: UDP's 8 bytes are the first 8 of the 20 read for TCP
    head = _headers(buf, np.where(either, net.l4, 0), _TCP)
    ports = either & (room >= 4)
    out.sport = np.where(ports, head["sport"], 0).astype(np.uint16)
    out.dport = np.where(ports, head["dport"], 0).astype(np.uint16)
    whole = np.where(tcp, room >= 20, room >= 8) & either
    status[either & ~whole] = DecodeStatus.TRUNCATED_L4
    tcp_whole = tcp & whole
    out.seq = np.where(tcp_whole, head["seq"], 0).astype(np.uint32)
    out.ack = np.where(tcp_whole, head["ack"], 0).astype(np.uint32)
    out.flags = np.where(tcp_whole, head["flags"], np.uint8(0))
    header_len = np.where(tcp, (head["offset"] >> 4).astype(np.int64) * 4, 8)
    bad = tcp_whole & ((header_len < 20) | (header_len > room))
    status[bad] = DecodeStatus.BAD_TCP_OFFSET
    out.has_ports = whole & ~bad
    out.payload_off = np.where(out.has_ports, net.l4 + header_len, 0)
    return out


# --------------------------------------------------------------------------- fragments


@dataclass(frozen=True, slots=True)
class ReassembledDatagram:
    """One IPv4 datagram put back together from its fragments."""

    source: str
    frame: int  # frame number of the fragment that completed it (tshark shows it there)
    ts: float
    src_ip: bytes  # 16 bytes, IPv4-mapped
    dst_ip: bytes
    ip_proto: int
    payload: bytes  # the whole L4 datagram (transport header + data)
    frames: tuple[int, ...] = ()  # frame numbers of its fragments, in capture order


@dataclass(slots=True)
class _Pending:
    first_ts: float
    parts: dict[int, bytes]
    total: int | None  # known once the last fragment (MF clear) arrives
    size: int
    frames: list[int]


class Defragmenter:
    """Bounded IPv4 reassembly: fragments in, whole datagrams out.

    Keys are (source, src, dst, proto, ident). A datagram that is not complete within
    ``timeout`` seconds (capture time) is dropped, as are datagrams growing beyond
    ``max_datagram`` bytes; at most ``max_pending`` are kept, the oldest dropped first.
    """

    def __init__(self, timeout: float = 30.0, max_pending: int = 1024, max_datagram: int = 65535) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_datagram = max_datagram
        self.dropped = 0
        self._pending: OrderedDict[tuple[str, bytes, bytes, int, int], _Pending] = OrderedDict()

    def feed(self, decoded: DecodedBatch) -> list[ReassembledDatagram]:
        """Take the IPv4 fragments of a decoded batch; return the datagrams they complete."""
        rows = np.flatnonzero((decoded.fragment > 0) & (decoded.ip_version == 4))
        done: list[ReassembledDatagram] = []
        batch = decoded.batch
        for row in rows:
            ts = float(batch.ts[row])
            self._expire(ts)
            key = (
                batch.source,
                bytes(decoded.src_ip[row]),
                bytes(decoded.dst_ip[row]),
                int(decoded.ip_proto[row]),
                int(decoded.ip_id[row]),
            )
            piece = _fragment_bytes(decoded, int(row))
            offset = int(decoded.frag_offset[row])
            pending = self._pending.get(key)
            if pending is None:
                pending = _Pending(first_ts=ts, parts={}, total=None, size=0, frames=[])
                self._pending[key] = pending
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
                    self.dropped += 1
            pending.frames.append(int(batch.frame[row]))
            if offset not in pending.parts:
                pending.parts[offset] = piece
                pending.size += len(piece)
            if not decoded.more_fragments[row]:
                pending.total = offset + len(piece)
            if pending.size > self.max_datagram or (pending.total or 0) > self.max_datagram:
                del self._pending[key]
                self.dropped += 1
                continue
            whole = _assemble(pending)
            if whole is not None:
                del self._pending[key]
                done.append(
                    ReassembledDatagram(
                        source=batch.source,
                        frame=int(batch.frame[row]),
                        ts=ts,
                        src_ip=key[1],
                        dst_ip=key[2],
                        ip_proto=key[3],
                        payload=whole,
                        frames=tuple(pending.frames),
                    )
                )
        return done

    def _expire(self, now: float) -> None:
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if now - oldest.first_ts <= self.timeout:
                break
            del self._pending[key]
            self.dropped += 1


def _fragment_bytes(decoded: DecodedBatch, row: int) -> bytes:
    """The bytes a fragment carries after its IP header (its own piece of the datagram)."""
    buf = decoded.batch.buf
    start = int(decoded.l3_off[row])
    begin = start + (buf[start] & 0x0F) * 4
    stop = int(decoded.payload_off[row]) + int(decoded.payload_len[row])
    return buf[begin:stop]


def _assemble(pending: _Pending) -> bytes | None:
    if pending.total is None:
        return None
    out = bytearray()
    for offset in sorted(pending.parts):
        piece = pending.parts[offset]
        if offset > len(out):
            return None  # a hole
        out[offset : offset + len(piece)] = piece
    if len(out) < pending.total:
        return None
    return bytes(out[: pending.total])
