"""Label Studio brush RLE: a slow bit-by-bit decoder written from the format description is the
oracle here; label-studio-sdk's own decoder checks the exports (tests/io/test_labelstudio.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from yolact_batch.core import brush_rle


def slow_decode(data: list[int]) -> np.ndarray:
    """thi.ng rle-pack, one bit at a time: header, then repeat / literal chunks."""
    bits = "".join(f"{b:08b}" for b in data)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        value, pos = int(bits[pos : pos + n], 2), pos + n
        return value

    count, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out: list[int] = []
    while len(out) < count:
        repeat = read(1)
        length = read(sizes[read(2)]) + 1
        out += [read(word)] * length if repeat else [read(word) for _ in range(length)]
    assert len(out) == count and set(bits[pos:]) <= {"0"} and len(bits) - pos < 8, "trailing data"
    return np.array(out, np.uint8)


def decoded_mask(data: list[int], shape: tuple[int, int]) -> np.ndarray:
    rgba = slow_decode(data).reshape(*shape, 4)
    assert (rgba == rgba[:, :, :1]).all() and np.isin(rgba, (0, 255)).all()
    return rgba[:, :, 0] == 255


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
        np.eye(5, dtype=bool),
        np.ones((200, 400), bool),  # one run of 320,000 values: split into 2**16 pieces
        np.pad(np.ones((3, 16384), bool), ((1, 1), (0, 0))),  # a run of exactly 2**16 values
        np.tile([True, False], (4, 9)),  # runs of 4 values (1 pixel): the 3-bit field
    ],
    ids=["off", "on", "diagonal", "long-run", "run-2**16", "stripes"],
)
def test_encodes_edge_cases(mask):
    assert np.array_equal(decoded_mask(brush_rle.encode(mask), mask.shape), mask)


def test_header_and_field_sizes():
    data = brush_rle.encode(np.zeros((2, 3), bool))  # 24 zero values: one run, 8-bit field
    bits = "".join(f"{b:08b}" for b in data)
    assert int(bits[:32], 2) == 24 and int(bits[32:37], 2) == 7
    assert [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)] == [3, 4, 8, 16]
    assert bits[53:56] == "110" and int(bits[56:64], 2) == 23 and int(bits[64:72], 2) == 0


def test_refuses_bad_shapes():
    for bad in (np.zeros((0, 4), bool), np.zeros(5, bool), np.zeros((2, 2, 2), bool)):
        with pytest.raises(ValueError, match="non-empty 2-D"):
            brush_rle.encode(bad)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_round_trips_any_mask(mask):
    assert np.array_equal(decoded_mask(brush_rle.encode(mask), mask.shape), mask)
