from __future__ import annotations

import numpy as np
import pytest

from vfq.keypoints import KEYPOINT_NAMES, body_center, heights_mm
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
