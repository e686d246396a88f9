"""The crane PLC: a pymodbus Modbus/TCP server serving the STS-07 process image at 10 Hz.

Unit 1 holds the tables of ``crane-reference.md``: input registers 0–11 (sensors), discrete
inputs 0–6 (status bits), holding registers 0–3 (setpoints) and coils 0–1 (commands). A
10 Hz task steps the physics with the current setpoints, so writes take effect on the crane:
``safety_bypass`` disables the trips and a raised ``overload_limit`` moves the trip point.
An optional ``--fault`` makes it a compromised PLC (see ``faults``) during a time window.

Run inside the PLC namespace:
``python -m cranewatch.lab.plc --seed 7 [--fault false-load --fault-start T --fault-end T]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import replace

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from cranewatch.lab.faults import Tamper
from cranewatch.lab.parts.common import setup_part, stopping
from cranewatch.lab.physics import DT, Crane, ProcessImage, Setpoints

__all__ = ["ProcessTables", "identity", "main"]

UNIT = 1
IR_COUNT, DI_COUNT, HR_COUNT, CO_COUNT = 12, 7, 4, 2
READ_FUNCTIONS = {1: "co", 2: "di", 3: "hr", 4: "ir"}
WRITE_FUNCTIONS = {5: "co", 15: "co", 6: "hr", 16: "hr", 22: "hr", 23: "hr"}

log = logging.getLogger("plc")


def identity() -> ModbusDeviceIdentification:
    """What the PLC answers to FC 43/14 (read device identification)."""
    return ModbusDeviceIdentification(info_name={
        "VendorName": "ZPMC Electric",
        "ProductCode": "QC-PLC-3200",
        "MajorMinorRevision": "V3.2.7",
        "VendorUrl": "http://crane-vendor.example",
        "ProductName": "STS crane controller",
        "ModelName": "STS-07 main PLC",
    })


def _bits_to_words(bits: list[bool]) -> list[int]:
    """Bits packed into 16-bit words the way the pymodbus simulator stores them."""
    padded = bits + [False] * (-len(bits) % 16)
    return list(SimUtils.bitsToRegisters(padded))


class ProcessTables:
    """The PLC's four tables; the pymodbus datastore mirrors them on every request.

    Reads are filled from here just before pymodbus answers; writes land here (and in
    pymodbus' own copy), so the physics loop sees them in the next cycle.
    """

    def __init__(self, setpoints: Setpoints) -> None:
        self.image = ProcessImage((0,) * IR_COUNT, (False,) * DI_COUNT)
        self.setpoints = setpoints

    def holding(self) -> list[int]:
        sp = self.setpoints
        return [sp.overload_limit, sp.wind_stop_limit, sp.hoist_speed_limit, sp.trolley_speed_limit]

    def coils(self) -> list[bool]:
        return [self.setpoints.safety_bypass, self.setpoints.fault_reset]

    def table(self, name: str) -> list[int]:
        if name == "ir":
            return list(self.image.ir)
        if name == "hr":
            return self.holding()
        bits = list(self.image.di) if name == "di" else self.coils()
        return _bits_to_words(bits)

    def write(self, name: str, address: int, values: list[int] | list[bool]) -> None:
        if name == "hr":
            regs = self.holding()
            regs[address:address + len(values)] = [int(v) for v in values]
            sp = self.setpoints
            self.setpoints = replace(sp, overload_limit=regs[0], wind_stop_limit=regs[1],
                                     hoist_speed_limit=regs[2], trolley_speed_limit=regs[3])
        else:
            bits = self.coils()
            bits[address:address + len(values)] = [bool(v) for v in values]
            self.setpoints = replace(self.setpoints, safety_bypass=bits[0], fault_reset=bits[1])
        log.info("write %s[%d] = %s -> %s", name.upper(), address, list(values), self.setpoints)

    async def on_access(self, function_code: int, start_address: int, address: int, count: int,
                        current_registers: list[int],
                        set_values: list[int] | list[bool] | None) -> None:
        """pymodbus' device action: refresh the mirror before a read, record a write."""
        if set_values is not None and function_code in WRITE_FUNCTIONS:
            self.write(WRITE_FUNCTIONS[function_code], address, set_values)
            return
        name = READ_FUNCTIONS.get(function_code) or WRITE_FUNCTIONS.get(function_code)
        if name:
            fresh = self.table(name)
            current_registers[:len(fresh)] = fresh


def device(tables: ProcessTables) -> SimDevice:
    """Unit 1 with four separate tables, bit-addressed coils and discrete inputs."""
    def registers(count: int, readonly: bool) -> list[SimData]:
        return [SimData(0, count=count, values=0, datatype=DataType.REGISTERS, readonly=readonly)]

    def bits(count: int, readonly: bool) -> list[SimData]:
        return [SimData(0, values=[False] * count, datatype=DataType.BITS, readonly=readonly)]

    return SimDevice(
        id=UNIT,
        simdata=(bits(CO_COUNT, False), bits(DI_COUNT, True), registers(HR_COUNT, False),
                 registers(IR_COUNT, True)),
        use_bit_addressing=True,
        action=tables.on_access,
    )


async def physics_loop(crane: Crane, tables: ProcessTables, tamper: Tamper | None) -> None:
    """Step the crane every 100 ms on the wall clock (no drift: cycles are scheduled)."""
    next_cycle = time.monotonic()
    trips: tuple[bool, ...] = (False, False)
    while not stopping.is_set():
        image = crane.step(tables.setpoints)
        if tamper is not None:
            image = tamper.apply(image, time.time())
        tables.image = image
        if tables.setpoints.fault_reset:
            # The coil is a pulse: the PLC program clears it once it acted on it.
            tables.setpoints = replace(tables.setpoints, fault_reset=False)
        if image.di[2:4] != trips:
            trips = image.di[2:4]
            log.info("trips overload=%s wind=%s", *trips)
        next_cycle += DT
        await asyncio.sleep(max(0.0, next_cycle - time.monotonic()))


def _trace_pdu(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
    if not sending and pdu.function_code in (8, 43):
        log.info("request function %d sub %s", pdu.function_code,
                 getattr(pdu, "sub_function_code", None))
    return pdu


async def serve(args: argparse.Namespace) -> None:
    crane = Crane(seed=args.seed, heartbeat=args.seed * 7919 % 65536)
    tables = ProcessTables(Setpoints())
    tamper = (Tamper(args.fault, args.fault_start, args.fault_end) if args.fault else None)
    server = ModbusTcpServer(device(tables), address=(args.host, args.port), identity=identity(),
                             trace_pdu=_trace_pdu)
    physics = asyncio.create_task(physics_loop(crane, tables, tamper))
    await server.serve_forever(background=True)
    log.info("serving unit %d on %s:%d seed %d fault %s", UNIT, args.host, args.port, args.seed,
             args.fault)
    while not stopping.is_set():
        await asyncio.sleep(0.1)
    physics.cancel()
    await server.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.plc")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault", choices=("false-load", "wind-freeze", "replay"))
    parser.add_argument("--fault-start", type=float, default=0.0)
    parser.add_argument("--fault-end", type=float, default=0.0)
    args = parser.parse_args(argv)
    setup_part("plc")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # unknown-unit probes are expected
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
