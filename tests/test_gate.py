"""Gate: decisions from recorded evidence, the reasons, the policy, and the life-cycle move."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.errors import InputError
from cranewatch.fleet import import_fleet, transition
from cranewatch.gate import (
    GatePolicy,
    analyze_and_record,
    decide,
    load_gate_policy,
    scan_and_record,
)
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import Component, Coverage, Crane, ObservedHost, Store, open_store

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"


def finding(rule: str, category: str, severity: Severity, title: str, key: str = "x") -> Finding:
    return Finding(id=finding_id(rule, "STS-07", key), rule=rule, category=category, severity=severity,
                   title=title, first_seen=None, last_seen=None, crane="STS-07",
                   evidence=(Evidence(path="etc/x", line=3, excerpt="x"),), remedy="fix it")


@pytest.fixture
def store(store_at: str) -> Iterator[Store]:
    s = open_store(store_at)
    s.add_crane(Crane("STS-07", profile_path=str(PROFILE), zone="10.20.7.0/24",
                      components=(Component("CMS", "cms", ip="10.20.7.30"), Component("OCR", "ocr", ip="10.20.7.20"),
                                  Component("PLC", "plc", ip="10.20.7.10")),
                      state="under-analysis"), who="setup", why="test")
    yield s
    s.close()


# the quarantine traffic saw the three registered parts (and nothing else of the crane zone)
SEEN = Coverage(("network", "process"), tuple(ObservedHost(None, (ip,)) for ip in ("10.20.7.10", "10.20.7.20",
                                                                                     "10.20.7.30")))


def full_evidence(store: Store, *extra: Finding) -> None:
    store.record_run("STS-07", "scan-image", [], list(extra), component="CMS", coverage=Coverage(("image",)))
    store.record_run("STS-07", "scan-image", [], [], component="OCR", coverage=Coverage(("image",)))
    store.record_run("STS-07", "analyze", [], [], coverage=SEEN)


def texts(decision: object) -> list[str]:
    return [r.text for r in decision.reasons]  # type: ignore[attr-defined]


def test_no_evidence_needs_review_and_says_what_is_missing(store: Store) -> None:
    decision = decide(store, "STS-07")
    assert decision.decision == "needs-review"
    assert texts(decision) == [
        "no image scan recorded for CMS",
        "no image scan recorded for OCR",
        "no analysis of traffic recorded in quarantine for STS-07",
    ]
    crane = store.crane("STS-07")
    assert crane is not None and crane.state == "under-analysis"  # needs-review does not move it
    assert store.latest_gate("STS-07") is not None


def test_clean_evidence_clears_and_opens_the_way_to_service(store: Store) -> None:
    full_evidence(store, finding("weak.banner", "weak-config", Severity.LOW, "login banner names the vendor"))
    decision = decide(store, "STS-07", who="ana")
    assert decision.decision == "cleared" and decision.reasons == ()
    assert decision.state_change == "under-analysis → cleared"
    last = store.history("STS-07")[-1]
    assert (last.who, last.to_state) == ("cranewatch gate (ana)", "cleared")
    assert transition(store, "STS-07", "in-service", reason="cleared by the gate").to_state == "in-service"


def test_a_high_finding_rejects_with_the_finding_named(store: Store) -> None:
    bad = finding("ssh.permit-root-login", "weak-config", Severity.HIGH, "root login over SSH allowed")
    full_evidence(store, bad)
    decision = decide(store, "STS-07")
    assert decision.decision == "rejected"
    (reason,) = decision.reasons
    assert (reason.kind, reason.finding, reason.severity) == ("blocking-finding", bad.id, "high")
    assert reason.text == "high weak-config: root login over SSH allowed"
    assert reason.source is not None and reason.source.startswith("image scan of CMS (run ")
    assert decision.state_change == "under-analysis → rejected"
    assert [f.id for f in decision.findings] == [bad.id]


@pytest.mark.parametrize("category", ["oob-connectivity", "hidden-uplink", "remote-access-tool", "remote-access"])
def test_always_blocking_categories_block_whatever_their_severity(store: Store, category: str) -> None:
    full_evidence(store, finding("r", category, Severity.LOW, "a low one"))
    decision = decide(store, "STS-07")
    assert decision.decision == "rejected"
    assert decision.reasons[0].text == f"{category} always blocks: a low one"


def test_a_medium_finding_and_missing_evidence_need_review_together(store: Store) -> None:
    store.record_run("STS-07", "scan-image", [], [finding("c", "credential", Severity.MEDIUM, "vendor key")],
                     component="CMS")
    decision = decide(store, "STS-07")
    assert decision.decision == "needs-review"
    assert [r.kind for r in decision.reasons] == ["review-finding", "missing-evidence", "missing-evidence"]


def test_a_killed_run_needs_review_until_it_is_rerun(store: Store) -> None:
    full_evidence(store)
    store.begin_run("STS-07", "scan-image", component="CMS")  # never finishes: killed
    decision = decide(store, "STS-07", move=False)
    assert decision.decision == "needs-review"
    assert texts(decision)[0].startswith("image scan of CMS (run 4) did not complete (running")
    store.record_run("STS-07", "scan-image", [], [], component="CMS")
    assert decide(store, "STS-07").decision == "cleared"


def test_a_registered_modem_and_a_broken_profile_are_reasons(store: Store, tmp_path: Path) -> None:
    full_evidence(store)
    broken = tmp_path / "broken.toml"
    broken.write_text('[crane]\nid = "STS-07"\n')
    crane = store.crane("STS-07")
    assert crane is not None
    store.update_crane_facts(replace(crane, profile_path=str(broken),
                                     components=(*crane.components, Component("MODEM-1", "modem"))))
    decision = decide(store, "STS-07")
    assert decision.decision == "needs-review"
    assert texts(decision)[0].startswith("MODEM-1 (modem) is registered on the crane")
    assert texts(decision)[1].startswith("the profile of STS-07 does not load")


def test_policy_from_toml_changes_what_blocks(store: Store, tmp_path: Path) -> None:
    full_evidence(store, finding("h", "weak-config", Severity.HIGH, "a high one"),
                  finding("r", "remote-access-tool", Severity.LOW, "a tool", key="y"))
    policy_file = tmp_path / "gate.toml"
    policy_file.write_text('[gate]\nblock_severity = "critical"\nalways_block = []\n'
                           'required_evidence = ["image-scan"]\n')
    policy = load_gate_policy(policy_file)
    assert policy == GatePolicy(block_severity=Severity.CRITICAL, always_block=frozenset(),
                                required_evidence=("image-scan",))
    decision = decide(store, "STS-07", policy)
    assert decision.decision == "needs-review"  # the high one only needs review now
    assert [r.kind for r in decision.reasons] == ["review-finding"]
    policy_file.write_text('block_severity = "severe"\n')
    with pytest.raises(InputError, match="unknown severity"):
        load_gate_policy(policy_file)
    policy_file.write_text('blocks = "high"\n')
    with pytest.raises(InputError, match="unknown gate policy keys"):
        load_gate_policy(policy_file)


def test_real_image_scans_through_the_gate(tmp_path: Path, store_at: str) -> None:
    """The forensic scanner's own findings on planted artefacts reach the gate and reject."""
    cms = tmp_path / "cms-root"
    (cms / "etc/NetworkManager/system-connections").mkdir(parents=True)
    (cms / "etc/NetworkManager/system-connections/lte.nmconnection").write_text(
        "[connection]\nid=lte\ntype=gsm\n\n[gsm]\napn=m2m.example-carrier.net\n")
    (cms / "etc/hostname").write_text("cms\n")
    ocr = tmp_path / "ocr-root"
    (ocr / "etc").mkdir(parents=True)
    (ocr / "etc/hostname").write_text("ocr\n")
    with open_store(store_at) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml")
        for state in ("quarantined", "under-analysis"):
            transition(store, "STS-07", state, reason="test")
        scan_and_record(store, "STS-07", cms, component="CMS")
        scan_and_record(store, "STS-07", ocr, component="OCR")
        store.record_run("STS-07", "analyze", [], [])
        decision = decide(store, "STS-07")
        assert decision.decision == "rejected"
        blocking = [r for r in decision.reasons if r.kind == "blocking-finding"]
        assert any(r.category == "oob-connectivity" and "m2m.example-carrier.net" in r.text for r in blocking)
        assert all(r.source and "CMS" in r.source for r in blocking)
        runs = store.runs("STS-07", "scan-image")
        assert runs[0].inputs[0].path == str(cms) and len(runs[0].inputs[0].sha256) == 64
        assert store.run_artifact(runs[0].id, "sbom") is not None
        crane = store.crane("STS-07")
        assert crane is not None and crane.state == "rejected"


def test_cli_gate(store: Store, store_at: str, capsys: pytest.CaptureFixture[str]) -> None:
    full_evidence(store, finding("r", "remote-access-tool", Severity.CRITICAL, "TeamViewer-like agent"))
    db = store_at
    assert main(["gate", "STS-07", "--db", db, "--exit-code"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("STS-07: REJECTED\n  blocking findings:\n    - critical remote-access-tool: TeamViewer-like agent")
    assert "life cycle: under-analysis → rejected" in out
    assert main(["gate", "STS-07", "--db", db, "--format", "json"]) == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "rejected" and doc["state_change"].startswith("life cycle unchanged")


LAB_SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"

KILLED_ANALYSIS = """
import sys
from cranewatch.store import open_store
from cranewatch.gate import analyze_and_record
store = open_store(sys.argv[1])
analyze_and_record(store, "STS-07", [sys.argv[2], sys.argv[2]], profile=sys.argv[3])
print("finished", flush=True)
"""


def test_real_quarantine_analysis_killed_rerun_and_repeated(tmp_path: Path) -> None:
    """The real pipeline and detectors: SIGKILL mid-analysis leaves no findings; re-runs agree."""
    import os
    import signal
    import subprocess
    import sys
    import time

    if not LAB_SSH.is_file():
        pytest.skip("lab capture remote-ssh not built in this checkout")
    db = tmp_path / "cw.db"
    with open_store(db) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml")
    child = subprocess.Popen([sys.executable, "-c", KILLED_ANALYSIS, str(db), str(LAB_SSH), str(PROFILE)],
                             stdout=subprocess.PIPE, text=True)
    with open_store(db) as store:
        deadline = time.monotonic() + 60
        while not store.runs("STS-07") and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        out = child.communicate(timeout=30)[0]
        (killed,) = store.runs("STS-07")
        assert "finished" not in out and killed.status == "running"
        assert store.count_findings("STS-07") == 0
        # the capture and the profile it is judged by, each hashed before the work
        assert sorted(Path(i.path).name for i in killed.inputs) == [LAB_SSH.name, PROFILE.name]
        assert all(len(i.sha256) == 64 for i in killed.inputs)

        first = analyze_and_record(store, "STS-07", [LAB_SSH], profile=str(PROFILE))
        second = analyze_and_record(store, "STS-07", [LAB_SSH], profile=str(PROFILE))
        ids_first = sorted(f.id for f in store.findings("STS-07", [first]))
        ids_second = sorted(f.id for f in store.findings("STS-07", [second]))
        assert ids_first == ids_second and ids_first
        # the same capture judged by the same profile again replaces its run: one run, two recordings
        assert second == first and store.run(first).recordings == 2  # type: ignore[union-attr]
        assert store.count_findings("STS-07") == len(ids_first)  # no duplicates
        remote = [f for f in store.current_findings("STS-07") if f.category == "remote-access"]
        assert remote and remote[0].dst is not None and remote[0].dst.endswith(":22")

        transition(store, "STS-07", "quarantined", reason="test")
        transition(store, "STS-07", "under-analysis", reason="test")
        decision = decide(store, "STS-07")
        assert decision.decision == "rejected"
        assert any(r.category == "remote-access" and r.kind == "blocking-finding" for r in decision.reasons)
        # the killed run no longer counts: a complete analysis came after it
        assert not any(r.kind == "incomplete-run" for r in decision.reasons)


def test_profile_review_flags_parts_the_profile_does_not_know(store: Store, tmp_path: Path) -> None:
    full_evidence(store)
    crane = store.crane("STS-07")
    assert crane is not None
    store.update_crane_facts(replace(crane, components=(*crane.components,
                                                        Component("CAM-9", "camera", ip="10.20.7.99"))))
    decision = decide(store, "STS-07")
    assert decision.decision == "needs-review"
    assert texts(decision) == [
        "CAM-9 (10.20.7.99) is not a host of the profile",
        "CAM-9 (camera, 10.20.7.99) is registered but never seen in the quarantine traffic: is it connected, "
        "and was the capture taken where its traffic passes?"]
    profile = tmp_path / "with-macs.toml"
    profile.write_text(PROFILE.read_text().replace('ip = "10.20.7.30"', 'ip = "10.20.7.30"\nmac = "02:00:5e:10:07:1e"'))
    store.update_crane_facts(replace(crane, profile_path=str(profile), components=(
        Component("CMS", "cms", mac="02:00:5e:99:99:99", ip="10.20.7.30"), Component("OCR", "ocr", ip="10.20.7.20"))))
    assert texts(decide(store, "STS-07")) == [
        "CMS has MAC 02:00:5e:99:99:99 but the profile's cms has 02:00:5e:10:07:1e",
        # the PLC is no longer registered, but the quarantine traffic saw it
        "10.20.7.10 was seen in the quarantine traffic inside the crane zone 10.20.7.0/24 but is not a "
        "registered part of STS-07"]


def test_cli_gate_records_images_and_captures_first(tmp_path: Path, store_at: str, capsys: pytest.CaptureFixture[str]) -> None:
    if not LAB_SSH.is_file():
        pytest.skip("lab capture remote-ssh not built in this checkout")
    db = store_at
    cms = tmp_path / "cms"
    (cms / "etc").mkdir(parents=True)
    (cms / "etc/hostname").write_text("cms\n")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    for state in ("quarantined", "under-analysis"):
        assert main(["fleet", "set-state", "STS-07", state, "--reason", "test", "--db", db]) == 0
    capsys.readouterr()
    assert main(["gate", "STS-07", "--db", db, "--image", f"CMS={cms}", "--image", f"OCR={cms}",
                 "--capture", str(LAB_SSH), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "recorded image scan of CMS: run 1" in captured.err
    assert "recorded quarantine traffic analysis: run 3" in captured.err
    import json
    doc = json.loads(captured.out)
    assert doc["decision"] == "rejected" and doc["state_change"] == "under-analysis → rejected"
    assert not any(r["kind"] == "missing-evidence" for r in doc["reasons"])
    assert any(r["category"] == "remote-access" for r in doc["reasons"] if r["kind"] == "blocking-finding")
    assert main(["gate", "STS-07", "--db", db, "--image", "CMS"]) == 2


def test_the_recorded_decision_keeps_its_policy(store: Store) -> None:
    from cranewatch.gate import latest_decision, policy_from_json

    custom = GatePolicy(block_severity=Severity.CRITICAL, review_severity=None, always_block=frozenset({"c2"}),
                        required_evidence=("profile",), image_scan_kinds=("plc",), review_component_kinds=())
    assert policy_from_json(custom.to_json()) == custom
    assert policy_from_json(GatePolicy().to_json()) == GatePolicy()
    decide(store, "STS-07", custom)
    recorded = latest_decision(store, "STS-07")
    assert recorded is not None and recorded.policy == custom and recorded.decision == "cleared"


LAB_NORMAL = REPO / "src" / "cranewatch" / "data" / "lab" / "normal" / "crane-lan.pcap"


def test_baseline_review_against_the_profile(store: Store) -> None:
    from cranewatch.baseline import Baseline

    full_evidence(store)
    learned = Baseline(pairs=frozenset({("10.20.7.30", "203.0.113.40", 443), ("10.20.7.20", "10.20.0.6", 1883)}),
                       protocols=frozenset({("203.0.113.40", 443, "tls"), ("10.20.0.6", 1883, "mqtt")}))
    decision = decide(store, "STS-07", move=False, baseline=learned)
    assert decision.decision == "needs-review"
    assert texts(decision) == [
        "the baseline saw 10.20.7.30 → 203.0.113.40:443 (tls), which the profile does not allow"]
    if LAB_NORMAL.is_file():  # the lab's clean capture, learned for real, stays within the profile
        assert decide(store, "STS-07", baseline=[LAB_NORMAL]).decision == "cleared"


@pytest.mark.parametrize("policy", [
    GatePolicy(),
    GatePolicy(block_severity=Severity.CRITICAL, review_severity=None, always_block=frozenset(),
               required_evidence=("profile",), image_scan_kinds=("plc", "cms"), review_component_kinds=()),
])
def test_printed_policy_loads_back_the_same(policy: GatePolicy, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from cranewatch.gate import policy_to_toml

    path = tmp_path / "gate.toml"
    path.write_text(policy_to_toml(policy))
    assert load_gate_policy(path) == policy
    assert main(["gate", "--print-policy", "--policy", str(path)]) == 0
    assert capsys.readouterr().out == policy_to_toml(policy)
