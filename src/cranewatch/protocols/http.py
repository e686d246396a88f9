"""HTTP/1.x on any port: request line, Host, User-Agent, content type and length, bounded body;
responses' status. RTSP, which borrows HTTP's syntax, as itself.

What matters on a crane: web interfaces of PLCs, drives and cameras are configured over
plain HTTP; firmware and configuration uploads, credentials in forms and data sent out all
show in method, URI, Host and body. Bodies are kept up to ``BODY_LIMIT`` bytes (chunked
bodies are de-chunked) for the content checks; the rest is counted, not stored.

The cameras' RTSP sessions (OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN) are told apart from
HTTP by their version ``RTSP/1.0``; their requests and responses are reported until the
video starts to flow over the connection (RTP interleaved behind ``$``), where nothing is
left to learn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cranewatch.detect.facts import HttpRequest as HttpFact
from cranewatch.detect.facts import Payload, as_bytes, as_text, where
from cranewatch.protocols import identify
from cranewatch.protocols.base import (
    REGISTRY,
    DecoderSpec,
    Event,
    FlowContext,
    ReportsProblems,
    StreamDecoder,
)
from cranewatch.protocols.framing import ascii_digits, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol
from cranewatch.protocols.tls import TlsDecoder
from cranewatch.sources import zeek_fields as zeek

BODY_LIMIT = 8192
TUNNEL_PROBES = 4  # payloads of a CONNECT tunnel looked at to tell what it carries besides TLS
HEADER_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest(Event):
    """One HTTP request: ``method``/``uri``/``version`` of the request line and key headers.

    ``headers``: every header as (name lower-cased, value), in order. ``body``: the first
    ``BODY_LIMIT`` bytes of the body; ``body_size``: its full size as sent.
    """

    kind: ClassVar[str] = "http_exchange_request"
    method: str
    uri: str
    version: str
    host: str | None = None
    user_agent: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    body_size: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse(Event):
    """One HTTP response: status code and reason, server, content type/length, bounded body."""

    kind: ClassVar[str] = "http_exchange_response"
    status: int
    reason: str
    version: str
    server: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    body_size: int = 0
    request_frame: int | None = None
    method: str | None = None
    uri: str | None = None


@dataclass
class _Message:
    """A message whose head is parsed and whose body is being read."""

    head: dict[str, Any]
    remaining: int | None  # bytes of body still to read (None: until close)
    chunked: bool
    body: bytearray = field(default_factory=bytearray)
    size: int = 0
    chunk_left: int = 0
    trailer: bool = False
    reported: bool = False


class _Direction:
    __slots__ = ("buffer", "lost", "message")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.message: _Message | None = None
        self.lost = False


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The start line and the headers (with obsolete line folding joined)."""
    lines = head.decode("latin-1").split("\r\n") if b"\r\n" in head else head.decode("latin-1").split("\n")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    return start, headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class HttpDecoder(ReportsProblems):
    """Decodes one HTTP/1.x connection; pairs responses with requests in order (pipelining)."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._dirs = (_Direction(), _Direction())
        self._pending: deque[tuple[str, str, int | None]] = deque(maxlen=64)  # method, uri, frame
        self._upgraded = False
        self._connect = False  # the upgrade is a CONNECT tunnel
        self._tunnel: StreamDecoder | None = None
        self._tunnel_probes = 0

    def gap(self, from_client: bool) -> None:
        side = self._dirs[from_client]
        side.buffer.clear()
        side.message = None
        side.lost = True

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if self._upgraded:
            # after CONNECT or 101 Switching Protocols the bytes are not HTTP; a CONNECT tunnel
            # usually carries TLS, whose handshake says where the tunnel really goes
            if self._tunnel is None and self._connect:
                self._tunnel = self._tunnel_decoder(from_client, data)
            if self._tunnel is None:
                return events
            tunnelled = self._tunnel.feed(from_client, data, ts, frame)
            for problem in getattr(self._tunnel, "problems", None) or ():
                self.report(problem)  # the tunnel's problems are this flow's
            getattr(self._tunnel, "problems", []).clear()
            return tunnelled
        side = self._dirs[from_client]
        side.buffer += data
        while side.buffer and not self._upgraded:
            if side.message is None:
                if side.lost:
                    start = self._resync(side.buffer, from_client)
                    if start < 0:
                        side.buffer.clear()
                        break
                    del side.buffer[:start]
                    side.lost = False
                end = side.buffer.find(b"\r\n\r\n")
                sep = 4
                if end < 0:
                    end = side.buffer.find(b"\n\n")
                    sep = 2
                if end < 0 and from_client:
                    end, sep = self._simple_request(side.buffer)
                if end < 0:
                    if len(side.buffer) > HEADER_LIMIT:
                        side.buffer.clear()
                        side.lost = True
                        raise decode_error("HTTP header block over 64 KiB", self.ctx, frame)
                    break
                head = bytes(side.buffer[:end])
                del side.buffer[:end + sep]
                side.message = self._start(from_client, head, frame)
            event = self._body(from_client, side, ts, frame)
            if event is None:
                break
            events.append(event)
        return events

    def _tunnel_decoder(self, from_client: bool, data: bytes) -> StreamDecoder | None:
        """The decoder for what a CONNECT tunnel carries: TLS, or whatever else the proxy
        lets through (SSH or RDP to a vendor's host through the terminal's web proxy)."""
        if identify.is_tls(data, b""):
            return TlsDecoder(self.ctx)
        if self._tunnel_probes >= TUNNEL_PROBES:
            return None
        self._tunnel_probes += 1
        name = identify.identify(data if from_client else b"", b"" if from_client else data)
        spec = next((s for s in REGISTRY if s.name == name and s.transport == "tcp"), None)
        return spec.factory(self.ctx) if spec is not None else None

    @staticmethod
    def _simple_request(buffer: bytearray) -> tuple[int, int]:
        """An HTTP/0.9 request is one line without a version and without headers."""
        end = buffer.find(b"\n")
        if end < 0 or b" HTTP/" in buffer[:end] or not buffer[:3].isalpha():
            return -1, 0
        return (end - 1, 2) if buffer[end - 1:end] == b"\r" else (end, 1)

    @staticmethod
    def _resync(buffer: bytearray, from_client: bool) -> int:
        if from_client:
            positions = [buffer.find(b"\n" + m) for m in identify.HTTP_METHODS[:6]]
            found = [p + 1 for p in positions if p >= 0]
            if any(buffer.startswith(m) for m in identify.HTTP_METHODS):
                return 0
        else:
            pos = buffer.find(b"HTTP/1.")
            found = [pos] if pos >= 0 else []
        return min(found) if found else -1

    def _start(self, from_client: bool, head: bytes, frame: int) -> _Message:
        start, headers = parse_head(head)
        parts = start.split(" ", 2)
        length_text = _header(headers, "content-length")
        length: int | None = None
        if length_text is not None:
            digits = length_text.split(",")[0].strip()
            if not ascii_digits(digits):
                raise decode_error(f"HTTP Content-Length {length_text[:40]!r} is not a number",
                                   self.ctx, frame)
            length = int(digits)
        chunked = "chunked" in (_header(headers, "transfer-encoding") or "").lower()
        fields: dict[str, Any] = {"headers": tuple(headers), "content_length": length,
                                     "content_type": _header(headers, "content-type")}
        if from_client:
            method = parts[0]
            if not method or not method.replace("-", "").replace("_", "").isalpha():
                raise decode_error(f"not an HTTP request line: {start[:60]!r}", self.ctx, frame)
            uri = parts[1] if len(parts) > 1 else ""  # "OPTIONS" alone: a broken but real request
            version = parts[2] if len(parts) > 2 else "HTTP/0.9"
            if len(parts) == 2 and uri.startswith("HTTP/"):  # "OPTIONS HTTP/1.1": no URI
                uri, version = "", parts[1]
            fields.update(method=method, uri=uri, version=version, host=_header(headers, "host"),
                          user_agent=_header(headers, "user-agent"))
            remaining = 0 if length is None and not chunked else length
        else:
            if not start.startswith("HTTP/") or len(parts) < 2 or not ascii_digits(parts[1][:3]):
                raise decode_error(f"not an HTTP status line: {start[:60]!r}", self.ctx, frame)
            status = int(parts[1][:3])
            method, uri, request_frame = self._pending.popleft() if self._pending else ("", "", None)
            if 100 <= status < 200 and status != 101:
                self._pending.appendleft((method, uri, request_frame))  # the real answer follows
            fields.update(status=status, reason=parts[2] if len(parts) > 2 else "",
                          version=parts[0], server=_header(headers, "server"),
                          request_frame=request_frame, method=method or None, uri=uri or None)
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            if status == 101 or (method == "CONNECT" and 200 <= status < 300):
                self._upgraded = True
                self._connect = method == "CONNECT"
                no_body = True
            remaining = 0 if no_body else (length if length is not None or chunked else None)
        return _Message(head=fields, remaining=remaining, chunked=chunked and remaining != 0)

    def _body(self, from_client: bool, side: _Direction, ts: float, frame: int) -> Event | None:
        message = side.message
        assert message is not None
        if message.chunked:
            done = self._dechunk(side, message, frame)
        elif message.remaining is None:
            # the body runs until the connection closes: report the response with its head
            # (and what body came with it, as tshark does) and only count the rest
            self._keep(message, bytes(side.buffer))
            side.buffer.clear()
            if message.reported:
                return None
            message.reported = True
            done = True
        else:
            take = min(message.remaining, len(side.buffer))
            self._keep(message, bytes(side.buffer[:take]))
            del side.buffer[:take]
            message.remaining -= take
            done = message.remaining == 0
        if not done:
            return None
        if not message.reported:
            side.message = None
        fields = dict(message.head)
        fields.update(body=bytes(message.body), body_size=message.size, ts=ts, frame=frame,
                      **endpoints(self.ctx, from_client))
        if from_client:
            self._pending.append((str(fields["method"]), str(fields["uri"]), frame))
            return HttpRequest(**fields)
        return HttpResponse(**fields)

    @staticmethod
    def _keep(message: _Message, data: bytes) -> None:
        message.size += len(data)
        room = BODY_LIMIT - len(message.body)
        if room > 0:
            message.body += data[:room]

    def _dechunk(self, side: _Direction, message: _Message, frame: int) -> bool:
        buffer = side.buffer
        while True:
            if message.trailer:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                if not line:
                    return True
                continue
            if message.chunk_left > 0:
                take = min(message.chunk_left, len(buffer))
                self._keep(message, bytes(buffer[:take]))
                del buffer[:take]
                message.chunk_left -= take
                if message.chunk_left:
                    return False
                if len(buffer) < 2:
                    message.chunk_left = -2  # the CRLF after the chunk is still to come
                    return False
                del buffer[:2]
                continue
            if message.chunk_left == -2:
                if len(buffer) < 2:
                    return False
                del buffer[:2]
                message.chunk_left = 0
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise decode_error("HTTP chunk size line too long", self.ctx, frame)
                return False
            size_text = bytes(buffer[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise decode_error(f"HTTP chunk size {size_text[:20]!r} is not hex", self.ctx,
                                   frame) from None
            if size > 1 << 40:
                raise decode_error("HTTP chunk size beyond any real body", self.ctx, frame)
            del buffer[:end + 2]
            if size == 0:
                message.trailer = True
                continue
            message.chunk_left = size


@dataclass(frozen=True, slots=True, kw_only=True)
class RtspRequest(Event):
    """One RTSP request: method, URI (the camera's stream), CSeq, User-Agent, Session and
    the Transport asked for in a SETUP (``RTP/AVP/TCP;interleaved=0-1``, UDP client ports)."""

    kind: ClassVar[str] = "rtsp_exchange_request"
    method: str
    uri: str
    version: str
    cseq: int | None = None
    user_agent: str | None = None
    session: str | None = None
    transport: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RtspResponse(Event):
    """One RTSP response, paired with its request by CSeq (``method``, ``uri``,
    ``request_frame``); ``server`` names the camera's software."""

    kind: ClassVar[str] = "rtsp_exchange_response"
    status: int
    reason: str
    version: str
    cseq: int | None = None
    server: str | None = None
    session: str | None = None
    transport: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    request_frame: int | None = None
    method: str | None = None
    uri: str | None = None


class RtspDecoder(ReportsProblems):
    """Decodes the control messages of one RTSP connection; stops at interleaved media."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (bytearray(), bytearray())
        self._body_left = [0, 0]  # bytes of a message body (SDP) still to skip, per side
        self._requests: dict[int, tuple[str, str, int]] = {}  # CSeq -> method, uri, frame
        self.finished = False

    def gap(self, from_client: bool) -> None:
        # message boundaries are lost; the requests that matter (DESCRIBE, SETUP, PLAY) are
        # at the start of the connection
        self.finished = True

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if self.finished:
            return []
        side = int(from_client)
        buffer = self._buffers[side]
        buffer += data
        while buffer:
            if self._body_left[side]:
                take = min(self._body_left[side], len(buffer))
                del buffer[:take]
                self._body_left[side] -= take
                continue
            if buffer[:1] == b"$":  # RTP/RTCP interleaved: the stream runs
                self.finished = True
                buffer.clear()
                break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HEADER_LIMIT:
                    self.finished = True
                    raise decode_error("RTSP header block over 64 KiB", self.ctx, frame)
                break
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            event = self._message(from_client, head, ts, frame)
            events.append(event)
        return events

    def _message(self, from_client: bool, head: bytes, ts: float, frame: int) -> Event:
        start, headers = parse_head(head)
        parts = start.split(" ", 2)
        length_text = _header(headers, "content-length") or "0"
        if not ascii_digits(length_text.strip()):
            self.finished = True
            raise decode_error(f"RTSP Content-Length {length_text[:40]!r} is not a number",
                               self.ctx, frame)
        self._body_left[int(from_client)] = int(length_text.strip())
        cseq_text = (_header(headers, "cseq") or "").strip()
        cseq = int(cseq_text) if ascii_digits(cseq_text) else None
        fields: dict[str, Any] = {
            "cseq": cseq, "session": _header(headers, "session"),
            "transport": _header(headers, "transport"), "headers": tuple(headers),
            "ts": ts, "frame": frame, **endpoints(self.ctx, from_client)}
        if from_client:
            if len(parts) < 3 or not parts[2].startswith("RTSP/"):
                self.finished = True
                raise decode_error(f"not an RTSP request line: {start[:60]!r}", self.ctx, frame)
            if cseq is not None and len(self._requests) < 256:
                self._requests[cseq] = (parts[0], parts[1], frame)
            return RtspRequest(method=parts[0], uri=parts[1], version=parts[2],
                               user_agent=_header(headers, "user-agent"), **fields)
        if not start.startswith("RTSP/") or len(parts) < 2 or not ascii_digits(parts[1][:3]):
            self.finished = True
            raise decode_error(f"not an RTSP status line: {start[:60]!r}", self.ctx, frame)
        method, uri, request_frame = self._requests.pop(cseq, (None, None, None)) \
            if cseq is not None else (None, None, None)
        return RtspResponse(status=int(parts[1][:3]), reason=parts[2] if len(parts) > 2 else "",
                            version=parts[0], server=_header(headers, "server"),
                            request_frame=request_frame, method=method, uri=uri, **fields)


SPEC_RTSP = DecoderSpec(name="rtsp", transport="tcp", ports=frozenset({554, 8554}),
                        factory=RtspDecoder, probe=identify.is_rtsp, priority=14)
SPEC = DecoderSpec(name="http", transport="tcp",
                   ports=frozenset({80, 8080, 8000, 8008, 8081, 8888, 3128}),
                   factory=HttpDecoder, probe=identify.is_http, priority=15)


def request_fact(event: HttpRequest) -> list[HttpFact]:
    return [HttpFact(**where(event), method=as_text(event.method), host=event.host,
                     uri=as_text(event.uri), body=as_bytes(event.body), user_agent=event.user_agent)]


def response_payload(event: HttpResponse) -> list[Payload]:
    """A response's body: data from the server (src) to the client (dst)."""
    body = as_bytes(event.body)
    if not body:
        return []
    return [Payload(**where(event), from_client=True, data=body, transport="http")]


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

def zeek_http(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    result.note("http.log: bodies are not logged (only their lengths); content checks on "
                "HTTP bodies cannot run")
    version = record.get("version")
    version_text = f"HTTP/{version}" if version else ""
    events: list[Event] = []
    if record.get("method") is not None:
        events.append(HttpRequest(method=zeek.text(record.get("method")), uri=zeek.text(record.get("uri")),
                                  version=version_text, host=zeek.opt_text(record.get("host")),
                                  user_agent=zeek.opt_text(record.get("user_agent")),
                                  body_size=zeek.integer(record.get("request_body_len")) or 0,
                                  **zeek.ends(record)))
    status = zeek.integer(record.get("status_code"))
    if status is not None:
        events.append(HttpResponse(status=status, reason=str(record.get("status_msg", "") or ""),
                                   version=version_text,
                                   body_size=zeek.integer(record.get("response_body_len")) or 0,
                                   method=zeek.opt_text(record.get("method")), uri=zeek.opt_text(record.get("uri")),
                                   request_frame=record.line, **zeek.ends(record, from_orig=False)))
    return events


PROTOCOL = register_protocol(ProtocolSpec(
    name="http", module=__name__, decoders=(SPEC_RTSP, SPEC), policy={"http": ("tcp",), "rtsp": ("tcp",)},
    adapters={HttpRequest: Adapter(request_fact, (HttpFact,)),
              HttpResponse: Adapter(response_payload, (Payload,)),
              RtspRequest: IGNORED, RtspResponse: IGNORED},
    zeek={"http": zeek_http},
))
