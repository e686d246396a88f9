"""The Finding contract of DESIGN.md and the located errors."""

from __future__ import annotations

import json

import pytest

from cranewatch.errors import CaptureError, Location, ProfileError
from cranewatch.model import Evidence, Finding, Severity, finding_id


def _finding() -> Finding:
    return Finding(
        id=finding_id("safety-write", "STS-07", "10.20.7.99", "10.20.7.10:502", "CO0"),
        rule="safety-write",
        category="safety-override",
        severity=Severity.CRITICAL,
        title="safety_bypass set to 1 by 10.20.7.99",
        first_seen=1_700_000_000.5,
        last_seen=1_700_000_010.25,
        count=3,
        crane="STS-07",
        src="10.20.7.99",
        dst="10.20.7.10:502",
        technique=("T0836", "T0880"),
        evidence=(Evidence(source="a.pcap", frames=(7, 9), times=(1_700_000_000.5,), values={"coil": 0}),),
        remedy="Reset safety_bypass and find who wrote it.",
    )


def test_finding_json_has_every_contract_field_in_utc() -> None:
    obj = _finding().to_json()
    for key in ("id", "rule", "category", "severity", "crane", "title", "first_seen", "last_seen",
                "count", "src", "dst", "technique", "evidence", "remedy"):
        assert key in obj
    assert obj["severity"] == "critical"
    assert obj["first_seen"] == "2023-11-14T22:13:20.500000Z"
    assert obj["evidence"][0]["frames"] == [7, 9]
    json.dumps(obj)  # must serialise without custom encoders


def test_finding_round_trips_through_json() -> None:
    original = _finding()
    again = Finding.from_json(json.loads(json.dumps(original.to_json())))
    assert again == original


def test_finding_id_is_stable_and_depends_on_the_incident_key() -> None:
    a = finding_id("r", "STS-07", "10.0.0.1", "10.0.0.2")
    assert a == finding_id("r", "STS-07", "10.0.0.1", "10.0.0.2")
    assert a != finding_id("r", "STS-07", "10.0.0.1", "10.0.0.3")
    assert a != finding_id("r", "STS-08", "10.0.0.1", "10.0.0.2")


def test_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError, match="category"):
        Finding(id="x", rule="r", category="weird", severity=Severity.LOW, title="t",
                first_seen=None, last_seen=None)


def test_severity_orders_and_parses() -> None:
    assert Severity.parse("High") > Severity.MEDIUM
    with pytest.raises(ValueError, match="expected"):
        Severity.parse("urgent")


def test_errors_name_their_location() -> None:
    err = CaptureError("truncated record", Location(file="x.pcap", frame=12, offset=4096))
    assert str(err) == "x.pcap frame 12 (byte 4096): truncated record"
    perr = ProfileError("2 problems", Location(file="p.toml"),
                        [ProfileError("bad ip", Location(file="p.toml", line=4))])
    assert "p.toml:4: bad ip" in str(perr)


def test_instants_among_evidence_values_are_iso_8601_utc_when_serialised_and_shown() -> None:
    from cranewatch.commands.demo import evidence_line
    from cranewatch.report.html import shown_values

    # `date -u -d @1795658685.2169192` gives 2026-11-26T02:04:45.216919
    evidence = Evidence(source="lab/replay/crane-lan.pcap", frames=(7,),
                        values={"onset": 1795658685.2169192, "detected": 1795658686,
                                "replayed_from": 1795658675.0, "replay_lag_s": 10.0,
                                "signal": "hoist_load"})
    assert evidence.values["onset"] == 1795658685.2169192  # in memory the checks compute with it
    values = evidence.to_json()["values"]
    assert values == {"onset": "2026-11-26T02:04:45.216919Z", "detected": "2026-11-26T02:04:46.000000Z",
                      "replayed_from": "2026-11-26T02:04:35.000000Z", "replay_lag_s": 10.0,
                      "signal": "hoist_load"}
    # read back from JSON (the store) and written again: unchanged
    finding = Finding.from_json({**_finding().to_json(), "evidence": [evidence.to_json()]})
    assert finding.evidence[0].to_json()["values"] == values
    assert dict(shown_values(evidence.values))["onset"] == "2026-11-26T02:04:45.216919Z"
    assert dict(shown_values(finding.evidence[0].values))["onset"] == "2026-11-26T02:04:45.216919Z"
    assert "replayed_from=2026-11-26T02:04:35.000000Z" in evidence_line(evidence)
    assert "1795658" not in evidence_line(evidence)
