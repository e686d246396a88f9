"""A minimal frame walker for the protocol tests: capture → flows → decoder events.

The real pipeline (flows.py, pipeline.py) is written in parallel; the protocol tests must not
wait for it, so this walker does the least that drives the decoders the way the pipeline
will: dpkt reads the capture, TCP payload is released in sequence order per direction
(retransmitted bytes dropped, holes reported with ``gap``), and UDP datagrams are fed whole.
Frame numbers count every record from 1, as tshark's ``frame.number`` does.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

from cranewatch.errors import DecodeError
from cranewatch.protocols import load_all
from cranewatch.protocols.arp import decode_arp
from cranewatch.protocols.base import REGISTRY, DecoderSpec, Event, FlowContext, StreamDecoder


@dataclass
class Packet:
    frame: int
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    transport: str
    payload: bytes
    seq: int = 0
    syn: bool = False
    ack_flag: bool = False
    ack: int = 0


def readable(path: Path) -> bool:
    """Whether dpkt can open the capture (a few Zeek traces use formats it does not read)."""
    try:
        next(iter(_records(path)), None)
    except (ValueError, dpkt.UnpackError, dpkt.NeedData):
        return False
    return True


def _records(path: Path) -> Iterator[tuple[float, bytes, int]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader: Any = dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(handle)
        linktype = reader.datalink()
        for ts, buf in reader:
            yield float(ts), bytes(buf), linktype


def _ip_layer(buf: bytes, linktype: int) -> tuple[Any, int] | None:
    """The IP packet (or ARP payload with ethertype) of one link-layer frame."""
    if linktype == 1:
        eth = dpkt.ethernet.Ethernet(buf)
        return eth.data, eth.type
    if linktype == 113:
        sll = dpkt.sll.SLL(buf)
        return sll.data, sll.ethtype
    if linktype == 276:  # Linux cooked v2: protocol type, then 18 more header bytes
        ethertype = int.from_bytes(buf[:2], "big")
        inner = buf[20:]
        if ethertype == 0x0800:
            return dpkt.ip.IP(inner), ethertype
        if ethertype == 0x86DD:
            return dpkt.ip6.IP6(inner), ethertype
        return inner, ethertype
    if linktype in (101, 12, 14, 228, 229):
        version = buf[0] >> 4 if buf else 0
        if version == 4:
            return dpkt.ip.IP(buf), 0x0800
        if version == 6:
            return dpkt.ip6.IP6(buf), 0x86DD
        return None
    if linktype in (0, 108):
        family = int.from_bytes(buf[:4], "little" if linktype == 0 else "big")
        inner = buf[4:]
        if family == 2:
            return dpkt.ip.IP(inner), 0x0800
        return dpkt.ip6.IP6(inner), 0x86DD
    return None


def packets(path: Path) -> Iterator[Packet | tuple[int, float, bytes]]:
    """Every TCP/UDP packet of a capture as a Packet, ARP frames as (frame, ts, arp bytes)."""
    for frame, (ts, buf, linktype) in enumerate(_records(path), start=1):
        try:
            layer = _ip_layer(buf, linktype)
        except (dpkt.UnpackError, IndexError, ValueError):
            continue
        if layer is None:
            continue
        ip, ethertype = layer
        if ethertype == 0x0806:
            yield frame, ts, bytes(ip) if not isinstance(ip, bytes) else ip
            continue
        if isinstance(ip, dpkt.ip.IP):
            family = socket.AF_INET
            if ip.offset or ip.mf:
                continue  # fragments: tshark reassembles them; rare in these captures
        elif isinstance(ip, dpkt.ip6.IP6):
            family = socket.AF_INET6
        else:
            continue
        l4 = ip.data
        src = socket.inet_ntop(family, ip.src)
        dst = socket.inet_ntop(family, ip.dst)
        if isinstance(l4, dpkt.tcp.TCP):
            yield Packet(frame, ts, src, dst, l4.sport, l4.dport, "tcp", bytes(l4.data), l4.seq,
                         bool(l4.flags & dpkt.tcp.TH_SYN), bool(l4.flags & dpkt.tcp.TH_ACK), l4.ack)
        elif isinstance(l4, dpkt.udp.UDP):
            yield Packet(frame, ts, src, dst, l4.sport, l4.dport, "udp", bytes(l4.data))


@dataclass
class _Direction:
    next_seq: int | None = None
    pending: dict[int, tuple[bytes, float, int]] = field(default_factory=dict)


@dataclass
class _Flow:
    ctx: FlowContext
    decoder: StreamDecoder | None
    decided: bool
    dirs: tuple[_Direction, _Direction] = field(default_factory=lambda: (_Direction(), _Direction()))


@dataclass
class WalkResult:
    events: list[Event]
    errors: list[tuple[int, str]]


def _choose(specs: Iterable[DecoderSpec], transport: str, sport: int, dport: int,
            client_bytes: bytes, server_bytes: bytes, use_ports: bool) -> DecoderSpec | None:
    candidates = [s for s in specs if s.transport == transport]
    if use_ports:
        for spec in candidates:
            if dport in spec.ports:
                return spec
        for spec in candidates:
            if sport in spec.ports:
                return spec
    for spec in sorted(candidates, key=lambda s: s.priority):
        if spec.probe is not None and spec.probe(client_bytes, server_bytes):
            return spec
    return None


def walk(path: Path, names: Iterable[str] | None = None, use_ports: bool = True,
         arp: bool = False) -> WalkResult:
    """Decode a capture with the registered decoders (or only those named)."""
    load_all()
    wanted = set(names) if names is not None else None
    specs = [s for s in REGISTRY if wanted is None or s.name in wanted]
    flows: dict[tuple[str, int, str, int, str], _Flow] = {}
    events: list[Event] = []
    errors: list[tuple[int, str]] = []
    for item in packets(path):
        if isinstance(item, tuple):
            if arp:
                frame, ts, data = item
                try:
                    events.append(decode_arp(data, ts=ts, frame=frame, source=str(path)))
                except DecodeError as exc:
                    errors.append((frame, str(exc)))
            continue
        pkt = item
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.transport)
        rkey = (pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.transport)
        flow = flows.get(key)
        from_client = True
        if flow is None:
            flow = flows.get(rkey)
            if flow is not None:
                from_client = False
        if flow is None:
            # the client is the SYN sender, else the side on the higher (ephemeral) port
            is_client = pkt.syn and not pkt.ack_flag if pkt.transport == "tcp" else True
            if (pkt.transport == "tcp" and pkt.syn and pkt.ack_flag) or (not pkt.syn and pkt.sport < pkt.dport):
                is_client = False
            elif not pkt.syn:
                is_client = True
            if is_client:
                ctx = FlowContext(pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.transport, str(path))
                flow = _Flow(ctx, None, False)
                flows[key] = flow
            else:
                ctx = FlowContext(pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.transport, str(path))
                flow = _Flow(ctx, None, False)
                flows[rkey] = flow
                from_client = False
        if pkt.transport == "udp":
            _deliver(flow, from_client, pkt.payload, pkt.ts, pkt.frame, specs, use_ports, events,
                     errors)
            continue
        direction = flow.dirs[0 if from_client else 1]
        other = flow.dirs[1 if from_client else 0]
        if (pkt.ack_flag and other.pending and other.next_seq is not None
                and 0 < (pkt.ack - other.next_seq) & 0xFFFFFFFF < 0x80000000):
            # the peer acknowledges bytes the capture never had: they are lost, not late
            _skip_hole(flow, not from_client, other, specs, use_ports, events, errors)
        if pkt.syn:
            direction.next_seq = (pkt.seq + 1) & 0xFFFFFFFF
            continue
        if not pkt.payload:
            continue
        if direction.next_seq is None:
            direction.next_seq = pkt.seq
        _tcp_segment(flow, from_client, direction, pkt, specs, use_ports, events, errors)
    for flow in flows.values():  # holes still open at the end of the capture are lost bytes
        for index, direction in enumerate(flow.dirs):
            if direction.pending:
                _skip_hole(flow, index == 0, direction, specs, use_ports, events, errors)
    return WalkResult(events, errors)


def _tcp_segment(flow: _Flow, from_client: bool, direction: _Direction, pkt: Packet,
                 specs: list[DecoderSpec], use_ports: bool, events: list[Event],
                 errors: list[tuple[int, str]]) -> None:
    assert direction.next_seq is not None
    offset = (pkt.seq - direction.next_seq) & 0xFFFFFFFF
    if offset >= 0x80000000:  # starts before what we have: retransmission, maybe with new bytes
        overlap = (direction.next_seq - pkt.seq) & 0xFFFFFFFF
        if overlap >= len(pkt.payload):
            return
        payload = pkt.payload[overlap:]
    elif offset > 0:
        direction.pending[pkt.seq] = (pkt.payload, pkt.ts, pkt.frame)
        if len(direction.pending) > 32:  # the hole will not fill: report it and move on
            _skip_hole(flow, from_client, direction, specs, use_ports, events, errors)
        return
    else:
        payload = pkt.payload
    direction.next_seq = (direction.next_seq + len(payload)) & 0xFFFFFFFF
    _deliver(flow, from_client, payload, pkt.ts, pkt.frame, specs, use_ports, events, errors)
    _flush(flow, from_client, direction, specs, use_ports, events, errors)


def _skip_hole(flow: _Flow, from_client: bool, direction: _Direction, specs: list[DecoderSpec],
               use_ports: bool, events: list[Event], errors: list[tuple[int, str]]) -> None:
    if flow.decoder is not None:
        flow.decoder.gap(from_client)
    base = direction.next_seq or 0
    direction.next_seq = min(direction.pending, key=lambda s: (s - base) & 0xFFFFFFFF)
    _flush(flow, from_client, direction, specs, use_ports, events, errors)


def _flush(flow: _Flow, from_client: bool, direction: _Direction, specs: list[DecoderSpec],
           use_ports: bool, events: list[Event], errors: list[tuple[int, str]]) -> None:
    while direction.next_seq in direction.pending:
        payload, ts, frame = direction.pending.pop(direction.next_seq)  # type: ignore[arg-type]
        direction.next_seq = (direction.next_seq + len(payload)) & 0xFFFFFFFF  # type: ignore[operator]
        _deliver(flow, from_client, payload, ts, frame, specs, use_ports, events, errors)


def _deliver(flow: _Flow, from_client: bool, payload: bytes, ts: float, frame: int,
             specs: list[DecoderSpec], use_ports: bool, events: list[Event],
             errors: list[tuple[int, str]]) -> None:
    if not payload:
        return
    if not flow.decided:
        flow.decided = True
        ctx = flow.ctx
        spec = _choose(specs, ctx.transport, ctx.client_port, ctx.server_port,
                       payload if from_client else b"", b"" if from_client else payload, use_ports)
        flow.decoder = spec.factory(ctx) if spec is not None else None
    if flow.decoder is None:
        return
    try:
        events.extend(flow.decoder.feed(from_client, payload, ts, frame))
    except DecodeError as exc:
        errors.append((frame, str(exc)))
    problems = getattr(flow.decoder, "problems", None)  # reported beside the events
    if problems:
        errors.extend((p.location.frame if p.location and p.location.frame else frame, str(p))
                      for p in problems)
        problems.clear()


AGGREGATOR = "\x1e"


def tshark_fields(tshark: str, path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    """``tshark -T fields`` rows (frame number first) split on tabs; multiple values of a field
    are joined by ``AGGREGATOR`` (a control character: URIs and names may contain commas)."""
    import subprocess

    cmd = [tshark, "-r", str(path), "-n", "-Y", display_filter, "-T", "fields",
           "-E", "occurrence=a", "-E", f"aggregator={AGGREGATOR}", "-e", "frame.number"]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.split("\n") if line]  # not splitlines: it splits on \x1e
