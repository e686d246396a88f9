"""The lab for real: namespaces, daemons, capture; checked with tshark; nothing left behind.

Needs root (CI runs as root). Two short runs (normal, safety-bypass) of ~20 s each, an
interrupted run and a leftover clean-up.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.errors import EnvironmentProblem
from cranewatch.lab import netns, verify
from cranewatch.lab.runner import Lab, run_scenario
from cranewatch.lab.scenario import Scenario

CLI = [sys.executable, "-m", "cranewatch"]


def host_network_state() -> tuple[str, str, str]:
    """The host namespace's addresses, routes and link names (the lab must not touch them)."""
    addresses = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    lab_links = "\n".join(line for line in links.splitlines()
                          if any(name in line for name in ("br-crane", "br-term", "br-out",
                                                            "br-wan", "plc-0", "cms-0")))
    return addresses, routes, lab_links


def lab_processes() -> list[str]:
    """Command lines of running lab parts (the runner starts them with -m cranewatch.lab...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "cranewatch.lab." in cmdline or "/cwlab-run-" in cmdline:
            found.append(cmdline)
    return found


def run_lab(scenario: str, out: Path, seconds: int = 15,
            *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "lab", "run", scenario, "--out", str(out), "--seconds",
                           str(seconds), *options], capture_output=True, text=True, timeout=180)


def assert_nothing_left(before: tuple[str, str, str]) -> None:
    # Under the lab lock no other run (another checkout's tests) is active, so anything
    # found is a leftover.
    with netns.run_lock(wait=600):
        assert netns.lab_namespaces() == []
        assert lab_processes() == []
    assert host_network_state() == before, "the host namespace changed"


@pytest.mark.root
def test_normal_run_captures_a_working_crane(as_root: None, tshark: str, tmp_path: Path) -> None:
    before = host_network_state()
    done = run_lab("normal", tmp_path, 15, "--cameras")
    assert done.returncode == 0, done.stderr
    assert_nothing_left(before)
    capture = verify.load(tmp_path)
    assert capture.end - capture.start >= 15
    # the cameras stream JPEG over RTP interleaved in RTSP to the OCR (tshark decodes it)
    assert {"10.20.7.21", "10.20.7.22"} == {row["ip.src"] for row in capture.frames
                                            if row["_ws.col.Protocol"] in ("RTP", "JPEG")}
    assert verify.check_capture(capture) == []
    assert verify.check_hosts(capture) == []
    assert verify.check_polling(capture) == []
    assert verify.check_values(capture) == []
    assert verify.check_mqtt(capture, minimum=1) == []
    assert verify.check_attacks(capture) == []  # none of the attacks' traces
    unexpected = {h["name"].split(":")[0] for h in capture.labels["hosts"] if not h["expected"]}
    assert unexpected == {"modem", "inet", "vendor", "resolver", "collector"}
    assert capture.labels["maintenance_windows"] == []
    loads = [image.value("hoist_load") for _, image in verify.register_series(capture)]
    assert max(loads) > 0, "the crane lifted a container during the run"


@pytest.mark.root
def test_safety_bypass_run_shows_the_write_and_the_plc_obeys(as_root: None, tshark: str,
                                                            tmp_path: Path) -> None:
    before = host_network_state()
    done = run_lab("safety-bypass", tmp_path)
    assert done.returncode == 0, done.stderr
    assert_nothing_left(before)
    capture = verify.load(tmp_path)
    assert verify.check_capture(capture) == []
    assert verify.check_attacks(capture) == []
    (attack,) = capture.labels["attacks"]
    assert attack["category"] == "safety-override" and "T0836" in attack["technique"]
    inside = [row for row in capture.frames
              if attack["start"] <= float(row["frame.time_epoch"]) <= attack["end"]]
    coil_writes = [row for row in inside if row["ip.src"] == "10.20.0.50"
                   and row["modbus.func_code"] == "5"]
    register_writes = [row for row in inside if row["ip.src"] == "10.20.0.50"
                       and row["modbus.func_code"] == "6"]
    assert coil_writes and register_writes
    # The PLC answers the EWS's read-back with the raised limit: it honoured the write.
    readbacks = [row["modbus.regval_uint16"] for row in inside if row["ip.src"] == "10.20.7.10"
                 and row["ip.dst"] == "10.20.0.50" and row["modbus.func_code"] == "3"]
    assert readbacks[0].startswith("715,") and readbacks[-1].startswith("900,")


@pytest.mark.root
@pytest.mark.slow
def test_beacon_leaves_through_the_gateway_nat(as_root: None, tshark: str, tmp_path: Path) -> None:
    done = run_lab("beacon", tmp_path, 20, "--outside-capture")
    assert done.returncode == 0, done.stderr
    capture = verify.load(tmp_path)
    assert verify.check_capture(capture) == []
    assert verify.check_attacks(capture) == []
    (attack,) = capture.labels["attacks"]
    # Outside the gateway the crane's TLS calls come from the gateway's NAT address.
    outside = verify.Capture(tmp_path / "outside.pcap", capture.labels)
    hellos = outside.times(lambda row: row["tls.handshake.extensions_server_name"] != ""
                           and row["ip.src"] == "198.51.100.2" and row["ip.dst"] == "203.0.113.80")
    inside = capture.times(verify.EVIDENCE["tls-beacon"])
    assert len(hellos) == len(inside) >= 2
    assert all(attack["start"] - 1 <= t <= attack["end"] + 1 for t in hellos)
    gaps = [b - a for a, b in itertools.pairwise(hellos)]
    assert all(4.0 <= gap <= 6.5 for gap in gaps), gaps  # 5 s ± 15 % plus the curl time
    assert not outside.times(lambda row: row["ip.src"].startswith("10.20.")), "NAT leaked"


@pytest.mark.root
def test_clean_refuses_while_a_run_holds_the_lock(as_root: None) -> None:
    with netns.run_lock(wait=0.0), pytest.raises(EnvironmentProblem, match="another lab run"):
        netns.clean()


@pytest.mark.root
def test_interrupted_run_cleans_up(as_root: None, tmp_path: Path) -> None:
    before = host_network_state()
    process = subprocess.Popen([*CLI, "lab", "run", "normal", "--out", str(tmp_path),
                                "--seconds", "60"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "logs" / "cms.log").exists():
        time.sleep(0.2)
    assert netns.lab_namespaces(), "the run did not get going"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert_nothing_left(before)


@pytest.mark.root
def test_a_part_that_fails_to_start_tears_everything_down(as_root: None, tmp_path: Path) -> None:
    def start_a_broken_daemon(lab: Lab) -> None:
        broken = lab.start("cms", ["sh", "-c", "echo cannot bind; exit 3"], "broken")
        lab.wait_listening("cms", 5900, broken)

    before = host_network_state()
    broken = Scenario(name="broken", summary="a part that dies", prepare=start_a_broken_daemon)
    with pytest.raises(EnvironmentProblem, match="broken in cms exited with 3"):
        run_scenario(broken, tmp_path, seconds=10)
    assert_nothing_left(before)
    assert not (tmp_path / "labels.json").exists()


@pytest.mark.root
def test_clean_removes_leftovers_of_a_killed_run(as_root: None) -> None:
    subprocess.run(["ip", "netns", "add", "cwlab-leftover"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", "cwlab-leftover", "sleep", "300"])
    try:
        done = subprocess.run([*CLI, "lab", "clean"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "cwlab-leftover" in done.stdout
        assert "cwlab-leftover" not in netns.lab_namespaces()
        assert sleeper.wait(10) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "netns", "delete", "cwlab-leftover"], capture_output=True)


def test_run_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # an ordinary user, whoever runs the test
    assert main(["lab", "run", "normal", "--out", str(tmp_path)]) == 4
    assert "needs root" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.root
def test_run_reports_a_missing_tool(as_root: None, tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "lab", "run", "normal", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 4, done.stderr
    assert "tcpdump" in done.stderr and "install-deps" in done.stderr
    with netns.run_lock(wait=600):
        assert netns.lab_namespaces() == []


def test_list_shows_every_scenario_on_one_line() -> None:
    done = subprocess.run([*CLI, "lab", "list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names[:2] == ["normal", "normal-2"]
    assert {"remote-ssh", "vendor-vnc", "ocr-exfil", "dns-exfil", "beacon", "safety-bypass",
            "false-load", "wind-freeze", "replay", "plc-restart", "recon",
            "rogue-master"} <= set(names)


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    done = run_lab("no-such-thing", tmp_path)
    assert done.returncode == 2
    assert "known:" in done.stderr
