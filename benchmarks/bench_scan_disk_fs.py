#!/usr/bin/env python3
"""Time ``cranewatch scan-image`` on a ~1 GB tree as a directory and as a GPT disk holding it as
XFS (read by ``forensics/xfs.py``) and as btrfs (``btrfs restore``).

The tree is copied from a host folder (default ``/usr``: ELF programs, libraries, Python and
share files), up to ``--bytes`` of regular files, names without blanks (mkfs.xfs protofiles
cannot carry them), symlinks kept. The volumes are built without root or mount: ``mkfs.xfs -p
PROTOFILE`` and ``mkfs.btrfs --rootdir``, written into a sparse GPT disk by ``sfdisk``. Each scan
is the CLI with ``--format jsonl`` and 2 workers, timed as a whole (the disk's time includes
reading the partition table and extracting the volume into the private temporary directory).

Example:
    .venv/bin/python benchmarks/bench_scan_disk_fs.py --json benchmarks/out/disk-fs.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIB = 1 << 20


def copy_tree(source: Path, dest: Path, budget: int) -> dict[str, int]:
    files = size = links = 0
    for dirpath, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if " " not in d and not os.path.islink(os.path.join(dirpath, d)))
        rel = Path(dirpath).relative_to(source)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for d in os.listdir(dirpath):
            full = os.path.join(dirpath, d)
            if os.path.islink(full) and " " not in d and " " not in os.readlink(full):
                os.symlink(os.readlink(full), dest / rel / d)
                links += 1
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            if " " in name or os.path.islink(full) or not os.path.isfile(full):
                continue
            length = os.path.getsize(full)
            if size + length > budget:
                return {"files": files, "bytes": size, "symlinks": links}
            try:
                shutil.copy2(full, dest / rel / name)
            except OSError:
                continue
            files += 1
            size += length
    return {"files": files, "bytes": size, "symlinks": links}


def proto(tree: Path) -> str:
    lines = ["/dummy", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for item in sorted(d.iterdir()):
            pad = " " * depth
            mode = item.lstat().st_mode
            if item.is_symlink():
                lines.append(f"{pad}{item.name} l--777 0 0 {os.readlink(item)}")
            elif item.is_dir():
                lines.append(f"{pad}{item.name} d--{mode & 0o777:o} 0 0")
                walk(item, depth + 1)
                lines.append(f"{pad}$")
            else:
                suid, sgid = "u" if mode & 0o4000 else "-", "g" if mode & 0o2000 else "-"
                lines.append(f"{pad}{item.name} -{suid}{sgid}{mode & 0o777:o} 0 0 {item}")

    walk(tree, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def gpt_disk(volume: Path, out: Path) -> Path:
    size_mib = volume.stat().st_size // MIB + 1
    subprocess.run(["truncate", "-s", f"{size_mib + 2}M", str(out)], check=True)
    subprocess.run(["sfdisk", "-q", str(out)], input=f"label: gpt\nstart=2048, size={size_mib * 2048}, type={LINUX}\n",
                   text=True, check=True, stdout=subprocess.DEVNULL)
    with open(out, "r+b") as disk, open(volume, "rb") as fh:
        disk.seek(MIB)
        while block := fh.read(8 * MIB):
            if block.count(0) == len(block):
                disk.seek(len(block), os.SEEK_CUR)  # keep the disk sparse
            else:
                disk.write(block)
    volume.unlink()
    return out


def scan(path: Path, out: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "cranewatch", "scan-image", str(path), "--format", "jsonl", "--workers", "2",
                          "--out", str(out)], capture_output=True, text=True, env=env, check=False)
    seconds = round(time.perf_counter() - start, 2)
    findings = sum(1 for line in out.read_text().splitlines() if '"type":"finding"' in line.replace(" ", "")) \
        if out.exists() else None
    return {"seconds": seconds, "returncode": run.returncode, "findings": findings, "stderr_tail": run.stderr[-300:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("/usr"))
    parser.add_argument("--bytes", type=int, default=1_000_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fs", action="append", choices=("xfs", "btrfs"), help="default: both")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-disk-fs-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        result["tree"] = copy_tree(args.source, tree, args.bytes)
        result["directory"] = scan(tree, work / "dir.jsonl")
        size_mib = max(300, int(result["tree"]["bytes"] * 1.3) // MIB + 200)  # type: ignore[index]
        for fs in args.fs or ["xfs", "btrfs"]:
            volume = work / f"{fs}.img"
            subprocess.run(["truncate", "-s", f"{size_mib}M", str(volume)], check=True)
            start = time.perf_counter()
            if fs == "xfs":
                (work / "proto").write_text(proto(tree))
                subprocess.run(["mkfs.xfs", "-q", "-p", str(work / "proto"), str(volume)], check=True)
            else:
                subprocess.run(["mkfs.btrfs", "-q", "--rootdir", str(tree), str(volume)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            disk = gpt_disk(volume, work / f"{fs}.raw")
            built = round(time.perf_counter() - start, 2)
            result[f"{fs}_disk"] = {"build_seconds": built, "disk_bytes": disk.stat().st_size,
                                    **scan(disk, work / f"{fs}.jsonl")}
            disk.unlink()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
