"""PROFINET: conformance with tshark on the public captures, hand-built DCP frames written from
IEC 61158-6-10 with hand-computed values, the DCP set/reset finding, the device inventory, and
garbage that never raises.

Conformance: for every public capture whose tshark protocol list (MANIFEST.tsv) names a pn_*
protocol, every frame of ethertype 0x8892 is decoded by ``decode_frame`` (cyclic frames not
folded) and compared field by field with tshark's pn_rt/pn_dcp/pn_ptcp/pn_io fields of the same
frame; the PNIO-CM datagrams (DCE/RPC on a PNIO interface UUID, whatever the ports) likewise
with dcerpc/pn_io fields. Known differences are listed with their reason.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cranewatch.model import Severity, iso_time
from cranewatch.protocols.base import Event, FlowContext
from cranewatch.protocols.profinet import (
    AlarmFrame,
    DcpMessage,
    DcpRequest,
    DcpResponse,
    PnioCmDecoder,
    PnioCmResponse,
    ProfinetDecoder,
    PtcpFrame,
    RtCyclicFrame,
    RtOtherFrame,
    decode_frame,
    decode_frames,
    decode_pnio_cm,
    detect_dcp_changes,
    device_inventory,
    reset_mode,
    rt_class,
)
from profinet_capture import (
    fold_capture_by_batches,
    pnio_cm_datagrams,
    profinet_frames,
    tshark_fields,
    write_pcap,
)

PN_PROTOCOLS = {"pn_rt", "pn_dcp", "pn_ptcp", "pn_io", "pn_io_device", "pn_io_controller"}
L2_FILTER = "eth.type == 0x8892 || vlan.etype == 0x8892"
L2_FIELDS = (
    "pn_rt.frame_id", "pn_dcp.service_id", "pn_dcp.service_type", "pn_dcp.xid",
    "pn_dcp.suboption_device_nameofstation", "pn_dcp.suboption_device_devicevendorvalue",
    "pn_dcp.suboption_ip_ip", "pn_dcp.suboption_ip_subnetmask",
    "pn_dcp.suboption_ip_standard_gateway", "pn_dcp.suboption_vendor_id",
    "pn_dcp.suboption_device_id", "pn_dcp.suboption_device_role", "pn_dcp.block_qualifier",
    "pn_rt.cycle_counter", "pn_rt.ds", "pn_rt.transfer_status", "pn_ptcp.sequence_id",
    "pn_io.alarm_dst_endpoint", "pn_io.alarm_src_endpoint", "pn_io.pdu_type.type",
    "pn_io.send_seq_num", "pn_io.ack_seq_num",
)
CM_FILTER = "dcerpc.ver == 4"
CM_FIELDS = ("dcerpc.dg_if_id", "dcerpc.pkt_type", "dcerpc.opnum", "dcerpc.dg_seqnum",
             "dcerpc.dg_frag_num", "dcerpc.dg_flags1_frag", "pn_io.block_type", "pn_io.index",
             "pn_io.cminitiator_station_name", "pn_io.control_command")
PNIO_UUID_PREFIXES = ("dea00001-", "dea00002-", "dea00003-", "dea00004-")
ALARM_PDU_TYPES = {"data": 1, "nack": 2, "ack": 3, "err": 4}

EWS = "02:00:00:00:00:0e"
ROGUE = "02:00:00:00:00:66"
DRIVE = "02:00:00:00:00:d1"


def profinet_captures(shared: Path) -> list[Path]:
    """Every shared capture whose tshark protocol list names a PROFINET dissector."""
    found = []
    with (shared / "pcaps" / "MANIFEST.tsv").open(newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) >= 7 and PN_PROTOCOLS & set(row[6].split(",")):
                found.append(shared / "pcaps" / row[2])
    return found


def _hex(value: int | None, width: int) -> str:
    return "" if value is None else f"0x{value:0{width}x}"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def l2_columns(event: Event | None) -> dict[str, str]:
    """The L2_FIELDS tshark would print for the frame that gave this event."""
    cols = dict.fromkeys(L2_FIELDS, "")
    if event is None:
        return cols
    cols["pn_rt.frame_id"] = str(getattr(event, "frame_id", ""))
    if isinstance(event, DcpMessage):
        cols.update({
            "pn_dcp.service_id": str(event.service_id),
            "pn_dcp.service_type": str(event.service_type),
            "pn_dcp.xid": _hex(event.xid, 8),
            "pn_dcp.suboption_device_nameofstation": _text(event.station_name),
            "pn_dcp.suboption_device_devicevendorvalue": _text(event.device_vendor),
            "pn_dcp.suboption_ip_ip": _text(event.ip),
            "pn_dcp.suboption_ip_subnetmask": _text(event.netmask),
            "pn_dcp.suboption_ip_standard_gateway": _text(event.gateway),
            "pn_dcp.suboption_vendor_id": _hex(event.vendor_id, 4),
            "pn_dcp.suboption_device_id": _hex(event.device_id, 4),
            "pn_dcp.suboption_device_role": _hex(event.device_role, 2),
            "pn_dcp.block_qualifier": "|".join(str(b.qualifier) for b in event.blocks
                                               if b.qualifier is not None),
        })
    elif isinstance(event, RtCyclicFrame):
        cols.update({"pn_rt.cycle_counter": str(event.cycle_counter),
                     "pn_rt.ds": _hex(event.data_status, 2),
                     "pn_rt.transfer_status": str(event.transfer_status)})
    elif isinstance(event, PtcpFrame):
        cols["pn_ptcp.sequence_id"] = str(event.sequence_id)
    elif isinstance(event, AlarmFrame):
        cols.update({"pn_io.alarm_dst_endpoint": _hex(event.dst_endpoint, 4),
                     "pn_io.alarm_src_endpoint": _hex(event.src_endpoint, 4),
                     "pn_io.pdu_type.type": _hex(ALARM_PDU_TYPES[event.pdu_type], 2),
                     "pn_io.send_seq_num": _hex(event.send_seq, 4),
                     "pn_io.ack_seq_num": _hex(event.ack_seq, 4)})
    return cols


def l2_conformance(path: Path) -> tuple[int, list[str]]:
    """(frames compared, mismatches) of one capture."""
    expected = tshark_fields(path, L2_FILTER, L2_FIELDS)
    mismatches = []
    seen = set()
    for item in profinet_frames(path):
        seen.add(item.frame)
        events, problems = decode_frame(item.payload, src=item.src, dst=item.dst, ts=item.ts,
                                        frame=item.frame)
        mismatches += [f"{path.name}: problem {p}" for p in problems]  # the captures are valid
        ours = l2_columns(events[0] if events else None)
        theirs = expected.get(item.frame, dict.fromkeys(L2_FIELDS, "(not dissected)"))
        diff = {k: (ours[k], theirs[k]) for k in L2_FIELDS if ours[k] != theirs[k]}
        if diff:
            mismatches.append(f"{path.name} frame {item.frame}: {diff}")
    mismatches += [f"{path.name} frame {n}: tshark only" for n in sorted(set(expected) - seen)]
    return len(seen), mismatches


def cm_conformance(path: Path) -> tuple[int, list[str]]:
    """(datagrams compared, mismatches) of one capture's PNIO-CM datagrams.

    tshark reassembles fragmented calls and lists nested blocks (record data, the headers
    inside a multiple write); cranewatch lists the top-level blocks of unfragmented calls.
    So: block types must be a prefix-preserving subsequence of tshark's, with the same first
    block; index/station name/control command are compared where cranewatch has blocks.
    """
    rows = tshark_fields(path, CM_FILTER, CM_FIELDS)
    expected = {n: r for n, r in rows.items() if r["dcerpc.dg_if_id"].startswith(PNIO_UUID_PREFIXES)}
    mismatches = []
    seen = set()
    for item in pnio_cm_datagrams(path):
        seen.add(item.frame)
        theirs = expected.get(item.frame)
        events, problems = decode_pnio_cm(item.payload, src=item.src, dst=item.dst,
                                          sport=item.sport, dport=item.dport, ts=item.ts,
                                          frame=item.frame)
        mismatches += [f"{path.name}: problem {p}" for p in problems]
        if theirs is None or not events:
            mismatches.append(f"{path.name} frame {item.frame}: ours {events} {problems}, tshark {theirs}")
            continue
        (event,) = events
        assert isinstance(event, PnioCmResponse | DcpMessage) or event.kind == "profinet_cm_request"
        diff = []
        for ours, key in ((event.interface, "dcerpc.dg_if_id"), (event.packet_type, "dcerpc.pkt_type"),
                          (event.opnum, "dcerpc.opnum"), (event.sequence, "dcerpc.dg_seqnum"),
                          (event.fragment, "dcerpc.dg_frag_num")):
            if key == "dcerpc.dg_if_id":
                ours = {"device": "dea00001", "controller": "dea00002", "supervisor": "dea00003",
                        "parameter-server": "dea00004"}[str(ours)]
                theirs_value = theirs[key][:8]
            else:
                theirs_value = theirs[key]
            if str(ours) != theirs_value:
                diff.append((key, ours, theirs_value))
        if event.blocks:
            ours_types = [f"0x{b.block_type:04x}" for b in event.blocks]
            their_types = theirs["pn_io.block_type"].split("|")
            rest = iter(their_types)
            if ours_types[0] != their_types[0] or not all(t in rest for t in ours_types):
                diff.append(("pn_io.block_type", ours_types, their_types))
            for ours_value, key in ((_hex(event.index, 4), "pn_io.index"),
                                    (_text(event.station_name), "pn_io.cminitiator_station_name"),
                                    (_hex(event.control_command, 4), "pn_io.control_command")):
                first = theirs[key].split("|")[0]
                if ours_value != first:
                    diff.append((key, ours_value, first))
        elif theirs["dcerpc.dg_flags1_frag"] != "1" and theirs["pn_io.block_type"]:
            diff.append(("pn_io.block_type", [], theirs["pn_io.block_type"]))
        if diff:
            mismatches.append(f"{path.name} frame {item.frame}: {diff}")
    mismatches += [f"{path.name} frame {n}: tshark only" for n in sorted(set(expected) - seen)]
    return len(seen), mismatches


# --------------------------------------------------------------------------- conformance


def test_profinet_captures_are_found(shared_data: Path) -> None:
    names = {p.name for p in profinet_captures(shared_data)}
    assert {"profinet_io_cm_mixed_1.pcap", "ChangeIPUsingDCP.pcap", "PROFINET-RT.pcap",
            "profinet-wireshark-bug.pcap", "profinet_io_cm_connect.pcapng"} <= names


def test_layer2_frames_agree_with_tshark(shared_data: Path, tshark: str) -> None:
    total, mismatches = 0, []
    for path in profinet_captures(shared_data):
        compared, bad = l2_conformance(path)
        total += compared
        mismatches += bad
    assert total == 364  # 4 + 4 + 14 + 4 + 10 + 164 + 164 frames of ethertype 0x8892 (tshark)
    assert mismatches == []


def test_pnio_cm_datagrams_agree_with_tshark(shared_data: Path, tshark: str) -> None:
    total, mismatches = 0, []
    for path in profinet_captures(shared_data):
        compared, bad = cm_conformance(path)
        total += compared
        mismatches += bad
    assert total == 1963  # datagrams on a PNIO interface UUID (tshark: dcerpc.ver == 4)
    assert mismatches == []


def test_cyclic_streams_match_tshark_cycle_counters(shared_data: Path, tshark: str) -> None:
    """Per stream: frame count, first/last counter, and gaps computed here from tshark's own
    counters (steps other than the most common one)."""
    path = shared_data / "pcaps/icsnpp-profinet-io-cm/testing/traces/profinet_io_cm_mixed_1.pcap"
    rows = tshark_fields(path, "pn_rt.cycle_counter", ("eth.src", "eth.dst", "pn_rt.frame_id",
                                                       "pn_rt.cycle_counter"))
    counters: dict[tuple[str, str, int], list[int]] = {}
    for _frame, row in sorted(rows.items()):
        key = (row["eth.src"], row["eth.dst"], int(row["pn_rt.frame_id"]))
        counters.setdefault(key, []).append(int(row["pn_rt.cycle_counter"]))
    decoder = ProfinetDecoder(str(path))
    for item in profinet_frames(path):
        decoder.feed(item.payload, item.src, item.dst, item.ts, item.frame)
    summaries = {(s.src, s.dst, s.frame_id): s for s in decoder.cyclic_summaries()}
    assert set(summaries) == set(counters)
    for key, values in counters.items():
        steps = [(b - a) & 0xFFFF for a, b in pairwise(values)]
        usual = Counter(steps).most_common(1)[0][0]
        summary = summaries[key]
        assert (summary.frames, summary.first_cycle_counter, summary.last_cycle_counter) == (
            len(values), values[0], values[-1])
        assert summary.increment == usual
        assert summary.gaps == sum(1 for s in steps if s not in (0, usual))
    assert decoder.problems == []


def test_result_document_has_the_cyclic_streams_tshark_counts(shared_data: Path, tshark: str,
                                                               tmp_path: Path) -> None:
    """Through ``analyze --format jsonl``: one ``profinet-stream`` record per sender, receiver
    and frame id of every PROFINET capture, with tshark's frame count, first and last frame and
    time, and the cycle time of its usual cycle-counter step (31.25 µs units)."""
    import json

    import jsonschema

    from cranewatch.cli import main
    from cranewatch.report.jsonl import schemas

    compared = 0
    for path in profinet_captures(shared_data):
        rows = tshark_fields(path, "pn_rt.cycle_counter", (
            "eth.src", "eth.dst", "pn_rt.frame_id", "pn_rt.cycle_counter", "frame.time_epoch"))
        expected: dict[tuple[str, str, int], list[tuple[int, int, float]]] = {}
        for frame, row in sorted(rows.items()):
            key = (row["eth.src"], row["eth.dst"], int(row["pn_rt.frame_id"]))
            expected.setdefault(key, []).append(
                (frame, int(row["pn_rt.cycle_counter"]), float(row["frame.time_epoch"])))
        out = tmp_path / f"{path.name}.jsonl"
        assert main(["analyze", str(path), "--format", "jsonl", "--out", str(out)]) == 0
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        streams = {(r["src"], r["dst"], r["frame_id"]): r for r in records if r["type"] == "profinet-stream"}
        for record in streams.values():
            jsonschema.validate(record, schemas()["profinet-stream"])
        assert set(streams) == set(expected), path.name
        for key, frames in expected.items():
            stream = streams[key]
            usual = Counter((b[1] - a[1]) & 0xFFFF for a, b in pairwise(frames)).most_common(1)[0][0]
            assert (stream["file"], stream["frames"], stream["first_frame"], stream["last_frame"]) == (
                str(path), len(frames), frames[0][0], frames[-1][0])
            assert [stream["first_seen"], stream["last_seen"]] == [
                iso_time(frames[0][2]), iso_time(frames[-1][2])]
            assert stream["cycle_time"] == pytest.approx(usual * 31.25e-6)
            compared += stream["frames"]
    # profinet_io_cm_mixed_1 and _2: 56 frames 0xC000 from 00:a0:45:6d:d3:43 and 46 frames
    # 0xC002 from 00:09:91:43:e0:67 each, 8 ms cycle (counter step 256); the others none
    assert compared == 2 * (56 + 46)


# --------------------------------------------------------------------------- hand-built frames
# Bytes written from IEC 61158-6-10: FrameID, ServiceID, ServiceType, Xid, Reserved or
# ResponseDelay, DCPDataLength, then blocks Option, Suboption, DCPBlockLength, value (padded
# to even length).

SET_IP = bytes.fromhex(
    "fefd" "04" "00" "12345678" "0000" "0012"  # Set request, Xid 0x12345678, 18 bytes of blocks
    "01" "02" "000e" "0001"  # IP/IP parameter, length 14, BlockQualifier 1 (permanent)
    "c0a80a14" "ffffff00" "c0a80a01"  # 192.168.10.20 / 255.255.255.0 gw 192.168.10.1
) + bytes(22)  # Ethernet padding up to 60 bytes

SET_NAME = bytes.fromhex(
    "fefd" "04" "00" "00000101" "0000" "001a"  # 26 bytes of blocks: 20 + 6
    "02" "02" "000f" "0000"  # NameOfStation, length 15 = 2 + 13, temporary
) + b"hoist-drive-1" + bytes.fromhex(
    "00"  # padding to even length
    "05" "02" "0002" "0000"  # Control/Stop (end of transaction)
)

FACTORY_RESET = bytes.fromhex(
    "fefd" "04" "00" "00000202" "0000" "0006"
    "05" "06" "0002" "0004"  # Control/ResetToFactory, qualifier 4: mode 2, communication parameters
)

SET_RESPONSE_REFUSED = bytes.fromhex(
    "fefd" "04" "01" "00000101" "0000" "0008"
    "05" "04" "0003" "02" "02" "06" "00"  # Response to 2/2: error 6, set not possible in operation
)

IDENTIFY_RESPONSE = bytes.fromhex(
    "feff" "05" "01" "00000099" "0000" "0034"  # 52 bytes of blocks: 16 + 10 + 8 + 18
    "02" "02" "000b" "0000"
) + b"drive-01a" + bytes.fromhex(
    "00"  # 4 + 11 + 1 = 16
    "02" "03" "0006" "0000" "002a" "0c01"  # DeviceID: vendor 0x002a (Siemens), device 0x0c01
    "02" "04" "0004" "0000" "01" "00"  # DeviceRole: IO-Device
    "01" "02" "000e" "0001" "0a140709" "ffffff00" "0a140701"  # 10.20.7.9/24 gw 10.20.7.1
)


def _one(payload: bytes, src: str = ROGUE, dst: str = DRIVE, frame: int = 1) -> Event:
    events, problems = decode_frame(payload, src=src, dst=dst, ts=100.0 + frame, frame=frame)
    assert problems == []
    (event,) = events
    return event


def test_set_ip_parameters_by_hand() -> None:
    event = _one(SET_IP)
    assert isinstance(event, DcpRequest)
    assert (event.service, event.xid, event.data_length) == ("set", 0x12345678, 18)
    assert (event.ip, event.netmask, event.gateway) == ("192.168.10.20", "255.255.255.0", "192.168.10.1")
    assert event.sets_ip and not event.sets_name and event.permanent is True
    assert event.blocks[0].qualifier == 1 and event.blocks[0].offset == 12


def test_set_name_of_station_with_padding_and_stop_by_hand() -> None:
    event = _one(SET_NAME)
    assert isinstance(event, DcpRequest)
    assert event.station_name == "hoist-drive-1" and event.sets_name
    assert event.controls == ("stop",) and event.permanent is False
    assert [(b.option, b.suboption, b.offset) for b in event.blocks] == [(2, 2, 12), (5, 2, 32)]


def test_reset_to_factory_by_hand() -> None:
    event = _one(FACTORY_RESET)
    assert isinstance(event, DcpRequest)
    assert event.controls == ("reset-to-factory",) and event.reset_qualifier == 4
    assert reset_mode(event.reset_qualifier) == "communication parameters"


def test_set_response_block_error_by_hand() -> None:
    event = _one(SET_RESPONSE_REFUSED, src=DRIVE, dst=ROGUE)
    assert isinstance(event, DcpResponse) and event.results == ((2, 2, 6),)


def test_identify_response_by_hand() -> None:
    event = _one(IDENTIFY_RESPONSE, src=DRIVE, dst=EWS)
    assert isinstance(event, DcpResponse)
    assert (event.station_name, event.vendor_id, event.device_id, event.device_role) == (
        "drive-01a", 0x2A, 0x0C01, 1)
    assert (event.ip, event.ip_info) == ("10.20.7.9", 1)


def test_vlan_tagged_dcp_frame_through_the_capture_reader(tmp_path: Path) -> None:
    """802.1Q priority 6 (PROFINET's) VLAN 7: the reader peels the tag, the payload decodes."""
    mac = bytes.fromhex
    frame = (mac(DRIVE.replace(":", "")) + mac(ROGUE.replace(":", "")) + bytes.fromhex("8100c007")
             + bytes.fromhex("8892") + SET_IP)
    path = write_pcap(tmp_path / "vlan.pcap", [frame])
    (item,) = profinet_frames(path)
    assert (item.src, item.dst, item.frame) == (ROGUE, DRIVE, 1)
    event = _one(item.payload)
    assert isinstance(event, DcpRequest) and event.ip == "192.168.10.20"


def test_cyclic_frame_status_from_the_frame_end() -> None:
    payload = bytes.fromhex("c001") + bytes(40) + bytes.fromhex("1234" "35" "00")
    event = _one(payload)
    assert isinstance(event, RtCyclicFrame)
    assert (event.rt_class, event.cycle_counter, event.data_status, event.transfer_status,
            event.data_length) == ("RT_CLASS_1", 0x1234, 0x35, 0, 40)


def test_frame_id_classes() -> None:
    assert [rt_class(f) for f in (0x0100, 0x8000, 0xC000, 0xF800, 0xFC01, 0xFE01, 0xFEFE,
                                  0xFF40, 0xFF80, 0xFFFF)] == [
        "RT_CLASS_3", "RT_CLASS_2", "RT_CLASS_1", "RT_CLASS_1", "alarm", "alarm", "dcp", "ptcp",
        "fragment", "reserved"]
    assert rt_class(0xC000, udp=True) == "RT_CLASS_UDP"


def test_cyclic_gaps_counted() -> None:
    decoder = ProfinetDecoder()
    for frame, counter in enumerate((0, 32, 64, 160, 192, 192), start=1):  # 2 frames lost, 1 repeat
        payload = bytes.fromhex("c000") + bytes(40) + counter.to_bytes(2, "big") + b"\x35\x00"
        assert decoder.feed(payload, DRIVE, EWS, frame / 1000, frame) == []
    (summary,) = decoder.cyclic_summaries()
    assert (summary.frames, summary.increment, summary.gaps, summary.missing, summary.repeats,
            summary.gap_frames) == (6, 32, 1, 2, 1, (4,))
    assert summary.cycle_time == pytest.approx(0.001)


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(("payload", "what", "offset"), [
    (b"\xfe", "no room for a FrameID", 0),
    (bytes.fromhex("fefd0400"), "needed for its header", 2),
    (SET_IP[:20], "DCPDataLength 18 but 8 bytes follow", 10),
    (bytes.fromhex("fefd" "04" "00" "00000001" "0000" "0008" "01" "02" "0010" "0001" "c0a8"),
     "runs past the DCP data", 12),
    (bytes.fromhex("fefd" "09" "00" "00000001" "0000" "0000"), "unknown DCP ServiceID 9", 2),
    (bytes.fromhex("fe01" "8001"), "RTA header", 2),
])
def test_bad_frames_return_located_problems(payload: bytes, what: str, offset: int) -> None:
    _events, problems = decode_frame(payload, src=ROGUE, dst=DRIVE, ts=1.0, frame=7)
    assert any(what in p.what and p.offset == offset and p.frame == 7 for p in problems), problems
    error = problems[0].as_error()
    assert error.location is not None and error.location.frame == 7


@settings(max_examples=400, deadline=timedelta(milliseconds=500),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from([SET_IP, SET_NAME, FACTORY_RESET, IDENTIFY_RESPONSE,
                               SET_RESPONSE_REFUSED]),
              st.integers(0, 80), st.binary(max_size=4)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):]),
    st.tuples(st.sampled_from([b"\xfe\xfc", b"\xfe\xfd", b"\xfe\xfe", b"\xfe\xff", b"\xfc\x01",
                               b"\xff\x40", b"\xff\x00", b"\xc0\x00", b"\x00\x80"]),
              st.binary(max_size=120)).map(b"".join),
))
def test_garbage_never_raises(payload: bytes) -> None:
    events, problems = decode_frame(payload, src=ROGUE, dst=DRIVE, ts=0.0, frame=3)
    assert all(0 <= p.offset <= max(len(payload), 1) and p.frame == 3 for p in problems)
    assert all(isinstance(e, DcpMessage | RtCyclicFrame | AlarmFrame | PtcpFrame | RtOtherFrame)
               for e in events)
    events2, _ = decode_pnio_cm(b"\x04" + payload, src="10.0.0.1", dst="10.0.0.2", sport=1,
                                dport=34964, ts=0.0, frame=3)
    assert len(events2) <= 1


# --------------------------------------------------------------------------- detection


def _decode_all(payloads: list[tuple[bytes, str, str]]) -> list[Event]:
    decoder = ProfinetDecoder("hand.pcap")
    events: list[Event] = []
    for frame, (payload, src, dst) in enumerate(payloads, start=1):
        events += decoder.feed(payload, src, dst, 100.0 + frame, frame)
    assert decoder.problems == []
    return events


def test_rogue_set_name_is_plc_control_with_old_and_new_values() -> None:
    events = _decode_all([(IDENTIFY_RESPONSE, DRIVE, EWS), (SET_NAME, ROGUE, DRIVE),
                          (SET_RESPONSE_REFUSED, DRIVE, ROGUE)])
    (finding,) = detect_dcp_changes(events, {EWS}, crane="STS-07")
    assert (finding.category, finding.rule, finding.severity) == (
        "plc-control", "profinet-dcp-set", Severity.HIGH)
    assert (finding.src, finding.dst, finding.count) == (ROGUE, "10.20.7.9", 1)
    (evidence,) = finding.evidence
    assert (evidence.source, evidence.frames) == ("hand.pcap", (2, 3))
    assert evidence.values["old_station_name"] == "drive-01a"
    assert evidence.values["new_station_name"] == "hoist-drive-1"
    assert evidence.values["device_answer"] == "set not possible (in operation)"
    assert "drive-01a" in finding.title


def test_rogue_factory_reset_is_critical() -> None:
    events = _decode_all([(FACTORY_RESET, ROGUE, DRIVE)])
    (finding,) = detect_dcp_changes(events, {EWS})
    assert finding.title == f"PROFINET DCP reset to factory settings of {DRIVE} from {ROGUE}"
    assert (finding.src, finding.dst) == (ROGUE, DRIVE)  # no IP known for either
    assert (finding.rule, finding.severity) == ("profinet-dcp-reset", Severity.CRITICAL)
    assert finding.evidence[0].values["reset"] == "communication parameters"
    assert "T0816" in finding.technique


def test_engineering_station_by_mac_or_ip_is_not_reported() -> None:
    events = _decode_all([(SET_IP, EWS, DRIVE), (SET_NAME, ROGUE, DRIVE)])
    assert [f.src for f in detect_dcp_changes(events, {EWS.upper()})] == [ROGUE]
    allowed = detect_dcp_changes(events, {"10.20.7.5"}, addresses={ROGUE: "10.20.7.5"})
    assert [f.src for f in allowed] == [EWS]  # the EWS MAC is not in this list


def test_identify_and_get_are_not_changes() -> None:
    get = bytes.fromhex("fefd" "03" "00" "00000001" "0000" "0004" "0202" "0102")
    events = _decode_all([(get, ROGUE, DRIVE), (IDENTIFY_RESPONSE, DRIVE, ROGUE)])
    assert events[0].requested == ((2, 2), (1, 2))  # type: ignore[attr-defined]
    assert detect_dcp_changes(events, set()) == []


def test_change_ip_capture_reports_the_set(shared_data: Path) -> None:
    """ChangeIPUsingDCP.pcap (tshark): a VMware host identifies X208-BORD at 192.168.0.6, then
    sets 192.168.0.10/24 gw 192.168.0.1 (frame 3); the switch answers Ok (frame 4)."""
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/profinet/PROFINET-RT-DCP/ChangeIPUsingDCP.pcap"
    decoder = ProfinetDecoder(str(path))
    events = [e for item in profinet_frames(path)
              for e in decoder.feed(item.payload, item.src, item.dst, item.ts, item.frame)]
    (finding,) = detect_dcp_changes(events, {"02:00:00:00:00:01"})
    values = finding.evidence[0].values
    assert (finding.src, finding.dst, finding.evidence[0].frames) == (
        "00:0c:29:ba:09:ea", "192.168.0.6", (3, 4))
    assert values["old_ip"] == "192.168.0.6/255.255.255.0 gw 192.168.0.1"
    assert values["new_ip"] == "192.168.0.10/255.255.255.0 gw 192.168.0.1"
    assert (values["station_name"], values["device_answer"]) == ("X208-BORD", "ok")
    assert detect_dcp_changes(events, {"00:0c:29:ba:09:ea"}) == []


# --------------------------------------------------------------------------- inventory


def test_device_inventory_from_mixed_capture(shared_data: Path) -> None:
    """Values from tshark: frame 466 is versamax-pns11's Identify response (IC200PNS001,
    vendor 0x015a, device 0x0003, role IO-Device, 192.168.1.2/24); its cyclic frames (frame id
    0xc000, ...) come from 00:09:91:43:e0:67's peer."""
    path = shared_data / "pcaps/icsnpp-profinet-io-cm/testing/traces/profinet_io_cm_mixed_1.pcap"
    decoder = ProfinetDecoder(str(path))
    events = [e for item in profinet_frames(path)
              for e in decoder.feed(item.payload, item.src, item.dst, item.ts, item.frame)]
    devices = {d.station_name: d for d in device_inventory(events, decoder.cyclic_summaries())}
    versamax = devices["versamax-pns11"]
    assert (versamax.ip, versamax.netmask, versamax.vendor_id, versamax.device_id,
            versamax.device_vendor, versamax.roles) == (
        "192.168.1.2", "255.255.255.0", 0x015A, 0x0003, "IC200PNS001", ("io-device",))
    assert 466 in versamax.frames
    senders = [d for d in device_inventory(events, decoder.cyclic_summaries()) if d.rt_frame_ids]
    assert senders and all(d.cycle_time and d.cycle_time > 0 for d in senders)


# --------------------------------------------------------------------------- PNIO-CM


def test_pnio_cm_connect_carries_the_controller_name(shared_data: Path) -> None:
    """profinet_io_cm_connect_minimal (tshark): frame 1 Connect request with ARBlockReq from
    pc-worx-rt-basic-6d-d3-43, frame 2 its response (PNIOStatus 0)."""
    path = shared_data / ("pcaps/icsnpp-profinet-io-cm/testing/traces/"
                          "profinet_io_cm_connect_minimal.pcapng")
    request, response = pnio_cm_datagrams(path)
    ctx = FlowContext(client=request.src, client_port=request.sport, server=request.dst,
                      server_port=request.dport, transport="udp")
    decoder = PnioCmDecoder(ctx)
    (connect,) = decoder.feed(True, request.payload, request.ts, request.frame)
    (answer,) = decoder.feed(False, response.payload, response.ts, response.frame)
    assert (connect.kind, connect.operation, connect.interface, connect.station_name) == (  # type: ignore[attr-defined]
        "profinet_cm_request", "connect", "device", "pc-worx-rt-basic-6d-d3-43")
    assert isinstance(answer, PnioCmResponse) and answer.pnio_status == 0
    assert answer.ar_uuid == connect.ar_uuid  # type: ignore[attr-defined]
    assert decoder.problems == []


def test_rt_other_frame_for_fragments() -> None:
    event = _one(bytes.fromhex("ff83") + bytes(58))
    assert isinstance(event, RtOtherFrame) and event.rt_class == "fragment"


def test_cyclic_state_is_bounded_by_max_streams() -> None:
    decoder = ProfinetDecoder(max_streams=2)
    for frame, frame_id in enumerate((0xC000, 0xC001, 0xC002, 0xC002, 0xC000), start=1):
        payload = frame_id.to_bytes(2, "big") + bytes(40) + frame.to_bytes(2, "big") + b"\x35\x00"
        decoder.feed(payload, DRIVE, EWS, float(frame), frame)
    assert sorted(k[2] for k in decoder.streams) == [0xC000, 0xC001]
    assert decoder.dropped_cyclic == 2
    assert [s.frames for s in decoder.cyclic_summaries()] == [2, 1]


def test_inventory_takes_what_devices_say_not_what_a_set_asked() -> None:
    events = _decode_all([(IDENTIFY_RESPONSE, DRIVE, EWS), (SET_NAME, ROGUE, DRIVE)])
    (device,) = device_inventory(events)
    assert (device.mac, device.station_name, device.ip, device.roles, device.frames) == (
        DRIVE, "drive-01a", "10.20.7.9", ("io-device",), (1,))


PNIO_HEADER = bytes.fromhex(
    "04" "00" "20" "00" "100000" "00"  # version 4, request, idempotent, little-endian drep
    + "00" * 16  # object UUID
    + "0100a0de976cd111827100a02442df7d"  # PNIO device interface, little-endian fields
    + "11" * 16  # activity
    + "00000000" "01000000" "00000000" "0000" "ffff" "ffff"
)


@settings(max_examples=300, deadline=timedelta(milliseconds=500),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 400))
def test_pnio_cm_garbage_never_raises(body: bytes, length: int) -> None:
    datagram = PNIO_HEADER + length.to_bytes(2, "little") + bytes(4) + body
    events, problems = decode_pnio_cm(datagram, src="10.0.0.1", dst="10.0.0.2", sport=1,
                                      dport=34964, ts=0.0, frame=5)
    (event,) = events
    assert (event.interface, event.operation) == ("device", "connect")  # type: ignore[attr-defined]
    assert all(0 <= p.offset <= len(datagram) and p.frame == 5 for p in problems)


def test_decode_frames_keeps_one_result_per_body_in_order() -> None:
    cyclic = bytes.fromhex("c000") + bytes(40) + bytes.fromhex("0020" "35" "00")
    decoder = ProfinetDecoder("batch.pcap")
    results = decode_frames([SET_IP, cyclic, b"\xfe", IDENTIFY_RESPONSE], [ROGUE, DRIVE, ROGUE, DRIVE],
                            [DRIVE, EWS, DRIVE, EWS], [1.0, 2.0, 3.0, 4.0], [11, 12, 13, 14],
                            decoder=decoder)
    assert [type(event).__name__ for event, _ in results] == [
        "DcpRequest", "NoneType", "NoneType", "DcpResponse"]
    assert [[p.frame for p in problems] for _, problems in results] == [[], [], [13], []]
    assert [s.frames for s in decoder.cyclic_summaries()] == [1]


@pytest.mark.parametrize("max_packets", [7, 65536])
def test_batch_path_gives_the_per_frame_result(shared_data: Path, max_packets: int) -> None:
    """The vectorised fold (small batches: streams continue across batch boundaries) and the
    per-frame path give the same streams and the same acyclic events."""
    path = shared_data / "pcaps/icsnpp-profinet-io-cm/testing/traces/profinet_io_cm_mixed_1.pcap"
    per_frame = ProfinetDecoder(str(path))
    events = [e for item in profinet_frames(path)
              for e in per_frame.feed(item.payload, item.src, item.dst, item.ts, item.frame)]
    batched = ProfinetDecoder(str(path))
    assert fold_capture_by_batches(path, batched, max_packets) == events
    assert batched.cyclic_summaries() == per_frame.cyclic_summaries()
    assert sum(s.frames for s in batched.cyclic_summaries()) == 102  # tshark -Y pn_rt.cycle_counter


def _cyclic_frame(frame_id: int, counter: int, status: int, transfer: int) -> bytes:
    return frame_id.to_bytes(2, "big") + bytes(40) + counter.to_bytes(2, "big") + bytes([status, transfer])


@settings(max_examples=60, deadline=timedelta(seconds=2))
@given(st.lists(st.tuples(st.sampled_from([0xC000, 0xC001, 0x8001]), st.sampled_from([0, 1]),
                          st.sampled_from([0, 32, 32, 32, 64, 96, 65504]),
                          st.sampled_from([0x35, 0x35, 0x25, 0x15]), st.sampled_from([0, 0, 1])),
                min_size=1, max_size=120),
       st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_batch_fold_equals_per_frame_fold(steps: list[tuple[int, int, int, int, int]],
                                          cuts: list[int]) -> None:
    macs = [(0x020000000001, "02:00:00:00:00:01"), (0x0200000000D1, "02:00:00:00:00:d1")]
    counters: dict[tuple[int, int], int] = {}
    rows = []
    for frame, (frame_id, sender, step, status, transfer) in enumerate(steps, start=1):
        counter = counters[(frame_id, sender)] = (counters.get((frame_id, sender), 0) + step) & 0xFFFF
        rows.append((_cyclic_frame(frame_id, counter, status, transfer), sender, frame))
    per_frame = ProfinetDecoder()
    for payload, sender, frame in rows:
        assert per_frame.feed(payload, macs[sender][1], macs[1 - sender][1], frame / 1000, frame) == []
    batched = ProfinetDecoder()
    position = 0
    for cut in [*cuts, len(rows)]:
        chunk = rows[position:position + cut]
        position += len(chunk)
        if not chunk:
            continue
        buf = b"".join(payload for payload, _, _ in chunk)
        lengths = np.array([len(payload) for payload, _, _ in chunk])
        ends = np.cumsum(lengths)
        taken = batched.fold_cyclic(
            buf, ends - lengths, ends, np.array([macs[s][0] for _, s, _ in chunk], dtype=np.uint64),
            np.array([macs[1 - s][0] for _, s, _ in chunk], dtype=np.uint64),
            np.array([f / 1000 for _, _, f in chunk]), np.array([f for _, _, f in chunk]))
        assert taken.all()
    assert sorted(batched.cyclic_summaries(), key=str) == sorted(per_frame.cyclic_summaries(), key=str)


def test_findings_follow_the_finding_schema() -> None:
    import jsonschema

    from cranewatch.report.jsonl import schemas

    schema = schemas()["finding"]
    events = _decode_all([(IDENTIFY_RESPONSE, DRIVE, EWS), (SET_IP, ROGUE, DRIVE),
                          (FACTORY_RESET, ROGUE, DRIVE)])
    findings = detect_dcp_changes(events, {EWS}, crane="STS-07")
    assert sorted(f.rule for f in findings) == ["profinet-dcp-reset", "profinet-dcp-set"]
    for finding in findings:
        jsonschema.validate(finding.to_json(), schema)
