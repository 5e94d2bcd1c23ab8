from __future__ import annotations

import numpy as np
import pytest

from vfq.keypoints import (
    IN_VIEW_MARGIN_VOXELS,
    KEYPOINT_NAMES,
    body_center,
    fully_in_view,
    heights_mm,
    points_inside,
)
from vfq.levels import STANDARD_LEVELS, Level


def test_levels_are_ordered_cranio_caudally():
    assert Level.C7 < Level.T1 < Level.T12 < Level.T13 < Level.L1 < Level.L5 < Level.S1
    assert sorted([Level.L1, Level.C7, Level.T5]) == [Level.C7, Level.T5, Level.L1]
    assert STANDARD_LEVELS[0] is Level.C7 and STANDARD_LEVELS[-1] is Level.L5 and len(STANDARD_LEVELS) == 18


@pytest.mark.parametrize(
    ("label", "level"),
    [
        (1, Level.C1),
        (7, Level.C7),
        (8, Level.T1),
        (19, Level.T12),
        (20, Level.L1),
        (24, Level.L5),
        (25, Level.L6),
        (26, Level.S1),
        (28, Level.T13),
    ],
)
def test_verse_labels(label, level):
    assert Level.from_verse_label(label) is level
    assert level.verse_label == label


def test_unknown_names_and_labels_are_refused():
    with pytest.raises(ValueError, match="VerSe label 27 is not a vertebra level"):
        Level.from_verse_label(27)
    with pytest.raises(ValueError, match="unknown vertebra level 'X1'"):
        Level.parse("X1")
    assert Level.parse(" l3 ") is Level.L3


def test_heights_in_mm_from_voxels_with_anisotropic_spacing():
    assert KEYPOINT_NAMES[0] == "upper_anterior" and KEYPOINT_NAMES[5] == "lower_posterior"
    # Voxel keypoints (z, y, x) of a box-shaped body: 10 slices tall at 2.5 mm.
    keypoints = np.array(
        [[10, 0, 5], [10, 15, 5], [10, 30, 5], [0, 0, 5], [0, 15, 5], [0, 30, 5]], dtype=float
    )
    keypoints[0, 0] = 8  # anterior upper corner 2 slices lower: wedge
    heights = heights_mm(keypoints, scale=(2.5, 0.7, 0.7))
    assert heights.tolist() == pytest.approx([20.0, 25.0, 25.0])
    assert body_center(keypoints).tolist() == pytest.approx([28 / 6, 15.0, 5.0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 6, 3\)"):
        heights_mm(np.zeros((5, 3)))


def test_fully_in_view_keeps_keypoints_out_of_the_outermost_slices_rows_and_columns():
    shape = (10, 20, 30)
    body = np.tile([[5.0, 10.0, 15.0]], (6, 1))

    def moved(axis: int, value: float) -> np.ndarray:
        points = body.copy()
        points[2, axis] = value
        return points

    m = IN_VIEW_MARGIN_VOXELS
    cases = [body]
    for axis, n in enumerate(shape):
        cases += [
            moved(axis, m),
            moved(axis, n - 1 - m),
            moved(axis, m - 0.01),
            moved(axis, n - 1 - m + 0.01),
        ]
    expected = [True] + [True, True, False, False] * 3
    np.testing.assert_array_equal(fully_in_view(np.stack(cases), shape), expected)
    assert not fully_in_view(moved(0, np.nan), shape)
    # the same rule for a 2D image with a margin of one pixel
    assert points_inside(np.array([[1.0, 1.0], [8.0, 3.0]]), (10, 5), 1.0)
    assert not points_inside(np.array([[1.0, 1.0], [8.0, 3.5]]), (10, 5), 1.0)
