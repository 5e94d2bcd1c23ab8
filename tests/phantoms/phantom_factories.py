"""Phantoms for tests: fixed fractures and fine grids around chosen vertebrae."""

from __future__ import annotations

import numpy as np

from vfq.genant import FractureType
from vfq.levels import Level
from vfq.phantoms import Fracture
from vfq.volume import ImageGeometry

#: Deformities the image-level tests measure: a crush between a wedge and a biconcave fracture.
FRACTURES = (
    Fracture(Level.T11, FractureType.WEDGE, 0.32),
    Fracture(Level.T12, FractureType.CRUSH, 0.45),
    Fracture(Level.L1, FractureType.BICONCAVE, 0.22),
)


def spine_box_geometry(
    anatomy, levels: tuple[Level, ...], pixel: float, margin: float = 6.0
) -> ImageGeometry:
    """A fine axis-aligned grid around the bodies of ``levels`` (and no more)."""
    points = np.concatenate([anatomy.spine.vertebra(lv).keypoints for lv in levels])
    lo = points.min(axis=0) - np.array([30.0, 25.0, margin])
    hi = points.max(axis=0) + np.array([30.0, 25.0, margin])
    shape = np.ceil((hi - lo) / pixel).astype(int)[::-1] + 1
    return ImageGeometry(shape=tuple(shape), spacing=(pixel,) * 3, origin=tuple(lo))
