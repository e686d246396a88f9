"""The console's HTTP server: uvicorn with cranewatch's limits, the Host-header check, TLS.

``HostCheck`` answers only requests whose Host header names this machine (a guard against DNS
rebinding: a page of attacker.example whose name comes to resolve to the console still sends
``Host: attacker.example`` and gets 421). Accepted: an IP address literal that is the bound
address, the address the client reached (on a wildcard bind ``0.0.0.0``/``::``: any of the
machine's addresses) or a loopback address; ``localhost``; the machine's host name; names given
with ``--allow-host`` (a reverse proxy's name, any port).

Limits against slow or many clients, as the old threaded server had them, now on uvicorn
(asyncio: a connection costs a socket and a little memory, no thread):

- a request head must arrive whole within ``HEADER_TIMEOUT`` seconds of its first byte (or of
  the connection): ``GuardedH11Protocol`` arms a deadline uvicorn does not have (uvicorn only
  times out an idle keep-alive connection, ``timeout_keep_alive``, also ``HEADER_TIMEOUT`` here);
- at most ``MAX_CONNECTIONS`` connections are kept: a new one beyond that closes the one that has
  waited longest for its head (a slow client, an idle keep-alive), and only when every one is
  being answered is the newcomer answered 503 and closed (was: 64 threads; now 256 connections,
  since one is no longer a thread);
- uvicorn answers 503 when more than ``MAX_CONNECTIONS`` requests run at once
  (``limit_concurrency``); a request head is at most 16 KiB (``h11_max_incomplete_event_size``),
  a request body at most ``app.MAX_BODY`` (the app reads no more); listen backlog 128.
What changed with uvicorn: the 503 for a full server now comes from uvicorn's own
``limit_concurrency`` besides the eviction above, and page work runs on a pool of worker threads
(anyio's, 40) rather than one thread per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
BACKLOG = 128
MAX_HEAD = 16 * 1024
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


def is_loopback(host: str) -> bool:
    address = _ip(host)
    return (address is not None and address.is_loopback) or host == "localhost"


@dataclass(frozen=True, slots=True)
class HostCheck:
    """Which Host headers the console answers (see the module docstring). Pure: the server
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


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head and a cap on the
    connections kept (see the module docstring)."""

    header_timeout = HEADER_TIMEOUT
    max_connections = MAX_CONNECTIONS
    _head_timer: asyncio.TimerHandle | None = None
    _head_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.max_connections and not self._evict_slowest():
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # no request came whole: nothing to answer

    def _evict_slowest(self) -> bool:
        waiting = [c for c in self.connections
                   if isinstance(c, GuardedH11Protocol) and c is not self and c._head_timer is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._head_since)
        oldest._disarm()
        oldest.transport.close()
        return True

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head has arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    @property
    def waiting_for_head(self) -> bool:
        return self._head_timer is not None


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (OSError as the OS gives it: busy port, no permission)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server that tells the application first when a signal stops it."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


class ConsoleServer:
    """The console on a listening socket: ``run()`` serves until stopped; ``start()`` on a
    thread (tests, benchmarks) and ``stop()``."""

    def __init__(self, app: Any, sock: socket.socket, *, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None) -> None:
        self.app = app
        self.sock = sock
        self.host, self.port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app, http=GuardedH11Protocol, ws="none", lifespan="off", log_level="warning", access_log=False,
            server_header=False, proxy_headers=False, limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=int(HEADER_TIMEOUT), backlog=BACKLOG, h11_max_incomplete_event_size=MAX_HEAD,
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
        )
        self.server = _Uvicorn(config, self.closing)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def connections(self) -> set[Any]:
        return self.server.server_state.connections

    def closing(self) -> None:
        """Tell the application the server stops (its live streams end rather than be cancelled)."""
        console = getattr(getattr(self.app, "state", None), "console", None)
        if console is not None:
            console.closing.set()

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.closing()

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self.run, name="cranewatch-console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the console did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.closing()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
        console = getattr(getattr(self.app, "state", None), "console", None)
        if console is not None:
            console.stores.close_all()
