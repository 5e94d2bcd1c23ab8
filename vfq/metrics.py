"""Evaluation metrics: detection, centre error, Genant grade and level agreement, fracture ROC AUC.

Everything compares a prediction and a ground truth of the same CT, both as
:class:`~vfq.annotation.SpineAnnotation`. Frames and units:

* Centres are compared in **world LPS mm**: each annotation's voxel ``(z, y, x)`` centres go through
  its own :class:`~vfq.volume.ImageGeometry`, so a prediction on a resampled copy of the image is
  compared correctly.
* Heights are in mm (:meth:`SpineAnnotation.heights_mm`).

Rules (DESIGN §2, §5):

* **Matching.** A prediction may match a true vertebra whose centre lies within
  ``radius_factor`` (0.5) × that vertebra's **posterior height** ``hp`` (mm). The posterior wall is
  the height least changed by wedge and biconcave fractures, so the radius does not shrink for the
  fractured vertebrae that the evaluation cares most about. A truth without keypoints (VerSe:
  centres only) uses ``fallback_height_mm``; without one, evaluating it is an error. Matching is
  one-to-one and **greedy by distance**: all (prediction, truth) pairs inside the radius, nearest
  first (ties by truth, then prediction index), each taken if neither side is taken yet. With
  radii of half a body height and neighbouring centres about one body height apart, a prediction
  is inside at most one radius in practice, and the greedy matching is then the optimal one.
* **Partial vertebrae.** A truth with ``fully_in_view=False`` is never required: unmatched it is not
  a false negative; a prediction matched to it is neither a true nor a false positive ("ignored").
  Such pairs are left out of the centre error, the grade, level and vertebra-level AUC figures.
* **Centre error** is the world distance (mm) of the true-positive pairs.
* **Grade agreement** and **level accuracy** are over true-positive pairs in which both sides know
  the grade (level); the pairs in which only the truth knows the level are counted apart
  ("levels left unnamed").
* **ROC AUC** of the fracture score (the continuous Genant ``loss``) by the Mann–Whitney statistic,
  ties between a positive and a negative counted 1/2. *Vertebra level*: true-positive pairs whose
  prediction has a ``loss`` and whose truth has a ``grade``; positive when the true grade is at
  least the threshold (1 or 2). Missed vertebrae do not enter it (recall reports them).
  *Patient level*: one sample per study; its score is the largest ``loss`` of all its predicted
  vertebrae, 0 for a study without any — the study score a user is given
  (:attr:`vfq.genant.GenantResult.study_score`), so a prediction on a partial truth counts here
  (the product measured a body the truth says cannot be measured); it is positive when any fully
  visible true vertebra has a grade at or above the threshold, and it is left out when no fully
  visible true vertebra has a grade. With only one class the AUC is undefined: NaN, and
  :attr:`AucResult.reason` says why. The patient AUCs carry a 95 % percentile bootstrap interval
  over the studies (:func:`auc_interval`): a hundred studies pin them down to a few hundredths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vfq.annotation import SpineAnnotation
from vfq.errors import InputError
from vfq.levels import Level

__all__ = [
    "DEFAULT_RADIUS_FACTOR",
    "AucResult",
    "Detection",
    "ErrorStats",
    "EvaluationSummary",
    "GradeAgreement",
    "LevelAccuracy",
    "Match",
    "center_distances_mm",
    "evaluate",
    "grade_agreement",
    "level_accuracy",
    "match_radii_mm",
    "match_vertebrae",
    "roc_auc",
]

#: A prediction matches a truth within this fraction of the truth's posterior height.
DEFAULT_RADIUS_FACTOR = 0.5
#: Number of Genant grades (0-3): the size of the grade confusion matrix.
NUM_GRADES = 4
#: Draws of the studies for the patient AUC's bootstrap interval (:func:`auc_interval`).
BOOTSTRAP_RESAMPLES = 2000
#: Coverage of that interval.
BOOTSTRAP_LEVEL = 0.95


# ---- matching -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    """One matched (prediction, truth) pair.

    Attributes:
        prediction: index into the prediction's vertebrae.
        truth: index into the truth's vertebrae.
        distance_mm: world distance of the two centres in mm.
        counted: ``False`` when the truth is not fully in view (the pair is ignored).
    """

    prediction: int
    truth: int
    distance_mm: float
    counted: bool = True


@dataclass(frozen=True)
class Detection:
    """Outcome of matching one study's predictions to its truth.

    Attributes:
        matches: the one-to-one matches, counted and ignored, nearest first.
        false_positive_predictions: indices of predictions that matched nothing.
        missed_truths: indices of fully visible truths that no prediction matched.
    """

    matches: tuple[Match, ...]
    false_positive_predictions: tuple[int, ...]
    missed_truths: tuple[int, ...]

    @property
    def true_positives(self) -> int:
        return sum(m.counted for m in self.matches)

    @property
    def false_positives(self) -> int:
        return len(self.false_positive_predictions)

    @property
    def false_negatives(self) -> int:
        return len(self.missed_truths)

    @property
    def ignored(self) -> int:
        """Predictions matched to a truth that is not fully in view."""
        return sum(not m.counted for m in self.matches)

    @property
    def counted_matches(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.counted)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN without any counted prediction."""
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN without any fully visible truth."""
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)


def match_radii_mm(
    truth: SpineAnnotation,
    *,
    fallback_height_mm: float | None = None,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
) -> np.ndarray:
    """``(N,)`` matching radius (mm) of each true vertebra: ``radius_factor`` × posterior height.

    Raises:
        InputError: a truth without keypoints and no ``fallback_height_mm``.
    """
    if not (radius_factor > 0 and math.isfinite(radius_factor)):
        raise InputError(f"radius_factor must be positive, got {radius_factor}")
    if fallback_height_mm is not None and not (fallback_height_mm > 0 and math.isfinite(fallback_height_mm)):
        raise InputError(f"fallback_height_mm must be a positive number of mm, got {fallback_height_mm}")
    hp = truth.heights_mm()[:, 2]
    missing = np.flatnonzero(np.isnan(hp))
    if missing.size:
        if fallback_height_mm is None:
            names = [_name(truth, i) for i in missing[:5]]
            raise InputError(
                f"true vertebrae {names} have no keypoints, so no height for the matching radius; "
                "pass fallback_height_mm (e.g. a typical body height of that spine region)"
            )
        hp = np.where(np.isnan(hp), fallback_height_mm, hp)
    return radius_factor * hp


def center_distances_mm(prediction: SpineAnnotation, truth: SpineAnnotation) -> np.ndarray:
    """``(P, T)`` world distances (mm) between every predicted and every true centre."""
    p = prediction.centers_world
    t = truth.centers_world
    return np.linalg.norm(p[:, None, :] - t[None, :, :], axis=-1)


def match_vertebrae(
    prediction: SpineAnnotation,
    truth: SpineAnnotation,
    *,
    fallback_height_mm: float | None = None,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
) -> Detection:
    """Match predicted to true vertebrae one-to-one (greedy by distance; see the module docstring).

    Args:
        prediction: predicted vertebrae (centres in its geometry's voxel frame).
        truth: the ground truth of the same CT.
        fallback_height_mm: body height (mm) used for truths without keypoints.
        radius_factor: the radius as a fraction of the truth's posterior height.
    """
    radii = match_radii_mm(truth, fallback_height_mm=fallback_height_mm, radius_factor=radius_factor)
    distances = center_distances_mm(prediction, truth)
    p_idx, t_idx = np.nonzero(distances <= radii[None, :])
    candidates = sorted(zip(distances[p_idx, t_idx].tolist(), t_idx.tolist(), p_idx.tolist(), strict=True))
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches: list[Match] = []
    for d, t, p in candidates:
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        matches.append(
            Match(prediction=p, truth=t, distance_mm=float(d), counted=truth.vertebrae[t].fully_in_view)
        )
    false_positives = tuple(p for p in range(len(prediction.vertebrae)) if p not in used_p)
    missed = tuple(t for t, v in enumerate(truth.vertebrae) if t not in used_t and v.fully_in_view)
    return Detection(matches=tuple(matches), false_positive_predictions=false_positives, missed_truths=missed)


# ---- statistics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorStats:
    """Summary of distances in mm; NaN when ``n == 0``.

    Attributes:
        n: number of distances.
        mean_mm, median_mm, max_mm: as named.
        p95_mm: 95th percentile (numpy's linear interpolation between order statistics).
    """

    n: int
    mean_mm: float
    median_mm: float
    p95_mm: float
    max_mm: float

    @classmethod
    def of(cls, values_mm: Sequence[float] | np.ndarray) -> ErrorStats:
        v = np.asarray(values_mm, dtype=np.float64).ravel()
        if v.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=int(v.size),
            mean_mm=float(v.mean()),
            median_mm=float(np.median(v)),
            p95_mm=float(np.percentile(v, 95)),
            max_mm=float(v.max()),
        )


@dataclass(frozen=True)
class GradeAgreement:
    """Agreement of predicted and true Genant grades over pairs where both are known.

    Attributes:
        n: number of pairs.
        exact: pairs with the same grade.
        within_one: pairs whose grades differ by at most one.
        confusion: ``(4, 4)`` counts, rows = true grade 0-3, columns = predicted grade.
    """

    n: int
    exact: int
    within_one: int
    confusion: tuple[tuple[int, ...], ...]

    @property
    def exact_rate(self) -> float:
        return _ratio(self.exact, self.n)

    @property
    def within_one_rate(self) -> float:
        return _ratio(self.within_one, self.n)


def grade_agreement(predicted: Sequence[int | None], true: Sequence[int | None]) -> GradeAgreement:
    """Compare paired grades; pairs with a ``None`` on either side are left out."""
    if len(predicted) != len(true):
        raise InputError(f"need paired grades, got {len(predicted)} predicted and {len(true)} true")
    confusion = np.zeros((NUM_GRADES, NUM_GRADES), dtype=np.int64)
    for p, t in zip(predicted, true, strict=True):
        if p is None or t is None:
            continue
        if not (0 <= int(p) < NUM_GRADES and 0 <= int(t) < NUM_GRADES):
            raise InputError(f"Genant grades are 0-3, got predicted {p} and true {t}")
        confusion[int(t), int(p)] += 1
    diff = np.abs(np.arange(NUM_GRADES)[:, None] - np.arange(NUM_GRADES)[None, :])
    return GradeAgreement(
        n=int(confusion.sum()),
        exact=int(confusion[diff == 0].sum()),
        within_one=int(confusion[diff <= 1].sum()),
        confusion=tuple(tuple(int(c) for c in row) for row in confusion),
    )


@dataclass(frozen=True)
class LevelAccuracy:
    """Fraction of pairs, among those where both levels are known, whose levels agree.

    Attributes:
        n: pairs where both levels are known; correct: those that agree.
        unnamed: pairs where only the truth knows the level (the prediction names none: a level
            the detector has no class for, or one the decoder was not sure enough to name).
    """

    n: int
    correct: int
    unnamed: int = 0

    @property
    def accuracy(self) -> float:
        return _ratio(self.correct, self.n)


def level_accuracy(predicted: Sequence[Level | None], true: Sequence[Level | None]) -> LevelAccuracy:
    """Compare paired levels (:class:`vfq.levels.Level`); pairs with a ``None`` are left out."""
    if len(predicted) != len(true):
        raise InputError(f"need paired levels, got {len(predicted)} predicted and {len(true)} true")
    known = [(p, t) for p, t in zip(predicted, true, strict=True) if p is not None and t is not None]
    unnamed = sum(p is None and t is not None for p, t in zip(predicted, true, strict=True))
    return LevelAccuracy(n=len(known), correct=sum(p == t for p, t in known), unnamed=unnamed)


@dataclass(frozen=True)
class AucResult:
    """A ROC AUC and its sample.

    Attributes:
        auc: area under the ROC curve in ``[0, 1]``; NaN when undefined.
        n_positive, n_negative: the two classes' sizes.
        reason: why ``auc`` is NaN (``"undefined: no positive samples"`` …), else ``None``.
        interval: a :data:`BOOTSTRAP_LEVEL` bootstrap interval of ``auc`` (:func:`auc_interval`),
            where computed.
    """

    auc: float
    n_positive: int
    n_negative: int
    reason: str | None = None
    interval: tuple[float, float] | None = None


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int | bool] | np.ndarray) -> AucResult:
    """ROC AUC by the Mann–Whitney statistic: P(score of a positive > score of a negative), ties 1/2.

    Computed from mid-ranks: ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, where
    ``R_pos`` is the sum of the positives' ranks among all scores, tied scores sharing their mean rank.

    Args:
        scores: finite scores, larger = more likely positive.
        labels: 1/``True`` positive, 0/``False`` negative, same length.

    Returns:
        The AUC, or NaN with a reason when there are no positives or no negatives.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y_raw = np.asarray(labels).ravel()
    if s.shape != y_raw.shape:
        raise InputError(f"need one label per score, got {s.size} scores and {y_raw.size} labels")
    if not np.all(np.isfinite(s)):
        raise InputError("scores must be finite")
    if y_raw.size and not np.all((y_raw == 0) | (y_raw == 1)):
        raise InputError(f"labels must be 0/1 or booleans, got {sorted(set(y_raw.tolist()))}")
    y = y_raw.astype(bool)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        if y.size == 0:
            reason = "no samples"
        else:
            reason = "no positive samples" if n_pos == 0 else "no negative samples"
        return AucResult(math.nan, n_pos, n_neg, f"undefined: {reason}")
    ranks = _midranks(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return AucResult(u / (n_pos * n_neg), n_pos, n_neg)


def auc_interval(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int | bool] | np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`roc_auc`: the samples (studies, for the patient AUC)
    drawn with replacement ``resamples`` times, draws holding a single class skipped; ``(nan, nan)``
    when no draw has both. Seeded, so the same data give the same interval."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.size == 0:
        return (math.nan, math.nan)
    draws = np.random.default_rng(seed).integers(0, s.size, size=(resamples, s.size))
    aucs = [roc_auc(s[i], y[i]).auc for i in draws if 0 < y[i].sum() < s.size]
    if not aucs:
        return (math.nan, math.nan)
    low, high = np.percentile(aucs, [50 * (1 - level), 50 * (1 + level)])
    return (float(low), float(high))


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span."""
    n = values.size
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    mean_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


# ---- one summary over many studies --------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationSummary:
    """All metrics of an evaluation set (see the module docstring for the rules).

    Attributes:
        n_studies: number of (prediction, truth) pairs evaluated.
        true_positives, false_positives, false_negatives: detection counts over all studies.
        ignored: predictions matched to truths not fully in view.
        precision, recall: from the summed counts (NaN when undefined).
        center_error: world centre distances (mm) of the true positives.
        grade: Genant grade agreement over true positives.
        level: level accuracy over true positives.
        auc_vertebra_grade1, auc_vertebra_grade2: vertebra-level ROC AUC of the loss for
            true grade ≥ 1 and ≥ 2.
        auc_patient_grade1, auc_patient_grade2: patient-level ROC AUC (max loss) for a study with
            any true grade ≥ 1, ≥ 2.
        studies: each study's :class:`Detection`, in input order.
    """

    n_studies: int
    true_positives: int
    false_positives: int
    false_negatives: int
    ignored: int
    precision: float
    recall: float
    center_error: ErrorStats
    grade: GradeAgreement
    level: LevelAccuracy
    auc_vertebra_grade1: AucResult
    auc_vertebra_grade2: AucResult
    auc_patient_grade1: AucResult
    auc_patient_grade2: AucResult
    studies: tuple[Detection, ...] = ()

    def format_table(self) -> str:
        """The summary as a plain-text table (metric, value, sample size)."""
        ce = self.center_error
        rows: list[tuple[str, str, str]] = [
            ("studies", str(self.n_studies), ""),
            (
                "detection TP / FP / FN (ignored)",
                f"{self.true_positives} / {self.false_positives} / {self.false_negatives} ({self.ignored})",
                "",
            ),
            ("precision", _fmt(self.precision), str(self.true_positives + self.false_positives)),
            ("recall", _fmt(self.recall), str(self.true_positives + self.false_negatives)),
            ("centre error median (mm)", _fmt(ce.median_mm, 2), str(ce.n)),
            ("centre error 95th percentile (mm)", _fmt(ce.p95_mm, 2), str(ce.n)),
            ("centre error mean (mm)", _fmt(ce.mean_mm, 2), str(ce.n)),
            ("centre error max (mm)", _fmt(ce.max_mm, 2), str(ce.n)),
            ("Genant grade exact agreement", _fmt(self.grade.exact_rate), str(self.grade.n)),
            ("Genant grade within one grade", _fmt(self.grade.within_one_rate), str(self.grade.n)),
            ("level accuracy", _fmt(self.level.accuracy), str(self.level.n)),
            ("levels left unnamed", str(self.level.unnamed), str(self.level.n + self.level.unnamed)),
        ]
        for name, result in (
            ("ROC AUC vertebra, grade >= 1", self.auc_vertebra_grade1),
            ("ROC AUC vertebra, grade >= 2", self.auc_vertebra_grade2),
            ("ROC AUC patient, grade >= 1", self.auc_patient_grade1),
            ("ROC AUC patient, grade >= 2", self.auc_patient_grade2),
        ):
            value = (
                _fmt(result.auc)
                if result.reason is None
                else f"n/a ({result.reason.removeprefix('undefined: ')})"
            )
            if result.interval is not None:
                low, high = result.interval
                value += f" ({100 * BOOTSTRAP_LEVEL:g} % CI {_fmt(low)}-{_fmt(high)})"
            rows.append((name, value, f"{result.n_positive}+ / {result.n_negative}-"))
        headers = ("metric", "value", "n")
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(3)]
        lines = [
            f"{headers[0]:<{widths[0]}}  {headers[1]:>{widths[1]}}  {headers[2]:>{widths[2]}}",
            "-" * (sum(widths) + 4),
        ]
        lines += [f"{m:<{widths[0]}}  {v:>{widths[1]}}  {n:>{widths[2]}}" for m, v, n in rows]
        return "\n".join(lines)


def evaluate(
    pairs: Iterable[tuple[SpineAnnotation, SpineAnnotation]],
    *,
    fallback_height_mm: float | None = None,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
) -> EvaluationSummary:
    """Evaluate (prediction, truth) pairs, one per CT study, into one :class:`EvaluationSummary`.

    Args:
        pairs: ``(prediction, truth)`` per study.
        fallback_height_mm: body height (mm) for matching truths without keypoints.
        radius_factor: matching radius as a fraction of the truth's posterior height.
    """
    detections: list[Detection] = []
    distances: list[float] = []
    pred_grades: list[int | None] = []
    true_grades: list[int | None] = []
    pred_levels: list[Level | None] = []
    true_levels: list[Level | None] = []
    vertebra_scores: list[float] = []
    vertebra_grades: list[int] = []
    patient_scores: list[float] = []
    patient_grades: list[int] = []

    for prediction, truth in pairs:
        det = match_vertebrae(
            prediction, truth, fallback_height_mm=fallback_height_mm, radius_factor=radius_factor
        )
        detections.append(det)
        for m in det.counted_matches:
            p = prediction.vertebrae[m.prediction]
            t = truth.vertebrae[m.truth]
            distances.append(m.distance_mm)
            pred_grades.append(None if p.grade is None else int(p.grade))
            true_grades.append(None if t.grade is None else int(t.grade))
            pred_levels.append(p.level)
            true_levels.append(t.level)
            if p.loss is not None and t.grade is not None:
                vertebra_scores.append(float(p.loss))
                vertebra_grades.append(int(t.grade))

        losses = [float(v.loss) for v in prediction.vertebrae if v.loss is not None]
        graded = [int(v.grade) for v in truth.vertebrae if v.fully_in_view and v.grade is not None]
        if graded:
            patient_scores.append(max(losses, default=0.0))
            patient_grades.append(max(graded))

    tp = sum(d.true_positives for d in detections)
    fp = sum(d.false_positives for d in detections)
    fn = sum(d.false_negatives for d in detections)
    vg = np.asarray(vertebra_grades, dtype=np.int64)
    pg = np.asarray(patient_grades, dtype=np.int64)
    return EvaluationSummary(
        n_studies=len(detections),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        ignored=sum(d.ignored for d in detections),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        center_error=ErrorStats.of(distances),
        grade=grade_agreement(pred_grades, true_grades),
        level=level_accuracy(pred_levels, true_levels),
        auc_vertebra_grade1=roc_auc(vertebra_scores, vg >= 1),
        auc_vertebra_grade2=roc_auc(vertebra_scores, vg >= 2),
        auc_patient_grade1=_with_interval(patient_scores, pg >= 1),
        auc_patient_grade2=_with_interval(patient_scores, pg >= 2),
        studies=tuple(detections),
    )


# ---- helpers ------------------------------------------------------------------------------------
def _with_interval(scores: Sequence[float], labels: np.ndarray) -> AucResult:
    result = roc_auc(scores, labels)
    return result if result.reason else replace(result, interval=auc_interval(scores, labels))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _fmt(value: float, decimals: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{decimals}f}"


def _name(spine: SpineAnnotation, i: int) -> str:
    level = spine.vertebrae[i].level
    return f"#{i} ({level.value})" if level is not None else f"#{i}"
