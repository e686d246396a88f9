"""A small read-only web dashboard over the store: the fleet, one crane, its report and findings.

Read-only by construction: the store is opened with SQLite ``mode=ro`` and only GET/HEAD are
answered (anything else gets 405, so there is no state change a cross-site request could
forge). Pages are server-rendered, with no scripts.

It binds 127.0.0.1 by default and answers only requests whose Host header names this machine
(``HostCheck``, a guard against DNS rebinding: a page of attacker.example whose name comes to
resolve to the dashboard still sends ``Host: attacker.example`` and gets 421). Accepted: an IP
address literal that is the bound address, the address the client reached (on a wildcard bind
``0.0.0.0``/``::``: any of the machine's addresses) or a loopback address; ``localhost``; the
machine's host name; names given with ``--allow-host`` (a reverse proxy's name, any port).

The server holds out against slow or many clients (``DashboardServer``): a request head must
arrive whole within ``header_timeout`` seconds (and an idle keep-alive connection is closed
after as long), at most ``max_connections`` are served at once (one thread each); when all are
taken, the one that has waited longest for its head is closed to make room (503 only when
every one is being answered), and the listen backlog is ``request_queue_size``. These are properties of the
server, not of the pages: whatever serves ``Dashboard`` next should keep them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape

from cranewatch import __version__
from cranewatch.errors import CranewatchError
from cranewatch.model import iso_time
from cranewatch.report.commissioning import build_report, report_records
from cranewatch.report.html import render_html
from cranewatch.store import open_store

SECURITY_HEADERS = {
    # inline styles only: no scripts, no outside resources, no framing
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("cranewatch.web", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["iso"] = lambda ts: (iso_time(ts) or "")[:19].replace("T", " ")
    return env


class Dashboard:
    """Routes a path to a page; pure apart from reading the store (testable without a socket)."""

    def __init__(self, db: str | Path) -> None:
        self.db = db  # a file, or a postgresql:// URL (which Path would mangle: "//" becomes "/")
        self.env = _environment()

    def page(self, path: str) -> Page:
        parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
        try:
            if not parts:
                return self._fleet()
            if parts == ["api", "cranes"]:
                return self._api_cranes()
            if len(parts) >= 2 and parts[0] == "crane":
                name, rest = parts[1], parts[2:]
                if rest == []:
                    return self._crane(name)
                if rest == ["report"]:
                    return self._report(name)
                if rest == ["report.jsonl"]:
                    return self._report_jsonl(name)
        except CranewatchError as exc:
            return self._error(HTTPStatus.NOT_FOUND, exc.message)
        return self._error(HTTPStatus.NOT_FOUND, f"no page {path}")

    def _render(self, template: str, **context: Any) -> Page:
        html = self.env.get_template(template).render(version=__version__, **context)
        return Page(HTTPStatus.OK, html.encode())

    def _error(self, status: HTTPStatus, message: str) -> Page:
        html = self.env.get_template("error.html.j2").render(version=__version__, status=int(status),
                                                            message=message)
        return Page(int(status), html.encode())

    def _fleet(self) -> Page:
        with open_store(self.db, readonly=True) as store:
            rows = [(c, store.latest_gate(c.name), len(store.current_findings(c.name))) for c in store.cranes()]
        return self._render("fleet.html.j2", rows=rows)

    def _api_cranes(self) -> Page:
        with open_store(self.db, readonly=True) as store:
            cranes = []
            for c in store.cranes():
                gate = store.latest_gate(c.name)
                cranes.append({**c.to_json(), "decision": gate.decision if gate else None})
        return Page(HTTPStatus.OK, json.dumps(cranes, indent=1).encode(), "application/json")

    def _crane(self, name: str) -> Page:
        with open_store(self.db, readonly=True) as store:
            report = build_report(store, name)
        return self._render("crane.html.j2", r=report, crane=report.crane)

    def _report(self, name: str) -> Page:
        with open_store(self.db, readonly=True) as store:
            report = build_report(store, name)
        return Page(HTTPStatus.OK, render_html(report).encode())

    def _report_jsonl(self, name: str) -> Page:
        with open_store(self.db, readonly=True) as store:
            records = report_records(build_report(store, name))
        body = "".join(json.dumps(r) + "\n" for r in records)
        return Page(HTTPStatus.OK, body.encode(), "application/x-ndjson")


WILDCARDS = ("0.0.0.0", "::", "")


def _split_host(header: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6]:port`` → (lower-case host, port or None); None if malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        close = header.find("]")
        if close < 0:
            return None
        host, rest = header[1:close], header[close + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif header.count(":") == 1:
        host, port_text = header.split(":")
    else:
        host, port_text = header, None
    if port_text is None:
        return host.rstrip("."), None
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    return host.rstrip("."), int(port_text)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class HostCheck:
    """Which Host headers the dashboard answers (see the module docstring). Pure: the server
    gives the header and the local address of the connection it came on."""

    bound_host: str
    port: int
    names: frozenset[str] = frozenset()  # the machine's host names
    extra: frozenset[str] = frozenset()  # --allow-host names: answered on any port

    @classmethod
    def for_server(cls, bound_host: str, port: int, allow: Iterable[str] = ()) -> HostCheck:
        names = {"localhost"}
        if bound_host in WILDCARDS or not (_ip(bound_host) or ipaddress.ip_address("127.0.0.1")).is_loopback:
            names |= {n.lower().rstrip(".") for n in (socket.gethostname(), socket.getfqdn()) if n}
        return cls(bound_host, port, frozenset(names), frozenset(a.lower().rstrip(".") for a in allow))

    def allows(self, header: str | None, local_address: str) -> bool:
        parsed = _split_host(header or "")
        if parsed is None or not parsed[0]:
            return False
        host, port = parsed
        if host in self.extra:
            return True
        if port is not None and port != self.port:
            return False
        address = _ip(host)
        if address is None:
            return host in self.names
        if address.is_loopback:
            return True
        return address in {_ip(self.bound_host), _ip(local_address)}


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server with bounds that do not come from its clients."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's default of 5 pushed p99 to 1 s)
    max_connections = 64  # connections served at once, one thread each
    header_timeout = 10.0  # seconds for a request head to arrive whole; also the idle keep-alive
    host_check: HostCheck

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 allow_hosts: Iterable[str] = ()) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._cut: set[socket.socket] = set()  # closed by us: what arrived is not a request
        self._lock = threading.Lock()
        super().__init__(address, handler)
        self.host_check = HostCheck.for_server(str(self.server_address[0]), int(self.server_address[1]),
                                               allow_hosts)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not (
                self._evict_slowest() and self._slots.acquire(timeout=1.0)):
            try:  # full of requests being served: say so at once rather than start a thread
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._deadlines.pop(request, None)
                self._cut.discard(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away or was cut off: nothing to report, no traceback
        super().handle_error(request, client_address)

    def _evict_slowest(self) -> bool:
        """Full: close the connection that has waited longest for its request head (a slow
        client, or an idle keep-alive), so that a client that sends its request at once is
        served even while hundreds trickle. False when every connection is being answered."""
        with self._lock:
            if not self._deadlines:
                return False
            oldest = min(self._deadlines, key=self._deadlines.__getitem__)
        self._cut_off([oldest])
        return True

    def _cut_off(self, connections: list[socket.socket]) -> None:
        """Close connections whose head has not come: their handlers' reads return at once,
        and what they read is not taken for a request (``was_cut``)."""
        with self._lock:
            for conn in connections:
                self._deadlines.pop(conn, None)
                self._cut.add(conn)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def was_cut(self, connection: socket.socket) -> bool:
        with self._lock:
            return connection in self._cut

    def arm(self, connection: socket.socket) -> None:
        """A request head is awaited on ``connection``: it must be whole by the deadline."""
        with self._lock:
            self._deadlines[connection] = time.monotonic() + self.header_timeout

    def disarm(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(connection, None)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` twice a second: close connections past their deadline
        (a slow client sending a byte now and then never trips a per-read timeout)."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline < now]
        if late:
            self._cut_off(late)

    @property
    def waiting_heads(self) -> int:
        """Connections whose request head is still awaited (for tests and the curious)."""
        with self._lock:
            return len(self._deadlines)


class DashboardServer6(DashboardServer):
    address_family = socket.AF_INET6


def make_server(db: str | Path, host: str = "127.0.0.1", port: int = 8077,
                allow_hosts: Iterable[str] = ()) -> DashboardServer:
    """A server for the dashboard (not yet serving: call ``serve_forever``)."""
    dashboard = Dashboard(db)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"cranewatch/{__version__}"
        sys_version = ""
        server: DashboardServer
        timeout = DashboardServer.header_timeout  # per read; the server's deadline bounds the whole head

        def handle_one_request(self) -> None:
            self.server.arm(self.connection)
            super().handle_one_request()

        def parse_request(self) -> bool:
            # A connection cut off while its head trickled in reads end-of-file; http.server
            # would take the part that came for a request: answer nothing instead.
            if self.server.was_cut(self.connection):
                self.close_connection = True
                return False
            parsed = super().parse_request()  # reads the header lines
            self.server.disarm(self.connection)  # the head has arrived
            if self.server.was_cut(self.connection):
                self.close_connection = True
                return False
            return parsed

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the CLI prints where it serves; access logs are not wanted here

        def _allowed_host(self) -> bool:
            return self.server.host_check.allows(self.headers.get("Host"), str(self.connection.getsockname()[0]))

        def _send(self, page: Page, *, body: bool = True) -> None:
            self.send_response(page.status)
            self.send_header("Content-Type", page.content_type)
            self.send_header("Content-Length", str(len(page.body)))
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(page.body)

        def do_GET(self) -> None:
            if not self._allowed_host():
                self._send(dashboard._error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header"))
                return
            self._send(dashboard.page(self.path))

        def do_HEAD(self) -> None:
            if not self._allowed_host():
                self._send(dashboard._error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header"), body=False)
                return
            self._send(dashboard.page(self.path), body=False)

        def _refuse(self) -> None:
            page = dashboard._error(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only")
            self.send_response(page.status)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Type", page.content_type)
            self.send_header("Content-Length", str(len(page.body)))
            self.end_headers()
            self.wfile.write(page.body)

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    server_class = DashboardServer6 if ":" in host else DashboardServer
    return server_class((host, port), Handler, allow_hosts)


def serve_in_background(db: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[DashboardServer, str]:
    """Start the dashboard on a thread; returns the server (``shutdown()`` it) and its base URL."""
    server = make_server(db, host, port)
    threading.Thread(target=server.serve_forever, name="cranewatch-web", daemon=True).start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{bound_host}:{bound_port}"
