"""DHCP (BOOTP, UDP 67/68): who asks for an address, who offers one, which gateway and DNS.

What matters on a crane: a second DHCP server (a rogue router plugged into the crane switch)
hands out a different gateway or DNS server; a new client MAC is a new device. Each message
reports its type (option 53), the client MAC, requested and assigned addresses, server id,
router and DNS server options, host name and vendor class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import Binding, DhcpMessage, Fact, as_text, where
from cranewatch.protocols.arp import format_mac
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints
from cranewatch.protocols.registry import Adapter, ProtocolSpec, register_protocol

MAGIC = b"\x63\x82\x53\x63"
MESSAGE_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak",
                 7: "release", 8: "inform"}


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw[:4])


def _ips(raw: bytes) -> tuple[str, ...]:
    return tuple(_ip(raw[i:i + 4]) for i in range(0, len(raw) - 3, 4))


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpMessageRequest(Event):
    """A client's DHCP message (BOOTREQUEST): discover, request, decline, release, inform.

    ``message_type`` is the name of option 53 (``discover`` ... ``inform``; the number as text
    if unknown); ``requested_ip`` is option 50, ``server_id`` option 54.
    """

    kind: ClassVar[str] = "dhcp_message_request"
    message_type: str
    transaction_id: int
    client_mac: str
    client_ip: str = "0.0.0.0"
    your_ip: str = "0.0.0.0"
    requested_ip: str | None = None
    server_id: str | None = None
    router: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()
    hostname: str | None = None
    vendor_class: str | None = None
    lease_time: int | None = None
    parameter_requests: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpMessageResponse(DhcpMessageRequest):
    """A server's DHCP message (BOOTREPLY): offer, ack, nak, with router and DNS servers."""

    kind: ClassVar[str] = "dhcp_message_response"


class DhcpDecoder(ReportsProblems):
    """Decodes DHCP datagrams (one exchange per client port pair)."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    def gap(self, from_client: bool) -> None:
        return None

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if len(data) < 240 or data[236:240] != MAGIC:
            raise decode_error("not a DHCP message (short or without the magic cookie)", self.ctx, frame)
        op, htype, hlen = data[0], data[1], data[2]
        if op not in (1, 2):
            raise decode_error(f"BOOTP op {op} is neither request nor reply", self.ctx, frame)
        xid = int.from_bytes(data[4:8], "big")
        options: dict[int, bytes] = {}
        pos = 240
        while pos < len(data):
            code = data[pos]
            if code == 255:
                break
            if code == 0:
                pos += 1
                continue
            if pos + 1 >= len(data):
                raise decode_error("DHCP option cut short", self.ctx, frame)
            size = data[pos + 1]
            value = data[pos + 2:pos + 2 + size]
            if len(value) < size:
                raise decode_error(f"DHCP option {code} cut short", self.ctx, frame)
            options[code] = options.get(code, b"") + value  # RFC 3396 long options concatenate
            pos += 2 + size
        mtype = options.get(53, b"")
        message = MESSAGE_TYPES.get(mtype[0], str(mtype[0])) if mtype else "bootp"
        cls = DhcpMessageRequest if op == 1 else DhcpMessageResponse
        mac = format_mac(data[28:28 + min(hlen, 16)]) if htype == 1 else data[28:28 + hlen].hex()
        where = endpoints(self.ctx, from_client)
        return [cls(ts=ts, frame=frame, message_type=message, transaction_id=xid, client_mac=mac,
                    client_ip=_ip(data[12:16]), your_ip=_ip(data[16:20]),
                    requested_ip=_ip(options[50]) if len(options.get(50, b"")) == 4 else None,
                    server_id=_ip(options[54]) if len(options.get(54, b"")) == 4 else None,
                    router=_ips(options.get(3, b"")), dns_servers=_ips(options.get(6, b"")),
                    hostname=options[12].decode("latin-1") if 12 in options else None,
                    vendor_class=options[60].decode("latin-1") if 60 in options else None,
                    lease_time=int.from_bytes(options[51], "big") if len(options.get(51, b"")) == 4 else None,
                    parameter_requests=tuple(options.get(55, b"")), **where)]


SPEC = DecoderSpec(name="dhcp", transport="udp", ports=frozenset({67, 68}),
                  factory=DhcpDecoder, probe=None, priority=60, aliases=("bootp",))

_MESSAGE_NAMES = {"1": "discover", "2": "offer", "3": "request", "5": "ack", "6": "nak", "8": "inform"}


def facts(event: DhcpMessageRequest) -> list[Fact]:
    """The message itself; an ack also binds the leased IP to the client's MAC."""
    message = as_text(event.message_type).lower()
    message = _MESSAGE_NAMES.get(message, message)
    facts: list[Fact] = [DhcpMessage(
        **where(event), message_type=message, client_mac=event.client_mac,
        server_ip=event.server_id or (event.src if message in ("offer", "ack") else None),
        server_mac=None, router=tuple(_as_list(event.router or ())),
        dns=tuple(_as_list(event.dns_servers or ())))]
    client_mac, your_ip = event.client_mac, event.your_ip
    if message == "ack" and client_mac and your_ip and your_ip != "0.0.0.0":
        facts.append(Binding(**where(event), ip=str(your_ip), mac=str(client_mac)))
    return facts


def _as_list(value: str | tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


_FACTS = Adapter(facts, (DhcpMessage, Binding))

PROTOCOL = register_protocol(ProtocolSpec(
    name="dhcp", module=__name__, decoders=(SPEC,),
    adapters={DhcpMessageRequest: _FACTS, DhcpMessageResponse: _FACTS},
))
