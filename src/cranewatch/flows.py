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
    first, last, inverse, _ = _group_values(values)
    return first, last, inverse


def _group_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``group_values``, and the rows in group order (within a group, in row order)."""
    count = len(values)
    if count == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, empty, empty
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
    return order[runs], order[ends - 1], inverse, order


def group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal fixed-size records (a multiple of 8 bytes): (first row, last row, group).

    Sorting 40-byte records is slow, so rows are grouped by a 64-bit hash and the grouping is
    then verified byte for byte; on a collision (never seen in practice) the exact sort is used.
    """
    first, last, inverse, _ = _group_rows(keys)
    return first, last, inverse


def _digest(words: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of uint64 words.

    Chained: each word is mixed into what the words before it gave (multiply, then fold the
    high half down). Mixing each word alone and XOR-ing the results collided on the flow keys
    of many hosts and ports (the IPv4 address sits in the top half of its word, which a
    product only carries upwards), and every such batch took the exact sort.
    """
    digest = np.zeros(len(words), dtype=np.uint64)
    half = np.uint64(32)
    for column, multiplier in zip(words.T, _HASH_MULTIPLIERS, strict=False):
        digest ^= column
        digest *= multiplier
        digest ^= digest >> half
    return digest


def _group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``group_rows``, and the rows in group order (within a group, in row order)."""
    words = keys.view(np.uint64).reshape(len(keys), -1)
    first, last, inverse, order = _group_values(_digest(words))
    packed = keys.view(f"V{keys.dtype.itemsize}").reshape(len(keys))
    # gather whole records (one fixed-size copy each), then compare them as words
    if not (packed[first][inverse].view(np.uint64).reshape(words.shape) == words).all():
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        last = np.zeros(len(first), dtype=np.intp)
        np.maximum.at(last, inverse, np.arange(len(keys)))
        order = np.argsort(inverse, kind="stable")
    return first, last, inverse, order


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
    lost: int = field(default=0, compare=False)  # bytes of the hole given up (0: not known)


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

    def acked(self, ack: int) -> list[Chunk | Gap]:
        """The peer acknowledged the bytes before ``ack``: what waits behind a hole it passes
        is given up at once (as ``segment`` does after ``max_hole_age``), with a ``Gap`` at the
        first held segment, and what became contiguous after it.

        The receiver had the bytes of the hole, so the capture lost them (a SPAN drop) and no
        retransmission will bring them: waiting only delays the bytes behind. A segment of the
        hole that the capture shows later all the same (reordered on the SPAN path) is then
        behind ``next_seq`` and dropped as a retransmission of bytes given up.
        """
        out: list[Chunk | Gap] = []
        while self.held:
            now = self.next_seq
            assert now is not None
            if ((ack - now + 0x80000000) & 0xFFFFFFFF) - 0x80000000 <= 0:
                break
            self._skip_hole(out)
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
        out.append(Gap(held.frame, held.ts, overflow, (first - base) & 0xFFFFFFFF))
        self.next_seq = first
        self._drain(out)


def screen_segments(slot: np.ndarray, seq: np.ndarray, size: np.ndarray, known: np.ndarray,
                    held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort a batch's TCP payload segments out ahead of reassembly, all streams at once.

    ``slot`` numbers each segment's stream (capture order within a stream); ``known`` per slot
    the sequence number its ``Stream`` expects (-1: none yet), ``held`` whether bytes already
    wait behind a hole there. Returns per segment:

    - ``ahead``: it starts beyond every byte its stream saw before it, so a hole opens in
      front of it (lost, or reordered): the stream may wait from there on;
    - ``behind``: every byte of it was delivered already and no hole came before it in the
      stream, or it repeats an earlier segment of its stream exactly (a SPAN duplicate, a
      retransmission after an RTO): ``Stream.segment`` would drop it, so a caller can leave
      its bytes out of the decoders' paths.
    """
    n = len(slot)
    ahead = np.zeros(n, dtype=bool)
    behind = np.zeros(n, dtype=bool)
    if n == 0:
        return ahead, behind
    # Stable by slot; 16-bit keys are radix-sorted (linear).
    order = np.argsort(slot.astype(np.uint16) if len(known) <= 1 << 16 else slot, kind="stable")
    s_slot = slot[order]
    s_seq = seq[order].astype(np.int64)
    s_size = size[order].astype(np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = s_slot[1:] != s_slot[:-1]
    rank = np.cumsum(first) - 1
    start_at = np.flatnonzero(first)
    s_known = known[s_slot].astype(np.int64)
    unknown = s_known < 0
    # Positions relative to where the stream stood (or its first segment here): signed 32-bit.
    base = np.where(unknown, s_seq[start_at][rank], s_known)
    rel = ((s_seq - base + 0x80000000) & 0xFFFFFFFF) - 0x80000000
    end = rel + s_size
    never = -(1 << 40)
    start = np.where(unknown, never, 0)  # delivered up to here before the batch
    big = 1 << 34  # more than the span of ``end`` within a stream
    running = np.maximum.accumulate(end + rank * big) - rank * big
    prev = np.empty(n, dtype=np.int64)
    prev[0] = never
    prev[1:] = running[:-1]
    prev[first] = never
    prev = np.maximum(prev, start)
    s_ahead = (rel > prev) & (prev > never)
    count = np.cumsum(s_ahead)
    before = count - s_ahead - (count[start_at] - s_ahead[start_at])[rank]  # earlier, same stream
    s_behind = (end <= prev) & (prev > never) & (before == 0) & ~held[s_slot] & (s_size > 0)
    # A copy of an earlier segment of its stream (same start and length: a SPAN duplicate, a
    # retransmission after an RTO) adds nothing whatever holes came before: the stream
    # delivered the first copy, holds it, or dropped it as behind.
    # Such a copy starts before the end of what came before it: only streams holding one
    # are looked at (none, in a healthy capture).
    maybe = (rel < prev) & (prev > never) & ~s_behind
    if maybe.any():
        streams = np.zeros(len(known), dtype=bool)
        streams[s_slot[maybe]] = True
        some = np.flatnonzero(streams[s_slot])  # sorted by slot, capture order within
        again = some[np.lexsort((s_size[some], rel[some], s_slot[some]))]  # stable: order kept
        same = np.zeros(len(again), dtype=bool)
        same[1:] = ((s_slot[again][1:] == s_slot[again][:-1]) & (rel[again][1:] == rel[again][:-1])
                    & (s_size[again][1:] == s_size[again][:-1]))
        s_behind[again[same]] |= s_size[again[same]] > 0
    ahead[order] = s_ahead
    behind[order] = s_behind
    return ahead, behind


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
    # Where the flow table keeps this flow's counters while it is live (``FlowTable``); its
    # ``Side`` counters, ``first_seen`` and ``last_seen`` are written when it ends (then -1).
    slot: int = -1

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
    """Where each packet of a batch belongs: ``index`` into ``flows`` (-1: no flow).

    ``ended``: flows a packet of this batch found over (idle past their timeout, closed and
    quiet past the linger, or a new connection on their addresses and ports): they got none
    of this batch's packets. ``superseded``: flows that got some of this batch's packets
    before a later one of the same batch began a new flow on their addresses and ports; they
    end once the batch is decoded. Both are no longer in the table, their counters settled.
    """

    flows: list[Flow]
    index: np.ndarray  # int64 per packet
    from_client: np.ndarray  # bool per packet
    new: list[Flow]
    ended: list[Flow] = field(default_factory=list)
    superseded: list[Flow] = field(default_factory=list)


def _endpoints_less(ip_a: np.ndarray, port_a: np.ndarray, ip_b: np.ndarray, port_b: np.ndarray) -> np.ndarray:
    """Element-wise (ip_a, port_a) < (ip_b, port_b), comparing addresses as 128-bit numbers."""
    a = ip_a.view(">u8").reshape(-1, 2)
    b = ip_b.view(">u8").reshape(-1, 2)
    hi_lt = a[:, 0] < b[:, 0]
    hi_eq = a[:, 0] == b[:, 0]
    lo_lt = a[:, 1] < b[:, 1]
    lo_eq = a[:, 1] == b[:, 1]
    return hi_lt | (hi_eq & (lo_lt | (lo_eq & (port_a < port_b))))


SETTLE_ROWS = 4096  # flows whose counters are read out of the columns at once
# What a side of a live flow has sent, as bits of the table's ``_flags`` column.
_SAW_SYN, _SAW_FIN, _SAW_RST = 1, 2, 4
_TCP_CONTROL = TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST


class FlowTable:
    """Live flows by canonical key, with expiry of idle and closed flows.

    A flow ends when it has been idle longer than its timeout, when it was closed (a RST,
    or a FIN from each side) and stayed quiet for ``closed_linger`` seconds, or when a new
    connection takes its addresses and ports: a SYN (without ACK) whose sequence number is
    not the first one that direction of the flow sent (a retransmitted SYN repeats it), as
    tshark starts a new ``tcp.stream``. These rules are applied to every packet as it comes
    (a flow over by them is ended when a packet touches it, and that packet begins a new
    flow), and by ``expire`` to the flows no packet touches; so where flows begin and end
    does not depend on how the capture is cut into batches nor on when the table is swept.

    The counters of live flows are columns (NumPy arrays, one row per slot, two per slot for
    the sides: ``2 * slot`` to the client, ``2 * slot + 1`` to the server), added to a
    batch at a time; ``Flow`` objects get them (``Side`` counters, ``first_seen``,
    ``last_seen``) when they end.
    """

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
        self._by_slot: list[Flow | None] = []
        self._free: list[int] = []
        # per slot
        self._t0 = np.zeros(0, dtype=np.float64)
        self._t1 = np.zeros(0, dtype=np.float64)
        self._birth = np.zeros(0, dtype=np.int64)
        self._proto = np.zeros(0, dtype=np.uint8)
        self._live = np.zeros(0, dtype=bool)
        # per side
        self._packets = np.zeros(0, dtype=np.int64)
        self._wire = np.zeros(0, dtype=np.int64)
        self._payload = np.zeros(0, dtype=np.int64)
        self._flags = np.zeros(0, dtype=np.uint8)
        self._seq0 = np.zeros(0, dtype=np.int64)  # first TCP sequence number sent, -1 none yet
        self._mac = np.zeros(0, dtype=np.uint64)  # one sender MAC (others: ``Side.macs``)

    # ------------------------------------------------------------------ slots

    def _take_slots(self, count: int) -> list[int]:
        free = self._free
        if len(free) < count:
            top = len(self._by_slot)
            size = max(top + count - len(free), 2 * top, 1024)
            for name in ("_t0", "_t1", "_birth", "_proto", "_live"):
                column = getattr(self, name)
                grown = np.zeros(size, dtype=column.dtype)
                grown[:top] = column
                setattr(self, name, grown)
            for name in ("_packets", "_wire", "_payload", "_flags", "_seq0", "_mac"):
                column = getattr(self, name)
                grown = np.zeros(2 * size, dtype=column.dtype)
                grown[: 2 * top] = column
                setattr(self, name, grown)
            self._by_slot.extend([None] * (size - top))
            free.extend(range(size - 1, top - 1, -1))
        taken = free[len(free) - count:]
        del free[len(free) - count:]
        return taken

    def _settle(self, flows: list[Flow]) -> None:
        """Write the counters of flows leaving the table into them, and free their slots."""
        for start in range(0, len(flows), SETTLE_ROWS):  # bounded temporaries
            self._settle_some(flows[start : start + SETTLE_ROWS])

    def _settle_some(self, flows: list[Flow]) -> None:
        slots = np.fromiter((f.slot for f in flows), dtype=np.int64, count=len(flows))
        sides = (slots[:, None] * 2 + np.arange(2)).reshape(-1)
        flags = self._flags[sides]
        # each column read once, as Python values: item 2 i is flow i's side to the client,
        # 2 i + 1 its side to the server
        t0, t1 = self._t0[slots].tolist(), self._t1[slots].tolist()
        packets, wire = self._packets[sides].tolist(), self._wire[sides].tolist()
        payload, macs = self._payload[sides].tolist(), self._mac[sides].tolist()
        syn = ((flags & _SAW_SYN) != 0).tolist()
        fin = ((flags & _SAW_FIN) != 0).tolist()
        rst = ((flags & _SAW_RST) != 0).tolist()
        for i, flow in enumerate(flows):
            flow.first_seen, flow.last_seen = t0[i], t1[i]
            c, s = 2 * i, 2 * i + 1
            side = flow.to_client
            side.packets, side.bytes, side.payload_bytes = packets[c], wire[c], payload[c]
            side.syn, side.fin, side.rst = syn[c], fin[c], rst[c]
            if macs[c]:
                side.macs.add(macs[c])
            side = flow.to_server
            side.packets, side.bytes, side.payload_bytes = packets[s], wire[s], payload[s]
            side.syn, side.fin, side.rst = syn[s], fin[s], rst[s]
            if macs[s]:
                side.macs.add(macs[s])
            flow.slot = -1
        self._live[slots] = False
        by_slot = self._by_slot
        for slot in slots.tolist():
            by_slot[slot] = None
        self._free.extend(slots.tolist())

    # ------------------------------------------------------------------ batches

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
        first, last, inverse, order = _group_rows(keys)
        uniq = keys.view("V40")[first]
        flags = decoded.tcp_flags[ip_rows]
        ts = batch.ts[ip_rows]
        frames = batch.frame[ip_rows]
        tcp = proto == IPPROTO_TCP
        seq = np.where(tcp, decoded.tcp_seq[ip_rows], 0).astype(np.int64)
        table = self.flows
        key_list: list[bytes] = uniq.tolist()  # 'V40' records come out as bytes
        found: list[Flow | None] = [table.get(k) for k in key_list]
        ended: list[Flow] = []
        owner: list[int] = []
        restarts = self._restarts(found, inverse, order, src_is_a, tcp, flags, ts, seq, proto)
        if restarts is not None:
            epoch, over = restarts
            for g in over:  # the table's flow was over before this batch touched it
                flow = found[g]
                assert flow is not None
                del table[key_list[g]]
                ended.append(flow)
                found[g] = None
            self._settle(ended)
            if epoch is not None:
                inverse, first, last, owner = _split(inverse, epoch, len(found))
                key_list.extend(key_list[g] for g in owner)
                found.extend([None] * len(owner))
        missing = [i for i, f in enumerate(found) if f is None]
        if len(missing) > 1:  # created (and so ended, at a sweep or the end) in capture order
            missing = [missing[k] for k in np.argsort(first[missing], kind="stable").tolist()]
        new: list[Flow] = []
        if missing:
            new = self._add(missing, key_list, found, first, keys, src_is_a, flags, ts, frames,
                            source)
        flows: list[Flow] = found  # type: ignore[assignment]  # every slot is filled now
        superseded: list[Flow] = []
        if owner:
            # A key restarted inside the batch: the table keeps its last flow; the earlier
            # ones get their packets of this batch, then end.
            groups = len(flows) - len(owner)
            top = {g: groups + j for j, g in enumerate(owner)}
            for g, i in top.items():
                table.pop(key_list[g], None)
                table[key_list[g]] = flows[i]
            kept = set(top.values())
            superseded = [flows[g] for g in top]
            superseded += [flows[i] for i in range(groups, len(flows)) if i not in kept]
        client_is_a = np.fromiter((f.client_is_a for f in flows), dtype=bool, count=len(flows))
        slot_of = np.fromiter((f.slot for f in flows), dtype=np.int64, count=len(flows))
        dir_client = src_is_a == client_is_a[inverse]
        index[ip_rows] = inverse
        from_client[ip_rows] = dir_client
        self._count(slot_of, inverse, dir_client, batch, decoded, ip_rows, flags, ts, seq, tcp,
                    first, last)
        self._settle(superseded)
        return BatchFlows(flows, index, from_client, new, ended, superseded)

    def _add(self, missing: list[int], key_list: list[bytes], found: list[Flow | None],
             first: np.ndarray, keys: np.ndarray, src_is_a: np.ndarray, flags: np.ndarray,
             ts: np.ndarray, frames: np.ndarray, source: str) -> list[Flow]:
        """Create the flows of groups ``missing`` (from their first rows) in free slots."""
        # Read what they need for all of them at once (numpy scalars are slow).
        rows = first[missing]
        slots = self._take_slots(len(missing))
        fresh = zip(missing, keys["a"][rows].tolist(), keys["b"][rows].tolist(),
                    keys["pa"][rows].tolist(), keys["pb"][rows].tolist(),
                    keys["proto"][rows].tolist(), src_is_a[rows].tolist(),
                    flags[rows].tolist(), ts[rows].tolist(), frames[rows].tolist(), slots,
                    strict=True)
        table = self.flows
        by_slot = self._by_slot
        new: list[Flow] = []
        for i, a, b, pa, pb, proto, a_sends, flag, t, frame, slot in fresh:
            flow = self._create(key_list[i], a, b, pa, pb, proto, a_sends, flag, t, frame, source)
            flow.slot = slot
            by_slot[slot] = flow
            table[key_list[i]] = flow
            found[i] = flow
            new.append(flow)
        at = np.array(slots, dtype=np.int64)
        self._t0[at] = np.inf
        self._t1[at] = -np.inf
        self._birth[at] = np.arange(self.created - len(missing), self.created)
        self._proto[at] = keys["proto"][rows]
        self._live[at] = True
        sides = (at[:, None] * 2 + np.arange(2)).reshape(-1)
        for column in (self._packets, self._wire, self._payload, self._flags, self._mac):
            column[sides] = 0
        self._seq0[sides] = -1
        return new

    def _restarts(self, found: list[Flow | None], inverse: np.ndarray, order: np.ndarray,
                  src_is_a: np.ndarray, tcp: np.ndarray, flags: np.ndarray, ts: np.ndarray,
                  seq: np.ndarray, proto: np.ndarray) -> tuple[np.ndarray | None, list[int]] | None:
        """Where a packet of the batch begins a new flow on a key (see the class).

        Returns None when none does (nearly always), else the epoch of each row (0 for the
        key's first flow in this batch, 1 for the next ...; None when all are 0) and the
        groups whose table flow was over before the batch's first packet of them.

        Candidates are found vectorised (a SYN that may reuse a key, or a silence longer
        than the shortest timeout); only their keys' packets are then followed one by one.
        """
        groups = len(found)
        old_slot = np.fromiter((-1 if f is None else f.slot for f in found), dtype=np.int64,
                               count=groups)
        s_group = inverse[order]  # ``order``: the rows by group, in row order within one
        count = len(order)
        starts = np.ones(count, dtype=bool)
        np.not_equal(s_group[1:], s_group[:-1], out=starts[1:])
        s_ts = ts[order]
        gap = np.zeros(count, dtype=np.float64)
        gap[1:] = s_ts[1:] - s_ts[:-1]
        heads = np.flatnonzero(starts)  # heads[g]: where group g's rows begin in ``order``
        gap[heads] = 0.0
        known = np.flatnonzero(old_slot >= 0)
        gap[heads[known]] = s_ts[heads[known]] - self._t1[old_slot[known]]
        pure_syn = tcp & ((flags & _TCP_CONTROL) == TCP_SYN)
        shortest = min(self.closed_linger, self.idle_timeout, self.udp_idle_timeout)
        candidate = (gap > shortest) | (pure_syn[order] & (~starts | (old_slot[s_group] >= 0)))
        if not candidate.any():
            return None
        ends = np.empty_like(heads)
        ends[:-1] = heads[1:]
        ends[-1] = count
        epoch = np.zeros(count, dtype=np.int64)
        over: list[int] = []
        for g in np.unique(s_group[candidate]).tolist():
            rows = order[heads[g]:ends[g]]
            flow = found[g]
            if flow is None:
                state = None
                limit_proto = int(proto[rows[0]])
            else:
                s = flow.slot
                a_side, b_side = (2 * s + 1, 2 * s) if flow.client_is_a else (2 * s, 2 * s + 1)
                a_bits, b_bits = int(self._flags[a_side]), int(self._flags[b_side])
                state = [float(self._t1[s]), bool(a_bits & _SAW_FIN), bool(b_bits & _SAW_FIN),
                         bool((a_bits | b_bits) & _SAW_RST), int(self._seq0[a_side]),
                         int(self._seq0[b_side])]
                limit_proto = flow.proto
            limit = self.udp_idle_timeout if limit_proto == IPPROTO_UDP else self.idle_timeout
            e = 0
            head = True
            for r, t, flag, sq, a, is_tcp in zip(rows.tolist(), ts[rows].tolist(),
                                                  flags[rows].tolist(), seq[rows].tolist(),
                                                  src_is_a[rows].tolist(), tcp[rows].tolist(),
                                                  strict=True):
                if state is not None:
                    idle = t - state[0]
                    closed = state[3] or (state[1] and state[2])
                    sent = state[4] if a else state[5]
                    if (idle > limit or (idle > self.closed_linger and closed)
                            or (is_tcp and flag & _TCP_CONTROL == TCP_SYN and sent >= 0
                                and sent != sq)):
                        if head and flow is not None:
                            over.append(g)
                        else:
                            e += 1
                        state = None
                if state is None:
                    state = [t, False, False, False, -1, -1]
                elif t > state[0]:
                    state[0] = t
                if is_tcp:
                    if flag & TCP_FIN:
                        state[1 if a else 2] = True
                    if flag & TCP_RST:
                        state[3] = True
                    if state[4 if a else 5] < 0:
                        state[4 if a else 5] = sq
                epoch[r] = e
                head = False
        return (epoch if epoch.any() else None), over

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

    def _count(self, slot_of: np.ndarray, inverse: np.ndarray, dir_client: np.ndarray,
               batch: Any, decoded: Any, ip_rows: np.ndarray, flags: np.ndarray, ts: np.ndarray,
               seq: np.ndarray, tcp: np.ndarray, first: np.ndarray, last: np.ndarray) -> None:
        """Add a batch to the columns of its flows: sums per side with ``bincount``, flags and
        first sequence numbers marked, no Python per flow."""
        size = 2 * len(slot_of)
        slot = inverse * 2 + dir_client  # the batch's slots: 2k to client, 2k+1 to server
        sides = (slot_of[:, None] * 2 + np.arange(2)).reshape(-1)  # the table's, by batch slot
        self._packets[sides] += np.bincount(slot, minlength=size)
        self._wire[sides] += np.bincount(slot, weights=batch.origlen[ip_rows],
                                         minlength=size).astype(np.int64)
        self._payload[sides] += np.bincount(slot, weights=decoded.payload_len[ip_rows],
                                            minlength=size).astype(np.int64)
        row_side = sides[slot]
        column = self._flags
        for flag, bit in ((TCP_SYN, _SAW_SYN), (TCP_FIN, _SAW_FIN), (TCP_RST, _SAW_RST)):
            marked = row_side[(flags & flag) != 0]
            if len(marked):
                column[marked] |= bit  # the same value for a repeated side: no loss
        self._t0[slot_of] = np.minimum(self._t0[slot_of], ts[first])
        self._t1[slot_of] = np.maximum(self._t1[slot_of], ts[last])
        # The first sequence number of each TCP side (what a new SYN is compared with):
        # assigned in reverse so that, of a side's rows, the first one's is written last.
        tcp_rows = np.flatnonzero(tcp)
        unset = tcp_rows[self._seq0[row_side[tcp_rows]] < 0][::-1]
        if len(unset):
            self._seq0[row_side[unset]] = seq[unset]
        # MACs per side: a side nearly always has one sender MAC, kept in a column; the rows
        # that differ from it (none, usually) add theirs to the side's set.
        macs = decoded.eth_src[ip_rows]
        sent = macs != 0
        held = self._mac[row_side]
        unset_mac = sent & (held == 0)
        if unset_mac.any():
            self._mac[row_side[unset_mac]] = macs[unset_mac]
            held = self._mac[row_side]
        other = np.flatnonzero(sent & (macs != held))
        if len(other):
            by_slot = self._by_slot
            for s, mac in set(zip(row_side[other].tolist(), macs[other].tolist(), strict=True)):
                flow = by_slot[s >> 1]
                assert flow is not None
                flow.side(bool(s & 1)).macs.add(mac)

    # ------------------------------------------------------------------ endings

    def expire(self, now: float) -> list[Flow]:
        """Remove and return flows idle too long, or closed and quiet for a moment (oldest
        first), and the quietest beyond ``max_flows``."""
        live = np.flatnonzero(self._live)
        idle = now - self._t1[live]
        limit = np.where(self._proto[live] == IPPROTO_UDP, self.udp_idle_timeout,
                         self.idle_timeout)
        to_client, to_server = self._flags[2 * live], self._flags[2 * live + 1]
        closed = (((to_client | to_server) & _SAW_RST) != 0) | ((to_client & to_server & _SAW_FIN) != 0)
        over = (idle > limit) | ((idle > self.closed_linger) & closed)
        gone = live[over]
        gone = gone[np.argsort(self._birth[gone], kind="stable")]
        excess = len(self.flows) - len(gone) - self.max_flows
        if excess > 0:
            rest = live[~over]
            quiet = rest[np.lexsort((self._birth[rest], self._t1[rest]))[:excess]]
            self.evicted += len(quiet)
            gone = np.concatenate([gone, quiet])
        by_slot = self._by_slot
        done = [flow for flow in (by_slot[s] for s in gone.tolist()) if flow is not None]
        table = self.flows
        for flow in done:
            del table[flow.key]
        self._settle(done)
        return done

    def drain(self) -> list[Flow]:
        """Every live flow, oldest first (the table is emptied)."""
        done = sorted(self.flows.values(), key=lambda f: int(self._birth[f.slot]))
        self.flows.clear()
        self._settle(done)
        return done


def _split(inverse: np.ndarray, epoch: np.ndarray,
           groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Groups cut where a key begins a new flow: (group of each row, first row and last row
    of each group, and the key group each new group belongs to, in order of key and epoch).
    Groups ``0 .. groups - 1`` keep their rows of epoch 0; the others follow."""
    later = np.flatnonzero(epoch > 0)
    width = int(epoch.max()) + 1
    pairs, local = np.unique(inverse[later] * width + epoch[later], return_inverse=True)
    owner = (pairs // width).tolist()
    inverse = inverse.copy()
    inverse[later] = groups + local.reshape(-1)
    total = groups + len(pairs)
    positions = np.arange(len(inverse))
    first = np.full(total, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, positions)
    last = np.full(total, -1, dtype=np.int64)
    np.maximum.at(last, inverse, positions)
    return inverse, first, last, owner
