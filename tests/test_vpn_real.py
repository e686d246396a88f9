"""A VPN out of the crane, made by real OpenVPN, captured with tcpdump, judged by ``analyze``.

A tunnel from a crane PC to a vendor's server is the quiet way to a permanent backdoor: the
traffic inside is encrypted, but OpenVPN's opening (the client's and the server's hard-reset
packets with their session ids) is not, whatever tls-auth or tls-crypt hide. Here the CMS opens
a real OpenVPN 2.6 tunnel (TLS mode, certificates made by openssl for the test) to an outside
server over UDP 1194 and over TCP 443, and reaches a service through each tunnel.

Topology (namespaces ``cwvpn-*``, made and removed here; tcpdump on the router's crane leg):

    cwvpn-crane 10.20.7.30 (cms) ── 10.20.7.254 cwvpn-rt 198.51.100.1 ── cwvpn-out 198.51.100.7

Expected values come from OpenVPN itself ("Initialization Sequence Completed", a service on
the vendor's tunnel address answering the CMS through it) and from tshark's OpenVPN dissector (the first frame of each
session's hard reset). About 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_helpers import Link, ip, remove_namespaces, route_through, stop

REPO = Path(__file__).resolve().parent.parent
NS = {"rt": "cwvpn-rt", "crane": "cwvpn-crane", "out": "cwvpn-out"}
CMS, VENDOR = "10.20.7.30", "198.51.100.7"
SESSIONS = (("udp", 1194, "10.99.1"), ("tcp", 443, "10.99.2"))  # transport, port, tunnel net


def ns_cmd(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NS[ns], *cmd]


def make_certificates(tmp: Path) -> None:
    """A CA, the vendor's server certificate and the crane's client certificate (EC P-256)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=vendor-ca")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (tmp / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\nkeyUsage=digitalSignature\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


def wait_for(log: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (said := log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"no {text!r} in {log.name}: {said[-1500:]}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]], list[str]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    missing = [t for t in ("openvpn", "openssl", "tcpdump", "tshark") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/install-deps.sh")
    tmp = tmp_path_factory.mktemp("cwvpn")
    make_certificates(tmp)
    remove_namespaces(NS.values())
    for name in NS.values():
        ip("netns", "add", name)
    route_through(NS["rt"], [
        Link(NS["crane"], "cwvpn-rc", "eth0", "10.20.7.254/24", (f"{CMS}/24",)),
        Link(NS["out"], "cwvpn-ro", "eth0", "198.51.100.1/24", (f"{VENDOR}/24",))])
    daemons: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        pcap = tmp / "vpn.pcap"
        # immediate mode: the whole exchange takes about a second, less than tcpdump's buffer
        # timeout, and packets still in the buffer at SIGINT would be lost
        tcpdump = subprocess.Popen(ns_cmd("rt", "tcpdump", "-i", "cwvpn-rc", "--immediate-mode", "-U",
                                          "-w", str(pcap)),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        daemons.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on cwvpn-rc ...": the capture runs
        pings = []
        common = ["--dev", "tun", "--ca", "ca.crt", "--verb", "3", "--cd", str(tmp)]
        for transport, port, net in SESSIONS:
            server_log, client_log = tmp / f"server-{port}.log", tmp / f"client-{port}.log"
            logs += [server_log, client_log]
            server = ["openvpn", *common, "--server", f"{net}.0", "255.255.255.0", "--topology",
                      "subnet", "--cert", "server.crt", "--key", "server.key", "--dh", "none",
                      "--proto", "udp" if transport == "udp" else "tcp-server",
                      "--local", VENDOR, "--port", str(port), "--log", str(server_log)]
            daemons.append(subprocess.Popen(ns_cmd("out", *server), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            wait_for(server_log, "Initialization Sequence Completed")
            client = ["openvpn", *common, "--client", "--cert", "client.crt", "--key", "client.key",
                      "--remote", VENDOR, str(port), "--nobind", "--remote-cert-tls", "server",
                      "--proto", "udp" if transport == "udp" else "tcp-client",
                      "--log", str(client_log)]
            daemons.append(subprocess.Popen(ns_cmd("crane", *client), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            wait_for(client_log, "Initialization Sequence Completed")
            # a service on the vendor's end of the tunnel, reached from the CMS through it
            daemons.append(subprocess.Popen(
                ns_cmd("out", "socat", f"TCP-LISTEN:7000,bind={net}.1,reuseaddr",
                       f"SYSTEM:echo through-the-vpn-{port}"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while True:
                done = subprocess.run(ns_cmd("crane", "socat", "-T", "3", "-", f"TCP:{net}.1:7000"),
                                      capture_output=True, text=True, timeout=20, input="")
                if done.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            pings.append(done.stdout)
        time.sleep(0.5)
        tcpdump.send_signal(signal.SIGINT)
        _, said = tcpdump.communicate(timeout=10)
        assert not said.startswith(b"0 packets captured"), said.decode(errors="replace")
        done = subprocess.run([sys.executable, "-m", "cranewatch", "analyze", str(pcap), "--profile",
                               str(REPO / "profiles" / "sts-07.toml"), "--format", "jsonl"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        yield pcap, [json.loads(line) for line in done.stdout.splitlines()], pings
    finally:
        stop(daemons)
        if tcpdump.stderr is not None:
            tcpdump.stderr.close()
        remove_namespaces(NS.values())


def test_the_tunnels_really_carried_traffic(captured: tuple[Path, list[dict[str, Any]], list[str]]) -> None:
    _, _, pings = captured
    assert len(pings) == len(SESSIONS)
    for (_, port, _), out in zip(SESSIONS, pings, strict=True):
        assert out.strip() == f"through-the-vpn-{port}", out


def test_each_tunnel_is_one_critical_remote_access_finding(
        captured: tuple[Path, list[dict[str, Any]], list[str]]) -> None:
    pcap, records, _ = captured
    findings = {f["dst"]: f for f in records
                if f["type"] == "finding" and f["category"] == "remote-access"}
    assert set(findings) == {f"{VENDOR}:{port}" for _, port, _ in SESSIONS}
    for transport, port, _ in SESSIONS:
        f = findings[f"{VENDOR}:{port}"]
        assert f["src"] == CMS and f["severity"] == "critical" and f["count"] == 1
        assert f["title"].startswith("OPENVPN session out of the crane zone")
        assert f["evidence"][0]["values"]["protocol"] == "openvpn"
        # first seen at tshark's first hard reset of that connection (client or server)
        reset = "openvpn.opcode == 0x07 || openvpn.opcode == 0x08"
        port_filter = f"udp.port == {port}" if transport == "udp" else f"tcp.port == {port}"
        out = subprocess.run(["tshark", "-r", str(pcap), "-d", f"{transport}.port=={port},openvpn",
                              "-Y", f"{port_filter} && ({reset})", "-T", "fields", "-e",
                              "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
        times = [round(float(t) * 1e6) for t in out.split()]
        assert times, f"tshark saw no OpenVPN hard reset on {transport}/{port}"
        assert f["first_seen"] is not None
        from datetime import UTC, datetime

        first = round(datetime.fromisoformat(f["first_seen"].replace("Z", "+00:00"))
                      .astimezone(UTC).timestamp() * 1e6)
        assert first in times[:2]


def test_no_flow_of_the_tunnels_is_mistaken_for_another_protocol(
        captured: tuple[Path, list[dict[str, Any]], list[str]]) -> None:
    _, records, _ = captured
    protocols = {r["protocol"] for r in records if r["type"] == "flow-summary"}
    assert not protocols & {"tls", "http", "dns", "modbus"}, protocols
