"""Turn decoder events, finished flows and raw payloads into the facts detectors judge.

The adapters of decoder events are declared by their protocol modules, next to the events
(``protocols.registry``: each event class with an ``Adapter``, ``AS_IS`` or ``IGNORED``; an
event class without one is refused when its module registers). This module looks them up
(``adapter_for``, decided once per kind), and turns what is not a decoder event into facts:
finished flows (``flow_conversation``, ``conversation``), Zeek's conn.log records
(``zeek_conversation``) and the payloads of flows no decoder claimed (``payload``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cranewatch.decode import ip_text, mac_text
from cranewatch.detect.facts import Conversation, Fact, Payload, RemoteSession, where
from cranewatch.protocols import registry
from cranewatch.protocols.registry import AS_IS, Adapter

if TYPE_CHECKING:
    from cranewatch.flows import Flow

__all__ = ["AS_IS", "Adapter", "adapter_for", "conversation", "facts_from_event",
           "flow_conversation", "flow_conversations", "payload", "zeek_conversation"]

# Zeek's services that are remote-access protocols, in the detectors' names.
REMOTE_SERVICES = {"ssh": "ssh", "rdp": "rdp", "vnc": "vnc", "rfb": "vnc", "telnet": "telnet",
                   "teamviewer": "teamviewer", "anydesk": "anydesk"}


def facts_from_event(event: Any) -> Sequence[Any]:
    """Facts one decoder event gives; kinds no detector reads give nothing."""
    adapter = adapter_for(getattr(event, "kind", ""))
    return adapter.convert(event) if adapter is not None else ()


def adapter_for(kind: str) -> Adapter | None:
    """The adapter of an event kind, None when no detector reads it (its protocol declared it
    ``IGNORED``, or no registered protocol has it)."""
    return registry.adapter_for(kind)


def zeek_conversation(event: Any) -> list[Fact]:
    """A Zeek conn.log record (``sources.zeek.ConnEvent``): the connection, and a remote
    session when Zeek's service names a remote-access protocol (conn.log alone still says
    which connections were SSH, RDP ...)."""
    conversation = _zeek_conn(event)
    remote = REMOTE_SERVICES.get(conversation.protocol)
    if remote is None:
        return [conversation]
    fields = {k: getattr(conversation, k) for k in ("ts", "frame", "src", "dst", "sport", "dport", "source")}
    return [conversation, RemoteSession(**fields, protocol=remote, detail=f"Zeek service {conversation.protocol}")]


ZEEK_CONVERSATION = Adapter(zeek_conversation, (Conversation, RemoteSession))


# Finished flows name the same hosts and routers again and again.
_ip_name = functools.lru_cache(maxsize=65536)(ip_text)
_mac_name = functools.lru_cache(maxsize=65536)(mac_text)


def flow_conversation(flow: Flow) -> Conversation:
    """A finished live flow (``flows.Flow``) as a fact: ``conversation`` of its summary,
    without building the summary."""
    to_server, to_client = flow.to_server, flow.to_client
    return Conversation(
        ts=float(flow.first_seen), frame=int(flow.first_frame), src=_ip_name(flow.client),
        dst=_ip_name(flow.server), sport=int(flow.client_port), dport=int(flow.server_port),
        source=flow.source, transport=flow.transport, protocol=flow.protocol or "",
        last_ts=float(flow.last_seen), packets_to_server=int(to_server.packets),
        packets_to_client=int(to_client.packets), bytes_to_server=int(to_server.bytes),
        bytes_to_client=int(to_client.bytes), client_macs=flow.macs(True, _mac_name),
        server_macs=flow.macs(False, _mac_name), handshake=bool(to_server.syn),
    )


_TRANSPORTS = {6: "tcp", 17: "udp"}


@functools.lru_cache(maxsize=65536)
def _one_mac(mac: int) -> tuple[str, ...]:
    return (_mac_name(mac),)


def _macs(macs: set[int]) -> tuple[str, ...]:
    if len(macs) == 1:  # nearly always: the host itself, or the router for far hosts
        for mac in macs:
            return _one_mac(mac)
    return tuple(sorted(map(_mac_name, macs)))


def flow_conversations(flows: Sequence[Flow]) -> Iterator[Conversation]:
    """``flow_conversation`` of each flow ended by the flow table (whose counters are plain
    Python numbers), with the per-flow lookups and conversions it needs no more; one at a
    time (a run can be every flow of a capture)."""
    for flow in flows:
        to_server, to_client = flow.to_server, flow.to_client
        # ``_macs`` inlined: nearly always one MAC a side
        macs = to_server.macs
        if len(macs) == 1:
            for mac in macs:
                client_macs = _one_mac(mac)
        else:
            client_macs = tuple(sorted(map(_mac_name, macs)))
        macs = to_client.macs
        if len(macs) == 1:
            for mac in macs:
                server_macs = _one_mac(mac)
        else:
            server_macs = tuple(sorted(map(_mac_name, macs)))
        yield Conversation(
            ts=flow.first_seen, frame=flow.first_frame, src=_ip_name(flow.client),
            dst=_ip_name(flow.server), sport=flow.client_port, dport=flow.server_port,
            source=flow.source, transport=_TRANSPORTS.get(flow.proto) or flow.transport,
            protocol=flow.protocol or "", last_ts=flow.last_seen,
            packets_to_server=to_server.packets, packets_to_client=to_client.packets,
            bytes_to_server=to_server.bytes, bytes_to_client=to_client.bytes,
            client_macs=client_macs, server_macs=server_macs, handshake=to_server.syn,
        )


def conversation(flow: Any) -> Conversation:
    """A finished flow (``flows.FlowSummary``) as a fact."""
    return Conversation(
        ts=float(flow.first_seen), frame=int(flow.first_frame), src=flow.client, dst=flow.server,
        sport=int(flow.client_port), dport=int(flow.server_port), source=flow.source,
        transport=flow.transport, protocol=flow.protocol or "", last_ts=float(flow.last_seen),
        packets_to_server=int(flow.packets_to_server), packets_to_client=int(flow.packets_to_client),
        bytes_to_server=int(flow.bytes_to_server), bytes_to_client=int(flow.bytes_to_client),
        client_macs=tuple(flow.client_macs), server_macs=tuple(flow.server_macs),
        handshake=bool(flow.handshake),
    )


# Zeek's service names where they differ from the decoders' protocol names.
ZEEK_SERVICES = {"ssl": "tls", "dtls": "tls", "krb": "kerberos", "krb_tcp": "kerberos"}


def _zeek_conn(event: Any) -> Conversation:
    """A Zeek conn.log record (``sources.zeek.ConnEvent``) as a finished flow without MACs.

    Zeek logs no Ethernet addresses by default, so hidden-uplink cannot judge these; the
    handshake is Zeek's ``S`` (SYN) then ``h`` (SYN-ACK) history, or an established state.
    """
    service = str(getattr(event, "service", "") or "").split(",")[0]
    history = str(getattr(event, "history", "") or "")
    state = str(getattr(event, "state", "") or "")
    duration = getattr(event, "duration", None) or 0.0
    return Conversation(
        **where(event), transport=str(getattr(event, "transport", "") or "tcp"),
        protocol=ZEEK_SERVICES.get(service, service), last_ts=float(event.ts) + float(duration),
        packets_to_server=int(getattr(event, "orig_pkts", None) or 0),
        packets_to_client=int(getattr(event, "resp_pkts", None) or 0),
        bytes_to_server=int(getattr(event, "orig_bytes", None) or 0),
        bytes_to_client=int(getattr(event, "resp_bytes", None) or 0),
        handshake=("S" in history and "h" in history) or state in ("SF", "S1", "S2", "S3", "RSTO", "RSTR"),
    )


def payload(flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> Payload:
    """Clear bytes of an unclaimed flow (the pipeline's ``on_payload`` hook) as a fact."""
    client: Any = getattr(flow, "client", "")
    server: Any = getattr(flow, "server", "")
    if isinstance(client, bytes) and isinstance(server, bytes):
        client, server = ip_text(client), ip_text(server)
    transport = getattr(flow, "transport", None) or ("udp" if getattr(flow, "proto", 6) == 17 else "tcp")
    return Payload(ts=ts, frame=frame, src=str(client), dst=str(server),
                   sport=int(getattr(flow, "client_port", 0)), dport=int(getattr(flow, "server_port", 0)),
                   source=str(getattr(flow, "source", "")), from_client=from_client, data=bytes(data),
                   transport=str(transport))
