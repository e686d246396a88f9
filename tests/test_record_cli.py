"""``analyze`` and ``scan-image`` with ``--db DB --crane ID`` record their run in the store.

The recorded inputs' sha256 are checked against hashlib over the files, the recorded findings
against the JSON lines the same command printed, and a second run must give the same finding
ids without duplicating them. Without ``--db`` nothing is written anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.fleet import import_fleet, transition
from cranewatch.gate import decide
from cranewatch.store import open_store

DATA = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data"
PROFILE = DATA / "profiles" / "sts-07.toml"
NORMAL = DATA / "lab" / "normal" / "crane-lan.pcap"
FALSE_LOAD = DATA / "lab" / "false-load" / "crane-lan.pcap"
REMOTE_SSH = DATA / "lab" / "remote-ssh" / "crane-lan.pcap"
CMS_IMAGE = DATA / "images" / "sts07-cms.tar.gz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finding_ids(out: str) -> list[str]:
    return [r["id"] for r in map(json.loads, out.splitlines()) if r.get("type") == "finding"]


@pytest.fixture()
def db(store_at: str) -> str:
    """A store with STS-07 registered: an SQLite file, then a PostgreSQL database."""
    path = store_at
    with open_store(path) as store:
        import_fleet(store, DATA / "fleet" / "sts-07.toml")
    return path


def _analyze(db: str, capsys: pytest.CaptureFixture[str], *captures: Path) -> tuple[int, list[str], str]:
    code = main(["analyze", *map(str, captures), "--profile", str(PROFILE), "--baseline", str(NORMAL),
                 "--format", "jsonl", "--db", str(db), "--crane", "STS-07"])
    out, err = capsys.readouterr()
    return code, _finding_ids(out), err


def test_analyze_records_inputs_and_findings_and_a_rerun_duplicates_nothing(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, printed, err = _analyze(db, capsys, FALSE_LOAD, REMOTE_SSH)
    assert code == 0 and printed
    assert "recorded as run" in err
    with open_store(db) as store:
        (run,) = store.runs("STS-07", "analyze")
        assert run.status == "complete"
        recorded = {Path(i.path).resolve(): i.sha256 for i in run.inputs}
        for path in (FALSE_LOAD, REMOTE_SSH, PROFILE, NORMAL):
            assert recorded[path.resolve()] == _sha256(path)
        first = [f.id for f in store.findings("STS-07", [run.id])]
        assert sorted(first) == sorted(printed)
        stored = {f.id: f for f in store.findings("STS-07")}
        assert any(f.category == "false-reading" for f in stored.values())
        assert any(f.category == "remote-access" for f in stored.values())

    code, again, _ = _analyze(db, capsys, FALSE_LOAD, REMOTE_SSH)
    assert code == 0 and sorted(again) == sorted(printed)
    with open_store(db) as store:
        # the same captures judged by the same files: the run is replaced, not duplicated
        (again_run,) = store.runs("STS-07", "analyze")
        assert again_run.id == run.id and again_run.recordings == 2
        second = [f.id for f in store.findings("STS-07", [again_run.id])]
        assert sorted(second) == sorted(first)
        everything = [f.id for f in store.findings("STS-07")]
        assert len(everything) == len(set(everything)) == len(first)
        assert store.count_findings("STS-07") == len(first)


def test_scan_image_records_the_scan_with_its_component_and_sbom(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["scan-image", str(CMS_IMAGE), "--format", "jsonl", "--db", str(db), "--crane", "STS-07",
            "--component", "CMS"]
    main(args)
    printed = _finding_ids(capsys.readouterr().out)
    assert printed
    with open_store(db) as store:
        (run,) = store.runs("STS-07", "scan-image")
        assert run.component == "CMS" and run.status == "complete"
        assert [(Path(i.path).resolve(), i.sha256) for i in run.inputs] == [(CMS_IMAGE.resolve(), _sha256(CMS_IMAGE))]
        assert sorted(f.id for f in store.findings("STS-07", [run.id])) == sorted(printed)
        sbom = json.loads(store.run_artifact(run.id, "sbom") or "{}")
        assert sbom.get("bomFormat") == "CycloneDX" and sbom.get("components")

    main(args)
    again = _finding_ids(capsys.readouterr().out)
    assert sorted(again) == sorted(printed)
    with open_store(db) as store:
        (again_run,) = store.runs("STS-07", "scan-image")  # the same image again replaces its run
        assert again_run.id == run.id and again_run.recordings == 2
        everything = [f.id for f in store.findings("STS-07")]
        assert len(everything) == len(set(everything)) == len(set(printed))


def test_the_gate_decides_on_what_the_commands_recorded(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan-image", str(CMS_IMAGE), "--format", "jsonl", "--db", str(db), "--crane", "STS-07",
          "--component", "CMS"])
    _analyze(db, capsys, FALSE_LOAD)
    capsys.readouterr()
    with open_store(db) as store:
        transition(store, "STS-07", "quarantined", by="test", reason="test")
        transition(store, "STS-07", "under-analysis", by="test", reason="test")
        decision = decide(store, "STS-07", who="test")
        recorded = {f.id for f in store.findings("STS-07")}
    assert decision.decision == "rejected"
    blocking = {r.finding for r in decision.reasons if r.kind == "blocking-finding"}
    assert blocking and blocking <= recorded
    assert not [r for r in decision.reasons if r.kind == "missing-evidence" and "CMS" in r.text]
    assert not [r for r in decision.reasons if r.kind == "missing-evidence" and "traffic" in r.text]


def test_without_db_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CRANEWATCH_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--crane", "STS-07",
                 "--format", "jsonl"]) == 0
    main(["scan-image", str(CMS_IMAGE), "--crane", "STS-07", "--format", "jsonl"])
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["home"]


def test_a_missing_database_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo.db"
    assert main(["analyze", str(FALSE_LOAD), "--db", str(missing), "--crane", "STS-07"]) == 2
    assert main(["scan-image", str(CMS_IMAGE), "--db", str(missing), "--crane", "STS-07"]) == 2
    assert "no such database" in capsys.readouterr().err
    assert not missing.exists()


def test_unregistered_crane_or_part_is_refused_before_the_work(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(FALSE_LOAD), "--db", str(db), "--crane", "STS-99"]) == 2
    assert "not registered" in capsys.readouterr().err
    assert main(["scan-image", str(CMS_IMAGE), "--db", str(db), "--crane", "STS-07",
                 "--component", "CMS-PC"]) == 2
    err = capsys.readouterr().err
    assert "--component CMS-PC" in err and "CMS" in err
    assert main(["analyze", str(FALSE_LOAD), "--db", str(db)]) == 2  # no --crane, no profile
    assert "--db needs --crane" in capsys.readouterr().err
    with open_store(db) as store:
        assert store.runs("STS-07") == [] and store.runs("STS-99") == []


def test_crane_defaults_to_the_profiles_crane_id(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--db", str(db)]) == 0
    capsys.readouterr()
    with open_store(db) as store:
        assert len(store.runs("STS-07", "analyze")) == 1


def test_a_capture_cut_short_is_recorded_with_a_note_and_exit_3(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(FALSE_LOAD.read_bytes()[:-37])  # the last record loses its end
    assert main(["analyze", str(cut), "--profile", str(PROFILE), "--db", str(db), "--crane", "STS-07"]) == 3
    capsys.readouterr()
    with open_store(db) as store:
        (run,) = store.runs("STS-07", "analyze")
    assert run.status == "complete" and run.note and "truncated" in run.note
    assert [i.sha256 for i in run.inputs if Path(i.path) == cut] == [_sha256(cut)]
