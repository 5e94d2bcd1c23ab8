"""The ensemble's python steps without a server: chained with the networks they equal the in-process
pipeline, and a scan without a spine flows through them to a "not assessable" answer."""

from __future__ import annotations

import numpy as np
import pytest

from vfq.pipeline import NO_SPINE, SPINE_TOO_SHORT
from vfq.preprocess import localizer_grid
from vfq.server import steps
from vfq.tensors import (
    DETECTOR_HEATMAP,
    DETECTOR_INPUT,
    DETECTOR_LEVELS,
    DETECTOR_OFFSETS,
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    HU_SCALE,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    LOCALIZER_INPUT,
    LOCALIZER_SPACING_MM,
    LOCALIZER_TUBE_SIGMA_MM,
    NOT_ASSESSABLE_OUTPUT,
    PIPELINE_OUTPUTS,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
    SPACING_INPUT,
    STRAIGHTEN_STATUS,
)
from vfq.volume import ImageGeometry


def run_steps(ct: np.ndarray, spacing: np.ndarray, networks) -> dict[str, np.ndarray]:
    coarse = steps.preprocess(ct, spacing)[LOCALIZER_INPUT]
    straightened = steps.straighten(ct, spacing, networks.localizer(coarse))
    heatmap, offsets, logits = networks.detector(straightened[DETECTOR_INPUT])
    return steps.decode_keypoints(
        {
            **straightened,
            DETECTOR_HEATMAP: heatmap,
            DETECTOR_OFFSETS: offsets,
            DETECTOR_LEVELS: logits,
            SPACING_INPUT: spacing,
        }
    )


def test_chained_steps_equal_the_in_process_pipeline(phantom, in_process):
    ct = phantom.ct
    reference = in_process.analyze(ct)
    outputs = run_steps(ct.array, np.float32(ct.geometry.spacing), in_process.networks)
    assert set(outputs) == set(PIPELINE_OUTPUTS)
    v = reference.vertebrae
    assert len(v) == 7
    np.testing.assert_allclose(outputs[KEYPOINTS_OUTPUT], v.keypoints_voxel(ct.geometry), atol=1e-3)
    np.testing.assert_allclose(outputs[SAGITTAL_KEYPOINTS_OUTPUT], v.keypoints_sagittal, atol=1e-3)
    np.testing.assert_allclose(outputs[HEIGHTS_OUTPUT], v.heights_mm, atol=1e-3)
    np.testing.assert_array_equal(outputs[GENANT_GRADE_OUTPUT], v.grade)
    assert [level.decode() for level in outputs[LEVEL_OUTPUT]] == [level.name for level in v.levels]
    # The image the detector saw, back in HU: the in-process straightened image, clipped.
    np.testing.assert_allclose(
        outputs[SAGITTAL_IMAGE_OUTPUT], np.clip(reference.sagittal_hu, -1024, 2048), atol=0.05
    )
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [b""]


def _short_column(shape: tuple[int, ...], slices: int) -> np.ndarray:
    """A column as the localizer is taught to draw it (a Gaussian tube of σ =
    LOCALIZER_TUBE_SIGMA_MM, peak 1) along ``slices`` slices of the 4 mm grid, in its middle."""
    _, ny, nx = shape
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    r2 = ((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2) * LOCALIZER_SPACING_MM**2
    column = np.zeros(shape, np.float32)
    column[5 : 5 + slices] = np.exp(-r2 / (2 * LOCALIZER_TUBE_SIGMA_MM**2))
    return column


@pytest.mark.parametrize(
    ("draw", "reason"),
    [
        pytest.param(lambda shape: np.zeros(shape, np.float32), NO_SPINE, id="nothing"),
        # one bright voxel, or a line one voxel thin: far thinner than any column the network draws
        pytest.param(lambda shape: _short_column(shape, 1) ** 40, NO_SPINE, id="one bright voxel"),
        pytest.param(lambda shape: _short_column(shape, 20) ** 40, NO_SPINE, id="a thin line of 80 mm"),
        # a column as the network draws it, but 20 mm long: a spine, too short to straighten
        pytest.param(lambda shape: _short_column(shape, 5), SPINE_TOO_SHORT, id="a column of 20 mm"),
    ],
)
def test_a_heatmap_without_a_usable_column_gives_an_empty_answer_with_the_reason(phantom, draw, reason):
    ct = phantom.ct
    spacing = np.float32(ct.geometry.spacing)
    grid = localizer_grid(ct.geometry)
    heatmap = draw(grid.geometry.shape)[None, None]
    straightened = steps.straighten(ct.array, spacing, heatmap)
    assert straightened[STRAIGHTEN_STATUS].tolist() == [reason.encode()]
    outputs = steps.decode_keypoints(
        {
            **straightened,
            DETECTOR_HEATMAP: np.zeros((1, 1, 4, 24), np.float32),
            DETECTOR_OFFSETS: np.zeros((1, 12, 4, 24), np.float32),
            DETECTOR_LEVELS: np.zeros((1, 18, 4, 24), np.float32),
            SPACING_INPUT: spacing,
        }
    )
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [reason.encode()]
    assert outputs[KEYPOINTS_OUTPUT].shape == (0, 6, 3)
    assert outputs[SAGITTAL_IMAGE_OUTPUT].shape == (0, 0)


def test_the_straighten_step_refuses_a_heatmap_of_another_grid(phantom):
    ct = phantom.ct
    with pytest.raises(Exception, match=r"SPINE_HEATMAP must have shape \[1, 1, "):
        steps.straighten(ct.array, np.float32(ct.geometry.spacing), np.zeros((1, 1, 4, 4, 4), np.float32))


def test_the_grid_vector_carries_the_straightened_grid_exactly(phantom, in_process):
    from vfq.preprocess import to_detector_input

    reference = in_process.analyze(phantom.ct)
    detector_input = to_detector_input(phantom.ct, reference.curve)
    geometry = ImageGeometry(phantom.ct.geometry.shape, phantom.ct.geometry.spacing)
    packed = steps.pack_grid(detector_input.grid, reference.curve, geometry, 3)
    frame = steps.unpack_frame(packed, np.array(geometry.spacing))
    assert frame.grid == detector_input.grid
    assert (frame.curve_step_mm, frame.pad_before, frame.ct_geometry.shape) == (1.0, 3, geometry.shape)
    curve = steps.unpack_curve(steps.pack_curve(reference.curve), frame.curve_step_mm)
    np.testing.assert_array_equal(curve.positions, reference.curve.positions)
    np.testing.assert_allclose(curve.tangents, reference.curve.tangents, atol=1e-15)


# ---------------------------------------------------------------------- the steps' device path


def test_resampling_device_from_the_config_parameter(monkeypatch) -> None:
    import ctypes.util

    import torch

    assert steps.resampling_device("numpy") is None
    assert steps.resampling_device("cuda:1") == "cuda:1" and steps.resampling_device("cpu") == "cpu"
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # no CUDA driver: no torch
    assert steps.resampling_device("auto") is None
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a driver, no usable GPU
    assert steps.resampling_device("auto") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert steps.resampling_device("auto") == "cuda"


def test_steps_take_the_ct_as_a_torch_tensor_and_answer_as_with_numpy(phantom, in_process) -> None:
    """What a step does with a CT that Triton holds in GPU memory (read through DLPack as a torch
    tensor), here on the CPU: validation, the localizer input and the straightened image agree with
    the numpy path."""
    import torch

    from vfq.torch_resampling import TorchResampler

    ct, spacing = phantom.ct.array, np.float32(phantom.ct.geometry.spacing)
    tensor = torch.from_numpy(ct)
    resampler = TorchResampler("cpu")
    coarse = steps.preprocess(ct, spacing)[LOCALIZER_INPUT]
    coarse_torch = steps.preprocess(tensor, spacing, resampler.localizer_input)[LOCALIZER_INPUT]
    np.testing.assert_allclose(coarse_torch, coarse, atol=0.01 * HU_SCALE)  # 0.01 HU
    heatmap = in_process.networks.localizer(coarse)
    straightened = steps.straighten(ct, spacing, heatmap)
    straightened_torch = steps.straighten(tensor, spacing, heatmap, resampler.sagittal)
    assert steps.text_of(straightened_torch[STRAIGHTEN_STATUS]) == ""
    np.testing.assert_array_equal(straightened_torch["SPINE_CURVE"], straightened["SPINE_CURVE"])
    np.testing.assert_allclose(straightened_torch[DETECTOR_INPUT], straightened[DETECTOR_INPUT], atol=1e-4)


def test_a_torch_tensor_ct_is_refused_as_an_array_is() -> None:
    import torch

    from vfq.errors import InputError, NotCTError

    spacing = np.array([1.0, 1.0, 1.0], np.float32)
    with pytest.raises(InputError, match=r"^CT must be int16 Hounsfield units, got dtype float32"):
        steps.preprocess(torch.zeros((8, 8, 8), dtype=torch.float32), spacing)
    with pytest.raises(InputError, match=r"^CT must be a 3D array \(z, y, x\), got 2 dimension"):
        steps.preprocess(torch.zeros((8, 8), dtype=torch.int16), spacing)
    with pytest.raises(NotCTError, match="does not look like CT in Hounsfield units"):
        steps.preprocess(torch.zeros((8, 8, 8), dtype=torch.int16), spacing)
