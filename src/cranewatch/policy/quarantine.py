"""The quarantine ruleset: nothing in or out of a crane zone but the named analysis station.

Everything else that touches the crane zone — forwarded, to the firewall itself, or from it —
is dropped, logged with the crane's prefix (``cw STS-07 quarantine drop: ``) and counted in
named counters, so an analyst reads what the crane tried from ``nft list counters``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cranewatch import __version__
from cranewatch.errors import UsageError
from cranewatch.policy.nft import (
    AddressSet,
    Chain,
    Rule,
    Ruleset,
    address_sets,
    interface_name,
    log_prefix,
    render,
    table_name,
)
from cranewatch.store import Crane

# An analysis station is a host or a small subnet: a wider network would let most of the world
# through the quarantine, and 0.0.0.0/0 or ::/0 all of it. Wider ones need --force.
WIDEST_STATION = {4: 16, 6: 48}  # shortest prefix length accepted without --force


def zone_sets(zone: Sequence[str], station: Sequence[str] = ()) -> tuple[AddressSet, ...]:
    """The crane zone's sets (``crane_zone``) and the station's (``analysis_station``), one per
    IP family: an IPv6 set beside an IPv4 one of the same name gets ``_ip6`` appended."""
    try:
        return (*address_sets("crane_zone", zone), *address_sets("analysis_station", station))
    except ValueError as exc:
        raise UsageError(f"not an address or network: {exc}") from None


def sets_by_family(sets: Sequence[AddressSet], name: str) -> dict[str, str]:
    """``{family: set name}`` of the sets called ``name`` (or ``name_ip6``)."""
    return {s.family: s.name for s in sets if s.name in (name, f"{name}_ip6")}


def zone_drops(crane: str, purpose: str, zone_sets_: Sequence[AddressSet],
               interface: str | None) -> dict[str, tuple[Rule, ...]]:
    """The closing drop rules of each chain: logged with the crane's prefix and counted."""
    prefix = log_prefix(crane, purpose)
    # with the crane-side interface named, spoofed sources and IPv6 from the crane are caught too
    if interface is not None:
        name = interface_name(interface)
        from_crane: list[tuple[str, ...]] = [(f'iifname "{name}"',)]
        to_crane: list[tuple[str, ...]] = [(f'oifname "{name}"',)]
    else:  # by address: one rule per family of the crane zone, sharing one counter
        zone = sets_by_family(zone_sets_, "crane_zone")
        from_crane = [(f"{fam} saddr @{set_name}",) for fam, set_name in zone.items()]
        to_crane = [(f"{fam} daddr @{set_name}",) for fam, set_name in zone.items()]

    def drops(matches: list[tuple[str, ...]], counter: str, why: str) -> tuple[Rule, ...]:
        return tuple(Rule(m, "drop", counter, prefix, (why,)) for m in matches)

    return {
        "forward": (
            *drops(from_crane, "drop_from_crane", "anything else leaving the crane zone"),
            *drops(to_crane, "drop_to_crane", "anything else entering the crane zone"),
        ),
        "input": drops(from_crane, "drop_crane_to_firewall", "the crane zone talking to this firewall itself"),
        "output": drops(to_crane, "drop_firewall_to_crane", "this firewall talking into the crane zone"),
    }


def wide_stations(stations: Sequence[str]) -> list[str]:
    """The stations wider than an analysis station should be (see ``WIDEST_STATION``)."""
    nets = [ipaddress.ip_network(s, strict=False) for s in stations]
    return [str(n) for n in nets if n.prefixlen < WIDEST_STATION[n.version]]


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def quarantine_plan(
    crane: Crane | str,
    station: str | Sequence[str],
    *,
    zone: str | Sequence[str] | None = None,
    interface: str | None = None,
    force: bool = False,
) -> Ruleset:
    """The quarantine ruleset as data (see ``quarantine_ruleset``)."""
    name = crane.name if isinstance(crane, Crane) else crane
    zones = _as_list(zone) or (_as_list(crane.zone) if isinstance(crane, Crane) else [])
    stations = _as_list(station)
    if not zones:
        raise UsageError(f"no crane zone for {name}: give --zone CIDR or register the crane with a zone")
    if not stations:
        raise UsageError("name the analysis station (--station IP)")
    if interface is not None:
        interface_name(interface)
    sets = zone_sets(zones, stations)
    zone_sets_ = [s for s in sets if s.name.startswith("crane_zone")]
    zone_set = sets_by_family(sets, "crane_zone")
    station_sets = sets_by_family(sets, "analysis_station")
    shared = [fam for fam in ("ip", "ip6") if fam in zone_set and fam in station_sets]
    if not shared:
        raise UsageError("the analysis station must be of one IP family with the crane zone "
                         f"({', '.join(zones)}): give a station address of the zone's family")
    wide = wide_stations(stations)
    if wide and not force:
        raise UsageError(
            f"analysis station {', '.join(wide)} is a network, not a station: the quarantine would "
            "let all of it reach the crane zone (0.0.0.0/0 and ::/0: the whole world). Give the "
            "station's own address, or --force if you mean it")
    drops = zone_drops(name, "quarantine", zone_sets_, interface)
    forward = (
        *(Rule((f"{fam} saddr @{station_sets[fam]}", f"{fam} daddr @{zone_set[fam]}"), "accept",
               "station_to_crane", comments=("the analysis station may reach the crane zone ...",))
          for fam in shared),
        *(Rule((f"{fam} saddr @{zone_set[fam]}", f"{fam} daddr @{station_sets[fam]}"), "accept",
               "crane_to_station", comments=("... and the crane zone may answer it (and talk to it)",))
          for fam in shared),
        *drops["forward"],
    )
    warning = ([f"WARNING: analysis station {', '.join(wide)} covers more than a station should"
                " (forced with --force): everything in it passes this quarantine.", ""]
               if wide else [])
    zone_text = ", ".join(e for s in sets if s.name.startswith("crane_zone") for e in s.elements)
    station_text = ", ".join(e for s in sets if s.name.startswith("analysis_station") for e in s.elements)
    header = (
        f"cranewatch quarantine ruleset for crane {name}",
        f"generated by cranewatch {__version__}; regenerate, do not edit:",
        f"  cranewatch quarantine {name} --station {' --station '.join(stations)}"
        + (f" --interface {interface}" if interface else "") + (" --force" if wide else ""),
        "",
        *warning,
        f"crane zone:        {zone_text}" + (f" (behind interface {interface})" if interface else ""),
        *([] if interface else ["(matched by address: name the crane-side interface with --interface to also",
                                " drop spoofed sources" + ("" if "ip6" in zone_set else " and IPv6") + ")"]),
        f"analysis station:  {station_text}",
        "Nothing enters or leaves the crane zone except traffic with the analysis station;",
        f'everything else is dropped, logged with prefix "{log_prefix(name, "quarantine")}"',
        "and counted in the named counters below.",
        "",
        "check:  nft -c -f FILE      load on the crane's firewall:  nft -f FILE",
        f"read:   nft list counters table inet {table_name(name)}",
    )
    return Ruleset(
        table=table_name(name),
        header=header,
        sets=sets,
        chains=(
            Chain("forward", "forward", forward),
            Chain("input", "input", drops["input"]),
            Chain("output", "output", drops["output"]),
        ),
    )


def quarantine_ruleset(
    crane: Crane | str,
    station: str | Sequence[str],
    *,
    zone: str | Sequence[str] | None = None,
    interface: str | None = None,
    force: bool = False,
) -> str:
    """nftables text isolating ``crane``'s zone: only ``station`` may talk with it.

    ``crane`` is a registered ``Crane`` (its ``zone`` is used) or a name with ``zone=``;
    ``interface`` is the firewall's crane-side interface, when known. A station network wider
    than a /16 (IPv4) or /48 (IPv6) is refused unless ``force`` (then the header warns).
    """
    return render(quarantine_plan(crane, station, zone=zone, interface=interface, force=force))
