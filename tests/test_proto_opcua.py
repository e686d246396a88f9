"""OPC UA binary decoder on open62541_client-server_minimal.pcap frames (fields as tshark shows)."""

from __future__ import annotations

import pytest

from cranewatch.protocols.opcua import (
    OpcuaChannelRequest,
    OpcuaChannelResponse,
    OpcuaDecoder,
    OpcuaHelloRequest,
    OpcuaHelloResponse,
    OpcuaServiceRequest,
    OpcuaServiceResponse,
)
from proto_helpers import context, feed_all, h, problems_of

HEL = h("48454c463800000000000000ffff0000ffff00000000000000000000180000006f70632e7463703a2f2f6c6f"
        "63616c686f73743a34383430")
ACK = h("41434b461c00000000000000ffff0000ffff00000000000000000000")
OPN = h("4f504e4684000000000000002f000000687474703a2f2f6f7063666f756e646174696f6e2e6f72672f5541"
        "2f5365637572697479506f6c696379234e6f6e65ffffffffffffffff01000000010000000100be0100000e"
        "3d96f275cad5010000000000000000ffffffff00000000000000000000000000000001000000ffffffffc027"
        "0900")
OPN_REPLY = h("4f504e4687000000050000002f000000687474703a2f2f6f7063666f756e646174696f6e2e6f72672f"
              "55412f5365637572697479506f6c696379234e6f6e65ffffffffffffffff01000000010000000100c1"
              "0136ea9df275cad501000000000000000000ffffffff00000000000000050000000500000022ea9df2"
              "75cad501c0270900ffffffff")
GET_ENDPOINTS = h("4d5347465d000000050000000500000002000000020000000100ac01000092f29df275cad50101"
                  "00000000000000ffffffff10270000000000180000006f70632e7463703a2f2f6c6f63616c686f"
                  "73743a34383430ffffffffffffffff")


def test_hello_channel_and_service_of_an_unsecured_session() -> None:
    events = feed_all(OpcuaDecoder(context(4840)), (True, HEL), (False, ACK), (True, OPN),
                      (False, OPN_REPLY), (True, GET_ENDPOINTS))
    hello, ack, opn, opn_reply, service = events
    assert isinstance(hello, OpcuaHelloRequest)
    assert hello.endpoint_url == "opc.tcp://localhost:4840"
    assert isinstance(ack, OpcuaHelloResponse) and ack.message_type == "ACK"
    assert isinstance(opn, OpcuaChannelRequest)
    assert (opn.policy, opn.security_mode, opn.service_id) == ("None", "None", 446)  # tshark: mode 1
    assert isinstance(opn_reply, OpcuaChannelResponse)
    assert (opn_reply.channel_id, opn_reply.token_id, opn_reply.service_id) == (5, 5, 449)
    assert isinstance(service, OpcuaServiceRequest)
    assert (service.service_id, service.service_name) == (428, "GetEndpointsRequest")


def test_reply_pairs_with_its_request_by_request_id() -> None:
    reply = bytearray(GET_ENDPOINTS)
    reply[24:28] = h("01 00 af 01")  # GetEndpointsResponse (431)
    decoder = OpcuaDecoder(context(4840))
    feed_all(decoder, (True, GET_ENDPOINTS))
    (event,) = decoder.feed(False, bytes(reply), 2.0, 2)
    assert isinstance(event, OpcuaServiceResponse) and event.service_id == 431
    assert event.request_frame == 1


def test_chunks_are_reported_at_the_final_chunk() -> None:
    body = GET_ENDPOINTS[24:]
    first = b"MSGC" + (24 + 10).to_bytes(4, "little") + GET_ENDPOINTS[8:24] + body[:10]
    last = b"MSGF" + (24 + len(body) - 10).to_bytes(4, "little") + GET_ENDPOINTS[8:24] + body[10:]
    events = feed_all(OpcuaDecoder(context(4840)), (True, first), (True, last))
    assert [(e.frame, getattr(e, "service_id", None)) for e in events] == [(2, 428)]


def test_encrypted_channel_hides_services() -> None:
    policy = b"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
    opn_body = len(policy).to_bytes(4, "little") + policy + b"\xff" * 8 + bytes(8) + b"\x5a" * 40
    opn = b"OPNF" + (12 + len(opn_body)).to_bytes(4, "little") + bytes(4) + opn_body
    msg_body = bytes(16) + b"\x3c\x99\x12\xee" * 8
    msg = b"MSGF" + (8 + len(msg_body)).to_bytes(4, "little") + msg_body
    opn_event, msg_event = feed_all(OpcuaDecoder(context(4840)), (True, opn), (True, msg))
    assert isinstance(opn_event, OpcuaChannelRequest) and opn_event.policy == "Basic256Sha256"
    assert opn_event.security_mode is None
    assert isinstance(msg_event, OpcuaServiceRequest) and msg_event.encrypted
    assert msg_event.service_id is None


@pytest.mark.parametrize("cut", [9, 20, 40, 60])
def test_truncated_messages_are_decode_errors(cut: int) -> None:
    broken = bytearray(OPN[:cut])
    broken[4:8] = cut.to_bytes(4, "little")
    assert problems_of(OpcuaDecoder(context(4840)), True, bytes(broken), 1.0, 1)


# open62541_read_service_test_data.pcap frame 25: ReadRequest of ns=1;s=Boolean.Variable
# (tshark: opcua.nodeid.string "Boolean.Variable", nsindex 1).
READ_REQUEST = h("4d5347467f0000000100000001000000050000000500000001007702040100a652a8f997e4a4d416f1"
                 "1fd1fbef7ed7d6af004ba2d9d8010600000000000000ffffffff0000000000000000000000000000"
                 "00000000000100000003010010000000426f6f6c65616e2e5661726961626c650d000000ffffffff"
                 "0000ffffffff")


def test_read_request_names_the_nodes_it_reads() -> None:
    (event,) = OpcuaDecoder(context(4840)).feed(True, READ_REQUEST, 1.0, 25)
    assert isinstance(event, OpcuaServiceRequest)
    assert event.service_name == "ReadRequest" and event.node_ids == ("ns=1;s=Boolean.Variable",)
