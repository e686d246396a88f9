#!/usr/bin/env python3
"""Time the console's findings query (``Store.query_findings``) on a store of 20,000 findings.

It fills a store (an SQLite file, or a PostgreSQL database given by URL) with one crane's
findings from a fixed seed: 40 rules over 8 categories, every severity, 200 hosts, times over
30 days, a tenth disposed of (false positives, acknowledged, accepted risks some of which have
expired), a fifth from process checks and a tenth from monitoring. Then it times page queries
(each run ``--repeat`` times; the median and the worst are printed): the first page in every
sort, each filter alone, filters together, text and host search, and a deep page.

Example:
  .venv/bin/python benchmarks/bench_findings_query.py --db /tmp/findings.db
  .venv/bin/python benchmarks/bench_findings_query.py --db postgresql://cw@/cw?host=/tmp/pg --findings 20000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Crane, open_store
from cranewatch.store.console import FindingQuery

CRANE = "STS-07"
T0 = 1_780_000_000.0
CATEGORIES = ("remote-access", "c2", "egress", "recon", "new-asset", "lateral-movement", "false-reading",
              "safety-override")


def make_findings(n: int, seed: int) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(traffic, process, monitor) findings: n in all, fixed by ``seed``."""
    rng = random.Random(seed)
    traffic: list[Finding] = []
    process: list[Finding] = []
    monitor: list[Finding] = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        is_process = category in ("false-reading", "safety-override") and i % 2 == 0
        rule = f"process-rule-{i % 5}" if is_process else f"{category}-{i % 5}"
        src = f"10.20.7.{rng.randrange(1, 200)}"
        dst = f"10.20.{rng.randrange(0, 8)}.{rng.randrange(1, 200)}:{rng.choice((22, 502, 443, 80))}"
        first = T0 + rng.uniform(0, 30 * 86400)
        f = Finding(id=finding_id(rule, CRANE, i), rule=rule, category=category,
                    severity=Severity(rng.randrange(0, 5)), title=f"{category} {src} -> {dst} #{i}",
                    first_seen=first, last_seen=first + rng.uniform(0, 3600), count=rng.randrange(1, 500),
                    crane=CRANE, src=src, dst=dst, technique=("T0886",),
                    evidence=(Evidence(source="day.pcap", frames=(i + 1,), values={"peer": src}),),
                    remedy="look")
        (process if is_process else monitor if i % 10 == 3 else traffic).append(f)
    return traffic, process, monitor


def fill(db: str, n: int, seed: int) -> None:
    traffic, process, monitor = make_findings(n, seed)
    with open_store(db) as store:
        if store.crane(CRANE) is None:
            store.add_crane(Crane(CRANE), who="bench", why="bench")
        store.record_run(CRANE, "analyze", [], [*traffic, *process])
        store.record_run(CRANE, "analyze", [], monitor, component="monitor:eth1")
        rng = random.Random(seed + 1)
        every = [*traffic, *process, *monitor]
        for f in rng.sample(every, len(every) // 10):
            state = rng.choice(("acknowledged", "false-positive", "accepted-risk"))
            until = T0 + rng.choice((-86400.0, 86400.0 * 400)) if state == "accepted-risk" else None
            store.record_disposition(CRANE, f.id, state, who="bench", why="bench", until=until)


def analyze(db: str) -> None:
    """Give the query planner its statistics, as PostgreSQL's autovacuum would soon after a load
    (SQLite has none until ANALYZE; the console index is chosen either way)."""
    if db.startswith("postgres"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("ANALYZE findings")
    else:
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("ANALYZE")


QUERIES: dict[str, FindingQuery] = {
    "first page, newest first": FindingQuery(CRANE),
    "first page, worst first": FindingQuery(CRANE, sort="severity"),
    "first page, by rule": FindingQuery(CRANE, sort="rule"),
    "severity high+critical": FindingQuery(CRANE, severity=("high", "critical")),
    "category remote-access": FindingQuery(CRANE, category=("remote-access",)),
    "state open": FindingQuery(CRANE, state=("open",)),
    "source process": FindingQuery(CRANE, source=("process",)),
    "host 10.20.7.42": FindingQuery(CRANE, host="10.20.7.42"),
    "text 'lateral'": FindingQuery(CRANE, text="lateral"),
    "critical+open+traffic, worst first": FindingQuery(CRANE, severity=("critical",), state=("open",),
                                                       source=("traffic",), sort="severity"),
    "page 200 (offset 9950)": FindingQuery(CRANE, offset=9950),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="/tmp/cranewatch-bench-findings.db", help="SQLite file or postgresql:// URL")
    parser.add_argument("--findings", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    if not args.db.startswith("postgres") and Path(args.db).exists():
        Path(args.db).unlink()
    started = time.perf_counter()
    fill(args.db, args.findings, args.seed)
    print(f"store of {args.findings} findings filled in {time.perf_counter() - started:.1f} s")
    analyze(args.db)
    with open_store(args.db, readonly=True) as store:
        assert store.count_findings(CRANE) == args.findings
        print(f"{'query':40} {'total':>6} {'median ms':>10} {'worst ms':>9} {'median cpu ms':>14}")
        for name, query in QUERIES.items():
            query = FindingQuery(**{**{k: getattr(query, k) for k in query.__slots__}, "limit": args.limit,
                                    "now": T0 + 40 * 86400})
            times, cpu = [], []
            for _ in range(args.repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                page = store.query_findings(query)
                times.append((time.perf_counter() - start) * 1000)
                cpu.append((time.process_time() - start_cpu) * 1000)  # this process only (SQLite runs in it)
            print(f"{name:40} {page.total:>6} {statistics.median(times):>10.1f} {max(times):>9.1f}"
                  f" {statistics.median(cpu):>14.1f}")


if __name__ == "__main__":
    main()
