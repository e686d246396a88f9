#!/usr/bin/env python3
"""Captures of the benchmark matrix (issue 13): one generator option per traffic shape.

Every shape is deterministic for a given ``--seed`` and streamed to disk. Unlike
``gen_crane_capture.py`` (shape ``a``), the synthetic shapes are built the way hosts and a
network make them: every conversation is an actor with its own clock, and the frames of all
actors are merged in time order, so transactions of different connections interleave; TCP
sequence and acknowledgement numbers follow what each side has sent and received; SYNs carry
MSS/SACK/window-scale options; the SCADA servers are Windows hosts (TTL 128, incrementing
ephemeral ports, delayed ACKs), the PLCs embedded stacks (TTL 64 or 255, small windows, some
pad short frames with junk instead of zeros).

Shapes:
  a  today's generator (gen_crane_capture.py): one request and one response per exchange
  b  pipelined polling: 4 SCADA masters and the crane-local OCR/CMS PCs poll 12 PLCs over
     persistent connections, 1-8 outstanding transactions, answered in order or out of order
  c  as b, with the requests of a cycle in one segment and the answers cut where a Modbus
     RTU-to-TCP gateway cuts them: ADUs split across 2-3 segments, several ADUs per segment
  d  as b, on an impaired network: Ethernet padding (zeros and junk), retransmissions after a
     loss (RTO), out-of-order segments, segments the capture lost, SPAN duplicates, RST closes
  e  200 masters x 500 slaves, short connections (1-4 transactions, FIN or RST)
  f  as b plus 40 % non-Modbus: S7comm, EtherNet/IP (CIP), OPC UA, MQTT, TLS, SSH, DNS
  g  the real captures of ../shared/data/pcaps concatenated (mergecap -a), repeated with
     time shifts (editcap -t) until the packet count is reached

Example:
  python benchmarks/gen_shapes.py --shape b --packets 1000000 --out /tmp/b-1m.pcap
  python benchmarks/gen_shapes.py --shape g --packets 1000000 --out /tmp/g-1m.pcap
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gen_crane_capture import ModbusPoller, write_capture

from cranewatch.sources.pcapwrite import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    PcapWriter,
    internet_checksum,
    ipv4_address,
    udp_datagram,
)

SHAPES = "abcdefg"
START_NS = 1_764_000_000_000_000_000  # 2025-11-24 16:00 UTC, as gen_crane_capture
MS = 1_000_000
US = 1_000
SHARED_PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pcaps"
SHARED_FALLBACK = Path("/work/shared/data/pcaps")

_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")


# --------------------------------------------------------------------------- hosts and frames


class Host:
    """One IPv4 stack: its MAC, TTL, IP identification counter and how its NIC pads."""

    def __init__(self, ip: str, ttl: int = 64, junk_pad: bool = False, window: int = 64240,
                 mss: int = 1460, wscale: int | None = 7) -> None:
        self.ip = ip
        self.ip_bytes = ipv4_address(ip)
        self.mac = b"\x02\x00" + self.ip_bytes if not junk_pad else b"\x00\x0e\x8c" + self.ip_bytes[1:]
        self.ttl = ttl
        self.junk_pad = junk_pad
        self.window = window
        self.mss = mss
        self.wscale = wscale
        self.ident = random.Random(ip).randrange(65536)
        self.next_port = 49152 + random.Random(ip + "p").randrange(8000)

    def ephemeral(self) -> int:
        """Windows hands out ephemeral ports in order."""
        self.next_port = 49152 if self.next_port >= 65535 else self.next_port + 1
        return self.next_port

    def frame(self, dst: Host, proto: int, payload: bytes) -> bytes:
        self.ident = (self.ident + 1) & 0xFFFF
        header = _IP_HEADER.pack(0x45, 0, 20 + len(payload), self.ident, 0x4000, self.ttl, proto, 0,
                                 self.ip_bytes, dst.ip_bytes)
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        frame = dst.mac + self.mac + b"\x08\x00" + header + payload
        if len(frame) < 60:
            # NICs pad short frames to the minimum; some embedded ones leave old buffer bytes
            frame += (b"\x5a\xa5\x00\x13\x01\x00" * 8)[: 60 - len(frame)] if self.junk_pad else bytes(60 - len(frame))
        return frame


def tcp_bytes(src: Host, dst: Host, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes, window: int, options: bytes = b"") -> bytes:
    offset = (5 + len(options) // 4) << 4
    header = _TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset, flags, window, 0, 0) + options
    pseudo = src.ip_bytes + dst.ip_bytes + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    checksum = internet_checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def syn_options(h: Host) -> bytes:
    options = struct.pack("!BBH", 2, 4, h.mss)
    if h.wscale is not None:
        options += b"\x01" + struct.pack("!BBB", 3, 3, h.wscale) + b"\x04\x02\x01\x01"  # NOP WS SACK-perm NOP NOP
    return options


Timed = list[tuple[int, bytes]]  # (ns offset from the burst's start, frame)


class Tcp:
    """One TCP connection. ``send`` builds the frames of one side's segment with the right
    sequence and acknowledgement numbers; ``t`` is the connection's own clock (ns offset)."""

    def __init__(self, client: Host, server: Host, dport: int, rng: random.Random, sport: int | None = None) -> None:
        self.c, self.s = client, server
        self.sport = sport if sport is not None else client.ephemeral()
        self.dport = dport
        self.rng = rng
        self.seq = {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}  # next byte to send
        self.t = 0
        self.out: Timed = []
        self.open = False
        self.acked: dict[bool, int | None] = {True: None, False: None}  # what each side last acknowledged

    def segment(self, from_client: bool, flags: int, payload: bytes = b"", seq: int | None = None,
                options: bytes = b"", ack: int | None = None) -> bytes:
        src, dst = (self.c, self.s) if from_client else (self.s, self.c)
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        own = self.seq[from_client] if seq is None else seq
        peer = self.seq[not from_client] if ack is None else ack
        window = src.window if flags & TCP_SYN else src.window >> (src.wscale or 0) if dst.wscale is not None and src.wscale is not None else src.window
        window = max(1, min(window, 65535))
        data = tcp_bytes(src, dst, sport, dport, own, peer if flags & TCP_ACK else 0, flags, payload, window, options)
        if flags & TCP_ACK:
            self.acked[from_client] = peer
        if seq is None:
            self.seq[from_client] = (own + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
        return src.frame(dst, 6, data)

    def emit(self, frame: bytes, after_ns: int = 0) -> None:
        self.t += after_ns
        self.out.append((self.t, frame))

    def take(self) -> Timed:
        out, self.out = self.out, []
        return out

    def handshake(self, rtt: int = 300 * US) -> None:
        self.emit(self.segment(True, TCP_SYN, options=syn_options(self.c)))
        self.emit(self.segment(False, TCP_SYN | TCP_ACK, options=syn_options(self.s)), rtt // 2)
        self.emit(self.segment(True, TCP_ACK), rtt // 2)
        self.open = True

    def send(self, from_client: bool, payload: bytes, after_ns: int = 50 * US, psh: bool = True) -> None:
        self.emit(self.segment(from_client, (TCP_PSH if psh else 0) | TCP_ACK, payload), after_ns)

    def ack(self, from_client: bool, after_ns: int = 50 * US) -> None:
        if self.acked[from_client] == self.seq[not from_client]:
            return  # nothing new to acknowledge: a stack sends no duplicate ACK for that
        self.emit(self.segment(from_client, TCP_ACK), after_ns)

    def fin(self, client_first: bool = True) -> None:
        self.emit(self.segment(client_first, TCP_FIN | TCP_ACK), 200 * US)
        self.emit(self.segment(not client_first, TCP_FIN | TCP_ACK), 200 * US)
        self.emit(self.segment(client_first, TCP_ACK), 200 * US)
        self.open = False

    def rst(self, from_client: bool = True) -> None:
        # an application abort: RST|ACK with the current numbers
        self.emit(self.segment(from_client, TCP_RST | TCP_ACK), 200 * US)
        self.open = False


# --------------------------------------------------------------------------- Modbus actors


class Transactions:
    """Modbus request/response ADU pairs of one master/PLC pair (gen_crane_capture's mix of
    functions, register values that move like a crane working; ``big`` adds long FC 3 reads
    of the drive block, the reads a gateway splits)."""

    def __init__(self, rng: random.Random, big: bool = False) -> None:
        self.poller = ModbusPoller(rng, None, None)  # type: ignore[arg-type]
        self.poller.transaction_id = rng.randrange(65536)
        self.rng = rng
        self.big = big

    def next(self) -> tuple[bytes, bytes]:
        if self.big and self.rng.random() < 0.25:
            count = self.rng.choice((60, 100, 125))
            tid = self.poller.transaction_id = (self.poller.transaction_id + 1) & 0xFFFF
            pdu = struct.pack("!BHH", 3, 100, count)
            values = [(100 + i * 37 + self.poller.tick) & 0xFFFF for i in range(count)]
            reply = struct.pack("!BB", 3, 2 * count) + struct.pack(f"!{count}H", *values)
            return (struct.pack("!HHHB", tid, 0, len(pdu) + 1, 1) + pdu,
                    struct.pack("!HHHB", tid, 0, len(reply) + 1, 1) + reply)
        return self.poller._request()


class Actor:
    """Something on the network with its own schedule: ``burst`` returns its next frames."""

    next_ns: int = 0
    kind: str = "modbus"

    def burst(self) -> Timed:
        raise NotImplementedError


class Impairments:
    """What an imperfect network and SPAN port do to one data segment (shape d)."""

    def __init__(self, rng: random.Random, loss: float = 0.0, reorder: float = 0.0, capture_loss: float = 0.0,
                 duplicate: float = 0.0) -> None:
        self.rng = rng
        self.loss, self.reorder, self.capture_loss, self.duplicate = loss, reorder, capture_loss, duplicate

    @property
    def any(self) -> bool:
        return bool(self.loss or self.reorder or self.capture_loss or self.duplicate)


class PipelinedPoller(Actor):
    """A master polling one PLC over one persistent connection: each cycle 1-8 requests back to
    back (or ``coalesce``d into one segment), answers in order or out of order; delayed ACKs."""

    def __init__(self, rng: random.Random, master: Host, plc: Host, period_ns: int, max_outstanding: int = 8,
                 coalesce: bool = False, gateway_split: bool = False, impair: Impairments | None = None,
                 start_ns: int = 0) -> None:
        self.rng = rng
        self.master, self.plc = master, plc
        self.period = period_ns
        self.max_outstanding = max_outstanding
        self.coalesce = coalesce
        self.gateway_split = gateway_split
        self.impair = impair or Impairments(rng)
        self.transactions = Transactions(rng, big=gateway_split)
        self.conn: Tcp | None = None
        self.cycles_left = 0
        self.next_ns = start_ns

    def _data(self, conn: Tcp, from_client: bool, payload: bytes, after: int) -> None:
        """One data segment, through the network's impairments."""
        imp = self.impair
        if not imp.any:
            conn.send(from_client, payload, after)
            return
        roll = self.rng.random()
        if roll < imp.capture_loss:  # the SPAN port dropped it; the peer got it
            conn.segment(from_client, TCP_PSH | TCP_ACK, payload)
            conn.t += after
            return
        roll -= imp.capture_loss
        if roll < imp.loss:  # lost after the tap: seen once, then again after the RTO
            seq = conn.seq[from_client]
            conn.send(from_client, payload, after)
            conn.emit(conn.segment(from_client, TCP_PSH | TCP_ACK, payload, seq=seq), self.rng.randrange(200, 320) * MS)
            return
        roll -= imp.loss
        if roll < imp.duplicate:  # SPAN duplicate: the same frame twice, microseconds apart
            frame = conn.segment(from_client, TCP_PSH | TCP_ACK, payload)
            conn.emit(frame, after)
            conn.emit(frame, 3 * US)
            return
        conn.send(from_client, payload, after)

    def _stream(self, conn: Tcp, from_client: bool, adus: list[bytes], gap: int) -> None:
        """The ADUs as the sender writes them: one per segment, or split the way a serial
        gateway forwards them (header, then the rest as the UART delivers it)."""
        if not self.gateway_split:
            pieces = adus
        else:
            pieces = []
            for adu in adus:
                parts = self.rng.choices((1, 2, 3), (0.5, 0.35, 0.15))[0]
                cuts = sorted(self.rng.sample(range(1, len(adu)), min(parts - 1, len(adu) - 1)))
                bounds = [0, *cuts, len(adu)]
                sub = [adu[a:b] for a, b in itertools.pairwise(bounds)]
                if pieces and self.rng.random() < 0.4:  # the tail of the last ADU rides with this head
                    pieces[-1] += sub.pop(0)
                pieces.extend(sub)
        reorder = self.impair.reorder and len(pieces) > 1 and self.rng.random() < self.impair.reorder * len(pieces)
        if reorder:  # two segments overtake each other (a second path through the ring)
            i = self.rng.randrange(len(pieces) - 1)
            seq0 = conn.seq[from_client]
            offsets = list(itertools.accumulate((len(p) for p in pieces), initial=0))
            order = list(range(len(pieces)))
            order[i], order[i + 1] = order[i + 1], order[i]
            for n, k in enumerate(order):
                conn.emit(conn.segment(from_client, TCP_PSH | TCP_ACK, pieces[k], seq=seq0 + offsets[k]),
                          gap if n else gap + 30 * US)
            conn.seq[from_client] = (seq0 + offsets[-1]) & 0xFFFFFFFF
            return
        for n, piece in enumerate(pieces):
            self._data(conn, from_client, piece, gap if n else gap + 30 * US)

    def burst(self) -> Timed:
        rng = self.rng
        if self.conn is None:
            self.conn = Tcp(self.master, self.plc, 502, rng)
            self.conn.handshake(rng.randrange(150, 600) * US)
            self.cycles_left = rng.randint(2000, 20000)
        conn = self.conn
        conn.t = 0
        k = rng.randint(1, self.max_outstanding)
        pairs = [self.transactions.next() for _ in range(k)]
        requests = [p[0] for p in pairs]
        if self.coalesce and rng.random() < 0.6:
            self._data(conn, True, b"".join(requests), 20 * US)
        else:
            for request in requests:
                self._data(conn, True, request, rng.randrange(15, 80) * US)
        # the PLC's scan: a pure ACK when it takes longer than its delayed-ACK timer
        scan = rng.randrange(1, 12) * MS
        if scan > 8 * MS and rng.random() < 0.7:
            conn.ack(False, 5 * MS)
            scan -= 5 * MS
        order = list(range(k))
        if k > 1 and rng.random() < 0.35:  # answered out of order (a gateway, a multi-task PLC)
            rng.shuffle(order)
        answers = [pairs[i][1] for i in order]
        conn.t += scan
        if self.gateway_split:
            self._stream(conn, False, answers, rng.randrange(300, 1200) * US)
        else:
            for received, answer in enumerate(answers, 1):
                self._data(conn, False, answer, rng.randrange(40, 400) * US)
                if received % 2 == 0 and rng.random() < 0.9:  # ACK every second segment
                    conn.ack(True, 30 * US)
        conn.ack(True, rng.randrange(1, 40) * MS if rng.random() < 0.5 else 200 * MS)  # the delayed ACK
        self.cycles_left -= 1
        if self.cycles_left <= 0:
            if self.impair.any and rng.random() < 0.3:
                conn.rst(True)
            else:
                conn.fin(rng.random() < 0.8)
            self.conn = None
        self.next_ns += self.period + rng.randrange(-self.period // 10, self.period // 10 + 1)
        return conn.take()


class ShortPoller(Actor):
    """Shape e: a master that opens a connection to a slave, does 1-4 transactions, and
    closes it (FIN, or an HMI driver's RST)."""

    def __init__(self, rng: random.Random, master: Host, slaves: list[Host], period_ns: int, start_ns: int) -> None:
        self.rng, self.master, self.slaves, self.period = rng, master, slaves, period_ns
        self.next_ns = start_ns
        self.transactions = {s.ip: Transactions(random.Random(rng.random())) for s in slaves}

    def burst(self) -> Timed:
        rng = self.rng
        slave = rng.choice(self.slaves)
        conn = Tcp(self.master, slave, 502, rng)
        conn.handshake(rng.randrange(200, 2000) * US)
        tx = self.transactions[slave.ip]
        for n in range(rng.randint(1, 4)):
            request, answer = tx.next()
            conn.send(True, request, 60 * US if n == 0 else rng.randrange(100, 900) * US)
            conn.send(False, answer, rng.randrange(1, 10) * MS)
        roll = rng.random()
        if roll < 0.6:
            conn.fin(True)
        elif roll < 0.85:
            conn.rst(True)
        else:
            conn.ack(True, 100 * US)
            conn.fin(False)  # the slave's idle timer closes
        self.next_ns += self.period + rng.randrange(self.period // 2)
        return conn.take()


# --------------------------------------------------------------------------- other protocols


def s7_job(pdu_ref: int, param: bytes, data: bytes = b"") -> bytes:
    s7 = struct.pack("!BBHHHH", 0x32, 1, 0, pdu_ref, len(param), len(data)) + param + data
    return tpkt_dt(s7)


def s7_ack(pdu_ref: int, param: bytes, data: bytes = b"") -> bytes:
    s7 = struct.pack("!BBHHHHBB", 0x32, 3, 0, pdu_ref, len(param), len(data), 0, 0) + param + data
    return tpkt_dt(s7)


def tpkt_dt(payload: bytes) -> bytes:
    cotp = b"\x02\xf0\x80" + payload
    return struct.pack("!BBH", 3, 0, 4 + len(cotp)) + cotp


def opcua_string(text: bytes | None) -> bytes:
    return struct.pack("<i", -1) if text is None else struct.pack("<i", len(text)) + text


def opcua_request_header(handle: int) -> bytes:
    # auth token (two-byte null NodeId), timestamp, handle, diagnostics, audit id, timeout, additional header
    return b"\x00\x00" + struct.pack("<qII", 133_770_000_000_000_000, handle, 0) + opcua_string(None) + \
        struct.pack("<I", 10000) + b"\x00\x00\x00"


def opcua_response_header(handle: int) -> bytes:
    return struct.pack("<qII", 133_770_000_000_000_000, handle, 0) + b"\x00" + struct.pack("<i", -1) + b"\x00\x00\x00"


def opcua_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + b"F" + struct.pack("<I", 8 + len(body)) + body


class BackgroundConnection(Actor):
    """A non-Modbus TCP conversation: opens, talks every ``period``, reopens now and then."""

    kind = "other"

    def __init__(self, rng: random.Random, client: Host, server: Host, port: int, period_ns: int, start_ns: int,
                 opener: Callable[[Tcp], None], talker: Callable[[Tcp], None], life: tuple[int, int] = (50, 500)) -> None:
        self.rng, self.client, self.server, self.port, self.period = rng, client, server, port, period_ns
        self.next_ns = start_ns
        self.opener, self.talker, self.life = opener, talker, life
        self.conn: Tcp | None = None
        self.left = 0

    def burst(self) -> Timed:
        rng = self.rng
        if self.conn is None:
            self.conn = Tcp(self.client, self.server, self.port, rng)
            self.conn.handshake(rng.randrange(150, 900) * US)
            self.opener(self.conn)
            self.left = rng.randint(*self.life)
        conn = self.conn
        self.talker(conn)
        self.left -= 1
        if self.left <= 0:
            conn.fin(rng.random() < 0.7)
            self.conn = None
        self.next_ns += self.period + rng.randrange(self.period // 5)
        out = conn.take()
        conn.t = 0
        return out


class Protocols:
    """Openers and talkers of plausible non-Modbus conversations (tshark dissects each cleanly)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pdu_ref = 0
        self.handle = 0

    # S7comm: COTP connect, setup communication, then read-variable jobs of DB blocks
    def s7_open(self, c: Tcp) -> None:
        cr = bytes([17, 0xE0, 0, 0, 0, 1, 0]) + b"\xc1\x02\x01\x00\xc2\x02\x01\x02\xc0\x01\x0a"
        cc = bytes([17, 0xD0, 0, 1, 0, 1, 0]) + b"\xc1\x02\x01\x00\xc2\x02\x01\x02\xc0\x01\x0a"
        c.send(True, struct.pack("!BBH", 3, 0, 4 + len(cr)) + cr, 100 * US)
        c.send(False, struct.pack("!BBH", 3, 0, 4 + len(cc)) + cc, 2 * MS)
        setup = struct.pack("!BBHHH", 0xF0, 0, 1, 1, 480)
        self.pdu_ref = (self.pdu_ref + 1) & 0xFFFF
        c.send(True, s7_job(self.pdu_ref, setup), 200 * US)
        c.send(False, s7_ack(self.pdu_ref, setup), 3 * MS)

    def s7_talk(self, c: Tcp) -> None:
        items = self.rng.randint(1, 4)
        lengths = [self.rng.choice((2, 4, 16, 32)) for _ in range(items)]
        param = struct.pack("!BB", 4, items)
        data = b""
        for n, length in enumerate(lengths):
            param += struct.pack("!BBBBHHB", 0x12, 0x0A, 0x10, 2, length, 10 + n, 0x84) + (8 * 16 * n).to_bytes(3, "big")
            item = struct.pack("!BBH", 0xFF, 4, length * 8) + self.rng.randbytes(length)
            if n < items - 1 and length % 2:
                item += b"\x00"
            data += item
        self.pdu_ref = (self.pdu_ref + 1) & 0xFFFF
        c.send(True, s7_job(self.pdu_ref, param), 100 * US)
        c.send(False, s7_ack(self.pdu_ref, struct.pack("!BB", 4, items), data), self.rng.randrange(2, 9) * MS)
        if self.rng.random() < 0.5:
            c.ack(True, 40 * MS)

    # EtherNet/IP: register a session, then CIP Get_Attribute_Single over SendRRData
    def enip(self, command: int, session: int, data: bytes, context: int = 0) -> bytes:
        return struct.pack("<HHIIQI", command, len(data), session, 0, context, 0) + data

    def enip_open(self, c: Tcp) -> None:
        self.handle += 1
        c.session = 0x10000 + self.handle  # type: ignore[attr-defined]
        c.send(True, self.enip(0x65, 0, struct.pack("<HH", 1, 0)), 100 * US)
        c.send(False, self.enip(0x65, c.session, struct.pack("<HH", 1, 0)), 2 * MS)  # type: ignore[attr-defined]

    def enip_talk(self, c: Tcp) -> None:
        session = c.session  # type: ignore[attr-defined]
        attribute = self.rng.choice((1, 2, 3, 7))
        cip = bytes([0x0E, 3, 0x20, 0x01, 0x24, 0x01, 0x30, attribute])
        cpf = struct.pack("<IHHHHHH", 0, 5, 2, 0, 0, 0xB2, len(cip)) + cip
        context = self.rng.randrange(1 << 63)
        c.send(True, self.enip(0x6F, session, cpf, context), 100 * US)
        value = {1: struct.pack("<H", 1), 2: struct.pack("<H", 14), 3: struct.pack("<H", 0x6C),
                 7: b"\x0f1756-L83E/B LOGIX"}[attribute]
        reply = bytes([0x8E, 0, 0, 0]) + value
        cpf = struct.pack("<IHHHHHH", 0, 0, 2, 0, 0, 0xB2, len(reply)) + reply
        c.send(False, self.enip(0x6F, session, cpf, context), self.rng.randrange(1, 5) * MS)
        if self.rng.random() < 0.5:
            c.ack(True, 30 * MS)

    # OPC UA binary: hello, open a secure channel (security None), then Read requests
    def opcua_open(self, c: Tcp) -> None:
        url = b"opc.tcp://10.20.0.60:4840"
        c.send(True, opcua_chunk(b"HEL", struct.pack("<IIIII", 0, 65536, 65536, 0, 0) + opcua_string(url)), 100 * US)
        c.send(False, opcua_chunk(b"ACK", struct.pack("<IIIII", 0, 65536, 65536, 0, 0)), 1 * MS)
        policy = opcua_string(b"http://opcfoundation.org/UA/SecurityPolicy#None")
        self.handle += 1
        body = b"\x01\x00\xbe\x01" + opcua_request_header(self.handle) + struct.pack("<III", 0, 0, 1) + \
            opcua_string(b"") + struct.pack("<I", 3_600_000)
        security = struct.pack("<I", 0) + policy + opcua_string(None) + opcua_string(None)
        c.send(True, opcua_chunk(b"OPN", security + struct.pack("<II", 1, 1) + body), 200 * US)
        c.channel = 0x4000 + self.handle  # type: ignore[attr-defined]
        c.seqno = 2  # type: ignore[attr-defined]
        body = b"\x01\x00\xc1\x01" + opcua_response_header(self.handle) + struct.pack("<I", 0) + \
            struct.pack("<IIqI", c.channel, 1, 133_770_000_000_000_000, 3_600_000) + opcua_string(b"")  # type: ignore[attr-defined]
        security = struct.pack("<I", c.channel) + policy + opcua_string(None) + opcua_string(None)  # type: ignore[attr-defined]
        c.send(False, opcua_chunk(b"OPN", security + struct.pack("<II", 1, 1) + body), 2 * MS)

    def opcua_talk(self, c: Tcp) -> None:
        self.handle += 1
        nodes = self.rng.randint(1, 6)
        read = b"\x01\x00\x77\x02" + opcua_request_header(self.handle) + struct.pack("<dI", 0.0, 2) + struct.pack("<i", nodes)
        for n in range(nodes):
            # string NodeId in namespace 2, the Value attribute
            name = b"Crane.STS%02d.Hoist.Load" % (n + 1)
            read += b"\x03" + struct.pack("<H", 2) + opcua_string(name) + struct.pack("<I", 13) + opcua_string(None) + \
                struct.pack("<H", 0) + opcua_string(None)
        seqno = c.seqno = c.seqno + 1  # type: ignore[attr-defined]
        c.send(True, opcua_chunk(b"MSG", struct.pack("<IIII", c.channel, 1, seqno, self.handle) + read), 100 * US)  # type: ignore[attr-defined]
        answer = b"\x01\x00\x7a\x02" + opcua_response_header(self.handle) + struct.pack("<i", nodes)
        for _ in range(nodes):
            answer += b"\x01\x0a" + struct.pack("<f", self.rng.uniform(0, 65))
        answer += struct.pack("<i", -1)
        c.send(False, opcua_chunk(b"MSG", struct.pack("<IIII", c.channel, 1, seqno, self.handle) + answer),  # type: ignore[attr-defined]
               self.rng.randrange(1, 6) * MS)
        if self.rng.random() < 0.5:
            c.ack(True, 40 * MS)

    # MQTT 3.1.1: connect, then QoS 0 publishes and keep-alive pings
    def mqtt_open(self, c: Tcp) -> None:
        client_id = b"ocr-" + c.c.ip.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id
        c.send(True, bytes([0x10, len(body)]) + body, 100 * US)
        c.send(False, b"\x20\x02\x00\x00", 1 * MS)

    def mqtt_talk(self, c: Tcp) -> None:
        if self.rng.random() < 0.1:
            c.send(True, b"\xc0\x00", 100 * US)
            c.send(False, b"\xd0\x00", 1 * MS)
            return
        topic = b"terminal/sts/ocr/container"
        message = b'{"container":"MSCU%07d","lane":%d}' % (self.rng.randrange(10**7), self.rng.randrange(1, 9))
        body = struct.pack("!H", len(topic)) + topic + message
        c.send(True, bytes([0x30, len(body)]) + body, 100 * US)
        c.ack(False, 40 * MS)

    # TLS 1.3 to the TOS: hellos, then application data both ways
    def tls_open(self, c: Tcp) -> None:
        extensions = b"\x00\x2b\x00\x03\x02\x03\x04"  # supported_versions: TLS 1.3
        body = b"\x03\x03" + self.rng.randbytes(32) + b"\x00\x00\x02\x13\x01\x01\x00" + \
            struct.pack("!H", len(extensions)) + extensions
        handshake = b"\x01" + len(body).to_bytes(3, "big") + body
        c.send(True, b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake, 100 * US)
        body = b"\x03\x03" + self.rng.randbytes(32) + b"\x00\x13\x01\x00" + struct.pack("!H", 6) + b"\x00\x2b\x00\x02\x03\x04"
        handshake = b"\x02" + len(body).to_bytes(3, "big") + body
        server = b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake + b"\x14\x03\x03\x00\x01\x01"
        server += b"\x17\x03\x03" + struct.pack("!H", 600) + self.rng.randbytes(600)
        c.send(False, server, 2 * MS)
        c.send(True, b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03" + struct.pack("!H", 53) + self.rng.randbytes(53), 1 * MS)

    def tls_talk(self, c: Tcp) -> None:
        size = self.rng.randrange(80, 400)
        c.send(True, b"\x17\x03\x03" + struct.pack("!H", size) + self.rng.randbytes(size), 100 * US)
        size = self.rng.randrange(100, 1300)
        c.send(False, b"\x17\x03\x03" + struct.pack("!H", size) + self.rng.randbytes(size), 3 * MS)
        c.ack(True, 40 * MS)

    # SSH: banners, key exchange in the clear, then encrypted packets
    def ssh_packet(self, payload: bytes) -> bytes:
        padding = 8 - (len(payload) + 5) % 8
        padding += 8 if padding < 4 else 0
        return struct.pack("!IB", len(payload) + padding + 1, padding) + payload + bytes(padding)

    def ssh_kexinit(self) -> bytes:
        names = [b"curve25519-sha256", b"ssh-ed25519", b"aes128-ctr", b"aes128-ctr", b"hmac-sha2-256",
                 b"hmac-sha2-256", b"none", b"none", b"", b""]
        body = b"\x14" + self.rng.randbytes(16) + b"".join(struct.pack("!I", len(n)) + n for n in names) + b"\x00" + bytes(4)
        return self.ssh_packet(body)

    def ssh_open(self, c: Tcp) -> None:
        c.send(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 2 * MS)
        c.send(True, b"SSH-2.0-OpenSSH_9.6\r\n", 1 * MS)
        c.send(True, self.ssh_kexinit(), 100 * US)
        c.send(False, self.ssh_kexinit(), 1 * MS)
        key = struct.pack("!I", 32) + self.rng.randbytes(32)
        c.send(True, self.ssh_packet(b"\x1e" + key), 1 * MS)
        blob = struct.pack("!I", 11) + b"ssh-ed25519" + struct.pack("!I", 32) + self.rng.randbytes(32)
        sig = struct.pack("!I", 11) + b"ssh-ed25519" + struct.pack("!I", 64) + self.rng.randbytes(64)
        reply = b"\x1f" + struct.pack("!I", len(blob)) + blob + key + struct.pack("!I", len(sig)) + sig
        c.send(False, self.ssh_packet(reply) + self.ssh_packet(b"\x15"), 3 * MS)
        c.send(True, self.ssh_packet(b"\x15"), 1 * MS)

    def ssh_talk(self, c: Tcp) -> None:
        c.send(True, self.rng.randbytes(self.rng.choice((36, 52, 68))), 100 * US)
        c.send(False, self.rng.randbytes(self.rng.choice((36, 52, 100, 500))), 1 * MS)
        c.ack(True, 40 * MS)


class Dns(Actor):
    """UDP lookups of the terminal's names (A records, now and then an NXDOMAIN)."""

    kind = "other"

    def __init__(self, rng: random.Random, clients: list[Host], server: Host, period_ns: int, start_ns: int) -> None:
        self.rng, self.clients, self.server, self.period = rng, clients, server, period_ns
        self.next_ns = start_ns
        self.ident = rng.randrange(65536)

    def burst(self) -> Timed:
        rng = self.rng
        client = rng.choice(self.clients)
        self.ident = (self.ident + 1) & 0xFFFF
        name = rng.choice((b"\x03tos\x08terminal\x04port\x00", b"\x06broker\x08terminal\x04port\x00",
                           b"\x04wsus\x08terminal\x04port\x00", b"\x05sts07\x03plc\x08terminal\x04port\x00"))
        question = name + struct.pack("!HH", 1, 1)
        query = struct.pack("!HHHHHH", self.ident, 0x0100, 1, 0, 0, 0) + question
        if name.startswith(b"\x05sts07"):
            answer = struct.pack("!HHHHHH", self.ident, 0x8183, 1, 0, 0, 0) + question
        else:
            answer = struct.pack("!HHHHHH", self.ident, 0x8180, 1, 1, 0, 0) + question + \
                struct.pack("!HHHIH4s", 0xC00C, 1, 1, 300, 4, ipv4_address("10.20.0.5"))
        sport = rng.randrange(49152, 65535)
        out = [(0, client.frame(self.server, 17, udp_datagram(sport, 53, query, client.ip_bytes, self.server.ip_bytes))),
               (rng.randrange(200, 900) * US,
                self.server.frame(client, 17, udp_datagram(53, sport, answer, self.server.ip_bytes, client.ip_bytes)))]
        self.next_ns += self.period + rng.randrange(self.period)
        return out


# --------------------------------------------------------------------------- the terminals


def plcs(count: int = 12, junk_pad: bool = False) -> list[Host]:
    # PLC stacks: small windows, no window scaling, TTL 64 or 255; with ``junk_pad`` the odd
    # cranes' PLCs pad short frames with stale buffer bytes instead of zeros
    return [Host(f"10.20.{n}.10", ttl=255 if n % 3 == 0 else 64, junk_pad=junk_pad and n % 2 == 1, window=8192, mss=1460,
                 wscale=None) for n in range(1, count + 1)]


def scada_masters() -> list[Host]:
    return [Host(f"10.20.0.{40 + n}", ttl=128, window=65535, wscale=8) for n in range(4)]


def modbus_terminal(rng: random.Random, shape: str) -> list[Actor]:
    """Shapes b, c, d (and the Modbus part of f): persistent pipelined polling."""
    actors: list[Actor] = []
    gateway = shape == "c"
    coalesce = shape == "c"
    impair = Impairments(rng, loss=0.004, reorder=0.003, capture_loss=0.002, duplicate=0.002) if shape == "d" else None
    for plc in plcs(junk_pad=shape == "d"):
        crane = plc.ip.split(".")[2]
        masters = [*scada_masters(), Host(f"10.20.{crane}.20", ttl=64), Host(f"10.20.{crane}.30", ttl=128, wscale=8)]
        for master in masters:
            period = rng.choice((100, 200, 250, 500)) * MS
            actors.append(PipelinedPoller(random.Random(rng.random()), master, plc, period,
                                          coalesce=coalesce, gateway_split=gateway, impair=impair,
                                          start_ns=rng.randrange(period)))
    return actors


def many_pairs(rng: random.Random) -> list[Actor]:
    """Shape e: 200 masters, 500 slaves, short connections."""
    slaves = [Host(f"10.40.{n // 250}.{n % 250 + 1}", ttl=64, window=4096, wscale=None)
              for n in range(500)]
    actors: list[Actor] = []
    for n in range(200):
        master = Host(f"10.30.{n // 250}.{n % 250 + 1}", ttl=128, window=65535, wscale=8)
        mine = rng.sample(slaves, 50)
        period = rng.choice((200, 500, 1000)) * MS
        actors.append(ShortPoller(random.Random(rng.random()), master, mine, period, rng.randrange(period)))
    return actors


def mixed_terminal(rng: random.Random) -> list[Actor]:
    """Shape f: shape b's polling plus S7comm, EtherNet/IP, OPC UA, MQTT, TLS, SSH and DNS."""
    actors = modbus_terminal(rng, "b")
    p = Protocols(random.Random(rng.random()))
    ews = Host("10.20.0.50", ttl=128, window=65535, wscale=8)
    hmi = Host("10.20.0.60", ttl=128, window=65535, wscale=8)

    def add(client: Host, server: Host, port: int, period_ms: int, opener: Callable[[Tcp], None],
            talker: Callable[[Tcp], None]) -> None:
        period = period_ms * MS
        actors.append(BackgroundConnection(random.Random(rng.random()), client, server, port, period,
                                           rng.randrange(period), opener, talker))

    for crane in range(1, 13):
        drive_plc = Host(f"10.20.{crane}.11", ttl=30, window=8192, wscale=None)  # S7-1500 of the drives
        add(Host(f"10.20.0.{40 + crane % 4}", ttl=128, window=65535, wscale=8), drive_plc, 102, 40, p.s7_open, p.s7_talk)
        logix = Host(f"10.20.{crane}.12", ttl=64, window=4096, wscale=None)  # spreader controller
        add(hmi, logix, 44818, 60, p.enip_open, p.enip_talk)
        ocr = Host(f"10.20.{crane}.20", ttl=64)
        add(ocr, Host("10.20.0.6", ttl=64), 1883, 40, p.mqtt_open, p.mqtt_talk)
        add(Host(f"10.20.{crane}.30", ttl=128, wscale=8), Host("10.20.0.5", ttl=64), 443, 50, p.tls_open, p.tls_talk)
        add(hmi, Host(f"10.20.{crane}.13", ttl=64), 4840, 80, p.opcua_open, p.opcua_talk)
    for crane in (1, 4, 7):
        add(ews, Host(f"10.20.{crane}.20", ttl=64), 22, 50, p.ssh_open, p.ssh_talk)
    clients = [Host(f"10.20.{c}.{last}") for c in range(1, 13) for last in (20, 30)]
    actors.append(Dns(random.Random(rng.random()), clients, Host("10.20.0.8"), 5 * MS, 0))
    return actors


def merged(actors: list[Actor]) -> Iterator[tuple[int, bytes]]:
    """Every actor's frames in time order (ties by actor order): a heap of actors by their
    next burst, and a heap of frames already made that may not go out before that."""
    ready: list[tuple[int, int, bytes]] = []
    agenda = [(a.next_ns, n) for n, a in enumerate(actors)]
    heapq.heapify(agenda)
    counter = itertools.count()
    while True:
        start, n = heapq.heappop(agenda)
        actor = actors[n]
        for offset, frame in actor.burst():
            heapq.heappush(ready, (start + offset, next(counter), frame))
        heapq.heappush(agenda, (actor.next_ns, n))
        horizon = agenda[0][0]
        while ready and ready[0][0] <= horizon:
            ts, _, frame = heapq.heappop(ready)
            yield ts, frame


def write_synthetic(path: Path, packets: int, seed: int, shape: str) -> int:
    rng = random.Random(seed * 131 + ord(shape))
    actors = {"b": lambda: modbus_terminal(rng, "b"), "c": lambda: modbus_terminal(rng, "c"),
              "d": lambda: modbus_terminal(rng, "d"), "e": lambda: many_pairs(rng),
              "f": lambda: mixed_terminal(rng)}[shape]()
    written = 0
    last = 0
    with open(path, "wb") as out:
        writer = PcapWriter(out, snaplen=65535)
        pending: list[bytes] = []
        for ts, frame in merged(actors):
            ts = max(ts, last)  # one capture clock: never backwards
            last = ts
            pending.append(writer.record(START_NS + ts, frame))
            written += 1
            if len(pending) >= 20_000:
                out.write(b"".join(pending))
                pending = []
            if written >= packets:
                break
        out.write(b"".join(pending))
    return written


# --------------------------------------------------------------------------- shape g


def shared_captures() -> list[Path]:
    root = SHARED_PCAPS if SHARED_PCAPS.is_dir() else SHARED_FALLBACK
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap"))


def count_packets(path: Path) -> int:
    done = subprocess.run(["capinfos", "-c", "-M", "-T", str(path)], capture_output=True, text=True, check=False)
    try:
        return int(done.stdout.strip().splitlines()[-1].split("\t")[-1])
    except (IndexError, ValueError):
        return 0


def write_real(path: Path, packets: int) -> int:
    """Shape g: every shared capture, end to end (mergecap -a), repeated with the clock moved
    on past the previous copy (editcap -t), cut at ``packets`` (editcap -r)."""
    for tool in ("mergecap", "editcap", "capinfos"):
        if not shutil.which(tool):
            raise SystemExit(f"shape g needs {tool} (apt install wireshark-common)")
    sources = shared_captures()
    if not sources:
        raise SystemExit("shape g: no captures under ../shared/data/pcaps")
    with tempfile.TemporaryDirectory(prefix="shape-g-") as tmp:
        work = Path(tmp)
        once = work / "once.pcapng"
        # Each capture to pcapng first: editcap keeps the packets before a cut-short end (a
        # few shared captures are truncated, and mergecap stops at the first such file).
        readable: list[str] = []
        for n, source in enumerate(sources):
            copy = work / f"src{n}.pcapng"
            subprocess.run(["editcap", "-F", "pcapng", str(source), str(copy)], capture_output=True, check=False)
            if copy.exists() and copy.stat().st_size > 64:
                readable.append(str(copy))
        # pcapng: the captures differ in link type; mergecap -a keeps each one's interface
        subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(once), *readable], check=True)
        for copy_path in readable:
            Path(copy_path).unlink()
        per_copy = count_packets(once)
        copies = max(1, -(-packets // max(per_copy, 1)))
        parts = [once]
        for n in range(1, copies):
            shifted = work / f"copy{n}.pcapng"
            # each copy a week later: the captures' own dates span years, the copies must not overlap in kind
            subprocess.run(["editcap", "-t", str(n * 7 * 86400), str(once), str(shifted)], check=True)
            parts.append(shifted)
        joined = work / "joined.pcapng"
        subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(joined), *map(str, parts)], check=True)
        subprocess.run(["editcap", "-F", "pcapng", "-r", str(joined), str(path), f"1-{packets}"], check=True)
    return count_packets(path)


def write_shape(path: Path, shape: str, packets: int, seed: int) -> int:
    if shape == "a":
        return write_capture(path, packets, seed, cranes=8)
    if shape == "g":
        return write_real(path, packets)
    return write_synthetic(path, packets, seed, shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), required=True)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    count = write_shape(args.out, args.shape, args.packets, args.seed)
    print(f"shape {args.shape}: wrote {count} packets to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
