"""Golden analysis documents: ``cranewatch analyze --format jsonl`` of every bundled lab capture
(without a profile, with the lab profile, and with the profile and the lab's normal capture as
baseline), every shared capture (``../shared/data/pcaps/MANIFEST.tsv``) and every shared Zeek
log directory, written under OUT (one file per case), so that a refactoring can be checked
byte for byte against the documents written before it.

Runs every case in this one process (through ``cranewatch.cli.main``) to spare the start-up
of 700 interpreters; each case is independent all the same (a fresh pipeline per run).

    PYTHONPATH=src python benchmarks/golden_docs.py /work/wt/golden-core/before
    PYTHONPATH=src python benchmarks/golden_docs.py /work/wt/golden-core/after --compare \
        /work/wt/golden-core/before
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
from pathlib import Path

from cranewatch.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "src" / "cranewatch" / "data" / "lab"
PROFILE = ROOT / "src" / "cranewatch" / "data" / "profiles" / "sts-07.toml"
SHARED = ROOT.parent / "shared" / "data"


def cases() -> list[tuple[str, list[str]]]:
    """(name, analyze arguments) of every case, in a fixed order."""
    out: list[tuple[str, list[str]]] = []
    normal = LAB / "normal" / "crane-lan.pcap"
    for capture in sorted(LAB.glob("*/crane-lan.pcap")):
        lab = capture.parent.name
        out.append((f"lab-{lab}-plain", [str(capture)]))
        out.append((f"lab-{lab}-profile", [str(capture), "--profile", str(PROFILE)]))
        if lab != "normal":
            out.append((f"lab-{lab}-baseline", [str(capture), "--profile", str(PROFILE),
                                                 "--baseline", str(normal)]))
    manifest = SHARED / "pcaps" / "MANIFEST.tsv"
    if manifest.exists():
        for line in manifest.read_text().splitlines()[1:]:
            path = line.split("\t")[2]
            name = hashlib.sha256(path.encode()).hexdigest()[:12]
            out.append((f"pcap-{name}", [str(SHARED / "pcaps" / path)]))
    zeek = SHARED / "zeek-logs"
    if zeek.exists():
        for directory in sorted(p for p in zeek.iterdir() if p.is_dir()):
            out.append((f"zeek-{directory.name}", [str(directory)]))
    return out


def run(out_dir: Path, only: str | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for name, args in cases():
        if only and only not in name:
            continue
        target = out_dir / f"{name}.jsonl"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli_main(["analyze", *args, "--format", "jsonl", "--out", str(target)])
        (out_dir / f"{name}.exit").write_text(f"{code}\n")
        index.append(f"{name}\t{code}\t{' '.join(args)}")
    (out_dir / "INDEX.tsv").write_text("\n".join(index) + "\n")


def compare(out_dir: Path, golden: Path) -> int:
    differ = 0
    same = 0
    for before in sorted(golden.glob("*.jsonl")) + sorted(golden.glob("*.exit")):
        after = out_dir / before.name
        if not after.exists():
            continue
        if after.read_bytes() == before.read_bytes():
            same += 1
        else:
            differ += 1
            print(f"DIFFERS {before.name}")
    print(f"{same} identical, {differ} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, metavar="GOLDEN")
    parser.add_argument("--only", help="only the cases whose name contains this")
    args = parser.parse_args()
    run(args.out, args.only)
    return compare(args.out, args.compare) if args.compare else 0


if __name__ == "__main__":
    sys.exit(main())
