"""The lab's labelled captures (src/cranewatch/data/lab/): every network attack reported with
its category, source and destination, first seen inside the labelled window; normal-2 quiet.

``normal`` is the baseline. The profile is STS-07's with the EWS maintenance window moved to
a date long past, so the result does not depend on the weekday the lab data was made.
Process attacks (``false-reading``) belong to the process checks and are not judged here.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cranewatch.baseline import Baseline, learn_baseline
from cranewatch.detect.engine import build_sink
from cranewatch.model import Finding, Severity
from cranewatch.pipeline import analyze
from cranewatch.profile import CraneProfile, MaintenanceWindow, load_profile

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
NETWORK_CATEGORIES = {"hidden-uplink", "remote-access", "data-leak", "c2", "egress", "safety-override",
                      "plc-control", "recon", "rogue-master", "new-asset"}


def scenarios() -> list[str]:
    if not LAB.is_dir():
        return []
    return sorted(d.name for d in LAB.iterdir()
                  if (d / "labels.json").exists() and (d / "crane-lan.pcap").exists()
                  and d.name not in ("normal", "normal-2"))


def labels(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LAB / name / "labels.json").read_text())
    return data


@cache
def baseline() -> Baseline:
    if not (LAB / "normal" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    return learn_baseline([LAB / "normal" / "crane-lan.pcap"])


@cache
def profile() -> CraneProfile:
    past = MaintenanceWindow(("ews",), start_at=datetime(2020, 1, 7, 6, tzinfo=UTC),
                             end_at=datetime(2020, 1, 7, 10, tzinfo=UTC))
    return replace(load_profile(REPO / "profiles" / "sts-07.toml"), maintenance=(past,))


def host(endpoint: str | None) -> str:
    if not endpoint:
        return ""
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def same_end(label_end: str, finding_end: str | None, label: dict[str, Any], macs: dict[str, str],
             f: Finding) -> bool:
    if "/" in label_end:
        if not finding_end:
            return False
        net = ipaddress.ip_network(label_end)
        if "/" in finding_end:
            return ipaddress.ip_network(finding_end).subnet_of(net)  # type: ignore[arg-type]
        return ipaddress.ip_address(host(finding_end)) in net
    if host(finding_end) == host(label_end):
        return ":" not in label_end or finding_end == label_end
    # A router the capture names only by its MAC (no ARP seen): the label's host list says
    # which address that MAC belongs to.
    next_hop = f.evidence[0].values.get("next_hop_mac") if f.evidence else None
    return next_hop is not None and macs.get(next_hop) == host(label_end)


# Without a profile nothing is a safety point (issue #15): the labelled safety override is then
# the write it is, a plc-control finding of the same writer and PLC.
WITHOUT_PROFILE = {"safety-override": "plc-control"}


def found(attack: dict[str, Any], findings: list[Finding], macs: dict[str, str],
          profile: bool = True) -> list[Finding]:
    category = attack["category"] if profile else WITHOUT_PROFILE.get(attack["category"], attack["category"])
    return [f for f in findings if f.category == category
            and same_end(attack["src"], f.src, attack, macs, f)
            and same_end(attack["dst"], f.dst, attack, macs, f)]


def run(name: str, with_profile: bool, with_baseline: bool = True) -> list[Finding]:
    sink = build_sink(profile() if with_profile else None, baseline() if with_baseline else None)
    return list(analyze([LAB / name / "crane-lan.pcap"], sinks=[sink]).findings)


@pytest.mark.parametrize(("with_profile", "with_baseline"), [(True, True), (False, True), (True, False)],
                         ids=["profile+baseline", "baseline", "profile"])
@pytest.mark.parametrize("scenario", scenarios())
def test_every_labelled_attack_is_reported(scenario: str, with_profile: bool, with_baseline: bool) -> None:
    truth = labels(scenario)
    macs = {h["mac"]: h["ip"] for h in truth["hosts"] if h.get("mac")}
    findings = run(scenario, with_profile, with_baseline)
    attacks = [a for a in truth["attacks"] if a["category"] in NETWORK_CATEGORIES]
    for attack in attacks:
        hits = found(attack, findings, macs, with_profile)
        assert hits, (attack["name"], [(f.category, f.src, f.dst, f.title) for f in findings])
        first = min(f.first_seen or 0 for f in hits)
        assert attack["start"] - 0.5 <= first <= attack["end"] + 0.5, (attack["name"], first, attack)


@pytest.mark.parametrize("with_profile", [True, False], ids=["profile+baseline", "baseline"])
def test_normal_2_against_the_normal_baseline_is_quiet(with_profile: bool) -> None:
    if not (LAB / "normal-2" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    loud = [(f.category, f.title) for f in run("normal-2", with_profile) if f.severity >= Severity.MEDIUM]
    assert loud == []


def test_analyze_command_with_saved_baseline_and_profile(tmp_path: Path) -> None:
    import subprocess
    import sys

    pytest.importorskip("cranewatch.commands.analyze")
    if not (LAB / "remote-ssh" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    exe = [sys.executable, "-m", "cranewatch"]
    saved = tmp_path / "sts-07.baseline.json"
    learned = subprocess.run([*exe, "baseline", str(LAB / "normal" / "crane-lan.pcap"), "--out", str(saved)],
                             capture_output=True, text=True)
    assert learned.returncode == 0, learned.stderr
    for baseline_arg in (saved, LAB / "normal" / "crane-lan.pcap"):  # a saved baseline or captures
        done = subprocess.run([*exe, "analyze", str(LAB / "remote-ssh" / "crane-lan.pcap"),
                               "--profile", str(REPO / "profiles" / "sts-07.toml"),
                               "--baseline", str(baseline_arg), "--format", "jsonl", "--fail-on", "high"],
                              capture_output=True, text=True)
        assert done.returncode == 1, done.stderr  # --fail-on high met
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        found = {(o["category"], o["src"], o["dst"]) for o in lines if o.get("type") == "finding"}
        assert ("remote-access", "203.0.113.10", "10.20.7.30:22") in found
        assert all(o["crane"] == "STS-07" for o in lines if o.get("type") == "finding")
