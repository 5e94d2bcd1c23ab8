"""The straightened grid: a regular voxel grid in curve-local coordinates.

A straightened voxel has continuous indices ``(i_s, i_v, i_w)`` into an array of shape
``(n_s, n_v, n_w)``:

* ``i_s`` along the curve, inferior→superior: arc length ``s = s0_mm + i_s · step_s_mm``;
* ``i_v`` along ``e2`` (posterior for a vertical spine): ``v = (i_v - v_c) · spacing_v_mm``;
* ``i_w`` along ``e3`` (left for a vertical spine): ``w = (i_w - w_c) · spacing_w_mm``;

with ``v_c = (n_v - 1) / 2``, ``w_c = (n_w - 1) / 2``: the grid is centred on the curve. The world
point (LPS mm) is ``p = c(s) + v · e2(s) + w · e3(s)`` (see :mod:`vfq.straighten.curve`). For a
straight vertical spine the grid axes ``(s, v, w)`` are the CT array axes ``(z, y, x)``.

The 2D detector image is the grid averaged over ``w``: pixel ``(i_s, i_v)``, row 0 at the inferior
end (display it with the origin at the bottom to see the head up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfq.errors import InputError
from vfq.straighten.curve import SpineCurve
from vfq.volume import ImageGeometry


@dataclass(frozen=True)
class StraightenedGrid:
    """Sampling of the curve-local space ``(s, v, w)``.

    Attributes:
        n_s: samples along the curve.
        n_v: samples along ``e2`` (the straightened image's width, sagittal in-plane).
        n_w: samples along ``e3`` (the slab's thickness direction).
        step_s_mm: arc-length step (mm) between rows.
        spacing_v_mm: pixel size (mm) along ``e2``.
        spacing_w_mm: sample spacing (mm) along ``e3``.
        s0_mm: arc length (mm) of row 0 on the curve.
    """

    n_s: int
    n_v: int
    n_w: int
    step_s_mm: float = 1.0
    spacing_v_mm: float = 1.0
    spacing_w_mm: float = 1.0
    s0_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_s", "n_v", "n_w"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value}")
            object.__setattr__(self, name, int(value))
        for name in ("step_s_mm", "spacing_v_mm", "spacing_w_mm"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"{name} must be positive and finite (mm), got {value}")
            object.__setattr__(self, name, value)
        if not np.isfinite(self.s0_mm):
            raise InputError(f"s0_mm must be finite, got {self.s0_mm}")
        object.__setattr__(self, "s0_mm", float(self.s0_mm))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_s, n_v, n_w)``."""
        return (self.n_s, self.n_v, self.n_w)

    @property
    def center_v(self) -> float:
        """Index ``v_c`` of the curve along ``v``, ``(n_v - 1) / 2``."""
        return (self.n_v - 1) / 2.0

    @property
    def center_w(self) -> float:
        """Index ``w_c`` of the curve along ``w``, ``(n_w - 1) / 2``."""
        return (self.n_w - 1) / 2.0

    @property
    def s_mm(self) -> np.ndarray:
        """``(n_s,)`` arc length (mm) of each row."""
        return self.s0_mm + np.arange(self.n_s) * self.step_s_mm

    @property
    def v_mm(self) -> np.ndarray:
        """``(n_v,)`` offset (mm) along ``e2`` of each column."""
        return (np.arange(self.n_v) - self.center_v) * self.spacing_v_mm

    @property
    def w_mm(self) -> np.ndarray:
        """``(n_w,)`` offset (mm) along ``e3`` of each slab sample."""
        return (np.arange(self.n_w) - self.center_w) * self.spacing_w_mm

    def index_to_local(self, index: np.ndarray) -> np.ndarray:
        """Curve-local ``(s, v, w)`` mm ``(..., 3)`` of grid indices ``(i_s, i_v, i_w)`` ``(..., 3)``."""
        i = np.asarray(index, dtype=np.float64)
        return np.stack(
            [
                self.s0_mm + i[..., 0] * self.step_s_mm,
                (i[..., 1] - self.center_v) * self.spacing_v_mm,
                (i[..., 2] - self.center_w) * self.spacing_w_mm,
            ],
            axis=-1,
        )

    def local_to_index(self, local: np.ndarray) -> np.ndarray:
        """Grid indices ``(i_s, i_v, i_w)`` ``(..., 3)`` of curve-local ``(s, v, w)`` mm ``(..., 3)``."""
        q = np.asarray(local, dtype=np.float64)
        return np.stack(
            [
                (q[..., 0] - self.s0_mm) / self.step_s_mm,
                q[..., 1] / self.spacing_v_mm + self.center_v,
                q[..., 2] / self.spacing_w_mm + self.center_w,
            ],
            axis=-1,
        )


def grid_to_world(curve: SpineCurve, grid: StraightenedGrid, index: np.ndarray) -> np.ndarray:
    """World LPS mm ``(x, y, z)`` ``(..., 3)`` of straightened-grid indices ``(i_s, i_v, i_w)``."""
    local = grid.index_to_local(index)
    return curve.to_world(local[..., 0], local[..., 1], local[..., 2])


def world_to_grid(curve: SpineCurve, grid: StraightenedGrid, points_world: np.ndarray) -> np.ndarray:
    """Straightened-grid indices ``(i_s, i_v, i_w)`` ``(..., 3)`` of world LPS mm points ``(..., 3)``.

    Uses :meth:`SpineCurve.from_world` (nearest normal plane), so it inverts :func:`grid_to_world`
    within the curve's radius of curvature.
    """
    s, v, w = curve.from_world(points_world)
    return grid.local_to_index(np.stack([s, v, w], axis=-1))


def sagittal_to_world(
    curve: SpineCurve, grid: StraightenedGrid, points_sv: np.ndarray, w_index: float | None = None
) -> np.ndarray:
    """World LPS mm ``(..., 3)`` of 2D straightened-image pixels ``(i_s, i_v)`` ``(..., 2)``.

    The 2D image is the slab averaged over ``w``; its points are placed on the slab's mid-plane
    ``w_index`` (default ``w_c``, on the curve).
    """
    p = np.asarray(points_sv, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise InputError(f"points_sv must have shape (..., 2) (i_s, i_v), got {p.shape}")
    w = grid.center_w if w_index is None else float(w_index)
    index = np.concatenate([p, np.full((*p.shape[:-1], 1), w)], axis=-1)
    return grid_to_world(curve, grid, index)


def default_grid(
    curve: SpineCurve,
    geometry: ImageGeometry | None = None,
    *,
    step_mm: float = 1.0,
    width_mm: float = 96.0,
    thickness_mm: float = 5.0,
    pixel_mm: float = 1.0,
    slab_step_mm: float = 1.0,
) -> StraightenedGrid:
    """The straightened grid covering the curve where it lies inside the scan.

    Args:
        curve: the spine curve.
        geometry: the CT's geometry; the grid spans the longest run of curve samples whose
            positions fall inside the scan (between the first and last voxel centres on every
            axis). ``None``: the whole curve.
        step_mm: arc-length step (mm) between rows.
        width_mm: in-plane extent (mm) along ``e2``; ``n_v = round(width_mm / pixel_mm)``.
        thickness_mm: slab thickness (mm) along ``e3``; ``n_w = round(thickness_mm / slab_step_mm)``
            (each sample stands for ``slab_step_mm`` of thickness).
        pixel_mm: pixel size (mm) along ``e2``.
        slab_step_mm: sample spacing (mm) along ``e3``.

    Raises:
        InputError: the curve does not enter the scan, or the requested sizes are not positive.
    """
    for name, value in (
        ("step_mm", step_mm),
        ("width_mm", width_mm),
        ("thickness_mm", thickness_mm),
        ("pixel_mm", pixel_mm),
        ("slab_step_mm", slab_step_mm),
    ):
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"{name} must be positive and finite (mm), got {value}")
    s = curve.arc_length_mm
    if geometry is None:
        s_start, s_end = float(s[0]), float(s[-1])
    else:
        voxel = geometry.world_to_voxel(curve.positions)
        upper = np.array(geometry.shape) - 1
        inside = ((voxel >= -1e-6) & (voxel <= upper + 1e-6)).all(axis=1)
        if not inside.any():
            raise InputError(
                "the spine curve does not pass through the scan: no curve sample lies inside the "
                f"volume of shape {geometry.shape}; check that curve and CT share the world frame"
            )
        padded = np.concatenate([[False], inside, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        starts, stops = edges[::2], edges[1::2]  # runs [start, stop)
        best = int(np.argmax(stops - starts))
        s_start, s_end = float(s[starts[best]]), float(s[stops[best] - 1])
    n_s = int(np.floor((s_end - s_start) / step_mm + 1e-9)) + 1
    return StraightenedGrid(
        n_s=n_s,
        n_v=max(1, round(width_mm / pixel_mm)),
        n_w=max(1, round(thickness_mm / slab_step_mm)),
        step_s_mm=step_mm,
        spacing_v_mm=pixel_mm,
        spacing_w_mm=slab_step_mm,
        s0_mm=s_start,
    )
