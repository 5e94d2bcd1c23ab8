"""The Genant semi-quantitative grade: the one implementation of DESIGN §2's rule.

For each vertebra, with heights ``ha, hm, hp`` (mm)::

    loss = max(1 - ha/hp, 1 - hm/hp, 1 - hp/hp_ref, 0)

``hp_ref`` is the median posterior height of up to two neighbours above and two below (the crush
term; without any neighbour the term is 0). The grade is 0 (normal) if ``loss < 0.20``,
1 (mild) if ``< 0.25``, 2 (moderate) if ``< 0.40``, else 3 (severe). ``loss`` is the continuous
fracture score; a study's score is the maximum over its vertebrae.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np

#: Lower bounds of the relative height loss for grades 1, 2 and 3.
GRADE_THRESHOLDS: tuple[float, float, float] = (0.20, 0.25, 0.40)
#: Losses this close below a threshold count as reaching it: ``1 - 16/20`` is 0.19999999999999996
#: in floating point, and a wedge of exactly 20 % is grade 1.
THRESHOLD_TOLERANCE = 1e-9
#: How many neighbours on each side enter the crush reference.
NEIGHBOURS_PER_SIDE = 2


class GenantGrade(IntEnum):
    """Genant semi-quantitative fracture grade."""

    NORMAL = 0
    MILD = 1
    MODERATE = 2
    SEVERE = 3


class FractureType(Enum):
    """Morphological type of a vertebral deformity."""

    NONE = "none"
    WEDGE = "wedge"  # anterior height loss
    BICONCAVE = "biconcave"  # middle height loss
    CRUSH = "crush"  # all heights lost relative to the neighbours


@dataclass(frozen=True)
class GenantResult:
    """Per-vertebra outcome of the Genant rule, in the order of the input heights.

    Attributes:
        loss: ``(N,)`` relative height loss in ``[0, 1]`` (the fracture score).
        grade: ``(N,)`` Genant grade 0-3 (int).
        hp_ref: ``(N,)`` neighbour reference of the posterior height in mm (NaN without neighbours).
    """

    loss: np.ndarray
    grade: np.ndarray
    hp_ref: np.ndarray

    @property
    def study_score(self) -> float:
        """The study's fracture score: the largest loss, 0 for a study without vertebrae."""
        return float(self.loss.max()) if self.loss.size else 0.0


def grade_from_loss(loss: np.ndarray | float) -> np.ndarray:
    """Genant grade (int array, same shape) of relative height losses."""
    thresholds = np.asarray(GRADE_THRESHOLDS) - THRESHOLD_TOLERANCE
    return np.searchsorted(thresholds, np.asarray(loss, dtype=np.float64), side="right")


def neighbour_reference(posterior_heights: np.ndarray) -> np.ndarray:
    """Median posterior height of up to two neighbours on each side, NaN where there is none.

    Args:
        posterior_heights: ``(N,)`` posterior heights (mm) of consecutive vertebrae, ordered along
            the spine (either direction).
    """
    hp = np.asarray(posterior_heights, dtype=np.float64)
    n = hp.shape[0]
    ref = np.full(n, np.nan)
    for i in range(n):
        neighbours = np.concatenate(
            [hp[max(0, i - NEIGHBOURS_PER_SIDE) : i], hp[i + 1 : i + 1 + NEIGHBOURS_PER_SIDE]]
        )
        if neighbours.size:
            ref[i] = np.median(neighbours)
    return ref


def genant(heights: np.ndarray) -> GenantResult:
    """Apply the Genant rule to the vertebrae of one spine.

    Args:
        heights: ``(N, 3)`` heights ``(ha, hm, hp)`` in mm of consecutive vertebrae ordered along
            the spine; they are the neighbours of one another for the crush term.

    Raises:
        ValueError: on a wrong shape or a non-positive or non-finite posterior height.
    """
    h = np.asarray(heights, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 3:
        raise ValueError(f"heights must have shape (N, 3) = (ha, hm, hp) per vertebra, got {h.shape}")
    if not np.all(np.isfinite(h)) or np.any(h[:, 2] <= 0):
        raise ValueError("heights must be finite and the posterior heights positive (mm)")
    ha, hm, hp = h[:, 0], h[:, 1], h[:, 2]
    ref = neighbour_reference(hp)
    crush = np.where(np.isnan(ref), 0.0, 1.0 - hp / np.where(np.isnan(ref), 1.0, ref))
    loss = np.maximum.reduce([1.0 - ha / hp, 1.0 - hm / hp, crush, np.zeros_like(hp)])
    return GenantResult(loss=loss, grade=grade_from_loss(loss), hp_ref=ref)
