"""Modbus/TCP: MBAP framing, every public function code, request/response pairing.

Event types are declared here first (the contract other parts build on); the decoder follows.

Reads that a master repeats every cycle are the bulk of crane traffic, so the pipeline does
not hand them to detectors one object per PDU: it folds each (master, slave, unit, function,
address, quantity) into a ``RegisterSeries`` of timestamps, frames and values. Everything
else (writes, diagnostics, device identification, exceptions, unknown codes) is an event.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cranewatch.errors import DecodeError
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext
from cranewatch.protocols.framing import decode_error
from cranewatch.protocols.mbap_streams import Adus, Segments, frame_streams
from cranewatch.protocols.registry import (
    AS_IS,
    BatchView,
    ProtocolRun,
    ProtocolSpec,
    register_protocol,
)
from cranewatch.sources import zeek_fields as zeek

if TYPE_CHECKING:
    from cranewatch.flows import Flow

# Function codes by name (Modbus Application Protocol v1.1b3).
READ_COILS = 1
READ_DISCRETE_INPUTS = 2
READ_HOLDING_REGISTERS = 3
READ_INPUT_REGISTERS = 4
WRITE_SINGLE_COIL = 5
WRITE_SINGLE_REGISTER = 6
READ_EXCEPTION_STATUS = 7
DIAGNOSTICS = 8
GET_COMM_EVENT_COUNTER = 11
GET_COMM_EVENT_LOG = 12
WRITE_MULTIPLE_COILS = 15
WRITE_MULTIPLE_REGISTERS = 16
REPORT_SERVER_ID = 17
READ_FILE_RECORD = 20
WRITE_FILE_RECORD = 21
MASK_WRITE_REGISTER = 22
READ_WRITE_MULTIPLE_REGISTERS = 23
READ_FIFO_QUEUE = 24
ENCAPSULATED_INTERFACE = 43  # MEI type 14 = read device identification

READ_FUNCTIONS = frozenset({1, 2, 3, 4})
WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 22, 23, 21})

# The table a function code addresses: "CO" coils, "DI" discrete inputs,
# "HR" holding registers, "IR" input registers.
TABLE_OF_FUNCTION: dict[int, str] = {1: "CO", 5: "CO", 15: "CO", 2: "DI", 3: "HR", 6: "HR", 16: "HR",
                                     22: "HR", 23: "HR", 24: "HR", 4: "IR"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusRequest(Event):
    """A request PDU from a master (client) to a slave (server).

    ``address``/``quantity``: start address and count for reads and writes (for FC 23 the
    write range; the read range is ``read_address``/``read_quantity``). ``values``: registers
    or coil bits (0/1) written. ``sub_function``: FC 8 diagnostics sub-function, or the MEI
    type for FC 43. ``detail`` holds what only some codes carry (FC 22 masks, FC 43 read code
    and object id, FC 20/21 file records).
    """

    kind: ClassVar[str] = "modbus_request"
    transaction_id: int
    unit_id: int
    function: int
    address: int | None = None
    quantity: int | None = None
    values: tuple[int, ...] = ()
    sub_function: int | None = None
    read_address: int | None = None
    read_quantity: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusResponse(Event):
    """A response PDU from a slave, paired with its request by transaction id where seen.

    ``function`` is the function code without the exception bit; ``exception_code`` is set
    for exception responses (function | 0x80). ``address``/``quantity`` come from the paired
    request (None when the request was not seen), ``values`` are the registers or bits read
    (or echoed by a write). ``request_frame`` is the frame of the paired request.
    """

    kind: ClassVar[str] = "modbus_response"
    transaction_id: int
    unit_id: int
    function: int
    exception_code: int | None = None
    address: int | None = None
    quantity: int | None = None
    values: tuple[int, ...] = ()
    request_frame: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RegisterSeries:
    """Every answered read of one range by one master from one slave, as arrays.

    ``ts``/``frame`` are those of the responses; ``values`` has one row per response and one
    column per register or bit (``quantity`` columns; bits as 0/1). ``requests`` counts the
    requests, ``exceptions`` the exception responses, ``unanswered`` requests without answer.
    """

    master: str
    slave: str
    unit_id: int
    function: int
    address: int
    quantity: int
    ts: np.ndarray
    frame: np.ndarray
    values: np.ndarray
    requests: int = 0
    exceptions: int = 0
    unanswered: int = 0
    source: str = ""
    # True: the values went out in time slices during the run (``ModbusBook.take_slices``) and
    # this is what is left of the series: its answer count, and ts/frame/values that repeat
    # its first answer that many times (read-only views costing nothing). ``len(ts)``,
    # ``ts[0]``, ``frame[0]`` and the counts are the whole series'; the values are not.
    summary: bool = False

    @property
    def table(self) -> str:
        return TABLE_OF_FUNCTION.get(self.function, "?")


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------

MBAP_LEN = 7  # transaction id, protocol id, length, unit id
MAX_MBAP_LENGTH = 254
# Framing accepts longer ADUs than the standard's 254: some devices send 255 (seen in the
# public Modicon capture), and tshark decodes them; a length field beyond this is garbage.
MAX_FRAMING_LENGTH = 1024

# Request byte counts that the standard fixes, to reject what cannot be Modbus.
_MAX_READ_BITS = 2000
_MAX_READ_REGISTERS = 125


def _u16(data: bytes, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


def _words(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise DecodeError(f"odd register byte count {len(data)}")
    return struct.unpack(f">{len(data) // 2}H", data)


def _bits(data: bytes, count: int | None) -> tuple[int, ...]:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if count is not None:
        bits = bits[:count]
    return tuple(bits.tolist())


def _need(pdu: bytes, size: int, what: str) -> None:
    if len(pdu) < size:
        raise DecodeError(f"{what}: PDU of {len(pdu)} bytes, need {size}")


def _exact(pdu: bytes, size: int, what: str) -> None:
    if len(pdu) != size:
        raise DecodeError(f"{what}: PDU of {len(pdu)} bytes, expected {size}")


def _byte_counted(pdu: bytes, at: int, what: str) -> bytes:
    """The ``count``-prefixed data at ``at`` (count is one byte), checked against the PDU."""
    _need(pdu, at + 1, what)
    count = pdu[at]
    data = pdu[at + 1 : at + 1 + count]
    if len(data) != count or len(pdu) != at + 1 + count:
        raise DecodeError(f"{what}: byte count {count} but {len(pdu) - at - 1} data bytes")
    return data


@dataclass(frozen=True, slots=True)
class RequestFields:
    """What a request PDU says, before it becomes an event (shared by both decode paths)."""

    function: int
    address: int | None = None
    quantity: int | None = None
    values: tuple[int, ...] = ()
    sub_function: int | None = None
    read_address: int | None = None
    read_quantity: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseFields:
    """What a response PDU says; ``address``/``quantity`` only where the response echoes them."""

    function: int
    exception_code: int | None = None
    address: int | None = None
    quantity: int | None = None
    values: tuple[int, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)


def parse_request(pdu: bytes) -> RequestFields:
    """Decode one request PDU (function code first). Raises DecodeError when malformed."""
    _need(pdu, 1, "request")
    fc = pdu[0]
    body = pdu[1:]
    if fc in (1, 2, 3, 4):
        _exact(body, 4, f"FC {fc} request")
        quantity = _u16(body, 2)
        limit = _MAX_READ_BITS if fc in (1, 2) else _MAX_READ_REGISTERS
        read_detail: dict[str, Any] = {} if 1 <= quantity <= limit else {"illegal_quantity": True}
        return RequestFields(fc, address=_u16(body, 0), quantity=quantity, detail=read_detail)
    if fc in (5, 6):
        _exact(body, 4, f"FC {fc} request")
        return single_write(fc, _u16(body, 0), _u16(body, 2))
    if fc in (7, 11, 12, 17):
        _exact(body, 0, f"FC {fc} request")
        return RequestFields(fc)
    if fc == 8:
        _need(body, 2, "FC 8 request")
        return RequestFields(fc, sub_function=_u16(body, 0), values=_words(body[2:]))
    if fc == 15:
        _need(body, 5, "FC 15 request")
        quantity = _u16(body, 2)
        data = _byte_counted(body, 4, "FC 15 request")
        if len(data) != (quantity + 7) // 8:
            raise DecodeError(f"FC 15 request: {quantity} coils in {len(data)} bytes")
        return RequestFields(fc, address=_u16(body, 0), quantity=quantity,
                             values=_bits(data, quantity))
    if fc == 16:
        _need(body, 5, "FC 16 request")
        quantity = _u16(body, 2)
        data = _byte_counted(body, 4, "FC 16 request")
        if len(data) != 2 * quantity:
            raise DecodeError(f"FC 16 request: {quantity} registers in {len(data)} bytes")
        return RequestFields(fc, address=_u16(body, 0), quantity=quantity, values=_words(data))
    if fc == 20:
        data = _byte_counted(body, 0, "FC 20 request")
        if len(data) % 7:
            raise DecodeError(f"FC 20 request: sub-requests of {len(data)} bytes")
        records = [
            {"reference_type": data[i], "file": _u16(data, i + 1), "record": _u16(data, i + 3),
             "length": _u16(data, i + 5)}
            for i in range(0, len(data), 7)
        ]
        return RequestFields(fc, detail={"records": records})
    if fc == 21:
        data = _byte_counted(body, 0, "FC 21 request")
        return RequestFields(fc, detail={"records": _file_records(data, "FC 21 request")})
    if fc == 22:
        _exact(body, 6, "FC 22 request")
        return RequestFields(fc, address=_u16(body, 0), quantity=1,
                             detail={"and_mask": _u16(body, 2), "or_mask": _u16(body, 4)})
    if fc == 23:
        _need(body, 9, "FC 23 request")
        quantity = _u16(body, 6)
        data = _byte_counted(body, 8, "FC 23 request")
        if len(data) != 2 * quantity:
            raise DecodeError(f"FC 23 request: {quantity} registers in {len(data)} bytes")
        return RequestFields(fc, address=_u16(body, 4), quantity=quantity, values=_words(data),
                             read_address=_u16(body, 0), read_quantity=_u16(body, 2))
    if fc == 24:
        _exact(body, 2, "FC 24 request")
        return RequestFields(fc, address=_u16(body, 0))
    if fc == 43:
        _need(body, 1, "FC 43 request")
        mei = body[0]
        if mei == 14:
            _need(body, 3, "FC 43/14 request")
            device_detail: dict[str, Any] = {"read_code": body[1], "object_id": body[2]}
            if len(body) > 3:
                device_detail["trailing"] = body[3:].hex()  # tshark ignores them as well
            return RequestFields(fc, sub_function=mei, detail=device_detail)
        return RequestFields(fc, sub_function=mei, detail={"data": body[1:].hex()})
    if fc & 0x80:
        raise DecodeError(f"function code {fc} (an exception response) in a request")
    # User-defined and unassigned codes: keep the bytes, do not guess their meaning.
    return RequestFields(fc, detail={"data": body.hex()})


def single_write(fc: int, address: int, raw: int) -> RequestFields:
    """An FC 5 or FC 6 request from its two words (FC 5 means on / off by 0xFF00 / 0x0000)."""
    if fc == 5:
        coil_detail: dict[str, Any] = {} if raw in (0, 0xFF00) else {"raw_value": raw}
        return RequestFields(fc, address=address, quantity=1, values=(1 if raw else 0,),
                             detail=coil_detail)
    return RequestFields(fc, address=address, quantity=1, values=(raw,))


def write_echo(fc: int, address: int, word: int) -> ResponseFields:
    """The answer to a write (FC 5, 6, 15, 16) from its two words: FC 5 and 6 echo the address
    and value, FC 15 and 16 the address and quantity."""
    if fc == 5:
        return ResponseFields(fc, address=address, quantity=1, values=(1 if word else 0,))
    if fc == 6:
        return ResponseFields(fc, address=address, quantity=1, values=(word,))
    return ResponseFields(fc, address=address, quantity=word)


def _file_records(data: bytes, what: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 7:
            raise DecodeError(f"{what}: truncated file record")
        length = _u16(data, at + 5)
        values = data[at + 7 : at + 7 + 2 * length]
        if len(values) != 2 * length:
            raise DecodeError(f"{what}: file record of {length} registers truncated")
        records.append({"reference_type": data[at], "file": _u16(data, at + 1),
                        "record": _u16(data, at + 3), "values": list(_words(values))})
        at += 7 + 2 * length
    return records


def parse_response(pdu: bytes, request: RequestFields | None = None) -> ResponseFields:
    """Decode one response PDU; ``request`` (the paired request) sizes bit reads."""
    _need(pdu, 1, "response")
    code = pdu[0]
    body = pdu[1:]
    if code & 0x80:
        _exact(body, 1, f"FC {code & 0x7F} exception response")
        return ResponseFields(code & 0x7F, exception_code=body[0])
    fc = code
    if fc in (1, 2):
        data = _byte_counted(body, 0, f"FC {fc} response")
        count = request.quantity if request is not None and request.function == fc else None
        if count is not None and len(data) != (count + 7) // 8:
            raise DecodeError(f"FC {fc} response: {len(data)} bytes for {count} bits")
        return ResponseFields(fc, values=_bits(data, count))
    if fc in (3, 4, 23):
        data = _byte_counted(body, 0, f"FC {fc} response")
        values = _words(data)
        if request is not None and request.function == fc:
            wanted = request.read_quantity if fc == 23 else request.quantity
            if wanted is not None and wanted != len(values):
                raise DecodeError(f"FC {fc} response: {len(values)} registers for {wanted} asked")
        return ResponseFields(fc, values=values)
    if fc in (5, 6, 15, 16):
        _exact(body, 4, f"FC {fc} response")
        return write_echo(fc, _u16(body, 0), _u16(body, 2))
    if fc == 7:
        _exact(body, 1, "FC 7 response")
        return ResponseFields(fc, values=(body[0],))
    if fc == 8:
        _need(body, 2, "FC 8 response")
        return ResponseFields(fc, values=_words(body[2:]), detail={"sub_function": _u16(body, 0)})
    if fc == 11:
        _exact(body, 4, "FC 11 response")
        return ResponseFields(fc, detail={"status": _u16(body, 0), "event_count": _u16(body, 2)})
    if fc == 12:
        data = _byte_counted(body, 0, "FC 12 response")
        if len(data) < 6:
            raise DecodeError("FC 12 response: shorter than status and counters")
        return ResponseFields(fc, detail={"status": _u16(data, 0), "event_count": _u16(data, 2),
                                          "message_count": _u16(data, 4),
                                          "events": data[6:].hex()})
    if fc == 17:
        data = _byte_counted(body, 0, "FC 17 response")
        return ResponseFields(fc, detail={"server_id": data.hex()})
    if fc == 20:
        data = _byte_counted(body, 0, "FC 20 response")
        groups: list[dict[str, Any]] = []
        at = 0
        while at < len(data):
            length = data[at]
            chunk = data[at + 1 : at + 1 + length]
            if length < 1 or len(chunk) != length:
                raise DecodeError("FC 20 response: truncated sub-response")
            groups.append({"reference_type": chunk[0], "values": list(_words(chunk[1:]))})
            at += 1 + length
        return ResponseFields(fc, detail={"records": groups})
    if fc == 21:
        data = _byte_counted(body, 0, "FC 21 response")
        return ResponseFields(fc, detail={"records": _file_records(data, "FC 21 response")})
    if fc == 22:
        _exact(body, 6, "FC 22 response")
        return ResponseFields(fc, address=_u16(body, 0), quantity=1,
                              detail={"and_mask": _u16(body, 2), "or_mask": _u16(body, 4)})
    if fc == 24:
        _need(body, 4, "FC 24 response")
        byte_count = _u16(body, 0)
        count = _u16(body, 2)
        data = body[4:]
        if byte_count != len(body) - 2 or len(data) != 2 * count:
            raise DecodeError(f"FC 24 response: {count} registers, byte count {byte_count}")
        return ResponseFields(fc, quantity=count, values=_words(data))
    if fc == 43:
        _need(body, 1, "FC 43 response")
        if body[0] == 14:
            return ResponseFields(fc, detail=_device_identification(body))
        return ResponseFields(fc, detail={"mei_type": body[0], "data": body[1:].hex()})
    return ResponseFields(fc, detail={"data": body.hex()})


def _device_identification(body: bytes) -> dict[str, Any]:
    _need(body, 6, "FC 43/14 response")
    objects: dict[str, str] = {}
    count = body[5]
    at = 6
    for _ in range(count):
        if at + 2 > len(body):
            raise DecodeError("FC 43/14 response: truncated object list")
        object_id, length = body[at], body[at + 1]
        value = body[at + 2 : at + 2 + length]
        if len(value) != length:
            raise DecodeError(f"FC 43/14 response: object {object_id} truncated")
        objects[str(object_id)] = value.decode("latin-1")
        at += 2 + length
    found: dict[str, Any] = {"mei_type": 14, "read_code": body[1], "conformity": body[2],
                             "more_follows": body[3], "next_object_id": body[4],
                             "objects": objects}
    if at != len(body):
        found["trailing"] = body[at:].hex()
    return found


def _header_fits(buffer: bytes, at: int) -> bool:
    """Whether an MBAP header can start at ``at`` (protocol id 0, a sane length)."""
    return not (buffer[at + 2] or buffer[at + 3]) and 2 <= _u16(buffer, at + 4) <= MAX_FRAMING_LENGTH


def _resync_point(buffer: bytes, start: int) -> int | None:
    """Where framing most likely resumes after lost bytes.

    Best: a header whose ADU ends where the data ends (or too close to it to judge) or where
    another header starts. Else the first header whose ADU runs past the data (more bytes
    will tell).
    """
    runs_past: int | None = None
    for at in range(start, len(buffer) - MBAP_LEN):
        if not _header_fits(buffer, at):
            continue
        end = at + 6 + _u16(buffer, at + 4)
        if end <= len(buffer) and (len(buffer) - end <= MBAP_LEN or _header_fits(buffer, end)):
            return at  # too few bytes after it to judge the next header count as a fit
        if end > len(buffer) and runs_past is None:
            runs_past = at
    return runs_past


@dataclass(frozen=True, slots=True)
class _Pending:
    """A request waiting for its response (kept per flow, keyed by transaction id)."""

    frame: int
    ts: float
    unit_id: int
    fields: RequestFields


def looks_like_mbap(data: bytes) -> bool:
    """Protocol id 0 and a sane length: the content probe for port-less detection."""
    if len(data) < 8:
        return False
    length = _u16(data, 4)
    if data[2] or data[3] or not 2 <= length <= MAX_FRAMING_LENGTH:
        return False
    # The first segment holds whole ADUs (a master writes one at a time): the length must
    # land on the end of the data or on another MBAP header.
    end = 6 + length
    return end == len(data) or (end < len(data) and looks_like_mbap(data[end:]))


def probe(client_first: bytes, server_first: bytes) -> bool:
    if client_first:
        return looks_like_mbap(client_first)
    return looks_like_mbap(server_first)


class ModbusDecoder:
    """Decodes one Modbus/TCP connection: MBAP framing per direction, pairing by transaction.

    Bytes that do not fit in an ADU yet are kept until the next ``feed``. ``feed`` never
    raises for what it is given: a malformed PDU still becomes an event (marked
    ``detail["malformed"]``) and its ``DecodeError`` goes to ``problems`` (the pipeline turns
    each into a warning naming the file and frame); bytes that are not an MBAP header are
    skipped to the next plausible header, with one problem per run of skipped bytes.
    """

    # Unanswered requests kept per connection; a master that never gets answers must not
    # grow memory without bound.
    MAX_PENDING = 256

    def __init__(self, context: FlowContext) -> None:
        self.context = context
        self._buffer = {True: b"", False: b""}
        self._resync = {True: False, False: False}
        self.pending: dict[int, _Pending] = {}
        self.unanswered: list[_Pending] = []
        self.problems: list[DecodeError] = []

    def idle(self) -> bool:
        """Nothing held between PDUs: the fast path may take over this connection."""
        return not (self._buffer[True] or self._buffer[False]
                    or self._resync[True] or self._resync[False] or self.unanswered)

    def framed(self) -> bool:
        """In step with the MBAP framing of both directions (any held bytes start an ADU) and
        nothing to report: the batch path may take the streams on from here."""
        return not (self._resync[True] or self._resync[False] or self.unanswered)

    def held(self, from_client: bool) -> bytes:
        """The bytes of a partial ADU kept from one direction."""
        return self._buffer[from_client]

    def hold(self, from_client: bool, data: bytes) -> None:
        """Keep ``data`` (the start of an ADU, framed by the batch path) for the next ``feed``."""
        self._buffer[from_client] = data

    def gap(self, from_client: bool) -> None:
        self._buffer[from_client] = b""
        self._resync[from_client] = True

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        events: list[Event] = []
        buffer = self._buffer[from_client] + data if self._buffer[from_client] else data
        at = 0
        while len(buffer) - at >= MBAP_LEN + 1:
            resync = self._resync[from_client]
            if resync or not _header_fits(buffer, at):
                found = _resync_point(buffer, at)
                if found != at:
                    skipped = (found if found is not None else len(buffer)) - at
                    protocol_id, length = _u16(buffer, at + 2), _u16(buffer, at + 4)
                    # Keep what may be the start of the next header.
                    at = found if found is not None else max(at, len(buffer) - MBAP_LEN)
                    if not resync:
                        self._resync[from_client] = True
                        self.problems.append(decode_error(
                            f"not a Modbus/TCP header (protocol id {protocol_id}, length"
                            f" {length}); {skipped} bytes skipped", self.context, frame))
                    if found is None:
                        break
                    continue
            end = at + 6 + _u16(buffer, at + 4)
            if end > len(buffer):
                break
            self._resync[from_client] = False
            adu = buffer[at:end]
            at = end
            event, problem = self._decode_adu(from_client, adu, ts, frame)
            events.append(event)
            if problem is not None:
                self.problems.append(decode_error(problem.message, self.context, frame))
        self._buffer[from_client] = buffer[at:]
        if self._resync[from_client] and len(self._buffer[from_client]) > MAX_FRAMING_LENGTH + 6:
            self._buffer[from_client] = b""
        return events

    def _decode_adu(self, from_client: bool, adu: bytes, ts: float,
                    frame: int) -> tuple[Event, DecodeError | None]:
        """One ADU as an event. A malformed PDU still gives an event (header, function code,
        ``detail["malformed"]``): a fuzzing master is worth seeing; the error comes with it."""
        ctx = self.context
        transaction_id = _u16(adu, 0)
        unit_id = adu[6]
        pdu = adu[7:]
        problem: DecodeError | None = None
        if from_client:
            try:
                fields = parse_request(pdu)
            except DecodeError as exc:
                problem = exc.with_traceback(None)  # a record: see ReportsProblems.report
                fields = RequestFields(pdu[0], detail={"malformed": exc.message, "data": pdu.hex()})
            if fields.detail.get("illegal_quantity"):
                limit = _MAX_READ_BITS if fields.function in (1, 2) else _MAX_READ_REGISTERS
                problem = DecodeError(f"FC {fields.function} request: quantity {fields.quantity}"
                                      f" outside 1..{limit}")
            if transaction_id in self.pending:
                self.unanswered.append(self.pending.pop(transaction_id))
            if len(self.pending) >= self.MAX_PENDING:
                oldest = next(iter(self.pending))
                self.unanswered.append(self.pending.pop(oldest))
            self.pending[transaction_id] = _Pending(frame, ts, unit_id, fields)
            return request_event(ctx, transaction_id, unit_id, fields, ts, frame), problem
        request = self.pending.get(transaction_id)
        if request is not None and (request.fields.function != pdu[0] & 0x7F
                                    or request.unit_id != unit_id):
            request = None  # a different question (or unit) was asked with this id: not its answer
        if request is not None:
            del self.pending[transaction_id]
        try:
            answer = parse_response(pdu, request.fields if request is not None else None)
        except DecodeError as exc:
            problem = exc.with_traceback(None)
            code = pdu[0]
            answer = ResponseFields(
                code & 0x7F, exception_code=pdu[1] if code & 0x80 and len(pdu) > 1 else None,
                detail={"malformed": exc.message, "data": pdu.hex()})
        asked, asked_frame = (request.fields, request.frame) if request is not None else (None, None)
        return (response_event(ctx, transaction_id, unit_id, answer, asked, asked_frame, ts, frame),
                problem)


def request_event(ctx: FlowContext, transaction_id: int, unit_id: int, fields: RequestFields,
                  ts: float, frame: int) -> ModbusRequest:
    return ModbusRequest(
        ts=ts, frame=frame, src=ctx.client, dst=ctx.server, sport=ctx.client_port,
        dport=ctx.server_port, source=ctx.source, transaction_id=transaction_id,
        unit_id=unit_id, function=fields.function, address=fields.address,
        quantity=fields.quantity, values=fields.values, sub_function=fields.sub_function,
        read_address=fields.read_address, read_quantity=fields.read_quantity,
        detail=fields.detail,
    )


def response_event(ctx: FlowContext, transaction_id: int, unit_id: int, answer: ResponseFields,
                   asked: RequestFields | None, asked_frame: int | None, ts: float,
                   frame: int) -> ModbusResponse:
    """The event of an answer; ``asked`` and ``asked_frame``: its request, None when unseen."""
    address, quantity = answer.address, answer.quantity
    if asked is not None and address is None:  # writes echo their own range: keep it
        if asked.function == 23:
            address, quantity = asked.read_address, asked.read_quantity
        elif asked.address is not None:
            address, quantity = asked.address, asked.quantity
    return ModbusResponse(
        ts=ts, frame=frame, src=ctx.server, dst=ctx.client, sport=ctx.server_port,
        dport=ctx.client_port, source=ctx.source, transaction_id=transaction_id,
        unit_id=unit_id, function=answer.function, exception_code=answer.exception_code,
        address=address, quantity=quantity, values=answer.values,
        request_frame=asked_frame, detail=answer.detail,
    )


SPEC = DecoderSpec(name="modbus", transport="tcp", ports=frozenset({502}), factory=ModbusDecoder,
                   probe=probe, priority=10, aliases=("mbtcp",))


# --------------------------------------------------------------------------------------------
# Folding reads into series, and the per-master / per-slave tallies of the analysis
# --------------------------------------------------------------------------------------------

SeriesKey = tuple[str, str, int, int, int, int]  # master, slave, unit, function, address, quantity
# Bounds of the master/slave tallies (the result's summaries): a scan of every address from
# every host must not grow them without end. Beyond them requests are still counted by function.
MAX_PEERS = 65_536  # masters (and slaves) tallied, and peers listed per master or slave
MAX_RANGES = 4_096  # distinct (table, address, quantity, access) ranges per master or slave


@dataclass(slots=True)
class _SeriesParts:
    """One series while it is being read: answers as loose arrays (appended as they come), then
    packed every ``SEAL_ROWS`` of them; the slow path's answers as Python rows at first."""

    packed: list[_Packed] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    frame: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    loose: int = 0  # answers in ts/frame/values
    row_ts: list[float] = field(default_factory=list)
    row_frame: list[int] = field(default_factory=list)
    row_values: list[tuple[int, ...]] = field(default_factory=list)
    requests: int = 0
    exceptions: int = 0
    unanswered: int = 0
    source: str = ""


@dataclass(slots=True)
class PeerTally:
    """What one master asked (or one slave was asked): counts by function and by range."""

    address: str
    peers: set[str] = field(default_factory=set)
    units: set[int] = field(default_factory=set)
    functions: dict[int, int] = field(default_factory=dict)
    # (table, address, quantity, "read" | "write") -> requests
    ranges: dict[tuple[str, int, int, str], int] = field(default_factory=dict)
    exceptions: int = 0
    first_seen: float = float("inf")
    last_seen: float = float("-inf")


class ModbusBook:
    """Collects read series and master/slave tallies from both decode paths.

    The slow path (``ModbusDecoder`` events) and the vectorised fast path add the same
    things here, so what they produce can be compared exactly. Answers are kept packed
    (``_Packed``: polling repeats itself, so a series costs a few bytes an answer) until
    ``take_series`` hands each series out whole.
    """

    def __init__(self) -> None:
        self.series: dict[SeriesKey, _SeriesParts] = {}
        self.heads: dict[SeriesKey, _SeriesHead] = {}  # what went out in slices, per series
        self.masters: dict[str, PeerTally] = {}
        self.slaves: dict[str, PeerTally] = {}
        self.rows = 0  # answers kept as Python rows over every series (see ROW_BUDGET)
        # False once the run said that the values go out in slices nobody takes (only
        # ``fold_slices``): each series is then only counted, in ``counted`` (see ``_Counted``)
        self.values_wanted = True
        self.counted = _Counted()

    def _parts(self, key: SeriesKey, source: str) -> _SeriesParts:
        parts = self.series.get(key)
        if parts is None:
            parts = self.series[key] = _SeriesParts(source=source)
        return parts

    def tally_request(self, master: str, slave: str, unit: int, function: int,
                      address: int | None, quantity: int | None, first: float, last: float,
                      count: int = 1) -> None:
        for book, me, peer in ((self.masters, master, slave), (self.slaves, slave, master)):
            tally = book.get(me)
            if tally is None:
                if len(book) >= MAX_PEERS:
                    continue
                tally = book[me] = PeerTally(me)
            if len(tally.peers) < MAX_PEERS:
                tally.peers.add(peer)
            tally.units.add(unit)
            tally.functions[function] = tally.functions.get(function, 0) + count
            if address is not None and function in TABLE_OF_FUNCTION:
                access = "read" if function in READ_FUNCTIONS or function == 24 else "write"
                rng = (TABLE_OF_FUNCTION[function], address, quantity or 1, access)
                known = tally.ranges.get(rng)
                if known is not None or len(tally.ranges) < MAX_RANGES:
                    tally.ranges[rng] = (known or 0) + count
            tally.first_seen = min(tally.first_seen, first)
            tally.last_seen = max(tally.last_seen, last)

    def tally_exception(self, master: str, slave: str) -> None:
        for book, me in ((self.masters, master), (self.slaves, slave)):
            if me in book:
                book[me].exceptions += 1

    def read_requests(self, key: SeriesKey, count: int, source: str) -> None:
        if not self.values_wanted:
            i = self.counted.id_of(key, source)  # first: it may grow the columns
            self.counted.counts[1, i] += count
            return
        self._parts(key, source).requests += count

    def read_unanswered(self, key: SeriesKey, count: int = 1) -> None:
        if not self.values_wanted:
            i = self.counted.id_of(key, "")
            self.counted.counts[3, i] += count
            return
        self._parts(key, "").unanswered += count

    def read_exception(self, key: SeriesKey) -> None:
        if not self.values_wanted:
            i = self.counted.id_of(key, "")
            self.counted.counts[2, i] += 1
            return
        self._parts(key, "").exceptions += 1

    def read_answer(self, key: SeriesKey, ts: float, frame: int, values: tuple[int, ...]) -> None:
        if not self.values_wanted:
            self.counted.answer(key, ts, frame)
            return
        parts = self._parts(key, "")
        parts.row_ts.append(ts)
        parts.row_frame.append(frame)
        parts.row_values.append(values)
        self.rows += 1
        if len(parts.row_ts) >= ROWS_PACKED:
            self.rows -= len(parts.row_ts)
            _pack_rows(parts, key[5])
            if parts.loose >= SEAL_ROWS:
                _seal(parts)
        elif self.rows >= ROW_BUDGET:
            self.pack_rows()

    def pack_rows(self) -> None:
        """Pack the Python rows of every series (the slow path's answers): with a thousand
        series each below ``ROWS_PACKED``, rows of ~0.5-5 KB each would otherwise pile up
        to gigabytes before any series packs its own."""
        for key, parts in self.series.items():
            if parts.row_ts:
                _pack_rows(parts, key[5])
                if parts.loose >= SEAL_ROWS:
                    _seal(parts)
        self.rows = 0

    def read_answers(self, key: SeriesKey, ts: np.ndarray, frame: np.ndarray,
                     values: np.ndarray) -> None:
        parts = self._parts(key, "")
        parts.ts.append(ts)
        parts.frame.append(frame)
        parts.values.append(values)
        parts.loose += len(ts)
        if parts.loose >= SEAL_ROWS:
            _seal(parts)

    def observe(self, event: Event) -> bool:
        """Fold a decoded Modbus event; True when it was folded (not for the event stream)."""
        if isinstance(event, ModbusRequest):
            self.tally_request(event.src, event.dst, event.unit_id, event.function, event.address,
                               event.quantity, event.ts, event.ts)
            if event.function in READ_FUNCTIONS and event.address is not None \
                    and not event.detail and _plain_read(event.function, event.quantity):
                self.read_requests(self.key_of(event), 1, event.source)
                return True
            return False
        if isinstance(event, ModbusResponse):
            if event.exception_code is not None:
                self.tally_exception(event.dst, event.src)
            folded = event.function in READ_FUNCTIONS and event.request_frame is not None \
                and event.address is not None and _plain_read(event.function, event.quantity)
            if not folded:
                return False
            key = self.key_of(event)
            if event.exception_code is not None:
                self.read_exception(key)
                return False  # exceptions stay events too: detectors want each one
            if event.detail or len(event.values) != event.quantity:
                return False  # a malformed answer: an event (and a warning), not a row
            self.read_answer(key, event.ts, event.frame, event.values)
            return True
        return False

    @staticmethod
    def key_of(event: ModbusRequest | ModbusResponse) -> SeriesKey:
        if isinstance(event, ModbusRequest):
            master, slave = event.src, event.dst
        else:
            master, slave = event.dst, event.src
        return (master, slave, event.unit_id, event.function, event.address or 0,
                event.quantity or 0)

    def unanswered(self, master: str, slave: str, pending: _Pending) -> None:
        asked = pending.fields
        if asked.function in READ_FUNCTIONS and asked.address is not None and not asked.detail \
                and _plain_read(asked.function, asked.quantity):
            self.read_unanswered((master, slave, pending.unit_id, asked.function, asked.address,
                                  asked.quantity or 0))

    def take_series(self) -> Iterator[RegisterSeries]:
        """Every series, rows in time order (ties by frame), one at a time; empties the book.

        Each series' pieces are let go as it is built, so memory does not double at the end.
        Once values went out in slices (``take_slices``), each series is its summary instead
        (``RegisterSeries.summary``), counting what every slice carried.
        """
        if self.counted:
            yield from self.counted.series()
            return
        if not self.heads:
            yield from self._take()
            return
        for piece in self._take():
            self._note(piece)
        heads, self.heads = self.heads, {}
        for key in sorted(heads):
            yield heads.pop(key).series(key)

    def take_slices(self) -> Iterator[RegisterSeries]:
        """The values gathered since the last call, a piece per series (rows in time order),
        for sinks that take them slice by slice; of each only a summary stays (``take_series``)."""
        for piece in self._take():
            self._note(piece)
            yield piece

    def fold_slices(self) -> None:
        """``take_slices`` with nobody to take the pieces: each series only adds to its
        summary. A series of a few loose answers in time order (``_in_order``) adds its first
        answer and counts without being built; the others are built and noted as there."""
        self.rows = 0
        keys = list(self.series)  # any order: take_series sorts the summaries
        heads = self.heads
        for start in range(0, len(keys), TAKE_CHUNK):
            chunk = keys[start : start + TAKE_CHUNK]
            ready = _in_order(chunk, self.series)
            for key in chunk:
                if key not in ready:
                    self._note(self._take_one(key))
                    continue
                parts = self.series.pop(key)
                head = heads.get(key)
                if head is None:
                    head = heads[key] = _SeriesHead(source=parts.source)
                first = (float(parts.ts[0][0]), int(parts.frame[0][0])) if parts.ts else None
                head.count(first, parts.loose, parts.requests, parts.exceptions,
                           parts.unanswered)

    def _note(self, piece: RegisterSeries) -> None:
        key = (piece.master, piece.slave, piece.unit_id, piece.function, piece.address, piece.quantity)
        head = self.heads.get(key)
        if head is None:
            head = self.heads[key] = _SeriesHead(source=piece.source)
        head.add(piece)

    def _take(self) -> Iterator[RegisterSeries]:
        self.rows = 0  # every series is taken, rows and all
        keys = sorted(self.series)
        for start in range(0, len(keys), TAKE_CHUNK):
            chunk = keys[start : start + TAKE_CHUNK]
            ready = _in_order(chunk, self.series)
            for key in chunk:
                yield self._take_ready(key) if key in ready else self._take_one(key)

    def _take_ready(self, key: SeriesKey) -> RegisterSeries:
        """A series of a few loose rows in time order, or of no answer (``_in_order``): as
        ``_take_one`` builds it (fresh arrays, not views of a batch's), without its sort."""
        parts = self.series.pop(key)
        master, slave, unit, function, address, quantity = key
        if len(parts.ts) == 1:
            ts, frame, values = parts.ts[0].copy(), parts.frame[0].copy(), parts.values[0].copy()
        elif parts.ts:
            ts, frame = np.concatenate(parts.ts), np.concatenate(parts.frame)
            values = np.concatenate(parts.values)
        else:
            ts, frame = np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
            values = np.zeros((0, quantity), np.uint16)
        return RegisterSeries(
            master=master, slave=slave, unit_id=unit, function=function, address=address,
            quantity=quantity, ts=ts, frame=frame, values=values, requests=parts.requests,
            exceptions=parts.exceptions, unanswered=parts.unanswered, source=parts.source)

    def _take_one(self, key: SeriesKey) -> RegisterSeries:
        """One series, its pieces concatenated and put in time order (ties by frame)."""
        parts = self.series.pop(key)
        master, slave, unit, function, address, quantity = key
        _pack_rows(parts, quantity)
        unpacked = [block.unpack() for block in parts.packed]
        ts = [u[0] for u in unpacked] + parts.ts
        frames = [u[1] for u in unpacked] + parts.frame
        values = [u[2] for u in unpacked] + parts.values
        all_ts = np.concatenate(ts) if ts else np.zeros(0, dtype=np.float64)
        all_frames = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int64)
        all_values = np.concatenate(values) if values else np.zeros((0, quantity), np.uint16)
        key_counts = (parts.requests, parts.exceptions, parts.unanswered, parts.source)
        del parts, unpacked, ts, frames, values
        order = np.lexsort((all_frames, all_ts))
        if not np.array_equal(order, np.arange(len(order))):  # mostly in order already
            all_ts, all_frames, all_values = all_ts[order], all_frames[order], all_values[order]
        return RegisterSeries(
            master=master, slave=slave, unit_id=unit, function=function, address=address,
            quantity=quantity, ts=all_ts, frame=all_frames,
            values=all_values, requests=key_counts[0], exceptions=key_counts[1],
            unanswered=key_counts[2], source=key_counts[3],
        )


# Series taken together (``ModbusBook._take``): those of at most SMALL_SERIES answers in one
# piece are checked for time order with one comparison over the chunk, not one sort each.
TAKE_CHUNK = 4096
SMALL_SERIES = 64


def _in_order(keys: list[SeriesKey], series: dict[SeriesKey, _SeriesParts]) -> set[SeriesKey]:
    """Those of ``keys`` whose answers are at most ``SMALL_SERIES`` loose rows (no packed
    block) already in time order (ties by frame), or none at all: ``ModbusBook._take_ready`` takes them without a
    sort. With tens of thousands of series of a few answers each (many short connections),
    this costs a few array operations per chunk instead of a sort per series."""
    ready: set[SeriesKey] = set()
    picked: list[SeriesKey] = []
    pieces_ts: list[np.ndarray] = []
    pieces_frame: list[np.ndarray] = []
    ends: list[int] = []
    end = 0
    for key in keys:
        parts = series[key]
        if parts.packed:
            continue
        if parts.row_ts:
            _pack_rows(parts, key[5])
        if not parts.ts:  # requests only (their answers, if any, come with a later slice)
            ready.add(key)
        elif parts.loose <= SMALL_SERIES:
            picked.append(key)
            pieces_ts += parts.ts
            pieces_frame += parts.frame
            end += parts.loose
            ends.append(end)
    if not picked:
        return ready
    ts = np.concatenate(pieces_ts)
    frame = np.concatenate(pieces_frame)
    # A row out of order: earlier time than the row before it, or same time and lower frame.
    # NaN times compare false, so a series holding one is left to the sort as well.
    in_order = np.ones(len(ts), dtype=bool)
    in_order[1:] = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (frame[1:] >= frame[:-1]))
    in_order[np.asarray(ends[:-1], dtype=np.int64)] = True  # a series' first row follows another series
    unordered = np.zeros(len(picked), dtype=bool)
    unordered[np.searchsorted(ends, np.flatnonzero(~in_order), side="right")] = True
    ready.update(key for key, bad in zip(picked, unordered.tolist(), strict=True) if not bad)
    return ready


@dataclass(slots=True)
class _SeriesHead:
    """What stays of a series whose values went out in slices: its first answer and counts."""

    source: str
    ts: float = math.inf
    frame: int = 0
    rows: int = 0
    requests: int = 0
    exceptions: int = 0
    unanswered: int = 0

    def add(self, piece: RegisterSeries) -> None:
        first = (float(piece.ts[0]), int(piece.frame[0])) if len(piece.ts) else None
        self.count(first, len(piece.ts), piece.requests, piece.exceptions, piece.unanswered)

    def count(self, first: tuple[float, int] | None, rows: int, requests: int, exceptions: int,
              unanswered: int) -> None:
        """Add a piece: its first answer's (ts, frame) (None without answers) and counts."""
        if first is not None and first < (self.ts, self.frame):
            self.ts, self.frame = first
        self.rows += rows
        self.requests += requests
        self.exceptions += exceptions
        self.unanswered += unanswered

    def series(self, key: SeriesKey) -> RegisterSeries:
        master, slave, unit, function, address, quantity = key
        ts = _repeated(np.array(self.ts if self.rows else 0.0, dtype=np.float64), self.rows)
        frame = _repeated(np.array(self.frame, dtype=np.int64), self.rows)
        values = _repeated(np.zeros(quantity, dtype=np.uint16), self.rows)
        return RegisterSeries(master=master, slave=slave, unit_id=unit, function=function,
                              address=address, quantity=quantity, ts=ts, frame=frame, values=values,
                              requests=self.requests, exceptions=self.exceptions,
                              unanswered=self.unanswered, source=self.source, summary=True)


class _Counted:
    """Series whose values nobody reads (``ModbusBook.values_wanted`` False), as columns: per
    series its answer count, the first answer (time, then frame), its requests, exceptions and
    unanswered requests, and the source of the first thing seen of it. What ``_SeriesHead``
    keeps of a series after its slices, kept from the start, so that many short connections (tens
    of thousands of keys) cost an array row each and a batch's reads add with a few array
    operations (``_fold_reads``) instead of Python per series per batch.

    A series has an id; it is found by its key (``ids``) or by its packed code (``codes``:
    ``_series_keys``' bit fields with a run-wide master/slave pair id in the top bits).
    """

    def __init__(self) -> None:
        self.ids: dict[SeriesKey, int] = {}
        self.codes: dict[int, int] = {}
        self.pairs: dict[tuple[str, str], int] = {}
        self.keys: list[SeriesKey] = []
        self.sources: list[str] = []
        self.ts = np.full(0, np.inf)
        self.frame = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros((4, 0), dtype=np.int64)  # rows, requests, exceptions, unanswered

    def __len__(self) -> int:
        return len(self.keys)

    def _code(self, key: SeriesKey) -> int:
        master, slave, unit, function, address, quantity = key
        pair = self.pairs.setdefault((master, slave), len(self.pairs))
        return pair << 48 | unit << 40 | function << 32 | address << 16 | quantity

    def _add(self, key: SeriesKey, code: int, source: str) -> int:
        new = len(self.keys)
        self.ids[key] = self.codes[code] = new
        self.keys.append(key)
        self.sources.append(source)
        if new == len(self.ts):
            grow = max(1024, new)
            self.ts = np.concatenate([self.ts, np.full(grow, np.inf)])
            self.frame = np.concatenate([self.frame, np.zeros(grow, dtype=np.int64)])
            self.counts = np.concatenate([self.counts, np.zeros((4, grow), dtype=np.int64)], axis=1)
        return new

    def id_of(self, key: SeriesKey, source: str) -> int:
        found = self.ids.get(key)
        return found if found is not None else self._add(key, self._code(key), source)

    def ids_of(self, keys: np.ndarray, pairs: list[tuple[str, str]],
               sources: list[str]) -> np.ndarray:
        """Ids of a batch's series keys (packed by ``_series_keys`` with the batch's pair ids
        ``pairs``); a key not seen before gets its id and ``sources[i]``."""
        run_pair = [self.pairs.setdefault(pair, len(self.pairs)) for pair in pairs]
        codes, low = self.codes, (1 << 48) - 1
        batch_keys: list[int] = keys.tolist()
        if len(self.pairs) <= 1 << 16:  # the run's codes fit 64 bits: made with NumPy
            packed = keys.astype(np.uint64)
            run_codes = (np.array(run_pair, dtype=np.uint64)[(packed >> np.uint64(48)).astype(np.int64)]
                         << np.uint64(48)) | (packed & np.uint64(low))
            run_code_list = run_codes.tolist()
        else:
            run_code_list = [run_pair[key >> 48] << 48 | (key & low) for key in batch_keys]
        out = [codes.get(code) for code in run_code_list]
        for i, found in enumerate(out):
            if found is None:
                key = batch_keys[i]
                master, slave = pairs[key >> 48]
                out[i] = self._add((master, slave, (key >> 40) & 0xFF, (key >> 32) & 0xFF,
                                    (key >> 16) & 0xFFFF, key & 0xFFFF), run_code_list[i],
                                   sources[i])
        return np.array(out, dtype=np.int64)

    def answers(self, ids: np.ndarray, counts: np.ndarray, ts: np.ndarray,
                frame: np.ndarray) -> None:
        """Add ``counts`` answers to the series ``ids`` (distinct), the first of each at
        (``ts``, ``frame``)."""
        self.counts[0, ids] += counts
        known_ts, known_frame = self.ts[ids], self.frame[ids]
        earlier = (ts < known_ts) | ((ts == known_ts) & (frame < known_frame))
        self.ts[ids[earlier]] = ts[earlier]
        self.frame[ids[earlier]] = frame[earlier]

    def answer(self, key: SeriesKey, ts: float, frame: int) -> None:
        i = self.id_of(key, "")
        self.counts[0, i] += 1
        if (ts, frame) < (float(self.ts[i]), int(self.frame[i])):
            self.ts[i], self.frame[i] = ts, frame

    def series(self) -> Iterator[RegisterSeries]:
        """Every series as ``_SeriesHead.series`` gives it, in key order; empties the table."""
        keys, sources, n = self.keys, self.sources, len(self.keys)
        rows_column = self.counts[0, :n]
        # read-only columns the series' ts and frame are views of (a series without answers
        # repeats 0.0, as ``_SeriesHead.series``)
        ts = np.where(rows_column > 0, self.ts[:n], 0.0)
        frame = self.frame[:n].copy()
        ts.flags.writeable = frame.flags.writeable = False
        # row i repeats item i along a stride-0 axis: a series is ``ts_rows[i, :count]``
        most = int(rows_column.max()) if n else 0
        ts_rows = np.lib.stride_tricks.as_strided(ts, (n, most), (ts.itemsize, 0),
                                                  writeable=False)
        frame_rows = np.lib.stride_tricks.as_strided(frame, (n, most), (frame.itemsize, 0),
                                                     writeable=False)
        rows, requests, exceptions, unanswered = self.counts[:, :n].tolist()
        self.__init__()  # type: ignore[misc]  # start over (the lists above stay ours)
        zeros: dict[tuple[int, int], np.ndarray] = {}  # values: shared, read-only, all zero
        for i in sorted(range(n), key=keys.__getitem__):
            master, slave, unit, function, address, quantity = keys[i]
            count = rows[i]
            values = zeros.get((quantity, count))
            if values is None:
                values = zeros[quantity, count] = _repeated(np.zeros(quantity, np.uint16), count)
            yield RegisterSeries(
                master=master, slave=slave, unit_id=unit, function=function, address=address,
                quantity=quantity, ts=ts_rows[i, :count], frame=frame_rows[i, :count],
                values=values, requests=requests[i],
                exceptions=exceptions[i], unanswered=unanswered[i], source=sources[i],
                summary=True)


def _repeated(item: np.ndarray, count: int) -> np.ndarray:
    """``item`` repeated ``count`` times along a new first axis, as a read-only view (what
    ``np.broadcast_to`` gives, at a tenth of its cost: summaries come by tens of thousands)."""
    view = np.ndarray((count, *item.shape), dtype=item.dtype, buffer=item,
                      strides=(0, *item.strides))
    view.flags.writeable = False
    return view


def _plain_read(function: int, quantity: int | None) -> bool:
    """A read of a quantity the standard allows: only those become series (a read of 0
    registers, or of more than a PDU can carry, stays an event with its warning)."""
    limit = _MAX_READ_BITS if function in (1, 2) else _MAX_READ_REGISTERS
    return quantity is not None and 1 <= quantity <= limit


ROWS_PACKED = 4096  # answers kept as Python rows before they are packed into arrays
ROW_BUDGET = 32_768  # Python rows over all series together before all of them are packed


def _pack_rows(parts: _SeriesParts, quantity: int) -> None:
    """Move answers kept row by row (slow path) into arrays: a Python row costs ~10x more."""
    if not parts.row_ts:
        return
    parts.ts.append(np.array(parts.row_ts, dtype=np.float64))
    parts.frame.append(np.array(parts.row_frame, dtype=np.int64))
    parts.values.append(np.array(parts.row_values, dtype=np.uint16).reshape(-1, quantity))
    parts.loose += len(parts.row_ts)
    parts.row_ts, parts.row_frame, parts.row_values = [], [], []


# Answers of one series kept loose before they are packed: bounds what is not packed yet to
# SEAL_ROWS per series, and makes packing cost a few array operations per thousand answers.
SEAL_ROWS = 1024


def _seal(parts: _SeriesParts) -> None:
    """Pack the loose answers of a series into one block (in the order they were added)."""
    if not parts.loose:
        return
    parts.packed.append(_Packed.pack(np.concatenate(parts.ts), np.concatenate(parts.frame),
                                     np.concatenate(parts.values)))
    parts.ts, parts.frame, parts.values, parts.loose = [], [], [], 0


@dataclass(frozen=True, slots=True)
class _Packed:
    """Answers of one series packed without loss, for polling that repeats itself.

    Timestamps as int32 steps in units of a power of two of a second (2**-22 s for today's
    epoch times) from the first, frames as int32 steps. A register that keeps its value for
    a while (most of them: set points, states, limits) keeps only its changes: each new value
    and the answer it starts at; the others keep every value. Where timestamps or frames do
    not fit (a gap of more than 8.5 minutes between two answers, timestamps off that grid) they
    are kept as they came. What ``unpack`` returns is bit for bit what was packed (timestamps
    are put on the grid only when they come back exactly). About 8 bytes an answer plus 2 per
    register that changes often, instead of 16 + 2 per register.
    """

    count: int
    ts: np.ndarray  # float64 as given, or int32 steps after ts_first (when ts_scale > 0)
    ts_first: int
    ts_scale: float
    frame: np.ndarray  # int64 as given, or int32 steps after frame_first (when frame_steps)
    frame_first: int
    frame_steps: bool
    changing: np.ndarray  # bool per register: every value kept, in ``dense``
    dense: np.ndarray  # uint16, one row per answer, one column per changing register
    runs: np.ndarray  # uint16: the values of the other registers where they change, in turn
    starts: np.ndarray  # where each of those values starts: register * count + answer

    @staticmethod
    def pack(ts: np.ndarray, frame: np.ndarray, values: np.ndarray) -> _Packed:
        count = len(ts)
        ts_first, ts_steps, scale = 0, ts, 0.0
        units = _on_grid(ts)
        if units is not None:
            steps = np.diff(units[1])
            if _fits_int32(steps):
                ts_first, ts_steps, scale = int(units[1][0]), steps.astype(np.int32), units[0]
        frame_first, frame_steps, stepped = 0, frame, False
        # Frame numbers far below 2**62 cannot overflow their steps.
        if count and frame.min() > -(1 << 62) and frame.max() < 1 << 62:
            steps = np.diff(frame)
            if _fits_int32(steps):
                frame_first, frame_steps, stepped = int(frame[0]), steps.astype(np.int32), True
        by_register = np.ascontiguousarray(values.T)
        changed = np.ones(by_register.shape, dtype=bool)
        changed[:, 1:] = by_register[:, 1:] != by_register[:, :-1]
        # A change costs its value and where it starts (2 + 4 bytes), an answer 2 bytes.
        changing = 6 * changed.sum(axis=1) >= 2 * count
        held_changed = changed[~changing]
        where = np.flatnonzero(held_changed)
        return _Packed(count, ts_steps, ts_first, scale, frame_steps, frame_first, stepped,
                       changing, values[:, changing], by_register[~changing][held_changed],
                       where.astype(np.int32) if held_changed.size < 1 << 31 else where)

    def unpack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ts float64, frame int64, values uint16 rows) as they were packed."""
        ts = self.ts
        if self.ts_scale:
            ts = _running(self.ts_first, self.ts).astype(np.float64) / self.ts_scale
        frame = _running(self.frame_first, self.frame) if self.frame_steps else self.frame
        values = np.empty((self.count, len(self.changing)), dtype=np.uint16)
        values[:, self.changing] = self.dense
        held = int(np.count_nonzero(~self.changing))
        if held and self.count:
            # Number the runs of every held register end to end (each begins at its first
            # answer), and give each answer its run's value.
            begins = np.zeros(held * self.count, dtype=bool)
            begins[self.starts] = True
            run = np.cumsum(begins) - 1
            values[:, ~self.changing] = self.runs[run].reshape(held, self.count).T
        return ts, frame, values


def _running(first: int, steps: np.ndarray) -> np.ndarray:
    out = np.empty(len(steps) + 1, dtype=np.int64)
    out[0] = first
    np.cumsum(steps, out=out[1:], dtype=np.int64)
    out[1:] += first
    return out


def _fits_int32(steps: np.ndarray) -> bool:
    return not len(steps) or bool(steps.min() >= -(1 << 31) and steps.max() < 1 << 31)


def _on_grid(ts: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(scale, ts * scale as int64) for the power of two that makes every timestamp an integer
    below 2**53 (the grid of the largest one's last bit), or None when some are finer (or
    would not come back bit for bit, such as -0.0)."""
    if not len(ts):
        return None
    top = float(np.max(np.abs(ts)))
    if not np.isfinite(top) or top == 0.0:
        return None
    power = 53 - math.frexp(top)[1]
    if abs(power) > 900:  # far from any clock: not worth the care subnormals would need
        return None
    scale = 2.0**power
    whole = (ts * scale).astype(np.int64)  # below 2**53: exact when on the grid
    if not np.array_equal((whole.astype(np.float64) / scale).view(np.int64), ts.view(np.int64)):
        return None
    return scale, whole


# --------------------------------------------------------------------------------------------
# Fast path: one whole read PDU per segment, in order — decoded for a whole batch at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FastInput:
    """The payload-carrying packets of the Modbus flows of one batch, in capture order.

    ``flow`` indexes ``next_seq``/``pending`` (per flow: next expected sequence number by
    direction, None when unknown, and the decoder's pending requests).
    """

    buf: np.ndarray  # uint8 view of the batch bytes
    flow: np.ndarray
    from_client: np.ndarray
    seq: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    ts: np.ndarray
    frame: np.ndarray
    next_seq: list[tuple[int | None, int | None]]  # (to server, to client)
    pending: list[dict[int, _Pending]]
    # Rows cut from whole streams (``mbap_streams``): per row, the first row completed by the
    # same segment. A flow is then left to the decoder from a whole segment on, never from an
    # ADU in the middle of one. None: one row per segment.
    group: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class FastResult:
    """How far the fast path decoded each flow, and what each flow left behind.

    ``handled`` marks the input rows decoded here: for each flow, the rows before its first
    irregular one (the slow path takes that one and the rest, from the state left here).
    """

    handled: np.ndarray  # bool per input row
    touched: np.ndarray  # bool per flow: some rows handled, state below must be applied
    next_seq: dict[int, tuple[int | None, int | None]]
    pending: dict[int, dict[int, _Pending]]
    superseded: dict[int, list[_Pending]]  # requests whose transaction id was reused
    events: list[tuple[int, Event]]  # (input row, event) for the writes decoded here


_U32 = 0xFFFFFFFF
FAST_WRITES = frozenset({5, 6, 15, 16})
FAST_FUNCTIONS = READ_FUNCTIONS | FAST_WRITES
_PAIRING_ROUNDS = 4


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of non-negative integer ``keys`` below ``bound``.

    Keys that fit 16 bits are sorted as uint16, which NumPy radix-sorts in linear time (about
    seven times faster than its stable sort of int64 on a batch).
    """
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _windows(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes from each offset, one row each; bytes past the end of ``buf`` repeat its
    last byte. The buffer is seen as overlapping ``width``-byte items (one at every byte), so
    NumPy copies each row whole: much cheaper than gathering byte by byte."""
    size = len(buf)
    if size < width or width == 0:
        return buf[np.minimum(offsets[:, None] + np.arange(width), size - 1)]
    items = np.ndarray(shape=(size - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
    late = offsets > size - width
    out = items[np.minimum(offsets, size - width) if late.any() else offsets]
    out = out.view(np.uint8).reshape(len(offsets), width)
    if late.any():
        out[late] = buf[np.minimum(offsets[late, None] + np.arange(width), size - 1)]
    return out


def fast_reads(data: FastInput, book: ModbusBook, contexts: list[FlowContext],
               source: str) -> FastResult:
    """Decode plain polling vectorised; leave each flow's first irregularity on to the slow path.

    A row qualifies when it carries exactly one well-formed read (FC 1–4) or single/multiple
    write (FC 5, 6, 15, 16) request or normal response, starts where the previous segment of
    its direction ended (from the sequence number the stream expects), and, for a response,
    answers a pending request with the same function (and, for reads, a matching byte count).
    For each flow the rows before its first row that does not qualify are decoded here: reads
    fold into series at once, writes become the same events the slow path makes (built by the
    same functions). ``contexts[flow]`` is each flow's decoder context.

    The framing is defined once, by ``ModbusDecoder``; what this path accepts is a subset of
    it (one whole ADU per segment, the sizes each function implies), checked against the
    decoder ADU by ADU (tests/test_modbus_fast.py) and capture by capture (tests/test_pipeline.py).
    """
    nflows = len(data.next_seq)
    n = len(data.flow)
    handled = np.zeros(n, dtype=bool)
    result = FastResult(handled, np.zeros(nflows, dtype=bool), {}, {}, {}, [])
    if n == 0 or nflows == 0:
        return result
    buf = data.buf
    head = _windows(buf, data.offset, 12)
    # MBAP header and the first PDU words as uint32 columns (Fortran order: each contiguous).
    words = head.view(">u2").astype(np.uint32, order="F")
    tid, protocol_id, mbap_len, address, qty = (words[:, 0], words[:, 1], words[:, 2],
                                                words[:, 4], words[:, 5])
    unit_fc_count = head[:, 6:9].astype(np.uint32, order="F")
    unit, fc, byte_count = unit_fc_count[:, 0], unit_fc_count[:, 1], unit_fc_count[:, 2]
    length = data.length.astype(np.int64)
    req = data.from_client
    limit = np.where(fc <= 2, _MAX_READ_BITS, _MAX_READ_REGISTERS)
    is_read = (fc >= 1) & (fc <= 4)
    is_write = (fc == 5) | (fc == 6) | (fc == 15) | (fc == 16)
    fixed = (length == 12) & (mbap_len == 6)
    ok_req = req & np.where(is_read, fixed & (qty >= 1) & (qty <= limit),
                            np.where(fc <= 6, fixed, (length == 6 + mbap_len) & (length >= 13)))
    ok_resp = ~req & np.where(
        is_read, (length >= 9) & (length == 6 + mbap_len) & (byte_count == mbap_len - 3), fixed)
    ok = (is_read | is_write) & (protocol_id == 0) & np.where(req, ok_req, ok_resp)
    # Writes are few: decoded by the slow path's own functions. Those of fixed size (FC 5 and 6
    # requests, every write answer) cannot be malformed once their length fits; FC 15 and 16
    # requests are parsed whole, and a malformed one is irregular and goes the slow way, with
    # its warning.
    parsed: dict[int, RequestFields | ResponseFields] = {}
    write_rows = np.flatnonzero(ok & is_write)
    for i, function, first, second, asked, start, size in zip(
            write_rows.tolist(), fc[write_rows].tolist(), address[write_rows].tolist(),
            qty[write_rows].tolist(), req[write_rows].tolist(), data.offset[write_rows].tolist(),
            length[write_rows].tolist(), strict=True):
        if not asked:
            parsed[i] = write_echo(function, first, second)
        elif function <= 6:
            parsed[i] = single_write(function, first, second)
        else:
            try:
                parsed[i] = parse_request(buf[start + 7 : start + size].tobytes())
            except DecodeError:
                ok[i] = False

    # In order: each segment starts where the previous one of its direction ended.
    slot = data.flow * 2 + req
    order = _stable_order(slot, 2 * nflows)
    s_slot = slot[order]
    s_seq = data.seq[order].astype(np.int64)
    s_end = (s_seq + length[order]) & _U32
    starts = np.ones(n, dtype=bool)
    starts[1:] = s_slot[1:] != s_slot[:-1]
    expected = np.empty(n, dtype=np.int64)
    expected[1:] = s_end[:-1]
    # Per slot (flow * 2 + to server) the sequence number its stream expects next, -1 unknown.
    stream_next = np.array([-1 if nxt is None else nxt for to_server, to_client in data.next_seq
                            for nxt in (to_client, to_server)], dtype=np.int64)
    expected[starts] = stream_next[s_slot[starts]]
    in_order = np.empty(n, dtype=bool)
    in_order[order] = s_seq == expected

    # Each flow is decoded here up to its first irregular row (position in capture order).
    position = np.arange(n)
    cut_at = position if data.group is None else data.group
    cut = np.full(nflows, n, dtype=np.int64)
    irregular = ~(ok & in_order)
    np.minimum.at(cut, data.flow[irregular], cut_at[irregular])

    carried = [(f, t, p) for f in range(nflows) for t, p in data.pending[f].items()]
    m = len(carried)
    c_flow = np.array([c[0] for c in carried], dtype=np.int64)
    c_tid = np.array([c[1] for c in carried], dtype=np.uint32)
    c_fc = np.array([c[2].fields.function for c in carried], dtype=np.uint32)
    c_qty = np.array([c[2].fields.quantity or 0 for c in carried], dtype=np.uint32)
    c_read = np.array([_fast_pending(c[2].fields) for c in carried], dtype=bool)
    c_unit = np.array([c[2].unit_id for c in carried], dtype=np.uint32)
    for _ in range(_PAIRING_ROUNDS):
        rows = np.flatnonzero(position < cut[data.flow])
        pairing = _pair(nflows, c_flow, c_tid, c_fc, c_qty, c_read, c_unit, rows, data.flow, tid,
                        req, fc, qty, byte_count, unit)
        f_s, broken = pairing[0], pairing[5]
        if not broken.any():
            break
        # A response that pairs with nothing here: the slow path takes it and what follows.
        src = pairing[6]
        bad_rows = rows[src[broken]]
        np.minimum.at(cut, data.flow[bad_rows], cut_at[bad_rows])
    else:
        return result  # irregular everywhere: all of it to the slow path
    f_s, t_s, r_s, pair_order, answered, _, src_row = pairing
    handled[rows] = True
    touched = result.touched
    touched[data.flow[rows]] = True

    # Requests: answered (the next row is its response), superseded, or still pending.
    same_next = np.zeros(len(pair_order), dtype=bool)
    same_next[:-1] = (f_s[1:] == f_s[:-1]) & (t_s[1:] == t_s[:-1])
    next_is_resp = np.zeros(len(pair_order), dtype=bool)
    next_is_resp[:-1] = same_next[:-1] & ~r_s[1:]
    next_is_req = np.zeros(len(pair_order), dtype=bool)
    next_is_req[:-1] = same_next[:-1] & r_s[1:]

    def pending_of(j: int) -> _Pending:
        if src_row[j] < 0:
            return carried[int(pair_order[j])][2]
        i = int(rows[src_row[j]])
        asked = parsed.get(i)
        if not isinstance(asked, RequestFields):
            asked = RequestFields(int(fc[i]), address=int(address[i]), quantity=int(qty[i]))
        return _Pending(int(data.frame[i]), float(data.ts[i]), int(unit[i]), asked)

    for j in np.flatnonzero(r_s & ~next_is_resp & touched[f_s]).tolist():
        f = int(f_s[j])
        pend = pending_of(j)
        if next_is_req[j]:
            result.superseded.setdefault(f, []).append(pend)
        else:
            result.pending.setdefault(f, {})[int(t_s[j])] = pend
    for f in np.flatnonzero(touched).tolist():
        result.pending.setdefault(f, {})

    no_carried = np.zeros(m, dtype=bool)
    _write_events(result, data, contexts, parsed, rows, pair_order, src_row, f_s,
                  np.concatenate([no_carried, is_write[rows]])[pair_order], tid, unit, pending_of)

    # Reads: requests tallied and counted, answers appended to their series.
    new_req = rows[req[rows] & is_read[rows]]
    resp_j = np.flatnonzero(answered & np.concatenate([no_carried, is_read[rows]])[pair_order])
    if data.group is not None:  # a segment may complete several answers of one series: in order
        resp_j = resp_j[np.argsort(src_row[resp_j], kind="stable")]
    if len(new_req) or len(resp_j):
        _fold_reads(book, contexts, source, data, new_req, resp_j, rows, src_row, pair_order,
                    carried, unit, fc, address, qty)

    # Where each touched flow's streams now stand: after its last handled row per direction.
    # Handled rows are a prefix of each flow, so of each slot in ``order`` too.
    h_s = handled[order]
    more = np.zeros(n, dtype=bool)
    more[:-1] = h_s[1:] & ~starts[1:]
    for k in np.flatnonzero(h_s & ~more).tolist():
        f = int(s_slot[k]) >> 1
        to_server, to_client = result.next_seq.get(f, data.next_seq[f])
        end = int(s_end[k])
        result.next_seq[f] = (end, to_client) if s_slot[k] & 1 else (to_server, end)
    return result


def _write_events(result: FastResult, data: FastInput, contexts: list[FlowContext],
                  parsed: dict[int, RequestFields | ResponseFields], rows: np.ndarray,
                  pair_order: np.ndarray, src_row: np.ndarray, f_s: np.ndarray,
                  write_s: np.ndarray, tid: np.ndarray, unit: np.ndarray,
                  pending_of: Callable[[int], _Pending]) -> None:
    """Writes become events exactly as the slow path builds them (in pairing order, so each
    request comes just before its answer; sorted by input row at the end)."""
    write_j = np.flatnonzero(write_s)
    if len(write_j) == 0:
        return
    w_rows = rows[src_row[write_j]]
    asked: dict[int, tuple[RequestFields, int]] = {}  # by pairing position: requests seen
    events = result.events
    for j, i, f, transaction, unit_id, ts, frame in zip(
            write_j.tolist(), w_rows.tolist(), f_s[write_j].tolist(), tid[w_rows].tolist(),
            unit[w_rows].tolist(), data.ts[w_rows].tolist(), data.frame[w_rows].tolist(),
            strict=True):
        fields = parsed[i]
        if isinstance(fields, RequestFields):
            asked[j] = fields, frame
            event: Event = request_event(contexts[f], transaction, unit_id, fields, ts, frame)
        else:
            assert isinstance(fields, ResponseFields)
            request = asked.get(j - 1)
            if request is None:  # asked in an earlier batch
                carried = pending_of(j - 1)
                request = carried.fields, carried.frame
            event = response_event(contexts[f], transaction, unit_id, fields, *request, ts,
                                   frame)
        events.append((i, event))
    events.sort(key=lambda item: item[0])


def _fast_pending(fields: RequestFields) -> bool:
    """A pending request (from either path) whose answer the fast path may pair."""
    if fields.function in READ_FUNCTIONS:
        return not fields.detail and fields.address is not None
    return fields.function in FAST_WRITES and "malformed" not in fields.detail


def _pair(nflows: int, c_flow: np.ndarray, c_tid: np.ndarray, c_fc: np.ndarray,
          c_qty: np.ndarray, c_read: np.ndarray, c_unit: np.ndarray, rows: np.ndarray, flow: np.ndarray,
          tid: np.ndarray, req: np.ndarray, fc: np.ndarray, qty: np.ndarray,
          byte_count: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pair responses with requests by (flow, transaction id), carried requests first.

    An answer pairs when it follows its request with the same function and unit id (as the
    slow path's ``ModbusDecoder`` pairs them).

    Returns, in pairing order: flow, transaction id, is-request, the order itself, whether
    each row is a well-answered response, whether it is a response that cannot be paired
    (or a carried request that is no plain read, answered here), and the source row (index
    into ``rows``; negative for carried requests).
    """
    m = len(c_flow)
    all_flow, all_tid, all_req, all_fc, all_qty, all_bc, all_unit = (
        np.concatenate([carried, column[rows]]) if m else column[rows]
        for carried, column in ((c_flow, flow), (c_tid, tid), (np.ones(m, dtype=bool), req),
                                (c_fc, fc), (c_qty, qty), (np.zeros(m, np.uint32), byte_count),
                                (c_unit, unit)))
    all_read = np.concatenate([c_read, np.ones(len(rows), dtype=bool)])
    # By flow, then transaction id, then arrival: two stable radix sorts, least significant first.
    by_tid = _stable_order(all_tid, 1 << 16)
    pair_order = by_tid[_stable_order(all_flow[by_tid], nflows)]
    f_s, t_s, r_s = all_flow[pair_order], all_tid[pair_order], all_req[pair_order]
    fc_s, qty_s = all_fc[pair_order], all_qty[pair_order]
    bc_s, read_s = all_bc[pair_order], all_read[pair_order]
    same_prev = np.zeros(len(pair_order), dtype=bool)
    same_prev[1:] = (f_s[1:] == f_s[:-1]) & (t_s[1:] == t_s[:-1])
    fc_p, qty_p = _previous(fc_s), _previous(qty_s)
    wanted = np.where(fc_p <= 2, (qty_p + 7) // 8, 2 * qty_p)
    unit_s = all_unit[pair_order]
    answered = (~r_s & same_prev & _previous(r_s) & _previous(read_s) & (fc_p == fc_s)
                & (_previous(unit_s) == unit_s) & ((bc_s == wanted) | (fc_s > 4)))
    broken = ~r_s & ~answered
    return f_s, t_s, r_s, pair_order, answered, broken, pair_order - m


def _previous(column: np.ndarray) -> np.ndarray:
    """Each row's predecessor (the first row its own): a shifted copy, cheaper than a gather."""
    out = np.empty_like(column)
    out[1:] = column[:-1]
    out[:1] = column[:1]
    return out


def _series_keys(peer: np.ndarray, unit: np.ndarray, fc: np.ndarray, address: np.ndarray,
                 qty: np.ndarray) -> np.ndarray:
    """One uint64 per (master/slave pair, unit, function, address, quantity), ordered as the
    tuples are."""
    key = np.zeros(len(peer), dtype=np.uint64)
    for column, bits in ((peer, 16), (unit, 8), (fc, 8), (address, 16), (qty, 16)):
        key = (key << np.uint64(bits)) | column.astype(np.uint64)
    return key


def _peer_ids(contexts: list[FlowContext]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Flows of the same master and slave (a master reconnects often) share an id."""
    ids: dict[tuple[str, str], int] = {}
    of_flow = np.array([ids.setdefault((c.client, c.server), len(ids)) for c in contexts],
                       dtype=np.int64)
    return of_flow, list(ids)


def _group_bounds(group: np.ndarray, ngroups: int) -> tuple[np.ndarray, list[int]]:
    """Rows ordered by group (stable: capture order within one), and where each run starts
    (and the last one ends)."""
    order = _stable_order(group, ngroups)
    sorted_group = group[order]
    cuts = np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1
    return order, [0, *cuts.tolist(), len(order)]


def _key_tuples(keys: np.ndarray, pairs: list[tuple[str, str]]) -> list[SeriesKey]:
    """Keys packed by ``_series_keys`` (``pairs``: the batch's pair ids) back to tuples."""
    key_of: list[SeriesKey] = []
    for key in keys.tolist():
        master, slave = pairs[key >> 48]
        key_of.append((master, slave, (key >> 40) & 0xFF, (key >> 32) & 0xFF,
                       (key >> 16) & 0xFFFF, key & 0xFFFF))
    return key_of


def _fold_reads(book: ModbusBook, contexts: list[FlowContext], source: str, data: FastInput,
                new_req: np.ndarray, resp_j: np.ndarray, rows: np.ndarray, src_row: np.ndarray,
                pair_order: np.ndarray, carried: list[tuple[int, int, _Pending]],
                unit: np.ndarray, fc: np.ndarray, address: np.ndarray, qty: np.ndarray) -> None:
    """Tally the read requests and append the answers to their series.

    Requests and answers are grouped into series once, by the request's key: an answer takes
    the group of the request it answers (a request carried from an earlier batch is keyed
    from its fields).
    """
    peer_of_flow, pairs = _peer_ids(contexts)
    resp_rows = rows[src_row[resp_j]]
    req_src = src_row[resp_j - 1]
    from_batch = req_src >= 0
    late = [carried[int(pair_order[j - 1])] for j in resp_j[~from_batch].tolist()]
    late_key = _series_keys(
        peer_of_flow[np.array([f for f, _, _ in late], dtype=np.int64)],
        np.array([p.unit_id for _, _, p in late], dtype=np.uint32),
        np.array([p.fields.function for _, _, p in late], dtype=np.uint32),
        np.array([p.fields.address or 0 for _, _, p in late], dtype=np.uint32),
        np.array([p.fields.quantity or 0 for _, _, p in late], dtype=np.uint32))
    req_key = _series_keys(peer_of_flow[data.flow[new_req]], unit[new_req], fc[new_req],
                           address[new_req], qty[new_req])
    keys, inverse = np.unique(np.concatenate([req_key, late_key]), return_inverse=True)
    inverse = inverse.reshape(-1)
    ngroups = len(keys)
    key_of = _key_tuples(keys, pairs) if book.values_wanted else []

    if len(new_req):
        req_group = inverse[: len(new_req)]
        order, bounds = _group_bounds(req_group, ngroups)
        ts = data.ts[new_req][order]
        starts = np.array(bounds[:-1])
        present = req_group[order[starts]]
        counts = np.diff(np.array(bounds))
        lo = np.minimum.reduceat(ts, starts)
        hi = np.maximum.reduceat(ts, starts)
        if not _tally_groups(book, pairs, keys[present], lo, hi, counts):
            key_of = key_of or _key_tuples(keys, pairs)
            for g, first_ts, last_ts, n in zip(present.tolist(), lo.tolist(), hi.tolist(),
                                               counts.tolist(), strict=True):
                master, slave, u, f, a, q = key_of[g]
                book.tally_request(master, slave, u, f, a, q, first_ts, last_ts, n)
    if not book.values_wanted:  # counted only (``_Counted``): ids for the batch's keys
        sources = [""] * ngroups
        for g in present.tolist() if len(new_req) else ():
            sources[g] = source  # a key the batch asks for is first seen with its request
        ids = book.counted.ids_of(keys, pairs, sources)
        if len(new_req):
            book.counted.counts[1, ids[present]] += counts
        if len(resp_j):
            group_of_row = np.full(len(data.flow), -1, dtype=np.int64)
            group_of_row[new_req] = inverse[: len(new_req)]
            resp_group = np.empty(len(resp_j), dtype=np.int64)
            resp_group[from_batch] = group_of_row[rows[req_src[from_batch]]]
            resp_group[~from_batch] = inverse[len(new_req):]
            _count_answers(book.counted, data, resp_rows, ids[resp_group])
        return
    if len(new_req):
        series = book.series
        for g, n in zip(present.tolist(), counts.tolist(), strict=True):
            key = key_of[g]
            parts = series.get(key)
            if parts is None:
                parts = series[key] = _SeriesParts(source=source)
            parts.requests += n

    if len(resp_j) == 0:
        return
    # The group of each answer: its request's (looked up by the request's position in new_req).
    group_of_row = np.full(len(data.flow), -1, dtype=np.int64)
    group_of_row[new_req] = inverse[: len(new_req)]
    resp_group = np.empty(len(resp_j), dtype=np.int64)
    resp_group[from_batch] = group_of_row[rows[req_src[from_batch]]]
    resp_group[~from_batch] = inverse[len(new_req):]
    _fold_answers(book, data, resp_rows, resp_group, key_of)


_NO_RANGE = ("", 0, 0, "")  # not looked up yet (``_tally_groups``)


def _range_of(code: int) -> tuple[str, int, int, str] | None:
    """A tally's range of a packed function, address and quantity (``_series_keys``' low 40
    bits), as ``ModbusBook.tally_request`` makes it; None for a function of no table."""
    fc, address, quantity = (code >> 32) & 0xFF, (code >> 16) & 0xFFFF, code & 0xFFFF
    table = TABLE_OF_FUNCTION.get(fc)
    if table is None:
        return None
    access = "read" if fc in READ_FUNCTIONS or fc == 24 else "write"
    return (table, address, quantity or 1, access)


def _tally_groups(book: ModbusBook, pairs: list[tuple[str, str]], keys: np.ndarray,
                  first: np.ndarray, last: np.ndarray, counts: np.ndarray) -> bool:
    """``ModbusBook.tally_request`` for many series keys of read requests at once (``keys``
    as ``_series_keys`` packs them, with the first and last request time and the number of
    requests of each): summed per master and per slave with NumPy, then one dict update per
    (host, function), (host, range), (host, peer) and (host, unit) instead of one call per key.

    Returns False, changing nothing, when a bound (``MAX_PEERS``, ``MAX_RANGES``) could be
    reached in this batch: which peers and ranges a full tally keeps depends on the order
    they come in, and the caller then tallies key by key as before.
    """
    if len(keys) == 0:
        return True
    hosts: dict[str, int] = {}
    pair_host = np.array([[hosts.setdefault(name, len(hosts)) for name in pair] for pair in pairs],
                         dtype=np.int64).reshape(-1, 2)
    names = list(hosts)
    nhosts = np.int64(len(names))
    pair = (keys >> np.uint64(48)).astype(np.int64)
    unit = ((keys >> np.uint64(40)) & np.uint64(0xFF)).astype(np.int64)
    function = ((keys >> np.uint64(32)) & np.uint64(0xFF)).astype(np.int64)
    # function, address and quantity, as _series_keys packed them
    span = (keys & np.uint64(0xFF_FFFF_FFFF)).astype(np.int64)
    counts = counts.astype(np.int64)
    plans = []
    for side, tallies in ((0, book.masters), (1, book.slaves)):
        me = pair_host[pair, side]
        other = pair_host[pair, 1 - side]
        mine = np.unique(me).tolist()
        fresh = sum(1 for h in mine if names[h] not in tallies)
        if len(tallies) + fresh > MAX_PEERS:
            return False
        peer_pairs = np.unique(me * nhosts + other)
        range_keys, range_of = np.unique(me << np.int64(40) | span, return_inverse=True)
        range_counts = np.bincount(range_of.reshape(-1), weights=counts).astype(np.int64)
        peers_of = np.bincount(peer_pairs // nhosts, minlength=len(names))
        ranges_of = np.bincount(range_keys >> np.int64(40), minlength=len(names))
        for h in mine:
            tally = tallies.get(names[h])
            known_peers, known_ranges = (0, 0) if tally is None else (len(tally.peers),
                                                                      len(tally.ranges))
            if known_peers + peers_of[h] > MAX_PEERS or known_ranges + ranges_of[h] > MAX_RANGES:
                return False
        plans.append((tallies, me, mine, peer_pairs, range_keys, range_counts))
    name_of = np.array(names, dtype=object)
    range_of_span: dict[int, tuple[str, int, int, str] | None] = {}
    for tallies, me, mine, peer_pairs, range_keys, range_counts in plans:
        of_host: dict[int, PeerTally] = {}
        for h in mine:
            tally = tallies.get(names[h])
            if tally is None:
                tally = tallies[names[h]] = PeerTally(names[h])
            of_host[h] = tally
        # peer_pairs is sorted: one run of peers per host, added with one set update each
        peer_host, peer_of = peer_pairs // nhosts, peer_pairs % nhosts
        cuts = np.flatnonzero(peer_host[1:] != peer_host[:-1]) + 1
        run_starts = np.r_[0, cuts].astype(np.int64)
        for h, run in zip(peer_host[run_starts].tolist(), np.split(peer_of, cuts), strict=True):
            of_host[h].peers.update(name_of[run].tolist())
        for code in np.unique(me << np.int64(8) | unit).tolist():
            of_host[code >> 8].units.add(code & 0xFF)
        by_function, function_of = np.unique(me << np.int64(8) | function, return_inverse=True)
        function_counts = np.bincount(function_of.reshape(-1), weights=counts).astype(np.int64)
        for code, n in zip(by_function.tolist(), function_counts.tolist(), strict=True):
            functions = of_host[code >> 8].functions
            functions[code & 0xFF] = functions.get(code & 0xFF, 0) + n
        for code, n in zip(range_keys.tolist(), range_counts.tolist(), strict=True):
            rng = range_of_span.get(code & 0xFF_FFFF_FFFF, _NO_RANGE)
            if rng is _NO_RANGE:
                rng = range_of_span[code & 0xFF_FFFF_FFFF] = _range_of(code)
            if rng is None:
                continue
            ranges = of_host[code >> 40].ranges
            ranges[rng] = ranges.get(rng, 0) + n
        low = np.full(len(names), np.inf)
        high = np.full(len(names), -np.inf)
        np.minimum.at(low, me, first)
        np.maximum.at(high, me, last)
        for h in mine:
            tally = of_host[h]
            tally.first_seen = min(tally.first_seen, float(low[h]))
            tally.last_seen = max(tally.last_seen, float(high[h]))
    return True


def _count_answers(counted: _Counted, data: FastInput, rows: np.ndarray, ids: np.ndarray) -> None:
    """Answered reads of series nobody reads the values of: per series, how many and the
    first (time, then frame)."""
    ts, frames = data.ts[rows], data.frame[rows].astype(np.int64)
    order = np.lexsort((frames, ts, ids))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    firsts = order[starts]
    counted.answers(sorted_ids[starts], np.diff(np.r_[starts, len(order)]), ts[firsts],
                    frames[firsts])


def _fold_answers(book: ModbusBook, data: FastInput, rows: np.ndarray, group: np.ndarray,
                  key_of: list[SeriesKey]) -> None:
    """Append answered reads to their series: values gathered once per (function, quantity)."""
    shape_of_group = np.array([(k[3] << 16) | k[5] for k in key_of], dtype=np.int64)
    shape = shape_of_group[group]
    present = np.bincount(group, minlength=len(key_of)) > 0
    for shape_value in np.unique(shape_of_group[present]).tolist():
        sel = np.flatnonzero(shape == shape_value)
        function, quantity = shape_value >> 16, shape_value & 0xFFFF
        order, bounds = _group_bounds(group[sel], len(key_of))
        picked = rows[sel[order]]
        offsets = data.offset[picked] + 9
        if function <= 2:
            raw = _windows(data.buf, offsets, (quantity + 7) // 8)
            values = np.unpackbits(raw, axis=1, bitorder="little")[:, :quantity].astype(np.uint16)
        else:
            values = _windows(data.buf, offsets, 2 * quantity).view(">u2").astype(np.uint16)
        ts = data.ts[picked]
        frames = data.frame[picked].astype(np.int64)
        groups = group[sel[order]]
        for start, end in pairwise(bounds):
            book.read_answers(key_of[int(groups[start])], ts[start:end], frames[start:end],
                              values[start:end])


# --------------------------------------------------------------------------------------------
# The protocol's declaration: per-run state (series, tallies, the vectorised path) and registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModbusPeer:
    """A Modbus master (client) or slave (server) and what it asked or was asked."""

    role: str  # "master" | "slave"
    address: str
    peers: tuple[str, ...]
    units: tuple[int, ...]
    functions: tuple[tuple[int, int], ...]  # (function code, requests)
    # (table, address, quantity, "read" | "write", requests); FC 23 counts its write range
    ranges: tuple[tuple[str, int, int, str, int], ...]
    exceptions: int
    first_seen: float
    last_seen: float


def _peers(role: str, tallies: dict[str, PeerTally]) -> tuple[ModbusPeer, ...]:
    return tuple(
        ModbusPeer(role=role, address=t.address, peers=tuple(sorted(t.peers)),
                   units=tuple(sorted(t.units)), functions=tuple(sorted(t.functions.items())),
                   ranges=tuple(sorted((*key, c) for key, c in t.ranges.items())),
                   exceptions=t.exceptions, first_seen=t.first_seen, last_seen=t.last_seen)
        for t in sorted(tallies.values(), key=lambda t: t.address)
    )


PENDING_LISTED = 1024  # pending requests (of a pass's flows) listed whole for the fast path


def _pending_in_play(pending: list[dict[int, _Pending]], adus: Adus) -> list[dict[int, _Pending]]:
    """Of each flow's pending requests, those an ADU of this pass may answer or supersede
    (one with the same transaction id): the fast path lists its pending requests in Python,
    and a connection that lost answers keeps up to ``MAX_PENDING`` of them, pass after pass.
    A flow's own dict when all of them are in play."""
    sizes = np.fromiter((len(p) for p in pending), dtype=np.int64, count=len(pending))
    total = int(sizes.sum())
    if total <= PENDING_LISTED:
        return pending  # listing them costs less than sorting them out
    owner = np.repeat(np.arange(len(pending), dtype=np.int64), sizes)
    tids = np.fromiter(chain.from_iterable(pending), dtype=np.int64, count=total)
    buf = adus.buf
    adu_tid = (buf[adus.offset].astype(np.int64) << 8) | buf[adus.offset + 1]
    in_play = np.isin((owner << 16) | tids, ((adus.slot >> 1).astype(np.int64) << 16) | adu_tid)
    partial = np.flatnonzero(np.bincount(owner[in_play], minlength=len(pending)) < sizes)
    if len(partial) == 0:
        return pending
    out = list(pending)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    for k in partial.tolist():
        mine = pending[k]
        lo, hi = int(starts[k]), int(starts[k + 1])
        out[k] = {t: mine[t] for t in tids[lo:hi][in_play[lo:hi]].tolist()}
    return out


def _without(rows: np.ndarray, some: np.ndarray, size: int) -> np.ndarray:
    """``rows`` without ``some`` (rows of a batch of ``size`` packets): a mark per packet,
    linear, where ``np.isin`` sorts."""
    gone = np.zeros(size, dtype=bool)
    gone[some] = True
    return rows[~gone[rows]]


def _sorted_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted arrays of distinct rows as one sorted array."""
    if len(b) == 0:
        return a
    if len(a) == 0:
        return b
    out = np.concatenate((a, b))
    out.sort(kind="stable")
    return out


def _stalled(view: BatchView, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows the per-packet path takes before the vectorised path can have their flows back: of
    each Modbus connection waiting behind a TCP hole, its segments up to the one that fills the
    hole or comes after the hole is given up (``Stream.max_hole_age``); of one whose decoder
    is out of step with the framing, its next segment. An ACK of the other direction past the
    hole (the pipeline's ``_ack_rows`` put it among the rows) ends the wait as well: the
    receiver had the bytes, the capture lost them (``Stream.acked``).

    Returns (those rows, and the rows among them that would change nothing there: the pure
    ACKs before the release that do not pass the hole, while no segment of the waiting
    direction came before them that could give the hole up; the caller drops them)."""
    none = rows[:0]
    stalled = np.zeros(len(view.flows), dtype=bool)
    next_seq = np.zeros((len(view.flows), 2), dtype=np.int64)
    held = np.zeros((len(view.flows), 2), dtype=bool)
    deadline = np.full((len(view.flows), 2), np.inf)
    # The flows first (few), then only their rows: the rows left are many, pass after pass.
    stalled_flows: list[int] = []
    for k, f in enumerate(view.flows):
        if not (isinstance(f.decoder, ModbusDecoder) and f.proto == 6 and not f.decoder_reversed
                and f.to_server.stream is not None and f.to_client.stream is not None):
            continue
        waiting = False
        for side, stream in ((0, f.to_client.stream), (1, f.to_server.stream)):
            if stream.held and stream.next_seq is not None:
                waiting = True
                held[k, side] = True
                next_seq[k, side] = stream.next_seq
                deadline[k, side] = stream.hole_since + stream.max_hole_age
        if waiting or not f.decoder.framed():
            stalled_flows.append(k)
    if not stalled_flows:
        return none, none
    stalled[stalled_flows] = True
    rows = rows[stalled[view.index[rows]]]
    rows = rows[(view.decoded.payload_len[rows] > 0) | ((view.decoded.tcp_flags[rows] & 0x10) != 0)]
    if len(rows) == 0:
        return none, none
    flow_of = view.index[rows]
    side = view.from_client[rows].astype(np.int64)
    seq = view.decoded.tcp_seq[rows].astype(np.int64)
    size = view.decoded.payload_len[rows].astype(np.int64)
    waits = held[flow_of, side]
    fills = waits & (((next_seq[flow_of, side] - seq) & 0xFFFFFFFF) < size)
    late = waits & (view.batch.ts[rows] >= deadline[flow_of, side]) & (size > 0)
    other = 1 - side
    ack = view.decoded.tcp_ack[rows].astype(np.int64)
    acked = held[flow_of, other] & ((view.decoded.tcp_flags[rows] & 0x10) != 0) & (
        ((ack - next_seq[flow_of, other] - 1) & 0xFFFFFFFF) < 0x7FFFFFFF)
    # an out-of-step decoder: its next segment
    release = fills | late | acked | (~held[flow_of].any(axis=1) & (size > 0))
    position = np.arange(len(rows))
    first = np.full(len(view.flows), len(rows), dtype=np.int64)
    np.minimum.at(first, flow_of[release], position[release])
    prefix = position <= first[flow_of]
    # A segment held behind the hole may overflow the buffer and give the hole up; from the
    # first one on, every ACK goes the per-packet way.
    risky = np.full(len(view.flows), len(rows), dtype=np.int64)
    np.minimum.at(risky, flow_of[waits & (size > 0)], position[waits & (size > 0)])
    noop = (prefix & (size == 0) & ~acked & ((view.decoded.tcp_flags[rows] & 0x02) == 0)
            & (position < risky[flow_of]))
    return rows[prefix & ~noop], rows[noop]


def _joined(view: BatchView, rows: np.ndarray) -> np.ndarray:
    """Rows the per-packet path takes ahead of the vectorised path: of each Modbus connection
    the capture joined mid-way (a direction whose stream has no sequence number yet), its
    segments up to the first one of each such direction. The decoders' way starts such a
    direction there, after a gap (``Stream.segment``); the vectorised path, which only takes a
    stream from where it is known to stand, takes the connection on from there."""
    payload = rows[view.decoded.payload_len[rows] > 0]
    flow_of = view.index[payload]
    nflows = len(view.flows)
    unknown = np.zeros(2 * nflows, dtype=bool)  # per slot (flow * 2 + from client)
    for k in np.unique(flow_of).tolist():
        f = view.flows[k]
        if (isinstance(f.decoder, ModbusDecoder) and f.proto == 6 and not f.decoder_reversed
                and f.to_server.stream is not None and f.to_client.stream is not None):
            unknown[2 * k] = f.to_client.stream.next_seq is None
            unknown[2 * k + 1] = f.to_server.stream.next_seq is None
    slot = flow_of.astype(np.int64) * 2 + view.from_client[payload]
    opens = unknown[slot]
    if not opens.any():
        return payload[:0]
    first = np.full(2 * nflows, len(view.batch), dtype=np.int64)
    np.minimum.at(first, slot[opens], payload[opens])
    upto = np.full(nflows, -1, dtype=np.int64)  # per flow: the last row the decoders take
    np.maximum.at(upto, slot[opens] >> 1, first[slot[opens]])
    flow_of_rows = view.index[rows]
    return rows[(flow_of_rows >= 0) & (rows <= upto[flow_of_rows])]


# Passes of the vectorised path over one batch, each after the per-packet path took the
# segment that stopped a flow; they go on while each takes at least RESUME_ROWS segments.
RESUMES = 64
RESUME_ROWS = 64
RESUME_TAKEN = 0


class ModbusRun(ProtocolRun):
    """One analysis' Modbus state: the book (series and tallies) fed by both decode paths.

    Plain reads fold into register series (``observe``); the vectorised path (``batch``)
    takes the packets of connections whose decoder holds nothing between PDUs, and leaves
    the rest (and every row from a flow's first irregular one on) to the decoders.
    """

    folds = (ModbusRequest, ModbusResponse)
    batch_path = True

    def __init__(self) -> None:
        self.book = ModbusBook()

    def observe(self, event: Any) -> bool:
        return self.book.observe(event)

    def fed(self, decoder: Any) -> None:
        if isinstance(decoder, ModbusDecoder) and decoder.unanswered:
            master, slave = decoder.context.client, decoder.context.server
            for pending in decoder.unanswered:
                self.book.unanswered(master, slave, pending)
            decoder.unanswered.clear()

    def flow_ended(self, flow: Flow) -> None:
        decoder = flow.decoder
        if isinstance(decoder, ModbusDecoder):
            master, slave = decoder.context.client, decoder.context.server
            for pending in decoder.pending.values():
                self.book.unanswered(master, slave, pending)
            decoder.pending = {}

    def take_series(self) -> Iterator[RegisterSeries]:
        return self.book.take_series()

    def take_slices(self) -> Iterator[RegisterSeries]:
        return self.book.take_slices()

    def keep_values(self, keep: bool) -> None:
        if self.book.values_wanted != keep and (self.book.series or self.book.heads
                                                or self.book.counted):
            return  # told too late: keeps gathering as it began
        self.book.values_wanted = keep

    def fold_slices(self) -> None:
        self.book.fold_slices()

    def summary(self) -> dict[str, Any]:
        return {"modbus_masters": _peers("master", self.book.masters),
                "modbus_slaves": _peers("slave", self.book.slaves)}

    def batch(self, view: BatchView, emit: Callable[[int, Any], None],
              count: Callable[[str, int], None]) -> np.ndarray:
        """Run the vectorised path; return the rows left for the decoders.

        Each pass (``_take``) leaves a flow to its decoder from its first segment it could not
        take (an exception answer, a retransmission, a function it does not fold). That one
        segment then goes the per-packet way (``view.per_packet``), and the next pass takes
        the flow back after it, for up to ``RESUMES`` passes while they pay.
        """
        rows = view.rows
        if view.per_packet is not None:
            joined = _joined(view, rows)
            if len(joined):
                view.per_packet(joined)
                rows = rows[~np.isin(rows, joined, assume_unique=True)]
        for resume in range(RESUMES + 1):
            taken, left = self._take(view, rows, emit, count)
            if len(taken):
                rows = _without(rows, taken, len(view.index))
            if view.per_packet is None or resume == RESUMES or \
                    (resume and len(taken) < RESUME_TAKEN):
                break
            _, first = np.unique(view.index[left], return_index=True)
            stalled, noop = _stalled(view, rows)
            irregular = np.union1d(left[first], stalled)  # sorted: capture order
            if len(irregular) == 0 or len(left) + len(irregular) < RESUME_ROWS:
                break
            view.per_packet(irregular)
            rows = _without(rows, np.concatenate((irregular, noop)), len(view.index))
            # A flow the per-packet path just left behind a hole: its segments up to the one
            # that ends the wait (``_stalled``), so that the next pass can take it back.
            stalled, noop = _stalled(view, rows)
            if len(stalled):
                view.per_packet(stalled)
            if len(stalled) or len(noop):
                rows = _without(rows, np.concatenate((stalled, noop)), len(view.index))
            if view.screen is not None:
                rows = view.screen(rows, np.concatenate((irregular, stalled)))
        return rows

    def _take(self, view: BatchView, rows: np.ndarray, emit: Callable[[int, Any], None],
              count: Callable[[str, int], None]) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the vectorised path over ``rows``: (rows taken, payload rows of the
        flows it looked at that it left, in capture order).

        The in-order bytes of each connection's streams are cut into ADUs
        (``mbap_streams.frame_streams``: several ADUs in a segment, ADUs split over segments),
        those go through ``fast_reads``, and each flow is left to its decoder from its first
        segment either could not take, with the held bytes, pending requests and sequence
        numbers the decoder would have reached by then.
        """
        batch, decoded, flows, index, from_client = (
            view.batch, view.decoded, view.flows, view.index, view.from_client)
        nothing = np.zeros(0, dtype=np.int64)
        beyond = nothing  # rows of the flows past the segment each stops at (see below)
        is_modbus = np.fromiter(
            (isinstance(f.decoder, ModbusDecoder) and f.proto == 6
             and not f.decoder_reversed
             and f.to_server.stream is not None and f.to_client.stream is not None
             and not f.to_server.stream.held and not f.to_client.stream.held
             and f.decoder.framed() for f in flows), dtype=bool, count=len(flows))
        candidate = rows[is_modbus[index[rows]]]
        # Handshake segments were taken care of ahead of the batch paths (the pipeline's).
        candidate = candidate[decoded.payload_len[candidate] > 0]
        if len(candidate) == 0:
            return nothing, nothing
        if view.stops is not None:
            # Each flow up to the segment that opens a hole (the first it cannot take): the
            # pass costs the rows it may take, not every row left.
            at = np.flatnonzero(view.stops[candidate])
            if len(at):
                stop = np.full(len(flows), len(candidate), dtype=np.int64)
                np.minimum.at(stop, index[candidate[at]], at)
                window = np.arange(len(candidate)) <= stop[index[candidate]]
                beyond = candidate[~window]
                candidate = candidate[window]
        # The fast path numbers its flows 0.. in batch order (a table, not a sort: linear).
        in_fast = np.zeros(len(flows), dtype=bool)
        in_fast[index[candidate]] = True
        flow_ids = np.flatnonzero(in_fast)
        if len(flow_ids) >= 1 << 16:
            return nothing, _sorted_union(candidate, beyond)
        local_of = np.zeros(len(flows), dtype=np.int64)
        local_of[flow_ids] = np.arange(len(flow_ids))
        local = local_of[index[candidate]]
        fast_flows = [flows[int(f)] for f in flow_ids]
        decoders: list[ModbusDecoder] = [f.decoder for f in fast_flows]
        seg_from_client = from_client[candidate]
        seg_seq = decoded.tcp_seq[candidate].astype(np.int64)
        seg_len = decoded.payload_len[candidate].astype(np.int64)
        next_seq = np.array([-1 if nxt is None else nxt for f in fast_flows
                             for nxt in (f.to_client.stream.next_seq,  # type: ignore[union-attr]
                                         f.to_server.stream.next_seq)],  # type: ignore[union-attr]
                            dtype=np.int64)
        carry = {2 * k + side: held for k, d in enumerate(decoders) for side in (0, 1)
                 if (held := d.held(bool(side)))}
        adus = frame_streams(Segments(
            buf=np.frombuffer(batch.buf, dtype=np.uint8), slot=local * 2 + seg_from_client,
            seq=seg_seq, offset=decoded.payload_off[candidate], length=seg_len,
            next_seq=next_seq, carry=carry), MAX_FRAMING_LENGTH)
        nseg = len(candidate)
        seg_of = adus.segment
        group = None  # one ADU per segment
        if adus.walked.any() and len(seg_of):
            starts = np.ones(len(seg_of), dtype=bool)
            starts[1:] = seg_of[1:] != seg_of[:-1]
            group = np.maximum.accumulate(np.where(starts, np.arange(len(seg_of)), 0))
        slot_first = adus.first_seq.tolist()
        data = FastInput(
            buf=adus.buf, flow=adus.slot >> 1, from_client=(adus.slot & 1).astype(bool),
            seq=adus.seq, offset=adus.offset, length=adus.length,
            ts=batch.ts[candidate[seg_of]], frame=batch.frame[candidate[seg_of]],
            next_seq=[(slot_first[2 * k + 1], slot_first[2 * k]) for k in range(len(fast_flows))],
            pending=_pending_in_play([d.pending for d in decoders], adus), group=group,
        )
        contexts = [d.context for d in decoders]
        result = fast_reads(data, self.book, contexts, batch.source)
        # Each flow is the decoder's from the first segment that was not taken here.
        cut = np.minimum(adus.cut[0::2], adus.cut[1::2])
        np.minimum.at(cut, data.flow[~result.handled], seg_of[~result.handled])
        consumed = np.arange(nseg) < cut[local]
        if not consumed.any():
            return nothing, _sorted_union(candidate, beyond)
        event_rows = candidate[seg_of[[i for i, _ in result.events]]].tolist()
        for row, (_, event) in zip(event_rows, result.events, strict=True):
            emit(row, event)
        self._hand_over(adus, result, fast_flows, consumed, local * 2 + seg_from_client,
                        (seg_seq + seg_len) & 0xFFFFFFFF, data.pending)
        count("modbus_fast_pdus", int(np.count_nonzero(result.handled)))
        return candidate[consumed], _sorted_union(candidate[~consumed], beyond)

    def _hand_over(self, adus: Adus, result: FastResult, fast_flows: list[Flow],
                   consumed: np.ndarray, seg_slot: np.ndarray, seg_end_seq: np.ndarray,
                   given: list[dict[int, _Pending]]) -> None:
        """Leave each flow's decoder and streams as the per-segment path would have left them
        after the consumed segments: sequence numbers, held bytes, pending requests (those
        ``given`` to the fast path replaced by what it left of them, in transaction order)."""
        taken = np.flatnonzero(consumed)
        last_seg = np.full(2 * len(fast_flows), -1, dtype=np.int64)
        np.maximum.at(last_seg, seg_slot[taken], taken)
        last_end = adus.stream_start.copy()
        handled = np.flatnonzero(result.handled)
        np.maximum.at(last_end, adus.slot[handled], adus.offset[handled] + adus.length[handled])
        slots = np.flatnonzero(last_seg >= 0)
        segs = last_seg[slots]
        for slot, seg, end_seq, walked in zip(slots.tolist(), segs.tolist(),
                                              seg_end_seq[segs].tolist(),
                                              adus.walked[slots].tolist(), strict=True):
            k, from_client = slot >> 1, bool(slot & 1)
            flow = fast_flows[k]
            stream = flow.to_server.stream if from_client else flow.to_client.stream
            assert stream is not None
            stream.next_seq = end_seq
            if walked:
                kept = adus.buf[int(last_end[slot]) : int(adus.segment_end[seg])].tobytes()
                flow.decoder.hold(from_client, kept)
        for k in np.flatnonzero(result.touched).tolist():
            decoder = fast_flows[k].decoder
            left = result.pending.get(k, {})
            if given[k] is not decoder.pending:  # only some were in play: the rest stay
                kept = decoder.pending
                for tid in given[k]:
                    del kept[tid]
                kept.update(left)
                left = dict(sorted(kept.items()))
            decoder.pending = left
            master, slave = decoder.context.client, decoder.context.server
            for pending in result.superseded.get(k, ()):
                self.book.unanswered(master, slave, pending)


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

ZEEK_FUNCTIONS = {
    "READ_COILS": 1, "READ_DISCRETE_INPUTS": 2, "READ_HOLDING_REGISTERS": 3,
    "READ_INPUT_REGISTERS": 4, "WRITE_SINGLE_COIL": 5, "WRITE_SINGLE_REGISTER": 6,
    "READ_EXCEPTION_STATUS": 7, "DIAGNOSTICS": 8, "GET_COMM_EVENT_COUNTER": 11,
    "GET_COMM_EVENT_LOG": 12, "WRITE_MULTIPLE_COILS": 15, "WRITE_MULTIPLE_REGISTERS": 16,
    "REPORT_SLAVE_ID": 17, "READ_FILE_RECORD": 20, "WRITE_FILE_RECORD": 21,
    "MASK_WRITE_REGISTER": 22, "READ_WRITE_MULTIPLE_REGISTERS": 23, "READ_FIFO_QUEUE": 24,
    "ENCAP_INTERFACE_TRANSPORT": 43,
}


def _zeek_modbus_function(value: Any) -> int:
    code = zeek.integer(value)
    if code is not None:
        return code
    text = str(value or "").upper()
    if text.startswith("UNKNOWN-"):
        return zeek.integer(text.split("-", 1)[1]) or 0
    return ZEEK_FUNCTIONS.get(text.removesuffix("_EXCEPTION"), 0)


def zeek_modbus(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    result.note("modbus.log: register addresses and values are not logged; only function "
                "codes and exceptions (ICSNPP modbus_detailed.log carries them)")
    function = _zeek_modbus_function(record.get("func")) & 0x7F  # exception replies set bit 7
    common: dict[str, Any] = {"transaction_id": zeek.integer(record.get("tid")) or 0,
                              "unit_id": zeek.integer(record.get("unit")) or 0,
                              "function": function}
    pdu_type = str(record.get("pdu_type", "") or "")
    if pdu_type == "REQ":
        return [ModbusRequest(**common, **zeek.ends(record))]
    exception = record.get("exception")
    return [ModbusResponse(**common, exception_code=_zeek_exception_code(exception),
                           **zeek.ends(record, from_orig=False))]


ZEEK_EXCEPTIONS = {"ILLEGAL_FUNCTION": 1, "ILLEGAL_DATA_ADDRESS": 2, "ILLEGAL_DATA_VALUE": 3,
                   "SLAVE_DEVICE_FAILURE": 4, "ACKNOWLEDGE": 5, "SLAVE_DEVICE_BUSY": 6,
                   "MEMORY_PARITY_ERROR": 8, "GATEWAY_PATH_UNAVAILABLE": 10,
                   "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND": 11}


def _zeek_exception_code(value: Any) -> int | None:
    if value in (None, "", "-"):
        return None
    return zeek.integer(value) or ZEEK_EXCEPTIONS.get(str(value).upper(), 0)


def _zeek_values(value: Any) -> tuple[int, ...]:
    if value in (None, ""):
        return ()
    items = value if isinstance(value, tuple) else str(value).split(",")
    out: list[int] = []
    for item in items:
        number = zeek.integer(item)
        if number is not None:
            out.append(number)
    return tuple(out)


def zeek_modbus_detailed(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    function = _zeek_modbus_function(record.get("func"))
    common: dict[str, Any] = {"transaction_id": zeek.integer(record.get("tid")) or 0,
                              "unit_id": zeek.integer(record.get("unit_id", record.get("unit"))) or 0,
                              "function": function, "address": zeek.integer(record.get("address")),
                              "quantity": zeek.integer(record.get("quantity")),
                              "values": _zeek_values(record.get("values"))}
    if zeek.is_orig(record) and str(record.get("request_response", "REQUEST")).upper().startswith("REQ"):
        return [ModbusRequest(**common, **zeek.ends(record))]
    return [ModbusResponse(**common, exception_code=_zeek_exception_code(record.get("exception_code")),
                           **zeek.ends(record, from_orig=False))]


PROTOCOL = register_protocol(ProtocolSpec(
    name="modbus", module=__name__, decoders=(SPEC,), run=ModbusRun,
    adapters={ModbusRequest: AS_IS, ModbusResponse: AS_IS},
    zeek={"modbus": zeek_modbus, "modbus_detailed": zeek_modbus_detailed},
))
