"""S7comm decoder on frames taken from public captures (hex from tshark, fields as tshark shows)."""

from __future__ import annotations

import pytest

from cranewatch.protocols.s7comm import (
    S7Decoder,
    S7JobRequest,
    S7JobResponse,
    S7PlusRequest,
    S7UserDataRequest,
    S7UserDataResponse,
    parse_block_name,
)
from proto_helpers import context, feed_all, h, problems_of

# snap7_s300_everything.pcapng frames 1-4: setup communication and an SZL 0x0011 read.
SETUP_JOB = h("0300001902f08032010000000000080000f0000001000101e0")
SETUP_ACK = h("0300001b02f080320300000000000800000000f0000001000100f0")
SZL_REQUEST = h("0300002102f080320700000100000800080001120411440100ff09000400110000")
SZL_RESPONSE = h(
    "0300009902f080320700000100000c007c000112081284010200000000ff09007800110000001c0004000136"
    "455337203331352d32454831342d304142302000c000030001000636455337203331352d32454831342d3041"
    "42302000c0000300010007202020202020202020202020202020202020202000c0560302070081426f6f7420"
    "4c6f61646572202020202020202020000041200909")
# step7_s300_stop.pcapng frame 1: PLC stop; s7comm_downloading_block_db1.pcap 43 and 58.
PLC_STOP = h("0300002102f0803201000035000010000029000000000009505f50524f4752414d")
REQUEST_DOWNLOAD = h("0300003102f080320100000e00002000001a00010000000000095f30413030303031500d"
                     "31303030353030303030343030")
PI_INSERT = h("0300002b02f080320100000f00001a000028000000000000fd000a01003041303030303150055f"
              "494e5345")
# snap7_s300_readVar.pcapng frame 1 (read DB1.DBB 0, 64 bytes) and its answer.
READ_VAR = h("0300001f02f080320100000000000e00000401120a10020040000184000000")
READ_VAR_ACK = h("0300001902f08032030000000000020004000004010a000000")
# wincc_s300_setup-alarm-read-write.pcapng frame 27: write M 1.0 (one bit) := 0.
WRITE_VAR = h("0300002402f080320100000001000e00050501120a100100010000830000080003000100")


def test_setup_communication_and_its_ack_pair_by_pdu_reference() -> None:
    events = feed_all(S7Decoder(context(102)), (True, SETUP_JOB), (False, SETUP_ACK))
    job, ack = events
    assert isinstance(job, S7JobRequest) and job.function == 0xF0 and job.pdu_size == 480
    assert job.function_name == "setup_communication"
    assert isinstance(ack, S7JobResponse) and ack.pdu_size == 240 and ack.request_frame == 1
    assert (ack.src, ack.dst) == ("10.7.0.20", "10.7.0.10")


def test_szl_read_of_module_identification_gives_the_order_number() -> None:
    request, response = feed_all(S7Decoder(context(102)), (True, SZL_REQUEST), (False, SZL_RESPONSE))
    assert isinstance(request, S7UserDataRequest) and not isinstance(request, S7UserDataResponse)
    assert (request.group, request.subfunction, request.szl_id, request.szl_index) == (4, 1, 0x11, 0)
    assert isinstance(response, S7UserDataResponse)
    assert response.order_number == "6ES7 315-2EH14-0AB0"  # as tshark shows it
    assert response.request_frame == 1


def test_plc_stop_names_its_pi_service() -> None:
    (stop,) = feed_all(S7Decoder(context(102)), (True, PLC_STOP))
    assert isinstance(stop, S7JobRequest)
    assert (stop.function, stop.pi_service) == (0x29, "P_PROGRAM")


def test_block_download_and_activation_name_the_block() -> None:
    download, insert = feed_all(S7Decoder(context(102)), (True, REQUEST_DOWNLOAD), (True, PI_INSERT))
    assert isinstance(download, S7JobRequest) and isinstance(insert, S7JobRequest)
    assert (download.function, download.filename, download.block) == (0x1A, "_0A00001P", "DB1")
    assert (insert.function, insert.pi_service, insert.block) == (0x28, "_INSE", "DB1")


def test_read_and_write_var_items() -> None:
    read, ack, write = feed_all(S7Decoder(context(102)), (True, READ_VAR), (False, READ_VAR_ACK),
                                (True, WRITE_VAR))
    assert isinstance(read, S7JobRequest)
    (item,) = read.items
    assert (item.area_name, item.db, item.byte_address, item.count) == ("DB", 1, 0, 64)
    assert isinstance(ack, S7JobResponse) and ack.return_codes == (0x0A,)  # object does not exist
    assert isinstance(write, S7JobRequest)
    assert write.items[0].area_name == "M" and write.items[0].byte_address == 1
    assert write.items[0].transport_size == 1 and write.values == (b"\x00",)


def test_a_pdu_split_over_segments_is_decoded_once_complete() -> None:
    decoder = S7Decoder(context(102))
    assert decoder.feed(True, PLC_STOP[:10], 1.0, 1) == []
    (stop,) = decoder.feed(True, PLC_STOP[10:], 2.0, 2)
    assert stop.frame == 2


def test_cotp_segments_are_joined() -> None:
    s7 = PLC_STOP[7:]
    first = bytes([3, 0, 0, 7 + 10, 2, 0xF0, 0x00]) + s7[:10]
    last = bytes([3, 0, 0, 7 + len(s7) - 10, 2, 0xF0, 0x80]) + s7[10:]
    events = feed_all(S7Decoder(context(102)), (True, first), (True, last))
    assert [e.frame for e in events] == [2]


def test_s7comm_plus_is_recognised_not_decoded() -> None:
    s7plus = bytes([0x72, 0x01, 0x00, 0x10, 0x31, 0x00, 0x00, 0x04, 0xCA, 0x00]) + bytes(8)
    packet = bytes([3, 0, 0, 7 + len(s7plus), 2, 0xF0, 0x80]) + s7plus
    (event,) = feed_all(S7Decoder(context(102)), (True, packet))
    assert isinstance(event, S7PlusRequest)
    assert (event.version, event.opcode, event.function) == (1, 0x31, 0x04CA)


@pytest.mark.parametrize("cut", [5, 8, 12, 20])
def test_truncated_s7_header_is_a_decode_error(cut: int) -> None:
    broken = bytearray(READ_VAR)
    broken[3] = cut + 7  # the TPKT says the packet ends early: S7 part cut short
    assert problems_of(S7Decoder(context(102)), True, bytes(broken[:cut + 7]), 1.0, 1)


def test_bytes_that_are_not_tpkt_raise_and_then_resynchronise() -> None:
    decoder = S7Decoder(context(102))
    assert problems_of(decoder, True, b"GET / HTTP/1.1\r\n\r\n", 1.0, 1)
    decoder.gap(True)
    assert len(decoder.feed(True, PLC_STOP, 2.0, 2)) == 1


def test_block_names() -> None:
    assert parse_block_name("_0800001P") == "OB1"
    assert parse_block_name("_0E00100P") == "FB100"
    assert parse_block_name("_ZZ00001P") is None
