"""The store (SQLite file, or PostgreSQL as the central store): schema, named migrations, the
single writer. Only this package writes SQL."""

from cranewatch.store.records import (
    COUNTING_STATES,
    FINDING_STATES,
    AuditEvent,
    Component,
    Coverage,
    Crane,
    Disposition,
    GateRecord,
    HistoryEntry,
    ObservedHost,
    Run,
    RunInput,
    Session,
    StoredRuleset,
    User,
)
from cranewatch.store.sqlite import (
    MissingStore,
    Store,
    default_db_path,
    default_store,
    hash_input,
    open_store,
)

__all__ = [
    "COUNTING_STATES",
    "FINDING_STATES",
    "AuditEvent",
    "Component",
    "Coverage",
    "Crane",
    "Disposition",
    "GateRecord",
    "HistoryEntry",
    "MissingStore",
    "ObservedHost",
    "Run",
    "RunInput",
    "Session",
    "Store",
    "StoredRuleset",
    "User",
    "default_db_path",
    "default_store",
    "hash_input",
    "open_store",
]
