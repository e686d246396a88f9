"""The observations detectors reason over, one small frozen record per kind of fact.

Decoders speak their protocol's language (an S7 job with function 0x29, a CIP service 0x07,
a ClientHello); detectors speak the threat's (a CPU stop, a TLS server name). ``adapt.py``
turns decoder events, finished flows and raw payloads into these facts, so each detector is a
pure function of facts and the decoders can evolve without touching the detectors.
Every fact carries where it came from (capture ``source`` and ``frame``) for the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cranewatch.model import FastFrozen


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact(FastFrozen):
    """Where a fact came from; every subclass gets the fast frozen ``__init__``
    (``model.FastFrozen``): the adapters build one per DNS lookup, MQTT publish and flow."""

    ts: float
    frame: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation(Fact):
    """A finished flow. ``src`` is the client (the side that opened it), ``dst`` the server.

    ``client_macs`` are the Ethernet sources of the client's packets, ``server_macs`` those of
    the server's: on a crane-LAN capture, the MAC a crane host's off-subnet traffic comes back
    from is the next hop (the router) it uses.
    """

    transport: str
    protocol: str
    last_ts: float
    packets_to_server: int
    packets_to_client: int
    bytes_to_server: int
    bytes_to_client: int
    client_macs: tuple[str, ...] = ()
    server_macs: tuple[str, ...] = ()
    handshake: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsQuery(Fact):
    """A DNS question from ``src`` (client) to ``dst`` (resolver)."""

    name: str
    qtype: str = "A"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsHello(Fact):
    """A TLS ClientHello: the server name asked for and the client's fingerprints."""

    sni: str | None
    ja3: str | None = None
    ja4: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest(Fact):
    method: str
    host: str | None
    uri: str
    body: bytes = b""
    user_agent: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttPublish(Fact):
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSession(Fact):
    """An interactive remote-access protocol seen in a flow: ``src`` is its client.

    ``protocol``: ssh, rdp, vnc, telnet, teamviewer, anydesk. ``detail``: a banner, version
    or cookie that proves it.
    """

    protocol: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlcCommand(Fact):
    """A control operation on a PLC other than Modbus (S7, CIP, OPC UA).

    ``operation``: one of the names in ``rules/plc_control.yaml`` (cpu-stop, cpu-start,
    cpu-restart, program-download, program-upload, block-delete, cip-stop, cip-reset,
    program-transfer, opcua-write, opcua-call, ...). ``target``: the block, node or object.
    """

    protocol: str
    operation: str
    target: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpMessage(Fact):
    """A DHCP message; for offers/acks ``server_ip``, ``router`` and ``dns`` are the lease's."""

    message_type: str  # discover, offer, request, ack, nak, inform, ...
    client_mac: str | None = None
    server_ip: str | None = None
    server_mac: str | None = None
    router: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding(Fact):
    """An IP address seen with a MAC address (ARP reply/announcement, DHCP, own traffic)."""

    ip: str
    mac: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload(Fact):
    """Clear bytes of a flow no decoder claimed, one direction at a time."""

    from_client: bool
    data: bytes
    transport: str = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedConnection(Fact):
    """A connection one session announced (FTP's data channels): ``orig`` will connect to
    ``resp``:``resp_port`` over ``transport`` until ``until``. ``src``/``dst`` (and ports) are
    the announcing session's client and server, so a connection that matches (``detect.expected``)
    is that session's, not a conversation of its own. ``third_party``: the host named when it is
    neither end of the session (FTP bounce)."""

    protocol: str
    transport: str
    orig: str
    resp: str
    resp_port: int
    until: float
    mode: str = ""  # passive | active
    command: str = ""
    third_party: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileTransfer(Fact):
    """A file a session moved, removed or renamed (``src`` the session's client): its name as
    the client gave it, the server's reply code, the session's user, and whether a password
    was sent in clear in that session (the password itself is never kept)."""

    protocol: str
    operation: str  # download | upload | delete | rename-from | rename-to
    name: str
    reply: int = 0
    user: str = ""
    password_in_clear: bool = False


# ---------------------------------------------------------------- for the protocols' adapters

WHERE_FIELDS = ("ts", "frame", "src", "dst", "sport", "dport", "source")  # Fact's own, in order


def where(event: Any) -> dict[str, Any]:
    """The fields every fact copies from the event it comes from (``Fact``'s own), as the
    keyword arguments of a fact (``PlcCommand(**where(event), ...)``)."""
    return {"ts": float(event.ts), "frame": int(event.frame), "src": str(event.src),
            "dst": str(event.dst), "sport": int(getattr(event, "sport", 0) or 0),
            "dport": int(getattr(event, "dport", 0) or 0),
            "source": str(getattr(event, "source", ""))}


def as_text(value: Any) -> str:
    """An event field as text (bytes decoded as UTF-8 with replacement, None as "")."""
    if type(value) is str:  # the usual case, first
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_bytes(value: Any) -> bytes:
    """An event field as bytes (text encoded as UTF-8, None as b"")."""
    if type(value) is bytes:  # the usual case, first
        return value
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def client_where(event: Any) -> dict[str, Any]:
    """``where(event)`` from the client's side: decoders report both directions of a session,
    a session fact's ``src`` is its client."""
    here = where(event)
    if getattr(event, "from_client", True) is False or str(getattr(event, "kind", "")).endswith("_response"):
        here.update(src=here["dst"], dst=here["src"], sport=here["dport"], dport=here["sport"])
    return here
