"""The console's server holds out (issue 19 case 12, issue 12's newcomer list), now on uvicorn.

Before: ``--host 0.0.0.0`` answered 421 to every normal Host header; 300 half-sent requests
held 301 threads; the listen backlog was 5; a busy port exited 70 "internal error"; ``--port``
showed no default. uvicorn has no deadline for a request head (only for an idle keep-alive):
``GuardedH11Protocol`` adds it and the cap on kept connections. Every test here listens on
127.0.0.1 only; the wildcard bind is checked through ``HostCheck``, the pure rule the server applies.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.store import open_store
from cranewatch.web.app import serve_in_background
from cranewatch.web.server import BACKLOG, ConsoleServer, GuardedH11Protocol, HostCheck

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-hardening") / "cw.db"
    open_store(path).close()
    return path


@pytest.fixture
def served(db: Path) -> Iterator[ConsoleServer]:
    server = serve_in_background(db)
    yield server
    server.stop()


WILDCARD = HostCheck("0.0.0.0", 8077, frozenset({"localhost", "cranepc", "cranepc.port.example"}),
                     frozenset({"dash.port.example"}))


@pytest.mark.parametrize(("header", "local", "allowed"), [
    ("10.20.0.5:8077", "10.20.0.5", True),  # the address the client reached: this machine's
    ("10.20.0.5", "10.20.0.5", True),
    ("LOCALHOST:8077", "127.0.0.1", True),
    ("127.0.0.1:8077", "127.0.0.1", True),
    ("[::1]:8077", "::1", True),
    ("cranepc:8077", "10.20.0.5", True),  # the machine's host name
    ("cranepc.port.example.", "10.20.0.5", True),
    ("dash.port.example:443", "10.20.0.5", True),  # --allow-host: a reverse proxy, any port
    ("attacker.example:8077", "10.20.0.5", False),  # DNS rebinding
    ("attacker.example", "127.0.0.1", False),
    ("10.99.0.1:8077", "10.20.0.5", False),  # not an address this connection reached
    ("10.20.0.5:9999", "10.20.0.5", False),
    ("cranepc:notaport", "10.20.0.5", False),
    ("[::1", "::1", False),
    ("", "10.20.0.5", False),
    (None, "10.20.0.5", False),
])
def test_host_check_on_a_wildcard_bind(header: str | None, local: str, allowed: bool) -> None:
    assert WILDCARD.allows(header, local) is allowed


def test_host_check_for_a_wildcard_knows_this_machines_name() -> None:
    check = HostCheck.for_server("0.0.0.0", 8077)
    assert check.allows(f"{socket.gethostname()}:8077", "10.20.0.5")
    assert not check.allows("attacker.example:8077", "10.20.0.5")


def test_host_check_on_a_specific_address() -> None:
    check = HostCheck.for_server("10.20.0.5", 8077)
    assert check.allows("10.20.0.5:8077", "10.20.0.5")
    assert not check.allows("10.20.0.6:8077", "10.20.0.5")


def get(port: int, host_header: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET /login HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        return conn.recv(64)


def test_normal_host_headers_are_answered(served: ConsoleServer) -> None:
    port = served.port
    assert get(port, f"127.0.0.1:{port}").startswith(b"HTTP/1.1 200")
    assert get(port, "localhost").startswith(b"HTTP/1.1 200")
    assert get(port, f"{socket.gethostname()}:{port}").startswith(b"HTTP/1.1 421")  # loopback bind: no
    assert get(port, f"attacker.example:{port}").startswith(b"HTTP/1.1 421")


def recv_all(conn: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except OSError:
        pass
    return data


def test_half_sent_requests_are_bounded_and_cut_off(served: ConsoleServer, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout", 1.0)
    monkeypatch.setattr(GuardedH11Protocol, "max_connections", 32)
    clients = []
    try:
        for _ in range(150):  # far more than max_connections
            conn = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            conn.sendall(b"GET /login HTTP/1.1\r\nHost: local")  # and never the end of the head
            clients.append(conn)
        time.sleep(0.3)
        assert len(served.connections) <= 32 + 1
        # a client that sends its request at once is answered in the middle of the flood
        assert get(served.port, "localhost").startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        for conn in clients:  # every one ends within the deadline: made room for others, or cut off
            assert recv_all(conn) in (b"", b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                           b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        assert time.monotonic() - start < 3
    finally:
        for conn in clients:
            conn.close()
    deadline = time.monotonic() + 5
    while served.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not served.connections  # every connection ended
    assert get(served.port, "localhost").startswith(b"HTTP/1.1 200")  # and the console still answers
    assert "Traceback" not in capsys.readouterr().err


def test_a_slow_client_trickling_bytes_is_cut_off(served: ConsoleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout", 1.0)
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        conn.sendall(b"GET /login HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # a header line every 0.1 s: a per-read timeout would never trip
            try:
                conn.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        closed = closed or recv_all(conn) == b""
    assert closed and time.monotonic() - start < 3.5


def test_a_kept_alive_connection_gets_a_new_deadline_for_its_next_head(served: ConsoleServer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout", 1.0)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        conn.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.recv(12) == b"HTTP/1.1 200"
        time.sleep(0.2)
        conn.sendall(b"GET /login HTTP/1.1\r\nHo")  # the next head starts and stalls
        start = time.monotonic()
        recv_all(conn)
    assert time.monotonic() - start < 2.5


def test_listen_backlog(served: ConsoleServer) -> None:
    assert BACKLOG >= 128
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) not installed: cannot read the backlog from the kernel")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{served.port}"], capture_output=True, text=True,
                         check=True).stdout
    backlog = int(out.split()[2])  # Send-Q of a listening socket: its backlog
    assert backlog >= 128


def test_busy_port_is_an_environment_problem(db: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "cranewatch", "serve", "--port", str(port), "--db", str(db)],
                              capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 4, done.stderr  # before: 70, "internal error ... this is a bug"
    assert f"port {port} is in use" in done.stderr and "internal error" not in done.stderr


def test_port_help_shows_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "default 8077" in out and "--allow-host" in out and "--tls-cert" in out and "--insecure-bind" in out
