"""The bundled lab captures: present, labelled consistently, and what the labels say (tshark).

Regenerate with ``sudo scripts/make-lab-data.sh`` (every scenario: 30 s each, wind-freeze 40 s,
the clean ``normal`` 3 min and ``normal-2`` 2 min).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

import cranewatch
from cranewatch.lab import verify
from cranewatch.lab.scenarios import all_scenarios

DATA = Path(cranewatch.__file__).parent / "data" / "lab"
SCENARIOS = [scenario.name for scenario in all_scenarios()]
CATEGORIES = {"hidden-uplink", "remote-access", "data-leak", "c2", "egress", "safety-override",
              "false-reading", "plc-control", "recon", "rogue-master", "new-asset"}


@pytest.fixture(scope="module", params=SCENARIOS)
def capture(request: pytest.FixtureRequest, tshark: str) -> verify.Capture:
    directory = DATA / request.param
    assert (directory / "labels.json").is_file(), f"{directory}: run scripts/make-lab-data.sh"
    return verify.load(directory)


def test_every_scenario_is_bundled_and_nothing_else() -> None:
    bundled = sorted(path.name for path in DATA.iterdir() if path.is_dir())
    assert bundled == sorted(SCENARIOS)


def test_bundled_data_stays_small() -> None:
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    assert total < 8_000_000, f"{total} bytes of lab data"
    assert not list(DATA.rglob("logs")), "logs are not bundled (--no-logs)"


def _lifts(capture: verify.Capture) -> list[tuple[float, float]]:
    """(start, median t) of every carried box, from the CMS's polls as tshark decodes them."""
    series = verify.register_series(capture)
    lifts: list[tuple[float, list[int]]] = []
    for when, image in series:
        load = image.value("hoist_load")
        if load > 10:  # > 1 t: the spreader is tared, so a box hangs on it
            if not lifts or when - lifts[-1][0] - 0.2 * len(lifts[-1][1]) > 2.0:
                lifts.append((when, []))
            lifts[-1][1].append(load)
    return [(start, sorted(loads)[len(loads) // 2] / 10) for start, loads in lifts if len(loads) > 10]


@pytest.mark.parametrize(("scenario", "seconds", "boxes"), [("normal", 170, 3), ("normal-2", 110, 2)])
def test_clean_captures_are_long_with_several_lifts(tshark: str, scenario: str, seconds: float,
                                                    boxes: int) -> None:
    # A baseline learned from one light lift flags every heavier honest one: the clean
    # captures hold several moves, with boxes of different weights.
    capture = verify.load(DATA / scenario)
    assert capture.labels["end"] - capture.labels["start"] >= seconds
    weights = [weight for _, weight in _lifts(capture)]
    assert len(weights) >= boxes, weights
    assert max(weights) - min(weights) >= 5.0, weights
    # normal-2 lifts a heavier box than any in normal: the baseline must generalise
    if scenario == "normal-2":
        seen = [weight for _, weight in _lifts(verify.load(DATA / "normal"))]
        assert max(weights) > max(seen) + 5.0


def _iso_matches(epoch: float, text: str) -> bool:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return abs(parsed.timestamp() - epoch) < 0.002


def test_labels_are_complete_and_consistent(capture: verify.Capture) -> None:
    labels = capture.labels
    assert labels["scenario"] == capture.pcap.parent.name
    assert isinstance(labels["seed"], int)
    assert labels["start"] < labels["end"]
    assert _iso_matches(labels["start"], labels["start_iso"])
    assert _iso_matches(labels["end"], labels["end_iso"])
    names = {host["name"] for host in labels["hosts"]}
    assert {"plc", "ocr", "cms", "gw", "tos", "mqtt", "dns", "syslog", "ews"} <= names
    for host in labels["hosts"]:
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", host["mac"])
        assert host["role"] and host["zone"]
    for attack in labels["attacks"]:
        assert attack["category"] in CATEGORIES
        assert attack["technique"] and all(re.fullmatch(r"T0\d{3}", t) for t in attack["technique"])
        assert labels["start"] <= attack["start"] < attack["end"] <= labels["end"]
        assert _iso_matches(attack["start"], attack["start_iso"])
        assert _iso_matches(attack["end"], attack["end_iso"])
        assert attack["src"] and attack["dst"] and attack["description"]
        if attack["category"] == "false-reading":
            assert attack["signal"]
    is_attack = capture.labels["scenario"] not in ("normal", "normal-2")
    assert bool(labels["attacks"]) == is_attack


def test_capture_decodes_cleanly_inside_the_labelled_run(capture: verify.Capture) -> None:
    assert verify.check_capture(capture) == []


def test_hosts_in_capture_are_the_labelled_ones(capture: verify.Capture) -> None:
    assert verify.check_hosts(capture) == []


def test_masters_poll_at_documented_rates(capture: verify.Capture) -> None:
    assert verify.check_polling(capture) == []


def test_register_values_are_plausible(capture: verify.Capture) -> None:
    lies = [a["start"] for a in capture.labels["attacks"] if a["category"] == "false-reading"]
    assert verify.check_values(capture, honest_until=min(lies, default=None)) == []


def test_ocr_events_carry_valid_container_numbers(capture: verify.Capture) -> None:
    assert verify.check_mqtt(capture, minimum=1) == []


def test_attacks_appear_in_their_windows_and_only_there(capture: verify.Capture) -> None:
    assert verify.check_attacks(capture) == []


def relabelled(directory: str, change: dict[str, object]) -> verify.Capture:
    """A bundled capture with altered labels, to see the checks catch a wrong label."""
    original = verify.load(DATA / directory)
    labels = {**original.labels, **change}
    return verify.Capture(original.pcap, labels)


def test_checks_catch_an_attack_that_is_not_in_the_capture(tshark: str) -> None:
    safety = verify.load(DATA / "safety-bypass").labels["attacks"]
    problems = verify.check_attacks(relabelled("normal", {"attacks": safety}))
    assert problems == ["safety-bypass-write: no evidence in the capture"]


def test_checks_catch_a_window_in_the_wrong_place(tshark: str) -> None:
    (attack,) = verify.load(DATA / "safety-bypass").labels["attacks"]
    early = {**attack, "start": attack["start"] - 8, "end": attack["start"] - 4}
    problems = verify.check_attacks(relabelled("safety-bypass", {"attacks": [early]}))
    assert len(problems) == 1 and "outside the labelled window" in problems[0]


def test_checks_catch_a_lie_in_the_wrong_window(tshark: str) -> None:
    (attack,) = verify.load(DATA / "false-load").labels["attacks"]
    before = {**attack, "start": attack["start"] - 12, "end": attack["start"] - 1}
    problems = verify.check_attacks(relabelled("false-load", {"attacks": [before]}))
    assert len(problems) == 1 and "zeroed-load-cell" in problems[0]
    # and the honest part of a lying capture is honest, the lying part is not
    lying = verify.load(DATA / "false-load")
    assert verify.check_values(lying, honest_until=attack["start"]) == []


def test_checks_catch_events_missing_from_the_journal(tshark: str) -> None:
    problems = verify.check_mqtt(relabelled("normal", {"ocr_journal": []}))
    assert problems and all("not in the OCR journal" in problem for problem in problems)


def test_checks_catch_a_wrong_polling_rate(tshark: str) -> None:
    polling = [{**poll, "interval_s": poll["interval_s"] * 2}
               for poll in verify.load(DATA / "normal").labels["polling"]]
    problems = verify.check_polling(relabelled("normal", {"polling": polling}))
    assert len(problems) == 3 and all("median interval" in p for p in problems)


def test_verify_command_passes_good_data_and_fails_bad_labels(
        tshark: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify.main([str(DATA / "normal")]) == 0
    broken = tmp_path / "normal"
    broken.mkdir()
    (broken / "crane-lan.pcap").write_bytes((DATA / "normal" / "crane-lan.pcap").read_bytes())
    labels = verify.load(DATA / "normal").labels
    labels = {**labels, "attacks": verify.load(DATA / "recon").labels["attacks"]}
    (broken / "labels.json").write_text(json.dumps(labels))
    assert verify.main([str(broken)]) == 1
    assert "scan-and-identify: no evidence" in capsys.readouterr().out
