"""The capture reader: every pcap/pcapng variant, gzip, batching, truncation and garbage."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cranewatch.decode import decode_batch
from cranewatch.errors import CaptureError
from cranewatch.pipeline import Analysis
from cranewatch.sources import input_files
from cranewatch.sources import pcap as pcap_module
from cranewatch.sources.input_files import NotARegularFile
from cranewatch.sources.pcap import PacketBatch, open_capture
from cranewatch.sources.pcapwrite import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL2,
    PCAPNG_EPB,
    PcapngWriter,
    PcapWriter,
)

T0 = 1_700_000_000_123_456_789  # ns; has sub-microsecond digits on purpose
PACKETS = [bytes([i]) * (20 + i) for i in range(5)]


def read_all(path: Path, max_packets: int = 65536) -> tuple[list[PacketBatch], list[CaptureError]]:
    with open_capture(path) as reader:
        batches = list(reader.batches(max_packets))
        return batches, list(reader.warnings)


def packets_of(batches: list[PacketBatch]) -> list[bytes]:
    return [b.packet(i) for b in batches for i in range(len(b))]


def column(batches: list[PacketBatch], name: str) -> list[int]:
    return [int(v) for b in batches for v in getattr(b, name)]


def write_pcap(path: Path, nanosecond: bool = False, big_endian: bool = False, linktype: int = 1) -> bytes:
    out = io.BytesIO()
    writer = PcapWriter(out, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)
    for i, data in enumerate(PACKETS):
        writer.write(T0 + i * 1_000_000, data, origlen=len(data) + i)
    path.write_bytes(out.getvalue())
    return out.getvalue()


# --------------------------------------------------------------------------- classic pcap


def test_hand_written_pcap_little_endian_microseconds(tmp_path: Path) -> None:
    # written byte by byte, independent of pcapwrite: header, then one 4-byte record
    header = bytes.fromhex("d4c3b2a1 0200 0400 00000000 00000000 00000400 01000000".replace(" ", ""))
    record = struct.pack("<IIII", 1_600_000_000, 250_000, 4, 60) + b"\xde\xad\xbe\xef"
    path = tmp_path / "one.pcap"
    path.write_bytes(header + record)
    batches, warnings = read_all(path)
    assert warnings == []
    (batch,) = batches
    assert batch.packet(0) == b"\xde\xad\xbe\xef"
    assert batch.frame.tolist() == [1]
    assert batch.ts_ns.tolist() == [1_600_000_000_250_000_000]
    assert batch.ts.tolist() == [1_600_000_000.25]
    assert batch.caplen.tolist() == [4]
    assert batch.origlen.tolist() == [60]
    assert batch.linktype.tolist() == [1]
    assert batch.interface.tolist() == [0]
    assert batch.offset.tolist() == [24 + 16]
    assert batch.source == str(path)


def test_hand_written_pcap_big_endian_nanoseconds(tmp_path: Path) -> None:
    header = bytes.fromhex("a1b23c4d 0002 0004 00000000 00000000 00040000 000000e4".replace(" ", ""))
    record = struct.pack(">IIII", 1_600_000_000, 123_456_789, 2, 2) + b"\x45\x00"
    path = tmp_path / "be.pcap"
    path.write_bytes(header + record)
    (batch,), warnings = read_all(path)
    assert warnings == []
    assert batch.ts_ns.tolist() == [1_600_000_000_123_456_789]
    assert batch.linktype.tolist() == [LINKTYPE_IPV4]
    assert batch.packet(0) == b"\x45\x00"


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, big_endian: bool, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path, nanosecond=nanosecond, big_endian=big_endian)
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == PACKETS
    expected_ts = [T0 + i * 1_000_000 for i in range(5)]
    if not nanosecond:
        expected_ts = [t // 1000 * 1000 for t in expected_ts]
    assert column(batches, "ts_ns") == expected_ts
    assert column(batches, "origlen") == [len(p) + i for i, p in enumerate(PACKETS)]
    assert column(batches, "frame") == [1, 2, 3, 4, 5]


def test_batches_respect_max_packets_and_keep_frame_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path)
    batches, _ = read_all(path, max_packets=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert column(batches, "frame") == [1, 2, 3, 4, 5]
    assert packets_of(batches) == PACKETS


@pytest.mark.parametrize("compressed", [False, True])
def test_records_straddling_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool) -> None:
    # tiny read blocks force every record (and one bigger than a block) across block edges
    monkeypatch.setattr(pcap_module, "CHUNK_BYTES", 37)
    out = io.BytesIO()
    writer = PcapWriter(out)
    packets = [bytes([i % 251]) * (i * 7 % 90 + 1) for i in range(200)]
    for i, data in enumerate(packets):
        writer.write(T0 + i, data)
    path = tmp_path / "x.pcap"
    path.write_bytes(gzip.compress(out.getvalue()) if compressed else out.getvalue())
    batches, warnings = read_all(path, max_packets=16)
    assert warnings == []
    assert packets_of(batches) == packets
    assert column(batches, "frame") == list(range(1, 201))
    # memory stays bounded: no batch holds more than a block plus one record
    assert max(len(b.buf) for b in batches) <= 37 + 16 + 90


def test_truncated_last_record_is_a_warning_with_location(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    data = write_pcap(path)
    path.write_bytes(data[:-7])  # cut inside the data of packet 5
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS[:4]
    (warning,) = warnings
    assert warning.location is not None
    assert warning.location.file == str(path)
    assert warning.location.frame == 5
    assert warning.location.offset == len(data) - 16 - len(PACKETS[4])
    assert "cut short" in str(warning)


def test_truncated_record_header_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    data = write_pcap(path)
    path.write_bytes(data[: len(data) - len(PACKETS[4]) - 10])  # 6 bytes of the 5th header
    batches, warnings = read_all(path)
    assert len(packets_of(batches)) == 4
    assert len(warnings) == 1 and warnings[0].location is not None
    assert warnings[0].location.frame == 5


def test_corrupt_record_length_stops_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "bad.pcap"
    data = bytearray(write_pcap(path))
    third = 24 + sum(16 + len(p) for p in PACKETS[:2])
    data[third + 8 : third + 12] = struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(data))
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS[:2]
    (warning,) = warnings
    assert "corrupt record" in warning.message
    assert warning.location is not None and warning.location.offset == third


def test_header_only_pcap_has_no_packets(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(write_pcap(path)[:24])
    batches, warnings = read_all(path)
    assert batches == [] and warnings == []


def test_short_pcap_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(write_pcap(path)[:20])
    with pytest.raises(CaptureError, match="header cut short"), open_capture(path) as reader:
        list(reader)


# --------------------------------------------------------------------------- not a capture


def test_not_a_capture_names_file_and_magic(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("hello world\n")
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert str(path) in str(info.value)
    assert "68656c6c" in str(info.value)  # 'hell' as hex


@pytest.mark.parametrize("content", [b"", b"\xd4\xc3"])
def test_empty_or_tiny_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tiny.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match="not a packet capture"):
        open_capture(path)


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        open_capture(tmp_path / "nope.pcap")


# --------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("name", ["plain.pcap", "x.pcap.gz", "x.cap"])
def test_gzip_is_detected_by_magic_not_name(tmp_path: Path, name: str) -> None:
    raw = write_pcap(tmp_path / "raw.pcap")
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw))
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == PACKETS


def test_gzip_pcapng(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    for i, data in enumerate(PACKETS):
        writer.write(0, T0 + i, data)
    path = tmp_path / "x.ng"
    path.write_bytes(gzip.compress(out.getvalue()))
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == PACKETS


def test_gzip_cut_short_keeps_packets_and_warns(tmp_path: Path) -> None:
    packed = gzip.compress(write_pcap(tmp_path / "raw.pcap"))
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) - 12])  # loses the gzip trailer and some data
    batches, warnings = read_all(path)
    assert len(warnings) >= 1
    assert packets_of(batches) == PACKETS[: len(packets_of(batches))]


# --------------------------------------------------------------------------- pcapng


def test_hand_written_pcapng_epb(tmp_path: Path) -> None:
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 0) + struct.pack("<I", 20)
    ticks = 1_600_000_000_000_001  # microseconds (default resolution)
    epb = struct.pack("<IIIIIII", 6, 36, 0, ticks >> 32, ticks & 0xFFFFFFFF, 3, 64) + b"abc\x00"
    epb += struct.pack("<I", 36)
    path = tmp_path / "x.pcapng"
    path.write_bytes(shb + idb + epb)
    (batch,), warnings = read_all(path)
    assert warnings == []
    assert batch.packet(0) == b"abc"
    assert batch.ts_ns.tolist() == [1_600_000_000_000_001_000]
    assert batch.caplen.tolist() == [3] and batch.origlen.tolist() == [64]
    assert batch.interface.tolist() == [0] and batch.linktype.tolist() == [1]


def test_pcapng_two_interfaces_link_types_and_resolutions(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    eth = writer.interface(LINKTYPE_ETHERNET, name="eth0")  # default µs
    raw = writer.interface(LINKTYPE_IPV4, tsresol=9, tsoffset=100)  # ns, 100 s offset
    binary = writer.interface(LINKTYPE_LINUX_SLL2, tsresol=0x80 | 20)  # 2^-20 s
    writer.write(eth, T0, b"e0")
    writer.write(raw, T0 + 1, b"r0")
    writer.write(binary, T0 + 2, b"b0")
    writer.block(0x0BAD, b"unknown block body")  # must be skipped
    writer.write(raw, T0 + 3, b"r1")
    path = tmp_path / "multi.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == [b"e0", b"r0", b"b0", b"r1"]
    assert column(batches, "interface") == [0, 1, 2, 1]
    assert column(batches, "linktype") == [1, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2, LINKTYPE_IPV4]
    ticks = (T0 + 2) * 2**20 // 10**9  # what the writer stored for the 2^-20 interface
    assert column(batches, "ts_ns") == [
        T0 // 1000 * 1000,
        T0 + 1,
        ticks // 2**20 * 10**9 + (ticks % 2**20) * 10**9 // 2**20,
        T0 + 3,
    ]


def test_pcapng_of_many_interfaces_times_each_packet_by_its_own(tmp_path: Path) -> None:
    """A merged capture (mergecap -a of hundreds of files) has an interface per file: each
    packet is timed by its interface's resolution and offset, whatever their order."""
    out = io.BytesIO()
    writer = PcapngWriter(out)
    numbers = [writer.interface(LINKTYPE_ETHERNET, tsresol=9 if i % 2 else 6, tsoffset=i)
               for i in range(40)]
    order = [39, 0, 7, 7, 12, 39, 1, 30, 0, 22]
    for k, i in enumerate(order):
        writer.write(numbers[i], T0 + k * 1_000_000, b"p%d" % k)
    path = tmp_path / "merged.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert warnings == []
    assert column(batches, "interface") == order
    # each back through its own offset (the writer took it off) and resolution (µs or ns)
    assert column(batches, "ts_ns") == [
        (T0 + k * 1_000_000) // (1 if i % 2 else 1000) * (1 if i % 2 else 1000)
        for k, i in enumerate(order)]


def test_pcapng_sections_with_both_byte_orders(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out, big_endian=False)
    writer.interface(LINKTYPE_ETHERNET)
    writer.write(0, T0, b"little-1")
    writer.section(big_endian=True)
    writer.interface(LINKTYPE_IPV4, tsresol=9)
    writer.write(0, T0 + 5, b"big-1")
    writer.write(0, T0 + 6, b"big-2")
    writer.section(big_endian=False)
    writer.interface(LINKTYPE_ETHERNET)
    writer.write(0, T0 + 7_000, b"little-2")
    path = tmp_path / "sections.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == [b"little-1", b"big-1", b"big-2", b"little-2"]
    assert column(batches, "linktype") == [1, LINKTYPE_IPV4, LINKTYPE_IPV4, 1]
    assert column(batches, "frame") == [1, 2, 3, 4]
    assert column(batches, "ts_ns") == [T0 // 1000 * 1000, T0 + 5, T0 + 6, (T0 + 7_000) // 1000 * 1000]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out, big_endian=True)
    writer.interface(LINKTYPE_ETHERNET, snaplen=4)
    writer.write_simple(b"abcdefgh")  # snaplen 4 cuts it to 4 captured bytes
    writer.write_obsolete(0, T0, b"xyz", origlen=99)
    writer.write(0, T0 + 1000, b"epb")
    path = tmp_path / "old.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert warnings == []
    assert packets_of(batches) == [b"abcd", b"xyz", b"epb"]
    assert column(batches, "origlen") == [8, 99, 3]
    # the simple packet block has no timestamp and nothing before it: it takes the next one
    assert column(batches, "ts_ns") == [T0 // 1000 * 1000, T0 // 1000 * 1000, (T0 + 1000) // 1000 * 1000]


@pytest.mark.parametrize("chunk", [41, pcap_module.CHUNK_BYTES])
def test_simple_packet_blocks_take_the_previous_timestamp_with_one_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # tiny read blocks put the packet before a simple block in an earlier block
    monkeypatch.setattr(pcap_module, "CHUNK_BYTES", chunk)
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsresol=9)
    writer.write(0, T0, b"first")
    writer.write_simple(b"simple-1")
    writer.write_simple(b"simple-2")
    writer.write(0, T0 + 500, b"third")
    writer.write_simple(b"simple-3")
    path = tmp_path / "spb.pcapng"
    path.write_bytes(out.getvalue())
    with open_capture(path) as reader:
        batches = list(reader.batches(max_packets=2))
        assert reader.warnings == []
        (note,) = reader.notes
    assert column(batches, "ts_ns") == [T0, T0, T0, T0 + 500, T0 + 500]
    assert "no timestamp" in note.message
    assert note.location is not None and note.location.frame == 2 and note.location.file == str(path)
    result = Analysis(decoders=[]).run([path])
    assert result.complete  # every packet was read: a note, not a damaged capture
    assert [w.frame for w in result.warnings if "no timestamp" in w.message] == [2]
    assert result.inputs[0].first_seen == T0 / 1e9


def pcapng_bytes(count: int = 5) -> bytes:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    for i in range(count):
        writer.write(0, T0 + i, PACKETS[i % len(PACKETS)])
    return out.getvalue()


def test_pcapng_truncated_last_block_warns(tmp_path: Path) -> None:
    data = pcapng_bytes()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-5])
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS[:4]
    (warning,) = warnings
    assert warning.location is not None and warning.location.frame == 5
    assert "cut short" in warning.message


def test_pcapng_corrupt_block_length_stops_with_location(tmp_path: Path) -> None:
    data = bytearray(pcapng_bytes())
    # the third EPB: after SHB (28) and IDB (20) and two EPBs
    at = 28 + 20
    for _ in range(2):
        at += struct.unpack_from("<I", data, at + 4)[0]
    assert struct.unpack_from("<I", data, at)[0] == PCAPNG_EPB
    data[at + 4 : at + 8] = struct.pack("<I", 13)  # not a multiple of 4
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS[:2]
    (warning,) = warnings
    assert "corrupt block length 13" in warning.message
    assert warning.location is not None
    assert warning.location.offset == at and warning.location.frame == 3


def test_pcapng_unknown_interface_stops_with_warning(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    writer.write(0, T0, b"ok")
    writer.interfaces.append((1, 1_000_000, 0))  # the writer believes in an undeclared interface
    writer.write(1, T0, b"orphan")
    path = tmp_path / "orphan.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert packets_of(batches) == [b"ok"]
    assert "interface 1" in warnings[0].message


# --------------------------------------------------------------------------- fuzzing


def _read_everything(path: Path) -> int:
    count = 0
    with open_capture(path) as reader:
        for batch in reader.batches(max_packets=7):
            decoded = decode_batch(batch)
            assert len(decoded) == len(batch)
            count += len(batch)
    return count


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), magic=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]))
def test_random_bytes_raise_only_capture_error(tmp_path: Path, data: bytes, magic: bytes) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(magic + data)
    try:
        _read_everything(path)
    except CaptureError:
        pass


def _valid_captures() -> list[bytes]:
    out = io.BytesIO()
    writer = PcapWriter(out, big_endian=True, nanosecond=True)
    for i, data in enumerate(PACKETS):
        writer.write(T0 + i, b"\x00" * 12 + b"\x08\x00" + b"\x45" + data)
    rich = io.BytesIO()
    ng = PcapngWriter(rich)
    ng.interface(LINKTYPE_ETHERNET, tsresol=0x80 | 24, tsoffset=5, name="eth0")
    ng.interface(LINKTYPE_IPV4, tsresol=9)
    ng.write(0, T0, PACKETS[0])
    ng.write_simple(PACKETS[1])
    ng.write_obsolete(1, T0, PACKETS[2])
    ng.write(1, T0, b"\x45" + bytes(30))
    return [out.getvalue(), pcapng_bytes(6), rich.getvalue()]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, 2),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_mutated_captures_raise_only_capture_error(
    tmp_path: Path, which: int, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_valid_captures()[which])
    for at, value in edits:
        data[at % len(data)] = value
    path = tmp_path / "mutant.bin"
    path.write_bytes(bytes(data[: max(cut % (len(data) + 1), 1)]) if cut % 3 == 0 else bytes(data))
    try:
        count = _read_everything(path)
    except CaptureError:
        return
    assert count >= 0


def test_gzip_of_garbage_is_a_capture_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gz"
    path.write_bytes(gzip.compress(b"this is not a capture at all"))
    with pytest.raises(CaptureError, match="not a packet capture"):
        open_capture(path)


def test_broken_gzip_header_is_a_capture_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-garbage")
    with pytest.raises(CaptureError):
        open_capture(path)


def test_packet_batch_columns_have_contract_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path)
    (batch,), _ = read_all(path)
    assert batch.frame.dtype == np.int64
    assert batch.ts.dtype == np.float64
    assert batch.ts_ns.dtype == np.int64
    assert batch.linktype.dtype == np.uint16
    assert batch.interface.dtype == np.uint16
    assert batch.offset.dtype == np.int64
    assert batch.caplen.dtype == np.int32
    assert batch.origlen.dtype == np.int32
    assert isinstance(batch.buf, bytes)


def test_pcapng_blocks_straddling_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcap_module, "CHUNK_BYTES", 41)
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    packets = [bytes([i % 251]) * (i * 13 % 150 + 1) for i in range(120)]
    for i, data in enumerate(packets):
        if i == 60:
            writer.section(big_endian=True)
            writer.interface(LINKTYPE_IPV4, tsresol=9)
        writer.write(0, T0 + i, data)
    path = tmp_path / "x.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path, max_packets=9)
    assert warnings == []
    assert packets_of(batches) == packets
    assert column(batches, "frame") == list(range(1, 121))
    assert column(batches, "linktype") == [1] * 60 + [LINKTYPE_IPV4] * 60


def test_obsolete_packet_block_overrunning_its_block_is_corrupt(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    writer.write_obsolete(0, T0, b"good")
    at = len(out.getvalue())
    writer.write_obsolete(0, T0, b"liar")
    data = bytearray(out.getvalue())
    data[at + 20 : at + 24] = struct.pack("<I", 400)  # captured length beyond the block
    path = tmp_path / "liar.pcapng"
    path.write_bytes(bytes(data))
    batches, warnings = read_all(path)
    assert packets_of(batches) == [b"good"]
    assert "overruns" in warnings[0].message


@pytest.mark.parametrize(
    ("bad_length", "message"),
    [(38, "corrupt block length 38"), (0x7FFFFFF0, "corrupt block length 2147483632")],
)
def test_pcapng_bad_length_inside_a_run_of_packets(tmp_path: Path, bad_length: int, message: str) -> None:
    data = bytearray(pcapng_bytes(6))
    at = 28 + 20
    for _ in range(3):
        at += struct.unpack_from("<I", data, at + 4)[0]
    data[at + 4 : at + 8] = struct.pack("<I", bad_length)  # the 4th EPB: misaligned / absurd
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    batches, warnings = read_all(path, max_packets=2)
    assert packets_of(batches) == PACKETS[:3]
    (warning,) = warnings
    assert message in warning.message
    assert warning.location is not None and warning.location.offset == at and warning.location.frame == 4


def test_a_reader_streams_once(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path)
    with open_capture(path) as reader:
        assert sum(len(b) for b in reader) == 5
        assert reader.packets_read == 5
        with pytest.raises(ValueError, match="streams once"):
            list(reader.batches())


def test_pcapng_absurd_tsoffset_is_ignored_and_reported(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsoffset=2**62)
    writer.interfaces[0] = (LINKTYPE_ETHERNET, 1_000_000, 0)  # write plain ticks
    writer.write(0, T0, b"x")
    path = tmp_path / "offset.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert column(batches, "ts_ns") == [T0 // 1000 * 1000]
    (warning,) = warnings
    assert "if_tsoffset 4611686018427387904 s" in warning.message and "ignored" in warning.message
    assert warning.location is not None and warning.location.offset == 28  # the IDB after the SHB


def test_timestamps_with_the_top_bit_set_do_not_overflow(tmp_path: Path) -> None:
    # found by fuzzing: a 64-bit tick count >= 2^63 in an obsolete Packet Block
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsresol=9)
    writer.block(2, struct.pack("<HHIIII", 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 1, 1) + b"z")
    writer.write(0, T0, b"after")
    path = tmp_path / "top.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert packets_of(batches) == [b"z", b"after"]
    # 2^64-1 ns is past 2262: clipped to the last int64 nanosecond and said, never wrapped to -1
    assert column(batches, "ts_ns") == [2**63 - 1, T0]
    (warning,) = warnings
    assert "past 2262-04-11" in warning.message and "clipped" in warning.message
    assert warning.location is not None and warning.location.frame == 1


# --------------------------------------------------------------------------- digest while reading


def _cut_and_corrupt(data: bytes) -> list[bytes]:
    """The file's bytes as stored in many shapes: whole, cut short, corrupt mid-way, garbage."""
    corrupt = bytearray(data)
    third = 24 + sum(16 + len(p) for p in PACKETS[:2])
    corrupt[third + 8 : third + 12] = struct.pack("<I", 0x7FFFFFF0)  # the reader stops here
    return [data, data[:-7], bytes(corrupt), gzip.compress(data), gzip.compress(data)[:-12],
            b"not a capture at all", b""]


@pytest.mark.parametrize("chunk", [37, pcap_module.CHUNK_BYTES])
def test_digest_covers_every_byte_of_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    chunk: int) -> None:
    # small read blocks make the reader seek back over bytes it read already: hashed once
    monkeypatch.setattr(pcap_module, "CHUNK_BYTES", chunk)
    shapes = [*_cut_and_corrupt(write_pcap(tmp_path / "w.pcap")), pcapng_bytes(9), pcapng_bytes(9)[:-5]]
    for number, content in enumerate(shapes):
        path = tmp_path / f"shape{number}"
        path.write_bytes(content)
        digest = hashlib.sha256()
        try:
            with open_capture(path, digest=digest) as reader:
                for _ in reader.batches(max_packets=2):
                    pass
                reader.digest_rest()
        except CaptureError:
            continue  # not a capture: the pipeline hashes such a file itself
        assert digest.hexdigest() == hashlib.sha256(content).hexdigest(), number


def test_analysis_inputs_carry_the_sha256_of_the_file(tmp_path: Path) -> None:
    shapes = _cut_and_corrupt(write_pcap(tmp_path / "w.pcap"))
    paths = []
    for number, content in enumerate(shapes):
        paths.append(tmp_path / f"shape{number}")
        paths[-1].write_bytes(content)
    result = Analysis(decoders=[]).run(paths)
    assert [i.sha256 for i in result.inputs] == [hashlib.sha256(c).hexdigest() for c in shapes]


# --------------------------------------------------------------------------- hostile inputs (issue 19)

PCAP_HEADER_HUGE_SNAPLEN = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1)


def _record(caplen: int, data: bytes = b"") -> bytes:
    return struct.pack("<IIII", 1_700_000_000, 0, caplen, caplen) + data


def _peak_bytes_while(action: Any) -> int:
    """Peak Python allocation (tracemalloc) while ``action()`` runs: big reads show up here."""
    import tracemalloc

    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_zero_bomb_pcap_gz_stops_at_the_ratio_limit(tmp_path: Path) -> None:
    # a pcap header then 48 MB of zeros (empty 16-byte records) in 47 KB of gzip: ~1000:1
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(PCAP_HEADER_HUGE_SNAPLEN)]
    parts += [packer.compress(bytes(1 << 20)) for _ in range(48)]
    path = tmp_path / "zeros.pcap.gz"
    path.write_bytes(b"".join(parts) + packer.flush())
    result: list[Any] = []
    peak = _peak_bytes_while(lambda: result.extend(read_all(path)))
    batches, warnings = result
    limit = input_files.RATIO_FREE_BYTES
    # it stops once 16 MiB are out (not after 48 MB), with the packets before kept
    assert limit // 16 - 70_000 < sum(len(b) for b in batches) <= limit // 16
    bomb = [w for w in warnings if "decompression bomb" in w.message]
    assert len(bomb) == 1 and bomb[0].location is not None
    assert bomb[0].location.file == str(path) and 0 < (bomb[0].location.offset or 0) < path.stat().st_size
    # blocks of 8 MB (half a million empty records each: their columns weigh most), bounded
    assert peak < 128 * 1024 * 1024


@pytest.mark.parametrize("compressed", [False, True])
def test_a_record_claiming_gigabytes_is_reported_not_read(tmp_path: Path, compressed: bool) -> None:
    # snaplen 0xffffffff and one record saying 3 GiB (gzip) / 300 MB (plain, a sparse file):
    # the header's snaplen does not raise cranewatch's limit, nothing is allocated from it
    caplen = 3 << 30 if compressed else 300_000_000
    head = PCAP_HEADER_HUGE_SNAPLEN + _record(40, bytes(40)) + _record(caplen, bytes(4096))
    path = tmp_path / ("huge.pcap.gz" if compressed else "huge.pcap")
    if compressed:
        path.write_bytes(gzip.compress(head))
    else:
        with path.open("wb") as handle:
            handle.write(head)
            handle.truncate(24 + 56 + 16 + caplen)
    result: list[Any] = []
    peak = _peak_bytes_while(lambda: result.extend(read_all(path)))
    batches, warnings = result
    assert packets_of(batches) == [bytes(40)]
    (warning,) = warnings
    assert f"captured length {caplen}" in warning.message and "262144" in warning.message
    assert warning.location is not None and warning.location.frame == 2
    assert warning.location.offset == 24 + 56
    assert peak < 32 * 1024 * 1024


def test_an_oversized_record_inside_a_read_block_is_caught_too(tmp_path: Path) -> None:
    # 1 MiB fits a read block, so the hot loop walks over it: the check is on every record
    data = write_pcap(tmp_path / "raw.pcap") + _record(1 << 20, bytes(1 << 20)) + _record(3, b"abc")
    path = tmp_path / "mib.pcap"
    path.write_bytes(data)
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS
    (warning,) = warnings
    assert "captured length 1048576" in warning.message
    assert warning.location is not None and warning.location.offset == len(data) - 19 - (1 << 20) - 16


def test_packets_of_jumbo_and_loopback_sizes_are_read(tmp_path: Path) -> None:
    sizes = [9_000, 65_535, 65_536 + 1_500, pcap_module.MAX_PACKET_BYTES]
    out = io.BytesIO()
    writer = PcapWriter(out)
    for i, size in enumerate(sizes):
        writer.write(T0 + i, bytes([i]) * size)
    path = tmp_path / "big.pcap"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert warnings == [] and column(batches, "caplen") == sizes


def test_pcapng_packet_over_the_limit_is_reported(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET)
    writer.write(0, T0, b"first")
    writer.write(0, T0 + 1, bytes(pcap_module.MAX_PACKET_BYTES + 4))
    path = tmp_path / "big.pcapng"
    path.write_bytes(out.getvalue())
    batches, warnings = read_all(path)
    assert packets_of(batches) == [b"first"]
    (warning,) = warnings
    assert f"captured length {pcap_module.MAX_PACKET_BYTES + 4}" in warning.message
    assert warning.location is not None and warning.location.frame == 2


def _independent_pcap_walk(data: bytes) -> list[bytes]:
    """Packets of a little-endian pcap by a plain struct walk, stopping at the first cut record."""
    packets, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        packets.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    return packets


def _gzip_dc(data: bytes) -> bytes:
    """What ``gzip -dc`` writes for these bytes (it exits non-zero on damage but keeps the output)."""
    return subprocess.run(["gzip", "-dc"], input=data, capture_output=True, check=False).stdout


def _damaged_copies(packed: bytes, count: int) -> list[tuple[int, bytes]]:
    positions = sorted({20 + (len(packed) - 30) * i // count for i in range(count)})
    copies = []
    for at in positions:
        damaged = bytearray(packed)
        damaged[at] ^= 0x5A
        copies.append((at, bytes(damaged)))
    return copies


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(differ[0]) if len(differ) else n


def _inflate_all(data: bytes) -> bytes:
    stream = input_files.GunzipStream(io.BytesIO(data), "x.gz")
    parts = []
    try:
        while part := stream.read(1 << 16):
            parts.append(part)
    except input_files.DamagedCompression:
        pass
    return b"".join(parts)


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs gzip(1)")
def test_damaged_gzip_keeps_every_packet_before_the_damage_as_gzip_dc_does(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = PcapWriter(out)
    for i in range(600):  # ~125 KB: the damage lands in many different deflate blocks
        writer.write(T0 + i, struct.pack("<I", i) * (10 + i % 80))
    raw = out.getvalue()
    original = _independent_pcap_walk(raw)
    packed = gzip.compress(raw, 6)
    ours_total = gzip_total = 0
    for at, damaged in _damaged_copies(packed, 40):
        reference = _gzip_dc(damaged)
        # byte for byte what gzip -dc writes, up to where zlib sees the damage; gzip -dc goes on
        # writing there (garbled: it does not check e.g. distances too far back), cranewatch stops
        assert reference.startswith(_inflate_all(damaged)), at
        path = tmp_path / f"damaged-{at}.pcap.gz"
        path.write_bytes(damaged)
        try:
            batches, warnings = read_all(path)
        except CaptureError as exc:  # the damage is in the gzip header or the first bytes
            assert "gzip" in exc.message and _common_prefix(reference, raw) < 24 + 16 + 40 + 16 + 44
            continue
        got = packets_of(batches)
        assert got == _independent_pcap_walk(reference)[: len(got)], at
        assert warnings and warnings[0].location is not None and warnings[0].location.offset is not None
        if at > 1000:
            assert len(got) > 10, at  # the damage never loses what came before it
        ours_total += sum(1 for g, o in zip(got, original, strict=False) if g == o)
        agreeing = _common_prefix(reference, raw)
        gzip_total += sum(1 for end in _packet_ends(raw) if end <= agreeing)
    # the genuine packets gzip -dc gives (its output agreeing with the original) are read too,
    # but for the few it writes past the damage by luck (zeros copied from an empty window)
    assert ours_total >= gzip_total * 0.95 and gzip_total > 5000


def _packet_ends(data: bytes) -> Iterator[int]:
    pos = 24
    while pos + 16 <= len(data):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        yield pos


def test_damaged_gzip_early_in_the_first_mib_loses_nothing_before_it(tmp_path: Path, shared_data: Path) -> None:
    # the report: a corrupt byte in the first MiB lost all packets; gzip -dc kept them
    capture = shared_data / "pcaps" / "ICS-Security-Tools" / "pcaps" / "C37.118" / "C37.118_1PMU_TCP.pcap"
    original = capture.read_bytes()
    packed = gzip.compress(original, 6)
    damaged = bytearray(packed)
    damaged[len(packed) - 200] ^= 0xFF  # near the end: the packets before it are most of the file
    path = tmp_path / "late-damage.pcap.gz"
    path.write_bytes(bytes(damaged))
    batches, warnings = read_all(path)
    got = packets_of(batches)
    reference = _gzip_dc(bytes(damaged))
    agreeing = _common_prefix(reference, original)
    genuine_by_gzip = sum(1 for end in _packet_ends(original) if end <= agreeing)
    assert genuine_by_gzip > 390  # of 417 packets
    assert got[:genuine_by_gzip] == _independent_pcap_walk(original)[:genuine_by_gzip]
    assert warnings and "damaged" in warnings[0].message


def test_gzip_stream_gives_back_what_a_limited_call_held(tmp_path: Path) -> None:
    # 20 MB of mostly-zero packets (79:1, twice the most compressible public capture, under
    # the 250:1 limit): inflated in limited pieces, none of it lost between the pieces
    out = io.BytesIO()
    writer = PcapWriter(out)
    packets = [struct.pack("<I", i * 2654435761 % 2**32) * 4 + bytes(984) for i in range(20_000)]
    for i, data in enumerate(packets):
        writer.write(T0 + i * 1000, data)
    path = tmp_path / "dense.pcap.gz"
    path.write_bytes(gzip.compress(out.getvalue(), 9))
    batches, warnings = read_all(path)
    assert warnings == [] and packets_of(batches) == packets


def test_trailing_garbage_after_gzip_is_reported_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "tail.pcap.gz"
    path.write_bytes(gzip.compress(write_pcap(tmp_path / "raw.pcap")) + b"not gzip at all")
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS
    (warning,) = warnings
    assert "after the end of the gzip stream" in warning.message


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_non_regular_inputs_are_refused_before_reading(tmp_path: Path, kind: str) -> None:
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe.pcap"
        os.mkfifo(path)  # opening it for reading would block until a writer came
    else:
        path = tmp_path / "folder"
        path.mkdir()
    with pytest.raises(NotARegularFile, match="refused") as caught:
        open_capture(path)
    assert not isinstance(caught.value, CaptureError)  # the pipeline must not go on to hash it
    assert caught.value.exit_code == 3 and caught.value.location is not None


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_analyze_refuses_a_device_a_fifo_or_a_plain_directory(tmp_path: Path, kind: str) -> None:
    if kind == "device":
        path = "/dev/zero"  # was read to its end: never
    elif kind == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    else:
        path = str(tmp_path)
        (tmp_path / "notes.txt").write_text("no logs here")
    done = subprocess.run([sys.executable, "-m", "cranewatch", "analyze", path],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert "refused" in done.stderr and path in done.stderr
    assert "Traceback" not in done.stderr


def _pcapng_with_ticks(tsresol: int, ticks: list[int]) -> bytes:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsresol=tsresol)
    for i, tick in enumerate(ticks):
        writer.block(PCAPNG_EPB, struct.pack("<IIIII", 0, tick >> 32, tick & 0xFFFFFFFF, 4, 4) + bytes([i]) * 4)
    return out.getvalue()


@pytest.mark.parametrize(("tsresol", "late_ticks"), [
    (9, 2**63 + 5),  # ns: past 2^63 wrapped to negative before
    (6, 10**17),  # µs: year 5138 * 1000 ns overflowed int64
    (0, 2**40),  # whole seconds (10^0): 34,000 years
    (0x80 | 10, 2**63),  # binary 2^-10 s
])
def test_pcapng_timestamps_past_2262_are_clipped_and_reported(tmp_path: Path, tsresol: int, late_ticks: int) -> None:
    units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    early = 1_700_000_000 * units
    path = tmp_path / "late.pcapng"
    path.write_bytes(_pcapng_with_ticks(tsresol, [early, late_ticks, late_ticks + 1, early + units]))
    batches, warnings = read_all(path)
    ts = column(batches, "ts_ns")
    # clipped to the last tick of the interface's resolution that fits: 2262-04-11T23:47:16Z
    assert ts[0] == 1_700_000_000 * 10**9 and ts[3] == 1_700_000_001 * 10**9
    assert ts[1] == ts[2] and 2**63 - 10**9 <= ts[1] <= 2**63 - 1  # never wrapped negative
    (warning,) = warnings  # said once
    assert "past 2262-04-11" in warning.message and warning.location is not None
    assert warning.location.frame == 2
    assert float(batches[0].ts[1]) == pytest.approx(9_223_372_036.0, abs=1.0)


def test_pcapng_unusable_tsresol_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "resol.pcapng"
    path.write_bytes(_pcapng_with_ticks(0x7F, [1_700_000_000 * 10**6]))  # 10^-127 s
    batches, warnings = read_all(path)
    assert column(batches, "ts_ns") == [1_700_000_000 * 10**9]  # microseconds assumed
    (warning,) = warnings
    assert "if_tsresol 0x7f" in warning.message


def test_origlen_over_2_gib_does_not_wrap_negative(tmp_path: Path) -> None:
    path = tmp_path / "orig.pcap"
    record = struct.pack("<IIII", 1_700_000_000, 0, 2, 0xFFFFFFF0) + b"ab"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + record)
    batches, warnings = read_all(path)
    assert warnings == [] and column(batches, "origlen") == [2**31 - 1]


def test_gzip_absolute_limit_stops_reading_with_the_packets_before(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the limit is judged after each inflate call (at most _OUT_PIECE bytes): small calls here
    monkeypatch.setattr(input_files, "MAX_DECOMPRESSED_BYTES", 100)
    monkeypatch.setattr(input_files, "_OUT_PIECE", 50)
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(gzip.compress(write_pcap(tmp_path / "raw.pcap")))  # 24 + 5 records, 210 bytes
    batches, warnings = read_all(path)
    assert packets_of(batches) == PACKETS[: len(packets_of(batches))] and len(packets_of(batches)) < 5
    assert any("more than 100 bytes inflated" in w.message for w in warnings)
