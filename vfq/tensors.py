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
#: Below this heatmap maximum a scan holds no spine the localizer can see.
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
