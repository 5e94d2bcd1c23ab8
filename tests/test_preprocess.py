"""Steps 1 and 3: CT validation, the localizer grid (area averaging), the spine curve, the detector input."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from vfq.errors import InputError, NotCTError
from vfq.preprocess import (
    MAX_SHAPE,
    MIN_COLUMN_SLICE_MASS,
    LocalizerGrid,
    localizer_grid,
    spine_column_seen,
    spine_curve_from_heatmap,
    to_detector_input,
    to_localizer_grid,
    validate_ct,
)
from vfq.straighten import SpineCurve
from vfq.tensors import (
    AIR_INPUT,
    DETECTOR_MULTIPLE,
    DETECTOR_WIDTH_PX,
    HU_CLIP,
    HU_SCALE,
    LOCALIZER_MIN_PEAK,
    LOCALIZER_MULTIPLE,
    LOCALIZER_SPACING_MM,
    LOCALIZER_TUBE_SIGMA_MM,
)
from vfq.volume import CTVolume, ImageGeometry

CELL = LOCALIZER_SPACING_MM


def _ct(array: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), direction=None) -> CTVolume:
    geometry = ImageGeometry(
        shape=array.shape,
        spacing=spacing,
        origin=origin,
        direction=np.eye(3) if direction is None else direction,
    )
    return CTVolume(array=array, geometry=geometry)


def _valid(localizer) -> np.ndarray:
    vz, vy, vx = localizer.grid.valid_shape
    return localizer.tensor[0, 0, :vz, :vy, :vx].astype(np.float64)


def _covered_mm(n: int, spacing: float) -> np.ndarray:
    """Length (mm) of each centred 4 mm cell that lies inside an axis of n voxels (independent of vfq)."""
    extent = n * spacing
    cells = math.ceil(extent / CELL - 1e-9)
    borders = np.clip(-(cells * CELL - extent) / 2 + CELL * np.arange(cells + 1), 0.0, extent)
    return np.diff(borders)


def _reference_average(array: np.ndarray, spacing) -> np.ndarray:
    """Brute-force area average (float64, dense overlap matrices), clipped per voxel, in HU."""
    volume = np.clip(array.astype(np.float64), *HU_CLIP)
    for axis, (n, s) in enumerate(zip(array.shape, spacing)):
        extent = n * s
        cells = math.ceil(extent / CELL - 1e-9)
        borders = -(cells * CELL - extent) / 2 + CELL * np.arange(cells + 1)
        faces = s * np.arange(n + 1)
        overlap = np.maximum(
            np.minimum(borders[1:, None], faces[None, 1:]) - np.maximum(borders[:-1, None], faces[None, :-1]),
            0,
        )
        weights = overlap / overlap.sum(axis=1, keepdims=True)
        volume = np.moveaxis(np.tensordot(weights, np.moveaxis(volume, axis, 0), axes=1), 0, axis)
    return volume


# ---------------------------------------------------------------------- area averaging


def test_blocks_constant_per_cell_resample_exactly() -> None:
    rng = np.random.default_rng(1)
    blocks = rng.integers(-1000, 2000, size=(10, 6, 8)).astype(np.int16)
    array = np.repeat(np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1), 4, axis=2)  # 1 mm voxels
    localizer = to_localizer_grid(_ct(array, (1.0, 1.0, 1.0)))
    assert localizer.grid.valid_shape == (10, 6, 8)
    np.testing.assert_allclose(_valid(localizer), blocks * HU_SCALE, rtol=0, atol=1e-6)


def test_two_mm_blocks_average_exactly() -> None:
    rng = np.random.default_rng(2)
    array = rng.integers(-1000, 2000, size=(20, 12, 16)).astype(np.int16)  # 2 mm voxels, 2 per cell
    localizer = to_localizer_grid(_ct(array, (2.0, 2.0, 2.0)))
    expected = array.reshape(10, 2, 6, 2, 8, 2).astype(np.float64).mean(axis=(1, 3, 5)) * HU_SCALE
    np.testing.assert_allclose(_valid(localizer), expected, rtol=0, atol=1e-6)


def test_mean_preserved_for_random_data() -> None:
    rng = np.random.default_rng(3)
    array = rng.integers(-1024, 2048, size=(48, 40, 56)).astype(np.int16)  # 0.5/1/2 mm: cells align
    localizer = to_localizer_grid(_ct(array, (0.5, 1.0, 2.0)))
    assert localizer.grid.valid_shape == (6, 10, 28)
    assert _valid(localizer).mean() == pytest.approx(array.mean() * HU_SCALE, rel=1e-6)


@pytest.mark.parametrize(
    "spacing",
    [(0.7, 0.7, 0.7), (1.25, 0.7, 0.9), (2.5, 0.8, 0.8), (5.0, 0.7, 0.6), (4.0, 3.0, 6.5), (0.6, 4.0, 4.0)],
)
def test_integral_preserved_and_matches_brute_force(spacing) -> None:
    rng = np.random.default_rng(4)
    shape = tuple(round(n) for n in (60 / spacing[0] + 3, 50 / spacing[1] + 1, 70 / spacing[2] + 2))
    array = rng.integers(-1000, 2000, size=shape).astype(np.int16)
    localizer = to_localizer_grid(_ct(array, spacing))
    coarse = _valid(localizer) / HU_SCALE
    lengths = [_covered_mm(n, s) for n, s in zip(shape, spacing)]
    cell_volume = lengths[0][:, None, None] * lengths[1][None, :, None] * lengths[2][None, None, :]
    integral = (coarse * cell_volume).sum()
    expected = array.astype(np.float64).sum() * np.prod(spacing)
    assert integral == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(coarse, _reference_average(array, spacing), rtol=0, atol=0.05)  # HU


def test_hu_clipped_per_voxel_before_averaging() -> None:
    array = np.zeros((8, 8, 8), dtype=np.int16)
    array[:, :, :2] = -3024  # outside-the-field padding
    array[:, :, 4:6] = 3000  # metal
    localizer = to_localizer_grid(_ct(array, (1.0, 1.0, 1.0)))
    coarse = _valid(localizer) / HU_SCALE
    assert coarse.shape == (2, 2, 2)
    np.testing.assert_allclose(coarse[..., 0], (2 * HU_CLIP[0] + 2 * 0) / 4, atol=1e-3)
    np.testing.assert_allclose(coarse[..., 1], (2 * HU_CLIP[1] + 2 * 0) / 4, atol=1e-3)


def test_padding_value_and_multiples() -> None:
    rng = np.random.default_rng(5)
    array = rng.integers(-500, 500, size=(37, 29, 41)).astype(np.int16)
    localizer = to_localizer_grid(_ct(array, (1.3, 0.9, 1.1)))
    tensor = localizer.tensor
    assert tensor.dtype == np.float32 and tensor.ndim == 5 and tensor.shape[:2] == (1, 1)
    assert all(n % LOCALIZER_MULTIPLE == 0 for n in tensor.shape[2:])
    vz, vy, vx = localizer.grid.valid_shape
    assert localizer.grid.valid_shape == tuple(
        math.ceil(n * s / CELL) for n, s in zip(array.shape, (1.3, 0.9, 1.1))
    )
    assert localizer.geometry.shape == tensor.shape[2:]
    pad = np.ones(tensor.shape[2:], dtype=bool)
    pad[:vz, :vy, :vx] = False
    assert pad.any()
    assert (tensor[0, 0][pad] == np.float32(AIR_INPUT)).all()
    assert (tensor[0, 0][~pad] > AIR_INPUT).all()


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("direction_seed", [None, 7])
def test_coarse_geometry_maps_bright_voxel(direction_seed) -> None:
    direction = np.eye(3) if direction_seed is None else _rotation(direction_seed)
    spacing = (0.8, 0.7, 0.6)
    array = np.full((90, 100, 110), -1000, dtype=np.int16)
    ct = _ct(array, spacing, origin=(-31.0, 12.5, 140.0), direction=direction)
    grid = localizer_grid(ct.geometry)
    # a bright 2 × 2 × 2 voxel cube lying wholly inside one coarse cell
    coarse_target = np.array([9, 5, 12])
    centre = grid.coarse_to_ct_voxel(coarse_target)
    lo = np.floor(centre).astype(int)
    array[lo[0] : lo[0] + 2, lo[1] : lo[1] + 2, lo[2] : lo[2] + 2] = 2000
    localizer = to_localizer_grid(ct)
    hit = np.unravel_index(int(np.argmax(localizer.tensor[0, 0])), localizer.tensor.shape[2:])
    assert tuple(int(i) for i in hit) == tuple(coarse_target.tolist())
    world = ct.geometry.voxel_to_world(lo + 0.5)  # the cube's centre
    coarse = localizer.geometry.world_to_voxel(world)
    np.testing.assert_array_equal(np.rint(coarse).astype(int), coarse_target)
    assert np.abs(coarse - coarse_target).max() < 0.15  # within half a CT voxel of the cell centre
    np.testing.assert_allclose(localizer.geometry.direction, direction)
    assert localizer.geometry.spacing == (CELL, CELL, CELL)


def test_grid_is_centred_on_the_scan() -> None:
    # 10 voxels of 1.4 mm = 14 mm -> 4 cells of 4 mm overhanging 1 mm at each end
    grid = localizer_grid(ImageGeometry(shape=(10, 10, 10), spacing=(1.4, 1.4, 1.4)))
    assert grid.valid_shape == (4, 4, 4)
    first = grid.coarse_to_ct_voxel(np.zeros(3))
    last = grid.coarse_to_ct_voxel(np.full(3, 3.0))
    np.testing.assert_allclose(first, (-1.0 + 2.0 - 0.7) / 1.4)  # cell centre 1 mm past the first face
    np.testing.assert_allclose(first + last, 9.0)  # symmetric about the scan's centre voxel 4.5


# ---------------------------------------------------------------------- validation


def _body_ct(shape=(40, 64, 64)) -> np.ndarray:
    """Air, a fat-rimmed soft-tissue body and a bone rod: a CT in HU."""
    _, ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot(y - ny / 2, x - nx / 2)
    plane = np.where(r < 0.45 * ny, -100, -1000)
    plane = np.where(r < 0.38 * ny, 40, plane)
    plane = np.where(np.hypot(y - ny * 0.6, x - nx / 2) < 0.08 * ny, 700, plane)
    return np.broadcast_to(plane, shape).astype(np.int16).copy()


def test_good_ct_passes_without_copy() -> None:
    array = _body_ct()
    ct = validate_ct(array, [2.5, 0.7, 0.7])
    assert isinstance(ct, CTVolume)
    assert ct.array is array
    assert ct.spacing == (2.5, 0.7, 0.7)


def test_tight_field_of_view_without_air_passes() -> None:
    array = _body_ct()[:, 12:52, 12:52]  # fat, soft tissue and bone only
    assert (array > -500).all()
    validate_ct(array, (1.0, 0.5, 0.5))


@pytest.mark.parametrize(
    ("array", "spacing", "fragment"),
    [
        (np.zeros((10, 10), np.int16), (1, 1, 1), "3D array"),
        (np.zeros((0, 10, 10), np.int16), (1, 1, 1), "empty"),
        (np.zeros((1, 10, 10), np.int16), (1, 1, 1), "at least 2 voxels"),
        (np.zeros((4, 4, 4), np.float32), (1, 1, 1), "got dtype float32"),
        (np.zeros((4, 4, 4), np.uint16), (1, 1, 1), "must be int16"),
        (_body_ct(), (1, 1), "3 values"),
        (_body_ct(), "1,1,1", "3 numbers"),
        (_body_ct(), (1, float("nan"), 1), "finite values in (0.1, 20]"),
        (_body_ct(), (1, 1, 0.1), "finite values in (0.1, 20]"),
        (_body_ct(), (25, 1, 1), "finite values in (0.1, 20]"),
        (_body_ct(), (1, -1, 1), "got [1.0, -1.0, 1.0]"),
        (np.full((MAX_SHAPE[0] + 1, 2, 2), -1000, np.int16), (1, 1, 1), "exceeds the limit"),
    ],
)
def test_bad_input_is_refused(array, spacing, fragment) -> None:
    with pytest.raises(InputError) as info:
        validate_ct(array, spacing)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 2000, size=(20, 32, 32)).astype(np.int16),  # MR-like
        _body_ct() + 1024,  # CT without its rescale intercept
        np.zeros((8, 8, 8), np.int16),  # no structure at all
    ],
    ids=["mr-like", "unrescaled", "zeros"],
)
def test_not_ct_is_refused(array) -> None:
    with pytest.raises(NotCTError, match="does not look like CT in Hounsfield units") as info:
        validate_ct(array, (1, 1, 1))
    assert "expected ≥ 1%" in str(info.value)
    # A later step of the same request skips the value check (preprocess made it), not the others.
    assert validate_ct(array, (1, 1, 1), check_values=False).array is array
    with pytest.raises(InputError, match="spacing must be 3 finite values"):
        validate_ct(array, (1, 0, 1), check_values=False)


# ---------------------------------------------------------------------- spine curve from a heatmap


def _column_xy(z: np.ndarray) -> np.ndarray:
    t = (z + 100.0) / 320.0
    return np.stack([5.0 + 12.0 * np.sin(np.pi * t), 30.0 - 10.0 * np.sin(2 * np.pi * t)], axis=-1)


def _grid_world(grid: LocalizerGrid) -> np.ndarray:
    """``(Z, Y, X, 3)`` world LPS mm of every voxel of the localizer grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.geometry.shape], indexing="ij"), axis=-1)
    return grid.geometry.voxel_to_world(index)


def _tube_heatmap(grid: LocalizerGrid, z_lo: float = -np.inf, z_hi: float = np.inf) -> np.ndarray:
    """Gaussian tube (σ = LOCALIZER_TUBE_SIGMA_MM, in-plane distance) around _column_xy on the grid."""
    world = _grid_world(grid)
    d2 = ((world[..., :2] - _column_xy(world[..., 2])) ** 2).sum(axis=-1)
    heat = np.exp(-d2 / (2 * LOCALIZER_TUBE_SIGMA_MM**2))
    heat[(world[..., 2] < z_lo) | (world[..., 2] > z_hi)] = 0.0
    vz, vy, vx = grid.valid_shape
    heat[vz:], heat[:, vy:], heat[:, :, vx:] = 0.0, 0.0, 0.0
    return heat[None, None].astype(np.float32)


CT_GEOMETRY = ImageGeometry(shape=(320, 150, 170), spacing=(1.0, 0.8, 0.8), origin=(-60.0, -30.0, -100.0))


def test_curve_follows_gaussian_tube_within_1_mm() -> None:
    grid = localizer_grid(CT_GEOMETRY)
    curve = spine_curve_from_heatmap(_tube_heatmap(grid), grid)
    assert isinstance(curve, SpineCurve)
    z = curve.positions[:, 2]
    z_lo, z_hi = grid.ct_z_range_mm()
    assert z[0] == pytest.approx(z_lo, abs=1e-6)
    assert z_hi - 1.0 <= z[-1] <= z_hi
    error = np.linalg.norm(curve.positions[:, :2] - _column_xy(z), axis=1)  # in-plane, mm
    assert error.max() < 1.0


def test_curve_spans_scan_beyond_the_column() -> None:
    grid = localizer_grid(CT_GEOMETRY)
    z_lo, z_hi = grid.ct_z_range_mm()
    curve = spine_curve_from_heatmap(_tube_heatmap(grid, z_lo + 80, z_hi - 80), grid)
    assert curve is not None
    assert curve.positions[0, 2] == pytest.approx(z_lo, abs=1e-6)
    assert curve.positions[-1, 2] > z_hi - 1.0


def test_curve_ignores_a_blob_off_the_column_below_it() -> None:
    """A femoral head lighting up the heatmap 40 mm below the column's end and 70 mm to its side
    must not bend the curve's lower end over to it (the column continues straight instead)."""
    grid = localizer_grid(CT_GEOMETRY)
    z_lo, z_hi = grid.ct_z_range_mm()
    heat = _tube_heatmap(grid, z_lo + 100, z_hi)
    world = _grid_world(grid)
    head = np.array([_column_xy(np.array(z_lo + 40))[0] - 70.0, 40.0, z_lo + 40])
    blob = np.exp(-((world - head) ** 2).sum(axis=-1) / (2 * 12.0**2))
    vz, vy, vx = grid.valid_shape
    blob[vz:], blob[:, vy:], blob[:, :, vx:] = 0.0, 0.0, 0.0
    with_blob = np.maximum(heat, blob[None, None].astype(np.float32))
    clean = spine_curve_from_heatmap(heat, grid)
    curve = spine_curve_from_heatmap(with_blob, grid)
    assert clean is not None and curve is not None
    np.testing.assert_allclose(curve.positions, clean.positions, atol=1e-6)
    on_column = curve.positions[:, 2] >= z_lo + 100
    error = np.linalg.norm(curve.positions[on_column, :2] - _column_xy(curve.positions[on_column, 2]), axis=1)
    assert error.max() < 1.0


def test_padding_of_the_heatmap_is_ignored() -> None:
    grid = localizer_grid(CT_GEOMETRY)
    heat = _tube_heatmap(grid)
    vz, vy, vx = grid.valid_shape
    assert heat.shape[2:] != (vz, vy, vx)
    noisy = heat.copy()
    noisy[0, 0, vz:], noisy[0, 0, :, vy:], noisy[0, 0, :, :, vx:] = 1.0, 1.0, 1.0
    a = spine_curve_from_heatmap(heat, grid)
    b = spine_curve_from_heatmap(noisy[0, 0], grid)
    assert a is not None and b is not None
    np.testing.assert_allclose(a.positions, b.positions)


def test_no_spine_gives_none() -> None:
    grid = localizer_grid(CT_GEOMETRY)
    shape = grid.geometry.shape
    assert spine_curve_from_heatmap(np.zeros((1, 1, *shape), np.float32), grid) is None
    assert spine_curve_from_heatmap(0.8 * _tube_heatmap(grid) * 0.3, grid) is None  # peak 0.24
    z_lo, _ = grid.ct_z_range_mm()
    assert spine_curve_from_heatmap(_tube_heatmap(grid, z_lo + 100, z_lo + 124), grid) is None  # 24 mm


def test_the_column_must_be_half_as_thick_as_the_target_tube() -> None:
    # The constant: half of the tube's cross-section above the threshold, integrated numerically.
    r = np.arange(-20.0, 20.0, 0.05)
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    above = np.maximum(np.exp(-r2 / (2 * LOCALIZER_TUBE_SIGMA_MM**2)) - LOCALIZER_MIN_PEAK, 0.0)
    tube_mass = above.sum() * 0.05**2 / LOCALIZER_SPACING_MM**2
    assert MIN_COLUMN_SLICE_MASS == pytest.approx(tube_mass / 2, rel=1e-3)
    grid = localizer_grid(CT_GEOMETRY)
    z_lo, _ = grid.ct_z_range_mm()
    tube = _tube_heatmap(grid)
    assert spine_column_seen(tube, grid) and spine_curve_from_heatmap(tube, grid) is not None
    # The same column drawn one voxel thin, at 1.0: no spine at all.
    slices = tube[0, 0].reshape(tube.shape[2], -1)
    thin = np.zeros_like(slices)
    thin[np.arange(len(slices)), slices.argmax(axis=1)] = (slices.max(axis=1) > 0.5).astype(np.float32)
    thin = thin.reshape(tube.shape)
    assert thin.sum() > 50
    assert not spine_column_seen(thin, grid) and spine_curve_from_heatmap(thin, grid) is None
    # A proper column that is only 24 mm long is seen, but too short for a curve.
    short = _tube_heatmap(grid, z_lo + 100, z_lo + 124)
    assert spine_column_seen(short, grid) and spine_curve_from_heatmap(short, grid) is None
    assert not spine_column_seen(np.zeros_like(tube), grid)


def test_heatmap_of_wrong_shape_is_refused() -> None:
    grid = localizer_grid(CT_GEOMETRY)
    with pytest.raises(InputError, match="does not match the localizer grid"):
        spine_curve_from_heatmap(np.zeros((1, 1, 8, 8, 8), np.float32), grid)


# ---------------------------------------------------------------------- detector input


def test_detector_input_of_a_straight_spine() -> None:
    # 1 mm CT whose HU grow with z: the straightened rows read them back
    nz, ny, nx = 150, 120, 110
    hu = (np.arange(nz) * 20 - 1500).astype(np.int16)  # -1500 … 1480: clipped at the low end
    array = np.broadcast_to(hu[:, None, None], (nz, ny, nx)).copy()
    ct = _ct(array, (1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    z = np.arange(-20.0, 200.0, 0.5)
    curve = SpineCurve.from_polyline(np.column_stack([np.full_like(z, 55.0), np.full_like(z, 60.0), z]))
    detector = to_detector_input(ct, curve)
    n_s = detector.grid.n_s
    assert detector.grid.n_v == DETECTOR_WIDTH_PX
    assert n_s == nz
    tensor = detector.tensor
    assert tensor.dtype == np.float32 and tensor.shape == (1, 1, tensor.shape[2], DETECTOR_WIDTH_PX)
    assert tensor.shape[2] % DETECTOR_MULTIPLE == 0 and tensor.shape[2] >= n_s
    assert detector.pad_s == (0, tensor.shape[2] - n_s)
    assert (tensor[0, 0, n_s:] == np.float32(AIR_INPUT)).all()
    row_z = detector.grid.s_mm + curve.positions[0, 2]  # world z of each row = CT voxel z
    expected_hu = np.interp(row_z, np.arange(nz), hu.astype(np.float64))
    np.testing.assert_allclose(detector.sagittal_hu[:, 48], expected_hu, atol=1e-2)
    np.testing.assert_allclose(tensor[0, 0, :n_s, 48], np.clip(expected_hu, *HU_CLIP) * HU_SCALE, atol=1e-5)
    np.testing.assert_allclose(detector.tensor_to_grid(np.array([[10.0, 3.0]])), [[10.0, 3.0]])


def test_imports_numpy_only() -> None:
    heavy = "{'scipy', 'torch', 'SimpleITK', 'tritonclient'}"
    code = (
        "import sys, vfq.preprocess, vfq.detection; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {heavy}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exported_members() -> None:
    import vfq.preprocess as module

    assert all(hasattr(module, name) for name in module.__all__)
