"""The TensorRT plan path, checked without TensorRT: the profiles cover every CT the server accepts,
records round-trip, a plan built for another TensorRT or GPU is refused with a clear message,
without TensorRT the build says where to run it, the code calls only TensorRT API that was
checked against the TensorRT of the server's container, and ``trtexec``, the alternative builder,
gets the same profile, precision, workspace and cache (its failures reported with its output)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

from vfq.export import tensorrt_plans as plans
from vfq.export.repository import main, warmup_samples
from vfq.preprocess import MAX_EXTENT_MM, MAX_SHAPE, localizer_grid
from vfq.tensors import DETECTOR_WIDTH_PX
from vfq.volume import ImageGeometry

BUILT = plans.BuildEnvironment("10.5.0", "NVIDIA H100 80GB HBM3", "9.0")

#: The TensorRT Python API that :mod:`vfq.export.tensorrt_plans` calls, each name found in TensorRT
#: 10.5's — the NGC 24.10 container's — Python module (the strings of ``tensorrt_cu12_bindings``
#: 10.5.0, 2026-12-06). TensorRT 10 removed much of TensorRT 8's API (``max_workspace_size``,
#: ``build_engine``, ``get_binding_shape``, ``execute_async_v2``: none of them is in that module),
#: which most examples still use. A name missing here has not been checked: look for it there first.
TENSORRT_10_5_API = frozenset(
    {
        "Builder", "BuilderFlag", "FP16", "INPUT", "Logger", "MemoryPoolType", "OnnxParser", "Runtime",
        "TensorIOMode", "WARNING", "WORKSPACE", "add_optimization_profile", "build_serialized_network",
        "create_builder_config", "create_execution_context", "create_network", "create_optimization_profile",
        "create_timing_cache", "deserialize_cuda_engine", "execute_async_v3", "get_error", "get_tensor_mode",
        "get_tensor_name", "get_tensor_shape", "get_timing_cache", "num_errors", "num_io_tensors", "parse",
        "serialize", "set_flag", "set_input_shape", "set_memory_pool_limit", "set_shape",
        "set_tensor_address", "set_timing_cache",
    }
)  # fmt: skip
#: The names under which the module holds TensorRT and the objects it makes.
TENSORRT_OBJECTS = frozenset(
    {"trt", "builder", "network", "parser", "config", "optimization", "engine", "context"}
)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((300, 512, 512), (1.0, 0.7, 0.7)),  # the typical scan: the profile's optimum
        ((2, 2, 2), (0.2, 0.2, 0.2)),  # the smallest accepted
        ((2048, 1024, 1024), (1.0, 0.75, 0.75)),  # the largest accepted
        ((409, 153, 153), (5.0, 5.0, 5.0)),  # thick slices at the extent limit
        ((2048, 2, 2), (1.0, 20.0, 20.0)),  # a thin rod
    ],
)
def test_the_localizer_profile_covers_every_accepted_ct(shape, spacing):
    extent = [n * s for n, s in zip(shape, spacing)]
    assert all(e <= m for e, m in zip(extent, MAX_EXTENT_MM))
    grid = localizer_grid(ImageGeometry(shape, spacing)).geometry.shape
    assert plans.LOCALIZER_PROFILE.covers((1, 1, *grid))
    if shape == (300, 512, 512):
        assert plans.LOCALIZER_PROFILE.opt == (1, 1, *grid)


def test_the_detector_profile_covers_a_curve_half_again_as_long_as_the_tallest_scan():
    rows = int(1.5 * MAX_EXTENT_MM[0])
    assert plans.DETECTOR_PROFILE.covers((1, 1, rows, DETECTOR_WIDTH_PX))
    assert not plans.DETECTOR_PROFILE.covers((1, 1, rows, DETECTOR_WIDTH_PX + 16))  # the width is fixed


def test_a_plan_record_round_trips(tmp_path):
    record = plans.PlanRecord(BUILT, "fp16", "ab" * 32, plans.LOCALIZER_PROFILE)
    path = tmp_path / "model.plan.json"
    path.write_text(record.to_json(), encoding="utf-8")
    assert plans.PlanRecord.read(path) == record


def test_a_plan_built_for_another_gpu_or_tensorrt_is_refused_with_what_to_do():
    record = plans.PlanRecord(BUILT, "fp16", "00" * 32, plans.DETECTOR_PROFILE)
    assert plans.plan_mismatch(record, BUILT) is None
    assert plans.plan_mismatch(record, plans.BuildEnvironment("10.5.0", "another H100", "9.0")) is None
    ada = plans.BuildEnvironment("10.5.0", "NVIDIA L4", "8.9")
    assert plans.plan_mismatch(record, ada) == (
        "built with TensorRT 10.5.0 for compute capability 9.0 (NVIDIA H100 80GB HBM3); this server has "
        "TensorRT 10.5.0 on compute capability 8.9 (NVIDIA L4). Rebuild it here: vfq-repository build-plans"
    )
    assert "TensorRT 10.6.0" in plans.plan_mismatch(
        record, plans.BuildEnvironment("10.6.0", BUILT.gpu_name, "9.0")
    )


def test_tolerances_are_stated_for_every_network_output_and_precision():
    outputs = {"SPINE_HEATMAP", "CENTER_HEATMAP", "KEYPOINT_OFFSETS", "LEVEL_LOGITS"}
    assert {p: set(t) for p, t in plans.TOLERANCES.items()} == {"fp32": outputs, "fp16": outputs}
    assert all(plans.TOLERANCES["fp32"][name] < plans.TOLERANCES["fp16"][name] for name in outputs)


def test_without_tensorrt_the_build_says_where_plans_are_built(tmp_path, capsys):
    assert importlib.util.find_spec("tensorrt") is None  # this check is for machines without TensorRT
    assert main(["write", "--target", "gpu", "--out", str(tmp_path / "gpu")]) == 0
    code = main(["build-plans", "--source", str(tmp_path / "gpu"), "--out", str(tmp_path / "served")])
    assert code == 1
    assert (
        "TensorRT is not installed here: build plans inside the server's container" in capsys.readouterr().err
    )


def test_trtexec_builds_with_the_apis_profile_precision_workspace_and_timing_cache(tmp_path):
    onnx, plan, cache = tmp_path / "model.onnx", tmp_path / "model.plan", tmp_path / "timing.cache"
    program = Path("/usr/src/tensorrt/bin/trtexec")
    localizer = plans.trtexec_command(program, onnx, plan, plans.LOCALIZER_PROFILE, "fp16", cache)
    assert localizer == [
        str(program),
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        "--minShapes=CT_COARSE:1x1x16x16x16",
        "--optShapes=CT_COARSE:1x1x80x96x96",
        "--maxShapes=CT_COARSE:1x1x528x208x208",
        "--memPoolSize=workspace:4096",  # MiB: the API's WORKSPACE_BYTES
        "--skipInference",
        "--fp16",
        f"--timingCacheFile={cache}",
    ]
    assert plans.WORKSPACE_BYTES == 4096 << 20
    detector = plans.trtexec_command(program, onnx, plan, plans.DETECTOR_PROFILE, "fp32", None)
    assert detector[3:7] == [
        "--minShapes=SAGITTAL:1x1x16x96",
        "--optShapes=SAGITTAL:1x1x400x96",
        "--maxShapes=SAGITTAL:1x1x3072x96",
        "--memPoolSize=workspace:4096",
    ]
    assert "--fp16" not in detector and not any(a.startswith("--timingCacheFile") for a in detector)
    # TensorRT 10 removed --workspace, --explicitBatch, --minTiming and the batch options of TensorRT 8
    for removed in ("--workspace", "--explicitBatch", "--minTiming", "--batch", "--maxBatch"):
        assert not any(a.split("=")[0] == removed for a in localizer + detector)


def test_build_plans_with_trtexec_says_where_it_looked_when_there_is_none(tmp_path, capsys):
    assert main(["write", "--target", "gpu", "--out", str(tmp_path / "gpu")]) == 0
    missing = tmp_path / "bin" / "trtexec"
    command = ["build-plans", "--source", str(tmp_path / "gpu"), "--out", str(tmp_path / "served")]
    assert main([*command, "--builder", "trtexec", "--trtexec", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"vfq-repository: error: no trtexec at {missing}: pass its path (--trtexec), or build with the "
        "Python API (--builder api)\n"
    )


@pytest.mark.parametrize(
    ("script", "exit_code"),
    [
        ("echo '[E] Error[4]: [network.cpp::validate::3392] profile has no shape'; exit 1", 1),
        ("echo '&&&& PASSED TensorRT.trtexec'", 0),  # says it passed, wrote no plan
    ],
)
def test_a_trtexec_that_builds_no_plan_is_an_error_with_its_last_words(tmp_path, capsys, script, exit_code):
    program = tmp_path / "trtexec"
    program.write_text(f"#!/bin/sh\necho '[I] Loading the ONNX file'\n{script}\n", encoding="utf-8")
    program.chmod(0o755)
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"an earlier build's plan")
    onnx = tmp_path / "model.onnx"
    with pytest.raises(plans.PlanError) as caught:
        plans.build_plan_with_trtexec(program, onnx, plan, plans.DETECTOR_PROFILE, "fp16", None)
    message = str(caught.value)
    assert message.startswith(f"trtexec failed to build a plan from {onnx} (exit {exit_code}):\n")
    last_words = script.split("'")[1]
    assert message.endswith(f"[I] Loading the ONNX file\n{last_words}")
    assert not plan.exists()
    errors = "[E] Error[4]: [network.cpp::validate::3392] profile has no shape\n" if exit_code else ""
    assert capsys.readouterr().err == errors  # its warnings and errors as they come, not its [I] lines


def test_the_verification_tensors_are_the_servers_own_and_inside_the_profiles():
    from vfq.export.repository import SOURCE_REPOSITORY

    tensors = plans.verification_inputs(Path(SOURCE_REPOSITORY))
    assert set(tensors) == set(plans.PROFILES)
    for model, tensor in tensors.items():
        assert tensor.dtype.name == "float32" and plans.PROFILES[model].covers(tensor.shape), model
    assert tensors["spine_localizer"].shape == plans.LOCALIZER_PROFILE.opt  # the profile's optimum
    assert tensors["vertebra_detector"].shape[2] >= 256  # a whole-spine phantom straightened


def _tensorrt_names(source: str) -> set[str]:
    """Attributes read from TensorRT or the objects it makes (``trt.Logger.WARNING``,
    ``config.get_timing_cache().serialize()``) in ``source``."""

    def root(node: ast.expr) -> ast.expr:
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node

    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(base := root(node.value), ast.Name)
        and base.id in TENSORRT_OBJECTS
    }


def test_the_plan_code_calls_only_tensorrt_api_checked_against_the_servers_tensorrt():
    used = _tensorrt_names(inspect.getsource(plans))
    assert {"build_serialized_network", "execute_async_v3", "WARNING", "serialize"} <= used  # it sees them
    assert used - TENSORRT_10_5_API == set()
    removed = "config.max_workspace_size = 1 << 30\nengine = builder.build_engine(network, config)"
    assert _tensorrt_names(removed) - TENSORRT_10_5_API == {"max_workspace_size", "build_engine"}


@pytest.mark.parametrize("slices", [2, 7, 100, 300, 1000, MAX_SHAPE[0]])
def test_every_warmup_the_writer_accepts_fits_the_plans_profiles(slices):
    """A warm-up request outside a plan's optimization profile fails, and in Triton 2.51 a failed
    warm-up fails the model's load: every slice count ``--warmup-slices`` takes must fit."""
    samples = warmup_samples(slices)
    for model, profile in plans.PROFILES.items():
        (tensor,) = samples[model].inputs.values()
        assert profile.covers(tuple(tensor.dims)), (model, tuple(tensor.dims))
