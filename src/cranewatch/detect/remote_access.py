"""remote-access: SSH, RDP, VNC, Telnet, TeamViewer, AnyDesk, OpenVPN tunnels and reverse
tunnels into or out of the crane zone, recognised by protocol behaviour on any port (T0822 External Remote
Services, T0886 Remote Services).

Sessions come from the protocol decoders and, for flows no decoder claimed, from the first
bytes each side sent (``rules/remote_access.yaml``). A session the profile allows raises
nothing; one the baseline already had is low; an outbound SSH session from a crane host to
an outside server is the shape of a reverse tunnel. A session carried through a web proxy
(HTTP CONNECT) names the host the proxy was asked to reach and is judged by it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.facts import HttpRequest, RemoteSession
from cranewatch.detect.rules import rule_data
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="remote-access",
    category="remote-access",
    severity=Severity.HIGH,
    technique=("T0886",),
    remedy="Remote access to crane hosts must go through the port's jump host and be in the "
    "profile. Find who opened this session, end it, and review what was done over it.",
)


@cache
def _signatures() -> list[tuple[str, dict[str, list[bytes]]]]:
    out = []
    for name, spec in rule_data("remote_access")["protocols"].items():
        sig = {key: [bytes.fromhex(h) for h in spec.get(key, [])]
               for key in ("client", "server", "client_contains", "server_contains")}
        out.append((name, sig))
    return out


OPENVPN_CLIENT_RESETS = (7, 10)  # P_CONTROL_HARD_RESET_CLIENT_V2, _V3 (tls-crypt-v2)
OPENVPN_SERVER_RESET = 8  # P_CONTROL_HARD_RESET_SERVER_V2


def is_openvpn(client: bytes, server: bytes) -> bool:
    """OpenVPN's TLS-mode opening, which stays in the clear whatever tls-auth/tls-crypt hide:
    the client's hard reset and the server's answer, each an opcode (high 5 bits of the first
    byte) and an 8-byte session id; over TCP each packet carries a 2-byte length first. Both
    sides must show it: one byte alone is too weak a sign on UDP."""
    def opens(c: bytes, s: bytes) -> bool:
        return (len(c) >= 9 and len(s) >= 9 and c[0] >> 3 in OPENVPN_CLIENT_RESETS
                and s[0] >> 3 == OPENVPN_SERVER_RESET and any(c[1:9]) and any(s[1:9]))

    def framed(data: bytes) -> bool:
        return len(data) >= 11 and 14 <= int.from_bytes(data[:2], "big") <= 1600

    return opens(client, server) or (framed(client) and framed(server)
                                     and opens(client[2:], server[2:]))


def identify_remote(client: bytes, server: bytes) -> str | None:
    """Which remote-access protocol the first bytes of each side speak, if any."""
    if is_openvpn(client, server):
        return "openvpn"
    for name, sig in _signatures():
        client_ok = bool(client) and any(client.startswith(p) for p in sig["client"])
        server_ok = bool(server) and any(server.startswith(p) for p in sig["server"])
        if sig["client_contains"] or sig["server_contains"]:
            contains = any(p in client for p in sig["client_contains"]) or \
                any(p in server for p in sig["server_contains"])
            if sig["client"] or sig["server"]:
                if (client_ok or server_ok) and contains:
                    return name
            elif contains:
                return name
            continue
        if client_ok or server_ok:
            return name
    return None


class RemoteAccess:
    name: ClassVar[str] = "remote-access"
    # HTTP requests only for CONNECT: where a proxied session really goes.
    accepts: ClassVar[tuple[type, ...]] = (RemoteSession, HttpRequest)

    def __init__(self) -> None:
        self.incidents = Incidents()
        self.sessions: set[tuple[str, int, str, int]] = set()
        self.tunnels: dict[tuple[str, int, str, int], str] = {}  # connection -> CONNECT target

    def observe(self, fact: Any, ctx: Context) -> None:
        if isinstance(fact, HttpRequest):
            if fact.method.upper() == "CONNECT" and fact.uri:
                self.tunnels[(fact.src, fact.sport, fact.dst, fact.dport)] = fact.uri
            return
        if not isinstance(fact, RemoteSession):
            return
        if ctx.profile is not None and ctx.profile.allows(fact.src, fact.dst, fact.protocol, fact.dport):
            return
        crane_side = ctx.is_crane(fact.src) or ctx.is_crane(fact.dst)
        if not crane_side:
            return
        # Decoders report a session by several events (both banners, key exchanges): the
        # incident counts sessions, the evidence keeps every event's frame and detail.
        session = (fact.src, fact.sport, fact.dst, fact.dport)
        weight = 0 if session in self.sessions else 1
        self.sessions.add(session)
        values: dict[str, Any] = {"protocol": fact.protocol, "server_port": fact.dport,
                                  "detail": [fact.detail] if fact.detail else []}
        tunnel = self.tunnels.get(session)
        if tunnel:
            values["via_proxy_to"] = tunnel
        # One incident per service: SSH to a host's port 22 and to its port 443 are two ways in.
        self.incidents.add((fact.src, fact.dst, fact.protocol, fact.dport), fact, values,
                           weight=weight)

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            client, server, protocol, _ = key
            tunnel = inc.values.get("via_proxy_to")
            target = _host_of(tunnel) if tunnel else None
            outside = ctx.is_outside(client) or ctx.is_outside(server) or (
                target is not None and ctx.is_outside(target))
            reverse = protocol == "ssh" and ctx.is_crane(client) and not ctx.is_crane(server)
            known = ctx.baseline is not None and ctx.baseline.has_remote(client, server, protocol)
            severity = Severity.CRITICAL if outside else Severity.HIGH
            if known and not outside:
                severity = Severity.LOW
            direction = "out of" if ctx.is_crane(client) and not ctx.is_crane(server) else (
                "into" if not ctx.is_crane(client) else "inside")
            title = (f"{protocol.upper()} session {direction} the crane zone: "
                     f"{ctx.host_name(client)} → {ctx.host_name(server)}:{inc.values.get('server_port')}")
            if tunnel:
                title += f" through the proxy to {tunnel}"
            if reverse:
                title += " (outbound SSH from a crane host: possible reverse tunnel)"
            verdict = Verdict(VERDICT.rule, VERDICT.category, severity,
                              ("T0822", "T0886") if outside else ("T0886",), VERDICT.remedy)
            findings.append(make_finding(ctx, verdict, key, inc, title, client,
                                         endpoint(server, inc.values.get("server_port")), severity))
        return findings


def _host_of(target: str) -> str:
    """The host of a CONNECT target: ``198.51.100.7:443``, ``[2001:db8::7]:22``, ``h.example``."""
    if target.startswith("["):
        return target[1:].split("]", 1)[0]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target
