"""The adapter reads the decoders' real event classes: a renamed field must fail here, not
silently blind a detector. Each protocol's test skips until its decoder is in the checkout."""

from __future__ import annotations

from typing import Any

import pytest

from cranewatch.detect import adapt
from cranewatch.detect.facts import (
    Binding,
    DnsQuery,
    HttpRequest,
    MqttPublish,
    Payload,
    PlcCommand,
    TlsHello,
)
from detect_helpers import T0

WHERE: dict[str, Any] = {"ts": T0, "frame": 9, "src": "10.20.7.20", "dst": "10.20.0.8", "sport": 40000,
                         "dport": 53, "source": "t.pcap"}


def facts(event: Any) -> list[Any]:
    return list(adapt.facts_from_event(event))


def test_dns_query_names() -> None:
    dns = pytest.importorskip("cranewatch.protocols.dns")
    event = dns.DnsQueryRequest(**WHERE, transaction_id=1, opcode=0, qname="a.example", qtype=16,
                                qnames=("a.example", "b.example"))
    out = facts(event)
    assert out == [DnsQuery(**WHERE, name="a.example", qtype="TXT"),
                   DnsQuery(**WHERE, name="b.example", qtype="TXT")]
    response = dns.DnsQueryResponse(**WHERE, transaction_id=1, opcode=0, qname="a.example", qtype=1)
    assert facts(response) == []  # answers are not questions


def test_tls_client_hello() -> None:
    tls = pytest.importorskip("cranewatch.protocols.tls")
    event = tls.TlsClientHelloRequest(**{**WHERE, "dport": 443}, version=0x0303, sni="x.example",
                                      ja3="771,4865,0,29,0", ja3_md5="ab" * 16, ja4="t13d0101h1_x_y")
    (hello,) = facts(event)
    assert isinstance(hello, TlsHello)
    assert (hello.sni, hello.ja3, hello.ja4) == ("x.example", "ab" * 16, "t13d0101h1_x_y")


def test_mqtt_publish() -> None:
    mqtt = pytest.importorskip("cranewatch.protocols.mqtt")
    event = mqtt.MqttPublishRequest(**{**WHERE, "dport": 1883}, topic="t/ocr", qos=0, payload=b"{}")
    assert facts(event) == [MqttPublish(**{**WHERE, "dport": 1883}, topic="t/ocr", payload=b"{}")]


def test_http_request_and_response_bodies() -> None:
    http = pytest.importorskip("cranewatch.protocols.http")
    request = http.HttpRequest(**{**WHERE, "dport": 80}, method="POST", uri="/up", version="HTTP/1.1",
                               host="c.example", body=b"CSQU3054383")
    (fact,) = facts(request)
    assert isinstance(fact, HttpRequest) and fact.body == b"CSQU3054383" and fact.host == "c.example"
    response = http.HttpResponse(**{**WHERE, "src": "10.20.7.30", "dst": "198.51.100.9", "sport": 8080},
                                 status=200, reason="OK", version="HTTP/1.1", body=b"CSQU3054383")
    (payload,) = facts(response)
    assert isinstance(payload, Payload) and payload.from_client and payload.dst == "198.51.100.9"


def test_s7_jobs_become_plc_commands() -> None:
    s7 = pytest.importorskip("cranewatch.protocols.s7comm")
    base = {**WHERE, "dport": 102, "pdu_ref": 1}
    stop = facts(s7.S7JobRequest(**base, function=0x29))
    assert [f.operation for f in stop] == ["cpu-stop"]
    delete = facts(s7.S7JobRequest(**base, function=0x28, pi_service="_DELE", block="OB1"))
    assert [(f.operation, f.target) for f in delete] == [("block-delete", "OB1")]
    assert facts(s7.S7JobRequest(**base, function=0x04)) == []  # read var is not control
    assert facts(s7.S7JobRequest(**base, function=0x1B)) == []  # the PLC's own download jobs


def test_cip_and_opcua() -> None:
    enip = pytest.importorskip("cranewatch.protocols.enip")
    stop = enip.CipRequest(**{**WHERE, "dport": 44818}, service=0x07, classes=(0x8E,),
                           operation=enip.operation_of(0x07, (0x8E,)))
    (fact,) = facts(stop)
    assert isinstance(fact, PlcCommand) and fact.operation == "cip-stop"
    opcua = pytest.importorskip("cranewatch.protocols.opcua")
    write = opcua.OpcuaServiceRequest(**{**WHERE, "dport": 4840}, service_id=673)
    assert [f.operation for f in facts(write)] == ["opcua-write"]
    read = opcua.OpcuaServiceRequest(**{**WHERE, "dport": 4840}, service_id=631)
    assert facts(read) == []


def test_arp_binding() -> None:
    arp = pytest.importorskip("cranewatch.protocols.arp")
    reply = arp.ArpResponse(ts=T0, frame=3, src="02:5c:11:0a:77:c3", dst="02:00:00:00:00:1e",
                            operation=2, sender_mac="02:5c:11:0a:77:c3", sender_ip="10.20.7.199",
                            target_mac="02:00:00:00:00:1e", target_ip="10.20.7.30")
    (binding,) = facts(reply)
    assert binding == Binding(ts=T0, frame=3, src="02:5c:11:0a:77:c3", dst="02:00:00:00:00:1e",
                              ip="10.20.7.199", mac="02:5c:11:0a:77:c3")
    probe = arp.ArpEvent(ts=T0, frame=4, src="02:00:00:00:00:1e", dst="ff:ff:ff:ff:ff:ff",
                         operation=1, sender_mac="02:00:00:00:00:1e", sender_ip="0.0.0.0",
                         target_mac="00:00:00:00:00:00", target_ip="10.20.7.5")
    assert facts(probe) == []  # an address probe binds nothing


def test_dhcp_offer_and_ack() -> None:
    dhcp = pytest.importorskip("cranewatch.protocols.dhcp")
    where = {**WHERE, "src": "10.20.7.200", "dst": "255.255.255.255", "sport": 67, "dport": 68}
    offer = dhcp.DhcpMessageResponse(**where, message_type="offer", transaction_id=7,
                                     client_mac="02:00:00:00:07:21", your_ip="10.20.7.21",
                                     server_id="10.20.7.200", router=("10.20.7.200",), dns_servers=("8.8.8.8",))
    (msg,) = facts(offer)
    assert (msg.message_type, msg.server_ip, msg.router, msg.dns) == ("offer", "10.20.7.200", ("10.20.7.200",), ("8.8.8.8",))
    ack = dhcp.DhcpMessageResponse(**where, message_type="ack", transaction_id=7,
                                   client_mac="02:00:00:00:07:21", your_ip="10.20.7.21", server_id="10.20.7.200")
    kinds = [type(f).__name__ for f in facts(ack)]
    assert kinds == ["DhcpMessage", "Binding"]


def test_remote_sessions_take_the_client_side() -> None:
    remote = pytest.importorskip("cranewatch.protocols.remote")
    banner = remote.RemoteSessionResponse(**{**WHERE, "src": "10.20.7.30", "dst": "203.0.113.10",
                                             "sport": 5900, "dport": 50123},
                                          protocol="vnc", detail="RFB 003.008")
    (session,) = facts(banner)
    assert (session.protocol, session.src, session.dst, session.dport) == ("vnc", "203.0.113.10", "10.20.7.30", 5900)
    ssh = pytest.importorskip("cranewatch.protocols.ssh")
    client = ssh.SshBannerRequest(**{**WHERE, "dport": 22}, banner="SSH-2.0-OpenSSH_9.2",
                                  proto_version="2.0", software="OpenSSH_9.2")
    (s,) = facts(client)
    assert (s.protocol, s.src, s.dport, s.detail) == ("ssh", WHERE["src"], 22, "SSH-2.0-OpenSSH_9.2")


def test_zeek_connection_summary() -> None:
    zeek = pytest.importorskip("cranewatch.sources.zeek")
    conn = zeek.ConnEvent(**{**WHERE, "dport": 22}, uid="C1", transport="tcp", service="ssh",
                          duration=4.5, orig_bytes=1200, resp_bytes=3400, state="SF",
                          history="ShAdDaFf", orig_pkts=20, resp_pkts=18)
    flow, session = facts(conn)
    assert (flow.protocol, flow.handshake, flow.last_ts, flow.packets_to_client) == ("ssh", True, T0 + 4.5, 18)
    assert session.protocol == "ssh" and session.dst == WHERE["dst"]


def test_syslog_lines_are_checked_for_container_data() -> None:
    syslog = pytest.importorskip("cranewatch.protocols.syslog")
    line = syslog.SyslogMessageRequest(**{**WHERE, "dst": "198.51.100.9", "dport": 514}, facility=16,
                                       severity=6, host="cms", app="workorder",
                                       message="discharge CSQU3054383 bay 14 to USORF")
    (payload,) = facts(line)
    assert isinstance(payload, Payload) and b"CSQU3054383" in payload.data
    from detect_helpers import run, sts07

    (leak,) = run([payload], profile=sts07())
    assert leak.category == "data-leak" and leak.dst == "198.51.100.9:514"


def test_remote_session_detail_prefers_the_decoders_summary_to_the_bare_version() -> None:
    from cranewatch.protocols.remote import RemoteSessionResponse

    event = RemoteSessionResponse(**{**WHERE, "src": "10.20.7.30", "dst": "203.0.113.10",
                                     "sport": 5900, "dport": 5500}, protocol="vnc",
                                  version="003.008", security=("none",),
                                  detail="RFB 003.008 security none (reverse VNC)")
    (session,) = facts(event)
    assert session.detail == "RFB 003.008 security none (reverse VNC)"
