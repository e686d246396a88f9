"""Test helpers: PROFINET frames and PNIO-CM datagrams out of a capture, through cranewatch's own
reader and L2-L4 decoder (``sources.pcap``, ``decode.decode_batch``: VLAN tags peeled there),
and tshark's fields of the same frames, for the conformance tests of ``protocols.profinet``.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cranewatch.decode import decode_batch, ip_text, mac_text
from cranewatch.protocols.base import Event
from cranewatch.protocols.profinet import ETHERTYPE_PROFINET, ProfinetDecoder, _probe_pnio_cm
from cranewatch.sources.pcap import open_capture


@dataclass(frozen=True, slots=True)
class L2Frame:
    frame: int
    ts: float
    src: str
    dst: str
    payload: bytes  # after the ethertype (and VLAN tags), Ethernet padding included


@dataclass(frozen=True, slots=True)
class Datagram:
    frame: int
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def profinet_frames(path: Path) -> Iterator[L2Frame]:
    """Every frame of ethertype 0x8892 in the capture, in order."""
    with open_capture(path) as reader:
        for batch in reader.batches():
            decoded = decode_batch(batch)
            rows = np.flatnonzero((decoded.ethertype == ETHERTYPE_PROFINET) & (decoded.l3_off >= 0))
            for row in rows.tolist():
                start = int(decoded.l3_off[row])
                end = int(batch.offset[row] + batch.caplen[row])
                yield L2Frame(int(batch.frame[row]), float(batch.ts[row]),
                              mac_text(decoded.eth_src[row]), mac_text(decoded.eth_dst[row]),
                              batch.buf[start:end])


def pnio_cm_datagrams(path: Path) -> Iterator[Datagram]:
    """Every UDP datagram whose payload is connectionless DCE/RPC on a PNIO interface."""
    with open_capture(path) as reader:
        for batch in reader.batches():
            decoded = decode_batch(batch)
            rows = np.flatnonzero((decoded.ip_proto == 17) & (decoded.fragment == 0)
                                  & (decoded.payload_off >= 0))
            for row in rows.tolist():
                payload = decoded.payload(row)
                if not _probe_pnio_cm(payload, b""):
                    continue
                yield Datagram(int(batch.frame[row]), float(batch.ts[row]),
                               ip_text(decoded.src_ip[row]), int(decoded.sport[row]),
                               ip_text(decoded.dst_ip[row]), int(decoded.dport[row]), payload)


def tshark_fields(path: Path, display_filter: str, fields: tuple[str, ...]) -> dict[int, dict[str, str]]:
    """frame number -> {field: value} for the frames matching the filter; several
    occurrences of a field are joined with "|" (tshark's aggregator)."""
    command = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields",
               "-E", "separator=/t", "-E", "aggregator=|", "-e", "frame.number"]
    for name in fields:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    table: dict[int, dict[str, str]] = {}
    for line in out.splitlines():
        cells = line.split("\t")
        table[int(cells[0])] = dict(zip(fields, cells[1:], strict=True))
    return table


def write_pcap(path: Path, frames: list[bytes], start: float = 1_700_000_000.0) -> Path:
    """A classic Ethernet pcap holding ``frames`` one millisecond apart."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for number, frame in enumerate(frames):
        stamp = start + number / 1000
        out.append(struct.pack("<IIII", int(stamp), round(stamp % 1 * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def fold_capture_by_batches(path: Path, decoder: ProfinetDecoder, max_packets: int = 65536) -> list[Event]:
    """The batch path as a pipeline would drive it: per batch, ``fold_cyclic`` over the
    0x8892 rows, then ``feed`` for the rows it did not take. Returns the acyclic events."""
    events: list[Event] = []
    with open_capture(path) as reader:
        for batch in reader.batches(max_packets=max_packets):
            decoded = decode_batch(batch)
            rows = np.flatnonzero((decoded.ethertype == ETHERTYPE_PROFINET) & (decoded.l3_off >= 0))
            starts = decoded.l3_off[rows]
            ends = batch.offset[rows] + batch.caplen[rows]
            taken = decoder.fold_cyclic(batch.buf, starts, ends, decoded.eth_src[rows],
                                        decoded.eth_dst[rows], batch.ts[rows], batch.frame[rows])
            for row, start, end in zip(rows[~taken].tolist(), starts[~taken].tolist(),
                                       ends[~taken].tolist(), strict=True):
                events += decoder.feed(batch.buf[start:end], mac_text(decoded.eth_src[row]),
                                       mac_text(decoded.eth_dst[row]), float(batch.ts[row]),
                                       int(batch.frame[row]))
    return events
