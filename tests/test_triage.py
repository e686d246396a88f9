"""Evidence accumulates: the gate judges every run, findings leave it only by a recorded
disposition, runs are superseded but never dropped, and the store's faults are named."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.errors import StateError, UsageError
from cranewatch.gate import assess, decide, gather_evidence
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Component, Coverage, Crane, ObservedHost, Store, open_store
from cranewatch.triage import dispose, parse_until, supersede, triaged

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"
FLEET = REPO / "profiles" / "fleet-example.toml"
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
BYPASS = LAB / "safety-bypass" / "crane-lan.pcap"
NORMAL_2 = LAB / "normal-2" / "crane-lan.pcap"
LABELS = json.loads((LAB / "safety-bypass" / "labels.json").read_text())


# -- the story of the issue, through the command line ------------------------------------------


def registered(path: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["fleet", "import", str(FLEET), "--db", path, "--by", "officer-ana"]) == 0
    for state in ("quarantined", "under-analysis"):
        assert main(["fleet", "set-state", "STS-07", state, "--reason", "test", "--db", path]) == 0
    capsys.readouterr()
    return path


@pytest.fixture
def db(store_at: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A store with the example fleet, STS-07 under analysis: an SQLite file, then PostgreSQL."""
    return registered(store_at, capsys)


@pytest.fixture
def sqlite_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The same as a file (for the tests of a file's read-only mount and full disk)."""
    return registered(str(tmp_path / "cw.db"), capsys)


def record(db: str, capture: Path, capsys: pytest.CaptureFixture[str]) -> int:
    assert main(["analyze", str(capture), "--db", str(db), "--crane", "STS-07", "--profile", str(PROFILE),
                 "--format", "jsonl"]) == 0
    err = capsys.readouterr().err
    return int(err.split("recorded as run ")[1].split()[0])


def gate_json(db: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["gate", "STS-07", "--db", str(db), "--no-move", "--format", "json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def blocking(doc: dict[str, object]) -> list[dict[str, str]]:
    return [r for r in doc["reasons"] if r["kind"] == "blocking-finding"]  # type: ignore[attr-defined]


def test_a_bad_capture_then_a_clean_one_still_rejects_with_the_earlier_findings(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the gate read only the latest traffic run, so normal-2 after safety-bypass
    turned REJECTED into NEEDS-REVIEW."""
    bad = record(db, BYPASS, capsys)
    assert gate_json(db, capsys)["decision"] == "rejected"
    clean = record(db, NORMAL_2, capsys)
    assert clean != bad
    doc = gate_json(db, capsys)
    assert doc["decision"] == "rejected"
    reasons = blocking(doc)
    # the labelled attack: the EWS writes safety_bypass=1 and overload_limit=900 to the PLC,
    # seen on the wire (2 writes) and in the process values (bypass set, limit raised)
    (attack,) = LABELS["attacks"]
    assert len(reasons) == 4 and {r["category"] for r in reasons} == {attack["category"]}
    assert {r["source"] for r in reasons} == {f"quarantine traffic analysis (run {bad})"}
    titles = " | ".join(r["text"] for r in reasons)
    assert "safety_bypass=1" in titles and "overload_limit=900" in titles
    assert doc["evidence"] == [f"quarantine traffic analysis (run {bad})", f"quarantine traffic analysis (run {clean})"]


def test_each_blocking_finding_disposed_by_an_officer_moves_it_and_the_audit_shows_every_step(
        db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = record(db, BYPASS, capsys)
    clean = record(db, NORMAL_2, capsys)
    ids = {r["text"]: r["finding"] for r in blocking(gate_json(db, capsys))}
    by_words = {next(i for t, i in ids.items() if words in t): words for words in (
        "ews wrote safety_bypass=1", "ews wrote overload_limit=900", "safety_bypass set", "overload_limit raised")}
    steps = [
        # (finding, state, extra options, who, why)
        ("ews wrote safety_bypass=1", "remediated", ["--evidence", str(clean)], "officer-ana",
         "EWS rebuilt from the golden image; the clean capture shows no write"),
        ("ews wrote overload_limit=900", "remediated", ["--evidence", str(clean)], "officer-ana",
         "EWS rebuilt; no limit write in the clean capture"),
        ("safety_bypass set", "false-positive", [], "officer-ana", "FAT test sequence, witnessed by the maker"),
        ("overload_limit raised", "accepted-risk", ["--until", "2099-01-31"], "FSO B. Meyer",
         "maker ticket 4711: limit raise for the 90 t tandem lift, approved"),
    ]
    for n, (words, state, extra, who, why) in enumerate(steps, start=1):
        fid = next(i for i, w in by_words.items() if w == words)
        assert main(["triage", fid[:12], "--state", state, "--reason", why, "--by", who, *extra,
                     "--db", str(db)]) == 0
        assert f"{state} by {who}" in capsys.readouterr().out
        doc = gate_json(db, capsys)
        assert len(blocking(doc)) == 4 - n  # each disposition moves exactly its finding out
        closed = [r for r in doc["reasons"] if r["kind"] == "closed-finding"]  # type: ignore[attr-defined]
        assert fid in {r["finding"] for r in closed}
    assert doc["decision"] == "needs-review"  # no blocking finding; images and gaps remain

    # the audit trail: every step, in order, with who and why — in fleet show, the report, JSON lines
    assert main(["fleet", "show", "STS-07", "--db", str(db), "--format", "json"]) == 0
    audit = json.loads(capsys.readouterr().out)["audit"]
    assert [(e["action"], e["detail"]["state"], e["who"], e["why"]) for e in audit] == [
        ("disposition", state, who, why) for _, state, _, who, why in steps]
    assert audit[0]["detail"]["evidence_run"] == clean and audit[3]["detail"]["until"] == "2099-01-31T23:59:59.999999Z"
    assert main(["fleet", "show", "STS-07", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert all(why in text for *_, why in steps)
    assert main(["report", "STS-07", "--db", str(db), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["why"] for r in records if r["type"] == "audit"] == [why for *_, why in steps]
    states = {r["id"]: r["state"] for r in records if r["type"] == "finding"}
    assert sorted(states.values()) == ["accepted-risk", "false-positive", "remediated", "remediated"]
    html = tmp_path / "report.html"
    assert main(["report", "STS-07", "--db", str(db), "--out", str(html)]) == 0
    page = html.read_text()
    assert 'id="audit"' in page and all(why in page for *_, why in steps)
    assert page.count('<span class="state remediated">') == 2 and bad  # every finding shows its state


def test_a_superseded_run_stays_visible_in_the_report_and_its_findings_stay(
        db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = record(db, BYPASS, capsys)
    assert main(["supersede", str(bad), "--reason", "captured on the wrong mirror port", "--by", "ana",
                 "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["runs", "STS-07", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert f"run {bad}" in listing and "superseded" in listing and "wrong mirror port" in listing
    doc = gate_json(db, capsys)
    # its findings leave the decision only by a disposition; as evidence that exists it no longer counts
    assert doc["decision"] == "rejected" and len(blocking(doc)) == 4
    assert any("no analysis of traffic recorded in quarantine" in r["text"] for r in doc["reasons"])  # type: ignore[attr-defined]
    assert main(["report", "STS-07", "--db", str(db), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (run,) = [r for r in records if r["type"] == "run"]
    assert run["run"] == bad and run["superseded"]["reason"] == "captured on the wrong mirror port"
    assert any(r["type"] == "input" and r["run"] == bad for r in records)
    assert [(r["action"], r["subject"]) for r in records if r["type"] == "audit"] == [("supersede", f"run {bad}")]
    html = tmp_path / "r.html"
    assert main(["report", "STS-07", "--db", str(db), "--out", str(html)]) == 0
    page = html.read_text()
    assert f'id="superseded-{bad}"' in page and "captured on the wrong mirror port" in page
    assert main(["supersede", str(bad), "--reason", "again", "--db", str(db)]) == 2


def test_the_same_capture_recorded_again_replaces_its_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = record(db, BYPASS, capsys)
    again = record(db, BYPASS, capsys)
    assert again == first
    assert main(["runs", "STS-07", "--db", str(db), "--format", "jsonl"]) == 0
    (run,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (run["run"], run["recordings"], run["findings"]) == (first, 2, 4)
    with open_store(db) as store:
        assert store.count_findings("STS-07") == 4
        assert [e.action for e in store.audit_events("STS-07")] == ["re-record"]


def test_triage_refusals_exit_2_and_record_nothing(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = record(db, BYPASS, capsys)
    with open_store(db) as store:
        fid = store.findings("STS-07")[0].id
    cases = [
        (["triage", "cw-0000", "--state", "acknowledged", "--reason", "x"], "no stored finding"),
        (["triage", "cw-", "--state", "acknowledged", "--reason", "x"], "names 4 findings"),
        (["triage", fid, "--state", "accepted-risk", "--reason", "x", "--by", "fso"], "needs an expiry"),
        (["triage", fid, "--state", "accepted-risk", "--reason", "x", "--until", "2099-01-01"], "officer"),
        (["triage", fid, "--state", "accepted-risk", "--reason", "x", "--until", "2001-01-01", "--by", "f"],
         "must lie in the future"),
        (["triage", fid, "--state", "false-positive", "--reason", "x", "--until", "2099-01-01"], "accepted-risk only"),
        (["triage", fid, "--state", "remediated", "--reason", "x"], "needs the evidence"),
        (["triage", fid, "--state", "remediated", "--reason", "x", "--evidence", str(bad)], "still fires in it"),
        (["triage", fid, "--state", "acknowledged", "--reason", " "], "say why"),
    ]
    for argv, message in cases:
        assert main([*argv, "--db", str(db)]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with open_store(db) as store:
        assert store.dispositions("STS-07") == [] and store.audit_events("STS-07") == []


# -- the rules of remediation and reopening, on a store --------------------------------------


def net_finding(n: int, dst: str = "10.20.7.10:22", rule: str = "remote-access") -> Finding:
    return Finding(id=finding_id(rule, "STS-07", n, dst), rule=rule, category="remote-access",
                   severity=Severity.HIGH, title=f"ssh {n}", first_seen=1.0, last_seen=2.0, crane="STS-07",
                   src=f"10.20.0.{n}", dst=dst, evidence=(Evidence(source="q.pcap", frames=(1,)),), remedy="r")


def image_finding(rule: str = "account.shared-key") -> Finding:
    return Finding(id=finding_id(rule, "STS-07", "root"), rule=rule, category="credential", severity=Severity.HIGH,
                   title="shared key", first_seen=None, last_seen=None, crane="STS-07",
                   evidence=(Evidence(path="root/.ssh/authorized_keys", line=1),), remedy="r")


PLC_SEEN = Coverage(("network", "process"), (ObservedHost("02:c7:07:00:00:0a", ("10.20.7.10",)),))


@pytest.fixture
def store(store_at: str) -> Iterator[Store]:
    with open_store(store_at) as s:
        s.add_crane(Crane("STS-07", zone="10.20.7.0/24", components=(
            Component("PLC", "plc", ip="10.20.7.10"), Component("CMS", "cms", ip="10.20.7.30"))),
            who="t", why="t")
        yield s


def test_remediation_is_refused_unless_the_evidence_shows_the_rule_checked_and_quiet(store: Store) -> None:
    ssh, key = net_finding(1), image_finding()
    seen = store.record_run("STS-07", "analyze", [], [ssh], coverage=PLC_SEEN)
    cms = store.record_run("STS-07", "scan-image", [], [key], component="CMS", coverage=Coverage(("image",)))
    no_coverage = store.record_run("STS-07", "analyze", [], [])
    elsewhere = store.record_run("STS-07", "analyze", [], [], coverage=Coverage(
        ("network",), (ObservedHost(None, ("10.20.7.20",)),)))
    ocr = store.record_run("STS-07", "scan-image", [], [], component="OCR", coverage=Coverage(("image",)))
    suppressed = store.record_run("STS-07", "scan-image", [], [], component="CMS",
                                  coverage=Coverage(("image",), suppressed=(key.id,)))
    gone = store.record_run("STS-07", "analyze", [], [], coverage=PLC_SEEN)
    store.supersede_run(elsewhere, who="t", why="wrong port")
    refusals = [
        (ssh.id, seen, "still fires in it"),
        (ssh.id, cms, "came from a traffic analysis"),
        (ssh.id, no_coverage, "does not record what it examined"),
        (ssh.id, elsewhere, "superseded"),
        (key.id, ocr, "it scanned OCR, but the finding is of CMS"),
        (key.id, suppressed, "suppressed by the scan's reference"),
        (key.id, gone, "came from an image scan"),
        (ssh.id, 999, "has no run 999"),
    ]
    for finding, evidence, message in refusals:
        with pytest.raises(StateError, match=message):
            dispose(store, finding, "remediated", reason="fixed", by="ana", evidence=evidence)
    assert store.dispositions("STS-07") == []
    d = dispose(store, ssh.id, "remediated", reason="SSH removed", by="ana", evidence=gone)
    assert (d.state, d.evidence_run, d.who) == ("remediated", gone, "ana")


def test_remediation_needs_the_host_seen_and_the_rule_family_run(store: Store) -> None:
    ssh = net_finding(1)
    process = Finding(id=finding_id("process-frozen", "STS-07", "hoist_load"), rule="process-frozen",
                      category="false-reading", severity=Severity.HIGH, title="hoist_load frozen", first_seen=1.0,
                      last_seen=2.0, crane="STS-07", src="10.20.7.10", dst="10.20.7.50",
                      evidence=(Evidence(source="q.pcap"),), remedy="r")
    store.record_run("STS-07", "analyze", [], [ssh, process], coverage=PLC_SEEN)
    other_host = store.record_run("STS-07", "analyze", [], [], coverage=Coverage(
        ("network", "process"), (ObservedHost(None, ("10.20.7.30",)),)))
    no_process = store.record_run("STS-07", "analyze", [], [], coverage=Coverage(
        ("network",), PLC_SEEN.hosts))
    with pytest.raises(StateError, match=re.escape("never shows 10.20.0.1, 10.20.7.10")):
        dispose(store, ssh.id, "remediated", reason="x", evidence=other_host)
    with pytest.raises(StateError, match="the process checks, which raise process-frozen, did not run"):
        dispose(store, process.id, "remediated", reason="x", evidence=no_process)
    dispose(store, ssh.id, "remediated", reason="x", evidence=no_process)  # network checks ran, PLC seen


def test_a_remediated_finding_seen_again_is_reopened_by_cranewatch(store: Store) -> None:
    ssh = net_finding(1)
    store.record_run("STS-07", "analyze", [], [ssh], coverage=PLC_SEEN)
    clean = store.record_run("STS-07", "analyze", [], [], coverage=PLC_SEEN)
    dispose(store, ssh.id, "remediated", reason="SSH removed", by="ana", evidence=clean)
    assert [f.id for f in store.current_findings("STS-07")] == []
    again = store.record_run("STS-07", "analyze", [], [ssh], coverage=PLC_SEEN)
    (item,) = triaged(store, "STS-07")
    assert item.state == "open" and item.runs == (1, again)
    assert item.disposition is not None and item.disposition.who == "cranewatch"
    assert f"seen again in run {again}" in item.disposition.why
    assert [e.action for e in store.audit_events("STS-07")] == ["disposition", "reopen"]


def test_superseding_the_remediation_evidence_reopens_the_finding(store: Store) -> None:
    ssh = net_finding(1)
    store.record_run("STS-07", "analyze", [], [ssh], coverage=PLC_SEEN)
    clean = store.record_run("STS-07", "analyze", [], [], coverage=PLC_SEEN)
    dispose(store, ssh.id, "remediated", reason="SSH removed", evidence=clean)
    supersede(store, clean, reason="that capture was of STS-08", by="ana")
    (item,) = triaged(store, "STS-07")
    assert item.state == "open" and item.disposition is not None
    assert item.disposition.why == f"its remediation evidence, run {clean}, was superseded"
    assert [e.action for e in store.audit_events("STS-07")] == ["disposition", "supersede", "reopen"]


def test_an_expired_acceptance_is_open_again_in_the_decision(store: Store) -> None:
    ssh = net_finding(1)
    store.record_run("STS-07", "analyze", [], [ssh], coverage=PLC_SEEN)
    t0 = 1_800_000_000.0
    dispose(store, ssh.id, "accepted-risk", reason="vendor fixes it next month", by="FSO", until=t0 + 3600, now=t0)
    crane = store.crane("STS-07")
    assert crane is not None
    from cranewatch.gate import GatePolicy

    before = assess(crane, gather_evidence(store, crane, now=t0 + 60), GatePolicy())[1]
    assert not any(r.kind == "blocking-finding" for r in before)
    assert any(r.kind == "closed-finding" and "accepted-risk by FSO" in r.text for r in before)
    after = assess(crane, gather_evidence(store, crane, now=t0 + 3600), GatePolicy())
    assert after[0] == "rejected"
    (reason,) = [r for r in after[1] if r.kind == "blocking-finding"]
    assert reason.finding == ssh.id and "expired, open again" in reason.text
    assert [i.state for i in triaged(store, "STS-07", now=t0 + 3600)] == ["open"]


def test_until_is_the_end_of_the_named_day_and_must_lie_ahead() -> None:
    assert parse_until("2027-01-31", now=0) == 1801439999.999999  # 2027-01-31T23:59:59.999999Z
    assert parse_until("2027-01-31T12:00:00Z", now=0) == 1801396800.0
    with pytest.raises(UsageError, match="must lie in the future"):
        parse_until("2027-01-31", now=1801440000.0)
    with pytest.raises(UsageError, match="expected a date"):
        parse_until("next tuesday", now=0)


def test_the_gate_lists_registered_but_unseen_and_seen_but_unregistered_hosts(store: Store) -> None:
    store.record_run("STS-07", "analyze", [], [], coverage=Coverage(("network",), (
        ObservedHost("02:c7:07:00:00:0a", ("10.20.7.10",)), ObservedHost("02:c7:07:00:00:63", ("10.20.7.99",)),
        ObservedHost("02:00:00:00:00:01", ("10.20.0.50",)), ObservedHost(None, ("10.20.7.255", "0.0.0.0")))))
    decision = decide(store, "STS-07", who="t", move=False)
    gaps = [r.text for r in decision.reasons if r.kind == "evidence-gap"]
    assert gaps == [
        "CMS (cms, 10.20.7.30) is registered but never seen in the quarantine traffic: is it connected, and was "
        "the capture taken where its traffic passes?",
        "10.20.7.99 (MAC 02:c7:07:00:00:63) was seen in the quarantine traffic inside the crane zone 10.20.7.0/24 "
        "but is not a registered part of STS-07",
    ]  # 10.20.0.50 is outside the zone, the broadcast and 0.0.0.0 are no hosts
    assert decision.decision == "needs-review"


# -- the store is never created by a reader, and its faults are named ---------------------------


READ_SIDE = [
    ["report", "STS-07"], ["fleet", "show", "STS-07"], ["fleet", "list"], ["triage", "--list", "STS-07"],
    ["runs", "STS-07"], ["gate", "STS-07"], ["supersede", "1", "--reason", "x"],
    ["triage", "cw-1", "--state", "acknowledged", "--reason", "x"], ["fleet", "set-state", "STS-07",
                                                                      "quarantined", "--reason", "x"],
    ["serve", "--port", "0"],
]


@pytest.mark.parametrize("argv", READ_SIDE, ids=lambda a: " ".join(a[:2]))
def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path, argv: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo" / "cw.db"
    assert main([*argv, "--db", str(missing)]) == 2
    assert "no such database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of its own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_store_exits_4_naming_the_cause(sqlite_db: str, tmpfs: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = tmpfs / "cw.db"
    shutil.copy(sqlite_db, store)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    writers = [
        ["gate", "STS-07"],
        ["analyze", str(BYPASS), "--crane", "STS-07", "--profile", str(PROFILE)],
        ["fleet", "set-state", "STS-07", "rejected", "--reason", "x"],
    ]
    for argv in writers:
        assert main([*argv, "--db", str(store)]) == 4, argv
        err = capsys.readouterr().err
        assert "read-only" in err and "not a cranewatch database" not in err, (argv, err)
    # reading still works: the intact store is read as it is
    assert main(["fleet", "show", "STS-07", "--db", str(store)]) == 0
    assert "under-analysis" in capsys.readouterr().out


def test_a_full_disk_exits_4_naming_the_cause_and_the_store_stays_intact(
        sqlite_db: str, tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmpfs / "cw.db"
    shutil.copy(sqlite_db, store)
    filler = tmpfs / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    for argv in (["analyze", str(BYPASS), "--crane", "STS-07", "--profile", str(PROFILE)],
                 ["fleet", "set-state", "STS-07", "rejected", "--reason", "x"]):
        assert main([*argv, "--db", str(store)]) == 4, argv
        err = capsys.readouterr().err
        assert "disk is full" in err and "not a cranewatch database" not in err, (argv, err)
    filler.unlink()
    assert main(["fleet", "set-state", "STS-07", "rejected", "--reason", "after cleanup", "--db", str(store)]) == 0
    with open_store(store) as s:
        assert s.crane("STS-07").state == "rejected"  # type: ignore[union-attr]
        assert s.runs("STS-07") == []  # the analysis could not even record its start: nothing half-written


def test_coverage_of_several_parts_keeps_only_the_checks_all_ran() -> None:
    from cranewatch.gate import merge_coverage

    plc, cms = ObservedHost("02:c7:07:00:00:0a", ("10.20.7.10",)), ObservedHost(None, ("10.20.7.30",))
    merged = merge_coverage([Coverage(("network", "process"), (plc,)), Coverage(("network",), (cms, plc))])
    assert merged == Coverage(("network",), (plc, cms))
    assert merge_coverage([]) == Coverage(())


def test_an_empty_file_as_store_is_refused_by_readers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(["fleet", "list", "--db", str(empty)]) == 3
    assert "not a cranewatch database: it is empty" in capsys.readouterr().err
    assert empty.stat().st_size == 0
