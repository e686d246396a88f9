#!/usr/bin/env python3
"""``analyze --jobs 1`` against ``--jobs 2`` on the same captures, in the same run.

``--set zones`` (the default) writes what a port's analysis station gets: one SPAN capture per
crane zone, hourly rotated (``gen_crane_capture.py --cranes 1 --zone K --hour H``: ``--zones``
zones x ``--hours`` files, 10 x 2 = 20 by default). The zones share the terminal's SCADA server
(which polls every zone's PLC) and servers, not a conversation, so ``--jobs 2`` splits them into
two groups of whole zones. ``--set shapes`` writes captures of the shape matrix
(``gen_shapes.py``, shapes a-g, several seeds): terminal-wide captures of other traffic
shapes, grouped as their addresses say (shapes a-d and f share the crane LAN, e and g do not). ``--set cranes`` is the old set (``--cranes 1``, seeds 1-20: one crane, 20 times).
``--gzip`` compresses the captures as a sensor's rotation does; ``--captures`` takes others.

It then runs ``cranewatch analyze --format jsonl`` over all of them ``--repeat`` times with each
``--jobs`` value, alternating the order per repetition so that the machine's other load falls on
both alike; ``--taskset 0,1`` pins every run to those CPUs. Each run is a fresh process
measuring itself: wall time (interpreter start-up excluded, imports included), CPU of the main
process and of all processes (its workers too), and the peak RSS of the largest of them. It
checks that every document is byte for byte the first one, prints the median, minimum and
maximum of each, and the load average before and after.

On a machine others load, the wall time varies with them; CPU times do not. ``--jobs 2`` runs
two workers and the main process (the sinks): on two otherwise idle cores its wall time is
about the larger of the main process's CPU and half of all processes' CPU.

Example:
  .venv/bin/python benchmarks/bench_jobs.py --workdir /tmp/bench-jobs --repeat 5
  .venv/bin/python benchmarks/bench_jobs.py --gzip --packets 50000 --taskset 0,1
  .venv/bin/python benchmarks/bench_jobs.py --set shapes --repeat 3
  .venv/bin/python benchmarks/bench_jobs.py --captures src/cranewatch/data/lab/*/crane-lan.pcap
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# The command runs inside this fresh process, so RUSAGE_SELF is the main process alone and
# RUSAGE_CHILDREN its worker processes (joined before it returns). ru_maxrss: KiB on Linux.
_MEASURE = """
import json, resource, sys, time
start = time.perf_counter()
from cranewatch.cli import main
code = main(sys.argv[1:])
wall = time.perf_counter() - start
me = resource.getrusage(resource.RUSAGE_SELF)
workers = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "main_cpu": me.ru_utime + me.ru_stime,
                  "worker_cpu": workers.ru_utime + workers.ru_stime,
                  "cpu": me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime,
                  "rss_kb": max(me.ru_maxrss, workers.ru_maxrss), "rc": code}), file=sys.stderr)
"""

_READ_ONLY = """
import sys, time
from cranewatch.decode import decode_batch
from cranewatch.pipeline import BATCH_PACKETS, _file_batches, _InputState
start = time.process_time()
packets = 0
for path in sys.argv[1:]:
    for batch in _file_batches(_InputState(path, 0), lambda warning: None, BATCH_PACKETS):
        decode_batch(batch)
        packets += len(batch)
print(packets, time.process_time() - start)
"""


def make_captures(workdir: Path, which: str, count: int, packets: int, compress: bool,
                  zones: int, hours: int) -> list[Path]:
    jobs: list[tuple[Path, list[str]]] = []
    if which == "zones":
        for zone in range(1, zones + 1):
            for hour in range(hours):
                jobs.append((workdir / f"zone{zone}-h{hour}.pcap",
                             [str(HERE / "gen_crane_capture.py"), "--packets", str(packets),
                              "--seed", str(100 * zone + hour), "--cranes", "1", "--zone",
                              str(zone), "--hour", str(hour)]))
    elif which == "shapes":
        for index in range(count):
            shape, seed = "abcdefg"[index % 7], 1 + index // 7
            jobs.append((workdir / f"shape-{shape}-{seed}.pcap",
                         [str(HERE / "gen_shapes.py"), "--shape", shape, "--packets",
                          str(packets), "--seed", str(seed)]))
    else:
        for seed in range(1, count + 1):
            jobs.append((workdir / f"crane-{seed}.pcap",
                         [str(HERE / "gen_crane_capture.py"), "--packets", str(packets),
                          "--seed", str(seed), "--cranes", "1"]))
    paths = []
    for plain, command in jobs:
        if not plain.exists():
            subprocess.run(["env", f"PYTHONPATH={SRC}", sys.executable, *command, "--out",
                            str(plain)], check=True, stdout=subprocess.DEVNULL)
        if compress:
            packed = plain.with_suffix(".pcap.gz")
            if not packed.exists():
                with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
                    shutil.copyfileobj(source, target)
            paths.append(packed)
        else:
            paths.append(plain)
    return paths


def run_once(captures: list[Path], jobs: int, out: Path, cpus: str | None) -> dict[str, float | int | str]:
    command = ["analyze", "--format", "jsonl", "--jobs", str(jobs), "--out", str(out),
               *map(str, captures)]
    pin = ["taskset", "-c", cpus] if cpus else []
    done = subprocess.run([*pin, "env", f"PYTHONPATH={SRC}", sys.executable, "-c", _MEASURE,
                           *command], capture_output=True, text=True, check=True)
    for line in done.stderr.splitlines():
        if line.startswith("cranewatch: note:"):
            print(f"  --jobs {jobs}: {line}", file=sys.stderr)
    result: dict[str, float | int | str] = json.loads(done.stderr.strip().splitlines()[-1])
    if result["rc"] not in (0, 1, 3):  # 1: findings, 3: a damaged input still reported
        raise SystemExit(f"--jobs {jobs} failed (exit {result['rc']}): {done.stderr[-400:]}")
    return result


def read_share(captures: list[Path]) -> tuple[int, float]:
    done = subprocess.run(["env", f"PYTHONPATH={SRC}", sys.executable, "-c", _READ_ONLY,
                           *map(str, captures)], capture_output=True, text=True, check=True)
    packets, seconds = done.stdout.split()
    return int(packets), float(seconds)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", nargs="+", type=Path, help="captures to analyse (default: generate)")
    parser.add_argument("--set", choices=("zones", "shapes", "cranes"), default="zones",
                        help="captures to generate (default zones)")
    parser.add_argument("--zones", type=int, default=10, help="crane zones (--set zones; default 10)")
    parser.add_argument("--hours", type=int, default=2, help="hourly files per zone (default 2)")
    parser.add_argument("--count", type=int, default=20, help="captures to generate (shapes, cranes; default 20)")
    parser.add_argument("--taskset", metavar="CPUS", help="pin every run to these CPUs (taskset -c)")
    parser.add_argument("--packets", type=int, default=50_000, help="packets per generated capture")
    parser.add_argument("--gzip", action="store_true", help="gzip the generated captures")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values (default 1 2)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each --jobs value (default 5)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-jobs"))
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    captures = args.captures or make_captures(args.workdir, args.set, args.count, args.packets,
                                              args.gzip, args.zones, args.hours)
    size = sum(p.stat().st_size for p in captures)
    print(f"{len(captures)} captures, {size / 1e6:.1f} MB on disk"
          + (f", pinned to CPUs {args.taskset}" if args.taskset else ""))
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    runs: dict[int, list[dict[str, float | int | str]]] = {jobs: [] for jobs in args.jobs}
    digests: set[str] = set()
    for repetition in range(args.repeat):
        order = args.jobs if repetition % 2 == 0 else list(reversed(args.jobs))
        for jobs in order:
            out = args.workdir / f"doc-jobs{jobs}.jsonl"
            runs[jobs].append(run_once(captures, jobs, out, args.taskset))
            digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
        print(f"  repetition {repetition + 1}/{args.repeat} done", file=sys.stderr)
    same = len(digests) == 1

    packets, read_cpu = read_share(captures)
    print(f"{packets:,} packets; read + inflate + decode alone: {read_cpu:.2f} CPU s in one process")
    print(f"documents of every run byte-identical: {'yes' if same else 'NO'}")
    print("jobs  wall s median (min-max)   CPU s, all processes   CPU s, main process   "
          "peak RSS MB (largest process)")
    for jobs, results in runs.items():
        walls = [float(r["wall"]) for r in results]
        cpus = [float(r["cpu"]) for r in results]
        mains = [float(r["main_cpu"]) for r in results]
        rss = max(float(r["rss_kb"]) for r in results) / 1024
        print(f"{jobs:4}  {spread(walls):>24}  {spread(cpus):>22}  {spread(mains):>22}  {rss:8.0f}")
    base = statistics.median(float(r["wall"]) for r in runs[args.jobs[0]])
    for jobs in args.jobs[1:]:
        median = statistics.median(float(r["wall"]) for r in runs[jobs])
        print(f"wall-time speed-up of --jobs {jobs} over --jobs {args.jobs[0]} (medians): {base / median:.2f}x")
    for jobs, results in runs.items():
        if jobs > 1:
            mains = statistics.median(float(r["main_cpu"]) for r in results)
            cpus = statistics.median(float(r["cpu"]) for r in results)
            serial = statistics.median(float(r["cpu"]) for r in runs[args.jobs[0]])
            print(f"--jobs {jobs} on {jobs} idle cores, workers of equal load: at least "
                  f"max(main CPU, all CPU / {jobs}) = "
                  f"{max(mains, cpus / jobs):.2f} s against {serial:.2f} s serial CPU: "
                  f"{serial / max(mains, cpus / jobs):.2f}x at best")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(time.strftime("measured %Y-%m-%d %H:%M UTC", time.gmtime()))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
