"""A crane's asset inventory: the hosts its traffic runs saw beside the parts registered for it
(fleet components and profile hosts), with the gaps marked.

A seen asset is a MAC address (or, on links without one, an IP address) with the addresses it
sent from. When the crane's zone is known (the fleet's ``zone``, else the profile's crane
zone), a MAC's addresses outside it are not its own: they are hosts behind a router, kept as
``remote_ips`` (the crane gateway carries the terminal's addresses; a hidden modem carries an
outside one). A registered part (fleet component: name, kind, MAC, IP; profile host: name,
role, IP, MAC) matches a seen asset by MAC, else by one of its own IPs; the registered gateway
(fleet kind or profile role ``gateway``, or the profile's ``[gateway]``) matches the one MAC
that carries terminal-zone addresses, when its MAC is not registered. Profile hosts outside
the crane zone (the terminal's services) are not the crane's parts and are not listed; they show
as the ``remote_ips`` of the MAC that carries them.

A traffic run recorded before runs kept their hosts (store migration 0008) still counts: the
MACs and addresses its coverage names, without times or counts.

Each row has a ``status``: ``registered`` (seen and registered), ``registered-unseen`` (in the
fleet or profile, never seen in a run) or ``seen-unregistered`` (on the wire, in neither).
Vendors come from the IEEE OUI table Wireshark installs (``/usr/share/wireshark/manuf``), when
it is there; locally administered MACs have none. The role is the registered one when there
is one, else a guess from the services the host served and used (``guess_role``).

API::

    asset_inventory(store, crane, *, profile: CraneProfile | None = None) -> Inventory
        (the profile defaults to the crane's registered profile file, when it can be read)
    Inventory(crane, zone, assets: tuple[Asset, ...])        .to_json(), .gaps()
    Asset(key, mac, ips, remote_ips, vendor, role, role_source ("registered" | "guess" | None),
          name, kind, first_seen, last_seen, packets, bytes, runs, status)  .to_json()
    vendor_of(mac) -> str | None
    guess_role(served: set[tuple[str, int]], used: set[tuple[str, int]], remote: int) -> str | None
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cranewatch.model import iso_time
from cranewatch.store.console import HostSighting

if TYPE_CHECKING:
    from cranewatch.profile import CraneProfile
    from cranewatch.store import Store

__all__ = ["Asset", "Inventory", "asset_inventory", "guess_role", "vendor_of"]

MANUF = Path("/usr/share/wireshark/manuf")
STATUSES = ("registered", "registered-unseen", "seen-unregistered")

# server port -> what a host serving it most likely is (first match in this order wins)
_SERVED_ROLES: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({502, 102, 44818, 2222, 20000}), "plc"),
    (frozenset({554}), "camera"),
    (frozenset({4840}), "opc-ua-server"),
    (frozenset({1883, 8883}), "mqtt-broker"),
    (frozenset({53}), "dns"),
    (frozenset({123}), "ntp"),
    (frozenset({514, 6514}), "syslog"),
    (frozenset({3389, 5900}), "remote-desktop"),
    (frozenset({22}), "ssh-server"),
    (frozenset({80, 443, 8080, 8443}), "web-server"),
)
_USED_ROLES: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({502, 102, 44818, 20000}), "plc-master"),
    (frozenset({554}), "video-client"),
    (frozenset({1883, 8883}), "mqtt-client"),
)


@lru_cache(maxsize=1)
def _oui_table() -> dict[int, dict[int, str]]:
    """prefix length in bits -> prefix value -> vendor (empty when Wireshark's table is absent)."""
    table: dict[int, dict[int, str]] = {}
    try:
        lines = MANUF.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return table
    for line in lines:
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        prefix, _, bits_text = parts[0].partition("/")
        digits = prefix.replace(":", "").replace("-", "")
        try:
            value = int(digits, 16)
        except ValueError:
            continue
        bits = int(bits_text) if bits_text.isdigit() else len(digits) * 4
        vendor = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).split("#")[0].strip()
        width = len(digits) * 4
        table.setdefault(bits, {})[value >> (width - bits)] = vendor
    return table


def vendor_of(mac: str | None) -> str | None:
    """The vendor the IEEE assigned the MAC's prefix to (longest prefix first), if known."""
    if not mac:
        return None
    try:
        value = int(mac.replace(":", "").replace("-", ""), 16)
    except ValueError:
        return None
    if (value >> 40) & 0x02:
        return None  # locally administered: no vendor behind it
    table = _oui_table()
    for bits in sorted(table, reverse=True):
        vendor = table[bits].get(value >> (48 - bits))
        if vendor is not None:
            return vendor
    return None


def guess_role(served: set[tuple[str, int]], used: set[tuple[str, int]], remote: int = 0) -> str | None:
    """A role from the services a host served and used ((transport, port) pairs); a MAC that
    carries others' addresses is a router. None when nothing tells."""
    if remote:
        return "router"
    ports = {port for _, port in served}
    for wanted, role in _SERVED_ROLES:
        if ports & wanted:
            return role
    ports = {port for _, port in used}
    for wanted, role in _USED_ROLES:
        if ports & wanted:
            return role
    return None


@dataclass(frozen=True, slots=True)
class _Registered:
    name: str
    kind: str
    mac: str | None
    ip: str | None
    gateway: bool


@dataclass(frozen=True, slots=True)
class Asset:
    """One row of the inventory: a seen host, a registered part, or both."""

    key: str  # the MAC, else the IP; "registered:NAME" for a part never seen
    mac: str | None = None
    ips: tuple[str, ...] = ()
    remote_ips: tuple[str, ...] = ()  # addresses outside the crane zone seen behind this MAC
    vendor: str | None = None
    role: str | None = None
    role_source: str | None = None  # registered | guess
    name: str | None = None  # the registered name
    kind: str | None = None  # the fleet component's kind, or the profile host's role
    first_seen: float | None = None
    last_seen: float | None = None
    packets: int = 0
    bytes: int = 0
    runs: tuple[int, ...] = ()
    status: str = "seen-unregistered"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "mac": self.mac, "ips": list(self.ips), "remote_ips": list(self.remote_ips),
                "vendor": self.vendor, "role": self.role, "role_source": self.role_source, "name": self.name,
                "kind": self.kind, "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen),
                "packets": self.packets, "bytes": self.bytes, "runs": list(self.runs), "status": self.status}


@dataclass(frozen=True, slots=True)
class Inventory:
    crane: str
    zone: tuple[str, ...]  # the crane zone's networks (empty: unknown; every address is the host's own)
    assets: tuple[Asset, ...] = field(default=())

    def gaps(self) -> list[Asset]:
        """Rows that need a person: registered but never seen, or seen but not registered."""
        return [a for a in self.assets if a.status != "registered"]

    def to_json(self) -> dict[str, Any]:
        return {"crane": self.crane, "zone": list(self.zone), "assets": [a.to_json() for a in self.assets],
                "counts": {s: sum(a.status == s for a in self.assets) for s in STATUSES}}


def _networks(texts: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return tuple(out)


def _inside(ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def _load_profile(path: str | None) -> CraneProfile | None:
    if not path or not Path(path).is_file():
        return None
    from cranewatch.errors import CranewatchError
    from cranewatch.profile import load_profile

    try:
        return load_profile(path)
    except CranewatchError:
        return None  # a profile that does not load registers nothing here; `profile check` says why


def asset_inventory(store: Store, crane: str, *, profile: CraneProfile | None = None) -> Inventory:
    """The crane's seen hosts against its registered parts (see the module docstring)."""
    from cranewatch.fleet import require_crane

    record = require_crane(store, crane)
    if profile is None:
        profile = _load_profile(record.profile_path)
    zone_texts = [record.zone] if record.zone else [str(n) for n in (profile.zones.get("crane", ()) if profile else ())]
    zone = _networks(zone_texts)
    terminal = _networks(str(n) for n in (profile.zones.get("terminal", ()) if profile else ()))
    registered = [_Registered(c.name, c.kind, c.mac.lower() if c.mac else None, c.ip, c.kind == "gateway")
                  for c in record.components]
    if profile is not None:
        for h in profile.hosts:
            if zone and not _inside(h.ip, zone):
                continue  # a terminal service, not a crane part: seen as a remote address of its router
            registered.append(_Registered(h.name, h.role, h.mac.lower() if h.mac else None, h.ip, h.role == "gateway"))
        if profile.gateway is not None and not any(r.gateway for r in registered):
            gw = profile.gateway
            registered.append(_Registered("gateway", "gateway", gw.mac.lower() if gw.mac else None, gw.ip, True))

    seen: dict[str, dict[str, Any]] = {}
    for s in _sightings(store, crane):
        entry = seen.setdefault(s.mac or s.ip or "?", {"mac": s.mac, "ips": set(), "remote": set(), "first": None, "last": None,
                                      "runs": {}})
        if s.ip is not None:
            own = s.mac is None or not zone or _inside(s.ip, zone)
            entry["ips" if own else "remote"].add(s.ip)
        entry["first"] = s.first_seen if entry["first"] is None or (s.first_seen is not None and s.first_seen < entry["first"]) else entry["first"]
        entry["last"] = s.last_seen if entry["last"] is None or (s.last_seen is not None and s.last_seen > entry["last"]) else entry["last"]
        # a run stores a host once per address, each row with the host's totals: count it once a run
        entry["runs"][s.run_id] = (s.packets, s.bytes)

    served: dict[str, set[tuple[str, int]]] = {}
    used: dict[str, set[tuple[str, int]]] = {}
    for c in store.observed_conversations(crane):
        served.setdefault(c.conversation.server, set()).add((c.conversation.transport, c.conversation.server_port))
        used.setdefault(c.conversation.client, set()).add((c.conversation.transport, c.conversation.server_port))

    # match registered parts to seen assets: by MAC, else by an own IP, else the gateway rule
    match: dict[str, _Registered] = {}
    unmatched: list[_Registered] = []
    by_ip = {ip: key for key, e in seen.items() for ip in e["ips"]}
    carriers = [key for key, e in seen.items() if e["mac"] and any(_inside(ip, terminal) for ip in e["remote"])]
    for r in registered:
        key = r.mac if r.mac in seen else (by_ip.get(r.ip) if r.ip else None)
        if key is None and r.gateway and r.mac is None and len(carriers) == 1:
            key = carriers[0]
        if key is None or key in match:
            if key is None:
                unmatched.append(r)
            continue
        match[key] = r

    assets: list[Asset] = []
    for seen_key, e in seen.items():
        found = match.get(seen_key)
        ips = sorted(e["ips"], key=_ip_order)
        roles_served = set().union(*(served.get(ip, set()) for ip in ips)) if ips else set()
        roles_used = set().union(*(used.get(ip, set()) for ip in ips)) if ips else set()
        guessed = guess_role(roles_served, roles_used, len(e["remote"]) if not ips else 0)
        assets.append(Asset(
            key=seen_key, mac=e["mac"], ips=tuple(ips), remote_ips=tuple(sorted(e["remote"], key=_ip_order)),
            vendor=vendor_of(e["mac"]), role=found.kind if found else guessed,
            role_source="registered" if found else ("guess" if guessed else None),
            name=found.name if found else None, kind=found.kind if found else None, first_seen=e["first"], last_seen=e["last"],
            packets=sum(p for p, _ in e["runs"].values()), bytes=sum(b for _, b in e["runs"].values()),
            runs=tuple(sorted(e["runs"])),
            status="registered" if found else "seen-unregistered"))
    # a part registered in both the fleet and the profile is one part: the first (fleet) wins
    shown = {r.name for r in match.values()}
    shown_ips = set(by_ip)
    for r in unmatched:
        if r.name in shown or (r.ip and r.ip in shown_ips):
            continue
        shown.add(r.name)
        if r.ip:
            shown_ips.add(r.ip)
        assets.append(Asset(key=f"registered:{r.name}", mac=r.mac, ips=(r.ip,) if r.ip else (),
                            vendor=vendor_of(r.mac), role=r.kind, role_source="registered", name=r.name,
                            kind=r.kind, status="registered-unseen"))
    order = {s: i for i, s in enumerate(("seen-unregistered", "registered-unseen", "registered"))}
    assets.sort(key=lambda a: (order[a.status], _ip_order(a.ips[0]) if a.ips else (9, 0), a.key))
    return Inventory(crane, tuple(zone_texts), tuple(assets))


def _sightings(store: Store, crane: str) -> list[HostSighting]:
    """The hosts the runs kept, and for a traffic run recorded before runs kept them (store
    migration 0008) the MACs and addresses its coverage names, without times or counts."""
    kept = store.observed_hosts(crane)
    with_hosts = {s.run_id for s in kept}
    older: list[HostSighting] = []
    for run in store.runs(crane, "analyze"):
        if run.id in with_hosts or run.status != "complete" or run.superseded:
            continue
        coverage = store.run_coverage(run.id)
        for h in coverage.hosts if coverage is not None else ():
            older.extend(HostSighting(run.id, h.mac, ip, None, None, 0, 0) for ip in (h.ips or (None,)))
    return [*kept, *older]


def _ip_order(ip: str) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (addr.version, int(addr))
