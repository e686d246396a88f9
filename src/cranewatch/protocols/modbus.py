"""Modbus/TCP: MBAP framing, every public function code, request/response pairing.

Event types are declared here first (the contract other parts build on); the decoder follows.

Reads that a master repeats every cycle are the bulk of crane traffic, so the pipeline does
not hand them to detectors one object per PDU: it folds each (master, slave, unit, function,
address, quantity) into a ``RegisterSeries`` of timestamps, frames and values. Everything
else (writes, diagnostics, device identification, exceptions, unknown codes) is an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cranewatch.errors import DecodeError
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, register

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

    @property
    def table(self) -> str:
        return TABLE_OF_FUNCTION.get(self.function, "?")


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------

MBAP_LEN = 7  # transaction id, protocol id, length, unit id
MAX_ADU_LENGTH = 260  # MBAP length field counts unit id + PDU: at most 254 (1 + 253)
MAX_MBAP_LENGTH = 254

# Request byte counts that the standard fixes, to reject what cannot be Modbus.
_MAX_READ_BITS = 2000
_MAX_READ_REGISTERS = 125


def _u16(data: bytes, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


def _words(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise DecodeError(f"odd register byte count {len(data)}")
    return tuple(int(x) for x in np.frombuffer(data, dtype=">u2"))


def _bits(data: bytes, count: int | None) -> tuple[int, ...]:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if count is not None:
        bits = bits[:count]
    return tuple(int(b) for b in bits)


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
    if fc == 5:
        _exact(body, 4, "FC 5 request")
        raw = _u16(body, 2)
        coil_detail: dict[str, Any] = {} if raw in (0, 0xFF00) else {"raw_value": raw}
        return RequestFields(fc, address=_u16(body, 0), quantity=1, values=(1 if raw else 0,),
                             detail=coil_detail)
    if fc == 6:
        _exact(body, 4, "FC 6 request")
        return RequestFields(fc, address=_u16(body, 0), quantity=1, values=(_u16(body, 2),))
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
            _exact(body, 3, "FC 43/14 request")
            return RequestFields(fc, sub_function=mei,
                                 detail={"read_code": body[1], "object_id": body[2]})
        return RequestFields(fc, sub_function=mei, detail={"data": body[1:].hex()})
    if fc & 0x80 or fc == 0:
        raise DecodeError(f"function code {fc} is not valid in a request")
    # User-defined and unassigned codes: keep the bytes, do not guess their meaning.
    return RequestFields(fc, detail={"data": body.hex()})


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
    if fc in (5, 6):
        _exact(body, 4, f"FC {fc} response")
        raw = _u16(body, 2)
        value = (1 if raw else 0) if fc == 5 else raw
        return ResponseFields(fc, address=_u16(body, 0), quantity=1, values=(value,))
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
    if fc in (15, 16):
        _exact(body, 4, f"FC {fc} response")
        return ResponseFields(fc, address=_u16(body, 0), quantity=_u16(body, 2))
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
    if fc == 0:
        raise DecodeError("function code 0 is not valid")
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
    if at != len(body):
        raise DecodeError("FC 43/14 response: bytes after the object list")
    return {"mei_type": 14, "read_code": body[1], "conformity": body[2],
            "more_follows": body[3], "next_object_id": body[4], "objects": objects}


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
    return data[2] == 0 and data[3] == 0 and 2 <= length <= MAX_MBAP_LENGTH and data[7] != 0


def probe(client_first: bytes, server_first: bytes) -> bool:
    if client_first:
        return looks_like_mbap(client_first)
    return looks_like_mbap(server_first)


class ModbusDecoder:
    """Decodes one Modbus/TCP connection: MBAP framing per direction, pairing by transaction.

    Bytes that do not fit in an ADU yet are kept until the next ``feed``. A malformed PDU is
    consumed and raises ``DecodeError``; the events decoded before it in the same call are
    returned by the next call (the pipeline calls ``feed(…, b"", …)`` after an error).
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
        self._ready: list[Event] = []

    def gap(self, from_client: bool) -> None:
        self._buffer[from_client] = b""
        self._resync[from_client] = True

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        events, self._ready = self._ready, []
        buffer = self._buffer[from_client] + data if self._buffer[from_client] else data
        at = 0
        try:
            while len(buffer) - at >= MBAP_LEN + 1:
                protocol_id = _u16(buffer, at + 2)
                length = _u16(buffer, at + 4)
                if protocol_id or not 2 <= length <= MAX_MBAP_LENGTH:
                    skipped = len(buffer) - at
                    at = len(buffer)  # framing is lost: drop what we hold and resynchronise
                    if self._resync[from_client]:
                        break  # still searching after a gap: no new warning
                    self._resync[from_client] = True
                    raise DecodeError(
                        f"not a Modbus/TCP header (protocol id {protocol_id}, length {length});"
                        f" {skipped} bytes skipped"
                    )
                end = at + 6 + length
                if end > len(buffer):
                    break
                self._resync[from_client] = False
                adu = buffer[at:end]
                at = end
                event = self._decode_adu(from_client, adu, ts, frame)
                if event is not None:
                    events.append(event)
        except DecodeError:
            self._buffer[from_client] = buffer[at:]
            self._ready = events
            raise
        self._buffer[from_client] = buffer[at:]
        if self._resync[from_client] and len(self._buffer[from_client]) > MAX_ADU_LENGTH:
            self._buffer[from_client] = b""
        return events

    def _decode_adu(self, from_client: bool, adu: bytes, ts: float, frame: int) -> Event | None:
        ctx = self.context
        transaction_id = _u16(adu, 0)
        unit_id = adu[6]
        pdu = adu[7:]
        if from_client:
            fields = parse_request(pdu)
            if transaction_id in self.pending:
                self.unanswered.append(self.pending.pop(transaction_id))
            if len(self.pending) >= self.MAX_PENDING:
                oldest = next(iter(self.pending))
                self.unanswered.append(self.pending.pop(oldest))
            self.pending[transaction_id] = _Pending(frame, ts, unit_id, fields)
            return ModbusRequest(
                ts=ts, frame=frame, src=ctx.client, dst=ctx.server, sport=ctx.client_port,
                dport=ctx.server_port, source=ctx.source, transaction_id=transaction_id,
                unit_id=unit_id, function=fields.function, address=fields.address,
                quantity=fields.quantity, values=fields.values, sub_function=fields.sub_function,
                read_address=fields.read_address, read_quantity=fields.read_quantity,
                detail=fields.detail,
            )
        _need(pdu, 1, "response")
        request = self.pending.get(transaction_id)
        if request is not None and request.fields.function != pdu[0] & 0x7F:
            request = None  # a different question was asked with this id: not its answer
        if request is not None:
            del self.pending[transaction_id]
        answer = parse_response(pdu, request.fields if request is not None else None)
        address, quantity = answer.address, answer.quantity
        if request is not None:
            asked = request.fields
            if asked.function == 23:
                address, quantity = asked.read_address, asked.read_quantity
            elif asked.address is not None:
                address, quantity = asked.address, asked.quantity
        return ModbusResponse(
            ts=ts, frame=frame, src=ctx.server, dst=ctx.client, sport=ctx.server_port,
            dport=ctx.client_port, source=ctx.source, transaction_id=transaction_id,
            unit_id=unit_id, function=answer.function, exception_code=answer.exception_code,
            address=address, quantity=quantity, values=answer.values,
            request_frame=request.frame if request is not None else None, detail=answer.detail,
        )


SPEC = register(
    DecoderSpec(name="modbus", transport="tcp", ports=frozenset({502}), factory=ModbusDecoder,
                probe=probe, priority=10, aliases=("mbtcp",))
)
