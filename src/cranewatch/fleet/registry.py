"""The crane registry: register and import cranes, move them through the life cycle.

Every change goes through the store with who, when and why; the life-cycle rules are
``fleet.lifecycle``. These are the functions the CLI and the demo call.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, replace
from pathlib import Path

from cranewatch.errors import StateError
from cranewatch.fleet.fleetfile import check_crane_name, load_fleet
from cranewatch.fleet.lifecycle import check_transition
from cranewatch.store import Crane, HistoryEntry, Store


def current_user() -> str:
    """Who is acting: ``$USER``, else the login name, else ``unknown``."""
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def require_crane(store: Store, name: str) -> Crane:
    crane = store.crane(name)
    if crane is None:
        known = ", ".join(c.name for c in store.cranes()) or "none yet"
        raise StateError(f"crane {name} is not registered (registered: {known}); add it with `cranewatch fleet add`")
    return crane


def register(store: Store, crane: Crane, *, by: str | None = None, reason: str = "registered") -> Crane:
    """Register a delivered crane; its first history entry says who registered it and why."""
    check_crane_name(crane.name)
    return store.add_crane(replace(crane, state="delivered"), who=by or current_user(), why=reason)


@dataclass(frozen=True, slots=True)
class ImportResult:
    crane: str
    action: str  # added | updated


def import_fleet(store: Store, path: str | Path, *, by: str | None = None) -> list[ImportResult]:
    """Register the cranes of a fleet TOML file; cranes already registered get their facts updated.

    The whole file is checked before anything is written; the life-cycle state of a known
    crane is never changed by an import.
    """
    results: list[ImportResult] = []
    for crane in load_fleet(path):
        if store.crane(crane.name) is None:
            register(store, crane, by=by, reason=f"imported from {path}")
            results.append(ImportResult(crane.name, "added"))
        else:
            store.update_crane_facts(crane)
            results.append(ImportResult(crane.name, "updated"))
    return results


def transition(
    store: Store,
    name: str,
    to_state: str,
    *,
    by: str | None = None,
    reason: str,
    by_gate: bool = False,
) -> HistoryEntry:
    """Move a crane to ``to_state`` if the life cycle allows it, recording who, when and why."""
    if not reason.strip():
        raise StateError("say why the crane changes state (--reason)")
    crane = require_crane(store, name)
    latest = store.latest_gate(name)
    check_transition(
        name,
        crane.state,
        to_state,
        by_gate=by_gate,
        cleared_by_gate=latest is not None and latest.decision == "cleared",
    )
    return store.set_state(name, expected=crane.state, to_state=to_state, who=by or current_user(), why=reason)
