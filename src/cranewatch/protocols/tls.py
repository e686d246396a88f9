"""TLS handshakes on any port: ClientHello (SNI, ALPN, versions, JA3, JA4), ServerHello (JA3S),
and the server certificate's subject and issuer while they travel in the clear (TLS ≤ 1.2).

What matters on a crane: a TLS session from the crane network names its destination (SNI)
and its software (JA3/JA4 fingerprints: a remote-access tool or a malware family looks the
same wherever it runs). Only the handshake is decoded; once both sides changed cipher spec
the decoder stops looking at the flow. Handshake messages spanning records are joined.

JA3 (Salesforce): ``version,ciphers,extensions,curves,point_formats`` in decimal with GREASE
values removed, and its MD5. JA4 (FoxIO): ``t13d1516h2_<sha256 of sorted ciphers>_<sha256 of
sorted extensions without SNI/ALPN, then signature algorithms>`` truncated to 12 hex digits.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from cranewatch.detect.facts import TlsHello, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import PduBuffer, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

HANDSHAKE, CHANGE_CIPHER_SPEC, ALERT, APPLICATION_DATA = 22, 20, 21, 23
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE = 1, 2, 11
EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN = 0, 10, 11, 13, 16
EXT_SUPPORTED_VERSIONS = 43
VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
                 0x0304: "TLSv1.3", 0x0200: "SSLv2"}
JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                0x0200: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}
HANDSHAKE_LIMIT = 1 << 18  # a certificate chain beyond 256 KiB is not a crane's
# The ServerHello random that marks a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa) are noise to every fingerprint."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsClientHelloRequest(Event):
    """A ClientHello: destination name, offered versions/ciphers/extensions and fingerprints.

    ``version``: the legacy ``client_version`` field (771 = TLS 1.2); ``versions``: the
    supported_versions extension (TLS 1.3 clients). ``ja3``: the JA3 string, ``ja3_md5`` its
    hash (``tls.handshake.ja3``), ``ja4`` the JA4 fingerprint.
    """

    kind: ClassVar[str] = "tls_client_hello_request"
    version: int
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    ciphers: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    ja3: str = ""
    ja3_md5: str = ""
    ja4: str = ""

    @property
    def server_name(self) -> str | None:
        return self.sni


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsServerHelloResponse(Event):
    """A ServerHello: chosen version (supported_versions when present), cipher, ALPN, JA3S."""

    kind: ClassVar[str] = "tls_server_hello_response"
    version: int
    cipher: int
    selected_version: int | None = None
    alpn: str | None = None
    extensions: tuple[int, ...] = ()
    ja3s: str = ""
    ja3s_md5: str = ""

    @property
    def negotiated_version(self) -> str:
        value = self.selected_version or self.version
        return VERSION_NAMES.get(value, f"0x{value:04x}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsCertificateResponse(Event):
    """The server's leaf certificate as seen in a TLS ≤ 1.2 handshake (RFC 4514-like names)."""

    kind: ClassVar[str] = "tls_certificate_response"
    subject: str
    issuer: str
    serial: str = ""
    not_before: str = ""
    not_after: str = ""
    chain_length: int = 1
    self_signed: bool = False


def tls_record_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 5:
        return None
    if buf[pos] & 0x80 and buf[pos + 2] == CLIENT_HELLO:  # SSLv2-format ClientHello
        return 2 + ((buf[pos] & 0x7F) << 8 | buf[pos + 1])
    if buf[pos] not in (20, 21, 22, 23, 24) or buf[pos + 1] != 3:
        raise DecodeError("not a TLS record header")
    return 5 + (buf[pos + 3] << 8 | buf[pos + 4])


def _u16_list(data: bytes) -> tuple[int, ...]:
    return tuple(struct.unpack(f">{len(data) // 2}H", data[: len(data) // 2 * 2]))


def _vector(data: bytes, pos: int, size_bytes: int) -> tuple[bytes, int]:
    if pos + size_bytes > len(data):
        raise DecodeError("TLS vector length cut short")
    size = int.from_bytes(data[pos:pos + size_bytes], "big")
    end = pos + size_bytes + size
    if end > len(data):
        raise DecodeError("TLS vector longer than its message")
    return data[pos + size_bytes:end], end


def parse_extensions(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    if pos >= len(data):
        return []
    block, _ = _vector(data, pos, 2)
    extensions: list[tuple[int, bytes]] = []
    at = 0
    while at + 4 <= len(block):
        ext_type, size = struct.unpack_from(">HH", block, at)
        extensions.append((ext_type, block[at + 4:at + 4 + size]))
        at += 4 + size
    return extensions


def _alpn_list(body: bytes) -> tuple[str, ...]:
    if len(body) < 2:
        return ()
    names: list[str] = []
    pos = 2
    while pos < len(body):
        size = body[pos]
        names.append(body[pos + 1:pos + 1 + size].decode("latin-1"))
        pos += 1 + size
    return tuple(names)


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


def ja4_of(version: int, sni: bool, ciphers: tuple[int, ...], extensions: tuple[int, ...],
           alpn: tuple[str, ...], versions: tuple[int, ...], sig_algs: tuple[int, ...],
           transport: str = "t") -> str:
    """The JA4 fingerprint of a ClientHello from its already GREASE-free fields."""
    best = max(versions) if versions else version
    first_alpn = alpn[0] if alpn else ""
    if not first_alpn:
        alpn_code = "00"
    elif first_alpn[0].isalnum() and first_alpn[-1].isalnum() and first_alpn.isascii():
        alpn_code = first_alpn[0] + first_alpn[-1]
    else:  # non-alphanumeric ALPN: first and last hex digit of the value (JA4 spec)
        raw = first_alpn.encode("latin-1").hex()
        alpn_code = raw[0] + raw[-1]
    part_a = (f"{transport}{JA4_VERSIONS.get(best, '00')}{'d' if sni else 'i'}"
              f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_code}")
    part_b = _sha12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    exts = ",".join(f"{e:04x}" for e in sorted(e for e in extensions if e not in (EXT_SNI, EXT_ALPN)))
    if sig_algs and exts:
        exts += "_" + ",".join(f"{s:04x}" for s in sig_algs)
    part_c = _sha12(exts)
    return f"{part_a}_{part_b}_{part_c}"


def parse_client_hello(body: bytes) -> dict[str, Any]:
    """Fields and fingerprints of a ClientHello body (after the 4-byte handshake header)."""
    if len(body) < 38:
        raise DecodeError("ClientHello cut short")
    version = body[0] << 8 | body[1]
    _, pos = _vector(body, 34, 1)  # session id
    cipher_bytes, pos = _vector(body, pos, 2)
    _, pos = _vector(body, pos, 1)  # compression methods
    extensions = parse_extensions(body, pos)
    ciphers = tuple(c for c in _u16_list(cipher_bytes) if not is_grease(c))
    ext_types = tuple(e for e, _ in extensions if not is_grease(e))
    sni = None
    alpn: tuple[str, ...] = ()
    groups: tuple[int, ...] = ()
    formats: tuple[int, ...] = ()
    versions: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    for ext_type, data in extensions:
        if ext_type == EXT_SNI and len(data) >= 5 and data[2] == 0:
            size = data[3] << 8 | data[4]
            sni = data[5:5 + size].decode("latin-1")
        elif ext_type == EXT_ALPN:
            alpn = _alpn_list(data)
        elif ext_type == EXT_GROUPS and len(data) >= 2:
            groups = tuple(g for g in _u16_list(data[2:2 + (data[0] << 8 | data[1])]) if not is_grease(g))
        elif ext_type == EXT_POINT_FORMATS and data:
            formats = tuple(data[1:1 + data[0]])
        elif ext_type == EXT_SUPPORTED_VERSIONS and data:
            versions = tuple(v for v in _u16_list(data[1:1 + data[0]]) if not is_grease(v))
        elif ext_type == EXT_SIG_ALGS and len(data) >= 2:
            sig_algs = tuple(_u16_list(data[2:2 + (data[0] << 8 | data[1])]))
    ja3 = ",".join([str(version), "-".join(map(str, ciphers)), "-".join(map(str, ext_types)),
                    "-".join(map(str, groups)), "-".join(map(str, formats))])
    return {"version": version, "sni": sni, "alpn": alpn, "versions": versions,
            "ciphers": ciphers, "extensions": ext_types, "ja3": ja3,
            "ja3_md5": hashlib.md5(ja3.encode(), usedforsecurity=False).hexdigest(),
            "ja4": ja4_of(version, sni is not None, ciphers, ext_types, alpn, versions, sig_algs)}


def parse_server_hello(body: bytes) -> dict[str, Any]:
    if len(body) < 38:
        raise DecodeError("ServerHello cut short")
    version = body[0] << 8 | body[1]
    if version >> 8 == 0x7F:  # TLS 1.3 drafts: no session id and no compression method
        pos, after_cipher = 34, 36
    else:
        _, pos = _vector(body, 34, 1)
        after_cipher = pos + 3
    if after_cipher > len(body):
        raise DecodeError("ServerHello cut short")
    cipher = body[pos] << 8 | body[pos + 1]
    extensions = parse_extensions(body, after_cipher)
    ext_types = tuple(e for e, _ in extensions)
    selected = None
    alpn = None
    for ext_type, data in extensions:
        if ext_type == EXT_SUPPORTED_VERSIONS and len(data) == 2:
            selected = data[0] << 8 | data[1]
        elif ext_type == EXT_ALPN:
            names = _alpn_list(data)
            alpn = names[0] if names else None
    ja3s = f"{version},{cipher},{'-'.join(map(str, ext_types))}"
    return {"version": version, "cipher": cipher, "selected_version": selected, "alpn": alpn,
            "extensions": ext_types, "ja3s": ja3s,
            "ja3s_md5": hashlib.md5(ja3s.encode(), usedforsecurity=False).hexdigest()}


# --- X.509, only as deep as subject and issuer ---------------------------------------------

OID_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
             "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
             "0.9.2342.19200300.100.1.25": "DC", "2.5.4.9": "street", "2.5.4.17": "postalCode"}


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """Tag, content start and content end of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise DecodeError("DER element cut short")
    tag = data[pos]
    size = data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DecodeError("DER length not supported")
        size = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise DecodeError("DER element longer than its container")
    return tag, pos, pos + size


def _oid(raw: bytes) -> str:
    if not raw:
        return ""
    parts = [raw[0] // 40, raw[0] % 40]
    value = 0
    for byte in raw[1:]:
        value = value << 7 | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _name(data: bytes, start: int, end: int) -> str:
    """An X.501 Name as ``CN=...,O=...`` in the order the certificate lists it."""
    parts: list[str] = []
    pos = start
    while pos < end:
        _, set_start, set_end = _der(data, pos)
        at = set_start
        while at < set_end:
            _, seq_start, seq_end = _der(data, at)
            _, oid_start, oid_end = _der(data, seq_start)
            _, value_start, value_end = _der(data, oid_end)
            oid = _oid(data[oid_start:oid_end])
            value = data[value_start:value_end]
            text = value.decode("utf-16-be", "replace") if data[oid_end] == 0x1E else value.decode("utf-8", "replace")
            parts.append(f"{OID_NAMES.get(oid, oid)}={text}")
            at = seq_end
        pos = set_end
    return ",".join(parts)


def parse_certificate(der: bytes) -> dict[str, Any]:
    """Subject, issuer, serial and validity of one DER certificate."""
    _, cert_start, _ = _der(der, 0)
    _, tbs_start, _ = _der(der, cert_start)
    pos = tbs_start
    tag, start, end = _der(der, pos)
    if tag == 0xA0:  # explicit version
        pos = end
        tag, start, end = _der(der, pos)
    serial = der[start:end].hex()
    _, _, pos = _der(der, end)  # signature algorithm
    _, issuer_start, issuer_end = _der(der, pos)
    _, validity_start, validity_end = _der(der, issuer_end)
    _, nb_start, nb_end = _der(der, validity_start)
    _, na_start, na_end = _der(der, nb_end)
    _, subject_start, subject_end = _der(der, validity_end)
    return {"subject": _name(der, subject_start, subject_end),
            "issuer": _name(der, issuer_start, issuer_end), "serial": serial,
            "not_before": der[nb_start:nb_end].decode("ascii", "replace"),
            "not_after": der[na_start:na_end].decode("ascii", "replace")}


class TlsDecoder(ReportsProblems):
    """Decodes the handshake of one TLS connection, then ignores the encrypted rest."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._records = (PduBuffer(limit=1 << 15, source=ctx.source),
                         PduBuffer(limit=1 << 15, source=ctx.source))
        self._handshake = [bytearray(), bytearray()]
        self._encrypted = [False, False]
        self._tls13 = False

    @property
    def finished(self) -> bool:
        """Both directions encrypted: nothing more to read, the pipeline stops feeding the flow."""
        return self._encrypted[0] and self._encrypted[1]

    def gap(self, from_client: bool) -> None:
        self._records[from_client].gap()
        self._handshake[from_client].clear()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        side = int(from_client)
        if self._encrypted[side]:
            return []
        for record in self._records[from_client].pdus(data, tls_record_length, frame):
            content = record[0]
            if content & 0x80:
                continue  # SSLv2-format hello: old clients; no fingerprint is defined on it
            if content == APPLICATION_DATA or (content == CHANGE_CIPHER_SPEC and not self._tls13):
                # TLS 1.3 sends a dummy ChangeCipherSpec for middleboxes; it changes nothing
                self._encrypted[side] = True
                self._records[from_client].clear()
                break
            if content != HANDSHAKE:
                continue
            pending = self._handshake[side]
            pending += record[5:]
            if len(pending) > HANDSHAKE_LIMIT:
                pending.clear()
                raise decode_error("TLS handshake message over 256 KiB", self.ctx, frame)
            while len(pending) >= 4:
                size = int.from_bytes(pending[1:4], "big")
                if len(pending) < 4 + size:
                    break
                message = bytes(pending[:4 + size])
                del pending[:4 + size]
                try:
                    event = self._message(from_client, message, ts, frame)
                except DecodeError as exc:  # that message is lost; the records after it are read
                    pending.clear()
                    self.report(decode_error(f"TLS: {exc.message}", self.ctx, frame))
                    continue
                if event is not None:
                    events.append(event)
        return events

    def _message(self, from_client: bool, message: bytes, ts: float, frame: int) -> Event | None:
        msg_type = message[0]
        body = message[4:]
        where = endpoints(self.ctx, from_client)
        if msg_type == CLIENT_HELLO:
            return TlsClientHelloRequest(ts=ts, frame=frame, **parse_client_hello(body),
                                         **where)
        if msg_type == SERVER_HELLO:
            fields = parse_server_hello(body)
            if fields["selected_version"] is not None or fields["version"] >> 8 == 0x7F:
                self._tls13 = True
                if body[2:34] != HRR_RANDOM:
                    self._encrypted[0] = True  # TLS 1.3: all after ServerHello is encrypted
            return TlsServerHelloResponse(ts=ts, frame=frame, **fields, **where)
        if msg_type == CERTIFICATE and not from_client and len(body) >= 6:
            chain, _ = _vector(body, 0, 3)
            first, _ = _vector(chain, 0, 3)
            count = 0
            pos = 0
            while pos + 3 <= len(chain):
                _, pos = _vector(chain, pos, 3)
                count += 1
            fields = parse_certificate(first)
            return TlsCertificateResponse(ts=ts, frame=frame, chain_length=count,
                                          self_signed=fields["subject"] == fields["issuer"],
                                          **fields, **where)
        return None


SPEC = DecoderSpec(name="tls", transport="tcp",
                   ports=frozenset({443, 8443, 8883, 4843, 993, 995, 465, 636, 5671}),
                   factory=TlsDecoder, probe=identify.is_tls, priority=10,
                   aliases=("ssl", "https"))


def hello(event: TlsClientHelloRequest) -> list[TlsHello]:
    return [TlsHello(**where(event), sni=event.sni, ja3=event.ja3_md5 or event.ja3 or None,
                     ja4=event.ja4 or None)]


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

ZEEK_TLS_VERSIONS = {"SSLv2": 0x0200, "SSLv3": 0x0300, "TLSv10": 0x0301, "TLSv11": 0x0302,
                     "TLSv12": 0x0303, "TLSv13": 0x0304, "DTLSv10": 0xFEFF, "DTLSv12": 0xFEFD}


def zeek_ssl(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    version = ZEEK_TLS_VERSIONS.get(str(record.get("version", "")), 0)
    events: list[Event] = []
    ja3 = record.get("ja3")
    result.note("ssl.log: cipher suites and extension lists are not logged; JA3/JA4 only "
                "where a Zeek package adds them")
    events.append(TlsClientHelloRequest(version=version, sni=zeek.opt_text(record.get("server_name")),
                                        alpn=tuple((record.get("next_protocol", "") and
                                                   [zeek.text(record.get("next_protocol"))]) or ()),
                                        ja3_md5=str(ja3 or ""), ja4=str(record.get("ja4", "") or ""),
                                        **zeek.ends(record)))
    if record.get("cipher") is not None or record.get("version") is not None:
        events.append(TlsServerHelloResponse(version=version, cipher=0,
                                             selected_version=version if version == 0x0304 else None,
                                             alpn=zeek.opt_text(record.get("next_protocol")),
                                             ja3s_md5=str(record.get("ja3s", "") or ""),
                                             **zeek.ends(record, from_orig=False)))
    return events


PROTOCOL = register_protocol(ProtocolSpec(
    name="tls", module=__name__, decoders=(SPEC,), policy={"https": ("tcp",), "tls": ("tcp",)},
    adapters={TlsClientHelloRequest: Adapter(hello, (TlsHello,)),
              TlsServerHelloResponse: IGNORED, TlsCertificateResponse: IGNORED},
    zeek={"ssl": zeek_ssl},
))
