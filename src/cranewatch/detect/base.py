"""What every detector shares: the crane context it judges against and incident aggregation.

``Context`` answers the questions every detector asks (is this address on the crane LAN,
outside, allowed to talk to that one?) from the profile when there is one, else from the
learned baseline, else from generic rules (RFC 1918 / special-use addresses are local, global
ones are outside). The profile wins over the baseline.

``Incidents`` folds the many packets of one incident into one finding with a count, the
first and last time, a bounded list of frames and the values that matter.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cranewatch.model import Evidence, Finding, Severity, finding_id

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile

MAX_FRAMES = 20  # frames kept per incident as evidence


class Occurrence(Protocol):
    """Anything that happened at a time in a frame of a capture (a fact or a decoder event)."""

    @property
    def ts(self) -> float: ...

    @property
    def frame(self) -> int: ...

    @property
    def source(self) -> str: ...


LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
    "fc00::/7", "fe80::/10", "::1/128", "ff00::/8", "::/128"))


@lru_cache(maxsize=65536)
def is_global(ip: str) -> bool:
    """An address outside every private, loopback, link-local and multicast range.

    Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) count as outside:
    they stand for Internet hosts in labs and examples, which is exactly what they mean here.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not any(addr in net for net in LOCAL_NETWORKS if net.version == addr.version)


@lru_cache(maxsize=65536)
def is_unicast(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.is_multicast or addr.is_unspecified:
        return False
    return not (addr.version == 4 and (str(addr) == "255.255.255.255" or str(addr).endswith(".255")))


@dataclass
class Context:
    """The crane a detector judges: profile (wins), baseline (learned), or generic rules."""

    profile: CraneProfile | None = None
    baseline: Baseline | None = None
    crane: str | None = None
    # MAC bindings seen in this very stream (ARP, DHCP), for gateways named only by IP.
    bindings: dict[str, set[str]] = field(default_factory=dict)
    # Server port of each (client, server, protocol) flow seen, for findings built from
    # register series (which carry no ports).
    ports: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # Where the captures were cut into separate recordings (start of every segment after the
    # first, ``segments``): intervals and rates are never measured across one.
    segment_starts: tuple[float, ...] = ()

    def port_of(self, client: str, server: str, protocol: str, default: int) -> int:
        return self.ports.get((client, server, protocol), default)

    _zones: dict[str, str] = field(default_factory=dict)
    _outside: dict[str, bool] = field(default_factory=dict)
    _pairs: dict[tuple[str, str, int | None], bool] = field(default_factory=dict)

    def zone_of(self, ip: str) -> str:
        """``crane``, ``terminal`` or ``outside`` (cached: asked for every flow)."""
        zone = self._zones.get(ip)
        if zone is None:
            zone = self._zones[ip] = self._find_zone(ip)
        return zone

    def _find_zone(self, ip: str) -> str:
        if self.profile is not None:
            return self.profile.zone_of(ip)
        if self.baseline is not None and self.baseline.crane_networks:
            addr = _addr(ip)
            if addr is not None and any(addr in n for n in self.baseline.crane_networks):
                return "crane"
        if is_global(ip) or not is_unicast(ip):
            return "outside" if is_global(ip) else "terminal"
        # Generic: a private address is local; with a baseline the crane subnets say which.
        return "terminal" if self.baseline is not None and self.baseline.crane_networks else "crane"

    def is_outside(self, ip: str) -> bool:
        """An outside unicast address (cached: asked for every MQTT publish and flow)."""
        outside = self._outside.get(ip)
        if outside is None:
            outside = self._outside[ip] = self.zone_of(ip) == "outside" and is_unicast(ip)
        return outside

    def is_crane(self, ip: str) -> bool:
        return self.zone_of(ip) == "crane"

    def host_name(self, ip: str) -> str:
        if self.profile is not None:
            host = self.profile.host_by_ip(ip)
            if host is not None:
                return host.name
        return ip

    def known_pair(self, client: str, server: str, port: int | None = None) -> bool:
        """Seen in the baseline (either way round) or allowed by the profile."""
        key = (client, server, port)
        known = self._pairs.get(key)
        if known is None:
            known = self._pairs[key] = self._find_pair(client, server, port)
        return known

    def _find_pair(self, client: str, server: str, port: int | None) -> bool:
        if self.profile is not None and self.profile.allows(client, server, None, port):
            return True
        if self.baseline is not None:
            return self.baseline.has_pair(client, server, port)
        return False

    def gateway_macs(self) -> set[str]:
        """MAC addresses allowed to carry off-subnet traffic (the sanctioned gateway)."""
        if self.profile is not None and self.profile.gateway is not None:
            if self.profile.gateway.mac:
                return {self.profile.gateway.mac}
            macs = set(self.bindings.get(self.profile.gateway.ip, set()))
            if self.baseline is not None:
                macs |= set(self.baseline.macs_of(self.profile.gateway.ip))
                if not macs:
                    macs |= set(self.baseline.gateways)
            return macs
        if self.baseline is not None:
            return set(self.baseline.gateways)
        return set()


def _addr(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


_COLLECTIONS = (list, tuple, set, frozenset)


@dataclass
class Incident:
    """Accumulates one incident's occurrences until it becomes a finding.

    ``sources`` names the capture of each kept frame once frames of more than one capture
    were kept (rotated files of one recording number their frames each from 1).
    """

    first_seen: float
    last_seen: float
    source: str
    count: int = 0
    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    excerpt: str | None = None
    sources: list[str] | None = None

    def add(self, fact: Occurrence, values: dict[str, Any] | None = None, excerpt: str | None = None,
            weight: int = 1) -> None:
        # Called for every occurrence (each Modbus write, each DNS name ...): kept lean.
        self.count += weight
        ts = fact.ts
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        if len(self.frames) < MAX_FRAMES and fact.frame:
            if self.sources is not None:
                self.sources.append(fact.source)
            elif fact.source != self.source:
                self.sources = [self.source] * len(self.frames) + [fact.source]
            self.frames.append(fact.frame)
            self.times.append(ts)
        if values:
            for key, value in values.items():
                self._merge(key, value)
        if excerpt and self.excerpt is None:
            self.excerpt = excerpt[:200]

    def _merge(self, key: str, value: Any) -> None:
        """Lists of distinct values grow (bounded); scalars keep the first value seen."""
        if isinstance(value, _COLLECTIONS):
            held = self.values.get(key)
            if held is None:
                held = self.values[key] = []
            for item in value:
                if len(held) < 50 and item not in held:
                    held.append(item)
        elif key not in self.values:
            self.values[key] = value


class Incidents:
    """Incidents of one rule keyed by what makes the incident (src, dst, register ...)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], Incident] = {}

    def add(self, key: tuple[Any, ...], fact: Occurrence, values: dict[str, Any] | None = None,
            excerpt: str | None = None, weight: int = 1) -> Incident:
        incident = self.by_key.get(key)
        if incident is None:
            incident = Incident(fact.ts, fact.ts, fact.source)
            self.by_key[key] = incident
        incident.add(fact, values, excerpt, weight)
        return incident

    def items(self) -> Iterable[tuple[tuple[Any, ...], Incident]]:
        return self.by_key.items()


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one rule reports: category, severity, technique, title template and remedy."""

    rule: str
    category: str
    severity: Severity
    technique: tuple[str, ...]
    remedy: str


def make_finding(ctx: Context, verdict: Verdict, key: tuple[Any, ...], incident: Incident,
                 title: str, src: str | None, dst: str | None, severity: Severity | None = None,
                 note: str | None = None, extra: Iterable[Evidence] = ()) -> Finding:
    """One finding from an aggregated incident, with a stable id made of rule, crane and key."""
    values = dict(incident.values)
    frames = incident.frames
    if incident.sources is not None:  # frames of several captures: each capture's own
        by_source: dict[str, list[int]] = {}
        for source, frame in zip(incident.sources, incident.frames, strict=True):
            by_source.setdefault(source, []).append(frame)
        frames = by_source.pop(incident.source, [])
        values["frames_in"] = [{"source": s, "frames": f} for s, f in by_source.items()]
    evidence = Evidence(
        source=incident.source or None,
        frames=tuple(frames),
        times=tuple(incident.times[:3]) + ((incident.last_seen,) if incident.count > 1 else ()),
        values=values,
        excerpt=incident.excerpt,
        note=note,
    )
    return Finding(
        id=finding_id(verdict.rule, ctx.crane, *key),
        rule=verdict.rule,
        category=verdict.category,
        severity=severity if severity is not None else verdict.severity,
        title=title,
        first_seen=incident.first_seen,
        last_seen=incident.last_seen,
        count=incident.count,
        crane=ctx.crane,
        src=src,
        dst=dst,
        technique=verdict.technique,
        evidence=(evidence, *extra),
        remedy=verdict.remedy,
    )


def endpoint(ip: str, port: int | None = None) -> str:
    if not port:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Detector(Protocol):
    """A detector: sees facts (and Modbus events/series), then reports its findings.

    A detector may also have ``judges(ctx) -> tuple[type, ...]``: the types among ``accepts``
    it can find anything in with what ``ctx`` knows. The engine then does not build or hand
    it the others (without a profile or baseline nothing reads ARP bindings, so none are made).
    """

    name: ClassVar[str]
    accepts: ClassVar[tuple[type, ...]]

    def observe(self, fact: Any, ctx: Context) -> None: ...

    def finish(self, ctx: Context) -> list[Finding]: ...
