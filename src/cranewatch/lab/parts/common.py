"""What every lab part shares: logging to stdout, a clean stop on SIGTERM, small clients.

The DNS and SNTP clients build the real wire formats (RFC 1035 queries, RFC 4330 client
requests) with the standard library, so the parts need no resolver configuration inside
their namespace.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["dns_query", "dns_query_packet", "setup_part", "sntp_query", "stopping"]

stopping = threading.Event()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stopping.set()


def setup_part(name: str) -> logging.Logger:
    """Log lines with UTC timestamps to stdout (the runner keeps them); stop on SIGTERM."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout,
        format=f"%(asctime)s.%(msecs)03d {name} %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    logging.Formatter.converter = time.gmtime
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return logging.getLogger(name)


def dns_query_packet(name: str, query_id: int, qtype: int = 1) -> bytes:
    """An RFC 1035 query (recursion desired) for ``name``."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def dns_query(name: str, server: str, timeout: float = 2.0) -> list[str]:
    """Resolve an A record through ``server``; the IPv4 answers (empty when none)."""
    query_id = random.randrange(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(dns_query_packet(name, query_id), (server, 53))
        try:
            reply, _ = sock.recvfrom(4096)
        except TimeoutError:
            return []
    if len(reply) < 12 or struct.unpack("!H", reply[:2])[0] != query_id:
        return []
    answers = struct.unpack("!H", reply[6:8])[0]
    offset = 12 + len(dns_query_packet(name, 0)) - 12  # skip the echoed question
    found = []
    for _ in range(answers):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += length
    return found


NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 to 1970


def sntp_query(server: str, timeout: float = 2.0) -> float | None:
    """Ask ``server`` for the time (SNTP v4 client, mode 3); the offset in seconds or None."""
    now = time.time()
    seconds = int(now) + NTP_EPOCH_OFFSET
    fraction = int((now % 1) * 2**32)
    request = struct.pack("!BBbb11I", (0 << 6) | (4 << 3) | 3, 0, 0, 0,
                          0, 0, 0, 0, 0, 0, 0, 0, 0, seconds, fraction)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, (server, 123))
        try:
            reply, _ = sock.recvfrom(512)
        except TimeoutError:
            return None
    if len(reply) < 48:
        return None
    transmit_s, transmit_f = struct.unpack("!II", reply[40:48])
    server_time = transmit_s - NTP_EPOCH_OFFSET + transmit_f / 2**32
    return server_time - (now + time.time()) / 2


def serve_tcp(port: int, handle: Callable[[socket.socket], None], log: logging.Logger) -> None:
    """Accept TCP clients on ``port`` until the part is stopped; each session in its own
    thread, closed when ``handle`` returns; a session that breaks is logged, not fatal."""
    listener = socket.create_server(("0.0.0.0", port))
    listener.settimeout(0.5)
    while not stopping.is_set():
        try:
            conn, peer = listener.accept()
        except TimeoutError:
            continue
        log.info("connection from %s:%d", *peer)

        def session(conn: socket.socket = conn) -> None:
            with conn:
                try:
                    handle(conn)
                except OSError as exc:
                    log.info("session ended: %s", exc)

        threading.Thread(target=session, daemon=True).start()
