"""Flow table and TCP stream reassembly: who talks to whom, and the bytes in order.

Flows are keyed by the canonical 5-tuple. The client is the side that sent the SYN (or, when
the capture missed the handshake, the side with the higher port: the lower port is the
server's). Counters are aggregated per batch with NumPy (one sort per batch, ``bincount``);
only packets whose payload an application decoder needs reach per-packet Python, in
``Stream``, which puts one direction's segments back in order: out-of-order segments wait in
a bounded buffer, retransmissions and overlaps are trimmed, and a hole that does not fill (or
a capture that starts mid-stream) is reported as a gap so the decoder can resynchronise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_KEY_DTYPE = np.dtype([("a", "V16"), ("b", "V16"), ("pa", ">u2"), ("pb", ">u2"), ("proto", "u1"),
                       ("pad", "V3")])
_HASH_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                              0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD], dtype=np.uint64)


def group_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal uint64 hash values: (first row, last row, group of each row).

    What ``np.unique(..., return_index=True, return_inverse=True)`` gives, groups in value
    order, at about half the cost: the row number goes into the low bits of each value (the
    hash's low bits give way to it), so one plain sort of numbers, no argsort, orders the
    groups and the rows within each. Values equal only in their top bits fall into one group:
    callers check the grouping (as ``group_rows`` does); for hashes this is what a hash
    collision would do anyway.
    """
    count = len(values)
    if count == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, empty
    bits = np.uint64(max(1, (count - 1).bit_length()))
    packed = ((values.astype(np.uint64) >> bits) << bits) | np.arange(count, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << int(bits)) - 1)).astype(np.intp)
    top = packed >> bits
    starts_run = np.empty(count, dtype=bool)
    starts_run[0] = True
    np.not_equal(top[1:], top[:-1], out=starts_run[1:])
    runs = np.flatnonzero(starts_run)
    inverse = np.empty(count, dtype=np.intp)
    inverse[order] = np.cumsum(starts_run) - 1
    ends = np.empty_like(runs)
    ends[:-1] = runs[1:]
    ends[-1] = count
    return order[runs], order[ends - 1], inverse


def group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal fixed-size records (a multiple of 8 bytes): (first row, last row, group).

    Sorting 40-byte records is slow, so rows are grouped by a 64-bit hash and the grouping is
    then verified byte for byte; on a collision (never seen in practice) the exact sort is used.
    """
    words = keys.view(np.uint64).reshape(len(keys), -1)
    digest = np.zeros(len(keys), dtype=np.uint64)
    for column, multiplier in zip(words.T, _HASH_MULTIPLIERS, strict=False):
        mixed = column * multiplier
        digest ^= mixed ^ (mixed >> np.uint64(29))
    first, last, inverse = group_values(digest)
    packed = keys.view(f"V{keys.dtype.itemsize}").reshape(len(keys))
    # gather whole records (one fixed-size copy each), then compare them as words
    if not (packed[first][inverse].view(np.uint64).reshape(words.shape) == words).all():
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        last = np.zeros(len(first), dtype=np.intp)
        np.maximum.at(last, inverse, np.arange(len(keys)))
    return first, last, inverse


def group_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal 40-byte keys: (index of each group's first row, group of each row)."""
    first, _, inverse = group_rows(keys)
    return first, inverse


@dataclass(frozen=True, slots=True)
class Gap:
    """Bytes of one direction were lost (not captured, or a hole that never filled).

    ``overflow``: the hole was given up because more than the stream's ``max_buffer`` bytes
    waited behind it (the bound on per-flow reassembly memory), not because the flow ended.
    """

    frame: int
    ts: float
    overflow: bool = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """Newly contiguous bytes; ``frame``/``ts`` of the segment that completed them."""

    data: bytes
    frame: int
    ts: float


@dataclass(slots=True)
class _Held:
    data: bytes
    frame: int
    ts: float


# A hole older than this (capture time) is given up: TCP retransmits a lost segment within a
# few retransmission timeouts (RFC 6298: 1 s initial, doubling), so a hole still open after
# them was lost by the capture (a SPAN drop), not by the network.
HOLE_SECONDS = 3.0


class Stream:
    """Reassembles one direction of a TCP connection.

    ``segment`` returns what became contiguous: ``Chunk`` objects, with a ``Gap`` in front
    whenever bytes before them were lost. At most ``max_buffer`` bytes wait out of order, and
    for at most ``max_hole_age`` seconds of capture time; beyond either the hole is declared
    lost.
    """

    __slots__ = ("held", "held_bytes", "hole_since", "max_buffer", "max_hole_age", "next_seq",
                 "synced")

    def __init__(self, max_buffer: int = 256 * 1024, max_hole_age: float = HOLE_SECONDS) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, _Held] = {}
        self.held_bytes = 0
        self.max_buffer = max_buffer
        self.max_hole_age = max_hole_age
        self.hole_since = 0.0  # capture time the oldest segment waiting behind a hole came
        self.synced = False  # whether next_seq came from a SYN (no gap at the start)

    def syn(self, seq: int) -> None:
        if self.next_seq is None:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            self.synced = True

    def in_order(self, seq: int, size: int) -> bool:
        """Take a segment that continues the stream exactly, with nothing waiting behind a hole.

        That is nearly every segment of a healthy connection; it needs none of ``segment``'s
        work: returns True and moves on ``size`` bytes (the caller hands the segment's bytes
        to the decoder as they are). False: use ``segment``.
        """
        if seq != self.next_seq or self.held or not size:
            return False
        self.next_seq = (seq + size) & 0xFFFFFFFF
        return True

    def segment(self, seq: int, data: bytes, frame: int, ts: float) -> list[Chunk | Gap]:
        out: list[Chunk | Gap] = []
        if not data:
            return out
        if self.next_seq is None:
            out.append(Gap(frame, ts))  # capture started mid-stream
            self.next_seq = seq
        ahead = ((seq - self.next_seq + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if ahead > 0:
            if not self.held:
                self.hole_since = ts
            self._hold(seq, data, frame, ts)
            if self.held_bytes > self.max_buffer:
                self._skip_hole(out, overflow=True)
            elif ts - self.hole_since > self.max_hole_age:
                # Segments behind a hole this old: the capture lost it (a retransmission
                # comes within a few RTOs); waiting longer only delays and holds memory.
                self._skip_hole(out)
            return out
        self._deliver(seq, data, frame, ts, out)
        self._drain(out, frame, ts)
        return out

    def flush(self) -> list[Chunk | Gap]:
        """At the end of the flow: give what still waits behind holes, with gaps."""
        out: list[Chunk | Gap] = []
        while self.held:
            self._skip_hole(out)
        return out

    def _deliver(self, seq: int, data: bytes, frame: int, ts: float, out: list[Chunk | Gap]) -> None:
        assert self.next_seq is not None
        behind = (self.next_seq - seq) & 0xFFFFFFFF
        if behind >= len(data):
            return  # a retransmission of bytes already delivered
        if behind:
            data = data[behind:]  # overlap: the first copy wins, as most stacks do
        out.append(Chunk(data, frame, ts))
        self.next_seq = (self.next_seq + len(data)) & 0xFFFFFFFF

    def _hold(self, seq: int, data: bytes, frame: int, ts: float) -> None:
        held = self.held.get(seq)
        if held is not None:
            if len(held.data) >= len(data):
                return
            self.held_bytes -= len(held.data)
        self.held[seq] = _Held(data, frame, ts)
        self.held_bytes += len(data)

    def _drain(self, out: list[Chunk | Gap], frame: int | None = None, ts: float = 0.0) -> None:
        """Deliver held segments that became contiguous; with ``frame``, as of that frame
        (the segment that filled the hole completes them), else as of their own.

        One pass over the held segments sorted by where they start (earliest first: it
        delivers the most; later ones are then trimmed), stopping at the first that starts
        beyond what is delivered: linear after the sort, whatever number of segments waits
        (a rescan per delivered segment made a long connection behind one lost segment
        quadratic).
        """
        if not self.held:
            return
        base = self.next_seq
        assert base is not None
        last = ts
        for s in sorted(self.held, key=lambda s: ((s - base + 0x80000000) & 0xFFFFFFFF) - 0x80000000):
            now = self.next_seq
            assert now is not None
            if ((s - now + 0x80000000) & 0xFFFFFFFF) - 0x80000000 > 0:
                # A hole before this one: it and the later ones wait, timed from now on
                # (from the last segment delivered when no packet filled the hole).
                self.hole_since = ts if frame is not None else last
                return
            held = self.held.pop(s)
            self.held_bytes -= len(held.data)
            last = held.ts
            if frame is None:
                self._deliver(s, held.data, held.frame, held.ts, out)
            else:
                self._deliver(s, held.data, frame, ts, out)

    def _skip_hole(self, out: list[Chunk | Gap], overflow: bool = False) -> None:
        assert self.next_seq is not None
        base = self.next_seq
        first = min(self.held, key=lambda s: (s - base) & 0xFFFFFFFF)
        held = self.held[first]
        out.append(Gap(held.frame, held.ts, overflow))
        self.next_seq = first
        self._drain(out)


@dataclass(slots=True)
class Side:
    """One direction of a flow: counters and the MAC addresses that sent it."""

    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    macs: set[int] = field(default_factory=set)
    syn: bool = False
    fin: bool = False
    rst: bool = False
    stream: Stream | None = None


@dataclass(slots=True)
class Flow:
    """A live flow (mutable while packets arrive; ``summary()`` freezes it)."""

    key: bytes
    proto: int
    client: bytes  # 16-byte address (IPv4 mapped)
    client_port: int
    server: bytes
    server_port: int
    client_is_a: bool
    first_seen: float
    last_seen: float
    first_frame: int
    source: str
    to_server: Side = field(default_factory=Side)
    to_client: Side = field(default_factory=Side)
    protocol: str | None = None  # name of the app decoder, "" when none applies
    decoder: Any = None
    # The decoder sees the roles the other way round: the side that opened the connection
    # owns the protocol's well-known port (e.g. a test rig whose port-502 side dials out).
    decoder_reversed: bool = False
    probes: int = 0  # payloads looked at to choose a decoder
    probed_frame: int = -1
    payloads_shown: int = 0  # payloads of an unclaimed flow given to sinks' on_payload
    client_first: bytes = b""
    server_first: bytes = b""

    def side(self, from_client: bool) -> Side:
        return self.to_server if from_client else self.to_client

    @property
    def closed(self) -> bool:
        """TCP teardown seen: a RST, or a FIN from each side."""
        return self.to_server.rst or self.to_client.rst or (self.to_server.fin and self.to_client.fin)

    @property
    def transport(self) -> str:
        """``tcp``, ``udp`` or ``ip<number>``."""
        return "tcp" if self.proto == IPPROTO_TCP else "udp" if self.proto == IPPROTO_UDP else f"ip{self.proto}"

    def macs(self, from_client: bool, mac_text: Callable[[int], str]) -> tuple[str, ...]:
        """The Ethernet sources of one direction's packets, as sorted text."""
        macs = self.side(from_client).macs
        if len(macs) == 1:  # nearly always: the host itself, or the router for far hosts
            (mac,) = macs
            return (mac_text(mac),)
        return tuple(sorted(map(mac_text, macs)))

    def summary(self, ip_text: Callable[[bytes], str], mac_text: Callable[[int], str]) -> FlowSummary:
        return FlowSummary(
            transport=self.transport,
            client=ip_text(self.client),
            client_port=self.client_port,
            server=ip_text(self.server),
            server_port=self.server_port,
            protocol=self.protocol or "",
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            first_frame=self.first_frame,
            packets_to_server=self.to_server.packets,
            packets_to_client=self.to_client.packets,
            bytes_to_server=self.to_server.bytes,
            bytes_to_client=self.to_client.bytes,
            client_macs=self.macs(True, mac_text),
            server_macs=self.macs(False, mac_text),
            handshake=self.to_server.syn,
            closed=self.closed,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """A finished flow, as sinks and reports see it."""

    transport: str
    client: str
    client_port: int
    server: str
    server_port: int
    protocol: str
    first_seen: float
    last_seen: float
    first_frame: int
    packets_to_server: int
    packets_to_client: int
    bytes_to_server: int
    bytes_to_client: int
    client_macs: tuple[str, ...]
    server_macs: tuple[str, ...]
    handshake: bool
    closed: bool
    source: str = ""

    @property
    def packets(self) -> int:
        return self.packets_to_server + self.packets_to_client

    @property
    def bytes(self) -> int:
        return self.bytes_to_server + self.bytes_to_client


@dataclass(frozen=True, slots=True)
class BatchFlows:
    """Where each packet of a batch belongs: ``index`` into ``flows`` (-1: no flow)."""

    flows: list[Flow]
    index: np.ndarray  # int64 per packet
    from_client: np.ndarray  # bool per packet
    new: list[Flow]


def _endpoints_less(ip_a: np.ndarray, port_a: np.ndarray, ip_b: np.ndarray, port_b: np.ndarray) -> np.ndarray:
    """Element-wise (ip_a, port_a) < (ip_b, port_b), comparing addresses as 128-bit numbers."""
    a = ip_a.view(">u8").reshape(-1, 2)
    b = ip_b.view(">u8").reshape(-1, 2)
    hi_lt = a[:, 0] < b[:, 0]
    hi_eq = a[:, 0] == b[:, 0]
    lo_lt = a[:, 1] < b[:, 1]
    lo_eq = a[:, 1] == b[:, 1]
    return hi_lt | (hi_eq & (lo_lt | (lo_eq & (port_a < port_b))))


class FlowTable:
    """Live flows by canonical key, with expiry of idle and closed flows."""

    def __init__(self, idle_timeout: float = 300.0, closed_linger: float = 5.0,
                 udp_idle_timeout: float = 60.0,
                 max_flows: int = 200_000) -> None:
        self.flows: dict[bytes, Flow] = {}
        self.idle_timeout = idle_timeout
        # UDP has no teardown: a DNS query is a flow of its own that ends with its answer,
        # so idle UDP flows go sooner (Zeek's default inactivity timeout is one minute too).
        self.udp_idle_timeout = udp_idle_timeout
        self.closed_linger = closed_linger
        self.max_flows = max_flows
        self.created = 0
        self.evicted = 0  # flows ended early because the table was full

    def update(self, decoded: Any, batch: Any, source: str) -> BatchFlows:
        """Account every IP packet of a batch to its flow (creating flows as they appear)."""
        n = len(batch.frame)
        index = np.full(n, -1, dtype=np.int64)
        from_client = np.zeros(n, dtype=bool)
        ip_rows = np.flatnonzero(decoded.ip_version != 0)
        if len(ip_rows) == 0:
            return BatchFlows([], index, from_client, [])
        src = np.ascontiguousarray(decoded.src_ip[ip_rows])
        dst = np.ascontiguousarray(decoded.dst_ip[ip_rows])
        proto = decoded.ip_proto[ip_rows]
        has_ports = (proto == IPPROTO_TCP) | (proto == IPPROTO_UDP)
        sport = np.where(has_ports, decoded.sport[ip_rows], 0).astype(np.uint16)
        dport = np.where(has_ports, decoded.dport[ip_rows], 0).astype(np.uint16)
        src_is_a = ~_endpoints_less(dst, dport, src, sport)
        keys = np.empty(len(ip_rows), dtype=_KEY_DTYPE)
        keys["a"] = np.where(src_is_a, src, dst)
        keys["b"] = np.where(src_is_a, dst, src)
        keys["pa"] = np.where(src_is_a, sport, dport)
        keys["pb"] = np.where(src_is_a, dport, sport)
        keys["proto"] = proto
        keys["pad"] = b"\x00\x00\x00"
        first, last, inverse = group_rows(keys)
        uniq = keys.view("V40")[first]
        flags = decoded.tcp_flags[ip_rows]
        ts = batch.ts[ip_rows]
        frames = batch.frame[ip_rows]
        table = self.flows
        key_list: list[bytes] = uniq.tolist()  # 'V40' records come out as bytes
        found = [table.get(k) for k in key_list]
        missing = [i for i, f in enumerate(found) if f is None]
        new: list[Flow] = []
        if missing:
            # New flows: read what they need for all of them at once (numpy scalars are slow).
            rows = first[missing]
            fresh = zip(missing, keys["a"][rows].tolist(), keys["b"][rows].tolist(),
                        keys["pa"][rows].tolist(), keys["pb"][rows].tolist(),
                        keys["proto"][rows].tolist(), src_is_a[rows].tolist(),
                        flags[rows].tolist(), ts[rows].tolist(), frames[rows].tolist(),
                        strict=True)
            for i, a, b, pa, pb, proto_, a_sends, flag, t, frame in fresh:
                flow = self._create(key_list[i], a, b, pa, pb, proto_, a_sends, flag, t, frame,
                                    source)
                table[key_list[i]] = flow
                found[i] = flow
                new.append(flow)
        flows: list[Flow] = found  # type: ignore[assignment]  # every slot is filled now
        client_is_a = np.fromiter((f.client_is_a for f in flows), dtype=bool, count=len(flows))
        dir_client = src_is_a == client_is_a[inverse]
        index[ip_rows] = inverse
        from_client[ip_rows] = dir_client
        self._count(flows, inverse, dir_client, batch, decoded, ip_rows, flags, ts[first], ts[last])
        return BatchFlows(flows, index, from_client, new)

    def _create(self, key: bytes, a: bytes, b: bytes, port_a: int, port_b: int, proto: int,
                src_is_a: bool, flags: int, ts: float, frame: int, source: str) -> Flow:
        if proto == IPPROTO_TCP and (flags & (TCP_SYN | TCP_FIN | TCP_RST)) == TCP_SYN:
            # SYN: the sender is the client; SYN-ACK: the receiver is.
            sender_is_client = not flags & TCP_ACK
            client_is_a = src_is_a == sender_is_client
        elif port_a != port_b:
            client_is_a = port_a > port_b
        else:
            client_is_a = src_is_a
        self.created += 1
        return Flow(
            key=key, proto=proto, client=a if client_is_a else b,
            client_port=port_a if client_is_a else port_b, server=b if client_is_a else a,
            server_port=port_b if client_is_a else port_a, client_is_a=client_is_a,
            first_seen=ts, last_seen=ts, first_frame=frame, source=source,
        )

    @staticmethod
    def _count(flows: list[Flow], inverse: np.ndarray, dir_client: np.ndarray, batch: Any,
               decoded: Any, ip_rows: np.ndarray, flags: np.ndarray, first_ts: np.ndarray,
               last_ts: np.ndarray) -> None:
        nflows = len(flows)
        slot = inverse * 2 + dir_client  # slot 2k: to client, 2k+1: to server
        size = 2 * nflows
        packets = np.bincount(slot, minlength=size)
        wire = np.bincount(slot, weights=batch.origlen[ip_rows], minlength=size)
        payload = np.bincount(slot, weights=decoded.payload_len[ip_rows], minlength=size)
        # whether a side saw the flag at all: mark the slots of the (few) rows carrying it
        syn = np.zeros(size, dtype=bool)
        fin = np.zeros(size, dtype=bool)
        rst = np.zeros(size, dtype=bool)
        syn[slot[(flags & TCP_SYN) != 0]] = True
        fin[slot[(flags & TCP_FIN) != 0]] = True
        rst[slot[(flags & TCP_RST) != 0]] = True
        # Python lists: reading numpy scalars one by one costs more than converting once.
        # Per side, in slot order (to client, then to server, per flow): packets, bytes,
        # payload bytes, SYN seen, FIN seen, RST seen.
        sides = zip(packets.tolist(), wire.astype(np.int64).tolist(),
                    payload.astype(np.int64).tolist(), syn.tolist(), fin.tolist(), rst.tolist(),
                    strict=True)
        for flow, to_client, to_server, t0, t1 in zip(flows, sides, sides, first_ts.tolist(),
                                                      last_ts.tolist(), strict=True):
            for side, (count, wire_bytes, payload_bytes, syn_seen, fin_seen, rst_seen) in (
                    (flow.to_server, to_server), (flow.to_client, to_client)):
                if count:
                    side.packets += count
                    side.bytes += wire_bytes
                    side.payload_bytes += payload_bytes
                    side.syn = side.syn or syn_seen
                    side.fin = side.fin or fin_seen
                    side.rst = side.rst or rst_seen
            if t0 < flow.first_seen:
                flow.first_seen = t0
            if t1 > flow.last_seen:
                flow.last_seen = t1
        # MACs per side: a side nearly always has one sender MAC, so take one row's MAC per
        # slot and look only at the rows that differ from it (none, usually), not sort them all.
        macs = decoded.eth_src[ip_rows]
        seen = np.zeros(size, dtype=np.uint64)
        seen[slot] = macs
        other = np.flatnonzero(macs != seen[slot])
        pairs = set(zip(np.flatnonzero(packets).tolist(), seen[packets > 0].tolist(), strict=True))
        if len(other):
            pairs.update(zip(slot[other].tolist(), macs[other].tolist(), strict=True))
        for s, mac in pairs:
            if mac:
                flows[s >> 1].side(bool(s & 1)).macs.add(mac)

    def expire(self, now: float) -> list[Flow]:
        """Remove and return flows idle too long, or closed and quiet for a moment."""
        done: list[Flow] = []
        for key, flow in list(self.flows.items()):
            idle = now - flow.last_seen
            limit = self.udp_idle_timeout if flow.proto == IPPROTO_UDP else self.idle_timeout
            if idle > limit or (idle > self.closed_linger and flow.closed):
                done.append(self.flows.pop(key))
        if len(self.flows) > self.max_flows:
            by_age = sorted(self.flows.values(), key=lambda f: f.last_seen)
            for flow in by_age[: len(self.flows) - self.max_flows]:
                done.append(self.flows.pop(flow.key))
                self.evicted += 1
        return done

    def drain(self) -> list[Flow]:
        done = list(self.flows.values())
        self.flows.clear()
        return done
