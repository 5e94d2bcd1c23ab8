"""Pixels to int16 Hounsfield units, with the checks every reader applies.

A CT reaches vfq as int16 HU (:mod:`vfq.tensors`). Readers hand over whatever the file stores —
int16 most often, int32 or uint16 after a DICOM rescale, float from some NIfTI writers — and
:func:`copy_as_int16` writes it into an int16 array a few planes at a time (rounding half to
even, so the temporaries stay a few MB whatever the scan's size) while it sums up what it saw. A
reader that converts a scan in pieces (:mod:`vfq.io.dicom_series` reads runs of slices on several
threads) merges the pieces' :class:`PixelSummary` and calls :func:`check_int16` once, so the
error names the whole scan's range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vfq.errors import InputError

__all__ = [
    "INT16_MAX",
    "INT16_MIN",
    "PixelSummary",
    "as_int16",
    "check_int16",
    "copy_as_int16",
    "non_finite_message",
]

INT16_MIN, INT16_MAX = int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max)
#: Planes converted at once (a 512×512 float64 plane is 2 MiB).
_BLOCK_PLANES = 8


@dataclass(frozen=True)
class PixelSummary:
    """What a block of pixels held: the lowest and highest finite value (after rounding; ``inf``
    and ``-inf`` when none was looked at: int16 blocks fit by construction and are not scanned) and
    the number of NaN or infinite values."""

    lo: float
    hi: float
    non_finite: int

    @property
    def fits_int16(self) -> bool:
        """Whether every value was finite and fits int16."""
        return self.non_finite == 0 and self.lo >= INT16_MIN and self.hi <= INT16_MAX

    @staticmethod
    def merge(parts: Iterable[PixelSummary]) -> PixelSummary:
        """The summary of the blocks together."""
        parts = list(parts)
        return PixelSummary(
            lo=min((p.lo for p in parts), default=math.inf),
            hi=max((p.hi for p in parts), default=-math.inf),
            non_finite=sum(p.non_finite for p in parts),
        )


_NOT_SCANNED = PixelSummary(lo=math.inf, hi=-math.inf, non_finite=0)


def copy_as_int16(values: np.ndarray, out: np.ndarray, source: str) -> PixelSummary:
    """Write ``values`` (integer or real HU) into the int16 array ``out`` of the same shape.

    Real values are rounded half to even. Where a block of planes holds a value that is not
    finite or does not fit int16, that block of ``out`` is left as it was: check the returned
    summary (:func:`check_int16`) before using ``out``. ``values`` is read, never written.

    Raises:
        InputError: ``values`` is neither integer nor real (``source`` names the scan).
    """
    if values.ndim < 1 or values.shape != out.shape or out.dtype != np.int16:
        raise ValueError(f"expected an int16 output of shape {values.shape}, got {out.dtype} {out.shape}")
    kind = values.dtype.kind
    if kind not in "iuf":
        raise InputError(f"{source} has pixel type {values.dtype}; expected integer or real HU values")
    if values.dtype == np.int16:
        np.copyto(out, values)
        return _NOT_SCANNED
    parts = [_NOT_SCANNED]
    for start in range(0, values.shape[0], _BLOCK_PLANES):
        block, target = values[start : start + _BLOCK_PLANES], out[start : start + _BLOCK_PLANES]
        if kind == "f":
            block = np.rint(block)
            finite = np.isfinite(block)
            bad = int(block.size - np.count_nonzero(finite))
            shown = block[finite] if bad else block
        else:
            bad, shown = 0, block
        part = PixelSummary(
            lo=float(shown.min()) if shown.size else math.inf,
            hi=float(shown.max()) if shown.size else -math.inf,
            non_finite=bad,
        )
        if part.fits_int16:
            np.copyto(target, block, casting="unsafe")
        parts.append(part)
    return PixelSummary.merge(parts)


def check_int16(summary: PixelSummary, source: str) -> None:
    """Raise the reader's error unless the pixels ``summary`` describes fit int16 HU.

    Raises:
        InputError: NaN or infinite values, or values outside int16 (``source`` names the scan).
    """
    if summary.non_finite:
        raise InputError(non_finite_message(source, summary.non_finite))
    if not summary.fits_int16:
        raise InputError(
            f"{source} has values from {summary.lo:g} to {summary.hi:g}, which do not fit int16 Hounsfield "
            f"units [{INT16_MIN}, {INT16_MAX}]; expected HU (air about -1000, bone a few hundred to "
            "about 3000). Rescale the image to HU first."
        )


def as_int16(values: np.ndarray, source: str) -> np.ndarray:
    """``values`` as int16 HU: the array itself when it is int16 already, else a converted copy.

    Raises:
        InputError: values that are not integer or real, not finite, or do not fit int16.
    """
    if values.dtype == np.int16:
        return values
    out = np.empty(values.shape, dtype=np.int16)
    check_int16(copy_as_int16(values, out, source), source)
    return out


def non_finite_message(source: str, count: int) -> str:
    """The error for a scan with ``count`` NaN or infinite voxels."""
    return (
        f"{source} has {count} voxels that are NaN or infinite; expected finite Hounsfield units. "
        "Replace them (e.g. with -1024 HU, air) and save the scan again."
    )
