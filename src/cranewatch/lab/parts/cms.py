"""Crane management system PC: polls the PLC, takes work orders over HTTP, logs to syslog.

Every 200 ms it reads input registers 0–11 and discrete inputs 0–6 of unit 1 (two Modbus
requests per cycle), as the CMS HMI does. It serves ``POST /workorders`` and ``GET /status``
on :8080 for the TOS, sends RFC 3164 syslog to the terminal, asks the terminal NTP server
for the time every 16 s, and pulses ``fault_reset`` five seconds after a trip clears.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pymodbus.client import ModbusTcpClient

from cranewatch.lab.parts.common import dns_query, setup_part, sntp_query, stopping
from cranewatch.lab.physics import ProcessImage

POLL_INTERVAL = 0.2
NTP_INTERVAL = 16.0
STATUS_INTERVAL = 10.0


class CmsState:
    """What the CMS knows: the last process image and the work orders received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.image: ProcessImage | None = None
        self.work_orders: list[dict[str, object]] = []

    def status(self) -> dict[str, object]:
        with self.lock:
            image = self.image
            orders = len(self.work_orders)
        values = {name: image.value(name) for name in ProcessImage.IR_NAMES} if image else {}
        bits = {name: image.bit(name) for name in ProcessImage.DI_NAMES} if image else {}
        return {"crane": "STS-07", "registers": values, "status": bits, "work_orders": orders}


def http_handler(state: CmsState, syslog: logging.Logger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "CMS/2.4"

        def _reply(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/status":
                self._reply(200, state.status())
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/workorders":
                self._reply(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                order = json.loads(self.rfile.read(length))
            except ValueError:
                self._reply(400, {"error": "not JSON"})
                return
            with state.lock:
                state.work_orders.append(order)
                number = len(state.work_orders)
            syslog.info("work order %s accepted: %s %s", number, order.get("container"),
                        order.get("move"))
            self._reply(201, {"accepted": number})

        def log_message(self, format: str, *args: object) -> None:
            logging.getLogger("cms").info("http %s %s", self.address_string(), format % args)

    return Handler


def poll_plc(args: argparse.Namespace, state: CmsState, syslog: logging.Logger,
             log: logging.Logger) -> None:
    client = ModbusTcpClient(args.plc, port=502, timeout=1)
    next_poll = time.monotonic()
    last_status = 0.0
    trip_cleared_at: float | None = None
    tripped = False
    while not stopping.is_set():
        if not client.connected:
            client.connect()
        try:
            regs = client.read_input_registers(0, count=12, device_id=1)
            bits = client.read_discrete_inputs(0, count=7, device_id=1)
        except Exception as exc:  # the PLC restarting communications, a dropped link
            log.warning("poll failed: %s", exc)
            client.close()
            stopping.wait(1.0)
            continue
        if not regs.isError() and not bits.isError():
            image = ProcessImage(tuple(regs.registers), tuple(bits.bits[:7]))
            with state.lock:
                state.image = image
            now_tripped = image.bit("overload_trip") or image.bit("wind_stop")
            if now_tripped and not tripped:
                syslog.warning("TRIP overload=%s wind=%s load=%s wind=%s/%s",
                               image.bit("overload_trip"), image.bit("wind_stop"),
                               image.value("hoist_load"), image.value("wind_speed_1"),
                               image.value("wind_speed_2"))
                trip_cleared_at = time.monotonic()
            tripped = now_tripped
            if tripped and trip_cleared_at and time.monotonic() - trip_cleared_at > 5.0:
                client.write_coil(1, True, device_id=1)  # fault_reset pulse
                syslog.info("fault reset sent")
                trip_cleared_at = time.monotonic()
            if time.monotonic() - last_status >= STATUS_INTERVAL:
                last_status = time.monotonic()
                syslog.info("status heartbeat=%d load=%d height=%d wind=%d",
                            image.value("heartbeat"), image.value("hoist_load"),
                            image.value("hoist_height"), image.value("wind_speed_1"))
        next_poll += POLL_INTERVAL
        stopping.wait(max(0.0, next_poll - time.monotonic()))
    client.close()


def keep_time(args: argparse.Namespace, ntp_server: str, log: logging.Logger) -> None:
    while not stopping.is_set():
        offset = sntp_query(ntp_server)
        log.info("ntp offset %s", None if offset is None else f"{offset:+.4f}s")
        stopping.wait(NTP_INTERVAL)


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.cms")
    parser.add_argument("--plc", default="10.20.7.10")
    parser.add_argument("--dns", default="10.20.0.8")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    log = setup_part("cms")
    syslog_ip = (dns_query("syslog.terminal.lan", args.dns) or ["10.20.0.9"])[0]
    ntp_ip = (dns_query("ntp.terminal.lan", args.dns) or ["10.20.0.7"])[0]
    syslog = logging.getLogger("cms.syslog")
    handler = logging.handlers.SysLogHandler(
        address=(syslog_ip, 514), facility=logging.handlers.SysLogHandler.LOG_LOCAL0)
    # RFC 3164: "Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG" after the <PRI> the handler adds
    rfc3164 = logging.Formatter("%(asctime)s sts07-cms cms[%(process)d]: %(message)s",
                                datefmt="%b %d %H:%M:%S")
    rfc3164.converter = time.gmtime
    handler.setFormatter(rfc3164)
    syslog.addHandler(handler)
    state = CmsState()
    server = ThreadingHTTPServer(("0.0.0.0", args.port), http_handler(state, syslog))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=keep_time, args=(args, ntp_ip, log), daemon=True).start()
    syslog.info("CMS started, polling PLC %s every %d ms", args.plc, POLL_INTERVAL * 1000)
    poll_plc(args, state, syslog, log)
    server.shutdown()


if __name__ == "__main__":
    main()
