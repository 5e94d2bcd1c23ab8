"""Painting analytic shapes onto a voxel grid, each only inside its bounding box.

A :class:`Canvas` holds a float32 HU volume on an axis-aligned grid (world LPS mm, identity
direction) and composites shapes "over" what is already there, with an anti-aliased coverage
``alpha = clip(0.5 - d / w, 0, 1)`` from an (approximate) signed distance ``d`` in mm (negative
inside) and ``w`` the in-plane voxel size: edges get partial-volume values, as in a real scan.
Work is restricted to the shape's bounding box, so cost scales with the shape, not the volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Signed distance (mm, negative inside) and HU value of a shape at world points given as
#: broadcastable coordinate arrays X (1, 1, nx), Y (1, ny, 1), Z (nz, 1, 1).
ShapeFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, "np.ndarray | float"]]


@dataclass
class Canvas:
    """A float32 HU volume ``(nz, ny, nx)`` whose voxel centres lie at ``x[i]``, ``y[j]``, ``z[k]``.

    Attributes:
        volume: the HU values being painted.
        x, y, z: world coordinates (LPS mm) of the voxel centres along each array axis, ascending.
        labels: optional int16 label map painted alongside (0 = background).
    """

    volume: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    labels: np.ndarray | None = None

    @classmethod
    def empty(
        cls, x: np.ndarray, y: np.ndarray, z: np.ndarray, fill: float | None = None, labels: bool = False
    ) -> Canvas:
        """A canvas on the given voxel centres, filled with ``fill`` HU (left uninitialised if None)."""
        shape = (z.size, y.size, x.size)
        volume = np.empty(shape, dtype=np.float32) if fill is None else np.full(shape, fill, dtype=np.float32)
        label_map = np.zeros(volume.shape, dtype=np.int16) if labels else None
        return cls(volume, x.astype(np.float32), y.astype(np.float32), z.astype(np.float32), label_map)

    @property
    def pixel(self) -> float:
        """In-plane voxel size (mm): the width of the anti-aliased edge."""
        return float(abs(self.x[1] - self.x[0])) if self.x.size > 1 else 1.0

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices ``(z, y, x)`` of the voxels inside the world box ``[lo, hi]`` (x, y, z)."""
        slices = []
        for axis, centres in zip((0, 1, 2), (self.x, self.y, self.z)):
            start = int(np.searchsorted(centres, lo[axis], side="left"))
            stop = int(np.searchsorted(centres, hi[axis], side="right"))
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        sx, sy, sz = slices
        return sz, sy, sx

    def paint(
        self,
        lo: np.ndarray,
        hi: np.ndarray,
        shape: ShapeFunction,
        label: int = 0,
    ) -> None:
        """Composite ``shape`` over the volume inside the world box ``[lo, hi]`` (x, y, z) mm."""
        win = self.window(np.asarray(lo), np.asarray(hi))
        if win is None:
            return
        sz, sy, sx = win
        X = self.x[sx][None, None, :]
        Y = self.y[sy][None, :, None]
        Z = self.z[sz][:, None, None]
        distance, value = shape(X, Y, Z)
        alpha = np.clip(0.5 - distance * np.float32(1.0 / self.pixel), 0.0, 1.0).astype(
            np.float32, copy=False
        )
        block = self.volume[sz, sy, sx]
        if np.isscalar(value):
            value = np.float32(value)
        block += alpha * (value - block)
        if label and self.labels is not None:
            self.labels[sz, sy, sx][alpha > 0.5] = label


def capsule(
    a: np.ndarray,
    b: np.ndarray,
    radius: float,
    value: float,
    shell: float = 0.0,
    shell_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray, ShapeFunction]:
    """A capsule (segment ``a``→``b`` world mm, ``radius`` mm) with an optional dense shell.

    Returns the bounding box ``(lo, hi)`` and the shape function for :meth:`Canvas.paint`.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    ab = b - a
    inv_len2 = np.float32(1.0 / max(float(ab @ ab), 1e-6))

    def shape(X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
        px, py, pz = X - a[0], Y - a[1], Z - a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) * inv_len2, 0.0, 1.0)
        d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2) - np.float32(
            radius
        )
        return d, _shelled(d, value, shell, shell_value)

    pad = radius + 2.0
    return np.minimum(a, b) - pad, np.maximum(a, b) + pad, shape


def ellipsoid(
    center: np.ndarray,
    semi_axes: np.ndarray,
    value: float,
    rotation: np.ndarray | None = None,
    shell: float = 0.0,
    shell_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray, ShapeFunction]:
    """An ellipsoid (world mm), axes along the columns of ``rotation`` (identity by default).

    The signed distance is the first-order approximation ``(q - 1) / |grad q|`` with ``q`` the
    normalised squared radius, which is exact on the surface and good to a voxel near it.
    """
    c = np.asarray(center, dtype=np.float32)
    r = np.asarray(semi_axes, dtype=np.float32)
    rot = np.eye(3, dtype=np.float32) if rotation is None else np.asarray(rotation, dtype=np.float32)

    def shape(X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
        px, py, pz = X - c[0], Y - c[1], Z - c[2]
        if rotation is None:  # separable: the per-axis terms stay 1D until summed
            locals_ = [px / r[0], py / r[1], pz / r[2]]
        else:
            locals_ = [(px * rot[0, k] + py * rot[1, k] + pz * rot[2, k]) / r[k] for k in range(3)]
        q = locals_[0] ** 2 + locals_[1] ** 2 + locals_[2] ** 2
        grad = np.sqrt((locals_[0] / r[0]) ** 2 + (locals_[1] / r[1]) ** 2 + (locals_[2] / r[2]) ** 2)
        d = (q - 1) / (2 * grad + np.float32(1e-6))
        return d, _shelled(d, value, shell, shell_value)

    extent = np.abs(rot) @ r + 2.0
    return c - extent, c + extent, shape


def _shelled(d: np.ndarray, value: float, shell: float, shell_value: float | None) -> np.ndarray | float:
    """HU of a solid whose outer ``shell`` mm have ``shell_value`` (e.g. cortical bone)."""
    if shell <= 0 or shell_value is None:
        return value
    weight = np.clip(d * np.float32(1.0 / shell) + 1.0, 0.0, 1.0)
    return np.float32(value) + np.float32(shell_value - value) * weight
