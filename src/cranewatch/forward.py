"""Findings and incidents into the port's SIEM: syslog (RFC 5424) over TCP or TLS.

``--forward URL`` on ``analyze`` and ``monitor`` sends each finding and incident as one syslog
message, at once:

- **Destination**: ``syslog+tcp://HOST:PORT`` (plain TCP) or ``syslog+tls://HOST:PORT`` (TLS,
  RFC 5425; the server's certificate is checked against ``--forward-ca FILE`` or the system's
  CAs, and its name against HOST). ``tcp://`` and ``tls://`` are accepted as the same.
- **Framing**: octet counting (``LEN SP MSG``, RFC 6587 section 3.4.1, the framing RFC 5425
  prescribes for TLS); rsyslog, syslog-ng and the common SIEM collectors read it.
- **Message**: RFC 5424 header ``<PRI>1 TIMESTAMP HOST cranewatch PID MSGID`` with MSGID
  ``finding`` or ``incident``, facility local4 (20), syslog severity from the finding's
  (critical 2, high 3, medium 4, low 5, info 6); structured data
  ``[cranewatch@32473 id=.. crane=.. rule=.. severity=.. action=..]`` (32473 is RFC 5612's
  example enterprise number: we own none); and as MSG either **ECS JSON** (default,
  ``--forward-format ecs``: the Elastic Common Schema fields below) or **CEF**
  (``--forward-format cef``, ArcSight's Common Event Format, version 0).
- **Once per change**: a finding is sent when it is new to this destination, when its severity
  rose, or when its state (triage/disposition) changed; an incident when new, when its severity
  rose or its member findings changed. What was sent is kept in a ledger per destination under
  the state directory (``--forward-state DIR``, default ``$CRANEWATCH_STATE`` or
  ``~/.local/state/cranewatch``), so a second ``analyze`` of the same capture sends nothing.
- **Nothing lost**: a message that cannot be delivered (the collector is down, TLS fails) goes
  to a queue file beside the ledger, in order; every later send drains the queue first. After
  a failure, connecting is retried with back-off (1, 2, 4 ... 60 s) so a sensor is not held up
  by a collector that is away; meanwhile messages go to the queue. Delivery is at least once:
  a crash between a send and its ledger entry can send a message twice, never lose it.

The ECS and CEF field mappings are documented in ``docs/siem.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import select
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cranewatch import __version__
from cranewatch.errors import UsageError
from cranewatch.incidents import Incident
from cranewatch.model import Finding, Severity, iso_time
from cranewatch.store.spool import default_state_dir

FORMATS = ("ecs", "cef")
FACILITY = 20  # local4
SYSLOG_SEVERITY = {Severity.CRITICAL: 2, Severity.HIGH: 3, Severity.MEDIUM: 4, Severity.LOW: 5,
                   Severity.INFO: 6}
ECS_SEVERITY = {Severity.CRITICAL: 99, Severity.HIGH: 73, Severity.MEDIUM: 47, Severity.LOW: 21,
                Severity.INFO: 0}
CEF_SEVERITY = {Severity.CRITICAL: 10, Severity.HIGH: 8, Severity.MEDIUM: 5, Severity.LOW: 3,
                Severity.INFO: 1}
SD_ID = "cranewatch@32473"
ECS_VERSION = "8.11.0"
CONNECT_TIMEOUT = 3.0
MAX_BACKOFF = 60.0


@dataclass(frozen=True, slots=True)
class Destination:
    url: str  # as given, without any password
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Destination:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("syslog+tcp", "tcp"):
            tls = False
        elif scheme in ("syslog+tls", "tls"):
            tls = True
        else:
            raise UsageError(f"--forward {url}: expected syslog+tcp://HOST:PORT or "
                             "syslog+tls://HOST:PORT")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise UsageError(f"--forward {url}: give the collector's host and port")
        return cls(f"{scheme}://{parts.hostname}:{port}", parts.hostname, port, tls)


# ------------------------------------------------------------------------------ formatting


def _address(value: str | None) -> dict[str, str]:
    if not value:
        return {}
    try:
        return {"ip": str(ipaddress.ip_address(value)), "address": value}
    except ValueError:
        return {"address": value}


def _finding_state(finding: Finding, states: dict[str, str]) -> str:
    return states.get(finding.id, "open")


def _ecs_alert(record: Finding | Incident, dataset: str, action: str) -> dict[str, Any]:
    """The ECS fields a finding and an incident share: time, message, event, observer, labels."""
    return {
        "@timestamp": iso_time(record.last_seen) or iso_time(time.time()),
        "message": record.title,
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert", "category": ["intrusion_detection"], "type": ["indicator"],
            "action": action, "id": record.id, "dataset": dataset,
            "module": "cranewatch", "severity": ECS_SEVERITY[record.severity],
            "start": iso_time(record.first_seen), "end": iso_time(record.last_seen),
        },
        "observer": _observer(),
        "labels": {"crane": record.crane} if record.crane else {},
    }


def ecs_finding(finding: Finding, action: str, state: str) -> dict[str, Any]:
    doc = _ecs_alert(finding, "cranewatch.finding", action)
    doc["rule"] = {"id": finding.rule, "name": finding.title, "category": finding.category}
    doc["cranewatch"] = {"count": finding.count, "state": state, "remedy": finding.remedy,
                         "severity": str(finding.severity), "evidence_count": len(finding.evidence)}
    if finding.src:
        doc["source"] = _address(finding.src)
    if finding.dst:
        doc["destination"] = _address(finding.dst)
    if finding.technique:
        doc["threat"] = {"framework": "MITRE ATT&CK for ICS",
                         "technique": {"id": list(finding.technique)}}
    return doc


def ecs_incident(incident: Incident, action: str) -> dict[str, Any]:
    doc = _ecs_alert(incident, "cranewatch.incident", action)
    doc["cranewatch"] = {"findings": list(incident.findings), "assets": list(incident.assets),
                         "severity": str(incident.severity)}
    ips = [a for a in incident.assets if _address(a).get("ip")]
    if ips:
        doc["related"] = {"ip": ips}
    return doc


def _observer() -> dict[str, str]:
    return {"vendor": "cranewatch", "product": "cranewatch", "type": "ids",
            "version": __version__, "hostname": _hostname()}


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r")
            .replace("\n", "\\n"))


def _cef_time(ts: float | None) -> str | None:
    return None if ts is None else str(int(ts * 1000))


def cef_finding(finding: Finding, action: str, state: str) -> str:
    ext: list[tuple[str, str | None]] = [
        ("rt", _cef_time(finding.last_seen)), ("start", _cef_time(finding.first_seen)),
        ("end", _cef_time(finding.last_seen)), ("cnt", str(finding.count)),
        ("cat", finding.category), ("act", action), ("externalId", finding.id),
        ("dvchost", _hostname()),
        ("cs1Label", "crane"), ("cs1", finding.crane),
        ("cs2Label", "technique"), ("cs2", ",".join(finding.technique) or None),
        ("cs3Label", "state"), ("cs3", state),
        ("msg", finding.title),
    ]
    ext += _cef_hosts("src", "shost", finding.src) + _cef_hosts("dst", "dhost", finding.dst)
    return _cef("finding", finding.rule, finding.title, finding.severity, ext)


def cef_incident(incident: Incident, action: str) -> str:
    ext: list[tuple[str, str | None]] = [
        ("rt", _cef_time(incident.last_seen)), ("start", _cef_time(incident.first_seen)),
        ("end", _cef_time(incident.last_seen)), ("cnt", str(len(incident.findings))),
        ("act", action), ("externalId", incident.id), ("dvchost", _hostname()),
        ("cs1Label", "crane"), ("cs1", incident.crane),
        ("cs4Label", "findings"), ("cs4", ",".join(incident.findings)),
        ("msg", incident.title),
    ]
    return _cef("incident", "incident", incident.title, incident.severity, ext)


def _cef_hosts(ip_key: str, host_key: str, value: str | None) -> list[tuple[str, str | None]]:
    if not value:
        return []
    address = _address(value).get("ip")
    if address and ipaddress.ip_address(address).version == 4:
        return [(ip_key, address)]
    return [(host_key, value)]


def _cef(kind: str, signature: str, name: str, severity: Severity,
         ext: list[tuple[str, str | None]]) -> str:
    header = "|".join(_cef_header(x) for x in (
        "CEF:0", "cranewatch", "cranewatch", __version__, signature, name,
        str(CEF_SEVERITY[severity])))
    return header + "|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext if v is not None)


def _sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


_HOSTNAME: list[str] = []


def _hostname() -> str:
    if not _HOSTNAME:
        name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
        _HOSTNAME.append(name or "-")
    return _HOSTNAME[0]


def syslog_message(msgid: str, severity: Severity, params: dict[str, str | None], body: str,
                   now: float | None = None) -> bytes:
    """One RFC 5424 message (without the octet count)."""
    pri = FACILITY * 8 + SYSLOG_SEVERITY[severity]
    stamp = iso_time(time.time() if now is None else now)
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()
                              if v is not None) + "]"
    return f"<{pri}>1 {stamp} {_hostname()} cranewatch {os.getpid()} {msgid} {sd} {body}".encode()


def framed(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


# ------------------------------------------------------------------------------- sending


@dataclass(slots=True)
class ForwardReport:
    sent: int = 0
    queued: int = 0
    unchanged: int = 0
    error: str | None = None  # the last delivery failure, if any message was queued

    def describe(self, destination: str, queue: Path) -> str | None:
        if self.queued:
            return (f"forward {destination}: {self.queued} message(s) queued in {queue} "
                    f"({self.error}); they are sent at the next contact")
        return None


@dataclass
class Forwarder:
    """Sends findings and incidents to one collector, once per change, never losing one."""

    destination: Destination
    format: str = "ecs"
    ca_file: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    report: ForwardReport = field(default_factory=ForwardReport)
    _sock: socket.socket | None = None
    _retry_at: float = 0.0
    _backoff: float = 1.0
    _ledger: dict[str, list[Any]] | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--forward-format {self.format}: expected one of {', '.join(FORMATS)}")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise UsageError(f"--forward-ca {self.ca_file}: no such file")
        key = hashlib.sha256(self.destination.url.encode()).hexdigest()[:16]
        self.dir = self.state_dir / "forward" / key

    @property
    def queue_path(self) -> Path:
        return self.dir / "queue"

    @property
    def ledger_path(self) -> Path:
        return self.dir / "ledger.json"

    # ------------------------------------------------------------------ change tracking

    def _load_ledger(self) -> dict[str, list[Any]]:
        if self._ledger is None:
            try:
                loaded = json.loads(self.ledger_path.read_text(encoding="utf-8"))
                self._ledger = loaded if isinstance(loaded, dict) else {}
            except FileNotFoundError:
                self._ledger = {}
            except (OSError, ValueError):
                # a broken ledger costs repeats, never losses: start afresh, keep the old one
                with contextlib.suppress(OSError):
                    self.ledger_path.replace(self.ledger_path.with_suffix(".broken"))
                self._ledger = {}
        return self._ledger

    def _save_ledger(self) -> None:
        if self._ledger is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ledger_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._ledger, sort_keys=True), encoding="utf-8")
        tmp.replace(self.ledger_path)

    def _change(self, key: str, severity: Severity, detail: Any) -> str | None:
        """``new``, ``severity-up``, ``changed`` or None (nothing to send)."""
        ledger = self._load_ledger()
        before = ledger.get(key)
        if before is None:
            ledger[key] = [int(severity), detail]
            return "new"
        sev, old = int(before[0]), before[1]
        if int(severity) > sev:
            ledger[key] = [int(severity), detail]
            return "severity-up"
        if detail != old:
            ledger[key] = [max(sev, int(severity)), detail]
            return "changed"
        return None

    # ------------------------------------------------------------------ public API

    def send(self, findings: Iterable[Finding], incidents: Iterable[Incident] = (),
             states: dict[str, str] | None = None) -> ForwardReport:
        """Send what changed among these findings and incidents (findings first)."""
        states = states or {}
        messages: list[bytes] = []
        for finding in findings:
            state = _finding_state(finding, states)
            change = self._change("f:" + finding.id, finding.severity, state)
            if change is None:
                self.report.unchanged += 1
                continue
            action = {"new": "finding-new", "severity-up": "finding-severity-up",
                      "changed": "finding-state"}[change]
            messages.append(self._finding_message(finding, action, state))
        for incident in incidents:
            change = self._change("i:" + incident.id, incident.severity, list(incident.findings))
            if change is None:
                self.report.unchanged += 1
                continue
            action = "incident-new" if change == "new" else "incident-changed"
            messages.append(self._incident_message(incident, action))
        self._deliver(messages)
        self._save_ledger()
        return self.report

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ messages

    def _finding_message(self, finding: Finding, action: str, state: str) -> bytes:
        body = (json.dumps(ecs_finding(finding, action, state), sort_keys=True,
                           separators=(",", ":"))
                if self.format == "ecs" else cef_finding(finding, action, state))
        params = {"id": finding.id, "crane": finding.crane, "rule": finding.rule,
                  "severity": str(finding.severity), "action": action}
        return syslog_message("finding", finding.severity, params, body)

    def _incident_message(self, incident: Incident, action: str) -> bytes:
        body = (json.dumps(ecs_incident(incident, action), sort_keys=True, separators=(",", ":"))
                if self.format == "ecs" else cef_incident(incident, action))
        params = {"id": incident.id, "crane": incident.crane, "severity": str(incident.severity),
                  "action": action}
        return syslog_message("incident", incident.severity, params, body)

    # ------------------------------------------------------------------ delivery

    def _queued(self) -> list[bytes]:
        try:
            lines = self.queue_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(bytes.fromhex(line.decode("ascii")))
        return out

    def _enqueue(self, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.queue_path.open("ab") as handle:
            for message in messages:
                handle.write(message.hex().encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _deliver(self, messages: list[bytes]) -> None:
        backlog = self._queued()
        if not backlog and not messages:
            return
        if time.monotonic() < self._retry_at:  # backing off: straight to the queue
            self._enqueue(messages)
            self.report.queued = len(backlog) + len(messages)
            return
        pending = backlog + messages
        done = 0
        try:
            sock = self._connect()
            for message in pending:
                sock.sendall(framed(message))
                done += 1
            self._backoff = 1.0
        except OSError as error:
            self.close()
            self.report.error = _describe(error)
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        rest = pending[done:]  # still undelivered, oldest first
        self.report.sent += done
        self.report.queued = len(rest)
        if rest:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.queue_path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(m.hex().encode("ascii") + b"\n" for m in rest))
            tmp.replace(self.queue_path)
        elif backlog:
            with contextlib.suppress(FileNotFoundError):
                self.queue_path.unlink()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            # A collector never writes to us: readable means it closed (or reset) the
            # connection, and a send on it would vanish. Reconnect instead.
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return self._sock
            self.close()
        raw = socket.create_connection((self.destination.host, self.destination.port),
                                       timeout=CONNECT_TIMEOUT)
        if self.destination.tls:
            try:
                context = ssl.create_default_context(cafile=self.ca_file)
                self._sock = context.wrap_socket(raw, server_hostname=self.destination.host)
            except (OSError, ssl.SSLError):
                raw.close()
                raise
        else:
            self._sock = raw
        self._sock.settimeout(CONNECT_TIMEOUT * 3)
        return self._sock


def _describe(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    return error.strerror or str(error) or type(error).__name__


def forwarder_from_args(url: str | None, fmt: str, ca_file: str | None,
                        state_dir: str | None) -> Forwarder | None:
    if not url:
        return None
    return Forwarder(Destination.parse(url), fmt, ca_file,
                     Path(state_dir) if state_dir else default_state_dir())


def add_forward_options(parser: Any) -> None:
    """``--forward`` and its companions, shared by ``analyze`` and ``monitor``."""
    parser.add_argument("--forward", metavar="URL",
                        help="send findings and incidents to a SIEM as syslog (RFC 5424): "
                        "syslog+tcp://HOST:PORT or syslog+tls://HOST:PORT")
    parser.add_argument("--forward-format", choices=FORMATS, default="ecs",
                        help="message body: JSON in the Elastic Common Schema (default) or CEF")
    parser.add_argument("--forward-ca", metavar="FILE",
                        help="CA certificates that sign the collector's TLS certificate")
    parser.add_argument("--forward-state", metavar="DIR",
                        help="what was sent and the queue of what could not be "
                        "(default $CRANEWATCH_STATE or ~/.local/state/cranewatch)")


@dataclass
class ForwardOutput:
    """A ``monitor`` output (``cranewatch.monitor.FindingOutput``): each finding as it is
    reported (sent when new or changed), the incidents at every checkpoint."""

    forwarder: Forwarder

    def emit(self, finding: Finding, new: bool) -> None:
        self.forwarder.send([finding])

    def checkpoint(self, findings: Sequence[Finding], now: float, final: bool) -> None:
        from cranewatch.incidents import group_incidents

        self.forwarder.send([], group_incidents(findings))

    def close(self) -> None:
        self.forwarder.close()
