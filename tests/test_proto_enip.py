"""EtherNet/IP + CIP decoder on frames of public captures (fields checked against tshark)."""

from __future__ import annotations

import pytest

from cranewatch.protocols.enip import (
    CipRequest,
    CipResponse,
    EnipCommandRequest,
    EnipCommandResponse,
    EnipDecoder,
    EnipIdentityResponse,
    EnipIoDecoder,
    EnipIoRequest,
    parse_epath,
)
from proto_helpers import context, feed_all, h, problems_of

# cip_stop_plc.pcap frame 1: Send Unit Data, CIP Stop (0x07) to class 0x8E instance 1.
CIP_STOP = h("70001c0001002a00000000000000000000000000000000000000000001000200a1000400224095ffb1"
             "00080006010702208e2401")
# enip_test.pcap frame 7 (UDP): List Identity reply of a 1756-ENBT/A, vendor 1.
LIST_IDENTITY = h("63003300000000000000000000000000c1debed10000000001000c002d0001000002af120a0101a4"
                  "000000000000000001000c003a00040330008e4d52000b313735362d454e42542f4103")


def test_cip_stop_of_the_controller_is_reported_as_stop() -> None:
    command, stop = feed_all(EnipDecoder(context(44818)), (True, CIP_STOP))
    assert isinstance(command, EnipCommandRequest) and command.command == 0x70
    assert isinstance(stop, CipRequest)
    assert (stop.service, stop.cip_class, stop.instance, stop.operation) == (0x07, 0x8E, 1, "stop")
    assert stop.connection_id == 0xFF954022


def test_list_identity_reply_names_the_device() -> None:
    command, identity = feed_all(EnipDecoder(context(44818, "udp")), (False, LIST_IDENTITY))
    assert isinstance(command, EnipCommandResponse) and command.command == 0x63
    assert isinstance(identity, EnipIdentityResponse)
    assert identity.product_name == "1756-ENBT/A"
    assert (identity.vendor_id, identity.device_type, identity.product_code) == (1, 12, 58)
    assert identity.revision == "4.3" and identity.device_ip == "10.1.1.164"
    assert identity.serial == 0x00524D8E and identity.state == 3


def _rr(cip: bytes) -> bytes:
    """SendRRData carrying one unconnected CIP message."""
    cpf = h("00000000 0000 0200 0000 0000 b200") + len(cip).to_bytes(2, "little") + cip
    return h("6f00") + len(cpf).to_bytes(2, "little") + bytes(20) + cpf


def test_multiple_service_packet_is_unwrapped_and_replies_carry_request_classes() -> None:
    inner1 = h("0e 03 20 01 24 01 30 07")  # get attribute single: identity, instance 1, attr 7
    inner2 = h("4c 04 91 03 46 6f 6f 00 0100")  # read tag "Foo", 1 element
    offsets = (2 + 4).to_bytes(2, "little") + (2 + 4 + len(inner1)).to_bytes(2, "little")
    request = h("0a 02 20 02 24 01") + h("0200") + offsets + inner1 + inner2
    reply_inner1 = h("8e 00 00 00 4142")
    reply_inner2 = h("cc 00 00 00 c300 2a00")
    reply_offsets = (2 + 4).to_bytes(2, "little") + (2 + 4 + len(reply_inner1)).to_bytes(2, "little")
    reply = h("8a 00 00 00") + h("0200") + reply_offsets + reply_inner1 + reply_inner2
    events = feed_all(EnipDecoder(context(44818)), (True, _rr(request)), (False, _rr(reply)))
    requests = [e for e in events if isinstance(e, CipRequest)]
    replies = [e for e in events if isinstance(e, CipResponse)]
    assert [(r.service, r.classes, r.depth) for r in requests] == [
        (0x0A, (2,), 0), (0x0E, (1,), 1), (0x4C, (), 1)]
    assert requests[1].attributes == (7,) and requests[2].tag == "Foo"
    assert [(r.service, r.classes, r.request_frame) for r in replies] == [
        (0x0A, (2,), 1), (0x0E, (1,), 1), (0x4C, (), 1)]


def test_program_transfer_on_the_file_object() -> None:
    (_, download) = feed_all(EnipDecoder(context(44818)), (True, _rr(h("4c 02 20 37 24 01 0000"))))
    assert isinstance(download, CipRequest) and download.operation == "program_download_initiate"


def test_epath_with_16_bit_segments() -> None:
    assert parse_epath(h("21 00 3700 25 00 0201 30 05")) == ((0x37,), (0x102,), (5,), None)


def test_io_packet_on_udp_2222() -> None:
    packet = h("0200 0280 0800 44332211 07000000 b100 0400 0100 aabb")
    (event,) = EnipIoDecoder(context(2222, "udp")).feed(True, packet, 1.0, 1)
    assert isinstance(event, EnipIoRequest)
    assert (event.connection_id, event.sequence, event.size) == (0x11223344, 7, 4)


@pytest.mark.parametrize("cut", [30, 40, 44, 50])
def test_truncated_cip_is_a_decode_error(cut: int) -> None:
    broken = bytearray(CIP_STOP[:cut])
    broken[2:4] = (cut - 24).to_bytes(2, "little")
    assert problems_of(EnipDecoder(context(44818)), True, bytes(broken), 1.0, 1)


def test_unknown_encapsulation_command_is_a_decode_error() -> None:
    assert problems_of(EnipDecoder(context(44818)), True, h("9999") + bytes(22), 1.0, 1)
