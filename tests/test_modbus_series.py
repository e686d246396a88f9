"""Register series in the Modbus book: answers are packed as they come and given back bit for
bit (timestamps, frames, values), whichever path added them and however they were packed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cranewatch.protocols.modbus import SEAL_ROWS, ModbusBook, _Packed

KEY = ("10.20.7.30", "10.20.7.10", 1, 3, 100, 4)


def polling(count: int, seed: int = 7, period: float = 0.1,
            change_every: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers of one master polling 4 registers: jittered period, values that change now and
    then, frames that grow by a varying step (other traffic in between)."""
    rng = np.random.default_rng(seed)
    ts = 1_764_100_000.0 + np.cumsum(period + rng.normal(0, 0.002, count))
    ts = np.round(ts * 1e6) / 1e6  # microsecond timestamps, as a pcap gives them
    frame = np.cumsum(rng.integers(2, 40, count)).astype(np.int64)
    values = np.repeat(rng.integers(0, 65536, (count // change_every + 1, 4)), change_every,
                       axis=0)[:count].astype(np.uint16)
    return ts, frame, values


def bytes_of(block: _Packed) -> int:
    return sum(a.nbytes for a in (block.ts, block.frame, block.dense, block.runs, block.starts))


def assert_same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert got[0].dtype == np.float64 and got[1].dtype == np.int64 and got[2].dtype == np.uint16
    assert got[0].view(np.int64).tolist() == want[0].view(np.int64).tolist()  # bit for bit
    assert got[1].tolist() == want[1].tolist()
    assert got[2].tolist() == want[2].tolist()


def test_polling_packs_to_a_few_bytes_an_answer_and_back_exactly() -> None:
    ts, frame, values = polling(5000)
    block = _Packed.pack(ts, frame, values)
    assert block.ts_scale > 0 and block.frame_steps and not block.changing.any()
    assert bytes_of(block) < 9 * len(ts)  # loose: 16 + 2 * 4 bytes an answer
    assert_same(block.unpack(), (ts, frame, values))


def test_registers_that_change_every_answer_are_kept_whole_the_others_by_change() -> None:
    ts, frame, values = polling(2000)
    values[:, 1] = np.arange(2000)  # a counter
    values[:, 3] = np.arange(2000) // 2  # changes every second answer: still cheaper whole
    block = _Packed.pack(ts, frame, values)
    assert block.changing.tolist() == [False, True, False, True]
    assert block.dense.shape == (2000, 2) and len(block.runs) == len(block.starts) == 2 * 40
    assert_same(block.unpack(), (ts, frame, values))


def test_a_long_silence_or_timestamps_off_the_grid_keep_timestamps_as_they_came() -> None:
    ts, frame, values = polling(300)
    ts[200:] += 3600.0  # an hour without answers: more than int32 steps of 2**-22 s reach
    block = _Packed.pack(ts, frame, values)
    assert block.ts_scale == 0.0 and block.ts.dtype == np.float64
    assert_same(block.unpack(), (ts, frame, values))
    small = np.array([1e-9, 3.0, 1_764_100_000.5])  # 1e-9 is finer than the largest one's grid
    block = _Packed.pack(small, frame[:3], values[:3])
    assert block.ts_scale == 0.0
    assert_same(block.unpack(), (small, frame[:3], values[:3]))


def test_frames_out_of_order_and_far_apart_still_come_back() -> None:
    ts, frame, values = polling(100)
    frame = frame[::-1].copy()
    frame[50] = 1 << 40
    assert_same(_Packed.pack(ts, frame, values).unpack(), (ts, frame, values))
    extreme = np.array([-(1 << 63), (1 << 63) - 1, 0], dtype=np.int64)  # steps overflow int64
    assert_same(_Packed.pack(ts[:3], extreme, values[:3]).unpack(), (ts[:3], extreme, values[:3]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, n, elements=st.floats(allow_nan=False, allow_infinity=False)),
    hnp.arrays(np.int64, n),
    hnp.arrays(np.uint16, (n, 3), elements=st.integers(0, 3)),
)))
def test_any_answers_unpack_to_what_was_packed(answers: tuple[np.ndarray, ...]) -> None:
    ts, frame, values = answers
    assert_same(_Packed.pack(ts, frame, values).unpack(), (ts, frame, values))


@pytest.mark.parametrize("chunk", [1, 97, SEAL_ROWS + 5])
def test_book_gives_back_every_answer_in_time_order_from_both_paths(chunk: int) -> None:
    """Fast-path chunks and slow-path rows of one series, interleaved and packed on the way,
    come out as one series sorted by time (ties by frame), exactly."""
    ts, frame, values = polling(3 * SEAL_ROWS + 17)
    book = ModbusBook()
    book.read_requests(KEY, len(ts), "t.pcap")
    slow = np.zeros(len(ts), dtype=bool)
    slow[::7] = True  # every 7th answer came through the decoder, one at a time
    for start in range(0, len(ts), chunk):
        part = np.arange(start, min(start + chunk, len(ts)))
        fast = part[~slow[part]]
        book.read_answers(KEY, ts[fast], frame[fast], values[fast])
        for i in part[slow[part]].tolist():
            book.read_answer(KEY, float(ts[i]), int(frame[i]), tuple(values[i].tolist()))
    assert len(book.series[KEY].packed) >= 1
    (series,) = book.take_series()
    assert series.requests == len(ts)
    order = np.lexsort((frame, ts))
    assert_same((series.ts, series.frame, series.values), (ts[order], frame[order], values[order]))
    assert not book.series
