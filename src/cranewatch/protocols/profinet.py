"""PROFINET (ethertype 0x8892, and PNIO-CM over UDP 34964): DCP, cyclic RT, alarms, PTCP.

STS cranes with Siemens drives and remote I/O carry PROFINET beside Modbus and S7. What matters
for security is DCP, the unauthenticated layer-2 protocol that names devices and gives them
their IP addresses: any host on the segment can rename a drive, move it to another address or
reset it to factory settings, and the controller loses it. This module decodes the frames,
keeps a summary of the cyclic I/O per device, and says which DCP changes came from a host that
is not an engineering station. Everything is pure: bytes in, events and problems out.

Written from IEC 61158-6-10 (PROFINET IO application layer protocol), checked against tshark's
pn_rt/pn_dcp/pn_io fields on the public captures (tests/test_profinet.py).

API (what the pipeline and the detectors use):

- ``decode_frame(payload, *, src, dst, ts, frame, source="", udp=False) -> (events, problems)``:
  one Ethernet payload of ethertype 0x8892 (the bytes after the ethertype and any VLAN tags,
  Ethernet padding included: the cyclic status sits at the end of the frame); ``src``/``dst``
  are the Ethernet MACs as text. Returns typed events (``DcpRequest``/``DcpResponse``,
  ``RtCyclicFrame``, ``AlarmFrame``, ``PtcpFrame``, ``RtOtherFrame``) and ``DecodeProblem``s
  (what, frame, byte offset in the payload). Never raises on any input.
- ``ProfinetDecoder``: the stateful form for a capture. ``feed(payload, src, dst, ts, frame)``
  returns the acyclic events and folds cyclic frames into ``streams`` (one ``CyclicStream``
  per sender, receiver and frame id: frames, cycle counter, data/transfer status, gaps);
  ``problems`` collects every ``DecodeProblem``; ``cyclic_summaries()`` gives one frozen
  ``RtCyclicSummary`` event per stream. Memory is bounded by the number of streams.
  ``fold_cyclic(buf, starts, ends, src_macs, dst_macs, ts, frames) -> taken``: the batch
  fast path over a whole batch's 0x8892 rows (NumPy columns as ``decode.DecodedBatch`` has
  them; ~10 M frames per CPU second); the rows not taken go to ``feed``. Both paths fill the
  same streams and give the same summaries (tested).
- ``decode_frames(bodies, src_macs, dst_macs, ts, frames, source, decoder)``: a batch
  through one decoder; one ``(event or None, problems)`` per body, in order (like
  ``arp.decode_arp_frames``, plus the MACs: DCP addresses devices by MAC, so a link-layer
  dispatch must hand over ``eth_src``/``eth_dst``).
- ``decode_pnio_cm(data, *, src, dst, sport, dport, ts, frame, source="")`` and
  ``PnioCmDecoder(ctx)``, a ``base.StreamDecoder`` for PNIO-CM flows (connectionless DCE/RPC
  carrying PNIO connect/release/read/write/control; UDP 34964 to the device, but answers and
  the device's own calls use ephemeral ports, so ``PNIO_CM_SPEC``'s probe recognises the PNIO
  interface UUID on any port). Events ``PnioCmRequest``/``PnioCmResponse``: RPC operation,
  interface, PNIO block types, AR UUID, station name, record index, control command; problems
  in ``problems``. ``PNIO_CM_SPEC`` is not registered here: the registry does that.
- ``detect_dcp_changes(events, engineering_stations, *, crane=None, addresses=None)``: pure;
  DCP Set of the IP parameters or NameOfStation, FactoryReset or ResetToFactory from a MAC
  (or its IP, via ``addresses`` MAC→IP) outside ``engineering_stations`` → ``plc-control``
  findings (set: high; reset: critical) with frames, station, old/new values, setter.
- ``device_inventory(events, summaries=()) -> list[ProfinetDevice]``: per device MAC: station
  name, IP/mask/gateway, vendor/device id, vendor text, role, RT frame ids and cycle time.

Zeek: no Zeek/ICSNPP PROFINET logs exist in the shared data, so there is no Zeek mapping yet.
(ICSNPP's profinet_io_cm.log carries only the DCE/RPC header of PNIO-CM, no DCP or RT.)

Frame-id classes follow IEC 61158-6-10 v2.2 (0x0100-0x7FFF RT_CLASS_3, 0x8000-0xBFFF
RT_CLASS_2, 0xC000-0xFBFF RT_CLASS_1, or RT_CLASS_UDP when carried over UDP); later versions
reserve 0x1000-0x7FFF and reuse 0x8000-0xBFFF for RT_CLASS_1, which changes only the label.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cranewatch.decode import mac_text
from cranewatch.errors import DecodeError, Location
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.protocols.arp import format_mac
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext
from cranewatch.protocols.registry import (
    AS_IS,
    IGNORED,
    LinkFrames,
    LinkSpec,
    ProtocolRun,
    ProtocolSpec,
    register_protocol,
)

ETHERTYPE_PROFINET = 0x8892
PNIO_CM_PORT = 34964  # 0x8894: PNIO context manager (DCE/RPC over UDP)
PNIO_RT_UDP_PORT = 34962  # 0x8892: RT_CLASS_UDP

# Frame ids (IEC 61158-6-10, FrameID ranges).
FRAME_ALARM_HIGH = 0xFC01
FRAME_ALARM_LOW = 0xFE01
FRAME_DCP_HELLO = 0xFEFC
FRAME_DCP_GET_SET = 0xFEFD
FRAME_DCP_IDENTIFY_REQUEST = 0xFEFE
FRAME_DCP_IDENTIFY_RESPONSE = 0xFEFF
DCP_FRAME_IDS = frozenset({FRAME_DCP_HELLO, FRAME_DCP_GET_SET, FRAME_DCP_IDENTIFY_REQUEST,
                           FRAME_DCP_IDENTIFY_RESPONSE})

# DCP service ids and types.
DCP_GET = 3  # ServiceIDs 0-2 are reserved
DCP_SET = 4
DCP_IDENTIFY = 5
DCP_HELLO = 6
DCP_SERVICE_NAMES = {DCP_GET: "get", DCP_SET: "set", DCP_IDENTIFY: "identify", DCP_HELLO: "hello"}
DCP_REQUEST = 0
DCP_RESPONSE_SUCCESS = 1
DCP_RESPONSE_UNSUPPORTED = 5
DCP_HEADER = 10  # ServiceID, ServiceType, Xid(4), ResponseDelay/Reserved(2), DCPDataLength(2)

# DCP options and suboptions.
OPT_IP = 1
OPT_DEVICE = 2
OPT_DHCP = 3
OPT_CONTROL = 5
OPT_DEVICE_INITIATIVE = 6
OPT_ALL = 0xFF
SUB_IP_MAC = 1
SUB_IP_PARAMETER = 2
SUB_IP_FULL_SUITE = 3
SUB_DEVICE_VENDOR = 1
SUB_NAME_OF_STATION = 2
SUB_DEVICE_ID = 3
SUB_DEVICE_ROLE = 4
SUB_DEVICE_OPTIONS = 5
SUB_ALIAS_NAME = 6
SUB_DEVICE_INSTANCE = 7
SUB_OEM_DEVICE_ID = 8
SUB_CONTROL_START = 1
SUB_CONTROL_STOP = 2
SUB_CONTROL_SIGNAL = 3
SUB_CONTROL_RESPONSE = 4
SUB_CONTROL_FACTORY_RESET = 5
SUB_CONTROL_RESET_TO_FACTORY = 6

# Start and Stop bracket a Set transaction (tshark: "Start-Trans", "End-Trans").
CONTROL_NAMES = {SUB_CONTROL_START: "start", SUB_CONTROL_STOP: "stop",
                 SUB_CONTROL_SIGNAL: "signal", SUB_CONTROL_FACTORY_RESET: "factory-reset",
                 SUB_CONTROL_RESET_TO_FACTORY: "reset-to-factory"}
# ResetToFactory BlockQualifier bits 1-15 (bit 0 reserved): what the device resets.
RESET_MODES = {1: "application data", 2: "communication parameters", 3: "engineering parameters",
               4: "all stored data", 8: "device", 9: "reset and restore data"}
DCP_BLOCK_ERRORS = {0: "ok", 1: "option not supported",
                    2: "suboption not supported or no dataset", 3: "suboption not set",
                    4: "resource error", 5: "set not possible (local reasons)",
                    6: "set not possible (in operation)"}
DEVICE_ROLES = ((0x01, "io-device"), (0x02, "io-controller"), (0x04, "io-multidevice"),
                (0x08, "io-supervisor"))

# Alarm RTA-PDU types (low nibble of PDUType).
ALARM_PDU_TYPES = {1: "data", 2: "nack", 3: "ack", 4: "err"}

# PTCP TLV types.
PTCP_TLV_END = 0
PTCP_TLV_SUBDOMAIN = 1
PTCP_TLV_DELAY_PARAMETER = 6

CYCLE_COUNTER_TICK = 31.25e-6  # seconds per cycle-counter unit
_MAX_STREAMS = 65536  # a bound on per-stream state whatever the capture holds


@dataclass(frozen=True, slots=True)
class DecodeProblem:
    """What broke the protocol, in which frame, at which byte of the PROFINET payload.

    ``offset`` counts from the first byte after the ethertype (the FrameID) for layer-2
    frames, from the first byte of the UDP payload for PNIO-CM.
    """

    what: str
    frame: int
    offset: int
    source: str = ""

    def as_error(self) -> DecodeError:
        """The project's located error, for the pipeline's warnings."""
        return DecodeError(f"profinet: {self.what} (payload byte {self.offset})",
                           Location(file=self.source or None, frame=self.frame))


def rt_class(frame_id: int, *, udp: bool = False) -> str:
    """The traffic class of a frame id: RT_CLASS_1/2/3/UDP, alarm, dcp, ptcp, fragment, reserved."""
    if 0x0100 <= frame_id <= 0x7FFF:  # IEC 61158-6-10 v2.2 (later versions: 0x0100-0x0FFF)
        return "RT_CLASS_3"
    if 0x8000 <= frame_id <= 0xBFFF:
        return "RT_CLASS_2"
    if 0xC000 <= frame_id <= 0xFBFF:
        return "RT_CLASS_UDP" if udp else "RT_CLASS_1"
    if frame_id in (FRAME_ALARM_HIGH, FRAME_ALARM_LOW):
        return "alarm"
    if frame_id in DCP_FRAME_IDS:
        return "dcp"
    if frame_id in (0x0020, 0x0021, 0x0080, 0x0081) or 0xFF00 <= frame_id <= 0xFF43:
        return "ptcp"
    if 0xFF80 <= frame_id <= 0xFF8F:
        return "fragment"
    return "reserved"


def is_cyclic(frame_id: int) -> bool:
    """Cyclic I/O data (RT_CLASS_1/2/3/UDP): APDU status (cycle counter ...) at the frame's end."""
    return 0x0100 <= frame_id <= 0xFBFF


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DcpBlock:
    """One DCP block as sent: option/suboption, its qualifier or info word, its value bytes.

    ``qualifier``: BlockQualifier of a Set request block (bit 0: 1 = permanent, 0 =
    temporary; for ResetToFactory bits 1-15 say what to reset). ``info``: BlockInfo of an
    Identify/Get response or Hello block. ``error``: BlockError of a Control/Response block
    (``value`` then holds the option/suboption answered). ``offset``: payload byte of the
    block's Option field.
    """

    option: int
    suboption: int
    offset: int
    value: bytes = b""
    qualifier: int | None = None
    info: int | None = None
    error: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DcpMessage(Event):
    """A DCP PDU (frame ids 0xFEFC-0xFEFF); ``src``/``dst`` are Ethernet MACs.

    Fields below ``blocks`` are read from the blocks (None/empty where not carried): for an
    Identify request they are its filter, for a Set request the values to set, for a
    response or Hello what the device reports about itself. ``requested``: option/suboption
    pairs of a Get request. ``controls``: Control suboptions carried ("start", "stop",
    "signal", "factory-reset", "reset-to-factory"). ``reset_qualifier``: the BlockQualifier of
    a ResetToFactory. ``results``: (option, suboption, block error) of each Control/Response
    block of a Set/Get response. ``permanent``: bit 0 of the Set qualifiers (True if any
    block asks for a permanent change).
    """

    kind: ClassVar[str] = "profinet_dcp"
    frame_id: int
    service_id: int
    service_type: int
    xid: int
    response_delay: int = 0
    data_length: int = 0
    blocks: tuple[DcpBlock, ...] = ()
    station_name: str | None = None
    alias_name: str | None = None
    device_vendor: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    ip_info: int | None = None
    vendor_id: int | None = None
    device_id: int | None = None
    device_role: int | None = None
    device_instance: tuple[int, int] | None = None
    requested: tuple[tuple[int, int], ...] = ()
    controls: tuple[str, ...] = ()
    reset_qualifier: int | None = None
    results: tuple[tuple[int, int, int], ...] = ()
    permanent: bool | None = None
    all_selector: bool = False

    @property
    def service(self) -> str:
        return DCP_SERVICE_NAMES.get(self.service_id, f"service-{self.service_id}")

    @property
    def sets_ip(self) -> bool:
        return any(b.option == OPT_IP and b.suboption in (SUB_IP_PARAMETER, SUB_IP_FULL_SUITE)
                   for b in self.blocks)

    @property
    def sets_name(self) -> bool:
        return any(b.option == OPT_DEVICE and b.suboption == SUB_NAME_OF_STATION
                   for b in self.blocks)


@dataclass(frozen=True, slots=True, kw_only=True)
class DcpRequest(DcpMessage):
    """A DCP request (ServiceType 0): Identify (multicast, with a filter), Get, Set, Hello."""

    kind: ClassVar[str] = "profinet_dcp_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class DcpResponse(DcpMessage):
    """A DCP response (ServiceType 1 success, 5 request not supported)."""

    kind: ClassVar[str] = "profinet_dcp_response"


@dataclass(frozen=True, slots=True, kw_only=True)
class RtCyclicFrame(Event):
    """One cyclic I/O frame (RT_CLASS_1/2/3/UDP): its APDU status, read from the frame's end.

    ``data_status`` bits: 0x01 primary, 0x04 data valid, 0x10 provider run, 0x20 station
    ok (no problem); ``transfer_status`` non-zero means "ignore this frame".
    ``data_length``: bytes of C_SDU (I/O data and padding) between FrameID and the status.
    """

    kind: ClassVar[str] = "profinet_rt_cyclic"
    frame_id: int
    rt_class: str
    cycle_counter: int
    data_status: int
    transfer_status: int
    data_length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RtCyclicSummary(Event):
    """Every cyclic frame of one stream (sender ``src``, receiver ``dst``, ``frame_id``).

    ``ts``/``frame``: the first frame; ``last_ts``/``last_frame`` the last. ``increment``:
    the usual (most common) cycle-counter step (units of 31.25 µs; ``cycle_time`` in seconds).
    ``gaps``: other non-zero steps (frames lost, the provider stalled or restarted),
    ``missing``: frames those gaps stand for; ``repeats``: steps of 0; ``gap_frames``: the
    first frame of each kind of irregular step. ``status_changes``:
    how often the data status changed; ``problem_frames``: frames whose status said
    invalid, stop, station problem or ignore.
    """

    kind: ClassVar[str] = "profinet_rt_stream"
    frame_id: int
    rt_class: str
    frames: int
    last_ts: float
    last_frame: int
    first_cycle_counter: int
    last_cycle_counter: int
    increment: int | None
    gaps: int
    missing: int
    repeats: int
    data_status: int
    status_changes: int
    problem_frames: int
    gap_frames: tuple[int, ...] = ()

    @property
    def cycle_time(self) -> float | None:
        return None if not self.increment else self.increment * CYCLE_COUNTER_TICK


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmFrame(Event):
    """An RTA alarm PDU (frame id 0xFC01 high, 0xFE01 low priority).

    ``pdu_type``: "data", "nack", "ack", "err". For DATA carrying an AlarmNotification:
    ``block_type``, ``alarm_type``, ``slot``, ``subslot``. For ERR: ``pnio_status``.
    """

    kind: ClassVar[str] = "profinet_alarm"
    frame_id: int
    priority: str
    dst_endpoint: int
    src_endpoint: int
    pdu_type: str
    pdu_version: int
    add_flags: int
    send_seq: int
    ack_seq: int
    var_part_length: int
    pnio_status: int | None = None
    block_type: int | None = None
    alarm_type: int | None = None
    slot: int | None = None
    subslot: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PtcpFrame(Event):
    """A PTCP (precision time) frame: sync, announce, follow-up or delay measurement."""

    kind: ClassVar[str] = "profinet_ptcp"
    frame_id: int
    message: str
    sequence_id: int
    delay_ns: int
    tlv_types: tuple[int, ...] = ()
    port_mac: str | None = None
    master_mac: str | None = None
    subdomain: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtOtherFrame(Event):
    """A frame id this module does not decode further (fragments, reserved ids)."""

    kind: ClassVar[str] = "profinet_rt_other"
    frame_id: int
    rt_class: str
    length: int


ProfinetEvent = DcpMessage | RtCyclicFrame | AlarmFrame | PtcpFrame | RtOtherFrame
Decoded = tuple[list[Event], list[DecodeProblem]]


# --------------------------------------------------------------------------- layer 2


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _text(raw: bytes) -> str:
    """DCP strings are visible ASCII; a device may pad with NULs, which end the string (as
    devices and tshark read it); other bytes stay readable, escaped."""
    end = raw.find(0)
    return (raw if end < 0 else raw[:end]).decode("ascii", "backslashreplace")


@dataclass(slots=True)
class _Where:
    """Who, when and which frame: shared by every event and problem of one frame."""

    src: str
    dst: str
    ts: float
    frame: int
    source: str
    problems: list[DecodeProblem]

    def problem(self, what: str, offset: int) -> None:
        self.problems.append(DecodeProblem(what, self.frame, offset, self.source))


def decode_frame(payload: bytes, *, src: str, dst: str, ts: float, frame: int,
                 source: str = "", udp: bool = False) -> Decoded:
    """Decode one PROFINET payload (FrameID first); never raises, problems are returned."""
    problems: list[DecodeProblem] = []
    where = _Where(src, dst, ts, frame, source, problems)
    data = bytes(payload)
    if len(data) < 2:
        where.problem(f"{len(data)} bytes, no room for a FrameID", 0)
        return [], problems
    frame_id = data[0] << 8 | data[1]
    event: Event | None
    if frame_id in DCP_FRAME_IDS:
        event = _dcp(data, frame_id, where)
    elif is_cyclic(frame_id):
        event = _cyclic(data, frame_id, udp, where)
    elif frame_id in (FRAME_ALARM_HIGH, FRAME_ALARM_LOW):
        event = _alarm(data, frame_id, where)
    elif rt_class(frame_id) == "ptcp":
        event = _ptcp(data, frame_id, where)
    else:
        event = RtOtherFrame(ts=ts, frame=frame, src=src, dst=dst, source=source,
                             frame_id=frame_id, rt_class=rt_class(frame_id, udp=udp),
                             length=len(data) - 2)
    return ([event] if event is not None else []), problems


def _cyclic(data: bytes, frame_id: int, udp: bool, where: _Where) -> RtCyclicFrame | None:
    if len(data) < 6:
        where.problem(f"cyclic frame of {len(data)} bytes, 6 needed for FrameID and APDU status", 2)
        return None
    counter, status, transfer = apdu_status(data)
    return RtCyclicFrame(ts=where.ts, frame=where.frame, src=where.src, dst=where.dst,
                         source=where.source, frame_id=frame_id,
                         rt_class=rt_class(frame_id, udp=udp), cycle_counter=counter,
                         data_status=status, transfer_status=transfer,
                         data_length=len(data) - 6)


def apdu_status(data: bytes) -> tuple[int, int, int]:
    """CycleCounter, DataStatus, TransferStatus: the last 4 bytes of a cyclic frame (after the
    C_SDU and its padding; ``data`` must hold at least 6 bytes)."""
    end = len(data)
    return data[end - 4] << 8 | data[end - 3], data[end - 2], data[end - 1]


def _alarm(data: bytes, frame_id: int, where: _Where) -> AlarmFrame | None:
    if len(data) < 14:
        where.problem(f"alarm frame of {len(data)} bytes, 14 needed for the RTA header", 2)
        return None
    dst_ep, src_ep, pdu, flags, send, ack, var_len = struct.unpack_from(">HHBBHHH", data, 2)
    pdu_type = ALARM_PDU_TYPES.get(pdu & 0x0F, f"type-{pdu & 0x0F}")
    var = data[14:14 + var_len]
    if len(var) < var_len:
        where.problem(f"alarm VarPartLen {var_len} but {len(var)} bytes follow", 12)
    status = block_type = alarm_type = slot = subslot = None
    if pdu_type == "err" and len(var) >= 4:
        status = int.from_bytes(var[:4], "big")
    elif pdu_type == "data" and len(var) >= 6:
        block_type = var[0] << 8 | var[1]
        if len(var) >= 16:  # BlockHeader(6) AlarmType(2) API(4) Slot(2) Subslot(2)
            alarm_type, _api, slot, subslot = struct.unpack_from(">HIHH", var, 6)
    return AlarmFrame(ts=where.ts, frame=where.frame, src=where.src, dst=where.dst,
                      source=where.source, frame_id=frame_id,
                      priority="high" if frame_id == FRAME_ALARM_HIGH else "low",
                      dst_endpoint=dst_ep, src_endpoint=src_ep, pdu_type=pdu_type,
                      pdu_version=pdu >> 4, add_flags=flags, send_seq=send, ack_seq=ack,
                      var_part_length=var_len, pnio_status=status, block_type=block_type,
                      alarm_type=alarm_type, slot=slot, subslot=subslot)


def _ptcp_message(frame_id: int) -> str:
    if frame_id in (0x0020, 0x0021, 0x0080, 0x0081):
        return "sync"
    if frame_id <= 0xFF01:
        return "announce"
    if 0xFF20 <= frame_id <= 0xFF21:
        return "follow-up"
    return {0xFF40: "delay-request", 0xFF41: "delay-response-fu", 0xFF42: "delay-follow-up",
            0xFF43: "delay-response"}.get(frame_id, "reserved")


def _ptcp(data: bytes, frame_id: int, where: _Where) -> PtcpFrame | None:
    # Header after the FrameID: Reserved(4) Reserved(4) Delay10ns(4) SequenceID(2)
    # Delay1ns_Byte(1) Reserved(1) Delay1ns(4), then TLVs: Type(7 bits) Length(9 bits) value.
    if len(data) < 22:
        where.problem(f"PTCP frame of {len(data)} bytes, 22 needed for its header", 2)
        return None
    delay10, sequence = struct.unpack_from(">IH", data, 10)
    delay1_byte, delay1 = data[16], int.from_bytes(data[18:22], "big")
    types: list[int] = []
    port_mac = master_mac = subdomain = None
    pos = 22
    while pos + 2 <= len(data):
        word = data[pos] << 8 | data[pos + 1]
        kind, length = word >> 9, word & 0x1FF
        value = data[pos + 2:pos + 2 + length]
        if len(value) < length:
            where.problem(f"PTCP TLV type {kind} of length {length} runs past the frame", pos)
            break
        types.append(kind)
        if kind == PTCP_TLV_END:
            break
        if kind == PTCP_TLV_DELAY_PARAMETER and length >= 6:
            port_mac = format_mac(value[:6])
        elif kind == PTCP_TLV_SUBDOMAIN and length >= 22:
            master_mac = format_mac(value[:6])
            subdomain = str(uuid.UUID(bytes=value[6:22]))
        pos += 2 + length
    return PtcpFrame(ts=where.ts, frame=where.frame, src=where.src, dst=where.dst,
                     source=where.source, frame_id=frame_id, message=_ptcp_message(frame_id),
                     sequence_id=sequence, delay_ns=delay10 * 10 + delay1_byte + delay1,
                     tlv_types=tuple(types), port_mac=port_mac, master_mac=master_mac,
                     subdomain=subdomain)


# --------------------------------------------------------------------------- DCP


def _dcp(data: bytes, frame_id: int, where: _Where) -> DcpMessage | None:
    if len(data) < 2 + DCP_HEADER:
        where.problem(f"DCP frame of {len(data)} bytes, {2 + DCP_HEADER} needed for its header", 2)
        return None
    service_id, service_type, xid, delay, length = struct.unpack_from(">BBIHH", data, 2)
    body_end = 2 + DCP_HEADER + length
    if body_end > len(data):
        where.problem(f"DCPDataLength {length} but {len(data) - 2 - DCP_HEADER} bytes follow", 10)
        body_end = len(data)
    is_response = service_type & 0x01 == 1
    fields = _DcpFields()
    if service_id == DCP_GET and not is_response:
        fields.requested = _get_list(data, 2 + DCP_HEADER, body_end, where)
    elif service_id not in DCP_SERVICE_NAMES:
        where.problem(f"unknown DCP ServiceID {service_id}", 2)
    else:
        # Which word follows the block length: a Set request has a BlockQualifier, an
        # Identify request's filter blocks have none, responses and Hello a BlockInfo.
        head = ("qualifier" if service_id == DCP_SET and not is_response else
                "none" if service_id == DCP_IDENTIFY and not is_response else "info")
        for block in _blocks(data, 2 + DCP_HEADER, body_end, head, where):
            fields.take(block, where)
    cls = DcpResponse if is_response else DcpRequest
    return cls(ts=where.ts, frame=where.frame, src=where.src, dst=where.dst, source=where.source,
               frame_id=frame_id, service_id=service_id, service_type=service_type, xid=xid,
               response_delay=delay, data_length=length, blocks=tuple(fields.blocks),
               station_name=fields.station_name, alias_name=fields.alias_name,
               device_vendor=fields.device_vendor, ip=fields.ip, netmask=fields.netmask,
               gateway=fields.gateway, ip_info=fields.ip_info, vendor_id=fields.vendor_id,
               device_id=fields.device_id, device_role=fields.device_role,
               device_instance=fields.device_instance, requested=fields.requested,
               controls=tuple(fields.controls), reset_qualifier=fields.reset_qualifier,
               results=tuple(fields.results), permanent=fields.permanent,
               all_selector=fields.all_selector)


def _get_list(data: bytes, pos: int, end: int, where: _Where) -> tuple[tuple[int, int], ...]:
    if (end - pos) % 2:
        where.problem("Get request option list of odd length", pos)
    return tuple((data[i], data[i + 1]) for i in range(pos, end - 1, 2))


def _blocks(data: bytes, pos: int, end: int, head: str, where: _Where) -> Iterable[DcpBlock]:
    """Walk the DCP blocks between ``pos`` and ``end``; a bad length ends the walk."""
    while pos + 4 <= end:
        option, suboption, length = data[pos], data[pos + 1], data[pos + 2] << 8 | data[pos + 3]
        start = pos + 4
        if start + length > end:
            where.problem(f"DCP block {option}/{suboption} of length {length} runs past the "
                          f"DCP data ({end - start} bytes left)", pos)
            return
        value = data[start:start + length]
        if option == OPT_CONTROL and suboption == SUB_CONTROL_RESPONSE:
            if length < 3:
                where.problem(f"DCP Control/Response block of length {length}, 3 needed", pos)
            else:
                yield DcpBlock(option, suboption, pos, value=value[:2], error=value[2])
        elif head == "none" or length < 2 or (option == OPT_ALL and head != "qualifier"):
            if head != "none" and length < 2 and option != OPT_ALL:
                where.problem(f"DCP block {option}/{suboption} of length {length} has no room "
                              f"for its {head} word", pos)
            yield DcpBlock(option, suboption, pos, value=value)
        else:
            word = value[0] << 8 | value[1]
            if head == "qualifier":
                yield DcpBlock(option, suboption, pos, value=value[2:], qualifier=word)
            else:
                yield DcpBlock(option, suboption, pos, value=value[2:], info=word)
        pos = start + length + (length & 1)  # blocks are padded to an even length
    if pos < end and any(data[pos:end]):
        where.problem(f"{end - pos} bytes after the last DCP block", pos)


@dataclass(slots=True)
class _DcpFields:
    """The typed fields read out of one PDU's blocks."""

    station_name: str | None = None
    alias_name: str | None = None
    device_vendor: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    ip_info: int | None = None
    vendor_id: int | None = None
    device_id: int | None = None
    device_role: int | None = None
    device_instance: tuple[int, int] | None = None
    requested: tuple[tuple[int, int], ...] = ()
    controls: list[str] = field(default_factory=list)
    reset_qualifier: int | None = None
    results: list[tuple[int, int, int]] = field(default_factory=list)
    permanent: bool | None = None
    all_selector: bool = False
    blocks: list[DcpBlock] = field(default_factory=list)

    def take(self, block: DcpBlock, where: _Where) -> None:
        self.blocks.append(block)
        option, sub, value = block.option, block.suboption, block.value
        if block.qualifier is not None and option != OPT_CONTROL:
            self.permanent = bool(self.permanent) or bool(block.qualifier & 1)
        if option == OPT_IP and sub in (SUB_IP_PARAMETER, SUB_IP_FULL_SUITE):
            if len(value) < 12:
                where.problem(f"IP parameter block with {len(value)} bytes, 12 needed",
                              block.offset)
                return
            self.ip, self.netmask, self.gateway = _ip(value[:4]), _ip(value[4:8]), _ip(value[8:12])
            self.ip_info = block.info
        elif option == OPT_DEVICE:
            self._device(block, where)
        elif option == OPT_CONTROL:
            if block.error is not None:
                self.results.append((value[0], value[1], block.error))
            elif sub in CONTROL_NAMES:
                self.controls.append(CONTROL_NAMES[sub])
                if sub == SUB_CONTROL_RESET_TO_FACTORY:
                    self.reset_qualifier = block.qualifier
        elif option == OPT_ALL:
            self.all_selector = True

    def _device(self, block: DcpBlock, where: _Where) -> None:
        sub, value = block.suboption, block.value
        if sub == SUB_NAME_OF_STATION:
            self.station_name = _text(value)
        elif sub == SUB_ALIAS_NAME:
            self.alias_name = _text(value)
        elif sub == SUB_DEVICE_VENDOR:
            self.device_vendor = _text(value)
        elif sub == SUB_DEVICE_ID:
            if len(value) < 4:
                where.problem(f"DeviceID block with {len(value)} bytes, 4 needed", block.offset)
            else:
                self.vendor_id, self.device_id = struct.unpack_from(">HH", value)
        elif sub == SUB_DEVICE_ROLE:
            if not value:
                where.problem("DeviceRole block without its role byte", block.offset)
            else:
                self.device_role = value[0]
        elif sub == SUB_DEVICE_INSTANCE and len(value) >= 2:
            self.device_instance = (value[0], value[1])


def role_names(role: int | None) -> tuple[str, ...]:
    """DeviceRoleDetails bits as names ("io-device", "io-controller", ...)."""
    if role is None:
        return ()
    return tuple(name for bit, name in DEVICE_ROLES if role & bit)


def reset_mode(qualifier: int | None) -> str | None:
    """What a ResetToFactory BlockQualifier asks to reset (bits 1-15)."""
    if qualifier is None:
        return None
    mode = qualifier >> 1
    return RESET_MODES.get(mode, f"mode {mode}")


# --------------------------------------------------------------------------- cyclic streams


_MAX_STEP_KINDS = 64  # distinct cycle-counter steps remembered per stream


@dataclass(slots=True)
class CyclicStream:
    """Running state of one cyclic stream; ``summary()`` freezes it into an event.

    The cycle-counter steps are kept as a histogram (step -> [count, first frame], at most
    ``_MAX_STEP_KINDS`` kinds; rarer ones are only counted in ``other_steps``): the usual step
    is the most common one, and every other non-zero step is a gap. The per-frame and the
    batch path both fill it, so both give the same summary.
    """

    src: str
    dst: str
    frame_id: int
    rt_class: str
    source: str
    first_ts: float
    first_frame: int
    first_counter: int
    last_ts: float = 0.0
    last_frame: int = 0
    last_counter: int = 0
    data_status: int = 0
    frames: int = 0
    steps: dict[int, list[int]] = field(default_factory=dict)
    other_steps: int = 0
    status_changes: int = 0
    problem_frames: int = 0

    def add(self, counter: int, status: int, transfer: int, ts: float, frame: int) -> None:
        """One frame's APDU status."""
        if self.frames:
            self._count_step((counter - self.last_counter) & 0xFFFF, 1, frame)
            if status != self.data_status:
                self.status_changes += 1
        self.frames += 1
        self.last_ts, self.last_frame = ts, frame
        self.last_counter, self.data_status = counter, status
        if transfer or status & 0x34 != 0x34:
            self.problem_frames += 1  # not (valid, run, station ok) or "ignore this frame"

    def add_many(self, counters: np.ndarray, statuses: np.ndarray, transfers: np.ndarray,
                 ts: np.ndarray, frames: np.ndarray) -> None:
        """The APDU status of several frames of this stream, in frame order (the batch path)."""
        counters = counters.astype(np.int64)
        statuses = statuses.astype(np.int64)
        if self.frames:
            counters_before = np.concatenate(([self.last_counter], counters))
            statuses_before = np.concatenate(([self.data_status], statuses))
            step_frames = frames
        else:
            counters_before, statuses_before, step_frames = counters, statuses, frames[1:]
        steps = np.diff(counters_before) & 0xFFFF
        kinds, first, counts = np.unique(steps, return_index=True, return_counts=True)
        for step, index, count in zip(kinds.tolist(), first.tolist(), counts.tolist(),
                                      strict=True):
            self._count_step(step, count, int(step_frames[index]))
        self.status_changes += int(np.count_nonzero(np.diff(statuses_before)))
        self.problem_frames += int(np.count_nonzero((transfers != 0) | (statuses & 0x34 != 0x34)))
        self.frames += len(counters)
        self.last_ts, self.last_frame = float(ts[-1]), int(frames[-1])
        self.last_counter, self.data_status = int(counters[-1]), int(statuses[-1])

    def _count_step(self, step: int, count: int, frame: int) -> None:
        seen = self.steps.get(step)
        if seen is not None:
            seen[0] += count
        elif len(self.steps) < _MAX_STEP_KINDS:
            self.steps[step] = [count, frame]
        else:
            self.other_steps += count

    def summary(self) -> RtCyclicSummary:
        moving = {step: seen for step, seen in self.steps.items() if step}
        usual = max(moving, key=lambda step: (moving[step][0], -step)) if moving else None
        gaps = missing = 0
        gap_frames = []
        for step, (count, frame) in sorted(moving.items(), key=lambda item: item[1][1]):
            if step == usual or usual is None:
                continue
            gaps += count
            missing += count * max(round(step / usual) - 1, 0)
            gap_frames.append(frame)
        return RtCyclicSummary(
            ts=self.first_ts, frame=self.first_frame, src=self.src, dst=self.dst,
            source=self.source, frame_id=self.frame_id, rt_class=self.rt_class,
            frames=self.frames, last_ts=self.last_ts, last_frame=self.last_frame,
            first_cycle_counter=self.first_counter, last_cycle_counter=self.last_counter,
            increment=usual, gaps=gaps + self.other_steps, missing=missing,
            repeats=self.steps.get(0, [0])[0], data_status=self.data_status,
            status_changes=self.status_changes, problem_frames=self.problem_frames,
            gap_frames=tuple(gap_frames[:32]))


class ProfinetDecoder:
    """Decodes a capture's PROFINET frames: acyclic events out, cyclic frames folded."""

    def __init__(self, source: str = "", max_streams: int = _MAX_STREAMS) -> None:
        self.source = source
        self.max_streams = max_streams
        self.streams: dict[tuple[str, str, int], CyclicStream] = {}
        self.problems: list[DecodeProblem] = []
        self.dropped_cyclic = 0  # cyclic frames of streams beyond ``max_streams``
        self._by_number: dict[tuple[int, int, int], CyclicStream] = {}

    def feed(self, payload: bytes, src: str, dst: str, ts: float, frame: int,
             udp: bool = False) -> list[Event]:
        # Cyclic frames are nearly all of PROFINET (one per device and direction every few
        # ms): fold their status straight into the stream, no event object per frame.
        if len(payload) >= 6:
            frame_id = payload[0] << 8 | payload[1]
            if is_cyclic(frame_id):
                counter, status, transfer = apdu_status(payload)
                stream = self._stream(src, dst, frame_id, ts, frame, counter, udp)
                if stream is None:
                    self.dropped_cyclic += 1
                else:
                    stream.add(counter, status, transfer, ts, frame)
                return []
        events, problems = decode_frame(payload, src=src, dst=dst, ts=ts, frame=frame,
                                        source=self.source, udp=udp)
        self.problems.extend(problems)
        return events

    def fold_cyclic(self, buf: bytes, starts: np.ndarray, ends: np.ndarray,
                    src_macs: np.ndarray, dst_macs: np.ndarray, ts: np.ndarray,
                    frames: np.ndarray) -> np.ndarray:
        """The batch path: fold every cyclic frame among these rows at once.

        ``starts``/``ends``: where each PROFINET payload starts (its FrameID) and ends in
        ``buf``; ``src_macs``/``dst_macs``: MACs in the low 48 bits (``decode.DecodedBatch``
        columns). Returns the boolean mask of the rows taken; the others go to ``feed``.
        Layer 2 only (RT_CLASS_UDP frames come through ``feed(..., udp=True)``).
        """
        raw = np.frombuffer(buf, dtype=np.uint8)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        long_enough = ends - starts >= 6
        first = np.where(long_enough, starts, 0)
        frame_ids = (raw[first].astype(np.int64) << 8) | raw[first + 1]
        taken = long_enough & (frame_ids >= 0x0100) & (frame_ids <= 0xFBFF)
        rows = np.flatnonzero(taken)
        if len(rows) == 0:
            return taken
        tail = ends[rows]
        counters = (raw[tail - 4].astype(np.int64) << 8) | raw[tail - 3]
        statuses, transfers = raw[tail - 2], raw[tail - 1]
        # One int64 key per stream: (sender's index, receiver's index, frame id), so one
        # integer sort groups the batch (a sort of structured records is ten times slower).
        senders, sender_index = np.unique(src_macs[rows], return_inverse=True)
        receivers, receiver_index = np.unique(dst_macs[rows], return_inverse=True)
        pairs = sender_index.astype(np.int64) * len(receivers) + receiver_index
        kinds, inverse = np.unique(pairs << 16 | frame_ids[rows], return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # each stream's rows, in frame order
        bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(kinds)))))
        for number, kind in enumerate(kinds.tolist()):
            pair, frame_id = divmod(kind, 0x10000)
            src, dst = int(senders[pair // len(receivers)]), int(receivers[pair % len(receivers)])
            group = order[bounds[number]:bounds[number + 1]]
            head = int(group[0])
            stream = self._by_number.get((src, dst, frame_id))
            if stream is None:
                stream = self._stream(mac_text(src), mac_text(dst), frame_id,
                                      float(ts[rows[head]]), int(frames[rows[head]]),
                                      int(counters[head]), False)
                if stream is None:
                    self.dropped_cyclic += len(group)
                    continue
                self._by_number[(src, dst, frame_id)] = stream
            stream.add_many(counters[group], statuses[group], transfers[group],
                            ts[rows[group]], frames[rows[group]])
        return taken

    def _stream(self, src: str, dst: str, frame_id: int, ts: float, frame: int, counter: int,
                udp: bool) -> CyclicStream | None:
        key = (src, dst, frame_id)
        stream = self.streams.get(key)
        if stream is None:
            if len(self.streams) >= self.max_streams:
                return None  # the caller counts the frames dropped
            stream = self.streams[key] = CyclicStream(
                src, dst, frame_id, rt_class(frame_id, udp=udp), self.source, ts, frame, counter)
        return stream

    def cyclic_summaries(self) -> list[RtCyclicSummary]:
        return [stream.summary() for stream in self.streams.values()]


FrameResult = tuple[Event | None, tuple[DecodeProblem, ...]]


def decode_frames(bodies: list[bytes], src_macs: list[str], dst_macs: list[str],
                  ts: list[float], frames: list[int], source: str = "",
                  decoder: ProfinetDecoder | None = None) -> list[FrameResult]:
    """A batch of PROFINET payloads through one decoder (a new one unless given).

    One result per body, in order: its event (None for a cyclic frame, folded into
    ``decoder.streams``, or a frame too broken to give one) and its problems, so a caller
    can place each event at its packet's row and warn with the frame.
    """
    decoder = decoder or ProfinetDecoder(source)
    out: list[FrameResult] = []
    for body, src, dst, stamp, frame in zip(bodies, src_macs, dst_macs, ts, frames, strict=True):
        before = len(decoder.problems)
        events = decoder.feed(body, src, dst, stamp, frame)
        out.append((events[0] if events else None, tuple(decoder.problems[before:])))
    return out


# --------------------------------------------------------------------------- PNIO-CM (DCE/RPC)

RPC_HEADER = 80  # DCE/RPC connectionless header
RPC_REQUEST = 0
RPC_RESPONSE = 2
RPC_FAULT = 3
RPC_PACKET_TYPES = {0: "request", 1: "ping", 2: "response", 3: "fault", 4: "working",
                    5: "nocall", 6: "reject", 7: "ack", 8: "cl-cancel", 9: "fack",
                    10: "cancel-ack"}
INDEX_WRITE_MULTIPLE = 0xE040
PNIO_OPERATIONS = {0: "connect", 1: "release", 2: "read", 3: "write", 4: "control",
                   5: "read-implicit"}
PNIO_INTERFACES = {
    uuid.UUID("dea00001-6c97-11d1-8271-00a02442df7d"): "device",
    uuid.UUID("dea00002-6c97-11d1-8271-00a02442df7d"): "controller",
    uuid.UUID("dea00003-6c97-11d1-8271-00a02442df7d"): "supervisor",
    uuid.UUID("dea00004-6c97-11d1-8271-00a02442df7d"): "parameter-server",
    uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa"): "epm",
}
PNIO_BLOCK_NAMES = {
    0x0001: "AlarmNotificationHigh", 0x0002: "AlarmNotificationLow",
    0x0008: "IODWriteReqHeader", 0x0009: "IODReadReqHeader",
    0x0101: "ARBlockReq", 0x0102: "IOCRBlockReq", 0x0103: "AlarmCRBlockReq",
    0x0104: "ExpectedSubmoduleBlockReq", 0x0105: "PrmServerBlockReq", 0x0106: "MCRBlockReq",
    0x0107: "ARRPCBlockReq", 0x0108: "ARVendorBlockReq", 0x0109: "IRInfoBlock",
    0x010A: "SRInfoBlock", 0x010B: "ARFSUBlock", 0x0110: "IODControlReq(PrmEnd)",
    0x0111: "IODControlReq(Plug-PrmEnd)", 0x0112: "IOXControlReq(ApplicationReady)",
    0x0113: "IOXControlReq(Plug-ApplicationReady)", 0x0114: "IODReleaseReq",
    0x0116: "IOXControlReq(ReadyForCompanion)", 0x0117: "IOXControlReq(ReadyForRTC3)",
    0x0118: "PrmBegin", 0x0119: "SubmoduleListBlock",
    0x8001: "AlarmAckHigh", 0x8002: "AlarmAckLow", 0x8008: "IODWriteResHeader",
    0x8009: "IODReadResHeader", 0x8101: "ARBlockRes", 0x8102: "IOCRBlockRes",
    0x8103: "AlarmCRBlockRes", 0x8104: "ModuleDiffBlock", 0x8105: "PrmServerBlockRes",
    0x8106: "ARServerBlock", 0x8107: "ARRPCBlockRes", 0x8108: "ARVendorBlockRes",
    0x8110: "IODControlRes(PrmEnd)", 0x8111: "IODControlRes(Plug-PrmEnd)",
    0x8112: "IOXControlRes(ApplicationReady)", 0x8113: "IOXControlRes(Plug-ApplicationReady)",
    0x8114: "IODReleaseRes", 0x8116: "IOXControlRes(ReadyForCompanion)",
    0x8117: "IOXControlRes(ReadyForRTC3)", 0x8118: "PrmBeginRes",
}


@dataclass(frozen=True, slots=True)
class PnioBlock:
    """One PNIO block header (type, length, version) at ``offset`` in the UDP payload."""

    block_type: int
    length: int
    version: tuple[int, int]
    offset: int

    @property
    def name(self) -> str:
        return PNIO_BLOCK_NAMES.get(self.block_type, f"0x{self.block_type:04x}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PnioCmMessage(Event):
    """A PNIO-CM DCE/RPC datagram (UDP 34964): the RPC header and the PNIO blocks it carries.

    ``operation``: "connect", "release", "read", "write", "control", "read-implicit" (from
    the opnum of the PNIO interfaces; "opnum-N" for others). ``interface``: "device",
    "controller", "supervisor", "parameter-server", "epm" or the interface UUID.
    Blocks are read from unfragmented calls only (DCE/RPC fragments are not reassembled:
    a fragmented call has its header fields and no blocks). From the top-level blocks: ``ar_uuid``,
    ``station_name`` (CMInitiatorStationName of an ARBlockReq: the controller; of an
    ARServerBlock in a connect response: the device), ``index``/``slot``/``subslot``
    of a read/write header, ``control_command`` of an IODControl block; ``records``: the
    (slot, subslot, index) of each write inside a multiple write (index 0xE040).
    """

    kind: ClassVar[str] = "profinet_cm"
    packet_type: int
    opnum: int
    operation: str
    interface: str
    activity: str
    sequence: int
    fragment: int
    last_fragment: bool
    pnio_status: int | None = None
    blocks: tuple[PnioBlock, ...] = ()
    ar_uuid: str | None = None
    station_name: str | None = None
    index: int | None = None
    slot: int | None = None
    subslot: int | None = None
    control_command: int | None = None
    records: tuple[tuple[int, int, int], ...] = ()

    @property
    def block_types(self) -> tuple[int, ...]:
        return tuple(block.block_type for block in self.blocks)


@dataclass(frozen=True, slots=True, kw_only=True)
class PnioCmRequest(PnioCmMessage):
    kind: ClassVar[str] = "profinet_cm_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class PnioCmResponse(PnioCmMessage):
    kind: ClassVar[str] = "profinet_cm_response"


def decode_pnio_cm(data: bytes, *, src: str, dst: str, sport: int, dport: int, ts: float,
                   frame: int, source: str = "") -> Decoded:
    """Decode one UDP payload of PNIO-CM (connectionless DCE/RPC); never raises."""
    problems: list[DecodeProblem] = []
    where = _Where(src, dst, ts, frame, source, problems)
    data = bytes(data)
    if len(data) < RPC_HEADER:
        where.problem(f"DCE/RPC datagram of {len(data)} bytes, {RPC_HEADER} needed", 0)
        return [], problems
    if data[0] != 4:
        where.problem(f"DCE/RPC version {data[0]}, connectionless (4) expected", 0)
        return [], problems
    ptype, flags1 = data[1] & 0x1F, data[2]
    order = "<" if data[4] >> 4 == 1 else ">"  # drep: integer representation
    interface = uuid.UUID(bytes_le=data[24:40]) if order == "<" else uuid.UUID(bytes=data[24:40])
    activity = uuid.UUID(bytes_le=data[40:56]) if order == "<" else uuid.UUID(bytes=data[40:56])
    sequence, opnum = struct.unpack_from(order + "IH", data, 64)
    body_len, fragment = struct.unpack_from(order + "HH", data, 74)
    iface = PNIO_INTERFACES.get(interface, str(interface))
    operation = (PNIO_OPERATIONS.get(opnum, f"opnum-{opnum}") if iface != "epm"
                 else f"epm-opnum-{opnum}")
    body = data[RPC_HEADER:RPC_HEADER + body_len]
    if len(body) < body_len:
        where.problem(f"DCE/RPC fragment length {body_len} but {len(body)} bytes follow", 74)
    fields = _PnioFields()
    fragmented = bool(flags1 & 0x04)  # blocks of a fragmented call are not reassembled (yet)
    if iface != "epm" and not fragmented and ptype in (RPC_REQUEST, RPC_RESPONSE):
        _pnio_body(body, ptype == RPC_RESPONSE, order, where, fields)
    cls = PnioCmResponse if ptype in (RPC_RESPONSE, RPC_FAULT) else PnioCmRequest
    event = cls(ts=ts, frame=frame, src=src, dst=dst, sport=sport, dport=dport, source=source,
                packet_type=ptype, opnum=opnum, operation=operation, interface=iface,
                activity=str(activity), sequence=sequence, fragment=fragment,
                last_fragment=not fragmented or bool(flags1 & 0x02),
                pnio_status=fields.pnio_status, blocks=tuple(fields.blocks),
                ar_uuid=fields.ar_uuid, station_name=fields.station_name, index=fields.index,
                slot=fields.slot, subslot=fields.subslot, control_command=fields.control_command,
                records=tuple(fields.records))
    return [event], problems


@dataclass(slots=True)
class _PnioFields:
    pnio_status: int | None = None
    blocks: list[PnioBlock] = field(default_factory=list)
    ar_uuid: str | None = None
    station_name: str | None = None
    index: int | None = None
    slot: int | None = None
    subslot: int | None = None
    control_command: int | None = None
    records: list[tuple[int, int, int]] = field(default_factory=list)


def _pnio_body(body: bytes, response: bool, order: str, where: _Where,
               fields: _PnioFields) -> None:
    """PNIO args (NDR counts in the RPC's byte order) and the big-endian PNIO blocks after them."""
    # Request: ArgsMaximum(4) ArgsLength(4) MaximumCount(4) Offset(4) ActualCount(4);
    # response: PNIOStatus(4) then the same four counts after it.
    if len(body) < 20:
        where.problem(f"PNIO args of {len(body)} bytes, 20 needed", RPC_HEADER)
        return
    if response:
        fields.pnio_status = int.from_bytes(body[:4], "big")
    actual = int.from_bytes(body[16:20], "little" if order == "<" else "big")
    blocks = fields.blocks
    pos, end = 20, min(20 + actual, len(body))
    if 20 + actual > len(body):
        where.problem(f"PNIO ActualCount {actual} but {len(body) - 20} bytes follow",
                      RPC_HEADER + 16)
    while pos + 6 <= end:
        kind, length, high, low = struct.unpack_from(">HHBB", body, pos)
        block = PnioBlock(kind, length, (high, low), RPC_HEADER + pos)
        blocks.append(block)
        content = body[pos + 6:pos + 4 + length]
        if length < 2 or pos + 4 + length > end:
            where.problem(f"PNIO block {block.name} of length {length} runs past the args",
                          RPC_HEADER + pos)
            break
        _pnio_block_fields(kind, content, fields)
        pos += 4 + length
        if kind in (0x0008, 0x8009) and len(content) >= 34:  # record data follows the header
            record = int.from_bytes(content[30:34], "big")
            if kind == 0x0008 and fields.index == INDEX_WRITE_MULTIPLE:
                _write_multiple(body, pos, min(pos + record, end), fields, where)
            pos += record


def _pnio_block_fields(kind: int, content: bytes, fields: _PnioFields) -> None:
    if kind in (0x0101, 0x8101) and len(content) >= 18:  # ARType(2) ARUUID(16)
        fields.ar_uuid = str(uuid.UUID(bytes=content[2:18]))
        # SessionKey(2) CMInitiatorMacAdd(6) CMInitiatorObjectUUID(16) ARProperties(4)
        # ActivityTimeoutFactor(2) UDPRTPort(2) StationNameLength(2) CMInitiatorStationName
        if kind == 0x0101 and len(content) >= 52:
            name_len = content[50] << 8 | content[51]
            fields.station_name = _text(content[52:52 + name_len])
    elif kind == 0x8106 and len(content) >= 2:  # ARServerBlock: the responder's station name
        name_len = content[0] << 8 | content[1]
        fields.station_name = _text(content[2:2 + name_len])
    elif kind in (0x0008, 0x0009, 0x8008, 0x8009) and len(content) >= 30:
        # SeqNumber(2) ARUUID(16) API(4) Slot(2) Subslot(2) Padding(2) Index(2)
        # RecordDataLength(4); the first header is the call's (a multiple write's inner
        # headers go to ``records``)
        slot, subslot, _pad, index = struct.unpack_from(">HHHH", content, 22)
        if fields.index is None:
            fields.ar_uuid = str(uuid.UUID(bytes=content[2:18]))
            fields.slot, fields.subslot, fields.index = slot, subslot, index
        else:
            fields.records.append((slot, subslot, index))
    elif 0x0110 <= kind & 0x7FFF <= 0x0118 and len(content) >= 26:
        # Reserved(2) ARUUID(16) SessionKey(2) Reserved(2) ControlCommand(2)
        fields.ar_uuid = str(uuid.UUID(bytes=content[2:18]))
        fields.control_command = content[22] << 8 | content[23]


def _write_multiple(body: bytes, pos: int, end: int, fields: _PnioFields, where: _Where) -> None:
    """The IODWriteReqHeaders inside a multiple write (index 0xE040), each followed by its
    record data padded to a multiple of 4 bytes."""
    start = pos
    while pos + 40 <= end:
        kind, length = struct.unpack_from(">HH", body, pos)
        if kind != 0x0008 or length < 36:
            where.problem(f"multiple write holds block 0x{kind:04x} of length {length} where an "
                          "IODWriteReqHeader belongs", RPC_HEADER + pos)
            return
        fields.blocks.append(PnioBlock(kind, length, (body[pos + 4], body[pos + 5]),
                                       RPC_HEADER + pos))
        content = body[pos + 6:pos + 4 + length]
        _pnio_block_fields(kind, content, fields)
        pos += 4 + length + int.from_bytes(content[30:34], "big")
        pos += -(pos - start) % 4


class PnioCmDecoder:
    """``base.StreamDecoder`` for one PNIO-CM UDP flow; problems collect in ``problems``."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self.problems: list[DecodeProblem] = []

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        ctx = self.ctx
        src, sport, dst, dport = ((ctx.client, ctx.client_port, ctx.server, ctx.server_port)
                                  if from_client else
                                  (ctx.server, ctx.server_port, ctx.client, ctx.client_port))
        events, problems = decode_pnio_cm(data, src=src, dst=dst, sport=sport, dport=dport,
                                          ts=ts, frame=frame, source=ctx.source)
        self.problems.extend(problems)
        return events

    def gap(self, from_client: bool) -> None:
        """Datagrams stand alone: nothing to resynchronise."""


def _probe_pnio_cm(client: bytes, server: bytes) -> bool:
    first = client or server
    if len(first) < RPC_HEADER or first[0] != 4:
        return False
    order = "little" if first[4] >> 4 == 1 else "big"
    raw = first[24:40]
    interface = uuid.UUID(bytes_le=raw) if order == "little" else uuid.UUID(bytes=raw)
    return PNIO_INTERFACES.get(interface, "epm") != "epm"


PNIO_CM_SPEC = DecoderSpec(name="pnio-cm", transport="udp", ports=frozenset({PNIO_CM_PORT}),
                           factory=PnioCmDecoder, probe=_probe_pnio_cm, aliases=("profinet",))


# --------------------------------------------------------------------------- detection

# ATT&CK for ICS: unauthorized command message, modify parameter; a reset also restarts the
# device and destroys its configuration.
TECHNIQUES_SET: tuple[str, ...] = ("T0855", "T0836")
TECHNIQUES_RESET: tuple[str, ...] = ("T0855", "T0816", "T0809")


@dataclass(slots=True)
class _DeviceState:
    """What the capture has told so far about one device (by MAC)."""

    station_name: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None


@dataclass(slots=True)
class _Change:
    """One (setter, device, operation) incident being gathered."""

    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    count: int = 0
    source: str = ""


def _operation(event: DcpRequest) -> str | None:
    if event.service_id != DCP_SET:
        return None
    if "reset-to-factory" in event.controls or "factory-reset" in event.controls:
        return "reset"
    if event.sets_ip or event.sets_name:
        return "set"
    return None


def detect_dcp_changes(events: Iterable[Event], engineering_stations: Collection[str], *,
                       crane: str | None = None,
                       addresses: Mapping[str, str] | None = None) -> list[Finding]:
    """DCP Set of IP/NameOfStation and factory resets from hosts that are not an EWS.

    ``engineering_stations``: MACs (any case) or IP addresses allowed to configure devices.
    ``addresses``: MAC→IP of hosts (e.g. from ARP), so a setter can be matched and named by
    IP. Old values come from the device's last Identify/Get/Hello answer before the Set.
    One finding per (setter, device, operation) with every frame; the device's responses
    (block errors) say whether it took the change.
    """
    allowed = {name.lower() for name in engineering_stations}
    ips = {mac.lower(): ip for mac, ip in (addresses or {}).items()}
    state: dict[str, _DeviceState] = {}
    changes: dict[tuple[str, str, str], _Change] = {}
    pending: dict[tuple[str, str, int], tuple[str, str, str]] = {}
    ordered = sorted((e for e in events if isinstance(e, DcpMessage)), key=lambda e: e.frame)
    for event in ordered:
        if isinstance(event, DcpResponse):
            _learn(state, event)
            key = pending.get((event.src.lower(), event.dst.lower(), event.xid))
            if key is not None and event.service_id == DCP_SET:
                _record_result(changes[key], event)
            continue
        if not isinstance(event, DcpRequest):
            continue
        if event.service_id == DCP_HELLO:
            _learn(state, event)
        operation = _operation(event)
        if operation is None:
            continue
        setter = event.src.lower()
        if setter in allowed or ips.get(setter) in allowed:
            continue
        key = (setter, event.dst.lower(), operation)
        change = changes.setdefault(key, _Change())
        _record_request(change, event, state.get(event.dst.lower()))
        pending[(event.dst.lower(), setter, event.xid)] = key
    return [_finding(key, change, crane, ips, state) for key, change in changes.items()]


def _learn(state: dict[str, _DeviceState], event: DcpMessage) -> None:
    device = state.setdefault(event.src.lower(), _DeviceState())
    if event.station_name is not None:
        device.station_name = event.station_name
    if event.ip is not None:
        device.ip, device.netmask, device.gateway = event.ip, event.netmask, event.gateway


def _record_request(change: _Change, event: DcpRequest, known: _DeviceState | None) -> None:
    change.count += 1
    change.source = change.source or event.source
    if len(change.frames) < 64:
        change.frames.append(event.frame)
        change.times.append(event.ts)
    values = change.values
    values["xid"] = f"0x{event.xid:08x}"
    if event.sets_name:
        values["new_station_name"] = event.station_name
        if known and known.station_name is not None:
            values.setdefault("old_station_name", known.station_name)
    if event.sets_ip:
        values["new_ip"] = f"{event.ip}/{event.netmask} gw {event.gateway}"
        if known and known.ip is not None:
            values.setdefault("old_ip", f"{known.ip}/{known.netmask} gw {known.gateway}")
    if event.reset_qualifier is not None:
        values["reset"] = reset_mode(event.reset_qualifier)
    elif "factory-reset" in event.controls:
        values["reset"] = "factory settings"
    if event.permanent is not None:
        values["permanent"] = event.permanent
    if known and known.station_name is not None:
        values.setdefault("station_name", known.station_name)


def _record_result(change: _Change, event: DcpResponse) -> None:
    errors = [DCP_BLOCK_ERRORS.get(error, str(error)) for _o, _s, error in event.results if error]
    change.values["device_answer"] = "; ".join(errors) if errors else "ok"
    if len(change.frames) < 64:
        change.frames.append(event.frame)
        change.times.append(event.ts)


def _finding(key: tuple[str, str, str], change: _Change, crane: str | None,
             ips: Mapping[str, str], state: Mapping[str, _DeviceState]) -> Finding:
    setter, device, operation = key
    values = dict(change.values)
    values["setter_mac"] = setter
    if setter in ips:
        values["setter_ip"] = ips[setter]
    station = values.get("station_name")  # its name before the change, where known
    target = f"{station} ({device})" if station else device
    if operation == "reset":
        severity, techniques = Severity.CRITICAL, TECHNIQUES_RESET
        title = f"PROFINET DCP reset to factory settings of {target} from {setter}"
        remedy = ("The device lost its name and address and dropped out of the I/O system. "
                  "Find the host at this MAC; only the engineering station may reset devices. "
                  "Restore the device's name and parameters from the approved project.")
    else:
        severity, techniques = Severity.HIGH, TECHNIQUES_SET
        what = " and ".join(w for w, on in (("NameOfStation", "new_station_name" in values),
                                            ("IP parameters", "new_ip" in values)) if on)
        title = f"PROFINET DCP Set of {what} on {target} from {setter}"
        remedy = ("A renamed or re-addressed device is lost to its controller (or taken over). "
                  "Find the host at this MAC; only the engineering station may set names and "
                  "addresses. Restore them from the approved project.")
    device_ip = state.get(device, _DeviceState()).ip
    first = min(change.times) if change.times else None
    last = max(change.times) if change.times else None
    rule = f"profinet-dcp-{operation}"
    evidence = Evidence(source=change.source or None, frames=tuple(change.frames),
                        times=tuple(change.times),
                        values={k: v for k, v in values.items() if v is not None},
                        note=f"{change.count} DCP Set request(s)")
    return Finding(id=finding_id(rule, crane, setter, device, operation), rule=rule,
                   category="plc-control", severity=severity, title=title, first_seen=first,
                   last_seen=last, count=change.count, crane=crane,
                   src=ips.get(setter, setter), dst=device_ip or device, technique=techniques,
                   evidence=(evidence,), remedy=remedy)


# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True, slots=True)
class ProfinetDevice:
    """What the capture says about one PROFINET device (by MAC), for the asset inventory.

    Identity fields come from the device's own DCP answers (Identify/Get responses, Hello);
    ``rt_frame_ids``/``cycle_time`` from the cyclic streams it sends. ``frames``: the frames
    the identity was read from (at most 16).
    """

    mac: str
    station_name: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    vendor_id: int | None = None
    device_id: int | None = None
    device_vendor: str | None = None
    roles: tuple[str, ...] = ()
    rt_frame_ids: tuple[int, ...] = ()
    cycle_time: float | None = None
    rt_frames: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    frames: tuple[int, ...] = ()


@dataclass(slots=True)
class _DeviceRecord:
    """A ``ProfinetDevice`` being gathered."""

    identity: dict[str, str | int | None] = field(default_factory=dict)
    roles: tuple[str, ...] = ()
    rt_frame_ids: set[int] = field(default_factory=set)
    cycle_time: float | None = None
    rt_frames: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    frames: list[int] = field(default_factory=list)

    def seen(self, ts: float, frame: int | None = None) -> None:
        self.first_seen = ts if self.first_seen is None else min(self.first_seen, ts)
        self.last_seen = ts if self.last_seen is None else max(self.last_seen, ts)
        if frame is not None and len(self.frames) < 16:
            self.frames.append(frame)


_IDENTITY = ("station_name", "ip", "netmask", "gateway", "vendor_id", "device_id",
             "device_vendor")


def device_inventory(events: Iterable[Event],
                     summaries: Iterable[RtCyclicSummary] = ()) -> list[ProfinetDevice]:
    """One record per device MAC that answered DCP or sent cyclic data, ordered by MAC.

    Identity comes from what a device says about itself (its DCP responses and Hello), the
    latest value winning; a Set request's values are what someone asked, not what the device
    took, and are left out.
    """
    found: dict[str, _DeviceRecord] = {}
    for event in events:
        if not isinstance(event, DcpResponse) and not (
                isinstance(event, DcpRequest) and event.service_id == DCP_HELLO):
            continue
        record = found.setdefault(event.src.lower(), _DeviceRecord())
        for name in _IDENTITY:
            value = getattr(event, name)
            if value is not None:
                record.identity[name] = value
        if event.device_role is not None:
            record.roles = role_names(event.device_role)
        record.seen(event.ts, event.frame)
    for summary in summaries:
        record = found.setdefault(summary.src.lower(), _DeviceRecord())
        record.rt_frame_ids.add(summary.frame_id)
        record.rt_frames += summary.frames
        cycle = summary.cycle_time
        if cycle is not None and (record.cycle_time is None or cycle < record.cycle_time):
            record.cycle_time = cycle
        record.seen(summary.ts)
        record.seen(summary.last_ts)
    return [_device(mac, record) for mac, record in sorted(found.items())]


def _device(mac: str, record: _DeviceRecord) -> ProfinetDevice:
    identity = record.identity

    def text(name: str) -> str | None:
        value = identity.get(name)
        return value if isinstance(value, str) else None

    def number(name: str) -> int | None:
        value = identity.get(name)
        return value if isinstance(value, int) else None

    return ProfinetDevice(
        mac=mac, station_name=text("station_name"), ip=text("ip"), netmask=text("netmask"),
        gateway=text("gateway"), vendor_id=number("vendor_id"), device_id=number("device_id"),
        device_vendor=text("device_vendor"), roles=record.roles,
        rt_frame_ids=tuple(sorted(record.rt_frame_ids)), cycle_time=record.cycle_time,
        rt_frames=record.rt_frames, first_seen=record.first_seen, last_seen=record.last_seen,
        frames=tuple(record.frames))


# --------------------------------------------------------------------------- declaration
# What the registry needs (``protocols.registry``): the ethertype's decoder with one decoder
# per capture kept for the run (the cyclic streams fold there), PNIO-CM's flow decoder, the
# adapters of the events, and the detector of DCP changes.


class ProfinetRun(ProtocolRun):
    """One analysis' PROFINET state: a ``ProfinetDecoder`` per capture (its cyclic streams)."""

    def __init__(self) -> None:
        self.decoders: dict[str, ProfinetDecoder] = {}

    def summary(self) -> dict[str, Any]:
        """The result document's ``profinet_streams``: every capture's cyclic streams, in the
        order of their first frame (a stream of rotated files is one per file: frame numbers
        and cycle-counter gaps are each file's)."""
        streams = [s for decoder in self.decoders.values() for s in decoder.cyclic_summaries()]
        return _in_order(streams)

    def merge_summaries(self, summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
        # the streams are each capture's own: the groups' together are the whole run's
        return _in_order([s for summary in summaries for s in summary["profinet_streams"]])


def _in_order(streams: list[RtCyclicSummary]) -> dict[str, Any]:
    return {"profinet_streams": tuple(sorted(
        streams, key=lambda s: (s.ts, s.source, s.frame, s.src, s.dst, s.frame_id)))}


def decode_link(frames: LinkFrames, run: ProtocolRun | None) -> list[tuple[int, Event | DecodeError]]:
    """A batch's 0x8892 frames: acyclic events and located problems, by position in the batch."""
    state = run if isinstance(run, ProfinetRun) else ProfinetRun()
    decoder = state.decoders.get(frames.source)
    if decoder is None:
        decoder = state.decoders[frames.source] = ProfinetDecoder(frames.source)
    out: list[tuple[int, Event | DecodeError]] = []
    for at, (body, src, dst, stamp, frame) in enumerate(zip(
            frames.bodies, frames.src, frames.dst, frames.ts, frames.frames, strict=True)):
        out.extend((at, event) for event in decoder.feed(bytes(body), src, dst, stamp, frame))
        if decoder.problems:
            out.extend((at, DecodeError(f"{p.what} (payload byte {p.offset})",
                                        Location(file=p.source or None, frame=p.frame)))
                       for p in decoder.problems)
            decoder.problems.clear()  # handed on: the decoder keeps none for the run
    return out


class DcpChanges:
    """plc-control: DCP Set of a device's name or IP parameters, or a factory reset, from a
    host that is not an engineering station (the profile's hosts of role ``ews``, by MAC or
    IP; without a profile none is known, so every such change is reported).

    Keeps the DCP messages ``detect_dcp_changes`` reads (Set requests, and what devices say
    about themselves, for the old values), at most ``MAX_KEPT``.
    """

    name: ClassVar[str] = "plc-control-dcp"
    accepts: ClassVar[tuple[type, ...]] = (DcpRequest, DcpResponse)
    MAX_KEPT = 100_000

    def __init__(self) -> None:
        self.kept: list[DcpMessage] = []

    def observe(self, fact: object, ctx: object) -> None:
        if isinstance(fact, DcpMessage) and len(self.kept) < self.MAX_KEPT and (
                fact.service_id in (DCP_SET, DCP_HELLO) or isinstance(fact, DcpResponse)):
            self.kept.append(fact)

    def finish(self, ctx: object) -> list[Finding]:
        profile = getattr(ctx, "profile", None)
        stations = [a for h in getattr(profile, "hosts", ()) if h.role == "ews"
                    for a in (h.ip, h.mac) if a]
        bindings: Mapping[str, Iterable[str]] = getattr(ctx, "bindings", {}) or {}
        addresses = {mac: ip for ip, macs in bindings.items() for mac in macs}
        return detect_dcp_changes(self.kept, stations, crane=getattr(ctx, "crane", None),
                                  addresses=addresses)


PROTOCOL = register_protocol(ProtocolSpec(
    name="profinet", module=__name__, decoders=(PNIO_CM_SPEC,), policy={}, run=ProfinetRun,
    links=(LinkSpec(ETHERTYPE_PROFINET, decode_link),), detectors=(DcpChanges,),
    adapters={DcpRequest: AS_IS, DcpResponse: AS_IS, DcpMessage: IGNORED,
              RtCyclicFrame: IGNORED, RtCyclicSummary: IGNORED, AlarmFrame: IGNORED,
              PtcpFrame: IGNORED, RtOtherFrame: IGNORED, PnioCmMessage: IGNORED,
              PnioCmRequest: IGNORED, PnioCmResponse: IGNORED},
))
