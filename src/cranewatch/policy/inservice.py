"""The in-service allow-list: only the communications the profile (and baseline) allow cross.

Each allowed communication that crosses the crane zone's border becomes one accept rule per
client, server, protocol and port with its own counter; return traffic of allowed connections
passes by conntrack (established/related); everything else touching the crane zone is dropped,
logged with the crane's prefix (``cw STS-07 in-service drop: ``) and counted.

A protocol that negotiates further connections (FTP's data connections, on ports the control
channel names) declares the kernel's conntrack helper for it (``ProtocolSpec.helper``): its
allow rules assign a ``ct helper`` object to the connections they let through, the helper reads
their PASV/PORT and expects the data connection, which passes as related (counted on its own,
``ct state related ct helper "ftp"``). Only the allowed control connections get the helper
(not every connection to port 21), and no port range is opened; connections a baseline learned
under the helped name (``ftp-data``) need no rule of their own and get none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cranewatch import __version__
from cranewatch.errors import Location, ProfileError
from cranewatch.policy.nft import (
    Chain,
    CtHelper,
    Rule,
    Ruleset,
    address_match,
    family_of,
    identifier,
    interface_name,
    log_prefix,
    render,
    sorted_addresses,
    table_name,
)
from cranewatch.policy.quarantine import sets_by_family, zone_drops, zone_sets
from cranewatch.profile import CraneProfile
from cranewatch.protocols.registry import policy_helpers, policy_transports

# Protocol name -> transports its allow rules open (None: every one), as each protocol
# module declares them (the registry).
TRANSPORTS: dict[str, tuple[str, ...] | None] = policy_transports()
# Protocol name -> (kernel conntrack helper, name of the connections it lets in as related).
HELPERS: dict[str, tuple[str, str]] = policy_helpers()
HELPED = frozenset(helped for _, helped in HELPERS.values())

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Communication:
    """One allowed communication with concrete ends: the input of one accept rule."""

    client: tuple[str, ...] | None  # addresses/networks; None = any
    server: tuple[str, ...] | None
    transports: tuple[str, ...] | None
    port: int | None
    label: str  # e.g. "ocr → broker mqtt/1883"
    counter: str
    source: str  # where it comes from: profile file:line, baseline
    helper: str = ""  # the kernel conntrack helper its connections get (ftp), or none


def communications_from_baseline(baseline: Any) -> list[Communication]:
    """Communications a learned baseline saw.

    Reads a ``cranewatch.baseline.Baseline`` (its ``pairs`` of client, server, server port,
    with transports from ``services`` and protocol names from ``protocols``) or, for hand-made
    input, a ``{"communications": [{client, server, port, transport|protocol}]}`` mapping.
    """
    if baseline is None:
        return []
    if hasattr(baseline, "pairs"):
        items: list[dict[str, Any]] = []
        for client, server, port in sorted(baseline.pairs):
            seen = sorted(t for s, t, p in getattr(baseline, "services", ()) if s == server and p == port)
            names = sorted(n for s, p, n in getattr(baseline, "protocols", ()) if s == server and p == port)
            for transport in seen or ["tcp"]:
                items.append({"client": client, "server": server, "port": port, "transport": transport,
                              "protocol": names[0] if names else transport})
    else:
        items = list(baseline.get("communications", []) if isinstance(baseline, dict) else baseline)
    out: list[Communication] = []
    for item in items:
        client, server, port = item.get("client"), item.get("server"), item.get("port")
        transport = item.get("transport")
        protocol = str(item.get("protocol") or "any").lower()
        transports = (str(transport).lower(),) if transport else TRANSPORTS.get(protocol)
        if not client or not server or protocol in HELPED:
            continue  # a data connection passes as related to its allowed control connection
        if transports is not None and not set(transports) <= {"tcp", "udp"}:
            # learned ICMP, GRE ("ip47") or a damaged name: no accept rule (fail closed)
            continue
        out.append(
            Communication(
                (str(client),), (str(server),), transports, None if port is None else int(port),
                f"{client} → {server} {protocol}/{port if port is not None else 'any'}",
                identifier("learned", str(client), str(server), protocol, str(port or "any")),
                "baseline", HELPERS.get(protocol, ("", ""))[0],
            )
        )
    return out


def _networks(addresses: Sequence[str] | None) -> list[IpNet] | None:
    return None if addresses is None else [ipaddress.ip_network(a, strict=False) for a in addresses]


def _inside(nets: list[IpNet] | None, zone: Sequence[IpNet]) -> str:
    """``crane`` if every address is in the crane zone, ``other`` if none is, else ``both``."""
    if nets is None:
        return "both"
    inside = [any(n.version == z.version and n.subnet_of(z) for z in zone) for n in nets]  # type: ignore[arg-type]
    overlaps = [any(n.version == z.version and n.overlaps(z) for z in zone) for n in nets]
    if all(inside):
        return "crane"
    if not any(overlaps):
        return "other"
    return "both"


def _one_subnet(comm: Communication, zone: Sequence[IpNet]) -> bool:
    """Both ends inside one crane subnet: their traffic never reaches the crane's router."""
    ends = [*(_networks(comm.client) or []), *(_networks(comm.server) or [])]
    return any(all(e.version == z.version and e.subnet_of(z) for e in ends) for z in zone)  # type: ignore[arg-type]


def resolve(profile: CraneProfile, pattern: str, where: Location) -> tuple[str, ...] | None:
    """A profile endpoint (host name, IP, CIDR, ``zone:NAME``, ``*``) as addresses; None = any."""
    if pattern == "*" or pattern == "zone:outside":
        return None
    if pattern.startswith("zone:"):
        nets = profile.zones.get(pattern[5:])
        if not nets:
            raise ProfileError(f"no zone {pattern[5:]!r} in the profile", where)
        return tuple(str(n) for n in nets)
    host = profile.host_by_name(pattern)
    if host is not None:
        return (host.ip,)
    try:
        return (str(ipaddress.ip_network(pattern, strict=False)),)
    except ValueError:
        raise ProfileError(f"{pattern!r} is not a host of the profile nor an address", where) from None


def communications_from_profile(profile: CraneProfile) -> list[Communication]:
    comms: list[Communication] = []
    for allowance in profile.allowed:
        where = Location(file=profile.source or None, line=allowance.line)
        port = allowance.port
        comms.append(
            Communication(
                resolve(profile, allowance.client, where),
                resolve(profile, allowance.server, where),
                TRANSPORTS.get(allowance.protocol),
                port,
                f"{allowance.client} → {allowance.server} {allowance.protocol}/{port if port is not None else 'any'}",
                identifier("allow", allowance.client.replace("zone:", "zone_"), allowance.server,
                           *([] if allowance.protocol == allowance.server else [allowance.protocol]),
                           str(port or "any")),
                f"profile {where}" if allowance.line else "profile",
                HELPERS.get(allowance.protocol, ("", ""))[0],
            )
        )
    for end in profile.outside_endpoints:
        clients = (tuple(ip for c in end.clients for ip in (resolve(profile, c, Location(file=profile.source)) or ()))
                   or tuple(str(n) for n in profile.zones.get("crane", ())))
        comms.append(
            Communication(
                clients, (str(end.network),), TRANSPORTS.get(end.protocol.lower(), ("tcp",)), end.port,
                f"{'/'.join(end.clients) or 'crane zone'} → outside endpoint {end.name} "
                f"{end.protocol}/{end.port if end.port is not None else 'any'}",
                identifier("outside", end.name, str(end.port or "any")),
                "profile [[outside]]",
                HELPERS.get(end.protocol.lower(), ("", ""))[0],
            )
        )
    return comms


def _l4_match(transports: tuple[str, ...] | None, port: int | None) -> tuple[str, ...]:
    if transports is None:
        return ()
    if len(transports) == 1:
        return (f"{transports[0]} dport {port}",) if port is not None else (f"meta l4proto {transports[0]}",)
    protos = f"meta l4proto {{ {', '.join(sorted(transports))} }}"
    return (protos, f"th dport {port}") if port is not None else (protos,)


def _by_family(addresses: tuple[str, ...] | None) -> dict[str, tuple[str, ...]] | None:
    if addresses is None:
        return None
    found: dict[str, list[str]] = {}
    for address in addresses:
        found.setdefault(family_of(address), []).append(address)
    return {fam: sorted_addresses(found[fam]) for fam in ("ip", "ip6") if fam in found}


def helper_object(comm: Communication) -> CtHelper | None:
    """The conntrack helper object an allow rule of ``comm`` assigns (one transport only)."""
    if not comm.helper or comm.transports is None or len(comm.transports) != 1:
        return None
    return CtHelper(identifier("helper", comm.helper), comm.helper, comm.transports[0])


def _related_rule(helper: CtHelper) -> Rule:
    helped = next((h for t, h in HELPERS.values() if t == helper.type), helper.type)
    return Rule(("ct state related", f'ct helper "{helper.type}"'), "accept", identifier(helped),
                comments=(f"{helped}: connections the {helper.type} helper saw negotiated on a "
                          "connection an accept rule below allowed",))


def _accept_rules(comm: Communication, counter: str) -> list[Rule]:
    """One rule per IP family both ends have (an nft match holds one family), one counter."""
    helper = helper_object(comm)
    clients, servers = _by_family(comm.client), _by_family(comm.server)
    families = [fam for fam in ("ip", "ip6")
                if (clients is None or fam in clients) and (servers is None or fam in servers)]
    if clients is None and servers is None:
        families = [""]  # no address at all: one rule for both families
    rules = []
    for fam in families:
        match: list[str] = []
        if clients is not None:
            match.append(address_match("saddr", clients[fam]))
        if servers is not None:
            match.append(address_match("daddr", servers[fam]))
        match.extend(_l4_match(comm.transports, comm.port))
        rules.append(Rule(tuple(match), "accept", counter, comments=(f"{comm.label}  ({comm.source})",),
                          helper=helper.name if helper else None))
    return rules


def inservice_plan(
    profile: CraneProfile,
    baseline: Any = None,
    *,
    crane: str | None = None,
    interface: str | None = None,
) -> Ruleset:
    """The in-service allow-list as data (see ``inservice_ruleset``)."""
    name = crane or profile.crane_id
    zone = profile.zones.get("crane", ())
    if not zone:
        raise ProfileError("the profile names no crane zone ([zones] crane = [CIDR])",
                           Location(file=profile.source or None))
    if interface is not None:
        interface_name(interface)
    sets = zone_sets([str(n) for n in zone])
    gateway = profile.gateway.ip if profile.gateway else None

    forward: dict[tuple[str, ...], Rule] = {}
    to_firewall: dict[tuple[str, ...], Rule] = {}
    skipped: list[str] = []
    used_counters: set[str] = set()
    helpers: dict[str, CtHelper] = {}
    forward_helped: dict[str, CtHelper] = {}
    to_firewall_helped: dict[str, CtHelper] = {}
    for comm in [*communications_from_profile(profile), *communications_from_baseline(baseline)]:
        client_side = _inside(_networks(comm.client), zone)
        server_side = _inside(_networks(comm.server), zone)
        to_gateway = (gateway is not None and comm.server is not None and len(comm.server) == 1
                      and ipaddress.ip_network(comm.server[0]) == ipaddress.ip_network(gateway))
        crossing = client_side != server_side or client_side == "both" or (
            client_side == "crane" and not _one_subnet(comm, zone))  # routed between crane subnets
        if not to_gateway and not crossing:
            where = "inside the crane LAN" if client_side == "crane" else "outside the crane zone"
            skipped.append(f"{comm.label}: {where}, does not cross this firewall ({comm.source})")
            continue
        counter = comm.counter
        n = 2
        while counter in used_counters:  # two allowances with the same words stay apart
            counter, n = f"{comm.counter}_{n}", n + 1
        target = to_firewall if to_gateway else forward
        rules = [r for r in _accept_rules(comm, counter) if r.match not in target]
        if not rules:  # the profile already allows exactly this (or no family fits both ends)
            continue
        used_counters.add(counter)
        target.update((r.match, r) for r in rules)
        helper = helper_object(comm)
        if helper is not None:
            helpers.setdefault(helper.name, helper)
            (to_firewall_helped if to_gateway else forward_helped).setdefault(helper.name, helper)

    drops = zone_drops(name, "in-service", sets, interface)
    def established(counter: str) -> Rule:
        return Rule(("ct state established,related",), "accept", counter,
                    comments=("replies within connections an accept rule below allowed",))

    invalid = [Rule((f"{fam} saddr @{set_name}", "ct state invalid"), "drop", "invalid_from_crane",
                    log_prefix(name, "in-service"), ("packets conntrack cannot place (e.g. a stray ACK scan)",))
               for fam, set_name in sets_by_family(sets, "crane_zone").items()]
    header = (
        f"cranewatch in-service allow-list for crane {name}",
        f"generated by cranewatch {__version__} from {profile.source or 'the profile'}"
        + (" and a learned baseline" if baseline is not None else "") + "; regenerate, do not edit:",
        f"  cranewatch policy {name}",
        "",
        f"crane zone: {', '.join(e for s in sets for e in s.elements)}"
        + (f" (behind interface {interface})" if interface else
           " (matched by address: name the crane-side interface with --interface to also drop"
           " spoofed sources and IPv6)"),
        "Only the communications below cross the crane zone's border, each with its own counter;",
        "replies of allowed connections pass by connection tracking;",
        f'everything else is dropped, logged with prefix "{log_prefix(name, "in-service")}" and counted.',
        *(["", "not routed through this firewall, so no rule here:"] + [f"  {s}" for s in sorted(skipped)]
          if skipped else []),
        "",
        "check:  nft -c -f FILE      load on the crane's firewall:  nft -f FILE",
        f"read:   nft list counters table inet {table_name(name)}",
    )

    def related(helped: dict[str, CtHelper]) -> tuple[Rule, ...]:
        return tuple(_related_rule(helped[n]) for n in sorted(helped))

    def ordered(rules: dict[tuple[str, ...], Rule]) -> tuple[Rule, ...]:
        return tuple(sorted(rules.values(), key=lambda r: (r.counter or "", r.match)))

    return Ruleset(
        table=table_name(name),
        header=header,
        sets=sets,
        helpers=tuple(helpers[n] for n in sorted(helpers)),
        chains=(
            Chain("forward", "forward",
                  (*related(forward_helped), established("return_traffic"), *invalid,
                   *ordered(forward), *drops["forward"])),
            Chain("input", "input",
                  (*related(to_firewall_helped), established("return_to_firewall"),
                   *ordered(to_firewall), *drops["input"])),
            Chain("output", "output", (established("return_from_firewall"), *drops["output"])),
        ),
    )


def inservice_ruleset(
    profile: CraneProfile,
    baseline: Any = None,
    *,
    crane: str | None = None,
    interface: str | None = None,
) -> str:
    """nftables text for a crane in service: the profile's (and baseline's) allow-list, rest dropped."""
    return render(inservice_plan(profile, baseline, crane=crane, interface=interface))

