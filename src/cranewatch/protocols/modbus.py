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

from cranewatch.protocols.base import Event

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
