#!/usr/bin/env python3
"""The benchmark matrix of issue 13: every traffic shape, cranewatch against tshark and dpkt.

For each shape of ``gen_shapes.py`` (a-g) at each size, generates the capture once (kept in
``--workdir``), then runs, each as its own child process and in the same run:

- ``cranewatch analyze FILE --format jsonl --out /dev/null`` (the code of this checkout:
  ``python -m cranewatch`` with ``PYTHONPATH`` at its ``src``);
- the same with ``--profile profiles/sts-07.toml`` where process checks apply (the shapes
  whose crane 7 PLC, 10.20.7.10, is polled for the STS-07 register map: a-d, f);
- tshark, a full dissection with the Modbus fields: ``tshark -r FILE -Y mbtcp -T fields
  -e frame.number -e mbtcp.trans_id -e mbtcp.unit_id -e modbus.func_code
  -e modbus.exception_code -e modbus.reference_num -e modbus.word_cnt`` (every frame is
  dissected, TCP reassembled, then filtered);
- dpkt: a Python loop over dpkt's pcap/pcapng reader, ``Ethernet`` -> ``IP`` -> ``TCP``
  objects, then every Modbus/TCP ADU of each port-502 segment (MBAP header, function, and
  the address/quantity of reads), without reassembly.

Each child is waited for with ``os.wait4``: CPU seconds are its user + system time, peak
RSS its ``ru_maxrss`` (the machine is shared, so rates are packets per CPU second). Prints
a markdown table and writes the rows as JSON (``--json``). ``--where`` also runs
``analyze`` once more per shape under cProfile (not timed) and lists the functions with the
most own time.

Example:
  PYTHONPATH=src python benchmarks/bench_matrix.py --workdir /tmp/shapes --json benchmarks/out/matrix.json
  PYTHONPATH=src python benchmarks/bench_matrix.py --shapes b --sizes 3000000 10000000 --skip tshark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROFILE = ROOT / "profiles" / "sts-07.toml"
PROCESS_SHAPES = set("abcdf")
TSHARK_FIELDS = ("frame.number", "mbtcp.trans_id", "mbtcp.unit_id", "modbus.func_code",
                 "modbus.exception_code", "modbus.reference_num", "modbus.word_cnt")


@dataclass
class Run:
    shape: str
    packets: int
    what: str
    cpu: float
    wall: float
    rss_mb: float
    rc: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.packets / self.cpu if self.cpu > 0 else 0.0


# Runs one command and reports its CPU time and peak RSS. A fresh, small wrapper process: on
# Linux a child's ru_maxrss starts from its parent's resident size at fork time, so a parent
# that grew (generated a capture, profiled a run) would inflate small children's peaks.
_MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = child.stderr.read()
_pid, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "wall": time.perf_counter() - start,
                  "rss_kb": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status),
                  "err": err.decode(errors="replace").strip()[-300:]}))
"""


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int, str]:
    """(CPU s, wall s, peak RSS MB, exit code, stderr tail) of one child (``os.wait4``)."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True,
                          env=env, check=True)
    result = json.loads(done.stdout)
    return result["cpu"], result["wall"], result["rss_kb"] / 1024, result["rc"], result["err"]


# --------------------------------------------------------------------------- the dpkt child


def dpkt_child(path: str) -> int:
    import dpkt

    mbap = struct.Struct("!HHHBB")
    reads = struct.Struct("!HH")
    adus = 0
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(handle)
        for _ts, frame in reader:
            try:
                eth = dpkt.ethernet.Ethernet(frame)
            except (dpkt.UnpackError, struct.error):
                continue
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP) or (tcp.sport != 502 and tcp.dport != 502):
                continue
            data = tcp.data
            at = 0
            while at + 8 <= len(data):
                _tid, _proto, length, _unit, function = mbap.unpack_from(data, at)
                if tcp.dport == 502 and function in (1, 2, 3, 4) and at + 12 <= len(data):
                    reads.unpack_from(data, at + 8)
                adus += 1
                at += 6 + max(length, 2)
    print(f"{adus} Modbus ADUs", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- the run


def capture_path(workdir: Path, shape: str, packets: int, seed: int) -> Path:
    name = f"{shape}-{packets // 1_000_000}m" if packets % 1_000_000 == 0 else f"{shape}-{packets}"
    suffix = ".pcapng" if shape == "g" else ".pcap"
    if seed != 1:
        name += f"-seed{seed}"
    return workdir / (name + suffix)


def ensure_capture(workdir: Path, shape: str, packets: int, seed: int) -> Path:
    path = capture_path(workdir, shape, packets, seed)
    if not path.exists():
        sys.path.insert(0, str(HERE))
        from gen_shapes import write_shape

        started = time.process_time()
        tmp = path.with_name(path.name + ".part")
        write_shape(tmp, shape, packets, seed)
        tmp.rename(path)
        print(f"generated {path} in {time.process_time() - started:.0f} CPU s", file=sys.stderr)
    return path


def bench(shape: str, packets: int, path: Path, skip: set[str], nice: int) -> list[Run]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    prefix = ["nice", "-n", str(nice)] if nice else []
    py = sys.executable
    jobs: list[tuple[str, list[str]]] = []
    analyze = [py, "-m", "cranewatch", "analyze", str(path), "--format", "jsonl", "--out", os.devnull]
    if "analyze" not in skip:
        jobs.append(("cranewatch analyze", analyze))
    if "profile" not in skip and shape in PROCESS_SHAPES:
        jobs.append(("cranewatch analyze --profile", [*analyze, "--profile", str(PROFILE)]))
    if "tshark" not in skip and shutil.which("tshark"):
        command = ["tshark", "-r", str(path), "-Y", "mbtcp", "-T", "fields"]
        for field in TSHARK_FIELDS:
            command += ["-e", field]
        jobs.append(("tshark -Y mbtcp -T fields", command))
    if "dpkt" not in skip:
        jobs.append(("dpkt loop", [py, __file__, "--dpkt-child", str(path)]))
    runs = []
    for what, command in jobs:
        cpu, wall, rss, rc, err = measure(prefix + command, env)
        runs.append(Run(shape, packets, what, cpu, wall, rss, rc, err if rc not in (0, 1) else ""))
        print(f"  {shape} {packets:>10,} {what:32} {cpu:8.2f} CPU s {packets / max(cpu, 1e-9):>10,.0f}/s "
              f"{rss:7.0f} MB rc={rc} {runs[-1].note}", file=sys.stderr, flush=True)
    return runs


def where_time_goes(path: Path, top: int = 8) -> list[tuple[str, float]]:
    """Functions with the most own time in ``analyze`` under cProfile (in a child process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, __file__, "--where-child", str(path), "--top", str(top)],
                          capture_output=True, text=True, env=env, check=True)
    return [(name, share) for name, share in json.loads(done.stdout)]


def where_child(path: str, top: int) -> int:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT / "src"))
    from cranewatch.pipeline import analyze

    profiler = cProfile.Profile()
    profiler.enable()
    analyze([path])
    profiler.disable()
    stats = pstats.Stats(profiler)
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values())
    rows = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    out = []
    for (filename, line, name), value in rows:
        short = filename.split("/src/")[-1] if "/src/" in filename else Path(filename).name
        out.append((f"{short}:{line} {name}" if line else name, value[2] / total if total else 0.0))
    print(json.dumps(out))
    return 0


def table(runs: list[Run]) -> str:
    lines = ["| shape | packets | what | CPU s | packets / CPU s | × tshark | × dpkt | peak RSS MB |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    by_case: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        by_case.setdefault((run.shape, run.packets), []).append(run)
    for (shape, packets), case in by_case.items():
        tshark = next((r for r in case if r.what.startswith("tshark")), None)
        dpkt = next((r for r in case if r.what.startswith("dpkt")), None)
        for run in case:
            vs_t = f"{run.rate / tshark.rate:.1f}" if tshark and tshark.rate else "–"
            vs_d = f"{run.rate / dpkt.rate:.1f}" if dpkt and dpkt.rate else "–"
            flag = "" if run.rc in (0, 1) else f" (exit {run.rc})"
            lines.append(f"| {shape} | {packets / 1e6:g} M | {run.what}{flag} | {run.cpu:.2f} | "
                         f"{run.rate / 1000:,.0f} k | {vs_t} | {vs_d} | {run.rss_mb:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="abcdefg", help="shape letters (default all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shapes"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["analyze", "profile", "tshark", "dpkt"])
    parser.add_argument("--nice", type=int, default=5, help="nice level of the children (0: none)")
    parser.add_argument("--json", type=Path, help="append the rows to this JSON file")
    parser.add_argument("--where", default="", metavar="SHAPES",
                        help="shape letters whose smallest capture is also run under cProfile (top functions)")
    parser.add_argument("--dpkt-child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--where-child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--top", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dpkt_child:
        return dpkt_child(args.dpkt_child)
    if args.where_child:
        return where_child(args.where_child, args.top)

    args.workdir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    where: dict[str, list[tuple[str, float]]] = {}
    for packets in args.sizes:
        for shape in args.shapes:
            path = ensure_capture(args.workdir, shape, packets, args.seed)
            runs += bench(shape, packets, path, set(args.skip), args.nice)
            if shape in args.where and packets == min(args.sizes):
                where[shape] = where_time_goes(path)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, commit {commit}\n")
    print(table(runs))
    for shape, top in where.items():
        print(f"\nshape {shape}, own time: " + "; ".join(f"{name} {share:.0%}" for name, share in top))
    if args.json:
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(old + [dict(asdict(r), commit=commit, when=time.time()) for r in runs],
                                        indent=1))
    return 0 if all(r.rc in (0, 1) for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
