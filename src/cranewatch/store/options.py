"""The ``--db`` option every store-backed command shares, and opening the store from it."""

from __future__ import annotations

import argparse

from cranewatch.store.sqlite import Store, default_db_path, open_store


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="FILE|URL",
        help="the cranewatch store: an SQLite file, or postgresql://USER@HOST/DB for the central "
        f"store (default: $CRANEWATCH_DB, else $CRANEWATCH_HOME/cranewatch.db or {default_db_path()})",
    )


def store_from_args(args: argparse.Namespace, *, readonly: bool = False, create: bool = False) -> Store:
    """The store ``--db`` names. Only commands that register cranes pass ``create``; read-side
    commands pass ``readonly`` (SQLite ``mode=ro``). A missing store is ``MissingStore`` (exit 2)."""
    return open_store(getattr(args, "db", None), readonly=readonly, create=create)
