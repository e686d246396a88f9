"""Real packets through the generated rulesets, loaded into nftables in a router namespace.

Topology (all namespaces prefixed ``cwpol-``, created and removed here):

    cwpol-crane 10.20.7.10 (PLC: pymodbus server, sshd), 10.20.7.20 (OCR: paho publisher)
        │ 10.20.7.254
    cwpol-rt  (the crane's firewall, ruleset under test) ── 198.51.100.1 ── cwpol-out 198.51.100.7
        │ 10.20.0.254
    cwpol-term 10.20.0.5 (TOS), .6 (mosquitto), .50 (EWS: pymodbus client), .100 (analysis station)

The verdicts are read from the real nftables counters (``nft -j list counters``) and the
drop rules' log prefix from ``nft -j list table``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cranewatch.policy import inservice_ruleset, quarantine_ruleset
from cranewatch.profile import load_profile, parse_profile
from netns_helpers import Link, ip, remove_namespaces, route_through, stop, wait_listening

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
NS = {"rt": "cwpol-rt", "crane": "cwpol-crane", "term": "cwpol-term", "out": "cwpol-out"}
TABLE = "cranewatch_sts_07"
PLC, OCR, TOS, BROKER, EWS, STATION, OUTSIDE = (
    "10.20.7.10", "10.20.7.20", "10.20.0.5", "10.20.0.6", "10.20.0.50", "10.20.0.100", "198.51.100.7")


def ns_cmd(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NS[ns], *cmd]


def py_in(ns: str, code: str, timeout: float = 20) -> str:
    done = subprocess.run(ns_cmd(ns, sys.executable, "-c", textwrap.dedent(code)),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def build_topology() -> None:
    remove_namespaces(NS.values())  # leftovers of an interrupted run (only our own names)
    for name in NS.values():
        ip("netns", "add", name)
    route_through(NS["rt"], [
        Link(NS["crane"], "cwpol-rc", "cwpol-c", "10.20.7.254/24", (f"{PLC}/24", f"{OCR}/24")),
        Link(NS["term"], "cwpol-rtm", "cwpol-t", "10.20.0.254/24",
             tuple(f"{a}/24" for a in (TOS, BROKER, EWS, STATION))),
        Link(NS["out"], "cwpol-ro", "cwpol-o", "198.51.100.1/24", (f"{OUTSIDE}/24",))])


MODBUS_SERVER = f"""
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartTcpServer
# every input register reads 4231: hoist_load 423.1 t would be absurd, but it is easy to spot
device = ModbusDeviceContext(ir=ModbusSequentialDataBlock(1, [4231] * 32))
StartTcpServer(context=ModbusServerContext(devices=device, single=True), address=("{PLC}", 502))
"""


@dataclass
class Lab:
    tmp: Path
    daemons: list[subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    for tool in ("nft", "mosquitto", "socat", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/install-deps.sh")
    tmp = tmp_path_factory.mktemp("cwpol")
    build_topology()
    daemons: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []
    try:
        def start(ns: str, *cmd: str) -> None:
            logs.append((tmp / f"{ns}-{len(daemons)}.log").open("wb"))
            daemons.append(subprocess.Popen(ns_cmd(ns, *cmd), stdout=subprocess.DEVNULL, stderr=logs[-1]))

        start("crane", sys.executable, "-c", MODBUS_SERVER)
        (tmp / "mosquitto.conf").write_text(f"listener 1883 {BROKER}\nallow_anonymous true\npersistence false\n")
        start("term", "mosquitto", "-c", str(tmp / "mosquitto.conf"))
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hostkey")], check=True)
        (tmp / "sshd_config").write_text(
            f"ListenAddress {PLC}\nPort 22\nHostKey {tmp / 'hostkey'}\nPidFile {tmp / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        start("crane", "/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config"))
        start("out", "socat", f"TCP-LISTEN:443,bind={OUTSIDE},fork,reuseaddr", "SYSTEM:echo outside-service")
        for ns, addr, port in (("crane", PLC, 502), ("term", BROKER, 1883), ("crane", PLC, 22),
                               ("out", OUTSIDE, 443)):
            wait_listening(NS[ns], addr, port)
        yield Lab(tmp, daemons)
    finally:
        stop(daemons)
        for log in logs:
            log.close()
        remove_namespaces(NS.values())


def load(lab: Lab, ruleset: str) -> None:
    path = lab.tmp / "ruleset.nft"
    path.write_text(ruleset)
    subprocess.run(ns_cmd("rt", "nft", "flush", "ruleset"), check=True)
    subprocess.run(ns_cmd("rt", "nft", "-f", str(path)), check=True, capture_output=True)


def counters() -> dict[str, int]:
    out = subprocess.run(ns_cmd("rt", "nft", "-j", "list", "counters", "table", "inet", TABLE),
                         check=True, capture_output=True, text=True).stdout
    return {o["counter"]["name"]: o["counter"]["packets"] for o in json.loads(out)["nftables"] if "counter" in o}


def log_prefixes_by_counter() -> dict[str, str]:
    """For each rule that logs: its named counter → its log prefix, as the kernel holds them."""
    out = subprocess.run(ns_cmd("rt", "nft", "-j", "list", "table", "inet", TABLE),
                         check=True, capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for obj in json.loads(out)["nftables"]:
        rule = obj.get("rule")
        if not rule:
            continue
        prefix = next((e["log"]["prefix"] for e in rule["expr"] if "log" in e), None)
        counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
        if prefix and isinstance(counter, str):
            found[counter] = prefix
    return found


def tcp_talk(ns: str, src: str, dst: str, port: int, timeout: float = 1.0) -> str:
    """Connect from ``src`` and read the first line: the banner, ``refused`` or ``timeout``."""
    return py_in(ns, f"""
        import socket
        s = socket.socket()
        s.settimeout({timeout})
        s.bind(("{src}", 0))
        try:
            s.connect(("{dst}", {port}))
            print(s.recv(64).decode(errors="replace").strip() or "connected")
        except socket.timeout:
            print("timeout")
        except ConnectionRefusedError:
            print("refused")
    """)


def modbus_poll(src: str) -> str:
    return py_in("term", f"""
        from pymodbus.client import ModbusTcpClient
        client = ModbusTcpClient("{PLC}", port=502, source_address=("{src}", 0), timeout=1, retries=0)
        if not client.connect():
            print("blocked")
        else:
            reply = client.read_input_registers(1, count=2, device_id=1)
            print("registers", *reply.registers)
            client.close()
    """)


def mqtt_publish(payload: str) -> str:
    return py_in("crane", f"""
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ocr-sts-07")
        client.connect_timeout = 1.0
        try:
            client.connect("{BROKER}", 1883, keepalive=10, bind_address="{OCR}")
        except OSError as exc:
            print("blocked", type(exc).__name__)
            raise SystemExit(0)
        client.loop_start()
        info = client.publish("terminal/cranes/STS-07/ocr", {payload!r}, qos=1, retain=True)
        info.wait_for_publish(timeout=5)
        print("published" if info.is_published() else "not published")
        client.disconnect()
        client.loop_stop()
    """)


def test_in_service_allow_list_passes_allowed_and_drops_the_rest(lab: Lab) -> None:
    load(lab, inservice_ruleset(load_profile(REPO / "profiles" / "sts-07.toml")))
    assert set(log_prefixes_by_counter().values()) == {"cw STS-07 in-service drop: "}
    assert {"drop_from_crane", "drop_to_crane"} <= set(log_prefixes_by_counter())

    # the EWS polls the PLC over Modbus/TCP: allowed, and the registers come back
    assert modbus_poll(EWS) == "registers 4231 4231"
    # the OCR publishes a move event to the terminal broker: allowed; the TOS side receives it
    event = '{"container": "CSQU3054383", "move": "discharge", "pol": "CNSHA", "pod": "USORF"}'
    assert mqtt_publish(event) == "published"
    got = subprocess.run(ns_cmd("term", "mosquitto_sub", "-h", BROKER, "-t", "terminal/cranes/STS-07/ocr",
                                "-C", "1", "-W", "5"), capture_output=True, text=True, timeout=10)
    assert got.stdout.strip() == event
    after_allowed = counters()
    assert after_allowed["allow_ews_plc_modbus_502"] >= 1
    assert after_allowed["allow_ocr_broker_mqtt_1883"] >= 1
    assert after_allowed["return_traffic"] >= 2
    assert after_allowed["drop_to_crane"] == after_allowed["drop_from_crane"] == 0

    # the sshd on the PLC is real (its banner answers inside the crane LAN) ...
    assert tcp_talk("crane", OCR, PLC, 22).startswith("SSH-2.0-")
    # ... but SSH from the terminal is dropped (a timeout, not a refusal) and counted
    assert tcp_talk("term", TOS, PLC, 22) == "timeout"
    # the outside service is real (the terminal reaches it: not crane traffic) ...
    assert tcp_talk("term", TOS, OUTSIDE, 443) == "outside-service"
    # ... but nothing from the crane reaches the outside
    assert tcp_talk("crane", PLC, OUTSIDE, 443) == "timeout"
    # a Modbus poll from the TOS is not in the allow-list either, nor is the outside polling the PLC
    assert modbus_poll(TOS) == "blocked"
    assert tcp_talk("out", OUTSIDE, PLC, 502) == "timeout"
    final = counters()
    assert final["drop_to_crane"] >= 3  # the SSH SYN, the TOS poll, the outside poll
    assert final["drop_from_crane"] >= 1  # the SYN to the outside
    assert final["allow_ews_plc_modbus_502"] == after_allowed["allow_ews_plc_modbus_502"]


def test_quarantine_passes_only_the_analysis_station(lab: Lab) -> None:
    load(lab, quarantine_ruleset("STS-07", STATION, zone="10.20.7.0/24"))
    assert set(log_prefixes_by_counter().values()) == {"cw STS-07 quarantine drop: "}

    # the analysis station reaches the PLC, and the crane may answer it
    assert modbus_poll(STATION) == "registers 4231 4231"
    assert tcp_talk("term", STATION, PLC, 22).startswith("SSH-2.0-")
    allowed = counters()
    assert allowed["station_to_crane"] >= 2 and allowed["crane_to_station"] >= 2
    assert allowed["drop_to_crane"] == allowed["drop_from_crane"] == 0

    # everything else is dropped: the EWS poll allowed in service, the OCR's MQTT event,
    # SSH from the TOS, and the crane calling outside
    assert modbus_poll(EWS) == "blocked"
    assert mqtt_publish('{"container": "CSQU3054383"}').startswith("blocked")
    assert tcp_talk("term", TOS, PLC, 22) == "timeout"
    assert tcp_talk("crane", PLC, OUTSIDE, 443) == "timeout"
    final = counters()
    assert final["drop_to_crane"] >= 2
    assert final["drop_from_crane"] >= 2
    # the firewall itself is out of reach too
    assert tcp_talk("crane", PLC, "10.20.7.254", 22) == "timeout"
    assert counters()["drop_crane_to_firewall"] >= 1


def test_naming_the_crane_interface_also_stops_spoofed_sources(lab: Lab) -> None:
    spoofed = "192.0.2.77"  # an address outside the crane zone, claimed by a crane host
    ip("-n", NS["crane"], "addr", "add", f"{spoofed}/32", "dev", "cwpol-c")
    ip("-n", NS["rt"], "route", "add", f"{spoofed}/32", "dev", "cwpol-rc")  # so replies find it
    try:
        # matched by address only (the ruleset's header says so), the spoofed source slips through
        load(lab, quarantine_ruleset("STS-07", STATION, zone="10.20.7.0/24"))
        assert tcp_talk("crane", spoofed, OUTSIDE, 443) == "outside-service"
        # with the crane-side interface named, everything arriving from the crane is covered
        load(lab, quarantine_ruleset("STS-07", STATION, zone="10.20.7.0/24", interface="cwpol-rc"))
        assert tcp_talk("crane", spoofed, OUTSIDE, 443) == "timeout"
        assert counters()["drop_from_crane"] >= 1
        assert modbus_poll(STATION) == "registers 4231 4231"  # the station still gets through
    finally:
        ip("-n", NS["rt"], "route", "del", f"{spoofed}/32", "dev", "cwpol-rc")
        ip("-n", NS["crane"], "addr", "del", f"{spoofed}/32", "dev", "cwpol-c")


FTP_SERVER = """
import socket, sys, threading
HOST = sys.argv[1]
PROGRAM = b"PLC program v7\\n" * 1000  # 15,000 bytes: several segments
def session(conn):
    lines = conn.makefile("rb")
    def send(text):
        conn.sendall(text.encode() + b"\\r\\n")
    send("220 plc FTP")
    listener, target = None, None
    for raw in lines:
        command, _, arg = raw.decode().strip().partition(" ")
        command = command.upper()
        if command in ("USER", "PASS", "TYPE"):
            send({"USER": "331 password please", "PASS": "230 logged in", "TYPE": "200 binary"}[command])
        elif command == "PASV":
            listener = socket.create_server((HOST, 0))
            port = listener.getsockname()[1]
            send(f"227 Entering Passive Mode ({HOST.replace('.', ',')},{port >> 8},{port & 255})")
        elif command == "PORT":
            numbers = arg.split(",")
            target = (".".join(numbers[:4]), int(numbers[4]) << 8 | int(numbers[5]))
            send("200 PORT ok")
        elif command == "RETR":
            send("150 opening data connection")
            try:
                if listener is not None:
                    listener.settimeout(4)
                    data = listener.accept()[0]
                else:
                    data = socket.create_connection(target, timeout=4)
            except OSError:
                send("425 no data connection")
                continue
            finally:
                if listener is not None:
                    listener.close()
                listener = None
            data.sendall(PROGRAM)
            data.close()
            send("226 transfer complete")
        elif command == "QUIT":
            send("221 bye")
            break
        else:
            send("502 not implemented")
    conn.close()
server = socket.create_server((HOST, 21))
while True:
    threading.Thread(target=session, args=(server.accept()[0],), daemon=True).start()
"""


def ftp_fetch(src: str, passive: bool) -> str:
    """RETR a file from the PLC's FTP server (ftplib: PASV, or PORT when not passive)."""
    return py_in("term", f"""
        import ftplib
        ftp = ftplib.FTP(timeout=3, source_address=("{src}", 0))
        ftp.connect("{PLC}", 21)
        ftp.login("ews", "not-a-secret")
        ftp.set_pasv({passive})
        got = []
        try:
            ftp.retrbinary("RETR program.bin", got.append)
            print("received", sum(map(len, got)))
        except (OSError, ftplib.Error) as exc:
            print("blocked", type(exc).__name__)
        ftp.close()
    """, timeout=30)


def test_ftp_passes_through_the_conntrack_helper_without_a_port_range(lab: Lab) -> None:
    """An ftp allowance (EWS → PLC, port 21) and nothing else for FTP: a passive and an
    active transfer pass, their data connections counted as related by the kernel's ftp
    helper; the same ruleset without the helper assignment lets the control connection in
    but drops both data connections (what an allow of port 21 alone did)."""
    text = (REPO / "profiles" / "sts-07.toml").read_text() + (
        '\n[[allow]]\nclient = "ews"\nserver = "plc"\nprotocol = "ftp"\nport = 21\n')
    ruleset = inservice_ruleset(parse_profile(text, "sts-07.toml"))
    assert 'ct helper set "helper_ftp"' in ruleset
    server = subprocess.Popen(ns_cmd("crane", sys.executable, "-c", FTP_SERVER, PLC),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(NS["crane"], PLC, 21)
        load(lab, ruleset)
        assert ftp_fetch(EWS, passive=True) == "received 15000"
        assert ftp_fetch(EWS, passive=False) == "received 15000"
        helped = counters()
        assert helped["ftp_data"] >= 2  # the first packet of each data connection
        assert helped["allow_ews_plc_ftp_21"] >= 2  # the two control connections' SYNs
        assert helped["drop_to_crane"] == helped["drop_from_crane"] == 0
        # the control rule without its helper: the data connections are not expected, dropped
        load(lab, ruleset.replace('ct helper set "helper_ftp" ', ""))
        assert ftp_fetch(EWS, passive=True) == "blocked TimeoutError"
        assert counters()["drop_to_crane"] >= 1  # the EWS's SYN to the PASV port
        assert ftp_fetch(EWS, passive=False).startswith("blocked")
        assert counters()["drop_from_crane"] >= 1  # the PLC's SYN back to the PORT address
    finally:
        stop([server])
