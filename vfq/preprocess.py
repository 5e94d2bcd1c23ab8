"""Steps 1 and 3 of the ensemble: validate the CT, build the localizer and detector inputs (numpy only).

The pipeline (DESIGN §1, §3)::

    ct = validate_ct(array, spacing)                        # step 1: refuse what is not a CT
    localizer = to_localizer_grid(ct)                       # step 1: [1, 1, Z, Y, X] float32, 4 mm
    heatmap = spine_localizer(localizer.tensor)             # step 2 (network)
    curve = spine_curve_from_heatmap(heatmap, localizer_grid(ct.geometry))   # step 3
    detector = to_detector_input(ct, curve)                 # step 3: [1, 1, S, V] float32

Frames and units (see :mod:`vfq.volume`, :mod:`vfq.straighten`, :mod:`vfq.tensors`):

* CT **voxel** ``(z, y, x)`` of the array that was sent; **world** LPS mm ``(x, y, z)`` from the CT's
  geometry. On the server the geometry is the spacing alone (origin 0, identity direction), so world
  is voxel × spacing there; a client may pass the real origin and direction.
* **coarse voxel** ``(z, y, x)`` of the localizer grid: isotropic :data:`LOCALIZER_SPACING_MM`,
  same direction as the CT, coarse voxel ``(0, 0, 0)`` centred as described in :func:`localizer_grid`.
* **detector pixel** ``(i_s, i_v)`` of the ``[1, 1, S, V]`` tensor: rows along the spine
  (inferior→superior), columns along ``e2`` (posterior). Rows ``0 … n_s - 1`` are rows of the
  straightened image (:class:`~vfq.straighten.StraightenedGrid` indices); the rows after them are
  padding (:attr:`DetectorInput.pad_s`).

Everything here is numpy only (it runs inside Triton's python backend) and never copies the CT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vfq.errors import InputError, NotCTError
from vfq.straighten import (
    SpineCurve,
    StraightenedGrid,
    column_points_from_heatmap,
    column_track,
    default_grid,
    fit_spine_curve,
    straighten_sagittal,
)
from vfq.tensors import (
    AIR_INPUT,
    DETECTOR_MULTIPLE,
    DETECTOR_PIXEL_MM,
    DETECTOR_SLAB_MM,
    DETECTOR_WIDTH_PX,
    HU_CLIP,
    HU_SCALE,
    LOCALIZER_MIN_PEAK,
    LOCALIZER_MULTIPLE,
    LOCALIZER_SPACING_MM,
    LOCALIZER_TUBE_SIGMA_MM,
)
from vfq.volume import CTVolume, ImageGeometry

__all__ = [
    "CT_AIR_HU",
    "CT_BONE_HU",
    "CT_FAT_HU",
    "MAX_EXTENT_MM",
    "MAX_SHAPE",
    "MAX_SPACING_MM",
    "MIN_AIR_FRACTION",
    "MIN_BONE_FRACTION",
    "MIN_COLUMN_SLICE_MASS",
    "MIN_FAT_FRACTION",
    "MIN_SPACING_MM",
    "MIN_SPINE_EXTENT_MM",
    "DetectorInput",
    "LocalizerGrid",
    "LocalizerInput",
    "localizer_grid",
    "localizer_input",
    "localizer_weights",
    "spine_column_seen",
    "spine_curve_from_heatmap",
    "to_detector_input",
    "to_localizer_grid",
    "validate_ct",
]

# ---------------------------------------------------------------------- validation limits

#: Largest accepted CT, voxels ``(z, y, x)`` (2048 × 1024 × 1024 int16 = 4 GiB).
MAX_SHAPE: tuple[int, int, int] = (2048, 1024, 1024)
#: Accepted voxel size: each spacing must lie in ``(MIN_SPACING_MM, MAX_SPACING_MM]``.
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0
#: Largest accepted extent of the scan (mm, ``(z, y, x)``, voxel count × spacing): a whole body
#: along z, an extended field of view in plane. Every accepted CT fits the TensorRT profiles.
MAX_EXTENT_MM: tuple[float, float, float] = (2048.0, 768.0, 768.0)

#: CT plausibility (see :func:`validate_ct`): HU at or below which a voxel counts as air or lung.
CT_AIR_HU = -500
#: HU interval ``[lo, hi]`` counted as fat.
CT_FAT_HU: tuple[int, int] = (-200, -30)
#: HU at or above which a voxel counts as bone (or contrast, metal).
CT_BONE_HU = 200
#: Fractions of the sampled voxels that make a volume CT-like.
MIN_AIR_FRACTION = 0.01
MIN_FAT_FRACTION = 0.01
MIN_BONE_FRACTION = 0.001
#: About this many voxels are sampled (regular strides) for the plausibility statistics.
_SAMPLE_VOXELS = 1 << 20

#: A heatmap whose column points span less than this in world z (mm) holds no usable spine.
MIN_SPINE_EXTENT_MM = 40.0
#: Half of what the localizer's target, a Gaussian tube of σ = ``LOCALIZER_TUBE_SIGMA_MM``, holds
#: above ``LOCALIZER_MIN_PEAK`` (= t) in an axial slice that it crosses at right angles, in the units
#: of :func:`vfq.straighten.column_points_from_heatmap` (heatmap units × coarse voxels): the tube
#: holds 2πσ²(1 − t + t ln t) / (4 mm)² ≈ 3.3 (a slanted one more), so this is ≈ 1.7. A heatmap
#: column whose slices hold less than this over half its length or more (the median) is less than
#: half as thick as the column the network was taught to draw — a few bright voxels, not a spine.
#: Measured with the shipped localizer: the spines of six held-out phantoms and of the two real scans
#: give medians of 8.6-11.9; two localizers of other recipes (model card) that lit up volumes of
#: random HU gave 0.03-1.6 there.
MIN_COLUMN_SLICE_MASS = (
    math.pi
    * LOCALIZER_TUBE_SIGMA_MM**2
    * (1.0 - LOCALIZER_MIN_PEAK + LOCALIZER_MIN_PEAK * math.log(LOCALIZER_MIN_PEAK))
    / LOCALIZER_SPACING_MM**2
)


# ---------------------------------------------------------------------- step 1: validation


def validate_ct(
    array: np.ndarray, spacing: Sequence[float] | np.ndarray, *, check_values: bool = True
) -> CTVolume:
    """Check a CT request and wrap it, without copying, as a :class:`~vfq.volume.CTVolume`.

    Args:
        array: ``(nz, ny, nx)`` int16 Hounsfield units, axes ``(z, y, x)`` of an LPS volume: a
            numpy array, or a tensor on a device (torch, in the python steps' device path), which
            stays where it is (only the values check's subsample of ~2 MB comes to the host).
        spacing: voxel size ``(z, y, x)`` in mm.
        check_values: also check that the values look like CT (:class:`NotCTError`); a step that
            follows one which checked them skips it.

    Returns:
        The CT with geometry ``ImageGeometry(shape, spacing)`` (origin 0, identity direction): the
        server's world frame is voxel × spacing.

    Raises:
        InputError: not 3D, empty, fewer than 2 voxels on an axis, dtype other than int16, spacing
            not 3 finite values in ``(0.1, 20]`` mm, larger than :data:`MAX_SHAPE` voxels or
            :data:`MAX_EXTENT_MM` mm.
        NotCTError: (an :class:`InputError`) the values do not look like CT in HU. The rule, on a
            regular subsample of about 10⁶ voxels: a CT has at least 1 % air/lung/outside-the-field
            voxels (≤ -500 HU), or — a tight field of view without air — at least 1 % fat
            (-200…-30 HU) together with at least 0.1 % bone (≥ 200 HU). MR images, and CT whose
            rescale slope/intercept was not applied (air ≈ 0), have no negative values and fail.
    """
    arr = array if _on_device(array) else np.asarray(array)
    shape = tuple(int(n) for n in arr.shape)
    if len(shape) != 3:
        raise InputError(f"CT must be a 3D array (z, y, x), got {len(shape)} dimension(s) of shape {shape}")
    if math.prod(shape) == 0:
        raise InputError(f"CT is empty: shape {shape}")
    if min(shape) < 2:
        raise InputError(
            f"CT must have at least 2 voxels along each axis (z, y, x), got shape {shape}; "
            "a single slice or line is not a volume"
        )
    dtype = str(arr.dtype).removeprefix("torch.")
    if dtype != "int16":
        raise InputError(
            f"CT must be int16 Hounsfield units, got dtype {dtype}; convert to HU and round to int16"
        )
    spacing_zyx = _validate_spacing(spacing)
    if any(n > m for n, m in zip(shape, MAX_SHAPE)):
        raise InputError(
            f"CT of shape (z, y, x) = {shape} exceeds the limit {MAX_SHAPE} voxels; "
            "crop it to the spine or resample it to thicker slices"
        )
    extent = tuple(n * sp for n, sp in zip(shape, spacing_zyx))
    if any(e > m for e, m in zip(extent, MAX_EXTENT_MM)):
        raise InputError(
            f"CT extent (z, y, x) = ({extent[0]:.0f}, {extent[1]:.0f}, {extent[2]:.0f}) mm exceeds the limit "
            f"{MAX_EXTENT_MM} mm (voxels × spacing); check the spacing, or crop the scan to the spine"
        )
    if check_values:
        _check_looks_like_ct(arr)
    return CTVolume(array=arr, geometry=ImageGeometry(shape=shape, spacing=spacing_zyx))


def _validate_spacing(spacing: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    try:
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be 3 numbers (z, y, x) in mm, got {spacing!r}") from None
    if values.shape != (3,):
        raise InputError(f"spacing must be 3 values (z, y, x) in mm, got {values.size}: {values.tolist()}")
    ok = np.isfinite(values) & (values > MIN_SPACING_MM) & (values <= MAX_SPACING_MM)
    if not ok.all():
        raise InputError(
            f"spacing must be 3 finite values in ({MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm (z, y, x), "
            f"got {values.tolist()}"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def _on_device(array: object) -> bool:
    """Whether ``array`` is a tensor of an array library with devices (torch: it has ``cpu()``)."""
    return not isinstance(array, np.ndarray) and callable(getattr(array, "cpu", None))


def host_array(array: object) -> np.ndarray:
    """``array`` as a numpy array: itself, without a copy, unless it is a tensor on a device (a
    torch tensor: anything with a ``cpu()`` method), which is copied to the host."""
    return np.asarray(array.cpu() if _on_device(array) else array)  # type: ignore[attr-defined]


def _check_looks_like_ct(arr: np.ndarray) -> None:
    """Refuse values that are not CT in HU (rule in :func:`validate_ct`), on a strided subsample."""
    step = max(1, math.ceil((math.prod(arr.shape) / _SAMPLE_VOXELS) ** (1.0 / 3.0)))
    sample = host_array(arr[::step, ::step, ::step])  # a view (a ~2 MB copy from a device)
    n = sample.size
    air = np.count_nonzero(sample <= CT_AIR_HU) / n
    fat = np.count_nonzero((sample >= CT_FAT_HU[0]) & (sample <= CT_FAT_HU[1])) / n
    bone = np.count_nonzero(sample >= CT_BONE_HU) / n
    if air >= MIN_AIR_FRACTION or (fat >= MIN_FAT_FRACTION and bone >= MIN_BONE_FRACTION):
        return
    raise NotCTError(
        "the volume does not look like CT in Hounsfield units: of the sampled voxels "
        f"{air:.2%} are ≤ {CT_AIR_HU} HU (air, lung; expected ≥ {MIN_AIR_FRACTION:.0%}), "
        f"{fat:.2%} in {list(CT_FAT_HU)} HU (fat) and {bone:.2%} ≥ {CT_BONE_HU} HU (bone; a field of view "
        f"without air needs ≥ {MIN_FAT_FRACTION:.0%} fat and ≥ {MIN_BONE_FRACTION:.1%} bone); "
        f"values range {int(sample.min())}…{int(sample.max())}. An MR image, or a CT whose rescale "
        "slope/intercept was not applied (air near 0 instead of -1000), looks like this: send CT in HU"
    )


# ---------------------------------------------------------------------- step 1: localizer input


@dataclass(frozen=True, eq=False)
class LocalizerGrid:
    """The coarse grid of the localizer input and output, and the CT it was made from.

    Attributes:
        geometry: geometry of the padded ``(Z, Y, X)`` coarse grid: isotropic
            :data:`~vfq.tensors.LOCALIZER_SPACING_MM`, the CT's direction, origin = world LPS mm
            ``(x, y, z)`` of the centre of coarse voxel ``(0, 0, 0)``. Its shape is the tensor's.
        valid_shape: ``(z, y, x)`` number of coarse voxels that hold CT data; those beyond are padding.
        ct_geometry: geometry of the CT.
    """

    geometry: ImageGeometry
    valid_shape: tuple[int, int, int]
    ct_geometry: ImageGeometry

    def coarse_to_ct_voxel(self, coarse: np.ndarray) -> np.ndarray:
        """CT voxel ``(z, y, x)`` ``(..., 3)`` of coarse voxel indices ``(z, y, x)`` ``(..., 3)``."""
        return self.ct_geometry.world_to_voxel(self.geometry.voxel_to_world(coarse))

    def ct_z_range_mm(self) -> tuple[float, float]:
        """World z interval (mm) covered by the CT's voxels, outer voxel faces included."""
        shape = np.array(self.ct_geometry.shape, dtype=np.float64)
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1).T
        z = self.ct_geometry.voxel_to_world(corners)[:, 2]
        return float(z.min()), float(z.max())


@dataclass(frozen=True, eq=False)
class LocalizerInput:
    """The spine localizer's input tensor and its grid.

    Attributes:
        tensor: ``[1, 1, Z, Y, X]`` float32 ``LOCALIZER_INPUT``: area-averaged HU, clipped to
            ``HU_CLIP``, times ``HU_SCALE``; padding (beyond ``grid.valid_shape``) is ``AIR_INPUT``.
        grid: where its voxels lie.
    """

    tensor: np.ndarray
    grid: LocalizerGrid

    @property
    def geometry(self) -> ImageGeometry:
        """Geometry of the padded coarse grid (also that of the localizer's heatmap)."""
        return self.grid.geometry


@dataclass(frozen=True)
class _AxisCells:
    """Area-averaging of one axis: ``weights[j, k]`` = fraction of coarse cell ``j`` covered by voxel ``k``
    (rows sum to 1), and the input voxel index of coarse cell 0's centre."""

    weights: np.ndarray
    first_center: float


def _axis_cells(n: int, spacing_mm: float, cell_mm: float) -> _AxisCells:
    """Coarse cells of ``cell_mm`` centred on an axis of ``n`` voxels of ``spacing_mm``.

    The cells cover the voxels' extent ``n · spacing_mm`` (faces included) with ``ceil(extent / cell)``
    cells, centred so that the overhang is split equally between both ends. A cell's weights are
    the lengths of its overlaps with the voxels divided by the length it shares with the scan, so
    an end cell is the mean of the part that lies inside.
    """
    extent = n * spacing_mm
    n_cells = max(1, math.ceil(extent / cell_mm - 1e-9))
    start = -(n_cells * cell_mm - extent) / 2.0  # mm from the first voxel's outer face
    borders = start + cell_mm * np.arange(n_cells + 1)
    lo, hi = borders[:-1, None], borders[1:, None]
    faces = spacing_mm * np.arange(n + 1)
    overlap = np.minimum(hi, faces[None, 1:]) - np.maximum(lo, faces[None, :-1])
    overlap = np.maximum(overlap, 0.0)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    first_center = (start + cell_mm / 2.0) / spacing_mm - 0.5
    return _AxisCells(weights=weights, first_center=first_center)


def localizer_grid(ct_geometry: ImageGeometry) -> LocalizerGrid:
    """The coarse localizer grid of a CT (no resampling): what step 3 needs to read the heatmap.

    Along each axis the CT's extent (``n · spacing``, outer voxel faces included) is covered by
    ``ceil(extent / 4 mm)`` cells centred on it (the overhang split equally between both ends);
    then each axis is padded at its end up to a multiple of :data:`~vfq.tensors.LOCALIZER_MULTIPLE`.
    Coarse voxel ``i`` along an axis has its centre at CT voxel index
    ``first_center + i · 4 mm / spacing``.
    """
    cells = [_axis_cells(n, s, LOCALIZER_SPACING_MM) for n, s in zip(ct_geometry.shape, ct_geometry.spacing)]
    nz, ny, nx = (int(c.weights.shape[0]) for c in cells)
    valid = (nz, ny, nx)
    padded = (
        _round_up(nz, LOCALIZER_MULTIPLE),
        _round_up(ny, LOCALIZER_MULTIPLE),
        _round_up(nx, LOCALIZER_MULTIPLE),
    )
    origin = ct_geometry.voxel_to_world(np.array([c.first_center for c in cells]))
    geometry = ImageGeometry(
        shape=padded,
        spacing=(LOCALIZER_SPACING_MM,) * 3,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=ct_geometry.direction,
    )
    return LocalizerGrid(geometry=geometry, valid_shape=valid, ct_geometry=ct_geometry)


def to_localizer_grid(ct: CTVolume) -> LocalizerInput:
    """The localizer input: the CT area-averaged onto the 4 mm grid of :func:`localizer_grid`.

    Each coarse voxel is the mean of the CT over its 4 mm cell (voxels partly inside the cell count
    with the fraction inside; an end cell averages the part inside the scan). HU are clipped to
    ``HU_CLIP`` voxel by voxel *before* averaging, so that outside-the-field padding (-3024 HU) and
    metal do not bleed into their neighbours; the mean of clipped values lies within ``HU_CLIP``.
    The result is scaled by ``HU_SCALE`` and padded with ``AIR_INPUT``.

    Separable and O(N): one pass over the int16 CT plane by plane along z, summing the few weighted
    planes of each coarse cell, then banded matrix products (blocks of 16 cells) along y and x on
    chunks of 8 coarse planes; with slices of 4 mm or thicker the in-plane axes go first and z last.
    The CT is read once and never copied; temporaries are a few planes. About 50-100 ms for a
    512 × 512 × 300 CT on 2 cores.

    Returns:
        The ``[1, 1, Z, Y, X]`` float32 tensor and its grid (world LPS mm of every coarse voxel).
    """
    weights_z, weights_y, weights_x = localizer_weights(ct.geometry)
    wz = weights_z.astype(np.float32)
    y_blocks = _band_blocks(weights_y)
    x_blocks = _band_blocks(weights_x * HU_SCALE)  # the scale rides on the last product
    a = ct.array
    lo, hi = int(HU_CLIP[0]), int(HU_CLIP[1])
    nz, ny, nx = a.shape
    my, mx = weights_y.shape[0], weights_x.shape[0]
    buffer = np.empty((_CHUNK_PLANES, ny, nx), dtype=np.float32)
    term = np.empty((ny, nx), dtype=np.float32)
    if wz.shape[0] < nz:  # z shrinks: each coarse plane from the few CT planes of its cell
        small = np.empty((wz.shape[0], my, mx), dtype=np.float32)
        for j0 in range(0, wz.shape[0], _CHUNK_PLANES):
            count = min(_CHUNK_PLANES, wz.shape[0] - j0)
            for i in range(count):
                (ks,) = np.nonzero(wz[j0 + i])
                for n, k in enumerate(ks):
                    np.clip(a[k], lo, hi, out=term)
                    if n == 0:
                        np.multiply(term, wz[j0 + i, k], out=buffer[i])
                    else:
                        term *= wz[j0 + i, k]
                        buffer[i] += term
            small[j0 : j0 + count] = _in_plane(buffer[:count], y_blocks, x_blocks, my, mx)
    else:  # slices of 4 mm or thicker: in-plane first, chunk by chunk, then z (small)
        planes = np.empty((nz, my, mx), dtype=np.float32)
        for k0 in range(0, nz, _CHUNK_PLANES):
            count = min(_CHUNK_PLANES, nz - k0)
            np.clip(a[k0 : k0 + count], lo, hi, out=buffer[:count])
            planes[k0 : k0 + count] = _in_plane(buffer[:count], y_blocks, x_blocks, my, mx)
        small = np.tensordot(wz, planes, axes=1).astype(np.float32, copy=False)
    return localizer_input(small, localizer_grid(ct.geometry))


def localizer_weights(ct_geometry: ImageGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The area-averaging matrices of :func:`to_localizer_grid`, one per axis ``(z, y, x)``: float64
    ``(coarse cells, CT voxels)``, row ``j`` the fraction of coarse cell ``j`` each voxel covers."""
    wz, wy, wx = (
        _axis_cells(n, s, LOCALIZER_SPACING_MM).weights
        for n, s in zip(ct_geometry.shape, ct_geometry.spacing)
    )
    return wz, wy, wx


def localizer_input(scaled_means: np.ndarray, grid: LocalizerGrid) -> LocalizerInput:
    """The localizer input from the scaled cell means ``(z, y, x)`` float32 of :func:`to_localizer_grid`
    (on ``grid.valid_shape``): clipped to the scaled ``HU_CLIP`` (rounding only) and padded with
    ``AIR_INPUT`` to the grid's shape."""
    np.clip(scaled_means, HU_CLIP[0] * HU_SCALE, HU_CLIP[1] * HU_SCALE, out=scaled_means)
    tensor = np.full((1, 1, *grid.geometry.shape), AIR_INPUT, dtype=np.float32)
    tensor[0, 0, : grid.valid_shape[0], : grid.valid_shape[1], : grid.valid_shape[2]] = scaled_means
    return LocalizerInput(tensor=tensor, grid=grid)


#: CT planes handled at once by :func:`to_localizer_grid` (bounds its float32 temporaries).
_CHUNK_PLANES = 8
#: Coarse cells per block of the banded in-plane products.
_BLOCK_CELLS = 16


def _band_blocks(weights: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """Split a banded ``(m, n)`` weight matrix into row blocks ``(j0, j1, k0, k1, W[j0:j1, k0:k1])``
    holding all its non-zeros, so that each block is a small dense product."""
    blocks = []
    for j0 in range(0, weights.shape[0], _BLOCK_CELLS):
        j1 = min(weights.shape[0], j0 + _BLOCK_CELLS)
        (ks,) = np.nonzero(weights[j0:j1].any(axis=0))
        k0, k1 = int(ks[0]), int(ks[-1]) + 1
        blocks.append((j0, j1, k0, k1, np.ascontiguousarray(weights[j0:j1, k0:k1], dtype=np.float32)))
    return blocks


def _in_plane(
    chunk: np.ndarray,
    y_blocks: list[tuple[int, int, int, int, np.ndarray]],
    x_blocks: list[tuple[int, int, int, int, np.ndarray]],
    my: int,
    mx: int,
) -> np.ndarray:
    """``(c, my, mx)`` float32: the banded weights along y (axis 1), then x (axis 2), of ``(c, ny, nx)``."""
    c, _, nx = chunk.shape
    rows = np.empty((c, my, nx), dtype=np.float32)
    for j0, j1, k0, k1, w in y_blocks:
        np.matmul(w, chunk[:, k0:k1, :], out=rows[:, j0:j1, :])
    out = np.empty((c, my, mx), dtype=np.float32)
    for j0, j1, k0, k1, w in x_blocks:
        out[:, :, j0:j1] = rows[:, :, k0:k1] @ w.T
    return out


def _round_up(n: int, multiple: int) -> int:
    return int(-(-n // multiple) * multiple)


# ---------------------------------------------------------------------- step 3: the curve


def spine_curve_from_heatmap(heatmap: np.ndarray, grid: LocalizerGrid) -> SpineCurve | None:
    """Fit the spine curve to the localizer's heatmap; ``None`` when the scan shows no spine.

    Per-slice weighted centroids of the heatmap above :data:`~vfq.tensors.LOCALIZER_MIN_PEAK`
    (:func:`vfq.straighten.column_points_from_heatmap`, padding masked out), less the runs of them
    off the column's track (:func:`vfq.straighten.column_track`), go into the robust fit
    (:func:`vfq.straighten.fit_spine_curve`) with ``z_range_mm`` = the CT's world z extent, so the
    curve spans the whole scan (beyond the column points it continues straight).

    Args:
        heatmap: ``[1, 1, Z, Y, X]`` or ``(Z, Y, X)`` localizer output on ``grid.geometry``.
        grid: the localizer grid of the CT (:func:`localizer_grid`).

    Returns:
        The curve (world LPS mm, inferior→superior, 1 mm steps), or ``None`` if no column is seen
        (:func:`spine_column_seen`) or its points span less than :data:`MIN_SPINE_EXTENT_MM` in
        world z.
    """
    points, weights = _column_points(heatmap, grid)
    if points.shape[0] < 4 or float(np.ptp(points[:, 2])) < MIN_SPINE_EXTENT_MM:
        return None
    return fit_spine_curve(
        points, weights, min_extent_mm=MIN_SPINE_EXTENT_MM, z_range_mm=grid.ct_z_range_mm()
    )


def spine_column_seen(heatmap: np.ndarray, grid: LocalizerGrid) -> bool:
    """Whether the localizer's heatmap shows a vertebral column at all, however short: its peak
    reaches :data:`~vfq.tensors.LOCALIZER_MIN_PEAK` and the slices of its column hold, as a median,
    at least :data:`MIN_COLUMN_SLICE_MASS` above it (arguments as :func:`spine_curve_from_heatmap`)."""
    return _column_points(heatmap, grid)[0].shape[0] > 0


def _column_points(heatmap: np.ndarray, grid: LocalizerGrid) -> tuple[np.ndarray, np.ndarray]:
    """The column's on-track points (world LPS mm) and slice masses; none when no column is seen."""
    hm = np.asarray(heatmap)
    while hm.ndim > 3 and hm.shape[0] == 1:
        hm = hm[0]
    if hm.shape != grid.geometry.shape:
        raise InputError(
            f"heatmap of shape {np.shape(heatmap)} does not match the localizer grid {grid.geometry.shape}"
        )
    vz, vy, vx = grid.valid_shape
    valid = np.zeros(hm.shape, dtype=np.float32)
    valid[:vz, :vy, :vx] = hm[:vz, :vy, :vx]
    if not np.isfinite(valid).all():
        raise InputError("the localizer heatmap holds NaN or infinite values")
    none = np.empty((0, 3)), np.empty(0)
    if float(valid.max()) < LOCALIZER_MIN_PEAK:
        return none
    points, weights = column_points_from_heatmap(valid, grid.geometry, threshold=LOCALIZER_MIN_PEAK)
    on_track = column_track(points, weights)
    points, weights = points[on_track], weights[on_track]
    if not points.shape[0] or float(np.median(weights)) < MIN_COLUMN_SLICE_MASS:
        return none
    return points, weights


# ---------------------------------------------------------------------- step 3: detector input


@dataclass(frozen=True, eq=False)
class DetectorInput:
    """The vertebra detector's input and how its pixels map back to the CT.

    Attributes:
        tensor: ``[1, 1, S, V]`` float32 ``DETECTOR_INPUT``: the straightened sagittal image, HU
            clipped to ``HU_CLIP`` times ``HU_SCALE``; rows padded with ``AIR_INPUT``.
        grid: the straightened grid; tensor pixel ``(i_s, i_v)`` is grid index
            ``(i_s - pad_s[0], i_v)`` on the slab's mid-plane.
        curve: the spine curve (world LPS mm).
        sagittal_hu: ``(n_s, n_v)`` float32 HU, the unnormalised, unpadded straightened image (for the
            overlay picture): pixel ``(i_s, i_v)`` of the grid, row 0 inferior.
        pad_s: rows of padding ``(before, after)`` the image in the tensor (before is 0: padding is
            appended at the superior end).
    """

    tensor: np.ndarray
    grid: StraightenedGrid
    curve: SpineCurve
    sagittal_hu: np.ndarray
    pad_s: tuple[int, int]

    def tensor_to_grid(self, points_sv: np.ndarray) -> np.ndarray:
        """Straightened-grid pixels ``(i_s, i_v)`` ``(..., 2)`` of tensor pixels ``(..., 2)``."""
        p = np.array(points_sv, dtype=np.float64)
        p[..., 0] -= self.pad_s[0]
        return p


def to_detector_input(
    ct: CTVolume,
    curve: SpineCurve,
    sample: Callable[[CTVolume, SpineCurve, StraightenedGrid], np.ndarray] = straighten_sagittal,
) -> DetectorInput:
    """Straighten the CT along ``curve`` into the detector's ``[1, 1, S, V]`` input.

    The grid is :func:`vfq.straighten.default_grid` with ``DETECTOR_WIDTH_PX`` columns of
    ``DETECTOR_PIXEL_MM``, rows every ``DETECTOR_PIXEL_MM`` along the curve where it lies in the scan,
    and a ``DETECTOR_SLAB_MM`` slab averaged over its thickness (:func:`straighten_sagittal`:
    trilinear samples, air outside the scan). HU are clipped to ``HU_CLIP`` after sampling and
    scaled by ``HU_SCALE``; rows are padded at the superior end to a multiple of
    ``DETECTOR_MULTIPLE`` with ``AIR_INPUT``. ``sample`` makes the ``(n_s, n_v)`` HU image of the grid
    (another device's implementation of :func:`straighten_sagittal`, say).

    Raises:
        InputError: the curve does not pass through the scan.
    """
    grid = default_grid(
        curve,
        ct.geometry,
        width_mm=DETECTOR_WIDTH_PX * DETECTOR_PIXEL_MM,
        thickness_mm=DETECTOR_SLAB_MM,
        pixel_mm=DETECTOR_PIXEL_MM,
        step_mm=DETECTOR_PIXEL_MM,
    )
    sagittal = sample(ct, curve, grid)
    n_s, n_v = sagittal.shape
    if n_v % DETECTOR_MULTIPLE:
        raise InputError(f"detector width {n_v} px is not a multiple of {DETECTOR_MULTIPLE}")
    padded_s = _round_up(n_s, DETECTOR_MULTIPLE)
    tensor = np.full((1, 1, padded_s, n_v), AIR_INPUT, dtype=np.float32)
    np.clip(sagittal, HU_CLIP[0], HU_CLIP[1], out=tensor[0, 0, :n_s])
    tensor[0, 0, :n_s] *= np.float32(HU_SCALE)
    return DetectorInput(
        tensor=tensor, grid=grid, curve=curve, sagittal_hu=sagittal, pad_s=(0, padded_s - n_s)
    )
