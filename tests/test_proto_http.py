"""HTTP/1.x decoder: requests and responses with lengths, chunking, pipelining and bounds."""

from __future__ import annotations

import pytest

from cranewatch.protocols import http, load_all
from cranewatch.protocols.http import HttpDecoder, HttpRequest, HttpResponse
from proto_helpers import context, feed_all, problems_of

UPLOAD = (b"POST /cgi-bin/firmware HTTP/1.1\r\nHost: 10.7.0.20\r\nUser-Agent: curl/8.1\r\n"
          b"Content-Type: application/octet-stream\r\nContent-Length: 11\r\n\r\nFIRMWARE-v2")
CHUNKED = (b"HTTP/1.1 200 OK\r\nServer: lighttpd\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")


def test_request_with_body_and_chunked_response() -> None:
    request, response = feed_all(HttpDecoder(context(80)), (True, UPLOAD), (False, CHUNKED))
    assert isinstance(request, HttpRequest)
    assert (request.method, request.uri, request.version) == ("POST", "/cgi-bin/firmware", "HTTP/1.1")
    assert (request.host, request.user_agent) == ("10.7.0.20", "curl/8.1")
    assert (request.content_type, request.content_length) == ("application/octet-stream", 11)
    assert request.body == b"FIRMWARE-v2" and request.body_size == 11
    assert isinstance(response, HttpResponse)
    assert (response.status, response.server, response.body) == (200, "lighttpd", b"hello world")
    assert (response.method, response.uri, response.request_frame) == ("POST", "/cgi-bin/firmware", 1)


def test_pipelined_requests_split_at_odd_places() -> None:
    stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
               b"Content-Length: 999\r\n\r\n")
    decoder = HttpDecoder(context(8080))
    events = feed_all(decoder, (True, stream[:7]), (True, stream[7:40]), (True, stream[40:]),
                      (False, answers))
    requests = [e for e in events if isinstance(e, HttpRequest)]
    responses = [e for e in events if isinstance(e, HttpResponse)]
    assert [(r.uri, r.frame) for r in requests] == [("/a", 2), ("/b", 3)]
    # the answer to HEAD announces 999 bytes but carries none
    assert [(r.status, r.body, r.uri) for r in responses] == [(200, b"ok", "/a"), (200, b"", "/b")]


def test_body_is_kept_only_up_to_the_bound() -> None:
    size = http.BODY_LIMIT + 100
    request = b"PUT /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size + b"A" * size
    (event,) = HttpDecoder(context(80)).feed(True, request, 1.0, 1)
    assert isinstance(event, HttpRequest)
    assert len(event.body) == http.BODY_LIMIT and event.body_size == size


def test_response_until_close_is_reported_with_its_head() -> None:
    (event,) = HttpDecoder(context(80)).feed(False, b"HTTP/1.0 200 OK\r\n\r\n<html>", 1.0, 1)
    assert isinstance(event, HttpResponse) and event.body == b"<html>"


def test_connect_tunnel_hands_its_tls_to_the_tls_decoder() -> None:
    from test_proto_tls import CLIENT_HELLO_11

    events = feed_all(HttpDecoder(context(3128)),
                      (True, b"CONNECT plc:443 HTTP/1.1\r\nHost: plc:443\r\n\r\n"),
                      (False, b"HTTP/1.1 200 Connection established\r\n\r\n"),
                      (True, CLIENT_HELLO_11))
    assert [e.kind for e in events] == ["http_exchange_request", "http_exchange_response",
                                        "tls_client_hello_request"]


def test_connect_tunnel_carrying_ssh_hands_it_to_the_ssh_decoder() -> None:
    load_all()  # the tunnel is identified among every registered protocol
    # ssh -o ProxyCommand through the terminal's web proxy: the server's banner comes first
    events = feed_all(HttpDecoder(context(3128)),
                      (True, b"CONNECT 198.51.100.7:443 HTTP/1.1\r\nHost: 198.51.100.7:443\r\n\r\n"),
                      (False, b"HTTP/1.1 200 Connection established\r\n\r\n"),
                      (False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
                      (True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    assert [e.kind for e in events] == ["http_exchange_request", "http_exchange_response",
                                        "ssh_banner_response", "ssh_banner_request"]


def test_connect_tunnel_of_unknown_bytes_stays_quiet() -> None:
    events = feed_all(HttpDecoder(context(3128)),
                      (True, b"CONNECT vendor:9000 HTTP/1.1\r\n\r\n"),
                      (False, b"HTTP/1.1 200 OK\r\n\r\n"),
                      *[(True, b"\x8f" + bytes(40))] * 6)
    assert [e.kind for e in events] == ["http_exchange_request", "http_exchange_response"]


def test_websocket_upgrade_stops_decoding() -> None:
    events = feed_all(HttpDecoder(context(80)),
                      (True, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
                      (False, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
                      (True, b"\x81\x05hello"))
    assert [e.kind for e in events] == ["http_exchange_request", "http_exchange_response"]


@pytest.mark.parametrize("bad", [b"\x16\x03\x01 junk\r\n\r\n", b"G@T / HTTP/1.1\r\n\r\n",
                                 b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"])
def test_malformed_requests_are_decode_errors(bad: bytes) -> None:
    assert problems_of(HttpDecoder(context(80)), True, bad, 1.0, 1)


def test_bad_chunk_size_is_a_decode_error() -> None:
    problems = problems_of(HttpDecoder(context(80)), False,
                           b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1.0, 1)
    assert [p.location.frame if p.location else None for p in problems] == [1]
