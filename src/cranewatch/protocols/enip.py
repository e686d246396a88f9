"""EtherNet/IP encapsulation (TCP/UDP 44818) and the CIP messages it carries; CIP I/O (UDP 2222).

What matters on a crane: who lists identities (vendor, product, revision: reconnaissance),
which CIP services reach which class/instance/attribute, and above all the services that
change the controller: Start/Stop/Reset (run/stop/reset, e.g. on the Logix controller object
0x8E), and program transfer through the File object (class 0x37: initiate upload/download,
transfer). Multiple-service packets and Unconnected Send are unwrapped so each embedded
request is its own event, in the order tshark lists ``cip.sc``.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from cranewatch.detect.facts import PlcCommand, as_text, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import Endpoints, PduBuffer, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, FoldRun, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

COMMAND_NAMES: dict[int, str] = {
    0x0001: "list_targets", 0x0004: "list_services", 0x0063: "list_identity",
    0x0064: "list_interfaces", 0x0065: "register_session", 0x0066: "unregister_session",
    0x006F: "send_rr_data", 0x0070: "send_unit_data", 0x0072: "indicate_status",
}
SERVICE_NAMES: dict[int, str] = {
    0x01: "get_attributes_all", 0x02: "set_attributes_all", 0x03: "get_attribute_list",
    0x04: "set_attribute_list", 0x05: "reset", 0x06: "start", 0x07: "stop", 0x08: "create",
    0x09: "delete", 0x0A: "multiple_service_packet", 0x0D: "apply_attributes",
    0x0E: "get_attribute_single", 0x10: "set_attribute_single", 0x11: "find_next_object_instance",
    0x15: "restore", 0x16: "save", 0x18: "get_member", 0x19: "set_member",
    0x4B: "execute_pccc", 0x4C: "read_tag", 0x4D: "write_tag", 0x4E: "forward_close",
    0x4F: "read_modify_write_tag", 0x52: "unconnected_send", 0x53: "write_tag_fragmented",
    0x54: "forward_open", 0x5B: "large_forward_open",
}
FILE_OBJECT_CLASS = 0x37
CONNECTION_MANAGER_CLASS = 0x06
# File object services (CIP Vol. 1, 5-42): the program transfer path.
FILE_SERVICES: dict[int, str] = {
    0x4B: "program_upload_initiate", 0x4C: "program_download_initiate",
    0x4D: "program_read_partial", 0x4E: "program_write_partial", 0x4F: "program_upload",
    0x50: "program_download", 0x51: "program_clear",
}
CONTROL_SERVICES: dict[int, str] = {0x05: "reset", 0x06: "run", 0x07: "stop"}
DATA_LIMIT = 256
CipPath = tuple[tuple[int, ...], tuple[int, ...]]  # classes and instances of one request path
MAX_NESTING = 4  # embedded requests inside embedded requests: real traffic needs two


@dataclass(frozen=True, slots=True, kw_only=True)
class EnipCommandRequest(Event):
    """One encapsulation PDU from the client (``enip.command``) with its session and status."""

    kind: ClassVar[str] = "enip_command_request"
    command: int
    session: int
    status: int = 0
    length: int = 0

    @property
    def command_name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"0x{self.command:04x}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnipCommandResponse(EnipCommandRequest):
    """One encapsulation PDU from the target (the device)."""

    kind: ClassVar[str] = "enip_command_response"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnipIdentityResponse(Event):
    """A List Identity answer item: what the device says it is."""

    kind: ClassVar[str] = "enip_identity_response"
    vendor_id: int
    device_type: int
    product_code: int
    revision: str
    serial: int
    product_name: str
    state: int | None = None
    device_ip: str = ""
    status: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CipRequest(Event):
    """A CIP request: service (``cip.sc``) on a path (``cip.class``/instance/attribute).

    ``classes``/``instances``/``attributes`` hold every logical segment of the path (tshark
    lists each); ``cip_class`` etc. are the first. ``tag``: an ANSI symbolic segment (Logix tag
    name). ``operation``: ``run``/``stop``/``reset`` for controller control services and
    ``program_*`` for File-object transfer, else the service name. ``depth``: 0 for a request
    carried directly, 1+ when embedded in a multiple-service packet or unconnected send.
    """

    kind: ClassVar[str] = "cip_service_request"
    service: int
    classes: tuple[int, ...] = ()
    instances: tuple[int, ...] = ()
    attributes: tuple[int, ...] = ()
    tag: str | None = None
    operation: str = ""
    connection_id: int | None = None
    depth: int = 0
    data: bytes = b""

    @property
    def cip_class(self) -> int | None:
        return self.classes[0] if self.classes else None

    @property
    def instance(self) -> int | None:
        return self.instances[0] if self.instances else None

    @property
    def attribute(self) -> int | None:
        return self.attributes[0] if self.attributes else None


@dataclass(frozen=True, slots=True, kw_only=True)
class CipResponse(Event):
    """A CIP reply: service (without the reply bit), general status (0 success), extended status.

    Paired with its request (connected: by CIP sequence count; unconnected: in order), it
    carries the request's classes so a reply can be read without its request at hand.
    """

    kind: ClassVar[str] = "cip_service_response"
    service: int
    general_status: int
    extended_status: tuple[int, ...] = ()
    classes: tuple[int, ...] = ()  # from the paired request (for Unconnected Send: both paths)
    instances: tuple[int, ...] = ()
    request_frame: int | None = None
    connection_id: int | None = None
    depth: int = 0
    data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnipIoRequest(Event):
    """A class-1 (implicit, UDP 2222) I/O packet: cyclic drive/IO data on a connection."""

    kind: ClassVar[str] = "enip_io_request"
    connection_id: int
    sequence: int
    size: int
    data: bytes = field(default=b"")


def enip_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 24:
        return None
    command = buf[pos] | buf[pos + 1] << 8
    if command not in COMMAND_NAMES and command not in identify.ENIP_COMMANDS:
        raise DecodeError(f"unknown EtherNet/IP command 0x{command:04x}")
    return 24 + (buf[pos + 2] | buf[pos + 3] << 8)


@lru_cache(maxsize=4096)  # controllers are polled over the same few paths again and again
def parse_epath(path: bytes) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str | None]:
    """Logical class/instance/attribute segments and an ANSI symbolic tag of a CIP path."""
    classes: list[int] = []
    instances: list[int] = []
    attributes: list[int] = []
    tags: list[str] = []
    pos = 0
    while pos < len(path):
        segment = path[pos]
        if segment == 0x91:  # ANSI extended symbol: length, name, pad to even
            size = path[pos + 1] if pos + 1 < len(path) else 0
            tags.append(path[pos + 2:pos + 2 + size].decode("latin-1"))
            pos += 2 + size + (size % 2)
            continue
        kind = segment & 0xE0
        if kind == 0x20:  # logical segment
            logical = (segment >> 2) & 0x07
            fmt = segment & 0x03
            if fmt == 0:
                value = path[pos + 1] if pos + 1 < len(path) else 0
                pos += 2
            elif fmt == 1:
                value = int.from_bytes(path[pos + 2:pos + 4], "little")
                pos += 4
            else:
                value = int.from_bytes(path[pos + 2:pos + 6], "little")
                pos += 6
            if logical == 0:
                classes.append(value)
            elif logical in (1, 3):  # instance, or connection point used as instance
                instances.append(value)
            elif logical == 4:
                attributes.append(value)
            continue
        if kind == 0x00:  # port segment: port, link address (extended forms are rare here)
            if segment & 0x10:
                size = path[pos + 1] if pos + 1 < len(path) else 0
                pos += 2 + size + (size % 2)
            else:
                pos += 2
            continue
        if segment == 0x80 or kind == 0x80:  # data segment: simple data, length in words
            size = path[pos + 1] if pos + 1 < len(path) else 0
            pos += 2 + 2 * size
            continue
        break  # a segment type we do not walk: keep what we have
    return tuple(classes), tuple(instances), tuple(attributes), ("." .join(tags) if tags else None)


def operation_of(service: int, classes: tuple[int, ...]) -> str:
    """What a request does to the controller, in the words a crane engineer uses."""
    if classes and classes[0] == FILE_OBJECT_CLASS and service in FILE_SERVICES:
        return FILE_SERVICES[service]
    if service in CONTROL_SERVICES:
        return CONTROL_SERVICES[service]
    return SERVICE_NAMES.get(service, f"service_0x{service:02x}")


class EnipDecoder(ReportsProblems):
    """Decodes one EtherNet/IP session (TCP) or explicit datagrams (UDP 44818)."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (PduBuffer(source=ctx.source), PduBuffer(source=ctx.source))
        # requests awaiting a reply: classes per CIP message in pre-order, and the frame
        self._connected: dict[int, tuple[list[CipPath], int]] = {}
        self._unconnected: deque[tuple[list[CipPath], int]] = deque(maxlen=64)
        self._reply: tuple[list[CipPath], int] | None = None  # being matched now
        self._reply_index = 0
        self._request: list[CipPath] = []  # being built now
        # connection id -> classes of the forward open's connection path (class-3 messaging)
        self._connections: dict[int, CipPath] = {}
        self._open_path: CipPath = ((), ())

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].gap()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if self.ctx.transport == "udp":
            self._buffers[from_client].clear()  # a datagram never continues another
        for pdu in self._buffers[from_client].pdus(data, enip_length, frame):
            try:  # a broken encapsulation costs itself, not the ones after it
                self._encapsulation(from_client, pdu, ts, frame, events)
            except DecodeError as exc:
                self.report(exc)
        return events

    def _encapsulation(self, from_client: bool, pdu: bytes, ts: float, frame: int,
                       events: list[Event]) -> None:
        command, length, session, status = struct.unpack_from("<HHII", pdu, 0)
        where = endpoints(self.ctx, from_client)
        cls = EnipCommandRequest if from_client else EnipCommandResponse
        events.append(cls(ts=ts, frame=frame, command=command, session=session, status=status,
                          length=length, **where))
        body = pdu[24:]
        if command in (0x006F, 0x0070):
            if len(body) < 8:
                raise decode_error("SendRRData/SendUnitData body cut short", self.ctx, frame)
            self._items(from_client, body[6:], ts, frame, events, where)
        elif command == 0x0063 and body:
            self._items(from_client, body, ts, frame, events, where)

    def _items(self, from_client: bool, cpf: bytes, ts: float, frame: int, events: list[Event],
               where: Endpoints) -> None:
        if len(cpf) < 2:
            raise decode_error("common packet format without item count", self.ctx, frame)
        count = cpf[0] | cpf[1] << 8
        pos = 2
        connection_id: int | None = None
        for _ in range(min(count, 16)):
            if pos + 4 > len(cpf):
                raise decode_error("CPF item header cut short", self.ctx, frame)
            type_id, size = struct.unpack_from("<HH", cpf, pos)
            item = cpf[pos + 4:pos + 4 + size]
            if len(item) < size:
                raise decode_error("CPF item longer than the PDU", self.ctx, frame)
            pos += 4 + size
            if type_id == 0x00A1 and size >= 4:
                connection_id = struct.unpack_from("<I", item)[0]
            elif type_id == 0x00B2:
                self._message(from_client, item, ts, frame, events, where, connection_id, None)
            elif type_id == 0x00B1 and size >= 2:
                sequence = item[0] | item[1] << 8
                self._message(from_client, item[2:], ts, frame, events, where, connection_id,
                              sequence)
            elif type_id == 0x000C:
                events.append(parse_identity(item, ts, frame, where))

    def _message(self, from_client: bool, msg: bytes, ts: float, frame: int,
                 events: list[Event], where: Endpoints, connection_id: int | None,
                 sequence: int | None) -> None:
        """One top-level CIP message; remembers a request's paths to label its reply."""
        if msg and msg[0] & 0x80:
            if sequence is not None:
                self._reply = self._connected.pop(sequence, None)
            else:
                self._reply = self._unconnected.popleft() if self._unconnected else None
            if self._reply is not None:
                paths, request_frame = self._reply
                if msg[0] & 0x7F == 0x52:  # routing itself failed: only the outer path
                    paths = paths[:1]
                elif msg[0] & 0x7F != 0x0A:  # an unwrapped reply answers every path
                    paths = [(tuple(c for p in paths for c in p[0]), tuple(i for p in paths for i in p[1]))]
                self._reply = (paths, request_frame)
            self._reply_index = 0
            self._cip(from_client, msg, ts, frame, events, where, connection_id, 0)
            self._reply = None
            return
        self._request = []
        self._cip(from_client, msg, ts, frame, events, where, connection_id, 0)
        if sequence is not None:
            self._connected[sequence] = (self._request, frame)
            if len(self._connected) > 256:
                self._connected.pop(next(iter(self._connected)))
        else:
            self._unconnected.append((self._request, frame))

    def _cip(self, from_client: bool, msg: bytes, ts: float, frame: int, events: list[Event],
             where: Endpoints, connection_id: int | None, depth: int) -> None:
        if len(msg) < 2:
            raise decode_error("CIP message cut short", self.ctx, frame)
        service = msg[0]
        if service & 0x80:
            if len(msg) < 4:
                raise decode_error("CIP reply header cut short", self.ctx, frame)
            extra = msg[3]
            extended = tuple(int.from_bytes(msg[4 + 2 * i:6 + 2 * i], "little") for i in range(extra))
            payload = msg[4 + 2 * extra:]
            classes: tuple[int, ...] = ()
            instances: tuple[int, ...] = ()
            request_frame = None
            if self._reply is not None:
                paths, request_frame = self._reply
                index = self._reply_index  # replies come in the pre-order of their requests
                self._reply_index += 1
                classes, instances = paths[index] if index < len(paths) else ((), ())
            if (service & 0x7F) in (0x54, 0x5B) and msg[2] == 0 and len(payload) >= 8:
                o_to_t, t_to_o = struct.unpack_from("<II", payload)
                self._connections[o_to_t] = self._connections[t_to_o] = self._open_path
            elif depth == 0 and connection_id is not None and self._reply is None:
                classes, instances = self._connections.get(connection_id, ((), ()))
            events.append(CipResponse(ts=ts, frame=frame, service=service & 0x7F,
                                      general_status=msg[2], extended_status=extended,
                                      classes=classes, instances=instances,
                                      request_frame=request_frame,
                                      connection_id=connection_id, depth=depth,
                                      data=payload[:DATA_LIMIT], **where))
            if service & 0x7F == 0x0A and msg[2] in (0, 0x1E) and depth < MAX_NESTING:
                self._multiple(from_client, payload, ts, frame, events, where, connection_id, depth)
            return
        path_words = msg[1]
        path_end = 2 + 2 * path_words
        if path_end > len(msg):
            raise decode_error("CIP request path longer than the message", self.ctx, frame)
        classes, instances, attributes, tag = parse_epath(msg[2:path_end])
        payload = msg[path_end:]
        if service in (0x54, 0x5B, 0x4E) and classes[:1] == (CONNECTION_MANAGER_CLASS,):
            # the connection path of a forward open/close names the object the connection reaches
            at = {0x54: 35, 0x5B: 39, 0x4E: 10}[service]
            if len(payload) > at:
                skip = 2 if service == 0x4E else 1  # forward close has a reserved byte
                target = parse_epath(payload[at + skip:at + skip + 2 * payload[at]])
                classes, instances = classes + target[0], instances + target[1]
                if service != 0x4E:
                    self._open_path = (target[0], target[1])
        elif depth == 0 and connection_id is not None:
            connection_classes, connection_instances = self._connections.get(connection_id, ((), ()))
            classes, instances = connection_classes + classes, connection_instances + instances
        self._request.append((classes, instances))
        events.append(CipRequest(ts=ts, frame=frame, service=service, classes=classes,
                                 instances=instances, attributes=attributes, tag=tag,
                                 operation=operation_of(service, classes),
                                 connection_id=connection_id, depth=depth,
                                 data=payload[:DATA_LIMIT], **where))
        if depth >= MAX_NESTING:
            return
        if service == 0x0A:
            self._multiple(from_client, payload, ts, frame, events, where, connection_id, depth)
        elif service == 0x52 and classes[:1] == (CONNECTION_MANAGER_CLASS,) and len(payload) >= 4:
            size = payload[2] | payload[3] << 8
            embedded = payload[4:4 + size]
            if len(embedded) == size and size:
                self._cip(from_client, embedded, ts, frame, events, where, connection_id, depth + 1)

    def _multiple(self, from_client: bool, payload: bytes, ts: float, frame: int,
                  events: list[Event], where: Endpoints, connection_id: int | None,
                  depth: int) -> None:
        if len(payload) < 2:
            return
        count = payload[0] | payload[1] << 8
        offsets = [int.from_bytes(payload[2 + 2 * i:4 + 2 * i], "little") for i in range(count)]
        if 2 + 2 * count > len(payload):
            raise decode_error("multiple-service packet offsets beyond the message", self.ctx, frame)
        bounds = [*offsets, len(payload)]
        for index in range(count):
            start, end = bounds[index], bounds[index + 1]
            if not 0 < start < end <= len(payload):
                raise decode_error("multiple-service packet offset out of order", self.ctx, frame)
            self._cip(from_client, payload[start:end], ts, frame, events, where, connection_id,
                      depth + 1)


def parse_identity(item: bytes, ts: float, frame: int, where: Endpoints) -> EnipIdentityResponse:
    """A List Identity CPF item (type 0x0C): version, socket address, then the identity."""
    if len(item) < 33:
        raise DecodeError("List Identity item cut short")
    device_ip = ".".join(str(b) for b in item[6:10])
    vendor, device_type, product_code = struct.unpack_from("<HHH", item, 18)
    major, minor = item[24], item[25]
    status, serial = struct.unpack_from("<HI", item, 26)
    name_len = item[32]
    name = item[33:33 + name_len].decode("latin-1")
    state = item[33 + name_len] if len(item) > 33 + name_len else None
    return EnipIdentityResponse(ts=ts, frame=frame, vendor_id=vendor, device_type=device_type,
                                product_code=product_code, revision=f"{major}.{minor}",
                                serial=serial, product_name=name, state=state,
                                device_ip=device_ip, status=status,
                                **where)


class EnipIoDecoder(ReportsProblems):
    """Class-1 implicit I/O over UDP 2222: sequenced address item + connected data item."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    def gap(self, from_client: bool) -> None:
        return None

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if len(data) < 2:
            raise decode_error("CIP I/O packet cut short", self.ctx, frame)
        count = data[0] | data[1] << 8
        pos = 2
        connection_id = sequence = 0
        payload = b""
        for _ in range(min(count, 8)):
            if pos + 4 > len(data):
                raise decode_error("CIP I/O item cut short", self.ctx, frame)
            type_id, size = struct.unpack_from("<HH", data, pos)
            item = data[pos + 4:pos + 4 + size]
            pos += 4 + size
            if type_id == 0x8002 and size >= 8:
                connection_id, sequence = struct.unpack_from("<II", item)
            elif type_id == 0x00B1:
                payload = item
        return [EnipIoRequest(ts=ts, frame=frame, connection_id=connection_id, sequence=sequence,
                              size=len(payload), data=payload[:DATA_LIMIT],
                              **endpoints(self.ctx, from_client))]


SPEC_TCP = DecoderSpec(name="enip", transport="tcp", ports=frozenset({44818}),
                       factory=EnipDecoder, probe=identify.is_enip, priority=40,
                       aliases=("cip", "ethernet-ip"))
SPEC_UDP = DecoderSpec(name="enip", transport="udp", ports=frozenset({44818}),
                       factory=EnipDecoder, probe=identify.is_enip, priority=40)
SPEC_IO = DecoderSpec(name="enip_io", transport="udp", ports=frozenset({2222}),
                      factory=EnipIoDecoder, probe=None, priority=90)

# CIP request operations (``operation_of``) in plc-control's names.
PLC_OPERATIONS = {"stop": "cip-stop", "reset": "cip-reset", "run": "cip-start",
                  "program_download_initiate": "program-transfer", "program_download": "program-transfer",
                  "program_write_partial": "program-transfer", "program_clear": "program-transfer",
                  "program_upload_initiate": "program-upload", "program_upload": "program-upload"}


# Set_Attribute_List (0x04) / Set_Attribute_Single (0x10) on an object that sets the clock or
# the network port: (class -> operation). 0x8B: Rockwell's wall clock time object; 0x43: CIP
# Time Sync; 0xF5: TCP/IP interface (address, gateway); 0xF6: Ethernet link (speed, duplex).
SET_SERVICES = frozenset({0x04, 0x10})
SET_OPERATIONS = {0x8B: "cip-set-clock", 0x43: "cip-set-clock", 0xF5: "cip-set-network",
                  0xF6: "cip-set-network"}
# Rockwell's controller object (0x8E): services 0x4B/0x4C take and release the controller's
# lock (RSLogix before a download or a mode change). tshark names neither ("Unknown service");
# of the 34 public CIP captures only the lock/unlock, download, reboot and mode-change
# attempts carry them.
ROCKWELL_CONTROLLER_CLASS = 0x8E
ROCKWELL_LOCK_SERVICES = frozenset({0x4B, 0x4C})


def command_operation(service: int, classes: tuple[int, ...], operation: str) -> str | None:
    """plc-control's name of what a CIP request does to a controller, None for none of its
    concern (``operation``: ``operation_of(service, classes)``)."""
    command = PLC_OPERATIONS.get(operation)
    first = classes[0] if classes else None
    if command is None and service in SET_SERVICES and first in SET_OPERATIONS:
        command = SET_OPERATIONS[first]
    elif command is None and first == ROCKWELL_CONTROLLER_CLASS and service in ROCKWELL_LOCK_SERVICES:
        command = "cip-controller-lock"
    return command


def plc_command(event: CipRequest) -> list[PlcCommand]:
    """A CIP request that stops, starts, resets or reprograms a controller, sets its clock or
    its network port, or takes its lock."""
    operation = command_operation(event.service, event.classes, event.operation)
    if not operation:
        return []
    return [PlcCommand(**where(event), protocol="enip", operation=operation,
                       target=as_text(event.tag or ""),
                       values={"service": event.service, "classes": list(event.classes)})]


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

def zeek_enip(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    command = zeek.integer(record.get("enip_command_code", record.get("command"))) or 0
    cls = EnipCommandRequest if zeek.is_orig(record) else EnipCommandResponse
    return [cls(command=command, session=zeek.integer(record.get("session_handle")) or 0,
                status=zeek.integer(record.get("enip_status")) or 0,
                length=zeek.integer(record.get("length", record.get("enip_length"))) or 0,
                **zeek.ends(record, zeek.is_orig(record)))]


def zeek_cip(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    service = zeek.integer(record.get("cip_service_code")) or 0
    orig = zeek.is_orig(record)
    classes = tuple(c for c in (zeek.integer(record.get("class_id")),) if c is not None)
    if service & 0x80 or not orig:
        return [CipResponse(service=service & 0x7F, general_status=zeek.integer(record.get("cip_status_code")) or 0,
                            classes=classes, **zeek.ends(record, orig))]
    instances = tuple(i for i in (zeek.integer(record.get("instance_id")),) if i is not None)
    attributes = tuple(a for a in (zeek.integer(record.get("attribute_id")),) if a is not None)
    return [CipRequest(service=service, classes=classes, instances=instances, attributes=attributes,
                       operation=operation_of(service, classes), **zeek.ends(record))]


# What a fold leaves to the decoder: a request that opens or closes a connection (forward
# open/close on the connection manager name the connection's object), a forward open's reply
# (it records the connection), an unconnected send inside another message, and nested
# multiple-service packets; a multiple-service packet is folded when each message in it
# would be, an unconnected send with the request inside it.
_CONNECTING = frozenset({0x54, 0x5B, 0x4E})
_OPENED = frozenset({0x54, 0x5B})
_UNCONNECTED_SEND = 0x52
_MULTIPLE = 0x0A
_ITEM = struct.Struct("<HH")  # CPF item type and length
_NO_PATH: CipPath = ((), ())
# a reply plan (sequence or None, messages) or a request plan (sequence or None, paths)
_Plan = tuple[bool, int | None, Any]


def _replies(payload: bytes) -> int | None:
    """How many replies a multiple-service reply carries (``_embedded(payload, True)``'s
    count, without cutting them out)."""
    size = len(payload)
    if size < 2:
        return 0
    count = payload[0] | payload[1] << 8
    if 2 + 2 * count > size:
        return None
    start = payload[2] | payload[3] << 8 if count else 0
    for index in range(count):
        end = payload[4 + 2 * index] | payload[5 + 2 * index] << 8 if index + 1 < count else size
        if not 0 < start < end <= size or end - start < 4:
            return None
        service = payload[start]
        if not service & 0x80 or (service & 0x7F) in _OPENED or (service & 0x7F) == _MULTIPLE:
            return None
        start = end
    return count


def _embedded(payload: bytes, reply: bool) -> list[bytes] | None:
    """The messages of a multiple-service packet, None where ``EnipDecoder._multiple`` would
    report a problem or meet a message it treats beyond one CipRequest/CipResponse each (a
    nested multiple-service packet, a reply inside a request or the other way round, a
    forward open's reply)."""
    if len(payload) < 2:
        return []
    count = payload[0] | payload[1] << 8
    if 2 + 2 * count > len(payload):
        return None
    bounds = [int.from_bytes(payload[2 + 2 * i:4 + 2 * i], "little") for i in range(count)]
    bounds.append(len(payload))
    out = []
    for index in range(count):
        start, end = bounds[index], bounds[index + 1]
        if not 0 < start < end <= len(payload):
            return None
        msg = payload[start:end]
        if len(msg) < 4 or bool(msg[0] & 0x80) != reply or (msg[0] & 0x7F) == _MULTIPLE or (
                reply and (msg[0] & 0x7F) in _OPENED):
            return None
        out.append(msg)
    return out


class EnipRun(FoldRun):
    """EtherNet/IP's batch path: SendRRData/SendUnitData with one CIP message (explicit
    polling: get attribute, read/write tag, multiple-service packets of them, unconnected
    sends of one ...) none of plc-control's, and its reply, folded (the request's paths
    remembered for its reply, as ``EnipDecoder`` does; the connection's object prefixed as
    there). A segment of several encapsulations is folded when each of them would be."""

    decoder_type = EnipDecoder

    def fold(self, decoder: Any, from_client: bool, buf: bytes, off: int, size: int,
             frame: int) -> tuple[str, ...] | None:
        buffer = decoder._buffers[from_client]
        if buffer._data or decoder.ctx.transport != "tcp":
            return None
        end = off + size
        length = 24 + (buf[off + 2] | buf[off + 3] << 8) if size >= 24 else 0
        if length == size:  # the common case: one encapsulation in the segment
            plan = self._plan(decoder, buf, off, size)
            if plan is None:
                return None
            plans = [plan]
        else:
            plans = []
            at = off
            while at < end:
                length = 24 + (buf[at + 2] | buf[at + 3] << 8) if end - at >= 24 else 0
                if not length or at + length > end:  # a PDU cut by the segment: the decoder's
                    return None
                plan = self._plan(decoder, buf, at, length)
                if plan is None:
                    return None
                plans.append(plan)
                at += length
        buffer.resyncing = False
        if len(plans) == 1:
            return self._apply(decoder, from_client, plans[0], frame)
        given: tuple[str, ...] = ()
        for plan in plans:
            given += self._apply(decoder, from_client, plan, frame)
        return given

    def _plan(self, decoder: Any, buf: bytes, off: int, size: int) -> _Plan | None:
        """What one encapsulation of ``size`` bytes at ``off`` does, without doing it; None
        to leave it to the decoder."""
        # SendRRData (0x6F) or SendUnitData (0x70), two CPF items: a null or connected
        # address, then unconnected or connected data
        if (size < 44 or buf[off + 1] or buf[off] not in (0x6F, 0x70)
                or buf[off + 30] != 2 or buf[off + 31] or size > decoder._buffers[0].limit):
            return None
        address, address_size = _ITEM.unpack_from(buf, off + 32)
        if address == 0 and address_size == 0:
            connection_id = None
        elif address == 0xA1 and address_size == 4:
            connection_id = int.from_bytes(buf[off + 36:off + 40], "little")
        else:
            return None
        at = off + 36 + address_size
        kind, item_size = _ITEM.unpack_from(buf, at)
        if at + 4 + item_size != off + size:
            return None
        sequence = None
        if kind == 0xB1 and item_size >= 2:
            sequence = buf[at + 4] | buf[at + 5] << 8
            msg = buf[at + 6:off + size]
        elif kind == 0xB2:
            msg = buf[at + 4:off + size]
        else:
            return None
        if len(msg) < 4:
            return None
        service = msg[0] & 0x7F
        if msg[0] & 0x80:
            if service in _OPENED:
                return None
            messages = 1
            if service == _MULTIPLE and msg[2] in (0, 0x1E):
                inside = _replies(msg[4 + 2 * msg[3]:])
                if inside is None:
                    return None
                messages += inside
            return True, sequence, messages
        prefix = decoder._connections.get(connection_id, _NO_PATH) if connection_id is not None \
            else _NO_PATH
        if service != _MULTIPLE and service != _UNCONNECTED_SEND:  # one request: its path
            path_end = 2 + 2 * msg[1]
            if path_end > len(msg):
                return None
            path = self._lookup(service, msg[2:path_end], prefix)
            return (False, sequence, [path]) if path else None
        seen = self._seen
        key = (msg, prefix)
        if key in seen:
            request = seen[key]
        else:  # a request not seen before (polling repeats a few)
            request = seen[key] = self._request(msg, prefix)
            if len(seen) > 4096:
                seen.pop(next(iter(seen)))
        if request is None:
            return None
        return False, sequence, list(request)  # the decoder may append to its own

    def _request(self, msg: bytes, prefix: CipPath) -> list[CipPath] | None:
        """The paths of a request message and the ones inside it, in the decoder's order; None
        to leave it to the decoder."""
        service = msg[0]
        request = []
        parts: list[bytes] = [msg]
        if service == _MULTIPLE:
            path_end = 2 + 2 * msg[1]
            embedded = _embedded(msg[path_end:], False) if path_end <= len(msg) else None
            if embedded is None:
                return None
            parts += embedded
        depth = 0
        while depth < len(parts):
            part = parts[depth]
            path_end = 2 + 2 * part[1]
            if path_end > len(part):
                return None
            path = self._lookup(part[0], part[2:path_end], prefix if depth == 0 else _NO_PATH)
            if not path:
                return None
            request.append(path)
            if part[0] == _UNCONNECTED_SEND and path[0][:1] == (CONNECTION_MANAGER_CLASS,):
                if depth or service != _UNCONNECTED_SEND:  # one inside another: the decoder's
                    return None
                payload = part[path_end:]  # the decoder unwraps the request inside
                if len(payload) >= 4:
                    inner_size = payload[2] | payload[3] << 8
                    inner = payload[4:4 + inner_size]
                    if len(inner) == inner_size and inner_size:
                        if len(inner) < 2 or inner[0] & 0x80 or inner[0] == _MULTIPLE:
                            return None
                        parts.append(inner)
            depth += 1
        return request

    @staticmethod
    def _apply(decoder: Any, from_client: bool, plan: _Plan, frame: int) -> tuple[str, ...]:
        """Do what ``_plan`` found, as the decoder would; the kinds of the events it gives."""
        reply, sequence, what = plan
        command = EnipCommandRequest.kind if from_client else EnipCommandResponse.kind
        if reply:
            if sequence is not None:
                found = decoder._connected.pop(sequence, None)
            else:
                found = decoder._unconnected.popleft() if decoder._unconnected else None
            decoder._reply_index = what if found is not None else 0
            return (command,) + (CipResponse.kind,) * what
        decoder._request = what
        if sequence is not None:
            connected = decoder._connected
            connected[sequence] = (what, frame)
            if len(connected) > 256:
                connected.pop(next(iter(connected)))
        else:
            decoder._unconnected.append((what, frame))
        return (command,) + (CipRequest.kind,) * len(what)

    def __init__(self) -> None:
        # (service, path, connection's classes and instances) -> the request's classes and
        # instances as the decoder records them; () for a request plc-control judges or one
        # that opens or closes a connection
        self._paths: dict[tuple[int, bytes, CipPath], CipPath | tuple[()]] = {}
        # (multiple-service packet or unconnected send, connection's classes and
        # instances) -> ``_request``
        self._seen: dict[tuple[bytes, CipPath], list[CipPath] | None] = {}

    def _lookup(self, service: int, path: bytes, prefix: CipPath) -> CipPath | tuple[()]:
        """``_path``, remembered."""
        paths = self._paths
        key = (service, path, prefix)
        found = paths.get(key)
        if found is None:
            found = paths[key] = self._path(service, path, prefix)
            if len(paths) > 4096:  # a few paths, polled again and again
                paths.pop(next(iter(paths)))
        return found

    @staticmethod
    def _path(service: int, path: bytes, prefix: CipPath) -> CipPath | tuple[()]:
        try:
            classes, instances, _, _ = parse_epath(path)
        except Exception:  # the decoder's own way meets it (and says so)
            return ()
        if service in _CONNECTING and classes[:1] == (CONNECTION_MANAGER_CLASS,):
            return ()
        classes, instances = prefix[0] + classes, prefix[1] + instances
        if command_operation(service, classes, operation_of(service, classes)):
            return ()
        return classes, instances


PROTOCOL = register_protocol(ProtocolSpec(
    name="enip", module=__name__, decoders=(SPEC_TCP, SPEC_UDP, SPEC_IO), run=EnipRun, policy={"enip": ("tcp",)},
    adapters={CipRequest: Adapter(plc_command, (PlcCommand,)), CipResponse: IGNORED,
              EnipCommandRequest: IGNORED, EnipCommandResponse: IGNORED,
              EnipIdentityResponse: IGNORED, EnipIoRequest: IGNORED},
    zeek={"enip": zeek_enip, "cip": zeek_cip},
))
