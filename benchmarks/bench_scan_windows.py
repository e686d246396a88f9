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
With ``--wof ALGORITHM`` (and ``--input ntfs``) the programs are x86 code (slices of this
machine's ``/usr/lib/x86_64-linux-gnu`` libraries after the MZ header, so that they compress
as DLLs do) and every one is WOF-compressed on the volume, as ``compact /exe`` or CompactOS
leave a system: wimlib compresses them, ``ntfscp`` writes each ``WofCompressedData`` stream and
the reparse points are rewritten (``tests/test_windows_wof.py`` builds its volumes the same way).
``CRANEWATCH_LIBWIM=`` (empty) in the environment measures the built-in decoder instead of wimlib.

Example:
    .venv/bin/python benchmarks/bench_scan_windows.py --size-mb 1024 --workdir /tmp/bench-win
"""

from __future__ import annotations

import argparse
import hashlib
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
# This checkout's code for everything imported in process (the Windows checks counted below and
# the WOF volume builder of tests/, which imports cranewatch too), as for the child scan: a
# ``cranewatch`` found first elsewhere (an editable install of another checkout) would count
# another version's findings (3 instead of 6 on the same tree, before ShimCache and BAM).
sys.path.insert(0, str(REPO / "src"))
HIVES = REPO.parent / "shared/data/windows/hives"
PLACES = {
    "SYSTEM_WIN_10_1709": "Windows/System32/config/SYSTEM",
    "ntuser_software_partial": "Windows/System32/config/SOFTWARE",
    "SAM": "Windows/System32/config/SAM",
    "NTUSER.DAT": "Users/cms/NTUSER.DAT",
    "UsrClass.dat": "Users/cms/AppData/Local/Microsoft/Windows/UsrClass.dat",
    "amcache.hve": "Windows/AppCompat/Programs/Amcache.hve",
}


def _code_pool() -> bytes:
    """64 MiB of x86-64 machine code and data: this machine's shared libraries in name order."""
    pool = bytearray()
    for lib in sorted(Path("/usr/lib/x86_64-linux-gnu").glob("*.so*")):
        if lib.is_file() and not lib.is_symlink() and len(pool) < 64 << 20:
            pool += lib.read_bytes()[: 4 << 20]
    return bytes(pool)


def build(tree: Path, size_mb: int, hives: Path, code: bool = False) -> None:
    marker = tree / ".built"
    if marker.exists() and marker.read_text() == f"{size_mb}{' code' if code else ''}":
        return
    pool = _code_pool() if code else b""
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
            if code:
                at = rng.randrange(len(pool) - size)
                data = b"MZ\x90\x00" + b"\x00" * 60 + pool[at : at + size - 64]
            else:
                data = b"MZ\x90\x00" + b"\x00" * 60 + rng.randbytes(size - 64)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)
    marker.write_text(f"{size_mb}{' code' if code else ''}")


def as_wof_volume(tree: Path, algorithm: str) -> Path:
    """``tree`` as an NTFS volume whose programs are all WOF-compressed with ``algorithm``, built once."""
    sys.path.insert(0, str(REPO / "tests"))
    import mmap

    from test_windows_wof import WIM_COMPRESSION, mark_wof, put_wof_streams, wim_blobs

    algo = {"xpress4k": 0, "lzx": 1, "xpress8k": 2, "xpress16k": 3}[algorithm]
    volume = tree.with_name(f"{tree.name}-wof-{algorithm}.ntfs")
    if volume.exists():
        return volume
    work = tree.with_name(f"{tree.name}-wof-work")
    shutil.rmtree(work, ignore_errors=True)
    shadow = work / "tree"
    programs = {}
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree)
        if path.is_dir() or path.name == ".built":
            continue
        (shadow / rel).parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".exe":
            target = f"wof-{len(programs):06d}"
            (shadow / rel).symlink_to("/" + target)
            programs[rel.as_posix()] = (path, target)
        else:
            os.link(path, shadow / rel)
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) // (1 << 20) * 5 // 2 + 64
    partial = volume.with_suffix(".partial")
    subprocess.run(["truncate", "-s", f"{size}M", str(partial)], check=True)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", str(partial)], check=True, capture_output=True)
    wim = work / "tree.wim"
    subprocess.run(["wimlib-imagex", "capture", str(shadow), str(wim), "--no-acls", "--compress=none"], check=True,
                   capture_output=True)
    subprocess.run(["wimlib-imagex", "apply", str(wim), "1", str(partial)], check=True, capture_output=True)
    method, chunk = WIM_COMPRESSION[algo]
    packed = work / "packed.wim"
    sources = work / "programs"
    sources.mkdir()
    for path, target in programs.values():
        os.link(path, sources / target)
    subprocess.run(["wimlib-imagex", "capture", str(sources), str(packed), f"--compress={method}",
                    f"--chunk-size={chunk}", "--no-acls"], check=True, capture_output=True)
    blobs = wim_blobs(packed)
    for rel, (path, _target) in programs.items():
        content = path.read_bytes()
        stored, original, _flags = blobs[hashlib.sha1(content).digest()]
        put_wof_streams(partial, work, rel, original, stored)
    with open(partial, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as image:
        mark_wof(image, {target: algo for _, target in programs.values()})
    partial.rename(volume)
    shutil.rmtree(work)
    return volume


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
    parser.add_argument("--wof", choices=("xpress4k", "lzx", "xpress8k", "xpress16k"),
                        help="every program WOF-compressed on the NTFS volume (with --input ntfs)")
    args = parser.parse_args()
    if args.wof and args.input != "ntfs":
        parser.error("--wof needs --input ntfs")
    tree = args.workdir / f"C-{args.size_mb}mb{'-code' if args.wof else ''}"
    started = time.perf_counter()
    build(tree, args.size_mb, args.hives, code=bool(args.wof))
    scanned = tree if args.input == "dir" else as_wof_volume(tree, args.wof) if args.wof else as_disk(tree, args.input)
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
    import cranewatch
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
        "wof": args.wof, "libwim": os.environ.get("CRANEWATCH_LIBWIM", "libwim.so.15"),
        "scan_wall_seconds": round(wall, 2),
        "scan_cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "returncode": run.returncode, "windows_checks_seconds": round(windows_seconds, 2),
        "windows_findings": len(findings), "code": str(Path(cranewatch.__file__).parents[1]),
        "stderr_tail": run.stderr[-300:],
    }, indent=2))
    return 0 if run.returncode in (0, 1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
