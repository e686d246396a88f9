"""Run one lab scenario: build the network, start the parts, capture, label, tear down.

``run_scenario`` is the whole life of a run. Everything it creates (namespaces, links,
processes, the temporary directory) is removed in ``finally``, also when a part fails to
start, on Ctrl-C and on SIGTERM. The capture is a SPAN of the crane LAN: tcpdump on the
crane bridge inside the switch namespace; optionally also the gateway's outside interface.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from cranewatch.errors import EnvironmentProblem
from cranewatch.lab import netns, services, topology
from cranewatch.lab.scenario import AttackPlan, Scenario

__all__ = ["CAPTURE_NAME", "OUTSIDE_CAPTURE_NAME", "Lab", "Part", "iso", "run_scenario"]

CAPTURE_NAME = "crane-lan.pcap"
OUTSIDE_CAPTURE_NAME = "outside.pcap"
TOOLS = ("ip", "tcpdump", "nft", "mosquitto", "dnsmasq", "ss")
PLC_HISTORY_S = 11.0  # seconds a faulty PLC runs honestly before its fault window
LOCK_WAIT = 600.0  # a run waits this long for another run on the machine to finish

# Masters and the reads they repeat (documented for the tests and the baseline learner).
POLLING = (
    {"master": "10.20.7.30", "slave": "10.20.7.10", "unit": 1, "function": 4, "address": 0,
     "quantity": 12, "interval_s": 0.2, "who": "CMS"},
    {"master": "10.20.7.30", "slave": "10.20.7.10", "unit": 1, "function": 2, "address": 0,
     "quantity": 7, "interval_s": 0.2, "who": "CMS"},
    {"master": "10.20.7.20", "slave": "10.20.7.10", "unit": 1, "function": 2, "address": 0,
     "quantity": 2, "interval_s": 0.5, "who": "OCR"},
)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class Part:
    """One started process (inside a namespace) and its log."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    log: Path
    finished: bool = False  # a tool that ran to completion (not a service that died)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            # ip netns exec execs the program, so the group is the part and its children.
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(2.0)


@dataclass
class Lab:
    """A running lab: where its files are and the processes started in it."""

    tmp: Path
    logs: Path
    seed: int
    hosts: tuple[topology.Host, ...]
    parts: list[Part] = field(default_factory=list)
    _handles: list[IO[bytes]] = field(default_factory=list)

    def host(self, name: str) -> topology.Host:
        for candidate in self.hosts:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def netns_of(self, host: str) -> str:
        return netns.SWITCH if host == "sw" else self.host(host).netns

    def start(self, host: str, argv: list[str], name: str | None = None) -> Part:
        """Start ``argv`` inside ``host``'s namespace ("sw": the switch), log to logs/<name>.log."""
        name = name or Path(argv[0]).name
        log_path = self.logs / f"{name}.log"
        handle = log_path.open("ab")
        self._handles.append(handle)
        try:
            process = subprocess.Popen(
                netns.ns_argv(self.netns_of(host), argv), stdout=handle,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"cannot start {argv[0]}: not installed") from exc
        part = Part(name, host, process, log_path)
        self.parts.append(part)
        return part

    def python(self, host: str, module: str, *args: str, name: str | None = None) -> Part:
        """Start ``python -m cranewatch.lab.<module>`` (the same interpreter) in ``host``."""
        argv = [sys.executable, "-u", "-m", f"cranewatch.lab.{module}", *args]
        return self.start(host, argv, name or module.rsplit(".", 1)[-1])

    def run_part(self, host: str, module: str, *args: str, name: str | None = None,
                 timeout: float = 120.0) -> None:
        """Run a part to completion (an attack tool); a failure is an EnvironmentProblem."""
        part = self.python(host, module, *args, name=name)
        self.wait_part(part, timeout)

    def wait_part(self, part: Part, timeout: float = 120.0) -> None:
        try:
            code = part.process.wait(timeout)
        except subprocess.TimeoutExpired:
            part.stop()
            raise EnvironmentProblem(f"{part.name} in {part.host} ran over {timeout:.0f} s") from None
        if code != 0:
            raise EnvironmentProblem(f"{part.name} in {part.host} failed ({code}): {tail(part.log)}")
        part.finished = True

    def wait_listening(self, host: str, port: int, part: Part, udp: bool = False,
                       timeout: float = 15.0) -> None:
        """Wait until ``port`` listens in ``host``; fail early when the part died."""
        flag = "-Hlun" if udp else "-Hltn"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = netns.run(["ss", "-N", self.host(host).netns, flag, f"sport = :{port}"],
                            check=False)
            if out.strip():
                return
            if not part.alive():
                raise EnvironmentProblem(
                    f"{part.name} in {host} exited with {part.process.returncode} before "
                    f"listening on :{port}: {tail(part.log)}")
            time.sleep(0.05)
        raise EnvironmentProblem(f"{part.name} in {host} did not listen on :{port} in "
                                 f"{timeout:.0f} s: {tail(part.log)}")

    def run(self, host: str, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a short command in ``host`` and wait for it (attack tools, nft)."""
        return subprocess.run(netns.ns_argv(self.host(host).netns, argv), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def nft(self, host: str, ruleset: str) -> None:
        done = subprocess.run(netns.ns_argv(self.host(host).netns, ["nft", "-f", "-"]),
                              input=ruleset, capture_output=True, text=True, timeout=10)
        if done.returncode:
            raise EnvironmentProblem(f"nft in {host} failed: {done.stderr.strip()}")

    def stop_all(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        for handle in self._handles:
            handle.close()


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind through the clean-up exactly as Ctrl-C does (the CLI then exits 130).
    raise KeyboardInterrupt("SIGTERM")


def _wait_capture(part: Part, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in part.log.read_text(errors="replace"):
            return
        if not part.alive():
            raise EnvironmentProblem(f"tcpdump failed: {tail(part.log)}")
        time.sleep(0.05)
    raise EnvironmentProblem(f"tcpdump did not start: {tail(part.log)}")


def run_scenario(scenario: Scenario, out: Path, seconds: float, seed: int | None = None,
                 outside_capture: bool = False, keep_logs: bool = True,
                 cameras: bool = False) -> dict[str, Any]:
    """Run ``scenario`` for ``seconds`` (capture time) and write capture + labels.json to ``out``.

    ``cameras`` adds the two IP cameras and the OCR's RTSP sessions with them (off by
    default: the bundled captures and the baselines learned from them have no cameras).
    Returns the labels document.
    """
    netns.require_root_and_tools(TOOLS)
    if seconds < 10:
        raise EnvironmentProblem("a lab run needs at least 10 seconds")
    with netns.run_lock(wait=LOCK_WAIT):
        # Holding the lock, any cwlab-* namespace is a leftover of a killed run.
        netns.remove_leftovers()
        return _run_locked(scenario, out, seconds, seed, outside_capture, keep_logs, cameras)


def _run_locked(scenario: Scenario, out: Path, seconds: float, seed: int | None,
                outside_capture: bool, keep_logs: bool, cameras: bool) -> dict[str, Any]:
    seed = scenario.seed if seed is None else seed
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=netns.TEMP_PREFIX))
    logs = out / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir()
    hosts = topology.hosts_for(scenario.extra_hosts + (topology.CAMERAS if cameras else ()))
    lab = Lab(tmp, logs, seed, hosts)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    created: list[str] = []
    try:
        created = topology.build(hosts)
        services.configure_routers(lab)
        captures = [_start_capture(lab, "sw", "br-crane", out / CAPTURE_NAME)]
        if outside_capture:
            captures.append(_start_capture(lab, "gw", "eth2", out / OUTSIDE_CAPTURE_NAME))
        t0 = time.time()
        services.start_terminal(lab)
        attack_start = t0 + max(6.0, 0.35 * seconds)
        if scenario.plc_fault:
            # A tampered PLC needs its own history first (a replay reaches back 10 s).
            attack_start = max(attack_start, time.time() + PLC_HISTORY_S)
        attack_end = max(t0 + 0.85 * seconds, min(attack_start + 5.0, t0 + seconds - 0.5))
        services.start_crane(lab, scenario.plc_fault, attack_start, attack_end)
        if scenario.prepare:
            scenario.prepare(lab)
        windows = _perform_attack(lab, scenario, attack_start, attack_end)
        _sleep_until(t0 + seconds)
        for part in lab.parts:
            if part not in captures and not part.finished and not part.alive():
                raise EnvironmentProblem(f"{part.name} in {part.host} died during the run: "
                                         f"{tail(part.log)}")
        for part in reversed(lab.parts):  # masters before the PLC, clients before servers
            if part not in captures:
                part.stop()
        time.sleep(0.3)  # let the last FIN/ACKs and MQTT DISCONNECTs reach the capture
        for part in captures:
            part.stop()
        t_end = time.time()
        labels = _labels(scenario, seed, t0, t_end, lab, windows, outside_capture)
        (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
        return labels
    finally:
        signal.signal(signal.SIGTERM, previous)
        lab.stop_all()
        for name in sorted(created or netns.lab_namespaces(), key=lambda n: n == netns.SWITCH):
            netns.delete_namespace(name)
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(logs, ignore_errors=True)


def _start_capture(lab: Lab, host: str, iface: str, path: Path) -> Part:
    if path.exists():
        path.unlink()
    argv = ["tcpdump", "-i", iface, "-n", "-U", "-s", "0", "--immediate-mode", "-w", str(path)]
    # tcpdump drops privileges to the tcpdump user, which may not write to --out.
    argv[1:1] = ["-Z", "root"]
    part = lab.start(host, argv, f"tcpdump-{iface}")
    _wait_capture(part)
    return part


def _sleep_until(epoch: float) -> None:
    while (left := epoch - time.time()) > 0:
        time.sleep(min(left, 0.5))


def _perform_attack(lab: Lab, scenario: Scenario, start: float, end: float) -> list[dict[str, Any]]:
    if not scenario.attacks:
        return []
    _sleep_until(start)
    if scenario.plc_fault:
        # The PLC itself lies from start to end; nothing to launch.
        _sleep_until(end)
        return [_window(plan, start, end) for plan in scenario.attacks]
    began = time.time()
    if scenario.act:
        scenario.act(lab, end)
    finished = time.time()
    return [_window(plan, began, finished) for plan in scenario.attacks]


def _window(plan: AttackPlan, start: float, end: float) -> dict[str, Any]:
    record = asdict(plan)
    record["technique"] = list(plan.technique)
    record.update(start=round(start, 3), end=round(end, 3), start_iso=iso(start), end_iso=iso(end))
    return record


def _labels(scenario: Scenario, seed: int, t0: float, t_end: float, lab: Lab,
            windows: list[dict[str, Any]], outside_capture: bool) -> dict[str, Any]:
    journal = lab.tmp / "ocr-journal.jsonl"
    cargo = []
    if journal.exists():
        for line in journal.read_text().splitlines():
            event = json.loads(line)
            cargo.append(event)
    hosts = []
    for lab_host in lab.hosts:
        for index, iface in enumerate(lab_host.interfaces):
            hosts.append({"name": lab_host.name if index == 0 else f"{lab_host.name}:eth{index}",
                          "role": lab_host.role, "zone": iface.segment, "ip": iface.ip,
                          "mac": iface.mac, "expected": lab_host.expected})
    return {
        "scenario": scenario.name,
        "summary": scenario.summary,
        "crane": "STS-07",
        "seed": seed,
        "start": round(t0, 3), "end": round(t_end, 3),
        "start_iso": iso(t0), "end_iso": iso(t_end),
        "captures": {"crane_lan": CAPTURE_NAME,
                     **({"outside": OUTSIDE_CAPTURE_NAME} if outside_capture else {})},
        "hosts": hosts,
        "polling": list(POLLING),
        "maintenance_windows": [],  # none announced: every PLC write in the lab is unannounced
        "attacks": windows,
        "ocr_journal": cargo,
        "generated_by": f"cranewatch lab run {scenario.name} --seconds {t_end - t0:.0f} --seed {seed}",
    }
