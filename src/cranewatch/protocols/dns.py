"""DNS over UDP and TCP (port 53, and mDNS 5353): queries, answers, TXT, label measurements.

What matters on a crane: which names its hosts resolve (a PLC or drive should resolve none;
a gateway a few known ones), and whether names look like a tunnel: long labels and
high-entropy subdomains carry data out. Each query records its longest label and the Shannon
entropy of its subdomain part (everything left of the last two labels).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from cranewatch.detect.facts import DnsQuery, as_text, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import PduBuffer, decode_error, endpoints, shannon_entropy
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

TYPE_NAMES: dict[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF", 249: "TKEY", 250: "TSIG",
    251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA",
}
MAX_RECORDS = 256
MAX_POINTER_HOPS = 64


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One resource record of the answer section; ``data`` is text (address, name, TXT...)."""

    name: str
    rtype: int
    ttl: int
    data: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsQueryRequest(Event):
    """A DNS query: first question's name/type/class, and the measurements of that name.

    ``longest_label``: length of the longest label; ``entropy``: Shannon entropy (bits per
    character) of the subdomain part, the labels left of the last two.
    """

    kind: ClassVar[str] = "dns_query_request"
    transaction_id: int
    opcode: int
    qname: str
    qtype: int
    qclass: int = 1
    questions: int = 1
    qnames: tuple[str, ...] = ()  # every question's name (almost always just ``qname``)
    qtypes: tuple[int, ...] = ()  # and its type
    records: tuple[DnsAnswer, ...] = ()  # authority/additional (dynamic update: the updates)
    longest_label: int = 0
    entropy: float = 0.0
    transport: str = "udp"

    @property
    def qtype_name(self) -> str:
        return TYPE_NAMES.get(self.qtype, str(self.qtype))


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsQueryResponse(DnsQueryRequest):
    """A DNS response: rcode, answers (with TXT strings), and the frame of the query.

    ``records``: authority and additional records (name servers, glue addresses).
    """

    kind: ClassVar[str] = "dns_query_response"
    rcode: int = 0
    authoritative: bool = False
    truncated: bool = False
    answers: tuple[DnsAnswer, ...] = ()
    txt: tuple[str, ...] = ()
    request_frame: int | None = None


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed domain name at ``pos``; returns the name and the offset after it."""
    labels: list[str] = []
    end = -1
    hops = 0
    total = 0
    while True:
        if pos >= len(msg):
            raise DecodeError("DNS name runs past the message")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DecodeError("DNS compression pointer cut short")
            if end < 0:
                end = pos + 2
            pos = (length & 0x3F) << 8 | msg[pos + 1]
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DecodeError("DNS compression pointer loop")
            continue
        if length & 0xC0:
            raise DecodeError(f"DNS label type 0x{length & 0xC0:02x} is not supported")
        label = msg[pos + 1:pos + 1 + length]
        if len(label) < length:
            raise DecodeError("DNS label cut short")
        labels.append(label.decode("latin-1"))
        total += length + 1
        if total > 255:
            raise DecodeError("DNS name longer than 255 bytes")
        pos += 1 + length
    return ".".join(labels), (end if end >= 0 else pos)


@lru_cache(maxsize=4096)  # a crane's hosts ask for the same few names again and again
def measure_name(name: str) -> tuple[int, float]:
    """Longest label and Shannon entropy of the subdomain part (left of the last two labels)."""
    labels = name.split(".") if name else []
    longest = max((len(label) for label in labels), default=0)
    sub = "".join(labels[:-2]) if len(labels) > 2 else "".join(labels)
    return longest, round(shannon_entropy(sub), 4)


def _rdata_text(msg: bytes, rtype: int, start: int, size: int) -> tuple[str, tuple[str, ...]]:
    rdata = msg[start:start + size]
    if rtype == 1 and size == 4:
        return ".".join(str(b) for b in rdata), ()
    if rtype == 28 and size == 16:
        import ipaddress

        return str(ipaddress.IPv6Address(rdata)), ()
    if rtype in (2, 5, 12):
        return read_name(msg, start)[0], ()
    if rtype == 15 and size > 2:
        return read_name(msg, start + 2)[0], ()
    if rtype == 16:
        strings: list[str] = []
        pos = 0
        while pos < size:
            length = rdata[pos]
            strings.append(rdata[pos + 1:pos + 1 + length].decode("utf-8", "replace"))
            pos += 1 + length
        return " ".join(strings), tuple(strings)
    if rtype == 33 and size > 6:
        return f"{read_name(msg, start + 6)[0]}:{rdata[4] << 8 | rdata[5]}", ()
    return rdata.hex(), ()


def parse_message(msg: bytes) -> dict[str, Any]:
    """Header, first question and answer records of one DNS message."""
    if len(msg) < 12:
        raise DecodeError(f"DNS header needs 12 bytes, got {len(msg)}")
    return _parse(msg)


def _parse(msg: bytes) -> dict[str, Any]:
    tid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHHHH", msg)
    pos = 12
    qname, qtype, qclass = "", 0, 0
    qnames: list[str] = []
    qtypes: list[int] = []
    for index in range(min(qdcount, MAX_RECORDS)):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DecodeError("DNS question cut short")
        qnames.append(name)
        qtypes.append(msg[pos] << 8 | msg[pos + 1])
        if index == 0:
            qname = name
            qtype, qclass = struct.unpack_from(">HH", msg, pos)
        pos += 4
    txt: list[str] = []
    records: list[DnsAnswer] = []  # answer, then authority and additional sections
    for index in range(min(ancount + nscount + arcount, MAX_RECORDS)):
        name, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DecodeError("DNS resource record cut short")
        rtype, _rclass, ttl, size = struct.unpack_from(">HHIH", msg, pos)
        pos += 10
        if pos + size > len(msg):
            raise DecodeError("DNS record data runs past the message")
        data, strings = _rdata_text(msg, rtype, pos, size)
        if index < ancount:
            txt.extend(strings)
        records.append(DnsAnswer(name, rtype, ttl, data))
        pos += size
    return {"tid": tid, "flags": flags, "qdcount": qdcount, "qname": qname, "qtype": qtype,
            "qclass": qclass & 0x7FFF, "answers": tuple(records[:ancount]), "txt": tuple(txt),
            "records": tuple(records[ancount:]), "qnames": tuple(qnames),
            "qtypes": tuple(qtypes)}


def dns_tcp_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 2:
        return None
    return 2 + (buf[pos] << 8 | buf[pos + 1])


class DnsDecoder(ReportsProblems):
    """Decodes DNS messages of one UDP exchange or TCP connection."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        # Over UDP (nearly all DNS: one short flow per lookup) a datagram is a message and
        # needs no framing buffers.
        self._udp = ctx.transport == "udp"
        self._buffers = None if self._udp else (PduBuffer(limit=65537, source=ctx.source),
                                                PduBuffer(limit=65537, source=ctx.source))
        self._queries: dict[int, int] = {}

    def gap(self, from_client: bool) -> None:
        if self._buffers is not None:
            self._buffers[from_client].gap()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if self._buffers is None:
            events.append(self._message(from_client, data, ts, frame))
            return events
        for pdu in self._buffers[from_client].pdus(data, dns_tcp_length, frame):
            try:  # a broken message costs itself, not the ones after it in the stream
                events.append(self._message(from_client, pdu[2:], ts, frame))
            except DecodeError as exc:
                self.report(exc)
        return events

    def _message(self, from_client: bool, msg: bytes, ts: float, frame: int) -> Event:
        if len(msg) < 12:
            raise decode_error(f"DNS: DNS header needs 12 bytes, got {len(msg)}", self.ctx, frame)
        try:
            response, fields = _event_fields(b"\0\0" + msg[2:])
        except DecodeError as exc:
            raise decode_error(f"DNS: {exc.message}", self.ctx, frame) from None
        tid = msg[0] << 8 | msg[1]
        where = endpoints(self.ctx, from_client)
        if not response:
            self._queries[tid] = frame
            if len(self._queries) > 1024:
                self._queries.pop(next(iter(self._queries)))
            return DnsQueryRequest(ts=ts, frame=frame, transaction_id=tid,
                                   transport=self.ctx.transport, **fields, **where)
        return DnsQueryResponse(ts=ts, frame=frame, transaction_id=tid,
                                transport=self.ctx.transport,
                                request_frame=self._queries.pop(tid, None), **fields, **where)


@lru_cache(maxsize=4096)
def _event_fields(msg: bytes) -> tuple[bool, dict[str, Any]]:
    """Whether a message (its id zeroed) is a response, and the event fields its bytes give.

    Cached: queries and answers repeat but for their id. Callers unpack the dict, never
    change it.
    """
    parsed = _parse(msg)
    flags = int(parsed["flags"])
    qname = str(parsed["qname"])
    longest, entropy = measure_name(qname)
    fields: dict[str, Any] = {
        "opcode": (flags >> 11) & 0xF, "qname": qname, "qtype": parsed["qtype"],
        "qclass": parsed["qclass"], "questions": parsed["qdcount"], "qnames": parsed["qnames"],
        "qtypes": parsed["qtypes"], "records": parsed["records"], "longest_label": longest,
        "entropy": entropy}
    if not flags & 0x8000:
        return False, fields
    fields.update(rcode=flags & 0xF, authoritative=bool(flags & 0x0400),
                  truncated=bool(flags & 0x0200), answers=parsed["answers"], txt=parsed["txt"])
    return True, fields


SPEC_UDP = DecoderSpec(name="dns", transport="udp", ports=frozenset({53, 5353, 5355}),
                       factory=DnsDecoder, probe=identify.is_dns_udp, priority=60,
                       aliases=("mdns", "llmnr"))
SPEC_TCP = DecoderSpec(name="dns", transport="tcp", ports=frozenset({53}),
                       factory=DnsDecoder, probe=identify.is_dns_tcp, priority=80)

# Query types in the detectors' names (the rest by number).
FACT_TYPES = {1: "A", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              65: "HTTPS", 255: "ANY"}


def queries(event: DnsQueryRequest) -> list[DnsQuery]:
    """One fact per question of a query."""
    qtype: Any = event.qtype
    name = FACT_TYPES.get(qtype, str(qtype)) if isinstance(qtype, int) else (as_text(qtype) or "A")
    names = event.qnames if isinstance(event.qnames, tuple | list) and event.qnames else (
        (event.qname,) if event.qname else ())
    here = where(event)
    return [DnsQuery(**here, name=as_text(n), qtype=name) for n in names]


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

ZEEK_QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
               "SRV": 33, "NAPTR": 35, "OPT": 41, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48,
               "SVCB": 64, "HTTPS": 65, "ANY": 255, "AXFR": 252, "IXFR": 251, "CAA": 257}


def zeek_dns(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    name = zeek.text(record.get("query"))
    qtype = zeek.integer(record.get("qtype")) or ZEEK_QTYPES.get(str(record.get("qtype_name", "")), 0)
    longest, entropy = measure_name(name)
    common: dict[str, Any] = {
        "transaction_id": zeek.integer(record.get("trans_id")) or 0, "opcode": zeek.integer(record.get("opcode")) or 0,
        "qname": name, "qtype": qtype, "qclass": zeek.integer(record.get("qclass")) or 1,
        "qnames": (name,) if name else (), "qtypes": (qtype,) if name else (),
        "longest_label": longest, "entropy": entropy,
        "transport": str(record.get("proto", "udp"))}
    events: list[Event] = [DnsQueryRequest(**common, **zeek.ends(record))]
    if record.get("rcode") is not None or record.get("answers"):
        answers = tuple(record.get("answers", ()) or ())
        ttls = tuple(record.get("TTLs", ()) or ())
        records = tuple(DnsAnswer(name, 0, int(ttls[i]) if i < len(ttls) and ttls[i] is not None else 0,
                                  str(answer)) for i, answer in enumerate(answers))
        result.note("dns.log: answer record types are not logged; answers carry type 0")
        events.append(DnsQueryResponse(rcode=zeek.integer(record.get("rcode")) or 0,
                                       authoritative=bool(record.get("AA", False)),
                                       truncated=bool(record.get("TC", False)), answers=records,
                                       request_frame=record.line, **common,
                                       **zeek.ends(record, from_orig=False)))
    return events


PROTOCOL = register_protocol(ProtocolSpec(
    name="dns", module=__name__, decoders=(SPEC_UDP, SPEC_TCP), policy={"dns": ("tcp", "udp")},
    adapters={DnsQueryRequest: Adapter(queries, (DnsQuery,)), DnsQueryResponse: IGNORED},
    zeek={"dns": zeek_dns},
))
