#!/usr/bin/env python3
"""Time the WMI subscription check on a CIM repository of a given size (issue 16).

A Windows 10 ``OBJECTS.DATA`` is typically 20–100 MB. This builds one of ``--size-mb`` under
``--workdir``: pages laid out as ``tests/wmi_writer`` lays them (a table of contents, objects),
filled with 40 objects of seeded random bytes each (other classes' instances, as far as the
reader is concerned), the test suite's subscriptions (``test_windows_wmi.build_repository``) in
its first pages and a mapping for all of it. Then ``wmi_repository.read_instances`` alone, and
the whole check through ``scan_image`` on a tree holding only the repository, each timed in CPU
seconds (user + system) of this process.

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_wmi_repository.py --size-mb 100 --workdir /tmp/bench-wmi
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the format writer of the tests

PAGE = 0x2000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(root: Path, size_mb: int) -> Path:
    from test_windows_wmi import REPO as REPOSITORY
    from test_windows_wmi import build_repository
    from wmi_writer import Repository

    folder = root / REPOSITORY
    folder.mkdir(parents=True, exist_ok=True)
    (root / "Windows/System32/config").mkdir(parents=True, exist_ok=True)
    rng = random.Random(16)
    filler = bytearray(PAGE)
    for i in range(40):
        struct.pack_into("<4I", filler, 16 * i, 1000 + i, 0x300 + i * 0xC0, 0xC0, 0)
    filler[0x300:] = rng.randbytes(PAGE - 0x300)
    seed = build_repository()
    count = max(size_mb * (1 << 20) // PAGE, len(seed.pages))
    pages = seed.pages + [bytes(filler)] * (count - len(seed.pages))
    mapping = seed.mapping + list(range(len(seed.pages), count))
    repo = Repository(pages, mapping)
    (folder / "OBJECTS.DATA").write_bytes(repo.objects_data())
    (folder / "MAPPING1.MAP").write_bytes(repo.mapping_file())
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-wmi"))
    args = parser.parse_args()
    root = args.workdir / "C"
    folder = build(root, args.size_mb)
    from cranewatch.forensics.api import scan_image
    from cranewatch.forensics.windows.wmi_repository import read_instances, read_mapping

    objects = folder / "OBJECTS.DATA"
    mapping = read_mapping("MAPPING1.MAP", (folder / "MAPPING1.MAP").read_bytes())
    cpu, wall = _cpu(), time.perf_counter()
    with open(objects, "rb") as fh:
        instances, problems = read_instances(fh, objects.stat().st_size, mapping)
    reader_cpu, reader_wall = _cpu() - cpu, time.perf_counter() - wall
    cpu, wall = _cpu(), time.perf_counter()
    result = scan_image(root, workers=1)
    scan_cpu, scan_wall = _cpu() - cpu, time.perf_counter() - wall
    print(json.dumps({
        "objects_mb": round(objects.stat().st_size / (1 << 20), 1), "instances": len(instances), "problems": len(problems),
        "reader_cpu_s": round(reader_cpu, 2), "reader_wall_s": round(reader_wall, 2),
        "scan_image_cpu_s": round(scan_cpu, 2), "scan_image_wall_s": round(scan_wall, 2),
        "wmi_findings": sum(1 for f in result.findings if f.rule.startswith("windows.wmi")),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
