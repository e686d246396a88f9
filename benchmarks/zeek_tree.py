"""Build a Zeek cluster's log tree from the real logs of ../shared/data/zeek-logs.

A logger archives each log every hour as ``logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz``
and writes the hour under way to ``logs/current/conn.log``. This builds such a tree for some
hours: each hour holds the real records of every log stream cranewatch reads (the most
common field layout of each stream in the shared logs), repeated ``repeat`` times, with
their times moved into the hour. conn records are written when their connection ends (as
Zeek does), so a conn log's times go back and forth; every ``LONG_EVERY``-th connection lasts
``LONG_SECONDS``, longer than the reader's reorder window. ``flat`` writes the same records
un-rotated (one plain log per stream), to compare an analysis of both.

JSON trees (``json=True``) carry ``_node_name`` as a cluster's JSON logs with the
add-node-names package do. Used by tests/test_zeek_tree.py and benchmarks/bench_zeek_tree.py.

    python benchmarks/zeek_tree.py OUT --hours 24 --repeat 10
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STREAMS = ("conn", "dns", "http", "ssh", "modbus", "ssl", "x509", "mqtt_connect", "mqtt_publish",
           "mqtt_subscribe")
START = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # a Monday
LONG_EVERY = 97
LONG_SECONDS = 1800.0


@dataclass(frozen=True)
class StreamPool:
    """The real records of one log stream: its header lines, field names, types and rows."""

    name: str
    header: list[str]  # '#separator' ... '#types' as the log had them ('#open' left out)
    fields: list[str]
    types: list[str]
    rows: list[list[str]]


def pools(shared_logs: Path) -> dict[str, StreamPool]:
    """Each stream's rows of its most common ``#fields`` layout in the shared logs."""
    out: dict[str, StreamPool] = {}
    for name in STREAMS:
        layouts: Counter[str] = Counter()
        files = sorted(shared_logs.glob(f"*/{name}.log"))
        texts = {f: f.read_text(encoding="utf-8", errors="replace").splitlines() for f in files}
        for lines in texts.values():
            layouts.update(line for line in lines if line.startswith("#fields"))
        if not layouts:
            continue
        fields_line = layouts.most_common(1)[0][0]
        header: list[str] = []
        rows: list[list[str]] = []
        types: list[str] = []
        for lines in texts.values():
            if fields_line not in lines:
                continue
            if not header:
                header = [line for line in lines if line.startswith("#") and not line.startswith(
                    ("#open", "#close", "###"))]
                types = next(line for line in lines if line.startswith("#types")).split("\t")[1:]
            rows.extend(line.split("\t") for line in lines if line and not line.startswith("#"))
        fields = fields_line.split("\t")[1:]
        if "ts" in fields and rows:
            out[name] = StreamPool(name, header, fields, types, rows)
    return out


def _json_value(text: str, type_name: str) -> Any:
    if text == "-":
        return None
    if type_name.startswith(("set[", "vector[")):
        inner = type_name[type_name.index("[") + 1:-1]
        return [] if text == "(empty)" else [_json_value(part, inner) for part in text.split(",")]
    try:
        if type_name in ("count", "int", "port"):
            return int(text)
        if type_name in ("double", "time", "interval"):
            return float(text)
    except ValueError:  # a time the btest baseline masked
        return None
    if type_name == "bool":
        return text == "T"
    return text


def hour_rows(pool: StreamPool, hour: int, repeat: int) -> list[tuple[float, list[str]]]:
    """One hour's records of a stream in the order Zeek writes them, with their times."""
    base = START + hour * 3600
    rows = pool.rows * repeat
    step = 3600.0 / len(rows)
    ts_at = pool.fields.index("ts")
    duration_at = pool.fields.index("duration") if "duration" in pool.fields else None
    out: list[tuple[float, float, list[str]]] = []  # (written at, ts, row)
    for i, row in enumerate(rows):
        written = base + (i + 0.5) * step
        ts = written
        row = list(row)
        if pool.name == "conn" and duration_at is not None:
            long = (hour * len(rows) + i) % LONG_EVERY == LONG_EVERY - 1
            duration = LONG_SECONDS if long else min(_float(row[duration_at]), step * 20)
            row[duration_at] = f"{duration:.6f}"
            ts = written - duration  # logged at its end, stamped with its start
        row[ts_at] = f"{ts:.6f}"
        out.append((written, ts, row))
    out.sort(key=lambda r: r[0])
    return [(ts, row) for _, ts, row in out]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _lines(pool: StreamPool, rows: list[tuple[float, list[str]]], as_json: bool,
           node: str | None) -> list[str]:
    if not as_json:
        return [*pool.header, *("\t".join(row) for _, row in rows)]
    out = []
    for _, row in rows:
        record: dict[str, Any] = {"_path": pool.name} if node is None else {"_path": pool.name, "_node_name": node}
        for name, type_name, text in zip(pool.fields, pool.types, row, strict=False):
            value = _json_value(text, type_name)
            if value is not None:
                record[name] = value
        out.append(json.dumps(record))
    return out


def write_tree(root: Path, shared_logs: Path, hours: int, repeat: int = 1, *, as_json: bool = False,
               node: str | None = None, current: bool = True, flat: Path | None = None) -> dict[str, int]:
    """Write ``root``/logs/... for ``hours`` hours; the last one as logs/current when ``current``.

    Returns the number of records written per stream. ``flat``: also the same records
    un-rotated, one ``<stream>.log`` per stream there.
    """
    counts: Counter[str] = Counter()
    flat_handles = {}
    streams = pools(shared_logs)
    if flat is not None:
        flat.mkdir(parents=True, exist_ok=True)
    for hour in range(hours):
        start = datetime.fromtimestamp(START + hour * 3600, UTC)
        end = datetime.fromtimestamp(START + (hour + 1) * 3600, UTC)
        for name, pool in streams.items():
            rows = hour_rows(pool, hour, repeat)
            counts[name] += len(rows)
            lines = _lines(pool, rows, as_json, node)
            text = "".join(line + "\n" for line in lines)
            if current and hour == hours - 1:
                target = root / "logs" / "current" / f"{name}.log"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            else:
                day = root / "logs" / start.strftime("%Y-%m-%d")
                day.mkdir(parents=True, exist_ok=True)
                stamp = f"{start:%H:%M:%S}-{end:%H:%M:%S}" if end.day == start.day else f"{start:%H:%M:%S}-24:00:00"
                with gzip.open(day / f"{name}.{stamp}.log.gz", "wt", encoding="utf-8", compresslevel=6) as out:
                    out.write(text)
            if flat is not None:
                handle = flat_handles.get(name)
                if handle is None:
                    handle = flat_handles[name] = (flat / f"{name}.log").open("w", encoding="utf-8")
                    if not as_json:
                        handle.write("".join(line + "\n" for line in pool.header))
                handle.write("".join(line + "\n" for line in lines if not line.startswith("#")))
    for handle in flat_handles.values():
        handle.close()
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zeek-logs")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(write_tree(args.out, args.shared, args.hours, args.repeat, as_json=args.json))


if __name__ == "__main__":
    main()
