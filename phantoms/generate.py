"""Synthetic CT phantoms with exact ground truth: specification, anatomy, rendering, truth.

A phantom is fully determined by a :class:`PhantomSpec` (which :func:`sample_spec` draws from a
seed). Its anatomy is analytic (:class:`Anatomy`, world LPS mm), so it can be rendered on any
axis-aligned grid (:func:`render`) and its ground truth (:func:`ground_truth`) mapped onto that
grid exactly. :func:`generate` does both for the field of view of the spec.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

import numpy as np

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.genant import genant
from vfq.keypoints import fully_in_view, heights_mm
from vfq.levels import Level
from vfq.phantoms.anatomy import Fracture, Spine, SpineShape, build_spine, sample_fractures
from vfq.phantoms.canvas import Canvas
from vfq.phantoms.skeleton import paint_skeleton
from vfq.phantoms.torso import Contrast, Torso, build_torso, paint_body, paint_organs, paint_table
from vfq.volume import CTVolume, ImageGeometry

GENERATOR_VERSION = "1"
#: Longest scan the generator writes (slices), as on real scanners' series limits.
MAX_SLICES = 800
#: Thickest slab rendered as a single sample per slice (mm); thicker slices are integrated.
SINGLE_SAMPLE_THICKNESS = 1.25


class FieldOfView(Enum):
    """Which part of the spine the scan covers."""

    CHEST = "chest"  # about C7-L2
    ABDOMEN = "abdomen"  # about T10 to below the sacrum
    WHOLE_SPINE = "whole_spine"  # C7 to the sacrum


@dataclass(frozen=True)
class Acquisition:
    """How the phantom is "scanned".

    Attributes:
        spacing: voxel size ``(z, y, x)`` mm.
        slice_thickness: reconstructed slice thickness (mm); the slice profile is a box of this
            width, so thick slices carry partial-volume blur along z.
        matrix: in-plane size ``(ny, nx)``.
        n_slices: number of slices, or ``None`` to cover the field of view (at most 800).
        noise_hu: standard deviation of the image noise (HU): ~10 standard dose, ~40 low dose.
        hu_scale, hu_offset: calibration jitter applied to every HU value.
        outside_hu: value outside the circular reconstruction field (-1024 or -2048 on scanners).
        circular_field: whether the reconstruction field is the circle inscribed in the grid
            (as on scanners); off for grids cut around a region of interest.
    """

    spacing: tuple[float, float, float] = (1.0, 0.7, 0.7)
    slice_thickness: float = 1.0
    matrix: tuple[int, int] = (512, 512)
    n_slices: int | None = None
    noise_hu: float = 15.0
    hu_scale: float = 1.0
    hu_offset: float = 0.0
    outside_hu: int = -1024
    circular_field: bool = True


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that determines a phantom. ``seed`` drives the remaining small variations."""

    seed: int
    field_of_view: FieldOfView = FieldOfView.CHEST
    shape: SpineShape = field(default_factory=SpineShape)
    fractures: tuple[Fracture, ...] = ()
    osteoporosis: float = 0.0
    contrast: Contrast = Contrast.NONE
    acquisition: Acquisition = field(default_factory=Acquisition)
    patient_offset: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in the ground truth's metadata)."""
        data = asdict(self)
        data["field_of_view"] = self.field_of_view.value
        data["contrast"] = self.contrast.value
        data["fractures"] = [
            {"level": f.level.value, "type": f.kind.value, "loss": round(f.loss, 6)} for f in self.fractures
        ]
        return data


@dataclass(frozen=True)
class Anatomy:
    """The analytic patient: spine, torso and what to paint inside."""

    spec: PhantomSpec
    spine: Spine
    torso: Torso


@dataclass(frozen=True)
class Phantom:
    """A rendered phantom: the CT, its exact ground truth, and optionally a vertebra label map
    (VerSe labels, 0 background) on the same grid."""

    ct: CTVolume
    truth: SpineAnnotation
    labels: np.ndarray | None
    anatomy: Anatomy


def sample_spec(
    seed: int,
    field_of_view: FieldOfView | None = None,
    acquisition: Acquisition | None = None,
    fracture_probability: float = 0.6,
) -> PhantomSpec:
    """Draw a random phantom specification, deterministic for ``seed``.

    Varies: curvature (kyphosis, lordosis and its lower-lumbar share, the lumbosacral angle,
    scoliosis with rotation), tilt, size, bone density,
    fractures (type, grade, level), contrast phase, patient offset, field of view, and, unless
    ``acquisition`` is given, in-plane spacing 0.5-1.0 mm, slice thickness 0.6-5 mm, noise.
    """
    rng = np.random.default_rng([seed, 0])
    fov = (
        field_of_view
        or [FieldOfView.CHEST, FieldOfView.ABDOMEN, FieldOfView.WHOLE_SPINE][int(rng.integers(3))]
    )
    scoliotic = rng.random() < 0.3
    shape = SpineShape(
        kyphosis=float(rng.uniform(20, 65)),
        lordosis=float(rng.uniform(25, 60)),
        scoliosis=float(rng.choice([-1, 1]) * rng.uniform(10, 45)) if scoliotic else 0.0,
        scoliosis_apex=float(rng.uniform(8, 17)),
        rotation_per_mm=float(rng.uniform(0.3, 0.8)),
        pitch=float(rng.normal(0, 3)),
        roll=float(rng.normal(0, 2)),
        size=float(rng.uniform(0.88, 1.12)),
    )
    small_crop = rng.random() < 0.15  # a small reconstruction field with the spine near its edge
    if acquisition is None:
        pixel = float(rng.uniform(0.45, 0.6)) if small_crop else float(rng.uniform(0.5, 1.0))
        thickness = float(rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]))
        step = thickness if rng.random() < 0.7 else thickness / 2
        acquisition = Acquisition(
            spacing=(step, pixel, pixel),
            slice_thickness=thickness,
            noise_hu=float(rng.uniform(6, 45)),
            hu_scale=float(rng.uniform(0.97, 1.03)),
            hu_offset=float(rng.uniform(-15, 15)),
            outside_hu=int(rng.choice([-1024, -2048])),
        )
    spec = PhantomSpec(
        seed=seed,
        field_of_view=fov,
        shape=shape,
        fractures=sample_fractures(rng, probability=fracture_probability),
        osteoporosis=float(rng.beta(1.5, 2.5)),
        contrast=[Contrast.NONE, Contrast.VENOUS, Contrast.ARTERIAL, Contrast.DENSE][
            int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))
        ],
        acquisition=acquisition,
        patient_offset=(float(rng.normal(0, 30)), float(rng.uniform(-20, 60)))
        if small_crop
        else (float(rng.normal(0, 15)), float(rng.normal(0, 15))),
    )
    # Drawn last, so that a seed's other features do not depend on them.
    shape = replace(shape, lower_lumbar=float(rng.uniform(0, 20)), lumbosacral=float(rng.uniform(5, 25)))
    return replace(spec, shape=shape)


def build_anatomy(spec: PhantomSpec) -> Anatomy:
    """The analytic patient of a spec, placed so that the body centre lies at the patient offset
    from the scanner's isocentre (world x = y = 0)."""
    rng = np.random.default_rng([spec.seed, 1])
    spine = build_spine(rng, spec.shape, spec.fractures, osteoporosis=spec.osteoporosis)
    torso = build_torso(spine, rng)
    cx, cy, _, _ = torso.section(spine.level_z(Level.T12))
    shift = np.array([spec.patient_offset[0] - cx, spec.patient_offset[1] - cy, 0.0])
    spine = _shifted_spine(spine, shift)
    torso = replace(torso, center_x=torso.center_x + shift[0], back_y=torso.back_y + shift[1])
    return Anatomy(spec=spec, spine=spine, torso=torso)


def _shifted_spine(spine: Spine, shift: np.ndarray) -> Spine:
    vertebrae = tuple(replace(v, center=v.center + shift) for v in spine.vertebrae)
    sacrum = replace(spine.sacrum, center=spine.sacrum.center + shift)
    return replace(spine, vertebrae=vertebrae, curve=spine.curve + shift, sacrum=sacrum)


def field_of_view_geometry(anatomy: Anatomy) -> ImageGeometry:
    """The scan grid of the spec's field of view and acquisition (LPS, axial, identity direction),
    centred in-plane on the scanner's isocentre."""
    spec, spine = anatomy.spec, anatomy.spine
    acq = spec.acquisition
    rng = np.random.default_rng([spec.seed, 3])

    def top_of(level: Level) -> float:
        v = spine.vertebra(level)
        return float(v.center[2] + v.heights[2] / 2)

    s1 = float(spine.sacrum_top[2])
    if spec.field_of_view is FieldOfView.CHEST:
        z_hi, z_lo = top_of(Level.C7) + rng.uniform(-5, 20), spine.level_z(Level.L2) + rng.uniform(-15, 15)
    elif spec.field_of_view is FieldOfView.ABDOMEN:
        z_hi, z_lo = spine.level_z(Level.T10) + rng.uniform(-12, 20), s1 - rng.uniform(90, 150)
    else:
        z_hi, z_lo = top_of(Level.C7) + rng.uniform(0, 20), s1 - rng.uniform(40, 100)
    dz = acq.spacing[0]
    if acq.n_slices is None:
        n_slices = min(MAX_SLICES, math.floor((z_hi - z_lo) / dz) + 1)
        z0 = z_hi - (n_slices - 1) * dz
    else:
        n_slices = acq.n_slices
        z0 = (z_hi + z_lo) / 2 - (n_slices - 1) * dz / 2
    ny, nx = acq.matrix
    origin = (-(nx - 1) / 2 * acq.spacing[2], -(ny - 1) / 2 * acq.spacing[1], z0)
    return ImageGeometry(shape=(n_slices, ny, nx), spacing=acq.spacing, origin=origin)


def render(
    anatomy: Anatomy,
    geometry: ImageGeometry,
    acquisition: Acquisition | None = None,
    with_labels: bool = False,
    include_skeleton: bool = True,
) -> tuple[CTVolume, np.ndarray | None]:
    """Render the anatomy on an axis-aligned grid: int16 HU volume and optional label map.

    Args:
        anatomy: the analytic patient.
        geometry: the grid (identity direction; any spacing, size and origin).
        acquisition: slice thickness, noise, calibration and reconstruction field; by default the
            spec's (its spacing and matrix are ignored here: the grid is ``geometry``).
        with_labels: also return the vertebra label map (int16, VerSe labels).
        include_skeleton: paint the bones (column, pelvis, ribs, sternum); ``False`` renders the
            same patient without any skeleton, a "no spine" negative for the localizer (its
            ground truth then holds no visible vertebra, whatever :func:`ground_truth` says).
    """
    if not np.allclose(geometry.direction, np.eye(3)):
        raise ValueError("phantoms render on axis-aligned LPS grids (identity direction)")
    acq = acquisition or anatomy.spec.acquisition
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing
    ox, oy, oz = geometry.origin
    x = ox + dx * np.arange(nx)
    y = oy + dy * np.arange(ny)
    z = oz + dz * np.arange(nz)
    thickness = acq.slice_thickness
    if thickness <= SINGLE_SAMPLE_THICKNESS and thickness <= 1.05 * dz:
        z_fine, weights = z, None
    else:
        step = min(dz, thickness, 1.0)
        z_fine = np.arange(z[0] - thickness / 2 + step / 2, z[-1] + thickness / 2, step)
        weights = _slice_profile(z, z_fine, thickness, step)

    canvas = Canvas.empty(x, y, z_fine, labels=with_labels)  # paint_body fills every voxel
    rng = np.random.default_rng([anatomy.spec.seed, 2])
    paint_body(canvas, anatomy.torso)
    paint_table(canvas, anatomy.torso, rng)
    paint_organs(canvas, anatomy.spine, anatomy.torso, anatomy.spec.contrast, rng)
    if include_skeleton:
        paint_skeleton(canvas, anatomy.spine, anatomy.torso, rng)

    volume, labels = canvas.volume, canvas.labels
    if weights is not None:
        volume = _integrate_slices(volume, weights)
        if labels is not None:
            labels = labels[np.argmax(weights, axis=1)]
    if anatomy.spec.contrast is Contrast.DENSE:
        _add_streaks(volume, x, y, rng)
    if acq.noise_hu > 0:
        _add_noise(volume, acq.noise_hu, np.random.default_rng([anatomy.spec.seed, 4, nz, ny, nx]))
    if acq.hu_scale != 1.0 or acq.hu_offset != 0.0:
        volume *= np.float32(acq.hu_scale)
        volume += np.float32(acq.hu_offset)
    np.clip(volume, -1024, 3071, out=volume)
    if acq.circular_field:
        volume[:, ~_reconstruction_field(geometry)] = acq.outside_hu
    array = np.rint(volume, out=volume).astype(np.int16)
    return CTVolume(array=array, geometry=geometry), labels


#: HU above which contrast-filled vessels and chambers cause streaks.
STREAK_SOURCE_HU = 900.0


def _add_streaks(volume: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    """Beam-hardening streaks: alternating bright and dark lines through dense contrast, in place.

    Each slice holding voxels above :data:`STREAK_SOURCE_HU` gets a few lines through their centroid,
    strength growing with the dense area, fading with distance (within 120 mm of the source).
    """
    angles = rng.uniform(0, np.pi, 4)
    signs = np.array([1.0, -1.0, 1.0, -1.0]) * rng.uniform(60, 220)
    dx = float(abs(x[1] - x[0])) if x.size > 1 else 1.0
    reach = int(120.0 / dx)
    for k in range(volume.shape[0]):
        dense = volume[k] > STREAK_SOURCE_HU
        count = int(np.count_nonzero(dense))
        if count == 0:
            continue
        rows, cols = np.nonzero(dense)
        cy, cx = int(rows.mean()), int(cols.mean())
        window = (slice(max(cy - reach, 0), cy + reach), slice(max(cx - reach, 0), cx + reach))
        yy = (y[window[0]] - y[cy]).astype(np.float32)[:, None]
        xx = (x[window[1]] - x[cx]).astype(np.float32)[None, :]
        falloff = np.exp(-np.sqrt(xx**2 + yy**2) / np.float32(90.0))
        pattern = np.zeros(falloff.shape, dtype=np.float32)
        for angle, sign in zip(angles + rng.normal(0, 0.02, 4), signs):
            across = xx * np.float32(np.sin(angle)) - yy * np.float32(np.cos(angle))
            pattern += np.float32(sign) * np.exp(-(across**2) / np.float32(2.0))
        strength = min(1.0, count * dx * dx / 1500.0)
        volume[k][window] += np.float32(strength) * pattern * falloff


def _reconstruction_field(geometry: ImageGeometry) -> np.ndarray:
    """``(ny, nx)`` mask of the circle inscribed in the grid's in-plane extent."""
    _, ny, nx = geometry.shape
    _, dy, dx = geometry.spacing
    radius = min(nx * dx, ny * dy) / 2
    yy = ((np.arange(ny) - (ny - 1) / 2) * dy)[:, None] ** 2
    xx = ((np.arange(nx) - (nx - 1) / 2) * dx)[None, :] ** 2
    return xx + yy <= radius**2


def _add_noise(volume: np.ndarray, sigma: float, rng: np.random.Generator, chunk: int = 16) -> None:
    """Add white Gaussian noise in place, a few slices at a time (no volume-sized temporary)."""
    buffer = np.empty((chunk, *volume.shape[1:]), dtype=np.float32)
    for start in range(0, volume.shape[0], chunk):
        part = buffer[: min(chunk, volume.shape[0] - start)]
        rng.standard_normal(out=part, dtype=np.float32)
        part *= np.float32(sigma)
        volume[start : start + part.shape[0]] += part


def _slice_profile(z: np.ndarray, z_fine: np.ndarray, thickness: float, step: float) -> np.ndarray:
    """``(nz, n_fine)`` weights of a box slice profile of ``thickness`` over fine samples."""
    lo = np.maximum(z[:, None] - thickness / 2, z_fine[None, :] - step / 2)
    hi = np.minimum(z[:, None] + thickness / 2, z_fine[None, :] + step / 2)
    w = np.clip(hi - lo, 0, None)
    return w / w.sum(axis=1, keepdims=True)


def _integrate_slices(fine: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.zeros((weights.shape[0], *fine.shape[1:]), dtype=np.float32)
    for k, row in enumerate(weights):
        for j in np.flatnonzero(row):
            out[k] += np.float32(row[j]) * fine[j]
    return out


def ground_truth(anatomy: Anatomy, geometry: ImageGeometry) -> SpineAnnotation:
    """The exact ground truth of the anatomy on a grid: every vertebra whose body reaches into the
    grid, with keypoints (voxel), fracture type, the Genant grade and loss from its keypoints
    (neighbours: the whole modelled spine), and whether it lies fully in view: its keypoints and
    the lateral ends of its mid-body by :func:`vfq.keypoints.fully_in_view`, and inside the
    reconstruction circle."""
    spine = anatomy.spine
    world_kp = spine.keypoints
    result = genant(heights_mm(world_kp))
    field = _reconstruction_field(geometry) if anatomy.spec.acquisition.circular_field else None
    vertebrae = []
    for v, kp, loss, grade in zip(spine.vertebrae, world_kp, result.loss, result.grade):
        extremes = np.concatenate([kp, v.center + np.outer([-1, 1], v.left) * v.width / 2])
        voxels = geometry.world_to_voxel(extremes)
        in_grid = (voxels >= -0.5) & (voxels <= np.array(geometry.shape) - 0.5)
        if not in_grid.all(axis=1).any():
            continue
        in_view = bool(fully_in_view(voxels, geometry.shape))
        in_field = True
        if field is not None and in_view:
            rows_cols = np.rint(voxels[:, 1:]).astype(int)
            in_field = bool(field[rows_cols[:, 0], rows_cols[:, 1]].all())
        vertebrae.append(
            VertebraAnnotation.from_keypoints(
                v.level,
                geometry.world_to_voxel(kp),
                fracture_type=v.fracture,
                grade=int(grade),
                loss=float(loss),
                fully_in_view=in_view and in_field,
            )
        )
    z_lo, z_hi = geometry.origin[2] - 20.0, geometry.origin[2] + geometry.extent_mm[0] + 20.0
    curve = spine.curve[(spine.curve[:, 2] >= z_lo) & (spine.curve[:, 2] <= z_hi)]
    metadata = {
        "generator": "vfq.phantoms",
        "generator_version": GENERATOR_VERSION,
        "spec": anatomy.spec.to_dict(),
    }
    return SpineAnnotation(geometry=geometry, vertebrae=tuple(vertebrae), curve=curve, metadata=metadata)


def generate(spec: PhantomSpec, with_labels: bool = False) -> Phantom:
    """Render a phantom on its field-of-view grid, with its ground truth."""
    anatomy = build_anatomy(spec)
    geometry = field_of_view_geometry(anatomy)
    ct, labels = render(anatomy, geometry, with_labels=with_labels)
    return Phantom(ct=ct, truth=ground_truth(anatomy, geometry), labels=labels, anatomy=anatomy)
