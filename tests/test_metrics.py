"""Tests of the evaluation metrics on hand-made cases with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.errors import InputError
from vfq.genant import GenantGrade
from vfq.levels import Level
from vfq.metrics import (
    ErrorStats,
    auc_interval,
    evaluate,
    grade_agreement,
    level_accuracy,
    match_radii_mm,
    match_vertebrae,
    roc_auc,
)
from vfq.volume import ImageGeometry

#: 1 mm isotropic, identity direction: voxel (z, y, x) = world (x, y, z) reversed.
GEOMETRY = ImageGeometry(shape=(400, 100, 100), spacing=(1.0, 1.0, 1.0))


def true_vertebra(
    z: float,
    level: Level | None = None,
    *,
    grade: int | None = None,
    hp: float = 20.0,
    ha: float | None = None,
    fully_in_view: bool = True,
) -> VertebraAnnotation:
    """A true body centred at voxel (z, 50, 50) with posterior height ``hp`` (mm)."""
    ha = hp if ha is None else ha
    keypoints = np.array(
        [
            [z + ha / 2, 40, 50], [z + hp / 2, 50, 50], [z + hp / 2, 60, 50],
            [z - ha / 2, 40, 50], [z - hp / 2, 50, 50], [z - hp / 2, 60, 50],
        ]
    )  # fmt: skip
    return VertebraAnnotation(
        level=level,
        center=np.array([z, 50.0, 50.0]),
        keypoints=keypoints,
        grade=grade,
        fully_in_view=fully_in_view,
    )


def predicted(
    z: float,
    dx: float = 0.0,
    level: Level | None = None,
    *,
    grade: int | None = None,
    loss: float | None = None,
) -> VertebraAnnotation:
    return VertebraAnnotation(level=level, center=[z, 50.0, 50.0 + dx], grade=grade, loss=loss)


def spine(*vertebrae: VertebraAnnotation, geometry: ImageGeometry = GEOMETRY) -> SpineAnnotation:
    return SpineAnnotation(geometry=geometry, vertebrae=vertebrae)


# ---- ROC AUC ------------------------------------------------------------------------------------
def test_auc_known_value() -> None:
    result = roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert result.auc == 0.75
    assert (result.n_positive, result.n_negative, result.reason) == (2, 2, None)


def test_auc_ties_count_one_half() -> None:
    # positives {0.5, 0.9} vs negatives {0.2, 0.5}: 1 + 0.5 + 1 + 1 = 3.5 of 4 pairs
    assert roc_auc([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]).auc == 0.875
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]).auc == 0.5


def test_auc_extremes_and_booleans() -> None:
    assert roc_auc([1, 2, 3, 4], [False, False, True, True]).auc == 1.0
    assert roc_auc([4, 3, 2, 1], [False, False, True, True]).auc == 0.0


@pytest.mark.parametrize(
    ("labels", "reason"),
    [([0, 0, 0], "no positive samples"), ([1, 1], "no negative samples"), ([], "no samples")],
)
def test_auc_undefined_with_one_class(labels: list[int], reason: str) -> None:
    result = roc_auc(np.linspace(0, 1, len(labels)), labels)
    assert math.isnan(result.auc)
    assert result.reason is not None and reason in result.reason


def test_auc_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="one label per score"):
        roc_auc([0.1, 0.2], [1])
    with pytest.raises(InputError, match="finite"):
        roc_auc([0.1, math.nan], [0, 1])
    with pytest.raises(InputError, match="0/1"):
        roc_auc([0.1, 0.2], [0, 2])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.7, 1.0]), st.booleans()), min_size=2, max_size=30
    ).filter(lambda xs: 0 < sum(y for _, y in xs) < len(xs))
)
def test_auc_equals_pairwise_definition_and_scipy(samples: list[tuple[float, bool]]) -> None:
    from scipy.stats import mannwhitneyu

    scores = np.array([s for s, _ in samples])
    labels = np.array([y for _, y in samples])
    pos, neg = scores[labels], scores[~labels]
    pairwise = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    result = roc_auc(scores, labels)
    assert result.auc == pytest.approx(pairwise, abs=1e-12)
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert result.auc == pytest.approx(u / (pos.size * neg.size), abs=1e-12)


# ---- matching -----------------------------------------------------------------------------------
def test_matching_with_an_extra_prediction_and_a_missed_truth() -> None:
    truth = spine(true_vertebra(100, Level.T12), true_vertebra(75, Level.L1), true_vertebra(50, Level.L2))
    prediction = spine(predicted(300), predicted(50, dx=4.0), predicted(100, dx=3.0))
    det = match_vertebrae(prediction, truth)
    assert (det.true_positives, det.false_positives, det.false_negatives) == (2, 1, 1)
    assert {(m.prediction, m.truth, m.distance_mm) for m in det.matches} == {(2, 0, 3.0), (1, 2, 4.0)}
    assert det.false_positive_predictions == (0,)
    assert det.missed_truths == (1,)
    assert det.precision == pytest.approx(2 / 3)
    assert det.recall == pytest.approx(2 / 3)


def test_radius_is_half_the_posterior_height_inclusive() -> None:
    truth = spine(true_vertebra(100, hp=20.0, ha=8.0))  # a wedge: mean height would shrink the radius
    np.testing.assert_allclose(match_radii_mm(truth), [10.0])
    assert match_vertebrae(spine(predicted(100, dx=10.0)), truth).true_positives == 1
    assert match_vertebrae(spine(predicted(100, dx=10.001)), truth).true_positives == 0
    assert match_vertebrae(spine(predicted(100, dx=7.0)), truth, radius_factor=0.25).true_positives == 0


def test_matching_is_one_to_one_nearest_first() -> None:
    truth = spine(true_vertebra(100))
    det = match_vertebrae(spine(predicted(100, dx=5.0), predicted(100, dx=-2.0)), truth)
    assert [(m.prediction, m.distance_mm) for m in det.matches] == [(1, 2.0)]
    assert det.false_positive_predictions == (0,)


def test_matching_prefers_the_nearest_pair_globally() -> None:
    # prediction 0 lies between both truths, nearer to truth 1; prediction 1 is on truth 1.
    truth = spine(true_vertebra(100, hp=30.0), true_vertebra(80, hp=30.0))
    det = match_vertebrae(spine(predicted(88), predicted(80)), truth)
    assert {(m.prediction, m.truth) for m in det.matches} == {(1, 1), (0, 0)}
    assert det.true_positives == 2


def test_partial_truths_are_neither_required_nor_false_positives() -> None:
    truth = spine(
        true_vertebra(100, fully_in_view=False), true_vertebra(75), true_vertebra(50, fully_in_view=False)
    )
    det = match_vertebrae(spine(predicted(100, dx=1.0), predicted(75)), truth)
    assert (det.true_positives, det.false_positives, det.false_negatives, det.ignored) == (1, 0, 0, 1)
    assert det.missed_truths == ()
    assert [m.counted for m in det.matches if m.truth == 0] == [False]


def test_truth_without_keypoints_needs_a_fallback_height() -> None:
    truth = spine(VertebraAnnotation(level=Level.L1, center=[100.0, 50.0, 50.0]))
    with pytest.raises(InputError, match=r"\['#0 \(L1\)'\].*fallback_height_mm"):
        match_vertebrae(spine(predicted(100)), truth)
    np.testing.assert_allclose(match_radii_mm(truth, fallback_height_mm=30.0), [15.0])
    assert match_vertebrae(spine(predicted(100, dx=14.0)), truth, fallback_height_mm=30.0).true_positives == 1
    with pytest.raises(InputError, match="fallback_height_mm must be"):
        match_radii_mm(truth, fallback_height_mm=0.0)


def test_centres_are_compared_in_world_mm() -> None:
    # The prediction lives on a grid with 2 mm slices: its voxel z = 51.5 is world z = 103 mm.
    coarse = ImageGeometry(shape=(200, 100, 100), spacing=(2.0, 1.0, 1.0))
    truth = spine(true_vertebra(100))
    det = match_vertebrae(spine(predicted(51.5), geometry=coarse), truth)
    assert [m.distance_mm for m in det.matches] == [3.0]


def test_empty_predictions_and_truths() -> None:
    det = match_vertebrae(spine(), spine(true_vertebra(100)))
    assert (det.true_positives, det.false_negatives) == (0, 1)
    assert math.isnan(det.precision) and det.recall == 0.0
    det = match_vertebrae(spine(predicted(100)), spine())
    assert det.false_positives == 1 and math.isnan(det.recall)


# ---- grade and level agreement ------------------------------------------------------------------
def test_grade_agreement_counts() -> None:
    result = grade_agreement([0, 1, 3, 2, None, 0], [0, 2, 1, 2, 3, None])
    assert (result.n, result.exact, result.within_one) == (4, 2, 3)
    assert result.exact_rate == 0.5 and result.within_one_rate == 0.75
    assert result.confusion[2][1] == 1  # true 2, predicted 1
    assert result.confusion[1][3] == 1  # true 1, predicted 3
    assert sum(map(sum, result.confusion)) == 4
    with pytest.raises(InputError, match="0-3"):
        grade_agreement([4], [0])


def test_level_accuracy() -> None:
    result = level_accuracy(
        [Level.T12, Level.L1, None, Level.L3, Level.L4], [Level.T12, Level.L2, Level.L1, Level.L3, None]
    )
    assert (result.n, result.correct, result.unnamed) == (3, 2, 1)
    assert result.accuracy == pytest.approx(2 / 3)
    assert math.isnan(level_accuracy([], []).accuracy)


def test_error_stats() -> None:
    stats = ErrorStats.of([0.0, 1.0, 2.0, 3.0, 4.0])
    assert (stats.n, stats.mean_mm, stats.median_mm, stats.max_mm) == (5, 2.0, 2.0, 4.0)
    assert stats.p95_mm == pytest.approx(3.8)
    assert ErrorStats.of([]).n == 0 and math.isnan(ErrorStats.of([]).median_mm)


# ---- the whole evaluation -----------------------------------------------------------------------
def three_studies() -> list[tuple[SpineAnnotation, SpineAnnotation]]:
    t12, l1, l2 = Level.T12, Level.L1, Level.L2
    study_a = (
        spine(
            predicted(100, 1.0, t12, grade=0, loss=0.10),
            predicted(75, 2.0, l1, grade=2, loss=0.30),
            predicted(300, 0.0, None, grade=0, loss=0.05),  # false positive
        ),
        spine(true_vertebra(100, t12, grade=0), true_vertebra(75, l1, grade=2)),
    )
    study_b = (
        spine(
            predicted(100, 3.0, t12, grade=0, loss=0.25),
            predicted(75, 4.0, l2, grade=2, loss=0.21),  # wrong level, grade one off
        ),
        spine(true_vertebra(100, t12, grade=0), true_vertebra(75, l1, grade=1)),
    )
    study_c = (
        spine(
            predicted(100, 0.0, t12, grade=0, loss=0.05),
            predicted(50, 1.0, l2, grade=3, loss=0.95),  # on a partial truth: ignored everywhere
        ),
        spine(
            true_vertebra(100, t12, grade=0),
            true_vertebra(75, l1, grade=0),  # missed
            true_vertebra(50, l2, grade=3, fully_in_view=False),
        ),
    )
    return [study_a, study_b, study_c]


def test_evaluate_summary() -> None:
    s = evaluate(three_studies())
    assert s.n_studies == 3
    assert (s.true_positives, s.false_positives, s.false_negatives, s.ignored) == (5, 1, 1, 1)
    assert s.precision == pytest.approx(5 / 6) and s.recall == pytest.approx(5 / 6)
    # centre errors 1, 2, 3, 4, 0 mm
    assert (s.center_error.n, s.center_error.median_mm, s.center_error.max_mm) == (5, 2.0, 4.0)
    assert s.center_error.p95_mm == pytest.approx(3.8)
    assert (s.grade.n, s.grade.exact, s.grade.within_one) == (5, 4, 5)
    assert (s.level.n, s.level.correct) == (5, 4)
    # vertebra level, grade >= 1: positives {0.30, 0.21} vs negatives {0.10, 0.25, 0.05} -> 5 of 6
    assert s.auc_vertebra_grade1.auc == pytest.approx(5 / 6)
    assert (s.auc_vertebra_grade1.n_positive, s.auc_vertebra_grade1.n_negative) == (2, 3)
    assert s.auc_vertebra_grade2.auc == 1.0
    # patient level: A 0.30 (grade 2), B 0.25 (grade 1), C 0.95 (grade 0: the partial grade-3 L2
    # does not make it positive, but the study score reported on it counts)
    assert s.auc_patient_grade1.auc == 0.0
    assert (s.auc_patient_grade1.n_positive, s.auc_patient_grade1.n_negative) == (2, 1)
    assert s.auc_patient_grade2.auc == 0.5
    assert (s.auc_patient_grade2.n_positive, s.auc_patient_grade2.n_negative) == (1, 2)
    assert len(s.studies) == 3 and s.studies[2].missed_truths == (1,)


def test_patient_without_graded_truth_is_left_out_and_empty_prediction_scores_zero() -> None:
    ungraded = (spine(predicted(100, loss=0.9)), spine(true_vertebra(100)))
    positive_missed = (spine(), spine(true_vertebra(100, grade=2)))
    negative = (spine(predicted(100, loss=0.1)), spine(true_vertebra(100, grade=0)))
    s = evaluate([ungraded, positive_missed, negative])
    # the missed positive scores 0 < 0.1: the AUC is 0
    assert (s.auc_patient_grade1.n_positive, s.auc_patient_grade1.n_negative) == (1, 1)
    assert s.auc_patient_grade1.auc == 0.0


def test_format_table() -> None:
    table = evaluate(three_studies()).format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "n"]
    assert set(lines[1]) == {"-"}
    assert any(line.startswith("precision") and line.split()[-2:] == ["0.833", "6"] for line in lines)
    assert any(line.startswith("centre error 95th percentile (mm)") and "3.80" in line for line in lines)
    assert any(
        line.startswith("detection TP / FP / FN (ignored)") and "5 / 1 / 1 (1)" in line for line in lines
    )
    assert any(line.startswith("ROC AUC vertebra, grade >= 1") and "0.833" in line for line in lines)
    patient = next(line for line in lines if line.startswith("ROC AUC patient, grade >= 2"))
    assert "0.500 (95 % CI 0.000-1.000)" in patient
    # study B's L1 is predicted "L2"; every predicted level is named in these studies
    assert any(line.startswith("levels left unnamed") and line.split()[-2:] == ["0", "5"] for line in lines)
    assert len({len(line) for line in lines[2:]}) == 1  # aligned columns


def test_auc_interval_brackets_the_auc_and_is_reproducible() -> None:
    assert auc_interval([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == (1.0, 1.0)  # every draw separates
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    scores = labels + rng.normal(scale=1.0, size=100)
    low, high = auc_interval(scores, labels)
    assert low < roc_auc(scores, labels).auc < high
    assert 0.05 < high - low < 0.3  # a hundred samples of a noisy score
    assert auc_interval(scores, labels) == (low, high)
    assert all(math.isnan(v) for v in auc_interval([0.1, 0.2], [1, 1]))
    assert all(math.isnan(v) for v in auc_interval([], []))  # no studies


def test_format_table_reports_undefined_values() -> None:
    table = evaluate([(spine(predicted(100, loss=0.1)), spine(true_vertebra(100, grade=0)))]).format_table()
    assert "n/a (no positive samples)" in table
    assert evaluate([]).format_table().count("n/a") >= 8


def test_grade_enum_values_are_accepted() -> None:
    s = evaluate(
        [(spine(predicted(100, grade=GenantGrade.MILD, loss=0.22)), spine(true_vertebra(100, grade=1)))]
    )
    assert (s.grade.n, s.grade.exact) == (1, 1)
