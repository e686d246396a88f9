"""RTSP told apart from HTTP: camera stream control identified as ``rtsp`` on any port.

RTSP borrows HTTP's syntax and its OPTIONS method, so the HTTP probe used to claim camera
sessions. The byte literals follow RFC 2326 (section 10 and the examples of 14); the
capture at the end is curl's RTSP client and the lab's OCR client talking to the lab camera,
on 554 and on 8080 (an HTTP port), as tcpdump sees them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cranewatch.model import Finding
from cranewatch.pipeline import FlowSummary, analyze
from cranewatch.protocols import identify, load_all
from cranewatch.protocols.base import Event
from cranewatch.protocols.http import RtspDecoder, RtspRequest, RtspResponse
from proto_helpers import context, feed_all, problems_of

load_all()

DESCRIBE = (b"DESCRIBE rtsp://10.20.7.21/live RTSP/1.0\r\nCSeq: 2\r\n"
            b"Accept: application/sdp\r\nUser-Agent: OCR-Vision/5.1\r\n\r\n")
SDP = (b"v=0\r\no=- 1 1 IN IP4 10.20.7.21\r\ns=spreader\r\nt=0 0\r\n"
       b"m=video 0 RTP/AVP 26\r\na=control:track1\r\n")
DESCRIBED = (b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nServer: IPCam/4.2\r\nContent-Type: application/sdp\r\n"
             b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)


@pytest.mark.parametrize(("client", "server", "expected"), [
    (DESCRIBE, b"", "rtsp"),
    (b"OPTIONS rtsp://cam1:554/live RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"", "rtsp"),  # an HTTP method
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"", "rtsp"),                  # curl's first
    (b"GET_PARAMETER rtsp://cam1/live RTSP/1.0\r\n", b"", "rtsp"),              # keep-alive
    (b"SETUP rtsp://cam1/live/track1 RTSP/2.0\r\n", b"", "rtsp"),
    (b"", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n", "rtsp"),
    (b"", b"RTSP/1.0 401 Unauthorized\r\n", "rtsp"),
    (b"OPTIONS * HTTP/1.1\r\nHost: plc\r\n\r\n", b"", "http"),                 # still HTTP
    (b"GET /rtsp/RTSP/1.0 HTTP/1.1\r\n", b"", "http"),
    (b"GET /live HTTP/1.0\r\n", b"", "http"),
    (b"", b"HTTP/1.1 200 OK\r\n", "http"),
    (b"options rtsp://cam1/live RTSP/1.0\r\n", b"", None),  # methods are upper case (RFC 2326 6.1)
    (b"", b"RTSP/1.0200 OK\r\n", None),
])
def test_rtsp_is_identified_and_http_is_not_confused_with_it(
        client: bytes, server: bytes, expected: str | None) -> None:
    assert identify.identify(client, server) == expected


def test_rtsp_probe_needs_the_whole_request_line_version() -> None:
    assert not identify.is_http(DESCRIBE, b"")
    assert identify.is_rtsp(DESCRIBE, b"")
    assert not identify.is_rtsp(b"DESCRIBE rtsp://cam1/live HTTP/1.1\r\n", b"")


def test_rtsp_session_until_the_video_flows() -> None:
    decoder = RtspDecoder(context(554))
    setup = (b"SETUP rtsp://10.20.7.21/live/track1 RTSP/1.0\r\nCSeq: 3\r\n"
             b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    events = feed_all(
        decoder, (True, DESCRIBE), (False, DESCRIBED[:70]), (False, DESCRIBED[70:]), (True, setup),
        (False, b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 12345678;timeout=60\r\n"
                b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        (True, b"PLAY rtsp://10.20.7.21/live RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n\r\n"),
        # the answer to PLAY and the first RTP packet in one segment, then only media
        (False, b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 12345678\r\n\r\n$\x00\x00\x0c" + bytes(12)),
        (False, b"$\x00\x00\x0c" + bytes(12)),
        (True, b"TEARDOWN rtsp://10.20.7.21/live RTSP/1.0\r\nCSeq: 5\r\n\r\n"))
    assert [(type(e).__name__, getattr(e, "method", None), e.frame) for e in events] == [
        ("RtspRequest", "DESCRIBE", 1), ("RtspResponse", "DESCRIBE", 3),
        ("RtspRequest", "SETUP", 4), ("RtspResponse", "SETUP", 5),
        ("RtspRequest", "PLAY", 6), ("RtspResponse", "PLAY", 7)]
    describe, described, setup_req, setup_resp = events[:4]
    assert isinstance(describe, RtspRequest) and isinstance(described, RtspResponse)
    assert describe.uri == "rtsp://10.20.7.21/live" and describe.user_agent == "OCR-Vision/5.1"
    assert describe.cseq == 2 and describe.kind == "rtsp_exchange_request"
    assert described.status == 200 and described.server == "IPCam/4.2"
    assert described.request_frame == 1 and described.uri == describe.uri
    assert isinstance(setup_resp, RtspResponse) and setup_resp.session == "12345678;timeout=60"
    assert isinstance(setup_req, RtspRequest) and "interleaved=0-1" in (setup_req.transport or "")
    assert decoder.finished  # media follows: the pipeline stops feeding the flow


def test_rtsp_garbage_raises_decode_errors_only() -> None:
    assert problems_of(RtspDecoder(context(554)), False, b"HTTP/1.1 200 OK\r\n\r\n", 1.0, 1)
    assert problems_of(RtspDecoder(context(554)), True,
                       b"DESCRIBE rtsp://x RTSP/1.0\r\nContent-Length: x\r\n\r\n", 1.0, 1)
    assert problems_of(RtspDecoder(context(554)), True, b"A" * (70 * 1024), 1.0, 1)
    assert RtspDecoder(context(554)).feed(True, DESCRIBE[:30], 1.0, 1) == []  # cut short: wait


# ---------------------------------------------------------------- a real capture

NS = "cwrts-cam"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flows: list[FlowSummary] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_series(self, series: object) -> None:
        pass

    def on_flow_end(self, flow: FlowSummary) -> None:
        self.flows.append(flow)

    def finish(self) -> list[Finding]:
        return []


OCR_CLIENT = """
import logging, threading, time
from cranewatch.lab.parts.camera import CameraSession
session = CameraSession("127.0.0.1", logging.getLogger("ocr"), port=554)
session.start()
reader = threading.Thread(target=session.read_frames)
reader.start()
time.sleep(1.2)
session.teardown()
reader.join(5)
session.close()
print("frames", session.frames)
"""


@pytest.mark.root
def test_camera_sessions_in_a_capture_are_rtsp_on_554_and_on_8080(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    for tool in ("tcpdump", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/install-deps.sh")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    processes: list[subprocess.Popen[bytes]] = []

    def in_ns(*argv: str) -> list[str]:
        return ["ip", "netns", "exec", NS, *argv]

    try:
        subprocess.run(in_ns("ip", "link", "set", "lo", "up"), check=True)
        for port in (554, 8080):
            processes.append(subprocess.Popen(
                in_ns(sys.executable, "-m", "cranewatch.lab.parts.camera", "server", "--name",
                      f"cam-{port}", "--port", str(port)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        pcap = tmp_path / "cameras.pcap"
        tcpdump = subprocess.Popen(in_ns("tcpdump", "-i", "lo", "-U", "-w", str(pcap), "tcp"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # listening
        deadline = time.monotonic() + 10
        while b":8080" not in subprocess.run(in_ns("ss", "-Hltn"), capture_output=True).stdout \
                or b":554" not in subprocess.run(in_ns("ss", "-Hltn"), capture_output=True).stdout:
            assert time.monotonic() < deadline, "the cameras did not start"
            time.sleep(0.05)
        curl = subprocess.run(in_ns("curl", "-sS", "-i", "rtsp://127.0.0.1:8080/live"),
                              capture_output=True, text=True, timeout=10)
        assert curl.returncode == 0 and "Public: OPTIONS, DESCRIBE" in curl.stdout, curl.stderr
        ocr = subprocess.run(in_ns(sys.executable, "-c", textwrap.dedent(OCR_CLIENT)),
                             capture_output=True, text=True, timeout=20)
        assert ocr.returncode == 0 and "frames" in ocr.stdout, ocr.stderr
        time.sleep(0.3)
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.communicate(timeout=10)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)

    recorder = Recorder()
    result = analyze([pcap], sinks=[recorder])
    protocols = {flow.server_port: flow.protocol for flow in recorder.flows}
    assert protocols == {554: "rtsp", 8080: "rtsp"}
    assert [w for w in result.warnings if w.kind == "decode"] == []
    methods = [(e.dport, e.method) for e in recorder.events if isinstance(e, RtspRequest)]
    assert methods == [(8080, "OPTIONS"), (554, "OPTIONS"), (554, "DESCRIBE"), (554, "SETUP"),
                       (554, "PLAY")]  # TEARDOWN comes after the video: not looked at
    answers = [(e.sport, e.method, e.status) for e in recorder.events if isinstance(e, RtspResponse)]
    assert answers == [(8080, "OPTIONS", 200), (554, "OPTIONS", 200), (554, "DESCRIBE", 200),
                       (554, "SETUP", 200), (554, "PLAY", 200)]
