"""The analysis result as a plain-text summary for a person at a terminal (control characters
in any field escaped: ``report.terminal``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cranewatch.incidents import Incident
from cranewatch.model import Severity, iso_time
from cranewatch.pipeline import AnalysisResult, ModbusPeer
from cranewatch.report.terminal import printable_lines
from cranewatch.skipped import SkippedCheck

MAX_HOSTS = 50
MAX_RANGES = 12
MAX_WARNINGS = 20
MAX_STEPS = 20  # findings shown on an incident's timeline

FUNCTION_NAMES = {
    1: "read coils", 2: "read discrete inputs", 3: "read holding registers",
    4: "read input registers", 5: "write single coil", 6: "write single register",
    7: "read exception status", 8: "diagnostics", 11: "get comm event counter",
    12: "get comm event log", 15: "write multiple coils", 16: "write multiple registers",
    17: "report server id", 20: "read file record", 21: "write file record",
    22: "mask write register", 23: "read/write multiple registers", 24: "read FIFO queue",
    43: "encapsulated interface (device id)",
}


def _when(ts: float | None) -> str:
    """ISO 8601 UTC to the second, as in the JSON lines (which keep the microseconds)."""
    text = iso_time(ts)
    return f"{text[:19]}Z" if text else "-"


def _peer_lines(peer: ModbusPeer) -> list[str]:
    other = "slaves" if peer.role == "master" else "masters"
    lines = [f"  {peer.address}  units {','.join(map(str, peer.units))}  "
             f"{other} {', '.join(peer.peers)}"]
    functions = ", ".join(f"FC{fc} {FUNCTION_NAMES.get(fc, 'code ' + str(fc))} ×{n}"
                          for fc, n in peer.functions)
    lines.append(f"      functions: {functions}")
    if peer.exceptions:
        lines.append(f"      exception responses: {peer.exceptions}")
    ranked = sorted(peer.ranges, key=lambda r: (-r[4], r[0], r[1]))
    for table, address, quantity, access, count in ranked[:MAX_RANGES]:
        last = address + quantity - 1
        lines.append(f"      {access:5} {table} {address}–{last} ({quantity})  ×{count}")
    if len(ranked) > MAX_RANGES:
        lines.append(f"      … {len(ranked) - MAX_RANGES} more ranges")
    return lines


def incident_lines(incidents: tuple[Incident, ...]) -> list[str]:
    """The incidents first: each with its severity, time, hosts and its findings in time order."""
    lines = [f"Incidents ({len(incidents)})"]
    for n in incidents:
        lines.append(f"  {str(n.severity).upper():8} {n.title}  ({n.id})")
        assets = ", ".join(n.assets) if n.assets else "-"
        lines.append(f"      {_when(n.first_seen)} → {_when(n.last_seen)}  hosts {assets}")
        for step in n.timeline[:MAX_STEPS]:
            lines.append(f"      {_when(step.at)}  [{step.category}] {step.title}  ({step.finding})")
        if len(n.timeline) > MAX_STEPS:
            lines.append(f"      … {len(n.timeline) - MAX_STEPS} more findings (see Findings below)")
    if not incidents:
        lines.append("  none")
    lines.append("")
    return lines


def render(result: AnalysisResult, skipped: Sequence[SkippedCheck] = ()) -> str:
    """The text report; ``skipped``: what the run could not check (``skipped.skipped_checks``)."""
    out: list[str] = []
    add = out.append
    add("cranewatch analysis")
    add("")
    out.extend(incident_lines(result.incidents))
    add("Inputs")
    for i in result.inputs:
        state = "ok" if i.complete else "INCOMPLETE"
        amount = f"{i.events:,} events" if i.format == "zeek" else f"{i.packets:,} packets"
        add(f"  {i.path}  {i.format}  {amount}  "
            f"{_when(i.first_seen)} → {_when(i.last_seen)}  {state}")
        add(f"      sha256 {i.sha256}")
    if result.profile or result.baseline:
        add(f"  profile {result.profile or '-'}  baseline {result.baseline or '-'}")
    add("")
    if skipped:
        add(f"Not checked ({len(skipped)})")
        for check in skipped:
            add(f"  {check}")
        add("")
    if len(result.segments) > 1 or any(len(s.files) > 1 for s in result.segments):
        add(f"Segments ({len(result.segments)}: compared within, never across)")
        for segment in result.segments:
            add(f"  {segment.number}  {_when(segment.start)} → {_when(segment.end)}  "
                f"{segment.packets:,} packets")
            for part in segment.files:
                add(f"      {part.path}  frames {part.first_frame}–{part.last_frame}")
            for reason in segment.reasons:
                add(f"      cut: {reason}")
        add("")
    add(f"Hosts ({len(result.hosts)})")
    for h in result.hosts[:MAX_HOSTS]:
        ips = ", ".join(h.ips) if h.ips else "-"
        add(f"  {h.mac or '(no MAC)':17}  {ips}  {h.packets:,} packets  "
            f"{_when(h.first_seen)} → {_when(h.last_seen)}")
    if len(result.hosts) > MAX_HOSTS:
        add(f"  … {len(result.hosts) - MAX_HOSTS} more hosts (see --format jsonl)")
    add("")
    add(f"Flows by protocol ({result.flows:,} flows)")
    for p in result.protocols:
        add(f"  {p.protocol:16} {p.flows:8,} flows {p.packets:12,} packets {p.bytes:14,} bytes  "
            f"{p.clients} clients → {p.servers} servers")
    add("")
    add(f"Modbus masters ({len(result.modbus_masters)})")
    for peer in result.modbus_masters:
        out.extend(_peer_lines(peer))
    add(f"Modbus slaves ({len(result.modbus_slaves)})")
    for peer in result.modbus_slaves:
        out.extend(_peer_lines(peer))
    add("")
    total_warnings = len(result.warnings) + result.warnings_suppressed
    add(f"Warnings ({total_warnings})")
    for w in result.warnings[:MAX_WARNINGS]:
        add(f"  {w}")
    if total_warnings > MAX_WARNINGS:
        add(f"  … {total_warnings - MAX_WARNINGS} more (see --format jsonl)")
    add("")
    by_severity = Counter(f.severity for f in result.findings)
    counts = ", ".join(f"{by_severity[s]} {s}" for s in sorted(by_severity, reverse=True))
    add(f"Findings ({len(result.findings)}{': ' + counts if counts else ''})")
    for severity in sorted(Severity, reverse=True):
        group = [f for f in result.findings if f.severity == severity]
        if not group:
            continue
        add(f"  {str(severity).upper()}")
        for f in group:
            where = " → ".join(x for x in (f.src, f.dst) if x)
            add(f"    [{f.category}] {f.title}  ×{f.count}  {where}  ({f.rule}, {f.id})")
            if f.remedy:
                add(f"        remedy: {f.remedy}")
    if not result.findings:
        add("  none")
    return printable_lines(out)

