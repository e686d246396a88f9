"""egress: any other communication between the crane zone and outside addresses (T0883).

The catch-all behind the specific rules: a crane host that talks to the Internet, or is
reached from it, outside the profile's allowed outside endpoints. The engine drops an egress
finding when a more specific rule already reported the same pair.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.facts import Conversation
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="egress",
    category="egress",
    severity=Severity.MEDIUM,
    technique=("T0883",),
    remedy="The crane zone should reach nothing outside the terminal. Find the process on the "
    "crane host behind this traffic; block the address at the crane gateway unless the port "
    "allows it in the profile ([[outside]]).",
)


class Egress:
    name: ClassVar[str] = "egress"
    accepts: ClassVar[tuple[type, ...]] = (Conversation,)

    def __init__(self) -> None:
        self.incidents = Incidents()

    def observe(self, conv: Any, ctx: Context) -> None:
        if not isinstance(conv, Conversation):
            return
        if not ((ctx.is_crane(conv.src) and ctx.is_outside(conv.dst))
                or (ctx.is_outside(conv.src) and ctx.is_crane(conv.dst))):
            return
        if ctx.profile is not None and ctx.profile.allowed_outside(conv.src, conv.dst, conv.dport):
            return
        inc = self.incidents.add((conv.src, conv.dst, conv.dport, conv.transport), conv, {
            "protocols": [conv.protocol or conv.transport], "bytes_out": 0, "bytes_in": 0},
            weight=1)
        # every connection's bytes, not the first one's (what a folded finding reports per peer)
        inc.values["bytes_out"] += conv.bytes_to_server
        inc.values["bytes_in"] += conv.bytes_to_client

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            src, dst, port, transport = key
            inbound = ctx.is_outside(src)
            if inbound:
                title = (f"Inbound {transport.upper()}/{port} from outside host {src} to crane host "
                         f"{ctx.host_name(dst)} ({inc.count} connection(s))")
            else:
                title = (f"Outbound {transport.upper()}/{port} from crane host {ctx.host_name(src)} to "
                         f"outside host {dst} ({inc.count} connection(s))")
            findings.append(make_finding(ctx, VERDICT, key, inc, title, src, endpoint(dst, port),
                                         Severity.HIGH if inbound else Severity.MEDIUM))
        return findings
