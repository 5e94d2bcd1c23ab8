"""fit_spine_curve: accuracy on noisy column points, robustness to outliers, gaps, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from straighten_factories import SineSpine

from vfq.errors import InputError
from vfq.straighten import column_points_from_heatmap, column_track, fit_spine_curve, fit_spine_curve_detailed
from vfq.volume import ImageGeometry

SPINE = SineSpine(length=400.0, z0=-200.0, ax=30.0, kx=2.0, ay=25.0, ky=1.0, x0=5.0, y0=40.0)


def _points(spine: SineSpine, step: float = 3.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.arange(spine.z0, spine.z0 + spine.length + 1e-9, step)
    return np.column_stack([spine.xy(z) + rng.normal(0.0, noise, (z.size, 2)), z])


@pytest.mark.parametrize("seed", range(5))
def test_recovers_a_smooth_curve_from_noisy_points(seed: int) -> None:
    points = _points(SPINE, noise=0.5, seed=seed)
    curve = fit_spine_curve(points)
    error = SPINE.in_plane_error(curve)
    assert np.sqrt(np.mean(error**2)) < 1.0
    assert error.max() < 1.5
    assert curve.positions[0, 2] == pytest.approx(SPINE.z0, abs=1e-6)
    assert np.all(np.diff(curve.positions[:, 2]) > 0)


def test_point_order_and_weight_scale_do_not_matter() -> None:
    points = _points(SPINE, noise=0.5, seed=7)
    weights = np.random.default_rng(7).uniform(0.2, 1.0, points.shape[0])
    reference = fit_spine_curve(points, weights).positions
    order = np.random.default_rng(8).permutation(points.shape[0])
    shuffled = fit_spine_curve(points[order], 1000.0 * weights[order]).positions
    np.testing.assert_allclose(shuffled, reference, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_ignores_ten_percent_gross_outliers(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    points = _points(SPINE, noise=0.5, seed=seed)
    outlier = rng.random(points.shape[0]) < 0.10
    outlier[rng.choice(points.shape[0], 3, replace=False)] = True  # at least a few
    angle = rng.uniform(0.0, 2 * np.pi, outlier.sum())
    points[outlier, 0] += 50.0 * np.cos(angle)
    points[outlier, 1] += 50.0 * np.sin(angle)
    fit = fit_spine_curve_detailed(points)
    assert SPINE.in_plane_error(fit.curve).max() < 2.0
    assert np.all(fit.robust_weights[outlier] == 0.0)
    assert fit.n_outliers < outlier.sum() + 3  # inliers are kept
    np.testing.assert_array_less(fit.residuals_mm[~outlier], 3.0)


def test_ignores_a_run_of_outliers_shorter_than_the_smoothing_length() -> None:
    """Six consecutive points (18 mm) on a bright vessel 50 mm anterior."""
    points = _points(SPINE, noise=0.5, seed=3)
    points[60:66, 1] -= 50.0
    fit = fit_spine_curve_detailed(points)
    assert SPINE.in_plane_error(fit.curve).max() < 2.0
    assert np.all(fit.robust_weights[60:66] == 0.0)


def test_outliers_near_an_end_do_not_drag_the_free_end() -> None:
    """Regression: two outliers among the last eight points (z = 181, 199 mm), where the curve is
    least constrained; a least-squares start let them pull the end 9 mm off."""
    points = _points(SPINE, noise=0.5, seed=0)
    rng = np.random.default_rng(1000)
    outlier = rng.random(points.shape[0]) < 0.10
    assert outlier[-1] and outlier[-7]
    angle = rng.uniform(0.0, 6.3, outlier.sum())
    points[outlier, 0] += 50.0 * np.cos(angle)
    points[outlier, 1] += 50.0 * np.sin(angle)
    fit = fit_spine_curve_detailed(points)
    assert SPINE.in_plane_error(fit.curve).max() < 2.0
    assert fit.n_outliers == outlier.sum()
    assert fit.scale_mm == pytest.approx(0.5, rel=0.3)  # the per-axis noise


def test_without_robustness_outliers_pull_the_curve() -> None:
    """The robust weights are what saves the fit above (guards against a vacuous test)."""
    points = _points(SPINE, noise=0.5, seed=3)
    points[60:66, 1] -= 50.0
    assert SPINE.in_plane_error(fit_spine_curve(points, robust=False)).max() > 5.0


def test_bridges_a_60_mm_gap() -> None:
    points = _points(SPINE, noise=0.5, seed=11)
    gap = (points[:, 2] > -20.0) & (points[:, 2] < 40.0)
    curve = fit_spine_curve(points[~gap])
    error = SPINE.in_plane_error(curve)
    in_gap = (curve.positions[:, 2] > -20.0) & (curve.positions[:, 2] < 40.0)
    assert in_gap.sum() > 55
    assert error[in_gap].max() < 2.0
    assert np.sqrt(np.mean(error**2)) < 1.0


def _column_with_pelvic_cluster() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column points from z = -100 mm up (4 mm apart, the localizer's slices), and below a 50 mm
    gap a heavy 32 mm run 80 mm to the side (a femoral head lighting up the heatmap)."""
    column = _points(SPINE, step=4.0, noise=0.5, seed=5)
    column = column[column[:, 2] >= -100.0]
    z = np.arange(-182.0, -149.0, 4.0)
    cluster = np.column_stack([SPINE.xy(z) + np.array([80.0, 10.0]), z])
    points = np.concatenate([cluster, column])
    weights = np.concatenate([np.full(z.size, 10.0), np.full(column.shape[0], 5.0)])
    return points, weights, np.arange(points.shape[0]) >= z.size


def test_column_track_drops_a_cluster_off_the_column_below_a_gap() -> None:
    points, weights, on_column = _column_with_pelvic_cluster()
    keep = column_track(points, weights)
    np.testing.assert_array_equal(keep, on_column)
    kept = fit_spine_curve(points[keep], weights[keep])
    assert SPINE.in_plane_error(kept).max() < 2.0
    # Without the track the fit bends over to the cluster across the gap (guards the test).
    pulled = fit_spine_curve(points, weights)
    column_part = pulled.positions[:, 2] >= -100.0
    assert SPINE.in_plane_error(pulled)[column_part].max() > 5.0


def test_column_track_keeps_the_column_across_gaps_and_drops_a_jump_aside() -> None:
    points = _points(SPINE, step=4.0, noise=0.5, seed=6)
    z = points[:, 2]
    gaps = ((z > -120.0) & (z < -70.0)) | ((z > 40.0) & (z < 80.0))
    points = points[~gaps]
    weights = np.ones(points.shape[0])
    assert column_track(points, weights).all()
    # Three slices whose maximum jumps to a vessel 40 mm anterior, without any gap in z.
    jumped = points.copy()
    jumped[30:33, 1] -= 40.0
    keep = column_track(jumped, weights)
    assert not keep[30:33].any() and keep[:30].all() and keep[33:].all()
    # Any order in, the same points out; none in, none out.
    order = np.random.default_rng(0).permutation(points.shape[0])
    np.testing.assert_array_equal(column_track(jumped[order], weights[order]), keep[order])
    assert column_track(np.empty((0, 3)), np.empty(0)).shape == (0,)


def test_zero_weight_points_are_ignored() -> None:
    points = _points(SPINE, noise=0.5, seed=5)
    bogus = np.column_stack([np.full(20, 300.0), np.full(20, -300.0), np.linspace(-150.0, 150.0, 20)])
    weights = np.concatenate([np.ones(points.shape[0]), np.zeros(20)])
    reference = fit_spine_curve(points).positions
    np.testing.assert_allclose(fit_spine_curve(np.vstack([points, bogus]), weights).positions, reference)


def test_smoothing_mm_is_the_half_amplitude_wavelength() -> None:
    z = np.arange(0.0, 1000.0, 1.0)
    points = np.column_stack([10.0 * np.sin(2 * np.pi * z / 60.0), np.zeros_like(z), z])
    fit = fit_spine_curve_detailed(points, smoothing_mm=60.0, robust=False)
    middle = (fit.z_nodes_mm > 200.0) & (fit.z_nodes_mm < 800.0)
    assert np.abs(fit.xy_nodes_mm[middle, 0]).max() / 10.0 == pytest.approx(0.5, abs=0.03)


def test_z_range_extends_the_curve_linearly() -> None:
    points = _points(SineSpine(ax=0.0, ay=0.0, x0=2.0, y0=3.0, length=200.0, z0=0.0))
    curve = fit_spine_curve(points, z_range_mm=(-50.0, 250.0))
    assert curve.positions[0, 2] == pytest.approx(-50.0, abs=1e-6)
    assert curve.length_mm == pytest.approx(300.0, abs=1.0)
    np.testing.assert_allclose(
        curve.positions[:, :2], np.broadcast_to([2.0, 3.0], (curve.n_samples, 2)), atol=1e-6
    )


def test_refuses_a_too_short_z_extent() -> None:
    z = np.linspace(0.0, 30.0, 11)
    points = np.column_stack([np.zeros_like(z), np.zeros_like(z), z])
    with pytest.raises(InputError, match=r"span 30\.0 mm in world z"):
        fit_spine_curve(points)


@pytest.mark.parametrize(
    ("points", "weights", "message"),
    [
        (np.zeros((10, 2)), None, "shape"),
        (np.full((10, 3), np.nan), None, "finite"),
        (np.zeros((10, 3)), np.ones(9), "weights must have shape"),
        (np.zeros((10, 3)), -np.ones(10), "non-negative"),
        (np.zeros((3, 3)), None, "at least 4 points"),
    ],
)
def test_refuses_malformed_input(points: np.ndarray, weights: np.ndarray | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        fit_spine_curve(points, weights)


def test_column_points_from_heatmap_find_the_tube_and_skip_a_distractor() -> None:
    geometry = ImageGeometry(shape=(80, 60, 60), spacing=(4.0, 4.0, 4.0), origin=(-120.0, -100.0, -160.0))
    z = geometry.origin[2] + 4.0 * np.arange(80)
    centre = SineSpine(length=320.0, z0=-160.0, ax=20.0, ay=10.0, x0=0.0, y0=10.0).xy(z)
    y = geometry.origin[1] + 4.0 * np.arange(60)
    x = geometry.origin[0] + 4.0 * np.arange(60)
    d2 = (x[None, None, :] - centre[:, 0, None, None]) ** 2 + (
        y[None, :, None] - centre[:, 1, None, None]
    ) ** 2
    heatmap = 0.9 * np.exp(-d2 / (2 * 5.0**2))
    # a fainter "vessel" 60 mm anterior in slices 20-29
    d2v = (x[None, :] - centre[20:30, 0, None, None]) ** 2 + (
        y[:, None] - (centre[20:30, 1, None, None] - 60.0)
    ) ** 2
    heatmap[20:30] += 0.6 * np.exp(-d2v / (2 * 5.0**2))
    points, weights = column_points_from_heatmap(heatmap, geometry)
    assert points.shape == (80, 3) and weights.shape == (80,)
    np.testing.assert_allclose(points[:, 2], z)
    np.testing.assert_allclose(points[:, :2], centre, atol=0.5)
    unrestricted, _ = column_points_from_heatmap(heatmap, geometry, radius_mm=None)
    assert np.abs(unrestricted[20:30, 1] - centre[20:30, 1]).min() > 5.0  # the radius is what helps
    curve = fit_spine_curve(points, weights)
    assert SineSpine(length=320.0, z0=-160.0, ax=20.0, ay=10.0, y0=10.0).in_plane_error(curve).max() < 1.0
