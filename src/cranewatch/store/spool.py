"""A local spool for runs the central store could not take: nothing is lost when it is away.

A sensor (``monitor --db postgresql://...``) or an analysis (``analyze --db ...``) that cannot
reach its PostgreSQL store keeps the finished run here instead, says so, and carries on. The
run is replayed, oldest first, at the next successful contact: by any later command that opens
that store (``open_store`` replays before it returns), and by ``monitor`` itself when it gets
through again (it retries with back-off).

- **Where**: ``STATE/spool/KEY/``, STATE being ``$CRANEWATCH_STATE`` or
  ``~/.local/state/cranewatch`` and KEY a digest of the store URL without its password, one
  JSON file per run named by the time it was spooled (nanoseconds), so the order is the order
  of the runs. Files are written to a temporary name, synced and renamed: a crash leaves a
  whole run or none.
- **What**: the arguments of ``Store.record_run`` (crane, kind, component, inputs with their
  sha256, findings, incidents, artifacts, coverage, options, note, who) — exactly what the
  command would have recorded.
- **Idempotent**: a run carries the same inputs and options as it would have had, so its
  fingerprint is the same; replaying a run twice (a crash between recording it and deleting its
  file) replaces the first recording in place (``Store.finish_run``) and adds nothing. A
  monitor's checkpoints hold every finding of the session so far: the sensor keeps only its
  latest in the spool (``put(..., key=...)``).
- **Ordered**: a replay stops at the first run the store refuses, leaving it and every later one
  spooled (a crane not registered yet stays spooled until it is, with the reason said).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch import __version__
from cranewatch.errors import CranewatchError
from cranewatch.incidents import Incident
from cranewatch.model import Finding
from cranewatch.store.dialect import redact_url
from cranewatch.store.records import Coverage, RunInput

if TYPE_CHECKING:
    from cranewatch.store.sqlite import Store


def default_state_dir() -> Path:
    """``$CRANEWATCH_STATE``, else ``~/.local/state/cranewatch`` (a sensor's own state)."""
    given = os.environ.get("CRANEWATCH_STATE")
    if given:
        return Path(given)
    return Path.home() / ".local" / "state" / "cranewatch"


@dataclass
class SpooledRun:
    """A finished run, as ``Store.record_run`` takes it."""

    crane: str
    kind: str
    inputs: list[RunInput]
    findings: list[Finding]
    component: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    coverage: Coverage | None = None
    who: str | None = None
    note: str | None = None
    incidents: list[Incident] = field(default_factory=list)
    tool_version: str = __version__
    # a traffic run's hosts (mac, ips, first_seen, last_seen, packets, bytes) and conversations
    # (``conversations.Conversation`` fields), for the inventory and the communication map
    hosts: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)

    def record(self, store: Store) -> int:
        run_id = store.record_run(self.crane, self.kind, self.inputs, self.findings,
                                  component=self.component, artifacts=self.artifacts,
                                  tool_version=self.tool_version, options=self.options,
                                  coverage=self.coverage, who=self.who, note=self.note,
                                  incidents=self.incidents)
        self.record_summary(store, run_id)
        return run_id

    def record_summary(self, store: Store, run_id: int) -> None:
        """The hosts and conversations of a traffic run (none: nothing written)."""
        if not (self.hosts or self.conversations):
            return
        from cranewatch.conversations import Conversation

        store.record_traffic_summary(
            run_id, [_HostRow(h["mac"], tuple(h["ips"]), h["first_seen"], h["last_seen"],
                              int(h["packets"]), int(h["bytes"])) for h in self.hosts],
            [Conversation(**c) for c in self.conversations])

    def to_json(self) -> dict[str, Any]:
        return {
            "crane": self.crane, "kind": self.kind, "component": self.component,
            "inputs": [{"path": i.path, "sha256": i.sha256, "size": i.size} for i in self.inputs],
            "findings": [f.to_json() for f in self.findings],
            "incidents": [i.to_json() for i in self.incidents],
            "artifacts": self.artifacts, "options": self.options,
            "coverage": self.coverage.to_json() if self.coverage is not None else None,
            "who": self.who, "note": self.note, "tool_version": self.tool_version,
            "hosts": self.hosts, "conversations": self.conversations,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SpooledRun:
        coverage = obj.get("coverage")
        return cls(
            crane=obj["crane"], kind=obj["kind"], component=obj.get("component"),
            inputs=[RunInput(i["path"], i["sha256"], int(i["size"])) for i in obj["inputs"]],
            findings=[Finding.from_json(f) for f in obj["findings"]],
            incidents=[Incident.from_json(i) for i in obj.get("incidents", ())],
            artifacts=dict(obj.get("artifacts") or {}), options=dict(obj.get("options") or {}),
            coverage=Coverage.from_json(coverage) if coverage is not None else None,
            who=obj.get("who"), note=obj.get("note"),
            tool_version=obj.get("tool_version") or __version__,
            hosts=list(obj.get("hosts") or []), conversations=list(obj.get("conversations") or []),
        )


@dataclass(frozen=True, slots=True)
class _HostRow:
    """A spooled host as ``Store.record_traffic_summary`` reads one."""

    mac: str | None
    ips: tuple[str, ...]
    first_seen: float | None
    last_seen: float | None
    packets: int
    bytes: int


@dataclass
class Spool:
    """The spooled runs of one store (by URL)."""

    url: str
    state_dir: Path = field(default_factory=default_state_dir)

    @property
    def dir(self) -> Path:
        key = hashlib.sha256(redact_url(self.url).encode()).hexdigest()[:16]
        return self.state_dir / "spool" / key

    def pending(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return []

    def put(self, run: SpooledRun, *, key: str | None = None) -> Path:
        """Keep ``run``; with ``key``, it takes the place of the spooled run of that key (a
        sensor's later checkpoint holds all of the earlier one)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = None
        if key is not None:
            tag = hashlib.sha256(key.encode()).hexdigest()[:12]
            name = next((p.name for p in self.pending() if p.stem.endswith("-" + tag)), None)
            name = name or f"{time.time_ns():020d}-{tag}.json"
        else:
            name = f"{time.time_ns():020d}-{os.getpid()}.json"
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"url": redact_url(self.url), "run": run.to_json()}, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        return path

    def replay(self, store: Store, say: Callable[[str], None] | None = None) -> int:
        """Record the spooled runs into ``store``, oldest first; each file goes once recorded.
        Stops at the first run the store refuses (it and the later ones stay). Returns how many
        were recorded."""
        done = 0
        for path in self.pending():
            try:
                run = SpooledRun.from_json(json.loads(path.read_text(encoding="utf-8"))["run"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                broken = path.with_suffix(".broken")
                with contextlib.suppress(OSError):
                    path.replace(broken)
                if say:
                    say(f"a spooled run cannot be read ({exc}); kept as {broken}")
                continue
            try:
                from cranewatch.fleet.registry import require_crane

                require_crane(store, run.crane)  # a run of an unknown crane waits, spooled
                run.record(store)
            except CranewatchError as exc:
                if say:
                    left = len(self.pending())
                    say(f"{left} spooled run(s) not recorded yet ({exc.message}); kept in {self.dir}")
                break
            path.unlink()
            done += 1
        return done


def replay_pending(url: str, say: Callable[[str], None] | None = None) -> int:
    """Replay the spool of the store at ``url`` when there is one (cheap when there is none).
    A store that cannot be reached leaves the spool as it is."""
    spool = Spool(url)
    if not spool.pending():
        return 0
    from cranewatch.store.sqlite import Store

    try:
        with Store(url, create=False) as store:
            done = spool.replay(store, say)
    except CranewatchError as exc:
        if say:
            say(f"{len(spool.pending())} spooled run(s) wait for {redact_url(url)} ({exc.message})")
        return 0
    if done and say:
        say(f"recorded {done} spooled run(s) into {redact_url(url)}")
    return done
