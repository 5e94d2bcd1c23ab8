"""The Genant rule of DESIGN §2: thresholds, the neighbour-referenced crush term, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfq.genant import GRADE_THRESHOLDS, GenantGrade, genant, grade_from_loss, neighbour_reference


@pytest.mark.parametrize(
    ("loss", "grade"),
    [
        (0.0, 0),
        (0.1999999, 0),
        (0.20, 1),
        (0.2499999, 1),
        (0.25, 2),
        (0.3999999, 2),
        (0.40, 3),
        (0.95, 3),
    ],
)
def test_grade_at_and_around_each_threshold(loss, grade):
    assert grade_from_loss(loss) == grade


def _single(ha: float, hm: float, hp: float) -> tuple[float, int]:
    result = genant(np.array([[ha, hm, hp]]))
    return float(result.loss[0]), int(result.grade[0])


@pytest.mark.parametrize(
    ("heights", "loss", "grade"),
    [
        ((20.0, 20.0, 20.0), 0.0, GenantGrade.NORMAL),
        ((16.0, 19.0, 20.0), 0.20, GenantGrade.MILD),  # wedge exactly at 20 %
        ((15.2, 19.0, 20.0), 0.24, GenantGrade.MILD),
        ((20.0, 15.0, 20.0), 0.25, GenantGrade.MODERATE),  # biconcave exactly at 25 %
        ((20.0, 12.0, 20.0), 0.40, GenantGrade.SEVERE),
        ((22.0, 23.0, 20.0), 0.0, GenantGrade.NORMAL),  # taller front: clamped at 0
    ],
)
def test_single_vertebra_has_no_crush_term(heights, loss, grade):
    got_loss, got_grade = _single(*heights)
    assert got_loss == pytest.approx(loss, abs=1e-12)
    assert got_grade == grade


def test_crush_against_the_median_of_two_neighbours_each_side():
    # Posterior heights: the third body is crushed to 70 % of its neighbours' median (20 mm).
    hp = np.array([19.0, 20.0, 14.0, 21.0, 20.0])
    heights = np.stack([hp, hp, hp], axis=1)
    result = genant(heights)
    assert result.hp_ref[2] == pytest.approx(20.0)  # median of 19, 20, 21, 20
    assert result.loss[2] == pytest.approx(0.30)
    assert result.grade[2] == GenantGrade.MODERATE
    # Its neighbours are not penalised by the crushed body (median of four is robust to one).
    assert result.hp_ref[1] == pytest.approx(np.median([19.0, 14.0, 21.0]))
    assert result.grade[[0, 1, 3, 4]].tolist() == [0, 0, 0, 0]


def test_crush_term_with_missing_neighbours():
    # First vertebra: only two neighbours below; last: only one above.
    hp = np.array([15.0, 20.0, 20.0])
    heights = np.stack([hp, hp, hp], axis=1)
    result = genant(heights)
    assert result.hp_ref.tolist() == [20.0, pytest.approx(17.5), pytest.approx(17.5)]
    assert result.loss[0] == pytest.approx(0.25)
    assert result.grade[0] == GenantGrade.MODERATE
    assert np.isnan(neighbour_reference(np.array([20.0])))[0]


def test_largest_of_the_three_terms_wins():
    # Wedge 10 %, biconcave 22 %, crush 30 %.
    heights = np.array([[20.0, 20.0, 20.0], [12.6, 10.92, 14.0], [20.0, 20.0, 20.0]])
    result = genant(heights)
    assert result.loss[1] == pytest.approx(0.30)
    assert result.study_score == pytest.approx(0.30)


def test_bad_heights_are_refused():
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        genant(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="posterior heights positive"):
        genant(np.array([[10.0, 10.0, 0.0]]))
    with pytest.raises(ValueError, match="finite"):
        genant(np.array([[np.nan, 10.0, 10.0]]))


def test_empty_study_scores_zero():
    result = genant(np.zeros((0, 3)))
    assert result.study_score == 0.0 and result.grade.size == 0


@given(st.lists(st.tuples(*(st.floats(5.0, 40.0),) * 3), min_size=1, max_size=12))
def test_loss_and_grade_are_consistent(rows):
    result = genant(np.array(rows))
    assert np.all(result.loss >= 0) and np.all(result.loss < 1)
    expected = np.digitize(result.loss, GRADE_THRESHOLDS)
    assert np.array_equal(result.grade, expected)
