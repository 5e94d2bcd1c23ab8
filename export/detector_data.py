"""Training samples of the vertebra detector: straightened phantoms, keypoint targets, augmentation.

A sample is one phantom (:func:`vfq.phantoms.sample_spec` of a seed) rendered at its own spacing
and slice thickness on a grid cut in-plane around the spine (:data:`CROP_MARGIN_MM` around the
truth curve, the whole z range of the field of view; a crop of the field-of-view CT, voxel for
voxel), straightened along a spine curve that carries a realistic localizer error
(:class:`CurveError`) by :func:`vfq.preprocess.to_detector_input` — exactly the served step 3 —
with every truth vertebra's six keypoints mapped into the detector image.

Positives are the vertebrae of ``DETECTOR_LEVEL_CLASSES`` (C7…L5) that lie fully in view and
whole inside the image; the others (C3–C6, bodies cut by the scan or the image) are kept as
invalid: :func:`vfq.detection.encode_targets` makes their neighbourhood ignored by the heatmap
loss and gives them no offset or level targets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from vfq.detection import DetectorTargets, classes_of_levels, encode_targets
from vfq.export.localizer_data import _axis_map, centre_line, normalise_hu
from vfq.genant import genant
from vfq.keypoints import heights_mm, points_inside
from vfq.phantoms import PhantomSpec, build_anatomy, field_of_view_geometry, ground_truth, render, sample_spec
from vfq.preprocess import MIN_SPINE_EXTENT_MM, localizer_grid, to_detector_input
from vfq.straighten import SpineCurve, fit_spine_curve, world_to_grid
from vfq.tensors import AIR_INPUT, DETECTOR_MULTIPLE, HU_SCALE, LOCALIZER_SPACING_MM
from vfq.volume import ImageGeometry

#: Offset-loss weight per unit of Genant height loss above ``NORMAL_LOSS_FLOOR``
#: (:func:`deformity_weights`): a 22 % wedge weighs 3.4, a 50 % one 9.
DEFORMITY_WEIGHT = 20.0
#: Height loss below which a body keeps weight 1 (normal bodies reach up to 0.16).
NORMAL_LOSS_FLOOR = 0.10
#: In-plane margin (mm) of the rendered grid around the truth curve's x/y range.
CROP_MARGIN_MM = 70.0
#: A positive's keypoints lie at least this many pixels inside the straightened image.
EDGE_MARGIN_PX = 1.0


@dataclass(frozen=True)
class CurveError:
    """The localizer error put on the spine curve of a detector sample (world mm).

    The served curve is a robust smoothing fit through per-slice heatmap centroids on the 4 mm
    grid (:func:`vfq.preprocess.spine_curve_from_heatmap`); the simulation fits the same way through
    points of the truth centre line, one per ``point_step_mm`` of z, each moved in-plane by

    - white noise of σ ``jitter_sigma_mm`` (slice-to-slice centroid jitter), plus
    - a smooth drift of σ ``drift_sigma_mm``: white noise smoothed along z by a Gaussian of σ
      ``drift_length_mm`` and rescaled to that σ. Neighbouring slices' centroids come from the same
      blob of heatmap, so the served error is mostly of this kind; with it the fit's robust residual
      scale sits near its floor as it does when serving, and the fit treats a sharp bend (the
      lumbosacral one) as it will be treated when serving. White noise of the same size instead
      widens the robust scale and lets the training curves follow bends the served ones cut;

    and, with probability ``offset_probability``, a smooth in-plane offset ``a·sin(2πz/λ + φ)`` of
    amplitude ``offset_mm`` and wavelength ``wavelength_mm`` along a random direction (a heatmap
    pulled by a neighbouring structure over several vertebrae). The ends of the point run move by
    up to ``end_jitter_mm`` (where the heatmap fades out).
    """

    point_step_mm: float = LOCALIZER_SPACING_MM
    jitter_sigma_mm: float = 0.4
    drift_sigma_mm: float = 1.5
    drift_length_mm: float = 12.0
    offset_probability: float = 0.3
    offset_mm: tuple[float, float] = (2.0, 5.0)
    wavelength_mm: tuple[float, float] = (150.0, 400.0)
    end_jitter_mm: float = 8.0


@dataclass(frozen=True)
class DetectorSample:
    """One detector training sample (before augmentation).

    Attributes:
        image: ``(S, V)`` float32 network units, the ``DETECTOR_INPUT`` tensor of
            :func:`vfq.preprocess.to_detector_input` (rows beyond ``n_s`` are padding).
        n_s: rows of straightened image (the rest is padding).
        keypoints_sv: ``(N, 6, 2)`` float32 detector pixels ``(i_s, i_v)`` of the truth vertebrae
            (cranio-caudal order, C3 first).
        levels: ``(N,)`` int64 class index into ``DETECTOR_LEVEL_CLASSES``, -1 for other levels.
        valid: ``(N,)`` bool positives (see the module docstring).
        info: provenance: seed, field of view, curve error, timing.
    """

    image: np.ndarray
    n_s: int
    keypoints_sv: np.ndarray
    levels: np.ndarray
    valid: np.ndarray
    info: dict[str, Any]


def noisy_spine_curve(
    line_world: np.ndarray, z_range_mm: tuple[float, float], rng: np.random.Generator, error: CurveError
) -> tuple[SpineCurve, dict[str, Any]]:
    """A spine curve fitted, as the server fits it, through noisy points of the truth centre line.

    Args:
        line_world: ``(M, 3)`` dense truth centre line (world LPS mm, inferior→superior).
        z_range_mm: world z extent of the scan (the fitted curve spans it).
        rng: source of the error.
        error: its parameters.

    Returns:
        The curve and a record of the error drawn.
    """
    z_lo = max(z_range_mm[0], line_world[0, 2]) + rng.uniform(-1, 1) * error.end_jitter_mm
    z_hi = min(z_range_mm[1], line_world[-1, 2]) + rng.uniform(-1, 1) * error.end_jitter_mm
    z = np.arange(z_lo, z_hi, error.point_step_mm)
    z = z[(z >= line_world[0, 2]) & (z <= line_world[-1, 2])]
    xy = np.stack([np.interp(z, line_world[:, 2], line_world[:, j]) for j in range(2)], axis=1)
    xy += rng.normal(0.0, error.jitter_sigma_mm, xy.shape)
    drift = rng.normal(0.0, 1.0, xy.shape)
    if len(z):
        drift_points = error.drift_length_mm / error.point_step_mm
        drift = ndimage.gaussian_filter1d(drift, drift_points, axis=0, mode="nearest")
        drift /= max(float(drift.std()), 1e-6)
        xy += drift * error.drift_sigma_mm
    record: dict[str, Any] = {"points": len(z), "offset_mm": 0.0}
    if rng.random() < error.offset_probability:
        amplitude = rng.uniform(*error.offset_mm)
        wavelength = rng.uniform(*error.wavelength_mm)
        angle = rng.uniform(0, 2 * np.pi)
        wave = amplitude * np.sin(2 * np.pi * z / wavelength + rng.uniform(0, 2 * np.pi))
        xy += wave[:, None] * np.array([np.cos(angle), np.sin(angle)])
        record.update(offset_mm=round(float(amplitude), 2), wavelength_mm=round(float(wavelength), 1))
    points = np.column_stack([xy, z])
    curve = fit_spine_curve(points, min_extent_mm=MIN_SPINE_EXTENT_MM, z_range_mm=z_range_mm)
    return curve, record


def make_detector_sample(
    seed: int, *, error: CurveError = CurveError(), spec: PhantomSpec | None = None
) -> DetectorSample:
    """The detector sample of ``seed`` (deterministic).

    Args:
        seed: phantom seed (:func:`vfq.phantoms.sample_spec`); also seeds the curve error.
        error: the simulated localizer error of the spine curve.
        spec: the phantom instead of ``sample_spec(seed)`` (tests: small scans).
    """
    start = time.perf_counter()
    spec = spec or sample_spec(seed)
    anatomy = build_anatomy(spec)
    acq = spec.acquisition
    scan = field_of_view_geometry(anatomy)
    truth = ground_truth(anatomy, scan)
    crop = spine_crop_geometry(scan, anatomy.spine.curve)
    ct, _ = render(anatomy, crop, replace(acq, circular_field=False))
    if acq.circular_field:  # the field of the whole scan, not of the crop
        array = ct.array
        _, sy, sx = scan.spacing
        dy = (_axis_map(crop, scan, 1, np.arange(crop.shape[1])) - (scan.shape[1] - 1) / 2) * sy
        dx = (_axis_map(crop, scan, 2, np.arange(crop.shape[2])) - (scan.shape[2] - 1) / 2) * sx
        radius = min(scan.shape[2] * sx, scan.shape[1] * sy) / 2
        array[:, dy[:, None] ** 2 + dx[None, :] ** 2 > radius**2] = acq.outside_hu
    rendered = time.perf_counter()

    rng = np.random.default_rng([seed, 201])
    z_range = localizer_grid(scan).ct_z_range_mm()
    curve, curve_record = noisy_spine_curve(centre_line(anatomy), z_range, rng, error)
    det = to_detector_input(ct, curve)
    image = np.ascontiguousarray(det.tensor[0, 0], dtype=np.float32)

    kp_world = scan.voxel_to_world(np.stack([v.keypoints for v in truth.vertebrae]))
    sv = world_to_grid(curve, det.grid, kp_world)[..., :2]
    sv[..., 0] += det.pad_s[0]
    levels = classes_of_levels([v.level for v in truth.vertebrae])
    inside = points_inside(sv, (det.grid.n_s, det.grid.n_v), EDGE_MARGIN_PX)
    in_view = np.array([v.fully_in_view for v in truth.vertebrae], dtype=bool)
    valid = (levels >= 0) & in_view & inside
    centres = np.array([v.center for v in truth.vertebrae])
    error_mm = _curve_error_mm(curve, scan.voxel_to_world(centres[valid]))
    info = {
        "seed": int(seed),
        "kind": "detector",
        "field_of_view": spec.field_of_view.value,
        "contrast": spec.contrast.value,
        "fractures": [[f.level.value, f.kind.value, round(f.loss, 3)] for f in spec.fractures],
        "scan_shape": list(scan.shape),
        "scan_spacing": list(scan.spacing),
        "slice_thickness": acq.slice_thickness,
        "render_shape": list(crop.shape),
        "image_shape": list(image.shape),
        "n_s": det.grid.n_s,
        "levels": [v.level.value for v in truth.vertebrae],
        "positives": int(valid.sum()),
        "curve": {**curve_record, "centre_error_mm": error_mm},
        "render_seconds": round(rendered - start, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return DetectorSample(
        image=image,
        n_s=det.grid.n_s,
        keypoints_sv=sv.astype(np.float32),
        levels=levels,
        valid=valid,
        info=info,
    )


def spine_crop_geometry(
    scan: ImageGeometry, curve_world: np.ndarray, margin_mm: float = CROP_MARGIN_MM
) -> ImageGeometry:
    """The sub-grid of ``scan`` (same voxels) spanning its whole z range and, in-plane, the x/y range
    of the curve points inside that z range plus ``margin_mm``."""
    lo_w, hi_w = scan.world_bounds()
    part = curve_world[(curve_world[:, 2] >= lo_w[2] - 20) & (curve_world[:, 2] <= hi_w[2] + 20)]
    lo = scan.world_to_voxel(part.min(axis=0) - margin_mm)
    hi = scan.world_to_voxel(part.max(axis=0) + margin_mm)
    first = np.clip(np.floor(np.minimum(lo, hi)), 0, np.array(scan.shape) - 1).astype(int)
    last = np.clip(np.ceil(np.maximum(lo, hi)), 0, np.array(scan.shape) - 1).astype(int)
    first[0], last[0] = 0, scan.shape[0] - 1
    return ImageGeometry(
        shape=tuple(last - first + 1),
        spacing=scan.spacing,
        origin=tuple(scan.voxel_to_world(first.astype(float))),
        direction=scan.direction,
    )


def _curve_error_mm(curve: SpineCurve, centres_world: np.ndarray) -> float:
    """Median distance (mm) of body centres from the curve (0 without centres)."""
    if len(centres_world) == 0:
        return 0.0
    _, v, w = curve.from_world(centres_world)
    return round(float(np.median(np.hypot(v, w))), 3)


# ---------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class DetectorAugmentation:
    """Training-time augmentation of a cached detector sample (pixels of 1 mm, HU).

    Attributes:
        crop: output ``(S, V)`` pixels, multiples of ``DETECTOR_MULTIPLE``.
        superior_overhang: the crop may reach this many rows past the image's superior end
            (padding, as the server appends it there).
        shift_v: largest shift (pixels, integer) of the image along ``v``.
        rotation_probability, rotation_degrees: small in-plane rotation about the crop centre.
        hu_scale, hu_offset: calibration jitter ``hu' = a·hu + b`` (ranges).
        noise_probability, noise_hu: extra white noise (probability, σ range in HU).

    No flips: a flip along ``s`` reverses the cranio-caudal order the level classes encode, one
    along ``v`` swaps anterior and posterior, i.e. the keypoints' meaning (DESIGN §2), and the
    served image is never flipped.
    """

    crop: tuple[int, int] = (256, 96)
    superior_overhang: int = 32
    shift_v: int = 4
    rotation_probability: float = 0.5
    rotation_degrees: float = 3.0
    hu_scale: tuple[float, float] = (0.92, 1.08)
    hu_offset: tuple[float, float] = (-40.0, 40.0)
    noise_probability: float = 0.5
    noise_hu: tuple[float, float] = (0.0, 25.0)

    def __post_init__(self) -> None:
        if any(n <= 0 or n % DETECTOR_MULTIPLE for n in self.crop):
            raise ValueError(f"crop must be positive multiples of {DETECTOR_MULTIPLE}, got {self.crop}")


def augment_detector(
    image: np.ndarray,
    n_s: int,
    keypoints_sv: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    params: DetectorAugmentation = DetectorAugmentation(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random training window of a detector sample, keypoints moved with the pixels.

    One affine resampling (bilinear, ``AIR_INPUT`` outside) does the crop along ``s``, the shift
    along ``v`` and the rotation: output pixel ``o`` shows input pixel ``R (o - c_out) + c_in``, so a
    keypoint ``p`` moves to ``Rᵀ (p - c_in) + c_out``. Bodies with a keypoint outside the window
    become invalid (partial). Then HU scale/offset and noise.

    Returns:
        ``image`` ``params.crop`` float32, ``keypoints_sv`` ``(N, 6, 2)`` float64, ``valid`` ``(N,)``.
    """
    crop_s, crop_v = params.crop
    s_max = max(n_s - crop_s + params.superior_overhang, 0)
    s0 = int(rng.integers(0, s_max + 1))
    v0 = (image.shape[1] - crop_v) // 2 - int(rng.integers(-params.shift_v, params.shift_v + 1))
    angle = 0.0
    if rng.random() < params.rotation_probability:
        angle = math.radians(rng.uniform(-params.rotation_degrees, params.rotation_degrees))
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    c_out = np.array([(crop_s - 1) / 2, (crop_v - 1) / 2])
    c_in = c_out + np.array([s0, v0])
    out = ndimage.affine_transform(
        image.astype(np.float32),
        rotation,
        offset=c_in - rotation @ c_out,
        output_shape=(crop_s, crop_v),
        order=1,
        mode="constant",
        cval=float(AIR_INPUT),
    )
    inside = np.zeros(image.shape, dtype=np.float32)
    inside[:n_s] = 1.0
    inside = ndimage.affine_transform(
        inside, rotation, offset=c_in - rotation @ c_out, output_shape=(crop_s, crop_v), order=1
    )
    keypoints = (np.asarray(keypoints_sv, dtype=np.float64) - c_in) @ rotation + c_out
    valid = np.asarray(valid, dtype=bool) & points_inside(keypoints, (crop_s, crop_v), EDGE_MARGIN_PX)

    hu = out / np.float32(HU_SCALE)
    hu = hu * np.float32(rng.uniform(*params.hu_scale)) + np.float32(rng.uniform(*params.hu_offset))
    if rng.random() < params.noise_probability:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(*params.noise_hu))
    # beyond the image (padding, outside the window) stays exactly air, as the server pads
    return np.where(inside >= 0.5, normalise_hu(hu), np.float32(AIR_INPUT)), keypoints, valid


def deformity_weights(keypoints_sv: np.ndarray) -> np.ndarray:
    """``(N,)`` offset-loss weight of each body of a sample: ``1 + DEFORMITY_WEIGHT × max(0, loss -
    NORMAL_LOSS_FLOOR)`` with ``loss`` the Genant height loss of its keypoints (1 mm pixels; the
    bodies of the sample are each other's neighbours; a body without finite keypoints gets 1).

    Deformed bodies are a few percent of the cells; without the weight the offsets learn a normal
    body's template (a severe wedge came out grade 0) instead of where the endplates are."""
    kp = np.asarray(keypoints_sv, dtype=np.float64)
    weights = np.ones(kp.shape[0])
    finite = np.isfinite(kp).all(axis=(1, 2))
    if finite.any():
        flat = np.concatenate([kp[finite], np.zeros((*kp[finite].shape[:-1], 1))], axis=-1)  # (s, v, 0)
        heights = heights_mm(flat)
        if (heights[:, 2] > 0).all():
            loss = genant(heights).loss
            weights[finite] = 1.0 + DEFORMITY_WEIGHT * np.maximum(loss - NORMAL_LOSS_FLOOR, 0.0)
    return weights


def detector_targets(
    keypoints_sv: np.ndarray, levels: np.ndarray, valid: np.ndarray, shape: tuple[int, int]
) -> DetectorTargets:
    """:func:`vfq.detection.encode_targets` of a (cropped) sample, offsets weighted by
    :func:`deformity_weights`; bodies wholly outside the image are dropped (they neither count nor
    need ignoring)."""
    kp = np.asarray(keypoints_sv, dtype=np.float64)
    weights = deformity_weights(kp)
    near = ((kp >= -16).all(axis=-1) & (kp <= np.array(shape) + 16).all(axis=-1)).any(axis=-1)
    return encode_targets(kp[near], np.asarray(levels)[near], np.asarray(valid)[near], shape, weights[near])
