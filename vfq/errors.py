"""The exception tree of vfq. Library code raises these; only CLIs turn them into exit codes.

::

    VfqError
    └── InputError (also a ValueError)          the input cannot be analysed as given
        ├── UnreadableInputError                 no readable image / annotation at that path
        ├── NotCTError                           readable, but not a CT (modality, HU range)
        └── InconsistentSeriesError              a DICOM series with gaps, duplicates, mixed orientation
"""

from __future__ import annotations


class VfqError(Exception):
    """Base class of every error vfq raises on purpose."""


class InputError(VfqError, ValueError):
    """The input (image, annotation, request) cannot be analysed as given."""


class UnreadableInputError(InputError):
    """No readable image or annotation at the given path."""


class NotCTError(InputError):
    """The image is readable but is not a CT (e.g. an MR series)."""


class InconsistentSeriesError(InputError):
    """A DICOM series that is not one regular volume (missing or duplicate slices, mixed geometry)."""
