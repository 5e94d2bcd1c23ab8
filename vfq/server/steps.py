"""The python steps of the ``vertebra_pipeline`` ensemble as functions of numpy arrays (DESIGN §3).

Each function takes and returns the tensors of one Triton model, named as in :mod:`vfq.tensors`,
and calls the same geometry core as the in-process pipeline (:func:`vfq.pipeline.analyze`), so a
served result equals the in-process one. The Triton adapters (:mod:`vfq.server.backend`) only move
tensors in and out; these functions are also what the tests call without a server.

Frames: the server knows the CT's spacing but not its origin or direction, so its world frame is
LPS mm with origin at voxel ``(0, 0, 0)`` and identity direction (:func:`vfq.preprocess.validate_ct`);
keypoints leave it as voxels ``(z, y, x)`` of the array that was sent. Numpy only (Python ≥ 3.10);
a CT may also come as a torch tensor on a device, for the resamplings of :mod:`vfq.torch_resampling`.
"""

from __future__ import annotations

import ctypes.util
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, fields

import numpy as np

from vfq.detection import Vertebrae, decode, quantify
from vfq.errors import InputError
from vfq.keypoints import NUM_KEYPOINTS
from vfq.pipeline import NO_VERTEBRAE, no_curve_reason
from vfq.preprocess import (
    LocalizerInput,
    localizer_grid,
    spine_curve_from_heatmap,
    to_detector_input,
    to_localizer_grid,
    validate_ct,
)
from vfq.straighten import SpineCurve, StraightenedGrid, straighten_sagittal
from vfq.tensors import (
    AIR_INPUT,
    CURVE_TENSOR,
    DETECTION_SCORE_OUTPUT,
    DETECTOR_HEATMAP,
    DETECTOR_INPUT,
    DETECTOR_LEVELS,
    DETECTOR_MULTIPLE,
    DETECTOR_OFFSETS,
    DETECTOR_WIDTH_PX,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    GRID_TENSOR,
    HEIGHTS_OUTPUT,
    HU_SCALE,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    LOCALIZER_INPUT,
    LOCALIZER_OUTPUT,
    NOT_ASSESSABLE_OUTPUT,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
    SPACING_INPUT,
    STRAIGHTEN_STATUS,
    decode_text,
    encode_text,
)
from vfq.volume import CTVolume, ImageGeometry

Tensors = dict[str, np.ndarray]

#: Length of the :data:`~vfq.tensors.GRID_TENSOR` vector (see :func:`pack_grid`).
GRID_VECTOR_LENGTH = len(fields(StraightenedGrid)) + 5


def resampling_device(value: str) -> str | None:
    """The torch device on which preprocess and straighten resample the CT, from their ``device``
    config parameter; ``None``: numpy on the CPU.

    ``"numpy"``: numpy. ``"auto"``: ``"cuda"`` where the host has a CUDA driver, torch is installed
    and sees a GPU, else numpy (torch is not even imported on a host without the driver). Anything
    else names a torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
    """
    if value == "numpy":
        return None
    if value != "auto":
        return value
    if ctypes.util.find_library("cuda") is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


def preprocess(
    ct: np.ndarray, spacing: np.ndarray, resample: Callable[[CTVolume], LocalizerInput] = to_localizer_grid
) -> Tensors:
    """Step 1: validate the CT, resample it to the localizer grid.

    Args:
        ct: ``CT`` int16 ``(z, y, x)`` HU of an LPS volume; spacing: ``SPACING`` ``(z, y, x)`` mm.
        resample: :func:`vfq.preprocess.to_localizer_grid`, or its version on another device
            (:meth:`vfq.torch_resampling.TorchResampler.localizer_input`).

    Returns:
        ``{CT_COARSE: float32 [1, 1, Z, Y, X]}``.

    Raises:
        InputError: the request is not a CT the pipeline can take (:func:`vfq.preprocess.validate_ct`).
    """
    return {LOCALIZER_INPUT: resample(validate_ct(ct, spacing)).tensor}


def straighten(
    ct: np.ndarray,
    spacing: np.ndarray,
    heatmap: np.ndarray,
    sample: Callable[[CTVolume, SpineCurve, StraightenedGrid], np.ndarray] = straighten_sagittal,
) -> Tensors:
    """Step 3: fit the spine curve to the localizer's heatmap, straighten the CT along it.

    Args:
        ct, spacing: the ensemble's inputs (as for :func:`preprocess`).
        heatmap: ``SPINE_HEATMAP`` float32 ``[1, 1, Z, Y, X]`` on the localizer grid of this CT.
        sample: :func:`vfq.straighten.straighten_sagittal`, or its version on another device
            (:meth:`vfq.torch_resampling.TorchResampler.sagittal`).

    Returns:
        ``SAGITTAL`` (the detector input ``[1, 1, S, V]``), ``SPINE_CURVE`` float64 ``[K, 6]``,
        ``STRAIGHTENED_GRID`` float64 ``[12]`` (:func:`pack_grid`), ``STRAIGHTEN_STATUS`` bytes ``[1]``.
        Without a usable spine the status holds the reason (:func:`vfq.pipeline.no_curve_reason`), the
        curve has no rows and ``SAGITTAL`` is one air tile ``[1, 1, 16, 96]`` (the ensemble always runs
        every step; the detector's answer on it is ignored).
    """
    volume = validate_ct(ct, spacing, check_values=False)  # preprocess checked them in this ensemble
    grid = localizer_grid(volume.geometry)
    heatmap = np.asarray(heatmap)
    expected = (1, 1, *grid.geometry.shape)
    if heatmap.shape != expected:
        raise InputError(
            f"{LOCALIZER_OUTPUT} must have shape {list(expected)} for this CT, got {list(heatmap.shape)}"
        )
    curve = spine_curve_from_heatmap(heatmap[0, 0], grid)
    if curve is None:
        return {
            DETECTOR_INPUT: np.full((1, 1, DETECTOR_MULTIPLE, DETECTOR_WIDTH_PX), AIR_INPUT, np.float32),
            CURVE_TENSOR: np.zeros((0, 6)),
            GRID_TENSOR: np.zeros(GRID_VECTOR_LENGTH),
            STRAIGHTEN_STATUS: _bytes(no_curve_reason(heatmap[0, 0], grid)),
        }
    detector_input = to_detector_input(volume, curve, sample)
    return {
        DETECTOR_INPUT: detector_input.tensor,
        CURVE_TENSOR: pack_curve(curve),
        GRID_TENSOR: pack_grid(detector_input.grid, curve, volume.geometry, detector_input.pad_s[0]),
        STRAIGHTEN_STATUS: _bytes(""),
    }


def decode_keypoints(inputs: Mapping[str, np.ndarray]) -> Tensors:
    """Step 5: detector outputs → vertebrae, keypoints, heights, grades; back into CT voxels.

    Args:
        inputs: ``SAGITTAL``, ``CENTER_HEATMAP``, ``KEYPOINT_OFFSETS``, ``LEVEL_LOGITS``,
            ``SPINE_CURVE``, ``STRAIGHTENED_GRID``, ``STRAIGHTEN_STATUS`` and ``SPACING``.

    Returns:
        The ensemble's public outputs (:data:`vfq.tensors.PIPELINE_OUTPUTS`), superior vertebra first.
    """
    status = text_of(inputs[STRAIGHTEN_STATUS])
    if status:
        return public_outputs(
            Vertebrae.empty(), np.zeros((0, 0), np.float32), np.zeros((0, NUM_KEYPOINTS, 3)), status
        )
    frame = unpack_frame(inputs[GRID_TENSOR], inputs[SPACING_INPUT])
    curve = unpack_curve(inputs[CURVE_TENSOR], frame.curve_step_mm)
    detections = decode(inputs[DETECTOR_HEATMAP], inputs[DETECTOR_OFFSETS], inputs[DETECTOR_LEVELS])
    vertebrae = quantify(detections, frame.grid, curve, frame.ct_geometry, pad_s_before=frame.pad_before)
    rows = slice(frame.pad_before, frame.pad_before + frame.grid.n_s)
    sagittal = np.asarray(inputs[DETECTOR_INPUT])[0, 0, rows] / np.float32(HU_SCALE)
    keypoints_voxel = vertebrae.keypoints_voxel(frame.ct_geometry)
    return public_outputs(vertebrae, sagittal, keypoints_voxel, "" if len(vertebrae) else NO_VERTEBRAE)


def public_outputs(
    vertebrae: Vertebrae, sagittal_hu: np.ndarray, keypoints_voxel: np.ndarray, reason: str
) -> Tensors:
    """The ensemble's outputs for ``vertebrae``, dtypes as in the model config."""
    n = len(vertebrae)
    return {
        KEYPOINTS_OUTPUT: np.asarray(keypoints_voxel, np.float32).reshape(n, NUM_KEYPOINTS, 3),
        HEIGHTS_OUTPUT: vertebrae.heights_mm.astype(np.float32),
        FRACTURE_SCORE_OUTPUT: vertebrae.loss.astype(np.float32),
        GENANT_GRADE_OUTPUT: vertebrae.grade.astype(np.int32),
        DETECTION_SCORE_OUTPUT: vertebrae.detection_score.astype(np.float32),
        LEVEL_OUTPUT: np.array(
            [encode_text("" if level is None else level.name) for level in vertebrae.levels], object
        ),
        SAGITTAL_IMAGE_OUTPUT: np.ascontiguousarray(sagittal_hu, np.float32),
        SAGITTAL_KEYPOINTS_OUTPUT: vertebrae.keypoints_sagittal.astype(np.float32).reshape(
            n, NUM_KEYPOINTS, 2
        ),
        NOT_ASSESSABLE_OUTPUT: _bytes(reason),
    }


# ---------------------------------------------------------------------- the tensors between steps


def pack_curve(curve: SpineCurve) -> np.ndarray:
    """``[K, 6]`` float64: sample positions (world LPS mm) and unit tangents of ``curve``."""
    return np.concatenate([curve.positions, curve.tangents], axis=1)


def unpack_curve(packed: np.ndarray, step_mm: float) -> SpineCurve:
    """The :class:`SpineCurve` of :func:`pack_curve` (samples ``step_mm`` apart)."""
    packed = np.asarray(packed, dtype=np.float64)
    if packed.ndim != 2 or packed.shape[1] != 6:
        raise InputError(f"{CURVE_TENSOR} must have shape [K, 6], got {list(packed.shape)}")
    return SpineCurve(positions=packed[:, :3], tangents=packed[:, 3:], step_mm=step_mm)


def pack_grid(
    grid: StraightenedGrid, curve: SpineCurve, ct_geometry: ImageGeometry, pad_before: int
) -> np.ndarray:
    """``[12]`` float64: the fields of ``grid`` in declaration order (``n_s, n_v, n_w, step_s_mm,
    spacing_v_mm, spacing_w_mm, s0_mm``), the curve's sample step (mm), the rows of padding before
    the image in the detector input, and the CT's shape ``(nz, ny, nx)``."""
    return np.array([*astuple(grid), curve.step_mm, pad_before, *ct_geometry.shape], dtype=np.float64)


@dataclass(frozen=True)
class StraightenFrame:
    """What :func:`pack_grid` carries: the straightened grid, the curve's sample step (mm), the rows of
    padding before the image in the detector input, and the CT's server-frame geometry."""

    grid: StraightenedGrid
    curve_step_mm: float
    pad_before: int
    ct_geometry: ImageGeometry


def unpack_frame(packed: np.ndarray, spacing: np.ndarray) -> StraightenFrame:
    """The :class:`StraightenFrame` of :func:`pack_grid` for a CT of ``spacing`` ``(z, y, x)`` mm."""
    values = np.asarray(packed, dtype=np.float64).reshape(-1)
    if values.shape != (GRID_VECTOR_LENGTH,):
        raise InputError(f"{GRID_TENSOR} must have {GRID_VECTOR_LENGTH} values, got {values.size}")
    n_fields = len(fields(StraightenedGrid))
    curve_step, pad_before, nz, ny, nx = values[n_fields:].tolist()
    return StraightenFrame(
        grid=StraightenedGrid(*values[:n_fields].tolist()),
        curve_step_mm=curve_step,
        pad_before=int(pad_before),
        ct_geometry=ImageGeometry(
            shape=(int(nz), int(ny), int(nx)), spacing=np.asarray(spacing, float).tolist()
        ),
    )


def _bytes(text: str) -> np.ndarray:
    return np.array([encode_text(text)], dtype=object)


def text_of(tensor: np.ndarray) -> str:
    """The text of a one-element BYTES tensor."""
    return decode_text(np.asarray(tensor).reshape(-1)[0])
