"""Training samples from annotated CTs — real scans a hospital annotated (DESIGN §5).

A dataset is a JSON manifest of scans, paths relative to the manifest::

    {"scans": [
      {"ct": "s001/series", "annotation": "s001/keypoints.json", "format": "neuroml"},
      {"ct": "verse/sub-gl003_ct.nii.gz", "annotation": "verse/sub-gl003_seg-vert_msk.nii.gz",
       "centroids": "verse/sub-gl003_seg-subreg_ctd.json", "format": "verse"},
      {"ct": "phantom/ct.nii.gz", "annotation": "phantom/truth.json", "format": "vfq"}
    ]}

Formats: ``neuroml`` — the six-keypoint JSON of the paper's authors (:func:`vfq.io.neuroml.read_neuroml`,
drawn on the CT's own series); ``verse`` — a VerSe label map on the CT's grid with optional centroid
JSON (:func:`vfq.io.verse.read_verse`: centres only); ``vfq`` — this project's annotation JSON
(``vfq-annotation/1``, e.g. a phantom's ``truth.json``). CTs are read with :func:`vfq.io.read_ct` (LPS).

Every scan gives a localizer sample (the tube around the line through the annotated body centres,
C7…L5 where levels are known); scans whose vertebrae all carry six keypoints also give a detector
sample (centres-only annotations such as VerSe cannot teach keypoints and are refused with a message).
The samples are the phantom samples' types (:class:`~vfq.export.localizer_data.LocalizerSample`,
:class:`~vfq.export.detector_data.DetectorSample`) made by the server's own preprocessing, so the
cache and training code take them unchanged (``vfq-cache KIND FOLDER --annotated MANIFEST``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfq.annotation import SpineAnnotation
from vfq.detection import classes_of_levels
from vfq.errors import InputError
from vfq.export.detector_data import EDGE_MARGIN_PX, CurveError, DetectorSample, noisy_spine_curve
from vfq.export.localizer_data import CENTRE_LINE_STEP_MM, LocalizerSample, scan_support, tube_target
from vfq.io import read_ct
from vfq.io.jsonfile import read_json
from vfq.io.neuroml import read_neuroml
from vfq.io.verse import read_verse
from vfq.keypoints import points_inside
from vfq.levels import STANDARD_LEVELS
from vfq.preprocess import localizer_grid, to_detector_input, to_localizer_grid
from vfq.straighten import world_to_grid
from vfq.volume import CTVolume

FORMATS = ("neuroml", "verse", "vfq")
#: Seeds of the curve error of annotated detector samples: ``ANNOTATED_SEED_BASE + scan index``.
ANNOTATED_SEED_BASE = 50_000_000


@dataclass(frozen=True)
class AnnotatedScan:
    """One scan of a dataset manifest (absolute paths)."""

    ct: Path
    annotation: Path
    format: str
    centroids: Path | None = None


def read_manifest(path: str | Path) -> list[AnnotatedScan]:
    """The scans of a dataset manifest (module docstring); paths resolved against its folder."""
    path = Path(path)
    data = read_json(path, "dataset manifest")
    scans = data.get("scans") if isinstance(data, dict) else None
    if not isinstance(scans, list) or not scans:
        raise InputError(f'{path}: a dataset manifest is {{"scans": [...]}} with at least one scan')
    out = []
    for i, entry in enumerate(scans):
        where = f"{path}: scans[{i}]"
        if not isinstance(entry, dict) or not {"ct", "annotation", "format"} <= set(entry):
            raise InputError(f'{where} needs "ct", "annotation" and "format"')
        if entry["format"] not in FORMATS:
            raise InputError(f"{where}: unknown format {entry['format']!r}; expected one of {FORMATS}")
        centroids = entry.get("centroids")
        out.append(
            AnnotatedScan(
                ct=path.parent / entry["ct"],
                annotation=path.parent / entry["annotation"],
                format=entry["format"],
                centroids=None if centroids is None else path.parent / centroids,
            )
        )
    return out


def load_scan(scan: AnnotatedScan) -> tuple[CTVolume, SpineAnnotation]:
    """The CT (LPS) and its annotation on the CT's voxel grid."""
    ct = read_ct(scan.ct)
    if scan.format == "neuroml":
        truth = read_neuroml(scan.annotation, ct.geometry)
    elif scan.format == "verse":
        truth = read_verse(scan.annotation, scan.centroids)
    else:
        truth = SpineAnnotation.read_json(scan.annotation)
    same_grid = truth.geometry.shape == ct.geometry.shape and np.allclose(
        truth.geometry.affine, ct.geometry.affine, atol=1e-3
    )
    if not same_grid:
        raise InputError(
            f"{scan.annotation} is drawn on a grid of shape {truth.geometry.shape} that is not the grid of "
            f"{scan.ct} (shape {ct.geometry.shape}); annotate the CT itself"
        )
    return ct, truth


def centre_line(truth: SpineAnnotation, step_mm: float = CENTRE_LINE_STEP_MM) -> np.ndarray:
    """``(M, 3)`` world LPS mm: the line through the annotated body centres (C7…L5 where levels are
    known), inferior→superior, from the lowest body's lower endplate to the highest body's upper
    endplate (half the neighbour distance beyond the end centres without keypoints), ``step_mm`` apart."""
    vertebrae = [v for v in truth.vertebrae if v.level is None or v.level in STANDARD_LEVELS]
    if len(vertebrae) < 2:
        raise InputError(f"a spine line needs two annotated vertebrae of C7…L5, got {len(vertebrae)}")
    g = truth.geometry
    centres = g.voxel_to_world(np.array([v.center for v in vertebrae]))
    order = np.argsort(centres[:, 2])
    centres = centres[order]
    if all(v.keypoints is not None for v in vertebrae):
        lowest, highest = vertebrae[order[0]], vertebrae[order[-1]]
        ends = g.voxel_to_world(np.array([lowest.keypoints[4], highest.keypoints[1]]))  # lower/upper-middle
    else:
        ends = np.array([2 * centres[0] - centres[1], 2 * centres[-1] - centres[-2]])
        ends = (ends + centres[[0, -1]]) / 2
    points = np.vstack([ends[:1], centres, ends[1:]])
    chords = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(chords)])
    fine = np.arange(0.0, s[-1] + 1e-9, step_mm)
    return np.stack([np.interp(fine, s, points[:, j]) for j in range(3)], axis=1)


def localizer_sample(ct: CTVolume, truth: SpineAnnotation, info: dict[str, Any]) -> LocalizerSample:
    """The localizer sample of an annotated CT: the server's preprocessing, the tube target."""
    start = time.perf_counter()
    grid = localizer_grid(ct.geometry)
    image = np.asarray(to_localizer_grid(ct).tensor, dtype=np.float32)[0, 0]
    support = scan_support(grid.geometry, ct.geometry, circular_field=False)
    target = tube_target(centre_line(truth), grid.geometry) * support
    info = {
        **info,
        "kind": "localizer",
        "path": "annotated",
        "negative": False,
        "scan_shape": list(ct.geometry.shape),
        "scan_spacing": list(ct.geometry.spacing),
        "shape": list(grid.geometry.shape),
        "valid_shape": list(grid.valid_shape),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return LocalizerSample(image=image, target=target, support=support, geometry=grid.geometry, info=info)


#: The simulated localizer error of annotated detector samples (as for phantoms).
CURVE_ERROR = CurveError()


def detector_sample(
    ct: CTVolume, truth: SpineAnnotation, seed: int, info: dict[str, Any], error: CurveError = CURVE_ERROR
) -> DetectorSample:
    """The detector sample of an annotated CT: straightened, as the server does, along a curve fitted
    through noisy points of the annotated centre line (the localizer's error, seeded by ``seed``)."""
    start = time.perf_counter()
    missing = [str(v.level or i) for i, v in enumerate(truth.vertebrae) if v.keypoints is None]
    if missing or not truth.vertebrae:
        which = ", ".join(missing) or "any"
        raise InputError(
            f"{info.get('annotation', 'the annotation')} has no six keypoints for {which} vertebra: "
            "centres alone (VerSe) can train the localizer, not the detector"
        )
    rng = np.random.default_rng([seed, 201])
    curve, curve_record = noisy_spine_curve(
        centre_line(truth), localizer_grid(ct.geometry).ct_z_range_mm(), rng, error
    )
    det = to_detector_input(ct, curve)
    keypoints_world = truth.geometry.voxel_to_world(np.stack([v.keypoints for v in truth.vertebrae]))
    sv = world_to_grid(curve, det.grid, keypoints_world)[..., :2]
    sv[..., 0] += det.pad_s[0]
    levels = classes_of_levels([v.level for v in truth.vertebrae])
    in_view = np.array([v.fully_in_view for v in truth.vertebrae], dtype=bool)
    valid = (levels >= 0) & in_view & points_inside(sv, (det.grid.n_s, det.grid.n_v), EDGE_MARGIN_PX)
    info = {
        **info,
        "seed": int(seed),
        "kind": "detector",
        "scan_shape": list(ct.geometry.shape),
        "scan_spacing": list(ct.geometry.spacing),
        "image_shape": list(det.tensor.shape[2:]),
        "n_s": det.grid.n_s,
        "levels": [v.level.value if v.level else None for v in truth.vertebrae],
        "positives": int(valid.sum()),
        "curve": curve_record,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return DetectorSample(
        image=np.ascontiguousarray(det.tensor[0, 0], dtype=np.float32),
        n_s=det.grid.n_s,
        keypoints_sv=sv.astype(np.float32),
        levels=levels,
        valid=valid,
        info=info,
    )


def annotated_sample(kind: str, scan: AnnotatedScan, index: int) -> LocalizerSample | DetectorSample:
    """The ``kind`` sample of a manifest's ``index``-th scan (seed ``ANNOTATED_SEED_BASE + index``)."""
    ct, truth = load_scan(scan)
    seed = ANNOTATED_SEED_BASE + index
    info = {"seed": seed, "ct": str(scan.ct), "annotation": str(scan.annotation), "format": scan.format}
    if kind == "localizer":
        return localizer_sample(ct, truth, info)
    return detector_sample(ct, truth, seed, info)
