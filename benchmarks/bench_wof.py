#!/usr/bin/env python3
"""Decompression speed of WOF-compressed files (``forensics/wof.py``), each decoder, each algorithm.

The corpus (about ``--size-mb``, built once under ``--workdir``) is a mix like a Windows
system's: a half of x86-64 machine code (the shared libraries of ``/usr/lib/x86_64-linux-gnu``,
taken in name order: what CALL translation and the LZX/XPRESS match finders meet in DLLs), a
quarter of text (``/usr/lib/python3*`` sources, then seeded INI/log lines), an eighth of seeded
XML-like configuration and an eighth of seeded random bytes (stored chunks). wimlib compresses it
with each algorithm (``wimlib-imagex capture --compress=xpress|lzx --chunk-size=N``); a WIM
resource has the ``WofCompressedData`` layout (chunk table, then the chunks), so each blob is
decoded as a WOF stream by ``wof.decompress`` and compared with the original file.

Each (algorithm, decoder) runs in its own child process, so its peak RSS is its own; speed is
uncompressed MB per CPU second (user + system of that child). ``python`` is the built-in
decoder, ``wimlib`` the optional libwim15 path (``--decoders`` picks).

Example:
    .venv/bin/python benchmarks/bench_wof.py --size-mb 64 --workdir /tmp/bench-wof
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = {"XPRESS4K": (0, "xpress", 4096), "LZX": (1, "lzx", 32768), "XPRESS8K": (2, "xpress", 8192),
              "XPRESS16K": (3, "xpress", 16384)}


def _take(files: list[Path], budget: int, out: Path, prefix: str) -> int:
    """Copy whole files (at most 4 MiB each) until ``budget`` bytes are written."""
    written = 0
    for index, path in enumerate(files):
        if written >= budget:
            break
        try:
            data = path.read_bytes()[: min(4 << 20, budget - written)]
        except OSError:
            continue
        if data:
            (out / f"{prefix}{index:05d}.bin").write_bytes(data)
            written += len(data)
    return written


def build_corpus(corpus: Path, size_mb: int) -> None:
    marker = corpus / ".built"
    if marker.exists() and marker.read_text() == str(size_mb):
        return
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    total = size_mb << 20
    rng = random.Random(16)
    code = sorted(p for p in Path("/usr/lib/x86_64-linux-gnu").glob("*.so*") if p.is_file() and not p.is_symlink())
    _take(code, total // 2, corpus, "code")
    sources = sorted(Path(sys.base_prefix, "lib").glob("python3*/**/*.py"))
    text = _take(sources, total // 8, corpus, "py")
    lines = "".join(f"[{rng.randrange(10**9)}] Setting{i % 97}={rng.randrange(10**6)} zone={rng.choice('ABCD')}\r\n"
                    for i in range(((total // 4) - text) // 40 + 1))
    (corpus / "log.txt").write_bytes(lines.encode()[: total // 4 - text])
    xml = "".join(f'<Task id="{i}"><Exec cmd="C:\\\\Vendor\\\\bin\\\\svc{rng.randrange(99)}.exe" '
                  f'arg="{rng.randbytes(6).hex()}"/></Task>\n' for i in range(total // 8 // 80 + 1))
    (corpus / "tasks.xml").write_bytes(xml.encode()[: total // 8])
    (corpus / "random.bin").write_bytes(rng.randbytes(total // 8))
    marker.write_text(str(size_mb))


def wim_blobs(wim: Path) -> dict[bytes, tuple[bytes, int, int]]:
    """SHA-1 -> (stored bytes, size, flags) of each blob of a non-solid WIM, read from its blob table
    (also the tests' reader: tests/test_windows_wof.py)."""
    data = wim.read_bytes()
    if data[:8] != b"MSWIM\0\0\0":
        raise ValueError(f"{wim}: not a WIM")

    def reshdr(buf: bytes, at: int) -> tuple[int, int, int, int]:
        return int.from_bytes(buf[at : at + 7], "little"), buf[at + 7], *struct.unpack_from("<QQ", buf, at + 8)

    size, _flags, offset, _ = reshdr(data, 0x30)
    table = data[offset : offset + size]
    blobs = {}
    for at in range(0, len(table), 50):
        stored, flags, where, original = reshdr(table, at)
        blobs[table[at + 30 : at + 50]] = (data[where : where + stored], original, flags)
    return blobs


def compressed(corpus: Path, workdir: Path, name: str) -> Path:
    """The corpus captured into a WIM with ``name``'s algorithm and chunk size, built once."""
    _, method, chunk = ALGORITHMS[name]
    wim = workdir / f"corpus-{name}.wim"
    if not wim.exists() or wim.stat().st_mtime < (corpus / ".built").stat().st_mtime:
        subprocess.run(["wimlib-imagex", "capture", str(corpus), str(wim), f"--compress={method}",
                        f"--chunk-size={chunk}", "--no-acls", "--threads=1"], check=True, capture_output=True)
    return wim


def one(corpus: Path, wim: Path, name: str, decoder: str) -> dict[str, object]:
    """Decode every compressed blob of ``wim`` with ``decoder``; runs in its own process."""
    sys.path.insert(0, str(REPO / "src"))
    from cranewatch.forensics import wof

    algo = ALGORITHMS[name][0]
    blobs = wim_blobs(wim)
    files = [p for p in sorted(corpus.iterdir()) if p.is_file() and not p.name.startswith(".")]
    work = []
    for path in files:
        content = path.read_bytes()
        stored, original, flags = blobs[hashlib.sha1(content).digest()]
        if flags & 0x04:
            work.append((stored, original, hashlib.sha256(content).digest()))
    before = time.process_time()
    for stored, original, digest in work:
        out = wof.decompress(stored, original, algo, decoder=decoder)
        if hashlib.sha256(out).digest() != digest:
            raise SystemExit(f"{name} {decoder}: wrong output")
    cpu = time.process_time() - before
    plain = sum(w[1] for w in work)
    return {"algorithm": name, "decoder": decoder, "files": len(work), "uncompressed_mb": round(plain / 2**20, 1),
            "compressed_mb": round(sum(len(w[0]) for w in work) / 2**20, 1), "cpu_seconds": round(cpu, 2),
            "mb_per_cpu_second": round(plain / 2**20 / cpu, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache/bench-wof")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--decoders", default="python,wimlib")
    parser.add_argument("--one", nargs=2, metavar=("ALGORITHM", "DECODER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus = args.workdir / "corpus"
    if args.one:
        print(json.dumps(one(corpus, compressed(corpus, args.workdir, args.one[0]), *args.one)))
        return 0
    build_corpus(corpus, args.size_mb)
    print(f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    for name in args.algorithms.split(","):
        compressed(corpus, args.workdir, name)
        for decoder in args.decoders.split(","):
            run = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--one", name, decoder],
                                 capture_output=True, text=True, check=False)
            print(run.stdout.strip() or json.dumps({"algorithm": name, "decoder": decoder,
                                                    "error": run.stderr.strip()[-300:]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
