"""ONNX export: names and dynamic axes, agreement with PyTorch in ONNX Runtime, metadata, and only
operators and types that TensorRT 10 parses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_factories import ct_like_volume, sagittal_like_image, seeded_detector, seeded_localizer
from onnx import TensorProto, helper

from vfq import tensors
from vfq.export.networks import SpineLocalizer, VertebraDetector
from vfq.export.onnx_export import (
    OnnxMismatchError,
    check_onnx,
    export_detector,
    export_localizer,
    ort_latency,
    read_onnx_metadata,
)
from vfq.export.trt_ops import (
    SUPPORTED_OPS,
    dtype_problems,
    restriction_violations,
    tensorrt_problems,
    unsupported_ops,
)


@pytest.fixture(scope="module")
def localizer() -> SpineLocalizer:
    return seeded_localizer(11)


@pytest.fixture(scope="module")
def detector() -> VertebraDetector:
    return seeded_detector(12)


@pytest.fixture(scope="module")
def localizer_onnx(tmp_path_factory: pytest.TempPathFactory, localizer: SpineLocalizer) -> Path:
    return export_localizer(localizer, tmp_path_factory.mktemp("onnx") / "localizer.onnx")


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory: pytest.TempPathFactory, detector: VertebraDetector) -> Path:
    return export_detector(detector, tmp_path_factory.mktemp("onnx") / "detector.onnx")


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graphs_carry_the_contract_names_and_dynamic_axes(localizer_onnx: Path, detector_onnx: Path) -> None:
    loc = onnx.load(str(localizer_onnx)).graph
    assert [(i.name, _dims(i)) for i in loc.input] == [(tensors.LOCALIZER_INPUT, ["batch", 1, "z", "y", "x"])]
    assert [(o.name, _dims(o)) for o in loc.output] == [
        (tensors.LOCALIZER_OUTPUT, ["batch", 1, "z", "y", "x"])
    ]
    det = onnx.load(str(detector_onnx)).graph
    assert [(i.name, _dims(i)) for i in det.input] == [(tensors.DETECTOR_INPUT, ["batch", 1, "s", "v"])]
    cells = ["batch", "s_cells", "v_cells"]
    assert [(o.name, _dims(o)) for o in det.output] == [
        (tensors.DETECTOR_HEATMAP, [cells[0], 1, *cells[1:]]),
        (tensors.DETECTOR_OFFSETS, [cells[0], 12, *cells[1:]]),
        (tensors.DETECTOR_LEVELS, [cells[0], 18, *cells[1:]]),
    ]
    for graph in (loc, det):
        for io in (*graph.input, *graph.output):
            assert io.type.tensor_type.elem_type == TensorProto.FLOAT


def test_localizer_onnx_runtime_matches_pytorch_at_two_sizes(
    localizer_onnx: Path, localizer: SpineLocalizer
) -> None:
    inputs = [
        ct_like_volume((32, 48, 64), (20.0, 30.0), seed=1),
        torch.cat([ct_like_volume((16, 32, 32), (15.0, 17.0), seed=s) for s in (2, 3)]),
    ]
    report = check_onnx(localizer_onnx, localizer, inputs)
    assert report.ok, str(report)
    assert report.max_relative_error <= 1e-4
    assert [a.input_shape for a in report.agreements] == [(1, 1, 32, 48, 64), (2, 1, 16, 32, 32)]
    assert all(a.observed_range > 0.1 for a in report.agreements)  # a map with contrast, not a constant
    assert all(a.max_abs_error <= 1e-4 * a.observed_range for a in report.agreements)


def test_detector_onnx_runtime_matches_pytorch_at_two_sizes(
    detector_onnx: Path, detector: VertebraDetector
) -> None:
    inputs = [
        sagittal_like_image((64, 96), [20.0, 48.0], 48.0, seed=1),
        torch.cat([sagittal_like_image((128, 96), [16.0, 44.0, 72.0, 100.0], 44.0, seed=s) for s in (2, 3)]),
    ]
    report = check_onnx(detector_onnx, detector, inputs)
    assert report.ok, str(report)
    assert report.max_relative_error <= 1e-4
    assert [a.name for a in report.agreements] == [
        tensors.DETECTOR_HEATMAP,
        tensors.DETECTOR_OFFSETS,
        tensors.DETECTOR_LEVELS,
    ] * 2
    assert report.agreements[3].input_shape == (2, 1, 128, 96)
    assert all(a.observed_range > 0.1 for a in report.agreements)
    assert all(a.max_abs_error <= 1e-4 * a.observed_range for a in report.agreements)


def test_check_onnx_catches_a_graph_that_does_not_match_the_model(
    tmp_path: Path, localizer_onnx: Path, detector: VertebraDetector
) -> None:
    other = seeded_localizer(99)
    x = ct_like_volume((16, 32, 32), (15.0, 17.0))
    with pytest.raises(OnnxMismatchError, match="ONNX Runtime disagrees with PyTorch"):
        check_onnx(localizer_onnx, other, x)
    report = check_onnx(localizer_onnx, other, x, strict=False)
    assert not report.ok and report.max_relative_error > 1e-3


def test_only_tensorrt_supported_operators_and_types(localizer_onnx: Path, detector_onnx: Path) -> None:
    for path in (localizer_onnx, detector_onnx):
        model = onnx.load(str(path))
        ops = {n.op_type for n in model.graph.node}
        assert unsupported_ops(model) == set()
        assert ops <= set(SUPPORTED_OPS)
        assert {"Conv", "ConvTranspose", "Relu", "Sigmoid", "Concat"} <= ops
        assert "BatchNormalization" not in ops  # folded into the convolutions
        assert tensorrt_problems(model) == []
        assert all(i.data_type == TensorProto.FLOAT for i in model.graph.initializer)
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert "MaxPool" in {n.op_type for n in onnx.load(str(localizer_onnx)).graph.node}


def _tiny_graph(
    nodes: list[onnx.NodeProto], opset: int = 17, out_type: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", out_type, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_checks_flag_what_tensorrt_refuses() -> None:
    unique = _tiny_graph([helper.make_node("Unique", ["x"], ["y"])])
    assert unsupported_ops(unique) == {"Unique"}
    custom = _tiny_graph([helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")])
    assert unsupported_ops(custom) == {"com.microsoft::Inverse"}
    doubles = _tiny_graph(
        [
            helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
            helper.make_node("Relu", ["d"], ["y"]),
        ],
        out_type=TensorProto.DOUBLE,
    )
    problems = dtype_problems(doubles)
    assert any("'d' is DOUBLE" in p for p in problems)
    assert any("graph input/output 'y' is DOUBLE" in p for p in problems)
    shape_to_conv = _tiny_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Sigmoid", ["s"], ["y"]),
        ],
        out_type=TensorProto.INT64,
    )
    assert any("Sigmoid node" in p and "INT64" in p for p in dtype_problems(shape_to_conv))
    cubic = _tiny_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["scales"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
            ),
            helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic"),
        ],
        opset=21,
    )
    violations = restriction_violations(cubic)
    assert any("mode 'cubic'" in v for v in violations)
    assert any("opset 21" in v for v in violations)
    nearest = _tiny_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["scales"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
            ),
            helper.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
            ),
        ]
    )
    assert tensorrt_problems(nearest) == []


def test_metadata_records_architecture_and_contract(localizer_onnx: Path, detector_onnx: Path) -> None:
    loc = read_onnx_metadata(localizer_onnx)
    assert loc["architecture"] == "SpineLocalizer" and loc["architecture_version"] == SpineLocalizer.VERSION
    assert loc["contract"] == SpineLocalizer.contract()
    assert loc["contract"]["LOCALIZER_SPACING_MM"] == tensors.LOCALIZER_SPACING_MM
    assert loc["config"] == {"channels": [8, 16, 32, 64], "input_pool": 1} and loc["opset"] == 17
    det = read_onnx_metadata(detector_onnx)
    assert det["architecture"] == "VertebraDetector"
    assert det["contract"]["DETECTOR_LEVEL_CLASSES"] == [lv.value for lv in tensors.DETECTOR_LEVEL_CLASSES]
    assert det["contract"]["DETECTOR_STRIDE"] == 4


def test_export_leaves_the_model_mode_alone_and_refuses_the_wrong_network(tmp_path: Path) -> None:
    model = SpineLocalizer().train()
    export_localizer(model, tmp_path / "a.onnx", example_shape=(1, 1, 16, 16, 16))
    assert model.training
    with pytest.raises(TypeError, match="needs a VertebraDetector"):
        export_detector(model, tmp_path / "b.onnx")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a SpineLocalizer"):
        export_localizer(VertebraDetector(), tmp_path / "c.onnx")  # type: ignore[arg-type]


def test_ort_latency_is_a_positive_median(detector_onnx: Path) -> None:
    seconds = ort_latency(detector_onnx, (1, 1, 64, 96), repeats=3)
    assert 0.0 < seconds < 5.0
    assert np.isfinite(seconds)
