"""hidden-uplink: off-subnet traffic of crane hosts whose next hop is not the sanctioned
gateway (a cellular modem, a second router), and a new DHCP server or default gateway on the
crane LAN (T0883 Internet Accessible Device, T0884 Connection Proxy).

On a crane-LAN capture the Ethernet source of packets coming *from* an off-subnet address is
the router that carried them; a crane host's off-subnet traffic must all pass the gateway's
MAC (from the profile, or the MAC bound to the gateway's IP, or the gateways the baseline
learned, or — with a profile only — the MAC that carries the traffic with the terminal zone,
which only the gateway can reach). Anything else is a path around the crane's firewall.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.facts import Binding, Conversation, DhcpMessage
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="hidden-uplink",
    category="hidden-uplink",
    severity=Severity.CRITICAL,
    technique=("T0883", "T0884"),
    remedy="Find the device with this MAC on the crane LAN (switch MAC table, cabinet "
    "inspection): a cellular modem or second router bypasses the crane gateway. Disconnect it "
    "and review what crossed it.",
)


class HiddenUplink:
    name: ClassVar[str] = "hidden-uplink"
    accepts: ClassVar[tuple[type, ...]] = (Conversation, DhcpMessage, Binding)

    def __init__(self) -> None:
        self.routed: list[Conversation] = []
        self.dhcp = Incidents()

    @staticmethod
    def judges(ctx: Context) -> tuple[type, ...]:
        """Nothing without a profile or baseline: no sanctioned gateway, no known DHCP server."""
        return HiddenUplink.accepts if ctx.profile is not None or ctx.baseline is not None else ()

    def observe(self, fact: Any, ctx: Context) -> None:
        if isinstance(fact, Binding):
            ctx.bindings.setdefault(fact.ip, set()).add(fact.mac)
        elif isinstance(fact, Conversation):
            # judged at the end: the gateway's MAC may only be learned later in the stream
            if ctx.is_crane(fact.src) != ctx.is_crane(fact.dst):
                self.routed.append(fact)
        elif isinstance(fact, DhcpMessage) and fact.message_type in ("offer", "ack"):
            self._dhcp(fact, ctx)

    def _dhcp(self, msg: DhcpMessage, ctx: Context) -> None:
        server = msg.server_ip or msg.src
        known_servers: set[str] = set()
        if ctx.baseline is not None:
            known_servers |= ctx.baseline.dhcp_servers
        if ctx.profile is not None:
            known_servers |= {h.ip for h in ctx.profile.hosts if h.role == "dhcp"}
        if (ctx.baseline is not None or ctx.profile is not None) and server not in known_servers:
            self.dhcp.add(("dhcp-server", server), msg, {"server_mac": msg.server_mac or "",
                                                       "offered_router": list(msg.router),
                                                       "clients": [msg.client_mac or "?"]})
        gateway_ips: set[str] = set()
        if ctx.profile is not None and ctx.profile.gateway is not None:
            gateway_ips.add(ctx.profile.gateway.ip)
        if ctx.baseline is not None:
            gateway_ips |= ctx.baseline.default_routers
        for router in msg.router:
            if gateway_ips and router not in gateway_ips:
                self.dhcp.add(("default-gateway", server, router), msg,
                              {"offered_router": [router], "server_mac": msg.server_mac or "",
                               "clients": [msg.client_mac or "?"]})

    def _terminal_routers(self, ctx: Context) -> set[str]:
        """With a profile but no gateway MAC known: the terminal zone is reachable only through
        the crane gateway, so the MACs that carry crane ↔ terminal traffic are the gateway's."""
        if ctx.profile is None:
            return set()
        macs: set[str] = set()
        for conv in self.routed:
            if ctx.zone_of(conv.src) == "terminal" and ctx.is_crane(conv.dst):
                macs.update(conv.client_macs)
            elif ctx.zone_of(conv.dst) == "terminal" and ctx.is_crane(conv.src):
                macs.update(conv.server_macs)
        return macs

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        sanctioned = ctx.gateway_macs() or self._terminal_routers(ctx)
        if sanctioned:
            paths = Incidents()
            for conv in self.routed:
                inbound_from_far_side = not ctx.is_crane(conv.src)
                far_macs = conv.client_macs if inbound_from_far_side else conv.server_macs
                crane_host = conv.dst if inbound_from_far_side else conv.src
                far_host = conv.src if inbound_from_far_side else conv.dst
                for mac in far_macs:
                    if mac in sanctioned:
                        continue
                    paths.add((mac, crane_host, far_host), conv, {
                        "next_hop_mac": mac, "sanctioned_gateway_macs": sorted(sanctioned),
                        "crane_host": crane_host, "far_host": far_host,
                        "ports": [conv.dport], "protocols": [conv.protocol or conv.transport],
                        "flows": [f"{endpoint(conv.src, conv.sport)} > {endpoint(conv.dst, conv.dport)}"]})
                    inc = paths.by_key[(mac, crane_host, far_host)]
                    inc.values["packets"] = inc.values.get("packets", 0) + conv.packets_to_server + conv.packets_to_client
            for key, inc in paths.items():
                mac = key[0]
                crane_host, far = inc.values["crane_host"], inc.values["far_host"]
                router = router_ip(ctx, mac)
                if router:
                    inc.values["next_hop_ip"] = router
                zone = ctx.zone_of(far)
                title = (f"{router or mac} carries traffic between {ctx.host_name(crane_host)} and "
                         f"{zone} host {ctx.host_name(far)}, bypassing the crane gateway")
                findings.append(make_finding(ctx, VERDICT, key, inc, title, router or crane_host, far))
        for key, inc in self.dhcp.items():
            if key[0] == "dhcp-server":
                title = f"New DHCP server {key[1]} on the crane LAN"
            else:
                title = f"DHCP server {key[1]} hands out default gateway {key[2]}, not the crane gateway"
            # dst: the gateway the leases steer traffic to (a rogue DHCP server's clients are
            # known by MAC only: the evidence lists them)
            gateway = key[2] if key[0] == "default-gateway" else None
            findings.append(make_finding(ctx, VERDICT, key, inc, title, key[1], gateway,
                                         Severity.HIGH if key[0] == "dhcp-server" else Severity.CRITICAL))
        return findings


def router_ip(ctx: Context, mac: str) -> str | None:
    """The IP address a next-hop MAC answers for on the crane LAN (ARP, DHCP, baseline)."""
    for ip, macs in ctx.bindings.items():
        if mac in macs and ctx.is_crane(ip):
            return ip
    if ctx.baseline is not None:
        for ip, learned in ctx.baseline.hosts.items():
            if mac in learned and ctx.is_crane(ip):
                return ip
    return None
