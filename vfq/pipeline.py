"""The whole method on one CT, in-process: localizer → straighten → detector → decode → Genant.

The networks are plain callables (an ONNX Runtime session, a TorchScript model, a Triton call), so
the same code serves the offline evaluation, the tests and the server's python steps::

    localizer(tensor [1,1,Z,Y,X]) -> heatmap [1,1,Z,Y,X]
    detector(tensor [1,1,S,V])    -> (heatmap [1,1,S/4,V/4], offsets [1,12,S/4,V/4], logits [1,L,S/4,V/4])

(see :mod:`vfq.tensors`). Coordinates of the result: world LPS mm, CT voxels ``(z, y, x)`` via
:meth:`Analysis.keypoints_voxel`, and pixels ``(i_s, i_v)`` of the straightened image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.detection import Vertebrae, decode, quantify
from vfq.preprocess import (
    MIN_SPINE_EXTENT_MM,
    LocalizerGrid,
    spine_column_seen,
    spine_curve_from_heatmap,
    to_detector_input,
    to_localizer_grid,
)
from vfq.straighten import SpineCurve
from vfq.volume import CTVolume

LocalizerFn = Callable[[np.ndarray], np.ndarray]
DetectorFn = Callable[[np.ndarray], Sequence[np.ndarray]]

#: Reasons a study cannot be assessed (``Analysis.not_assessable``).
NO_SPINE = "no spine found: the localizer saw no vertebral column in this scan"
SPINE_TOO_SHORT = (
    f"the scan covers less than {MIN_SPINE_EXTENT_MM:g} mm of the spine: too short to straighten and grade"
)
NO_VERTEBRAE = "no vertebral body detected along the spine"


@dataclass(frozen=True, eq=False)
class Analysis:
    """What the pipeline found in one CT.

    Attributes:
        vertebrae: the quantified vertebrae, superior first (empty when not assessable).
        curve: the spine curve (world LPS mm), ``None`` without a spine.
        sagittal_hu: ``(n_s, n_v)`` the straightened image in HU (row 0 inferior), or ``None``.
        not_assessable: why the study cannot be graded, or ``None``.
        seconds: wall-clock time of each step.
    """

    vertebrae: Vertebrae
    curve: SpineCurve | None
    sagittal_hu: np.ndarray | None
    not_assessable: str | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def study_score(self) -> float:
        """The largest fracture score (relative height loss), 0 without vertebrae."""
        return float(self.vertebrae.loss.max()) if len(self.vertebrae) else 0.0

    def to_annotation(self, ct: CTVolume) -> SpineAnnotation:
        """The result as a :class:`SpineAnnotation` on the CT's grid (for the metrics)."""
        keypoints = self.vertebrae.keypoints_voxel(ct.geometry)
        vertebrae = tuple(
            VertebraAnnotation.from_keypoints(level, kp, grade=int(grade), loss=float(loss))
            for level, kp, grade, loss in zip(
                self.vertebrae.levels, keypoints, self.vertebrae.grade, self.vertebrae.loss
            )
        )
        return SpineAnnotation(geometry=ct.geometry, vertebrae=vertebrae)


def no_curve_reason(heatmap: np.ndarray, grid: LocalizerGrid) -> str:
    """Why no spine curve came out of a localizer ``heatmap`` on ``grid``: no column was seen at
    all (:data:`NO_SPINE`; :func:`vfq.preprocess.spine_column_seen`), or too little of it
    (:data:`SPINE_TOO_SHORT`)."""
    return SPINE_TOO_SHORT if spine_column_seen(heatmap, grid) else NO_SPINE


def analyze(ct: CTVolume, localizer: LocalizerFn, detector: DetectorFn) -> Analysis:
    """Run the method on a CT (LPS, int16 HU) with the two networks."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    coarse = to_localizer_grid(ct)
    lap("preprocess")
    heatmap = np.asarray(localizer(coarse.tensor))
    lap("localizer")
    curve = spine_curve_from_heatmap(heatmap.reshape(heatmap.shape[-3:]), coarse.grid)
    if curve is None:
        lap("curve")
        return Analysis(Vertebrae.empty(), None, None, no_curve_reason(heatmap, coarse.grid), seconds)
    sagittal = to_detector_input(ct, curve)
    lap("straighten")
    outputs = detector(sagittal.tensor)
    lap("detector")
    detections = decode(*outputs)
    vertebrae = quantify(detections, sagittal.grid, curve, ct.geometry, pad_s_before=sagittal.pad_s[0])
    lap("decode")
    reason = None if len(vertebrae) else NO_VERTEBRAE
    return Analysis(vertebrae, curve, sagittal.sagittal_hu, reason, seconds)
