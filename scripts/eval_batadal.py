#!/usr/bin/env python3
"""Reproduce the BATADAL numbers of docs/process.md.

Example: .venv/bin/python scripts/eval_batadal.py ../shared/data/process/batadal --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cranewatch.errors import CranewatchError
from cranewatch.process.batadal import evaluate, format_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[2] / "shared/data/process/batadal")
    parser.add_argument("--target", type=float, default=0.1,
                        help="false alarms per day the thresholds aim at (default 0.1)")
    parser.add_argument("--json", type=Path, help="also write the result document here")
    args = parser.parse_args()
    try:
        result = evaluate(args.folder, args.target)
    except CranewatchError as exc:
        print(f"eval_batadal: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
