"""Routed test networks in namespaces a test creates: one router namespace, one veth link to
each side namespace, a default route on each side through the router."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A pymodbus TCP server on port 502 of the address given (argv[1]): 16 coils, inputs and registers
MODBUS_SERVER = textwrap.dedent("""
    import asyncio, logging, sys
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    def bits(n): return [SimData(0, values=[False] * n, datatype=DataType.BITS)]
    def regs(n): return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)]
    device = SimDevice(id=1, simdata=(bits(16), bits(16), regs(16), regs(16)),
                       use_bit_addressing=True)
    async def serve():
        server = ModbusTcpServer(device, address=(sys.argv[1], 502))
        await server.serve_forever()
    asyncio.run(serve())
""")


@dataclass(frozen=True, slots=True)
class Link:
    """One side of the router: its namespace, the two ends of its veth and its addresses."""

    netns: str
    router_if: str
    side_if: str
    router_addr: str  # with its prefix, e.g. "10.20.7.254/24"
    addrs: tuple[str, ...]  # the side's addresses, with their prefixes
    source: str | None = None  # the address the side's own connections leave from


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def route_through(router: str, links: Iterable[Link]) -> None:
    """Wire each side to the router (namespaces already made) and let the router forward."""
    for link in links:
        ip("-n", router, "link", "add", link.router_if, "type", "veth", "peer", "name",
           link.side_if, "netns", link.netns)
        ip("-n", router, "addr", "add", link.router_addr, "dev", link.router_if)
        ip("-n", router, "link", "set", link.router_if, "up")
        for addr in link.addrs:
            ip("-n", link.netns, "addr", "add", addr, "dev", link.side_if)
        ip("-n", link.netns, "link", "set", link.side_if, "up")
        ip("-n", link.netns, "link", "set", "lo", "up")
        gateway = link.router_addr.split("/")[0]
        source = ("src", link.source) if link.source else ()
        ip("-n", link.netns, "route", "add", "default", "via", gateway, *source)
    ip("-n", router, "link", "set", "lo", "up")
    subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                   check=True, capture_output=True)


def wait_listening(netns: str, addr: str, port: int, timeout: float = 15.0) -> None:
    """Until a TCP socket listens on ``addr:port`` (or on every address) in ``netns``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
        if any(f"{a}:{port}" in out for a in (addr, "*", "0.0.0.0")):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {addr}:{port} in {netns}")


def stop(daemons: Iterable[subprocess.Popen[Any]]) -> None:
    """Ask every daemon to end, then kill what is still there after five seconds."""
    daemons = list(daemons)
    for daemon in daemons:
        daemon.terminate()
    for daemon in daemons:
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def remove_namespaces(names: Iterable[str]) -> None:
    """Delete the test's own namespaces, killing what still runs in them, and their /etc/netns
    files (``ip netns exec`` binds those over /etc)."""
    for name in names:
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)  # only processes inside our own namespaces
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        Path("/etc/netns").rmdir()  # only when nothing else uses it
