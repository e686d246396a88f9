"""``cranewatch signals CAPTURE... --out FILE``: export the crane's signal samples read off the wire.

Long form (one row per sample: time, signal, value, unit, origin, frame) or, with ``--wide``,
one row per grid instant with a column per signal (sample-and-hold, as the checks see them).
CSV always; Parquet when the output ends in ``.parquet`` (pyarrow: ``pip install 'cranewatch[parquet]'``).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cranewatch.commands import check_inputs, out_file, write_out
from cranewatch.errors import EnvironmentProblem, ExitCode, Location, UsageError
from cranewatch.model import iso_time
from cranewatch.process.signals import Signal, SignalFrame, build_frame

LONG_COLUMNS = ("time", "epoch", "signal", "value", "unit", "origin", "frame")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "signals",
        help="export crane signal samples (register map applied) as CSV or Parquet",
        description="Read Modbus reads and writes from captures, apply the profile's register "
        "map (table, address, type, scale, unit) and write every sample of every crane signal. "
        "The same register read by several masters is one signal; the origin column says who "
        "read or wrote each sample.\n\n"
        "Example:\n  cranewatch signals normal.pcap --profile sts-07.toml --out signals.csv\n"
        "  cranewatch signals normal.pcap --profile sts-07.toml --wide --out signals.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap/pcapng captures")
    parser.add_argument("--profile", metavar="P",
                        help="crane profile (TOML) with the register map (required: no crane is built in)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output file: .csv, or .parquet (needs pip install 'cranewatch[parquet]'); "
                        "- for CSV on standard output")
    parser.add_argument("--wide", action="store_true",
                        help="one row per grid instant, one column per signal")
    parser.set_defaults(func=run)


def long_rows(signals: Mapping[str, Signal]) -> dict[str, list[Any]]:
    """Every sample of every signal, in time order, as columns."""
    names = sorted(signals)
    ts = np.concatenate([signals[n].ts for n in names]) if names else np.zeros(0)
    order = np.argsort(ts, kind="stable")
    cols: dict[str, list[Any]] = {
        "epoch": ts[order].tolist(),
        "signal": np.concatenate([[n] * len(signals[n].ts) for n in names])[order].tolist()
        if names else [],
        # Engineering values to register resolution (no binary-fraction noise in the file).
        "value": np.round(np.concatenate([signals[n].values for n in names])[order], 6).tolist()
        if names else [],
        "unit": np.concatenate([[signals[n].spec.unit] * len(signals[n].ts) for n in names])[order].tolist()
        if names else [],
        "origin": np.concatenate([np.array(signals[n].origins, dtype=object)[signals[n].origin]
                                  for n in names])[order].tolist() if names else [],
        "frame": np.concatenate([signals[n].frames for n in names])[order].tolist() if names else [],
    }
    cols["time"] = [iso_time(t) for t in cols["epoch"]]
    return {k: cols[k] for k in LONG_COLUMNS}


def wide_rows(frame: SignalFrame) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {"time": [iso_time(t) for t in frame.t.tolist()],
                                  "epoch": frame.t.tolist()}
    for name in sorted(frame.columns):
        unit = frame.specs[name].unit
        cols[f"{name} [{unit}]" if unit else name] = [
            None if v != v else v for v in np.round(frame.columns[name], 6).tolist()]
    return cols


def wide_segment_rows(frames: Sequence[SignalFrame]) -> dict[str, list[Any]]:
    """``wide_rows`` of each segment's own grid, one after the other (a grid never spans the
    gap between two recordings); a ``segment`` column (1, 2, ...) when there are several."""
    if len(frames) == 1:
        return wide_rows(frames[0])
    parts = [wide_rows(frame) for frame in frames]
    names = list(dict.fromkeys(["time", "epoch", *sorted({n for p in parts for n in p} - {"time", "epoch"})]))
    cols: dict[str, list[Any]] = {"segment": []}
    cols.update({name: [] for name in names})
    for number, part in enumerate(parts, start=1):
        rows = len(part["time"])
        cols["segment"].extend([number] * rows)
        for name in names:
            cols[name].extend(part.get(name, [None] * rows))
    return cols


def write_table(columns: Mapping[str, list[Any]], out: Path | None) -> None:
    """CSV or Parquet by ``out``'s suffix; None: CSV on standard output."""
    if out is not None and out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise EnvironmentProblem(
                "writing Parquet needs pyarrow, the optional extra 'parquet': "
                "pip install 'cranewatch[parquet]' (or write a .csv)") from None
        try:
            pq.write_table(pa.table(dict(columns)), out)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc}", Location(file=str(out))) from exc
        return
    if out is not None and out.suffix not in (".csv", ""):
        raise UsageError(f"--out {out}: write .csv or .parquet")
    names = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(zip(*(columns[n] for n in names), strict=True))
    write_out(buffer.getvalue(), None if out is None else str(out))


def run(args: argparse.Namespace) -> int:
    from cranewatch.process.engine import read_captures

    check_inputs(args.captures)
    if not args.profile:
        # No crane is built in: without a register map no register is a crane signal.
        raise UsageError("signals needs --profile P: the crane profile whose register map names "
                         "the signals (e.g. --profile profiles/sts-07.toml)")
    from cranewatch.profile import load_profile

    profile = load_profile(args.profile)
    sink = read_captures(args.captures, profile)
    signals = sink.signals()
    path = out_file(args.out)
    out = None if path is None else Path(path)
    if args.wide:
        frames = [frame for _, frame, _ in sink.frames()] or [build_frame(signals)]
        columns = wide_segment_rows(frames)
    else:
        columns = long_rows(signals)
    write_table(columns, out)
    rows = len(next(iter(columns.values()), []))
    print(f"{len(signals)} signals, {rows} rows written to {out or 'standard output'}",
          file=sys.stdout if out else sys.stderr)
    return int(ExitCode.OK)
