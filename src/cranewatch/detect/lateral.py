"""lateral-movement: a new conversation between two crane-LAN hosts (T0867 Lateral Tool
Transfer, T0886 Remote Services).

With a baseline, any (client, server, service) the baseline never saw between two crane-zone
hosts is reported once a session really ran (a TCP handshake, or UDP both ways); a pair the
profile allows is not new. Without a baseline, only a profile with ``[[allow]]`` entries
judges: a conversation between crane-zone hosts no entry covers. Hosts new to the LAN are
new-asset's business (and rogue-master's when they poll a PLC), not reported here again.

Ranked: a bulk transfer (≥ 64 kB one way, or a file-transfer service: SMB, FTP, TFTP) high
with its volume (an FTP session's data connections folded into it: one copy, one finding); a field device (profile role PLC/RTU, or a host the baseline only ever saw
as a server) initiating: high; otherwise medium. One finding per (client, server, service)
with its first/last time, bytes each way and frames.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, is_unicast, make_finding
from cranewatch.detect.facts import Conversation
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="lateral-movement",
    category="lateral-movement",
    severity=Severity.MEDIUM,
    technique=("T0886", "T0867"),
    remedy="Find out why these crane hosts talked for the first time; if it is not a sanctioned "
    "change, isolate the client and check both hosts for tools and files brought in.",
)

BULK_BYTES = 64 * 1024  # one way, in one (client, server, service)
FILE_TRANSFER = {("tcp", 445): "smb", ("tcp", 139): "smb", ("tcp", 21): "ftp",
                 ("tcp", 20): "ftp-data", ("udp", 69): "tftp"}
FTP_CONTROL, FTP_ACTIVE_DATA = 21, 20
FIELD_ROLES = frozenset({"plc", "rtu", "drive", "io", "safety-plc"})


class LateralMovement:
    name: ClassVar[str] = "lateral-movement"
    accepts: ClassVar[tuple[type, ...]] = (Conversation,)

    def __init__(self) -> None:
        self.incidents = Incidents()
        self._clients: frozenset[str] | None = None
        self._servers: frozenset[str] | None = None
        # FTP control sessions (client, server) -> their (start, end) times, new or not: a data
        # connection belongs to the session it ran in, not to a conversation of its own
        self._ftp: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def _judges(self, ctx: Context) -> bool:
        if ctx.baseline is not None:
            return True
        return ctx.profile is not None and bool(ctx.profile.allowed)

    def judges(self, ctx: Context) -> tuple[type, ...]:
        """Nothing is new without a baseline, or a profile saying who may talk."""
        return self.accepts if self._judges(ctx) else ()

    def _known_host(self, ip: str, ctx: Context) -> bool:
        if ctx.profile is not None and ctx.profile.host_by_ip(ip) is not None:
            return True
        return ctx.baseline is not None and ip in ctx.baseline.hosts

    def _roles(self, ctx: Context) -> tuple[frozenset[str], frozenset[str]]:
        """The baseline's clients (and masters) and its servers, found once."""
        if self._clients is None or self._servers is None:
            b = ctx.baseline
            self._clients = (frozenset(c for c, _, _ in b.pairs) | frozenset(m for m, _ in b.masters)
                             if b is not None else frozenset())
            self._servers = frozenset(s for s, _, _ in b.services) if b is not None else frozenset()
        return self._clients, self._servers

    def is_field(self, ip: str, ctx: Context) -> bool:
        """A field device: a PLC/RTU by the profile, else a baseline host never seen as a client."""
        if ctx.profile is not None:
            host = ctx.profile.host_by_ip(ip)
            if host is not None and host.role in FIELD_ROLES:
                return True
        clients, servers = self._roles(ctx)
        return ip in servers and ip not in clients

    def observe(self, fact: Any, ctx: Context) -> None:
        if not isinstance(fact, Conversation) or not self._judges(ctx):
            return
        conv = fact
        client, server = conv.src, conv.dst
        if client == server or not (is_unicast(client) and is_unicast(server)):
            return
        if not (ctx.is_crane(client) and ctx.is_crane(server)):
            return
        if conv.transport == "tcp":
            # A completed handshake with data: a SYN seen and more than a scan's replies.
            if not conv.handshake or conv.packets_to_server < 3 or conv.packets_to_client < 2:
                return
        elif conv.transport == "udp":
            if conv.packets_to_server < 1 or conv.packets_to_client < 1:
                return
        else:
            return
        if conv.transport == "tcp" and conv.dport == FTP_CONTROL:
            self._ftp.setdefault((client, server), []).append((conv.ts, conv.last_ts))
        if not (self._known_host(client, ctx) and self._known_host(server, ctx)):
            return  # a host new to the LAN: new-asset reports it
        if ctx.known_pair(client, server, conv.dport):
            return
        if ctx.baseline is not None and ctx.baseline.has_pair(server, client, conv.sport):
            return  # the reverse direction of a known conversation (a reply seen as a flow)
        key = (client, server, conv.transport, conv.dport)
        seen: dict[str, Any] = {"protocol": conv.protocol or conv.transport}
        if conv.transport == "tcp" and conv.sport == FTP_ACTIVE_DATA:
            seen["from_port"] = FTP_ACTIVE_DATA
        incident = self.incidents.add(key, conv, seen)
        values = incident.values
        values["bytes_to_server"] = values.get("bytes_to_server", 0) + conv.bytes_to_server
        values["bytes_to_client"] = values.get("bytes_to_client", 0) + conv.bytes_to_client
        values["packets"] = values.get("packets", 0) + conv.packets_to_server + conv.packets_to_client
        if conv.last_ts > incident.last_seen:
            incident.last_seen = conv.last_ts

    def _fold_ftp_data(self) -> None:
        """FTP moves files on data connections of their own: passive mode from the client to a
        port the server chose, active mode from the server's port 20 back to the client. Each is
        folded into the control session it ran in (its bytes and count added), so one copy is
        one finding; one that ran in a control session the baseline or profile knows goes."""
        for key, inc in list(self.incidents.items()):
            client, server, transport, port = key
            if transport != "tcp" or port == FTP_CONTROL:
                continue
            if inc.values.get("from_port") == FTP_ACTIVE_DATA:
                pair, towards_client = (server, client), True  # the server connected back
            elif port >= 1024:
                pair, towards_client = (client, server), False
            else:
                continue
            sessions = self._ftp.get(pair, ())
            if not any(start - 1.0 <= inc.first_seen <= end + 1.0 for start, end in sessions):
                continue
            del self.incidents.by_key[key]
            control = self.incidents.by_key.get((*pair, "tcp", FTP_CONTROL))
            if control is None:
                continue  # a data connection of a known FTP session
            up, down = inc.values["bytes_to_server"], inc.values["bytes_to_client"]
            if towards_client:
                up, down = down, up
            control.values["bytes_to_server"] += up
            control.values["bytes_to_client"] += down
            control.values["packets"] += inc.values["packets"]
            control.values["data_connections"] = control.values.get("data_connections", 0) + inc.count
            control.last_seen = max(control.last_seen, inc.last_seen)

    def finish(self, ctx: Context) -> list[Finding]:
        self._fold_ftp_data()
        findings = []
        for key, inc in self.incidents.items():
            client, server, transport, port = key
            values = inc.values
            up, down = values["bytes_to_server"], values["bytes_to_client"]
            service = f"{transport.upper()}/{port}"
            transfer = FILE_TRANSFER.get((transport, port))
            client_field = self.is_field(client, ctx)
            server_field = self.is_field(server, ctx)
            values["client_field_device"] = client_field
            values["server_field_device"] = server_field
            what = f"new conversation {ctx.host_name(client)} → {ctx.host_name(server)} {service}" \
                f" ({values.get('protocol')})"
            if max(up, down) >= BULK_BYTES or transfer is not None:
                severity = Severity.HIGH
                values["transfer"] = transfer or "bulk"
                title = f"Bulk transfer between crane hosts: {what}, {up} bytes up, {down} bytes down"
            elif client_field and server_field \
                    and not (ctx.baseline is not None and ctx.baseline.has_service(server, transport, port)):
                severity = Severity.HIGH
                title = f"Field device to field device on a never-seen service: {what}"
            elif client_field:
                severity = Severity.HIGH
                title = f"Field device opens a connection: {what}"
            else:
                severity = Severity.MEDIUM
                title = f"New conversation between crane hosts: {what}"
            findings.append(make_finding(ctx, VERDICT, key, inc, title, client, endpoint(server, port),
                                         severity))
        return findings
