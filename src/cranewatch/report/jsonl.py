"""The analysis result as JSON lines: one object per line, each with a ``type``.

Types, in this order: ``input``, ``skipped`` (checks the run could not do, and why:
``skipped.SkippedCheck``), ``host``, ``flow-summary`` (one per protocol),
``modbus-master``, ``modbus-slave``, ``profinet-stream`` (cyclic I/O per sender, receiver and
frame id), ``ftp-data`` (a data connection and its control session), ``warning``, ``incident`` (``Incident.to_json()``) and
``finding`` (exactly ``Finding.to_json()``; both contracts in DESIGN.md). Times are ISO 8601 UTC. Each type has a JSON Schema in
``cranewatch/data/schemas/TYPE.schema.json`` (``schemas()``; docs/jsonl.md describes them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from cranewatch.model import iso_time
from cranewatch.pipeline import AnalysisResult, ModbusPeer
from cranewatch.protocols.ftp import FtpData
from cranewatch.protocols.profinet import RtCyclicSummary
from cranewatch.skipped import SkippedCheck


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every record type of the JSON-lines output, by type."""
    folder = resources.files("cranewatch") / "data" / "schemas"
    out: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".schema.json"):
            schema = json.loads(entry.read_text(encoding="utf-8"))
            out[schema["properties"]["type"]["const"]] = schema
    return out


def _peer(peer: ModbusPeer) -> dict[str, Any]:
    return {
        "type": f"modbus-{peer.role}",
        "address": peer.address,
        "peers": list(peer.peers),
        "units": list(peer.units),
        "functions": {str(fc): n for fc, n in peer.functions},
        "ranges": [{"table": t, "address": a, "quantity": q, "access": access, "requests": n}
                   for t, a, q, access, n in peer.ranges],
        "exceptions": peer.exceptions,
        "first_seen": iso_time(peer.first_seen),
        "last_seen": iso_time(peer.last_seen),
    }


def _profinet_stream(stream: RtCyclicSummary) -> dict[str, Any]:
    return {
        "type": "profinet-stream",
        "file": stream.source or None,
        "src": stream.src,
        "dst": stream.dst,
        "frame_id": stream.frame_id,
        "rt_class": stream.rt_class,
        "frames": stream.frames,
        "first_frame": stream.frame,
        "last_frame": stream.last_frame,
        "first_seen": iso_time(stream.ts),
        "last_seen": iso_time(stream.last_ts),
        "cycle_time": stream.cycle_time,
        "gaps": stream.gaps,
        "missing": stream.missing,
        "repeats": stream.repeats,
        "gap_frames": list(stream.gap_frames),
        "data_status": stream.data_status,
        "status_changes": stream.status_changes,
        "problem_frames": stream.problem_frames,
    }


def _ftp_data(data: FtpData) -> dict[str, Any]:
    control = data.control
    return {
        "type": "ftp-data",
        "file": data.source or None,
        "frame": data.frame or None,
        "client": data.client,
        "client_port": data.client_port,
        "server": data.server,
        "server_port": data.server_port,
        "first_seen": iso_time(data.first_seen),
        "last_seen": iso_time(data.last_seen),
        "packets": data.packets,
        "bytes_to_server": data.bytes_to_server,
        "bytes_to_client": data.bytes_to_client,
        "control": None if control is None else {
            "client": control[0], "client_port": control[1], "server": control[2],
            "server_port": control[3]},
    }


def records(result: AnalysisResult, skipped: Sequence[SkippedCheck] = ()) -> Iterator[dict[str, Any]]:
    for i in result.inputs:
        yield {"type": "input", "path": i.path, "sha256": i.sha256, "format": i.format,
               "packets": i.packets, "first_seen": iso_time(i.first_seen),
               "last_seen": iso_time(i.last_seen), "complete": i.complete,
               "events": i.events, "warnings": list(i.warnings)}
    for check in skipped:
        yield check.to_json()
    for segment in result.segments:
        yield segment.to_json()
    for h in result.hosts:
        yield {"type": "host", "mac": h.mac, "ips": list(h.ips), "packets": h.packets,
               "bytes": h.bytes, "first_seen": iso_time(h.first_seen),
               "last_seen": iso_time(h.last_seen)}
    for p in result.protocols:
        yield {"type": "flow-summary", "protocol": p.protocol, "flows": p.flows,
               "packets": p.packets, "bytes": p.bytes, "clients": p.clients,
               "servers": p.servers}
    for peer in (*result.modbus_masters, *result.modbus_slaves):
        yield _peer(peer)
    for stream in result.profinet_streams:
        yield _profinet_stream(stream)
    for data in result.ftp_data:
        yield _ftp_data(data)
    for w in result.warnings:
        yield w.to_json()
    if result.warnings_suppressed:
        yield {"type": "warning", "kind": "limit", "file": None, "frame": None,
               "message": f"{result.warnings_suppressed} more warnings not listed"}
    for incident in result.incidents:
        yield incident.to_json()
    for f in result.findings:
        yield f.to_json()


# Characters that JSON allows raw inside strings but that line-splitting readers (Python's
# str.splitlines, some SIEM shippers) take for line breaks: escaped, so one record is one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029",
                              "\x1c": "\\u001c", "\x1d": "\\u001d", "\x1e": "\\u001e"})


def json_line(record: Any) -> str:
    """One JSON-lines record: compact, UTF-8 text kept, and nothing in it that any reader could
    take for the end of a line (the attacker writes many of its strings)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def render(result: AnalysisResult, skipped: Sequence[SkippedCheck] = ()) -> str:
    return "".join(json_line(r) for r in records(result, skipped))
