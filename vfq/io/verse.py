"""Read VerSe annotations (NIfTI label map + centroid JSON) as :class:`~vfq.annotation.SpineAnnotation`.

The convention, and the evidence
--------------------------------
VerSe'19/'20 ("complete", restructured release; repository ``anjany/verse``: ``README.md``,
``utils/data_utilities.py`` — ``load_centroids``, ``calc_centroids``, ``reorient_centroids_to`` — and
``utils/prepare_data.ipynb``) ships per scan a CT, a vertebra label map
``*_seg-vert_msk.nii.gz`` and a centroid file ``*_seg-subreg_ctd.json``::

    [{"direction": ["P", "I", "R"]},
     {"label": 20, "X": 63.2, "Y": 141.9, "Z": 31.8},
     ...]

* The first entry gives the orientation as nibabel axis codes: the letter of axis *n* is the direction
  in which that axis' index *increases* (``P`` = toward posterior; "PIR+", whose origin is at the
  anterior-superior-left corner). SimpleITK's ``DICOMOrient`` uses the same letters the same way.
* ``X``, ``Y``, ``Z`` are continuous voxel indices along axes 0, 1, 2 of the image — nibabel's array
  order, i.e. NIfTI ``i, j, k`` = SimpleITK index ``(x, y, z)``, not the reversed numpy order of
  ``sitk.GetArrayFromImage`` — after reorienting the image to ``direction``, at the image's own
  spacing ("the centroids are in the same orientation and spacing as the image", prepare_data.ipynb;
  ``calc_centroids`` writes ``center_of_mass`` of the mask array with ``aff2axcodes(affine)``).
* ``label``: 1–7 C1–C7, 8–19 T1–T12, 20–25 L1–L6, 26 sacrum, 27 coccyx, 28 T13 (README); mapped by
  :meth:`vfq.levels.Level.from_verse_label`. Entries with other labels or with NaN coordinates
  (``load_centroids`` skips the latter) are skipped and listed in ``metadata["skipped"]``.

How they become ours: the label map is read with SimpleITK and reoriented with
``DICOMOrient(img, "LPS")``; that image's :class:`~vfq.volume.ImageGeometry` is the annotation's
geometry and its array frame ``(z, y, x)`` is the voxel frame of every centre. A centroid is mapped
exactly: the label map is reoriented (a pure permutation/flip of the grid, flipped index
``n - 1 - i``) to the file's ``direction``, the centroid's ``(X, Y, Z)`` taken as a continuous index of
that image and sent to world LPS mm, and from there to the LPS array's voxel frame. (VerSe's own
``reorient_centroids_to`` flips with ``n - i``, one voxel off; this reader does not copy that.)

``fully_in_view`` is ``False`` for every vertebra whose label touches a face of the label map (lies
in its outermost slice, row or column: the rule of :data:`vfq.keypoints.IN_VIEW_MARGIN_VOXELS`).
With a centroid file, the vertebrae are those of the file: labels of the file absent from the label map keep
``fully_in_view=True`` (nothing to check) and are listed in ``metadata["labels_without_mask"]``,
labels of the map without a centroid in ``metadata["labels_without_centroid"]``. The older
MICCAI-challenge annotation files (no ``direction`` entry) are rejected with a clear message.
:func:`centroids_from_label_map` computes centres from the label map alone (mean voxel of each label)
for scans without a centroid file; :func:`read_verse` uses it when no JSON is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.errors import InputError, UnreadableInputError
from vfq.io.jsonfile import read_json
from vfq.io.sitk_bridge import geometry_of
from vfq.levels import Level

__all__ = [
    "VerseCentroid",
    "VerseCentroids",
    "border_labels",
    "centroids_from_label_map",
    "parse_verse_centroids",
    "read_label_map",
    "read_verse",
    "read_verse_centroids",
    "verse_centroids_to_voxel",
]

logger = logging.getLogger(__name__)

#: How far (voxels) a centroid may lie beyond the centres of the edge voxels of the label map.
BOUNDS_TOLERANCE_VOXELS = 0.5
_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclass(frozen=True)
class VerseCentroid:
    """One centroid entry as written in the file.

    Attributes:
        label: VerSe label (1–28).
        index: ``(3,)`` continuous voxel index ``(X, Y, Z)`` along axes 0, 1, 2 of the image
            reoriented to the file's ``direction`` (nibabel / NIfTI ``i, j, k`` order).
    """

    label: int
    index: np.ndarray


@dataclass(frozen=True)
class VerseCentroids:
    """A parsed VerSe centroid file.

    Attributes:
        direction: the three nibabel axis codes, e.g. ``("P", "I", "R")``.
        centroids: the usable entries, file order.
        skipped: ``{"entry": ..., "reason": ...}`` for entries that were left out (NaN coordinates).
    """

    direction: tuple[str, str, str]
    centroids: tuple[VerseCentroid, ...]
    skipped: tuple[dict[str, Any], ...] = ()


# ---- centroid JSON ------------------------------------------------------------------------------
def read_verse_centroids(path: str | Path) -> VerseCentroids:
    """Read a VerSe centroid JSON (see the module docstring for its convention).

    Raises:
        UnreadableInputError: no readable JSON at ``path``.
        InputError: not a VerSe centroid list.
    """
    path = Path(path)
    data = read_json(path, "VerSe centroid file")
    return parse_verse_centroids(data, source=str(path))


def parse_verse_centroids(data: Any, *, source: str = "<VerSe centroids>") -> VerseCentroids:
    """Validate an already loaded VerSe centroid list."""
    if not isinstance(data, list) or not data:
        raise InputError(
            f"{source}: expected a non-empty JSON list "
            f"[{{'direction': [...]}}, {{'label', 'X', 'Y', 'Z'}}, ...], "
            f"got {data!r:.80}"
        )
    head = data[0]
    if not isinstance(head, Mapping) or "direction" not in head:
        raise InputError(
            f"{source}: the first entry must give the axis codes, e.g. {{'direction': ['P', 'I', 'R']}}, "
            f"got {head!r:.80} (MICCAI-challenge-era VerSe files without it are not supported)"
        )
    direction = _axis_codes(head["direction"], source)
    centroids: list[VerseCentroid] = []
    skipped: list[dict[str, Any]] = []
    seen: set[int] = set()
    for n, entry in enumerate(data[1:], start=1):
        if not isinstance(entry, Mapping) or not {"label", "X", "Y", "Z"} <= set(entry):
            raise InputError(f"{source}: entry #{n} must have 'label', 'X', 'Y' and 'Z', got {entry!r:.80}")
        label = entry["label"]
        if isinstance(label, bool) or not isinstance(label, (int, float)) or int(label) != label:
            raise InputError(f"{source}: entry #{n} has a non-integer label {label!r}")
        label = int(label)
        try:
            index = np.array([float(entry["X"]), float(entry["Y"]), float(entry["Z"])])
        except (TypeError, ValueError):
            raise InputError(f"{source}: entry #{n} (label {label}) has non-numeric coordinates") from None
        if not np.all(np.isfinite(index)):
            skipped.append({"entry": n, "label": label, "reason": "non-finite coordinates"})
            continue
        if label in seen:
            raise InputError(f"{source}: label {label} appears more than once")
        seen.add(label)
        centroids.append(VerseCentroid(label=label, index=index))
    return VerseCentroids(direction=direction, centroids=tuple(centroids), skipped=tuple(skipped))


def _axis_codes(codes: Any, source: str) -> tuple[str, str, str]:
    if isinstance(codes, str):
        codes = list(codes)
    if not isinstance(codes, (list, tuple)) or len(codes) != 3 or not all(isinstance(c, str) for c in codes):
        raise InputError(
            f"{source}: 'direction' must be three axis codes like ['P', 'I', 'R'], got {codes!r}"
        )
    codes = tuple(c.strip().upper() for c in codes)
    if not all(sum(c in pair for c in codes) == 1 for pair in _AXIS_PAIRS):
        raise InputError(
            f"{source}: 'direction' {list(codes)} must name each anatomical axis once, one of L/R, A/P "
            "and S/I (e.g. ['P', 'I', 'R'] or ['A', 'S', 'L'])"
        )
    return codes  # type: ignore[return-value]


# ---- label map ----------------------------------------------------------------------------------
def read_label_map(path: str | Path) -> sitk.Image:
    """Read a label map (NIfTI or anything SimpleITK reads) as it is stored, not reoriented.

    Raises:
        UnreadableInputError: nothing readable at ``path``.
        InputError: not a 3D single-component image of integer labels.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"no label map at {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise UnreadableInputError(f"cannot read the label map {path}: {e}") from e
    _check_label_image(image, str(path))
    return image


def _check_label_image(image: sitk.Image, source: str) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source}: expected a 3D single-component label map, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(f"{source}: a label map holds integer labels; this one has fractional values")


def _labels_array(image: sitk.Image) -> np.ndarray:
    """The ``(z, y, x)`` label array, integer (float maps were checked to hold whole numbers)."""
    array = sitk.GetArrayFromImage(image)
    return array if np.issubdtype(array.dtype, np.integer) else np.rint(array).astype(np.int32)


def border_labels(labels: np.ndarray) -> set[int]:
    """Non-zero labels that occur on any of the six faces of a 3D label array."""
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    found = set(np.unique(np.concatenate([f.ravel() for f in faces])).tolist())
    found.discard(0)
    return {int(v) for v in found}


def centroids_from_label_map(image: sitk.Image) -> dict[int, np.ndarray]:
    """Mean voxel of each non-zero label, in the ``(z, y, x)`` frame of the LPS-reoriented image.

    Args:
        image: a label map as read (any orientation); it is reoriented with ``DICOMOrient(img, "LPS")``.

    Returns:
        label → ``(3,)`` continuous voxel ``(z, y, x)`` of ``DICOMOrient(image, "LPS")``'s array.
    """
    _check_label_image(image, "label map")
    return _mean_voxels(_labels_array(sitk.DICOMOrient(image, "LPS")))


def _mean_voxels(labels: np.ndarray) -> dict[int, np.ndarray]:
    flat = labels.ravel()
    nonzero = np.flatnonzero(flat)
    values = flat[nonzero]
    coords = np.unravel_index(nonzero, labels.shape)
    uniques, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=c, minlength=len(uniques)) for c in coords], axis=-1)
    means = sums / counts[:, None]
    return {int(label): means[i] for i, label in enumerate(uniques)}


def verse_centroids_to_voxel(centroids: VerseCentroids, label_map: sitk.Image) -> dict[int, np.ndarray]:
    """Map centroid indices into the ``(z, y, x)`` voxel frame of ``DICOMOrient(label_map, "LPS")``.

    Args:
        centroids: a parsed centroid file.
        label_map: the label map (or CT) the centroids belong to, as read (any orientation).

    Raises:
        InputError: a centroid lies outside the image grid (wrong file pairing or wrong codes).
    """
    code = "".join(centroids.direction)
    in_file_frame = sitk.DICOMOrient(label_map, code)
    lps = geometry_of(sitk.DICOMOrient(label_map, "LPS"))
    size = np.array(in_file_frame.GetSize(), dtype=np.float64)
    out: dict[int, np.ndarray] = {}
    for c in centroids.centroids:
        if np.any(c.index < -BOUNDS_TOLERANCE_VOXELS) or np.any(c.index > size - 1 + BOUNDS_TOLERANCE_VOXELS):
            raise InputError(
                f"centroid of label {c.label} at (X, Y, Z) = {c.index.tolist()} lies outside the image of "
                f"size {tuple(int(s) for s in size)} in orientation {code}; "
                "is the centroid file paired with the right label map?"
            )
        world = in_file_frame.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c.index))
        out[c.label] = lps.world_to_voxel(np.array(world))
    return out


# ---- the whole annotation -----------------------------------------------------------------------
def read_verse(label_map_path: str | Path, centroid_path: str | Path | None = None) -> SpineAnnotation:
    """Read a VerSe scan's annotation: centres only (``keypoints=None``), cranio-caudally.

    Args:
        label_map_path: the vertebra label map (``*_seg-vert_msk.nii.gz``).
        centroid_path: the centroid JSON (``*_seg-subreg_ctd.json``); ``None`` computes the centres
            from the label map (mean voxel of each label).

    Returns:
        geometry = the label map after ``DICOMOrient(img, "LPS")``; centres in its ``(z, y, x)``
        voxel frame; ``fully_in_view`` False for labels touching the label map's faces.

    Raises:
        UnreadableInputError: a file cannot be read.
        InputError: malformed files, or centroids that do not fit the label map.
    """
    image = read_label_map(label_map_path)
    lps = sitk.DICOMOrient(image, "LPS")
    geometry = geometry_of(lps)
    labels = _labels_array(lps)
    on_border = border_labels(labels)
    in_mask = _mean_voxels(labels)
    skipped: list[dict[str, Any]] = []

    if centroid_path is None:
        centres = in_mask
        source = "label map (mean voxel of each label)"
    else:
        parsed = read_verse_centroids(centroid_path)
        skipped.extend(parsed.skipped)
        try:
            centres = verse_centroids_to_voxel(parsed, image)
        except InputError as e:
            raise InputError(f"{centroid_path}: {e}") from None
        source = f"centroid file {Path(centroid_path).name} (direction {''.join(parsed.direction)})"

    vertebrae: list[VertebraAnnotation] = []
    for label, centre in centres.items():
        try:
            level = Level.from_verse_label(label)
        except ValueError:
            skipped.append({"label": label, "reason": "not a vertebra level"})
            continue
        vertebrae.append(VertebraAnnotation(level=level, center=centre, fully_in_view=label not in on_border))
    vertebrae.sort(key=lambda v: v.level.index)  # type: ignore[union-attr]
    not_in_mask = sorted(label for label in centres if label not in in_mask)
    without_centroid = sorted(label for label in in_mask if label not in centres)
    for entry in skipped:
        logger.info("%s: skipped %s", label_map_path, entry)
    metadata = {
        "source": str(label_map_path),
        "centroids": source,
        "format": "VerSe'19/'20 (restructured): NIfTI label map + centroid JSON",
        "frame": "voxel (z, y, x) of the label map after DICOMOrient(img, 'LPS')",
        "native_orientation": sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
            image.GetDirection()
        ),
        "labels_touching_border": sorted(on_border),
        "labels_without_mask": not_in_mask,
        "labels_without_centroid": without_centroid,
        "skipped": [_json_safe(s) for s in skipped],
    }
    return SpineAnnotation(geometry=geometry, vertebrae=tuple(vertebrae), metadata=metadata)


def _json_safe(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in entry.items()}
