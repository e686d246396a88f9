"""A crane's communication map: hosts as nodes, conversations as edges, the unexpected in red.

Built from the conversations the crane's recorded traffic runs kept (complete, not superseded;
or the runs given). A node is an IP address, named and given a role by the fleet's components
and the profile's hosts, else a role guessed from what it served and used; its zone is the
profile's (crane, terminal, outside) or, without a profile, ``crane`` inside the fleet's zone
and ``outside`` elsewhere. An edge is every conversation from one client to one server on one
service, summed over the runs (flows, packets, bytes, first and last seen). It is *expected*
when the profile allows it or the baseline holds the pair on that port, *unexpected* (red)
otherwise, and *unjudged* when neither a profile nor a baseline was at hand.

``render_svg`` draws the map as one deterministic SVG (no script, no style sheet, no links): the
zones as columns (terminal, crane, outside), nodes sorted by address, one line per client and
server pair labelled with its services (a dot marks the server's end; the edge's title gives
flows, packets, bytes and times), and every label escaped, so a hostile name stays text.
The HTML commissioning report shows it; the console serves it as is.

API::

    communication_map(store, crane, *, profile=None, baseline=None, run_ids=None) -> CommMap
        (profile defaults to the crane's registered profile file, when it loads)
    CommMap(crane, nodes: tuple[CommNode, ...], edges: tuple[CommEdge, ...], judged_by)
        .to_json(), .unexpected() -> list[CommEdge]
    CommNode(address, zone, name, role)        CommEdge(client, server, transport, server_port,
        protocol, service, flows, packets, bytes, first_seen, last_seen, expected: bool | None)
    render_svg(comm_map) -> str
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from cranewatch.inventory import _load_profile, guess_role
from cranewatch.model import iso_time

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile
    from cranewatch.store import Store

__all__ = ["CommEdge", "CommMap", "CommNode", "communication_map", "render_svg"]

ZONES = ("terminal", "crane", "outside")


@dataclass(frozen=True, slots=True)
class CommNode:
    address: str
    zone: str  # terminal | crane | outside
    name: str | None = None
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "zone": self.zone, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class CommEdge:
    client: str
    server: str
    transport: str
    server_port: int
    protocol: str
    service: str
    flows: int
    packets: int
    bytes: int
    first_seen: float | None
    last_seen: float | None
    expected: bool | None  # None: neither a profile nor a baseline judged it

    def to_json(self) -> dict[str, Any]:
        return {"client": self.client, "server": self.server, "transport": self.transport,
                "server_port": self.server_port, "protocol": self.protocol, "service": self.service,
                "flows": self.flows, "packets": self.packets, "bytes": self.bytes,
                "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen),
                "expected": self.expected}


@dataclass(frozen=True, slots=True)
class CommMap:
    crane: str
    nodes: tuple[CommNode, ...]
    edges: tuple[CommEdge, ...]
    judged_by: tuple[str, ...] = ()  # "profile", "baseline"

    def unexpected(self) -> list[CommEdge]:
        return [e for e in self.edges if e.expected is False]

    def to_json(self) -> dict[str, Any]:
        return {"crane": self.crane, "judged_by": list(self.judged_by), "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges]}


def _ip_order(ip: str) -> tuple[int, int, str]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0, ip)
    return (addr.version, int(addr), "")


def _in(ip: str, cidr: str | None) -> bool:
    if not cidr:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def communication_map(store: Store, crane: str, *, profile: CraneProfile | None = None,
                      baseline: Baseline | None = None, run_ids: Sequence[int] | None = None) -> CommMap:
    """The crane's map from its recorded conversations (see the module docstring)."""
    from cranewatch.fleet import require_crane

    record = require_crane(store, crane)
    if profile is None:
        profile = _load_profile(record.profile_path)
    totals: dict[tuple[str, str, str, int, str], list[Any]] = {}
    for sighting in store.observed_conversations(record.name, run_ids):
        c = sighting.conversation
        key = (c.client, c.server, c.transport, c.server_port, c.protocol)
        entry = totals.get(key)
        if entry is None:
            totals[key] = [c.service, c.flows, c.packets, c.bytes, c.first_seen, c.last_seen]
            continue
        entry[1] += c.flows
        entry[2] += c.packets
        entry[3] += c.bytes
        entry[4] = min((t for t in (entry[4], c.first_seen) if t is not None), default=None)
        entry[5] = max((t for t in (entry[5], c.last_seen) if t is not None), default=None)

    def judge(client: str, server: str, protocol: str, transport: str, port: int) -> bool | None:
        if profile is None and baseline is None:
            return None
        named = None if protocol == transport else protocol
        if profile is not None and profile.allows(client, server, named, port):
            return True
        return bool(baseline is not None and baseline.has_pair(client, server, port))

    edges = tuple(CommEdge(client, server, transport, port, protocol, e[0], e[1], e[2], e[3], e[4], e[5],
                           judge(client, server, protocol, transport, port))
                  for (client, server, transport, port, protocol), e in sorted(totals.items()))

    names = {c.ip: (c.name, c.kind) for c in record.components if c.ip}
    served: dict[str, set[tuple[str, int]]] = {}
    used: dict[str, set[tuple[str, int]]] = {}
    for e in edges:
        served.setdefault(e.server, set()).add((e.transport, e.server_port))
        used.setdefault(e.client, set()).add((e.transport, e.server_port))
    nodes = []
    for address in sorted({*served, *used}, key=_ip_order):
        host = profile.host_by_ip(address) if profile is not None else None
        if profile is not None:
            zone = profile.zone_of(address)
        else:
            zone = "crane" if _in(address, record.zone) else "outside"
        name, role = names.get(address, (None, None))
        if host is not None:
            name, role = name or host.name, role or host.role
        role = role or guess_role(served.get(address, set()), used.get(address, set()))
        nodes.append(CommNode(address, zone if zone in ZONES else "outside", name, role))
    judged_by = tuple(n for n, v in (("profile", profile), ("baseline", baseline)) if v is not None)
    return CommMap(record.name, tuple(nodes), edges, judged_by)


# -- drawing ------------------------------------------------------------------------------------

WIDTH = 960
COLUMN_X = {"terminal": 150, "crane": 480, "outside": 810}
NODE_W, NODE_H, ROW = 190, 40, 64
TOP = 70
ZONE_FILL = {"terminal": "#e7f3e8", "crane": "#e3ecfa", "outside": "#fbe4e2"}
ZONE_STROKE = {"terminal": "#4b8a55", "crane": "#3d64a8", "outside": "#b14a3f"}
EDGE_COLOUR = {True: "#8a94a3", None: "#5a6b85", False: "#d0021b"}


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle", weight: str = "normal",
          fill: str = "#1d2430", halo: bool = False) -> str:
    ring = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"' if halo else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" font-size="{size}" text-anchor="{anchor}"'
            f' font-weight="{weight}" fill="{fill}"{ring}>{escape(text, quote=True)}</text>')


def _server_end(x1: float, x2: float, y2: float) -> float:
    """Where an edge meets its server's box (the dot that says which end serves)."""
    if x1 == x2:
        return x2 + NODE_W / 2
    return x2 - (NODE_W / 2 if x2 > x1 else -NODE_W / 2)


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(comm_map: CommMap) -> str:
    """The map as one SVG document (deterministic: the same map gives the same bytes)."""
    columns: dict[str, list[CommNode]] = {z: [] for z in ZONES}
    for node in comm_map.nodes:
        columns[node.zone].append(node)
    rows = max((len(v) for v in columns.values()), default=0)
    height = TOP + max(rows, 1) * ROW + 30
    where: dict[str, tuple[float, float]] = {}
    for zone, members in columns.items():
        for i, node in enumerate(members):
            where[node.address] = (COLUMN_X[zone], TOP + i * ROW + NODE_H / 2)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
           f' role="img" aria-label="{escape("communication map of " + comm_map.crane, quote=True)}">',
           f'<title>{escape("Communication map of " + comm_map.crane)}</title>',
           f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>']
    for zone in ZONES:
        middle = COLUMN_X[zone]
        out.append(f'<rect x="{middle - 150:.1f}" y="24" width="300" height="{height - 34:.1f}" fill="{ZONE_FILL[zone]}"'
                   f' fill-opacity="0.45" stroke="{ZONE_STROKE[zone]}" stroke-opacity="0.4" rx="8"/>')
        out.append(_text(middle, 44, f"{zone} zone", 13, weight="bold", fill=ZONE_STROKE[zone]))
    # one line per (client, server) pair, red when any of its services is unexpected
    pairs: dict[tuple[str, str], list[CommEdge]] = {}
    for edge in comm_map.edges:
        pairs.setdefault((edge.client, edge.server), []).append(edge)
    for (client, server), edges in sorted(pairs.items()):
        if client not in where or server not in where:
            continue
        (x1, y1), (x2, y2) = where[client], where[server]
        verdict: bool | None = False if any(e.expected is False for e in edges) else (
            None if any(e.expected is None for e in edges) else True)
        colour = EDGE_COLOUR[verdict]
        width = 2.5 if verdict is False else 1.4
        if x1 == x2:  # same column: an arc beside it
            bulge = x1 + NODE_W / 2 + 30 + abs(y2 - y1) / 6
            path = f"M{x1 + NODE_W / 2:.1f},{y1:.1f} Q{bulge:.1f},{(y1 + y2) / 2:.1f} {x2 + NODE_W / 2:.1f},{y2:.1f}"
            lx, ly = bulge - 6, (y1 + y2) / 2
        else:
            sx = x1 + (NODE_W / 2 if x2 > x1 else -NODE_W / 2)
            ex = x2 - (NODE_W / 2 if x2 > x1 else -NODE_W / 2)
            path = f"M{sx:.1f},{y1:.1f} L{ex:.1f},{y2:.1f}"
            # the label a quarter along from the left end: crossing lines' middles coincide
            (ax, ay), (bx, by) = ((sx, y1), (ex, y2)) if sx < ex else ((ex, y2), (sx, y1))
            lx, ly = ax + 0.27 * (bx - ax) + 8, ay + 0.27 * (by - ay) - 4
        services = ", ".join(dict.fromkeys(e.service for e in edges))
        detail = "; ".join(
            f"{e.service}: {e.flows} flows, {e.packets} packets, {e.bytes} bytes, "
            f"{(iso_time(e.first_seen) or '?')[:19]} to {(iso_time(e.last_seen) or '?')[:19]}"
            f"{'' if e.expected is not False else ' (not in the profile or baseline)'}" for e in edges)
        out.append(f'<g class="edge{" unexpected" if verdict is False else ""}">'
                   f'<title>{escape(f"{client} → {server}: {detail}")}</title>'
                   f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{width}"/>'
                   f'<circle cx="{_server_end(x1, x2, y2):.1f}" cy="{y2:.1f}" r="3.5" fill="{colour}"/>'
                   + _text(lx, ly, _short(services, 34), 10, anchor="start", fill=colour, halo=True) + "</g>")
    for node in comm_map.nodes:
        x, y = where[node.address]
        label = node.name or node.address
        second = f"{node.address} · {node.role}" if node.name and node.role else (
            node.address if node.name else (node.role or ""))
        out.append(f'<g class="node"><title>{escape(" ".join(filter(None, (node.name, node.address, node.role, node.zone))))}</title>'
                   f'<rect x="{x - NODE_W / 2:.1f}" y="{y - NODE_H / 2:.1f}" width="{NODE_W}" height="{NODE_H}" rx="6"'
                   f' fill="{ZONE_FILL[node.zone]}" stroke="{ZONE_STROKE[node.zone]}" stroke-width="1.2"/>'
                   + _text(x, y - 3, _short(label), 12, weight="bold")
                   + (_text(x, y + 12, _short(second, 32), 10, fill="#4a5466") if second else "") + "</g>")
    if not comm_map.nodes:
        out.append(_text(WIDTH / 2, TOP + 20, "No conversations are recorded for this crane.", 13))
    out.append("</svg>")
    return "\n".join(out) + "\n"
