"""Training samples of the spine localizer: phantoms on the 4 mm grid, Gaussian-tube targets, augmentation.

A sample is one phantom (:func:`vfq.phantoms.sample_spec` of a seed) on the localizer's coarse grid,
exactly as :mod:`vfq.tensors` defines the network input (``LOCALIZER_INPUT``: axes ``(z, y, x)`` of
the LPS CT, area average to ``LOCALIZER_SPACING_MM``, HU clipped to ``HU_CLIP`` and scaled by
``HU_SCALE``, padded with ``AIR_INPUT`` up to multiples of ``LOCALIZER_MULTIPLE``). Two paths:

* **fast** — render the analytic anatomy directly on a 2 mm grid whose 2×2×2 blocks tile the coarse
  voxels and average the blocks (the DESIGN §5 spike). The image noise is scaled so that after the
  average it matches a full-resolution scan's noise averaged to 4 mm.
* **faithful** — render the full-resolution CT of the field of view and pass it through
  :func:`vfq.preprocess.to_localizer_grid`, which is what the served pipeline feeds the network.

Both use the same coarse geometry (that of ``to_localizer_grid`` for the field-of-view CT), so their
images agree voxel for voxel up to noise and partial-volume detail.

Target: ``exp(-d² / 2σ²)`` with ``d`` the distance (mm, world) from a voxel centre to the
vertebral-body centre line and σ = ``LOCALIZER_TUBE_SIGMA_MM``; zero beyond ``4σ`` and outside the
reconstructed scan (padding, outside the circular field). The centre line is the truth curve of the
phantom from the inferior endplate of L5 to the superior endplate of C7 (the bodies the detector
must see whole), so that the curve fitted to the heatmap spans those bodies completely.

Negatives: a share of seeds (:data:`NEGATIVE_SHARE`) renders the same patient without any skeleton
(target all zero); at training time a share of crops is taken where the target is zero (e.g. the
pelvis below the sacrum in abdominal scans).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from vfq.levels import Level
from vfq.phantoms import Anatomy, PhantomSpec, build_anatomy, field_of_view_geometry, render, sample_spec
from vfq.preprocess import LocalizerGrid, localizer_grid, to_localizer_grid
from vfq.tensors import AIR_INPUT, HU_CLIP, HU_SCALE, LOCALIZER_SPACING_MM, LOCALIZER_TUBE_SIGMA_MM
from vfq.volume import ImageGeometry

#: Share of seeds rendered without a skeleton (negatives whose target is zero everywhere).
NEGATIVE_SHARE = 0.08
#: The fast path renders at this spacing (mm) and averages 2×2×2 blocks.
FAST_RENDER_SPACING_MM = LOCALIZER_SPACING_MM / 2
#: The tube target is cut to zero beyond this many σ.
TUBE_CUTOFF_SIGMAS = 4.0
#: Step (mm) of the densified truth centre line the tube target is measured from.
CENTRE_LINE_STEP_MM = 0.25


@dataclass(frozen=True)
class LocalizerSample:
    """One localizer training sample on the coarse grid (before augmentation).

    Attributes:
        image: ``(Z, Y, X)`` float32 network input units (HU clipped and scaled), padded with
            ``AIR_INPUT``; axes ``(z, y, x)`` of the LPS CT.
        target: ``(Z, Y, X)`` float32 Gaussian tube in ``[0, 1]``.
        support: ``(Z, Y, X)`` bool, the voxels inside the reconstructed scan (not padding, not
            outside the circular field).
        geometry: the coarse grid (padded) in the CT's world frame.
        info: provenance: seed, field of view, path, negative, timing.
    """

    image: np.ndarray
    target: np.ndarray
    support: np.ndarray
    geometry: ImageGeometry
    info: dict[str, Any]


def is_negative_seed(seed: int, share: float = NEGATIVE_SHARE) -> bool:
    """Whether ``seed`` gives a no-skeleton negative (deterministic)."""
    return bool(np.random.default_rng([seed, 101]).random() < share)


def centre_line(anatomy: Anatomy, step_mm: float = CENTRE_LINE_STEP_MM) -> np.ndarray:
    """``(M, 3)`` world LPS mm points of the body centre line from the L5 inferior endplate to the C7
    superior endplate, inferior→superior, ``step_mm`` apart (the truth curve, linearly densified)."""
    curve = anatomy.spine.curve
    lo = anatomy.spine.vertebra(Level.L5).keypoints[4]  # lower-middle keypoint
    hi = anatomy.spine.vertebra(Level.C7).keypoints[1]  # upper-middle keypoint
    i_lo = int(np.argmin(np.linalg.norm(curve - lo, axis=1)))
    i_hi = int(np.argmin(np.linalg.norm(curve - hi, axis=1)))
    part = curve[i_lo : i_hi + 1]
    chords = np.linalg.norm(np.diff(part, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(chords)])
    fine = np.arange(0.0, s[-1] + 1e-9, step_mm)
    return np.stack([np.interp(fine, s, part[:, j]) for j in range(3)], axis=1)


def tube_target(
    line_world: np.ndarray,
    geometry: ImageGeometry,
    sigma_mm: float = LOCALIZER_TUBE_SIGMA_MM,
    cutoff_sigmas: float = TUBE_CUTOFF_SIGMAS,
) -> np.ndarray:
    """Gaussian tube ``exp(-d² / 2σ²)`` around a densely sampled polyline, on a grid.

    ``d`` is the world distance (mm) from each voxel centre to the polyline (the segments next to
    its nearest vertex, found with a k-d tree), so the target honours anisotropic spacing and any
    direction matrix. The polyline must be dense compared with its radius of curvature (the truth
    curve densified to :data:`CENTRE_LINE_STEP_MM`). Zero beyond ``cutoff_sigmas · σ``.

    Returns:
        ``geometry.shape`` float32 in ``[0, 1]``.
    """
    out = np.zeros(geometry.shape, dtype=np.float32)
    line = np.asarray(line_world, dtype=np.float64).reshape(-1, 3)
    if line.shape[0] == 0:
        return out
    reach = cutoff_sigmas * sigma_mm
    step = float(np.linalg.norm(np.diff(line, axis=0), axis=1).max()) if len(line) > 1 else 0.0
    voxels = geometry.world_to_voxel(line)
    margin = reach / np.array(geometry.spacing)
    lo = np.maximum(np.floor(voxels.min(axis=0) - margin), 0).astype(int)
    hi = np.minimum(np.ceil(voxels.max(axis=0) + margin) + 1, geometry.shape).astype(int)
    if (hi <= lo).any():
        return out
    index = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    points = geometry.voxel_to_world(index)
    distance, nearest = cKDTree(line).query(points, distance_upper_bound=reach + step)
    near = np.isfinite(distance)
    distance[near] = _polyline_distance(points[near], line, nearest[near])
    values = np.where(distance <= reach, np.exp(-0.5 * (np.minimum(distance, reach) / sigma_mm) ** 2), 0.0)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = values.reshape(tuple(hi - lo)).astype(np.float32)
    return out


def _polyline_distance(points: np.ndarray, line: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Distance from each point to the two polyline segments at its nearest vertex ``nearest``."""
    best = np.linalg.norm(points - line[nearest], axis=1)
    for a, b in ((nearest - 1, nearest), (nearest, nearest + 1)):
        ok = (a >= 0) & (b < len(line))
        a, b = np.clip(a, 0, len(line) - 1), np.clip(b, 0, len(line) - 1)
        seg = line[b] - line[a]
        length2 = np.maximum(np.einsum("nj,nj->n", seg, seg), 1e-12)
        t = np.clip(np.einsum("nj,nj->n", points - line[a], seg) / length2, 0.0, 1.0)
        d = np.linalg.norm(points - line[a] - t[:, None] * seg, axis=1)
        best = np.where(ok, np.minimum(best, d), best)
    return best


def scan_support(coarse: ImageGeometry, scan: ImageGeometry, circular_field: bool) -> np.ndarray:
    """``coarse.shape`` bool: coarse voxels at least half inside the scan ``scan`` (its voxel box and,
    for ``circular_field``, the circle inscribed in its in-plane extent, as the phantoms render).

    Measured on the 2×2×2 sub-voxel centres of each coarse voxel (axis-aligned grids)."""
    inside = np.zeros(coarse.shape, dtype=np.float32)
    upper = np.array(scan.shape) - 0.5
    _, sy, sx = scan.spacing
    cy, cx = (scan.shape[1] - 1) / 2, (scan.shape[2] - 1) / 2
    radius = min(scan.shape[2] * sx, scan.shape[1] * sy) / 2
    axes = [np.arange(n, dtype=np.float64) for n in coarse.shape]
    for offset in np.array(np.meshgrid(*[[-0.25, 0.25]] * 3, indexing="ij")).reshape(3, -1).T:
        index = [axes[a] + offset[a] for a in range(3)]
        # axis-aligned: each array axis maps to one scan axis independently
        iz = _axis_map(coarse, scan, 0, index[0])
        iy = _axis_map(coarse, scan, 1, index[1])
        ix = _axis_map(coarse, scan, 2, index[2])
        ok_z = (iz >= -0.5) & (iz <= upper[0])
        ok_y = (iy >= -0.5) & (iy <= upper[1])
        ok_x = (ix >= -0.5) & (ix <= upper[2])
        plane = ok_y[:, None] & ok_x[None, :]
        if circular_field:
            plane &= ((iy[:, None] - cy) * sy) ** 2 + ((ix[None, :] - cx) * sx) ** 2 <= radius**2
        inside += ok_z[:, None, None] & plane[None]
    return inside >= 4


def _axis_map(source: ImageGeometry, target: ImageGeometry, axis: int, index: np.ndarray) -> np.ndarray:
    """Continuous index along ``axis`` of ``target`` for indices along the same axis of ``source``
    (both axis-aligned, identity direction)."""
    world_axis = 2 - axis  # array (z, y, x) -> world (x, y, z)
    world = source.origin[world_axis] + index * source.spacing[axis]
    return (world - target.origin[world_axis]) / target.spacing[axis]


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """HU → network units as :mod:`vfq.tensors` defines them (clip to ``HU_CLIP``, scale)."""
    return (np.clip(hu, *HU_CLIP) * HU_SCALE).astype(np.float32)


# ---------------------------------------------------------------------------------- generation


def make_localizer_sample(
    seed: int, *, faithful: bool = False, negative: bool | None = None, spec: PhantomSpec | None = None
) -> LocalizerSample:
    """The localizer sample of ``seed`` (deterministic).

    Args:
        seed: phantom seed (:func:`vfq.phantoms.sample_spec`).
        faithful: render the full-resolution CT and preprocess it as the server does
            (:func:`vfq.preprocess.to_localizer_grid`), instead of rendering at 2 mm and averaging.
        negative: render without a skeleton (target zero); default :func:`is_negative_seed`.
        spec: the phantom instead of ``sample_spec(seed)`` (tests: small scans).
    """
    start = time.perf_counter()
    negative = is_negative_seed(seed) if negative is None else negative
    spec = spec or sample_spec(seed)
    anatomy = build_anatomy(spec)
    scan = field_of_view_geometry(anatomy)
    acq = spec.acquisition
    grid = localizer_grid(scan)
    if faithful:
        ct, _ = render(anatomy, scan, include_skeleton=not negative)
        image = np.asarray(to_localizer_grid(ct).tensor, dtype=np.float32)[0, 0]
    else:
        image = _render_fast(anatomy, grid, negative)
    coarse = grid.geometry
    support = scan_support(coarse, scan, acq.circular_field)
    vz, vy, vx = grid.valid_shape
    support[vz:] = support[:, vy:] = support[:, :, vx:] = False
    if negative:
        target = np.zeros(coarse.shape, dtype=np.float32)
    else:
        target = tube_target(centre_line(anatomy), coarse) * support
    info = {
        "seed": int(seed),
        "kind": "localizer",
        "path": "faithful" if faithful else "fast",
        "negative": bool(negative),
        "field_of_view": spec.field_of_view.value,
        "contrast": spec.contrast.value,
        "fractures": len(spec.fractures),
        "scan_shape": list(scan.shape),
        "scan_spacing": list(scan.spacing),
        "slice_thickness": acq.slice_thickness,
        "shape": list(coarse.shape),
        "valid_shape": list(grid.valid_shape),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return LocalizerSample(
        image=image, target=target.astype(np.float32), support=support, geometry=coarse, info=info
    )


def _render_fast(anatomy: Anatomy, grid: LocalizerGrid, negative: bool) -> np.ndarray:
    """The localizer input rendered at 2 mm on the blocks of the coarse cells and block-averaged:
    ``grid.geometry.shape`` float32 network units, padding ``AIR_INPUT``.

    As in :func:`vfq.preprocess.to_localizer_grid`, HU are clipped before averaging; outside the
    circular reconstruction field the scan is air. Cells overhanging the scan's box show the
    anatomy there (the server averages the part inside; the difference is a partial cell at the
    border). The noise σ is scaled so that after the 2×2×2 average it equals a full-resolution
    voxel's σ averaged over the scan voxels of one 4 mm cell.
    """
    acq = anatomy.spec.acquisition
    coarse, scan = grid.geometry, grid.ct_geometry
    factor = round(LOCALIZER_SPACING_MM / FAST_RENDER_SPACING_MM)
    f = LOCALIZER_SPACING_MM / factor
    origin = tuple(o - LOCALIZER_SPACING_MM / 2 + f / 2 for o in coarse.origin)
    fine = ImageGeometry(shape=tuple(n * factor for n in grid.valid_shape), spacing=(f, f, f), origin=origin)
    per_cell = math.prod(LOCALIZER_SPACING_MM / s for s in scan.spacing)
    noise = acq.noise_hu * math.sqrt(factor**3 / max(per_cell, 1.0))
    ct, _ = render(
        anatomy, fine, replace(acq, noise_hu=noise, circular_field=False), include_skeleton=not negative
    )
    hu = np.clip(ct.array, *HU_CLIP).astype(np.float32)
    if acq.circular_field:
        _, sy, sx = scan.spacing
        iy = _axis_map(fine, scan, 1, np.arange(fine.shape[1]))
        ix = _axis_map(fine, scan, 2, np.arange(fine.shape[2]))
        radius = min(scan.shape[2] * sx, scan.shape[1] * sy) / 2
        dy = (iy[:, None] - (scan.shape[1] - 1) / 2) * sy
        dx = (ix[None, :] - (scan.shape[2] - 1) / 2) * sx
        hu[:, dy**2 + dx**2 > radius**2] = HU_CLIP[0]
    vz, vy, vx = grid.valid_shape
    blocks = hu.reshape(vz, factor, vy, factor, vx, factor).mean(axis=(1, 3, 5))
    image = np.full(coarse.shape, AIR_INPUT, dtype=np.float32)
    image[:vz, :vy, :vx] = blocks * np.float32(HU_SCALE)
    return image


# ---------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class LocalizerAugmentation:
    """Training-time augmentation of a cached coarse sample (all in voxels of the 4 mm grid or HU).

    Attributes:
        crop: output size ``(Z, Y, X)`` voxels (multiples of ``LOCALIZER_MULTIPLE``).
        empty_crop_probability: share of crops placed where the target is zero (when one exists).
        small_field_probability: share of crops reduced in-plane to a small field of view
            (``small_field_voxels``) with the spine anywhere in it, edges included; the rest of the
            crop is air (a small reconstruction field, e.g. a CT angiogram).
        small_field_voxels: in-plane size range of the small field.
        short_z_probability: share of small-field crops also cut short along z (``short_z_voxels``).
        clutter_probability: share of crops that get clutter (DESIGN §5: 70 %).
        clutter_count: number of clutter objects (inclusive range).
        clutter_bright_hu: HU range of bright clutter (contrast vessels, heart chambers, metal-ish).
        clutter_dark_share: share of clutter objects that are air pockets (−1000 HU).
        clutter_radius_mm: radius range of clutter (ellipsoid semi-axes, tube radii).
        clutter_max_target: clutter may not cover voxels whose target exceeds this (the column
            stays visible).
        hu_scale, hu_offset: calibration jitter ``hu' = a·hu + b`` (ranges).
        noise_probability, noise_hu: extra white noise (probability, σ range in HU).
        flip_x_probability: left-right mirror. Only x is flipped: the server always sees LPS
            volumes (the client reorients every input), so a superior-inferior or
            anterior-posterior flip shows the network anatomy that never occurs (the aorta behind
            the column, the head at the bottom) and wastes capacity; left-right mirroring gives
            plausible patients (situs inversus, scoliosis to either side, aorta and liver sides)
            and keeps the network from relying on which side the aorta runs.
    """

    crop: tuple[int, int, int] = (64, 64, 64)
    empty_crop_probability: float = 0.1
    small_field_probability: float = 0.2
    small_field_voxels: tuple[int, int] = (24, 48)
    short_z_probability: float = 0.5
    short_z_voxels: tuple[int, int] = (16, 48)
    clutter_probability: float = 0.7
    clutter_count: tuple[int, int] = (1, 6)
    clutter_bright_hu: tuple[float, float] = (300.0, 2000.0)
    clutter_dark_share: float = 0.25
    clutter_radius_mm: tuple[float, float] = (4.0, 20.0)
    clutter_max_target: float = 0.2
    hu_scale: tuple[float, float] = (0.92, 1.08)
    hu_offset: tuple[float, float] = (-40.0, 40.0)
    noise_probability: float = 0.5
    noise_hu: tuple[float, float] = (0.0, 25.0)
    flip_x_probability: float = 0.5


#: No augmentation, centre crop only (validation).
NO_AUGMENTATION = LocalizerAugmentation(
    empty_crop_probability=0.0,
    small_field_probability=0.0,
    clutter_probability=0.0,
    hu_scale=(1.0, 1.0),
    hu_offset=(0.0, 0.0),
    noise_probability=0.0,
    flip_x_probability=0.0,
)


def augment_localizer(
    image: np.ndarray,
    target: np.ndarray,
    support: np.ndarray,
    rng: np.random.Generator,
    params: LocalizerAugmentation = LocalizerAugmentation(),
    spacing_mm: float = LOCALIZER_SPACING_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """A random training crop of a coarse sample; deterministic given ``rng``.

    Steps: crop (spine anywhere in it, or a spine-free region), small field of view, clutter,
    HU scale/offset, noise, x flip. Voxels outside the scan end up exactly ``AIR_INPUT`` with target 0.

    Returns:
        ``image``, ``target`` of shape ``params.crop`` (float32).
    """
    start = _crop_start(target, rng, params)
    image_c = _take(image, start, params.crop, AIR_INPUT)
    target_c = _take(target, start, params.crop, 0.0)
    support_c = _take(support, start, params.crop, False)
    if rng.random() < params.small_field_probability:
        support_c &= _small_field(target_c, rng, params)
    if rng.random() < params.clutter_probability:
        _add_clutter(image_c, target_c, support_c, rng, params, spacing_mm)
    hu = image_c / np.float32(HU_SCALE)
    hu = hu * np.float32(rng.uniform(*params.hu_scale)) + np.float32(rng.uniform(*params.hu_offset))
    if rng.random() < params.noise_probability:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(*params.noise_hu))
    image_c = np.where(support_c, normalise_hu(hu), np.float32(AIR_INPUT))
    target_c = np.where(support_c, target_c, np.float32(0.0))
    if rng.random() < params.flip_x_probability:
        image_c, target_c = image_c[..., ::-1], target_c[..., ::-1]
    return np.ascontiguousarray(image_c, dtype=np.float32), np.ascontiguousarray(target_c, dtype=np.float32)


def _crop_start(target: np.ndarray, rng: np.random.Generator, params: LocalizerAugmentation) -> np.ndarray:
    shape, crop = np.array(target.shape), np.array(params.crop)
    if rng.random() < params.empty_crop_probability:
        for _ in range(10):
            start = rng.integers(np.minimum(0, shape - crop), np.maximum(shape - crop, 0) + 1)
            if _take(target, start, params.crop, 0.0).max() < 0.05:
                return start
    spine = np.argwhere(target > 0.5)
    if len(spine):  # a tube voxel anywhere in the crop, edges included
        anchor = spine[rng.integers(len(spine))]
        return anchor - rng.integers(0, crop)
    return rng.integers(np.minimum(0, shape - crop), np.maximum(shape - crop, 0) + 1)


def _take(array: np.ndarray, start: np.ndarray, size: tuple[int, int, int], fill: Any) -> np.ndarray:
    """``array[start : start + size]`` with ``fill`` where the window leaves the array."""
    out = np.full(size, fill, dtype=array.dtype)
    src = [slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, size, array.shape)]
    dst = [slice(a.start - s, a.stop - s) for a, s in zip(src, start)]
    if all(a.stop > a.start for a in src):
        out[tuple(dst)] = array[tuple(src)]
    return out


def _small_field(target: np.ndarray, rng: np.random.Generator, params: LocalizerAugmentation) -> np.ndarray:
    """Mask of a small in-plane field (and optionally short z range) holding a spine voxel anywhere."""
    shape = np.array(target.shape)
    spine = np.argwhere(target > 0.5)
    anchor = spine[rng.integers(len(spine))] if len(spine) else rng.integers(0, shape)
    size = np.array(shape)
    size[1:] = rng.integers(params.small_field_voxels[0], params.small_field_voxels[1] + 1, 2)
    if rng.random() < params.short_z_probability:
        size[0] = rng.integers(params.short_z_voxels[0], params.short_z_voxels[1] + 1)
    size = np.minimum(size, shape)
    lo = np.clip(anchor - rng.integers(0, size), 0, shape - size)
    mask = np.zeros(target.shape, dtype=bool)
    mask[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = True
    return mask


def _add_clutter(
    image: np.ndarray,
    target: np.ndarray,
    support: np.ndarray,
    rng: np.random.Generator,
    params: LocalizerAugmentation,
    spacing_mm: float,
) -> None:
    """Drop bright / dark ellipsoids and vertical tubes into ``image`` (network units) in place,
    with a one-voxel partial-volume edge, never over the column (``target > clutter_max_target``)."""
    shape = np.array(image.shape)
    zz, yy, xx = (np.arange(n, dtype=np.float32) * np.float32(spacing_mm) for n in shape)
    zz, yy, xx = zz[:, None, None], yy[None, :, None], xx[None, None, :]
    for _ in range(int(rng.integers(params.clutter_count[0], params.clutter_count[1] + 1))):
        dark = rng.random() < params.clutter_dark_share
        value = -1000.0 if dark else float(rng.uniform(*params.clutter_bright_hu))
        for _attempt in range(5):
            centre = rng.uniform(0, shape * spacing_mm)
            if rng.random() < 0.5:  # ellipsoid
                radii = rng.uniform(*params.clutter_radius_mm, 3).astype(np.float32)
                q = np.sqrt(
                    ((zz - centre[0]) / radii[0]) ** 2
                    + ((yy - centre[1]) / radii[1]) ** 2
                    + ((xx - centre[2]) / radii[2]) ** 2
                )
                alpha = np.clip((1.0 - q) * radii.min() / spacing_mm + 0.5, 0.0, 1.0)
            else:  # a vertical tube, slightly tilted, over a z range
                radius = float(rng.uniform(params.clutter_radius_mm[0], params.clutter_radius_mm[1] * 0.6))
                tilt = rng.normal(0.0, 0.15, 2)
                cy = centre[1] + tilt[0] * (zz - centre[0])
                cx = centre[2] + tilt[1] * (zz - centre[0])
                d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
                half = rng.uniform(20.0, shape[0] * spacing_mm)
                along = np.clip((half - np.abs(zz - centre[0])) / spacing_mm + 0.5, 0.0, 1.0)
                alpha = np.clip((radius - d) / spacing_mm + 0.5, 0.0, 1.0) * along
            alpha = (alpha * support).astype(np.float32)
            if not alpha.any() or (target[alpha > 0] > params.clutter_max_target).any():
                continue
            image += alpha * (np.float32(value * HU_SCALE) - image)
            break
