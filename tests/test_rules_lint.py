"""Rule files (detect/rules/*.yaml) against their schemas: ``cranewatch rules lint`` and the
located errors the detectors raise (line numbers counted by hand in the files written here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.detect import rules
from cranewatch.errors import ProfileError

SRC = Path(__file__).resolve().parents[1] / "src"

C2_OK = """beacon:
  min_connections: 4
  max_jitter_ratio: 0.35
  min_interval_s: 1.0
dns_tunnel:
  min_queries: 8
  long_label: 40
  entropy_bits: 3.5
  entropy_min_label: 16
"""


def cranewatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cranewatch", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)


def test_every_shipped_rule_file_passes_and_has_a_schema() -> None:
    names = rules.rule_names()
    assert names == sorted(p.name.removesuffix(".schema.json") for p in rules.SCHEMA_DIR.glob("*.schema.json"))
    run = cranewatch("rules", "lint")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("OK ") == len(names) >= 4


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c2.yaml"
    path.write_text(C2_OK.replace("  min_interval_s: 1.0\n", "  min_interval_s: 1.0\n  min_interval_s: 60\n"))
    run = cranewatch("rules", "lint", str(path))
    assert run.returncode == 3
    assert f"{path}:5:" in run.stderr and "'min_interval_s' is given twice (first on line 4)" in run.stderr
    assert "Traceback" not in run.stderr


def test_wrong_values_are_each_named_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "c2.yaml"
    path.write_text(C2_OK.replace("max_jitter_ratio: 0.35", "max_jitter_ratio: 1.35")
                    .replace("long_label: 40", "long_label: 'forty'"))
    _, problems = rules.check_rule_file(path)
    found = {(p.location.line if p.location else None, p.message.split(":")[0]) for p in problems}
    assert found == {(3, "beacon/max_jitter_ratio"), (7, "dns_tunnel/long_label")}


def test_remote_access_prefixes_must_be_hex(tmp_path: Path) -> None:
    path = tmp_path / "ra.yaml"
    path.write_text('protocols:\n  ssh:\n    server: ["SSH-"]\n    examples:\n      - {server: ""}\n')
    _, problems = rules.check_rule_file(path, "remote_access")
    assert [(p.location.line if p.location else None) for p in problems] == [3]
    assert "does not match" in problems[0].message


def test_an_unknown_kind_and_broken_yaml_are_located(tmp_path: Path) -> None:
    path = tmp_path / "mystery.yaml"
    path.write_text("a: 1\n")
    assert "no schema for rule data 'mystery'" in rules.check_rule_file(path)[1][0].message
    path.write_text("a: [1, 2\nb: 3\n")
    problem = rules.check_rule_file(path, "c2")[1][0]
    assert problem.message.startswith("not valid YAML") and problem.location and problem.location.line


def test_a_detector_meets_a_broken_rule_file_as_a_located_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c2.yaml").write_text(C2_OK.replace("min_queries: 8", "min_queries: -1"))
    monkeypatch.setattr(rules, "RULES_DIR", tmp_path)
    rules.rule_data.cache_clear()
    try:
        with pytest.raises(ProfileError) as raised:
            rules.rule_data("c2")
        assert raised.value.location is not None and raised.value.location.line == 6
        assert "dns_tunnel/min_queries" in raised.value.message
    finally:
        rules.rule_data.cache_clear()


BROKEN = [
    ("c2", C2_OK.replace("min_connections: 4", "min_connections: true")),
    ("c2", C2_OK.replace("max_jitter_ratio: 0.35", "max_jitter_ratio: 0")),
    ("c2", C2_OK + "extra: 1\n"),
    ("c2", C2_OK.replace("  long_label: 40\n", "")),
    ("locodes", "context_keys: [pol, pol]\nports: [CNSHA, usnyc]\n"),
    ("locodes", "context_keys: []\nports: [CNSHA]\n"),
    ("plc_control", "operations:\n  Bad_Name:\n    title: ''\n    severity: severe\n    technique: [T1234x]\n"
                    "    remedy: r\n    examples: [{protocol: modbus, function: [1]}]\n"),
    ("plc_control", "operations: {}\n"),
    ("remote_access", "protocols:\n  vnc:\n    examples: [{client: '0g'}]\n"),
    ("remote_access", "protocols:\n  vnc:\n    server: []\n    examples: []\n"),
]


@pytest.mark.parametrize(("kind", "text"), BROKEN)
def test_the_built_in_checker_agrees_with_jsonschema(kind: str, text: str, tmp_path: Path) -> None:
    """The rule schemas are checked without the jsonschema package at run time (its import
    costs seconds); here the two must find problems at the same places."""
    import json

    import jsonschema
    import yaml

    schema = json.loads((rules.SCHEMA_DIR / f"{kind}.schema.json").read_text())
    data = yaml.safe_load(text)
    theirs = sorted("/".join(map(str, e.absolute_path))
                    for e in jsonschema.Draft202012Validator(schema).iter_errors(data))
    ours = sorted("/".join(map(str, at)) for at, _ in rules.schema_errors(data, schema))
    assert theirs, "each broken case must break the schema"
    assert ours == theirs


def test_the_shipped_files_pass_jsonschema_too() -> None:
    import json

    import jsonschema
    import yaml

    for name in rules.rule_names():
        schema = json.loads((rules.SCHEMA_DIR / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        data = yaml.safe_load((rules.RULES_DIR / f"{name}.yaml").read_text())
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)) == []
