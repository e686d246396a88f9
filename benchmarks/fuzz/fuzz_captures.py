#!/usr/bin/env python3
"""The long capture fuzz run: thousands of hostile captures per family through the whole
analysis (reader, flows, decoders, detectors, process checks with the STS-07 profile).

Families: ``pcap`` (mutated lab and public captures), ``pcapng`` (mutated public pcapng
files and pcapng files of hostile conversations), ``gzip`` (gzip'ed mutated captures, and
mutated bytes of gzip'ed captures), and one per decoder family of ``tests/fuzz_payloads.py``
(structure-aware hostile conversations, a third of them mutated again as files).

Each case runs in a worker process under a 20 s alarm and an address-space limit (its peak
RSS measured alone: VmHWM reset before each case), and ends
as one outcome: ``ok``; ``warned`` (located warnings only, the expected end of bad input);
``internal:<class>`` (a decoder, detector or check failed on one unit, recorded, the run went
on: a bug about input); ``escaped:<class>`` (an exception left the analysis: what the CLI
would turn into exit 70, or exit 3 for a CranewatchError); ``hang`` (over 20 s). Every case
that is not ok/warned is kept under ``--keep`` for reproduction; a case is also reproduced
from its family and number alone (``--family F --case N``).

Example:
  nice -n 10 python benchmarks/fuzz/fuzz_captures.py --cases 10000 --workers 2 \\
      --out benchmarks/fuzz/captures.md --keep /tmp/fuzz-cases
  python benchmarks/fuzz/fuzz_captures.py --family modbus --case 1234 --keep /tmp/one
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_payloads as fp  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "pcaps" / "ICS-Security-Tools" / "pcaps"
LAB = ROOT / "src" / "cranewatch" / "data" / "lab"
PCAP_SEEDS = [LAB / s / "crane-lan.pcap" for s in ("remote-ssh", "safety-bypass", "vendor-vnc", "recon")] + [
    SHARED / p for p in ("ModbusTCP/modbus_test_data_part2.pcap", "bro/modbus/fuzz-72.pcap",
                         "modicon/modicon_test.pcap", "s7/s7comm_reading_plc_status.pcap",
                         "s7/s7comm_varservice_libnodavedemo.pcap", "hart/hart_ip.pcap",
                         "IEC61850/m-send-req.mms.pcap")]
PCAPNG_SEEDS = [SHARED / p for p in ("s7/step7_s300_rwVarTab.pcapng", "s7/snap7_s300_everything.pcapng",
                                     "beckoff/addroute1.pcapng", "s7/step7_s300_download.pcapng")]
TIMEOUT = 20
MEMORY_LIMIT = 3 << 30  # address space per worker: a bomb is a MemoryError, not the OOM killer
PAYLOAD_FAMILIES = [f.name for f in fp.FAMILIES]
FAMILIES = ["pcap", "pcapng", "gzip", *PAYLOAD_FAMILIES]


class Hang(BaseException):
    """The case's alarm: a BaseException, so the pipeline's isolation of failing sinks and
    decoders (which catches Exception) cannot swallow it."""


def _reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _resident_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _give_back() -> None:
    """Return freed heap to the system after a big case (glibc keeps it otherwise, and the
    next cases would seem to use it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_mb() -> float:
    """The peak RSS since ``_reset_peak`` (VmHWM), else the process's lifetime peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def case_bytes(family: str, number: int) -> tuple[str, bytes]:
    """(file suffix, content) of case ``number`` of ``family``: the same every time."""
    rng = random.Random(f"{family}-{number}")
    if family == "pcap":
        seeds = [p for p in PCAP_SEEDS if p.is_file()]
        return ".pcap", fp.mutate(rng.choice(seeds).read_bytes(), rng)
    if family == "pcapng":
        seeds = [p for p in PCAPNG_SEEDS if p.is_file()]
        if seeds and rng.random() < 0.5:
            return ".pcapng", fp.mutate(rng.choice(seeds).read_bytes(), rng, skip=28)
        fam = rng.choice(fp.FAMILIES)
        return ".pcapng", fp.mutate(fp.pcapng_bytes(fp.frames_of(fam, fam.messages(rng), rng)), rng, skip=28)
    if family == "gzip":
        seeds = [p for p in PCAP_SEEDS if p.is_file()]
        data = rng.choice(seeds).read_bytes()
        if rng.random() < 0.5:
            return ".pcap.gz", fp.gzipped(fp.mutate(data, rng))
        return ".pcap.gz", fp.mutate(fp.gzipped(data), rng, skip=10)
    fam = fp.FAMILY[family]
    data = fp.family_capture(fam, rng)
    if rng.random() < 0.33:
        data = fp.mutate(data, rng)
    return ".pcap", data


_STATE: dict[str, Any] = {}


def _init_worker(tmp: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    from cranewatch.profile import load_profile

    _STATE["profile"] = load_profile(ROOT / "profiles" / "sts-07.toml")
    _STATE["tmp"] = Path(tmp)


def run_case(job: tuple[str, int]) -> dict[str, Any]:
    from cranewatch.errors import CranewatchError
    from cranewatch.pipeline import analyze
    from cranewatch.sinks import build_sinks

    family, number = job
    suffix, data = case_bytes(family, number)
    path = _STATE["tmp"] / f"{os.getpid()}{suffix}"
    path.write_bytes(data)
    if _resident_mb() > 150:
        _give_back()
    before = _resident_mb()
    _reset_peak()
    started = time.monotonic()
    outcome, detail = "ok", ""
    signal.alarm(TIMEOUT)
    try:
        result = analyze([path], sinks=build_sinks(_STATE["profile"]))
        signal.alarm(0)
        internal = [w.message for w in result.warnings if w.kind == "internal"]
        if internal:
            outcome, detail = f"internal:{_error_class(internal[0])}", internal[0][:300]
        elif result.warnings or result.warnings_suppressed:
            outcome = "warned"
    except Hang:
        outcome = "hang"
    except CranewatchError as exc:  # the CLI's exit 3 (or another documented code)
        signal.alarm(0)
        outcome, detail = f"escaped:{type(exc).__name__}", str(exc)[:300]
    except BaseException as exc:  # exit 70
        signal.alarm(0)
        last = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = f"escaped:{type(exc).__name__}"
        detail = f"{Path(last.filename).name}:{last.lineno} {last.name}: {exc}"[:300]
    finally:
        signal.alarm(0)
    seconds = time.monotonic() - started
    return {"family": family, "case": number, "outcome": outcome, "detail": detail,
            "seconds": seconds, "rss_mb": _peak_mb(), "rss_before_mb": before,
            "bytes": len(data)}


def _error_class(message: str) -> str:
    """The exception class named in an internal warning ("... (IndexError: ...) ...")."""
    start = message.find("(")
    end = message.find(":", start)
    return message[start + 1:end] if 0 <= start < end else "?"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_family: dict[str, dict[str, Any]] = {}
    for row in rows:
        fam = by_family.setdefault(row["family"], {"cases": 0, "outcomes": collections.Counter(),
                                                   "max_s": 0.0, "total_s": 0.0, "rss_mb": 0.0,
                                                   "growth_mb": 0.0})
        fam["cases"] += 1
        fam["outcomes"][row["outcome"]] += 1
        fam["max_s"] = max(fam["max_s"], row["seconds"])
        fam["total_s"] += row["seconds"]
        # A worker keeps some memory after a big case (glibc arenas): a case's own cost is
        # its peak minus what was resident when it started.
        fam["rss_mb"] = max(fam["rss_mb"], row["rss_mb"])
        fam["growth_mb"] = max(fam["growth_mb"], row["rss_mb"] - row.get("rss_before_mb", 0.0))
    return by_family


def markdown(by_family: dict[str, Any], rows: list[dict[str, Any]], wall: float, command: str) -> str:
    lines = ["| family | cases | ok | warned | internal (recorded, run went on) | escaped (exit 70/3) "
             "| hangs > 20 s | slowest s | mean ms | most RSS one case added, MB | peak worker RSS MB |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    total = collections.Counter()
    for name in FAMILIES:
        fam = by_family.get(name)
        if fam is None:
            continue
        out = fam["outcomes"]
        internal = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(out.items()) if k.startswith("internal:")) or "0"
        escaped = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(out.items()) if k.startswith("escaped:")) or "0"
        lines.append(f"| {name} | {fam['cases']:,} | {out['ok']:,} | {out['warned']:,} | {internal} | {escaped} "
                     f"| {out['hang']} | {fam['max_s']:.2f} | {1000 * fam['total_s'] / fam['cases']:.1f} "
                     f"| {fam['growth_mb']:.0f} | {fam['rss_mb']:.0f} |")
        total.update(out)
        total["cases"] += fam["cases"]
    bad = [r for r in rows if r["outcome"] not in ("ok", "warned")]
    lines += ["", f"{total['cases']:,} cases in {wall / 60:.1f} min wall; "
              f"{total['hang']} hangs; {sum(v for k, v in total.items() if k.startswith('escaped:'))} escaped; "
              f"{sum(v for k, v in total.items() if k.startswith('internal:'))} internal.", "",
              f"Command: `{command}`"]
    if bad:
        lines += ["", "Cases that were not ok or warned (first 30; reproduce with `--family F --case N`):", ""]
        lines += [f"- {r['family']} #{r['case']}: {r['outcome']} ({r['seconds']:.1f} s) {r['detail']}" for r in bad[:30]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per family (default 10,000)")
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument("--family", help="with --case: run one case only")
    parser.add_argument("--case", type=int, help="with --family: run one case only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results table (markdown) here")
    parser.add_argument("--jsonl", type=Path, help="append every case's outcome here")
    parser.add_argument("--keep", type=Path, help="keep the inputs of cases not ok/warned here")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop starting cases after this long")
    parser.add_argument("--table-from", type=Path, help="only rebuild the table from a --jsonl log")
    args = parser.parse_args()
    if args.table_from is not None:
        rows_read = [json.loads(line) for line in args.table_from.read_text().splitlines() if line]
        text = markdown(summarise(rows_read), rows_read, 0.0, f"(table rebuilt from {args.table_from.name})")
        if args.out:
            args.out.write_text(text)
        print(text)
        return 0
    tmp = tempfile.mkdtemp(prefix="cw-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    if args.family is not None and args.case is not None:
        _init_worker(tmp)
        row = run_case((args.family, args.case))
        print(json.dumps(row))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            suffix, data = case_bytes(args.family, args.case)
            (args.keep / f"{args.family}-{args.case}{suffix}").write_bytes(data)
        return 0
    families = [f for f in args.families.split(",") if f]
    # Families interleaved case by case, so a run cut short covers every family alike.
    jobs = [(f, n) for n in range(args.start, args.start + args.cases) for f in families]
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    log = args.jsonl.open("a") if args.jsonl else None
    with multiprocessing.Pool(args.workers, initializer=_init_worker, initargs=(tmp,),
                              maxtasksperchild=2000) as pool:
        for row in pool.imap_unordered(run_case, jobs, chunksize=8):
            rows.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
            if row["outcome"] not in ("ok", "warned"):
                print(f"{row['family']} #{row['case']}: {row['outcome']} {row['detail'][:160]}", flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    suffix, data = case_bytes(row["family"], row["case"])
                    (args.keep / f"{row['family']}-{row['case']}{suffix}").write_bytes(data)
            if len(rows) % 2000 == 0:
                print(f"{len(rows):,} cases, {time.monotonic() - started:.0f} s", flush=True)
                if args.out:
                    args.out.write_text(markdown(summarise(rows), rows, time.monotonic() - started,
                                                 " ".join(sys.argv)))
            if args.minutes and time.monotonic() - started > 60 * args.minutes:
                pool.terminate()
                break
    wall = time.monotonic() - started
    text = markdown(summarise(rows), rows, wall, " ".join(sys.argv))
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
