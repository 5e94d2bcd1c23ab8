"""Resampling a CT along the spine curve (curved planar reformation).

The straightened slab is a ``float32`` array of Hounsfield units, shape ``(n_s, n_v, n_w)`` with
axes as in :mod:`vfq.straighten.grid` (for a vertical spine: S, P, L — the CT's ``z, y, x``).
Values are the trilinear interpolation of the CT padded with ``fill_hu`` (−1024 HU, air) on every
side: a sample more than one voxel outside the scan is exactly ``fill_hu``, never 0, and near the
border the scan fades into air over one voxel. ``float32`` keeps the interpolated fractions that
the 2D detector sees; it is what the network consumes, so no rounding back to int16.

World points go through :meth:`ImageGeometry.world_to_voxel` (the inverse affine), so any
direction matrix works; the CT is read in place (eight gathers from its flat view), never copied.
"""

from __future__ import annotations

import numpy as np

from vfq.errors import InputError
from vfq.straighten.curve import SpineCurve
from vfq.straighten.grid import StraightenedGrid
from vfq.volume import CTVolume, ImageGeometry

#: HU of samples outside the scan (air).
AIR_HU = -1024.0
#: Straightened samples computed per block (bounds the temporaries to a few MB).
_BLOCK_POINTS = 1 << 16


def straighten(
    ct: CTVolume, curve: SpineCurve, grid: StraightenedGrid, *, fill_hu: float = AIR_HU
) -> np.ndarray:
    """Resample ``ct`` on the straightened ``grid`` along ``curve``.

    Args:
        ct: the CT (int16 HU, any direction matrix); curve and CT share the world LPS frame.
        curve: the spine curve (world LPS mm).
        grid: the straightened grid.
        fill_hu: value of the space outside the scan (HU).

    Returns:
        ``(n_s, n_v, n_w)`` float32 HU; element ``[i_s, i_v, i_w]`` is the CT at
        :func:`vfq.straighten.grid_to_world` of that index.
    """
    out = np.empty(grid.shape, dtype=np.float32)
    rows = max(1, _BLOCK_POINTS // (grid.n_v * grid.n_w))
    for start in range(0, grid.n_s, rows):
        sl = slice(start, start + rows)
        out[sl] = sample_trilinear(ct.array, *grid_voxels(ct.geometry, curve, grid, sl), fill=fill_hu)
    return out


def grid_voxels(
    geometry: ImageGeometry, curve: SpineCurve, grid: StraightenedGrid, rows: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT voxel indices ``(z, y, x)`` of the straightened grid's samples in ``rows`` (along ``s``).

    Returns:
        Three float64 arrays of shape ``(len(rows), n_v, n_w)``: continuous voxel indices of the CT of
        ``geometry`` at :func:`vfq.straighten.grid_to_world` of each grid index.
    """
    s = grid.s_mm[rows]
    centre = curve.position(s)
    frame = curve.frame(s)
    # world -> voxel is affine: map the curve points, and the unit steps along e2 and e3
    vox_c = geometry.world_to_voxel(centre)
    vox_e2 = geometry.world_to_voxel(centre + frame[:, 1]) - vox_c
    vox_e3 = geometry.world_to_voxel(centre + frame[:, 2]) - vox_c
    v, w = grid.v_mm, grid.w_mm
    z, y, x = (
        vox_c[:, a, None, None] + v[None, :, None] * vox_e2[:, a, None, None] + w * vox_e3[:, a, None, None]
        for a in range(3)
    )
    return z, y, x


def sample_trilinear(
    array: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray, *, fill: float = AIR_HU
) -> np.ndarray:
    """Trilinear samples (float32) of a 3D ``array`` at continuous voxel indices ``(z, y, x)``.

    The array is treated as padded with ``fill``: each of a sample's eight neighbours outside the
    array contributes ``fill``. At integer indices inside the array the result is the voxel value.
    ``z, y, x`` broadcast together; the array is not copied.
    """
    if array.ndim != 3:
        raise InputError(f"expected a 3D array, got shape {array.shape}")
    z, y, x = np.broadcast_arrays(z, y, x)
    shape = z.shape
    axes = []
    inside = True
    for q, n in zip((z, y, x), array.shape, strict=True):
        q = np.asarray(q, dtype=np.float64).ravel()
        q0 = np.floor(q)
        frac = (q - q0).astype(np.float32)
        i0 = q0.astype(np.intp)
        axes.append((i0, frac, n))
        inside = inside and i0.size > 0 and i0.min() >= 0 and i0.max() <= n - 2
    (iz, fz, _), (iy, fy, ny), (ix, fx, nx) = axes

    if inside:
        i0s = (iz, iy, ix)
        i1s = (iz + 1, iy + 1, ix + 1)
        valid = None
    else:
        i0s, i1s, valid = [], [], []
        for i0, _, n in axes:
            i1 = i0 + 1
            valid.append(((i0 >= 0) & (i0 < n), (i1 >= 0) & (i1 < n)))
            i0s.append(np.clip(i0, 0, n - 1))
            i1s.append(np.clip(i1, 0, n - 1))

    fill32 = np.float32(fill)
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        sz, sy = ny * nx, nx
        zoff = (i0s[0] * sz, i1s[0] * sz)
        yoff = (i0s[1] * sy, i1s[1] * sy)
        xoff = (i0s[2], i1s[2])

        def gather(a: int, b: int, c: int) -> np.ndarray:
            return np.take(flat, zoff[a] + yoff[b] + xoff[c]).astype(np.float32)

    else:
        zi, yi, xi = (i0s[0], i1s[0]), (i0s[1], i1s[1]), (i0s[2], i1s[2])

        def gather(a: int, b: int, c: int) -> np.ndarray:
            return array[zi[a], yi[b], xi[c]].astype(np.float32)

    def corner(a: int, b: int, c: int) -> np.ndarray:
        value = gather(a, b, c)
        if valid is not None:
            value = np.where(valid[0][a] & valid[1][b] & valid[2][c], value, fill32)
        return value

    def lerp(lo: np.ndarray, hi: np.ndarray, f: np.ndarray) -> np.ndarray:
        return lo + f * (hi - lo)

    c00 = lerp(corner(0, 0, 0), corner(0, 0, 1), fx)
    c01 = lerp(corner(0, 1, 0), corner(0, 1, 1), fx)
    c10 = lerp(corner(1, 0, 0), corner(1, 0, 1), fx)
    c11 = lerp(corner(1, 1, 0), corner(1, 1, 1), fx)
    result = lerp(lerp(c00, c01, fy), lerp(c10, c11, fy), fz)
    return result.reshape(shape)


def sagittal_image(slab: np.ndarray, grid: StraightenedGrid, thickness_mm: float | None = None) -> np.ndarray:
    """The 2D detector input: the straightened slab averaged over ``w``.

    Args:
        slab: ``(n_s, n_v, n_w)`` HU from :func:`straighten`.
        grid: its grid.
        thickness_mm: average only the samples with ``|w| <= thickness_mm / 2`` (mm, centred on the
            curve); ``None``: the whole slab.

    Returns:
        ``(n_s, n_v)`` float32 HU; pixel ``(i_s, i_v)``, row 0 at the inferior end.
    """
    if slab.shape != grid.shape:
        raise InputError(f"slab shape {slab.shape} does not match the grid {grid.shape}")
    if thickness_mm is None:
        keep = np.ones(grid.n_w, dtype=bool)
    else:
        keep = np.abs(grid.w_mm) <= thickness_mm / 2.0 + 1e-6
        if not keep.any():
            raise InputError(
                f"thickness_mm={thickness_mm} selects no slab sample (spacing {grid.spacing_w_mm} mm, "
                f"n_w={grid.n_w}); use at least the spacing, or None for the whole slab"
            )
    return slab[:, :, keep].mean(axis=2, dtype=np.float32)


def straighten_sagittal(
    ct: CTVolume,
    curve: SpineCurve,
    grid: StraightenedGrid,
    *,
    thickness_mm: float | None = None,
    fill_hu: float = AIR_HU,
) -> np.ndarray:
    """:func:`straighten` then :func:`sagittal_image`: the ``(n_s, n_v)`` float32 HU detector input."""
    return sagittal_image(straighten(ct, curve, grid, fill_hu=fill_hu), grid, thickness_mm)
