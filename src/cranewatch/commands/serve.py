"""``cranewatch serve``: the operations console (login, triage, gate sign-off) on 127.0.0.1."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from cranewatch.errors import EnvironmentProblem, UsageError
from cranewatch.store import default_store
from cranewatch.store.options import add_db_option


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the operations console: fleet, findings, triage, gate sign-off (127.0.0.1, login)",
        description="Serve the operations console over the store: the quay (every crane's life "
        "cycle, gate decision, open incidents, evidence and monitor health), each crane's findings "
        "with filter, sort, search and export, a finding's evidence and triage, incidents, image "
        "scans with their SBOM, and in-service findings live. Every page and API needs a login "
        "(users: cranewatch users add NAME --role viewer|analyst|officer|admin).\n\n"
        "It binds 127.0.0.1 unless told otherwise; any other address needs --tls-cert and "
        "--tls-key (HTTPS, Secure cookies) or, knowingly, --insecure-bind. It answers only "
        "requests whose Host header names this machine (a guard against DNS rebinding): an IP "
        "address of the machine or the bound address, a loopback address, localhost, the machine's "
        "host name, or a name given with --allow-host (for a reverse proxy). A request head must "
        "arrive whole within 10 s; at most 256 connections are kept.\n\n"
        "Example:\n"
        "  cranewatch serve --port 8077   # then open http://127.0.0.1:8077/\n"
        "  cranewatch serve --host 0.0.0.0 --tls-cert console.crt --tls-key console.key "
        "--allow-host cranewatch.port.example\n"
        "  cranewatch users add ana --role analyst   # a user first",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; another needs TLS or --insecure-bind)")
    parser.add_argument("--port", type=int, default=8077, help="TCP port (default %(default)s; 0: any free port)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this host name, on any port (repeatable)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--insecure-bind", action="store_true",
                        help="allow a non-loopback address without TLS (passwords and sessions in clear text)")
    parser.add_argument("--session-hours", type=float, default=8.0,
                        help="a login lasts at most this long (default %(default)s)")
    parser.add_argument("--idle-minutes", type=float, default=30.0,
                        help="a session unused this long ends (default %(default)s)")
    add_db_option(parser)
    # a server's lifetime is not one run: it tunes the collector around the runs it starts
    parser.set_defaults(func=run, own_collections=True)


def check_bind(host: str, tls: bool, insecure: bool) -> None:
    from cranewatch.web.server import is_loopback

    if not is_loopback(host) and not tls and not insecure:
        raise UsageError(f"--host {host} would serve the console beyond this machine in clear text: give "
                         "--tls-cert and --tls-key, or --insecure-bind if a TLS proxy in front does it")


def run(args: argparse.Namespace) -> int:
    from cranewatch.store import open_store
    from cranewatch.web.app import Settings, create_app
    from cranewatch.web.server import ConsoleServer, HostCheck, listening_socket

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    for path in (args.tls_cert, args.tls_key):
        if path and not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    tls = bool(args.tls_cert)
    check_bind(args.host, tls, args.insecure_bind)
    if args.session_hours <= 0 or args.idle_minutes <= 0:
        raise UsageError("--session-hours and --idle-minutes must be positive")
    db = args.db or default_store()
    with open_store(db, create=False) as store:  # never creates a store; an older one is migrated
        users = store.users()
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EnvironmentProblem(f"port {args.port} is in use on {args.host}: stop what holds it "
                                     "or choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise EnvironmentProblem(f"no permission to listen on {args.host}:{args.port} "
                                     "(ports below 1024 need root)") from None
        raise EnvironmentProblem(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = int(sock.getsockname()[1])
    settings = Settings(db, HostCheck.for_server(args.host, port, args.allow_host), tls=tls,
                        session_seconds=args.session_hours * 3600, idle_seconds=args.idle_minutes * 60)
    server = ConsoleServer(create_app(settings), sock, tls_cert=args.tls_cert, tls_key=args.tls_key)
    print(f"cranewatch console on {server.url}/ (Ctrl-C stops)", flush=True)
    if not users:
        print("no console users yet: add one with `cranewatch users add NAME --role officer`",
              file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C is how one stops a console: not an error
        pass
    finally:
        sock.close()
    print("console stopped")
    return 0
