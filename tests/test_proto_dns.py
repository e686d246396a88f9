"""DNS decoder: byte-literal queries and answers over UDP and TCP, name measurements."""

from __future__ import annotations

import pytest

from cranewatch.errors import DecodeError
from cranewatch.protocols.dns import (
    DnsDecoder,
    DnsQueryRequest,
    DnsQueryResponse,
    measure_name,
    read_name,
)
from proto_helpers import context, feed_all, h, problems_of

# A query for plc.sts07.port (A) and its answer, built per RFC 1035 by hand.
QUERY = h("1a2b 0100 0001 0000 0000 0000") + b"\x03plc\x05sts07\x04port\x00" + h("0001 0001")
ANSWER = (h("1a2b 8180 0001 0002 0000 0000") + b"\x03plc\x05sts07\x04port\x00" + h("0001 0001")
          + h("c00c 0001 0001 0000003c 0004 0a070014")           # A 10.7.0.20, name by pointer
          + h("c00c 0010 0001 0000003c 000c") + b"\x05hello\x05world")  # TXT two strings


def test_query_and_answer_over_udp() -> None:
    query, answer = feed_all(DnsDecoder(context(53, "udp")), (True, QUERY), (False, ANSWER))
    assert isinstance(query, DnsQueryRequest) and not isinstance(query, DnsQueryResponse)
    assert (query.qname, query.qtype, query.transaction_id) == ("plc.sts07.port", 1, 0x1A2B)
    assert isinstance(answer, DnsQueryResponse) and answer.request_frame == 1
    assert [(a.rtype, a.data) for a in answer.answers] == [(1, "10.7.0.20"), (16, "hello world")]
    assert answer.txt == ("hello", "world") and answer.rcode == 0


def test_tcp_messages_behind_length_prefixes_split_anywhere() -> None:
    stream = len(QUERY).to_bytes(2, "big") + QUERY
    decoder = DnsDecoder(context(53))
    assert decoder.feed(True, stream[:5], 1.0, 1) == []
    (query,) = decoder.feed(True, stream[5:], 2.0, 2)
    assert query.frame == 2 and query.transport == "tcp"


def test_long_random_labels_measure_long_and_high_entropy() -> None:
    tunnel = "a9x0qz7m3k2v8b1n4c6p5r0t7y2u9w3e6i1o8s4d5f.t.evil.example"
    assert measure_name(tunnel)[0] == 42
    assert measure_name(tunnel)[1] > 4.0
    assert measure_name("plc.sts07.port") == (5, pytest.approx(1.585))  # "plc": log2(3) bits
    assert measure_name("") == (0, 0.0)


def test_compression_loop_and_truncation_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        read_name(h("c000"), 0)  # a pointer to itself
    decoder = DnsDecoder(context(53, "udp"))
    for cut in (5, 13, 20, len(ANSWER) - 3):
        assert problems_of(decoder, False, ANSWER[:cut], 1.0, 1)
