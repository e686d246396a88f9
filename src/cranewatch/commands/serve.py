"""``cranewatch serve``: the read-only fleet dashboard on 127.0.0.1."""

from __future__ import annotations

import argparse
import errno
from typing import Any

from cranewatch.errors import EnvironmentProblem
from cranewatch.store import default_store
from cranewatch.store.options import add_db_option
from cranewatch.web.app import make_server


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a read-only dashboard of the fleet, findings and reports (127.0.0.1)",
        description="Serve a small read-only web dashboard over the store: the fleet with states and "
        "gate decisions, each crane's findings and history, its commissioning report. It binds "
        "127.0.0.1 unless told otherwise and answers only GET.\n\n"
        "It answers only requests whose Host header names this machine (a guard against DNS "
        "rebinding): an IP address of the machine or the bound address, a loopback address, "
        "localhost, the machine's host name, or a name given with --allow-host (for a reverse "
        "proxy). Slow clients are cut off after 10 s without a whole request; at most 64 "
        "connections are served at once.\n\n"
        "Example:\n"
        "  cranewatch serve --port 8077   # then open http://127.0.0.1:8077/\n"
        "  cranewatch serve --host 0.0.0.0 --allow-host cranewatch.port.example",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else exposes the findings)")
    parser.add_argument("--port", type=int, default=8077, help="TCP port (default %(default)s; 0: any free port)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this host name, on any port (repeatable)")
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cranewatch.store import open_store

    db = args.db or default_store()
    open_store(db, readonly=True).close()  # never creates a store; an older one is migrated first
    try:
        server = make_server(db, args.host, args.port, allow_hosts=args.allow_host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EnvironmentProblem(f"port {args.port} is in use on {args.host}: stop what holds it "
                                     "or choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise EnvironmentProblem(f"no permission to listen on {args.host}:{args.port} "
                                     "(ports below 1024 need root)") from None
        raise EnvironmentProblem(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"cranewatch dashboard on http://{host}:{port}/ (read-only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C is how one stops a dashboard: not an error
        print("dashboard stopped")
    finally:
        server.server_close()
    return 0
