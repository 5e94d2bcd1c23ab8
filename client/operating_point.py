"""The operating point: which vertebrae a report flags as fractured and which it lists.

The Genant grade of a vertebra never depends on it (:mod:`vfq.genant` alone decides the grade); the
operating point only reads the grade:

* ``fracture_threshold`` — the relative height loss from which a vertebra is flagged ``fractured``:
  0.20 (every Genant fracture, grade ≥ 1) or 0.25 (grade ≥ 2, moderate and severe). Both are
  lower bounds of a Genant grade (:data:`vfq.genant.GRADE_THRESHOLDS`), so the flag is the grade
  compared with that bound's grade: a vertebra and its flag can never disagree.
* ``min_report_grade`` — the lowest Genant grade (0–3) a DICOM SR lists a vertebra with; the JSON
  report and the CSV keep every vertebra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vfq.genant import GRADE_THRESHOLDS, GenantGrade

__all__ = ["DEFAULT_OPERATING_POINT", "FRACTURE_THRESHOLDS", "OperatingPoint"]

#: The fracture thresholds one can choose: the lower bounds of Genant grades 1 and 2.
FRACTURE_THRESHOLDS: tuple[float, ...] = GRADE_THRESHOLDS[:2]


@dataclass(frozen=True)
class OperatingPoint:
    """Which vertebrae are flagged fractured and which are listed in a DICOM SR.

    Attributes:
        fracture_threshold: relative height loss (0–1) from which a vertebra is flagged fractured,
            one of :data:`FRACTURE_THRESHOLDS`.
        min_report_grade: the lowest Genant grade (0–3) a DICOM SR lists a vertebra with.

    Raises:
        ValueError: a threshold that is not a Genant grade bound, or a grade outside 0–3.
    """

    fracture_threshold: float = FRACTURE_THRESHOLDS[0]
    min_report_grade: int = int(GenantGrade.NORMAL)

    def __post_init__(self) -> None:
        threshold = float(self.fracture_threshold)
        if threshold not in FRACTURE_THRESHOLDS:
            raise ValueError(
                f"fracture threshold {self.fracture_threshold!r} is not one of {list(FRACTURE_THRESHOLDS)} "
                "(the relative height losses of Genant grades 1 and 2)"
            )
        grades = [int(g) for g in GenantGrade]
        if isinstance(self.min_report_grade, bool) or self.min_report_grade not in grades:
            raise ValueError(f"minimum report grade {self.min_report_grade!r} is not one of {grades}")
        object.__setattr__(self, "fracture_threshold", threshold)
        object.__setattr__(self, "min_report_grade", int(self.min_report_grade))

    @property
    def fracture_grade(self) -> int:
        """The lowest Genant grade flagged fractured (1 for 0.20, 2 for 0.25)."""
        return GRADE_THRESHOLDS.index(self.fracture_threshold) + 1

    def is_fractured(self, genant_grade: int) -> bool:
        """Whether a vertebra of this Genant grade is flagged fractured."""
        return int(genant_grade) >= self.fracture_grade

    def is_reported(self, genant_grade: int) -> bool:
        """Whether a DICOM SR lists a vertebra of this Genant grade."""
        return int(genant_grade) >= self.min_report_grade

    def to_json_dict(self) -> dict[str, Any]:
        """``{"fracture_threshold": 0.2, "min_report_grade": 0}``."""
        return {"fracture_threshold": self.fracture_threshold, "min_report_grade": self.min_report_grade}

    @classmethod
    def from_json_dict(cls, entry: Mapping[str, Any]) -> OperatingPoint:
        """The operating point of :meth:`to_json_dict`'s form."""
        return cls(fracture_threshold=entry["fracture_threshold"], min_report_grade=entry["min_report_grade"])


#: Every Genant fracture flagged (loss ≥ 20 %), every vertebra listed.
DEFAULT_OPERATING_POINT = OperatingPoint()
