"""Incidents: the findings of one cause, put together with a timeline (findings in, incidents out).

An analyst reading ten findings of one replay attack (replay, position/speed, rates ...) or the
three steps of one intrusion (a new host on the LAN, a hidden uplink through it, an SSH session
from outside) should read one incident. Two findings belong to one incident when they overlap
in time (within ``TIME_SLACK``) and

- share an actor: a host one of them comes from (its ``src``) is a host of the other (``src``
  or ``dst``). Two findings that merely hit the same target (two hosts each writing to the
  PLC) are not joined by it: the PLC is everyone's target; the hosts are the causes;
- or are process findings without hosts (the process checks that do not know the device yet),
  joined with each other and with the writes and false readings of the network detectors:
  one tampering shown by several checks.

Every network or process finding is in exactly one incident (a lone finding makes an incident
of one). Forensic findings (of an image, not of traffic) are left out: they have no time.

An incident's id is made of its crane and its member finding ids, which are stable themselves:
the same findings make the same incident whatever the order they came in or the time of the run.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cranewatch.model import NETWORK_CATEGORIES, Finding, Severity, iso_time, parse_time

TIME_SLACK = 60.0  # seconds: findings this close in time may be one incident
# Network findings a host-less process finding may be the consequence of (a write to the PLC,
# a false value on the wire).
PROCESS_CAUSES = frozenset({"safety-override", "plc-control", "rogue-master", "false-reading"})


@dataclass(frozen=True, slots=True)
class Step:
    """One finding on an incident's timeline."""

    at: float | None
    finding: str
    severity: Severity
    category: str
    title: str
    src: str | None
    dst: str | None

    def to_json(self) -> dict[str, Any]:
        return {"at": iso_time(self.at), "finding": self.finding, "severity": str(self.severity),
                "category": self.category, "title": self.title, "src": self.src, "dst": self.dst}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Step:
        return cls(parse_time(obj.get("at")), obj["finding"], Severity.parse(obj["severity"]),
                   obj["category"], obj["title"], obj.get("src"), obj.get("dst"))


@dataclass(frozen=True, slots=True)
class Incident:
    """Related findings of one cause (the contract of DESIGN.md, ``"type": "incident"``)."""

    id: str
    crane: str | None
    title: str
    severity: Severity
    first_seen: float | None
    last_seen: float | None
    findings: tuple[str, ...]  # member finding ids, sorted
    assets: tuple[str, ...]  # hosts the members name, sorted
    timeline: tuple[Step, ...]  # the members in time order

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "incident",
            "id": self.id,
            "crane": self.crane,
            "title": self.title,
            "severity": str(self.severity),
            "first_seen": iso_time(self.first_seen),
            "last_seen": iso_time(self.last_seen),
            "findings": list(self.findings),
            "assets": list(self.assets),
            "timeline": [s.to_json() for s in self.timeline],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Incident:
        """Inverse of ``to_json`` (the store keeps the record)."""
        return cls(
            id=obj["id"],
            crane=obj.get("crane"),
            title=obj["title"],
            severity=Severity.parse(obj["severity"]),
            first_seen=parse_time(obj.get("first_seen")),
            last_seen=parse_time(obj.get("last_seen")),
            findings=tuple(obj["findings"]),
            assets=tuple(obj.get("assets", ())),
            timeline=tuple(Step.from_json(s) for s in obj.get("timeline", ())),
        )


def incident_id(crane: str | None, members: Iterable[str]) -> str:
    """Stable: the crane and the sorted member finding ids (each stable across runs)."""
    text = json.dumps([crane, *sorted(members)], separators=(",", ":"))
    return "cwi-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def host(endpoint: str | None) -> str | None:
    """The host of ``address[:port]`` (``[v6]:port`` too); a network (``10.0.0.0/24``) stays as is."""
    if endpoint is None:
        return None
    if endpoint.startswith("["):
        return endpoint[1:].split("]", 1)[0]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def is_process(f: Finding) -> bool:
    return f.rule.startswith("process-")


def _actors(f: Finding) -> set[str]:
    """The hosts a finding comes from: its src (for a process finding, the device whose values
    are false; the master that read them is not a cause)."""
    src = host(f.src)
    return {src} if src else set()


def _hosts(f: Finding) -> set[str]:
    if is_process(f):
        return _actors(f)
    return {h for h in (host(f.src), host(f.dst)) if h}


def _close_in_time(a: Finding, b: Finding) -> bool:
    if a.first_seen is None or b.first_seen is None:
        return True  # no time to tell them apart by
    a_last = a.last_seen if a.last_seen is not None else a.first_seen
    b_last = b.last_seen if b.last_seen is not None else b.first_seen
    return a.first_seen <= b_last + TIME_SLACK and b.first_seen <= a_last + TIME_SLACK


def related(a: Finding, b: Finding) -> bool:
    """Whether two findings are of one incident (the rules of the module docstring)."""
    if not _close_in_time(a, b):
        return False
    if _actors(a) & _hosts(b) or _actors(b) & _hosts(a):
        return True
    for x, y in ((a, b), (b, a)):
        if is_process(x) and not _actors(x) and (is_process(y) or y.category in PROCESS_CAUSES):
            return True
    return False


def group_incidents(findings: Sequence[Finding]) -> tuple[Incident, ...]:
    """The incidents the network and process findings make, most severe first, then by time.

    The same grouping as joining every ``related`` pair, without looking at every pair: for
    each host, the findings it is the actor of are swept in time order (those close in time
    chain into one), then each finding that only names the host joins the chains it overlaps;
    host-less process findings are swept the same way against process findings and the
    network findings they may be the consequence of. A few thousand findings on one busy
    host take milliseconds, not the seconds of a pairwise scan.
    """
    members = sorted((f for f in findings if f.category in NETWORK_CATEGORIES), key=lambda f: f.id)
    links = _Links(len(members))
    spans = [_span(f) for f in members]
    actors_of: dict[str, list[int]] = {}
    named_by: dict[str, list[int]] = {}
    hostless: list[int] = []
    causes: list[int] = []
    for i, f in enumerate(members):
        actors = _actors(f)
        for h in actors:
            actors_of.setdefault(h, []).append(i)
        for h in _hosts(f) - actors:
            named_by.setdefault(h, []).append(i)
        if is_process(f) and not actors:
            hostless.append(i)
        elif is_process(f) or f.category in PROCESS_CAUSES:
            causes.append(i)
    for h, indexes in actors_of.items():
        links.sweep(indexes, named_by.get(h, []), spans)
    links.sweep(hostless, causes, spans)
    groups: dict[int, list[Finding]] = {}
    for i, f in enumerate(members):
        groups.setdefault(links.root(i), []).append(f)
    incidents = [_incident(group) for group in groups.values()]
    return tuple(sorted(incidents, key=lambda n: (-n.severity, n.first_seen or 0.0, n.id)))


def _span(f: Finding) -> tuple[float, float]:
    """The time a finding may join others in: first seen to last seen plus the slack (no time:
    any time, as ``related`` has it)."""
    if f.first_seen is None:
        return (-math.inf, math.inf)
    last = f.last_seen if f.last_seen is not None else f.first_seen
    return (f.first_seen, last + TIME_SLACK)


class _Links:
    """Union-find over finding indexes, joined by sweeps over time spans."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.root(i), self.root(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def sweep(self, chained: list[int], joining: list[int], spans: list[tuple[float, float]]) -> None:
        """Join the ``chained`` findings whose spans overlap (transitively: a chain), then each
        of ``joining`` to every chain its span overlaps (``joining`` are not joined to each
        other by this)."""
        if not chained:
            return
        chains: list[tuple[float, float, int]] = []  # (start, end, a member), sorted, disjoint
        for i in sorted(chained, key=lambda k: spans[k]):
            start, end = spans[i]
            if chains and start <= chains[-1][1]:
                first, last, member = chains[-1]
                self.join(member, i)
                chains[-1] = (first, max(last, end), member)
            else:
                chains.append((start, end, i))
        starts = [c[0] for c in chains]
        ends = [c[1] for c in chains]
        for j in joining:
            start, end = spans[j]
            # chains are disjoint and sorted by start and end alike: the ones overlapping
            # [start, end] are those from the first ending at or after ``start`` on, while
            # they begin at or before ``end``
            k = bisect.bisect_left(ends, start)
            while k < len(chains) and starts[k] <= end:
                self.join(chains[k][2], j)
                k += 1


def _order(f: Finding) -> tuple[bool, float, int, str]:
    return (f.first_seen is None, f.first_seen or 0.0, -f.severity, f.id)


def _incident(group: list[Finding]) -> Incident:
    timeline = sorted(group, key=_order)
    lead = min(group, key=lambda f: (-f.severity, *_order(f)))
    crane = next((f.crane for f in group if f.crane), None)
    firsts = [f.first_seen for f in group if f.first_seen is not None]
    lasts = [t for f in group for t in (f.last_seen, f.first_seen) if t is not None]
    return Incident(
        id=incident_id(crane, (f.id for f in group)),
        crane=crane,
        title=_title(lead, group),
        severity=max(f.severity for f in group),
        first_seen=min(firsts, default=None),
        last_seen=max(lasts, default=None),
        findings=tuple(sorted(f.id for f in group)),
        assets=tuple(sorted({h for f in group for h in (host(f.src), host(f.dst)) if h})),
        timeline=tuple(Step(f.first_seen, f.id, f.severity, f.category, f.title, f.src, f.dst)
                       for f in timeline),
    )


def _title(lead: Finding, group: list[Finding]) -> str:
    """The most severe finding's title, and what else the incident holds."""
    if len(group) == 1:
        return lead.title
    others = sorted({f.category for f in group if f is not lead})
    return f"{lead.title} — with {len(group) - 1} related finding(s): {', '.join(others)}"
