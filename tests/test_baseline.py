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
    read_baseline,
    save_baseline,
    summary_text,
    to_json,
)
from cranewatch.errors import ProfileError
from cranewatch.judging import load_judging
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
    assert load_judging(baseline=path).baseline == b  # `analyze --baseline FILE`
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
    assert load_judging(baseline=[capture]).baseline.masters == b.masters  # captures: learned at the edge


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


# -- every malformed baseline is a located error (issue 19 case 7) ------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A saved baseline with process envelopes and a learned model, as `baseline --profile` writes."""
    from dataclasses import replace

    import numpy as np

    from cranewatch.process.envelope import ProcessBaseline
    from cranewatch.process.learned import LearnedModel

    learned = LearnedModel(("wind_speed", "hoist_load"), np.zeros(2), np.ones(2), np.zeros((5, 2)),
                           np.ones(2), np.ones(2), 0.5, 1.0, 86400.0, None)
    process = ProcessBaseline({"hoist_load": (0.0, 61.0)}, {"hoist_load": {1: 2.0}}, {"hoist_load": 4.0},
                              (1.0, 0.0, 0.1), learned, 600.0, {"hoist_load": 2.0})
    path = tmp_path / "sts-07.baseline.json"
    save_baseline(replace(learn(normal_crane()), process=process.to_json()), path)
    return path


def damage(path: Path, change: object) -> tuple[Path, list[str]]:
    data = json.loads(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data, indent=1))
    return path, path.read_text().splitlines()


def problems_of(path: Path) -> list[tuple[int | None, str]]:
    with pytest.raises(ProfileError) as caught:
        read_baseline(path)
    return [(p.location.line if p.location else None, p.message) for p in caught.value.problems]


def test_the_saved_baseline_with_envelopes_loads(saved: Path) -> None:
    from cranewatch.process.envelope import ProcessBaseline

    loaded = read_baseline(saved)
    assert loaded.process is not None
    assert ProcessBaseline.from_json(loaded.process).value_range == {"hoist_load": (0.0, 61.0)}


def test_envelopes_of_the_wrong_shape_are_located_not_an_attribute_error(saved: Path) -> None:
    from cranewatch.process.envelope import ProcessBaseline

    path, lines = damage(saved, lambda d: d["process"].update(value_range=[1, 2]))
    line = next(i for i, text in enumerate(lines, 1) if '"value_range"' in text)
    # before: AttributeError: 'list' object has no attribute 'items' (exit 70 from analyze)
    assert problems_of(path) == [(line, "process.value_range: expected a table, got a list [1, 2]")]
    with pytest.raises(ProfileError, match="process baseline: value_range: expected a table"):
        ProcessBaseline.from_json(json.loads(path.read_text())["process"])


def test_a_learned_model_whose_arrays_do_not_fit_is_located(saved: Path) -> None:
    path, lines = damage(saved, lambda d: d["process"]["learned"].update(mean=[0.0], coef=[[0.0, 0.0]]))
    found = problems_of(path)
    assert [m for _, m in found] == ["process.learned.mean: 1 values for 2 signals",
                                     "process.learned.coef: expected 5 rows of 2 values"]
    assert found[0][0] == next(i for i, text in enumerate(lines, 1) if '"mean"' in text)


def test_an_unhashable_entry_names_its_key_and_line(saved: Path) -> None:
    path, lines = damage(saved, lambda d: d["pairs"].insert(0, [["10.20.7.30"], "10.20.7.10", 502]))
    line = next(i for i, text in enumerate(lines, 1) if '"pairs"' in text)
    # before: "baseline is damaged: unhashable type: 'list'", without the key
    assert problems_of(path) == [(line, "pairs[0][0]: expected an IP address, got a list ['10.20.7.30']")]


def test_every_problem_of_a_baseline_is_reported_at_once(saved: Path) -> None:
    def many(d: dict) -> None:  # type: ignore[type-arg]
        d["hosts"]["10.20.7.10"] = "02:c7:07:00:00:0a"
        d["crane_networks"] = ["10.20.7.0/33"]
        d["periods"] = {"x": "fast"}
        d["pasirs"] = []
        d["process"]["rate"] = {"hoist_load": {"hoisting": 2.0}}
        d["process"]["torque_fit"] = [1.0, 2.0]

    path, _ = damage(saved, many)
    assert sorted(m for _, m in problems_of(path)) == sorted([
        "hosts.10.20.7.10: expected a list (a string each), got a string '02:c7:07:00:00:0a'",
        "crane_networks[0]: '10.20.7.0/33' is not a network (CIDR)",
        "periods.x: expected a finite number, got a string 'fast'",
        "top level: unknown key 'pasirs' (did you mean 'pairs'? expected one of schema, tool_version, "
        "created, inputs, hosts, crane_networks, gateways, dhcp_servers, default_routers, dns_servers, "
        "pairs, services, protocols, masters, functions, reads, writes, dns_names, tls_names, ja3, ja4, "
        "remote, container_receivers, periods, process, named)",
        "process.rate.hoist_load: key 'hoisting' is not a crane state number",
("process.torque_fit: expected a list of 3 values (each a number between -1e9 and 1e9), "
         "got a list [1.0, 2.0]"),
    ])


def test_analyze_with_a_damaged_baseline_exits_3_with_the_line(saved: Path) -> None:
    path, _ = damage(saved, lambda d: d["process"].update(longest_flat_s=None))
    done = subprocess.run([sys.executable, "-m", "cranewatch", "analyze",
                           str(Path(__file__).resolve().parents[1] / "src/cranewatch/data/lab/normal-2/crane-lan.pcap"),
                           "--profile", str(Path(__file__).resolve().parents[1] / "profiles/sts-07.toml"),
                           "--baseline", str(path)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert "process.longest_flat_s: expected a table, got null" in done.stderr and "Traceback" not in done.stderr


def test_envelopes_no_learning_could_give_are_refused(saved: Path) -> None:
    """Found by the long fuzz run: a zero threshold or spread made the process checks divide by
    zero (RuntimeWarning, NaN residuals); a range running backwards or a negative rate is no
    envelope either."""
    def odd(d: dict) -> None:  # type: ignore[type-arg]
        d["process"]["learned"]["threshold"] = [0.0, 1.0]
        d["process"]["value_range"]["hoist_load"] = [61.0, 0.0]
        d["process"]["rate"]["hoist_load"]["1"] = -2.0

    original = saved.read_text()
    path, _ = damage(saved, odd)
    assert sorted(m for _, m in problems_of(path)) == [
        "process.rate.hoist_load.1: is negative",
        "process.value_range.hoist_load: low 61.0 is above high 0.0",
    ]  # the learned model is judged once the envelopes are sound
    saved.write_text(original)
    path, _ = damage(saved, lambda d: d["process"]["learned"].update(threshold=[0.0, 1.0], std=[1e-300, 1.0]))
    assert sorted(m for _, m in problems_of(path)) == [
        "process.learned.std: a value below 1e-09, which fit() never gives",
        "process.learned.threshold: a value below 1, which fit() never gives",
    ]
    saved.write_text(original)  # 1e308 overflowed the learned model's matmul; slope 0 divided by zero
    path, _ = damage(saved, lambda d: (d["process"]["learned"]["coef"][0].__setitem__(0, 1e308),
                                       d["process"].update(torque_fit=[0.0, 0.0, 0.1])))
    assert sorted(m for _, m in problems_of(path)) == [
        "process.learned.coef[0][0]: expected a number between -1e9 and 1e9, got a number 1e+308"]
    saved.write_text(original)
    path, _ = damage(saved, lambda d: d["process"].update(torque_fit=[0.0, 0.0, 0.1]))
    assert problems_of(path)[0][1] == "process.torque_fit: a slope of 0 (torque not following load)"
    saved.write_text(original)  # seed 19 case 9643: IndexError in the learned-mode check
    path, _ = damage(saved, lambda d: d["process"]["learned"].update(samples_per_day=1e-300))
    assert problems_of(path)[0][1] == "process.learned.samples_per_day: fewer than one a day"
