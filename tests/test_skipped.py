"""What a run could not check is said (issue #15): no profile, no register map, missing limits,
no baseline. Each entry is a line of the text report and a ``skipped`` record of the JSON lines;
a run given everything says nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.judging import Judging, learn_judging
from cranewatch.process.engine import config_from_profile
from cranewatch.profile import CraneProfile, load_profile, parse_profile
from cranewatch.sinks import judged_sinks
from cranewatch.skipped import SkippedCheck, skipped_checks

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
STS07 = REPO / "profiles" / "sts-07.toml"
CAPTURE = LAB / "recon" / "crane-lan.pcap"

MINIMAL = """
[crane]
id = "RTG-3"
[zones]
crane = ["172.31.4.0/24"]
[[hosts]]
name = "plc"
role = "plc"
ip = "172.31.4.2"
"""
WITH_ONE_LIMIT = MINIMAL + """
[[registers]]
table = "IR"
address = 1
name = "hoist_load"
scale = 0.1
max = 40.0
"""


def checks(profile: CraneProfile | Path | None = None,
           baseline: list[Path] | None = None) -> dict[str, SkippedCheck]:
    """What a run judged by ``profile`` (a file is loaded) and ``baseline`` (clean captures,
    learned as the command line learns them) says it could not check."""
    if isinstance(profile, Path):
        profile = load_profile(profile)
    judging = learn_judging(baseline, profile) if baseline is not None else Judging(profile)
    return {s.checks: s for s in skipped_checks(judged_sinks(judging, None))}


def test_without_profile_or_baseline_every_family_is_named() -> None:
    found = checks()
    assert list(found) == ["process", "crane-zone", "hidden-uplink", "c2", "recon", "rogue-master",
                           "lateral-movement", "new-asset"]
    assert [name for name, s in found.items() if s.partly] == ["c2", "recon"]
    assert "no register map" in str(found["process"]) and "--profile with [[registers]]" in str(found["process"])


def test_profile_and_baseline_leave_nothing_unchecked() -> None:
    if not (LAB / "normal" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    assert checks(STS07, [LAB / "normal" / "crane-lan.pcap"]) == {}


def test_a_profile_alone_lacks_only_the_baselines_tls_names() -> None:
    found = checks(STS07)
    assert list(found) == ["c2"] and found["c2"].needs == "a --baseline"


def test_a_profile_without_register_map() -> None:
    found = checks(parse_profile(MINIMAL))
    assert str(found["process"]).startswith("process: the profile has no register map")
    assert "crane-zone" not in found  # the profile gives the zone


def test_missing_limits_are_reported_as_crane_limits_missing_says() -> None:
    profile = parse_profile(WITH_ONE_LIMIT)
    # by hand: only hoist_load has a max (the rated load): the four other limits are missing
    assert config_from_profile(profile).limits.missing() == (
        "overload_limit", "wind_stop_limit", "hoist_speed_limit", "trolley_speed_limit")
    limits = checks(profile)["process-limits"]
    assert limits.missing == ("overload_limit", "wind_stop_limit", "hoist_speed_limit",
                              "trolley_speed_limit")
    assert "overload without trip" in limits.reason and "rated_load" not in limits.reason
    assert limits.to_json()["missing"] == list(limits.missing)


def test_text_and_jsonl_say_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(CAPTURE)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    start = lines.index("Not checked (8)")
    assert lines[start + 1].startswith("  process: no register map (no --profile)")
    assert lines[start + 2].startswith("  crane-zone: no crane zone")
    assert lines.index("Inputs") < start < lines.index("Hosts (6)")
    out = tmp_path / "r.jsonl"
    assert main(["analyze", str(CAPTURE), "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[:1] == ["input"] and kinds[1:9] == ["skipped"] * 8
    assert records[1] == {"type": "skipped", "checks": "process", "partly": False,
                          "reason": "no register map (no --profile): which registers are which crane "
                                    "signals is unknown, so no process check ran",
                          "needs": "a --profile with [[registers]] (cranewatch profile draft proposes one)",
                          "missing": []}


def test_everything_given_the_text_has_no_such_section(capsys: pytest.CaptureFixture[str]) -> None:
    if not (LAB / "normal" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    assert main(["analyze", str(CAPTURE), "--profile", str(STS07),
                 "--baseline", str(LAB / "normal" / "crane-lan.pcap")]) == 0
    assert "Not checked" not in capsys.readouterr().out


def test_monitor_judges_its_rolling_process_checks_like_analyze() -> None:
    from cranewatch.commands.analyze import detector_sinks
    from cranewatch.commands.monitor import judging_of, process_checks

    for profile, process_named in ((str(STS07), False), (None, True)):
        args = argparse.Namespace(profile=profile, baseline=None, crane=None, process_span=120.0,
                                  process_every=30.0)
        rolling = process_checks(args)
        loaded = judging_of(args).profile
        found = skipped_checks([*detector_sinks(loaded, None, None), *(r.make_checks() for r in rolling)])
        assert ("process" in {s.checks for s in found}) is process_named


def test_the_html_page_says_it_too(tmp_path: Path) -> None:
    out = tmp_path / "a.html"
    assert main(["analyze", str(CAPTURE), "--format", "html", "--out", str(out)]) == 0
    page = out.read_text()
    assert '<h3 id="not-checked">Not checked (8)</h3>' in page
    assert "<li><b>process</b>: no register map (no --profile)" in page
    assert "<li><b>c2</b> (partly): TLS hellos only with a baseline" in page


def test_monitor_says_it_on_stderr_and_first_in_its_json_lines(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from cranewatch.commands.analyze import detector_sinks
    from cranewatch.commands.monitor import announce_not_checked
    from cranewatch.model import Finding, Severity
    from cranewatch.monitor import JsonLinesOutput

    out = JsonLinesOutput(tmp_path / "f.jsonl")
    not_checked = skipped_checks(detector_sinks(None, None, None))
    announce_not_checked(not_checked, [out])
    out.emit(Finding(id="cw-0123456789abcdef0123", rule="r", category="recon", severity=Severity.LOW,
                     title="t", first_seen=1.0, last_seen=2.0), True)
    out.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("cranewatch: not checked: process: no register map")
    assert len(err) == len(not_checked) == 8
    records = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["skipped"] * 8 + ["finding"]
    assert records[0] == not_checked[0].to_json()
