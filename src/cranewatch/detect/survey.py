"""Run every detector over a set of captures and print a Markdown table of what was found.

Used to regenerate the tables of ``docs/detections.md``::

    python -m cranewatch.detect.survey ../shared/data/pcaps/MANIFEST.tsv
    python -m cranewatch.detect.survey --lab src/cranewatch/data/lab --profile profiles/sts-07.toml

With a MANIFEST.tsv (path and protocols per capture), only captures speaking an industrial
protocol cranewatch decodes are run, each content (sha256) once; with capture paths, those.
With ``--lab``, every scenario of the lab's bundled data is analysed against the ``normal``
baseline (and the profile, if given) and listed beside its labels.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cranewatch.model import Finding, Severity

if TYPE_CHECKING:
    from cranewatch.profile import CraneProfile

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
    if f.rule == "plc-write" and "no profile or baseline" in f.title:
        return "Modbus writes (no profile/baseline)"
    if f.category == "egress":
        return "inbound from Internet hosts" if f.title.startswith("Inbound") else "outbound to Internet hosts"
    if "illegal function/address" in f.title:
        return "illegal function/address answers"
    if "malformed Modbus request" in f.title:
        return "malformed Modbus requests"
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


def lab_table(lab: Path, profile: CraneProfile | None) -> None:
    import json

    from cranewatch.baseline import learn_baseline
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    baseline = learn_baseline([lab / "normal" / "crane-lan.pcap"])
    print("| scenario | labelled attacks | findings of medium severity and above |\n|---|---|---|")
    for scenario in sorted(d for d in lab.iterdir() if (d / "labels.json").exists()):
        if scenario.name == "normal":
            continue
        labels = json.loads((scenario / "labels.json").read_text())
        result = analyze([scenario / "crane-lan.pcap"], sinks=[build_sink(profile, baseline)])
        start = labels["start"]
        attacks = "<br>".join(f"{a['category']} {a['src']} → {a['dst']} "
                              f"(+{a['start'] - start:.1f}–{a['end'] - start:.1f} s)"
                              for a in labels.get("attacks", [])) or "— (clean)"
        found = "<br>".join(f"**{f.severity}** {f.category} {f.src} → {f.dst} "
                            f"(+{(f.first_seen or start) - start:.1f} s, ×{f.count}): {f.title}"
                            for f in result.findings if f.severity >= Severity.MEDIUM) or "—"
        print(f"| {scenario.name} | {attacks} | {found} |")


def main(argv: Sequence[str]) -> int:
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    if argv and argv[0] == "--lab":
        from cranewatch.profile import load_profile

        profile = load_profile(argv[argv.index("--profile") + 1]) if "--profile" in argv else None
        lab_table(Path(argv[1]), profile)
        return 0
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
