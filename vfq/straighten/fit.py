"""Fitting a smooth spine curve through column points (robust penalised least squares).

The spine is assumed to run inferior→superior along world z (true for any CT reoriented to LPS,
DESIGN §2): the curve is parameterised by world z as ``x(z), y(z)``. A column that folds back on
itself in z (or runs left-right) cannot be represented and is not expected in CT.

Method: a Whittaker / P-spline smoother on a regular z grid. The unknowns are ``x`` and ``y`` at the
grid nodes; a data point at ``z_i`` sees the linear interpolation of its two neighbouring nodes.
The fit minimises ``Σ w_i r_i² + λ Σ (Δ² f)²``: the second-difference penalty bridges gaps (like a
cubic spline) and continues the curve linearly beyond the data. ``λ`` is derived from a
length in mm, ``smoothing_mm``: the wavelength at which the smoother passes half the amplitude
(where the data have their average density), independent of the weights' scale and the sampling.
Outliers are handled by iteratively reweighted least squares with Tukey's bisquare on the
in-plane residual distance, scaled by its (weighted) median. The first weights come from robust
local lines (Siegel's repeated median over a ``smoothing_mm`` window), not from a least-squares
fit, so that a few wild points near an end of the column cannot drag the start away from the good
ones. A run of outliers longer than about half the window, or one at the very end of the data,
can still win (it is then indistinguishable from a bend); :func:`column_track` drops such runs
beforehand where a gap or a jump sets them apart from the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vfq.errors import InputError
from vfq.straighten.curve import SpineCurve
from vfq.volume import ImageGeometry

#: Median of the Rayleigh distribution in units of its per-axis sigma, ``sqrt(2 ln 2)``.
_RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))
#: Upper bound on the number of grid nodes (the dense solve grows as its cube).
MAX_NODES = 1000
#: Densification factor of the fitted nodes before arc-length resampling.
_DENSIFY = 8


@dataclass(frozen=True, eq=False)
class SpineFit:
    """A fitted spine curve and the diagnostics of the robust fit.

    Attributes:
        curve: the fitted curve (world LPS mm, arc-length sampled).
        z_nodes_mm: ``(M,)`` world z (mm) of the smoother's grid nodes.
        xy_nodes_mm: ``(M, 2)`` fitted world ``x, y`` (mm) at the nodes.
        robust_weights: ``(N,)`` final Tukey weights in ``[0, 1]`` of the input points (0 = outlier;
            also 0 for points with zero input weight or outside ``z_range_mm``).
        residuals_mm: ``(N,)`` in-plane (x, y) distance (mm) of each point from the curve at its z.
        scale_mm: robust residual scale (per-axis sigma, mm) of the last iteration; NaN if the
            fit was not robust.
        n_iterations: reweighting iterations run.
    """

    curve: SpineCurve
    z_nodes_mm: np.ndarray
    xy_nodes_mm: np.ndarray
    robust_weights: np.ndarray
    residuals_mm: np.ndarray
    scale_mm: float
    n_iterations: int

    @property
    def n_outliers(self) -> int:
        """Points without weight in the final fit: outliers, and points given zero weight or lying
        outside ``z_range_mm``."""
        return int(np.count_nonzero(self.robust_weights == 0))


def fit_spine_curve(
    points_world: np.ndarray, weights: np.ndarray | None = None, **options: Any
) -> SpineCurve:
    """Fit a smooth spine curve through column points.

    The curve of :func:`fit_spine_curve_detailed`, which documents the arguments and ``options``.
    """
    return fit_spine_curve_detailed(points_world, weights, **options).curve


def fit_spine_curve_detailed(
    points_world: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    step_mm: float = 1.0,
    smoothing_mm: float = 50.0,
    grid_step_mm: float = 2.0,
    min_extent_mm: float = 40.0,
    z_range_mm: tuple[float, float] | None = None,
    robust: bool = True,
    tukey_c: float = 4.685,
    min_scale_mm: float = 0.5,
    max_iterations: int = 20,
) -> SpineFit:
    """Fit a smooth curve ``x(z), y(z)`` through column points, robust to outliers and gaps.

    Args:
        points_world: ``(N, 3)`` world LPS mm ``(x, y, z)`` of column points, e.g. per-slice
            weighted centroids of a localizer heatmap or vertebral-body centres. Any order.
        weights: ``(N,)`` non-negative confidence of each point (e.g. heatmap mass); ``None`` = 1.
            Only relative values matter.
        step_mm: arc-length step (mm) of the returned curve's samples.
        smoothing_mm: wavelength (mm) that the smoother passes at half amplitude; shorter wiggles
            are removed, longer bends kept (at 50 mm, a 150 mm wavelength keeps 99 %).
        grid_step_mm: spacing (mm) of the smoother's z grid (raised if it would exceed
            :data:`MAX_NODES` nodes).
        min_extent_mm: the points (with positive weight) must span at least this much in z.
        z_range_mm: world z (mm) interval the curve spans; default the points' z range. Beyond the
            points the curve continues linearly. Points outside the interval are ignored.
        robust: reweight with Tukey's bisquare to ignore outliers.
        tukey_c: bisquare cut-off in units of the robust scale (4.685: 95 % Gaussian efficiency).
        min_scale_mm: floor on the robust scale (mm) so that near-perfect data do not reject
            points for sub-millimetre deviations.
        max_iterations: cap on reweighting iterations.

    Returns:
        The fit and its diagnostics; ``.curve`` runs inferior→superior.

    Raises:
        InputError: malformed input (shapes, NaN, negative weights), fewer than 4 usable points,
            or a z extent shorter than ``min_extent_mm``.
    """
    points = np.asarray(points_world, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"points_world must have shape (N, 3) (world x, y, z mm), got {points.shape}")
    n = points.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {w.shape}")
    if not (np.isfinite(points).all() and np.isfinite(w).all()):
        raise InputError("points_world and weights must be finite")
    if (w < 0).any():
        raise InputError("weights must be non-negative")
    for name, value in (("smoothing_mm", smoothing_mm), ("grid_step_mm", grid_step_mm), ("step_mm", step_mm)):
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"{name} must be positive and finite, got {value}")

    z = points[:, 2]
    if z_range_mm is not None:
        lo, hi = float(z_range_mm[0]), float(z_range_mm[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise InputError(f"z_range_mm must be an increasing pair of finite values, got {z_range_mm}")
        w = np.where((z >= lo) & (z <= hi), w, 0.0)
    used = w > 0
    if np.count_nonzero(used) < 4:
        raise InputError(
            f"fitting a spine curve needs at least 4 points with positive weight, got {used.sum()}"
        )
    z_lo, z_hi = float(z[used].min()), float(z[used].max())
    if z_hi - z_lo < min_extent_mm:
        raise InputError(
            f"the column points span {z_hi - z_lo:.1f} mm in world z, less than the {min_extent_mm} mm "
            "needed to fit a spine curve (the spine is assumed to run along world z, inferior→superior; "
            "check that the scan covers the spine and is oriented LPS)"
        )
    if z_range_mm is not None:
        z_lo, z_hi = lo, hi

    n_nodes = min(MAX_NODES, int(np.ceil((z_hi - z_lo) / grid_step_mm)) + 1)
    n_nodes = max(n_nodes, 4)
    z_nodes = np.linspace(z_lo, z_hi, n_nodes)
    h = z_nodes[1] - z_nodes[0]

    idx = np.flatnonzero(used)
    zi, xy, wi = z[idx], points[idx, :2], w[idx]
    u = (zi - z_lo) / h
    node = np.clip(np.floor(u), 0, n_nodes - 2).astype(np.intp)
    t = u - node

    density = wi.sum() / (z_hi - z_lo)  # weight per mm of z
    lam = density * (smoothing_mm / (2.0 * np.pi)) ** 4 / h**3
    penalty = lam * _second_difference_gram(n_nodes)

    robust_w = np.ones_like(wi)
    scale = float("nan")
    iterations = 0
    if robust:
        # start from robust local lines (window = smoothing_mm): a least-squares start would let
        # outliers near the ends, where the curve is free, drag good points out of the bisquare
        start = _running_line(zi, xy, smoothing_mm / 2.0)
        robust_w, scale = _bisquare(np.linalg.norm(xy - start, axis=1), wi, tukey_c, min_scale_mm)
    nodes_xy = _solve(penalty, node, t, wi * robust_w, xy)
    if robust:
        while iterations < max_iterations:
            iterations += 1
            residual = np.linalg.norm(xy - _evaluate(nodes_xy, node, t), axis=1)
            new_w, new_scale = _bisquare(residual, wi, tukey_c, min_scale_mm)
            if np.count_nonzero(new_w) < 4 or np.ptp(zi[new_w > 0]) < min_extent_mm / 2:
                break
            robust_w, scale = new_w, new_scale
            new_nodes = _solve(penalty, node, t, wi * robust_w, xy)
            change = float(np.abs(new_nodes - nodes_xy).max())
            nodes_xy = new_nodes
            if change < 1e-3:
                break

    residual = np.linalg.norm(xy - _evaluate(nodes_xy, node, t), axis=1)
    all_residuals = np.full(n, np.nan)
    all_residuals[idx] = residual
    all_residuals[~used] = np.linalg.norm(
        points[~used, :2] - _interp_nodes(z_nodes, nodes_xy, z[~used]), axis=1
    )
    all_weights = np.zeros(n)
    all_weights[idx] = robust_w

    dense_z, dense_xy = _hermite_densify(z_nodes, nodes_xy, _DENSIFY)
    polyline = np.column_stack([dense_xy, dense_z])
    curve = SpineCurve.from_polyline(polyline, step_mm=step_mm)
    return SpineFit(
        curve=curve,
        z_nodes_mm=z_nodes,
        xy_nodes_mm=nodes_xy,
        robust_weights=all_weights,
        residuals_mm=all_residuals,
        scale_mm=scale,
        n_iterations=iterations,
    )


def column_points_from_heatmap(
    heatmap: np.ndarray,
    geometry: ImageGeometry,
    *,
    threshold: float = 0.3,
    radius_mm: float | None = 25.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice weighted centroids of a spine-localizer heatmap, as input to :func:`fit_spine_curve`.

    For each slice ``k`` of array axis 0 (axial for an LPS volume), the centroid of
    ``max(heatmap - threshold, 0)`` within ``radius_mm`` (in-plane) of the slice's maximum; the
    radius keeps a second bright structure (a contrast-filled vessel) from dragging the centroid
    between the two. Slices whose maximum does not exceed ``threshold`` give no point.

    Args:
        heatmap: ``(nz, ny, nx)`` localizer output, array axes ``(z, y, x)``, values ~[0, 1].
        geometry: where the heatmap's voxels lie.
        threshold: heatmap level below which voxels do not count.
        radius_mm: in-plane radius (mm) around the slice maximum; ``None`` = whole slice.

    Returns:
        ``points_world`` ``(N, 3)`` world LPS mm and ``weights`` ``(N,)`` (the slices' mass above
        the threshold, heatmap units × voxels).
    """
    hm = np.asarray(heatmap)
    if hm.shape != geometry.shape:
        raise InputError(f"heatmap shape {hm.shape} does not match its geometry {geometry.shape}")
    _, sy, sx = geometry.spacing
    ny, nx = hm.shape[1:]
    yy = np.arange(ny)[:, None]
    xx = np.arange(nx)[None, :]
    voxels, masses = [], []
    for k in range(hm.shape[0]):
        plane = np.maximum(hm[k].astype(np.float64) - threshold, 0.0)
        if not plane.any():
            continue
        if radius_mm is not None:
            py, px = np.unravel_index(int(np.argmax(plane)), plane.shape)
            near = ((yy - py) * sy) ** 2 + ((xx - px) * sx) ** 2 <= radius_mm**2
            plane = np.where(near, plane, 0.0)
        mass = plane.sum()
        voxels.append((k, (plane * yy).sum() / mass, (plane * xx).sum() / mass))
        masses.append(mass)
    if not voxels:
        return np.empty((0, 3)), np.empty(0)
    return geometry.voxel_to_world(np.array(voxels)), np.array(masses)


# ---------------------------------------------------------------------- numerics


def _second_difference_gram(m: int) -> np.ndarray:
    """``DᵀD`` (dense ``(m, m)``) of the second-difference operator ``D`` ``(m - 2, m)``."""
    gram = np.zeros((m, m))
    coef = np.array([1.0, -2.0, 1.0])
    rows = np.arange(m - 2)
    for a in range(3):
        for b in range(3):
            np.add.at(gram, (rows + a, rows + b), coef[a] * coef[b])
    return gram


def _solve(penalty: np.ndarray, node: np.ndarray, t: np.ndarray, w: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Node values ``(M, 2)`` minimising ``Σ w (xy - B f)² + fᵀ penalty f`` (B = linear interpolation)."""
    m = penalty.shape[0]
    lhs = penalty.copy()
    w0, w1 = w * (1.0 - t), w * t
    np.add.at(lhs, (node, node), w0 * (1.0 - t))
    np.add.at(lhs, (node + 1, node + 1), w1 * t)
    np.add.at(lhs, (node, node + 1), w0 * t)
    np.add.at(lhs, (node + 1, node), w0 * t)
    rhs = np.zeros((m, 2))
    np.add.at(rhs, node, w0[:, None] * xy)
    np.add.at(rhs, node + 1, w1[:, None] * xy)
    return np.linalg.solve(lhs, rhs)


def _evaluate(nodes_xy: np.ndarray, node: np.ndarray, t: np.ndarray) -> np.ndarray:
    return nodes_xy[node] * (1.0 - t)[:, None] + nodes_xy[node + 1] * t[:, None]


def _interp_nodes(z_nodes: np.ndarray, nodes_xy: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(z, z_nodes, nodes_xy[:, j]) for j in range(2)], axis=-1)


def _bisquare(
    residual: np.ndarray, weights: np.ndarray, c: float, min_scale: float
) -> tuple[np.ndarray, float]:
    """Tukey bisquare weights of in-plane residual distances (mm), and the robust scale (mm)."""
    scale = max(_weighted_median(residual, weights) / _RAYLEIGH_MEDIAN, min_scale)
    r = residual / (c * scale)
    return np.where(r < 1.0, (1.0 - r**2) ** 2, 0.0), scale


def _running_line(z: np.ndarray, xy: np.ndarray, half_window: float) -> np.ndarray:
    """``(N, 2)`` robust local-line estimate of ``xy`` at each point's ``z``.

    For each point, Siegel's repeated-median line through the points within ``half_window`` mm in
    z, evaluated at that point: it resists up to half of the window being outliers and, unlike a
    running median, has no bias where the column is sloped (at the ends in particular).
    """
    order = np.argsort(z, kind="stable")
    zs, xys = z[order], xy[order]
    lo = np.searchsorted(zs, zs - half_window, side="left")
    hi = np.searchsorted(zs, zs + half_window, side="right")
    out = np.empty_like(xys)
    for i in range(zs.size):
        zw, vw = zs[lo[i] : hi[i]], xys[lo[i] : hi[i]]
        dz = zw[:, None] - zw[None, :]
        distinct = dz != 0
        rows = distinct.any(axis=1)
        if np.count_nonzero(rows) < 2:
            out[i] = _median_axis0(vw)
            continue
        safe_dz = np.where(distinct, dz, 1.0)[rows]
        slopes = (vw[:, None, :] - vw[None, :, :])[rows] / safe_dz[..., None]
        slopes = np.where(distinct[rows][..., None], slopes, np.nan)
        slope = _median_axis0(_nanmedian_axis1(slopes))
        out[i] = _median_axis0(vw - slope * (zw - zs[i])[:, None])
    result = np.empty_like(out)
    result[order] = out
    return result


def _median_axis0(a: np.ndarray) -> np.ndarray:
    """Median over axis 0 of a NaN-free array (``np.median`` without its per-call overhead)."""
    ordered = np.sort(a, axis=0)
    n = ordered.shape[0]
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def _nanmedian_axis1(a: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN, for rows that hold at least one number (``np.nanmedian``
    without its per-call overhead)."""
    ordered = np.sort(a, axis=1)  # NaN last
    count = np.count_nonzero(~np.isnan(a), axis=1, keepdims=True)
    low = np.take_along_axis(ordered, (count - 1) // 2, axis=1)
    high = np.take_along_axis(ordered, count // 2, axis=1)
    return 0.5 * (low + high)[:, 0]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _hermite_densify(z: np.ndarray, f: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Hermite (Catmull-Rom) interpolation of node values ``f`` ``(M, d)`` on a uniform grid ``z``."""
    h = z[1] - z[0]
    slope = np.gradient(f, h, axis=0)
    t = np.arange(factor) / factor
    h00 = 2 * t**3 - 3 * t**2 + 1
    h10 = t**3 - 2 * t**2 + t
    h01 = -2 * t**3 + 3 * t**2
    h11 = t**3 - t**2
    f0, f1 = f[:-1, None, :], f[1:, None, :]
    m0, m1 = slope[:-1, None, :] * h, slope[1:, None, :] * h
    dense = (
        h00[None, :, None] * f0 + h10[None, :, None] * m0 + h01[None, :, None] * f1 + h11[None, :, None] * m1
    )
    dense = np.concatenate([dense.reshape(-1, f.shape[1]), f[-1:]], axis=0)
    dense_z = np.concatenate([(z[:-1, None] + t[None, :] * h).ravel(), z[-1:]])
    return dense_z, dense


def column_track(
    points_world: np.ndarray,
    weights: np.ndarray,
    *,
    max_gap_mm: float = 12.0,
    max_jump_mm: float = 15.0,
    tolerance_mm: float = 20.0,
    tolerance_per_gap_mm: float = 0.5,
    end_mm: float = 40.0,
) -> np.ndarray:
    """Which column points lie on one track with the column's main run (a boolean mask).

    The points, in z order, are cut into runs where z jumps by more than ``max_gap_mm`` or the
    in-plane position by more than ``max_jump_mm`` between neighbours. The run with the largest
    weight is the column; from it, outwards in both directions, a run is kept when its nearest
    point lies within ``tolerance_mm + tolerance_per_gap_mm * gap`` (in-plane, mm) of the kept
    track's end continued along a straight line (fitted to its last ``end_mm`` of z). A run off
    that line (a femoral head or the pubic symphysis below the sacrum lighting up the heatmap) is
    dropped before the fit, which could otherwise bend the curve over to it across the gap (see
    the module docstring); pieces of the column on both sides of a gap are kept.

    Args:
        points_world: ``(N, 3)`` world LPS mm, e.g. from :func:`column_points_from_heatmap`.
        weights: ``(N,)`` their non-negative weights.

    Returns:
        ``(N,)`` bool, True for the points on the track (all of them when there is one run).
    """
    points = np.asarray(points_world, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = np.zeros(points.shape[0], dtype=bool)
    if points.shape[0] == 0:
        return keep
    order = np.argsort(points[:, 2], kind="stable")
    p = points[order]
    jumps = np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1)
    breaks = (np.diff(p[:, 2]) > max_gap_mm) | (jumps > max_jump_mm)
    run_of = np.concatenate([[0], np.cumsum(breaks)])
    n_runs = int(run_of[-1]) + 1
    main = int(np.argmax(np.bincount(run_of, weights=w[order], minlength=n_runs)))
    on_track = run_of == main

    def continue_to(run: int, upwards: bool) -> None:
        track = p[on_track]
        end_z = track[-1, 2] if upwards else track[0, 2]
        near_end = track[np.abs(track[:, 2] - end_z) <= end_mm]
        candidate = p[run_of == run]
        first = candidate[0] if upwards else candidate[-1]
        if near_end.shape[0] >= 2 and np.ptp(near_end[:, 2]) > 0:
            slope, intercept = np.polynomial.polynomial.polyfit(near_end[:, 2], near_end[:, :2], 1)[::-1]
            expected = slope * first[2] + intercept
        else:
            expected = near_end[-1 if upwards else 0, :2]
        gap = abs(first[2] - end_z)
        if np.linalg.norm(first[:2] - expected) <= tolerance_mm + tolerance_per_gap_mm * gap:
            on_track[run_of == run] = True

    for run in range(main + 1, n_runs):
        continue_to(run, upwards=True)
    for run in range(main - 1, -1, -1):
        continue_to(run, upwards=False)
    keep[order] = on_track
    return keep
