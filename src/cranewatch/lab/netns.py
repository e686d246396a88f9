"""Network namespaces, bridges and veth pairs for the lab, through iproute2.

Every namespace the lab creates is named ``cwlab-*``; bridges and veths live only inside
those namespaces (the bridges in the switch namespace ``cwlab-sw``, each host's ``eth*``
in its own), so nothing is ever added to the host's own namespace and deleting the
namespaces removes every link. ``clean`` finds and removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from cranewatch.errors import EnvironmentProblem

__all__ = [
    "PREFIX",
    "SWITCH",
    "add_bridge",
    "add_namespace",
    "clean",
    "delete_namespace",
    "ip",
    "lab_namespaces",
    "ns_argv",
    "plug",
    "require_root_and_tools",
    "run",
    "sysctl",
]

PREFIX = "cwlab-"
SWITCH = "cwlab-sw"  # the namespace that holds the bridges: the lab's switch
TEMP_PREFIX = "cwlab-run-"  # temporary directories (configs, keys, logs of a run)
LOCK_PATH = Path("/run/lock/cwlab.lock") if Path("/run/lock").is_dir() else Path("/tmp/cwlab.lock")


@contextlib.contextmanager
def run_lock(wait: float) -> Iterator[None]:
    """Hold the lab lock: one run at a time on a machine (the namespace names are fixed).

    Waits up to ``wait`` seconds for a run in progress to finish. While the lock is held,
    any ``cwlab-*`` namespace that exists belongs to the holder; when it is free, they are
    leftovers of a killed run.
    """
    with LOCK_PATH.open("a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EnvironmentProblem(
                        f"another lab run is active (lock {LOCK_PATH}); wait for it to end"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command, return its stdout; a failure becomes an EnvironmentProblem."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{argv[0]} is not installed (scripts/install-deps.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise EnvironmentProblem(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return run(argv, check=check)


def ns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def sysctl(netns: str, *settings: str) -> None:
    run(ns_argv(netns, ["sysctl", "-q", "-w", *settings]))


def require_root_and_tools(tools: Sequence[str]) -> None:
    """Raise EnvironmentProblem unless we are root and every tool is on PATH."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the lab needs root (it creates network namespaces): run it with sudo or as root"
        )
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise EnvironmentProblem(
            f"the lab needs {', '.join(missing)}: install with scripts/install-deps.sh"
        )


def lab_namespaces() -> list[str]:
    """Names of every ``cwlab-*`` namespace present."""
    names = []
    for line in run(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            names.append(name)
    return names


def add_namespace(name: str) -> None:
    if not name.startswith(PREFIX):
        raise ValueError(f"lab namespace without the {PREFIX} prefix: {name}")
    run(["ip", "netns", "add", name])
    # No IPv6: link-local addresses would make router solicitations and MLD reports that a
    # 2010s-era crane LAN does not carry, and that only add noise to the captures.
    sysctl(name, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    ip("link", "set", "lo", "up", netns=name)


def add_bridge(bridge: str) -> None:
    """A bridge in the switch namespace (a segment of the lab network)."""
    ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0",
       "mcast_snooping", "0",
       netns=SWITCH)
    ip("link", "set", bridge, "up", netns=SWITCH)


def plug(netns: str, ifname: str, mac: str, bridge: str, port: str) -> None:
    """A veth from ``netns`` (``ifname``, with ``mac``) to a port of ``bridge``."""
    ip("link", "add", port, "type", "veth", "peer", "name", ifname, "address", mac,
       "netns", netns, netns=SWITCH)
    ip("link", "set", port, "master", bridge, "up", netns=SWITCH)
    ip("link", "set", ifname, "up", netns=netns)


def _pids_in(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def delete_namespace(netns: str) -> None:
    """Stop every process left in ``netns``, then delete it (its links go with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_in(netns)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _pids_in(netns):
            time.sleep(0.05)
    for _ in range(20):
        run(["ip", "netns", "delete", netns], check=False)
        if netns not in lab_namespaces():
            return
        time.sleep(0.1)  # a process that was still exiting kept it busy


def clean() -> list[str]:
    """Remove every lab namespace (and its processes and links) and lab temp directories.

    Refuses while a run is active (it holds the lab lock); the caller holds no lock.
    Returns the names removed, the switch namespace last so hosts lose their links first.
    """
    with run_lock(wait=0.0):
        return remove_leftovers()


def remove_leftovers() -> list[str]:
    """``clean`` for a caller that already holds the lab lock."""
    names = sorted(lab_namespaces(), key=lambda name: name == SWITCH)
    for name in names:
        delete_namespace(name)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for leftover in tmp.glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return names
