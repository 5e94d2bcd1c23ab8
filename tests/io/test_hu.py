"""Pixels to int16 HU: rounding, the int16 bounds, non-finite values and summaries of pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfq.errors import InputError
from vfq.io import hu


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.int64, np.float32, np.float64])
def test_values_that_fit_are_copied_exactly(dtype: type) -> None:
    rng = np.random.default_rng(0)
    lo = 0 if np.dtype(dtype).kind == "u" else hu.INT16_MIN
    values = rng.integers(lo, hu.INT16_MAX + 1, (21, 5, 4)).astype(dtype)  # 21 planes: blocks of 8 + 5
    values[0, 0, 0], values[-1, -1, -1] = lo, hu.INT16_MAX
    out = np.zeros(values.shape, np.int16)
    summary = hu.copy_as_int16(values, out, "scan")
    np.testing.assert_array_equal(out, values.astype(np.int64))
    assert summary.fits_int16 and summary.non_finite == 0
    if dtype is not np.int16:  # int16 fits by construction and is not scanned
        assert (summary.lo, summary.hi) == (lo, hu.INT16_MAX)


def test_real_values_round_half_to_even() -> None:
    values = np.array([[[0.5, 1.5, 2.5, -0.5, -1.5, 1500.4999, -1024.5001]]])
    np.testing.assert_array_equal(hu.as_int16(values, "scan"), [[[0, 2, 2, 0, -2, 1500, -1025]]])


@pytest.mark.parametrize(
    ("value", "fits"), [(32767.4, True), (32767.5, False), (-32768.5, True), (-32768.6, False)]
)
def test_the_int16_bounds_after_rounding(value: float, fits: bool) -> None:
    values = np.zeros((9, 2, 2))
    values[8, 1, 1] = value
    summary = hu.copy_as_int16(values, np.zeros(values.shape, np.int16), "scan")
    assert summary.fits_int16 is fits
    if not fits:
        with pytest.raises(InputError, match=r"^scan has values from .* which do not fit int16 Hounsfield"):
            hu.check_int16(summary, "scan")


def test_non_finite_values_are_counted_across_blocks() -> None:
    values = np.zeros((20, 3, 3), np.float32)
    values[0, 0, 0], values[9, 1, 1], values[19, 2, 2] = np.nan, np.inf, -np.inf
    summary = hu.copy_as_int16(values, np.zeros(values.shape, np.int16), "a scan")
    assert summary.non_finite == 3 and not summary.fits_int16
    with pytest.raises(InputError, match=r"^a scan has 3 voxels that are NaN or infinite; expected finite"):
        hu.check_int16(summary, "a scan")


def test_summaries_of_pieces_merge_into_the_whole_range() -> None:
    parts = [
        hu.PixelSummary(lo=-2048, hi=10, non_finite=0),
        hu.PixelSummary(lo=math.inf, hi=-math.inf, non_finite=0),  # an int16 piece, not scanned
        hu.PixelSummary(lo=0, hi=40000, non_finite=2),
    ]
    whole = hu.PixelSummary.merge(parts)
    assert whole == hu.PixelSummary(lo=-2048, hi=40000, non_finite=2)
    assert hu.PixelSummary.merge(parts[:1]).fits_int16 and not hu.PixelSummary.merge(parts[2:]).fits_int16


def test_an_int16_array_is_handed_over_and_other_kinds_are_refused() -> None:
    values = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    assert hu.as_int16(values, "scan") is values
    with pytest.raises(InputError, match=r"^scan has pixel type complex64; expected integer or real HU"):
        hu.as_int16(values.astype(np.complex64), "scan")
    with pytest.raises(ValueError, match="expected an int16 output of shape"):
        hu.copy_as_int16(values, np.zeros((2, 3, 4), np.int32), "scan")
