"""lateral-movement: a new conversation between two crane-LAN hosts (T0867 Lateral Tool
Transfer, T0886 Remote Services).

With a baseline, any (client, server, service) the baseline never saw between two crane-zone
hosts is reported once a session really ran (a TCP handshake, or UDP both ways); a pair the
profile allows is not new. Without a baseline, only a profile with ``[[allow]]`` entries
judges: a conversation between crane-zone hosts no entry covers. Hosts new to the LAN are
new-asset's business (and rogue-master's when they poll a PLC), not reported here again.

Ranked: a bulk transfer (≥ 64 kB one way, or a file-transfer service: SMB, FTP, TFTP) high
with its volume; a field device (profile role PLC/RTU, or a host the baseline only ever saw
as a server) initiating: high; otherwise medium. One finding per (client, server, service)
with its first/last time, bytes each way and frames.

A connection another session announced (an FTP data channel: ``facts.ExpectedConnection``)
is that session's, never a conversation of its own: its bytes and count are folded into the
announcing session's finding (one copy, one finding), or dropped with it when that session is
not new. The files a session moved (``facts.FileTransfer``) are listed in its evidence.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, is_unicast, make_finding
from cranewatch.detect.expected import ExpectedConnections, Session, session_of
from cranewatch.detect.facts import Conversation, ExpectedConnection, FileTransfer
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
                 ("udp", 69): "tftp"}
TRANSFER_PROTOCOLS = frozenset({"smb", "ftp", "tftp"})  # named by their decoders on any port
MAX_FILES = 20  # files listed per session
FIELD_ROLES = frozenset({"plc", "rtu", "drive", "io", "safety-plc"})


class LateralMovement:
    name: ClassVar[str] = "lateral-movement"
    accepts: ClassVar[tuple[type, ...]] = (Conversation, ExpectedConnection, FileTransfer)

    def __init__(self) -> None:
        self.incidents = Incidents()
        self._clients: frozenset[str] | None = None
        self._servers: frozenset[str] | None = None
        self.expected = ExpectedConnections()
        # what announced connections and file commands add to their session's finding
        self._data: dict[Session, dict[str, Any]] = {}
        self._files: dict[Session, dict[str, Any]] = {}

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
        if not self._judges(ctx):
            return
        if isinstance(fact, ExpectedConnection):
            self.expected.add(fact)
            return
        if isinstance(fact, FileTransfer):
            self._file(fact)
            return
        if not isinstance(fact, Conversation):
            return
        conv = fact
        client, server = conv.src, conv.dst
        if client == server or not (is_unicast(client) and is_unicast(server)):
            return
        announced = self.expected.announced(conv)
        if announced is not None:
            self._data_connection(session_of(announced), conv, towards_client=client == announced.dst)
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
        if not (self._known_host(client, ctx) and self._known_host(server, ctx)):
            return  # a host new to the LAN: new-asset reports it
        if ctx.known_pair(client, server, conv.dport):
            return
        if ctx.baseline is not None and ctx.baseline.has_pair(server, client, conv.sport):
            return  # the reverse direction of a known conversation (a reply seen as a flow)
        key = (client, server, conv.transport, conv.dport)
        seen: dict[str, Any] = {"protocol": conv.protocol or conv.transport}
        incident = self.incidents.add(key, conv, seen)
        values = incident.values
        values["bytes_to_server"] = values.get("bytes_to_server", 0) + conv.bytes_to_server
        values["bytes_to_client"] = values.get("bytes_to_client", 0) + conv.bytes_to_client
        values["packets"] = values.get("packets", 0) + conv.packets_to_server + conv.packets_to_client
        if conv.last_ts > incident.last_seen:
            incident.last_seen = conv.last_ts

    def _data_connection(self, session: Session, conv: Conversation, towards_client: bool) -> None:
        """An announced connection's volume, added to its session's (oriented as the session:
        an active FTP data connection runs from the server to the client)."""
        up, down = conv.bytes_to_server, conv.bytes_to_client
        if towards_client:
            up, down = down, up
        data = self._data.setdefault(session, {"bytes_to_server": 0, "bytes_to_client": 0,
                                               "packets": 0, "data_connections": 0,
                                               "last_seen": conv.last_ts})
        data["bytes_to_server"] += up
        data["bytes_to_client"] += down
        data["packets"] += conv.packets_to_server + conv.packets_to_client
        data["data_connections"] += 1
        data["last_seen"] = max(data["last_seen"], conv.last_ts)

    def _file(self, fact: FileTransfer) -> None:
        files = self._files.setdefault((fact.src, fact.dst, fact.dport), {"files": []})
        if len(files["files"]) < MAX_FILES:
            files["files"].append({"operation": fact.operation, "name": fact.name,
                                   "reply": fact.reply})
        if fact.user:
            files["user"] = fact.user
        if fact.password_in_clear:
            files["password_in_clear"] = True

    def _fold_sessions(self) -> None:
        """Each new session's announced connections and files, into its finding."""
        for key, inc in self.incidents.items():
            client, server, transport, port = key
            if transport != "tcp":
                continue
            data = self._data.get((client, server, port))
            if data is not None:
                for name in ("bytes_to_server", "bytes_to_client", "packets"):
                    inc.values[name] += data[name]
                inc.values["data_connections"] = data["data_connections"]
                inc.last_seen = max(inc.last_seen, data["last_seen"])
            files = self._files.get((client, server, port))
            if files is not None:
                inc.values.update(files)

    def finish(self, ctx: Context) -> list[Finding]:
        self._fold_sessions()
        findings = []
        for key, inc in self.incidents.items():
            client, server, transport, port = key
            values = inc.values
            up, down = values["bytes_to_server"], values["bytes_to_client"]
            service = f"{transport.upper()}/{port}"
            transfer = FILE_TRANSFER.get((transport, port))
            if transfer is None and values.get("protocol") in TRANSFER_PROTOCOLS:
                transfer = values["protocol"]
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
