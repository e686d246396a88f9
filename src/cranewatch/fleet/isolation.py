"""Put a registered crane behind its firewall: generate, check, write and record its rulesets.

The Python face of ``cranewatch quarantine`` and ``cranewatch policy`` (the demo calls these):
the ruleset is generated from the crane's record (and profile), optionally checked by
``nft -c`` (always before it is written, when this machine can; required with ``check``), written to a file, kept in the store for the commissioning report, and — for
quarantine — the crane's life cycle moves to quarantined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch.errors import UsageError
from cranewatch.fleet.lifecycle import check_transition
from cranewatch.fleet.registry import current_user, require_crane, transition
from cranewatch.policy import inservice_ruleset, quarantine_ruleset, verify_ruleset
from cranewatch.store import Store, StoredRuleset

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile


def quarantine_crane(
    store: Store,
    crane: str,
    station: str | Sequence[str],
    *,
    zone: str | Sequence[str] | None = None,
    interface: str | None = None,
    out: str | Path | None = None,
    check: bool = False,
    move: bool = True,
    by: str | None = None,
    force: bool = False,
) -> StoredRuleset:
    """Generate (and check, write, record) the quarantine ruleset; move the crane to quarantined.

    ``force`` lets a station network wider than a station through (the ruleset warns).
    """
    record = require_crane(store, crane)
    if move and record.state != "quarantined":  # refuse before writing anything
        check_transition(record.name, record.state, "quarantined")
    text = quarantine_ruleset(record, station, zone=zone, interface=interface, force=force)
    verify_ruleset(text, required=check)
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    stored = store.record_ruleset(record.name, "quarantine", text, who=by or current_user())
    if move and record.state != "quarantined":
        stations = ", ".join([station] if isinstance(station, str) else station)
        where = f"written to {out}" if out is not None else "generated"
        transition(store, record.name, "quarantined", by=by,
                   reason=f"quarantine ruleset {where} (analysis station {stations})")
    return stored


def inservice_policy(
    store: Store,
    crane: str,
    *,
    profile: CraneProfile | None = None,
    baseline: Baseline | dict[str, Any] | None = None,
    interface: str | None = None,
    out: str | Path | None = None,
    check: bool = False,
    by: str | None = None,
) -> StoredRuleset:
    """Generate (and check, write, record) the in-service allow-list from profile and baseline.

    ``profile``: a loaded ``CraneProfile``, or None for the crane's registered profile (read
    here); ``baseline``: a loaded ``Baseline`` (``judging``: saved or learned at the edge), a
    ``{"communications": [...]}`` table, or None.
    """
    from cranewatch.profile import load_profile

    record = require_crane(store, crane)
    if profile is None:
        if record.profile_path is None:
            raise UsageError(f"{record.name} has no registered profile: give --profile FILE")
        profile = load_profile(record.profile_path)
    text = inservice_ruleset(profile, baseline, crane=record.name, interface=interface)
    verify_ruleset(text, required=check)
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return store.record_ruleset(record.name, "in-service", text, who=by or current_user())
