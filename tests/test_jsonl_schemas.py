"""Every JSON-lines record matches the JSON Schema of its ``type``
(``src/cranewatch/data/schemas/*.schema.json``, described in docs/jsonl.md); a record of a type
without a schema fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cranewatch.cli import main
from cranewatch.model import CATEGORIES, Severity
from cranewatch.report.jsonl import schemas

REPO = Path(__file__).resolve().parents[1]
PROFILE = str(REPO / "profiles" / "sts-07.toml")
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
CAPTURES = sorted(LAB.glob("*/crane-lan.pcap"))
IMAGE = REPO / "src" / "cranewatch" / "data" / "images" / "sts07-cms.tar.gz"
SCHEMA_DIR = REPO / "src" / "cranewatch" / "data" / "schemas"
# types that other parts are adding; their schemas fix only the type for now
OPEN_TYPES = {"problem", "audit"}

SCHEMAS = schemas()
VALIDATORS = {t: jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())
              for t, s in SCHEMAS.items()}


def problems(lines: list[str]) -> list[str]:
    """Every line that is not one JSON object valid against the schema of its type."""
    found = []
    for number, line in enumerate(lines, 1):
        record: Any = json.loads(line)
        kind = record.get("type") if isinstance(record, dict) else None
        validator = VALIDATORS.get(kind)  # type: ignore[arg-type]
        if validator is None:
            found.append(f"line {number}: no schema for record type {kind!r}")
            continue
        found += [f"line {number} ({kind}) {'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(record)]
    return found


def jsonl_of(argv: list[str], tmp_path: Path, code: int = 0) -> list[str]:
    out = tmp_path / "out.jsonl"
    assert main([*argv, "--format", "jsonl", "--out", str(out)]) == code
    return out.read_text(encoding="utf-8").splitlines()


def test_one_valid_schema_file_per_type() -> None:
    files = sorted(SCHEMA_DIR.glob("*.schema.json"))
    assert {f.name.removesuffix(".schema.json") for f in files} == set(SCHEMAS)
    assert {"input", "host", "flow-summary", "modbus-master", "modbus-slave", "profinet-stream",
            "ftp-data", "warning", "finding", "incident", "scan", "segment", "skipped"} | OPEN_TYPES == set(SCHEMAS)
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    finding = SCHEMAS["finding"]["properties"]
    assert finding["category"]["enum"] == list(CATEGORIES)
    assert finding["severity"]["enum"] == [str(s) for s in Severity]
    for kind in OPEN_TYPES:  # other parts' records validate whatever fields they carry
        assert not problems([json.dumps({"type": kind, "anything": [1, "two"]})])


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.parent.name for c in CAPTURES])
def test_analyze_of_every_lab_capture_matches_the_schemas(capture: Path, tmp_path: Path) -> None:
    lines = jsonl_of(["analyze", str(capture), "--profile", PROFILE], tmp_path)
    assert problems(lines) == []
    kinds = {json.loads(line)["type"] for line in lines}
    assert {"input", "host", "flow-summary", "modbus-master", "modbus-slave"} <= kinds


def test_analyze_with_a_baseline_and_its_findings_match_the_schemas(tmp_path: Path) -> None:
    lines: list[str] = []
    for capture in CAPTURES:
        lines += jsonl_of(["analyze", str(capture), "--profile", PROFILE, "--baseline",
                           str(LAB / "normal" / "crane-lan.pcap")], tmp_path)
    findings = [json.loads(line) for line in lines if '"type":"finding"' in line]
    assert len({f["category"] for f in findings}) >= 8  # network and process findings alike
    assert any("onset" in e.get("values", {}) for f in findings for e in f["evidence"])
    assert problems(lines) == []
    # no instant slips through as epoch seconds under any key (the lab ran in 2026-11)
    epochs = [(f["rule"], path) for f in findings for path, v in _numbers(f["evidence"], "")
              if 1_790_000_000 < v < 1_800_000_000]
    assert epochs == []


def _numbers(value: Any, path: str) -> list[tuple[str, float]]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v, path)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(path, float(value))]
    return []


def test_warnings_of_a_cut_and_of_a_foreign_input_match_the_schema(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((LAB / "normal" / "crane-lan.pcap").read_bytes()[:-30])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n" * 20)
    lines = jsonl_of(["analyze", str(cut), str(notes)], tmp_path, code=3)
    records = [json.loads(line) for line in lines]
    assert {r["kind"] for r in records if r["type"] == "warning"} == {"capture"}
    assert {r["format"] for r in records if r["type"] == "input"} == {"pcap", "?"}
    # no profile, no baseline: the run says what it could not check, in records of their own
    skipped = {r["checks"]: r for r in records if r["type"] == "skipped"}
    assert {"process", "crane-zone", "hidden-uplink", "rogue-master", "new-asset"} <= set(skipped)
    assert skipped["c2"]["partly"] and skipped["c2"]["needs"] == "a --baseline"
    assert problems(lines) == []


def test_scan_image_records_match_the_schemas(tmp_path: Path) -> None:
    lines = jsonl_of(["scan-image", str(IMAGE)], tmp_path)
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds[0] == "scan" and kinds.count("finding") > 10
    assert problems(lines) == []


def test_zeek_logs_analysed_match_the_schemas(shared_data: Path, tmp_path: Path) -> None:
    from cranewatch.sources.zeek import is_zeek_input

    logs = sorted(p for p in (shared_data / "zeek-logs").iterdir() if is_zeek_input(p))[:20]
    assert len(logs) == 20
    lines = jsonl_of(["analyze", *map(str, logs)], tmp_path)
    assert {json.loads(line)["format"] for line in lines if '"type":"input"' in line} == {"zeek"}
    assert problems(lines) == []


def test_the_schemas_reject_what_the_contract_forbids() -> None:
    finding = {"type": "finding", "id": "cw-0123456789abcdef0123", "rule": "r", "category": "recon",
               "severity": "high", "crane": None, "title": "t", "first_seen": None,
               "last_seen": None, "count": 1, "src": None, "dst": None, "technique": ["T0846"],
               "evidence": [{"values": {"onset": "2026-11-26T02:04:45.216919Z"}}], "remedy": ""}
    assert problems([json.dumps(finding)]) == []
    epoch_onset = {**finding, "evidence": [{"values": {"onset": 1795658685.2169192}}]}
    wrong_severity = {**finding, "severity": "severe"}
    undocumented = {**finding, "score": 7}
    for bad in (epoch_onset, wrong_severity, undocumented, {"type": "incident"}, {"no": "type"}):
        assert problems([json.dumps(bad)]), bad


def test_docs_describe_every_record_type_and_point_at_its_schema() -> None:
    docs = (REPO / "docs" / "jsonl.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/jsonl.md" in readme
    for kind, schema in SCHEMAS.items():
        assert f"`{kind}`" in docs, kind
        assert f"src/cranewatch/data/schemas/{kind}.schema.json" in docs, kind
        if kind not in OPEN_TYPES:
            for field in schema["properties"]:
                assert f"`{field}`" in docs, f"docs/jsonl.md: {kind}.{field} not described"


def test_a_decoder_bug_warning_matches_the_schema(tmp_path: Path) -> None:
    """A decoder that fails with a bug is an "internal" warning (the run goes on): its line in the
    document is valid against the warning schema."""
    from cranewatch.pipeline import Analysis
    from cranewatch.protocols.base import REGISTRY, DecoderSpec
    from cranewatch.report.jsonl import render
    from modbus_capture import read_request, read_response
    from test_fuzz_decoders import Exploding, polls

    spec = DecoderSpec(name="exploding", transport="tcp", ports=frozenset({502}), factory=Exploding,
                       priority=0)
    capture = polls(tmp_path / "polls.pcap", read_request(2, 3, 100, 1), read_response(2, 3, [5]))
    result = Analysis([], decoders=[spec, *sorted(REGISTRY, key=lambda s: s.priority)]).run([capture])
    lines = render(result).splitlines()
    warnings = [json.loads(line) for line in lines if '"type":"warning"' in line]
    assert [w["kind"] for w in warnings] == ["internal"]
    assert problems(lines) == []
