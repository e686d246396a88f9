"""Hostile inputs for the decoders: structure-aware payloads per protocol family, captures
built from them, mutations of whole capture files, and one run of the real pipeline.

Used by ``tests/test_fuzz_decoders.py`` (bounded, fixed seeds) and by the long run
``benchmarks/fuzz/fuzz_captures.py``. Every generator takes a ``random.Random`` so a case is
reproduced from its seed alone.

A payload family is a server port and transport plus a generator of one conversation: a list
of ``(from_client, bytes)`` messages that start like the protocol (a valid header, a known
message type) and go wrong somewhere (lengths that lie, fields cut short, random bodies), so
the fuzzing reaches past each probe into the decoder.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cranewatch.sources.pcapwrite import LINKTYPE_ETHERNET, PcapngWriter, PcapWriter
from modbus_capture import Conversation, mbap, udp_frame

Message = tuple[bool, bytes]  # (from the client, payload)
Generator = Callable[[random.Random], list[Message]]


def noise(rng: random.Random, most: int = 64) -> bytes:
    """Random bytes, often short, sometimes empty, sometimes one repeated byte."""
    size = rng.choice((0, 1, 2, 3, 4, 7, 8, rng.randrange(most + 1)))
    if rng.random() < 0.15:
        return bytes([rng.randrange(256)]) * size
    return rng.randbytes(size)


def lie(rng: random.Random, true_length: int, bits: int = 16) -> int:
    """A length field: mostly the truth, else off by a little, zero, or the largest value."""
    roll = rng.random()
    if roll < 0.55:
        return true_length
    if roll < 0.8:
        return max(0, true_length + rng.choice((-3, -2, -1, 1, 2, 17)))
    return rng.choice((0, 1, (1 << bits) - 1, rng.randrange(1 << bits)))


def _modbus(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for tid in range(rng.randrange(1, 6)):
        fc = rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43,
                         0x81, 0x83, 0x90, rng.randrange(256)))
        quantity = rng.choice((0, 1, 2, 8, 125, 126, 2000, 2001, 65535, rng.randrange(65536)))
        request = bytes([fc]) + struct.pack(">HH", rng.randrange(65536), quantity)
        if rng.random() < 0.4:
            request = bytes([fc]) + noise(rng)
        count = rng.choice((0, 1, 2, 17, 255, 2 * min(quantity, 125), (quantity + 7) // 8 % 256))
        data = rng.randbytes(rng.choice((count, max(0, count - 1), count + 1, 2)) % 300)
        answer = bytes([fc, count % 256]) + data
        if rng.random() < 0.2:
            answer = bytes([fc | 0x80]) + noise(rng, 3)
        for from_client, pdu in ((True, request), (False, answer)):
            adu = mbap(tid, rng.choice((1, 0, 255)), pdu)
            if rng.random() < 0.1:  # a lying MBAP length or protocol id
                adu = adu[:2] + struct.pack(">HH", rng.choice((0, 0, 1)), lie(rng, len(pdu) + 1)) + adu[6:]
            out.append((from_client, adu))
    if rng.random() < 0.3:  # several ADUs in one segment
        joined = b"".join(m for f, m in out if not f)
        out.append((False, joined))
    return out


def _modbus_polling(rng: random.Random) -> list[Message]:
    """Long plain polling (the fast path's food) with a few corrupted exchanges among it:
    lying byte counts, another unit, a reused or unknown transaction id, a lost or doubled
    answer, a read of quantity 0, an exception."""
    out: list[Message] = []
    reads = [(rng.choice((1, 2, 3, 4)), rng.randrange(200), rng.choice((1, 2, 10, 16))) for _ in range(3)]
    for tid in range(rng.randrange(10, 60)):
        fc, address, quantity = rng.choice(reads)
        unit = 1
        request = bytes([fc]) + struct.pack(">HH", address, quantity)
        size = (quantity + 7) // 8 if fc <= 2 else 2 * quantity
        answer = bytes([fc, size]) + rng.randbytes(size)
        answer_tid, answer_unit = tid, unit
        if rng.random() < 0.15:
            damage = rng.randrange(8)
            if damage == 0:
                answer = bytes([fc, size + 1]) + answer[2:]
            elif damage == 1:
                answer_unit = 255
            elif damage == 2:
                answer_tid = tid + rng.choice((1, -1, 1000))
            elif damage == 3:
                answer = b""  # lost
            elif damage == 4:
                out.append((True, mbap(tid, unit, request)))  # asked twice
            elif damage == 5:
                request = bytes([fc]) + struct.pack(">HH", address, 0)
            elif damage == 6:
                answer = bytes([fc | 0x80, rng.choice((1, 2, 3, 4))])
            else:
                answer = answer[:-1]
        out.append((True, mbap(tid, unit, request)))
        if answer:
            out.append((False, mbap(answer_tid & 0xFFFF, answer_unit, answer)))
            if rng.random() < 0.03:
                out.append((False, mbap(answer_tid & 0xFFFF, answer_unit, answer)))  # doubled
    return out


def _s7comm(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for _ in range(rng.randrange(1, 4)):
        cotp = rng.choice((bytes([2, 0xF0, 0x80]), bytes([0x11, 0xE0, 0, 0, 0, 1, 0]) + noise(rng, 12),
                           bytes([2, 0xF0, 0x00]), noise(rng, 6)))
        s7 = bytes([0x32, rng.choice((1, 2, 3, 7, rng.randrange(256))), 0, 0])
        s7 += struct.pack(">HHH", rng.randrange(65536), lie(rng, 8), lie(rng, 4)) + noise(rng, 40)
        body = cotp + (s7 if rng.random() < 0.8 else noise(rng))
        out.append((rng.random() < 0.6, b"\x03\x00" + struct.pack(">H", lie(rng, 4 + len(body))) + body))
    return out


def _enip(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for _ in range(rng.randrange(1, 4)):
        command = rng.choice((0x0063, 0x0065, 0x0066, 0x006F, 0x0070, 0x0004, rng.randrange(65536)))
        body = noise(rng, 48)
        if command in (0x006F, 0x0070) and rng.random() < 0.7:
            items = struct.pack("<IHH", 0, 0, rng.choice((0, 1, 2, 16, 65535)))
            body = items + noise(rng, 40)
        header = struct.pack("<HHII8sI", command, lie(rng, len(body)), rng.randrange(1 << 32), 0,
                             rng.randbytes(8), 0)
        out.append((rng.random() < 0.6, header + body))
    return out


def _opcua(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for _ in range(rng.randrange(1, 4)):
        kind = rng.choice((b"HEL", b"ACK", b"ERR", b"OPN", b"MSG", b"CLO", b"RHE", noise(rng, 3)))
        body = noise(rng, 80)
        if kind == b"HEL" and rng.random() < 0.6:
            url = b"opc.tcp://plc:4840"
            body = struct.pack("<IIIII", 0, 65536, 65536, 0, 0) + struct.pack("<i", lie(rng, len(url), 31)) + url
        size = lie(rng, 8 + len(body), 32)
        out.append((rng.random() < 0.6, kind[:3].ljust(3, b"X") + rng.choice((b"F", b"C", b"A"))
                    + struct.pack("<I", size) + body))
    return out


def _mqtt(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for _ in range(rng.randrange(1, 5)):
        ptype = rng.choice((1, 2, 3, 3, 4, 8, 12, 13, 14, rng.randrange(16)))
        flags = rng.randrange(16)
        if ptype == 3 and rng.random() < 0.6:
            topic = rng.choice((b"crane/sts-07/ocr", b"", rng.randbytes(rng.randrange(40))))
            body = struct.pack(">H", lie(rng, len(topic))) + topic + noise(rng, 60)
        elif ptype == 1 and rng.random() < 0.6:
            body = b"\x00\x04MQTT" + bytes([rng.choice((3, 4, 5, 0, 255)), rng.randrange(256)]) + b"\x00\x3c" + noise(rng, 30)
        else:
            body = noise(rng, 40)
        length = lie(rng, len(body), 14)
        encoded = bytearray()
        while True:
            byte, length = length & 0x7F, length >> 7
            encoded.append(byte | (0x80 if length else 0))
            if not length:
                break
        if rng.random() < 0.05:
            encoded = bytearray(b"\xff\xff\xff\xff\x7f")
        out.append((rng.random() < 0.7, bytes([ptype << 4 | flags]) + bytes(encoded) + body))
    return out


_QUESTION = b"\x05crane\x07example\x03com\x00\x00\x01\x00\x01"
_VALID_QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + _QUESTION


def _dns_message(rng: random.Random) -> bytes:
    response = rng.random() < 0.6
    header = struct.pack(">HHHHHH", 0x1234, 0x8180 if response else rng.choice((0x0100, rng.randrange(65536))),
                         rng.choice((1, 1, 1, 0, 2, 65535)), lie(rng, 1) if response else 0, 0,
                         rng.choice((0, 0, 1)))
    question = rng.choice((_QUESTION, _QUESTION, b"\xc0\x0c\x00\x01\x00\x01", b"\xc0\x0c",
                           b"\x3f" + b"a" * 10, b"\xc0\x0c" * 3, noise(rng, 30)))
    rdata = rng.choice((b"\x0a\x00\x00\x01", b"\x03abc", b"\xc0\x0c", noise(rng, 20)))
    answer = rng.choice((b"", b"\xc0\x0c", b"\xc0\x0c" + struct.pack(
        ">HHIH", rng.choice((1, 5, 16, 28, 12, 33, rng.randrange(65536))), 1, 60,
        lie(rng, len(rdata))) + rdata, noise(rng, 30)))
    return header + question + answer


def _dns(rng: random.Random) -> list[Message]:
    """A query the probe accepts, then hostile queries and answers."""
    return [(True, _VALID_QUERY)] + [(rng.random() < 0.3, _dns_message(rng))
                                     for _ in range(rng.randrange(1, 4))]


def _tls(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for _ in range(rng.randrange(1, 4)):
        htype = rng.choice((1, 2, 11, 12, 14, 16, rng.randrange(256))) if out else rng.choice((1, 2))
        body = struct.pack(">H", 0x0303) + rng.randbytes(32) + noise(rng, 80)
        if htype == 1 and rng.random() < 0.5:  # a ClientHello with an SNI extension
            name = rng.choice((b"tos.terminal.example", b"", rng.randbytes(20)))
            sni = struct.pack(">HHHBH", 0, lie(rng, len(name) + 5), lie(rng, len(name) + 3), 0, lie(rng, len(name))) + name
            body = (struct.pack(">H", 0x0303) + rng.randbytes(32) + b"\x00" + b"\x00\x02\x13\x01"
                    + b"\x01\x00" + struct.pack(">H", lie(rng, len(sni))) + sni)
        handshake = bytes([htype]) + struct.pack(">I", lie(rng, len(body), 24))[1:] + body
        record_type = rng.choice((22, 22, 22, 20, 21, 23, rng.randrange(256))) if out else 22
        out.append((rng.random() < 0.6, bytes([record_type]) + b"\x03\x01"
                    + struct.pack(">H", lie(rng, len(handshake))) + handshake))
    return out


def _http(rng: random.Random) -> list[Message]:
    line = rng.choice((b"GET / HTTP/1.1", b"POST /upload HTTP/1.1", b"HTTP/1.1 200 OK", b"GET",
                       b"\x00\x01garbage", b"PUT /" + rng.randbytes(20) + b" HTTP/1.0"))
    headers = [b"Host: " + rng.choice((b"tos.example", b"", rng.randbytes(30)))]
    if rng.random() < 0.5:
        headers.append(b"Content-Length: " + rng.choice((b"5", b"-1", b"99999999999", b"x", b"0")))
    if rng.random() < 0.3:
        headers.append(b"Transfer-Encoding: chunked")
    body = rng.choice((b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", noise(rng, 80)))
    request = line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body
    answer = b"HTTP/1.1 " + rng.choice((b"200 OK", b"x", b"")) + b"\r\nContent-Length: 3\r\n\r\nabc"
    return [(True, request), (False, answer)][: rng.randrange(1, 3)]


def _ssh(rng: random.Random) -> list[Message]:
    out: list[Message] = [(True, rng.choice((b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-1.99-x\r\n", b"SSH-", noise(rng))))]
    out.append((False, b"SSH-2.0-dropbear\r\n"))
    for _ in range(rng.randrange(0, 3)):
        payload = bytes([rng.choice((20, 21, 30, 31, rng.randrange(256)))]) + rng.randbytes(16)
        for _name in range(rng.randrange(0, 4)):
            text = rng.choice((b"curve25519-sha256", b"", rng.randbytes(10)))
            payload += struct.pack(">I", lie(rng, len(text), 32)) + text
        padding = rng.randrange(0, 8)
        packet = struct.pack(">IB", lie(rng, len(payload) + padding + 1, 32), padding) + payload + bytes(padding)
        out.append((rng.random() < 0.5, packet))
    return out


def _rdp(rng: random.Random) -> list[Message]:
    cr = b"\x0e\xe0\x00\x00\x00\x00\x00" + rng.choice((b"Cookie: mstshash=admin\r\n", b"", noise(rng, 30)))
    return [(True, b"\x03\x00" + struct.pack(">H", lie(rng, 4 + len(cr))) + cr),
            (False, b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00" + noise(rng, 8))][: rng.randrange(1, 3)]


def _vnc(rng: random.Random) -> list[Message]:
    version = rng.choice((b"RFB 003.008\n", b"RFB 003.003\n", b"RFB 9", noise(rng, 12)))
    return [(False, version), (True, version), (False, noise(rng, 20)), (True, noise(rng, 20))][: rng.randrange(1, 5)]


def _dhcp(rng: random.Random) -> list[Message]:
    options = b"\x63\x82\x53\x63" + bytes([53, 1, rng.randrange(1, 9)]) + rng.choice((
        b"\x0c\x05crane", b"\x3d\x07\x01\x02\x00\x00\x00\x00\x30", b"\x03\x04\x0a\x14\x07\x01",
        b"\x0c\xff", noise(rng, 20))) + rng.choice((b"\xff", b""))
    bootp = bytes([rng.choice((1, 2, 3)), 1, 6, 0]) + rng.randbytes(4) + bytes(20) + rng.randbytes(6) + bytes(202)
    return [(True, bootp + options if rng.random() < 0.9 else noise(rng, 300))]


def _ntp(rng: random.Random) -> list[Message]:
    return [(True, bytes([rng.randrange(256)]) + rng.randbytes(rng.choice((0, 10, 47, 47, 60))))]


def _syslog(rng: random.Random) -> list[Message]:
    pri = rng.choice((b"<13>", b"<999>", b"<", b"<x>", b""))
    return [(True, pri + rng.choice((b"Dec  7 08:00:00 plc sshd[1]: Accepted password for root",
                                     b"1 2026-12-07T08:00:00Z cms app - - - hello", noise(rng, 80))))]


@dataclass(frozen=True)
class Family:
    name: str
    transport: str  # "tcp" | "udp"
    port: int
    messages: Generator


FAMILIES: tuple[Family, ...] = (
    Family("modbus", "tcp", 502, _modbus),
    Family("modbus-polling", "tcp", 502, _modbus_polling),
    Family("s7comm", "tcp", 102, _s7comm),
    Family("enip", "tcp", 44818, _enip),
    Family("enip-udp", "udp", 44818, _enip),
    Family("opcua", "tcp", 4840, _opcua),
    Family("mqtt", "tcp", 1883, _mqtt),
    Family("dns", "udp", 53, _dns),
    Family("dns-tcp", "tcp", 53, lambda rng: [(f, struct.pack(">H", lie(rng, len(m))) + m) for f, m in _dns(rng)]),
    Family("tls", "tcp", 443, _tls),
    Family("http", "tcp", 80, _http),
    Family("ssh", "tcp", 22, _ssh),
    Family("rdp", "tcp", 3389, _rdp),
    Family("vnc", "tcp", 5900, _vnc),
    Family("dhcp", "udp", 67, _dhcp),
    Family("ntp", "udp", 123, _ntp),
    Family("syslog", "udp", 514, _syslog),
)
FAMILY = {f.name: f for f in FAMILIES}


def frames_of(family: Family, messages: list[Message], rng: random.Random) -> list[bytes]:
    """Ethernet frames carrying ``messages``: a TCP connection (handshake, payloads cut at
    random into segments, close) or UDP datagrams; the client is the CMS PC, the server a
    crane host, as in the lab."""
    if family.transport == "udp":
        return [udp_frame("10.20.7.30", "10.20.7.10", 40000, family.port, data) if from_client
                else udp_frame("10.20.7.10", "10.20.7.30", family.port, 40000, data)
                for from_client, data in messages]
    conversation = Conversation("10.20.7.30", "10.20.7.10", server_port=family.port)
    frames = conversation.handshake()
    for from_client, data in messages:
        while data:
            cut = len(data) if rng.random() < 0.7 else rng.randrange(1, len(data) + 1)
            frames.append(conversation.send(from_client, data[:cut]))
            data = data[cut:]
    if rng.random() < 0.8:
        frames += conversation.close()
    return frames


def pcap_bytes(frames: list[bytes], start: float = 1_700_000_000.0, step: float = 0.01) -> bytes:
    out = io.BytesIO()
    writer = PcapWriter(out, nanosecond=True)
    for i, data in enumerate(frames):
        writer.write(round((start + i * step) * 1e9), data)
    return out.getvalue()


def pcapng_bytes(frames: list[bytes], start: float = 1_700_000_000.0, step: float = 0.01) -> bytes:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    interface = writer.interface(LINKTYPE_ETHERNET)
    for i, data in enumerate(frames):
        writer.write(interface, round((start + i * step) * 1e9), data)
    return out.getvalue()


def family_capture(family: Family, rng: random.Random) -> bytes:
    """One pcap of one hostile conversation of ``family``."""
    return pcap_bytes(frames_of(family, family.messages(rng), rng))


def mutate(data: bytes, rng: random.Random, skip: int = 24) -> bytes:
    """A few random edits of a file's bytes after its first ``skip`` (the file header is kept
    most of the time, so the records, not only the magic, get fuzzed)."""
    if len(data) <= skip or rng.random() < 0.05:
        skip = 0
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        if len(buf) <= skip:
            break
        at = rng.randrange(skip, len(buf))
        op = rng.random()
        if op < 0.45:
            buf[at] = rng.randrange(256)
        elif op < 0.6:
            buf[at] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            buf[at:at + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
        elif op < 0.8:
            del buf[at:at + rng.randrange(1, 64)]
        elif op < 0.9:
            end = min(len(buf), at + rng.randrange(1, 256))
            buf[at:at] = buf[at:end]  # a repeated stretch
        else:
            del buf[at:]  # truncated
    return bytes(buf)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
