"""Pieces of the vectorised Modbus path, checked against the plain NumPy they replace."""

from __future__ import annotations

import numpy as np
import pytest

from cranewatch.protocols.modbus import _stable_order, _windows


@pytest.mark.parametrize("width", [1, 2, 9, 12])
def test_windows_are_the_bytes_at_each_offset_and_repeat_the_last_byte_past_the_end(
        width: int) -> None:
    buf = np.random.default_rng(width).integers(0, 256, 64).astype(np.uint8)
    offsets = np.array([0, 7, 7, 30, 64 - width, 60, 63, 2], dtype=np.int64)
    want = buf[np.minimum(offsets[:, None] + np.arange(width), len(buf) - 1)]
    got = _windows(buf, offsets, width)
    assert got.shape == (len(offsets), width) and got.dtype == np.uint8
    assert got.tolist() == want.tolist()
    assert _windows(buf, offsets[:0], width).shape == (0, width)


@pytest.mark.parametrize("bound", [5, 1 << 16, 1 << 20])
def test_stable_order_is_numpys_stable_argsort(bound: int) -> None:
    keys = np.random.default_rng(bound).integers(0, min(bound, 40), 500)
    assert _stable_order(keys, bound).tolist() == np.argsort(keys, kind="stable").tolist()
