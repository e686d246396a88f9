"""A small read-only web dashboard over the store: the fleet, one crane, its report and findings.

Read-only by construction: the store is opened with SQLite ``mode=ro`` and only GET/HEAD are
answered (anything else gets 405, so there is no state change a cross-site request could
forge). It binds 127.0.0.1 by default and answers only requests whose Host header names the
address it serves (a guard against DNS rebinding). Pages are server-rendered, with no scripts.
"""

from __future__ import annotations

import json
import threading
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
        self.db = Path(db)
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


def make_server(db: str | Path, host: str = "127.0.0.1", port: int = 8077) -> ThreadingHTTPServer:
    """A server for the dashboard (not yet serving: call ``serve_forever``)."""
    dashboard = Dashboard(db)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"cranewatch/{__version__}"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the CLI prints where it serves; access logs are not wanted here

        def _allowed_host(self) -> bool:
            address: Any = self.server.server_address
            bound_host, bound_port = str(address[0]), int(address[1])
            names = {f"{bound_host}:{bound_port}", str(bound_host)}
            if str(bound_host) in ("127.0.0.1", "::1"):
                names |= {f"localhost:{bound_port}", "localhost", f"[::1]:{bound_port}"}
            return self.headers.get("Host", "") in names

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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_background(db: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the dashboard on a thread; returns the server (``shutdown()`` it) and its base URL."""
    server = make_server(db, host, port)
    threading.Thread(target=server.serve_forever, name="cranewatch-web", daemon=True).start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{bound_host}:{bound_port}"
