"""TLS decoder: a ClientHello of Zeek's tls1_1.pcap (JA3 as tshark computes it), a handcrafted
TLS 1.3 hello for JA4, certificates, record splitting and truncation."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from cranewatch.protocols.tls import (
    TlsCertificateResponse,
    TlsClientHelloRequest,
    TlsDecoder,
    TlsServerHelloResponse,
    is_grease,
    ja4_of,
    parse_certificate,
)
from proto_helpers import context, feed_all, h, problems_of

sys.path.insert(0, str(Path(__file__).parent))
from proto_walk import walk

# tls1_1.pcap frame 4; tshark: tls.handshake.ja3 = 5eb6e1fe80f696450a62a48bb3d6a965.
CLIENT_HELLO_11 = h(
    "16030100c3010000bf03021e13995fae1b693f91b97315fc38b4b19f600e2aff7f24ce9b11bf538b1667e500"
    "0064c014c00a00390038003700360088008700860085c00fc00500350084c013c0090033003200310030009a"
    "0099009800970045004400430042c00ec004002f009600410007c011c007c00cc00200050004c012c0080016"
    "00130010000dc00dc003000a00ff0201000031000b000403000102000a001c001a00170019001c001b001800"
    "1a0016000e000d000b000c0009000a00230000000f000101")
JA3_FULL = ("770,49172-49162-57-56-55-54-136-135-134-133-49167-49157-53-132-49171-49161-51-50-49-48-"
            "154-153-152-151-69-68-67-66-49166-49156-47-150-65-7-49169-49159-49164-49154-5-4-49170-"
            "49160-22-19-16-13-49165-49155-10-255,11-10-35-15,23-25-28-27-24-26-22-14-13-11-12-9-10,"
            "0-1-2")


def _hello(extensions: bytes, ciphers: bytes) -> bytes:
    body = h("0303") + bytes(32) + h("00") + len(ciphers).to_bytes(2, "big") + ciphers + h("0100")
    body += len(extensions).to_bytes(2, "big") + extensions
    message = h("01") + len(body).to_bytes(3, "big") + body
    return h("160301") + len(message).to_bytes(2, "big") + message


def _ext(kind: int, data: bytes) -> bytes:
    return kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def test_client_hello_ja3_matches_tshark() -> None:
    (hello,) = TlsDecoder(context(443)).feed(True, CLIENT_HELLO_11, 1.0, 4)
    assert isinstance(hello, TlsClientHelloRequest)
    assert hello.ja3 == JA3_FULL
    assert hello.ja3_md5 == "5eb6e1fe80f696450a62a48bb3d6a965"
    assert hello.version == 0x0302 and hello.sni is None


def test_tls13_hello_with_grease_sni_alpn_and_ja4() -> None:
    sni = _ext(0, h("000e 00 000b") + b"plc.sts07.x")
    alpn = _ext(16, h("000c 02") + b"h2" + h("08") + b"http/1.1")
    versions = _ext(43, h("06 2a2a 0304 0303"))
    groups = _ext(10, h("0006 2a2a 001d 0017"))
    sigs = _ext(13, h("0004 0403 0804"))
    extensions = _ext(0x2A2A, b"") + sni + alpn + versions + groups + sigs
    ciphers = h("2a2a 1301 1302 c02b")
    (hello,) = TlsDecoder(context(8443)).feed(True, _hello(extensions, ciphers), 1.0, 1)
    assert isinstance(hello, TlsClientHelloRequest)
    assert hello.sni == "plc.sts07.x" and hello.alpn == ("h2", "http/1.1")
    assert hello.versions == (0x0304, 0x0303) and hello.ciphers == (0x1301, 0x1302, 0xC02B)
    assert hello.ja3 == "771,4865-4866-49195,0-16-43-10-13,29-23,"
    # JA4 by its definition: t13 d 03 ciphers 05 extensions h2, then the two hashes
    b = hashlib.sha256(b"1301,1302,c02b").hexdigest()[:12]
    c = hashlib.sha256(b"000a,000d,002b_0403,0804").hexdigest()[:12]
    assert hello.ja4 == f"t13d0305h2_{b}_{c}"


def test_ja4_of_a_hello_without_extensions_or_alpn() -> None:
    assert ja4_of(0x0301, False, (0x2F,), (), (), (), ()).startswith("t10i0100")
    assert ja4_of(0x0301, False, (), (), (), (), ()).endswith("_000000000000_000000000000")


def test_hello_split_across_records_and_segments() -> None:
    record = CLIENT_HELLO_11
    message = record[5:]
    first = h("160301") + (40).to_bytes(2, "big") + message[:40]
    second = h("160301") + (len(message) - 40).to_bytes(2, "big") + message[40:]
    stream = first + second
    events = feed_all(TlsDecoder(context(443)), (True, stream[:30]), (True, stream[30:60]),
                      (True, stream[60:]))
    assert [e.frame for e in events] == [3]


def test_server_hello_and_certificate_subject() -> None:
    cert = _self_signed_der()
    server_hello = h("0301") + bytes(32) + h("00") + h("c014") + h("00")
    sh = h("02") + len(server_hello).to_bytes(3, "big") + server_hello
    chain = len(cert).to_bytes(3, "big") + cert
    certs = len(chain).to_bytes(3, "big") + chain
    cm = h("0b") + len(certs).to_bytes(3, "big") + certs
    records = b"".join(h("160301") + len(m).to_bytes(2, "big") + m for m in (sh, cm))
    hello_event, cert_event = TlsDecoder(context(443)).feed(False, records, 1.0, 2)
    assert isinstance(hello_event, TlsServerHelloResponse) and hello_event.cipher == 0xC014
    assert hello_event.ja3s == "769,49172,"
    assert isinstance(cert_event, TlsCertificateResponse)
    assert cert_event.subject == "CN=plc.sts07,O=Crane Works" and cert_event.self_signed


def test_decoder_is_finished_once_both_directions_are_encrypted() -> None:
    decoder = TlsDecoder(context(443))
    decoder.feed(True, CLIENT_HELLO_11, 1.0, 1)
    app_data = h("170303 0004 deadbeef")
    decoder.feed(True, app_data, 2.0, 2)
    assert not decoder.finished  # the server may still send its hello and certificate
    assert decoder.feed(False, app_data, 3.0, 3) == []
    assert decoder.finished


def _self_signed_der() -> bytes:
    """A minimal DER certificate shape (tbs with version, serial, alg, names, validity)."""
    def tlv(tag: int, body: bytes) -> bytes:
        size = bytes([len(body)]) if len(body) < 128 else bytes([0x81, len(body)])
        return bytes([tag]) + size + body

    def name(cn: str, org: str) -> bytes:
        cn_attr = tlv(0x31, tlv(0x30, tlv(0x06, h("550403")) + tlv(0x0C, cn.encode())))
        o_attr = tlv(0x31, tlv(0x30, tlv(0x06, h("55040a")) + tlv(0x0C, org.encode())))
        return tlv(0x30, cn_attr + o_attr)

    alg = tlv(0x30, tlv(0x06, h("2a864886f70d01010b")) + h("0500"))
    validity = tlv(0x30, tlv(0x17, b"250101000000Z") + tlv(0x17, b"350101000000Z"))
    subject = name("plc.sts07", "Crane Works")
    tbs = tlv(0x30, tlv(0xA0, tlv(0x02, b"\x02")) + tlv(0x02, b"\x01") + alg + subject + validity
              + subject)
    return tlv(0x30, tbs + alg + tlv(0x03, b"\x00\x01"))


def test_certificate_fields() -> None:
    fields = parse_certificate(_self_signed_der())
    assert fields["issuer"] == "CN=plc.sts07,O=Crane Works"
    assert fields["not_after"] == "350101000000Z" and fields["serial"] == "01"


def test_grease() -> None:
    assert is_grease(0x0A0A) and is_grease(0xFAFA) and not is_grease(0x0A0B)


@pytest.mark.parametrize("cut", [10, 50, 100])
def test_truncated_client_hello_is_a_decode_error(cut: int) -> None:
    message = CLIENT_HELLO_11[5:5 + cut]
    broken = h("160301") + (cut + 4).to_bytes(2, "big") + h("01") + cut.to_bytes(3, "big") + message[4:] + bytes(4)
    assert problems_of(TlsDecoder(context(443)), True, broken, 1.0, 1)


# ClientHellos after a STARTTLS upgrade: the flow is claimed by its first (clear-text)
# protocol, which cranewatch does not decode, and the TLS that follows is not seen. (TLS in an
# HTTP CONNECT tunnel is: the HTTP decoder hands it to the TLS decoder.)
UPGRADED = {"imap-starttls.pcap", "pop3-starttls.pcap", "smtp-starttls.pcap",
            "xmpp-dialback-starttls.pcap", "xmpp-starttls.pcap"}


@pytest.mark.shared
def test_ja4_agrees_with_the_ja4plus_reference_implementation(shared_data: Path) -> None:
    reference = json.loads((Path(__file__).parent / "data" / "proto" / "ja4plus-reference.json").read_text())
    checked = 0
    for capture, expected in reference["fingerprints"].items():
        path = shared_data / "pcaps" / capture
        if path.name in UPGRADED:
            continue
        ours = {e.frame: e.ja4 for e in walk(path, ["tls", "http"], use_ports=False).events
                if isinstance(e, TlsClientHelloRequest)}
        for frame, ja4 in expected:
            assert ours.get(frame) == ja4, f"{capture} frame {frame}"
            checked += 1
    assert checked >= 72
