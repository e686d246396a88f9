"""Protocol identification by content where the port lies, and the registry of decoders."""

from __future__ import annotations

import pytest

from cranewatch.protocols import identify, load_all
from cranewatch.protocols.base import REGISTRY
from proto_helpers import h

load_all()

TLS_HELLO = h("16030100c3010000bf0302") + bytes(40)
MQTT_CONNECT = h("102500064d51497364700302000500177061686f")
MQTT5_CONNECT = h("1010 0004") + b"MQTT" + h("05 02 003c 00 0000")
S7_CR = h("0300001611e00000000100c0010ac1020100c2020102")
RDP_CR = h("0300002e29e00000000000") + b"Cookie: mstshash=operator\r\n" + h("0100080003000000")
ENIP_REGISTER = h("6500 0400 00000000 00000000 0000000000000000 00000000 0100 0000")
OPCUA_HEL = b"HELF" + h("38000000") + bytes(8)
DNS_QUERY = h("1a2b 0100 0001 0000 0000 0000") + b"\x03plc\x00" + h("0001 0001")


@pytest.mark.parametrize(("client", "server", "transport", "expected"), [
    (b"", b"SSH-2.0-OpenSSH_9.6\r\n", "tcp", "ssh"),          # SSH on 443: server speaks first
    (MQTT_CONNECT, b"", "tcp", "mqtt"),                       # MQTT 3.1 on 8080
    (MQTT5_CONNECT, b"", "tcp", "mqtt"),
    (TLS_HELLO, b"", "tcp", "tls"),                           # TLS on any port
    (b"GET /status HTTP/1.1\r\n", b"", "tcp", "http"),        # HTTP on 502
    (b"", b"HTTP/1.1 200 OK\r\n", "tcp", "http"),
    (S7_CR, b"", "tcp", "s7comm"),
    (RDP_CR, b"", "tcp", "rdp"),                              # TPKT+COTP, but an RDP cookie
    (ENIP_REGISTER, b"", "tcp", "enip"),
    (OPCUA_HEL, b"", "tcp", "opcua"),
    (b"", b"RFB 003.008\n", "tcp", "vnc"),
    (b"", h("fffd18fffd20"), "tcp", "telnet"),
    (h("17240a000000"), b"", "tcp", "teamviewer"),
    (DNS_QUERY, b"", "udp", "dns"),
    (b"<34>Oct 11 22:14:15 plc07 sshd: x", b"", "udp", "syslog"),
    (b"\x00\x01garbage that is nothing", b"", "tcp", None),
])
def test_content_identifies_the_protocol(client: bytes, server: bytes, transport: str,
                                         expected: str | None) -> None:
    assert identify.identify(client, server, transport) == expected


def test_s7_and_rdp_probes_do_not_claim_each_other() -> None:
    assert identify.is_s7comm(S7_CR, b"") and not identify.is_rdp(S7_CR, b"")
    assert identify.is_rdp(RDP_CR, b"") and not identify.is_s7comm(RDP_CR, b"")


def test_probes_on_empty_and_tiny_inputs_say_no() -> None:
    probes = [s.probe for s in REGISTRY if s.probe is not None]
    for probe in probes:
        assert probe(b"", b"") is False
        assert probe(b"\x16", b"") is False


def test_load_all_registers_every_protocol() -> None:
    names = {spec.name for spec in REGISTRY}
    assert {"s7comm", "enip", "enip_io", "opcua", "mqtt", "dns", "tls", "http", "ssh", "rdp", "vnc",
            "telnet", "teamviewer", "anydesk", "dhcp", "ntp", "syslog"} <= names
    before = len(REGISTRY)
    load_all()
    assert len(REGISTRY) == before  # importing twice registers nothing twice
