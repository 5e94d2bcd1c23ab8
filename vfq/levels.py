"""Vertebra levels: the closed vocabulary shared by annotations, phantoms, networks and reports.

Levels are ordered cranio-caudally (C1 first, S1 last). ``Level.index`` is that order and is what
the level classifier of the detector predicts; ``Level.verse_label`` is the integer used by the
VerSe label maps and centroid files (1-7 cervical, 8-19 thoracic, 20-25 lumbar incl. L6,
26 sacrum, 28 T13).
"""

from __future__ import annotations

from enum import Enum
from functools import total_ordering


@total_ordering
class Level(Enum):
    """A vertebra level. The value is its conventional name (``"T12"``); levels compare cranio-caudally
    (``Level.T12 < Level.L1``)."""

    C1 = "C1"
    C2 = "C2"
    C3 = "C3"
    C4 = "C4"
    C5 = "C5"
    C6 = "C6"
    C7 = "C7"
    T1 = "T1"
    T2 = "T2"
    T3 = "T3"
    T4 = "T4"
    T5 = "T5"
    T6 = "T6"
    T7 = "T7"
    T8 = "T8"
    T9 = "T9"
    T10 = "T10"
    T11 = "T11"
    T12 = "T12"
    T13 = "T13"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"
    L6 = "L6"
    S1 = "S1"

    @property
    def index(self) -> int:
        """Cranio-caudal position: C1 is 0, S1 is the last."""
        return _ORDER[self]

    @property
    def region(self) -> str:
        """``"cervical"``, ``"thoracic"``, ``"lumbar"`` or ``"sacral"``."""
        return {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}[self.value[0]]

    @property
    def verse_label(self) -> int:
        """The integer label of this level in VerSe label maps and centroid files."""
        return _VERSE_LABEL[self]

    @classmethod
    def from_verse_label(cls, label: int) -> Level:
        """The level of a VerSe label; raises ``ValueError`` for labels that are not vertebrae."""
        try:
            return _FROM_VERSE[int(label)]
        except KeyError:
            raise ValueError(
                f"VerSe label {label} is not a vertebra level (expected one of {sorted(_FROM_VERSE)})"
            ) from None

    @classmethod
    def parse(cls, name: str) -> Level:
        """The level named ``name`` (case-insensitive, e.g. ``"l1"``); ``ValueError`` otherwise."""
        try:
            return cls(name.strip().upper())
        except ValueError:
            raise ValueError(
                f"unknown vertebra level {name!r}; expected one of {[m.value for m in cls]}"
            ) from None

    def __lt__(self, other: Level) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return self.index < other.index


_ORDER = {level: i for i, level in enumerate(Level)}

_VERSE_LABEL = {
    **{Level(f"C{i}"): i for i in range(1, 8)},
    **{Level(f"T{i}"): 7 + i for i in range(1, 13)},
    **{Level(f"L{i}"): 19 + i for i in range(1, 7)},
    Level.S1: 26,
    Level.T13: 28,
}
_FROM_VERSE = {label: level for level, label in _VERSE_LABEL.items()}

#: The levels the detector classifies and the phantoms label (DESIGN §2: C7…L5).
STANDARD_LEVELS: tuple[Level, ...] = tuple(
    level for level in Level if Level.C7.index <= level.index <= Level.L5.index and level is not Level.T13
)
