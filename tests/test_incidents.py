"""Incidents (``cranewatch.incidents``): related findings of one cause, with stable ids.

The lab's captures were checked by hand (``cranewatch analyze`` of each with the STS-07 profile,
findings read against ``labels.json``): each attack is one incident holding its findings, the
clean captures give none. The rules themselves are checked on hand-made findings.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.detect.engine import build_sink
from cranewatch.fleet import import_fleet
from cranewatch.incidents import TIME_SLACK, group_incidents, incident_id, related
from cranewatch.model import Finding, Severity, finding_id
from cranewatch.pipeline import AnalysisResult, analyze
from cranewatch.profile import load_profile
from cranewatch.report.commissioning import build_report, report_records
from cranewatch.report.html import render_html
from cranewatch.sinks import build_sinks
from cranewatch.store import open_store
from test_detect_aggregate import dnp3_flood

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
T0 = 1_795_000_000.0
PLC, CMS, EWS = "10.20.7.10", "10.20.7.30", "10.20.0.50"


def lab_result(scenario: str) -> AnalysisResult:
    return analyze([LAB / scenario / "crane-lan.pcap"], sinks=build_sinks(load_profile(PROFILE), None, None))


@pytest.fixture(scope="module")
def lab() -> dict[str, AnalysisResult]:
    return {d.name: lab_result(d.name) for d in sorted(LAB.iterdir()) if (d / "crane-lan.pcap").exists()}


def finding(rule: str, category: str, src: str | None, dst: str | None, at: float,
            until: float | None = None, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(id=finding_id(rule, "STS-07", src, dst, at), rule=rule, category=category,
                   severity=severity, title=f"{rule} {src} → {dst}", first_seen=at,
                   last_seen=until if until is not None else at, crane="STS-07", src=src, dst=dst)


# ------------------------------------------------------------------------------ the lab

def test_the_replay_scenario_is_one_incident_holding_its_process_findings(lab: dict) -> None:
    result = lab["replay"]
    (incident,) = result.incidents
    assert len(result.findings) == 6  # replay, 2 position/speed, 3 rates
    assert set(incident.findings) == {f.id for f in result.findings}
    assert {f.rule for f in result.findings} == {"process-replay", "process-position-speed", "process-rate"}
    assert incident.severity == Severity.HIGH  # the worst member: replay and position/speed
    assert incident.title.startswith("8 sensors repeat, value for value")
    assert [s.at for s in incident.timeline] == sorted(s.at for s in incident.timeline)
    assert incident.first_seen == min(f.first_seen for f in result.findings)
    assert incident.last_seen == max(f.last_seen for f in result.findings)


# Hand-checked: per scenario, the incidents as (severity, categories of the members), most
# severe first; the attack's hosts (labels.json) are among the first incident's assets.
EXPECTED = {
    "beacon": [("high", {"c2"})],
    "dns-exfil": [("critical", {"data-leak", "c2"})],
    "false-load": [("high", {"false-reading"})],
    "ocr-exfil": [("critical", {"data-leak", "c2"})],
    "plc-restart": [("critical", {"plc-control", "rogue-master", "new-asset"})],
    # the scanner's sweep, its device-id requests and itself as a new host; the hidden modem
    # that answered the scan is a cause of its own
    "recon": [("high", {"recon", "rogue-master", "new-asset"}), ("medium", {"new-asset"})],
    "remote-ssh": [("critical", {"new-asset", "hidden-uplink", "remote-access"})],
    "replay": [("high", {"false-reading"})],
    # the new master's writes and the raised limit the process checks saw
    "rogue-master": [("critical", {"rogue-master", "safety-override", "new-asset"})],
    # the EWS's two writes and the two process checks that saw their effect
    "safety-bypass": [("critical", {"safety-override"})],
    "vendor-vnc": [("critical", {"remote-access"})],
    "wind-freeze": [("high", {"false-reading"})],
    "normal": [],
    "normal-2": [],
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_lab_capture_gives_the_incidents_checked_by_hand(lab: dict, scenario: str) -> None:
    result = lab[scenario]
    got = [(str(n.severity), {s.category for s in n.timeline}) for n in result.incidents]
    assert got == EXPECTED[scenario]
    # every finding in exactly one incident
    members = [fid for n in result.incidents for fid in n.findings]
    assert sorted(members) == sorted(f.id for f in result.findings)
    labels = json.loads((LAB / scenario / "labels.json").read_text())
    for attack in labels["attacks"]:
        if attack["category"] in ("false-reading",):
            continue  # process findings name no hosts yet
        hosts = {attack["src"], attack["dst"] if "/" in attack["dst"] else attack["dst"].rsplit(":", 1)[0]}
        assert hosts <= set(result.incidents[0].assets), (attack, result.incidents[0].assets)


def test_remote_ssh_timeline_is_the_chain_of_the_intrusion(lab: dict) -> None:
    (incident,) = lab["remote-ssh"].incidents
    assert [s.category for s in incident.timeline] == ["new-asset", "hidden-uplink", "remote-access"]
    assert incident.assets == ("10.20.7.199", "10.20.7.30", "203.0.113.10")


def test_safety_bypass_joins_the_writes_and_the_process_checks(lab: dict) -> None:
    (incident,) = lab["safety-bypass"].incidents
    rules = sorted(s.finding for s in incident.timeline)
    assert len(rules) == 4
    by_id = {f.id: f.rule for f in lab["safety-bypass"].findings}
    assert sorted(by_id[s.finding] for s in incident.timeline) == [
        "process-limit-raised", "process-safety-bypass", "safety-override", "safety-override"]


# ------------------------------------------------------------------------------ the rules

def test_two_hosts_writing_to_the_plc_are_two_incidents() -> None:
    a = finding("safety-override", "safety-override", EWS, f"{PLC}:502", T0)
    b = finding("rogue-master", "rogue-master", "10.20.7.66", f"{PLC}:502", T0 + 1)
    assert not related(a, b)
    assert len(group_incidents([a, b])) == 2


def test_one_actor_far_apart_in_time_is_two_incidents() -> None:
    a = finding("recon", "recon", "10.20.7.66", "10.20.7.0/24", T0, T0 + 10)
    near = finding("rogue-master", "rogue-master", "10.20.7.66", f"{PLC}:502", T0 + 10 + TIME_SLACK - 1)
    far = finding("rogue-master", "rogue-master", "10.20.7.66", f"{PLC}:502", T0 + 10 + TIME_SLACK + 1)
    assert related(a, near) and not related(a, far)


def test_a_process_finding_without_hosts_joins_a_write_not_an_egress() -> None:
    check = finding("process-limit-raised", "safety-override", None, None, T0 + 0.2, T0 + 20)
    write = finding("safety-override", "safety-override", EWS, f"{PLC}:502", T0)
    egress = finding("egress", "egress", CMS, "198.51.100.7:443", T0)
    assert related(check, write) and not related(check, egress)
    assert sorted(len(n.findings) for n in group_incidents([check, write, egress])) == [1, 2]


def test_forensic_findings_make_no_incident() -> None:
    image = Finding(id=finding_id("oob.ppp-peer", "STS-07", "etc/ppp/peers/lte"), rule="oob.ppp-peer",
                    category="oob-connectivity", severity=Severity.HIGH, title="LTE modem",
                    first_seen=None, last_seen=None, crane="STS-07")
    assert group_incidents([image]) == ()


def test_ids_hold_whatever_the_order_of_the_findings(lab: dict) -> None:
    findings = list(lab["remote-ssh"].findings) + list(lab["rogue-master"].findings)
    first = group_incidents(findings)
    shuffled = findings[:]
    random.Random(4).shuffle(shuffled)
    assert group_incidents(shuffled) == first
    assert group_incidents(list(reversed(findings))) == first
    (n,) = lab["remote-ssh"].incidents
    assert n.id == incident_id("STS-07", n.findings)
    # another crane, other ids
    other = group_incidents([replace(f, crane="STS-08") for f in lab["remote-ssh"].findings])
    assert other[0].id != n.id


def test_ids_hold_whatever_the_order_of_the_captures() -> None:
    # The network detectors only: two scenarios' sensor values glued together jump at the seam.
    captures = [LAB / "remote-ssh" / "crane-lan.pcap", LAB / "vendor-vnc" / "crane-lan.pcap"]
    one = analyze(captures, sinks=[build_sink(load_profile(PROFILE), None, None)])
    two = analyze(list(reversed(captures)), sinks=[build_sink(load_profile(PROFILE), None, None)])
    assert [n.id for n in one.incidents] == [n.id for n in two.incidents]
    assert [n.findings for n in one.incidents] == [n.findings for n in two.incidents]
    # The same outside host 203.0.113.10 opened the SSH session (02:00:15.6) and, 58.4 s later,
    # the VNC session (02:01:14.05): within the slack, one actor, one incident of four findings.
    (incident,) = one.incidents
    assert [s.category for s in incident.timeline] == ["new-asset", "hidden-uplink", "remote-access",
                                                        "remote-access"]


def test_a_flood_of_outside_peers_is_one_incident_whatever_the_peer_order(tmp_path: Path) -> None:
    ordered = analyze([dnp3_flood(tmp_path / "a.pcap", 60)], sinks=[build_sink(None, None, "RTU-1")])
    shuffled = analyze([dnp3_flood(tmp_path / "b.pcap", 60, order_seed=9)], sinks=[build_sink(None, None, "RTU-1")])
    (a,), (b,) = ordered.incidents, shuffled.incidents
    assert a.id == b.id and a.findings == b.findings
    assert len(a.findings) == 1 and "reached from 60 outside hosts" in a.title


# ------------------------------------------------------------------------------ the outputs

def test_incidents_lead_the_text_and_html_and_come_first_in_json_lines(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(LAB / "remote-ssh" / "crane-lan.pcap")
    assert main(["analyze", capture, "--profile", str(PROFILE)]) == 0
    text = capsys.readouterr().out
    assert text.index("Incidents (1)") < text.index("Inputs") < text.index("Findings (3")
    assert "  CRITICAL 10.20.7.199 carries traffic between cms and outside host 203.0.113.10" in text
    out = tmp_path / "r.jsonl"
    assert main(["analyze", capture, "--profile", str(PROFILE), "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds.count("incident") == 1 and kinds.index("incident") < kinds.index("finding")
    incident = records[kinds.index("incident")]
    assert sorted(incident["findings"]) == sorted(r["id"] for r in records if r["type"] == "finding")
    assert incident["severity"] == "critical" and incident["first_seen"].startswith("2026-11-26T02:00:15.")
    page = tmp_path / "r.html"
    assert main(["analyze", capture, "--profile", str(PROFILE), "--format", "html", "--out", str(page)]) == 0
    html = page.read_text()
    assert html.index('<section id="incidents">') < html.index('<section id="inputs">')
    for fid in incident["findings"]:  # each step links to its finding on the page
        assert f'href="#{fid}"' in html and f'id="{fid}"' in html


def test_the_commissioning_report_lists_the_incidents(tmp_path: Path, lab: dict) -> None:
    findings = list(lab["remote-ssh"].findings)
    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml", by="ana")
        store.record_run("STS-07", "analyze", [LAB / "remote-ssh" / "crane-lan.pcap"], findings)
        report = build_report(store, "STS-07")
    (incident,) = report.incidents
    assert incident.id == lab["remote-ssh"].incidents[0].id
    records = report_records(report)
    assert [r["id"] for r in records if r["type"] == "incident"] == [incident.id]
    html = render_html(report)
    assert html.index('<section id="incidents">') < html.index('<section id="findings"')
    assert incident.id in html


def test_analyze_with_a_db_stores_the_incidents_of_the_run(tmp_path: Path, lab: dict,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cw.db"
    with open_store(db) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml", by="ana")
    capture = str(LAB / "remote-ssh" / "crane-lan.pcap")
    for _ in range(2):  # the same capture recorded again replaces its run, incidents included
        assert main(["analyze", capture, "--profile", str(PROFILE), "--db", str(db), "--crane", "STS-07"]) == 0
    capsys.readouterr()
    with open_store(db) as store:
        assert "0006_incidents" in store.applied_migrations()
        (run,) = store.runs("STS-07", "analyze")
        stored = store.incidents("STS-07")
        assert store.incidents("STS-07", [run.id]) == stored
        assert store.incidents("STS-07", [run.id + 1]) == []
    assert stored == list(lab["remote-ssh"].incidents)  # the record read back is the same incident


def test_process_findings_naming_their_device_group_as_before(lab: dict) -> None:
    """When the process checks name the device (src, the PLC) and the reader (dst, the CMS), the
    replay is still one incident, and a beacon from the CMS at the same time is not in it: the
    reader of false values is not their cause."""
    named = [replace(f, src=PLC, dst=CMS) for f in lab["replay"].findings]
    at = min(f.first_seen for f in named)
    beacon = finding("c2", "c2", CMS, "203.0.113.80:443", at, at + 10)
    incidents = group_incidents([*named, beacon])
    assert sorted(len(n.findings) for n in incidents) == [1, 6]
    write = finding("safety-override", "safety-override", EWS, f"{PLC}:502", at - 1)
    (joined,) = [n for n in group_incidents([*named, write]) if len(n.findings) > 1]
    assert len(joined.findings) == 7 and set(joined.assets) == {EWS, PLC, CMS}


def _pairwise(findings: list[Finding]) -> set[frozenset[str]]:
    """Incidents by the definition: join every related pair (all pairs looked at)."""
    groups = {f.id: {f.id} for f in findings}
    for a in findings:
        for b in findings:
            if a.id < b.id and related(a, b) and groups[a.id] is not groups[b.id]:
                merged = groups[a.id] | groups[b.id]
                for fid in merged:
                    groups[fid] = merged
    return {frozenset(g) for g in groups.values()}


def test_the_grouping_is_that_of_every_related_pair() -> None:
    """Random findings over a few hosts and times (fixed seeds): the sweep gives the incidents
    that joining every related pair gives."""
    hosts = ["10.20.7.10", "10.20.7.30", "10.20.0.50", "10.20.7.66", "203.0.113.10", None]
    kinds = [("egress", "egress"), ("rogue-master", "rogue-master"), ("c2", "c2"),
             ("safety-override", "safety-override"), ("process-rate", "false-reading"),
             ("process-frozen", "false-reading")]
    joined = 0
    for seed in range(40):
        rng = random.Random(seed)
        findings = []
        for n in range(rng.randint(1, 25)):
            rule, category = rng.choice(kinds)
            src, dst = rng.choice(hosts), rng.choice(hosts)
            at = T0 + rng.uniform(0, 600)
            f = finding(rule, category, src, dst and f"{dst}:502", at, at + rng.uniform(0, 90))
            if rng.random() < 0.05:  # no time: close to any other
                f = replace(f, first_seen=None, last_seen=None)
            findings.append(replace(f, id=finding_id("t", None, seed, n)))
        got = {frozenset(n.findings) for n in group_incidents(findings)}
        assert got == _pairwise(findings), seed
        joined += len(findings) - len(got)
    assert joined > 100  # the cases do join findings, not only leave them alone


def test_thousands_of_findings_on_one_host_group_fast() -> None:
    import time

    findings = [finding("safety-override", "safety-override", "10.0.0.1", f"10.1.{i // 250}.{i % 250}:502",
                        T0 + 100 * i) for i in range(3000)]
    started = time.perf_counter()
    incidents = group_incidents(findings)
    assert time.perf_counter() - started < 2.0  # pairwise: ~20 s on this machine
    assert len(incidents) == 3000  # 100 s apart, beyond the 60 s slack: none joins
    near = [replace(f, first_seen=T0 + 30 * i, last_seen=T0 + 30 * i) for i, f in enumerate(findings)]
    (chain,) = group_incidents(near)  # 30 s apart: one chain
    assert len(chain.findings) == 3000
