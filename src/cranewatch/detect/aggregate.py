"""One finding per cause: the findings of one rule about one target, whatever the peers.

A detector keys its findings by the pair it saw (client and server), which is right for one
peer and a flood for many: a DNP3 outstation reached from 353 Internet hosts is one cause (the
service is exposed to the Internet), not 353. After the detectors have finished, ``aggregate``
folds the findings of a rule that name the same target and cause with outside peers into one
finding that counts the peers and lists the first of them (count, first and last seen, bytes).

Which side of a finding is the target and which the peer is declared per rule in ``FANS``
(rules not listed are left as they are: their findings already are one per cause). The id of
a folded finding is made of rule, crane, target and cause only: it is the same whichever peer
came first and however many there were, one included, so a finding keeps its id from a run
with one peer to a run with hundreds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cranewatch.detect.base import Context
from cranewatch.model import Evidence, Finding, finding_id, iso_time

LISTED_PEERS = 20  # peers listed by name in a folded finding's evidence


@dataclass(frozen=True, slots=True)
class Fanned:
    """Where one finding sits in its rule's fan: the target and cause it shares, and its peer."""

    target: tuple[str, ...]  # what the finding is about, without the peer (host, port, protocol ...)
    peer: str  # the host on the other side
    inbound: bool  # the peer is the finding's src (many clients of one service), else its dst


def split_endpoint(text: str) -> tuple[str, int | None]:
    """``10.0.0.1:502`` -> (``10.0.0.1``, 502); ``[2001:db8::1]:22``; a bare address has no port."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port) if port.isdigit() else None
    return text, None


def host_of(text: str | None) -> str | None:
    return None if text is None else split_endpoint(text)[0]


def _egress(f: Finding, ctx: Context) -> Fanned | None:
    if f.src is None or f.dst is None:
        return None
    src, dst = host_of(f.src) or "", split_endpoint(f.dst)
    if ctx.is_outside(src):  # reached from outside: the service is exposed
        return Fanned(("inbound", f.dst), src, inbound=True)
    return Fanned(("outbound", src, str(dst[1] or "")), dst[0], inbound=False)


def _remote_access(f: Finding, ctx: Context) -> Fanned | None:
    if f.src is None or f.dst is None:
        return None
    protocol = _first(f, "protocol")
    return Fanned((f.dst, str(protocol or "")), host_of(f.src) or "", inbound=True)


def _rogue_master(f: Finding, ctx: Context) -> Fanned | None:
    if f.src is None or f.dst is None:
        return None
    writes = "writes" if _first(f, "writes") else "reads"
    return Fanned((f.dst, writes), host_of(f.src) or "", inbound=True)


def _hidden_uplink(f: Finding, ctx: Context) -> Fanned | None:
    crane_host = _first(f, "crane_host")
    if f.src is None or f.dst is None or not crane_host:
        return None  # a rogue DHCP server: no peers to fold
    return Fanned((f.src, str(crane_host)), host_of(f.dst) or "", inbound=False)


def _recon(f: Finding, ctx: Context) -> Fanned | None:
    if f.src is None or f.dst is None:
        return None
    kind = "scan" if _first(f, "ports") is not None else "modbus"  # probes, or Modbus requests
    return Fanned((f.dst, kind), host_of(f.src) or "", inbound=True)


FANS: dict[str, Callable[[Finding, Context], Fanned | None]] = {
    "egress": _egress,
    "remote-access": _remote_access,
    "rogue-master": _rogue_master,
    "hidden-uplink": _hidden_uplink,
    "recon": _recon,
}


def _first(f: Finding, key: str) -> Any:
    for e in f.evidence:
        if key in e.values:
            return e.values[key]
    return None


def aggregate(findings: list[Finding], ctx: Context) -> list[Finding]:
    """The findings with those of one rule, target and cause folded into one (counted peers).

    Only outside peers are folded: Internet hosts are counted, while a host of the crane LAN or
    the terminal (a few hundred at most, each a device someone must find) keeps its own
    finding. Returned most severe first, then by time and id.
    """
    groups: dict[tuple[str, ...], list[tuple[Finding, Fanned]]] = {}
    out: list[Finding] = []
    for f in findings:
        fan = FANS.get(f.rule)
        fanned = fan(f, ctx) if fan is not None else None
        if fanned is None or not ctx.is_outside(fanned.peer):
            out.append(f)  # a host of the crane or the terminal is an actor of its own: named
            continue
        key = (f.rule, *fanned.target, "outside")
        groups.setdefault(key, []).append((f, fanned))
    for key, members in groups.items():
        out.append(_fold(key, members, ctx))
    return sorted(out, key=lambda f: (-f.severity, f.first_seen or 0, f.id))


@dataclass(frozen=True, slots=True)
class _Peer:
    host: str
    count: int
    first_seen: float | None
    last_seen: float | None
    bytes: int | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peer": self.host, "count": self.count,
                               "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen)}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        return out


def _peers(members: list[tuple[Finding, Fanned]]) -> list[_Peer]:
    """One row per peer (a peer may appear in several findings: one per port or transport)."""
    rows: dict[str, _Peer] = {}
    for f, fanned in members:
        sent = [v for v in (_first(f, "bytes_out"), _first(f, "bytes_in")) if isinstance(v, int)]
        size = sum(sent) if sent else None
        held = rows.get(fanned.peer)
        if held is None:
            rows[fanned.peer] = _Peer(fanned.peer, f.count, f.first_seen, f.last_seen, size)
            continue
        rows[fanned.peer] = _Peer(
            held.host, held.count + f.count, _earliest_of((held.first_seen, f.first_seen)),
            _latest_of((held.last_seen, f.last_seen)),
            None if held.bytes is None and size is None else (held.bytes or 0) + (size or 0))
    return sorted(rows.values(), key=lambda p: (p.first_seen is None, p.first_seen or 0.0, p.host))


def _fold(key: tuple[str, ...], members: list[tuple[Finding, Fanned]], ctx: Context) -> Finding:
    rule, zone = key[0], key[-1]
    fid = finding_id(rule, ctx.crane, "peers", *key[1:])
    peers = _peers(members)
    # The lead is the finding of the first peer: its endpoints and evidence stand for the rest.
    first_peer = peers[0].host
    ordered = sorted(members, key=lambda m: (m[1].peer != first_peer, m[0].first_seen or 0.0, m[0].id))
    lead, fanned = ordered[0]
    if len(peers) == 1 and len(members) == 1:
        return dataclasses.replace(lead, id=fid)
    findings = [f for f, _ in members]
    techniques = sorted({t for f in findings for t in f.technique})
    count = sum(f.count for f in findings)
    summary = Evidence(
        note=f"{len(peers)} {zone} peer(s); the first {min(len(peers), LISTED_PEERS)} listed",
        values={"peers": len(peers), "first_peers": [p.to_json() for p in peers[:LISTED_PEERS]]},
    )
    return Finding(
        id=fid,
        rule=rule,
        category=lead.category,
        severity=max(f.severity for f in findings),
        title=_title(rule, lead, fanned, len(peers), zone, count, ctx),
        first_seen=_earliest_of(f.first_seen for f in findings),
        last_seen=_latest_of(f.last_seen for f in findings),
        count=count,
        crane=lead.crane,
        src=lead.src,
        dst=lead.dst,
        technique=tuple(techniques),
        evidence=(summary, *lead.evidence),
        remedy=lead.remedy,
    )


def _earliest_of(times: Iterable[float | None]) -> float | None:
    return min((t for t in times if t is not None), default=None)


def _latest_of(times: Iterable[float | None]) -> float | None:
    return max((t for t in times if t is not None), default=None)


def _title(rule: str, lead: Finding, fanned: Fanned, peers: int, zone: str, count: int, ctx: Context) -> str:
    hosts = f"{peers} {zone} hosts"
    if rule == "egress" and fanned.inbound:
        host, port = split_endpoint(lead.dst or "")
        where = f"{ctx.host_name(host)}:{port}" if port else ctx.host_name(host)
        return f"{where} is exposed to the Internet: reached from {hosts} ({count} connection(s))"
    if rule == "egress":
        return (f"crane host {ctx.host_name(host_of(lead.src) or '')} talks to {hosts} on port "
                f"{fanned.target[2] or '?'} ({count} connection(s))")
    if rule == "remote-access":
        host, port = split_endpoint(lead.dst or "")
        protocol = fanned.target[1].upper() or "remote-access"
        return f"{protocol} sessions to {ctx.host_name(host)}:{port} from {hosts} ({count} session(s))"
    if rule == "rogue-master":
        verb = "write to" if fanned.target[1] == "writes" else "poll"
        return f"{peers} new Modbus masters from {zone} hosts {verb} PLC {ctx.host_name(host_of(lead.dst) or '')}"
    if rule == "recon":
        host, port = split_endpoint(lead.dst or "")
        where = ctx.host_name(host) + (f":{port}" if port else "")
        if fanned.target[1] == "scan":
            return f"{where} scanned by {hosts} ({count} probes)"
        return f"Modbus reconnaissance of {where} by {hosts} ({count} requests)"
    router, crane_host = fanned.target
    return (f"{router} carries traffic between {ctx.host_name(crane_host)} and {hosts}, "
            "bypassing the crane gateway")
