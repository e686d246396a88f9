"""A crane's life-cycle timeline in one query: every transition, run, disposition, gate decision,
supersede, re-recording and ruleset in time order, at times the test sets, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Crane, open_store
from cranewatch.store import sqlite as store_sqlite

T0 = 1_800_000_000.0


class FakeTime:
    """The store's clock, set by the test."""

    now = T0

    @classmethod
    def time(cls) -> float:
        return cls.now


def test_every_step_in_time_order(store_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = tmp_path / "q.pcap"
    capture.write_bytes(b"not really a capture, only hashed")
    finding = Finding(id=finding_id("remote-access", "STS-07", 1), rule="remote-access", category="remote-access",
                      severity=Severity.HIGH, title="SSH", first_seen=1.0, last_seen=2.0, crane="STS-07",
                      evidence=(Evidence(source=str(capture), frames=(1,)),))
    with open_store(store_at) as store:
        monkeypatch.setattr(store_sqlite, "time", FakeTime)
        store.add_crane(Crane("STS-07"), who="registrar", why="delivered by ship", at=T0)
        store.add_crane(Crane("STS-08"), who="registrar", why="another crane", at=T0 + 1)
        store.set_state("STS-07", expected="delivered", to_state="quarantined", who="ana", why="isolated", at=T0 + 100)
        FakeTime.now = T0 + 200
        run = store.record_run("STS-07", "analyze", [capture], [finding], who="ana")
        FakeTime.now = T0 + 300
        store.record_ruleset("STS-07", "quarantine", "table inet q {}\n", who="ana")
        store.record_disposition("STS-07", finding.id, "false-positive", who="ben", why="test rig", at=T0 + 400)
        FakeTime.now = T0 + 500
        store.record_gate("STS-07", "rejected", [{"kind": "blocking-finding", "text": "SSH from outside"}], {},
                          who="fso")
        FakeTime.now = T0 + 600
        again = store.record_run("STS-07", "analyze", [capture], [finding], who="cem")
        store.supersede_run(run, who="ana", why="wrong mirror port", at=T0 + 700)
        store.set_state("STS-07", expected="quarantined", to_state="under-analysis", who="ana", why="next",
                        at=T0 + 800)
        steps = store.timeline("STS-07")
        window = store.timeline("STS-07", since=T0 + 400, until=T0 + 600)
    assert again == run
    assert [(s.at - T0, s.kind, s.who, s.subject) for s in steps] == [
        (0, "transition", "registrar", "STS-07"),
        (100, "transition", "ana", "STS-07"),
        (300, "ruleset", "ana", "quarantine"),
        (400, "disposition", "ben", finding.id),
        (500, "gate", "fso", ""),
        (600, "run", "cem", f"run {run}"),  # recorded again: the run keeps its id, the new time
        (600, "re-record", "cem", f"run {run}"),
        (700, "supersede", "ana", f"run {run}"),
        (800, "transition", "ana", "STS-07"),
    ]
    texts = [s.text for s in steps]
    assert texts[0] == "registered → delivered" and texts[1] == "delivered → quarantined"
    assert texts[3] == f"{finding.id} → false-positive" and texts[4] == "gate decision: rejected"
    assert texts[5] == f"run {run}: analyze, complete"
    assert steps[4].why == "SSH from outside" and steps[4].detail == {"decision": "rejected", "reasons": 1}
    assert steps[5].detail["inputs"] == 1 and steps[5].detail["finished"] is not None
    assert steps[6].detail["recording"] == 2 and steps[7].why == "wrong mirror port"
    assert steps[3].to_json()["at"] == "2027-01-15T08:06:40.000000Z"
    assert [s.kind for s in window] == ["disposition", "gate", "run", "re-record"]
