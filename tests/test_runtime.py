"""The CPU runtimes of the shipped networks: OpenVINO computes what ONNX Runtime computes, in float32
and without pinning its threads, and an unknown runtime is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vfq.export.evaluate import Networks
from vfq.io import read_ct
from vfq.runtime import OnnxRunner, OpenVinoRunner, cpu_runner
from vfq.server import steps
from vfq.tensors import DETECTOR_INPUT, LOCALIZER_INPUT

WEIGHTS = Path(__file__).resolve().parents[1] / "export" / "weights"
REAL_CT = Path(__file__).resolve().parent / "data" / "real" / "lumbar_ct_3mm" / "ct.nii.gz"


@pytest.fixture(scope="module")
def network_inputs() -> dict[str, np.ndarray]:
    """Both networks' inputs for the real lumbar CT, made by the server's own steps."""
    ct = read_ct(REAL_CT)
    spacing = np.float32(ct.geometry.spacing)
    coarse = steps.preprocess(ct.array, spacing)[LOCALIZER_INPUT]
    heatmap = OnnxRunner(WEIGHTS / "spine_localizer.onnx", threads=2)(coarse)[0]
    return {
        "spine_localizer.onnx": coarse,
        "vertebra_detector.onnx": steps.straighten(ct.array, spacing, heatmap)[DETECTOR_INPUT],
    }


@pytest.mark.parametrize("file", ["spine_localizer.onnx", "vertebra_detector.onnx"])
def test_openvino_computes_what_onnx_runtime_computes(network_inputs, file):
    tensor = network_inputs[file]
    reference = OnnxRunner(WEIGHTS / file, threads=1)
    runner = OpenVinoRunner(WEIGHTS / file, threads=1)
    assert (runner.input_name, runner.output_names) == (reference.input_name, reference.output_names)
    first = runner(tensor)
    for got, expected in zip(first, reference(tensor), strict=True):
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
    second = runner(tensor)  # fresh arrays: the next run does not overwrite what a caller holds
    assert all(a is not b and np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_openvino_runs_float32_on_the_threads_asked_for_unpinned():
    compiled = OpenVinoRunner(WEIGHTS / "spine_localizer.onnx", threads=1).compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1  # default: every core
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_the_offline_pipeline_finds_the_same_vertebrae_on_either_runtime():
    ct = read_ct(REAL_CT)
    onnx, openvino = (Networks(WEIGHTS, 2, runtime).analyze(ct) for runtime in ("onnxruntime", "openvino"))
    assert [level.name for level in openvino.vertebrae.levels] == ["L1", "L2", "L3", "L4", "L5"]
    assert openvino.vertebrae.levels == onnx.vertebrae.levels
    np.testing.assert_allclose(openvino.vertebrae.heights_mm, onnx.vertebrae.heights_mm, atol=1e-3)
    np.testing.assert_array_equal(openvino.vertebrae.grade, onnx.vertebrae.grade)


def test_an_unknown_runtime_is_refused_with_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown runtime 'tensorflow': expected one of onnxruntime, openvino"
    ):
        cpu_runner(WEIGHTS / "spine_localizer.onnx", "tensorflow")
