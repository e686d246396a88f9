"""SIEM forwarding (``--forward``): syslog RFC 5424 over TCP and TLS into a real rsyslog.

rsyslogd (Debian's, with its OpenSSL stream driver) runs in the foreground on loopback with a
configuration written here; it parses each message itself and writes the parsed fields (PRI,
MSGID, structured data, MSG) to a file, which the tests read back. Expected values come from
the analysis document (``--format jsonl``) and the mapping tables written out by hand below.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cranewatch.errors import UsageError
from cranewatch.forward import Destination, Forwarder, ForwardOutput, cef_finding, syslog_message
from cranewatch.model import Evidence, Finding, Severity

LAB = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data" / "lab"
CAPTURE = LAB / "remote-ssh" / "crane-lan.pcap"
RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists()
                                        else None)
needs_rsyslog = pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd not installed "
                                   "(scripts/install-deps.sh installs rsyslog)")

# by hand from RFC 5424 section 6.2.1: facility local4 = 20, PRI = 20 * 8 + severity
PRI = {"critical": 162, "high": 163, "medium": 164, "low": 165, "info": 166}
ECS_SEVERITY = {"critical": 99, "high": 73, "medium": 47, "low": 21, "info": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rsyslog:
    root: Path
    port: int
    tls: tuple[Path, Path] | None  # (certificate, key)
    process: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.root / "received.log"

    def start(self) -> None:
        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        tls_global = ""
        driver = ""
        if self.tls:
            cert, key = self.tls
            tls_global = (f' defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{cert}"'
                          f' defaultNetstreamDriverCertFile="{cert}"'
                          f' defaultNetstreamDriverKeyFile="{key}"')
            driver = ' StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        conf = self.root / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{work}" maxMessageSize="64k"{tls_global})
module(load="imtcp"{driver})
template(name="fields" type="list") {{
  property(name="pri") constant(value="\\t")
  property(name="app-name") constant(value="\\t")
  property(name="msgid") constant(value="\\t")
  property(name="structured-data") constant(value="\\t")
  property(name="msg") constant(value="\\n")
}}
ruleset(name="out") {{ action(type="omfile" file="{self.out}" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="out")
""")
        with open(self.root / "rsyslogd.err", "ab") as err:
            self.process = subprocess.Popen(
                [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("rsyslogd exited: " + (self.root / "rsyslogd.err").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("rsyslogd did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
        self.process = None

    def records(self, want: int, timeout: float = 15.0) -> list[dict[str, object]]:
        """The parsed messages, once at least ``want`` arrived (omfile writes per batch)."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = self.out.read_text().splitlines() if self.out.exists() else []
            if len(lines) >= want:
                break
            time.sleep(0.1)
        out = []
        for line in lines:
            pri, app, msgid, sd, msg = line.split("\t", 4)
            out.append({"pri": int(pri), "app": app, "msgid": msgid, "sd": sd, "msg": msg.strip()})
        return out


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog", _free_port(), None)
    server.start()
    yield server
    server.stop()


def _certificate(root: Path, name: str) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    cert, key = root / f"{name}.pem", root / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def cranewatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    full = {**os.environ, "PYTHONPATH": src, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cranewatch", *args], capture_output=True,
                          text=True, env=full, timeout=120)


def _document(capture: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    run = cranewatch("analyze", str(capture), "--format", "jsonl")
    records = [json.loads(line) for line in run.stdout.splitlines()]
    return ([r for r in records if r["type"] == "finding"],
            [r for r in records if r["type"] == "incident"])


@needs_rsyslog
def test_analyze_forwards_each_finding_and_incident_once_over_tcp(rsyslog: Rsyslog,
                                                                  tmp_path: Path) -> None:
    findings, incidents = _document(CAPTURE)
    assert findings, "the lab capture must give findings for this test to mean anything"
    url = f"syslog+tcp://127.0.0.1:{rsyslog.port}"
    state = tmp_path / "state"
    run = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-state", str(state),
                     "--format", "jsonl", "--out", str(tmp_path / "doc.jsonl"))
    assert run.returncode == 0, run.stderr
    want = len(findings) + len(incidents)
    got = rsyslog.records(want)
    assert len(got) == want
    by_id = {json.loads(str(r["msg"]))["event"]["id"]: r for r in got}
    for finding in findings:
        record = by_id[finding["id"]]
        body = json.loads(str(record["msg"]))
        assert record["app"] == "cranewatch" and record["msgid"] == "finding"
        assert record["pri"] == PRI[str(finding["severity"])]
        assert f'id="{finding["id"]}"' in str(record["sd"])
        assert body["event"]["kind"] == "alert"
        assert body["event"]["action"] == "finding-new"
        assert body["event"]["severity"] == ECS_SEVERITY[str(finding["severity"])]
        assert body["rule"]["id"] == finding["rule"]
        assert body["message"] == finding["title"]
        assert body["@timestamp"] == finding["last_seen"]
        assert body["cranewatch"]["count"] == finding["count"]
        if finding["src"]:
            assert body["source"]["address"] == finding["src"]
        if finding["technique"]:
            assert body["threat"]["technique"]["id"] == finding["technique"]
    for incident in incidents:
        record = by_id[incident["id"]]
        assert record["msgid"] == "incident"
        assert json.loads(str(record["msg"]))["cranewatch"]["findings"] == incident["findings"]
    # the same capture again: nothing changed, nothing sent
    again = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-state", str(state))
    assert again.returncode in (0, 1), again.stderr
    assert "forwarded 0 message(s)" in again.stderr
    time.sleep(1.0)
    assert len(rsyslog.records(want)) == want


@needs_rsyslog
def test_collector_away_queues_in_order_and_replays_without_doubles(tmp_path: Path) -> None:
    findings, incidents = _document(CAPTURE)
    port = _free_port()
    url = f"syslog+tcp://127.0.0.1:{port}"
    state = tmp_path / "state"
    away = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-state", str(state))
    assert "queued" in away.stderr and "Connection refused" in away.stderr
    assert away.returncode in (0, 1)  # the analysis itself is unaffected
    queue = next(state.glob("forward/*/queue"))
    queued = queue.read_text().splitlines()
    assert len(queued) == len(findings) + len(incidents)
    server = Rsyslog(tmp_path / "rsyslog", port, None)
    server.start()
    try:
        back = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-state", str(state))
        assert "forwarded" in back.stderr and "queued" not in back.stderr
        got = server.records(len(queued))
        ids = [json.loads(str(r["msg"]))["event"]["id"] for r in got]
        assert ids == [json.loads(bytes.fromhex(q).split(b"] ", 1)[1])["event"]["id"]
                       for q in queued]  # in the order they were queued, each once
        assert not queue.exists()
    finally:
        server.stop()


@needs_rsyslog
def test_tls_with_the_collector_ca_and_refusal_of_an_unknown_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path / "pki", "collector")
    other, _ = _certificate(tmp_path / "pki", "other")
    server = Rsyslog(tmp_path / "rsyslog", _free_port(), (cert, key))
    server.start()
    try:
        findings, incidents = _document(CAPTURE)
        url = f"syslog+tls://localhost:{server.port}"
        state = tmp_path / "state"
        wrong = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-ca", str(other),
                           "--forward-state", str(state))
        assert "TLS certificate not accepted" in wrong.stderr, wrong.stderr
        assert not server.out.exists() or not server.out.read_text()
        right = cranewatch("analyze", str(CAPTURE), "--forward", url, "--forward-ca", str(cert),
                           "--forward-state", str(state))
        assert "queued" not in right.stderr, right.stderr
        got = server.records(len(findings) + len(incidents))
        assert {json.loads(str(r["msg"]))["event"]["id"] for r in got} == \
            {f["id"] for f in findings} | {i["id"] for i in incidents}
    finally:
        server.stop()


# ----------------------------------------------------------------------- without rsyslog


class FrameReader:
    """A minimal collector: reads octet-counted frames (RFC 6587 3.4.1) from each connection."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self) -> None:
        for conn in self.conns:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            if True:
                buf += chunk
                while b" " in buf:
                    size, rest = buf.split(b" ", 1)
                    if len(rest) < int(size):
                        break
                    self.frames.append(rest[:int(size)])
                    buf = rest[int(size):]

    def wait(self, n: int) -> list[bytes]:
        deadline = time.monotonic() + 5
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.frames


def _finding(severity: Severity = Severity.MEDIUM, count: int = 1,
             title: str = "Modbus write by 10.0.0.5") -> Finding:
    return Finding(id="f-1", rule="plc-control.write", category="plc-control", severity=severity,
                   title=title, first_seen=1.0e9, last_seen=1.0e9 + 5, count=count, crane="C1",
                   src="10.0.0.5", dst="10.0.0.9", technique=("T0855",),
                   evidence=(Evidence(source="x.pcap", frames=(3,)),))


def test_monitor_output_sends_once_per_change(tmp_path: Path) -> None:
    reader = FrameReader()
    forwarder = Forwarder(Destination.parse(f"tcp://127.0.0.1:{reader.port}"),
                          state_dir=tmp_path)
    output = ForwardOutput(forwarder)
    output.emit(_finding(), True)
    output.emit(_finding(count=7), False)  # it grew: not a change a SIEM wants again
    output.emit(_finding(Severity.HIGH, count=8), False)  # severity up: sent
    output.emit(_finding(Severity.MEDIUM, count=9), False)  # down again: not sent
    output.close()
    frames = reader.wait(2)
    time.sleep(0.2)
    assert len(reader.frames) == 2
    actions = [json.loads(f.split(b"] ", 1)[1])["event"]["action"] for f in frames]
    assert actions == ["finding-new", "finding-severity-up"]
    assert frames[0].startswith(b"<164>1 ") and frames[1].startswith(b"<163>1 ")


def test_a_connection_the_collector_closed_is_not_written_into(tmp_path: Path) -> None:
    reader = FrameReader()
    forwarder = Forwarder(Destination.parse(f"tcp://127.0.0.1:{reader.port}"), state_dir=tmp_path)
    forwarder.send([_finding()])
    assert len(reader.wait(1)) == 1
    reader.drop()  # the collector restarted: its end of our connection is closed
    time.sleep(0.2)
    # a write into the dead connection would "succeed" and vanish; a new one must be made
    forwarder.send([_finding(Severity.HIGH)])
    assert len(reader.wait(2)) == 2
    assert reader.accepted == 2
    forwarder.close()


def test_cef_escapes_hostile_text() -> None:
    finding = _finding(title="evil|title=x\\y\nz")
    text = cef_finding(finding, "finding-new", "open")
    # the header is the first 7 unescaped pipes; pipes in the extension need no escape
    fields = re.split(r"(?<!\\)\|", text, maxsplit=7)
    assert len(fields) == 8
    header, ext = "|".join(fields[:7]), fields[7]
    assert fields[5] == "evil\\|title=x\\\\y z" and fields[6] == "5"
    # by hand: | and \ escaped in the header, newline folded to a space
    assert "|evil\\|title=x\\\\y z|5" in text
    assert "msg=evil|title\\=x\\\\y\\nz" in ext
    assert header.startswith("CEF:0|cranewatch|cranewatch|")
    assert "src=10.0.0.5" in ext and "dst=10.0.0.9" in ext and "cs2=T0855" in ext


def test_structured_data_values_are_escaped() -> None:
    message = syslog_message("finding", Severity.LOW, {"id": 'a"b]c\\d'}, "body", now=0.0)
    assert message.startswith(b"<165>1 1970-01-01T00:00:00.000000Z ")
    assert b'[cranewatch@32473 id="a\\"b\\]c\\\\d"] body' in message


@pytest.mark.parametrize("url", ["http://x:1", "syslog+tcp://host", "tls://:514", "syslog+tcp://h:x"])
def test_bad_destination_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError):
        Destination.parse(url)


def test_cli_rejects_a_bad_forward_url_before_reading(tmp_path: Path) -> None:
    run = cranewatch("analyze", str(CAPTURE), "--forward", "http://siem:514",
                     "--forward-state", str(tmp_path))
    assert run.returncode == 2
    assert "syslog+tcp://HOST:PORT" in run.stderr and "Traceback" not in run.stderr
