#!/usr/bin/env python3
"""Where does the memory of ``cranewatch analyze`` go? Snapshots during one run.

Runs the pipeline in-process over one capture and, after the batches that end at each of
``--at`` packets, records: the process RSS, tracemalloc's traced total (Python objects and
NumPy buffers), the live objects per type (``gc.get_objects``, like objgraph's
``show_growth``), and the sizes of the analysis' own tables (flows, held TCP segments, the
Modbus book's series pieces and pending requests, hosts). Then prints, for the last two
snapshots, the allocation sites that grew most (tracemalloc ``compare_to``, by file:line) and
the types that grew, each per packet of the interval.

Example:
  PYTHONPATH=src python benchmarks/mem_diag.py /tmp/c-1m.pcap --at 500000 1000000
  PYTHONPATH=src python benchmarks/mem_diag.py /tmp/c-1m.pcap --no-tracemalloc   # RSS and tables only, full speed
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tables(analysis: Any) -> dict[str, int]:
    """Sizes of what the analysis holds between batches."""
    out: dict[str, int] = {}
    flows = getattr(analysis.flows, "flows", None) or getattr(analysis.flows, "_flows", None) or {}
    live = list(flows.values()) if isinstance(flows, dict) else []
    out["live flows"] = len(live)
    held = held_bytes = pending = 0
    for flow in live:
        for side in (flow.to_server, flow.to_client):
            stream = side.stream
            if stream is not None:
                held += len(stream.held)
                held_bytes += stream.held_bytes
        decoder = flow.decoder
        pending += len(getattr(decoder, "pending", ()) or ())
    out["held TCP segments"] = held
    out["held TCP bytes"] = held_bytes
    out["pending Modbus requests"] = pending
    book = next((run.book for run in analysis.runs if hasattr(run, "book")), None)
    series = getattr(book, "series", {})
    out["Modbus series summaries"] = len(getattr(book, "heads", {}))
    out["Modbus series keys"] = len(series)
    python_rows = loose = packed = 0
    for parts in series.values():
        python_rows += len(getattr(parts, "row_ts", ()))
        loose += getattr(parts, "loose", 0)
        packed += sum(block.count for block in getattr(parts, "packed", ()))
    out["series answers as Python rows"] = python_rows
    out["series answers loose arrays"] = loose
    out["series answers packed"] = packed
    out["hosts"] = len(analysis.hosts)
    out["tally clients+servers"] = sum(len(t.clients) + len(t.servers) for t in analysis.protocol_tally.values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", type=Path)
    parser.add_argument("--at", type=int, nargs="+", default=[500_000, 1_000_000])
    parser.add_argument("--profile", type=Path, help="a crane profile: the process sink collects too")
    parser.add_argument("--detectors", action="store_true",
                        help="the network detectors too (and the process checks with --profile), as analyze runs them")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth grouped by (1: file:line)")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--trim", action="store_true",
                        help="also call glibc malloc_trim(0) at each mark and report the RSS after it "
                             "(what is free in the heap but not given back to the system)")
    args = parser.parse_args(argv)

    from cranewatch.pipeline import Analysis

    sinks: list[Any] = []
    if args.detectors:
        from cranewatch.profile import load_profile
        from cranewatch.sinks import build_sinks

        # what ``analyze`` runs; the profile loaded at the edge, as the CLI loads it
        sinks = build_sinks(load_profile(args.profile) if args.profile else None)
    elif args.profile:
        from cranewatch.process.engine import build_sink
        from cranewatch.profile import load_profile

        sinks.append(build_sink(load_profile(args.profile)))
    analysis = Analysis(sinks)
    if not args.no_tracemalloc:
        tracemalloc.start(args.frames)
    marks = sorted(args.at)
    snaps: list[tuple[int, float, int, Counter[str], dict[str, int], str]] = []
    original = analysis.process

    def process(batch: Any) -> None:
        original(batch)
        while marks and analysis.packets >= marks[0]:
            marks.pop(0)
            gc.collect()
            # counted before this mark's snapshot exists; earlier snapshots live on disk only
            types = Counter(type(o).__name__ for o in gc.get_objects())
            rss = rss_mb()
            trimmed = ""
            if args.trim:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                trimmed = f" ({rss_mb():.1f} MB after malloc_trim)"
            snap_file = ""
            traced = 0
            if tracemalloc.is_tracing():
                traced = tracemalloc.get_traced_memory()[0]
                snap_file = str(Path(tempfile.gettempdir()) / f"mem_diag-{os.getpid()}-{len(snaps)}.snap")
                tracemalloc.take_snapshot().dump(snap_file)
            snaps.append((analysis.packets, rss, traced, types, tables(analysis), snap_file))
            print(f"at {analysis.packets:>9,} packets: RSS {rss:7.1f} MB{trimmed}, traced {traced / 1e6:7.1f} MB, "
                  f"{tables(analysis)}", flush=True)

    analysis.process = process
    started = time.process_time()
    result = analysis.run([str(args.capture)])
    print(f"end: {result.packets:,} packets, RSS {rss_mb():.1f} MB, {time.process_time() - started:.1f} CPU s, "
          f"series {result.series}, flows {result.flows}")
    if len(snaps) < 2:
        return 0
    (p0, r0, t0, c0, _tab0, f0), (p1, r1, t1, c1, _tab1, f1) = snaps[-2], snaps[-1]
    s0 = tracemalloc.Snapshot.load(f0) if f0 else None
    s1 = tracemalloc.Snapshot.load(f1) if f1 else None
    for _packets, _rss, _traced, _types, _tables, name in snaps:
        if name:
            Path(name).unlink()
    span = p1 - p0
    print(f"\nbetween {p0:,} and {p1:,} packets: RSS {r1 - r0:+.1f} MB ({(r1 - r0) * 1e6 / span:+.0f} B/packet), "
          f"traced {(t1 - t0) / 1e6:+.1f} MB ({(t1 - t0) / span:+.0f} B/packet)")
    if s0 is not None and s1 is not None:
        print(f"\ntop allocation sites by growth ({args.frames} frame(s)):")
        for stat in s1.compare_to(s0, "traceback" if args.frames > 1 else "lineno")[: args.top]:
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback)
            print(f"  {stat.size_diff / 1e6:+8.2f} MB {stat.size_diff / span:+7.1f} B/pkt {stat.count_diff:+9d} blocks  {where}")
    print("\nobject types by growth:")
    growth = sorted(((c1[k] - c0.get(k, 0), k) for k in c1), reverse=True)[: args.top]
    for diff, name in growth:
        print(f"  {diff:+9d} {name} ({diff / span:+.3f} per packet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
