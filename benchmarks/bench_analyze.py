#!/usr/bin/env python3
"""Time cranewatch against tshark and dpkt on the same crane-terminal capture, in one run.

For each capture size it generates the capture (``gen_crane_capture.py``; or takes ``--capture``),
then runs, each as its own child process pinned to one core (``taskset -c 0``):

- ``cranewatch analyze FILE --format jsonl --out /dev/null``: the whole analysis;
- the same with ``--profile profiles/sts-07.toml``: detectors judged against the profile and
  the process checks on the signals of the PLC at STS-07's addresses (crane 7 of the capture);
- the capture reader + ``decode_batch`` alone (``--reader-only``);
- ``tshark -r FILE -Y mbtcp -T fields -e frame.number -e mbtcp.trans_id ...``: Modbus fields;
- a dpkt parse: Ethernet -> IP -> TCP -> MBAP fields for port 502 (``--dpkt-only``);

and prints packets/s, the ratios to tshark and dpkt, CPU and wall time and each child's peak
RSS (measured by a fresh wrapper process with ``resource.getrusage(RUSAGE_CHILDREN)``).
Packets/s are packets per CPU second (user + system) of the pinned child, so that other load
on a shared machine does not count against any of the four.

Example:
  .venv/bin/python benchmarks/bench_analyze.py                       # 1 M packets
  .venv/bin/python benchmarks/bench_analyze.py --packets 1000000 5000000 --workdir /tmp/bench
  .venv/bin/python benchmarks/bench_analyze.py --capture my.pcap --skip tshark
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROFILE = HERE.parent / "profiles" / "sts-07.toml"
TSHARK_FIELDS = (
    "frame.number", "mbtcp.trans_id", "mbtcp.unit_id", "modbus.func_code",
    "modbus.exception_code", "modbus.reference_num", "modbus.word_cnt",
)  # fmt: skip

# Runs one command and reports its wall time and peak RSS: a fresh process has no other
# children, so RUSAGE_CHILDREN's ru_maxrss is exactly the command's own peak (in KiB on Linux).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_kb": usage.ru_maxrss,
                  "rc": done.returncode, "err": done.stderr.decode()[-400:]}))
"""


@dataclass(frozen=True, slots=True)
class Timing:
    name: str
    packets: int
    wall: float
    cpu: float  # user + system seconds: what the rate is computed from (fair on a busy machine)
    rss_mb: float
    ok: bool
    note: str = ""

    @property
    def rate(self) -> float:
        return self.packets / self.cpu if self.cpu > 0 else 0.0


def measure(name: str, command: list[str], packets: int, pin: bool) -> Timing:
    if pin and shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    err = result["err"].strip()
    note = f"exit {result['rc']}: {err}" if result["rc"] != 0 else err.rpartition("; ")[2] if "in-process" in err else ""
    # cranewatch analyze exits 3 when an input is damaged but still reports; that is a result too
    ok = result["rc"] in (0, 1)
    return Timing(name, packets, result["wall"], result["cpu"], result["rss_kb"] / 1024, ok, note)


# --------------------------------------------------------------------------- child modes


def reader_only(path: str) -> int:
    """Read and decode every packet; the count goes to stderr so it is not timed as output."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from cranewatch.decode import decode_batch
    from cranewatch.sources.pcap import open_capture

    count = 0
    tcp = 0
    started = time.process_time()
    with open_capture(path) as reader:
        for batch in reader.batches():
            decoded = decode_batch(batch)
            count += len(batch)
            tcp += int((decoded.ip_proto == 6).sum())
    spent = time.process_time() - started
    # without interpreter start-up and imports: what the reader costs inside a longer analysis
    print(f"{count} packets, {tcp} TCP; in-process {count / spent:,.0f} packets/s", file=sys.stderr)
    return 0


def dpkt_only(path: str) -> int:
    """The dpkt way: parse each frame's layers as objects, then the MBAP header and function."""
    import dpkt

    mbap = struct.Struct("!HHHBB")
    requests = 0
    with open(path, "rb") as handle:
        for _ts, frame in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP) or 502 not in (tcp.sport, tcp.dport):
                continue
            data = tcp.data
            at = 0
            while at + 8 <= len(data):
                transaction, _protocol, length, _unit, function = mbap.unpack_from(data, at)
                if tcp.dport == 502 and function in (3, 4) and at + 12 <= len(data):
                    _address, _count = struct.unpack_from("!HH", data, at + 8)
                requests += transaction >= 0
                at += 6 + length
    print(f"{requests} Modbus PDUs", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- the run


def packets_in(path: Path) -> int:
    sys.path.insert(0, str(HERE.parent / "src"))
    from cranewatch.sources.pcap import open_capture

    with open_capture(path) as reader:
        for _ in reader.batches():
            pass
        return reader.packets_read


def has_analyze(cranewatch: str) -> bool:
    done = subprocess.run([cranewatch, "analyze", "--help"], capture_output=True, check=False)
    return done.returncode == 0


def bench_one(path: Path, skip: set[str], pin: bool) -> list[Timing]:
    packets = packets_in(path)
    python = sys.executable
    cranewatch = str(Path(python).with_name("cranewatch"))
    timings: list[Timing] = []
    if "analyze" not in skip and Path(cranewatch).exists() and has_analyze(cranewatch):
        command = [cranewatch, "analyze", str(path), "--format", "jsonl", "--out", "/dev/null"]
        timings.append(measure("cranewatch analyze", command, packets, pin))
        if "profile" not in skip:
            # With the reference crane's profile the process checks run too: the generator's
            # crane 7 sits at STS-07's addresses, so its PLC's registers become signals.
            command += ["--profile", str(PROFILE)]
            timings.append(measure("cranewatch analyze --profile", command, packets, pin))
    if "reader" not in skip:
        timings.append(measure("reader+decode_batch", [python, __file__, "--reader-only", str(path)], packets, pin))
    if "tshark" not in skip and shutil.which("tshark"):
        command = ["tshark", "-r", str(path), "-Y", "mbtcp", "-T", "fields"]
        for field in TSHARK_FIELDS:
            command += ["-e", field]
        timings.append(measure("tshark -Y mbtcp -T fields", command, packets, pin))
    if "dpkt" not in skip:
        timings.append(measure("dpkt Ethernet/IP/TCP/MBAP", [python, __file__, "--dpkt-only", str(path)], packets, pin))
    return timings


def report(path: Path, timings: list[Timing]) -> str:
    by_name = {t.name: t for t in timings}
    tshark = next((t for n, t in by_name.items() if n.startswith("tshark")), None)
    dpkt = next((t for n, t in by_name.items() if n.startswith("dpkt")), None)
    lines = [f"{path} ({timings[0].packets if timings else 0} packets, one core)"]
    lines.append(
        f"  {'what':30} {'CPU s':>8} {'wall s':>8} {'packets/s':>12} {'x tshark':>9} {'x dpkt':>8} {'peak RSS':>10}"
    )
    for t in timings:
        vs_tshark = f"{t.rate / tshark.rate:8.1f}x" if tshark and tshark.rate else "       -"
        vs_dpkt = f"{t.rate / dpkt.rate:7.1f}x" if dpkt and dpkt.rate else "      -"
        lines.append(
            f"  {t.name:30} {t.cpu:8.2f} {t.wall:8.2f} {t.rate:12,.0f} {vs_tshark} {vs_dpkt} {t.rss_mb:8.0f} MB"
            + (f"   ({t.note})" if t.ok and t.note else "" if t.ok else f"   FAILED {t.note}")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, nargs="+", default=[1_000_000], help="capture sizes to generate")
    parser.add_argument("--capture", type=Path, help="time this capture instead of generating one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where generated captures go")
    parser.add_argument("--keep", action="store_true", help="keep generated captures")
    parser.add_argument("--skip", nargs="*", default=[], choices=["analyze", "profile", "reader", "tshark", "dpkt"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin the children to core 0")
    parser.add_argument("--reader-only", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--dpkt-only", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader_only:
        return reader_only(args.reader_only)
    if args.dpkt_only:
        return dpkt_only(args.dpkt_only)

    sys.path.insert(0, str(HERE))
    from gen_crane_capture import write_capture

    jobs: list[tuple[Path, bool]] = []
    if args.capture:
        jobs.append((args.capture, False))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        for count in args.packets:
            path = args.workdir / f"crane-terminal-{count}-seed{args.seed}.pcap"
            if not path.exists():
                started = time.perf_counter()
                write_capture(path, count, args.seed, cranes=8)
                print(f"generated {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            jobs.append((path, not args.keep))
    failed = False
    for path, remove in jobs:
        timings = bench_one(path, set(args.skip), pin=not args.no_pin)
        print(report(path, timings), flush=True)
        failed |= not all(t.ok for t in timings)
        if remove:
            path.unlink()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
