"""Reader of the neuro-ml 6-keypoint vertebra annotations into :class:`~vfq.annotation.SpineAnnotation`.

Which format, and the evidence
------------------------------
The annotations published with Zakharov, Pisov et al., "Interpretable vertebral fracture
quantification via anchor-free landmarks localization" (MedIA 2023), repository
``neuro-ml/anchor-free-genant`` (files ``annotation/*.json``, loader and plotting code in
``utils.py``, commit 50eee55), one JSON file per CT series of MosMedData CTLungCa-500::

    {
      "Folder": "RLAD42D007-22975_RLS6A01002SVR_2418297",
      "SeriesInstanceUID": "1.2.643...",
      "Annotation": {
        "expert1": [
          {"segments": [[UP, LOW], [UP, LOW], [UP, LOW]], "type": "Th1"},
          ...
        ],
        "expert2": [...]
      }
    }

This is **format v2** ("segments" + "type"), the one this reader is built for. The three segments are
the anterior, middle and posterior wall heights, in that order; each is a pair of points, the
superior-endplate point first. "type" is the level, spelled ``C7``, ``Th1`` … ``Th12``, ``L1`` …
(``T1`` and ``S1`` are accepted too). Expert names vary between files (``expert1``, ``expert3`` …).

The earlier release of the same data for Pisov et al., MICCAI 2020 (``neuro-ml/vertebral-fractures-
severity``, same ``Folder``/``SeriesInstanceUID`` keys) stores per expert a list of vertebrae, each a
flat list of six points ``[ant-up, ant-low, mid-up, mid-low, post-up, post-low]`` and no level. That is
**format v1**; it is read too, its vertebrae get ``level=None``.

The source frame, and how it becomes ours
-----------------------------------------
Each point is ``(row, column, slice)`` — read from the published loader: ``utils.load_image`` stacks
the DICOM ``pixel_array`` s (``(rows, columns)``) along a last axis, slices sorted by
``InstanceNumber``, and ``draw_annotation`` plots ``image[:, idx].T`` with the sagittal index
``idx`` = the mean of coordinate 1. In the published files coordinate 1 is nearly constant (the
mid-sagittal column, ≈ 250 of 512), coordinate 0 grows from the anterior to the posterior segment,
and coordinate 2 grows from Th1 to L1.

Our voxel frame is ``(z, y, x)`` of the image after ``DICOMOrient(img, "LPS")`` (z inferior→superior,
y anterior→posterior, x right→left); the caller passes that image's :class:`~vfq.volume.ImageGeometry`.
The conversion is, explicitly::

    y = row        x = column
    z = (nz - 1) - slice    if slices (InstanceNumber order) run superior → inferior
    z = slice               if they run inferior → superior

**Assumed**, because the JSON does not record it: the series is a standard axial acquisition
(ImageOrientationPatient ≈ ``(1, 0, 0, 0, 1, 0)``: rows run anterior→posterior, columns
right→left), so that LPS reorientation leaves the in-plane grid untouched; and the InstanceNumber
order is the slice-position order (one way or the other), without gaps or duplicates. The slice
direction is an option (``slice_order``); by default it is inferred from the annotation itself:
cranial levels must lie superior to caudal ones (or, without two distinct levels, the published
convention that each pair lists the superior point first). The reader checks what it can: every
point must lie inside the image grid, the anterior segments must lie anterior to the posterior ones
(otherwise the rows are flipped — not a standard axial series), and an explicit ``slice_order``
must agree with the levels. Within each segment the point with the larger ``z`` becomes the upper
keypoint, whatever order the annotator clicked them in.

Keypoints come out in our order (DESIGN §2)::

    0 upper-anterior  1 upper-middle  2 upper-posterior  3 lower-anterior  4 lower-middle  5 lower-posterior

A vertebra with a keypoint in the image's outermost slice, row or column gets
``fully_in_view=False`` (:func:`vfq.keypoints.fully_in_view`): its heights cannot be measured, and
the product does not report such a body.

Experts, incomplete vertebrae
-----------------------------
``expert`` selects one expert by name, or ``"mean"`` (default) averages the experts point by point:
vertebrae are matched by level (format v2), or by their cranio-caudal rank when levels are missing
(then every expert must have annotated the same number of vertebrae); a segment is averaged over the
experts who drew it.

A segment is *missing* when it is ``null`` or an empty list; a v2 ``segments`` list must still have
three places (otherwise nobody can tell which wall is missing), a v1 vertebra six points. With
``incomplete="skip"`` (default) a vertebra that lacks only its middle segment is kept without
keypoints, its centre the mean of the anterior and posterior points; a vertebra that lacks its
anterior or posterior segment, or whose segment list has the wrong length, is dropped. Each such
decision is logged and listed in ``metadata["skipped"]``. With ``incomplete="error"`` any of them
raises :class:`~vfq.errors.InputError`. Malformed content (not numbers, wrong nesting, unknown levels,
duplicate levels, points outside the image) always raises :class:`~vfq.errors.InputError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.errors import InputError
from vfq.io.jsonfile import read_json
from vfq.keypoints import fully_in_view
from vfq.levels import Level
from vfq.volume import ImageGeometry

__all__ = [
    "MEAN_OF_EXPERTS",
    "SEGMENT_NAMES",
    "IncompletePolicy",
    "SliceOrder",
    "neuroml_experts",
    "parse_neuroml",
    "parse_neuroml_level",
    "read_neuroml",
]

logger = logging.getLogger(__name__)

#: Value of ``expert`` that averages all experts.
MEAN_OF_EXPERTS = "mean"
#: The three segments of a vertebra, in the file's order.
SEGMENT_NAMES: tuple[str, ...] = ("anterior", "middle", "posterior")
#: How far (voxels) a point may lie beyond the centres of the edge voxels of the image grid.
BOUNDS_TOLERANCE_VOXELS = 0.5

SliceOrder = Literal["auto", "superior_to_inferior", "inferior_to_superior"]
IncompletePolicy = Literal["skip", "error"]

_LEVEL_PATTERN = re.compile(r"^\s*(C|TH|T|L|S)\s*(\d{1,2})\s*$", re.IGNORECASE)
_FORMAT_V1 = "neuro-ml v1 (vertebral-fractures-severity, MICCAI 2020): 6 points per vertebra, no level"
_FORMAT_V2 = "neuro-ml v2 (anchor-free-genant, MedIA 2023): segments + type"


@dataclass
class _Raw:
    """One expert's vertebra: segments as ``(2, 3)`` arrays (source frame, then ours) or ``None``."""

    expert: str
    position: int
    level: Level | None
    segments: list[np.ndarray | None]
    malformed_reason: str | None = None  # segment list of the wrong length: walls unknown


# ---- public API ---------------------------------------------------------------------------------
def read_neuroml(
    path: str | Path,
    geometry: ImageGeometry,
    *,
    expert: str = MEAN_OF_EXPERTS,
    slice_order: SliceOrder = "auto",
    incomplete: IncompletePolicy = "skip",
) -> SpineAnnotation:
    """Read one neuro-ml annotation file (format v2 or v1, see the module docstring).

    Args:
        path: the JSON file.
        geometry: geometry of the annotated CT after LPS reorientation (``DICOMOrient(img, "LPS")``);
            its shape ``(nz, ny, nx)`` must match the DICOM series the annotation was drawn on.
        expert: an expert's name as in the file (``"expert1"``), or ``"mean"`` to average experts.
        slice_order: direction of the source slices in InstanceNumber order; ``"auto"`` infers it.
        incomplete: ``"skip"`` or ``"error"`` for vertebrae with missing segments.

    Returns:
        The vertebrae cranio-caudally, voxel ``(z, y, x)`` keypoints and centres.

    Raises:
        UnreadableInputError: no readable JSON at ``path``.
        InputError: malformed content, an unknown expert, points outside the image, or (with
            ``incomplete="error"``) a vertebra with missing segments.
    """
    path = Path(path)
    data = read_json(path, "neuro-ml annotation")
    return parse_neuroml(
        data, geometry, expert=expert, slice_order=slice_order, incomplete=incomplete, source=str(path)
    )


def neuroml_experts(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The expert names of a parsed neuro-ml annotation, in file order."""
    return tuple(_annotation_block(data, source="<data>"))


def parse_neuroml_level(name: str) -> Level:
    """The level of a neuro-ml ``"type"`` (``"Th12"``, ``"T12"``, ``"L1"``, ``"C7"``, ``"S1"``).

    Raises:
        InputError: for anything else.
    """
    match = _LEVEL_PATTERN.match(str(name))
    if match is None:
        raise InputError(f"unknown vertebra type {name!r}; expected e.g. 'C7', 'Th1'…'Th12', 'L1'…'L5', 'S1'")
    prefix = {"C": "C", "TH": "T", "T": "T", "L": "L", "S": "S"}[match.group(1).upper()]
    try:
        return Level.parse(f"{prefix}{int(match.group(2))}")
    except ValueError as e:
        raise InputError(f"unknown vertebra type {name!r}: {e}") from None


def parse_neuroml(
    data: Mapping[str, Any],
    geometry: ImageGeometry,
    *,
    expert: str = MEAN_OF_EXPERTS,
    slice_order: SliceOrder = "auto",
    incomplete: IncompletePolicy = "skip",
    source: str | None = None,
) -> SpineAnnotation:
    """Turn an already loaded neuro-ml annotation into a :class:`SpineAnnotation`.

    Arguments as :func:`read_neuroml`; ``source`` names the input in messages and metadata.
    """
    where = source or "<neuro-ml annotation>"
    if incomplete not in ("skip", "error"):
        raise ValueError(f"incomplete must be 'skip' or 'error', got {incomplete!r}")
    if slice_order not in ("auto", "superior_to_inferior", "inferior_to_superior"):
        raise ValueError(
            "slice_order must be 'auto', 'superior_to_inferior' or 'inferior_to_superior', "
            f"got {slice_order!r}"
        )
    block = _annotation_block(data, source=where)
    if expert != MEAN_OF_EXPERTS and expert not in block:
        raise InputError(f"{where}: no expert {expert!r}; the file has {list(block)} (or use 'mean')")
    names = list(block) if expert == MEAN_OF_EXPERTS else [expert]

    raws: dict[str, list[_Raw]] = {}
    formats: set[str] = set()
    for name in names:
        raws[name], fmt = _parse_expert(block[name], name, where)
        if fmt is not None:
            formats.add(fmt)
    if len(formats) > 1:
        raise InputError(f"{where}: experts mix the v1 (6 points) and v2 (segments) formats")
    all_raws = [r for name in names for r in raws[name]]

    _check_bounds(all_raws, geometry, where)
    if all_raws:
        order, evidence = _resolve_slice_order(all_raws, slice_order, where)
    else:
        order, evidence = slice_order, "nothing annotated"
    for raw in all_raws:
        raw.segments = [None if s is None else _to_voxel(s, geometry, order) for s in raw.segments]
    _check_anterior_posterior(all_raws, where)
    _check_duplicate_levels(raws, where)

    skipped: list[dict[str, Any]] = []
    merged = _merge(raws, names, where)
    vertebrae: list[VertebraAnnotation] = []
    counts: list[int] = []
    for level, segments, n_experts, label, malformed in merged:
        vertebra = _build(level, segments, label, malformed, incomplete, skipped, where)
        if vertebra is not None:
            vertebrae.append(vertebra)
            counts.append(n_experts)

    vertebrae = [_mark_in_view(v, geometry) for v in vertebrae]
    ranked = sorted(range(len(vertebrae)), key=lambda i: _cranio_caudal_key(vertebrae, i))
    metadata = {
        "source": where,
        "format": formats.pop() if formats else _FORMAT_V2,
        "folder": data.get("Folder"),
        "series_instance_uid": data.get("SeriesInstanceUID"),
        "expert": expert,
        "experts": names,
        "experts_per_vertebra": [counts[i] for i in ranked],
        "slice_order": order,
        "slice_order_from": evidence,
        "frame": "voxel (z, y, x) of the LPS-reoriented image: y = row, x = column, z from slice",
        "skipped": skipped,
    }
    return SpineAnnotation(
        geometry=geometry, vertebrae=tuple(vertebrae[i] for i in ranked), metadata=metadata
    )


# ---- parsing ------------------------------------------------------------------------------------
def _annotation_block(data: Any, *, source: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(
            f"{source}: expected a JSON object with an 'Annotation' key, got {type(data).__name__}"
        )
    block = data.get("Annotation")
    if not isinstance(block, Mapping) or not block:
        raise InputError(
            f"{source}: expected 'Annotation' to map expert names to lists of vertebrae "
            f"(neuro-ml format), got {block!r:.80}"
        )
    for name, vertebrae in block.items():
        if not isinstance(vertebrae, list):
            raise InputError(
                f"{source}: expert {name!r} must hold a list of vertebrae, got {vertebrae!r:.80}"
            )
    return dict(block)


def _parse_expert(items: list[Any], expert: str, where: str) -> tuple[list[_Raw], str | None]:
    raws: list[_Raw] = []
    fmt: str | None = None
    for position, item in enumerate(items):
        what = f"{where}: {expert}, vertebra #{position}"
        if isinstance(item, Mapping):
            item_fmt = _FORMAT_V2
            raw = _parse_v2(item, expert, position, what)
        elif isinstance(item, list):
            item_fmt = _FORMAT_V1
            raw = _parse_v1(item, expert, position, what)
        else:
            raise InputError(
                f"{what}: expected an object with 'segments' or a list of 6 points, got {item!r:.80}"
            )
        if fmt is not None and item_fmt != fmt:
            raise InputError(f"{what}: mixes the v1 (6 points) and v2 (segments) formats")
        fmt = item_fmt
        raws.append(raw)
    return raws, fmt


def _parse_v2(item: Mapping[str, Any], expert: str, position: int, what: str) -> _Raw:
    level_name = item.get("type")
    level = None if level_name in (None, "") else parse_neuroml_level(level_name)
    if level is not None:
        what = f"{what} ({level_name})"
    segments = item.get("segments")
    if segments is None:
        return _Raw(expert, position, level, [None, None, None])
    if not isinstance(segments, list):
        raise InputError(f"{what}: 'segments' must be a list of 3 point pairs, got {segments!r:.80}")
    parsed = [_parse_pair(s, f"{what}, segment #{i}") for i, s in enumerate(segments)]
    if len(parsed) != len(SEGMENT_NAMES):
        reason = f"{len(parsed)} segments instead of 3 (anterior, middle, posterior): walls unknown"
        return _Raw(expert, position, level, [None, None, None], malformed_reason=reason)
    return _Raw(expert, position, level, parsed)


def _parse_v1(item: list[Any], expert: str, position: int, what: str) -> _Raw:
    if len(item) != 2 * len(SEGMENT_NAMES):
        reason = f"{len(item)} points instead of 6: walls unknown"
        return _Raw(expert, position, None, [None, None, None], malformed_reason=reason)
    segments = [
        _parse_pair(item[2 * i : 2 * i + 2], f"{what}, points #{2 * i}-{2 * i + 1}") for i in range(3)
    ]
    return _Raw(expert, position, None, segments)


def _parse_pair(pair: Any, what: str) -> np.ndarray | None:
    if pair is None or (isinstance(pair, list) and len(pair) == 0):
        return None
    if not isinstance(pair, list) or len(pair) != 2 or any(p is None for p in pair):
        raise InputError(
            f"{what}: expected a pair of points [[row, column, slice], [row, column, slice]], "
            f"got {pair!r:.80}"
        )
    try:
        points = np.array(pair, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: points must be numbers, got {pair!r:.80}") from None
    if points.shape != (2, 3) or not np.all(np.isfinite(points)):
        raise InputError(f"{what}: expected two finite 3D points (row, column, slice), got {pair!r:.80}")
    return points


# ---- frame --------------------------------------------------------------------------------------
def _check_bounds(raws: list[_Raw], geometry: ImageGeometry, where: str) -> None:
    nz, ny, nx = geometry.shape
    upper = np.array([ny, nx, nz], dtype=np.float64) - 1 + BOUNDS_TOLERANCE_VOXELS  # (row, column, slice)
    for raw in raws:
        for i, seg in enumerate(raw.segments):
            if seg is None:
                continue
            if np.any(seg < -BOUNDS_TOLERANCE_VOXELS) or np.any(seg > upper):
                raise InputError(
                    f"{where}: {raw.expert}, vertebra #{raw.position} {SEGMENT_NAMES[i]} segment has points "
                    f"{seg.tolist()} (row, column, slice) outside the image of {ny} rows, {nx} columns, "
                    f"{nz} slices (geometry shape {geometry.shape}); is this the annotation of that image?"
                )


def _resolve_slice_order(raws: list[_Raw], slice_order: SliceOrder, where: str) -> tuple[str, str]:
    """Decide whether slice index grows toward the feet; returns (order, what decided it)."""
    from_levels = _slice_order_from_levels(raws)
    if slice_order != "auto":
        if from_levels is not None and from_levels != slice_order:
            raise InputError(
                f"{where}: slice_order={slice_order!r} puts caudal levels above cranial ones; "
                f"the annotated levels say {from_levels!r} (use slice_order='auto')"
            )
        return slice_order, "given"
    if from_levels is not None:
        return from_levels, "levels"
    # The published convention: each pair lists the superior-endplate point first.
    steps = [seg[1, 2] - seg[0, 2] for raw in raws for seg in raw.segments if seg is not None]
    total = float(np.sum(np.sign(steps))) if steps else 0.0
    if total > 0:
        return "superior_to_inferior", "point order"
    if total < 0:
        return "inferior_to_superior", "point order"
    raise InputError(
        f"{where}: cannot tell which way the slices run (fewer than two levels and no vertical segment); "
        "pass slice_order='superior_to_inferior' or 'inferior_to_superior'"
    )


def _slice_order_from_levels(raws: list[_Raw]) -> str | None:
    pairs = []
    for raw in raws:
        points = [s for s in raw.segments if s is not None]
        if raw.level is not None and points:
            pairs.append((raw.level.index, float(np.mean([p[:, 2].mean() for p in points]))))
    vote = 0.0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            vote += np.sign(pairs[j][0] - pairs[i][0]) * np.sign(pairs[j][1] - pairs[i][1])
    if vote > 0:
        return "superior_to_inferior"  # caudal levels at larger slice indices
    if vote < 0:
        return "inferior_to_superior"
    return None


def _to_voxel(segment: np.ndarray, geometry: ImageGeometry, order: str) -> np.ndarray:
    """Source ``(row, column, slice)`` → our ``(z, y, x)``, the superior (larger z) point first."""
    nz = geometry.shape[0]
    row, column, slice_ = segment[:, 0], segment[:, 1], segment[:, 2]
    z = (nz - 1) - slice_ if order == "superior_to_inferior" else slice_
    voxel = np.stack([z, row, column], axis=-1)
    if voxel[1, 0] > voxel[0, 0]:
        voxel = voxel[::-1]
    return voxel


def _check_anterior_posterior(raws: list[_Raw], where: str) -> None:
    anterior = [s[:, 1].mean() for r in raws if (s := r.segments[0]) is not None]
    posterior = [s[:, 1].mean() for r in raws if (s := r.segments[2]) is not None]
    if anterior and posterior and np.mean(anterior) >= np.mean(posterior):
        raise InputError(
            f"{where}: the anterior segments do not lie anterior to the posterior ones in the image rows "
            f"(mean row {np.mean(anterior):.1f} vs {np.mean(posterior):.1f}); the reader assumes a standard "
            "axial series whose rows run anterior→posterior"
        )


def _check_duplicate_levels(raws: dict[str, list[_Raw]], where: str) -> None:
    for name, items in raws.items():
        levels = [r.level for r in items if r.level is not None]
        duplicates = sorted({lv.value for lv in levels if levels.count(lv) > 1})
        if duplicates:
            raise InputError(f"{where}: {name} annotates {duplicates} more than once")


# ---- experts and completeness -------------------------------------------------------------------
def _mean_z(raw: _Raw) -> float:
    points = [s for s in raw.segments if s is not None]
    return float(np.mean([p[:, 0].mean() for p in points])) if points else float("nan")


def _merge(
    raws: dict[str, list[_Raw]], names: list[str], where: str
) -> list[tuple[Level | None, list[np.ndarray | None], int, str, str | None]]:
    """Per output vertebra: (level, merged segments, number of experts, label, malformed reason)."""
    everything = [r for n in names for r in raws[n]]
    if len(names) == 1 or all(r.level is not None for r in everything):
        groups: dict[Any, list[_Raw]] = {}
        for raw in everything:
            key = raw.level if raw.level is not None else (raw.expert, raw.position)
            groups.setdefault(key, []).append(raw)
        grouped = list(groups.values())
    else:
        counts = {n: len(raws[n]) for n in names}
        if len(set(counts.values())) != 1:
            raise InputError(
                f"{where}: cannot average experts without levels when they annotated different numbers "
                f"of vertebrae ({counts}); choose one with expert=..."
            )
        ranked = {n: sorted(raws[n], key=lambda r: -_mean_z(r)) for n in names}  # cranial first
        grouped = [[ranked[n][i] for n in names] for i in range(counts[names[0]])]

    merged = []
    for group in grouped:
        level = group[0].level
        segments: list[np.ndarray | None] = []
        for i in range(len(SEGMENT_NAMES)):
            present = [r.segments[i] for r in group if r.segments[i] is not None]
            segments.append(np.mean(present, axis=0) if present else None)
        label = level.value if level is not None else f"#{group[0].position} of {group[0].expert}"
        reasons = [r.malformed_reason for r in group if r.malformed_reason]
        malformed = reasons[0] if reasons and all(s is None for s in segments) else None
        merged.append((level, segments, len(group), label, malformed))
    return merged


def _build(
    level: Level | None,
    segments: list[np.ndarray | None],
    label: str,
    malformed: str | None,
    incomplete: IncompletePolicy,
    skipped: list[dict[str, Any]],
    where: str,
) -> VertebraAnnotation | None:
    anterior, middle, posterior = segments
    if anterior is not None and middle is not None and posterior is not None:
        upper = [anterior[0], middle[0], posterior[0]]
        lower = [anterior[1], middle[1], posterior[1]]
        return VertebraAnnotation.from_keypoints(level, np.array(upper + lower))
    missing = [n for n, s in zip(SEGMENT_NAMES, segments, strict=True) if s is None]
    if malformed is not None:
        reason = malformed
    else:
        reason = f"missing {' and '.join(missing)} segment{'s' if len(missing) > 1 else ''}"
    if incomplete == "error":
        raise InputError(f"{where}: vertebra {label}: {reason} (pass incomplete='skip' to skip it)")
    if malformed is None and anterior is not None and posterior is not None:
        action = "kept without keypoints; centre from the anterior and posterior walls"
        center = np.concatenate([anterior, posterior]).mean(axis=0)
        vertebra: VertebraAnnotation | None = VertebraAnnotation(level=level, center=center)
    else:
        action = "dropped"
        vertebra = None
    logger.info("%s: vertebra %s %s: %s", where, label, action, reason)
    skipped.append({"vertebra": label, "reason": reason, "action": action})
    return vertebra


def _mark_in_view(vertebra: VertebraAnnotation, geometry: ImageGeometry) -> VertebraAnnotation:
    """A vertebra with a keypoint in the image's outermost slice, row or column is not fully in view
    (:func:`vfq.keypoints.fully_in_view`, the rule the product applies to what it reports)."""
    if vertebra.keypoints is None:
        return vertebra
    return replace(vertebra, fully_in_view=bool(fully_in_view(vertebra.keypoints, geometry.shape)))


def _cranio_caudal_key(vertebrae: Sequence[VertebraAnnotation], i: int) -> float:
    """Sort key: the level's index when every vertebra has one, else minus z (z grows superiorly)."""
    level = vertebrae[i].level
    if level is not None and all(v.level is not None for v in vertebrae):
        return float(level.index)
    return -float(vertebrae[i].center[0])
