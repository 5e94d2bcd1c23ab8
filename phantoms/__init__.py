"""Synthetic CT phantoms of the spine with exact ground truth (keypoints, levels, fractures).

>>> from vfq.phantoms import sample_spec, generate
>>> phantom = generate(sample_spec(seed=7))       # doctest: +SKIP
>>> phantom.ct.array.shape, phantom.truth.vertebrae[0].level   # doctest: +SKIP
"""

from vfq.phantoms.anatomy import Fracture, SpineShape
from vfq.phantoms.generate import (
    Acquisition,
    Anatomy,
    FieldOfView,
    Phantom,
    PhantomSpec,
    build_anatomy,
    field_of_view_geometry,
    generate,
    ground_truth,
    render,
    sample_spec,
)
from vfq.phantoms.torso import Contrast

__all__ = [
    "Acquisition",
    "Anatomy",
    "Contrast",
    "FieldOfView",
    "Fracture",
    "Phantom",
    "PhantomSpec",
    "SpineShape",
    "build_anatomy",
    "field_of_view_geometry",
    "generate",
    "ground_truth",
    "render",
    "sample_spec",
]
