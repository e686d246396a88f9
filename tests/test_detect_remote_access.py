"""remote-access: recognised by first bytes on any port, both directions; allowed ones quiet."""

from __future__ import annotations

from typing import Any

import pytest

from cranewatch.detect.base import Context
from cranewatch.detect.engine import DetectionSink
from cranewatch.detect.facts import RemoteSession
from cranewatch.detect.remote_access import identify_remote
from cranewatch.detect.rules import rule_data
from cranewatch.model import Severity
from cranewatch.profile import parse_profile
from detect_helpers import CMS, EWS, PLC, REPO, T0, learn, run, sts07


def examples() -> list[tuple[str, dict[str, str]]]:
    return [(name, ex) for name, spec in rule_data("remote_access")["protocols"].items()
            for ex in spec["examples"]]


@pytest.mark.parametrize(("protocol", "example"), examples())
def test_rule_data_examples_identify_their_protocol(protocol: str, example: dict[str, str]) -> None:
    client = bytes.fromhex(example.get("client", ""))
    server = bytes.fromhex(example.get("server", ""))
    assert identify_remote(client, server) == protocol


@pytest.mark.parametrize(("client", "server"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n"),
    (b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x0a", b""),  # Modbus read
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b""),  # TLS ClientHello
    (b"\x03\x00\x00\x16\x11\xe0\x00\x00\x00\x01\x00\xc1\x02\x01\x00\xc2\x02\x01\x02\xc0\x01\x0a", b""),  # S7 COTP CR
])
def test_other_protocols_are_not_remote_access(client: bytes, server: bytes) -> None:
    assert identify_remote(client, server) is None


class _Flow:
    def __init__(self, client: str, server: str, client_port: int, server_port: int) -> None:
        self.client, self.server = client, server
        self.client_port, self.server_port = client_port, server_port
        self.transport, self.source = "tcp", "t.pcap"


def _payload_run(flow: _Flow, exchanges: list[tuple[bool, bytes]], ctx: Context) -> list[Any]:
    sink = DetectionSink(ctx)
    for i, (from_client, data) in enumerate(exchanges):
        sink.on_payload(flow, from_client, data, T0 + i, 10 + i)
    return sink.finish()


def test_ssh_on_port_443_inbound_from_outside_is_critical() -> None:
    flow = _Flow("203.0.113.77", CMS, 51515, 443)
    findings = _payload_run(flow, [(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
                                   (True, b"SSH-2.0-OpenSSH_8.4\r\n")], Context(profile=sts07()))
    (f,) = [f for f in findings if f.category == "remote-access"]
    assert f.severity == Severity.CRITICAL and f.src == "203.0.113.77" and f.dst == f"{CMS}:443"
    assert "T0822" in f.technique and "into the crane zone" in f.title
    assert f.evidence[0].frames == (10,)


def test_outbound_ssh_from_a_crane_host_reads_as_reverse_tunnel() -> None:
    flow = _Flow(CMS, "198.51.100.4", 40001, 2222)
    findings = _payload_run(flow, [(True, b"SSH-2.0-dropbear_2022.83\r\n")], Context(profile=sts07()))
    (f,) = [f for f in findings if f.category == "remote-access"]
    assert "reverse tunnel" in f.title and f.dst == "198.51.100.4:2222"


def test_vnc_inside_the_terminal_to_crane_path_is_high() -> None:
    flow = _Flow(EWS, PLC, 40002, 5900)
    findings = _payload_run(flow, [(False, b"RFB 003.008\n")], Context(profile=sts07()))
    (f,) = [f for f in findings if f.category == "remote-access"]
    assert f.severity == Severity.HIGH and "VNC" in f.title


def test_a_session_the_profile_allows_is_quiet() -> None:
    text = (REPO / "profiles" / "sts-07.toml").read_text() + """
[[allow]]
client = "ews"
server = "cms"
protocol = "ssh"
port = 22
"""
    profile = parse_profile(text)
    session = RemoteSession(ts=T0, frame=1, src=EWS, dst=CMS, sport=40000, dport=22,
                            source="t.pcap", protocol="ssh", detail="SSH-2.0-OpenSSH_9.2")
    assert run([session], profile=profile) == []
    assert [f.category for f in run([session], profile=sts07())] == ["remote-access"]


def test_a_session_the_baseline_had_is_low() -> None:
    session = RemoteSession(ts=T0, frame=1, src="10.1.1.5", dst="10.1.1.9", sport=40000, dport=22,
                            source="t.pcap", protocol="ssh")
    baseline = learn([session])
    (f,) = run([session], baseline=baseline)
    assert f.severity == Severity.LOW


def test_sessions_to_two_ports_of_one_host_are_two_findings() -> None:
    # The same outsider on the CMS's SSH port and, hidden, on 443: two ways in, each reported
    # with its own port (one finding would name only the first).
    ctx = Context(profile=sts07())
    sink = DetectionSink(ctx)
    for i, port in enumerate((22, 443, 22)):
        sink.on_payload(_Flow("203.0.113.77", CMS, 50000 + i, port), False,
                        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", T0 + i, 10 + i)
    found = sorted((f.dst, f.count) for f in sink.finish() if f.category == "remote-access")
    assert found == [(f"{CMS}:22", 2), (f"{CMS}:443", 1)]


def test_a_session_through_a_web_proxy_is_judged_by_where_the_proxy_goes() -> None:
    from cranewatch.detect.facts import HttpRequest

    ctx = Context(profile=sts07())
    sink = DetectionSink(ctx)
    proxy = "10.20.0.60"
    where = {"src": CMS, "dst": proxy, "sport": 40001, "dport": 3128, "source": "t.pcap"}
    sink.feed(HttpRequest(**where, ts=T0, frame=10, method="CONNECT", host="198.51.100.7:443",
                          uri="198.51.100.7:443"))
    sink.feed(RemoteSession(**where, ts=T0 + 0.1, frame=12, protocol="ssh",
                            detail="SSH-2.0-OpenSSH_9.2p1"))
    # the same session to the proxy without a CONNECT stays a terminal-zone session
    sink.feed(RemoteSession(**{**where, "sport": 40002}, ts=T0 + 1, frame=20, protocol="ssh",
                            detail="SSH-2.0-OpenSSH_9.2p1"))
    (f,) = [f for f in sink.finish() if f.category == "remote-access"]
    assert "→ 10.20.0.60:3128 through the proxy to 198.51.100.7:443" in f.title
    assert f.severity == Severity.CRITICAL and f.count == 2 and "T0822" in f.technique


# OpenVPN's opening as RFC-less but stable framing (openvpn/src/openvpn/ssl_pkt.h): opcode in the
# high 5 bits (7 = client hard reset v2, 8 = server hard reset v2), key id, 8-byte session id.
OVPN_CLIENT = bytes([7 << 3]) + bytes.fromhex("5d1e2f3a4b5c6d7e") + bytes.fromhex("0000000000")
OVPN_SERVER = bytes([8 << 3]) + bytes.fromhex("a1b2c3d4e5f60718") + bytes.fromhex("01000000005d1e2f3a4b5c6d7e00000000")


def test_openvpn_is_recognised_by_both_hard_resets_over_udp_and_tcp() -> None:
    assert identify_remote(OVPN_CLIENT, OVPN_SERVER) == "openvpn"
    framed = [len(p).to_bytes(2, "big") + p for p in (OVPN_CLIENT, OVPN_SERVER)]
    assert identify_remote(framed[0], framed[1]) == "openvpn"
    # one side alone, or a server that answers with another opcode, is not enough on UDP
    assert identify_remote(OVPN_CLIENT, b"") is None
    assert identify_remote(OVPN_CLIENT, bytes([4 << 3]) + OVPN_SERVER[1:]) is None
    assert identify_remote(bytes([7 << 3]) + bytes(12), OVPN_SERVER) is None  # no session id


def test_an_openvpn_tunnel_out_of_the_crane_is_critical() -> None:
    flow = _Flow(CMS, "198.51.100.7", 40123, 1194)
    flow.transport = "udp"
    findings = _payload_run(flow, [(True, OVPN_CLIENT), (False, OVPN_SERVER)], Context(profile=sts07()))
    (f,) = [f for f in findings if f.category == "remote-access"]
    assert f.severity == Severity.CRITICAL and f.dst == "198.51.100.7:1194"
    assert f.title.startswith("OPENVPN session out of the crane zone")
