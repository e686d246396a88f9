"""A command-and-control beacon: calls an outside TLS server at a fixed interval with jitter.

Each round resolves the C2 name through the terminal resolver (which forwards it outside),
then fetches ``https://<name>/api/v1/checkin`` with curl (real TLS with SNI), sleeping
``interval`` ± ``jitter`` between rounds — the rhythm beacon detection looks for.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import time

from cranewatch.lab.parts.common import dns_query, setup_part, stopping


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.beacon")
    parser.add_argument("--name", required=True)
    parser.add_argument("--dns", default="10.20.0.8")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--jitter", type=float, default=0.15, help="fraction of the interval")
    parser.add_argument("--until", type=float, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    log = setup_part("beacon")
    rng = random.Random(args.seed)
    while time.time() < args.until and not stopping.is_set():
        addresses = dns_query(args.name, args.dns)
        if addresses:
            done = subprocess.run(
                ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                 "-A", "Mozilla/5.0 (compatible; CraneAgent/2.1)",
                 "--resolve", f"{args.name}:443:{addresses[0]}",
                 f"https://{args.name}/api/v1/checkin?id=STS07-CMS"],
                capture_output=True, text=True, timeout=10)
            log.info("checkin %s -> %s", addresses[0], done.stdout or done.returncode)
        else:
            log.info("%s did not resolve", args.name)
        pause = args.interval * (1.0 + rng.uniform(-args.jitter, args.jitter))
        stopping.wait(max(0.0, min(pause, args.until - time.time())))


if __name__ == "__main__":
    main()
