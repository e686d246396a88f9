"""Modbus/TCP decoder: byte-literal PDUs for every public function code, framing, pairing.

The byte strings follow the examples of the Modbus Application Protocol Specification
v1.1b3 (section 6), where the specification gives one, so the expected values are the
specification's own.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.errors import DecodeError
from cranewatch.protocols.base import FlowContext
from cranewatch.protocols.modbus import (
    ModbusDecoder,
    ModbusRequest,
    ModbusResponse,
    parse_request,
    parse_response,
    probe,
)

CTX = FlowContext(client="10.20.7.30", client_port=40000, server="10.20.7.10", server_port=502,
                  transport="tcp", source="t.pcap")


def adu(tid: int, unit: int, pdu: bytes) -> bytes:
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


# (function, request PDU, expected request fields, response PDU, expected response fields)
SPEC_EXAMPLES = [
    (1, "01 0013 0013", dict(address=19, quantity=19),
     "01 03 CD6B05", dict(values=(1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1)),),
    (2, "02 00C4 0016", dict(address=196, quantity=22),
     "02 03 ACDB35", dict(values=(0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1)),),
    (3, "03 006B 0003", dict(address=107, quantity=3),
     "03 06 022B 0000 0064", dict(values=(555, 0, 100))),
    (4, "04 0008 0001", dict(address=8, quantity=1), "04 02 000A", dict(values=(10,))),
    (5, "05 00AC FF00", dict(address=172, quantity=1, values=(1,)),
     "05 00AC FF00", dict(address=172, quantity=1, values=(1,))),
    (6, "06 0001 0003", dict(address=1, quantity=1, values=(3,)),
     "06 0001 0003", dict(address=1, quantity=1, values=(3,))),
    (7, "07", dict(), "07 6D", dict(values=(0x6D,))),
    (8, "08 0000 A537", dict(sub_function=0, values=(0xA537,)),
     "08 0000 A537", dict(values=(0xA537,), detail={"sub_function": 0})),
    (11, "0B", dict(), "0B FFFF 0108", dict(detail={"status": 0xFFFF, "event_count": 0x108})),
    (12, "0C", dict(),
     "0C 08 0000 0108 0121 2000",
     dict(detail={"status": 0, "event_count": 0x108, "message_count": 0x121, "events": "2000"})),
    (15, "0F 0013 000A 02 CD01", dict(address=19, quantity=10, values=(1, 0, 1, 1, 0, 0, 1, 1, 1, 0)),
     "0F 0013 000A", dict(address=19, quantity=10)),
    (16, "10 0001 0002 04 000A 0102", dict(address=1, quantity=2, values=(10, 258)),
     "10 0001 0002", dict(address=1, quantity=2)),
    (17, "11", dict(), "11 03 4B1CFF", dict(detail={"server_id": "4b1cff"})),
    (20, "14 0E 06 0004 0001 0002 06 0003 0009 0002",
     dict(detail={"records": [
         {"reference_type": 6, "file": 4, "record": 1, "length": 2},
         {"reference_type": 6, "file": 3, "record": 9, "length": 2}]}),
     "14 0C 05 06 0DFE 0020 05 06 33CD 0040",
     dict(detail={"records": [{"reference_type": 6, "values": [0x0DFE, 0x20]},
                              {"reference_type": 6, "values": [0x33CD, 0x40]}]})),
    (21, "15 0D 06 0004 0007 0003 06AF 04BE 100D",
     dict(detail={"records": [{"reference_type": 6, "file": 4, "record": 7,
                               "values": [0x06AF, 0x04BE, 0x100D]}]}),
     "15 0D 06 0004 0007 0003 06AF 04BE 100D",
     dict(detail={"records": [{"reference_type": 6, "file": 4, "record": 7,
                               "values": [0x06AF, 0x04BE, 0x100D]}]})),
    (22, "16 0004 00F2 0025", dict(address=4, quantity=1, detail={"and_mask": 0xF2, "or_mask": 0x25}),
     "16 0004 00F2 0025", dict(address=4, quantity=1, detail={"and_mask": 0xF2, "or_mask": 0x25})),
    (23, "17 0003 0006 000E 0003 06 00FF 00FF 00FF",
     dict(read_address=3, read_quantity=6, address=14, quantity=3, values=(255, 255, 255)),
     "17 0C 00FE 0ACD 0001 0003 000D 00FF",
     dict(values=(0xFE, 0xACD, 1, 3, 0xD, 0xFF))),
    (24, "18 04DE", dict(address=0x4DE),
     "18 0006 0002 01B8 1284", dict(quantity=2, values=(0x1B8, 0x1284))),
    (43, "2B 0E 01 00", dict(sub_function=14, detail={"read_code": 1, "object_id": 0}),
     "2B 0E 01 01 00 00 03 00 05 4372616E65 01 02 5354 02 03 312E30",
     dict(detail={"mei_type": 14, "read_code": 1, "conformity": 1, "more_follows": 0,
                  "next_object_id": 0, "objects": {"0": "Crane", "1": "ST", "2": "1.0"}})),
]


def hexb(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(("fc", "req", "req_fields", "resp", "resp_fields"), SPEC_EXAMPLES,
                         ids=[f"fc{e[0]}" for e in SPEC_EXAMPLES])
def test_every_function_code_request_and_response(fc: int, req: str, req_fields: dict,
                                                  resp: str, resp_fields: dict) -> None:
    request = parse_request(hexb(req))
    assert request.function == fc
    for name, value in req_fields.items():
        assert getattr(request, name) == value, name
    response = parse_response(hexb(resp), request)
    assert response.function == fc
    assert response.exception_code is None
    for name, value in resp_fields.items():
        assert getattr(response, name) == value, name


@pytest.mark.parametrize("fc", sorted({e[0] for e in SPEC_EXAMPLES}))
def test_exception_response_for_every_function_code(fc: int) -> None:
    response = parse_response(bytes([fc | 0x80, 0x02]))
    assert (response.function, response.exception_code) == (fc, 2)


@pytest.mark.parametrize(("fc", "req", "resp"), [(e[0], e[1], e[3]) for e in SPEC_EXAMPLES
                                                 if e[0] not in (7, 11, 12, 17)],
                         ids=[f"fc{e[0]}" for e in SPEC_EXAMPLES if e[0] not in (7, 11, 12, 17)])
def test_truncated_pdus_raise_decode_error(fc: int, req: str, resp: str) -> None:
    request = hexb(req)
    response = hexb(resp)
    with pytest.raises(DecodeError):
        parse_request(request[:-1])
    with pytest.raises(DecodeError):
        parse_response(response[:-1], parse_request(request))


def test_read_response_with_wrong_register_count_is_malformed() -> None:
    with pytest.raises(DecodeError, match="2 registers for 3 asked"):
        parse_response(hexb("03 04 0001 0002"), parse_request(hexb("03 006B 0003")))


def test_decoder_pairs_by_transaction_id_and_carries_request_range() -> None:
    decoder = ModbusDecoder(CTX)
    r1 = decoder.feed(True, adu(1, 1, hexb("04 0000 0003")) + adu(2, 1, hexb("02 0000 0007")), 1.0, 10)
    assert [(e.transaction_id, e.function, e.address, e.quantity, e.frame) for e in r1] == [
        (1, 4, 0, 3, 10), (2, 2, 0, 7, 10)]
    assert all(isinstance(e, ModbusRequest) and e.src == "10.20.7.30" and e.dport == 502 for e in r1)
    # Answers out of order: pairing is by transaction id, not by position.
    r2 = decoder.feed(False, adu(2, 1, hexb("02 01 45")), 1.1, 11)
    r3 = decoder.feed(False, adu(1, 1, hexb("04 06 0001 0002 FFFF")), 1.2, 12)
    (bits,), (regs,) = r2, r3
    assert isinstance(bits, ModbusResponse) and bits.values == (1, 0, 1, 0, 0, 0, 1)
    assert (bits.address, bits.quantity, bits.request_frame) == (0, 7, 10)
    assert (regs.address, regs.quantity, regs.values, regs.request_frame) == (0, 3, (1, 2, 65535), 10)
    assert regs.src == "10.20.7.10" and regs.sport == 502 and regs.source == "t.pcap"
    assert decoder.pending == {}


def test_response_without_request_has_no_address() -> None:
    (event,) = ModbusDecoder(CTX).feed(False, adu(9, 1, hexb("03 02 0007")), 1.0, 3)
    assert isinstance(event, ModbusResponse)
    assert (event.address, event.quantity, event.values, event.request_frame) == (None, None, (7,), None)


def test_pdu_split_across_feeds_is_reported_in_the_completing_frame() -> None:
    decoder = ModbusDecoder(CTX)
    data = adu(5, 1, hexb("10 0001 0002 04 000A 0102"))
    assert decoder.feed(True, data[:5], 1.0, 1) == []
    assert decoder.feed(True, data[5:9], 1.1, 2) == []
    (event,) = decoder.feed(True, data[9:], 1.2, 3)
    assert (event.frame, event.values) == (3, (10, 258))


def test_malformed_pdu_is_a_problem_beside_the_events_around_it() -> None:
    decoder = ModbusDecoder(CTX)
    good1 = adu(1, 1, hexb("03 0000 0002"))
    bad = adu(2, 1, hexb("03 0000"))  # read without quantity
    good2 = adu(3, 1, hexb("06 0001 0003"))
    events = decoder.feed(True, good1 + bad + good2, 1.0, 7)
    (problem,) = decoder.problems
    assert "FC 3 request" in problem.message and problem.location.frame == 7
    assert problem.location.file == CTX.source
    assert [e.transaction_id for e in events] == [1, 2, 3]
    malformed = events[1]
    assert isinstance(malformed, ModbusRequest)
    assert (malformed.function, malformed.address) == (3, None)
    assert malformed.detail["data"] == "030000" and "FC 3 request" in malformed.detail["malformed"]


def test_garbage_framing_warns_once_then_resynchronises_on_next_feed() -> None:
    decoder = ModbusDecoder(CTX)
    assert decoder.feed(True, b"GET / HTTP/1.1\r\n\r\n", 1.0, 1) == []
    (problem,) = decoder.problems
    assert "not a Modbus/TCP header" in problem.message
    decoder.problems.clear()
    assert decoder.feed(True, b"more garbage that is long", 1.1, 2) == []
    assert decoder.problems == []  # no second warning
    (event,) = decoder.feed(True, adu(1, 1, hexb("03 0000 0001")), 1.2, 3)
    assert event.frame == 3


def test_gap_discards_partial_pdu() -> None:
    decoder = ModbusDecoder(CTX)
    assert decoder.feed(True, adu(1, 1, hexb("03 0000 0001"))[:6], 1.0, 1) == []
    decoder.gap(True)
    (event,) = decoder.feed(True, adu(2, 1, hexb("03 0000 0001")), 1.1, 3)
    assert event.transaction_id == 2


def test_reused_transaction_id_leaves_first_request_unanswered() -> None:
    decoder = ModbusDecoder(CTX)
    decoder.feed(True, adu(1, 1, hexb("03 0000 0001")), 1.0, 1)
    decoder.feed(True, adu(1, 1, hexb("03 0010 0001")), 1.1, 2)
    assert [p.frame for p in decoder.unanswered] == [1]
    (event,) = decoder.feed(False, adu(1, 1, hexb("03 02 0005")), 1.2, 3)
    assert (event.address, event.request_frame) == (16, 2)


def test_malformed_exception_response_keeps_its_code() -> None:
    decoder = ModbusDecoder(CTX)
    (event,) = decoder.feed(False, adu(1, 10, hexb("81 06 00")), 1.0, 91)
    assert "exception response" in decoder.problems[0].message
    assert (event.function, event.exception_code, event.unit_id) == (1, 6, 10)


def test_probe_accepts_mbap_and_rejects_other_protocols() -> None:
    assert probe(adu(1, 1, hexb("03 0000 0001")), b"")
    assert probe(adu(1, 1, hexb("03 0000 0001")) + adu(2, 1, hexb("04 0000 0001")), b"")
    assert not probe(adu(1, 1, hexb("03 0000 0001")) + b"\x00", b"")
    assert probe(b"", adu(1, 1, hexb("83 02")))
    assert not probe(b"\x03\x00\x00\x16\x11\xe0\x00\x00\x00\x01\x00", b"")  # TPKT/COTP (S7)
    assert not probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", b"")  # TLS ClientHello
    assert not probe(b"GET / HTTP/1.1\r\n", b"")
    assert not probe(b"\x00\x01\x00\x00\x00", b"")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_raise_only_decode_error(data: bytes, from_client: bool) -> None:
    try:
        parse_request(data)
    except DecodeError:
        pass
    try:
        parse_response(data, parse_request(hexb("01 0000 0010")))
    except DecodeError:
        pass
    decoder = ModbusDecoder(CTX)
    for payload in (data, adu(1, 1, data)):
        try:
            decoder.feed(from_client, payload, 1.0, 1)
        except DecodeError:
            pass
