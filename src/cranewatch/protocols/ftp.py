"""FTP (RFC 959, RFC 2428 extensions, RFC 4217 AUTH TLS): the control channel and the data
connections it negotiates.

What matters on a crane LAN: files moved between OT hosts (a PLC program, a drive's parameter
set, a dump of the CMS), who logged in and whether a password crossed the wire in clear, and
which data connections belong to which control session. FTP moves each file on a connection of
its own, to an address and port one side names in the control channel: ``PASV`` (227) and
``EPSV`` (229) replies name the server's, ``PORT`` and ``EPRT`` commands the client's (the
server then connects back). Each is an ``FtpDataChannel`` event: the expected data connection
(who connects, to which host and port, from which control session, until when), which the
detectors consult (``detect.expected``) to attribute a data connection to its control
session instead of taking it for a conversation of its own.

``FtpBounce``, the detector this module declares: a data channel naming a third host (neither
end of its control session: a PORT/EPRT that sends the server elsewhere, a PASV reply that
sends the client elsewhere) is rule ``ftp-bounce``, category lateral-movement, medium, with
or without a baseline, except where it is plain NAT (the named address global and the one it
stands in for not, or the other way round).

Passwords are never kept: a ``PASS`` command's argument is dropped at once, and the event says
only that a password was sent in clear (before any ``AUTH TLS``). After ``AUTH TLS``/``SSL``
is accepted (234) the control channel is encrypted and the decoder stops.

Lines are bounded (``MAX_LINE``): a longer one is a problem (Zeek's weird) and is skipped to
its end. Hostile numbers (a PASV octet of 300, a port of 70000, text where digits belong) make
no data channel and a problem, never an exception.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cranewatch.decode import ip_text
from cranewatch.detect.base import (
    Context,
    Incidents,
    Verdict,
    endpoint,
    is_global,
    is_unicast,
    make_finding,
)
from cranewatch.detect.expected import ExpectedConnections
from cranewatch.detect.facts import ExpectedConnection, FileTransfer, client_where, where
from cranewatch.errors import DecodeError
from cranewatch.model import Finding, Severity
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints
from cranewatch.protocols.registry import (
    IGNORED,
    Adapter,
    Announced,
    ProtocolRun,
    ProtocolSpec,
    register_protocol,
)
from cranewatch.sources import zeek_fields as zeek

if TYPE_CHECKING:
    from cranewatch.flows import Flow

PORT = 21
MAX_LINE = 2048  # RFC 959 sets no bound; real commands and replies are far below this
MAX_ARG = 256  # characters of an argument or reply text kept in an event
DATA_CHANNEL_SECONDS = 300.0  # an expected data connection not made by then is forgotten
MAX_PENDING = 16  # commands waiting for their reply (a client may pipeline)

# Commands that name a file and move or remove it, with what they do (FileTransfer.operation).
FILE_COMMANDS = {"RETR": "download", "STOR": "upload", "STOU": "upload", "APPE": "upload",
                 "DELE": "delete", "RNFR": "rename-from", "RNTO": "rename-to"}
# Commands only FTP uses: a client line starting with one (and a space or the line end) is
# FTP on any port. USER, PASS, HELP, NOOP and QUIT are left out: POP3, IRC and SMTP use them.
FTP_ONLY = frozenset({"AUTH", "FEAT", "SYST", "PWD", "XPWD", "CWD", "CDUP", "TYPE", "PASV",
                      "EPSV", "PORT", "EPRT", "RETR", "STOR", "STOU", "APPE", "LIST", "NLST",
                      "MLSD", "MLST", "SIZE", "MDTM", "DELE", "RMD", "MKD", "XMKD", "RNFR",
                      "RNTO", "SITE", "OPTS", "REST", "ABOR", "ACCT", "MODE", "STRU", "ALLO",
                      "PBSZ", "PROT", "CCC"})
# Reply codes only FTP sends (SMTP, NNTP and LMTP share 2xx/3xx/5xx codes such as 220, 230,
# 250, 354): a server line starting with one is FTP on any port, as is a non-SMTP greeting.
FTP_REPLIES = (b"125", b"150", b"226", b"227", b"229", b"257", b"331", b"332")
_COMMAND = re.compile(rb"([A-Za-z]{3,4})(?: |\r?\n|$)")
_PASV = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\((.)\1\1(\d{1,5})\1\)")


@dataclass(frozen=True, slots=True, kw_only=True)
class FtpCommand(Event):
    """A command from the client. ``arg`` is bounded; a ``PASS`` command's is never kept
    (``password_in_clear`` says one was sent before any AUTH TLS)."""

    kind: ClassVar[str] = "ftp_command_request"
    command: str
    arg: str = ""
    password_in_clear: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FtpReply(Event):
    """A (last line of a) reply, with the command it answers and the session's user."""

    kind: ClassVar[str] = "ftp_reply_response"
    code: int
    text: str = ""
    command: str = ""
    arg: str = ""
    user: str = ""
    password_in_clear: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FtpDataChannel(Event):
    """An expected data connection: ``orig_h`` will connect to ``resp_h``:``resp_p`` until
    ``expires``. ``passive``: named by the server (227/229), else by the client (PORT/EPRT).
    ``client``/``server`` (and their ports) are the control session's."""

    kind: ClassVar[str] = "ftp_data_channel_response"
    passive: bool
    orig_h: str
    resp_h: str
    resp_p: int
    expires: float
    client: str
    server: str
    client_port: int
    server_port: int
    command: str = ""


# ------------------------------------------------------------------------------ parsing


def parse_pasv(text: str) -> tuple[str, int] | None:
    """The address and port of a 227 reply (``h1,h2,h3,h4,p1,p2`` anywhere in its text),
    None when there is none or a number is out of range (an octet above 255)."""
    match = _PASV.search(text)
    if match is None:
        return None
    numbers = [int(n) for n in match.groups()]
    if any(n > 255 for n in numbers):
        return None
    port = numbers[4] << 8 | numbers[5]
    return ".".join(map(str, numbers[:4])), port


def parse_port(arg: str) -> tuple[str, int] | None:
    """A PORT command's ``h1,h2,h3,h4,p1,p2`` (exactly that, spaces around allowed)."""
    parts = arg.strip().split(",")
    if len(parts) != 6 or not all(p.strip().isascii() and p.strip().isdigit() and len(p.strip()) <= 3
                                  for p in parts):
        return None
    numbers = [int(p) for p in parts]
    if any(n > 255 for n in numbers):
        return None
    return ".".join(map(str, numbers[:4])), numbers[4] << 8 | numbers[5]


def parse_epsv(text: str) -> int | None:
    """The port of a 229 reply: ``(|||port|)`` with any delimiter (RFC 2428)."""
    match = _EPSV.search(text)
    if match is None or not (0 < int(match.group(2)) <= 0xFFFF):
        return None
    return int(match.group(2))


def parse_eprt(arg: str) -> tuple[str, int] | None:
    """An EPRT argument ``<d>proto<d>address<d>port<d>`` (RFC 2428: proto 1 IPv4, 2 IPv6)."""
    arg = arg.strip()
    if len(arg) < 7 or arg[0] != arg[-1]:
        return None
    fields = arg[1:-1].split(arg[0])
    if len(fields) != 3 or fields[0] not in ("1", "2"):
        return None
    proto, host, port = fields
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version != (4 if proto == "1" else 6):
        return None
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 0xFFFF):
        return None
    return str(address), int(port)


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")[:MAX_ARG]


class FtpDecoder(ReportsProblems):
    """Decodes one FTP control connection into commands, replies and data channels."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self.finished = False
        self._buffers = (bytearray(), bytearray())  # server's, client's (index: from_client)
        self._skipping = [False, False]  # inside an overlong line, dropped to its end
        self._pending: list[tuple[str, str]] = []  # (command, arg) awaiting a reply
        self._user = ""
        self._password_in_clear = False
        self._tls_asked = False
        self._multiline: bytes | None = None  # the code of a multi-line reply under way
        self._ends = (endpoints(ctx, False), endpoints(ctx, True))
        self.announced: list[FtpDataChannel] = []  # for the run (``FtpRun.fed``), bounded

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].clear()
        self._skipping[from_client] = True  # the next line start is unknown: wait for one
        if not from_client:
            self._pending.clear()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        buffer = self._buffers[from_client]
        buffer += data
        start = 0
        while not self.finished:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            if self._skipping[from_client]:
                self._skipping[from_client] = False
                continue
            if len(line) > MAX_LINE:
                self.report(decode_error(f"line of {len(line)} bytes exceeds {MAX_LINE} "
                                         "(skipped)", self.ctx, frame))
                continue
            try:
                if from_client:
                    self._command(line, ts, frame, events)
                else:
                    self._reply(line, ts, frame, events)
            except DecodeError as exc:
                self.report(exc)
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            buffer.clear()
            if not self._skipping[from_client]:
                self._skipping[from_client] = True
                raise decode_error(f"line longer than {MAX_LINE} bytes without an end "
                                   "(skipped to its end)", self.ctx, frame)
        return events

    def _command(self, line: bytes, ts: float, frame: int, events: list[Event]) -> None:
        word, _, rest = line.partition(b" ")
        command = word.decode("latin-1").upper()
        if not (3 <= len(command) <= 4 and command.isascii() and command.isalpha()):
            raise decode_error(f"not an FTP command: {line[:40]!r}", self.ctx, frame)
        arg = _text(rest)
        in_clear = False
        if command == "PASS":
            arg = ""  # never kept
            in_clear = not self._tls_asked and bool(rest.strip())
            self._password_in_clear |= in_clear
        elif command == "USER":
            self._user = arg
        elif command == "AUTH" and arg.strip().upper() in ("TLS", "SSL", "TLS-C", "TLS-P"):
            self._tls_asked = True
        if len(self._pending) < MAX_PENDING:
            self._pending.append((command, arg))
        events.append(FtpCommand(ts=ts, frame=frame, command=command, arg=arg,
                                 password_in_clear=in_clear, **self._ends[True]))
        if command in ("PORT", "EPRT"):
            target = parse_port(rest.decode("latin-1")) if command == "PORT" else \
                parse_eprt(rest.decode("latin-1"))
            if target is None:
                raise decode_error(f"{command} argument is not an address and port: "
                                   f"{rest[:60]!r}", self.ctx, frame)
            host, port = target
            events.append(self._channel(False, self.ctx.server, host, port, command, ts, frame))

    def _reply(self, line: bytes, ts: float, frame: int, events: list[Event]) -> None:
        head = line[:4]
        if self._multiline is not None:
            if head[:3] != self._multiline or head[3:4] not in (b" ", b""):
                return  # a line inside a multi-line reply: only "<its code> " ends it
            self._multiline = None
        elif len(head) < 3 or not head[:3].isdigit():
            raise decode_error(f"not an FTP reply: {line[:40]!r}", self.ctx, frame)
        elif head[3:4] == b"-":
            self._multiline = head[:3]  # the first line of a multi-line reply
            return
        code = int(head[:3])
        text = _text(line[4:])
        command, arg = self._pending.pop(0) if self._pending and code >= 200 else ("", "")
        if code < 200 and self._pending:
            command, arg = self._pending[0]  # a preliminary reply: the command goes on
        events.append(FtpReply(ts=ts, frame=frame, code=code, text=text, command=command,
                               arg=arg, user=self._user,
                               password_in_clear=self._password_in_clear, **self._ends[False]))
        if code == 227:
            target = parse_pasv(text)
            if target is None:
                raise decode_error(f"227 reply without a valid address and port: {text[:60]!r}",
                                   self.ctx, frame)
            host, port = target
            if host == "0.0.0.0":
                host = self.ctx.server  # "the address you reached me at"
            events.append(self._channel(True, self.ctx.client, host, port, "PASV", ts, frame))
        elif code == 229:
            extended = parse_epsv(text)
            if extended is None:
                raise decode_error(f"229 reply without a valid port: {text[:60]!r}", self.ctx, frame)
            events.append(self._channel(True, self.ctx.client, self.ctx.server, extended, "EPSV",
                                        ts, frame))
        if command == "AUTH":
            self._tls_asked = False
            if code == 234:
                self.finished = True  # TLS from here on

    def _channel(self, passive: bool, orig: str, resp: str, port: int, command: str, ts: float,
                 frame: int) -> FtpDataChannel:
        if port == 0:
            raise decode_error(f"{command} names port 0", self.ctx, frame)
        ctx = self.ctx
        channel = FtpDataChannel(ts=ts, frame=frame, passive=passive, orig_h=orig, resp_h=resp,
                                 resp_p=port, expires=ts + DATA_CHANNEL_SECONDS, client=ctx.client,
                                 server=ctx.server, client_port=ctx.client_port,
                                 server_port=ctx.server_port, command=command,
                                 **self._ends[not passive])
        if len(self.announced) >= MAX_PENDING:
            del self.announced[0]
        self.announced.append(channel)
        return channel


def is_ftp(client: bytes, server: bytes) -> bool:
    """A server greeting ``220`` that is not SMTP's, or a client command only FTP uses."""
    if server:
        line = server[:200].split(b"\n", 1)[0].upper()
        if line[3:4] not in (b" ", b"-"):
            return False
        if line[:3] == b"220":
            return not any(word in line for word in (b"SMTP", b"LMTP", b"NNTP"))
        return line[:3] in FTP_REPLIES
    match = _COMMAND.match(client[:8])
    return match is not None and match.group(1).decode("latin-1") in FTP_ONLY


SPEC = DecoderSpec(name="ftp", transport="tcp", ports=frozenset({PORT}), factory=FtpDecoder,
                   probe=is_ftp, priority=60)


@dataclass(frozen=True, slots=True)
class FtpData:
    """One data connection (``ftp-data``) and the control session that announced it, for the
    result document: ``client`` connected to ``server`` (in active mode the FTP server is the
    data connection's client). ``control``: the session's (client, client port, server, server
    port), or None where Zeek's conn.log named the connection but no ftp.log announced it.
    ``frame``: its first frame, or its conn.log line. Bytes: on the wire from a capture,
    payload (Zeek's ``orig_bytes``/``resp_bytes``) from Zeek."""

    source: str
    frame: int
    client: str
    client_port: int
    server: str
    server_port: int
    first_seen: float
    last_seen: float
    packets: int
    bytes_to_server: int
    bytes_to_client: int
    control: tuple[str, int, str, int] | None


MAX_DATA_LISTED = 1000  # data connections the document lists (flow-summary counts them all)


class FtpRun(ProtocolRun):
    """The data connections a run's control sessions announced: the pipeline names a flow
    that answers one (same client, server and port, begun within its time) ``ftp-data``, with
    its control session, and decodes none of its bytes (a file's bytes are no protocol).
    Each one ended (or each conn.log record of one, from Zeek) is listed in the result
    document with its control session (``summary``: ``ftp_data``)."""

    def __init__(self) -> None:
        from cranewatch.sources.zeek import ConnEvent  # (the Zeek reader imports every protocol)

        self.channels = ExpectedConnections()
        self.data: list[FtpData] = []
        self.folds = (ConnEvent,)  # seen, not folded: ``observe`` answers False

    def observe(self, event: Any) -> bool:
        """A Zeek conn.log record of a data connection (``sources.zeek`` names it and its
        announcing session from ftp.log): listed as a flow of a capture is."""
        service = getattr(event, "service", "")
        if service.split(",")[0] == "ftp-data" and len(self.data) < MAX_DATA_LISTED:
            self.data.append(FtpData(
                event.source, event.frame, event.src, event.sport, event.dst, event.dport,
                event.ts, event.ts + (event.duration or 0.0),
                (event.orig_pkts or 0) + (event.resp_pkts or 0), event.orig_bytes or 0,
                event.resp_bytes or 0, event.announced_by))
        return False

    def flow_ended(self, flow: Flow) -> None:
        stand_in = flow.decoder
        if type(stand_in) is not Announced or stand_in.protocol != "ftp-data" or \
                len(self.data) >= MAX_DATA_LISTED:
            return
        to_server, to_client = flow.to_server, flow.to_client
        self.data.append(FtpData(
            flow.source, int(flow.first_frame), ip_text(flow.client), int(flow.client_port),
            ip_text(flow.server), int(flow.server_port), float(flow.first_seen),
            float(flow.last_seen), int(to_server.packets + to_client.packets),
            int(to_server.bytes), int(to_client.bytes), stand_in.session))

    def summary(self) -> dict[str, Any]:
        return _in_order(self.data)

    def merge_summaries(self, summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
        data = [d for summary in summaries for d in summary["ftp_data"]]
        if len(data) >= MAX_DATA_LISTED:
            return None  # which were listed depends on the order the flows ended in
        return _in_order(data)

    def fed(self, decoder: Any) -> None:
        if isinstance(decoder, FtpDecoder) and decoder.announced:
            for channel in decoder.announced:
                for fact in expected_connection(channel):
                    self.channels.add(fact)
            decoder.announced.clear()

    def expected(self, flow: Flow) -> Announced | None:
        if not self.channels:
            return None
        found = self.channels.announced_at(flow.transport, ip_text(flow.client),
                                           ip_text(flow.server), flow.server_port, flow.first_seen)
        if found is None:
            return None
        return Announced("ftp-data", (found.src, found.sport, found.dst, found.dport))


def _in_order(data: list[FtpData]) -> dict[str, Any]:
    return {"ftp_data": tuple(sorted(data, key=lambda d: (d.first_seen, d.source, d.frame)))}


# ------------------------------------------------------------------------------ adapters


def expected_connection(event: FtpDataChannel) -> list[ExpectedConnection]:
    """The data connection the detectors should attribute to the control session."""
    third = None
    ends = {event.client, event.server}
    if event.resp_h not in ends:
        third = event.resp_h
    here = where(event)
    here.update(src=event.client, dst=event.server, sport=event.client_port,
                dport=event.server_port)
    return [ExpectedConnection(**here, protocol="ftp-data", transport="tcp", orig=event.orig_h,
                               resp=event.resp_h, resp_port=event.resp_p, until=event.expires,
                               mode="passive" if event.passive else "active",
                               command=event.command, third_party=third)]


def file_transfer(event: FtpReply) -> list[FileTransfer]:
    """A reply to a command that moves, removes or renames a file (its name and outcome)."""
    operation = FILE_COMMANDS.get(event.command)
    if operation is None or event.code < 200:
        return []
    return [FileTransfer(**client_where(event), protocol="ftp", operation=operation,
                         name=event.arg, reply=event.code, user=event.user,
                         password_in_clear=event.password_in_clear)]


# --- Zeek's ftp.log (``sources.zeek``): one record per command with its reply


def zeek_ftp(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    result.note("ftp.log: replies are paired with their commands by Zeek; multi-line replies, "
                "commands Zeek does not log and passwords are not read")
    command = zeek.text(record.get("command")).upper()
    arg = zeek.text(record.get("arg"))[:MAX_ARG]
    user = zeek.text(record.get("user"))
    if user == "<unknown>":
        user = ""
    password = zeek.text(record.get("password"))
    in_clear = bool(password) and password != "<hidden>"  # Zeek captured one; not kept
    events: list[Event] = []
    if command:
        events.append(FtpCommand(command=command, arg="" if command == "PASS" else arg,
                                 **zeek.ends(record, True)))
    code = zeek.integer(record.get("reply_code"))
    if code is not None and 0 < code < 1000:
        events.append(FtpReply(code=code, text=zeek.text(record.get("reply_msg"))[:MAX_ARG],
                               command=command, arg=arg, user=user, password_in_clear=in_clear,
                               **zeek.ends(record, False)))
    resp_p = record.get("data_channel.resp_p")
    if resp_p is not None:
        passive = bool(record.get("data_channel.passive"))
        ends = zeek.ends(record, not passive)
        client, server = zeek.text(record.get("id.orig_h")), zeek.text(record.get("id.resp_h"))
        events.append(FtpDataChannel(
            passive=passive, orig_h=zeek.text(record.get("data_channel.orig_h")),
            resp_h=zeek.text(record.get("data_channel.resp_h")), resp_p=zeek.port(resp_p),
            expires=ends["ts"] + DATA_CHANNEL_SECONDS, client=client, server=server,
            client_port=zeek.port(record.get("id.orig_p")),
            server_port=zeek.port(record.get("id.resp_p")), command=command, **ends))
    return events


# ------------------------------------------------------------------------------ ftp-bounce

BOUNCE = Verdict(
    rule="ftp-bounce",
    category="lateral-movement",
    severity=Severity.MEDIUM,
    technique=("T0886", "T0846"),
    remedy="An FTP data channel was pointed at a host outside its session: find out who sent "
    "the PORT/EPRT or PASV naming it; refuse foreign data-channel addresses on the FTP server "
    "(vsftpd: port_promiscuous=NO, pasv_promiscuous=NO).",
)


class FtpBounce:
    """ftp-bounce: a data channel naming a third host (see the module docstring)."""

    name: ClassVar[str] = "ftp-bounce"
    accepts: ClassVar[tuple[type, ...]] = (ExpectedConnection,)

    def __init__(self) -> None:
        self.incidents = Incidents()

    def observe(self, fact: Any, ctx: Context) -> None:
        if not isinstance(fact, ExpectedConnection) or fact.protocol != "ftp-data":
            return
        third = fact.third_party
        if third is None or not is_unicast(third):
            return
        # who named the third host: the server in a PASV reply, the client in a PORT command;
        # the third host stands in for the namer as the data channel's end
        namer = fact.dst if fact.mode == "passive" else fact.src
        if is_global(third) != is_global(namer):
            return  # NAT: a private address behind a public one (or the other way round)
        self.incidents.add((fact.src, fact.dst, third, fact.resp_port), fact,
                           {"namer": namer, "mode": fact.mode, "command": fact.command})

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            client, server, third, port = key
            namer = inc.values["namer"]
            if inc.values["mode"] == "passive":
                how = f"{ctx.host_name(namer)} told its client {ctx.host_name(client)} to connect to"
            else:
                how = f"{ctx.host_name(namer)} asked the server {ctx.host_name(server)} to connect to"
            title = (f"FTP bounce: {how} third host {ctx.host_name(third)} port {port} "
                     f"({inc.values.get('command')})")
            findings.append(make_finding(ctx, BOUNCE, key, inc, title, namer, endpoint(third, port)))
        return findings


PROTOCOL = register_protocol(ProtocolSpec(
    name="ftp", module=__name__, decoders=(SPEC,), detectors=(FtpBounce,), run=FtpRun,
    helper="ftp", helped="ftp-data",
    adapters={FtpCommand: IGNORED, FtpReply: Adapter(file_transfer, (FileTransfer,)),
              FtpDataChannel: Adapter(expected_connection, (ExpectedConnection,))},
    zeek={"ftp": zeek_ftp},
))

