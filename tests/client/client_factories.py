"""Factories for the client tests: geometries, the ensemble's output arrays, free ports and MetaImage
headers."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from vfq.tensors import (
    DETECTION_SCORE_OUTPUT,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    NOT_ASSESSABLE_OUTPUT,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
)
from vfq.volume import ImageGeometry

#: A reason the server gives for a study it cannot grade.
NO_SPINE = "no spine found: the localizer saw no vertebral column in this scan"


def oblique_geometry(shape: tuple[int, int, int] = (60, 80, 70)) -> ImageGeometry:
    """A geometry with anisotropic spacing, an origin far from 0 and a rotated direction."""
    angle = np.deg2rad(12.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])
    return ImageGeometry(
        shape=shape, spacing=(2.5, 0.7, 0.8), origin=(-172.25, 31.5, 1204.0), direction=direction
    )


def pipeline_outputs(
    levels: tuple[str, ...] = ("T12", "L1", ""),
    grades: tuple[int, ...] = (0, 2, 1),
    image_shape: tuple[int, int] = (120, 96),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The ensemble's outputs for ``len(levels)`` vertebrae, dtypes as tritonclient returns them
    (``BYTES`` as object arrays of ``bytes``)."""
    rng = np.random.default_rng(seed)
    n = len(levels)
    keypoints = rng.uniform(5.0, 50.0, size=(n, 6, 3)).astype(np.float32)
    return {
        KEYPOINTS_OUTPUT: keypoints,
        HEIGHTS_OUTPUT: rng.uniform(15.0, 30.0, size=(n, 3)).astype(np.float32),
        FRACTURE_SCORE_OUTPUT: np.array([0.05, 0.31, 0.22][:n] + [0.1] * (n - 3), dtype=np.float32),
        GENANT_GRADE_OUTPUT: np.array(grades, dtype=np.int32),
        DETECTION_SCORE_OUTPUT: rng.uniform(0.5, 1.0, size=n).astype(np.float32),
        LEVEL_OUTPUT: np.array([level.encode() for level in levels], dtype=object),
        SAGITTAL_IMAGE_OUTPUT: rng.uniform(-1000.0, 1500.0, size=image_shape).astype(np.float32),
        SAGITTAL_KEYPOINTS_OUTPUT: rng.uniform(10.0, 90.0, size=(n, 6, 2)).astype(np.float32),
        NOT_ASSESSABLE_OUTPUT: np.array([b""], dtype=object),
    }


def not_assessable_outputs(reason: str = NO_SPINE) -> dict[str, np.ndarray]:
    """The ensemble's outputs for a study it cannot grade: no vertebra, an empty image, a reason."""
    outputs = pipeline_outputs(levels=(), grades=(), image_shape=(0, 0))
    outputs[NOT_ASSESSABLE_OUTPUT] = np.array([reason.encode()], dtype=object)
    return outputs


def free_port() -> int:
    """A loopback TCP port nobody listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_mha_header(
    path: Path, size_xyz: tuple[int, int, int], direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)
) -> Path:
    """A MetaImage header announcing a volume of ``size_xyz`` int16 voxels whose pixel data file does
    not exist: reading its pixels would fail, reading its header works."""
    path.write_text(
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        f"TransformMatrix = {' '.join(str(v) for v in direction)}\n"
        "Offset = 0 0 0\n"
        "ElementSpacing = 0.5 0.5 0.5\n"
        f"DimSize = {' '.join(str(n) for n in size_xyz)}\n"
        "ElementType = MET_SHORT\n"
        f"ElementDataFile = {path.stem}.raw\n"
    )
    return path
