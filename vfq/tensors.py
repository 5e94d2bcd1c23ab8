"""The networks' tensors: names, shapes, units and normalisation — one definition for training,
export, the Triton model configs, the server's python steps and the offline pipeline.

Spine localizer (3D)
    input  ``LOCALIZER_INPUT``   float32 ``[1, 1, Z, Y, X]``: the CT resampled (area average) to an
           isotropic ``LOCALIZER_SPACING_MM`` grid, axes as the LPS CT array ``(z, y, x)``, HU clipped
           to ``HU_CLIP`` and scaled by ``HU_SCALE``; Z, Y, X are padded up to multiples of
           ``LOCALIZER_MULTIPLE`` with the value of air.
    output ``LOCALIZER_OUTPUT``  float32 ``[1, 1, Z, Y, X]``: probability (sigmoid applied) that a
           voxel lies within the Gaussian tube (σ = ``LOCALIZER_TUBE_SIGMA_MM``) around the
           vertebral-body centre line, C7 to L5.

Vertebra detector (2D, anchor-free)
    input  ``DETECTOR_INPUT``    float32 ``[1, 1, S, V]``: the straightened sagittal image, rows ``s``
           along the spine (inferior→superior, ``DETECTOR_PIXEL_MM``), columns ``v`` along the
           sagittal in-plane axis (posterior increasing), the slab averaged over its
           ``DETECTOR_SLAB_MM`` thickness; same HU normalisation; S and V multiples of
           ``DETECTOR_MULTIPLE`` (V = ``DETECTOR_WIDTH_PX``).
    outputs at stride ``DETECTOR_STRIDE`` (cell ``(i, j)`` has its centre at input pixel
           ``(i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2)``):
           ``DETECTOR_HEATMAP``  float32 ``[1, 1, S/4, V/4]``: probability (sigmoid applied) of a
           vertebral-body centre, a Gaussian of σ = ``DETECTOR_CENTER_SIGMA_CELLS`` around each;
           ``DETECTOR_OFFSETS`` float32 ``[1, 12, S/4, V/4]``: from the cell centre to the six
           keypoints (order of :mod:`vfq.keypoints`), channels ``(ds0, dv0, ds1, dv1, …)`` in input
           pixels;
           ``DETECTOR_LEVELS``   float32 ``[1, L, S/4, V/4]``: logits of the level classes
           ``DETECTOR_LEVEL_CLASSES`` (C7…L5).

This module is numpy-free and import-light: it runs inside Triton's python backend.
"""

from __future__ import annotations

from vfq.keypoints import NUM_KEYPOINTS
from vfq.levels import STANDARD_LEVELS, Level

#: Hounsfield units are clipped to this range, then multiplied by ``HU_SCALE``.
HU_CLIP: tuple[float, float] = (-1024.0, 2048.0)
HU_SCALE = 1.0 / 1000.0
#: Network input value of air (what padding uses).
AIR_INPUT = HU_CLIP[0] * HU_SCALE

LOCALIZER_INPUT = "CT_COARSE"
LOCALIZER_OUTPUT = "SPINE_HEATMAP"
LOCALIZER_SPACING_MM = 4.0
LOCALIZER_MULTIPLE = 16
LOCALIZER_TUBE_SIGMA_MM = 5.0
#: Below this heatmap maximum a scan holds no spine the localizer can see (nor does a column thinner
#: than half the target tube: :data:`vfq.preprocess.MIN_COLUMN_SLICE_MASS`).
LOCALIZER_MIN_PEAK = 0.3

DETECTOR_INPUT = "SAGITTAL"
DETECTOR_HEATMAP = "CENTER_HEATMAP"
DETECTOR_OFFSETS = "KEYPOINT_OFFSETS"
DETECTOR_LEVELS = "LEVEL_LOGITS"
DETECTOR_PIXEL_MM = 1.0
DETECTOR_WIDTH_PX = 96
DETECTOR_SLAB_MM = 5.0
DETECTOR_STRIDE = 4
DETECTOR_MULTIPLE = 16
DETECTOR_CENTER_SIGMA_CELLS = 1.0
DETECTOR_LEVEL_CLASSES: tuple[Level, ...] = STANDARD_LEVELS
DETECTOR_OFFSET_CHANNELS = 2 * NUM_KEYPOINTS
#: Centre-heatmap peaks below this are not vertebrae.
DETECTOR_MIN_SCORE = 0.3

#: Each network's input, and the multiple its spatial sizes must be (the encoders halve them).
NETWORK_INPUT_MULTIPLE: dict[str, int] = {
    LOCALIZER_INPUT: LOCALIZER_MULTIPLE,
    DETECTOR_INPUT: DETECTOR_MULTIPLE,
}

# ---------------------------------------------------------------------- the served ensemble (DESIGN §3)
#
# The public API of the Triton model repository: one ensemble, these inputs and outputs. The client,
# the raw-gRPC examples and the model configs (checked by the tests) all use these names.

PIPELINE_MODEL = "vertebra_pipeline"
#: The five steps of the ensemble, in order.
PREPROCESS_MODEL = "preprocess"
LOCALIZER_MODEL = "spine_localizer"
STRAIGHTEN_MODEL = "straighten"
DETECTOR_MODEL = "vertebra_detector"
DECODER_MODEL = "keypoint_decoder"
PIPELINE_STEPS: tuple[str, ...] = (
    PREPROCESS_MODEL,
    LOCALIZER_MODEL,
    STRAIGHTEN_MODEL,
    DETECTOR_MODEL,
    DECODER_MODEL,
)

#: INT16 ``[Z, Y, X]``: the CT in Hounsfield units, axes ``(z, y, x)`` of an LPS volume.
CT_INPUT = "CT"
#: FP32 ``[3]``: voxel size ``(z, y, x)`` in mm.
SPACING_INPUT = "SPACING"

#: FP32 ``[N, 6, 3]``: the six keypoints of each vertebra (superior vertebra first), voxel
#: ``(z, y, x)`` of the CT array that was sent.
KEYPOINTS_OUTPUT = "KEYPOINTS"
#: FP32 ``[N, 3]``: anterior, middle, posterior heights in mm.
HEIGHTS_OUTPUT = "HEIGHTS"
#: FP32 ``[N]``: the Genant relative height loss (the fracture score), ``[0, 1]``.
FRACTURE_SCORE_OUTPUT = "FRACTURE_SCORE"
#: INT32 ``[N]``: Genant grade 0-3.
GENANT_GRADE_OUTPUT = "GENANT_GRADE"
#: FP32 ``[N]``: the detector's centre-heatmap peak, ``[0, 1]``.
DETECTION_SCORE_OUTPUT = "DETECTION_SCORE"
#: BYTES ``[N]``: the level label (``"T12"``), empty where the level is unknown.
LEVEL_OUTPUT = "LEVEL"
#: FP32 ``[S, V]``: the straightened sagittal image the detector saw, in HU, row 0 inferior,
#: columns posterior-increasing (``[0, 0]`` when the study is not assessable).
SAGITTAL_IMAGE_OUTPUT = "SAGITTAL_IMAGE"
#: FP32 ``[N, 6, 2]``: the keypoints as pixels ``(row, column)`` of ``SAGITTAL_IMAGE``.
SAGITTAL_KEYPOINTS_OUTPUT = "SAGITTAL_KEYPOINTS"
#: BYTES ``[1]``: why the study cannot be graded (no spine, too short, no vertebra), empty otherwise.
NOT_ASSESSABLE_OUTPUT = "NOT_ASSESSABLE"
PIPELINE_OUTPUTS: tuple[str, ...] = (
    KEYPOINTS_OUTPUT,
    HEIGHTS_OUTPUT,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    DETECTION_SCORE_OUTPUT,
    LEVEL_OUTPUT,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
    NOT_ASSESSABLE_OUTPUT,
)

#: Internal tensors between the straighten and decoder steps: FP64 ``[K, 6]`` spine-curve samples
#: (world LPS mm position, unit tangent) every ``step_mm``; FP64 ``[12]`` the straightened grid, the
#: curve's step, the detector input's padding and the CT's shape (``vfq.server.steps.pack_grid``);
#: BYTES ``[1]`` the not-assessable reason of the straighten step.
CURVE_TENSOR = "SPINE_CURVE"
GRID_TENSOR = "STRAIGHTENED_GRID"
STRAIGHTEN_STATUS = "STRAIGHTEN_STATUS"


#: The text encoding of every BYTES tensor element (levels, reasons).
TEXT_ENCODING = "utf-8"


def encode_text(text: str) -> bytes:
    """A BYTES tensor element holding ``text``."""
    return text.encode(TEXT_ENCODING)


def decode_text(element: bytes | str) -> str:
    """The text of a BYTES tensor element (tritonclient gives ``bytes``, some callers ``str``)."""
    return element.decode(TEXT_ENCODING) if isinstance(element, bytes) else str(element)
