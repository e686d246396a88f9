"""SQLite store: schema, named migrations, the single writer. Only this package writes SQL."""

from cranewatch.store.records import (
    Component,
    Crane,
    GateRecord,
    HistoryEntry,
    Run,
    RunInput,
    StoredRuleset,
)
from cranewatch.store.sqlite import Store, default_db_path, hash_input, open_store

__all__ = [
    "Component",
    "Crane",
    "GateRecord",
    "HistoryEntry",
    "Run",
    "RunInput",
    "Store",
    "StoredRuleset",
    "default_db_path",
    "hash_input",
    "open_store",
]
