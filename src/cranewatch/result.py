"""The analysis document: what ``pipeline.analyze`` returns and every renderer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cranewatch.errors import Location
from cranewatch.incidents import Incident
from cranewatch.model import Finding, Severity
from cranewatch.protocols.ftp import FtpData
from cranewatch.protocols.modbus import ModbusPeer
from cranewatch.protocols.profinet import RtCyclicSummary
from cranewatch.segments import Segment


@dataclass(frozen=True, slots=True)
class InputWarning:
    """A problem in the input that did not stop the analysis."""

    message: str
    file: str | None = None
    frame: int | None = None
    # "capture" (the file itself) | "decode" (a PDU) | "limit" | "zeek" (what logs lack)
    # | "internal" (a decoder, detector or check failed on this unit; the run went on)
    kind: str = "decode"

    def __str__(self) -> str:
        return f"{Location(file=self.file, frame=self.frame)}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "warning", "kind": self.kind, "file": self.file, "frame": self.frame,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class InputSummary:
    path: str
    sha256: str
    packets: int
    first_seen: float | None
    last_seen: float | None
    format: str  # "pcap" | "pcapng" | "zeek"
    complete: bool  # False when the capture was truncated, corrupt or unreadable
    warnings: tuple[str, ...] = ()
    events: int = 0  # for Zeek logs: the events they gave (they have no packets)


@dataclass(frozen=True, slots=True)
class HostSummary:
    """A sender seen on the wire: by MAC, or by IP address where the link has no MAC."""

    mac: str | None
    ips: tuple[str, ...]
    first_seen: float
    last_seen: float
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ProtocolSummary:
    """Flows of one application protocol (or ``tcp/PORT`` / ``udp/PORT`` when unknown)."""

    protocol: str
    flows: int
    packets: int
    bytes: int
    clients: int
    servers: int


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """The one document every renderer reads."""

    inputs: tuple[InputSummary, ...]
    hosts: tuple[HostSummary, ...]
    protocols: tuple[ProtocolSummary, ...]
    modbus_masters: tuple[ModbusPeer, ...]
    modbus_slaves: tuple[ModbusPeer, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[InputWarning, ...]
    warnings_suppressed: int
    packets: int
    flows: int
    series: int
    events: dict[str, int] = field(default_factory=dict)
    profile: str | None = None
    baseline: str | None = None
    segments: tuple[Segment, ...] = ()  # the captures' continuous recordings (``segments``)
    incidents: tuple[Incident, ...] = ()  # the findings of one cause together (``incidents``)
    # PROFINET cyclic I/O: one summary per sender, receiver and frame id (``ProfinetRun.summary``)
    profinet_streams: tuple[RtCyclicSummary, ...] = ()
    # FTP data connections, each with the control session that announced it (``FtpRun.summary``)
    ftp_data: tuple[FtpData, ...] = ()

    @property
    def complete(self) -> bool:
        return all(i.complete for i in self.inputs)

    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)
