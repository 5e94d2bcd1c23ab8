"""straighten: exactness on a straight spine, a curved bright tube, outside fill, direction matrices."""

from __future__ import annotations

import numpy as np
import pytest
from straighten_factories import SineSpine, random_ct, tube_ct

from vfq.errors import InputError
from vfq.straighten import (
    AIR_HU,
    SpineCurve,
    StraightenedGrid,
    default_grid,
    fit_spine_curve,
    grid_to_world,
    sagittal_image,
    sample_trilinear,
    straighten,
    straighten_sagittal,
)
from vfq.volume import CTVolume, ImageGeometry


def _vertical_curve(x: float, y: float, z0: float, z1: float) -> SpineCurve:
    z = np.linspace(z0, z1, round((z1 - z0) * 4) + 1)
    return SpineCurve.from_polyline(np.column_stack([np.full_like(z, x), np.full_like(z, y), z]), 1.0)


def test_straight_vertical_curve_gives_the_ct_crop_exactly() -> None:
    origin = (-20.0, 30.0, -100.0)
    ct = random_ct((60, 40, 50), origin=origin, seed=1)
    iy, ix, iz0, iz1 = 17, 23, 5, 50
    curve = _vertical_curve(origin[0] + ix, origin[1] + iy, origin[2] + iz0, origin[2] + iz1)
    grid = StraightenedGrid(n_s=curve.n_samples, n_v=11, n_w=5)
    slab = straighten(ct, curve, grid)
    assert slab.dtype == np.float32 and slab.shape == (46, 11, 5)
    crop = ct.array[iz0 : iz1 + 1, iy - 5 : iy + 6, ix - 2 : ix + 3].astype(np.float32)
    np.testing.assert_allclose(slab, crop, rtol=0, atol=1e-3)


def test_half_voxel_offsets_interpolate_linearly() -> None:
    origin = (0.0, 0.0, 0.0)
    ct = random_ct((30, 30, 30), origin=origin, seed=2)
    curve = _vertical_curve(10.5, 12.0, 3.0, 20.0)  # halfway between x = 10 and 11
    grid = StraightenedGrid(n_s=curve.n_samples, n_v=1, n_w=1)
    slab = straighten(ct, curve, grid)[:, 0, 0]
    expected = 0.5 * (ct.array[3:21, 12, 10].astype(np.float64) + ct.array[3:21, 12, 11])
    np.testing.assert_allclose(slab, expected, atol=1e-3)


def test_scoliotic_kyphotic_tube_straightens_into_a_straight_line() -> None:
    spine = SineSpine(length=200.0, z0=-95.0, ax=25.0, kx=2.0, ay=15.0, ky=1.0, phy=0.3, x0=5.0, y0=-5.0)
    ct = tube_ct(spine, shape=(220, 120, 120), origin=(-60.0, -60.0, -110.0))
    curve = spine.curve()
    grid = default_grid(curve, ct.geometry, width_mm=31.0, thickness_mm=7.0)
    assert (grid.n_v, grid.n_w) == (31, 7) and grid.n_s == curve.n_samples
    slab = straighten(ct, curve, grid)
    vc, wc = int(grid.center_v), int(grid.center_w)
    rows = slab.reshape(grid.n_s, -1)
    peak = np.unravel_index(np.argmax(rows, axis=1), (grid.n_v, grid.n_w))
    assert np.all(peak[0] == vc) and np.all(peak[1] == wc)
    assert slab[:, vc, wc].min() > 900.0  # trilinear blur of a sigma = 2 mm tube: >= 0.91 of the peak
    profile = slab[:, :, wc]
    centroid = (profile * np.arange(grid.n_v)).sum(axis=1) / profile.sum(axis=1)
    assert np.abs(centroid - vc).max() < 0.1
    assert np.abs(slab[:, vc + 8]).max() < 5.0  # 8 mm off the line: background

    # the same CT cut straight (no straightening) is far from a line: the test has teeth
    straight = _vertical_curve(5.0, -5.0, -95.0, 105.0)
    unbent = straighten(ct, straight, StraightenedGrid(n_s=straight.n_samples, n_v=31, n_w=7))
    assert np.median(unbent[:, vc, wc]) < 100.0


def test_fitted_curve_straightens_the_tube() -> None:
    spine = SineSpine(length=200.0, z0=-95.0, ax=25.0, kx=2.0, ay=15.0, ky=1.0, x0=5.0, y0=-5.0)
    ct = tube_ct(spine, shape=(220, 120, 120), origin=(-60.0, -60.0, -110.0))
    rng = np.random.default_rng(0)
    z = np.arange(-95.0, 105.0, 4.0)
    points = np.column_stack([spine.xy(z) + rng.normal(0.0, 0.5, (z.size, 2)), z])
    curve = fit_spine_curve(points)
    grid = default_grid(curve, ct.geometry, width_mm=31.0, thickness_mm=5.0)
    image = straighten_sagittal(ct, curve, grid, thickness_mm=1.0)
    assert image.shape == (grid.n_s, 31)
    assert np.all(np.argmax(image, axis=1) == 15)


def test_points_outside_the_ct_are_air_never_zero() -> None:
    ct = CTVolume(
        array=np.zeros((40, 30, 30), dtype=np.int16),  # a CT of water: 0 HU inside
        geometry=ImageGeometry(shape=(40, 30, 30), spacing=(1.0, 1.0, 1.0)),
    )
    curve = _vertical_curve(15.0, 15.0, -20.0, 60.0)  # starts 20 mm below, ends 21 mm above
    grid = StraightenedGrid(n_s=curve.n_samples, n_v=61, n_w=3)  # 30 mm either side: beyond y
    slab = straighten(ct, curve, grid)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij"), axis=-1)
    voxel = ct.geometry.world_to_voxel(grid_to_world(curve, grid, index))
    far = ((voxel < -1.0) | (voxel > np.array(ct.geometry.shape) - 1 + 1.0)).any(axis=-1)
    inside = ((voxel >= 0) & (voxel <= np.array(ct.geometry.shape) - 1)).all(axis=-1)
    assert far.sum() > 1000 and inside.sum() > 1000
    assert np.all(slab[far] == AIR_HU)
    assert np.all(slab[inside] == 0.0)
    # within one voxel of the border the scan fades into air, never below it
    border = ~far & ~inside
    assert np.all((slab[border] <= 0.0) & (slab[border] >= AIR_HU))
    assert np.all(straighten(ct, curve, grid, fill_hu=-3000.0)[far] == -3000.0)


def test_half_voxel_outside_is_half_air() -> None:
    array = np.full((5, 5, 5), 1000, dtype=np.int16)
    values = sample_trilinear(
        array, np.array([-0.5, 2.0, 4.5]), np.array([2.0, 2.0, 2.0]), np.array([2.0, 4.0, 2.0])
    )
    np.testing.assert_allclose(values, [(1000 + AIR_HU) / 2, 1000.0, (1000 + AIR_HU) / 2])


def test_non_contiguous_arrays_sample_like_contiguous_ones() -> None:
    rng = np.random.default_rng(3)
    big = rng.integers(-1000, 1000, (20, 30, 40), dtype=np.int16)
    view = big[::2, :, ::-1]
    assert not view.flags.c_contiguous
    z, y, x = (rng.uniform(-2.0, n + 1.0, 1000) for n in view.shape)
    np.testing.assert_array_equal(
        sample_trilinear(view, z, y, x), sample_trilinear(np.ascontiguousarray(view), z, y, x)
    )


def _rotated_about_z(ct: CTVolume) -> CTVolume:
    """The same voxels stored rotated 90° about z: array x runs world +y, array y runs world -x."""
    g = ct.geometry
    nx = g.shape[2]
    array = np.ascontiguousarray(ct.array.transpose(0, 2, 1)[:, ::-1, :])
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: x, y, z axes
    origin = (g.origin[0] + (nx - 1) * g.spacing[2], g.origin[1], g.origin[2])
    geometry = ImageGeometry(
        shape=array.shape,
        spacing=(g.spacing[0], g.spacing[2], g.spacing[1]),
        origin=origin,
        direction=direction,
    )
    return CTVolume(array=array, geometry=geometry)


def test_rotated_direction_matrix_gives_the_same_straightening() -> None:
    spine = SineSpine(length=80.0, z0=-40.0, ax=8.0, kx=2.0, ay=5.0, ky=1.0, x0=2.0, y0=1.0)
    ct = random_ct((60, 50, 45), spacing=(1.5, 0.8, 0.7), origin=(-15.0, -20.0, -45.0), seed=4)
    rotated = _rotated_about_z(ct)
    # sanity: the two geometries put corresponding voxels at the same world point
    k, j, i = 7, 11, 13  # A voxel (z, y, x) = (k, j, i) is B voxel (k, nx - 1 - i, j)
    nx = ct.geometry.shape[2]
    np.testing.assert_allclose(
        rotated.geometry.voxel_to_world(np.array([k, nx - 1 - i, j])),
        ct.geometry.voxel_to_world(np.array([k, j, i])),
        atol=1e-9,
    )
    assert rotated.array[k, nx - 1 - i, j] == ct.array[k, j, i]
    curve = spine.curve()
    grid = StraightenedGrid(n_s=curve.n_samples, n_v=33, n_w=9, spacing_v_mm=0.6, spacing_w_mm=0.9)
    reference = straighten(ct, curve, grid)
    assert (reference > AIR_HU).mean() > 0.9
    np.testing.assert_allclose(straighten(rotated, curve, grid), reference, rtol=0, atol=0.05)


def test_oblique_direction_matrix_reproduces_a_linear_field() -> None:
    """Trilinear interpolation is exact on a linear field, whatever the direction matrix."""
    angle = np.deg2rad(30.0)
    rz = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    tilt = np.deg2rad(10.0)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(tilt), -np.sin(tilt)], [0.0, np.sin(tilt), np.cos(tilt)]])
    geometry = ImageGeometry(
        shape=(70, 60, 60), spacing=(1.2, 0.9, 0.8), origin=(-10.0, -40.0, -40.0), direction=rx @ rz
    )
    index = np.stack(np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij"), axis=-1)
    world = geometry.voxel_to_world(index)
    field = 4.0 * world[..., 0] - 3.0 * world[..., 1] + 2.0 * world[..., 2]
    ct = CTVolume(array=np.rint(field).astype(np.int16), geometry=geometry)
    centre = geometry.voxel_to_world((np.array(geometry.shape) - 1) / 2.0)
    spine = SineSpine(
        length=50.0, z0=centre[2] - 25.0, ax=6.0, kx=2.0, ay=4.0, ky=1.0, x0=centre[0], y0=centre[1]
    )
    curve = spine.curve(step_mm=0.5)
    grid = StraightenedGrid(n_s=curve.n_samples, n_v=21, n_w=5, step_s_mm=0.5, spacing_v_mm=0.7)
    slab = straighten(ct, curve, grid)
    sample_index = np.stack(np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij"), axis=-1)
    p = grid_to_world(curve, grid, sample_index)
    voxel = geometry.world_to_voxel(p)
    inside = ((voxel >= 0) & (voxel <= np.array(geometry.shape) - 1)).all(axis=-1)
    assert inside.mean() > 0.95
    expected = 4.0 * p[..., 0] - 3.0 * p[..., 1] + 2.0 * p[..., 2]
    np.testing.assert_allclose(slab[inside], expected[inside], atol=0.51)  # int16 rounding of the field


def test_sagittal_image_averages_the_slab_over_w() -> None:
    grid = StraightenedGrid(n_s=4, n_v=3, n_w=5, spacing_w_mm=1.0)
    slab = np.broadcast_to(np.arange(5, dtype=np.float32) * 10.0, grid.shape).copy()
    np.testing.assert_allclose(sagittal_image(slab, grid), 20.0)
    np.testing.assert_allclose(sagittal_image(slab, grid, thickness_mm=3.0), 20.0)
    slab[:, :, 3] = 1000.0
    np.testing.assert_allclose(sagittal_image(slab, grid, thickness_mm=1.0), 20.0)  # centre only
    np.testing.assert_allclose(sagittal_image(slab, grid, thickness_mm=3.0), (10.0 + 20.0 + 1000.0) / 3)
    assert sagittal_image(slab, grid).dtype == np.float32
    with pytest.raises(InputError, match="selects no slab sample"):
        sagittal_image(slab[:, :, :4], StraightenedGrid(n_s=4, n_v=3, n_w=4), thickness_mm=0.5)
    with pytest.raises(InputError, match="does not match the grid"):
        sagittal_image(slab[:, :, :4], grid)


def test_default_grid_covers_the_curve_inside_the_scan() -> None:
    geometry = ImageGeometry(shape=(100, 200, 200), spacing=(2.0, 0.7, 0.7), origin=(-70.0, -70.0, -99.0))
    curve = _vertical_curve(0.0, 0.0, -150.0, 150.0)  # the scan covers z in [-99, 99]
    grid = default_grid(curve, geometry)
    assert (grid.n_v, grid.n_w, grid.step_s_mm, grid.spacing_v_mm, grid.spacing_w_mm) == (
        96,
        5,
        1.0,
        1.0,
        1.0,
    )
    first, last = curve.position(np.array([grid.s_mm[0], grid.s_mm[-1]]))[:, 2]
    assert first == pytest.approx(-99.0, abs=1e-6) and last == pytest.approx(99.0, abs=1e-6)
    assert grid.n_s == 199
    whole = default_grid(curve, None, step_mm=2.0, width_mm=64.0, thickness_mm=3.0, pixel_mm=0.5)
    assert (whole.n_s, whole.n_v, whole.n_w, whole.s0_mm) == (151, 128, 3, 0.0)
    with pytest.raises(InputError, match="does not pass through the scan"):
        default_grid(_vertical_curve(500.0, 0.0, -50.0, 50.0), geometry)
