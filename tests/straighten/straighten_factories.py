"""Synthetic spine curves and CTs with known geometry for the straightening tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfq.straighten import SpineCurve
from vfq.volume import CTVolume, ImageGeometry


@dataclass(frozen=True)
class SineSpine:
    """A column ``x(z), y(z)`` (world LPS mm) made of sine bends over ``z ∈ [z0, z0 + length]``.

    ``x`` carries the scoliosis (coronal bends), ``y`` the kyphosis/lordosis (sagittal bends);
    ``k`` half-waves over the length, so ``k = 1`` is one C-shaped bend and ``k = 2`` an S.
    """

    length: float = 400.0
    z0: float = -200.0
    ax: float = 30.0
    kx: float = 2.0
    phx: float = 0.0
    ay: float = 20.0
    ky: float = 1.0
    phy: float = 0.0
    x0: float = 0.0
    y0: float = 0.0

    def xy(self, z: np.ndarray) -> np.ndarray:
        """``(N, 2)`` world x, y (mm) of the column at world z (mm)."""
        t = (np.asarray(z, dtype=np.float64) - self.z0) / self.length
        x = self.x0 + self.ax * np.sin(np.pi * self.kx * t + self.phx)
        y = self.y0 + self.ay * np.sin(np.pi * self.ky * t + self.phy)
        return np.stack([x, y], axis=-1)

    def polyline(self, spacing_mm: float = 0.25) -> np.ndarray:
        """Dense ``(M, 3)`` world points along the column, inferior→superior."""
        z = np.arange(self.z0, self.z0 + self.length + 1e-9, spacing_mm)
        return np.column_stack([self.xy(z), z])

    def curve(self, step_mm: float = 1.0) -> SpineCurve:
        """The column as an arc-length sampled :class:`SpineCurve`."""
        return SpineCurve.from_polyline(self.polyline(), step_mm)

    def in_plane_error(self, curve: SpineCurve) -> np.ndarray:
        """``(K,)`` in-plane distance (mm) of a curve's samples from this column at the same z."""
        p = curve.positions
        return np.linalg.norm(p[:, :2] - self.xy(p[:, 2]), axis=1)


def min_radius_of_curvature(curve: SpineCurve) -> float:
    """Smallest radius of curvature (mm) along a curve, from its sample tangents."""
    kappa = np.linalg.norm(np.gradient(curve.tangents, curve.step_mm, axis=0), axis=1)
    return float(1.0 / max(kappa.max(), 1e-12))


def random_ct(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    seed: int = 0,
) -> CTVolume:
    """An int16 CT of uniform random HU in [-1000, 2000), axis-aligned (identity direction)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 2000, size=shape, dtype=np.int16)
    return CTVolume(array=array, geometry=ImageGeometry(shape=shape, spacing=spacing, origin=origin))


def tube_ct(
    spine: SineSpine,
    shape: tuple[int, int, int],
    origin: tuple[float, float, float],
    sigma_mm: float = 2.0,
    peak_hu: float = 1000.0,
) -> CTVolume:
    """1 mm isotropic CT: 0 HU with a bright Gaussian tube (``peak_hu``) along the column.

    The profile is Gaussian in the in-slice distance to the column at the slice's z, so it is
    symmetric about the column in every plane through it.
    """
    geometry = ImageGeometry(shape=shape, spacing=(1.0, 1.0, 1.0), origin=origin)
    nz, ny, nx = shape
    z = origin[2] + np.arange(nz)
    y = origin[1] + np.arange(ny)
    x = origin[0] + np.arange(nx)
    centre = spine.xy(z)
    d2 = (x[None, None, :] - centre[:, 0, None, None]) ** 2 + (
        y[None, :, None] - centre[:, 1, None, None]
    ) ** 2
    array = np.rint(peak_hu * np.exp(-d2 / (2.0 * sigma_mm**2))).astype(np.int16)
    return CTVolume(array=array, geometry=geometry)
