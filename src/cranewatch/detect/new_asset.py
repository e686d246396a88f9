"""new-asset: a new MAC or IP address, a new service or a new protocol on the crane LAN
(T0846 Remote System Discovery's counterpart: the asset inventory changed).

Judged against the baseline's inventory, and against the profile's host list when there is
no baseline. Only hosts in the crane zone count; a service counts once a session really ran
(handshake and data both ways), so a scan's half-open probes do not make services. A port
another session announced (an FTP data channel, ``facts.ExpectedConnection``) is no service.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, is_unicast, make_finding
from cranewatch.detect.expected import ExpectedConnections
from cranewatch.detect.facts import Binding, Conversation, ExpectedConnection
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="new-asset",
    category="new-asset",
    severity=Severity.MEDIUM,
    technique=("T0846",),
    remedy="Confirm the new device or service with the crane's maintainers; add it to the "
    "profile if it is sanctioned, else find and remove it.",
)


class NewAsset:
    name: ClassVar[str] = "new-asset"
    accepts: ClassVar[tuple[type, ...]] = (Conversation, Binding, ExpectedConnection)

    def __init__(self) -> None:
        self.incidents = Incidents()
        self.expected = ExpectedConnections()

    def _known_ip(self, ip: str, ctx: Context) -> bool:
        if ctx.profile is not None and ctx.profile.host_by_ip(ip) is not None:
            return True
        return ctx.baseline is not None and ip in ctx.baseline.hosts

    def _judges(self, ctx: Context) -> bool:
        return ctx.baseline is not None or ctx.profile is not None

    def judges(self, ctx: Context) -> tuple[type, ...]:
        """Nothing is new without an inventory (baseline or profile) to compare with."""
        return self.accepts if self._judges(ctx) else ()

    def observe(self, fact: Any, ctx: Context) -> None:
        if not self._judges(ctx):
            return
        if isinstance(fact, ExpectedConnection):
            self.expected.add(fact)
        elif isinstance(fact, Binding):
            self._host(fact.ip, fact.mac, fact, ctx)
        elif isinstance(fact, Conversation):
            for ip, macs in ((fact.src, fact.client_macs), (fact.dst, fact.server_macs)):
                if ctx.is_crane(ip) and is_unicast(ip):
                    self._host(ip, macs[0] if len(macs) == 1 else None, fact, ctx)
            self._service(fact, ctx)

    def _host(self, ip: str, mac: str | None, fact: Any, ctx: Context) -> None:
        if not ctx.is_crane(ip) or not is_unicast(ip):
            return
        if not self._known_ip(ip, ctx):
            self.incidents.add(("host", ip), fact, {"mac": [mac] if mac else []})
        elif mac and ctx.baseline is not None and ctx.baseline.macs_of(ip) \
                and mac not in ctx.baseline.macs_of(ip) and mac not in ctx.baseline.gateways:
            self.incidents.add(("mac", ip, mac), fact, {"mac": [mac],
                                                      "baseline_macs": sorted(ctx.baseline.macs_of(ip))})

    def _service(self, conv: Conversation, ctx: Context) -> None:
        if ctx.baseline is None or not ctx.is_crane(conv.dst) or not self._known_ip(conv.dst, ctx):
            return
        if conv.packets_to_client < 2 or conv.packets_to_server < 3:
            return  # no real session: probes and unanswered datagrams are recon's business
        if conv.transport == "tcp" and not conv.handshake:
            return
        if ctx.profile is not None and ctx.profile.allows(conv.src, conv.dst, conv.protocol or None, conv.dport):
            return
        if self.expected.announced(conv) is not None:
            return  # a data connection its session negotiated: no service of its own
        if not ctx.baseline.has_service(conv.dst, conv.transport, conv.dport):
            self.incidents.add(("service", conv.dst, conv.transport, conv.dport), conv,
                               {"protocol": conv.protocol or conv.transport, "clients": [conv.src]})
        elif conv.protocol and not ctx.baseline.has_protocol(conv.dst, conv.dport, conv.protocol):
            self.incidents.add(("protocol", conv.dst, conv.dport, conv.protocol), conv,
                               {"clients": [conv.src]})

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            kind = key[0]
            if kind == "host":
                title = f"New host {key[1]} on the crane LAN" + (
                    f" (MAC {inc.values['mac'][0]})" if inc.values.get("mac") else "")
                findings.append(make_finding(ctx, VERDICT, key, inc, title, key[1], None))
            elif kind == "mac":
                title = f"{ctx.host_name(key[1])} now answers from MAC {key[2]} (baseline: {', '.join(inc.values['baseline_macs'])})"
                findings.append(make_finding(ctx, VERDICT, key, inc, title, key[1], None, Severity.MEDIUM))
            elif kind == "service":
                title = f"New service {key[2].upper()}/{key[3]} on {ctx.host_name(key[1])} ({inc.values.get('protocol')})"
                findings.append(make_finding(ctx, VERDICT, key, inc, title,
                                             (inc.values.get("clients") or [None])[0],
                                             endpoint(key[1], key[3]), Severity.LOW))
            else:
                title = f"New protocol {key[3]} on {ctx.host_name(key[1])}:{key[2]}"
                findings.append(make_finding(ctx, VERDICT, key, inc, title,
                                             (inc.values.get("clients") or [None])[0],
                                             endpoint(key[1], key[2]), Severity.LOW))
        return findings
