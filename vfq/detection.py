"""The anchor-free vertebra detector's targets and their decoding (step 5), in one place.

:func:`encode_targets` makes the training targets of the 2D detector and :func:`decode` turns its
outputs back into vertebrae; living together, the two directions cannot disagree (the round trip
is tested). :func:`quantify` then maps the keypoints into the patient and applies the Genant rule.
numpy only: it runs inside Triton's python backend.

Frames and units (see :mod:`vfq.tensors`):

* **detector pixel** ``(i_s, i_v)``: continuous indices into the ``[1, 1, S, V]`` detector input
  tensor; ``i_s`` along the spine (inferior→superior), ``i_v`` along ``e2`` (posterior increasing),
  ``DETECTOR_PIXEL_MM`` per pixel. The centre of pixel ``(0, 0)`` is ``(0, 0)``.
* **cell** ``(i, j)``: the detector's outputs at stride ``DETECTOR_STRIDE``; cell ``(i, j)`` has its
  centre at detector pixel ``(i·4 + 1.5, j·4 + 1.5)``.
* **sagittal pixel**: pixel ``(i_s, i_v)`` of the straightened image (the
  :class:`~vfq.straighten.StraightenedGrid`'s first two indices) = detector pixel minus the rows of
  padding before the image (none with :func:`vfq.preprocess.to_detector_input`).
* **world**: LPS mm ``(x, y, z)``; **voxel** ``(z, y, x)`` of the CT.

Level classes are indices into ``DETECTOR_LEVEL_CLASSES`` (C7 … L5, cranio-caudal); ``-1`` = unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vfq.errors import InputError
from vfq.genant import genant
from vfq.keypoints import NUM_KEYPOINTS, fully_in_view, heights_mm
from vfq.levels import Level
from vfq.straighten import SpineCurve, StraightenedGrid, sagittal_to_world
from vfq.tensors import (
    DETECTOR_CENTER_SIGMA_CELLS,
    DETECTOR_LEVEL_CLASSES,
    DETECTOR_MIN_SCORE,
    DETECTOR_OFFSET_CHANNELS,
    DETECTOR_PIXEL_MM,
    DETECTOR_STRIDE,
)
from vfq.volume import ImageGeometry

__all__ = [
    "DUPLICATE_DISTANCE_MM",
    "IGNORE_MIN_HEATMAP",
    "KEYPOINT_VOTE_RADIUS_CELLS",
    "LEVEL_RUN_MIN_MARGIN",
    "MIN_POSTERIOR_HEIGHT_MM",
    "REGRESSION_MARGIN_PX",
    "REGRESSION_RADIUS_CELLS",
    "UNCLASSED_LEVEL_LOG_PROB",
    "Detections",
    "DetectorTargets",
    "Vertebrae",
    "assign_levels",
    "body_outline",
    "cell_centers",
    "decode",
    "encode_targets",
    "inside_polygon",
    "quantify",
    "vertebrae_to_world",
]

#: Level targets, and offsets at least, are set on the cells within this Chebyshev radius (cells) of
#: a body's peak cell (radius 1: the 3 × 3 cells around it).
REGRESSION_RADIUS_CELLS = 1
#: Offsets are also set on every cell whose centre lies inside the body's outline (the hexagon of
#: its six keypoints) pushed outwards by this margin (detector pixels), as FCOS regresses from every
#: location inside a box: about four times the regression samples per body, many of them next to an
#: endplate (re-estimating keypoints from the cells near the keypoints themselves was measured
#: against reading them at the peak cell and came out worse; decoding reads them from the cells
#: around the peak, :data:`KEYPOINT_VOTE_RADIUS_CELLS`).
REGRESSION_MARGIN_PX = 2.0
#: :func:`decode` reads a body's keypoints from every cell within this Chebyshev radius (cells) of
#: its peak: the mean of each cell's centre plus its offsets, weighted by the cell's heatmap value.
#: Each of these cells regresses the whole body (they lie inside it: radius 1 is ±4 mm around the
#: centre), so the mean averages out the noise of one cell's estimate. Against the peak cell alone
#: it lowered the mean height error from 0.355 to 0.339 mm on 100 validation phantoms and from 0.406
#: to 0.391 mm on the 100 held-out ones; radius 2 gave the same figures (its cells weigh e⁻² of the
#: peak and less).
KEYPOINT_VOTE_RADIUS_CELLS = 1
#: The body outline: keypoint indices around the hexagon (upper endplate forwards, lower back).
_OUTLINE = (0, 1, 2, 5, 4, 3)
#: Around a partial (invalid) body, cells where its Gaussian reaches this level and exceeds the
#: valid bodies' heatmap are ignored by the heatmap loss (3 σ).
IGNORE_MIN_HEATMAP = float(np.exp(-4.5))
#: Detections whose body centres lie closer than this (mm) are duplicates; the higher score wins.
DUPLICATE_DISTANCE_MM = 8.0
#: Score (a log-probability) of a detection that :func:`assign_levels` places outside the level
#: classes (a body above C7 or below L5): as unlikely as a class the network gives 0.1 %, so the run
#: reaches past the classes only when the other detections' levels clearly say so.
UNCLASSED_LEVEL_LOG_PROB = float(np.log(1e-3))
#: :func:`assign_levels` names levels only when the best run beats every other by at least this
#: summed log-probability: at least 1000 times as likely, as much as one body put outside the
#: classes costs. On 200 held-out and validation phantoms the best run wins by 53 nats or more, but
#: in one scan by 1.1 (its bodies get no level); on the real lumbar CT (levels the phantoms never
#: taught) by 21. A wrong level is worse than none.
LEVEL_RUN_MIN_MARGIN = -UNCLASSED_LEVEL_LOG_PROB
#: A decoded body with a smaller posterior height (mm) is not a vertebral body; quantify drops it.
MIN_POSTERIOR_HEIGHT_MM = 1.0

_CELL_OFFSET = (DETECTOR_STRIDE - 1) / 2.0


_CLASS_OF_LEVEL = {level: k for k, level in enumerate(DETECTOR_LEVEL_CLASSES)}


def classes_of_levels(levels: Sequence[Level | None]) -> np.ndarray:
    """``(N,)`` int64 indices into ``DETECTOR_LEVEL_CLASSES``; -1 for levels the detector has no
    class for (C1–C6, T13, L6, S1) and for ``None``."""
    return np.array([_CLASS_OF_LEVEL.get(level, -1) for level in levels], dtype=np.int64).reshape(-1)


def levels_of_classes(classes: np.ndarray) -> tuple[Level | None, ...]:
    """The :class:`~vfq.levels.Level` of each class index (``None`` for -1)."""
    return tuple(DETECTOR_LEVEL_CLASSES[i] if i >= 0 else None for i in np.asarray(classes).tolist())


def cell_centers(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Detector-pixel ``i_s`` ``(n_rows,)`` and ``i_v`` ``(n_cols,)`` of the output cells' centres."""
    return (
        np.arange(n_rows) * DETECTOR_STRIDE + _CELL_OFFSET,
        np.arange(n_cols) * DETECTOR_STRIDE + _CELL_OFFSET,
    )


def _to_cell(points_sv: np.ndarray) -> np.ndarray:
    """Continuous cell coordinates of detector pixels ``(..., 2)``."""
    return (np.asarray(points_sv, dtype=np.float64) - _CELL_OFFSET) / DETECTOR_STRIDE


def body_outline(keypoints_sv: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
    """``(6, 2)`` the hexagon around one body's six keypoints ``(6, 2)`` (upper endplate anterior →
    posterior, then the lower one back), each corner pushed ``margin_px`` away from the body centre."""
    kp = np.asarray(keypoints_sv, dtype=np.float64)[list(_OUTLINE)]
    out = kp - kp.mean(axis=0)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return kp + margin_px * out / np.where(norm > 0, norm, 1.0)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``(M,)`` bool: which points ``(M, 2)`` lie inside the closed ``polygon`` ``(K, 2)`` (even-odd
    rule; the polygon need not be convex, e.g. a biconcave body)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(polygon, dtype=np.float64)
    b = np.roll(a, -1, axis=0)
    y, x = p[:, 0:1], p[:, 1:2]
    straddles = (a[:, 0] > y) != (b[:, 0] > y)  # (M, K): the edge crosses the point's row
    dy = np.where(b[:, 0] != a[:, 0], b[:, 0] - a[:, 0], 1.0)
    crossing_x = a[:, 1] + (y - a[:, 0]) * (b[:, 1] - a[:, 1]) / dy
    return (straddles & (x < crossing_x)).sum(axis=1) % 2 == 1


# ---------------------------------------------------------------------- training targets


@dataclass(frozen=True, eq=False)
class DetectorTargets:
    """Training targets of one straightened image at the detector's output stride (``H = S/4``, ``W = V/4``).

    Attributes:
        heatmap: ``[1, H, W]`` float32: max over the valid bodies of a Gaussian of σ =
            ``DETECTOR_CENTER_SIGMA_CELLS`` cells centred on the cell nearest to the body centre
            (value exactly 1 there: the positive of a focal loss).
        heatmap_weight: ``[1, H, W]`` float32: 0 where the heatmap loss must ignore the cell (around
            partial bodies, see :data:`IGNORE_MIN_HEATMAP`), 1 elsewhere.
        offsets: ``[12, H, W]`` float32 detector pixels from each cell centre to the six keypoints,
            channels ``(ds0, dv0, ds1, dv1, …)``; meaningful where ``regression_mask`` is above 0.
        regression_mask: ``[1, H, W]`` float32: the body's weight (1 unless given) on the cells of a
            valid body — those within ``REGRESSION_RADIUS_CELLS`` of its peak cell and those inside
            its outline grown by ``REGRESSION_MARGIN_PX`` (a cell claimed by two bodies belongs to the
            nearer centre) —, 0 elsewhere.
        levels: ``[H, W]`` int64 class index (``DETECTOR_LEVEL_CLASSES``) on the cells within
            ``REGRESSION_RADIUS_CELLS`` of the peak cells of valid bodies of known level, -1
            (ignore) elsewhere.
        peak_cells: ``(N, 2)`` int64 cell ``(i, j)`` nearest to each body's centre; an invalid body's
            may lie outside the grid; ``(-1, -1)`` where the body's keypoints are not finite.
    """

    heatmap: np.ndarray
    heatmap_weight: np.ndarray
    offsets: np.ndarray
    regression_mask: np.ndarray
    levels: np.ndarray
    peak_cells: np.ndarray


def encode_targets(
    keypoints_sv: np.ndarray,
    levels: np.ndarray,
    valid: np.ndarray,
    image_shape: tuple[int, int],
    weights: np.ndarray | None = None,
) -> DetectorTargets:
    """Encode vertebrae as the detector's training targets.

    Args:
        keypoints_sv: ``(N, 6, 2)`` detector pixels ``(i_s, i_v)`` of each body's six keypoints
            (order of :mod:`vfq.keypoints`). Invalid bodies may hold NaN (then they are not placed).
        levels: ``(N,)`` int class indices into ``DETECTOR_LEVEL_CLASSES``, -1 where unknown.
        valid: ``(N,)`` bool: the body lies wholly in the image. Invalid (partial) bodies are no
            positives and no negatives: their neighbourhood is ignored by the heatmap loss.
        image_shape: ``(S, V)`` detector input size in pixels, multiples of ``DETECTOR_STRIDE``.
        weights: ``(N,)`` weight of each valid body's offsets in the loss (> 0; ``regression_mask``
            holds it); ``None``: 1 for all.

    Raises:
        InputError: inconsistent shapes, a non-finite valid body, a level out of range, or a valid
            body whose centre lies outside the image.
    """
    kp = np.asarray(keypoints_sv, dtype=np.float64)
    lv = np.asarray(levels).astype(np.int64).reshape(-1)
    ok = np.asarray(valid, dtype=bool).reshape(-1)
    n = kp.shape[0] if kp.ndim == 3 else -1
    if kp.shape != (n, NUM_KEYPOINTS, 2) or lv.shape != (n,) or ok.shape != (n,):
        raise InputError(
            "expected keypoints (N, 6, 2), levels (N,) and valid (N,), "
            f"got {kp.shape}, {lv.shape}, {ok.shape}"
        )
    s_px, v_px = (int(x) for x in image_shape)
    if s_px <= 0 or v_px <= 0 or s_px % DETECTOR_STRIDE or v_px % DETECTOR_STRIDE:
        raise InputError(f"image_shape must be positive multiples of {DETECTOR_STRIDE}, got {image_shape}")
    if ((lv < -1) | (lv >= len(DETECTOR_LEVEL_CLASSES))).any():
        raise InputError(f"levels must be -1 or in [0, {len(DETECTOR_LEVEL_CLASSES)}), got {lv.tolist()}")
    if not np.isfinite(kp[ok]).all():
        raise InputError("the keypoints of valid bodies must be finite")
    weight = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if weight.shape != (n,) or not (weight[ok] > 0).all():
        raise InputError(
            f"weights must be (N,) = ({n},) and positive for the valid bodies, got {weight.tolist()}"
        )
    h, w = s_px // DETECTOR_STRIDE, v_px // DETECTOR_STRIDE

    placed = np.isfinite(kp).all(axis=(1, 2))
    centers = np.where(placed[:, None], kp.mean(axis=1), 0.0)
    cells = _to_cell(centers)
    peaks = np.rint(cells).astype(np.int64)
    outside = ok & ((peaks[:, 0] < 0) | (peaks[:, 0] >= h) | (peaks[:, 1] < 0) | (peaks[:, 1] >= w))
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"valid body {k} has its centre at detector pixel {centers[k].round(2).tolist()}, outside the "
            f"image of {s_px} × {v_px} px; mark it invalid (partial) or check the keypoints' frame"
        )

    ii = np.arange(h)[:, None]
    jj = np.arange(w)[None, :]
    two_sigma2 = 2.0 * DETECTOR_CENTER_SIGMA_CELLS**2
    positive = np.zeros((h, w))
    partial = np.zeros((h, w))
    for k in np.flatnonzero(placed):
        g = np.exp(-((ii - peaks[k, 0]) ** 2 + (jj - peaks[k, 1]) ** 2) / two_sigma2)
        target = positive if ok[k] else partial
        np.maximum(target, g, out=target)
    ignore = (partial >= IGNORE_MIN_HEATMAP) & (partial > positive)

    offsets = np.zeros((DETECTOR_OFFSET_CHANNELS, h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.float32)
    level_target = np.full((h, w), -1, dtype=np.int64)
    nearest = np.full((h, w), np.inf)
    center_s, center_v = cell_centers(h, w)
    cells_sv = np.stack(np.meshgrid(center_s, center_v, indexing="ij"), axis=-1)  # (h, w, 2)
    r = REGRESSION_RADIUS_CELLS
    for k in np.flatnonzero(ok):
        near_peak = (np.abs(ii - peaks[k, 0]) <= r) & (np.abs(jj - peaks[k, 1]) <= r)
        outline = body_outline(kp[k], REGRESSION_MARGIN_PX)
        (i0, j0), (i1, j1) = _to_cell(outline.min(axis=0)), _to_cell(outline.max(axis=0))
        box = (ii >= np.floor(i0)) & (ii <= np.ceil(i1)) & (jj >= np.floor(j0)) & (jj <= np.ceil(j1))
        inside = np.zeros((h, w), dtype=bool)
        inside[box] = inside_polygon(cells_sv[box], outline)
        d2 = (ii - cells[k, 0]) ** 2 + (jj - cells[k, 1]) ** 2
        take = (near_peak | inside) & (d2 < nearest)  # a cell between two bodies: the nearer centre
        nearest = np.where(take, d2, nearest)
        mask[take] = weight[k]
        level_target = np.where(take, np.where(near_peak, lv[k], -1), level_target)
        offsets[:, take] = (kp[k][None] - cells_sv[take][:, None]).reshape(-1, DETECTOR_OFFSET_CHANNELS).T

    return DetectorTargets(
        heatmap=positive.astype(np.float32)[None],
        heatmap_weight=(~ignore).astype(np.float32)[None],
        offsets=offsets,
        regression_mask=mask[None],
        levels=level_target,
        peak_cells=np.where(placed[:, None], peaks, -1),
    )


# ---------------------------------------------------------------------- decoding


@dataclass(frozen=True, eq=False)
class Detections:
    """Vertebrae found on one detector image, ordered along ``s`` (inferior → superior).

    Attributes:
        keypoints_sv: ``(N, 6, 2)`` float64 detector pixels ``(i_s, i_v)`` of the six keypoints.
        scores: ``(N,)`` heatmap value at each peak (0…1).
        levels: ``(N,)`` int64 class index into ``DETECTOR_LEVEL_CLASSES``, -1 where unknown;
            consecutive detections have consecutive levels (:func:`assign_levels`).
        peak_cells: ``(N, 2)`` int64 cell ``(i, j)`` of each peak.
    """

    keypoints_sv: np.ndarray
    scores: np.ndarray
    levels: np.ndarray
    peak_cells: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def centers_sv(self) -> np.ndarray:
        """``(N, 2)`` detector pixels of the body centres (mean of the six keypoints)."""
        return self.keypoints_sv.mean(axis=1)

    @property
    def level_labels(self) -> tuple[Level | None, ...]:
        """The levels as :class:`~vfq.levels.Level` (``None`` where unknown)."""
        return levels_of_classes(self.levels)


def _squeeze_leading(array: np.ndarray, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(array)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise InputError(
            f"{name} must have {ndim} dimensions (after leading 1s), got shape {np.shape(array)}"
        )
    return a


def decode(
    heatmap: np.ndarray,
    offsets: np.ndarray,
    level_logits: np.ndarray | None = None,
    *,
    min_score: float = DETECTOR_MIN_SCORE,
    min_distance_px: float = DUPLICATE_DISTANCE_MM / DETECTOR_PIXEL_MM,
    vote_radius: int = KEYPOINT_VOTE_RADIUS_CELLS,
) -> Detections:
    """Turn the detector's outputs into vertebrae.

    1. Peaks: cells that equal the maximum of their 3 × 3 neighbourhood and reach ``min_score``.
    2. Keypoints: over the cells within ``vote_radius`` of the peak (inside the map), the mean of
       each cell's centre plus its twelve offsets (detector pixels; the offsets carry the sub-cell
       position), weighted by the cell's heatmap value; ``vote_radius=0`` reads the peak cell only.
    3. Duplicates: greedily by descending score, a peak whose body centre lies closer than
       ``min_distance_px`` to a kept one is dropped (plateaus, double peaks on one body).
    4. Order along ``s``, then levels by :func:`assign_levels`.

    Args:
        heatmap: ``[1, 1, H, W]`` (or ``[H, W]``) centre probabilities.
        offsets: ``[1, 12, H, W]`` (or ``[12, H, W]``) detector pixels.
        level_logits: ``[1, L, H, W]`` (or ``[L, H, W]``) logits of ``DETECTOR_LEVEL_CLASSES``; ``None``
            leaves every level unknown.
        min_score: smallest peak value that is a vertebra.
        min_distance_px: duplicate distance in detector pixels.
        vote_radius: Chebyshev radius (cells) of the keypoint vote around each peak.
    """
    if not min_score > 0:
        raise ValueError(
            f"min_score must be positive (a peak's value weighs its keypoint vote), got {min_score}"
        )
    if vote_radius < 0:
        raise ValueError(f"vote_radius must be 0 or more cells, got {vote_radius}")
    hm = _squeeze_leading(heatmap, 2, "heatmap").astype(np.float64)
    off = _squeeze_leading(offsets, 3, "offsets")
    h, w = hm.shape
    if off.shape != (DETECTOR_OFFSET_CHANNELS, h, w):
        raise InputError(f"offsets must have shape ({DETECTOR_OFFSET_CHANNELS}, {h}, {w}), got {off.shape}")
    logits = None
    if level_logits is not None:
        logits = _squeeze_leading(level_logits, 3, "level_logits")
        if logits.shape != (len(DETECTOR_LEVEL_CLASSES), h, w):
            raise InputError(
                f"level_logits must have shape ({len(DETECTOR_LEVEL_CLASSES)}, {h}, {w}), got {logits.shape}"
            )
    if not np.isfinite(hm).all():
        raise InputError("the centre heatmap holds NaN or infinite values")

    padded = np.pad(hm, 1, constant_values=-np.inf)
    local_max = np.max([padded[di : di + h, dj : dj + w] for di in range(3) for dj in range(3)], axis=0)
    ii, jj = np.nonzero((hm >= local_max) & (hm >= min_score))
    scores = hm[ii, jj]
    keypoints = _vote_keypoints(hm, off, ii, jj, vote_radius)
    if not np.isfinite(keypoints).all():
        raise InputError("the keypoint offsets at or around a peak hold NaN or infinite values")

    order = np.lexsort((jj, ii, -scores))  # score descending, ties inferior first
    centres = keypoints.mean(axis=1)
    kept = np.zeros(order.size, dtype=np.int64)
    n_kept = 0
    for m in order.tolist():
        d2 = ((centres[kept[:n_kept]] - centres[m]) ** 2).sum(axis=1)
        if not (d2 < min_distance_px**2).any():
            kept[n_kept] = m
            n_kept += 1
    kept = kept[:n_kept]
    sel = kept[np.lexsort((centres[kept, 1], centres[kept, 0]))]

    if logits is not None and sel.size:
        levels = assign_levels(logits[:, ii[sel], jj[sel]].T)
    else:
        levels = np.full(sel.size, -1, dtype=np.int64)
    return Detections(
        keypoints_sv=keypoints[sel].reshape(-1, NUM_KEYPOINTS, 2),
        scores=scores[sel],
        levels=levels,
        peak_cells=np.stack([ii[sel], jj[sel]], axis=-1).astype(np.int64).reshape(-1, 2),
    )


def _vote_keypoints(
    hm: np.ndarray, off: np.ndarray, ii: np.ndarray, jj: np.ndarray, radius: int
) -> np.ndarray:
    """``(M, 6, 2)`` keypoints (detector pixels) of the peaks at cells ``(ii, jj)``: the
    heatmap-weighted mean, over the cells within ``radius`` of each peak and inside the map, of each
    cell's centre plus its offsets (``hm`` ``(H, W)``, ``off`` ``(12, H, W)``)."""
    h, w = hm.shape
    step = np.arange(-radius, radius + 1)
    rows = ii[:, None, None] + step[None, :, None]  # (M, k, 1)
    cols = jj[:, None, None] + step[None, None, :]  # (M, 1, k)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (M, k, k)
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    weights = np.where(inside, hm[rows, cols], 0.0)  # (M, k, k); the peak's own weight is >= min_score > 0
    center_s, center_v = cell_centers(h, w)
    cells = np.stack(np.broadcast_arrays(center_s[rows], center_v[cols]), axis=-1)  # (M, k, k, 2)
    votes = cells[..., None, :] + np.moveaxis(off[:, rows, cols], 0, -1).reshape(
        *weights.shape, NUM_KEYPOINTS, 2
    )
    total = weights.sum(axis=(1, 2))
    return np.einsum("mab,mabkc->mkc", weights, votes) / total[:, None, None]


def assign_levels(logits: np.ndarray) -> np.ndarray:
    """Consecutive levels for detections ordered inferior → superior.

    Detection ``n`` (0 = most inferior) gets class ``f - n`` (classes are cranio-caudal, so going up
    the spine the index falls by one per vertebra). The run may reach past either end of the
    classes: a detection whose ``f - n`` falls outside them is a level the detector has no class
    for (C6 and above, S1 and below) and gets -1, scored :data:`UNCLASSED_LEVEL_LOG_PROB`. ``f``
    maximises the summed log-softmax ``Σ_n log p_n(f - n)`` of the detections inside plus that
    score of those outside, over every run with at least one detection inside (ties: the most
    cranial run). So a body above C7 at the top of a chest scan does not push the
    whole run one level down. No vertebra is assumed missed between two detections (a gap in the
    detections shifts the levels above it); no level repeats. When the best run's score is less
    than :data:`LEVEL_RUN_MIN_MARGIN` above the next best run's, the evidence does not single out
    one naming and no detection gets a level.

    Args:
        logits: ``(N, L)`` level logits per detection, ordered inferior → superior.

    Returns:
        ``(N,)`` int64 class indices (-1 = none).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"logits must have shape (N, L), got {z.shape}")
    n, n_classes = z.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.isfinite(z).all():
        raise InputError("level logits hold NaN or infinite values")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    runs = np.arange(n + n_classes - 1)  # class f - n of detection n: the run has one inside at least
    cls = runs[:, None] - rows[None, :]  # (runs, N)
    inside = (cls >= 0) & (cls < n_classes)
    per_body = np.where(inside, logp[rows, np.clip(cls, 0, n_classes - 1)], UNCLASSED_LEVEL_LOG_PROB)
    scores = per_body.sum(axis=1)
    best_f = int(np.argmax(scores))  # ties: the first, the most cranial run
    runner_up = np.max(np.delete(scores, best_f), initial=-np.inf)
    if scores[best_f] - runner_up < LEVEL_RUN_MIN_MARGIN:
        return np.full(n, -1, dtype=np.int64)
    return np.where(inside[best_f], cls[best_f], -1).astype(np.int64)


# ---------------------------------------------------------------------- back to the patient


def vertebrae_to_world(
    detections: Detections, grid: StraightenedGrid, curve: SpineCurve, *, pad_s_before: int = 0
) -> np.ndarray:
    """World LPS mm ``(N, 6, 3)`` of the detections' keypoints.

    Detector pixel ``(i_s, i_v)`` is sagittal pixel ``(i_s - pad_s_before, i_v)`` of ``grid``, placed on
    the slab's mid-plane (:func:`vfq.straighten.sagittal_to_world`).
    """
    sagittal = detections.keypoints_sv - np.array([float(pad_s_before), 0.0])
    return sagittal_to_world(curve, grid, sagittal).reshape(-1, NUM_KEYPOINTS, 3)


@dataclass(frozen=True, eq=False)
class Vertebrae:
    """The quantified vertebrae of one CT, cranio-caudally (superior first, like annotations).

    Attributes:
        keypoints_world: ``(N, 6, 3)`` world LPS mm ``(x, y, z)``.
        keypoints_sagittal: ``(N, 6, 2)`` sagittal pixels ``(i_s, i_v)`` of the straightened image
            (row 0 inferior), the image the network saw minus its padding.
        heights_mm: ``(N, 3)`` anterior, middle, posterior heights (mm), from the world keypoints.
        loss: ``(N,)`` Genant relative height loss (the fracture score).
        grade: ``(N,)`` int Genant grade 0-3.
        level: ``(N,)`` int64 class index into ``DETECTOR_LEVEL_CLASSES``, -1 where unknown.
        detection_score: ``(N,)`` centre-heatmap peak value.
    """

    keypoints_world: np.ndarray
    keypoints_sagittal: np.ndarray
    heights_mm: np.ndarray
    loss: np.ndarray
    grade: np.ndarray
    level: np.ndarray
    detection_score: np.ndarray

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    @classmethod
    def empty(cls) -> Vertebrae:
        """No vertebrae (a study that cannot be assessed)."""
        return cls(
            keypoints_world=np.zeros((0, NUM_KEYPOINTS, 3)),
            keypoints_sagittal=np.zeros((0, NUM_KEYPOINTS, 2)),
            heights_mm=np.zeros((0, 3)),
            loss=np.zeros(0),
            grade=np.zeros(0, dtype=np.int64),
            level=np.zeros(0, dtype=np.int64),
            detection_score=np.zeros(0),
        )

    @property
    def levels(self) -> tuple[Level | None, ...]:
        """The levels as :class:`~vfq.levels.Level` (``None`` where unknown)."""
        return levels_of_classes(self.level)

    def keypoints_voxel(self, geometry: ImageGeometry) -> np.ndarray:
        """``(N, 6, 3)`` voxel ``(z, y, x)`` of the keypoints in the CT of ``geometry``."""
        return geometry.world_to_voxel(self.keypoints_world)


def quantify(
    detections: Detections,
    grid: StraightenedGrid,
    curve: SpineCurve,
    ct_geometry: ImageGeometry,
    *,
    pad_s_before: int = 0,
) -> Vertebrae:
    """Keypoints into the patient, heights in mm and the Genant grade of each detection.

    Only bodies whose heights can be measured are kept: a detection with a keypoint outside the
    straightened image (one in the padding rows) or in the CT's outermost slice, row or column
    (not :func:`~vfq.keypoints.fully_in_view`: a body cut by the scan's first or last slice) is
    dropped, and so is a body whose posterior height is below :data:`MIN_POSTERIOR_HEIGHT_MM`. The
    rest are the neighbours of one another in the Genant crush term, in their order along the spine.

    Args:
        detections: from :func:`decode`, on the detector input of ``grid`` and ``curve``.
        grid: the straightened grid; ``curve``: the spine curve (world LPS mm).
        ct_geometry: the CT's grid (world LPS mm ↔ voxel ``(z, y, x)``).
        pad_s_before: rows of padding before the image in the detector input.
    """
    sagittal = detections.keypoints_sv - np.array([float(pad_s_before), 0.0])
    world = vertebrae_to_world(detections, grid, curve, pad_s_before=pad_s_before)
    heights = heights_mm(world) if len(detections) else np.zeros((0, 3))
    rows = sagittal[..., 0] if len(detections) else np.zeros((0, NUM_KEYPOINTS))
    on_image = ((rows >= -0.5) & (rows <= grid.n_s - 0.5)).all(axis=1)
    in_view = fully_in_view(ct_geometry.world_to_voxel(world), ct_geometry.shape)
    keep = on_image & in_view & (heights[:, 2] >= MIN_POSTERIOR_HEIGHT_MM)
    order = np.flatnonzero(keep)[::-1]  # detections run inferior → superior; vertebrae superior first
    heights = heights[order]
    result = genant(heights)
    return Vertebrae(
        keypoints_world=world[order],
        keypoints_sagittal=sagittal[order],
        heights_mm=heights,
        loss=result.loss,
        grade=result.grade.astype(np.int64),
        level=detections.levels[order],
        detection_score=detections.scores[order],
    )
