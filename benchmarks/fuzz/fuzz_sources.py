#!/usr/bin/env python3
"""Long mutation-fuzz run of cranewatch's input sources: pcap, pcapng, gzip, Zeek logs.

Every case is a seed file changed by a few random mutations (bit flips, interesting 32-bit
values such as 0xffffffff written over lengths, cuts, deletions, duplications, splices; for
Zeek logs also hostile field values, broken headers, over-long lines and gzip damage). Seeds are
the small public captures in ``../shared/data/pcaps`` and the Zeek baselines in
``../shared/data/zeek-logs`` (also converted to JSON lines), plus hand-made captures of every
block kind and a few decompression bombs.

Targets:
- ``pcap``, ``pcapng``, ``gzip``: the reader (``open_capture`` + every batch, with the batch
  invariants checked) and ``decode_batch`` over each batch;
- ``zeek``: the whole analysis of the log (``Analysis.run`` with the network detectors), as
  ``cranewatch analyze LOG`` runs it.

Each case runs in a worker process watched by the parent: a case that does not finish within
``--timeout`` seconds (20) is a hang, the worker is killed and a new one goes on with the next
case. Outcomes are counted as ``cranewatch analyze`` would exit: 0 (read whole), 3 (an input
problem reported: ``CranewatchError``), 70 (any other exception: a bug). Cases that exit 70 or
hang are saved in ``--workdir`` for replay (``--replay FILE --family F``). The counts go to
``benchmarks/fuzz/sources.md`` (``--report``).

Example:
  nice -n 10 .venv/bin/python benchmarks/fuzz/fuzz_sources.py                # 10,000 + 2,000
  .venv/bin/python benchmarks/fuzz/fuzz_sources.py --cases 200 --zeek-cases 50 --seed 3
  .venv/bin/python benchmarks/fuzz/fuzz_sources.py --replay /tmp/fuzz/zeek-17.log --family zeek
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing as mp
import random
import resource
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"
FAMILIES = ("pcap", "pcapng", "gzip", "zeek")
WORKER_CASES = 500
KEPT_SECTION = "## Before the fixes"  # from this heading on, --report's file is kept as it is
INTERESTING_32 = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x3FFFF, 0x40001, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFF0, 0xFFFFFFFF, 0x0A0D0D0A, 0x1A2B3C4D, 0xA1B2C3D4)
HOSTILE_VALUES = ("abc", "-1", "1e300", "-1e300", "inf", "nan", "99999", "4294967296", "0x",
                  "\\xZZ", "\\x4", "\\xc3", "\\xff\\xfe", "(empty)", "-", "", "T", "F", "é",
                  "1" * 5000, "A" * 70000, "[", "{", "\\", ",,,,", "\x00", "\u202e")
HOSTILE_JSON = (5, -1, 1e300, -1e300, 2**70, "abc", "", None, True, [], [1, [2]], {}, {"a": {"b": 1}},
                "1" * 5000, "\\xZZ", "A" * 70000, [None], ["x"] * 50)


# --------------------------------------------------------------------------- seeds


def _synthetic_captures() -> dict[str, list[bytes]]:
    from cranewatch.sources.pcapwrite import PcapngWriter, PcapWriter

    packets = [bytes([i % 256]) * (14 + i * 13 % 200) for i in range(40)]
    t0 = 1_700_000_000_123_456_789
    pcaps = []
    for nanosecond, big in ((False, False), (True, True), (False, True)):
        out = io.BytesIO()
        writer = PcapWriter(out, nanosecond=nanosecond, big_endian=big)
        for i, data in enumerate(packets):
            writer.write(t0 + i * 1_000_000, data)
        pcaps.append(out.getvalue())
    pcapngs = []
    for big in (False, True):
        out = io.BytesIO()
        ng = PcapngWriter(out, big_endian=big)
        ng.interface(1, tsresol=9)
        ng.interface(101, tsresol=6)
        for i, data in enumerate(packets):
            if i % 7 == 3:
                ng.write_simple(data)
            elif i % 11 == 5:
                ng.write_obsolete(1, t0 + i, data)
            else:
                ng.write(i % 2, t0 + i * 1000, data)
        ng.section(not big)
        ng.interface(1, tsresol=3)
        ng.write(0, t0, packets[0])
        pcapngs.append(out.getvalue())
    return {"pcap": pcaps, "pcapng": pcapngs}


def _bombs() -> list[bytes]:
    """A pcap header followed by zeros (16-byte empty records), gzip'd: ~1000:1."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1)
    out = []
    for megabytes in (40, 80):
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [packer.compress(header)]
        zeros = bytes(1 << 20)
        parts.extend(packer.compress(zeros) for _ in range(megabytes))
        parts.append(packer.flush())
        out.append(b"".join(parts))
    return out


def capture_seeds(limit: int = 96 * 1024) -> dict[str, list[bytes]]:
    seeds = _synthetic_captures()
    manifest = SHARED / "pcaps" / "MANIFEST.tsv"
    if manifest.is_file():
        for row in manifest.read_text().splitlines()[1:]:
            parts = row.split("\t")
            path = SHARED / "pcaps" / parts[2]
            if not path.is_file() or path.stat().st_size > limit:
                continue
            data = path.read_bytes()
            family = "pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else "pcap"
            seeds[family].append(data)
    seeds["gzip"] = [gzip.compress(s, 6) for s in seeds["pcap"][:40] + seeds["pcapng"][:40]]
    seeds["gzip"].append(gzip.compress(seeds["pcap"][0]) + gzip.compress(seeds["pcap"][1]))  # two members
    return seeds


def zeek_seeds() -> list[tuple[str, bytes]]:
    """(file name, content): the baselines' logs as they are and as JSON lines."""
    from cranewatch.sources.zeek import SUPPORTED, read_log

    seeds: list[tuple[str, bytes]] = []
    root = SHARED / "zeek-logs"
    for path in sorted(root.glob("*/*.log")) if root.is_dir() else []:
        data = path.read_bytes()
        if len(data) > 256 * 1024 or path.stem not in SUPPORTED:
            continue
        seeds.append((path.name, data))
        try:
            _, records = read_log(path, [])
            lines = [json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in r.values.items()})
                     for r in records]
        except Exception:
            continue
        if lines:
            seeds.append((path.stem + ".json", ("\n".join(lines) + "\n").encode()))
    if not seeds:
        seeds.append(("conn.log", b'{"ts": 1.5, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 1, '
                      b'"id.resp_h": "10.0.0.2", "id.resp_p": 2}\n'))
    return seeds


# --------------------------------------------------------------------------- mutation


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        op = rng.randrange(9)
        size = len(out)
        if size == 0:
            out += rng.randbytes(rng.randrange(1, 64))
            continue
        at = rng.randrange(size) if rng.random() < 0.5 else rng.randrange(min(size, 4096))
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op in (2, 3):  # a length-like field: interesting 32-bit value, either byte order
            value = rng.choice(INTERESTING_32)
            out[at : at + 4] = struct.pack(rng.choice("<>") + "I", value)
        elif op == 4:
            del out[rng.randrange(size) :]
        elif op == 5:
            end = min(size, at + rng.randrange(1, 512))
            del out[at:end]
        elif op == 6:
            end = min(size, at + rng.randrange(1, 512))
            out[at:at] = out[at:end] * rng.randrange(1, 4)
        elif op == 7 or not others:
            out[at:at] = rng.randbytes(rng.randrange(1, 64))
        else:
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            out = out[:at] + bytearray(other[cut : cut + rng.randrange(1, 4096)])
    return bytes(out)


def mutate_gzip(seed: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    inner = gzip.decompress(seed) if rng.random() < 0.95 else seed
    choice = rng.random()
    if choice < 0.4:  # damaged inside, compressed whole
        return gzip.compress(mutate_bytes(inner, rng, others), 6)
    if choice < 0.9:  # whole inside, the compressed bytes damaged
        return mutate_bytes(seed, rng, others)
    return mutate_bytes(gzip.compress(mutate_bytes(inner, rng, others)), rng, others)


def mutate_zeek(name: str, data: bytes, rng: random.Random, others: list[bytes]) -> tuple[str, bytes]:
    lines = data.split(b"\n") or [b""]
    is_json = name.endswith(".json")
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(10)
        if not lines:
            lines.append(b"")
        index = rng.randrange(len(lines))
        line = lines[index]
        if op <= 3 and line and not line.startswith(b"#"):  # a hostile value in one field
            if is_json:
                try:
                    record = json.loads(line)
                    key = rng.choice(list(record)) if record and rng.random() < 0.8 else rng.choice(
                        ("ts", "id.orig_p", "answers", "TTLs", "id", "server_name", "host", "qtype", "_path"))
                    record[key] = rng.choice(HOSTILE_JSON)
                    lines[index] = json.dumps(record).encode()
                except (ValueError, TypeError, AttributeError, RecursionError):
                    lines[index] = mutate_bytes(line, rng, others)
            else:
                parts = line.split(b"\t")
                parts[rng.randrange(len(parts))] = rng.choice(HOSTILE_VALUES).encode("utf-8", "surrogatepass")
                lines[index] = b"\t".join(parts)
        elif op == 4 and not is_json:  # a broken header
            header = rng.choice((b"#separator ", b"#separator", b"#separator \\x", b"#separator \\x0",
                                 b"#set_separator\t", b"#types\tvector[vector[vector[count]]]\ttable[",
                                 b"#fields\tts", b"#unset_field\t", b"#empty_field\t", b"#path\tconn",
                                 b"#fields" + b"\tx" * 3000))
            lines.insert(rng.randrange(len(lines) + 1), header)
        elif op == 5:
            lines.insert(index, rng.choice((b"[" * 50_000, b"{" * 3000, b"A" * rng.randrange(1, 3_000_000),
                                            b'{"ts": ' + b"9" * 5000 + b"}", b"\x00" * 1000)))
        elif op == 6:
            lines[index] = lines[rng.randrange(len(lines))]
        elif op == 7:
            del lines[index]
        else:
            lines[index] = mutate_bytes(line, rng, others)
    out = b"\n".join(lines)
    if rng.random() < 0.1:
        out = gzip.compress(out)
        if rng.random() < 0.5:
            out = mutate_bytes(out, rng, others)
        name += ".gz"
    return name, out


# --------------------------------------------------------------------------- targets


def read_capture(path: str, decode: bool = True) -> int:
    """The reader over the whole file, the invariants of each batch checked; decode_batch too.

    0 when the capture was read whole, 3 when the reader reported a problem (a warning).
    """
    import numpy as np

    from cranewatch.decode import decode_batch
    from cranewatch.sources.pcap import MAX_PACKET_BYTES, open_capture

    with open_capture(path) as reader:
        frames = 0
        for batch in reader.batches(4096):
            n = len(batch)
            assert all(len(c) == n for c in (batch.ts, batch.ts_ns, batch.offset, batch.caplen, batch.origlen))
            assert batch.frame.tolist() == list(range(frames + 1, frames + n + 1)), "frame numbers"
            frames += n
            if n:
                assert int(batch.caplen.min()) >= 0 and int(batch.caplen.max()) <= MAX_PACKET_BYTES, "caplen"
                assert int(batch.offset.min()) >= 0, "offset"
                assert int((batch.offset + batch.caplen).max()) <= len(batch.buf), "packet past its block"
                assert np.isfinite(batch.ts).all(), "ts"
            if decode:
                decode_batch(batch)
        reader.digest_rest()
        for problem in reader.warnings + reader.notes:
            assert problem.location is not None and problem.location.file == path, "unlocated warning"
        return 3 if reader.warnings else 0


def analyze_zeek(path: str) -> int:
    """``cranewatch analyze LOG`` in process: 0 whole, 3 a problem reported; raises on a bug."""
    from cranewatch.pipeline import Analysis
    from cranewatch.sinks import build_sinks

    result = Analysis(build_sinks(None, None, None)).run([path])
    return 0 if all(i.complete for i in result.inputs) else 3


# --------------------------------------------------------------------------- the worker


def make_case(family: str, index: int, seed: int, seeds: dict[str, Any], workdir: Path) -> Path:
    rng = random.Random(f"{seed}-{family}-{index}")
    if family == "zeek":
        name, data = rng.choice(seeds["zeek"])
        name, data = mutate_zeek(name, data, rng, [d for _, d in seeds["zeek"][:20]])
        folder = workdir / f"zeek-{index}"
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        path = folder / name
    else:
        pool = seeds[family]
        base = rng.choice(pool + (seeds["bombs"] if family == "gzip" and rng.random() < 0.02 else []))
        if family == "gzip":
            data = mutate_gzip(base, rng, seeds["pcap"][:10]) if base not in seeds["bombs"] else \
                mutate_bytes(base, rng, [])
        else:
            data = mutate_bytes(base, rng, pool[:20])
        path = workdir / f"{family}-{index}.{'pcap.gz' if family == 'gzip' else family}"
    path.write_bytes(data)
    return path


def run_case(family: str, path: Path) -> tuple[str, str]:
    """(exit code as cranewatch would give it, detail)."""
    from cranewatch.errors import CranewatchError

    try:
        if family == "zeek":
            code = analyze_zeek(str(path.parent))  # the folder: routed as Zeek logs
            return str(code), "problem" if code else ""
        code = read_capture(str(path))
        return str(code), "warning" if code else ""
    except CranewatchError as exc:
        return str(int(exc.exit_code)), type(exc).__name__
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return "70", f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}: {str(exc)[:100]}"


def worker(family: str, first: int, count: int, seed: int, workdir: str, conn: Any) -> None:
    seeds = capture_seeds()
    seeds["bombs"] = _bombs()
    seeds["zeek"] = zeek_seeds() if family == "zeek" else []
    conn.send(("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    for index in range(first, first + count):
        try:
            path = make_case(family, index, seed, seeds, Path(workdir))
        except Exception as exc:  # a bug of this script, not of cranewatch: said, not counted
            print(f"case {index}: not made ({type(exc).__name__}: {exc})", file=sys.stderr)
            conn.send(("skip", index))
            continue
        conn.send(("start", index, str(path)))
        start = time.perf_counter()
        code, detail = run_case(family, path)
        seconds = time.perf_counter() - start
        conn.send(("done", index, code, detail, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        if code in ("0", "3"):  # only bugs are kept for replay
            path.unlink()
            if family == "zeek":
                path.parent.rmdir()


@dataclass
class Tally:
    family: str
    cases: int = 0
    exits: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    crash_files: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    peak_rss_kb: int = 0
    base_rss_kb: int = 0
    peak_case: str = ""  # the case that raised the worker's peak RSS the most
    wall: float = 0.0


def fuzz_family(family: str, count: int, seed: int, workdir: Path, timeout: float) -> Tally:
    tally = Tally(family)
    context = mp.get_context("fork")
    index = 0
    started = time.perf_counter()
    while index < count:
        parent, child = context.Pipe()
        # a fresh worker every WORKER_CASES cases: its peak RSS is then that of a few cases, not
        # the heap fragmentation of thousands
        batch = min(WORKER_CASES, count - index)
        process = context.Process(target=worker, args=(family, index, batch, seed, str(workdir), child))
        process.start()
        child.close()  # the worker's end: when the worker exits, recv() here says EOF
        current: tuple[int, str] | None = None
        while True:
            if not parent.poll(timeout if current is not None else 600):
                if current is None:
                    raise RuntimeError("worker did not start")
                tally.hangs.append(current[1])  # the case file stays for replay
                tally.exits["hang"] += 1
                tally.cases += 1
                process.kill()
                process.join()
                index = current[0] + 1
                break
            try:
                message = parent.recv()
            except EOFError:  # the worker ended: its cases are done, or it died in one (counted)
                if current is not None:
                    tally.exits["died"] += 1
                    tally.crash_files.append(current[1])
                    tally.cases += 1
                    index = current[0] + 1
                break
            if message[0] == "ready":
                tally.base_rss_kb = max(tally.base_rss_kb, message[1])
            elif message[0] == "skip":
                tally.exits["not made"] += 1
                index = message[1] + 1
            elif message[0] == "start":
                current = (message[1], message[2])
            else:
                _, case, code, detail, seconds, rss = message
                tally.cases += 1
                tally.exits[code] += 1
                if code == "70":
                    tally.crashes[detail] += 1
                    tally.crash_files.append(current[1] if current else "?")
                elif detail:
                    tally.classes[detail] += 1
                if seconds > tally.slowest[0]:
                    tally.slowest = (seconds, current[1] if current else "?")
                if rss - max(tally.peak_rss_kb, tally.base_rss_kb) > 8 * 1024:  # a new high of 8 MB more
                    tally.peak_case = f"case {case} (+{(rss - max(tally.peak_rss_kb, tally.base_rss_kb)) // 1024} MB)"
                tally.peak_rss_kb = max(tally.peak_rss_kb, rss)
                current = None
                index = case + 1
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    tally.wall = time.perf_counter() - started
    return tally


def report(tallies: list[Tally], args: argparse.Namespace) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Fuzzing the input sources: pcap, pcapng, gzip, Zeek logs",
        "",
        f"Run of {when}: `benchmarks/fuzz/fuzz_sources.py --cases {args.cases} --zeek-cases "
        f"{args.zeek_cases} --seed {args.seed} --timeout {args.timeout:g}` (under `nice -n 10`, on the "
        "2-core development VM shared with other jobs). What each family runs, how cases are made "
        "and how a hang is caught: the script's docstring. Exit codes are those `cranewatch analyze` "
        "would give: 0 read whole, 3 a located input problem, 70 a bug.",
        "",
        "| family | cases | exit 0 | exit 3 | exit 70 | hangs > "
        f"{args.timeout:g} s | slowest case | peak RSS (worker) | wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in tallies:
        lines.append(f"| {t.family} | {t.cases} | {t.exits['0']} | {t.exits['3']} | {t.exits['70'] + t.exits['died']} "
                     f"| {t.exits['hang']} | {t.slowest[0]:.2f} s | {t.peak_rss_kb / 1024:.0f} MB "
                     f"(idle {t.base_rss_kb / 1024:.0f} MB) | {t.wall:.0f} s |")
    lines += ["", "Input problems reported (exit 3): `warning`/`problem` = the capture or log was read "
              "with located warnings; an exception class = raised before any packet was read:", ""]
    for t in tallies:
        shown = ", ".join(f"{name} {n}" for name, n in t.classes.most_common()) or "none"
        lines.append(f"- {t.family}: {shown}")
    lines += ["", "Bugs (exit 70) and hangs:", ""]
    any_bug = False
    for t in tallies:
        for detail, n in t.crashes.most_common():
            any_bug = True
            lines.append(f"- {t.family}: {n} × `{detail}`")
        for path in t.hangs:
            any_bug = True
            lines.append(f"- {t.family}: hang, case saved as `{path}`")
    if not any_bug:
        lines.append("- none")
    lines += ["", "The case that raised each worker's peak RSS most (remake it with `make_case`):", ""]
    lines += [f"- {t.family}: {t.peak_case or 'none over 8 MB'}" for t in tallies]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per capture family")
    parser.add_argument("--zeek-cases", type=int, default=2_000, help="mutated Zeek logs")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a case is a hang")
    parser.add_argument("--workdir", default="/tmp/cranewatch-fuzz-sources")
    parser.add_argument("--report", default=str(HERE / "sources.md"), help="where the counts go ('-': stdout)")
    parser.add_argument("--replay", metavar="FILE", help="run one saved case and print the traceback")
    parser.add_argument("--family", choices=FAMILIES, help="the family of --replay")
    args = parser.parse_args(argv)
    if args.replay:
        if args.family == "zeek":
            print("exit", analyze_zeek(args.replay))
        else:
            print("exit", read_capture(args.replay))
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tallies = []
    for family in args.families:
        count = args.zeek_cases if family == "zeek" else args.cases
        tally = fuzz_family(family, count, args.seed, workdir, args.timeout)
        print(f"{family}: {tally.cases} cases, exits {dict(tally.exits)}, {len(tally.hangs)} hangs, "
              f"peak RSS {tally.peak_rss_kb // 1024} MB, {tally.wall:.0f} s", file=sys.stderr, flush=True)
        for detail, n in tally.crashes.most_common(10):
            print(f"  70: {n} x {detail}", file=sys.stderr)
        tallies.append(tally)
    text = report(tallies, args)
    if args.report == "-":
        print(text)
    else:
        target = Path(args.report)
        kept = target.read_text(encoding="utf-8") if target.is_file() else ""
        if KEPT_SECTION in kept:  # the hand-written comparison below the counts stays
            text += "\n" + kept[kept.index(KEPT_SECTION):]
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
