"""Lateral movement made by real stacks on a switched LAN, captured at a SPAN port.

A plant that is not STS-07 (its own addresses, no profile): an HMI polls two PLCs over Modbus
(pymodbus) and fetches a page from a CMS PC (Python's http.server). That is the baseline. Then,
in a second capture, besides the same polling:

- PLC-1 pushes 96 kB to PLC-2 on a port nobody used before (socat): a field device to a field
  device, raw bulk TCP one way — an uploaded program;
- the HMI copies a 200 kB file to the CMS PC's share over SMB (Samba's smbd, smbclient);
- PLC-2 uploads a 150 kB file to the CMS PC's FTP server (vsftpd, curl as the client; passive
  mode, so the data flows on a second connection to a port the server picks).

Each transfer must give exactly one lateral-movement finding naming both hosts, at the time the
transfer began (tshark's first SYN of its connection) with its volume (at least the file's
size, which the test wrote); a third capture of the polling alone gives none.

Topology: namespaces ``cwlat-*``; each host's veth ends in a bridge in ``cwlat-sw`` that learns
no addresses (a hub), so tcpdump on the bridge sees every frame once, as a SPAN port would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_helpers import MODBUS_SERVER, ip, remove_namespaces, stop, wait_listening

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SW = "cwlat-sw"
HOSTS = {"hmi": "172.22.40.30", "plc1": "172.22.40.11", "plc2": "172.22.40.12", "cms": "172.22.40.50"}
TOOLS = ("tcpdump", "tshark", "socat", "curl", "smbd", "smbclient", "vsftpd")


POLLER = textwrap.dedent("""
    import sys, time
    from pymodbus.client import ModbusTcpClient
    clients = [ModbusTcpClient(h, port=502, timeout=2, retries=0) for h in sys.argv[2:]]
    for c in clients:
        assert c.connect()
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        for c in clients:
            assert not c.read_holding_registers(0, count=8, device_id=1).isError()
        time.sleep(0.2)
""")


def _ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", f"cwlat-{name}", *argv]


def _run(argv: list[str], timeout: float = 60) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def _build() -> None:
    names = [SW, *(f"cwlat-{h}" for h in HOSTS)]
    remove_namespaces(names)
    for name in names:
        ip("netns", "add", name)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                       check=True, capture_output=True)
        ip("-n", name, "link", "set", "lo", "up")
    # ageing time 0: the bridge learns no address, so it floods every frame to every port and
    # to br0 itself, where tcpdump sees each frame once (a hub; this kernel has no tc mirred
    # classifier to build a SPAN port with)
    ip("-n", SW, "link", "add", "name", "br0", "type", "bridge", "ageing_time", "0")
    ip("-n", SW, "link", "set", "br0", "up")
    for index, (host, addr) in enumerate(HOSTS.items()):
        port = f"p{index}"
        ip("-n", SW, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", f"cwlat-{host}")
        ip("-n", SW, "link", "set", port, "master", "br0")
        ip("-n", SW, "link", "set", port, "up")
        ip("-n", f"cwlat-{host}", "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", f"cwlat-{host}", "link", "set", "eth0", "up")


class Capture:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", SW, "tcpdump", "-i", "br0", "-w", str(path), "-U", "-n", "-s", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.proc.stderr.readline()  # "listening on span0 ..."
        time.sleep(0.3)

    def close(self) -> None:
        time.sleep(0.5)
        stop([self.proc])
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def _servers(tmp: Path) -> list[subprocess.Popen[Any]]:
    procs: list[subprocess.Popen[Any]] = []
    (tmp / "server.py").write_text(MODBUS_SERVER)
    (tmp / "poller.py").write_text(POLLER)
    for plc in ("plc1", "plc2"):
        procs.append(subprocess.Popen(_ns(plc, PYTHON, str(tmp / "server.py"), HOSTS[plc]),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    www = tmp / "www"
    www.mkdir()
    (www / "status.html").write_text("<p>crane ok</p>\n")
    procs.append(subprocess.Popen(_ns("cms", PYTHON, "-m", "http.server", "8080", "--bind", HOSTS["cms"],
                                      "--directory", str(www)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # Samba: a guest-writable share (written as root: the test's folders are private), every
    # state file under the test's folder
    smb = tmp / "smb"
    share = smb / "share"
    for sub in ("share", "lock", "state", "cache", "private", "pid", "ncalrpc"):
        (smb / sub).mkdir(parents=True)
    share.chmod(0o777)
    (smb / "smb.conf").write_text(textwrap.dedent(f"""
        [global]
        workgroup = CRANE
        server role = standalone server
        map to guest = Bad User
        guest account = nobody
        interfaces = {HOSTS['cms']}/24
        bind interfaces only = yes
        smb ports = 445
        disable netbios = yes
        load printers = no
        printing = bsd
        printcap name = /dev/null
        lock directory = {smb / 'lock'}
        state directory = {smb / 'state'}
        cache directory = {smb / 'cache'}
        private dir = {smb / 'private'}
        pid directory = {smb / 'pid'}
        ncalrpc dir = {smb / 'ncalrpc'}
        log file = {smb / 'log.%m'}
        [share]
        path = {share}
        guest ok = yes
        read only = no
        force user = root
        """))
    # a session of its own (and no setsid of smbd's): smbd signals its whole process group
    # when it stops, which must not be the test's
    procs.append(subprocess.Popen(_ns("cms", "smbd", "--foreground", "--no-process-group",
                                      "--debug-stdout", "-s", str(smb / "smb.conf")),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True))
    # vsftpd: anonymous upload into pub/ (its root may not be writable), passive mode
    ftp = tmp / "ftp"
    (ftp / "pub").mkdir(parents=True)
    (ftp / "pub").chmod(0o777)
    ftp.chmod(0o555)
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    (tmp / "vsftpd.conf").write_text(textwrap.dedent(f"""
        listen=YES
        listen_address={HOSTS['cms']}
        background=NO
        anonymous_enable=YES
        local_enable=NO
        write_enable=YES
        anon_upload_enable=YES
        anon_root={ftp}
        pasv_enable=YES
        pasv_min_port=40100
        pasv_max_port=40199
        seccomp_sandbox=NO
        secure_chroot_dir=/var/run/vsftpd/empty
        xferlog_enable=NO
        """))
    (tmp / "vsftpd.conf").chmod(0o600)
    procs.append(subprocess.Popen(_ns("cms", "vsftpd", str(tmp / "vsftpd.conf")),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for host, port in (("plc1", 502), ("plc2", 502), ("cms", 8080), ("cms", 445), ("cms", 21)):
        wait_listening(f"cwlat-{host}", HOSTS[host], port)
    return procs


def _normal(tmp: Path, seconds: float) -> None:
    _run(_ns("hmi", "curl", "-fsS", "-o", "/dev/null", f"http://{HOSTS['cms']}:8080/status.html"))
    _run(_ns("hmi", PYTHON, str(tmp / "poller.py"), str(seconds), HOSTS["plc1"], HOSTS["plc2"]),
         timeout=seconds + 30)


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if missing:
        pytest.fail(f"tools missing (scripts/install-deps.sh installs them): {missing}")
    tmp = tmp_path_factory.mktemp("lateral")
    procs: list[subprocess.Popen[Any]] = []
    try:
        _build()
        procs = _servers(tmp)
        out: dict[str, Any] = {}
        for name in ("baseline", "clean"):
            cap = Capture(tmp / f"{name}.pcap")
            _normal(tmp, 4)
            cap.close()
            out[name] = cap.path
        # the attack capture: polling in the background, three transfers
        cap = Capture(tmp / "attack.pcap")
        poller = subprocess.Popen(_ns("hmi", PYTHON, str(tmp / "poller.py"), "8", HOSTS["plc1"], HOSTS["plc2"]))
        sizes = {"raw": 96 * 1024, "smb": 200 * 1024, "ftp": 150 * 1024}
        for name, size in sizes.items():
            (tmp / f"{name}.bin").write_bytes(os.urandom(size))
        sink = subprocess.Popen(_ns("plc2", "socat", "-u", f"TCP-LISTEN:40123,bind={HOSTS['plc2']}",
                                    f"CREATE:{tmp / 'received.bin'}"))
        wait_listening("cwlat-plc2", HOSTS["plc2"], 40123)
        _run(_ns("plc1", "socat", "-u", f"FILE:{tmp / 'raw.bin'}", f"TCP:{HOSTS['plc2']}:40123"))
        sink.wait(timeout=15)
        assert (tmp / "received.bin").read_bytes() == (tmp / "raw.bin").read_bytes()
        _run(_ns("hmi", "smbclient", f"//{HOSTS['cms']}/share", "-N", "-m", "SMB3",
                 "-c", f"put {tmp / 'smb.bin'} program.bin"))
        assert (tmp / "smb" / "share" / "program.bin").read_bytes() == (tmp / "smb.bin").read_bytes()
        _run(_ns("plc2", "curl", "-fsS", "--ftp-pasv", "-T", str(tmp / "ftp.bin"),
                 f"ftp://{HOSTS['cms']}/pub/dump.bin"))
        assert (tmp / "ftp" / "pub" / "dump.bin").read_bytes() == (tmp / "ftp.bin").read_bytes()
        poller.wait(timeout=40)
        cap.close()
        out["attack"] = cap.path
        out["sizes"] = sizes
        out["tmp"] = tmp
        yield out
    finally:
        stop(procs)
        remove_namespaces([SW, *(f"cwlat-{h}" for h in HOSTS)])


def _cranewatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "cranewatch", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)


def _lateral(capture: Path, baseline: Path) -> list[dict[str, Any]]:
    run = _cranewatch("analyze", str(capture), "--baseline", str(baseline), "--format", "jsonl")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    return [r for r in records if r["type"] == "finding" and r["category"] == "lateral-movement"]


def _first_syn(capture: Path, client: str, server: str, port: int) -> float:
    out = _run(["tshark", "-r", str(capture), "-Y",
                f"ip.src=={client} && ip.dst=={server} && tcp.dstport=={port} && tcp.flags.syn==1 "
                "&& tcp.flags.ack==0", "-T", "fields", "-e", "frame.time_epoch"])
    return float(out.split()[0])


def _wire_bytes(capture: Path, client: str, server: str) -> int:
    """Bytes on the wire (frame lengths) from client to server over TCP, every connection
    between them: tshark's count."""
    out = _run(["tshark", "-r", str(capture), "-Y", f"ip.src=={client} && ip.dst=={server} && tcp",
                "-T", "fields", "-e", "frame.len"])
    return sum(int(x) for x in out.split())


def test_each_transfer_is_one_finding_with_both_hosts_time_and_volume(captures: dict[str, Any]) -> None:
    baseline = captures["tmp"] / "baseline.json"
    built = _cranewatch("baseline", str(captures["baseline"]), "--out", str(baseline))
    assert built.returncode == 0, built.stderr
    findings = _lateral(captures["attack"], baseline)
    expected = {  # (client, server, port the transfer began on, file size)
        "raw": (HOSTS["plc1"], HOSTS["plc2"], 40123),
        "smb": (HOSTS["hmi"], HOSTS["cms"], 445),
        "ftp": (HOSTS["plc2"], HOSTS["cms"], 21),
    }
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in findings:
        by_pair.setdefault((f["src"], f["dst"].rsplit(":", 1)[0]), []).append(f)
    assert set(by_pair) == {(c, s) for c, s, _ in expected.values()}, [f["title"] for f in findings]
    for name, (client, server, port) in expected.items():
        [finding] = by_pair[(client, server)]  # one finding per transfer, whatever it took
        assert finding["severity"] == "high", finding["title"]
        began = _first_syn(captures["attack"], client, server, port)
        from cranewatch.model import parse_time

        assert abs((parse_time(finding["first_seen"]) or 0) - began) < 0.001
        values = finding["evidence"][0]["values"]
        moved = values["bytes_to_server"]
        assert moved >= captures["sizes"][name], (name, values)
        assert moved == _wire_bytes(captures["attack"], client, server), (name, values)


def test_the_same_polling_without_transfers_is_quiet(captures: dict[str, Any]) -> None:
    baseline = captures["tmp"] / "baseline.json"
    if not baseline.exists():
        assert _cranewatch("baseline", str(captures["baseline"]), "--out", str(baseline)).returncode == 0
    assert _lateral(captures["clean"], baseline) == []
