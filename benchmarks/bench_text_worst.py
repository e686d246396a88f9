#!/usr/bin/env python3
"""Worst-case text for the content checks: long runs of letters and digits in every text field.

Issue 19, case 2: a backtracking regex over attacker text made one MQTT topic of 65 KB cost
59 s. This writes, for each text field an attacker controls, inputs of growing size whose
field is one long run of letters (or digits) — the shape that made the old pattern quadratic —
and times the whole analysis of each (``pipeline.analyze`` with the STS-07 profile and every
detector, in this process, CPU seconds; the interpreter's start-up is not counted):

- MQTT PUBLISH to an outside broker: the topic, the payload;
- HTTP requests to an outside host: the Host value, the URI, a POST body;
- DNS queries (UDP) to an outside resolver: names of 63-letter labels;
- a raw TCP payload (digits) to an outside host, which no decoder claims;
- Zeek logs: an ``http.log`` Host value and a ``dns.log`` query name (JSON lines).

The size is the attacker's text in the input: one field of that size where the protocol
allows it, else as many fields of the largest size it allows (an MQTT topic's 65,535 bytes, a
63 KiB HTTP header, a 253-character DNS name).

It prints one row per (field, size) and the slope of time over size; with ``--json`` and
``--svg`` it writes the numbers and a plot (an SVG drawn here: no plotting library needed).
A linear scan shows a straight line through the origin-ish; a quadratic one bends up and
quadruples when the size doubles.

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_text_worst.py --svg benchmarks/out/text_worst.svg
    PYTHONPATH=src .venv/bin/python benchmarks/bench_text_worst.py --sizes 4096,16384 --fields mqtt-topic
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from detect_capture import Crane, Host, dns_query, mqtt_connect, mqtt_publish, new_capture  # noqa: E402

PROFILE = REPO / "profiles" / "sts-07.toml"
OUTSIDE = Host("198.51.100.23", "02:00:c6:33:64:17")
RESOLVER = Host("198.51.100.53", "02:00:c6:33:64:35")
SIZES = (16384, 65536, 262144, 1048576)
HEADER_ROOM = 63 * 1024  # an HTTP header line the decoder accepts (HEADER_LIMIT is 64 KiB)


def run_of(size: int, alphabet: str = "a") -> str:
    """``size`` characters: one run of letters (the old pattern's worst case) or digits."""
    return (alphabet * (size // len(alphabet) + 1))[:size]


def pieces(size: int, cap: int) -> list[int]:
    """Field lengths adding up to ``size``, none over ``cap``."""
    return [cap] * (size // cap) + ([size % cap] if size % cap else [])


def segments(data: bytes, mss: int = 1400) -> list[tuple[bool, bytes, float]]:
    return [(True, data[i:i + mss], 0.0001) for i in range(0, len(data), mss)]


def _mqtt(path: Path, publishes: list[tuple[str, bytes]]) -> Path:
    crane = Crane()
    cap = new_capture(crane)
    exchanges = [(True, mqtt_connect("ocr-7"), 0.01)]
    for topic, payload in publishes:
        exchanges += segments(mqtt_publish(topic, payload))
    cap.tcp(1_800_000_000.0, crane.ocr, OUTSIDE, 41000, 1883, exchanges)
    return cap.write(path)


def mqtt_topic(path: Path, size: int) -> Path:
    return _mqtt(path, [(run_of(n), b"{}") for n in pieces(size, 65535)])


def mqtt_payload(path: Path, size: int) -> Path:
    return _mqtt(path, [("t", run_of(n).encode()) for n in pieces(size, 1 << 19)])


def _http(path: Path, requests: list[bytes]) -> Path:
    crane = Crane()
    cap = new_capture(crane)
    t = 1_800_000_000.0
    for n, request in enumerate(requests):
        t = cap.tcp(t + 0.5, crane.ocr, OUTSIDE, 42000 + n, 80, segments(request))
    return cap.write(path)


def http_host(path: Path, size: int) -> Path:
    return _http(path, [f"GET / HTTP/1.1\r\nHost: {run_of(n)}\r\n\r\n".encode()
                        for n in pieces(size, HEADER_ROOM)])


def http_uri(path: Path, size: int) -> Path:
    return _http(path, [f"GET /{run_of(n)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                        for n in pieces(size, HEADER_ROOM)])


def http_body(path: Path, size: int) -> Path:
    body = run_of(size).encode()
    head = f"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return _http(path, [head + body])


def dns_names(path: Path, size: int) -> Path:
    """``size`` bytes of names in queries of at most 253 characters (the wire's limit)."""
    crane = Crane()
    cap = new_capture(crane)
    label = run_of(63)
    name = ".".join([label] * 4)[:253]
    for n in range(max(1, size // len(name))):
        cap.udp(1_800_000_000.0 + n * 0.01, crane.ocr, RESOLVER, 50000 + n % 10000, 53, dns_query(n & 0xFFFF, name))
    return cap.write(path)


def tcp_payload(path: Path, size: int) -> Path:
    crane = Crane()
    cap = new_capture(crane)
    data = run_of(size, "7").encode()  # digits: the container pattern's \d{6} runs
    cap.tcp(1_800_000_000.0, crane.ocr, OUTSIDE, 43000, 9999, segments(data))
    return cap.write(path)


def _zeek(path: Path, name: str, record: dict[str, object]) -> Path:
    where = {"ts": 1_800_000_000.0, "uid": "Cw0rst", "id.orig_h": "10.20.7.20", "id.orig_p": 44000,
             "id.resp_h": OUTSIDE.ip, "id.resp_p": 80}
    log = path.with_suffix("")
    log.mkdir(exist_ok=True)
    (log / name).write_text(json.dumps({**where, **record}) + "\n")
    return log


def zeek_http_host(path: Path, size: int) -> Path:
    return _zeek(path, "http.log", {"method": "GET", "host": run_of(size), "uri": "/", "version": "1.1"})


def zeek_dns_query(path: Path, size: int) -> Path:
    return _zeek(path, "dns.log", {"proto": "udp", "trans_id": 1, "query": run_of(size), "qtype": 1,
                                   "qtype_name": "A", "id.resp_p": 53})


FIELDS: dict[str, Callable[[Path, int], Path]] = {
    "mqtt-topic": mqtt_topic, "mqtt-payload": mqtt_payload, "http-host": http_host,
    "http-uri": http_uri, "http-body": http_body, "dns-names": dns_names, "tcp-payload": tcp_payload,
    "zeek-http-host": zeek_http_host, "zeek-dns-query": zeek_dns_query,
}


def time_analysis(path: Path, repeat: int) -> float:
    from cranewatch.commands.analyze import analysis_sinks
    from cranewatch.judging import load_judging
    from cranewatch.pipeline import analyze

    judging = load_judging(PROFILE)
    best = float("inf")
    for _ in range(repeat):  # CPU time, the best of several: the machine is shared
        start = time.process_time()
        analyze([path], sinks=analysis_sinks(judging, None), profile=str(PROFILE))
        best = min(best, time.process_time() - start)
    return best


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares seconds per MB, and the ratio of the last to the first time per byte
    (1 for a linear scan, size_last/size_first for a quadratic one)."""
    xs, ys = [p[0] / 1e6 for p in points], [p[1] for p in points]
    fit = statistics.linear_regression(xs, ys).slope if len(points) > 1 else ys[0] / xs[0]
    first, last = points[0], points[-1]
    growth = (last[1] / last[0]) / (first[1] / first[0]) if first[1] > 0 else float("nan")
    return fit, growth


def svg_plot(results: dict[str, list[tuple[int, float]]], title: str) -> str:
    """A line per field: time (ms) over size (KB), axes and a legend, plain SVG."""
    width, height, left, bottom, top, right = 760, 440, 70, 50, 40, 200
    max_x = max(s for points in results.values() for s, _ in points)
    max_y = max(t for points in results.values() for _, t in points) * 1000 * 1.1 or 1.0
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

    def px(size: float, seconds: float) -> tuple[float, float]:
        x = left + (width - left - right) * size / max_x
        y = height - bottom - (height - bottom - top) * seconds * 1000 / max_y
        return round(x, 1), round(y, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2 - 100}" y="22" font-size="14">{title}</text>']
    x0, y0 = px(0, 0)
    x1, _ = px(max_x, 0)
    _, y1 = px(0, max_y / 1000)
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
    for i in range(6):
        size, ms = max_x * i / 5, max_y * i / 5
        x, _ = px(size, 0)
        _, y = px(0, ms / 1000)
        out.append(f'<text x="{x - 12}" y="{y0 + 16}">{size / 1024:.0f}</text>')
        out.append(f'<text x="{x0 - 48}" y="{y + 4}">{ms:.0f}</text>')
        out.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/>')
    out.append(f'<text x="{(x0 + x1) / 2 - 80}" y="{height - 12}">size of the text field (KiB)</text>')
    out.append(f'<text x="14" y="{(y0 + y1) / 2 + 60}" transform="rotate(-90 14 {(y0 + y1) / 2 + 60})">'
               'analysis CPU time (ms)</text>')
    for n, (name, points) in enumerate(results.items()):
        colour = colours[n % len(colours)]
        path = " ".join(f"{x},{y}" for x, y in (px(s, t) for s, t in points))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for s, t in points:
            x, y = px(s, t)
            out.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        ly = top + 18 * n
        out.append(f'<line x1="{width - right + 20}" y1="{ly}" x2="{width - right + 40}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 46}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="comma-separated field sizes in bytes (default: %(default)s)")
    parser.add_argument("--fields", default=",".join(FIELDS), help="comma-separated (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--svg", type=Path, help="write the plot here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        time_analysis(FIELDS["mqtt-topic"](Path(tmp) / "warm-up.pcap", 1024), 1)  # imports, caches
        for name in args.fields.split(","):
            build = FIELDS[name]
            points = results.setdefault(name, [])
            for size in sizes:
                path = build(Path(tmp) / f"{name}-{size}.pcap", size)
                seconds = time_analysis(path, args.repeat)
                points.append((size, seconds))
                print(f"{name:15} {size:8d} B  {seconds * 1000:9.1f} ms CPU", flush=True)
            per_mb, growth = slope(points)
            print(f"{name:15} slope {per_mb:.3f} s/MB, time per byte grows x{growth:.2f} "
                  f"from {sizes[0]} to {sizes[-1]} B", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: [{"size": s, "seconds": t} for s, t in v]
                                         for k, v in results.items()}, indent=1) + "\n")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg_plot(results, "cranewatch analyze: worst-case text fields"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
