#!/usr/bin/env python3
"""Time the process checks on a day of one crane at 10 Hz (docs/process.md quotes the result).

The day comes from the lab's physics model (25 signals: 12 sensors, 7 status bits, 4 limits,
2 coils; 864 000 samples each), with a false load, a frozen anemometer and a replay injected so
that the checks have findings to build evidence and plots for. The baseline is learned from a
separate clean hour. Only ``run_checks`` is timed (state machine, every check, evidence, SVG).

Example: .venv/bin/python benchmarks/bench_process.py --hours 24 --cache /tmp/day.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cranewatch.lab.faults import Tamper
from cranewatch.lab.physics import ProcessImage
from cranewatch.process.engine import learn_baseline, run_checks
from cranewatch.process.simulate import Polls, run_polls

T0 = 1_700_000_000.0


def day(hours: float, cache: Path | None) -> Polls:
    if cache is not None and cache.exists():
        data = np.load(cache)
        return Polls(data["t"], {k: data[k] for k in ("IR", "DI", "HR", "CO")})
    faults = [Tamper("false-load", T0 + 3600 * h, T0 + 3600 * h + 120) for h in (2, 9)]
    freeze = Tamper("wind-freeze", T0 + 3600 * 5, T0 + 3600 * 5 + 300)
    replay = Tamper("replay", T0 + 3600 * 7, T0 + 3600 * 7 + 60)

    def inject(now: float, image: ProcessImage) -> ProcessImage:
        for tamper in (*faults, freeze, replay):
            image = tamper.apply(image, now)
        return image

    polls = run_polls(hours * 3600, seed=2026, start=T0, poll_cycles=1, hook=inject)
    if cache is not None:
        np.savez(cache, t=polls.t, **polls.tables)
    return polls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--cache", type=Path, help="keep the simulated day here (.npz)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--learned", action="store_true",
                        help="also fit and run the learned mode (relations + CUSUM)")
    args = parser.parse_args()
    started = time.perf_counter()
    polls = day(args.hours, args.cache)
    frame = polls.frame()
    print(f"simulated {len(frame.t):,} instants x {len(frame.columns)} signals "
          f"in {time.perf_counter() - started:.1f} s")
    clean_hour = run_polls(3600, seed=99, start=T0 - 10_000, poll_cycles=1).frame()
    baseline = learn_baseline(clean_hour, learned_mode=args.learned)
    best = best_cpu = float("inf")
    findings = []
    for _ in range(args.repeat):
        started, cpu = time.perf_counter(), time.process_time()
        findings = run_checks(frame, baseline=baseline)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    # CPU time is the honest single-core figure on a shared machine (wall time waits for
    # other processes); NumPy runs single-threaded here.
    print(f"run_checks: {best:.2f} s wall, {best_cpu:.2f} s CPU, best of {args.repeat} "
          f"({len(frame.t) * len(frame.columns) / best_cpu / 1e6:.1f} M samples/s of CPU), "
          f"{len(findings)} findings")
    for f in findings:
        print(f"  {f.rule:28s} {f.evidence[0].values['signal']:18s} count {f.count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
