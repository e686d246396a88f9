"""ARP (ethertype 0x0806): who has which IP address, which MAC answers; learns hosts and gateways.

ARP is not TCP or UDP, so there is no DecoderSpec: the module registers a link-layer protocol
(``registry.LinkSpec``) and the pipeline calls ``decode_arp_frames`` with the payload of the
frames whose ethertype is 0x0806 (all of a batch's at once).
A reply or a gratuitous announcement binds an IP to a MAC; two MACs claiming one IP (the
gateway, typically) is how spoofing shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from cranewatch.detect.facts import Binding, where
from cranewatch.errors import DecodeError, Location
from cranewatch.protocols.base import Event
from cranewatch.protocols.registry import (
    Adapter,
    LinkFrames,
    LinkSpec,
    ProtocolRun,
    ProtocolSpec,
    register_protocol,
)

OP_REQUEST = 1
OP_REPLY = 2


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArpEvent(Event):
    """An ARP request (operation 1, or any other than reply); ``ArpResponse`` for replies.

    ``src``/``dst`` of the event are the sender and target MACs of the ARP body.
    ``gratuitous``: sender IP == target IP (an announcement of one's own binding).
    """

    kind: ClassVar[str] = "arp_address_request"
    operation: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str
    gratuitous: bool = False


ArpRequest = ArpEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ArpResponse(ArpEvent):
    """An ARP reply: ``sender_mac`` is at ``sender_ip``."""

    kind: ClassVar[str] = "arp_address_response"


def decode_arp(data: bytes, *, ts: float = 0.0, frame: int = 0, source: str = "") -> ArpEvent:
    """Decode an Ethernet/IPv4 ARP body (the bytes after the ethertype)."""
    (event,) = decode_arp_frames([data], [ts], [frame], source)
    if isinstance(event, DecodeError):
        raise event
    return event


def decode_arp_frames(bodies: list[bytes], ts: list[float], frames: list[int],
                      source: str = "") -> list[ArpEvent | DecodeError]:
    """Decode the ARP bodies of many frames: an event, or the DecodeError, per body.

    The pipeline gives a whole batch's ARP frames at once; one broken frame must not cost the
    others, so its error takes its place in the list instead of being raised.
    """
    out: list[ArpEvent | DecodeError] = []
    for data, stamp, frame in zip(bodies, ts, frames, strict=True):
        fields = _arp_fields(bytes(data[:28])) if len(data) >= 28 else (
            f"ARP body of {len(data)} bytes, 28 needed")
        if isinstance(fields, str):
            out.append(DecodeError(fields, Location(file=source or None, frame=frame)))
            continue
        cls, operation, sender_mac, sender_ip, target_mac, target_ip = fields
        out.append(cls(ts=stamp, frame=frame, src=sender_mac, dst=target_mac, source=source,
                       operation=operation, sender_mac=sender_mac, sender_ip=sender_ip,
                       target_mac=target_mac, target_ip=target_ip,
                       gratuitous=sender_ip == target_ip))
    return out


_ArpFields = tuple[type[ArpEvent], int, str, str, str, str]


@lru_cache(maxsize=8192)  # the same requests and replies recur all day: format each once
def _arp_fields(body: bytes) -> _ArpFields | str:
    """Event class and text fields of a 28-byte ARP body, or the reason it is not Ethernet/IPv4."""
    hw_type = body[0] << 8 | body[1]
    proto_type = body[2] << 8 | body[3]
    hw_len, proto_len = body[4], body[5]
    if hw_type != 1 or proto_type != 0x0800 or hw_len != 6 or proto_len != 4:
        return f"ARP for hardware {hw_type}/protocol 0x{proto_type:04x} is not Ethernet/IPv4"
    operation = body[6] << 8 | body[7]
    cls = ArpResponse if operation == OP_REPLY else ArpEvent
    return (cls, operation, format_mac(body[8:14]), ".".join(str(b) for b in body[14:18]),
            format_mac(body[18:24]), ".".join(str(b) for b in body[24:28]))


def binding(event: ArpEvent) -> list[Binding]:
    """The IP-to-MAC binding an ARP body states (none for probes and empty addresses)."""
    mac, ip = event.sender_mac, event.sender_ip
    if not mac or not ip or ip == "0.0.0.0" or mac == "00:00:00:00:00:00":
        return []
    return [Binding(**where(event), ip=ip, mac=mac)]


def decode_link(frames: LinkFrames, run: ProtocolRun | None) -> list[tuple[int, ArpEvent | DecodeError]]:
    """The registry's link-layer form of ``decode_arp_frames``: one answer per frame."""
    return list(enumerate(decode_arp_frames(frames.bodies, frames.ts, frames.frames, frames.source)))


ETHERTYPE_ARP = 0x0806
ARP_BODY = 28  # bytes of an Ethernet/IPv4 ARP body (what follows is Ethernet padding)
_BINDING = Adapter(binding, (Binding,))

PROTOCOL = register_protocol(ProtocolSpec(
    name="arp", module=__name__, policy={},
    links=(LinkSpec(ETHERTYPE_ARP, decode_link, max_body=ARP_BODY),),
    adapters={ArpEvent: _BINDING, ArpResponse: _BINDING},
))
