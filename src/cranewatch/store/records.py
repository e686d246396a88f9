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
