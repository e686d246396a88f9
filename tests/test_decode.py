"""The vectorised L2-L4 decoder: each layer from byte literals, truncation at each layer, fuzzing."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.decode import (
    DecodedBatch,
    DecodeStatus,
    Defragmenter,
    decode_batch,
    ip_text,
    mac_text,
)
from cranewatch.sources.pcap import PacketBatch, open_capture
from cranewatch.sources.pcapwrite import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IEEE802_11,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    PcapngWriter,
    PcapWriter,
    ethernet_frame,
    ipv4_address,
    ipv4_packet,
    ipv6_packet,
    sll2_header,
    sll_header,
    tcp_segment,
    udp_datagram,
)

MASTER_MAC = "02:00:00:00:07:0a"
PLC_MAC = "02:00:00:00:07:14"
# A Modbus/TCP read-holding-registers request: MBAP (tid 1, pid 0, len 6, unit 1) + FC3 @100 x10
MODBUS_READ = bytes.fromhex("0001 0000 0006 01 03 0064 000a".replace(" ", ""))

# Ethernet / IPv4 / TCP written out by hand, field by field, independent of pcapwrite
HAND_FRAME = bytes.fromhex(
    "02000000071402000000070a0800"  # dst, src, IPv4
    "4500003400014000" "4006" "0000" "0a14070a" "0a140714"  # IPv4: len 52, id 1, DF, ttl 64, TCP
    "c35001f6" "00000064" "000000c8" "50" "18" "faf0" "0000" "0000"  # TCP 50000->502 seq 100 ack 200 PSH|ACK
) + MODBUS_READ


def batch_of(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, tmp: Path | None = None) -> PacketBatch:
    """Write ``frames`` to a pcap in memory and read them back as one batch."""
    out = io.BytesIO()
    writer = PcapWriter(out, linktype=linktype)
    for i, frame in enumerate(frames):
        writer.write(1_700_000_000_000_000_000 + i * 1000, frame)
    path = (tmp or Path("/tmp")) / f"decode-{linktype}-{len(frames)}-{abs(hash(tuple(frames)))}.pcap"
    path.write_bytes(out.getvalue())
    try:
        with open_capture(path) as reader:
            (batch,) = list(reader.batches())
    finally:
        path.unlink()
    return batch


def decode(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET) -> DecodedBatch:
    return decode_batch(batch_of(frames, linktype))


def tcp_frame(payload: bytes = MODBUS_READ, **ip: object) -> bytes:
    segment = tcp_segment(50000, 502, 100, 200, TCP_PSH | TCP_ACK, payload)
    return ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, ipv4_packet("10.20.7.10", "10.20.7.20", 6, segment, **ip))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Ethernet / IPv4 / TCP


def test_hand_written_modbus_frame_every_field() -> None:
    d = decode([HAND_FRAME])
    assert d.status.tolist() == [DecodeStatus.OK]
    assert mac_text(d.eth_dst[0]) == PLC_MAC and mac_text(d.eth_src[0]) == MASTER_MAC
    assert d.vlan.tolist() == [0]
    assert d.ethertype.tolist() == [0x0800]
    assert d.l3_off.tolist() == [int(d.batch.offset[0]) + 14]
    assert d.ip_version.tolist() == [4]
    assert ip_text(d.src_ip[0]) == "10.20.7.10" and ip_text(d.dst_ip[0]) == "10.20.7.20"
    assert bytes(d.src_ip[0]) == bytes(10) + b"\xff\xff" + bytes([10, 20, 7, 10])
    assert d.ip_proto.tolist() == [6] and d.ttl.tolist() == [64] and d.fragment.tolist() == [0]
    assert (d.sport[0], d.dport[0]) == (50000, 502)
    assert (d.tcp_seq[0], d.tcp_ack[0], d.tcp_flags[0]) == (100, 200, 0x18)
    assert d.payload_off.tolist() == [int(d.batch.offset[0]) + 54]
    assert d.payload(0) == MODBUS_READ


def test_contract_dtypes() -> None:
    d = decode([HAND_FRAME])
    expected = {
        "eth_src": np.uint64, "eth_dst": np.uint64, "vlan": np.uint16, "ethertype": np.uint16,
        "l3_off": np.int64, "ip_version": np.uint8, "ip_proto": np.uint8, "ttl": np.uint8,
        "fragment": np.uint8, "sport": np.uint16, "dport": np.uint16, "tcp_flags": np.uint8,
        "tcp_seq": np.uint32, "tcp_ack": np.uint32, "payload_off": np.int64,
        "payload_len": np.int32, "status": np.uint8,
    }  # fmt: skip
    for name, dtype in expected.items():
        assert getattr(d, name).dtype == dtype, name
    assert d.src_ip.dtype == np.dtype("V16") and d.dst_ip.dtype == np.dtype("V16")


def test_builder_frame_matches_hand_written_frame() -> None:
    frame = ethernet_frame(
        PLC_MAC, MASTER_MAC, 0x0800,
        ipv4_packet("10.20.7.10", "10.20.7.20", 6, tcp_segment(50000, 502, 100, 200, 0x18, MODBUS_READ), ident=1),
    )  # fmt: skip
    # same bytes apart from the IPv4 checksum, which the hand-written frame leaves 0
    assert frame[:24] == HAND_FRAME[:24] and frame[26:] == HAND_FRAME[26:]


def test_ethernet_padding_is_not_payload() -> None:
    udp = udp_datagram(123, 123, b"abcd")
    frame = ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, ipv4_packet("10.0.0.1", "10.0.0.2", 17, udp), pad=True)
    assert len(frame) == 60
    d = decode([frame])
    assert d.payload_len.tolist() == [4]
    assert d.payload(0) == b"abcd"


def test_ipv4_options_move_the_transport_header() -> None:
    frame = tcp_frame(options=b"\x94\x04\x00\x00")  # router alert, IHL 6
    d = decode([frame])
    assert d.status.tolist() == [0]
    assert (d.sport[0], d.dport[0]) == (50000, 502)
    assert d.payload(0) == MODBUS_READ


def test_tcp_options_and_syn() -> None:
    segment = tcp_segment(40000, 502, 7, 0, TCP_SYN, options=b"\x02\x04\x05\xb4\x01\x01\x04\x02")
    frame = ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, ipv4_packet("10.0.0.1", "10.0.0.2", 6, segment))
    d = decode([frame])
    assert d.tcp_flags.tolist() == [TCP_SYN] and d.tcp_seq.tolist() == [7]
    assert d.payload_len.tolist() == [0]
    assert d.payload_off.tolist() == [int(d.batch.offset[0]) + 14 + 20 + 28]


def test_arp_is_not_ip() -> None:
    arp = bytes.fromhex("0001080006040001") + bytes(20)
    d = decode([ethernet_frame("ff:ff:ff:ff:ff:ff", MASTER_MAC, 0x0806, arp)])
    assert d.status.tolist() == [0] and d.ethertype.tolist() == [0x0806]
    assert d.ip_version.tolist() == [0] and d.sport.tolist() == [0]
    assert d.payload_len.tolist() == [28]
    assert mac_text(d.eth_dst[0]) == "ff:ff:ff:ff:ff:ff"


def test_8023_llc_frame_has_no_ethertype() -> None:
    frame = bytes.fromhex("0180c200000002000000070a0026") + b"\x42\x42\x03" + bytes(35)
    d = decode([frame])
    assert d.status.tolist() == [0] and d.ethertype.tolist() == [0] and d.l3_off.tolist() == [-1]


# --------------------------------------------------------------------------- VLAN


def test_vlan_and_qinq_report_outer_id_and_inner_ethertype() -> None:
    inner = ipv4_packet("10.0.0.1", "10.0.0.2", 17, udp_datagram(5000, 53, b"q"))
    single = ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, inner, vlans=[20])
    double = ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, inner, vlans=[300, 20])
    assert double[12:20] == bytes.fromhex("88a8012c81000014")
    d = decode([single, double])
    assert d.vlan.tolist() == [20, 300]
    assert d.ethertype.tolist() == [0x0800, 0x0800]
    assert d.dport.tolist() == [53, 53]
    assert d.l3_off.tolist() == [int(d.batch.offset[0]) + 18, int(d.batch.offset[1]) + 22]


def test_truncated_vlan_tag() -> None:
    frame = ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, b"", vlans=[7])[:16]
    d = decode([frame])
    assert d.status.tolist() == [DecodeStatus.TRUNCATED_L2]


# --------------------------------------------------------------------------- other link types


def test_linux_cooked_v1_and_v2() -> None:
    packet = ipv4_packet("192.168.1.5", "192.168.1.9", 6, tcp_segment(1234, 502, 1, 2, TCP_ACK, b"xy"))
    sll = sll_header(0x0800, address=bytes.fromhex("02000000070a")) + packet
    d1 = decode([sll], LINKTYPE_LINUX_SLL)
    sll2 = sll2_header(0x0800, address=bytes.fromhex("02000000070a")) + packet
    d2 = decode([sll2], LINKTYPE_LINUX_SLL2)
    for d, size in ((d1, 16), (d2, 20)):
        assert d.status.tolist() == [0]
        assert mac_text(d.eth_src[0]) == MASTER_MAC and d.eth_dst.tolist() == [0]
        assert d.l3_off.tolist() == [int(d.batch.offset[0]) + size]
        assert ip_text(d.dst_ip[0]) == "192.168.1.9" and d.dport.tolist() == [502]
        assert d.payload(0) == b"xy"


def test_raw_ip_link_types() -> None:
    v4 = ipv4_packet("10.1.1.1", "10.1.1.2", 17, udp_datagram(1, 2, b"four"))
    v6 = ipv6_packet("fe80::1", "ff02::fb", 17, udp_datagram(5353, 5353, b"mdns"))
    raw = decode([v4, v6], LINKTYPE_RAW)
    assert raw.ip_version.tolist() == [4, 6]
    assert raw.ethertype.tolist() == [0x0800, 0x86DD]
    assert ip_text(raw.src_ip[1]) == "fe80::1" and raw.dport.tolist() == [2, 5353]
    assert decode([v4], LINKTYPE_IPV4).dport.tolist() == [2]
    assert decode([v6], LINKTYPE_IPV6).sport.tolist() == [5353]
    assert decode([b"\x75" + v4[1:]], LINKTYPE_RAW).status.tolist() == [DecodeStatus.BAD_IP_HEADER]


def test_null_loopback_either_byte_order() -> None:
    v4 = ipv4_packet("127.0.0.1", "127.0.0.1", 17, udp_datagram(9, 9, b"x"))
    d = decode([struct.pack("<I", 2) + v4, struct.pack(">I", 2) + v4], LINKTYPE_NULL)
    assert d.ip_version.tolist() == [4, 4] and d.dport.tolist() == [9, 9]


def test_unknown_link_type_is_a_status_not_an_error() -> None:
    d = decode([b"\x08\x02" + bytes(30)], LINKTYPE_IEEE802_11)
    assert d.status.tolist() == [DecodeStatus.UNKNOWN_LINKTYPE]
    assert d.ip_version.tolist() == [0] and d.payload_len.tolist() == [0]


def test_mixed_link_types_in_one_pcapng_batch(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    eth = writer.interface(LINKTYPE_ETHERNET)
    raw = writer.interface(LINKTYPE_RAW)
    writer.write(eth, 0, HAND_FRAME)
    writer.write(raw, 0, HAND_FRAME[14:])
    writer.write(eth, 0, HAND_FRAME)
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(out.getvalue())
    with open_capture(path) as reader:
        (batch,) = list(reader)
    d = decode_batch(batch)
    assert d.status.tolist() == [0, 0, 0]
    assert d.dport.tolist() == [502, 502, 502]
    assert [d.payload(i) for i in range(3)] == [MODBUS_READ] * 3
    assert mac_text(d.eth_src[0]) == MASTER_MAC and d.eth_src[1] == 0


# --------------------------------------------------------------------------- IPv6


def test_ipv6_with_hop_by_hop_and_destination_options() -> None:
    segment = tcp_segment(50001, 502, 1, 1, TCP_ACK, MODBUS_READ)
    hop_by_hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next: destination options, 8 bytes
    dest_opts = bytes([6, 1]) + bytes(14)  # next: TCP, 16 bytes
    packet = ipv6_packet("2001:db8::10", "2001:db8::20", 0, hop_by_hop + dest_opts + segment, hop_limit=7)
    d = decode([ethernet_frame(PLC_MAC, MASTER_MAC, 0x86DD, packet)])
    assert d.status.tolist() == [0]
    assert d.ip_version.tolist() == [6] and d.ip_proto.tolist() == [6] and d.ttl.tolist() == [7]
    assert ip_text(d.src_ip[0]) == "2001:db8::10" and ip_text(d.dst_ip[0]) == "2001:db8::20"
    assert (d.sport[0], d.dport[0]) == (50001, 502)
    assert d.payload(0) == MODBUS_READ


def test_ipv6_fragments_are_marked() -> None:
    udp = udp_datagram(7000, 7001, b"A" * 24)
    first = bytes([17, 0]) + struct.pack("!HI", 0 | 1, 99) + udp[:16]
    later = bytes([17, 0]) + struct.pack("!HI", (16 // 8) << 3, 99) + udp[16:]
    frames = [
        ethernet_frame(PLC_MAC, MASTER_MAC, 0x86DD, ipv6_packet("fe80::1", "fe80::2", 44, first)),
        ethernet_frame(PLC_MAC, MASTER_MAC, 0x86DD, ipv6_packet("fe80::1", "fe80::2", 44, later)),
    ]
    d = decode(frames)
    assert d.fragment.tolist() == [1, 2]
    assert d.ip_proto.tolist() == [17, 17]
    assert d.sport.tolist() == [7000, 0]
    assert d.frag_offset.tolist() == [0, 16]


def test_ipv6_extension_header_cut_short() -> None:
    packet = ipv6_packet("::1", "::2", 0, bytes([6, 0, 1, 4]))  # hop-by-hop ends after 4 bytes
    d = decode([ethernet_frame(PLC_MAC, MASTER_MAC, 0x86DD, packet)])
    assert d.status.tolist() == [DecodeStatus.TRUNCATED_L3]


# --------------------------------------------------------------------------- fragments


def fragments_of(payload: bytes, size: int, ident: int = 4242) -> list[bytes]:
    """IPv4 fragments of a UDP datagram, ``size`` bytes (multiple of 8) each."""
    frames = []
    for at in range(0, len(payload), size):
        piece = payload[at : at + size]
        packet = ipv4_packet(
            "10.20.7.10", "10.20.7.99", 17, piece, ident=ident, dont_fragment=False,
            more_fragments=at + size < len(payload), fragment_offset=at,
        )  # fmt: skip
        frames.append(ethernet_frame(PLC_MAC, MASTER_MAC, 0x0800, packet))
    return frames


def test_ipv4_fragments_are_marked_and_reassembled() -> None:
    datagram = udp_datagram(5353, 9999, bytes(range(200)))
    frames = fragments_of(datagram, 64)
    d = decode(frames[::-1])  # out of order on purpose
    assert d.fragment.tolist() == [2, 2, 2, 1]
    assert d.sport.tolist() == [0, 0, 0, 5353]
    defrag = Defragmenter()
    (whole,) = defrag.feed(d)
    assert whole.payload == datagram
    assert whole.frame == 4 and ip_text(whole.dst_ip) == "10.20.7.99" and whole.ip_proto == 17


def test_defragmenter_bounds_and_timeouts() -> None:
    datagram = udp_datagram(1, 2, bytes(100))
    frames = fragments_of(datagram, 32)
    defrag = Defragmenter(timeout=0.0000001)
    # timestamps 1 µs apart in batch_of: every datagram expires before its next fragment
    assert defrag.feed(decode(frames)) == []
    assert defrag.dropped >= 1
    small = Defragmenter(max_datagram=50)
    assert small.feed(decode(frames)) == []
    crowded = Defragmenter(max_pending=2)
    lonely = [fragments_of(datagram, 32, ident=i)[0] for i in range(5)]
    assert crowded.feed(decode(lonely)) == [] and crowded.dropped == 3


# --------------------------------------------------------------------------- truncation and bad headers


def test_truncation_at_each_layer() -> None:
    frame = tcp_frame()
    cases = {
        10: DecodeStatus.TRUNCATED_L2,
        14 + 12: DecodeStatus.TRUNCATED_L3,
        14 + 20 + 2: DecodeStatus.TRUNCATED_L4,
        14 + 20 + 10: DecodeStatus.TRUNCATED_L4,
        14 + 20 + 20: DecodeStatus.OK,
    }
    d = decode([frame[:cut] for cut in cases])
    assert d.status.tolist() == list(cases.values())
    # ports appear as soon as their four bytes are captured, the rest stays 0
    assert d.dport.tolist() == [0, 0, 0, 502, 502]
    assert d.tcp_seq.tolist() == [0, 0, 0, 0, 100]
    assert d.payload_len.tolist() == [0, 0, 2, 10, 0]


def test_snaplen_cut_payload_is_clipped_to_what_was_captured() -> None:
    d = decode([tcp_frame()[:-4]])
    assert d.status.tolist() == [0]
    assert d.payload(0) == MODBUS_READ[:-4]


def test_bad_ip_header_length_and_version() -> None:
    frame = bytearray(tcp_frame())
    frame[14] = 0x44  # IHL 4 words
    wrong_version = bytearray(tcp_frame())
    wrong_version[14] = 0x65
    short_total = bytearray(tcp_frame())
    short_total[16:18] = b"\x00\x10"  # total length 16 < header 20
    d = decode([bytes(frame), bytes(wrong_version), bytes(short_total)])
    assert d.status.tolist() == [DecodeStatus.BAD_IP_HEADER] * 3
    assert d.ip_version.tolist() == [0, 0, 0] and d.sport.tolist() == [0, 0, 0]


def test_bad_tcp_offset() -> None:
    frame = bytearray(tcp_frame())
    frame[14 + 20 + 12] = 0x30  # data offset 3 words
    beyond = bytearray(tcp_frame())
    beyond[14 + 20 + 12] = 0xF0  # 60-byte header in a 32-byte segment
    d = decode([bytes(frame), bytes(beyond)])
    assert d.status.tolist() == [DecodeStatus.BAD_TCP_OFFSET] * 2
    assert d.dport.tolist() == [502, 502]


def test_zero_ip_total_length_from_segmentation_offload_uses_captured_length() -> None:
    d = decode([tcp_frame(total_length=0)])
    assert d.status.tolist() == [0] and d.payload(0) == MODBUS_READ


def test_text_helpers() -> None:
    assert ip_text(bytes(10) + b"\xff\xff" + ipv4_address("192.0.2.1")) == "192.0.2.1"
    assert ip_text(bytes(15) + b"\x01") == "::1"
    assert mac_text(0x0200000007FF) == "02:00:00:00:07:ff"


def test_empty_batch() -> None:
    empty = PacketBatch(
        source="x", buf=b"", frame=np.zeros(0, np.int64), ts=np.zeros(0), ts_ns=np.zeros(0, np.int64),
        linktype=np.zeros(0, np.uint16), interface=np.zeros(0, np.uint16), offset=np.zeros(0, np.int64),
        caplen=np.zeros(0, np.int32), origlen=np.zeros(0, np.int32),
    )  # fmt: skip
    assert len(decode_batch(empty)) == 0


# --------------------------------------------------------------------------- fuzzing


@st.composite
def random_batches(draw: st.DrawFn) -> PacketBatch:
    buf = draw(st.binary(max_size=300))
    count = draw(st.integers(0, 12))
    offsets = draw(st.lists(st.integers(-5, 320), min_size=count, max_size=count))
    caplens = draw(st.lists(st.integers(-2, 200), min_size=count, max_size=count))
    kinds = draw(st.lists(st.sampled_from([0, 1, 12, 101, 105, 113, 228, 229, 276, 9999]), min_size=count, max_size=count))
    return PacketBatch(
        source="fuzz", buf=buf, frame=np.arange(1, count + 1, dtype=np.int64), ts=np.zeros(count),
        ts_ns=np.zeros(count, np.int64), linktype=np.array(kinds, np.uint16),
        interface=np.zeros(count, np.uint16), offset=np.array(offsets, np.int64),
        caplen=np.array(caplens, np.int32), origlen=np.array(caplens, np.int32),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(batch=random_batches())
def test_decode_never_raises_on_any_batch(batch: PacketBatch) -> None:
    d = decode_batch(batch)
    assert len(d) == len(batch)
    assert (d.payload_len >= 0).all()
    inside = (d.payload_len == 0) | ((d.payload_off >= 0) & (d.payload_off + d.payload_len <= len(batch.buf)))
    assert inside.all()
    Defragmenter().feed(d)


@settings(max_examples=300, deadline=None)
@given(
    cut=st.integers(0, 80),
    edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4),
    linktype=st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW]),
)
def test_mutated_frames_decode_without_raising(cut: int, edits: list[tuple[int, int]], linktype: int) -> None:
    frame = bytearray(HAND_FRAME if linktype == LINKTYPE_ETHERNET else HAND_FRAME[14:])
    for at, value in edits:
        frame[at % len(frame)] = value
    d = decode([bytes(frame[:cut]), bytes(frame)], linktype)
    assert len(d) == 2
    # a payload never reaches outside its own packet
    has = d.payload_len > 0
    first, last = d.batch.offset[has], d.batch.offset[has] + d.batch.caplen[has]
    assert ((d.payload_off[has] >= first) & (d.payload_off[has] + d.payload_len[has] <= last)).all()
