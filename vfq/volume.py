"""A CT volume and its geometry: the voxels never travel without the affine.

Frames and units used throughout vfq:

* **voxel** — continuous indices ``(z, y, x)`` into a numpy array of shape ``(nz, ny, nx)``;
  the centre of the first voxel is ``(0, 0, 0)``.
* **world** — patient coordinates in mm, LPS, in the conventional order ``(x, y, z)``:
  x runs right→left, y anterior→posterior, z inferior→superior (DICOM / ITK convention).

The mapping is ``world = origin + direction @ (spacing_xyz * index_xyz)``: ``direction`` holds,
as columns, the world directions of the array's x, y and z axes (ITK's convention), ``origin``
is the world position of voxel ``(0, 0, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Tolerance on the orthonormality of a direction matrix.
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ImageGeometry:
    """Where the voxels of an array of ``shape`` lie in the patient.

    Attributes:
        shape: ``(nz, ny, nx)`` number of voxels.
        spacing: ``(z, y, x)`` voxel size in mm.
        origin: world position (LPS mm, ``(x, y, z)``) of the centre of voxel ``(0, 0, 0)``.
        direction: ``(3, 3)`` orthonormal matrix whose columns are the world directions of the
            array's x, y and z axes; the identity for an LPS-oriented axial scan.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        direction = np.array(self.direction, dtype=np.float64).reshape(3, 3)
        direction.setflags(write=False)
        object.__setattr__(self, "direction", direction)
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("shape, spacing and origin must have three entries")
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive and finite (mm), got {self.spacing}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=DIRECTION_TOLERANCE):
            raise ValueError(f"direction must be orthonormal, got {direction.tolist()}")

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` matrix taking homogeneous voxel ``(z, y, x, 1)`` to world ``(x, y, z, 1)``."""
        spacing_xyz = np.array(self.spacing[::-1])
        linear_xyz = self.direction * spacing_xyz  # column j scaled by spacing of array axis j
        affine = np.eye(4)
        affine[:3, :3] = linear_xyz[:, ::-1]  # columns reordered to take (z, y, x)
        affine[:3, 3] = self.origin
        return affine

    def voxel_to_world(self, voxel: np.ndarray) -> np.ndarray:
        """World LPS mm ``(..., 3)`` ``(x, y, z)`` of voxel indices ``(..., 3)`` ``(z, y, x)``."""
        a = self.affine
        return np.asarray(voxel, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]

    def world_to_voxel(self, world: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(..., 3)`` ``(z, y, x)`` of world LPS mm points ``(x, y, z)``."""
        a = self.affine
        inverse = np.linalg.inv(a[:3, :3])
        return (np.asarray(world, dtype=np.float64) - a[:3, 3]) @ inverse.T

    def world_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest world LPS mm ``(x, y, z)`` of the eight corner voxel centres."""
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(3, -1).T
        world = self.voxel_to_world(corners)
        return world.min(axis=0), world.max(axis=0)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size ``(z, y, x)`` in mm covered by the voxel centres' spacing times count."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]


@dataclass(frozen=True)
class CTVolume:
    """A CT scan in LPS orientation: int16 Hounsfield units and their geometry.

    Attributes:
        array: ``(nz, ny, nx)`` int16 HU, C-contiguous; z inferior→superior, y anterior→posterior,
            x right→left after LPS reorientation.
        geometry: where the voxels lie (spacing, origin, direction).
    """

    array: np.ndarray
    geometry: ImageGeometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a CT volume is 3D, got an array of shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(
                f"array shape {self.array.shape} does not match geometry shape {self.geometry.shape}"
            )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(z, y, x)`` in mm."""
        return self.geometry.spacing
