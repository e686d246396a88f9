"""The LAN housekeeping protocols that teach hosts, gateways and time sources:
DHCP, ARP, NTP and syslog (byte literals built per their RFCs)."""

from __future__ import annotations

import pytest

from cranewatch.errors import DecodeError
from cranewatch.protocols.arp import ArpEvent, ArpResponse, decode_arp, decode_arp_frames
from cranewatch.protocols.dhcp import DhcpDecoder, DhcpMessageRequest, DhcpMessageResponse
from cranewatch.protocols.ntp import NtpDecoder, NtpTimeRequest, NtpTimeResponse
from cranewatch.protocols.syslog import SyslogDecoder, SyslogMessageRequest, parse_syslog
from proto_helpers import context, h, problems_of

MAC = h("02 00 5e 10 00 07")


def _bootp(op: int, options: bytes, yiaddr: bytes = bytes(4)) -> bytes:
    header = bytes([op, 1, 6, 0]) + h("deadbeef") + bytes(4) + bytes(4) + yiaddr + bytes(8)
    return header + MAC + bytes(10) + bytes(192) + h("63825363") + options + h("ff")


def test_dhcp_request_and_ack_with_router_and_dns() -> None:
    request = _bootp(1, h("350103 3204 0a070032 0c05") + b"plc07")
    ack = _bootp(2, h("350105 3604 0a070001 0304 0a070001 0608 0a070002 08080808 3304 00000e10"),
                 yiaddr=h("0a070032"))
    (req,) = DhcpDecoder(context(67, "udp")).feed(True, request, 1.0, 1)
    (resp,) = DhcpDecoder(context(67, "udp")).feed(False, ack, 2.0, 2)
    assert isinstance(req, DhcpMessageRequest) and not isinstance(req, DhcpMessageResponse)
    assert (req.message_type, req.client_mac, req.requested_ip, req.hostname) == (
        "request", "02:00:5e:10:00:07", "10.7.0.50", "plc07")
    assert isinstance(resp, DhcpMessageResponse)
    assert (resp.message_type, resp.your_ip, resp.server_id) == ("ack", "10.7.0.50", "10.7.0.1")
    assert resp.router == ("10.7.0.1",) and resp.dns_servers == ("10.7.0.2", "8.8.8.8")
    assert resp.lease_time == 3600


def test_dhcp_without_magic_or_with_cut_option_is_a_decode_error() -> None:
    assert problems_of(DhcpDecoder(context(67, "udp")), True, bytes(300), 1.0, 1)
    assert problems_of(DhcpDecoder(context(67, "udp")), True, _bootp(1, h("3504 01"))[:-1], 1.0, 1)


def test_arp_request_and_gratuitous_reply() -> None:
    request = h("0001 0800 06 04 0001") + MAC + h("0a070032") + bytes(6) + h("0a070001")
    reply = h("0001 0800 06 04 0002") + MAC + h("0a070001") + b"\xff" * 6 + h("0a070001")
    who = decode_arp(request, ts=1.0, frame=3)
    assert isinstance(who, ArpEvent) and not isinstance(who, ArpResponse)
    assert (who.sender_ip, who.target_ip, who.src, who.frame) == ("10.7.0.50", "10.7.0.1",
                                                                  "02:00:5e:10:00:07", 3)
    gratuitous = decode_arp(reply)
    assert isinstance(gratuitous, ArpResponse) and gratuitous.gratuitous
    with pytest.raises(DecodeError):
        decode_arp(request[:20])


def test_arp_frames_of_a_batch_with_a_broken_one_in_between() -> None:
    request = h("0001 0800 06 04 0001") + MAC + h("0a070032") + bytes(6) + h("0a070001")
    token_ring = h("0006 0800 06 04 0001") + MAC + h("0a070032") + bytes(6) + h("0a070001")
    good, broken, short, again = decode_arp_frames(
        [request, token_ring, request[:27], request], [1.0, 2.0, 3.0, 4.0], [10, 11, 12, 13],
        "lan.pcap")
    assert isinstance(good, ArpEvent) and isinstance(again, ArpEvent)
    assert (good.frame, good.ts, again.frame, again.ts) == (10, 1.0, 13, 4.0)
    assert (again.sender_ip, again.target_ip, again.source) == ("10.7.0.50", "10.7.0.1", "lan.pcap")
    assert isinstance(broken, DecodeError) and "hardware 6" in broken.message
    assert broken.location is not None and broken.location.frame == 11
    assert isinstance(short, DecodeError) and "27 bytes" in short.message


def test_ntp_client_and_server_stratum_one() -> None:
    client = h("e3 00 06 ec") + bytes(36) + h("e9b2a3c0 80000000")
    server = h("24 01 06 e9") + bytes(8) + b"GPS\x00" + bytes(24) + h("e9b2a3c0 00000000")
    (req,) = NtpDecoder(context(123, "udp")).feed(True, client, 1.0, 1)
    (resp,) = NtpDecoder(context(123, "udp")).feed(False, server, 2.0, 2)
    assert isinstance(req, NtpTimeRequest) and (req.mode, req.version) == (3, 4)
    assert isinstance(resp, NtpTimeResponse) and (resp.mode, resp.stratum, resp.reference) == (4, 1, "GPS")
    # 0xe9b2a3c0 = 3920798656 s since 1900; minus the 70 years to 1970
    assert resp.transmit_time == pytest.approx(3920798656 - 2208988800)
    assert problems_of(NtpDecoder(context(123, "udp")), True, client[:20], 1.0, 1)


def test_ntp_mode_7_monlist_query_is_reported() -> None:
    (event,) = NtpDecoder(context(123, "udp")).feed(True, h("17 00 03 2a 00000000"), 1.0, 1)
    assert event.mode == 7  # type: ignore[attr-defined]


def test_syslog_rfc3164_and_rfc5424() -> None:
    old = parse_syslog(b"<34>Oct 11 22:14:15 plc07 sshd[42]: Failed password for root")
    assert (old["facility"], old["severity"], old["host"], old["app"]) == (4, 2, "plc07", "sshd")
    assert old["message"] == "Failed password for root"
    new = parse_syslog(b'<165>1 2026-11-26T01:02:03Z gw01 crane - ID47 [x@1 a="b"] hoist overload')
    assert (new["facility"], new["severity"], new["host"], new["app"]) == (20, 5, "gw01", "crane")
    assert new["message"] == "hoist overload" and new["format"] == "rfc5424"


def test_syslog_over_tcp_octet_counted_and_newline_framed() -> None:
    decoder = SyslogDecoder(context(601))
    message = b"<13>1 - host app - - - hello"
    events = decoder.feed(True, str(len(message)).encode() + b" " + message + b"<14>Oct  1 00:00:00 h t: x\n",
                          1.0, 1)
    assert [e.message for e in events if isinstance(e, SyslogMessageRequest)] == ["hello", "x"]
    assert problems_of(SyslogDecoder(context(514, "udp")), True, b"<999>bad", 1.0, 1)
