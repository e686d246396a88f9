"""``cranewatch analyze``: the text and JSON-lines reports, exit codes, bad input, progress."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.commands import analyze as analyze_command
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.progress import ProgressBar
from modbus_capture import Conversation, mbap, read_request, read_response, udp_frame, write_pcap

JSONL_TYPES = {"input", "skipped", "segment", "host", "flow-summary", "modbus-master", "modbus-slave",
               "warning", "incident", "finding"}


def crane_capture(path: Path) -> Path:
    """The CMS (10.20.7.30) polls the PLC (10.20.7.10) 20 times; one DNS query."""
    c = Conversation("10.20.7.30", "10.20.7.10", client_mac="02:00:00:00:00:30",
                     server_mac="02:00:00:00:00:10")
    frames = c.handshake()
    for tid in range(1, 21):
        frames.append(c.send(True, read_request(tid, 4, 0, 12)))
        frames.append(c.send(False, read_response(tid, 4, list(range(tid, tid + 12)))))
    frames.append(c.send(True, mbap(21, 1, bytes.fromhex("06 0005 0001"))))
    frames.append(c.send(False, mbap(21, 1, bytes.fromhex("06 0005 0001"))))
    frames.append(udp_frame("10.20.7.30", "10.20.0.8", 40053, 53, bytes.fromhex(
        "abcd01000001000000000000036e7470056c6f63616c0000010001"),
        smac="02:00:00:00:00:30", dmac="02:00:00:00:00:fe"))
    frames += c.close()
    return write_pcap(path, frames)


def test_text_report_shows_hosts_flows_and_modbus_roles(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = crane_capture(tmp_path / "sts07.pcap")
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "02:00:00:00:00:30  10.20.7.30" in out
    assert "02:00:00:00:00:10  10.20.7.10" in out
    assert re.search(r"^  modbus +1 flows +48 packets", out, re.M)
    assert re.search(r"^  dns +1 flows +1 packets", out, re.M)
    assert "Modbus masters (1)" in out and "Modbus slaves (1)" in out
    assert "FC4 read input registers ×20" in out
    assert "FC6 write single register ×1" in out
    assert "read  IR 0–11 (12)  ×20" in out
    assert "write HR 5–5 (1)  ×1" in out
    assert f"{path}  pcap  49 packets" in out
    # times in ISO 8601 UTC, as in the JSON lines
    assert re.search(r"^  02:00:00:00:00:30  10\.20\.7\.30  \d+ packets  "
                     r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ → \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", out, re.M)


def test_jsonl_report_lines_and_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = crane_capture(tmp_path / "sts07.pcap")
    out_file = tmp_path / "result.jsonl"
    assert main(["analyze", str(path), "--format", "jsonl", "--out", str(out_file)]) == 0
    assert capsys.readouterr().out == ""
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert {line["type"] for line in lines} <= JSONL_TYPES
    (source,) = [x for x in lines if x["type"] == "input"]
    assert source["packets"] == 49 and source["complete"] and len(source["sha256"]) == 64
    (master,) = [x for x in lines if x["type"] == "modbus-master"]
    assert master["address"] == "10.20.7.30" and master["functions"] == {"4": 20, "6": 1}
    assert {"table": "IR", "address": 0, "quantity": 12, "access": "read",
            "requests": 20} in master["ranges"]
    assert {"table": "HR", "address": 5, "quantity": 1, "access": "write",
            "requests": 1} in master["ranges"]
    flows = {x["protocol"]: x for x in lines if x["type"] == "flow-summary"}
    assert flows["modbus"]["flows"] == 1 and flows["modbus"]["packets"] == 48
    for finding in (x for x in lines if x["type"] == "finding"):
        assert Finding.from_json(finding).to_json() == finding


class _FixedFindings:
    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings

    def on_event(self, event: object) -> None:
        pass

    def on_series(self, series: object) -> None:
        pass

    def on_flow_end(self, flow: object) -> None:
        pass

    def finish(self) -> list[Finding]:
        return self.findings


def _high_finding() -> Finding:
    return Finding(id=finding_id("rogue-write", "STS-07", "10.20.7.30"), rule="rogue-write",
                   category="safety-override", severity=Severity.HIGH,
                   title="CMS wrote a holding register", first_seen=1.0, last_seen=2.0,
                   evidence=(Evidence(source="x.pcap", frames=(44,)),))


@pytest.mark.parametrize(("fail_on", "code"), [("high", 1), ("medium", 1), ("critical", 0)])
def test_fail_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str], fail_on: str, code: int) -> None:
    monkeypatch.setattr(analyze_command, "detector_sinks",
                        lambda *args: [_FixedFindings([_high_finding()])])
    path = crane_capture(tmp_path / "sts07.pcap")
    assert main(["analyze", str(path), "--format", "jsonl", "--fail-on", fail_on]) == code
    captured = capsys.readouterr()
    findings = [json.loads(line) for line in captured.out.splitlines()
                if '"type":"finding"' in line]
    assert findings == [_high_finding().to_json()]
    # the exit code alone does not say why: stderr names the findings that met --fail-on
    finding = _high_finding()
    assert captured.err == ("" if code == 0 else
                            f"cranewatch: --fail-on {fail_on} met by 1 finding:\n"
                            f"  HIGH     {finding.id}  CMS wrote a holding register\n")


def test_bad_fail_on_value_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(tmp_path / "x.pcap"), "--fail-on", "severe"])
    assert exc.value.code == 2


def test_truncated_capture_exit_3_with_message_and_report(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = crane_capture(tmp_path / "cut.pcap")
    path.write_bytes(path.read_bytes()[:-20])  # the last record loses its end
    assert main(["analyze", str(path)]) == 3
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"cranewatch: error: {path} frame 49")
    assert "Traceback" not in captured.err
    assert "INCOMPLETE" in captured.out and "FC4 read input registers ×20" in captured.out


def test_not_a_capture_exit_3_one_clear_message(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("crane maintenance log\n" * 10)
    done = subprocess.run([sys.executable, "-m", "cranewatch", "analyze", str(notes)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"cranewatch: error: {notes}") and "not a packet capture" in line
    assert "Inputs" in done.stdout and "INCOMPLETE" in done.stdout


def test_missing_profile_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = crane_capture(tmp_path / "sts07.pcap")
    assert main(["analyze", str(path), "--profile", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_progress_bar_silent_for_short_runs_then_drawn_and_cleared() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, clock=lambda: now[0])
    bar(10, 100)
    now[0] = 0.5
    bar(50, 100)
    assert stream.getvalue() == ""  # under a second: nothing
    now[0] = 1.5
    bar(75_000_000, 100_000_000)
    assert " 75.0% " in stream.getvalue() and "75.0/100.0 MB" in stream.getvalue()
    now[0] = 1.51
    before = stream.getvalue()
    bar(80_000_000, 100_000_000)
    assert stream.getvalue() == before  # redraws are rate-limited
    bar.close()
    assert stream.getvalue().endswith("\r")


def test_help_names_zeek_log_directories_and_the_jsonl_record_types(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Zeek logs (a log file or a directory of them" in text
    assert "Zeek log files or directories" in text  # the CAPTURE argument itself
    for kind in sorted(JSONL_TYPES):
        assert kind in text, kind
    assert "docs/jsonl.md" in text
