"""monitor's capture dies with it, however it ends (issue 19, case 11).

Before: SIGKILL of ``cranewatch monitor`` left tcpdump running (it would end at its next
packet, on SIGPIPE; on a quiet interface, never). tcpdump cannot carry PR_SET_PDEATHSIG itself
(the kernel clears it when tcpdump drops root), so it runs under a guard that does.
Loopback only, a filter on a port nothing uses: the capture sees no packet, the quiet case.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cranewatch.sources.live import CAPTURE_GUARD, die_with_this_process, guarded_argv

REPO = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(x) for x in text.split()]
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that may never come)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_sigkilled_monitor_leaves_no_tcpdump(as_root: None) -> None:
    if shutil.which("tcpdump") is None:
        pytest.fail("tcpdump is not installed: run scripts/install-deps.sh")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "cranewatch", "monitor", "lo", "--filter", "tcp port 5993", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    capture: list[int] = []
    try:
        assert monitor.stderr is not None
        assert "monitoring live:lo" in monitor.stderr.readline()  # tcpdump listens
        capture = descendants(monitor.pid)
        assert any(command(pid).split(" ")[0].endswith("tcpdump") for pid in capture), [command(p) for p in capture]
        monitor.kill()
        monitor.wait(10)
        deadline = time.monotonic() + 2.0
        while any(running(pid) for pid in capture) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [command(pid) for pid in capture if running(pid)]
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(10)
        for pid in capture:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if monitor.stderr is not None:
            monitor.stderr.close()


def test_the_guard_passes_on_the_exit_status_and_a_stop() -> None:
    done = subprocess.run(guarded_argv(["sh", "-c", "exit 7"]), timeout=10)
    assert done.returncode == 7
    guard = subprocess.Popen(guarded_argv(["sleep", "30"]), start_new_session=True)
    try:
        time.sleep(0.3)
        sleeper = children(guard.pid)
        assert len(sleeper) == 1 and command(sleeper[0]).startswith("sleep")
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(5) == 128 + signal.SIGTERM  # sleep's status: ended by the SIGTERM passed on
        assert not running(sleeper[0])
    finally:
        if guard.poll() is None:
            os.killpg(guard.pid, signal.SIGKILL)
            guard.wait(5)


def test_the_guard_dies_with_the_thread_that_started_it() -> None:
    assert "trap" in CAPTURE_GUARD and die_with_this_process() is not None
    script = ("import subprocess, sys, time\n"
              "from cranewatch.sources.live import die_with_this_process, guarded_argv\n"
              "p = subprocess.Popen(guarded_argv(['sleep', '30']), start_new_session=True,"
              " preexec_fn=die_with_this_process())\n"
              "print(p.pid, flush=True)\n"
              "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    spawned: list[int] = []
    try:
        assert parent.stdout is not None
        guard = int(parent.stdout.readline())
        time.sleep(0.3)
        spawned = [guard, *children(guard)]
        assert len(spawned) == 2
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 2.0
        while any(running(pid) for pid in spawned) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in spawned if running(pid)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        for pid in spawned:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_monitor_whose_reader_went_away_stops_cleanly(as_root: None) -> None:
    """``monitor lo | head -1``: the first finding line meets a closed pipe; the session ends
    as if stopped (summary, exit 0), not with a traceback, and not running on unread."""
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: run scripts/install-deps.sh")
    read, write = os.pipe()
    os.close(read)
    server = subprocess.Popen(["socat", "TCP-LISTEN:5991,bind=127.0.0.1,reuseaddr",
                               "SYSTEM:'echo SSH-2.0-OpenSSH_9.2p1; sleep 1'"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monitor = subprocess.Popen(
        [sys.executable, "-m", "cranewatch", "monitor", "lo", "--filter", "tcp port 5991",
         "--window", "0.2", "--seconds", "60"],
        stdout=write, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    os.close(write)
    try:
        assert monitor.stderr is not None
        assert "monitoring live:lo" in monitor.stderr.readline()
        started = time.monotonic()
        subprocess.run(["socat", "-", "TCP:127.0.0.1:5991"], input="SSH-2.0-OpenSSH_9.6\r\n",
                       capture_output=True, text=True, timeout=10)
        err = monitor.communicate(timeout=30)[1]
        assert monitor.returncode == 0, err
        assert time.monotonic() - started < 20  # long before --seconds 60
        assert "stopped after" in err and "1 findings" in err and "Traceback" not in err
    finally:
        for proc in (monitor, server):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        if monitor.stderr is not None:
            monitor.stderr.close()
