"""A remote-desktop session over RFB 3.8 (VNC): a small server and the vendor's client.

The server is the CMS's HMI shared over VNC (no X needed): it speaks the RFB 3.8 handshake
(ProtocolVersion, security type None with SecurityResult, ClientInit/ServerInit), answers
FramebufferUpdateRequests with RRE-encoded rectangles of an HMI screen whose load bar moves,
and reads SetPixelFormat, SetEncodings, KeyEvent, PointerEvent and ClientCutText. The client
does what a vendor engineer's viewer does: handshake, full update, then incremental updates,
pointer moves and a few keystrokes until its deadline. Wire formats follow RFC 6143.
"""

from __future__ import annotations

import argparse
import logging
import socket
import struct
import time

from cranewatch.lab.parts.common import serve_tcp, setup_part, stopping

VERSION = b"RFB 003.008\n"
WIDTH, HEIGHT = 1024, 768
NAME = b"STS-07 CMS HMI"
# 32 bpp, depth 24, little-endian, true colour, 8 bits per channel at shifts 16/8/0.
PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
ENCODING_RAW, ENCODING_RRE = 0, 2


def pixel(red: int, green: int, blue: int) -> bytes:
    return struct.pack("<I", (red << 16) | (green << 8) | blue)


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def rre_rect(x: int, y: int, w: int, h: int, background: bytes,
             subrects: list[tuple[bytes, int, int, int, int]]) -> bytes:
    """One rectangle header (encoding RRE) and its body."""
    body = struct.pack("!I", len(subrects)) + background
    for colour, sx, sy, sw, sh in subrects:
        body += colour + struct.pack("!HHHH", sx, sy, sw, sh)
    return struct.pack("!HHHHi", x, y, w, h, ENCODING_RRE) + body


def hmi_screen(tick: int, full: bool) -> bytes:
    """A FramebufferUpdate: the whole HMI (full) or just the load-bar panel."""
    bar = 80 + (tick * 37) % 600
    panel = rre_rect(100, 500, 800, 60, pixel(30, 30, 30),
                     [(pixel(0, 170, 0), 10, 10, bar, 40), (pixel(200, 200, 200), 0, 0, 800, 2)])
    rects = [panel]
    if full:
        rects.insert(0, rre_rect(0, 0, WIDTH, HEIGHT, pixel(50, 60, 70), [
            (pixel(0, 60, 130), 0, 0, WIDTH, 40),  # title bar
            (pixel(220, 220, 220), 40, 80, 420, 380),  # trolley/hoist diagram
            (pixel(220, 220, 220), 520, 80, 460, 380),  # alarm list
            (pixel(200, 40, 40), 540, 100, 120, 24),  # an alarm line
        ]))
    return struct.pack("!BxH", 0, len(rects)) + b"".join(rects)


CLIENT_MESSAGE_SIZES = {0: 19, 3: 9, 4: 7, 5: 5}  # bytes after the type byte


def serve_client(conn: socket.socket, log: logging.Logger) -> None:
    conn.sendall(VERSION)
    client_version = recv_exact(conn, 12)
    conn.sendall(b"\x01\x01")  # one security type: None
    chosen = recv_exact(conn, 1)
    conn.sendall(struct.pack("!I", 0))  # SecurityResult OK
    shared = recv_exact(conn, 1)
    conn.sendall(struct.pack("!HH", WIDTH, HEIGHT) + PIXEL_FORMAT
                 + struct.pack("!I", len(NAME)) + NAME)
    log.info("session: client %r security %d shared %d", client_version.strip(), chosen[0],
             shared[0])
    tick = 0
    while not stopping.is_set():
        kind = recv_exact(conn, 1)[0]
        if kind == 2:  # SetEncodings
            (count,) = struct.unpack("!xH", recv_exact(conn, 3))
            encodings = struct.unpack(f"!{count}i", recv_exact(conn, 4 * count))
            log.info("encodings %s", encodings)
        elif kind == 6:  # ClientCutText
            _, length = struct.unpack("!3sI", recv_exact(conn, 7))
            log.info("cut text %r", recv_exact(conn, length))
        elif kind in CLIENT_MESSAGE_SIZES:
            body = recv_exact(conn, CLIENT_MESSAGE_SIZES[kind])
            if kind == 3:
                incremental = body[0]
                conn.sendall(hmi_screen(tick, full=not incremental))
                tick += 1
            elif kind == 4:
                down, key = struct.unpack("!B2xI", body)
                log.info("key %s %#x", "down" if down else "up", key)
        else:
            log.warning("unknown client message %d, closing", kind)
            return


def server(args: argparse.Namespace) -> None:
    log = setup_part("rfb-server")
    serve_tcp(args.port, lambda conn: serve_client(conn, log), log)


def read_update(sock: socket.socket) -> int:
    """Read one FramebufferUpdate (RRE or raw rectangles); the number of rectangles."""
    kind, count = struct.unpack("!BxH", recv_exact(sock, 4))
    if kind != 0:
        raise ConnectionError(f"unexpected server message {kind}")
    for _ in range(count):
        _, _, w, h, encoding = struct.unpack("!HHHHi", recv_exact(sock, 12))
        if encoding == ENCODING_RRE:
            subrects = struct.unpack("!I", recv_exact(sock, 4))[0]
            recv_exact(sock, 4 + subrects * 12)
        elif encoding == ENCODING_RAW:
            recv_exact(sock, w * h * 4)
        else:
            raise ConnectionError(f"unsupported encoding {encoding}")
    return count


def client(args: argparse.Namespace) -> None:
    log = setup_part("rfb-client")
    with socket.create_connection((args.host, args.port), timeout=5) as sock:
        server_version = recv_exact(sock, 12)
        sock.sendall(VERSION)
        count = recv_exact(sock, 1)[0]
        types = recv_exact(sock, count)
        sock.sendall(b"\x01")
        result = struct.unpack("!I", recv_exact(sock, 4))[0]
        sock.sendall(b"\x01")  # shared session
        width, height = struct.unpack("!HH", recv_exact(sock, 4))
        recv_exact(sock, 16)
        name = recv_exact(sock, struct.unpack("!I", recv_exact(sock, 4))[0])
        log.info("server %r types %s result %d screen %dx%d %r", server_version.strip(),
                 list(types), result, width, height, name)
        sock.sendall(b"\x00\x00\x00\x00" + PIXEL_FORMAT)  # SetPixelFormat
        sock.sendall(struct.pack("!BxHii", 2, 2, ENCODING_RRE, ENCODING_RAW))  # SetEncodings
        sock.sendall(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
        read_update(sock)
        tick = 0
        keys = [ord(c) for c in "diag"] + [0xFF0D]  # type "diag", Return
        while time.time() < args.until and not stopping.is_set():
            sock.sendall(struct.pack("!BBHH", 5, 0, 200 + tick * 13 % 600, 300 + tick * 7 % 300))
            if tick < len(keys):
                for down in (1, 0):
                    sock.sendall(struct.pack("!BB2xI", 4, down, keys[tick]))
            sock.sendall(struct.pack("!BBHHHH", 3, 1, 0, 0, width, height))
            read_update(sock)
            tick += 1
            time.sleep(0.5)
        log.info("session closed after %d updates", tick)


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.rfb")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--host", default="198.51.100.2")
    parser.add_argument("--port", type=int, default=5900)
    parser.add_argument("--until", type=float, default=0.0)
    args = parser.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
