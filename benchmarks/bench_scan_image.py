#!/usr/bin/env python3
"""Time ``cranewatch scan-image`` on a ~1 GB Debian tree beside ``yara -N -r`` and ``lynis``.

The tree is a debootstrap'ed Debian bookworm with a desktop-ish set of extra packages (systemd,
NetworkManager, ModemManager, ppp, OpenSSH, compilers, Python, Perl, Java, X11 + x11vnc),
built once under ``.cache/bench`` (``--build``; root and the Debian mirror needed). Then, in
the same run, on the same tree:

- ``cranewatch scan-image TREE`` with all checks and the shipped YARA rules (2 workers) and
  once with one worker: nothing is spared a check on the image's word;
- with ``--distro-packages DIR`` (the tree's genuine .debs, e.g. debootstrap's cache), the same
  scan verified against them, twice: the first run hashes the packages into the index cache
  (``$CRANEWATCH_CACHE``, a private one per run of this script), the second reads the cache;
  the files found genuine, differing and unverified are recorded;
- ``yara -N -r -p 2`` with the same rule files (``-N``: no symlink following; without it
  ``yara -r`` walks ``dev/fd`` into the host's /proc);
- ``lynis audit system --rootdir TREE --quick`` (which, for most tests, reads the host).

Example:
    sudo .venv/bin/python benchmarks/bench_scan_image.py --build
    .venv/bin/python benchmarks/bench_scan_image.py --tree .cache/bench/rootfs-big --json benchmarks/out/scan.json \
        --distro-packages .cache/rootfs/debs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRA_PACKAGES = (
    "systemd,systemd-sysv,openssh-server,network-manager,modemmanager,ppp,python3,python3-yaml,perl,gcc,g++,"
    "make,gdb,git,vim,curl,wget,iproute2,iptables,nftables,sudo,rsyslog,cron,less,file,strace,tcpdump,x11vnc,"
    "xserver-xorg-core,xvfb,fonts-dejavu-core,libgtk-3-0,python3-numpy,openjdk-17-jre-headless"
)


def build(tree: Path) -> None:
    if (tree / "etc/os-release").exists():
        return
    work = tree.with_name(tree.name + "-build")
    shutil.rmtree(work, ignore_errors=True)
    debs = REPO / ".cache/rootfs/debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", f"--include={EXTRA_PACKAGES}", "bookworm",
         str(work), "http://deb.debian.org/debian"],
        check=True,
    )
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (work / junk).glob("*"):
            if item.is_file():
                item.unlink()
    work.rename(tree)


def tree_stats(tree: Path) -> dict[str, int]:
    files = elf = size = 0
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            files += 1
            size += os.path.getsize(path)
            with open(path, "rb") as fh:
                elf += fh.read(4) == b"\x7fELF"
    return {"files": files, "elf": elf, "bytes": size}


def timed(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, object]:
    start = time.perf_counter()
    try:
        run = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
                             env=env)
    except subprocess.TimeoutExpired:
        return {"argv": argv, "seconds": None, "timeout": timeout}
    return {"argv": argv, "seconds": round(time.perf_counter() - start, 2), "returncode": run.returncode,
            "stdout_lines": run.stdout.count("\n"), "stderr_tail": run.stderr[-300:]}


def scan_header(path: Path) -> dict[str, object]:
    """The trust counts and finding counts of a ``--format jsonl`` report's header."""
    try:
        with open(path) as fh:
            header = json.loads(fh.readline())
    except (OSError, ValueError):
        return {}
    return {"trust": header.get("inventory", {}).get("trust"), "counts": header.get("counts")}


def verified_runs(tree: Path, debs: list[str], timeout: float) -> dict[str, object]:
    """The scan with --distro-packages: a cold run (packages hashed) and a warm one (cache read)."""
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-genuine-") as tmp:
        env = {**os.environ, "CRANEWATCH_CACHE": tmp}
        report = Path(tmp) / "report.jsonl"
        argv = [sys.executable, "-m", "cranewatch", "scan-image", str(tree), "--format", "jsonl", "--out", str(report)]
        for deb in debs:
            argv += ["--distro-packages", deb]
        out["cranewatch_distro_cold"] = timed(argv, timeout, env)
        out["cranewatch_distro_warm"] = timed(argv, timeout, env)
        out["cranewatch_distro_result"] = scan_header(report)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=REPO / ".cache/bench/rootfs-big")
    parser.add_argument("--build", action="store_true", help="debootstrap the tree if it is missing (root)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--distro-packages", action="append", default=[], metavar="DIR",
                        help="also scan verified against these genuine packages (repeatable)")
    args = parser.parse_args()
    if args.build:
        build(args.tree)
    if not args.tree.is_dir():
        print(f"no tree at {args.tree}: run with --build (as root)", file=sys.stderr)
        return 4
    from cranewatch.forensics.checks.yara_rules import _rule_files, shipped_rules_dir

    rules = [str(p) for p in _rule_files(shipped_rules_dir())]
    results: dict[str, object] = {"tree": str(args.tree), "stats": tree_stats(args.tree), "cores": os.cpu_count()}
    cranewatch = [sys.executable, "-m", "cranewatch", "scan-image", str(args.tree), "--format", "jsonl", "--out", os.devnull]
    # The first run warms the page cache for every tool alike.
    results["warmup"] = timed(cranewatch, args.timeout)
    results["cranewatch"] = timed(cranewatch, args.timeout)
    results["cranewatch_1_worker"] = timed([*cranewatch, "--workers", "1"], args.timeout)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as report:
        timed([*cranewatch[:-1], report.name], args.timeout)
        results["cranewatch_result"] = scan_header(Path(report.name))
    if args.distro_packages:
        results.update(verified_runs(args.tree, args.distro_packages, args.timeout))
    if shutil.which("yara"):
        results["yara"] = timed(["yara", "-N", "-r", "-p", "2", *rules, str(args.tree)], args.timeout)
    if shutil.which("lynis") or Path("/usr/sbin/lynis").exists():
        lynis = shutil.which("lynis") or "/usr/sbin/lynis"
        results["lynis"] = timed([lynis, "audit", "system", "--rootdir", str(args.tree), "--quick", "--no-log", "--no-colors"], args.timeout)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
