"""Siemens S7comm over ISO-on-TCP (TPKT/COTP, port 102): jobs, acknowledgements, user data.

What matters on a crane: who sets up communication with the PLC, which data blocks and
memory areas are read and written (item addresses), who stops or restarts the CPU (PLC
control, PLC stop), who uploads, downloads or deletes program blocks, and who reads the SZL
(module identification: the reconnaissance step). S7comm-plus (protocol id 0x72, used by
S7-1200/1500) is recognised and reported with its opcode and function, not decoded further.

COTP data TPDUs without the end-of-TSDU bit are reassembled before S7 decoding, as tshark
does (``cotp.segments``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from cranewatch.detect.facts import PlcCommand, as_text, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import Endpoints, PduBuffer, ascii_digits, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, FoldRun, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

ROSCTR_JOB = 1
ROSCTR_ACK = 2
ROSCTR_ACK_DATA = 3
ROSCTR_USERDATA = 7

FUNCTION_NAMES: dict[int, str] = {
    0x00: "cpu_services", 0x04: "read_var", 0x05: "write_var", 0x1A: "request_download",
    0x1B: "download_block", 0x1C: "download_ended", 0x1D: "start_upload", 0x1E: "upload",
    0x1F: "end_upload", 0x28: "plc_control", 0x29: "plc_stop", 0xF0: "setup_communication",
}
# Functions that change what the PLC runs: program transfer and CPU control.
PROGRAM_FUNCTIONS = frozenset({0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F, 0x28, 0x29})
AREA_NAMES: dict[int, str] = {
    0x03: "SYSINFO", 0x05: "SYSFLAGS", 0x06: "ANAIN", 0x07: "ANAOUT", 0x1C: "C", 0x1D: "T",
    0x1E: "IEC_C", 0x1F: "IEC_T", 0x80: "P", 0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB",
    0x85: "DI", 0x86: "L", 0x87: "V",
}
NUMBERED_AREAS = frozenset({0x1C, 0x1D, 0x1E, 0x1F})  # C, T, IEC counters, IEC timers
BLOCK_TYPES: dict[str, str] = {"08": "OB", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC",
                               "0E": "FB", "0F": "SFB"}
USERDATA_GROUPS: dict[int, str] = {
    0: "mode_transition", 1: "programmer", 2: "cyclic_data", 3: "block_functions",
    4: "cpu_functions", 5: "security", 6: "pbc", 7: "time_functions", 0xF: "ncprog",
}
ITEM_LIMIT = 256  # items kept per PDU; a PDU never legitimately carries more than ~20
VALUE_LIMIT = 64  # bytes of written data kept per item


@dataclass(frozen=True, slots=True)
class S7Item:
    """One variable address of a read/write var job (``DB1.DBX 0.0 BYTE 2`` in Step 7 terms).

    For timers and counters (``NUMBERED_AREAS``) ``byte_address`` is the timer/counter number.
    """

    area: int
    db: int
    byte_address: int
    bit_address: int
    transport_size: int
    count: int
    syntax_id: int = 0x10

    @property
    def area_name(self) -> str:
        return AREA_NAMES.get(self.area, f"0x{self.area:02x}")

    def __str__(self) -> str:
        where = f"DB{self.db}." if self.area == 0x84 else ""
        return f"{where}{self.area_name} {self.byte_address}.{self.bit_address} x{self.count}"


@dataclass(frozen=True, slots=True, kw_only=True)
class S7ConnectRequest(Event):
    """A COTP connection request (CR) or confirm (CC) with its TSAPs: the ISO connection."""

    kind: ClassVar[str] = "s7comm_connect_request"
    pdu_type: int  # 0xE0 CR, 0xD0 CC
    src_tsap: bytes = b""
    dst_tsap: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class S7JobRequest(Event):
    """An S7 job (ROSCTR 1) from the client: the request half of every S7 function.

    ``function``: ``s7comm.param.func``. ``items``: addresses of read/write var.
    ``values``: the data written per item (bounded). ``block``: block name such as ``OB1``
    for program transfer and delete; ``filename``: the raw S7 file name (``_0800001P``).
    ``pi_service``: the PI service of PLC control (``P_PROGRAM`` run/stop, ``_INSE``,
    ``_DELE`` delete block, ``_MODU`` copy RAM to ROM, ``_GARB`` compress). ``pdu_size``: the
    PDU size proposed by setup communication.
    """

    kind: ClassVar[str] = "s7comm_job_request"
    pdu_ref: int
    function: int
    items: tuple[S7Item, ...] = ()
    values: tuple[bytes, ...] = ()
    block: str | None = None
    filename: str | None = None
    pi_service: str | None = None
    pi_arguments: tuple[str, ...] = ()
    pdu_size: int | None = None

    @property
    def function_name(self) -> str:
        return FUNCTION_NAMES.get(self.function, f"0x{self.function:02x}")


@dataclass(frozen=True, slots=True, kw_only=True)
class S7JobResponse(Event):
    """The PLC's Ack/Ack_Data (ROSCTR 2/3) to a job; ``function`` is None for a bare Ack.

    ``error_class``/``error_code``: header error (0/0 = success). ``return_codes``: per
    item of read/write var (0xFF = success). ``request_frame``: frame of the job with the
    same PDU reference when it was seen.
    """

    kind: ClassVar[str] = "s7comm_job_response"
    pdu_ref: int
    function: int | None
    rosctr: int
    error_class: int = 0
    error_code: int = 0
    return_codes: tuple[int, ...] = ()
    pdu_size: int | None = None
    request_frame: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7UserDataRequest(Event):
    """A user-data PDU (ROSCTR 7): CPU functions such as SZL reads, block lists, time, ...

    ``group``: ``s7comm.param.userdata.funcgroup`` (4 = CPU functions, 3 = block functions);
    ``subfunction``: ``s7comm.param.userdata.subfunc``; ``method_type``: 4 request, 8
    response, 0 push. ``szl_id``/``szl_index`` for SZL reads (0x0011 = module
    identification). ``return_code``: the data part's return code (0xFF success).
    """

    kind: ClassVar[str] = "s7comm_userdata_request"
    pdu_ref: int
    group: int
    subfunction: int
    method_type: int
    sequence: int = 0
    szl_id: int | None = None
    szl_index: int | None = None
    return_code: int | None = None
    order_number: str | None = None

    @property
    def group_name(self) -> str:
        return USERDATA_GROUPS.get(self.group, str(self.group))


@dataclass(frozen=True, slots=True, kw_only=True)
class S7UserDataResponse(S7UserDataRequest):
    """The PLC's user-data answer; ``order_number`` is the module's order number when the
    answer is an SZL 0x0011 (module identification) list."""

    kind: ClassVar[str] = "s7comm_userdata_response"
    request_frame: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7PlusRequest(Event):
    """An S7comm-plus PDU (protocol id 0x72): recognised, with version, opcode, function.

    ``opcode``: 0x31 request, 0x32 response, 0x33 notification; ``function``: e.g. 0x04CA
    CreateObject, 0x0542 SetMultiVariables, 0x054C GetMultiVariables. Zero when the PDU is
    too short or encrypted (protocol version 3 integrity part).
    """

    kind: ClassVar[str] = "s7commplus_pdu_request"
    version: int
    opcode: int = 0
    function: int = 0
    from_client: bool = True


def tpkt_length(buf: bytes | bytearray, pos: int) -> int | None:
    """Length of the TPKT packet starting at ``pos`` (RFC 1006: version 3, reserved 0)."""
    if len(buf) - pos < 4:
        return None
    if buf[pos] != 3 or buf[pos + 1] != 0:
        raise DecodeError("not a TPKT header")
    length = buf[pos + 2] << 8 | buf[pos + 3]
    if length < 7:
        raise DecodeError(f"TPKT length {length} below the minimum 7")
    return length


def parse_item(param: bytes, pos: int) -> tuple[S7Item | None, int]:
    """One request item at ``pos``; returns the item (None if not S7ANY) and the next offset."""
    if pos + 2 > len(param):
        raise DecodeError("read/write item cut short")
    spec_len = param[pos + 1]
    end = pos + 2 + spec_len
    if end > len(param):
        raise DecodeError("read/write item longer than the parameter block")
    if spec_len >= 10 and param[pos + 2] == 0x10:
        tsize, count, db, area = struct.unpack_from(">BHHB", param, pos + 3)
        address = param[pos + 9] << 16 | param[pos + 10] << 8 | param[pos + 11]
        if area in NUMBERED_AREAS:  # timers and counters are addressed by number, not byte.bit
            return S7Item(area=area, db=db, byte_address=address, bit_address=0,
                          transport_size=tsize, count=count), end
        return S7Item(area=area, db=db, byte_address=address >> 3, bit_address=address & 7,
                      transport_size=tsize, count=count), end
    return None, end


def parse_write_values(data: bytes, count: int) -> tuple[bytes, ...]:
    """The data items of a write var job: return code, transport size, length, data (padded)."""
    values: list[bytes] = []
    pos = 0
    for index in range(count):
        if pos + 4 > len(data):
            break
        tsize = data[pos + 1]
        length = data[pos + 2] << 8 | data[pos + 3]
        if tsize in (0x03, 0x04, 0x05):  # bit, byte/word/dword, integer: length in bits
            length = (length + 7) // 8
        values.append(data[pos + 4:pos + 4 + min(length, VALUE_LIMIT)])
        pos += 4 + length
        if length % 2 and index + 1 < count:
            pos += 1  # fill byte between items
    return tuple(values)


def parse_block_name(filename: str) -> str | None:
    """``_0800001P`` → ``OB1``: file identifier, block type, 5-digit number, file system."""
    if len(filename) < 8:
        return None
    kind = BLOCK_TYPES.get(filename[1:3].upper())
    number = filename[3:8]
    if kind is None or not ascii_digits(number):
        return None
    return f"{kind}{int(number)}"


def parse_pi_service(param: bytes) -> tuple[str | None, tuple[str, ...]]:
    """PLC control: 7 unknown bytes, parameter block (length-prefixed), service name."""
    if len(param) < 10:
        return None, ()
    block_len = param[8] << 8 | param[9]
    block = param[10:10 + block_len]
    pos = 10 + block_len
    if pos >= len(param):
        return None, ()
    name_len = param[pos]
    name = param[pos + 1:pos + 1 + name_len].decode("latin-1")
    arguments: list[str] = []
    if block and block[0:1] != b"\x00" and len(block) >= 2:
        # block-related services: count byte, then per block "<type><number><fs>" (8 bytes)
        count = block[0]
        body = block[2:] if len(block) > 2 and block[1] == 0 else block[1:]
        for index in range(min(count, 64)):
            part = body[index * 8:index * 8 + 8]
            if len(part) == 8:
                arguments.append(part.decode("latin-1"))
    elif block:
        arguments.append(block.decode("latin-1", "replace"))
    return name, tuple(arguments)


class S7Decoder(ReportsProblems):
    """Decodes one ISO-on-TCP flow carrying S7comm or S7comm-plus."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (PduBuffer(source=ctx.source), PduBuffer(source=ctx.source))
        self._segments: list[bytearray] = [bytearray(), bytearray()]
        self._jobs: dict[int, tuple[int, int]] = {}  # pdu_ref -> (frame, function)
        self._userdata: dict[tuple[int, int], int] = {}  # (group, subfunction) -> frame
        self._szl_parts: dict[int, tuple[int, int, str | None]] = {}  # data unit ref -> header

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].gap()
        self._segments[from_client].clear()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        for packet in self._buffers[from_client].pdus(data, tpkt_length, frame):
            try:  # a broken packet costs itself, not the ones after it
                event = self._cotp(from_client, packet, ts, frame)
            except DecodeError as exc:
                self.report(exc)
                continue
            if event is not None:
                events.append(event)
        return events

    def _cotp(self, from_client: bool, packet: bytes, ts: float, frame: int) -> Event | None:
        if len(packet) < 7:
            raise decode_error("COTP header cut short", self.ctx, frame)
        li = packet[4]
        pdu_type = packet[5] & 0xF0
        if 5 + li > len(packet):
            raise decode_error("COTP length indicator beyond the packet", self.ctx, frame)
        where = endpoints(self.ctx, from_client)
        if pdu_type in (0xE0, 0xD0):
            tsaps = {0xC1: b"", 0xC2: b""}
            pos = 11
            while pos + 2 <= 5 + li:
                code, plen = packet[pos], packet[pos + 1]
                if code in tsaps:
                    tsaps[code] = packet[pos + 2:pos + 2 + plen]
                pos += 2 + plen
            return S7ConnectRequest(ts=ts, frame=frame, pdu_type=pdu_type, src_tsap=tsaps[0xC1],
                                    dst_tsap=tsaps[0xC2], **where)
        if pdu_type != 0xF0:
            return None  # DR/DC/ER/AK: connection management without S7 content
        last = bool(packet[6] & 0x80)
        payload = packet[5 + li:]
        pending = self._segments[from_client]
        if not last:
            if len(pending) + len(payload) > 1 << 16:
                pending.clear()
                raise decode_error("COTP segments exceed 64 KiB", self.ctx, frame)
            pending += payload
            return None
        if pending:
            payload = bytes(pending) + payload
            pending.clear()
        if not payload:
            return None
        if payload[0] == 0x72:
            return self._s7plus(from_client, payload, ts, frame, where)
        if payload[0] != 0x32:
            raise decode_error(f"unknown S7 protocol id 0x{payload[0]:02x}", self.ctx, frame)
        return self._s7(payload, ts, frame, where)

    def _s7plus(self, from_client: bool, payload: bytes, ts: float, frame: int,
                where: Endpoints) -> Event:
        version = payload[1] if len(payload) > 1 else 0
        opcode = function = 0
        if len(payload) >= 10 and version in (1, 2):
            opcode = payload[4]
            function = payload[7] << 8 | payload[8]
        elif len(payload) >= 10 and version == 3:
            # V3 carries a 32-byte integrity digest before the opcode when present
            offset = 4 + 1 + 32 if payload[4] == 0x20 else 4
            if len(payload) >= offset + 5:
                opcode = payload[offset]
                function = payload[offset + 3] << 8 | payload[offset + 4]
        return S7PlusRequest(ts=ts, frame=frame, version=version, opcode=opcode,
                             function=function, from_client=from_client,
                             **where)

    def _s7(self, pdu: bytes, ts: float, frame: int, where: Endpoints) -> Event | None:
        if len(pdu) < 10:
            raise decode_error("S7 header cut short", self.ctx, frame)
        rosctr = pdu[1]
        pdu_ref, param_len, data_len = struct.unpack_from(">HHH", pdu, 4)
        header = 12 if rosctr in (ROSCTR_ACK, ROSCTR_ACK_DATA) else 10
        if len(pdu) < header + param_len + data_len:
            raise decode_error("S7 parameter and data lengths exceed the PDU", self.ctx, frame)
        param = pdu[header:header + param_len]
        data = pdu[header + param_len:header + param_len + data_len]
        if rosctr == ROSCTR_JOB:
            return self._job(pdu_ref, param, data, ts, frame, where)
        if rosctr in (ROSCTR_ACK, ROSCTR_ACK_DATA):
            error_class, error_code = pdu[10], pdu[11]
            function = param[0] if param else None
            request = self._jobs.pop(pdu_ref, None)
            return_codes: tuple[int, ...] = ()
            pdu_size = None
            if function in (0x04, 0x05) and len(param) >= 2:
                if function == 0x05:
                    return_codes = tuple(data[: param[1]])
                else:
                    return_codes = tuple(_read_return_codes(data, param[1]))
            elif function == 0xF0 and len(param) >= 8:
                pdu_size = param[6] << 8 | param[7]
            return S7JobResponse(ts=ts, frame=frame, pdu_ref=pdu_ref, function=function,
                                 rosctr=rosctr, error_class=error_class, error_code=error_code,
                                 return_codes=return_codes, pdu_size=pdu_size,
                                 request_frame=request[0] if request else None,
                                 **where)
        if rosctr == ROSCTR_USERDATA:
            return self._userdata_pdu(pdu_ref, param, data, ts, frame, where)
        raise decode_error(f"unknown S7 ROSCTR {rosctr}", self.ctx, frame)

    def _job(self, pdu_ref: int, param: bytes, data: bytes, ts: float, frame: int,
             where: Endpoints) -> Event:
        if not param:
            raise decode_error("S7 job without parameters", self.ctx, frame)
        function = param[0]
        self._jobs[pdu_ref] = (frame, function)
        if len(self._jobs) > 4096:  # unanswered jobs must not grow without bound
            self._jobs.pop(next(iter(self._jobs)))
        items: list[S7Item] = []
        values: tuple[bytes, ...] = ()
        block = filename = pi_service = None
        pi_arguments: tuple[str, ...] = ()
        pdu_size = None
        if function in (0x04, 0x05) and len(param) >= 2:
            pos = 2
            for _ in range(min(param[1], ITEM_LIMIT)):
                item, pos = parse_item(param, pos)
                if item is not None:
                    items.append(item)
            if function == 0x05:
                values = parse_write_values(data, param[1])
        elif function == 0xF0 and len(param) >= 8:
            pdu_size = param[6] << 8 | param[7]
        elif function in (0x1A, 0x1B, 0x1D) and len(param) > 9:
            name_len = param[8]
            filename = param[9:9 + name_len].decode("latin-1")
            block = parse_block_name(filename)
        elif function == 0x28:
            pi_service, pi_arguments = parse_pi_service(param)
            if pi_arguments:
                block = parse_block_name("_" + pi_arguments[0])
        elif function == 0x29 and len(param) > 6:
            name_len = param[6]
            pi_service = param[7:7 + name_len].decode("latin-1")
        return S7JobRequest(ts=ts, frame=frame, pdu_ref=pdu_ref, function=function,
                            items=tuple(items), values=values, block=block, filename=filename,
                            pi_service=pi_service, pi_arguments=pi_arguments, pdu_size=pdu_size,
                            **where)

    def _userdata_pdu(self, pdu_ref: int, param: bytes, data: bytes, ts: float, frame: int,
                      where: Endpoints) -> Event:
        if len(param) < 8:
            raise decode_error("S7 user-data parameters cut short", self.ctx, frame)
        method_type = param[5] >> 4
        group = param[5] & 0x0F
        subfunction = param[6]
        sequence = param[7]
        szl_id = szl_index = return_code = None
        order_number = None
        if data:
            return_code = data[0]
        is_request = method_type == 4
        if group == 4 and subfunction == 1:  # CPU functions: read SZL (2 is the message service)
            szl_id, szl_index, order_number = self._szl(is_request, param, data, return_code)
        fields: dict[str, Any] = {"ts": ts, "frame": frame, "pdu_ref": pdu_ref, "group": group,
                  "subfunction": subfunction, "method_type": method_type, "sequence": sequence,
                  "szl_id": szl_id, "szl_index": szl_index, "return_code": return_code,
                  "order_number": order_number, **where}
        key = (group, subfunction)
        if is_request or method_type == 0:
            self._userdata[key] = frame
            return S7UserDataRequest(**fields)
        return S7UserDataResponse(request_frame=self._userdata.pop(key, None),
                                  **fields)

    def _szl(self, is_request: bool, param: bytes, data: bytes,
             return_code: int | None) -> tuple[int | None, int | None, str | None]:
        """SZL id, index and order number of an SZL read, reported as tshark does: a long
        answer comes in parts (data unit reference, "more follows"); the SZL header is in the
        first part but belongs to the whole answer, reported with its last part."""
        if is_request:
            if return_code == 0xFF and len(data) >= 8:
                return _szl_header(data, with_list=False)
            return None, None, None
        reference = param[8] if len(param) >= 12 else 0
        more = len(param) >= 12 and param[9] != 0
        if reference and reference in self._szl_parts:
            header = self._szl_parts[reference] if more else self._szl_parts.pop(reference)
            return (None, None, None) if more else header
        if return_code != 0xFF or len(data) < 8:
            return None, None, None
        header = _szl_header(data, with_list=True)
        if more and reference:
            self._szl_parts[reference] = header
            if len(self._szl_parts) > 64:
                self._szl_parts.pop(next(iter(self._szl_parts)))
            return None, None, None
        return header


def _szl_header(data: bytes, with_list: bool) -> tuple[int, int, str | None]:
    szl_id, szl_index = struct.unpack_from(">HH", data, 4)
    order_number = None
    if with_list and szl_id & 0x00FF == 0x11 and len(data) >= 34:
        # list header (length, count), then per item: index, 20-character order number
        order_number = data[14:34].decode("latin-1").strip(" \x00")
    return szl_id, szl_index, order_number


def _read_return_codes(data: bytes, count: int) -> list[int]:
    codes: list[int] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(data):
            break
        code, tsize = data[pos], data[pos + 1]
        length = data[pos + 2] << 8 | data[pos + 3]
        if tsize in (0x03, 0x04, 0x05):
            length = (length + 7) // 8
        codes.append(code)
        pos += 4 + length + (length % 2)
    return codes


SPEC = DecoderSpec(name="s7comm", transport="tcp", ports=frozenset({102}),
                   factory=S7Decoder, probe=identify.is_s7comm, priority=20,
                   aliases=("s7commplus", "cotp", "tpkt"))

# Job functions (s7comm.param.func) and PI services, in plc-control's operation names. Only
# the engineering station's opening jobs count: during a download the PLC itself sends the
# download-block jobs (0x1B/0x1C) back to the station, and one upload is 0x1D then many 0x1E.
PLC_FUNCTIONS = {0x29: "cpu-stop", 0x1A: "program-download", 0x1D: "program-upload"}
PLC_PI_SERVICES = {"P_PROGRAM": "cpu-start", "_DELE": "block-delete", "_INSE": "block-activate",
                   "_MODU": "copy-ram-to-rom", "_GARB": "memory-compress"}


def plc_command(event: S7JobRequest) -> list[PlcCommand]:
    """A job that stops, starts or reprograms the CPU, or changes its blocks."""
    function = event.function
    operation = PLC_FUNCTIONS.get(function) if function is not None else None
    if function == 0x28:
        service = (event.pi_service or "").upper()
        operation = PLC_PI_SERVICES.get(service, "cpu-start" if service else None)
    if not operation:
        return []
    return [PlcCommand(**where(event), protocol="s7comm", operation=operation,
                       target=as_text(event.block or event.filename),
                       values={"function": function, "pi_service": event.pi_service or ""})]


TIME_FUNCTIONS = 7  # user-data function group: clock
# its subfunctions that set the clock (tshark's s7comm.param.userdata.subfunc: 1 read clock,
# 2 set clock, 3 read clock (following), 4 set clock)
SET_CLOCK = frozenset({2, 4})


def set_clock(event: S7UserDataRequest) -> list[PlcCommand]:
    """A user-data request that sets the CPU's clock (group 7, subfunction 2 or 4, a request)."""
    if event.group != TIME_FUNCTIONS or event.subfunction not in SET_CLOCK or event.method_type != 4:
        return []
    return [PlcCommand(**where(event), protocol="s7comm", operation="set-clock",
                       values={"group": event.group, "subfunction": event.subfunction})]


# Read/write var: the polling of an HMI or SCADA server. ``plc_command`` gives nothing for them
# and their answers are IGNORED, so a batch folds them (``registry.FoldRun``).
POLLED_FUNCTIONS = frozenset({0x04, 0x05})
_S7_HEADER = struct.Struct(">HHH")  # pdu_ref, parameter length, data length
_JOB, _ACK, _PLUS = (S7JobRequest.kind,), (S7JobResponse.kind,), (S7PlusRequest.kind,)


class S7Run(FoldRun):
    """S7comm's batch path: read/write var jobs and their Ack_Data, S7comm-plus PDUs and
    empty data units, one whole TPKT per segment, folded (the job's frame remembered for its
    answer, as ``S7Decoder`` does)."""

    decoder_type = S7Decoder

    def fold(self, decoder: Any, from_client: bool, buf: bytes, off: int, size: int,
             frame: int) -> tuple[str, ...] | None:
        # TPKT v3 of exactly this segment, COTP DT (length indicator 2) last unit, S7 0x32.
        if (size < 7 or buf[off] != 3 or buf[off + 1] or (buf[off + 2] << 8 | buf[off + 3]) != size
                or buf[off + 4] != 2 or buf[off + 5] != 0xF0):
            return None
        buffer = decoder._buffers[from_client]
        if buffer._data or decoder._segments[from_client] or size > buffer.limit:
            return None
        if size == 7:  # a data unit without data (S7comm-plus keep-alives): no event
            buffer.resyncing = False
            return ()
        if not buf[off + 6] & 0x80:
            return None
        if buf[off + 7] == 0x72:  # S7comm-plus: one event, no state (no detector reads it)
            buffer.resyncing = False
            return _PLUS
        if size < 21 or buf[off + 7] != 0x32:
            return None
        rosctr = buf[off + 8]
        pdu_ref, param_len, data_len = _S7_HEADER.unpack_from(buf, off + 11)
        if rosctr == ROSCTR_JOB:
            param = off + 17
            if param_len < 2 or 17 + param_len + data_len != size:
                return None
            function, items = buf[param], buf[param + 1]
            # every item an S7ANY address of 10 bytes: none that parse_item would refuse
            if (function not in POLLED_FUNCTIONS or param_len != 2 + 12 * items
                    or buf[param + 3:param + param_len:12] != b"\x0a" * items):
                return None
            jobs = decoder._jobs
            jobs[pdu_ref] = (frame, function)
            if len(jobs) > 4096:
                jobs.pop(next(iter(jobs)))
            buffer.resyncing = False
            return _JOB
        if rosctr == ROSCTR_ACK_DATA:
            if param_len < 2 or 19 + param_len + data_len != size or buf[off + 19] not in POLLED_FUNCTIONS:
                return None
            decoder._jobs.pop(pdu_ref, None)
            buffer.resyncing = False
            return _ACK
        return None


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

def zeek_s7comm(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    result.note("s7comm.log: item addresses, block names and SZL ids are not in the base ICSNPP "
                "s7comm log")
    rosctr = zeek.integer(record.get("rosctr_code", record.get("rosctr"))) or 0
    function = zeek.integer(record.get("function_code"))
    pdu_ref = zeek.integer(record.get("pdu_reference")) or 0
    orig = zeek.is_orig(record)
    if rosctr == 1 and function is not None:
        return [S7JobRequest(pdu_ref=pdu_ref, function=function, **zeek.ends(record, orig))]
    if rosctr in (2, 3):
        return [S7JobResponse(pdu_ref=pdu_ref, function=function, rosctr=rosctr,
                              error_class=zeek.integer(record.get("error_class")) or 0,
                              error_code=zeek.integer(record.get("error_code")) or 0, **zeek.ends(record, orig))]
    if rosctr == 7:
        group = zeek.integer(record.get("function_code")) or 0
        sub = zeek.integer(record.get("subfunction_code")) or 0
        cls = S7UserDataRequest if orig else S7UserDataResponse
        return [cls(pdu_ref=pdu_ref, group=group, subfunction=sub, method_type=4 if orig else 8,
                    **zeek.ends(record, orig))]
    return []


PROTOCOL = register_protocol(ProtocolSpec(
    name="s7comm", module=__name__, decoders=(SPEC,), run=S7Run,
    adapters={S7JobRequest: Adapter(plc_command, (PlcCommand,)), S7JobResponse: IGNORED,
              S7ConnectRequest: IGNORED, S7UserDataRequest: Adapter(set_clock, (PlcCommand,)),
              S7UserDataResponse: IGNORED, S7PlusRequest: IGNORED},
    zeek={"s7comm": zeek_s7comm},
))
