"""Receivers that only record: the terminal syslog server and the outside HTTP collector.

``syslog``: UDP :514, writes every message it receives to stdout.
``http``: an HTTP server that accepts any POST/GET and logs what arrived (the attacker's
collection endpoint for exfiltrated container events).
"""

from __future__ import annotations

import argparse
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cranewatch.lab.parts.common import setup_part, stopping


def syslog_server(port: int) -> None:
    log = setup_part("syslog")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        sock.settimeout(0.5)
        while not stopping.is_set():
            try:
                data, peer = sock.recvfrom(8192)
            except TimeoutError:
                continue
            log.info("%s %s", peer[0], data.decode("utf-8", "replace").strip())


def http_collector(port: int) -> None:
    log = setup_part("collector")

    class Handler(BaseHTTPRequestHandler):
        server_version = "nginx/1.18.0"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length) if length else b""
            log.info("%s %s %s %s", self.client_address[0], self.command, self.path,
                     body.decode("utf-8", "replace"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping.wait()
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.sink")
    parser.add_argument("kind", choices=("syslog", "http"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.kind == "syslog":
        syslog_server(args.port or 514)
    else:
        http_collector(args.port or 80)


if __name__ == "__main__":
    main()
