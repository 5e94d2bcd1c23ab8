"""The operating point: the fracture flag reads the Genant grade at a chosen bound, never changes it."""

from __future__ import annotations

import pytest

from vfq.client import OperatingPoint
from vfq.genant import GRADE_THRESHOLDS, GenantGrade, grade_from_loss


@pytest.mark.parametrize("threshold", [0.20, 0.25])
def test_the_flag_is_the_loss_at_or_above_the_threshold(threshold):
    point = OperatingPoint(fracture_threshold=threshold)
    for loss in (0.0, 0.199, 0.20, 0.2499, 0.25, 0.39, 0.40, 0.9):
        assert point.is_fractured(int(grade_from_loss(loss))) == (loss >= threshold), loss


def test_default_flags_every_genant_fracture_and_reports_every_vertebra():
    point = OperatingPoint()
    assert (point.fracture_threshold, point.min_report_grade, point.fracture_grade) == (0.20, 0, 1)
    assert [point.is_fractured(g) for g in GenantGrade] == [False, True, True, True]
    assert all(point.is_reported(g) for g in GenantGrade)


def test_min_report_grade_selects_the_reported_grades():
    assert [OperatingPoint(min_report_grade=2).is_reported(g) for g in GenantGrade] == [
        False,
        False,
        True,
        True,
    ]


def test_the_thresholds_are_genant_bounds():
    assert OperatingPoint(0.25).fracture_grade == 2
    assert GRADE_THRESHOLDS[OperatingPoint(0.25).fracture_grade - 1] == 0.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fracture_threshold": 0.3}, "not one of"),
        ({"fracture_threshold": 0.40}, "not one of"),
        ({"min_report_grade": 4}, "minimum report grade 4"),
        ({"min_report_grade": -1}, "minimum report grade -1"),
        ({"min_report_grade": True}, "minimum report grade True"),
    ],
)
def test_other_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OperatingPoint(**kwargs)


def test_json_form_round_trips():
    point = OperatingPoint(0.25, 3)
    assert OperatingPoint.from_json_dict(point.to_json_dict()) == point
    assert point.to_json_dict() == {"fracture_threshold": 0.25, "min_report_grade": 3}
