"""MBAP framing of a batch's in-order Modbus/TCP byte streams, vectorised across streams.

A serial gateway or a SCADA master writing a whole poll cycle at once puts several ADUs in one
segment and splits ADUs over two or three segments. ``ModbusDecoder.feed`` frames such a stream
segment by segment; this module cuts the same ADUs out of every in-order stream of a batch at
once, so the batch path (``modbus.fast_reads``) can take them as if each had come alone.

The framing rule is the decoder's (``modbus._header_fits``: protocol id 0, a length of 2 to
``max_length``; an ADU is 6 + length bytes); here it is applied to NumPy columns and checked
against the decoder ADU by ADU (tests/test_mbap_streams.py). What this module cannot vouch for
it does not guess at: from the first segment of a stream that is out of order, whose framing
breaks (a header that does not fit) or that it did not reach in ``MAX_STEPS``, the stream
is left to the decoder, which takes it from exactly the state the decoder would have reached.

How a stream is walked: every segment is first assumed to start on an ADU boundary, and the
ADUs of all segments are peeled at once (one ADU of every segment per step). Then the streams
are followed from their starts, all at once: where a stream reaches a segment's start, the
guessed walks of that segment and of the run of segments after it that follow on from one
another hold (one step); inside a segment that starts inside an ADU (the previous segment's
last ADU runs into it) one ADU is peeled per step until the next segment start. A gateway
splits an ADU into two or three pieces, so such stretches are short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_STEPS = 4096  # steps of the walk along the streams; what is left is the decoder's
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Segments:
    """The payload segments of a batch's candidate streams, in capture order.

    ``slot`` numbers a stream (flow * 2 + from client); ``next_seq`` is each slot's expected
    sequence number (-1: unknown), ``carry`` the bytes its decoder holds of a partial ADU
    (they start on an ADU boundary).
    """

    buf: np.ndarray  # uint8: the batch's bytes
    slot: np.ndarray
    seq: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    next_seq: np.ndarray  # int64 per slot
    carry: dict[int, bytes]


@dataclass(frozen=True, slots=True)
class Adus:
    """The whole ADUs of the batch's streams, ordered by the segment that completes each (its
    position in ``Segments``), then by stream position; and how far each stream can be trusted.

    ``offset`` points into ``buf``: the batch's bytes when no stream needed walking, else the
    gathered bytes of the streams that did not, followed by those of the streams that did
    (``stream_start`` per slot: where the decoder's held bytes begin there). ``cut``: per slot, the position of the first segment of its flow the decoder
    must take (len(segments) when none). When every segment is one whole ADU and nothing is
    held, the streams' order is not checked here (``fast_reads`` checks it, ADU by ADU).
    """

    buf: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    seq: np.ndarray  # where each ADU starts in its stream: sequence number, or coordinate
    segment: np.ndarray
    slot: np.ndarray
    cut: np.ndarray  # per slot
    first_seq: np.ndarray  # per slot: ``seq`` of its first ADU
    stream_start: np.ndarray  # per slot: coordinate of the first held or new byte
    segment_end: np.ndarray  # per segment: coordinate where it ends (-1 for those not walked)
    walked: np.ndarray  # bool per slot: its bytes were gathered (else ADUs point at segments)


def header_fits(buf: np.ndarray, at: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(fits, length) of the MBAP headers at ``at`` (6 bytes each must be in ``buf``; callers
    ask at 0 for what they will not use, so a buffer of fewer bytes is padded)."""
    if len(buf) < 6:
        buf = np.concatenate([buf, np.zeros(6, dtype=np.uint8)])
    length = (buf[at + 4].astype(np.int64) << 8) | buf[at + 5]
    fits = (buf[at + 2] == 0) & (buf[at + 3] == 0) & (length >= 2) & (length <= max_length)
    return fits, length


def frame_streams(seg: Segments, max_length: int) -> Adus:
    """Cut the ADUs of every stream; see the module's docstring."""
    n = len(seg.slot)
    nslots = len(seg.next_seq)
    buf = seg.buf
    off = seg.offset.astype(np.int64)
    size = seg.length.astype(np.int64)
    readable = size >= 6
    fits, length = header_fits(buf, np.where(readable, off, 0), max_length)
    exact = readable & fits & (size == 6 + length)
    if not seg.carry and exact.all():
        # Every segment one whole ADU (pipelined polling, the common case): nothing to walk,
        # and the order of each stream is left to ``fast_reads`` to check.
        everything = np.arange(n)
        return Adus(buf, off, size, seg.seq.astype(np.int64), everything, seg.slot,
                    np.full(nslots, n, dtype=np.int64), seg.next_seq,
                    np.zeros(nslots, dtype=np.int64), np.full(n, -1, dtype=np.int64),
                    np.zeros(nslots, dtype=bool))
    # In order: each segment starts where the previous one of its stream ended.
    # Stable by slot; 16-bit keys are radix-sorted (linear).
    order = np.argsort(seg.slot.astype(np.uint16) if nslots <= 1 << 16 else seg.slot, kind="stable")
    s_slot = seg.slot[order]
    s_seq = seg.seq[order].astype(np.int64)
    s_len = seg.length[order].astype(np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = s_slot[1:] != s_slot[:-1]
    expected = np.empty(n, dtype=np.int64)
    expected[1:] = (s_seq[:-1] + s_len[:-1]) & _U32
    expected[first] = seg.next_seq[s_slot[first]]
    cut = np.full(nslots, n, dtype=np.int64)
    late = s_seq != expected
    np.minimum.at(cut, s_slot[late], order[late])
    taken = order < cut[s_slot]  # in sorted order: the in-order prefix of each stream

    # A stream whose segments are each exactly one ADU (and that holds nothing) needs no walk.
    walk_slot = np.bincount(s_slot[taken], weights=~exact[order[taken]],
                            minlength=nslots).astype(bool)
    for slot, kept in seg.carry.items():
        if kept:
            walk_slot[slot] = True

    stream_start = np.zeros(nslots, dtype=np.int64)
    segment_end = np.full(n, -1, dtype=np.int64)
    direct = order[taken & ~walk_slot[s_slot]]  # capture order within each stream
    d_off = off[direct]
    if not walk_slot[s_slot[taken]].any():
        cut = _per_flow(cut)
        keep = np.flatnonzero(np.arange(n) < cut[seg.slot])  # every segment of the flows is taken
        return Adus(buf, off[keep], size[keep], seg.seq[keep].astype(np.int64), keep,
                    seg.slot[keep], cut, seg.next_seq, stream_start, segment_end, walk_slot)

    # Gather each walked stream's bytes (held bytes first) behind the batch's.
    w = order[taken & walk_slot[s_slot]]  # by slot, capture order within
    w_slot = seg.slot[w]
    w_first = np.ones(len(w), dtype=bool)
    w_first[1:] = w_slot[1:] != w_slot[:-1]
    held = np.array([len(seg.carry.get(s, b"")) if f else 0
                     for s, f in zip(w_slot.tolist(), w_first.tolist(), strict=True)],
                    dtype=np.int64)
    # The walked bytes go after those of the streams not walked (gathered too: a copy of the
    # whole batch's bytes would cost its size, tens of MB, for a few segments).
    index_type = np.int32 if len(buf) < 1 << 31 else np.int64
    front = _gathered(buf, d_off, size[direct], index_type)
    d_off = np.cumsum(size[direct]) - size[direct]
    base = len(front)
    piece_len = held + size[w]
    piece_end = base + np.cumsum(piece_len)
    piece_start = piece_end - piece_len
    extra = _gathered(buf, off[w], size[w], index_type)  # then the held bytes put in front
    if held.any():
        carried = np.flatnonzero(held)
        at = np.repeat(piece_start[carried] - base - (np.cumsum(held)[carried] - held[carried]),
                       held[carried])
        extra = np.insert(extra, at, np.frombuffer(
            b"".join(seg.carry[slot] for slot in w_slot[carried].tolist()), dtype=np.uint8))
    whole = np.concatenate([front, extra]) if base else extra
    starts_of_slot = piece_start[w_first]
    stream_start[w_slot[w_first]] = starts_of_slot
    # Per piece, where its stream's bytes end.
    slot_run = np.cumsum(w_first) - 1
    last = np.flatnonzero(np.append(w_first[1:], True))
    stream_end = piece_end[last][slot_run]
    segment_end[w] = piece_end

    piece, a_start, a_len, bad, consistent = _walk(whole, piece_start, piece_end, stream_end,
                                                   w_first, max_length)
    # From the first piece the walk cannot vouch for, the stream is the decoder's.
    doubtful = bad | ~consistent
    np.minimum.at(cut, w_slot[doubtful], w[doubtful])
    a_end = a_start + a_len
    complete = a_end <= stream_end[piece]
    a_start, a_end, a_len = a_start[complete], a_end[complete], a_len[complete]
    completes = np.searchsorted(piece_end, a_end, side="left")  # piece holding the last byte
    a_seg = w[completes]
    a_slot = w_slot[completes]

    offset = np.concatenate([d_off, a_start])
    # Walked streams are numbered by coordinate (contiguous), the others by sequence number.
    adu_seq = np.concatenate([seg.seq[direct].astype(np.int64), a_start])
    first_seq = np.where(walk_slot, stream_start, seg.next_seq)
    adu_len = np.concatenate([size[direct], a_len])
    adu_seg = np.concatenate([direct, a_seg])
    adu_slot = np.concatenate([seg.slot[direct], a_slot])
    cut = _per_flow(cut)
    keep = adu_seg < cut[adu_slot]
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((offset[rows], adu_seg[rows]))]
    return Adus(whole, offset[rows], adu_len[rows], adu_seq[rows], adu_seg[rows],
                adu_slot[rows], cut, first_seq, stream_start, segment_end, walk_slot)


def _gathered(buf: np.ndarray, offset: np.ndarray, size: np.ndarray,
              index_type: type) -> np.ndarray:
    """The bytes of the pieces (offset, size) of ``buf``, end to end."""
    gather = np.repeat((offset - (np.cumsum(size) - size)).astype(index_type), size)
    gather += np.arange(len(gather), dtype=index_type)
    return buf[gather]


def _per_flow(cut: np.ndarray) -> np.ndarray:
    """Both streams of a flow are the decoder's from the first segment either is (pairing
    answers with requests needs them in step)."""
    return np.repeat(np.minimum(cut[0::2], cut[1::2]), 2)


def _walk(buf: np.ndarray, start: np.ndarray, end: np.ndarray, stream_end: np.ndarray,
          first: np.ndarray, max_length: int) -> tuple[np.ndarray, ...]:
    """ADU boundaries of pieces laid end to end per stream (``first`` starts a stream).

    First every piece is walked as if it started on a boundary (all pieces at once, one ADU
    of each per step). Then each stream is followed from its start, all streams at once: at
    the start of a piece the guessed walk holds, and with it the walks of the pieces after it
    as long as each comes out where the next one starts (one step); elsewhere (inside a piece
    that starts inside an ADU) one ADU is peeled per step.

    Returns, over the ADUs found (piece, start, length), then per piece whether its stream
    met a header that does not fit there, and False for the pieces where a stream was left
    undecided after ``MAX_STEPS`` steps.
    """
    npieces = len(start)
    guess_piece, guess_at, guess_len, out = _peel_pieces(buf, start, end, stream_end, max_length)
    # Runs of pieces whose guessed walks follow on: where each run from a piece ends.
    follows = np.zeros(npieces, dtype=bool)
    follows[1:] = ~first[1:] & (out[:-1] == start[1:])
    run_id = np.cumsum(~follows) - 1
    run_last = np.flatnonzero(np.append(~follows[1:], True))
    last_of = run_last[run_id]

    bad = np.zeros(npieces, dtype=bool)
    jumps = np.zeros(npieces + 1, dtype=np.int64)  # +1 where a held run starts, -1 after it
    peeled: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    first_piece = np.flatnonzero(first)
    pos = start[first_piece].copy()
    ends = stream_end[first_piece]
    for _ in range(MAX_STEPS):
        if len(pos) == 0:
            break
        piece = np.searchsorted(start, pos, side="right") - 1  # the piece holding each position
        # At a piece's start its guessed walk holds (when it got anywhere).
        at_start = (pos == start[piece]) & (out[piece] > pos)
        k = piece[at_start]
        np.add.at(jumps, k, 1)
        np.add.at(jumps, last_of[k] + 1, -1)
        pos[at_start] = out[last_of[k]]
        # Elsewhere, one ADU.
        inner = np.flatnonzero(~at_start)
        at = pos[inner]
        readable = at + 6 <= ends[inner]
        fits, length = header_fits(buf, np.where(readable, at, 0), max_length)
        fits &= readable
        bad[piece[inner[readable & ~fits]]] = True
        moved = inner[fits]
        peeled.append((piece[moved], at[fits], 6 + length[fits]))
        pos[moved] = at[fits] + 6 + length[fits]
        # A stream goes on while it moved and has bytes left to frame.
        going = np.zeros(len(pos), dtype=bool)
        going[at_start] = True
        going[moved] = True
        going &= pos < ends
        pos, ends = pos[going], ends[going]
    held = np.cumsum(jumps[:-1]) > 0
    undecided = np.zeros(npieces, dtype=bool)
    if len(pos):
        stuck = np.searchsorted(start, pos, side="right") - 1
        undecided[stuck] = True
    keep = held[guess_piece]
    pieces = [guess_piece[keep], *(p[0] for p in peeled)]
    ats = [guess_at[keep], *(p[1] for p in peeled)]
    lengths = [guess_len[keep], *(p[2] for p in peeled)]
    return (np.concatenate(pieces), np.concatenate(ats), np.concatenate(lengths), bad,
            ~undecided)


def _peel_pieces(buf: np.ndarray, start: np.ndarray, end: np.ndarray, stream_end: np.ndarray,
                 max_length: int) -> tuple[np.ndarray, ...]:
    """Walk every piece from its start as if an ADU began there: the ADUs found (piece,
    start, length) and where each piece's walk came out (at or past its end; earlier when it
    met a header that does not fit or that the stream holds too few bytes of)."""
    pos = start.copy()
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    active = np.flatnonzero(pos < end)
    while len(active):
        at = pos[active]
        readable = at + 6 <= stream_end[active]
        fits, length = header_fits(buf, np.where(readable, at, 0), max_length)
        fits &= readable
        moved = active[fits]
        found.append((moved, at[fits], 6 + length[fits]))
        pos[moved] = at[fits] + 6 + length[fits]
        active = moved[pos[moved] < end[moved]]
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, pos
    return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]),
            np.concatenate([f[2] for f in found]), pos)
