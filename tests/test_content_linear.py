"""The content checks read attacker text in linear time (issue 19, case 2).

Before: ``KEYED_LOCODE_RE`` backtracked over every start inside a run of letters, n² steps
(20 KB of letters 5.6 s; an MQTT topic of 65 KB to an outside broker 59 s; a Zeek http.log Host
of 200 KB more than 30 s). The limits below are loose (a shared 2-core machine) and still two
orders of magnitude under the quadratic times.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from cranewatch.commands.analyze import analysis_sinks
from cranewatch.detect.content import (
    DEEP_BUDGET,
    KEYED_LOCODE_RE,
    SCAN_BUDGET,
    find_container_data,
    find_container_data_deep,
)
from cranewatch.judging import load_judging
from cranewatch.pipeline import analyze
from detect_capture import Crane, Host, mqtt_connect, mqtt_publish, new_capture, ocr_event

REPO = Path(__file__).resolve().parents[1]
PROFILE = str(REPO / "profiles" / "sts-07.toml")
OUTSIDE = Host("198.51.100.23", "02:00:c6:33:64:17")
# the pattern as it was: the reference for "same matches"
BACKTRACKING = re.compile(rb'"?([A-Za-z_]+)"?\s*[:=]\s*"?([A-Z]{2}[A-Z2-9]{3})\b')


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def test_keyed_locode_pattern_matches_as_the_backtracking_one() -> None:
    rng = random.Random(19)
    alphabet = b'aAPOLpolCNSHA_ "=:\n2\t9x-'
    for _ in range(20_000):
        text = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert [(m.span(), m.groups()) for m in KEYED_LOCODE_RE.finditer(text)] == \
            [(m.span(), m.groups()) for m in BACKTRACKING.finditer(text)], text


def test_keyed_locodes_still_found() -> None:
    found = find_container_data(b'{"pol": "CNSHA", "pod":"USORF"} port_of_loading=NLRTM')
    assert "CNSHA" in found.locodes and "USORF" in found.locodes


def test_a_long_run_of_letters_costs_milliseconds() -> None:
    for run in (b"a" * 64_000, b"A" * 64_000, b"pol" + b" " * 64_000, b"7" * 64_000, b"a." * 32_000):
        _, seconds = timed(find_container_data, run)
        assert seconds < 0.5, (run[:8], seconds)  # the backtracking pattern: ~60 s for 64 KB of letters
        _, seconds = timed(find_container_data_deep, run)
        assert seconds < 0.5, (run[:8], seconds)


def test_length_budgets() -> None:
    container = b" CSQU3054383 "
    assert find_container_data(b"x" * (SCAN_BUDGET - 20) + container).containers == ("CSQU3054383",)
    assert not find_container_data(b"x" * SCAN_BUDGET + container)
    assert find_container_data_deep(b"x" * (DEEP_BUDGET - 20) + container)
    assert not find_container_data_deep(b"x" * DEEP_BUDGET + container)


def leak_findings(path: Path) -> list[str]:
    result = analyze([path], sinks=analysis_sinks(load_judging(PROFILE), None), profile=PROFILE)
    return [f.title for f in result.findings if f.rule == "data-leak"]


def test_mqtt_topic_of_64k_letters_to_an_outside_broker(tmp_path: Path) -> None:
    crane = Crane()
    cap = new_capture(crane)
    publish = mqtt_publish("a" * 65_000, b"{}") + mqtt_publish("t", ocr_event("CSQU3054383"))
    cap.tcp(1_800_000_000.0, crane.ocr, OUTSIDE, 41000, 1883,
            [(True, mqtt_connect("ocr-7"), 0.01)]
            + [(True, publish[i:i + 1400], 0.0001) for i in range(0, len(publish), 1400)])
    titles, seconds = timed(leak_findings, cap.write(tmp_path / "topic.pcap"))
    assert seconds < 5, seconds  # before: 59 s
    assert len(titles) == 1 and "outside host 198.51.100.23" in titles[0], titles  # still judged


def test_zeek_http_log_with_a_200k_host(tmp_path: Path) -> None:
    record = {"ts": 1_800_000_000.0, "uid": "C1", "id.orig_h": "10.20.7.20", "id.orig_p": 44000,
              "id.resp_h": OUTSIDE.ip, "id.resp_p": 80, "method": "GET", "host": "a" * 200_000,
              "uri": "/upload?container=CSQU3054383", "version": "1.1"}
    logs = tmp_path / "zeek"
    logs.mkdir()
    (logs / "http.log").write_text(json.dumps(record) + "\n")
    titles, seconds = timed(leak_findings, logs)
    assert seconds < 5, seconds  # before: > 30 s
    assert len(titles) == 1 and "CSQU3054383" in titles[0], titles


def test_twenty_http_posts_of_8k_letters(tmp_path: Path) -> None:
    crane = Crane()
    cap = new_capture(crane)
    body = b"a" * 8192
    request = b"POST /upload HTTP/1.1\r\nHost: drop.example\r\nContent-Length: 8192\r\n\r\n" + body
    t = 1_800_000_000.0
    for n in range(20):
        t = cap.tcp(t + 0.5, crane.ocr, OUTSIDE, 42000 + n, 80,
                    [(True, request[i:i + 1400], 0.0001) for i in range(0, len(request), 1400)])
    titles, seconds = timed(leak_findings, cap.write(tmp_path / "posts.pcap"))
    assert seconds < 5, seconds  # before: 21 s
    assert titles == []  # letters are no container data
