"""The operations console: a Starlette application over the store (``cranewatch serve``).

Security, in the order a request meets it (``Guard``, one ASGI middleware around every route):

1. the Host header must name this machine (``server.HostCheck``; 421 otherwise);
2. security headers on every response: a CSP without inline scripts (``script-src 'self'``;
   only the stored commissioning report may use inline styles), ``X-Frame-Options: DENY``,
   ``nosniff``, ``no-referrer``, ``Cache-Control: no-store``;
3. a session, except for ``PUBLIC`` (the login form and the stylesheet/script files): the
   cookie's token is looked up by its sha256 in the store; expired (absolute lifetime or idle
   limit) or unknown: a page redirects to ``/login``, the API answers 401;
4. every state change (any method but GET/HEAD) carries the session's CSRF token in
   ``X-CSRF-Token`` and, when the browser sends ``Origin``, comes from this origin (403
   otherwise). ``POST /login`` has no session yet: it is checked by ``Origin`` alone, and the
   cookie is SameSite=Strict.

Each endpoint then checks its role (``auth.may``). Writes go through the same library the CLI
uses (``cranewatch.triage.dispose``, ``gate.decide``, ``Store.record_finding_note``): the console
has no second way to write the store. Templates are Jinja2 with autoescaping; the JavaScript
(``static/console.js``) sets text, never HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cranewatch import __version__
from cranewatch.errors import (
    CranewatchError,
    EnvironmentProblem,
    InputError,
    StateError,
    UsageError,
)
from cranewatch.model import iso_time
from cranewatch.runtime import fewer_collections
from cranewatch.store import FINDING_STATES, Session, Store, open_store
from cranewatch.web import auth, data
from cranewatch.web.server import HostCheck

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
PAGE_SIZE = 50
CRANE_INCIDENTS = 20  # the crane page shows the worst; the incidents page has them all, by pages
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
REPORT_CSP = CSP.replace("style-src 'self'", "style-src 'unsafe-inline'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on a form post,
    # which the origin check (rightly) refuses; other sites (ATT&CK links) still get no referrer
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC = {("GET", "/login"), ("HEAD", "/login"), ("POST", "/login")}
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = ("GET", "HEAD")


@dataclass(slots=True)
class Settings:
    db: str | Path
    host_check: HostCheck | None = None  # None: no Host check (the in-process test client)
    tls: bool = False
    session_seconds: float = 8 * 3600  # absolute lifetime of a login
    idle_seconds: float = 30 * 60  # a session unused this long ends
    limiter: auth.LoginLimiter = field(default_factory=auth.LoginLimiter)
    poll_seconds: float = 1.0  # how often the live stream looks for new monitor checkpoints
    cache_seconds: float = 2.0  # the quay and a crane's overview may be this old (0: never cached)

    @property
    def cookie(self) -> str:
        # __Host-: the browser keeps it only if Secure, Path=/ and no Domain (no subdomain can set it)
        return "__Host-cw_session" if self.tls else "cw_session"


class Cache:
    """Results that cost a page tens of milliseconds (a crane's tile, timeline and worst
    incidents) kept for ``seconds``: what other programs write shows within that time, and
    every state change made through the console clears it at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._kept: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if self.seconds <= 0:
            return make()
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        value = make()
        with self._lock:
            self._kept[key] = (now + self.seconds, value)
            if len(self._kept) > 1000:
                self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
        return value

    def forget(self, *keys: Any) -> None:
        with self._lock:
            for key in keys:
                self._kept.pop(key, None)


class Stores:
    """One store per worker thread, opened at its first request and kept (a connection per
    request cost a third of a small page: the open, the schema check and the WAL checkpoint at
    close); dropped after a store error, all closed when the server stops (``close_all``)."""

    def __init__(self, db: str | Path) -> None:
        self.db = db
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def opened(self) -> Iterator[Store]:
        store = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.db, create=False)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        try:
            yield store
        except BaseException:
            self._drop(store)  # a failed request may leave a broken connection: the next opens anew
            raise

    def _drop(self, store: Store) -> None:
        self._local.store = None
        with self._lock:
            if store in self._all:
                self._all.remove(store)
        with contextlib.suppress(Exception):
            store.close()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            raise RuntimeError("no store is open on this thread (run the work inside Stores.opened)")
        return store

    def close_all(self) -> None:
        with self._lock:
            stores, self._all = self._all, []
        for store in stores:
            # an SQLite connection may be closed only by its thread: the others end with the process
            with contextlib.suppress(Exception):
                store.close()


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("cranewatch.web", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["iso"] = _short_time
    env.filters["url"] = lambda text: quote(str(text), safe="")
    env.globals["version"] = __version__
    return env


def _short_time(value: Any) -> str:
    """An epoch or ISO time as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    text = iso_time(value) if isinstance(value, int | float) else str(value or "")
    return (text or "")[:19].replace("T", " ")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    text = _header(scope, b"cookie") or ""
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Guard:
    """Host check, security headers, session and CSRF for every request (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, stores: Stores) -> None:
        self.app = app
        self.settings = settings
        self.stores = stores

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = REPORT_CSP if scope["path"].endswith("/report") else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {h.lower().encode() for h in SECURITY_HEADERS}]
                for key, value in SECURITY_HEADERS.items():
                    headers.append((key.lower().encode(), (csp if key == "Content-Security-Policy" else value).encode()))
                if self.settings.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        response = await self._check(scope)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _check(self, scope: Scope) -> Response | None:
        check = self.settings.host_check
        if check is not None:
            server = scope.get("server")
            if not check.allows(_header(scope, b"host"), str(server[0]) if server else ""):
                return PlainTextResponse("421 unexpected Host header", status_code=421)
        method, path = scope["method"], scope["path"]
        unsafe = method not in SAFE_METHODS
        if unsafe and not self._same_origin(scope):
            return _problem(403, "cross-origin request refused", path)
        if (method, path) in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            return None
        token = _cookie(scope, self.settings.cookie)
        session = await anyio.to_thread.run_sync(self._session, token) if token else None
        if session is None:
            if path.startswith("/api/") or method not in SAFE_METHODS:
                return _problem(401, "log in first (POST /login)", path)
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        scope.setdefault("state", {})["session"] = session
        if unsafe and not auth.same_token(_header(scope, b"x-csrf-token"), session.csrf):
            return _problem(403, "missing or wrong CSRF token (X-CSRF-Token)", path)
        return None

    def _same_origin(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:  # not a browser's cross-site request (browsers send Origin on every POST)
            return True
        host = _header(scope, b"host") or ""
        return urlsplit(origin).netloc.lower() == host.lower()

    def _session(self, token: str) -> Session | None:
        digest = auth.token_digest(token)
        now = time.time()
        with self.stores.opened() as store:
            session = store.session(digest)
            if session is None:
                return None
            if now >= session.expires_at or now - session.last_seen >= self.settings.idle_seconds:
                store.end_session(digest)
                return None
            if now - session.last_seen >= 60:  # idle time to the minute: not a write per request
                store.touch_session(digest, now)
        return session


def _problem(status: int, message: str, path: str = "") -> Response:
    if path.startswith("/api/") or not path:
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return PlainTextResponse(f"{status} {message}", status_code=status)


def session_of(request: Request) -> Session:
    session = request.scope.get("state", {}).get("session")
    if not isinstance(session, Session):  # Guard lets no request without one reach an endpoint
        raise PermissionError("no session")
    return session


class Console:
    """The endpoints; ``routes()`` lists them (the security tests enumerate them from the app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores = Stores(settings.db)
        self.env = _environment()
        self.closing = threading.Event()  # set when the server stops: live streams end
        self.cache = Cache(settings.cache_seconds)
        self._hashing: anyio.CapacityLimiter | None = None

    # -- helpers --------------------------------------------------------------------------------

    def store(self) -> Store:
        return self.stores.get()

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = request.scope.get("state", {}).get("session")
        html = self.env.get_template(template).render(session=session, may=auth.may, path=request.url.path,
                                                      **context)
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return self.render(request, "error.html.j2", status=status, status_code=status, message=message)

    def guarded(self, handler: Callable[[Request], Response], *,
                run: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Run a synchronous page on a worker thread; cranewatch errors become 404/409/400 pages.

        A ``run`` (the gate's decision over every recorded run, the commissioning report, frames
        cut from a capture) makes many short-lived objects: the collector runs less often
        meanwhile (``runtime.fewer_collections``, the server's choice as the command line's is
        for a command; the settings come back when the last run under way ends)."""

        async def endpoint(request: Request) -> Response:
            def work() -> Response:
                try:
                    with self.stores.opened(), fewer_collections() if run else contextlib.nullcontext():
                        return handler(request)
                except StateError as exc:
                    status = 404 if "not registered" in exc.message or "no stored finding" in exc.message else 409
                    return self.error_page(request, status, exc.message)
                except UsageError as exc:
                    status = 404 if exc.message.startswith("no stored finding") else 400
                    return self.error_page(request, status, exc.message)
                except EnvironmentProblem as exc:
                    return self.error_page(request, 503, exc.message)
                except CranewatchError as exc:
                    return self.error_page(request, 400, exc.message)

            return await anyio.to_thread.run_sync(work)

        return endpoint

    def require(self, request: Request, action: str) -> Session:
        session = session_of(request)
        if not auth.may(session.role, action):
            raise Forbidden(f"{session.user} ({session.role}) may not {action}")
        return session

    def routes(self) -> list[Route | Mount]:
        g = self.guarded
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", g(self.logout), methods=["POST"]),
            Route("/", g(self.quay_page), methods=["GET"]),
            Route("/crane/{crane}", g(self.crane_page), methods=["GET"]),
            Route("/crane/{crane}/report", g(self.report_page, run=True), methods=["GET"]),
            Route("/crane/{crane}/map.svg", g(self.map_svg), methods=["GET"]),
            Route("/api/cranes/{crane}/map", g(self.api_map), methods=["GET"]),
            Route("/api/cranes/{crane}/assets", g(self.api_assets), methods=["GET"]),
            Route("/crane/{crane}/finding/{finding}", g(self.finding_page), methods=["GET"]),
            Route("/crane/{crane}/finding/{finding}/frames.pcap", g(self.frames, run=True), methods=["GET"]),
            Route("/crane/{crane}/finding/{finding}/plot/{n:int}.svg", g(self.plot_svg), methods=["GET"]),
            Route("/incidents", g(self.incidents_page), methods=["GET"]),
            Route("/images", g(self.images_page), methods=["GET"]),
            Route("/monitor", g(self.monitor_page), methods=["GET"]),
            Route("/users", g(self.users_page), methods=["GET"]),
            Route("/api/session", g(self.api_session), methods=["GET"]),
            Route("/api/cranes", g(self.api_cranes), methods=["GET"]),
            Route("/api/cranes/{crane}", g(self.api_crane), methods=["GET"]),
            Route("/api/cranes/{crane}/gate", g(self.api_sign_gate, run=True), methods=["POST"]),
            Route("/api/findings", g(self.api_findings), methods=["GET"]),
            Route("/api/findings/{finding}", g(self.api_finding), methods=["GET"]),
            Route("/api/findings/{finding}/triage", g(self.api_triage), methods=["POST"]),
            Route("/api/incidents", g(self.api_incidents), methods=["GET"]),
            Route("/api/images", g(self.api_images), methods=["GET"]),
            Route("/api/monitor", g(self.api_monitor), methods=["GET"]),
            Route("/api/monitor/events", self.monitor_events, methods=["GET"]),
            Route("/api/users", g(self.api_users), methods=["GET"]),
            Route("/favicon.ico", g(self.no_icon), methods=["GET"]),  # the stored report names none
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]

    # -- login ----------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html.j2", next=_local_path(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return _problem(413, "request too large", "/api/")
        form = await request.form(max_files=0, max_fields=8)
        name = str(form.get("username") or "")[:64]
        password = str(form.get("password") or "")[:1024]
        target = _local_path(str(form.get("next") or "")) or "/"
        client = _client(request.scope)
        wait = self.settings.limiter.retry_after(client, name)
        if wait > 0:
            response = self.render(request, "login.html.j2", status=429, next=target,
                                   error=f"too many failed logins: try again in {int(wait) + 1} s")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if self._hashing is None:  # made on the event loop; waiting logins hold no worker thread
            self._hashing = anyio.CapacityLimiter(auth.HASHES_AT_ONCE)
        result = await anyio.to_thread.run_sync(self._login, name, password, client, limiter=self._hashing)
        if result is None:
            self.settings.limiter.failed(client, name)
            return self.render(request, "login.html.j2", status=401, next=target, error="wrong name or password")
        self.settings.limiter.succeeded(name)
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(self.settings.cookie, result, max_age=int(self.settings.session_seconds), path="/",
                            secure=self.settings.tls, httponly=True, samesite="strict")
        return redirect

    def _login(self, name: str, password: str, client: str) -> str | None:
        with self.stores.opened() as store:
            return self._login_with(store, name, password, client)

    def _login_with(self, store: Store, name: str, password: str, client: str) -> str | None:
        user = store.user(name) if name else None
        if not auth.verify_password(password, user.password if user else None) or user is None:
            return None
        token = auth.new_token()
        now = time.time()
        store.create_session(auth.token_digest(token), user.name, auth.new_token(),
                             expires_at=now + self.settings.session_seconds, client=client, at=now)
        return token

    def logout(self, request: Request) -> Response:
        session = session_of(request)
        self.store().end_session(session.token_sha256)
        response = JSONResponse({"ok": True}) if "json" in request.headers.get("accept", "") else \
            RedirectResponse("/login", status_code=303)
        response.delete_cookie(self.settings.cookie, path="/", secure=self.settings.tls, httponly=True,
                               samesite="strict")
        return response

    # -- pages ----------------------------------------------------------------------------------

    def quay_page(self, request: Request) -> Response:
        return self.render(request, "quay.html.j2", tiles=self._quay())

    def _quay(self) -> list[dict[str, Any]]:
        return list(self.cache.get("quay", lambda: data.quay(self.store())))

    def crane_page(self, request: Request) -> Response:
        crane = request.path_params["crane"]
        store = self.store()
        flt = data.FindingFilter.from_query(request.query_params, default_limit=PAGE_SIZE)
        rows, total = data.findings(store, crane, flt)
        overview = self.cache.get(("crane", crane), lambda: self._crane_overview(store, crane))
        return self.render(request, "crane.html.j2", **overview, rows=rows, total=total, flt=flt,
                           facets=data.finding_facets(), sorts=data.SORTS)

    def _crane_overview(self, store: Store, crane: str) -> dict[str, Any]:
        tile = data.crane_tile(store, crane)
        record = store.crane(tile["crane"])
        assert record is not None
        incidents, incident_total = data.open_incidents(store, record.name, limit=CRANE_INCIDENTS)
        rulesets = [store.latest_ruleset(record.name, p) for p in ("quarantine", "in-service")]
        from cranewatch.commap import communication_map
        from cranewatch.inventory import asset_inventory

        comm = communication_map(store, record.name)
        plots = data.process_plots(store, record.name, limit=CRANE_INCIDENTS)
        return {"tile": tile, "crane": record.to_json(), "timeline": data.timeline(store, record.name),
                "inventory": asset_inventory(store, record.name).to_json(),
                "map": {"nodes": len(comm.nodes), "edges": len(comm.edges), "unexpected": len(comm.unexpected()),
                        "judged_by": list(comm.judged_by)},
                "incidents": incidents, "incident_total": incident_total, "plots": plots,
                "rulesets": [{"purpose": r.purpose, "at": iso_time(r.at), "who": r.who, "sha256": r.sha256,
                              "text": r.text} for r in rulesets if r is not None]}

    def report_page(self, request: Request) -> Response:
        from cranewatch.report.commissioning import build_report
        from cranewatch.report.html import render_html

        return HTMLResponse(render_html(build_report(self.store(), request.path_params["crane"])))

    def map_svg(self, request: Request) -> Response:
        """The communication map (``commap.render_svg``: no script, no links; shown through <img>,
        where a browser runs nothing of an SVG either)."""
        from cranewatch.commap import communication_map, render_svg
        from cranewatch.fleet import require_crane

        crane = require_crane(self.store(), request.path_params["crane"]).name
        svg = render_svg(communication_map(self.store(), crane))
        return Response(svg, media_type="image/svg+xml")

    def api_map(self, request: Request) -> Response:
        from cranewatch.commap import communication_map
        from cranewatch.fleet import require_crane

        crane = require_crane(self.store(), request.path_params["crane"]).name
        return JSONResponse(communication_map(self.store(), crane).to_json())

    def api_assets(self, request: Request) -> Response:
        from cranewatch.fleet import require_crane
        from cranewatch.inventory import asset_inventory

        crane = require_crane(self.store(), request.path_params["crane"]).name
        rows = asset_inventory(self.store(), crane).to_json()["assets"]
        return _listing(rows, request.query_params.get("format"), len(rows), f"{crane}-assets")

    def finding_page(self, request: Request) -> Response:
        crane, finding = request.path_params["crane"], request.path_params["finding"]
        detail = data.finding_detail(self.store(), crane, finding)
        if detail is None:
            return self.error_page(request, 404, f"{crane} has no stored finding {finding}")
        runs = [r for r in self.store().runs(crane) if r.kind != "gate" and r.status == "complete"]
        return self.render(request, "finding.html.j2", f=detail, crane=crane, states=FINDING_STATES,
                           triage_states=sorted(auth.TRIAGE_STATES), evidence_runs=[(r.id, data.run_label(r)) for r in runs])

    def plot_svg(self, request: Request) -> Response:
        """The signals around a process finding with its incident shaded (``process/plot.py``,
        kept in the finding's evidence), served only when it is plain drawing and shown through
        <img>, where a browser runs nothing of an SVG either."""
        from cranewatch.fleet import require_crane
        from cranewatch.report.html import plain_svg

        crane, finding = request.path_params["crane"], request.path_params["finding"]
        record = require_crane(self.store(), crane)
        row = self.store().finding_row(record.name, finding)
        n = int(request.path_params["n"])
        evidence = row.finding.evidence if row is not None else ()
        svg = evidence[n].values.get("svg") if 0 <= n < len(evidence) else None
        if not isinstance(svg, str) or not plain_svg(svg):
            return self.error_page(request, 404, f"{crane} has no plot {n} for finding {finding}")
        return Response(svg, media_type="image/svg+xml")

    def frames(self, request: Request) -> Response:
        """The finding's evidence frames as a small capture, cut from the recorded capture after
        its sha256 is checked (a changed or missing capture: 409 saying so)."""
        from cranewatch.evidence_pcap import evidence_pcap

        crane, finding = request.path_params["crane"], request.path_params["finding"]
        out = io.BytesIO()
        try:
            cut = evidence_pcap(self.store(), finding, out, crane=crane)
        except InputError as exc:
            return self.error_page(request, 409, exc.message)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{crane}-{cut.finding}")
        return Response(out.getvalue(), media_type="application/vnd.tcpdump.pcap",
                        headers={"Content-Disposition": f'attachment; filename="{name}.{cut.format}"',
                                 "X-Frames": str(cut.packets)})

    def incidents_page(self, request: Request) -> Response:
        crane = request.query_params.get("crane") or ""
        offset = max(0, _int(request.query_params.get("offset"), 0))
        rows, total = self._incidents(crane, limit=PAGE_SIZE, offset=offset) if crane else ([], 0)
        return self.render(request, "incidents.html.j2", crane=crane, cranes=self._crane_names(), incidents=rows,
                           total=total, offset=offset, limit=PAGE_SIZE)

    def images_page(self, request: Request) -> Response:
        crane = request.query_params.get("crane") or ""
        return self.render(request, "images.html.j2", crane=crane, cranes=self._crane_names(),
                           scans=data.images(self.store(), crane) if crane else [])

    def monitor_page(self, request: Request) -> Response:
        rows, cursor = data.monitor_findings(self.store(), crane=request.query_params.get("crane") or None)
        return self.render(request, "monitor.html.j2", rows=rows, cursor=cursor,
                           crane=request.query_params.get("crane") or "")

    def no_icon(self, request: Request) -> Response:
        return Response(status_code=204)

    def users_page(self, request: Request) -> Response:
        self.require(request, "users")
        return self.render(request, "users.html.j2", users=[u.to_json() for u in self.store().users()])

    def _crane_names(self) -> list[str]:
        return [c.name for c in self.store().cranes()]

    def _incidents(self, crane: str, *, limit: int | None = None, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The crane's stored incidents; for a crane whose runs stored none, its findings grouped by rule and asset."""
        store = self.store()
        stored, total = data.open_incidents(store, crane, limit=limit, offset=offset)
        if total:
            return stored, total
        rows, _ = data.findings(store, crane)
        grouped = data.grouped_incidents(rows)
        end = None if limit is None else offset + limit
        return grouped[offset:end], len(grouped)

    # -- JSON API -------------------------------------------------------------------------------

    def api_session(self, request: Request) -> Response:
        s = session_of(request)
        return JSONResponse({"user": s.user, "role": s.role, "csrf": s.csrf,
                             "expires": iso_time(s.expires_at)})

    def api_cranes(self, request: Request) -> Response:
        return JSONResponse(self._quay())

    def api_crane(self, request: Request) -> Response:
        crane = request.path_params["crane"]
        return JSONResponse(self.cache.get(("crane", crane), lambda: self._crane_overview(self.store(), crane)))

    def api_findings(self, request: Request) -> Response:
        crane = request.query_params.get("crane")
        if not crane:
            return self.error_page(request, 400, "name the crane: /api/findings?crane=ID")
        flt = data.FindingFilter.from_query(request.query_params)
        rows, total = data.findings(self.store(), crane, flt)
        return _listing(rows, request.query_params.get("format"), total, f"{crane}-findings",
                        csv_rows=data.findings_csv)

    def api_finding(self, request: Request) -> Response:
        crane = request.query_params.get("crane")
        finding = request.path_params["finding"]
        store = self.store()
        if not crane:
            from cranewatch.triage import resolve_finding

            crane, finding = resolve_finding(store, finding)
        detail = data.finding_detail(store, crane, finding)
        if detail is None:
            return self.error_page(request, 404, f"{crane} has no stored finding {finding}")
        return JSONResponse(detail)

    def api_incidents(self, request: Request) -> Response:
        crane = request.query_params.get("crane")
        if not crane:
            return self.error_page(request, 400, "name the crane: /api/incidents?crane=ID")
        rows, total = self._incidents(crane)
        return _listing(rows, request.query_params.get("format"), total, f"{crane}-incidents",
                        csv_rows=_incidents_csv)

    def api_images(self, request: Request) -> Response:
        crane = request.query_params.get("crane")
        if not crane:
            return self.error_page(request, 400, "name the crane: /api/images?crane=ID")
        rows = data.images(self.store(), crane)
        return _listing(rows, request.query_params.get("format"), len(rows), f"{crane}-images")

    def api_monitor(self, request: Request) -> Response:
        after = _int(request.query_params.get("after"), 0)
        rows, cursor = data.monitor_findings(self.store(), after_run=after,
                                             crane=request.query_params.get("crane") or None)
        response = _listing(rows, request.query_params.get("format"), len(rows), "monitor")
        response.headers["X-Cursor"] = str(cursor)
        return response

    def api_users(self, request: Request) -> Response:
        self.require(request, "users")
        return JSONResponse([u.to_json() for u in self.store().users()])

    async def monitor_events(self, request: Request) -> Response:
        """Server-Sent Events: each new monitor checkpoint's findings as ``finding`` events."""
        crane = request.query_params.get("crane") or None
        last = request.headers.get("last-event-id") or request.query_params.get("after")
        start = _int(last, -1)

        def look(after: int) -> tuple[list[dict[str, Any]], int]:
            try:
                with self.stores.opened() as store:
                    return data.monitor_findings(store, after_run=after, crane=crane)
            except EnvironmentProblem:  # the store is away for a moment: look again later
                return [], after

        if start < 0:  # no cursor: from now on
            _, start = await anyio.to_thread.run_sync(look, 1 << 62)
        closing = self.closing

        async def stream() -> Any:
            cursor = start
            yield "retry: 2000\n: cranewatch monitor stream\n\n"
            idle = 0.0
            while True:
                rows, newest = await anyio.to_thread.run_sync(look, cursor)
                for row in reversed(rows):
                    yield f"id: {row['run']}\nevent: finding\ndata: {json.dumps(row, ensure_ascii=True)}\n\n"
                if newest > cursor:
                    cursor = newest
                    idle = 0.0
                idle += self.settings.poll_seconds
                if idle >= 15:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                for _ in range(max(1, int(self.settings.poll_seconds / 0.1))):
                    if closing.is_set() or await request.is_disconnected():
                        return  # the server stops, or the browser left
                    await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    # -- state changes --------------------------------------------------------------------------

    def api_triage(self, request: Request) -> Response:
        """``{"state", "note"}`` (+ ``until``, ``evidence``, ``crane``; or ``{"assign": NAME, "note"}``,
        or a note alone): acknowledge/reopen (analyst), dispositions (officer), notes (analyst)."""
        from cranewatch.triage import resolve_finding

        session = self.require(request, "triage")
        body = _json_body(request)
        store = self.store()
        crane_hint = body.get("crane") or request.query_params.get("crane")
        crane, finding = resolve_finding(store, request.path_params["finding"], crane_hint)
        try:
            return self._triage(store, session, crane, finding, body)
        finally:  # after the write: a page made meanwhile from the old state is not kept
            self.cache.forget("quay", ("crane", crane))

    def _triage(self, store: Store, session: Session, crane: str, finding: str, body: dict[str, Any]) -> Response:
        from cranewatch.triage import dispose

        state, note, assignee = body.get("state"), str(body.get("note") or "").strip(), body.get("assign")
        if state is None:
            if not note and not assignee:
                raise UsageError('give "state" (and "note"), "assign" or a "note"')
            event = store.record_finding_note(crane, finding, who=session.user,
                                              why=note or f"assigned to {assignee}",
                                              assignee=str(assignee)[:64] if assignee else None)
            return JSONResponse({"ok": True, "crane": crane, "finding": finding, "audit": event.to_json()})
        if state not in FINDING_STATES:
            raise UsageError(f"state {state!r}: one of {', '.join(FINDING_STATES)}")
        if state not in auth.TRIAGE_STATES and not auth.may(session.role, "dispose"):
            raise Forbidden(f"{session.user} ({session.role}) may not mark a finding {state}: officers only")
        evidence = body.get("evidence")
        if evidence not in (None, "") and not str(evidence).isdigit():
            raise UsageError(f"evidence {evidence!r}: a run number")
        d = dispose(store, finding, state, reason=note, by=session.user, until=body.get("until") or None,
                    evidence=int(str(evidence)) if evidence not in (None, "") else None, crane=crane)
        return JSONResponse({"ok": True, "crane": crane, "finding": finding, "state": d.state,
                             "disposition": d.to_json()})

    def api_sign_gate(self, request: Request) -> Response:
        """An officer decides the gate from the recorded evidence, signed with their name."""
        from cranewatch.gate import GatePolicy, decide, policy_from_json

        session = self.require(request, "sign")
        crane = request.path_params["crane"]
        store = self.store()
        previous = store.latest_gate(crane)
        policy = policy_from_json(previous.policy) if previous else GatePolicy()
        try:
            decision = decide(store, crane, policy, who=session.user)
        finally:
            self.cache.forget("quay", ("crane", crane))
        return JSONResponse({**decision.to_json(), "signed_by": session.user})


class Forbidden(Exception):
    pass


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _local_path(target: str | None) -> str:
    """A redirect target only if it is a path of this site (no scheme, host or //)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return ""
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else ""


def _json_body(request: Request) -> dict[str, Any]:
    raw = request.scope.get("state", {}).get("body")
    if raw is None:
        raise UsageError("no request body")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise UsageError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("the body is a JSON object")
    return body


def _incidents_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "crane", "severity", "title", "open", "first_seen", "last_seen", "findings", "assets"])
    for n in rows:
        writer.writerow([data._csv_cell(v) for v in (n["id"], n.get("crane"), n["severity"], n["title"], n["open"],
                                                     n["first_seen"], n["last_seen"], ";".join(n["findings"]),
                                                     ";".join(n["assets"]))])
    return buffer.getvalue()


def _listing(rows: list[dict[str, Any]], fmt: str | None, total: int, name: str,
             csv_rows: Callable[[list[dict[str, Any]]], str] | None = None) -> Response:
    """A list as JSON (default), JSON lines or CSV (``?format=``), with its total in a header."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if fmt == "jsonl":
        response: Response = Response(data.jsonl(rows), media_type="application/x-ndjson",
                                      headers={"Content-Disposition": f'attachment; filename="{safe}.jsonl"'})
    elif fmt == "csv" and csv_rows is not None:
        response = Response(csv_rows(rows), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{safe}.csv"'})
    else:
        response = JSONResponse(rows)
    response.headers["X-Total-Count"] = str(total)
    return response


class BodyReader:
    """Reads a state change's body (at most ``MAX_BODY``) before the endpoint, so the endpoint
    (on a worker thread) has it; a larger one is refused with 413."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"] == "/login":
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await _problem(413, "request too large", "/api/")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        scope.setdefault("state", {})["body"] = b"".join(chunks)
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    """The console as an ASGI application."""
    console = Console(settings)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return console.error_page(request, 403, str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return console.error_page(request, status, "no such page" if status == 404 else "not allowed")

    app = Starlette(routes=console.routes(), exception_handlers={Forbidden: forbidden, 404: not_found,
                                                                  405: not_found})
    app.state.console = console
    app.add_middleware(BodyReader)
    app.add_middleware(Guard, settings=settings, stores=console.stores)
    return app


def serve_in_background(db: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                        allow_hosts: tuple[str, ...] = (), **options: Any) -> Any:
    """Start the console on a thread (tests, benchmarks, the demo); returns the started
    ``server.ConsoleServer`` (``stop()`` it; ``url`` is its base URL). ``options`` are ``Settings``'."""
    from cranewatch.web.server import ConsoleServer, listening_socket

    sock = listening_socket(host, port)
    bound = int(sock.getsockname()[1])
    settings = Settings(db, HostCheck.for_server(host, bound, allow_hosts), **options)
    return ConsoleServer(create_app(settings), sock).start()
