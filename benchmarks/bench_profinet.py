#!/usr/bin/env python3
"""PROFINET decoding speed: cranewatch's batch path against tshark and dpkt on the same capture.

A crane's PROFINET is mostly cyclic I/O: every drive and I/O station sends one frame per cycle
and its controller one back. This writes a capture of that shape (``--devices`` stations, two
streams each, one frame per stream per millisecond, about 1 % DCP Identify requests and
responses, a few alarm frames, 1 lost frame in 1000) with a fixed seed, then measures, each in
its own process (CPU seconds from ``os.wait4``):

- ``cranewatch``: the capture reader, ``decode.decode_batch``, ``ProfinetDecoder.fold_cyclic``
  over each batch's 0x8892 rows and ``feed`` for the rest (DCP, alarms): what the pipeline runs;
- ``tshark``: ``-T fields -e pn_rt.frame_id -e pn_rt.cycle_counter -e pn_dcp.xid``;
- ``dpkt``: Ethernet parse and the same three fields per frame in a Python loop.

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_profinet.py --frames 1000000
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
CONTROLLER = bytes.fromhex("020000000c01")
DCP_MULTICAST = bytes.fromhex("010ecf000000")


def write_capture(path: Path, frames: int, devices: int, seed: int = 7) -> None:
    """The capture described in the module docstring."""
    rng = random.Random(seed)
    stations = [bytes.fromhex(f"0200000d{n:04x}") for n in range(devices)]
    counters = [0] * (2 * devices)
    handle = path.open("wb")  # written as it goes: a child's peak RSS starts from its parent's
    out = [PCAP_HEADER]
    stamp = 1_700_000_000.0
    written = 0
    while written < frames:
        stamp += 0.001
        for stream in range(2 * devices):
            station = stations[stream // 2]
            src, dst = (station, CONTROLLER) if stream % 2 else (CONTROLLER, station)
            counters[stream] = (counters[stream] + 32) & 0xFFFF
            if rng.random() < 0.001:
                continue  # a lost frame: the next one shows a gap
            roll = rng.random()
            if roll < 0.005:
                body = bytes.fromhex("fefe0500") + rng.getrandbits(32).to_bytes(4, "big") + \
                    bytes.fromhex("00010004ffff0000")
                dst = DCP_MULTICAST
            elif roll < 0.01:
                name = f"drive-{stream // 2:03d}".encode()
                body = bytes.fromhex("feff0501") + rng.getrandbits(32).to_bytes(4, "big") + \
                    struct.pack(">HH", 0, 4 + 2 + len(name)) + struct.pack(">BBHH", 2, 2, 2 + len(name), 0) + name
            elif roll < 0.0102:
                body = bytes.fromhex("fe01" "8001" "8001" "14" "01" "ffff" "fffe" "0004" "cf81fd02")
            else:
                body = (0xC000 + stream).to_bytes(2, "big") + bytes(40) + \
                    counters[stream].to_bytes(2, "big") + b"\x35\x00"
            frame = dst + src + b"\x88\x92" + body
            frame += bytes(max(60 - len(frame), 0))
            out.append(struct.pack("<IIII", int(stamp), int(stamp % 1 * 1e6), len(frame), len(frame)))
            out.append(frame)
            written += 1
            if written >= frames:
                break
        if len(out) > 20_000:
            handle.write(b"".join(out))
            out.clear()
    handle.write(b"".join(out))
    handle.close()


def run_cranewatch(path: str) -> int:
    import numpy as np

    from cranewatch.decode import decode_batch, mac_text
    from cranewatch.protocols.profinet import ETHERTYPE_PROFINET, ProfinetDecoder
    from cranewatch.sources.pcap import open_capture

    decoder = ProfinetDecoder(path)
    acyclic = 0
    with open_capture(path) as reader:
        for batch in reader.batches():
            decoded = decode_batch(batch)
            rows = np.flatnonzero((decoded.ethertype == ETHERTYPE_PROFINET) & (decoded.l3_off >= 0))
            starts = decoded.l3_off[rows]
            ends = batch.offset[rows] + batch.caplen[rows]
            taken = decoder.fold_cyclic(batch.buf, starts, ends, decoded.eth_src[rows],
                                        decoded.eth_dst[rows], batch.ts[rows], batch.frame[rows])
            for row, start, end in zip(rows[~taken].tolist(), starts[~taken].tolist(),
                                       ends[~taken].tolist(), strict=True):
                acyclic += len(decoder.feed(batch.buf[start:end], mac_text(decoded.eth_src[row]),
                                            mac_text(decoded.eth_dst[row]), float(batch.ts[row]),
                                            int(batch.frame[row])))
    summaries = decoder.cyclic_summaries()
    return sum(s.frames for s in summaries) + acyclic


def run_dpkt(path: str) -> int:
    import dpkt

    count = 0
    with open(path, "rb") as handle:
        for _ts, raw in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(raw)
            if eth.type != 0x8892:
                continue
            data = bytes(eth.data)
            frame_id = data[0] << 8 | data[1]
            if 0x0100 <= frame_id <= 0xFBFF:
                _counter = data[-4] << 8 | data[-3]
            elif frame_id >= 0xFEFC:
                _xid = int.from_bytes(data[4:8], "big")
            count += 1
    return count


def measure(command: list[str]) -> tuple[float, int, str]:
    """CPU seconds, peak RSS (kB) and stdout of a child process."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = process.stdout.read() if process.stdout else b""
    _pid, _status, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.decode(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=24)
    parser.add_argument("--child", choices=["cranewatch", "dpkt"], help=argparse.SUPPRESS)
    parser.add_argument("capture", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print({"cranewatch": run_cranewatch, "dpkt": run_dpkt}[args.child](args.capture))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profinet.pcap"
        started = time.perf_counter()
        write_capture(path, args.frames, args.devices)
        print(f"capture: {args.frames} frames, {args.devices} stations "
              f"({path.stat().st_size / 1e6:.1f} MB, written in {time.perf_counter() - started:.1f} s)")
        tools = {
            "cranewatch": [sys.executable, __file__, "--child", "cranewatch", str(path)],
            "tshark": ["tshark", "-r", str(path), "-T", "fields", "-e", "pn_rt.frame_id",
                       "-e", "pn_rt.cycle_counter", "-e", "pn_dcp.xid"],
            "dpkt": [sys.executable, __file__, "--child", "dpkt", str(path)],
        }
        results = {name: measure(command) for name, command in tools.items()}
        base = results["cranewatch"][0]
        print("| tool | CPU s | frames per CPU s | peak RSS | vs cranewatch | frames seen |")
        print("|---|---|---|---|---|---|")
        for name, (cpu, rss, out) in results.items():
            seen = len(out.splitlines()) if name == "tshark" else int(out.strip() or 0)
            print(f"| {name} | {cpu:.2f} | {args.frames / cpu:,.0f} | {rss / 1024:.0f} MB | "
                  f"{cpu / base:.1f}× | {seen} |")


if __name__ == "__main__":
    main()
