"""The detectors on Zeek logs: for every pair of ../shared/data/zeek-logs/INDEX.tsv, the
findings from the logs equal the findings from the capture, for what the logs carry.

Compared as (category, source, destination). Each known difference is listed with its reason;
logs without a conn.log cannot show the egress a capture shows (Zeek's connection summary is
where flows come from), so egress is left out of those comparisons.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cranewatch.detect.engine import build_sink
from cranewatch.model import Finding
from cranewatch.pipeline import analyze

zeek = pytest.importorskip("cranewatch.sources.zeek")

KNOWN = {
    # RDP spoken to TCP/502 by an Internet scanner: cranewatch recognises RDP by its bytes;
    # Zeek's conn.log gives the connection no service, so the logs show only egress.
    "scripts.base.protocols.modbus.modbus_and_non_modbus_on_port_502": {
        "logs": {("egress", "62.122.184.123", "192.168.10.111:502")},
        "pcap": {("remote-access", "62.122.184.123", "192.168.10.111:502")}},
    # (scripts.base.protocols.modbus.exception_handling, the fuzzed stream fuzz-72, was listed
    # here: Zeek logs 4 of its 7 exception answers, under the probing rule's five; its
    # undefined function codes now give the logs the capture's recon finding too.)
    # A malformed Modbus request (fuzz-1011): modbus.log has no field that says a request was
    # malformed, so only the capture gives the "malformed Modbus requests" recon finding.
    "scripts.base.protocols.modbus.register_parsing": {
        "logs": set(), "pcap": {("recon", "10.1.1.234", "10.10.5.104:502")}},
}


def key(findings: list[Finding] | tuple[Finding, ...]) -> set[tuple[str, str | None, str | None]]:
    """(category, src, dst) of each finding; a finding folded over outside peers
    (``detect.aggregate``) gives one per peer it lists: its first peer is the earliest one, and
    Zeek's test logs have every time set to 0, so logs and capture name different first peers."""
    out: set[tuple[str, str | None, str | None]] = set()
    for f in findings:
        peers = [p["peer"] for e in f.evidence for p in e.values.get("first_peers", ())]
        if not peers:
            out.add((f.category, f.src, f.dst))
        elif f.src == peers[0]:  # many clients of one service
            out |= {(f.category, peer, f.dst) for peer in peers}
        else:  # one crane host to many outside servers on one port
            port = (f.dst or "").rsplit(":", 1)[-1]
            out |= {(f.category, f.src, f"{peer}:{port}") for peer in peers}
    return out


def pairs(root: Path) -> list[dict[str, str]]:
    with open(root / "zeek-logs" / "INDEX.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_logs_and_captures_give_the_same_findings(shared_data: Path) -> None:
    compared = 0
    for row in pairs(shared_data):
        logs = zeek.read_zeek([shared_data / "zeek-logs" / row["baseline"]])
        trimmed = any("endpoints absent" in note for note in logs.notes)
        sink = build_sink(None, None, "X")
        for event in logs.events:
            sink.on_event(event)
        from_logs = key(sink.finish())
        from_pcap = key(analyze([shared_data / "pcaps" / row["trace_in_shared_pcaps"]],
                                sinks=[build_sink(None, None, "X")]).findings)
        if "conn.log" not in row["logs"].split() or trimmed:
            # without (usable) connection summaries the logs carry no flows
            from_pcap = {k for k in from_pcap if k[0] not in ("egress", "remote-access")
                         or (any(x in row["logs"] for x in ("ssh.log",)) and k[0] == "remote-access")}
        known = KNOWN.get(row["baseline"], {"logs": set(), "pcap": set()})
        assert from_logs - known["logs"] == from_pcap - known["pcap"], row["baseline"]
        assert known["logs"] <= from_logs and known["pcap"] <= from_pcap, row["baseline"]
        compared += 1
    assert compared == len(pairs(shared_data)) == 85


def test_ssh_sessions_from_logs_and_capture(shared_data: Path) -> None:
    """The richest pair: ssh.pcap has sessions between seven host pairs in and out of
    private networks."""
    row = next(r for r in pairs(shared_data) if r["baseline"] == "scripts.base.protocols.ssh.basic")
    logs = zeek.read_zeek([shared_data / "zeek-logs" / row["baseline"]])
    sink = build_sink(None, None, "X")
    for event in logs.events:
        sink.on_event(event)
    found = [f for f in sink.finish() if f.category == "remote-access"]
    # seven client/server pairs; 192.168.2.1 reaches 192.168.2.158's SSH on 22 and on 2200:
    # two services, two findings
    assert len(found) == 8
    assert {f.dst for f in found if f.src == "192.168.2.1"} == {"192.168.2.158:22",
                                                                "192.168.2.158:2200"}
    outbound = [f for f in found if "reverse tunnel" in f.title]
    assert {f.dst for f in outbound} >= {"131.159.21.1:22", "128.2.10.238:22"}
