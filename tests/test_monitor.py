"""cranewatch monitor: live capture through tcpdump, windowed findings, ring files, clean stops.

The end-to-end test builds two network namespaces (``cwmon-*``) joined by a veth pair, runs a
real pymodbus server and a real OpenSSH server in one, attacks from the other with the
pymodbus client and the OpenSSH client, and watches the server's interface with
``cranewatch monitor --netns``. The frames the evidence names are checked in the ring files
with tshark.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.commands.analyze import detector_sinks
from cranewatch.model import Finding, Severity
from cranewatch.monitor import (
    JsonLinesOutput,
    Ledger,
    Monitor,
    MonitorSettings,
    RollingProcessChecks,
)
from cranewatch.pipeline import analyze
from cranewatch.profile import load_profile
from cranewatch.sources import live
from cranewatch.sources.live import CaptureTool, PromptPipe, RingWriter, capture_argv
from cranewatch.sources.pcap import PacketBatch, open_capture
from netns_helpers import MODBUS_SERVER

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "sts-07.toml"
LAB_CAPTURE = REPO / "src" / "cranewatch" / "data" / "lab" / "safety-bypass" / "crane-lan.pcap"
PYTHON = sys.executable


def _finding(fid: str, count: int, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(id=fid, rule="plc-control", category="plc-control", severity=severity,
                   title=f"t {fid}", first_seen=1.0, last_seen=2.0, count=count)


# ------------------------------------------------------------------------------ pure parts


def test_ledger_reports_a_finding_once_then_its_growth_at_most_every_interval() -> None:
    ledger = Ledger(update_every=60.0)
    assert ledger.due([_finding("a", 1)], now=0.0) == ([_finding("a", 1)], [])
    assert ledger.due([_finding("a", 1)], now=100.0) == ([], [])  # unchanged: nothing
    assert ledger.due([_finding("a", 5)], now=10.0) == ([], [])  # grew, but too soon
    assert ledger.due([_finding("a", 7)], now=61.0) == ([], [_finding("a", 7)])
    # a rise in severity is reported at once
    hot = _finding("a", 8, Severity.CRITICAL)
    assert ledger.due([hot], now=62.0) == ([], [hot])
    # at the end the last state is reported whatever the interval
    assert ledger.due([_finding("a", 9, Severity.CRITICAL)], now=63.0, final=True)[1][0].count == 9


def test_runs_of_the_process_checks_merge_overlapping_incidents_and_add_later_ones() -> None:
    from dataclasses import replace

    from cranewatch.monitor import merge_finding

    first = replace(_finding("p", 2), first_seen=100.0, last_seen=130.0)
    again = replace(_finding("p", 3), first_seen=110.0, last_seen=150.0)  # same episode, longer
    merged = merge_finding(first, again)
    assert (merged.count, merged.first_seen, merged.last_seen) == (3, 100.0, 150.0)
    later = replace(_finding("p", 1, Severity.CRITICAL), first_seen=300.0, last_seen=310.0)
    merged = merge_finding(merged, later)
    assert (merged.count, merged.last_seen, merged.severity) == (4, 310.0, Severity.CRITICAL)


def test_capture_argv_is_packet_buffered_pcap_on_stdout_inside_the_namespace() -> None:
    tool = CaptureTool("eth0", netns="cwmon-x", snaplen=128, packets=10, bpf=("tcp port 502",))
    assert capture_argv(tool) == ["ip", "netns", "exec", "cwmon-x", "tcpdump", "-i", "eth0", "-U",
                                  "-w", "-", "-n", "-s", "128", "-c", "10", "tcp port 502"]


def test_failures_of_tcpdump_become_located_errors_with_documented_exit_codes() -> None:
    tool = CaptureTool("eth9")
    missing = live.classify_failure(tool, "tcpdump: eth9: No such device exists\n(SIOCGIFHWADDR: No such device)")
    assert missing.exit_code == 3 and "'eth9'" in str(missing)  # type: ignore[attr-defined]
    denied = live.classify_failure(tool, "tcpdump: eth9: You don't have permission to perform this capture on that device\n(socket: Operation not permitted)")
    assert denied.exit_code == 4  # type: ignore[attr-defined]


def test_tcpdump_closing_counts_are_read_with_their_drops() -> None:
    capture = live.LiveCapture(CaptureTool("eth0"))
    capture.stderr_lines = ["tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
                            "261363 packets captured", "400000 packets received by filter",
                            "138637 packets dropped by kernel"]
    assert capture.statistics() == {"packets captured": 261363,
                                    "packets received by filter": 400000,
                                    "packets dropped by kernel": 138637}


def test_prompt_pipe_hands_over_a_packet_without_waiting_for_a_full_block() -> None:
    read_end, write_end = os.pipe()
    pipe = PromptPipe(read_end, linger=0.05)
    try:
        os.write(write_end, b"x" * 100)
        started = time.monotonic()
        got = pipe.read(8 * 1024 * 1024)
        assert got == b"x" * 100
        assert time.monotonic() - started < 0.5
        os.close(write_end)
        assert pipe.read(10) == b""  # end of file
    finally:
        os.close(read_end)


def _lab_batches(batch_packets: int) -> Iterator[PacketBatch]:
    with open_capture(LAB_CAPTURE) as reader:
        yield from reader.batches(batch_packets)


def test_ring_files_hold_the_packets_and_the_frames_the_batches_name(tmp_path: Path, tshark: str) -> None:
    ring = RingWriter(tmp_path / "ring", "eth0", size_bytes=200_000, files=2)
    batches = list(_lab_batches(500))
    renamed = [ring.write(b) for b in batches[:6]]
    ring.pin([renamed[0].source])  # the first file holds evidence: kept whatever the rotation
    renamed += [ring.write(b) for b in batches[6:]]
    ring.close()
    files = sorted((tmp_path / "ring").iterdir())
    assert len(ring.written) == len(files) <= 3
    assert Path(renamed[0].source) in files
    # every kept batch's packets are in its file at the frame numbers the batch says
    checked = 0
    for original, batch in zip(batches, renamed, strict=True):
        if not Path(batch.source).exists():
            continue
        row = len(batch) // 2
        out = subprocess.run([tshark, "-r", batch.source, "-Y", f"frame.number == {batch.frame[row]}",
                              "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
                             capture_output=True, text=True, check=True).stdout.split()
        assert abs(float(out[0]) - float(original.ts[row])) < 1e-6
        assert int(out[1]) == int(original.origlen[row])
        checked += 1
    assert checked >= 2


def test_windowed_monitoring_ends_with_the_findings_of_a_file_analysis(tmp_path: Path) -> None:
    """The same packets, given in small batches with a look after each, give analyze's findings."""
    expected = analyze([LAB_CAPTURE], sinks=detector_sinks(load_profile(PROFILE), None, None)).findings
    out = tmp_path / "findings.jsonl"
    monitor = Monitor(detector_sinks(load_profile(PROFILE), None, None), [JsonLinesOutput(out)],
                      MonitorSettings(window=1e-9, update_every=0.0, series_every=1e-9))
    summary = monitor.run(_lab_batches(2000), threading.Event(), lambda: None)
    assert summary.packets == sum(len(b) for b in _lab_batches(65536))
    # the windows saw the safety write before the end of the capture ...
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    first = [line["rule"] for line in lines]
    assert "safety-override" in first
    # ... and the last line of each id is the final state, equal to the file analysis'
    last = {line["id"]: line for line in lines}
    by_id = {f.id: f for f in summary.findings}
    assert set(last) == set(by_id)
    for fid, line in last.items():
        assert line["count"] == by_id[fid].count
    windowed = {(f.id, f.count) for f in summary.findings if f.rule != "false-reading"}
    filed = {(f.id, f.count) for f in expected if f.rule != "false-reading"}
    assert {i for i, _ in windowed} == {i for i, _ in filed}
    assert windowed == filed


class _Recorder:
    """An output that notes how far into the capture the monitor was at each report."""

    def __init__(self) -> None:
        self.monitor: Monitor | None = None
        self.reports: list[tuple[float | None, Finding]] = []

    def emit(self, finding: Finding, new: bool) -> None:
        assert self.monitor is not None
        self.reports.append((self.monitor.capture_time, finding))

    def checkpoint(self, findings: object, now: float, final: bool) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("scenario", ["false-load", "wind-freeze", "replay"])
def test_process_checks_over_a_rolling_stretch_find_what_the_whole_file_shows(scenario: str) -> None:
    from cranewatch.process.engine import build_sink
    from cranewatch.process.signals import is_write_event

    capture = LAB_CAPTURE.parent.parent / scenario / "crane-lan.pcap"
    whole = analyze([capture], sinks=[build_sink(load_profile(PROFILE))]).findings
    assert whole  # the lab's labels: each of these scenarios falsifies readings
    template = build_sink(load_profile(PROFILE))
    rolling = RollingProcessChecks(lambda: build_sink(template.profile), is_write_event,
                                   span=120.0, every=10.0)
    recorder = _Recorder()
    monitor = Monitor([rolling], [recorder], MonitorSettings(window=1e-9, series_every=5.0))
    recorder.monitor = monitor

    def batches() -> Iterator[PacketBatch]:
        with open_capture(capture) as reader:
            yield from reader.batches(50)

    summary = monitor.run(batches(), threading.Event(), lambda: None)
    assert rolling.runs >= 3
    assert {f.id for f in summary.findings} == {f.id for f in whole}
    end = max(float(b.ts[-1]) for b in batches())
    # the first process finding was reported while the capture was still running
    first_at = min(at for at, _ in recorder.reports if at is not None)
    assert first_at < end - 5.0, (first_at, end)


def test_a_missing_interface_is_named_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "cwmon-none0", "--seconds", "1"]) == 3
    assert "cwmon-none0" in capsys.readouterr().err


def test_a_missing_tcpdump_exits_4(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(live.shutil, "which", lambda *a, **k: None)
    assert main(["monitor", "lo", "--seconds", "1"]) == 4
    assert "tcpdump is not installed" in capsys.readouterr().err


def test_a_missing_namespace_is_named_and_exits_3(as_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "eth0", "--netns", "cwmon-absent", "--seconds", "1"]) == 3
    assert "namespace 'cwmon-absent' does not exist" in capsys.readouterr().err


def test_interfaces_missing_or_down_inside_a_namespace_are_told_apart(
        as_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"cwmon-if-{os.getpid()}"
    _sh("ip", "netns", "add", ns)
    try:
        assert main(["monitor", "veth9", "--netns", ns, "--seconds", "1"]) == 3
        assert f"interface 'veth9' does not exist in namespace '{ns}'" in capsys.readouterr().err
        assert main(["monitor", "lo", "--netns", ns, "--seconds", "1"]) == 4  # lo is down there
        assert "is down" in capsys.readouterr().err
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        assert main(["monitor", "lo", "--netns", ns, "--filter", "tcp portx 5", "--seconds", "1"]) == 3
        assert "capture filter rejected" in capsys.readouterr().err
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_an_interface_that_disappears_ends_the_session_with_exit_3(as_root: None, tmp_path: Path) -> None:
    ns = f"cwmon-gone-{os.getpid()}"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "-n", ns, "link", "add", "a0", "type", "veth", "peer", "name", "a1")
        _sh("ip", "-n", ns, "link", "set", "a0", "up")
        _sh("ip", "-n", ns, "link", "set", "a1", "up")
        monitor = subprocess.Popen([PYTHON, "-m", "cranewatch", "monitor", "a0", "--netns", ns,
                                    "--seconds", "20"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert monitor.stderr is not None
        assert "monitoring" in monitor.stderr.readline()
        _sh("ip", "-n", ns, "link", "del", "a0")
        _, err = monitor.communicate(timeout=15)
        assert monitor.returncode == 3
        assert "stopped after" in err  # the session still ended with its summary
        assert "interface 'a0' in namespace" in err and "disappeared" in err
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_no_capture_privilege_exits_4(as_root: None, tmp_path: Path) -> None:
    """Root without CAP_NET_RAW (dropped from the bounding set) may not capture."""
    done = subprocess.run(["setpriv", "--bounding-set", "-net_raw,-net_admin", PYTHON, "-m",
                           "cranewatch", "monitor", "lo", "--seconds", "1"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 4
    assert "not allowed to capture on 'lo'" in done.stderr


# ------------------------------------------------------------------------- live, end to end

PLC_IP, INTRUDER_IP = "10.20.7.10", "10.20.7.66"


MODBUS_CLIENT = textwrap.dedent("""
    import sys
    from pymodbus.client import ModbusTcpClient
    client = ModbusTcpClient(sys.argv[1], port=502, timeout=2, retries=0)
    assert client.connect(), "no connection"
    step = sys.argv[2]
    if step == "bypass":
        print(client.write_coil(0, True, device_id=1))
        print(client.read_coils(0, count=1, device_id=1).bits[0])
    else:
        print(client.diag_restart_communication(False, device_id=1))
    client.close()
""")


def _ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def _wait_listening(ns: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in _sh(*_ns(ns, "ss", "-ltnH")):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} in {ns}")


class _Lines:
    """A process's stdout lines, each with the time it arrived."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, words: tuple[str, ...], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        for at, line in self.seen:
            if all(w in line for w in words):
                return at
        while time.monotonic() < deadline:
            try:
                at, line = self.lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            self.seen.append((at, line))
            if all(w in line for w in words):
                return at
        raise AssertionError(f"no line with {words} within {timeout} s; got {self.seen}")


def _frame_field(tshark: str, capture: str, frame: int, field: str) -> str:
    return _sh(tshark, "-r", capture, "-Y", f"frame.number == {frame}", "-T", "fields", "-e", field).strip()


def test_monitor_reports_live_attacks_once_with_the_right_hosts(as_root: None, tmp_path: Path,
                                                                tshark: str) -> None:
    tag = str(os.getpid())
    plc_ns, intruder_ns = f"cwmon-plc-{tag}", f"cwmon-int-{tag}"
    procs: list[subprocess.Popen[str]] = []
    try:
        for ns in (plc_ns, intruder_ns):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", plc_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", intruder_ns)
        for ns, ip in ((plc_ns, PLC_IP), (intruder_ns, INTRUDER_IP)):
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        (tmp_path / "server.py").write_text(MODBUS_SERVER)
        (tmp_path / "client.py").write_text(MODBUS_CLIENT)
        procs.append(subprocess.Popen(_ns(plc_ns, PYTHON, str(tmp_path / "server.py"), PLC_IP),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        key = tmp_path / "host_key"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (tmp_path / "sshd_config").write_text(
            f"Port 22\nListenAddress {PLC_IP}\nHostKey {key}\nPidFile none\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n")
        procs.append(subprocess.Popen(_ns(plc_ns, "/usr/sbin/sshd", "-D", "-e", "-f",
                                          str(tmp_path / "sshd_config")),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        _wait_listening(plc_ns, 502)
        _wait_listening(plc_ns, 22)

        out, db, ring = tmp_path / "findings.jsonl", tmp_path / "cw.db", tmp_path / "ring"
        monitor = subprocess.Popen(
            [PYTHON, "-m", "cranewatch", "monitor", "eth0", "--netns", plc_ns, "--profile",
             str(PROFILE), "--out", str(out), "--db", str(db), "--ring", str(ring),
             "--window", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        procs.append(monitor)
        assert monitor.stdout is not None and monitor.stderr is not None
        started = monitor.stderr.readline()
        assert "monitoring" in started, started + monitor.stderr.read()
        lines = _Lines(monitor.stdout)

        acted = time.monotonic()
        assert "True" in _sh(*_ns(intruder_ns, PYTHON, str(tmp_path / "client.py"), PLC_IP, "bypass"))
        seen = lines.wait_for(("safety-override", f"{INTRUDER_IP} → {PLC_IP}:502"), 10)
        assert seen - acted < 5
        assert "CRITICAL" in lines.seen[-1][1] and "safety_bypass=1" in lines.seen[-1][1]

        acted = time.monotonic()
        _sh(*_ns(intruder_ns, PYTHON, str(tmp_path / "client.py"), PLC_IP, "restart"))
        assert lines.wait_for(("plc-control", f"{INTRUDER_IP} → {PLC_IP}:502"), 10) - acted < 5

        acted = time.monotonic()
        ssh = subprocess.run(_ns(intruder_ns, "ssh", "-o", "BatchMode=yes", "-o",
                                 "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                 "-o", "ConnectTimeout=5", f"operator@{PLC_IP}", "true"),
                             capture_output=True, text=True, timeout=30)
        assert "Permission denied" in ssh.stderr  # a real key exchange, then refused
        assert lines.wait_for(("remote-access", f"{INTRUDER_IP} → {PLC_IP}:22"), 10) - acted < 5

        monitor.send_signal(signal.SIGINT)
        assert monitor.wait(15) == 0
        summary = monitor.stderr.read()
        assert "stopped after" in summary and "findings" in summary

        # JSON lines: the attacks happened once each, so one line each; findings that grew
        # (the new host, the new master) have later lines, the last of which the store holds
        records = [json.loads(line) for line in out.read_text().splitlines()]
        # what the session could not check comes first (no baseline: c2's new TLS names)
        assert [r["checks"] for r in records if r["type"] == "skipped"] == ["c2"]
        records = [r for r in records if r["type"] == "finding"]
        wanted = {"safety-override": 502, "plc-control": 502, "remote-access": 22}
        for rule, port in wanted.items():
            mine = [r for r in records if r["rule"] == rule]
            assert len(mine) == 1, (rule, mine)
            assert (mine[0]["src"], mine[0]["dst"], mine[0]["count"]) == (INTRUDER_IP, f"{PLC_IP}:{port}", 1)
        last = {r["id"]: r for r in records}
        from cranewatch.store import open_store

        with open_store(db) as store:
            stored = store.findings("STS-07")
            assert len(stored) == len({f.id for f in stored}) == len(last)
            assert {f.id: f.count for f in stored} == {i: r["count"] for i, r in last.items()}
            runs = store.runs("STS-07")
            assert runs and all(r.status == "complete" for r in runs)
            assert {f.id for f in store.current_findings("STS-07")} == set(last)

        # the evidence names ring files that exist, at frames tshark reads as the attack
        bypass = next(r for r in records if r["rule"] == "safety-override")["evidence"][0]
        assert Path(bypass["source"]).parent == ring and Path(bypass["source"]).exists()
        assert _frame_field(tshark, bypass["source"], bypass["frames"][0], "modbus.func_code") == "5"
        restart = next(r for r in records if r["rule"] == "plc-control")["evidence"][0]
        assert _frame_field(tshark, restart["source"], restart["frames"][0], "modbus.func_code") == "8"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for ns in (plc_ns, intruder_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert tag not in _sh("ip", "netns", "list")


def test_bounded_run_by_packets_stops_by_itself(as_root: None) -> None:
    monitor = subprocess.Popen(
        [PYTHON, "-m", "cranewatch", "monitor", "lo", "--packets", "4", "--seconds", "20",
         "--filter", "tcp port 5998"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert monitor.stderr is not None
    assert "monitoring" in monitor.stderr.readline()
    started = time.monotonic()
    for _ in range(2):  # a SYN and its RST each: a closed port on loopback
        subprocess.run(["socat", "-u", "/dev/null", "TCP:127.0.0.1:5998"], capture_output=True,
                       timeout=10)
    _, err = monitor.communicate(timeout=15)
    assert monitor.returncode == 0
    assert time.monotonic() - started < 10  # long before --seconds 20
    assert "4 packets" in err


def test_sigterm_stops_cleanly_and_leaves_no_tcpdump(as_root: None, tmp_path: Path) -> None:
    monitor = subprocess.Popen([PYTHON, "-m", "cranewatch", "monitor", "lo", "--filter",
                                "tcp port 5997", "--out", str(tmp_path / "f.jsonl")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert monitor.stderr is not None
    banner = monitor.stderr.readline()
    tcpdump_pid = int(banner.split("capture pid ")[1].split(")")[0])
    assert Path(f"/proc/{tcpdump_pid}").exists()
    monitor.send_signal(signal.SIGTERM)
    _, err = monitor.communicate(timeout=15)
    assert monitor.returncode == 0
    assert "stopped after" in err and "0 findings" in err
    assert not Path(f"/proc/{tcpdump_pid}").exists()


def test_a_killed_monitor_loses_no_finding_already_reported(as_root: None, tmp_path: Path) -> None:
    """SIGKILL right after a finding was printed: the store and the JSON lines already hold it."""
    out, db = tmp_path / "f.jsonl", tmp_path / "cw.db"
    monitor = subprocess.Popen([PYTHON, "-m", "cranewatch", "monitor", "lo", "--filter",
                                "tcp port 5996", "--crane", "T-1", "--out", str(out), "--db",
                                str(db), "--window", "0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = subprocess.Popen(["socat", "TCP-LISTEN:5996,bind=127.0.0.1,reuseaddr",
                               "SYSTEM:'echo SSH-2.0-OpenSSH_9.2p1; sleep 1'"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tcpdump_pid = 0
    try:
        assert monitor.stdout is not None and monitor.stderr is not None
        banner = monitor.stderr.readline()
        tcpdump_pid = int(banner.split("capture pid ")[1].split(")")[0])
        subprocess.run(["socat", "-", "TCP:127.0.0.1:5996"], input="SSH-2.0-OpenSSH_9.6\r\n",
                       capture_output=True, text=True, timeout=10)
        lines = _Lines(monitor.stdout)
        lines.wait_for(("remote-access", "127.0.0.1 → 127.0.0.1:5996"), 10)
        monitor.kill()
        monitor.wait(10)
    finally:
        for proc in (monitor, server):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for pipe in (monitor.stdout, monitor.stderr):
            if pipe is not None:
                pipe.close()
        if tcpdump_pid and Path(f"/proc/{tcpdump_pid}").exists():
            os.kill(tcpdump_pid, signal.SIGTERM)  # a guard that outlived the monitor: a bug
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["type"] == "skipped"  # no profile, no baseline: said first
    records = [r for r in records if r["type"] == "finding"]
    assert [(r["rule"], r["src"], r["dst"]) for r in records] == [
        ("remote-access", "127.0.0.1", "127.0.0.1:5996")]
    from cranewatch.store import open_store

    with open_store(db) as store:
        assert [f.id for f in store.current_findings("T-1")] == [records[0]["id"]]


def test_the_read_ahead_is_bounded_in_bytes_not_batches() -> None:
    """The reader thread runs at most ``read_ahead`` bytes (plus the batch that passes it)
    ahead of the analysis, whatever the batches' size: 64 batches of 65,536 packets were
    ~500 MB (the soak benchmark's first runs)."""
    sizes = [len(b.buf) + 44 * len(b) for b in _lab_batches(40)]
    ahead: list[int] = []
    read = 0
    monitor = Monitor([], [], MonitorSettings(window=3600.0))
    monitor.read_ahead = 3 * max(sizes)
    fed = monitor.feed

    def slow_feed(batch: PacketBatch) -> None:
        time.sleep(0.01)  # the reader fills the queue while the analysis works
        ahead.append(read)
        fed(batch)

    def counted() -> Iterator[PacketBatch]:
        nonlocal read
        for batch in _lab_batches(40):
            read += len(batch.buf) + 44 * len(batch)
            yield batch

    monitor.feed = slow_feed  # type: ignore[method-assign]
    summary = monitor.run(counted(), threading.Event(), lambda: None)
    assert summary.batches == len(sizes) > 20
    analysed = [sum(sizes[:i]) for i in range(len(sizes))]
    # read, minus analysed before this batch: at most the bound, one batch past it, the
    # batch being fed and the one the reader holds while it waits
    lead = max(r - a for r, a in zip(ahead, analysed, strict=True))
    assert 3 * max(sizes) <= lead <= 6 * max(sizes)
