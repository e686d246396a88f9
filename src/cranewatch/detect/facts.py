"""The observations detectors reason over, one small frozen record per kind of fact.

Decoders speak their protocol's language (an S7 job with function 0x29, a CIP service 0x07,
a ClientHello); detectors speak the threat's (a CPU stop, a TLS server name). ``adapt.py``
turns decoder events, finished flows and raw payloads into these facts, so each detector is a
pure function of facts and the decoders can evolve without touching the detectors.
Every fact carries where it came from (capture ``source`` and ``frame``) for the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

F = TypeVar("F", bound="Fact")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
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


def positional(cls: type[F]) -> Callable[..., F]:
    """A constructor of the fact class ``cls`` that takes every field, in declaration order
    (``dataclasses.fields``: ``Fact``'s seven, then the class's own), and no defaults.

    For the adapters' hot paths (a fact per DNS lookup, MQTT publish and finished flow): a
    frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``, which
    makes a fact of 17 fields cost 2.5 µs; this stores straight into the slots, as that
    ``__init__`` would without the frozen detour, in 1 µs. The object is the same (equal,
    hashable, frozen), which the adapter tests check against keyword construction.
    """
    names = [f.name for f in fields(cls)]
    # the slots' own descriptors, whose __set__ skips the frozen class's __setattr__
    setters = {f"set_{name}": getattr(cls, name).__set__ for name in names}
    body = "".join(f"    set_{name}(fact, {name})\n" for name in names)
    source = f"def make({', '.join(names)}):\n    fact = new(cls)\n{body}    return fact\n"
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls, **setters}
    exec(source, scope)  # generated from the field names only, as dataclasses does
    make: Callable[..., F] = scope["make"]
    make.__qualname__ = f"positional({cls.__name__})"
    return make
