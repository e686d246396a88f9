"""Zeek at port scale: analyse two sensors' rotated log trees; time and peak memory by size.

Builds, with ``zeek_tree.py``, sensor A (TSV) and sensor B (JSON with ``_node_name``) trees of
``--hours`` hourly archives (``logs/YYYY-MM-DD/name.HH:MM:SS-HH:MM:SS.log.gz``, the last hour
in ``logs/current``), each hour the shared logs' real records ``--repeat`` times, for each
scale given; then measures, each in its own process (peak RSS from ``wait4``), in one run:

- ``gzip -dc | grep -vc '^#'``: inflating and counting the record lines, the floor;
- a plain Python reader: ``gzip.open``, every line split at tabs (TSV) or ``json.loads`` (JSON);
- ``ZeekStream`` alone: cranewatch's reader (walk, merge, reorder window, map to events);
- ``cranewatch analyze A/logs B/logs --format jsonl`` (read, merge, map, detect, report).

    python benchmarks/bench_zeek_tree.py --hours 168 --scales 1 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zeek_tree import write_tree

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "zeek-logs"

PLAIN_READER = r"""
import gzip, json, sys
from pathlib import Path
records = 0
for root in sys.argv[1:]:
    for path in sorted(Path(root).rglob("*.log*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("#"):
                    continue
                if line.startswith("{"):
                    json.loads(line)
                else:
                    line.rstrip("\n").split("\t")
                records += 1
print(records)
"""

# cranewatch's reader alone: walk, merge, reorder window, map to events (no detectors)
STREAM_ONLY = r"""
import sys
from pathlib import Path
from cranewatch.sources.zeek import ZeekStream
stream = ZeekStream([Path(p) for p in sys.argv[1:]])
events = sum(len(batch) for batch in stream.batches())
print(events, stream.late)
"""


def measure(argv: list[str], env: dict[str, str] | None = None, shell: bool = False) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one command in its own process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv if not shell else argv[0], stdout=out, stderr=subprocess.DEVNULL,
                                   env=env, shell=shell)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    return seconds, usage.ru_maxrss / 1024, text


def run_scale(workdir: Path, hours: int, repeat: int) -> list[tuple[str, int, float, float]]:
    tree = workdir / f"x{repeat}"
    counts_a = write_tree(tree / "sensorA", SHARED, hours, repeat)
    counts_b = write_tree(tree / "sensorB", SHARED, hours, repeat, as_json=True, node="worker-2")
    records = sum(counts_a.values()) + sum(counts_b.values())
    a, b = tree / "sensorA" / "logs", tree / "sensorB" / "logs"
    rows = []
    seconds, rss, out = measure([f"find '{a}' '{b}' -name '*.log*' -print0 | xargs -0 gzip -dcf | grep -vc '^#'"],
                                shell=True)
    assert int(out.strip()) == records, (out, records)
    rows.append(("gzip -dc | grep -vc", records, seconds, rss))
    seconds, rss, out = measure([sys.executable, "-c", PLAIN_READER, str(a), str(b)])
    assert int(out.strip()) == records, (out, records)
    rows.append(("plain Python reader", records, seconds, rss))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    seconds, rss, out = measure([sys.executable, "-c", STREAM_ONLY, str(a), str(b)], env=env)
    events, late = (int(x) for x in out.split())
    rows.append((f"cranewatch ZeekStream alone ({late} late)", records, seconds, rss))
    seconds, rss, out = measure([sys.executable, "-m", "cranewatch", "analyze", str(a), str(b),
                                 "--format", "jsonl"], env=env)
    findings = sum(1 for line in out.splitlines() if line.startswith('{"type":"finding"'))
    events = sum(int(part.split(",")[0]) for part in out.split('"events":')[1:3])
    rows.append((f"cranewatch analyze ({findings} findings, {events} events)", records, seconds, rss))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=168)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        print(f"{args.hours} hours x 2 sensors; records = log lines that are not headers")
        print(f"{'scale':>5}  {'reader':<52} {'records':>10} {'seconds':>8} {'rec/s':>9} {'peak MB':>8}")
        for repeat in args.scales:
            for name, records, seconds, rss in run_scale(Path(work), args.hours, repeat):
                print(f"{repeat:>4}x  {name:<52} {records:>10,} {seconds:>8.1f} {records / seconds:>9,.0f} {rss:>8.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
