"""``cranewatch serve``: the read-only fleet dashboard on 127.0.0.1."""

from __future__ import annotations

import argparse
from typing import Any

from cranewatch.store import default_db_path
from cranewatch.store.options import add_db_option
from cranewatch.web.app import make_server


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a read-only dashboard of the fleet, findings and reports (127.0.0.1)",
        description="Serve a small read-only web dashboard over the store: the fleet with states and "
        "gate decisions, each crane's findings and history, its commissioning report. It binds "
        "127.0.0.1 unless told otherwise and answers only GET.\n\nExample:\n"
        "  cranewatch serve --port 8077   # then open http://127.0.0.1:8077/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else exposes the findings)")
    parser.add_argument("--port", type=int, default=8077)
    add_db_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cranewatch.store import open_store

    db = args.db or default_db_path()
    open_store(db, readonly=True).close()  # never creates a store; an older one is migrated first
    server = make_server(db, args.host, args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"cranewatch dashboard on http://{host}:{port}/ (read-only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C is how one stops a dashboard: not an error
        print("dashboard stopped")
    finally:
        server.server_close()
    return 0
