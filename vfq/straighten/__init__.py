"""Straightening the spine: curve fit, twist-free frame, curved planar reformation (numpy only).

The pipeline step (DESIGN §1, step 2)::

    points, weights = column_points_from_heatmap(heatmap, heatmap_geometry)
    curve = fit_spine_curve(points, weights)              # world LPS mm, inferior→superior
    grid = default_grid(curve, ct.geometry)               # ~ n_s × 96 × 5 at 1 mm
    image = straighten_sagittal(ct, curve, grid)          # (n_s, n_v) float32 HU
    world = sagittal_to_world(curve, grid, keypoints_sv)  # back to the patient
    voxel = ct.geometry.world_to_voxel(world)

Frames: world is LPS mm ``(x, y, z)``; the curve-local frame ``(e1, e2, e3)`` is tangent
(superior), sagittal normal (posterior for a vertical spine) and ``e2 × e1`` (left), so for a
straight vertical spine the straightened axes ``(s, v, w)`` are the CT array axes ``(z, y, x)``.
See :mod:`vfq.straighten.curve` and :mod:`vfq.straighten.grid`.
"""

from __future__ import annotations

from vfq.straighten.curve import SpineCurve, frame_from_tangent
from vfq.straighten.fit import (
    SpineFit,
    column_points_from_heatmap,
    column_track,
    fit_spine_curve,
    fit_spine_curve_detailed,
)
from vfq.straighten.grid import (
    StraightenedGrid,
    default_grid,
    grid_to_world,
    sagittal_to_world,
    world_to_grid,
)
from vfq.straighten.resample import (
    AIR_HU,
    sagittal_image,
    sample_trilinear,
    straighten,
    straighten_sagittal,
)

__all__ = [
    "AIR_HU",
    "SpineCurve",
    "SpineFit",
    "StraightenedGrid",
    "column_points_from_heatmap",
    "column_track",
    "default_grid",
    "fit_spine_curve",
    "fit_spine_curve_detailed",
    "frame_from_tangent",
    "grid_to_world",
    "sagittal_image",
    "sagittal_to_world",
    "sample_trilinear",
    "straighten",
    "straighten_sagittal",
    "world_to_grid",
]
