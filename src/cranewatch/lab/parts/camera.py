"""IP cameras at the spreader and trolley, and the OCR controller's RTSP client for them.

``server``: an RTSP/1.0 server on :554 (OPTIONS, DESCRIBE with an SDP for one JPEG video
track, SETUP with RTP interleaved over the RTSP connection, PLAY, TEARDOWN), sending RTP
packets (payload type 26, RFC 2435 JPEG) at a low frame rate: the OCR only needs stills.
``client``: what the OCR controller runs: one session per camera, reading the frames until
stopped, then TEARDOWN. Wire formats follow RFC 2326 (RTSP), RFC 3550 (RTP), RFC 2435.
"""

from __future__ import annotations

import argparse
import logging
import random
import select
import socket
import struct
import threading
import time
from typing import BinaryIO

from cranewatch.lab.parts.common import serve_tcp, setup_part, stopping

FPS = 2.0
FRAME_BYTES = 600
WIDTH, HEIGHT = 640, 480
PAYLOAD_JPEG = 26


def sdp(address: str, name: str) -> str:
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {address}\r\n"
        f"s={name}\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=video 0 RTP/AVP {PAYLOAD_JPEG}\r\n"
        "a=control:track1\r\n"
    )


def read_message(reader: BinaryIO) -> dict[str, str] | None:
    """One RTSP request or response head (lower-case header names), its body in "body"."""
    first = reader.readline()
    if not first:
        return None
    message = {"line": first.decode("ascii", "replace").strip()}
    while (line := reader.readline().decode("ascii", "replace").strip()):
        name, _, value = line.partition(":")
        message[name.strip().lower()] = value.strip()
    length = int(message.get("content-length", "0"))
    message["body"] = reader.read(length).decode("ascii", "replace") if length else ""
    return message


def jpeg_rtp(sequence: int, timestamp: int, ssrc: int, rng: random.Random) -> bytes:
    """One RTP packet carrying a whole (small) JPEG frame: RTP + RFC 2435 main header + scan."""
    rtp = struct.pack("!BBHII", 0x80, 0x80 | PAYLOAD_JPEG, sequence & 0xFFFF,
                      timestamp & 0xFFFFFFFF, ssrc)
    # type-specific 0, fragment offset 0 (3 bytes), type 1 (4:2:0), Q 50, width/8, height/8
    jpeg = struct.pack("!B3sBBBB", 0, b"\x00\x00\x00", 1, 50, WIDTH // 8, HEIGHT // 8)
    return rtp + jpeg + rng.randbytes(FRAME_BYTES)


def reply(conn: socket.socket, cseq: str, headers: list[str], body: str = "") -> None:
    lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", "Server: IPCam/4.2", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode())


def serve_session(conn: socket.socket, address: str, name: str, log: logging.Logger) -> None:
    rng = random.Random(name)
    session = f"{rng.randrange(10**8):08d}"
    reader = conn.makefile("rb")
    while not stopping.is_set():
        request = read_message(reader)
        if request is None:
            return
        method, cseq = request["line"].split(" ", 1)[0], request.get("cseq", "0")
        log.info("%s", request["line"])
        if method == "OPTIONS":
            reply(conn, cseq, ["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"])
        elif method == "DESCRIBE":
            reply(conn, cseq, ["Content-Type: application/sdp",
                               f"Content-Base: rtsp://{address}/live/"], sdp(address, name))
        elif method == "SETUP":
            reply(conn, cseq, ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
                               f"Session: {session};timeout=60"])
        elif method == "PLAY":
            reply(conn, cseq, [f"Session: {session}", "Range: npt=0.000-"])
            stream(conn, reader, rng, log)
            return
        else:  # TEARDOWN before PLAY, or anything else: answer and end
            reply(conn, cseq, [f"Session: {session}"])
            return


def stream(conn: socket.socket, reader: BinaryIO, rng: random.Random, log: logging.Logger) -> None:
    """Send frames at FPS until the client sends TEARDOWN or goes away."""
    ssrc, sequence, started = rng.randrange(2**32), rng.randrange(2**16), time.monotonic()
    frames = 0
    while not stopping.is_set():
        timestamp = int((time.monotonic() - started) * 90_000)
        packet = jpeg_rtp(sequence + frames, timestamp, ssrc, rng)
        conn.sendall(b"$\x00" + struct.pack("!H", len(packet)) + packet)
        frames += 1
        readable, _, _ = select.select([conn], [], [], 1.0 / FPS)
        if readable:
            request = read_message(reader)
            if request is None:
                return
            reply(conn, request.get("cseq", "0"), [])
            log.info("%s after %d frames", request["line"], frames)
            return


def server(args: argparse.Namespace) -> None:
    log = setup_part(f"camera-{args.name}")
    serve_tcp(args.port,
              lambda conn: serve_session(conn, conn.getsockname()[0], args.name, log), log)


class CameraSession:
    """The OCR's RTSP session with one camera: set up, play, read frames, tear down."""

    def __init__(self, camera: str, log: logging.Logger, port: int = 554) -> None:
        self.url = f"rtsp://{camera}:{port}/live"
        self.camera, self.log = camera, log
        self.conn = socket.create_connection((camera, port), timeout=5)
        self.reader = self.conn.makefile("rb")
        self.cseq = 0
        self.session = ""
        self.frames = 0

    def send(self, method: str, target: str, *extra: str) -> None:
        self.cseq += 1
        lines = [f"{method} {target} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: OCR-Vision/5.1",
                 *extra]
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def ask(self, method: str, target: str, *extra: str) -> dict[str, str]:
        self.send(method, target, *extra)
        answer = read_message(self.reader)
        if answer is None or " 200 " not in answer["line"]:
            raise ConnectionError(f"{self.camera}: {method} refused: {answer}")
        return answer

    def start(self) -> None:
        self.ask("OPTIONS", self.url)
        self.ask("DESCRIBE", self.url, "Accept: application/sdp")
        setup = self.ask("SETUP", f"{self.url}/track1",
                         "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        self.session = setup.get("session", "").split(";")[0]
        self.ask("PLAY", self.url, f"Session: {self.session}", "Range: npt=0.000-")
        self.conn.settimeout(None)

    def read_frames(self) -> None:
        """Until the camera answers our TEARDOWN (or closes)."""
        while (marker := self.reader.read(1)) == b"$":
            length = struct.unpack("!H", self.reader.read(3)[1:])[0]
            self.reader.read(length)
            self.frames += 1
        if marker:  # the first byte of the reply to TEARDOWN
            read_message(self.reader)
        self.log.info("camera %s: %d frames", self.camera, self.frames)

    def teardown(self) -> None:
        self.send("TEARDOWN", self.url, f"Session: {self.session}")

    def close(self) -> None:
        self.reader.close()
        self.conn.close()


def client(args: argparse.Namespace) -> None:
    log = setup_part("ocr-cameras")
    sessions = [CameraSession(camera, log) for camera in args.cameras]
    threads = []
    for session in sessions:
        session.start()
        threads.append(threading.Thread(target=session.read_frames, daemon=True))
        threads[-1].start()
    stopping.wait()
    for session in sessions:
        session.teardown()
    for thread in threads:
        thread.join(5.0)
    for session in sessions:
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.camera")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--name", default="camera")
    parser.add_argument("--address", default="")
    parser.add_argument("--port", type=int, default=554)
    parser.add_argument("--cameras", nargs="*", default=["10.20.7.21", "10.20.7.22"])
    args = parser.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
