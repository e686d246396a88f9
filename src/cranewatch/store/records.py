"""Frozen records the store keeps: cranes and their parts, history, runs, inputs, gate decisions.

They are plain data; the rules about them (which life-cycle step is allowed, what a gate
decides) live in ``cranewatch.fleet`` and ``cranewatch.gate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Component:
    """One networked part of a crane: PLC, CMS, OCR, a camera, a modem."""

    name: str
    kind: str  # plc | cms | ocr | camera | modem | gateway | other
    mac: str | None = None
    ip: str | None = None
    firmware: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mac": self.mac, "ip": self.ip,
                "firmware": self.firmware}


@dataclass(frozen=True, slots=True)
class Crane:
    """A crane's facts as the port registered them, and its current life-cycle state."""

    name: str
    maker: str = ""
    model: str = ""
    commissioned: str | None = None  # ISO date
    control_vendor: str = ""
    profile_path: str | None = None
    zone: str | None = None  # the crane LAN as a CIDR, e.g. 10.20.7.0/24
    components: tuple[Component, ...] = ()
    state: str = "delivered"
    created_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "maker": self.maker,
            "model": self.model,
            "commissioned": self.commissioned,
            "control_vendor": self.control_vendor,
            "profile": self.profile_path,
            "zone": self.zone,
            "state": self.state,
            "components": [c.to_json() for c in self.components],
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One life-cycle change: who moved the crane from what to what, when and why."""

    crane: str
    at: float
    who: str
    why: str
    from_state: str | None
    to_state: str


@dataclass(frozen=True, slots=True)
class RunInput:
    """An analysed input file (capture, image) with its sha256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Run:
    """One analysis run: what kind, on which crane part, with which inputs, and how it ended."""

    id: int
    crane: str
    kind: str  # analyze | scan-image | gate
    component: str | None
    tool_version: str
    started_at: float
    finished_at: float | None
    status: str  # running | complete | failed
    note: str | None = None
    inputs: tuple[RunInput, ...] = field(default=())
    options: dict[str, Any] = field(default_factory=dict)  # what shaped the result besides the inputs
    fingerprint: str | None = None  # sha256 over kind, component, input digests, options
    recorded_by: str | None = None
    recordings: int = 1  # how often the same inputs and options were recorded (one run, replaced)
    superseded_at: float | None = None
    superseded_by: str | None = None
    superseded_reason: str | None = None

    @property
    def superseded(self) -> bool:
        return self.superseded_at is not None


@dataclass(frozen=True, slots=True)
class GateRecord:
    """A recorded gate decision with its reasons and the policy that produced it."""

    crane: str
    at: float
    who: str
    decision: str
    reasons: tuple[dict[str, Any], ...]
    policy: dict[str, Any]
    run_id: int | None


@dataclass(frozen=True, slots=True)
class StoredRuleset:
    """A firewall ruleset generated for a crane, as written out (for the report)."""

    crane: str
    purpose: str  # quarantine | in-service
    at: float
    who: str
    sha256: str
    text: str


FINDING_STATES: tuple[str, ...] = ("open", "acknowledged", "false-positive", "accepted-risk", "remediated")
# the states in which a finding still counts in the gate's decision
COUNTING_STATES = frozenset({"open", "acknowledged"})


@dataclass(frozen=True, slots=True)
class Disposition:
    """A recorded change of a finding's state: to what, by whom, when, why, and on what grounds.

    ``until`` (epoch seconds) is the expiry of an accepted risk; ``evidence_run`` the later run
    that shows a remediated finding gone. ``who`` is ``cranewatch`` when the tool itself reopened
    a finding (seen again after remediation, or its remediation evidence was superseded).
    """

    crane: str
    finding: str
    state: str
    at: float
    who: str
    why: str
    until: float | None = None
    evidence_run: int | None = None
    seq: int = 0

    def effective(self, now: float) -> str:
        """The state that holds at ``now``: an accepted risk past its expiry is open again."""
        if self.state == "accepted-risk" and self.until is not None and now >= self.until:
            return "open"
        return self.state

    def to_json(self) -> dict[str, Any]:
        from cranewatch.model import iso_time

        return {"finding": self.finding, "state": self.state, "at": iso_time(self.at), "who": self.who,
                "why": self.why, "until": iso_time(self.until), "evidence_run": self.evidence_run}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of a crane's audit trail besides its life-cycle steps.

    ``action``: ``disposition`` (a person changed a finding's state), ``reopen`` (cranewatch
    reopened a finding), ``supersede`` (a person set a run aside), ``re-record`` (the same
    inputs with the same options were recorded again and replaced their run).
    """

    crane: str
    at: float
    who: str
    action: str
    subject: str  # a finding id, or "run N"
    why: str
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        from cranewatch.model import iso_time

        return {"type": "audit", "crane": self.crane, "at": iso_time(self.at), "who": self.who,
                "action": self.action, "subject": self.subject, "why": self.why, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ObservedHost:
    """A host a traffic run saw: its MAC (None where the link has none) and its IP addresses."""

    mac: str | None
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a run actually examined: which check families ran, which hosts the traffic held,
    which findings a reference suppressed (they still fire). Stored as the ``coverage`` artifact;
    a remediation can rest only on a run that says this."""

    checks: tuple[str, ...]  # network | process | image | image-vulndb | image-yara
    hosts: tuple[ObservedHost, ...] = ()
    suppressed: tuple[str, ...] = ()  # finding ids the run saw but a reference suppressed

    def to_json(self) -> dict[str, Any]:
        return {"checks": list(self.checks),
                "hosts": [{"mac": h.mac, "ips": list(h.ips)} for h in self.hosts],
                "suppressed": list(self.suppressed)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Coverage:
        return cls(tuple(data.get("checks", ())),
                   tuple(ObservedHost(h.get("mac"), tuple(h.get("ips", ()))) for h in data.get("hosts", ())),
                   tuple(data.get("suppressed", ())))


@dataclass(frozen=True, slots=True)
class User:
    """A person who may use the operations console, with a role; ``password`` is the KDF's
    encoded hash (``cranewatch.web.auth``), never the password."""

    name: str
    role: str  # viewer | analyst | officer | admin
    password: str
    created_at: float
    created_by: str
    changed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        from cranewatch.model import iso_time

        return {"user": self.name, "role": self.role, "created": iso_time(self.created_at),
                "created_by": self.created_by, "changed": iso_time(self.changed_at)}


@dataclass(frozen=True, slots=True)
class Session:
    """A console login: kept by the sha256 of the cookie's token, with its CSRF token and times."""

    token_sha256: str
    user: str
    role: str
    csrf: str
    created_at: float
    expires_at: float
    last_seen: float
