"""Remote-access protocols recognised by behaviour, not port: RDP, VNC (RFB), Telnet,
TeamViewer and AnyDesk.

What matters on a crane: any of these reaching a crane PC, HMI or PLC network is a remote
hands-on-the-controls path, sanctioned or not. Each decoder recognises its protocol from the
first bytes each side sends (the probes in ``identify``), reports one session event per side
with what the handshake tells (RDP cookie user name and requested security, RFB version and
offered security types incl. "None", Telnet options and the first prompt, TeamViewer
command), then stops reading. AnyDesk is TLS whose certificate says "AnyDesk Client".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import RemoteSession, as_text, client_where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints, printable
from cranewatch.protocols.registry import Adapter, ProtocolSpec, register_protocol
from cranewatch.protocols.tls import TlsCertificateResponse, TlsDecoder

RDP_PROTOCOLS = {0: "rdp", 1: "tls", 2: "credssp", 4: "rdstls", 8: "credssp-early-auth",
                 16: "rdstls-aad"}
RFB_SECURITY = {0: "invalid", 1: "none", 2: "vnc-auth", 5: "ra2", 6: "ra2ne", 16: "tight",
                18: "tls", 19: "vencrypt", 30: "apple-dh", 113: "mslogon2"}
TELNET_COMMANDS = {251: "WILL", 252: "WONT", 253: "DO", 254: "DONT"}
TELNET_OPTIONS = {0: "binary", 1: "echo", 3: "suppress-go-ahead", 5: "status", 24: "terminal-type",
                  31: "window-size", 32: "terminal-speed", 33: "remote-flow-control",
                  34: "linemode", 35: "x-display", 36: "environ", 37: "authentication",
                  38: "encryption", 39: "new-environ"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSessionRequest(Event):
    """The client side of a remote-access session as its first bytes show it.

    ``protocol``: rdp, vnc, telnet, teamviewer or anydesk. ``detail``: a short human text
    (cookie, version, options). ``user``: a user name when the handshake carries one in the
    clear (RDP ``mstshash`` cookie). ``security``: what the side asks for or offers
    (RDP requested protocols, RFB security types).
    """

    kind: ClassVar[str] = "remote_session_request"
    protocol: str
    detail: str = ""
    user: str | None = None
    version: str = ""
    security: tuple[str, ...] = ()
    from_client: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSessionResponse(RemoteSessionRequest):
    """The server side: RDP selected protocol, RFB version and security types, prompts."""

    kind: ClassVar[str] = "remote_session_response"
    from_client: bool = False


class _OnceDecoder(ReportsProblems):
    """Base: collects the first bytes of each side and reports them once."""

    protocol = ""
    needed = 1

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._seen = [bytearray(), bytearray()]
        self._reported = [False, False]

    def gap(self, from_client: bool) -> None:
        self._reported[int(from_client)] = True

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        side = int(from_client)
        if self._reported[side]:
            return []
        seen = self._seen[side]
        seen += data[:4096]
        if len(seen) < self.needed:
            return []
        event = self.recognise(from_client, bytes(seen), ts, frame)
        if event is None:
            return []
        self._reported[side] = True
        seen.clear()
        return [event]

    def recognise(self, from_client: bool, data: bytes, ts: float, frame: int) -> Event | None:
        raise NotImplementedError

    def session(self, from_client: bool, ts: float, frame: int, **fields: object) -> Event:
        cls = RemoteSessionRequest if from_client else RemoteSessionResponse
        return cls(ts=ts, frame=frame, protocol=self.protocol, from_client=from_client,
                   **fields, **endpoints(self.ctx, from_client))  # type: ignore[arg-type]


class RdpDecoder(_OnceDecoder):
    """RDP: X.224 connection request with cookie and RDP_NEG_REQ, confirm with RDP_NEG_RSP."""

    protocol = "rdp"
    needed = 11

    def recognise(self, from_client: bool, data: bytes, ts: float, frame: int) -> Event | None:
        if data[0] != 3 or len(data) < 11:
            raise decode_error("RDP without a TPKT header", self.ctx, frame)
        length = data[2] << 8 | data[3]
        if len(data) < length:
            return None
        body = data[11:length]
        user = None
        detail = []
        if body.startswith(b"Cookie: "):
            end = body.find(b"\r\n")
            cookie = body[8:end if end >= 0 else len(body)].decode("latin-1")
            detail.append(cookie)
            if cookie.startswith("mstshash="):
                user = cookie[len("mstshash="):]
            body = body[end + 2:] if end >= 0 else b""
        security: tuple[str, ...] = ()
        if len(body) >= 8 and body[0] in (1, 2, 3):  # RDP_NEG_REQ / RDP_NEG_RSP / RDP_NEG_FAILURE
            value = int.from_bytes(body[4:8], "little")
            if body[0] == 3:
                security = (f"failure-{value}",)
            else:
                # a value of 0 is standard RDP security (no TLS): worth seeing on a crane
                security = tuple(name for bit, name in RDP_PROTOCOLS.items() if bit and value & bit) or ("rdp",)
        elif not body:
            # no RDP_NEG_REQ / RDP_NEG_RSP at all is Standard RDP Security too (MS-RDPBCGR
            # 2.2.1.1, 2.2.1.2): what old clients and FreeRDP's /sec:rdp send
            security = ("rdp",)
        detail.append(",".join(security))
        return self.session(from_client, ts, frame, user=user, security=security,
                            detail="; ".join(d for d in detail if d))


class VncDecoder(_OnceDecoder):
    """RFB: both sides send ``RFB xxx.yyy\\n``; the server then lists its security types.

    The RFB server speaks first. Usually it is the TCP server; in "reverse" VNC (a listening
    viewer, as vendors' support tools use to get through NAT) the VNC server connects out to
    the viewer, and its version string comes from the TCP client.
    """

    protocol = "vnc"
    needed = 12

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self._rfb_server: bool | None = None  # the ``from_client`` of the RFB server's side
        self._viewer_version = ""

    def recognise(self, from_client: bool, data: bytes, ts: float, frame: int) -> Event | None:
        if not data.startswith(b"RFB "):
            raise decode_error("RFB session without a version string", self.ctx, frame)
        if self._rfb_server is None:
            self._rfb_server = from_client
        version = data[4:11].decode("latin-1")
        rest = data[12:]
        security: tuple[str, ...] = ()
        rfb_server = from_client == self._rfb_server
        if not rfb_server:
            self._viewer_version = version
        else:
            # the lower of both versions rules: a 3.8 server answers a 3.3 viewer with one
            # 4-byte security type, not with a list
            agreed = min(version, self._viewer_version or version)
            if not rest or (agreed < "003.007" and len(rest) < 4):
                return None  # wait for the security type (list)
            if agreed >= "003.007":
                count = rest[0]
                security = tuple(RFB_SECURITY.get(t, str(t)) for t in rest[1:1 + count])
            else:
                security = (RFB_SECURITY.get(int.from_bytes(rest[:4], "big"), "?"),)
        detail = f"RFB {version}" + (f" security {','.join(security)}" if security else "")
        if rfb_server and from_client:
            detail += " (reverse VNC: the server called the viewer)"
        return self.session(from_client, ts, frame, version=version, security=security,
                            detail=detail)


class TelnetDecoder(_OnceDecoder):
    """Telnet: option negotiation (IAC WILL/DO ...) and the first clear text (login prompt)."""

    protocol = "telnet"

    def recognise(self, from_client: bool, data: bytes, ts: float, frame: int) -> Event | None:
        options: list[str] = []
        text = bytearray()
        pos = 0
        while pos < len(data):
            byte = data[pos]
            if byte == 0xFF and pos + 1 < len(data):
                command = data[pos + 1]
                if command in TELNET_COMMANDS and pos + 2 < len(data):
                    option = data[pos + 2]
                    options.append(f"{TELNET_COMMANDS[command]} {TELNET_OPTIONS.get(option, option)}")
                    pos += 3
                    continue
                if command == 250:  # sub-negotiation until IAC SE
                    end = data.find(b"\xff\xf0", pos)
                    pos = end + 2 if end >= 0 else len(data)
                    continue
                pos += 2
                continue
            text.append(byte)
            pos += 1
        clear = printable(bytes(text).strip(), 80)
        return self.session(from_client, ts, frame, security=tuple(options[:16]),
                            detail=clear or "; ".join(options[:6]))


class TeamViewerDecoder(_OnceDecoder):
    """TeamViewer's own framing: magic 0x1724 or 0x1130, then a command byte."""

    protocol = "teamviewer"
    needed = 4

    def recognise(self, from_client: bool, data: bytes, ts: float, frame: int) -> Event | None:
        if data[:2] not in (b"\x17\x24", b"\x11\x30"):
            raise decode_error("TeamViewer packet without its magic", self.ctx, frame)
        return self.session(from_client, ts, frame, version=data[:2].hex(),
                            detail=f"magic {data[:2].hex()} command {data[2]}")


class AnydeskDecoder:
    """AnyDesk: TLS whose certificates are issued to "AnyDesk Client"; TLS events pass through."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._tls = TlsDecoder(ctx)
        self._reported = False

    @property
    def problems(self) -> list[DecodeError]:
        """The TLS decoder's: what it met is what this flow met."""
        return self._tls.__dict__.setdefault("problems", [])

    def gap(self, from_client: bool) -> None:
        self._tls.gap(from_client)

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        events = self._tls.feed(from_client, data, ts, frame)
        for event in list(events):
            if (isinstance(event, TlsCertificateResponse) and not self._reported
                    and "anydesk" in (event.subject + event.issuer).lower()):
                self._reported = True
                events.append(RemoteSessionResponse(
                    ts=ts, frame=frame, protocol="anydesk", detail=event.subject,
                    **endpoints(self.ctx, from_client)))
        return events


SPEC_RDP = DecoderSpec(name="rdp", transport="tcp", ports=frozenset({3389}),
                       factory=RdpDecoder, probe=identify.is_rdp, priority=21)
SPEC_VNC = DecoderSpec(name="vnc", transport="tcp", ports=frozenset({5900, 5901, 5902, 5800}),
                       factory=VncDecoder, probe=identify.is_vnc, priority=22, aliases=("rfb",))
SPEC_TELNET = DecoderSpec(name="telnet", transport="tcp", ports=frozenset({23}),
                          factory=TelnetDecoder, probe=identify.is_telnet, priority=70)
SPEC_TEAMVIEWER = DecoderSpec(name="teamviewer", transport="tcp", ports=frozenset({5938}),
                              factory=TeamViewerDecoder, probe=identify.is_teamviewer, priority=75)
SPEC_ANYDESK = DecoderSpec(name="anydesk", transport="tcp", ports=frozenset({7070, 6568}),
                           factory=AnydeskDecoder, probe=None, priority=95)

# The decoders' protocol names in the detectors' (RFB is VNC).
SESSION_NAMES = {"ssh": "ssh", "rdp": "rdp", "vnc": "vnc", "rfb": "vnc", "telnet": "telnet",
                 "teamviewer": "teamviewer", "anydesk": "anydesk"}


def session(event: RemoteSessionRequest) -> list[RemoteSession]:
    """A remote-access session, from its client's side."""
    name = SESSION_NAMES.get(as_text(event.protocol).lower())
    if name is None:
        return []
    # The decoder's own summary (e.g. "RFB 003.008 security none (reverse VNC)") says more
    # than the bare version number.
    detail = event.detail or event.version or ""
    return [RemoteSession(**client_where(event), protocol=name, detail=as_text(detail)[:120])]


_SESSION = Adapter(session, (RemoteSession,))

PROTOCOL = register_protocol(ProtocolSpec(
    name="remote-access", module=__name__,
    decoders=(SPEC_RDP, SPEC_VNC, SPEC_TELNET, SPEC_TEAMVIEWER, SPEC_ANYDESK),
    policy={"rdp": ("tcp",), "vnc": ("tcp",), "telnet": ("tcp",)},
    adapters={RemoteSessionRequest: _SESSION, RemoteSessionResponse: _SESSION},
))
