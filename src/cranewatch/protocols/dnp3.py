"""DNP3 (IEEE 1815) over TCP and UDP port 20000: link frames, transport reassembly, requests
and responses of the application layer.

What matters on a crane's substation feed and RTUs: who is master of which outstation, and
which requests change the outstation rather than read it: control operations on points (CROB
g12, analog outputs g41 by select/operate/direct operate), cold and warm restarts, stopping
applications, disabling unsolicited reporting, and file open/delete. Link frames carry a CRC
per block; a bad CRC is a problem reported beside the events (the frame is dropped, as an
outstation drops it), never an exception.

Written from IEEE 1815-2012 (link layer clause 9, transport clause 8, application clause 4),
checked against tshark's ``dnp3.*`` fields on the public captures (tests/test_dnp3.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from cranewatch.detect.facts import PlcCommand, where
from cranewatch.errors import DecodeError
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import PduBuffer, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

PORT = 20000
START = b"\x05\x64"
BLOCK = 16  # user-data bytes per CRC block

FUNCTION_NAMES: dict[int, str] = {
    0: "CONFIRM", 1: "READ", 2: "WRITE", 3: "SELECT", 4: "OPERATE", 5: "DIRECT_OPERATE",
    6: "DIRECT_OPERATE_NR", 7: "IMMED_FREEZE", 8: "IMMED_FREEZE_NR", 9: "FREEZE_CLEAR",
    10: "FREEZE_CLEAR_NR", 11: "FREEZE_AT_TIME", 12: "FREEZE_AT_TIME_NR", 13: "COLD_RESTART",
    14: "WARM_RESTART", 15: "INITIALIZE_DATA", 16: "INITIALIZE_APPL", 17: "START_APPL",
    18: "STOP_APPL", 19: "SAVE_CONFIG", 20: "ENABLE_UNSOLICITED", 21: "DISABLE_UNSOLICITED",
    22: "ASSIGN_CLASS", 23: "DELAY_MEASURE", 24: "RECORD_CURRENT_TIME", 25: "OPEN_FILE",
    26: "CLOSE_FILE", 27: "DELETE_FILE", 28: "GET_FILE_INFO", 29: "AUTHENTICATE_FILE",
    30: "ABORT_FILE", 31: "ACTIVATE_CONFIG", 32: "AUTHENTICATE_REQ", 33: "AUTHENTICATE_ERR",
    129: "RESPONSE", 130: "UNSOLICITED_RESPONSE", 131: "AUTHENTICATE_RESP",
}
FUNCTION_CODES = {name: code for code, name in FUNCTION_NAMES.items()}
RESPONSE_FUNCTIONS = frozenset({129, 130, 131})
# Request function code -> plc-control operation (detect/rules/plc_control.yaml).
OPERATIONS: dict[int, str] = {
    4: "dnp3-operate", 5: "dnp3-operate", 6: "dnp3-operate",
    13: "dnp3-cold-restart", 14: "dnp3-warm-restart", 15: "dnp3-initialize-data",
    16: "dnp3-application-control", 17: "dnp3-application-control",
    18: "dnp3-stop-application", 21: "dnp3-disable-unsolicited",
    25: "dnp3-file-open", 27: "dnp3-file-delete", 31: "dnp3-activate-config",
}
# Bytes per object (without prefix) of the groups/variations whose data a request carries;
# others end the object walk (the function and the headers before them are still known).
OBJECT_SIZES: dict[tuple[int, int], int] = {
    (12, 1): 11, (12, 2): 11, (41, 1): 5, (41, 2): 3, (41, 3): 5, (41, 4): 9,
    (50, 1): 6, (50, 2): 10, (50, 3): 6, (50, 4): 11, (52, 1): 2, (52, 2): 2,
    (34, 1): 2, (34, 2): 4, (34, 3): 4,
}
PACKED_BITS = frozenset({(80, 1), (1, 1), (10, 1)})  # one bit per point
POINT_LIMIT = 64  # points kept per object header
FRAGMENT_LIMIT = 1 << 16  # bytes of one reassembled application fragment


def crc16(data: bytes | bytearray | memoryview) -> int:
    """DNP3's CRC (polynomial 0x3D65, reflected, complemented), as sent little-endian."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return ~crc & 0xFFFF


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def frame_length(buf: bytes | bytearray, pos: int) -> int | None:
    """Bytes of the link frame at ``pos`` (header, data blocks and their CRCs)."""
    if len(buf) - pos < 3:
        return None
    if buf[pos] != 0x05 or buf[pos + 1] != 0x64:
        raise DecodeError("DNP3 link frame does not start with 0x0564")
    length = buf[pos + 2]
    if length < 5:
        raise DecodeError(f"DNP3 link length {length} below 5")
    data = length - 5
    return 10 + data + 2 * ((data + BLOCK - 1) // BLOCK)


@dataclass(frozen=True, slots=True)
class Dnp3Object:
    """One object header of an application fragment and the points it names.

    ``points``: the indexes (prefixed objects) or the start..stop range (at most
    ``POINT_LIMIT``); ``values``: per point, the CROB control code (g12) or the analog output
    value (g41) where the request carries them.
    """

    group: int
    variation: int
    qualifier: int
    points: tuple[int, ...] = ()
    count: int = 0
    values: tuple[float, ...] = ()

    def __str__(self) -> str:
        points = ",".join(map(str, self.points))
        return f"g{self.group}v{self.variation}[{points}]" if points else f"g{self.group}v{self.variation}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Message(Event):
    """An application fragment: ``link_src``/``link_dst`` are the DNP3 addresses,
    ``function`` the application function code, ``objects`` its object headers (as far as
    they could be walked), ``first_frame`` the frame of its first link frame."""

    kind: ClassVar[str] = "dnp3_message"
    link_src: int
    link_dst: int
    function: int
    app_control: int
    objects: tuple[Dnp3Object, ...] = ()
    first_frame: int = 0

    @property
    def function_name(self) -> str:
        return FUNCTION_NAMES.get(self.function, f"FC{self.function}")

    @property
    def sequence(self) -> int:
        return self.app_control & 0x0F


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Request(Dnp3Message):
    """A request from a master (every function but the responses 129-131)."""

    kind: ClassVar[str] = "dnp3_app_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Response(Dnp3Message):
    """A response or unsolicited response with its internal indications (IIN1 << 8 | IIN2)."""

    kind: ClassVar[str] = "dnp3_app_response"
    iin: int = 0
    request_frame: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3LinkFrame(Event):
    """A link frame without user data (reset link, link status, ACK/NACK)."""

    kind: ClassVar[str] = "dnp3_link_request"
    link_src: int
    link_dst: int
    control: int


def _range(fragment: bytes, pos: int, code: int) -> tuple[int, int, int, bool] | None:
    """(start, count, new position, ranged) of a range specifier, None if cut short/unknown."""
    sizes = {0: 1, 1: 2, 2: 4, 3: 1, 4: 2, 5: 4}
    if code in sizes:
        size = sizes[code]
        if pos + 2 * size > len(fragment):
            return None
        start = int.from_bytes(fragment[pos:pos + size], "little")
        stop = int.from_bytes(fragment[pos + size:pos + 2 * size], "little")
        return start, max(0, stop - start + 1), pos + 2 * size, True
    if code == 6:
        return 0, 0, pos, False
    counts = {7: 1, 8: 2, 9: 4, 0xB: 1}
    if code in counts:
        size = counts[code]
        if pos + size > len(fragment):
            return None
        return 0, int.from_bytes(fragment[pos:pos + size], "little"), pos + size, False
    return None


def _value(group: int, variation: int, data: bytes) -> float:
    if group == 12:
        return float(data[0])  # control code: op type, trip/close, clear
    fmt = {1: "<i", 2: "<h", 3: "<f", 4: "<d"}[variation]
    return float(struct.unpack_from(fmt, data)[0])


def parse_objects(fragment: bytes, pos: int, *, request: bool) -> tuple[Dnp3Object, ...]:
    """The object headers from ``pos`` on; the walk stops (quietly) at an object whose size
    this module does not know or at the fragment's end. Responses: headers until then."""
    objects: list[Dnp3Object] = []
    while pos + 3 <= len(fragment):
        group, variation, qualifier = fragment[pos], fragment[pos + 1], fragment[pos + 2]
        spec = _range(fragment, pos + 3, qualifier & 0x0F)
        if spec is None:
            break
        start, count, pos, ranged = spec
        prefix = {0: 0, 1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4}.get((qualifier >> 4) & 0x07)
        if prefix is None:
            break
        size = OBJECT_SIZES.get((group, variation))
        points: list[int] = list(range(start, start + min(count, POINT_LIMIT))) if ranged else []
        values: list[float] = []
        carries_data = (request and size is not None) or (group, variation) in PACKED_BITS or \
            (qualifier >> 4) in (4, 5, 6) or group in (70, 120)
        if not request and not carries_data:
            objects.append(Dnp3Object(group, variation, qualifier, tuple(points), count))
            break  # response data sizes are not walked: the first header is kept
        if count == 0 or (qualifier & 0x0F) == 6 or group == 60:
            objects.append(Dnp3Object(group, variation, qualifier, tuple(points), count))
            continue
        if (group, variation) in PACKED_BITS and prefix == 0:
            pos += (count + 7) // 8
        elif (qualifier >> 4) in (4, 5, 6):  # each object carries its own size
            for _ in range(count):
                if pos + prefix > len(fragment):
                    break
                length = int.from_bytes(fragment[pos:pos + prefix], "little")
                pos += prefix + length
        elif size is not None:
            for _ in range(count):
                if pos + prefix + size > len(fragment):
                    pos = len(fragment) + 1
                    break
                if prefix:
                    index = int.from_bytes(fragment[pos:pos + prefix], "little")
                    if len(points) < POINT_LIMIT:
                        points.append(index)
                pos += prefix
                if group in (12, 41) and len(values) < POINT_LIMIT:
                    values.append(_value(group, variation, fragment[pos:pos + size]))
                pos += size
        else:
            objects.append(Dnp3Object(group, variation, qualifier, tuple(points), count))
            break
        if pos > len(fragment):
            break
        objects.append(Dnp3Object(group, variation, qualifier, tuple(points), count, tuple(values)))
    return tuple(objects)


class _Assembly:
    """The transport segments of one direction and link address pair, until FIN."""

    __slots__ = ("data", "first_frame", "next_seq")

    def __init__(self) -> None:
        self.data = bytearray()
        self.next_seq: int | None = None
        self.first_frame = 0


class Dnp3Decoder(ReportsProblems):
    """Decodes one DNP3 flow (TCP stream or UDP datagrams) into application fragments."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (PduBuffer(limit=292, source=ctx.source), PduBuffer(limit=292, source=ctx.source))
        self._assembly: dict[tuple[bool, int, int], _Assembly] = {}
        self._requests: dict[tuple[int, int, int], int] = {}  # (master, outstation, seq) -> frame

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].gap()
        for key in [k for k in self._assembly if k[0] == from_client]:
            del self._assembly[key]

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        buffer = self._buffers[from_client]
        if self.ctx.transport == "udp":
            buffer.clear()  # a datagram holds whole frames; a cut one is not continued
        try:
            for link in buffer.pdus(data, frame_length, frame):
                try:
                    event = self._link(from_client, link, ts, frame)
                except DecodeError as exc:
                    self.report(exc)
                    continue
                if event is not None:
                    events.append(event)
        except DecodeError as exc:
            raise decode_error(f"{exc.message}", self.ctx, frame) from None
        return events

    def _link(self, from_client: bool, link: bytes, ts: float, frame: int) -> Event | None:
        if crc16(link[:8]) != int.from_bytes(link[8:10], "little"):
            raise decode_error("link header CRC mismatch (frame dropped)", self.ctx, frame)
        control = link[3]
        dst, src = struct.unpack_from("<HH", link, 4)
        user = bytearray()
        pos = 10
        while pos < len(link):
            block = link[pos:min(pos + BLOCK + 2, len(link))]
            body, crc = block[:-2], block[-2:]
            if crc16(body) != int.from_bytes(crc, "little"):
                raise decode_error(f"data block CRC mismatch at link byte {pos} "
                                   "(frame dropped)", self.ctx, frame)
            user += body
            pos += len(block)
        primary = bool(control & 0x40)
        if not user or not primary or (control & 0x0F) not in (3, 4):
            return Dnp3LinkFrame(ts=ts, frame=frame, link_src=src, link_dst=dst, control=control,
                                 **endpoints(self.ctx, from_client))
        return self._transport(from_client, bytes(user), src, dst, ts, frame)

    def _transport(self, from_client: bool, segment: bytes, src: int, dst: int, ts: float,
                   frame: int) -> Event | None:
        header, payload = segment[0], segment[1:]
        fin, fir, seq = bool(header & 0x80), bool(header & 0x40), header & 0x3F
        key = (from_client, src, dst)
        assembly = self._assembly.get(key)
        if fir:
            if assembly is not None and assembly.data:
                self.report(decode_error("transport segment FIR before the previous "
                                         "fragment's FIN (fragment dropped)", self.ctx, frame))
            assembly = self._assembly[key] = _Assembly()
            assembly.first_frame = frame
        elif assembly is None or assembly.next_seq != seq:
            self._assembly.pop(key, None)
            raise decode_error(f"transport segment {seq} out of sequence (dropped)",
                               self.ctx, frame)
        assembly.data += payload
        assembly.next_seq = (seq + 1) & 0x3F
        if len(assembly.data) > FRAGMENT_LIMIT:
            del self._assembly[key]
            raise decode_error("application fragment exceeds 64 KiB", self.ctx, frame)
        if not fin:
            return None
        del self._assembly[key]
        return self._application(from_client, bytes(assembly.data), src, dst, ts, frame,
                                 assembly.first_frame)

    def _application(self, from_client: bool, fragment: bytes, src: int, dst: int, ts: float,
                     frame: int, first_frame: int) -> Event:
        if len(fragment) < 2:
            raise decode_error("application fragment cut short", self.ctx, frame)
        control, function = fragment[0], fragment[1]
        common: dict[str, Any] = {"ts": ts, "frame": frame, "link_src": src, "link_dst": dst, "function": function,
                  "app_control": control, "first_frame": first_frame,
                  **endpoints(self.ctx, from_client)}
        if function in RESPONSE_FUNCTIONS:
            if len(fragment) < 4:
                raise decode_error("response without IIN", self.ctx, frame)
            request = self._requests.pop((dst, src, control & 0x0F), None) if function == 129 else None
            return Dnp3Response(iin=fragment[2] << 8 | fragment[3], request_frame=request,
                                objects=parse_objects(fragment, 4, request=False), **common)
        self._requests[(src, dst, control & 0x0F)] = frame
        if len(self._requests) > 256:
            self._requests.pop(next(iter(self._requests)))
        return Dnp3Request(objects=parse_objects(fragment, 2, request=True), **common)


def is_dnp3(client: bytes, server: bytes) -> bool:
    """A link frame header with a valid CRC at the start of either side."""
    for data in (client, server):
        if len(data) >= 10 and data[:2] == START and data[2] >= 5 \
                and crc16(data[:8]) == int.from_bytes(data[8:10], "little"):
            return True
    return False


SPEC_TCP = DecoderSpec(name="dnp3", transport="tcp", ports=frozenset({PORT}), factory=Dnp3Decoder,
                       probe=is_dnp3, priority=30)
SPEC_UDP = DecoderSpec(name="dnp3", transport="udp", ports=frozenset({PORT}), factory=Dnp3Decoder,
                       probe=is_dnp3, priority=30)


def plc_command(event: Dnp3Request) -> list[PlcCommand]:
    """A request that operates points, restarts the outstation, stops its application,
    silences its reporting or touches its files."""
    operation = OPERATIONS.get(event.function)
    if operation is None:
        return []
    points = [str(o) for o in event.objects if o.group not in (60, 80)]
    values: dict[str, object] = {"function": event.function, "function_name": event.function_name,
                                 "link_src": event.link_src, "link_dst": event.link_dst}
    controls = {f"g{o.group}v{o.variation}.{p}": v for o in event.objects
                for p, v in zip(o.points, o.values, strict=False)}
    if controls:
        values["controls"] = controls
    return [PlcCommand(**where(event), protocol="dnp3", operation=operation,
                       target=";".join(points), values=values)]


# --- Zeek's dnp3.log (``sources.zeek``): one record per request/reply pair

def zeek_dnp3(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    result.note("dnp3.log: link addresses and object headers (the points operated) are not in "
                "Zeek's dnp3.log")
    events: list[Event] = []
    request = FUNCTION_CODES.get(zeek.text(record.get("fc_request")).upper())
    common: dict[str, Any] = {"link_src": 0, "link_dst": 0, "app_control": 0}
    if request is not None:
        events.append(Dnp3Request(function=request, **common, **zeek.ends(record, True)))
    reply = FUNCTION_CODES.get(zeek.text(record.get("fc_reply")).upper())
    if reply is not None:
        events.append(Dnp3Response(function=reply, iin=zeek.integer(record.get("iin")) or 0,
                                   **common, **zeek.ends(record, False)))
    return events


PROTOCOL = register_protocol(ProtocolSpec(
    name="dnp3", module=__name__, decoders=(SPEC_TCP, SPEC_UDP), masters=True,
    adapters={Dnp3Request: Adapter(plc_command, (PlcCommand,)), Dnp3Response: IGNORED,
              Dnp3LinkFrame: IGNORED, Dnp3Message: IGNORED},
    zeek={"dnp3": zeek_dnp3},
))
