"""The console's findings query on both backends: every filter, sort and page checked against
a small store whose answers were worked out by hand; the state and source kept on the row
follow dispositions, and a store of before 0008 gets them filled in when it is migrated."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cranewatch.errors import UsageError
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Crane, Store, open_store
from cranewatch.store.console import FindingQuery

T = 1_780_000_000.0
NOW = T + 2000  # when the queries judge expiries


def f(key: str, rule: str, category: str, severity: Severity, *, src: str | None, dst: str | None,
      last: float | None, title: str, values: dict[str, object] | None = None, crane: str = "STS-07") -> Finding:
    return Finding(id=finding_id(rule, crane, key), rule=rule, category=category, severity=severity, title=title,
                   first_seen=None if last is None else last - 10, last_seen=last, crane=crane, src=src, dst=dst,
                   evidence=(Evidence(source="q.pcap", frames=(1,), values=values or {}),), remedy="r")


A = f("a", "remote-access", "remote-access", Severity.CRITICAL, src="203.0.113.10", dst="10.20.7.30:22",
      last=T + 500, title="SSH session into the crane zone")
B = f("b", "c2-beacon", "c2", Severity.HIGH, src="10.20.7.42", dst="198.51.100.7:443", last=T + 400,
      title="Beacon every 60 s to 198.51.100.7")
C = f("c", "process-overload-no-trip", "safety-override", Severity.CRITICAL, src="10.20.7.10", dst="10.20.7.30",
      last=T + 300, title="Overload without trip")
D = f("d", "new-asset", "new-asset", Severity.MEDIUM, src="10.20.7.199", dst=None, last=T + 200,
      title="New host on the crane LAN", values={"mac": "02:5c:11:0a:77:c3", "peer": "10.20.7.42"})
E = f("e", "backdoor-x", "backdoor", Severity.HIGH, src=None, dst=None, last=None, title="Backdoor in /usr/bin/vendord")
F = f("f", "recon-scan", "recon", Severity.LOW, src="10.20.7.42:5555", dst="10.20.7.4:502", last=T + 100,
      title="Modbus unit scan")
OTHER = f("o", "remote-access", "remote-access", Severity.CRITICAL, src="10.20.7.42", dst="10.20.8.30:22",
          last=T + 900, title="SSH on another crane", crane="STS-08")


@pytest.fixture
def store(store_at: str) -> Iterator[Store]:
    with open_store(store_at) as s:
        for name in ("STS-07", "STS-08"):
            s.add_crane(Crane(name), who="t", why="t")
        s.record_run("STS-07", "analyze", [], [A, B, C, F])
        s.record_run("STS-07", "analyze", [], [D], component="monitor:eth1")
        s.record_run("STS-07", "scan-image", [], [E], component="CMS")
        s.record_run("STS-08", "analyze", [], [OTHER])
        s.record_disposition("STS-07", A.id, "acknowledged", who="ana", why="looking", at=T + 600)
        s.record_disposition("STS-07", B.id, "false-positive", who="ana", why="NTP", at=T + 600)
        s.record_disposition("STS-07", C.id, "accepted-risk", who="fso", why="ok", until=T + 1000, at=T + 600)
        s.record_disposition("STS-07", F.id, "accepted-risk", who="fso", why="ok", until=T + 10**6, at=T + 600)
    s = open_store(store_at)
    yield s
    s.close()


def ids(store: Store, **filters: object) -> list[str]:
    page = store.query_findings(FindingQuery("STS-07", now=NOW, **filters))  # type: ignore[arg-type]
    return [r.finding.id for r in page.rows]


def test_the_three_orders(store: Store) -> None:
    assert ids(store) == [A.id, B.id, C.id, D.id, F.id, E.id]  # newest first, no time last
    assert ids(store, sort="severity") == [A.id, C.id, B.id, E.id, D.id, F.id]
    assert ids(store, sort="rule") == [E.id, B.id, D.id, C.id, F.id, A.id]


def test_state_is_the_effective_one_an_expired_acceptance_being_open(store: Store) -> None:
    assert ids(store, state=("open",)) == [C.id, D.id, E.id]
    assert ids(store, state=("accepted-risk",)) == [F.id]
    assert ids(store, state=("acknowledged", "false-positive")) == [A.id, B.id]
    rows = {r.finding.id: r for r in store.query_findings(FindingQuery("STS-07", now=NOW)).rows}
    assert (rows[C.id].state, rows[C.id].state_until) == ("open", T + 1000)
    assert rows[F.id].to_json()["state"] == "accepted-risk"
    before = store.query_findings(FindingQuery("STS-07", state=("accepted-risk",), now=T + 700))
    assert [r.finding.id for r in before.rows] == [C.id, F.id]  # before C's expiry


def test_source_severity_category(store: Store) -> None:
    assert ids(store, source=("traffic",)) == [A.id, B.id, F.id]
    assert ids(store, source=("process",)) == [C.id]
    assert ids(store, source=("monitor",)) == [D.id]
    assert ids(store, source=("image",)) == [E.id]
    assert ids(store, severity=("high",)) == [B.id, E.id]
    assert ids(store, category=("c2", "recon")) == [B.id, F.id]
    assert ids(store, severity=("critical",), state=("open",)) == [C.id]


def test_host_is_src_dst_with_or_without_port_or_a_whole_evidence_value(store: Store) -> None:
    assert ids(store, host="10.20.7.42") == [B.id, D.id, F.id]
    assert ids(store, host="10.20.7.4") == [F.id]  # not 10.20.7.42
    assert ids(store, host="02:5c:11:0a:77:c3") == [D.id]
    assert ids(store, host="10.20.7._") == []  # LIKE's wildcards are the text itself


def test_text_search_ignores_case(store: Store) -> None:
    assert ids(store, text="backdoor") == [E.id]
    assert ids(store, text="ssh") == [A.id]
    assert ids(store, text="10.20.7.199") == [D.id]
    assert ids(store, text="100%") == []


def test_pages_and_totals(store: Store) -> None:
    pages = [store.query_findings(FindingQuery("STS-07", limit=2, offset=o, now=NOW)) for o in (0, 2, 4, 6)]
    assert [[r.finding.id for r in p.rows] for p in pages] == [[A.id, B.id], [C.id, D.id], [F.id, E.id], []]
    assert [p.total for p in pages] == [6, 6, 6, 6]
    search = store.query_findings(FindingQuery("STS-07", host="10.20.7.42", limit=1, offset=5, now=NOW))
    assert (search.rows, search.total) == ((), 3)
    every = store.query_findings(FindingQuery(None, host="10.20.7.42", now=NOW))
    assert [r.finding.id for r in every.rows] == [OTHER.id, B.id, D.id, F.id] and every.total == 4
    assert every.to_json()["findings"][0]["crane"] == "STS-08"


def test_unknown_values_are_refused(store: Store) -> None:
    for bad in ({"severity": ("severe",)}, {"state": ("closed",)}, {"source": ("disk",)}, {"sort": "id"},
                {"limit": 0}, {"offset": -1}):
        with pytest.raises(UsageError):
            store.query_findings(FindingQuery("STS-07", **bad))  # type: ignore[arg-type]


def test_a_store_of_before_0008_gets_state_and_source_filled_in(store_at: str) -> None:
    old = Store(store_at, migrate=False)
    old.migrate(upto=6)
    old.add_crane(Crane("STS-07"), who="t", why="t")
    with old._write() as db:
        for kind, component in (("analyze", None), ("scan-image", "CMS"), ("analyze", "monitor:eth1")):
            db.execute("INSERT INTO runs(crane, kind, component, tool_version, started_at, finished_at, status)"
                       " VALUES ('STS-07', ?, ?, 'old', 1.0, 2.0, 'complete')", (kind, component))
        for run_id, finding in ((1, A), (1, C), (2, E), (3, D)):
            db.execute("INSERT INTO findings(crane, id, rule, category, severity, title, first_seen, last_seen, count,"
                       " technique, evidence, remedy) VALUES ('STS-07', ?, ?, ?, ?, ?, ?, ?, 1, '[]', '[]', 'r')",
                       (finding.id, finding.rule, finding.category, str(finding.severity), finding.title,
                        finding.first_seen, finding.last_seen))
            db.execute("INSERT INTO run_findings(run_id, crane, finding_id, count) VALUES (?, 'STS-07', ?, 1)",
                       (run_id, finding.id))
        db.execute("INSERT INTO finding_dispositions(crane, finding_id, state, at, who, why) VALUES"
                   " ('STS-07', ?, 'acknowledged', 5.0, 'ana', 'x')", (A.id,))
        db.execute("INSERT INTO finding_dispositions(crane, finding_id, state, at, who, why, until) VALUES"
                   " ('STS-07', ?, 'accepted-risk', 6.0, 'fso', 'y', ?)", (A.id, T + 10**6))
    old.close()
    with open_store(store_at) as store:
        rows = {r.finding.id: (r.state, r.source) for r in store.query_findings(FindingQuery("STS-07", now=NOW)).rows}
        found = store.query_findings(FindingQuery("STS-07", text="OVERLOAD without", now=NOW))
    assert [r.finding.id for r in found.rows] == [C.id]  # its search text was filled in too
    assert rows == {A.id: ("accepted-risk", "traffic"), C.id: ("open", "process"), E.id: ("open", "image"),
                    D.id: ("open", "monitor")}
