"""Run every detector over a set of captures and print a Markdown table of what was found.

Used to regenerate the public-capture table of ``docs/detections.md``::

    python -m cranewatch.detect.survey ../shared/data/pcaps/MANIFEST.tsv

With a MANIFEST.tsv (path and protocols per capture), only captures speaking an industrial
protocol cranewatch decodes are run, each content (sha256) once; with capture paths, those.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from cranewatch.model import Finding

ICS_PROTOCOLS = frozenset({"s7comm", "enip", "cip", "mbtcp", "opcua"})
MAX_PACKETS = 200_000


def manifest_captures(manifest: Path) -> Iterator[tuple[Path, str, int]]:
    seen: set[str] = set()
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if not set(row["protocols"].split(",")) & ICS_PROTOCOLS:
                continue
            if int(row["packets"]) > MAX_PACKETS or row["sha256"] in seen:
                continue
            seen.add(row["sha256"])
            yield manifest.parent / row["path"], row["path"], int(row["packets"])


def label(f: Finding) -> str:
    """A finding's kind without the hosts, so one row groups like findings."""
    if f.category == "safety-override" and "no profile or baseline" in f.title:
        return "Modbus writes (no profile/baseline)"
    if f.category == "egress":
        return "inbound from Internet hosts" if f.title.startswith("Inbound") else "outbound to Internet hosts"
    if "illegal function/address" in f.title:
        return "illegal function/address answers"
    return f.title.split(" by ")[0].split(" (")[0]


def row(findings: Sequence[Finding]) -> str:
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    for f in findings:
        groups[(f.category, str(f.severity), label(f))].append(f)
    if not groups:
        return "—"
    return "; ".join(
        f"**{c}** {s}: {text} ({len(fs)} finding{'s' if len(fs) > 1 else ''}, "
        f"{sum(x.count for x in fs)} events)"
        for (c, s, text), fs in sorted(groups.items()))


def main(argv: Sequence[str]) -> int:
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    items: list[tuple[Path, str, int]] = []
    for arg in argv:
        path = Path(arg)
        if path.name == "MANIFEST.tsv":
            items.extend(manifest_captures(path))
        else:
            items.append((path, str(path), 0))
    print("| capture | packets | findings |\n|---|---|---|")
    for path, name, _ in items:
        result = analyze([path], sinks=[build_sink()])
        print(f"| `{name.replace('ICS-Security-Tools/pcaps/', '')}` | {result.packets} | "
              f"{row(result.findings)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
