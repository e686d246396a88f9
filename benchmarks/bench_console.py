#!/usr/bin/env python3
"""Load the operations console as a port's security team would: 50 users at once, 5,000
requests, over a store of 10,000 findings, on loopback; print latency percentiles and errors.

It fills a store (fixed seed) with two cranes: STS-07 with 10,000 findings from a quarantine
capture, an image scan with an SBOM and a monitor checkpoint, their incidents, and STS-08 with a
few; 50 console users (40 viewers or analysts, 10 officers, each with the real scrypt cost).
``cranewatch serve`` runs as its own process; each simulated user (a thread with its own HTTP
connection) logs in once (timed apart: scrypt costs 0.3 s by design) and then sends its share of
the requests, a mix of what a day at the console looks like: the quay, crane pages with filters,
searches and deep pages, finding pages, the findings API (a 50-row page), incidents, images,
the monitor page, and triage (acknowledge/note) by the analysts and officers. Between two
requests a user reads the page for ``--think`` seconds on average (uniform 0..2x; 0 sends back
to back, which measures the server saturated: one Python process, one core for pages).

The target: every page under 300 ms at the 99th percentile, no errors.

Example:
  PYTHONPATH=src .venv/bin/python benchmarks/bench_console.py
  PYTHONPATH=src .venv/bin/python benchmarks/bench_console.py --users 50 --requests 5000 --findings 10000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from cranewatch.fleet import import_fleet, transition
from cranewatch.incidents import group_incidents
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import open_store
from cranewatch.web import auth

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench password 1"
CATEGORIES = ("remote-access", "c2", "egress", "recon", "new-asset", "lateral-movement", "plc-control",
              "data-leak")
T0 = 1_796_000_000.0


def make_findings(n: int, rng: random.Random) -> list[Finding]:
    out = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        rule = f"{category}.rule-{i % 6}"
        src = f"10.20.7.{rng.randrange(1, 200)}"
        dst = f"10.20.{rng.randrange(0, 8)}.{rng.randrange(1, 200)}:{rng.choice((22, 502, 443, 80, 1883))}"
        first = T0 + rng.uniform(0, 30 * 86400)
        out.append(Finding(
            id=finding_id(rule, "STS-07", i), rule=rule, category=category, severity=Severity(rng.randrange(0, 5)),
            title=f"{category} from {src} to {dst} #{i}", first_seen=first, last_seen=first + rng.uniform(0, 3600),
            count=rng.randrange(1, 500), crane="STS-07", src=src, dst=dst, technique=("T0886", "T0846"),
            evidence=(Evidence(source="quarantine.pcap", frames=tuple(sorted(rng.sample(range(1, 10**6), 3))),
                               values={"bytes": rng.randrange(100, 10**6), "service": dst.split(":")[1]}),),
            remedy="find out why"))
    return out


def build(db: Path, findings: int, users: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    every = make_findings(findings, rng)
    capture, image, watch = every[: findings - 200], every[findings - 200: findings - 50], every[findings - 50:]
    sbom = {"components": [{"name": f"pkg{i}", "version": "1.0", "purl": f"pkg:deb/debian/pkg{i}@1.0"}
                           for i in range(300)]}
    names: dict[str, list[str]] = {"analyst": [], "viewer": [], "officer": []}
    hashed = auth.hash_password(PASSWORD)  # one real hash (same salt for all: a benchmark store)
    with open_store(db) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml", by="bench")
        transition(store, "STS-07", "quarantined", reason="bench")
        transition(store, "STS-07", "under-analysis", reason="bench")
        store.record_run("STS-07", "analyze", [], capture, who="bench", incidents=group_incidents(capture))
        store.record_run("STS-07", "scan-image", [], image, component="CMS", artifacts={"sbom": json.dumps(sbom)})
        store.record_run("STS-07", "analyze", [], watch, component="monitor:eth1")
        store.record_run("STS-08", "analyze", [], [], who="bench")
        for i in range(users):
            role = "officer" if i % 5 == 0 else ("analyst" if i % 2 else "viewer")
            name = f"user{i:02d}"
            store.add_user(name, role, hashed, by="bench")
            names[role].append(name)
    return {"ids": [f.id for f in rng.sample(every, 500)], **names}


def requests_for(role: str, ids: list[str], rng: random.Random, n: int) -> list[tuple[str, str, str, dict | None]]:
    """(kind, method, path, json body) of one user's requests."""
    pages = [
        ("quay", "GET", "/", None),
        ("crane", "GET", "/crane/STS-07", None),
        ("crane-filtered", "GET", "/crane/STS-07?severity=high&severity=critical&sort=time", None),
        ("crane-search", "GET", "/crane/STS-07?q=lateral-movement+from+10.20.7.1", None),
        ("crane-deep-page", "GET", "/crane/STS-07?offset=9000&limit=50&sort=rule", None),
        ("api-findings", "GET", "/api/findings?crane=STS-07&limit=50&state=open", None),
        ("incidents", "GET", "/incidents?crane=STS-07", None),
        ("images", "GET", "/images?crane=STS-07", None),
        ("monitor", "GET", "/monitor", None),
        ("api-session", "GET", "/api/session", None),
    ]
    weights = [10, 10, 8, 6, 4, 10, 4, 3, 5, 2]
    out = []
    for _ in range(n):
        if role != "viewer" and rng.random() < 0.06:
            fid = rng.choice(ids)
            body = {"state": "acknowledged", "note": "bench"} if rng.random() < 0.5 else {"note": "bench note"}
            out.append(("triage", "POST", f"/api/findings/{fid}/triage", body))
        elif rng.random() < 0.2:
            out.append(("finding", "GET", f"/crane/STS-07/finding/{rng.choice(ids)}", None))
        else:
            out.append(rng.choices(pages, weights)[0])
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--findings", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean seconds a user reads a page before the next request (uniform 0..2x; "
                        "0: every user sends back to back, the server saturated)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    db = work / "cw.db"
    t = time.perf_counter()
    facts = build(db, args.findings, args.users, args.seed)
    print(f"store: {args.findings} findings, {args.users} users, built in {time.perf_counter() - t:.1f} s", flush=True)

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = (work / "serve.log").open("w")  # a pipe nobody reads would stop the server once full
    server = subprocess.Popen([sys.executable, "-m", "cranewatch", "serve", "--port", "0", "--db", str(db)],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert server.stdout is not None
    url = server.stdout.readline().split()[3].rstrip("/")
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    logins: list[float] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(args.users + 1)
    per_user = args.requests // args.users
    users = [(name, role) for role in ("officer", "analyst", "viewer") for name in facts[role]]

    def user(name: str, role: str, seed: int) -> None:
        rng = random.Random(seed)
        plan = requests_for(role, facts["ids"], rng, per_user)
        with httpx.Client(base_url=url, timeout=60) as c:
            token = ""
            try:
                t0 = time.perf_counter()
                r = c.post("/login", data={"username": name, "password": PASSWORD}, timeout=600)
                with lock:
                    logins.append(time.perf_counter() - t0)
                token = c.get("/api/session").json()["csrf"] if r.status_code == 303 else ""
            finally:
                start_gate.wait()
            for kind, method, path, body in plan:
                if args.think > 0:
                    time.sleep(rng.uniform(0, 2 * args.think))
                t0 = time.perf_counter()
                try:
                    r = c.request(method, path, json=body, headers={"X-CSRF-Token": token} if body else None)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - t0
                with lock:
                    latencies[kind].append(took)
                    if not ok:
                        errors[kind] += 1

    threads = [threading.Thread(target=user, args=(n, r, i)) for i, (n, r) in enumerate(users)]
    for th in threads:
        th.start()
    start_gate.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    server.terminate()
    server.wait(timeout=20)
    log.close()
    said = (work / "serve.log").read_text().splitlines()
    if said:
        print(f"the server said ({len(said)} lines), the last:", *said[-5:], sep="\n  ")

    every = [x for v in latencies.values() for x in v]
    pages = [x for k, v in latencies.items() if k not in ("triage", "api-session") for x in v]
    print(f"logins: {len(logins)}, p50 {statistics.median(logins) * 1000:.0f} ms, "
          f"max {max(logins) * 1000:.0f} ms (scrypt N=2^17, at most {auth.HASHES_AT_ONCE} at once)")
    print(f"{len(every)} requests by {args.users} users (think {args.think} s) in {wall:.1f} s "
          f"({len(every) / wall:.0f}/s), "
          f"errors {sum(errors.values())}")
    print(f"{'kind':<16} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} errors")
    rows = {}
    for kind in sorted(latencies):
        v = latencies[kind]
        rows[kind] = {"n": len(v), "p50": percentile(v, 50) * 1000, "p95": percentile(v, 95) * 1000,
                      "p99": percentile(v, 99) * 1000, "max": max(v) * 1000, "errors": errors[kind]}
        r = rows[kind]
        print(f"{kind:<16} {r['n']:>5} {r['p50']:>8.0f} {r['p95']:>8.0f} {r['p99']:>8.0f} {r['max']:>8.0f} "
              f"{r['errors']}")
    summary = {"requests": len(every), "users": args.users, "findings": args.findings, "wall_s": wall,
               "think_s": args.think,
               "errors": sum(errors.values()), "pages_p99_ms": percentile(pages, 99) * 1000,
               "all_p99_ms": percentile(every, 99) * 1000, "kinds": rows,
               "login_p50_ms": statistics.median(logins) * 1000, "cpus": os.cpu_count(),
               "load": os.getloadavg()[0]}
    print(f"pages p99 {summary['pages_p99_ms']:.0f} ms, all p99 {summary['all_p99_ms']:.0f} ms "
          f"(target < 300 ms), load average {summary['load']:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
