#!/usr/bin/env python3
"""Time ``cranewatch scan-image`` on a Windows collection of a given size (issue 16: 1 GB < 60 s).

The tree is built once under ``--workdir``: the real hives of ``../shared/data/windows/hives``
(regipy's test data: a Windows 10 SYSTEM, a SOFTWARE-like user hive, SAM, NTUSER.DAT,
UsrClass.dat, Amcache.hve) in their usual places, then filler up to ``--size-mb``: programs
(MZ header + seeded random bytes, 64 KB to 8 MB) under ``Program Files``, ``Windows/System32``
and ``ProgramData``, and small text and XML configuration files. Then, as a child process,
``cranewatch scan-image TREE --format jsonl --out /dev/null`` with ``--workers``; wall and CPU
seconds (user + system of the child) are printed, and the Windows checks alone, in process.
With ``--input ntfs`` the tree is first put into a real NTFS volume (mkntfs, then
``wimlib-imagex apply`` to the unmounted volume) and the volume is scanned; with ``--input vhdx``
that volume sits in a GPT disk (EFI system partition, MSR, NTFS) converted by ``qemu-img``.

Example:
    .venv/bin/python benchmarks/bench_scan_windows.py --size-mb 1024 --workdir /tmp/bench-win
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIVES = REPO.parent / "shared/data/windows/hives"
PLACES = {
    "SYSTEM_WIN_10_1709": "Windows/System32/config/SYSTEM",
    "ntuser_software_partial": "Windows/System32/config/SOFTWARE",
    "SAM": "Windows/System32/config/SAM",
    "NTUSER.DAT": "Users/cms/NTUSER.DAT",
    "UsrClass.dat": "Users/cms/AppData/Local/Microsoft/Windows/UsrClass.dat",
    "amcache.hve": "Windows/AppCompat/Programs/Amcache.hve",
}


def build(tree: Path, size_mb: int, hives: Path) -> None:
    marker = tree / ".built"
    if marker.exists() and marker.read_text() == str(size_mb):
        return
    shutil.rmtree(tree, ignore_errors=True)
    for name, place in PLACES.items():
        dest = tree / place
        dest.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(hives / f"{name}.xz") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    rng = random.Random(16)
    written = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
    folders = ("Program Files/Vendor CMS/bin", "Program Files (x86)/Vendor HMI", "Windows/System32", "ProgramData/Vendor/cache")
    index = 0
    while written < size_mb << 20:
        index += 1
        if index % 4 == 0:
            text = "".join(f"Setting{i}={rng.randrange(10**6)}\r\n" for i in range(rng.randrange(20, 400)))
            path = tree / f"ProgramData/Vendor/config/cfg{index}.ini"
            data = text.encode()
        else:
            size = rng.choice((64 << 10, 256 << 10, 1 << 20, 8 << 20))
            path = tree / folders[index % len(folders)] / f"prog{index}.exe"
            data = b"MZ\x90\x00" + b"\x00" * 60 + rng.randbytes(size - 64)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)
    marker.write_text(str(size_mb))


def as_disk(tree: Path, kind: str) -> Path:
    """``tree`` as an NTFS volume (``kind`` "ntfs") or a GPT disk converted to VHDX, built once."""
    volume = tree.with_suffix(".ntfs")
    if not volume.exists():
        size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) // (1 << 20) * 5 // 4 + 64
        subprocess.run(["truncate", "-s", f"{size}M", str(volume)], check=True)
        subprocess.run(["mkntfs", "-F", "-Q", "-q", str(volume)], check=True, capture_output=True)
        wim = tree.with_suffix(".wim")
        subprocess.run(["wimlib-imagex", "capture", str(tree), str(wim), "--no-acls", "--compress=none"], check=True,
                       capture_output=True)
        subprocess.run(["wimlib-imagex", "apply", str(wim), "1", str(volume)], check=True, capture_output=True)
        wim.unlink()
    if kind == "ntfs":
        return volume
    disk = tree.with_suffix(".vhdx")
    if not disk.exists():
        raw = tree.with_suffix(".raw")
        mib = volume.stat().st_size >> 20
        subprocess.run(["truncate", "-s", f"{mib + 52}M", str(raw)], check=True)
        table = ("label: gpt\nstart=2048, size=67584, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
                 "start=69632, size=32768, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\n"
                 f"start=102400, size={mib * 2048}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
        subprocess.run(["sfdisk", "-q", str(raw)], input=table, text=True, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["dd", f"if={volume}", f"of={raw}", "bs=1M", "seek=50", "conv=notrunc,sparse", "status=none"],
                       check=True)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", str(raw), str(disk)], check=True)
        raw.unlink()
    return disk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache/bench-windows")
    parser.add_argument("--hives", type=Path, default=HIVES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--input", choices=("dir", "ntfs", "vhdx"), default="dir")
    args = parser.parse_args()
    tree = args.workdir / f"C-{args.size_mb}mb"
    started = time.perf_counter()
    build(tree, args.size_mb, args.hives)
    scanned = tree if args.input == "dir" else as_disk(tree, args.input)
    built = time.perf_counter() - started
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "cranewatch", "scan-image", str(scanned), "--format", "jsonl", "--out", os.devnull,
         "--workers", str(args.workers)], env=env, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.path.insert(0, str(REPO / "src"))
    from cranewatch.forensics.checks.base import EndpointPolicy
    from cranewatch.forensics.image import open_image
    from cranewatch.forensics.packages import read_packages
    from cranewatch.forensics.scanner import make_context
    from cranewatch.forensics.windows import check_windows

    with open_image(tree) as image:
        ctx = make_context(image, read_packages(image), None, EndpointPolicy())
        started = time.perf_counter()
        findings = list(check_windows(image, ctx))
        windows_seconds = time.perf_counter() - started
    print(json.dumps({
        "tree": str(tree), "input": str(scanned), "size_mb": args.size_mb, "build_seconds": round(built, 1),
        "scan_wall_seconds": round(wall, 2),
        "scan_cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "returncode": run.returncode, "windows_checks_seconds": round(windows_seconds, 2),
        "windows_findings": len(findings), "stderr_tail": run.stderr[-300:],
    }, indent=2))
    return 0 if run.returncode in (0, 1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
