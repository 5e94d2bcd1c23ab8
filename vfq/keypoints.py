"""The six keypoints of a vertebral body and the heights measured between them.

One vertebral body carries six keypoints, always in this order (DESIGN §2)::

    0 upper-anterior   1 upper-middle   2 upper-posterior
    3 lower-anterior   4 lower-middle   5 lower-posterior

"upper" is the superior endplate. The anterior, middle and posterior heights ``ha, hm, hp`` are
the distances between keypoints (0, 3), (1, 4) and (2, 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "upper_anterior",
    "upper_middle",
    "upper_posterior",
    "lower_anterior",
    "lower_middle",
    "lower_posterior",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

#: Keypoint index pairs (upper, lower) whose distance is the anterior, middle and posterior height.
HEIGHT_PAIRS: tuple[tuple[int, int], ...] = ((0, 3), (1, 4), (2, 5))
HEIGHT_NAMES: tuple[str, ...] = ("anterior", "middle", "posterior")

#: How far (voxels) every keypoint of a body must lie from the centres of the scan's outermost
#: slices, rows and columns for the body to be measurable, i.e. *fully in view*: half a voxel keeps
#: each keypoint out of the outermost slice (row, column). An endplate is an edge seen through the
#: partial volume of the slice it crosses; in the outermost slice nothing is sampled beyond it, so
#: the edge cannot be placed (the body may go on outside the scan) and a height measured to it is
#: not a height. The product applies it to what it reports (:func:`vfq.detection.quantify`), and
#: ground truth is marked by it (the phantoms, the neuro-ml reader; the VerSe reader's "label
#: touches a face of its map" is the same rule for a mask).
IN_VIEW_MARGIN_VOXELS = 0.5


def heights_mm(keypoints: np.ndarray, scale: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Anterior, middle and posterior heights (mm) of vertebral bodies.

    Args:
        keypoints: ``(..., 6, 3)`` points in any Cartesian frame whose axes are scaled by ``scale``
            to millimetres: world mm with the default scale, or voxel indices ``(z, y, x)`` of an
            axis-aligned grid with ``scale`` = its spacing ``(z, y, x)`` in mm.
        scale: per-axis factor from the points' unit to mm.

    Returns:
        ``(..., 3)`` heights ``(ha, hm, hp)`` in mm.
    """
    points = np.asarray(keypoints, dtype=np.float64) * np.asarray(scale, dtype=np.float64)
    if points.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape (..., 6, 3), got {points.shape}")
    upper = points[..., [u for u, _ in HEIGHT_PAIRS], :]
    lower = points[..., [lo for _, lo in HEIGHT_PAIRS], :]
    return np.linalg.norm(upper - lower, axis=-1)


def body_center(keypoints: np.ndarray) -> np.ndarray:
    """The vertebral-body centre used by every metric: the mean of the six keypoints, ``(..., 3)``."""
    points = np.asarray(keypoints, dtype=np.float64)
    if points.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape (..., 6, 3), got {points.shape}")
    return points.mean(axis=-2)


def points_inside(points: np.ndarray, shape: Sequence[int], margin: float) -> np.ndarray:
    """Which groups of points lie wholly at least ``margin`` voxels inside the centres of the
    outermost voxels of a grid of ``shape``.

    Args:
        points: ``(..., K, D)`` voxel indices (``D = len(shape)``), e.g. the six keypoints of each
            body in a CT ``(z, y, x)`` or in a straightened image ``(s, v)``.
        shape: the grid's size per axis.
        margin: in voxels; non-finite points are never inside.

    Returns:
        ``(...)`` bool.
    """
    p = np.asarray(points, dtype=np.float64)
    upper = np.asarray(shape, dtype=np.float64) - 1 - margin
    ok = np.isfinite(p).all(axis=-1) & (p >= margin).all(axis=-1) & (p <= upper).all(axis=-1)
    return ok.all(axis=-1)


def fully_in_view(points_voxel: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(...)`` bool: the bodies whose points ``(..., K, 3)`` (CT voxels ``(z, y, x)``) all lie
    :data:`IN_VIEW_MARGIN_VOXELS` inside a CT of ``shape`` (see there why)."""
    return points_inside(points_voxel, shape, IN_VIEW_MARGIN_VOXELS)
