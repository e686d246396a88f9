"""One finding per cause (``detect.aggregate``): outside peers of one rule and target are counted
in one finding whose id depends neither on which peer came first nor on how many there were."""

from __future__ import annotations

import random
from pathlib import Path

from cranewatch.detect.engine import build_sink
from cranewatch.detect.facts import RemoteSession
from cranewatch.model import Severity
from cranewatch.pipeline import analyze
from detect_capture import Capture, Host
from detect_helpers import CMS, PLC, T0, conv, run, sts07

RTU = Host("10.20.7.10", "02:00:0a:14:07:0a")
GATEWAY_MAC = "02:00:0a:14:07:fe"
# A DNP3 link-layer request and its answer (header only: what an Internet scanner sends).
DNP3_REQUEST = bytes.fromhex("056405c901000004e921")
DNP3_ANSWER = bytes.fromhex("0564050b00040100b08d")


def outside_host(i: int) -> Host:
    return Host(f"198.51.{100 + i // 250}.{1 + i % 250}", GATEWAY_MAC)


def dnp3_flood(path: Path, peers: int, order_seed: int | None = None) -> Path:
    """``peers`` outside hosts each open one TCP session to the RTU's DNP3 port, half a second
    apart; ``order_seed`` shuffles which host comes when."""
    cap = Capture(lan="10.20.7.0/24", gateway_mac=GATEWAY_MAC, rng=random.Random(5))
    order = list(range(peers))
    if order_seed is not None:
        random.Random(order_seed).shuffle(order)
    for k, i in enumerate(order):
        cap.tcp(T0 + 0.5 * k, outside_host(i), RTU, 40000 + i, 20000,
                [(True, DNP3_REQUEST, 0.01), (False, DNP3_ANSWER, 0.01)])
    return cap.write(path)


def findings_of(path: Path) -> list:
    return list(analyze([path], sinks=[build_sink(None, None, "RTU-1")]).findings)


def test_hundreds_of_internet_hosts_on_one_service_are_one_finding(tmp_path: Path) -> None:
    (finding,) = findings_of(dnp3_flood(tmp_path / "flood.pcap", 353))
    assert finding.category == "egress" and finding.severity == Severity.HIGH
    assert finding.dst == "10.20.7.10:20000" and finding.count == 353
    assert "exposed to the Internet" in finding.title and "353 outside hosts" in finding.title
    summary = finding.evidence[0].values
    assert summary["peers"] == 353 and len(summary["first_peers"]) == 20
    # the first peers in the order they came, each with its own count, time and bytes
    assert [p["peer"] for p in summary["first_peers"][:3]] == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    first = summary["first_peers"][0]
    assert first["count"] == 1 and first["first_seen"] == "2026-11-18T11:06:40.000000Z"
    # bytes on the wire: 8 frames (handshake, one PDU each way, FIN/FIN/ACK) of 14+20+20 bytes
    # of headers, and the 10-byte DNP3 header each way
    assert first["bytes"] == 8 * 54 + 20
    assert finding.src == "198.51.100.1"
    assert finding.first_seen == T0 and finding.last_seen is not None
    assert abs(finding.last_seen - (T0 + 0.5 * 352)) < 0.01


def test_the_id_holds_whatever_the_peer_order_and_count(tmp_path: Path) -> None:
    (ordered,) = findings_of(dnp3_flood(tmp_path / "a.pcap", 40))
    (shuffled,) = findings_of(dnp3_flood(tmp_path / "b.pcap", 40, order_seed=3))
    (alone,) = findings_of(dnp3_flood(tmp_path / "c.pcap", 1))
    assert ordered.id == shuffled.id == alone.id
    assert shuffled.src != ordered.src  # another host came first, the finding is the same
    assert shuffled.title == ordered.title and shuffled.count == ordered.count == 40
    assert alone.count == 1 and "Inbound TCP/20000 from outside host 198.51.100.1" in alone.title


def test_remote_access_from_outside_hosts_is_one_finding_per_service() -> None:
    sessions = [RemoteSession(ts=T0 + i, frame=i + 1, src=f"203.0.113.{i + 1}", dst=CMS, sport=50000,
                              dport=22, source="t.pcap", protocol="ssh") for i in range(5)]
    sessions.append(RemoteSession(ts=T0 + 9, frame=20, src="203.0.113.1", dst=CMS, sport=50001,
                                  dport=5900, source="t.pcap", protocol="vnc"))
    findings = run(sessions, profile=sts07())
    assert sorted((f.dst, f.count) for f in findings) == [(f"{CMS}:22", 5), (f"{CMS}:5900", 1)]
    ssh = next(f for f in findings if f.dst == f"{CMS}:22")
    assert ssh.severity == Severity.CRITICAL and ssh.evidence[0].values["peers"] == 5
    assert ssh.title == "SSH sessions to cms:22 from 5 outside hosts (5 session(s))"


def test_hosts_of_the_lan_and_terminal_keep_a_finding_each() -> None:
    findings = run([conv("10.20.7.66", PLC, 20000, T0, handshake=True, protocol="dnp3"),
                    RemoteSession(ts=T0, frame=1, src="10.20.0.5", dst=CMS, sport=1, dport=22,
                                  source="t.pcap", protocol="ssh"),
                    RemoteSession(ts=T0, frame=2, src="10.20.0.9", dst=CMS, sport=1, dport=22,
                                  source="t.pcap", protocol="ssh")], profile=sts07())
    ssh = sorted(f.src for f in findings if f.category == "remote-access")
    assert ssh == ["10.20.0.5", "10.20.0.9"]


def test_outbound_fan_out_is_one_finding_per_port() -> None:
    findings = run([conv(CMS, f"198.51.100.{i}", 443, T0 + i) for i in range(1, 8)]
                   + [conv(CMS, "198.51.100.1", 8883, T0 + 20)], profile=sts07())
    by_port = {f.dst.rsplit(":", 1)[1]: f for f in findings if f.dst}
    assert set(by_port) == {"443", "8883"}
    assert by_port["443"].count == 7 and by_port["443"].evidence[0].values["peers"] == 7
    assert by_port["443"].title == "crane host cms talks to 7 outside hosts on port 443 (7 connection(s))"
    assert by_port["8883"].count == 1


def test_internet_scanners_of_one_host_are_one_recon_finding() -> None:
    probes = [conv(f"198.51.100.{s}", PLC, port, T0 + s + port * 0.001, to_server=1, to_client=1,
                   bytes_to_server=60, bytes_to_client=54, sport=33000 + s)
              for s in range(1, 31) for port in range(1, 200, 7)]  # 30 scanners, 29 ports each
    scans = [f for f in run(probes, profile=sts07()) if f.category == "recon"]
    (scan,) = scans
    assert scan.dst == PLC and scan.count == 30 * 29 and scan.evidence[0].values["peers"] == 30
    assert scan.title == "plc scanned by 30 outside hosts (870 probes)"
    assert scan.src == "198.51.100.1"  # the first to come


def test_a_peer_s_bytes_are_those_of_all_its_connections() -> None:
    findings = run([conv("198.51.100.9", PLC, 20000, T0, bytes_to_server=100, bytes_to_client=40),
                    conv("198.51.100.9", PLC, 20000, T0 + 5, bytes_to_server=7, bytes_to_client=3),
                    conv("198.51.100.8", PLC, 20000, T0 + 9, bytes_to_server=1, bytes_to_client=1)],
                   profile=sts07())
    (f,) = findings
    first, second = f.evidence[0].values["first_peers"]
    assert (first["peer"], first["count"], first["bytes"]) == ("198.51.100.9", 2, 150)
    assert (second["peer"], second["count"], second["bytes"]) == ("198.51.100.8", 1, 2)
    assert f.evidence[1].values["bytes_out"] == 107 and f.evidence[1].values["bytes_in"] == 43


def test_a_folded_finding_and_its_incident_match_the_schemas(tmp_path: Path) -> None:
    from cranewatch.cli import main
    from test_jsonl_schemas import problems

    out = tmp_path / "flood.jsonl"
    assert main(["analyze", str(dnp3_flood(tmp_path / "flood.pcap", 30)), "--format", "jsonl",
                 "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert problems(lines) == []
    kinds = [line.split('"type":"', 1)[1].split('"', 1)[0] for line in lines]
    assert kinds.count("finding") == 1 and kinds.count("incident") == 1
