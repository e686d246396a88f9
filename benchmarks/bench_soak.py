#!/usr/bin/env python3
"""Soak ``cranewatch monitor``: replay captures through it at full speed, record RSS over time.

``monitor`` reads batches from tcpdump (``sources.live.LiveCapture``); everything after that
is ``monitor.Monitor.run`` over an iterator of ``PacketBatch``. This script builds the same
``Monitor`` the command builds (``commands.monitor``: the detector sinks and the rolling
process checks of ``--profile``, the same settings) and gives it, instead of tcpdump's
batches, the batches of the captures read from disk in a loop, each capture moved on in time to
start ``--pause`` seconds after the last one ended (capture time keeps going forward, as on a
live wire), until the child
has spent ``--cpu`` CPU seconds. The child writes one CSV row per ``--every`` CPU seconds
(CPU s, wall s, packets, RSS MB, findings); the parent draws RSS over packets as SVG and fits
the slope over the second half of the run (after start-up and the first windows).

Example:
  PYTHONPATH=src python benchmarks/bench_soak.py --cpu 600 --captures /tmp/shapes/f-1m.pcap \
      --profile profiles/sts-07.toml --csv benchmarks/out/soak.csv --svg benchmarks/soak.svg
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cranewatch.sources.pcap import PacketBatch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from cranewatch.cli import build_parser
    from cranewatch.commands.monitor import judging_of, process_checks
    from cranewatch.monitor import JsonLinesOutput, Monitor, MonitorSettings
    from cranewatch.sinks import detector_sinks
    from cranewatch.sources.pcap import open_capture

    argv = ["monitor", "soak0"]
    if args.profile:
        argv += ["--profile", str(args.profile)]
    options = build_parser().parse_args(argv)
    judging = judging_of(options)
    sinks = [*detector_sinks(judging.profile, judging.baseline, options.crane), *process_checks(options)]
    settings = MonitorSettings(window=options.window, update_every=options.update_every, seconds=None)
    monitor = Monitor(sinks, [JsonLinesOutput(Path(os.devnull))], settings)
    started_wall = time.monotonic()
    rows = open(args.csv, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed at the end
    out = csv.writer(rows)
    out.writerow(["cpu_s", "wall_s", "packets", "rss_mb", "findings"])
    packets = 0
    next_row = 0.0

    def batches() -> Iterator[PacketBatch]:
        nonlocal packets, next_row
        shift = 0.0  # where the next capture starts (capture time); 0: as it is
        while True:
            for path in args.captures:
                # Every capture starts --pause seconds after the last one ended, as if the
                # wire had been quiet: captures made by one generator share hosts, ports and
                # start times, and one that came back at once would continue the last one's
                # connections with sequence numbers far behind.
                first = None
                last = shift
                with open_capture(str(path)) as reader:
                    for batch in reader.batches(args.batch):
                        if not len(batch):
                            continue
                        if first is None:
                            first = float(batch.ts[0])
                        delta = shift + args.pause - first if shift else 0.0
                        moved = replace(batch, ts=batch.ts + delta,
                                        ts_ns=batch.ts_ns + int(delta * 1e9)) if delta else batch
                        last = max(last, float(moved.ts[-1]))
                        packets += len(batch)
                        cpu = time.process_time()
                        if cpu >= next_row:
                            next_row = cpu + args.every
                            # analysed, not read: the monitor queues up to 64 batches read ahead
                            out.writerow([f"{cpu:.2f}", f"{time.monotonic() - started_wall:.2f}",
                                          monitor.analysis.packets, f"{rss_mb():.1f}", len(monitor.findings)])
                            rows.flush()
                        if cpu >= args.cpu:
                            return
                        yield moved
                shift = last
                # One ARP frame late in the pause: the flow table sweeps on a batch, so the
                # last capture's flows (idle by then for longer than the 300 s idle timeout)
                # end before the next capture's first packets could continue them.
                yield tick(shift + args.pause * 0.9)

    stop = threading.Event()
    summary = monitor.run(batches(), stop, stop.set)
    out.writerow([f"{time.process_time():.2f}", f"{time.monotonic() - started_wall:.2f}", monitor.analysis.packets,
                  f"{rss_mb():.1f}", len(summary.findings)])
    rows.close()
    print(f"{summary.packets} packets, {len(summary.findings)} findings, "
          f"process runs {getattr(summary, 'process_runs', 0)}", file=sys.stderr)
    return 0


def tick(ts: float) -> PacketBatch:
    """A batch of one broadcast ARP request at ``ts``."""
    import numpy as np

    from cranewatch.sources.pcap import PacketBatch

    frame = (b"\xff" * 6 + b"\x02\x00\x0a\x14\x00\x63" + b"\x08\x06"
             + bytes.fromhex("0001080006040001") + b"\x02\x00\x0a\x14\x00\x63" + bytes([10, 20, 0, 99])
             + bytes(6) + bytes([10, 20, 0, 1]) + bytes(18))
    return PacketBatch(source="soak-pause", buf=frame, frame=np.array([1], dtype=np.int64),
                       ts=np.array([ts]), ts_ns=np.array([int(ts * 1e9)], dtype=np.int64),
                       linktype=np.array([1], dtype=np.uint16), interface=np.zeros(1, dtype=np.uint16),
                       offset=np.zeros(1, dtype=np.int64), caplen=np.array([len(frame)], dtype=np.int32),
                       origlen=np.array([len(frame)], dtype=np.int32))


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def svg(rows: list[dict[str, float]], slope_line: tuple[float, float, float], title: str) -> str:
    width, height, left, bottom, top, right = 720, 360, 70, 50, 30, 20
    xs = [r["packets"] / 1e6 for r in rows]
    ys = [r["rss_mb"] for r in rows]
    x_max = max(xs) or 1.0
    y_max = max(ys) * 1.15 or 1.0

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def py(y: float) -> float:
        return height - bottom - (height - bottom - top) * y / y_max

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="18">{title}</text>',
             f'<line x1="{left}" y1="{py(0)}" x2="{width - right}" y2="{py(0)}" stroke="#000"/>',
             f'<line x1="{left}" y1="{py(0)}" x2="{left}" y2="{top}" stroke="#000"/>']
    for k in range(6):
        y = y_max * k / 5
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
        x = x_max * k / 5
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.1f}</text>')
    parts.append(f'<text x="{(left + width) / 2}" y="{height - 12}" text-anchor="middle">'
                 'packets replayed (millions)</text>')
    parts.append(f'<text x="16" y="{(top + height - bottom) / 2}" transform="rotate(-90 16 '
                 f'{(top + height - bottom) / 2})" text-anchor="middle">RSS (MB)</text>')
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>')
    x0, slope, intercept = slope_line
    parts.append(f'<line x1="{px(x0):.1f}" y1="{py(intercept + slope * x0):.1f}" x2="{px(x_max):.1f}" '
                 f'y2="{py(intercept + slope * x_max):.1f}" stroke="#d62728" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captures", type=Path, nargs="+", required=True)
    parser.add_argument("--cpu", type=float, default=600.0, help="CPU seconds of the monitor (default 600)")
    parser.add_argument("--every", type=float, default=5.0, help="CPU seconds between CSV rows")
    parser.add_argument("--profile", type=Path, help="crane profile: the rolling process checks run too")
    parser.add_argument("--csv", type=Path, default=Path("soak.csv"))
    parser.add_argument("--svg", type=Path)
    parser.add_argument("--pause", type=float, default=600.0,
                        help="capture seconds between two passes (default 600: flows expire)")
    parser.add_argument("--batch", type=int, default=8192,
                        help="packets per batch (default 8192: tcpdump hands the monitor what has "
                             "arrived, and the monitor queues up to 64 batches read ahead)")
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--replot", action="store_true", help="only fit and draw an existing --csv")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", "--cpu", str(args.cpu), "--every", str(args.every),
               "--pause", str(args.pause), "--batch", str(args.batch),
               "--csv", str(args.csv), "--captures", *map(str, args.captures)]
    if args.profile:
        command += ["--profile", str(args.profile)]
    if args.nice:
        command = ["nice", "-n", str(args.nice), *command]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cpu, peak = 0.0, 0.0
    if not args.replot:
        child_process = subprocess.Popen(command, env=env)
        _pid, status, usage = os.wait4(child_process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"soak child failed: exit {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
            return 1
        cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    with open(args.csv, encoding="utf-8") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    during = rows[:-1] if len(rows) > 3 else rows  # the last row is taken after the session ended
    half = during[len(during) // 2:]
    slope, intercept = fit([r["packets"] / 1e6 for r in half], [r["rss_mb"] for r in half])
    cpu_slope, _ = fit([r["cpu_s"] for r in half], [r["rss_mb"] for r in half])
    packets = rows[-1]["packets"]
    cpu = cpu or rows[-1]["cpu_s"]
    print(f"{packets / 1e6:.1f} M packets in {cpu:.0f} CPU s, peak RSS "
          f"{peak or max(r['rss_mb'] for r in rows):.0f} MB; RSS {rows[0]['rss_mb']:.0f} MB at the first row, "
          f"{rows[-1]['rss_mb']:.0f} MB at the last; second-half slope {slope:+.2f} MiB per million packets "
          f"(~{slope * 1.048576:+.2f} B/packet), {cpu_slope * 3600:+.0f} MiB per CPU hour")
    if args.svg:
        title = (f"cranewatch monitor soak: {packets / 1e6:.1f} M packets, "
                 f"{cpu:.0f} CPU s, slope {slope:+.2f} MiB per M packets")
        args.svg.write_text(svg(rows, (half[0]["packets"] / 1e6, slope, intercept), title), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
