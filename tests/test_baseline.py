"""Baseline: learned from captures through the pipeline, checked against tshark; saved as
versioned JSON and loaded back unchanged; `analyze --baseline` accepts either form."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from cranewatch.baseline import (
    SCHEMA_VERSION,
    from_json,
    learn_baseline,
    load_baseline,
    read_baseline,
    save_baseline,
    summary_text,
    to_json,
)
from cranewatch.errors import ProfileError
from detect_helpers import CMS, GW_MAC, OCR, PLC, learn, normal_crane

MODBUS_TEST = "pcaps/ICS-Security-Tools/pcaps/ModbusTCP/Modbus/modbus_test.pcap"


def test_learns_hosts_gateway_networks_and_masters_from_facts() -> None:
    b = learn(normal_crane())
    assert b.gateways == {GW_MAC}
    assert b.macs_of(PLC) == {"02:00:00:00:07:10"}
    assert b.macs_of("10.20.0.5") == frozenset()  # behind the gateway: no own MAC on this LAN
    assert [str(n) for n in b.crane_networks] == ["10.20.7.0/24"]
    assert b.is_master(CMS, PLC) and b.is_master(OCR, PLC) and not b.is_master(PLC, CMS)
    assert b.has_read(CMS, PLC, 4, 1, 5) and not b.has_read(CMS, PLC, 4, 10, 5)
    assert b.has_pair(OCR, "10.20.0.6", 1883) and b.has_pair("10.20.0.6", OCR)
    assert abs(b.periods[f"{CMS}>{PLC} fc4 0+12"] - 0.2) < 1e-6


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    b = learn(normal_crane())
    path = tmp_path / "sts-07.baseline.json"
    save_baseline(b, path)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA_VERSION and data["tool_version"]
    assert read_baseline(path) == b
    assert load_baseline(path) == b
    assert from_json(to_json(b)) == b
    assert "Modbus masters:" in summary_text(b)


def test_damaged_or_foreign_json_is_a_located_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1,\n "hosts": ')
    with pytest.raises(ProfileError) as caught:
        read_baseline(bad)
    assert caught.value.location is not None and caught.value.location.line == 2
    other = tmp_path / "other.json"
    other.write_text('{"schema": 99}')
    with pytest.raises(ProfileError, match="schema 99"):
        read_baseline(other)


def tshark_modbus(tshark: str, capture: Path) -> dict[tuple[str, str], set[int]]:
    out = subprocess.run(
        [tshark, "-r", str(capture), "-Y", "modbus && tcp.dstport == 502", "-T", "fields",
         "-e", "ip.src", "-e", "ip.dst", "-e", "modbus.func_code"],
        capture_output=True, text=True, check=True).stdout
    pairs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for line in out.splitlines():
        src, dst, codes = line.split("\t")
        pairs[(src, dst)].update(int(c) for c in codes.split(",") if c)
    return pairs


def test_learned_masters_and_function_codes_match_tshark(shared_data: Path, tshark: str) -> None:
    capture = shared_data / MODBUS_TEST
    b = learn_baseline([capture])
    expected = tshark_modbus(tshark, capture)
    assert set(b.masters) == set(expected)
    for (master, slave), codes in expected.items():
        assert {f for m, s, f in b.functions if (m, s) == (master, slave)} == codes
    assert b.inputs[0]["sha256"] and b.inputs[0]["packets"] == 2257
    assert load_baseline([capture]).masters == b.masters  # captures are learned on the fly


def test_baseline_command(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "cranewatch", "baseline", str(shared_data / MODBUS_TEST),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "192.168.0.156 → 192.168.0.20: FC 6" in done.stdout
    assert read_baseline(out).has_write("192.168.0.156", "192.168.0.20", "HR", 4, 1)


def test_not_a_capture_teaches_nothing(tmp_path: Path) -> None:
    from cranewatch.errors import CaptureError

    bad = tmp_path / "notes.pcap"
    bad.write_text("this is not a capture\n")
    with pytest.raises(CaptureError, match="cannot learn a baseline"):
        learn_baseline([bad])
    done = subprocess.run([sys.executable, "-m", "cranewatch", "baseline", str(bad), "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True)
    assert done.returncode == 3 and "notes.pcap" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b.json").exists()


def test_a_capture_cut_short_is_learned_and_said(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / MODBUS_TEST).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])  # ends inside a record
    done = subprocess.run([sys.executable, "-m", "cranewatch", "baseline", str(cut), "--out", str(tmp_path / "b.json"),
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 3 and "cut.pcap" in done.stderr
    learned = read_baseline(tmp_path / "b.json")
    assert learned.masters and learned.inputs[0]["complete"] is False


# -- the process checks' envelopes in a saved baseline ---------------------------------------

_LAB = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data" / "lab"
_PROFILE = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data" / "profiles" / "sts-07.toml"


def test_saved_baseline_with_a_profile_carries_process_envelopes_that_the_checks_use(tmp_path: Path) -> None:
    from cranewatch.cli import main as cli_main
    from cranewatch.model import Finding

    saved = tmp_path / "b.json"
    assert cli_main(["baseline", str(_LAB / "normal" / "crane-lan.pcap"), "--profile", str(_PROFILE),
                     "--out", str(saved), "--quiet"]) == 0
    data = json.loads(saved.read_text())
    # the envelope of the load cell was learned from the values read (normal lifts up to ~14 t)
    assert "hoist_load" in data["process"]["value_range"]
    # without a profile there is nothing to say what the registers mean: no process part
    plain = tmp_path / "plain.json"
    assert cli_main(["baseline", str(_LAB / "normal" / "crane-lan.pcap"), "--out", str(plain), "--quiet"]) == 0
    assert "process" not in json.loads(plain.read_text())

    out = tmp_path / "findings.jsonl"
    false_load = _LAB / "false-load"
    cli_main(["analyze", str(false_load / "crane-lan.pcap"), "--profile", str(_PROFILE),
              "--baseline", str(saved), "--format", "jsonl", "--out", str(out)])
    labels = json.loads((false_load / "labels.json").read_text())
    attack = next(a for a in labels["attacks"] if a.get("signal") == "hoist_load")
    findings = [r for r in map(json.loads, out.read_text().splitlines()) if r.get("type") == "finding"]
    hits = [f for f in findings if f["category"] == "false-reading" and "hoist_load" in f["title"]]
    assert hits, [f["title"] for f in findings]
    first = Finding.from_json(hits[0]).first_seen
    assert first is not None and attack["start"] - 1 <= first <= attack["end"] + 1
