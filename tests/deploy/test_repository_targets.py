"""One source, three deployment targets: each written repository parses, its ensemble is wired with
agreeing names, types and shapes, only the two network configs differ from the embedded one, the
written embedded repository serves, and a warm-up is the same in every target (served:
tests/server/test_warmup.py)."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

from vfq.export.repository import (
    NETWORKS,
    PYTHON_STEPS,
    SOURCE_REPOSITORY,
    WARMUP_SPACING_FILE,
    Target,
    load_config,
    main,
    write_repository,
)
from vfq.server.embedded import EmbeddedServer
from vfq.tensors import (
    DETECTOR_MODEL,
    LOCALIZER_MODEL,
    PIPELINE_MODEL,
    PIPELINE_STEPS,
    PREPROCESS_MODEL,
    STRAIGHTEN_MODEL,
)

GPU, CPU = model_config_pb2.ModelInstanceGroup.KIND_GPU, model_config_pb2.ModelInstanceGroup.KIND_CPU


def tensors(entries) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in entries}


def assert_wired(repository: Path) -> None:
    ensemble = load_config(repository / PIPELINE_MODEL / "config.pbtxt")
    available = tensors(ensemble.input)
    for step in ensemble.ensemble_scheduling.step:
        config = load_config(repository / step.model_name / "config.pbtxt")
        inputs, outputs = tensors(config.input), tensors(config.output)
        for model_name, ensemble_name in step.input_map.items():
            assert available[ensemble_name] == inputs[model_name], (step.model_name, model_name)
        available.update({e: outputs[m] for m, e in step.output_map.items()})
    assert all(available[name] == spec for name, spec in tensors(ensemble.output).items())


@pytest.mark.parametrize("target", list(Target))
def test_each_target_is_the_embedded_repository_but_for_the_two_network_configs(target, tmp_path):
    out = write_repository(target, tmp_path / target.value)
    assert_wired(out)
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        same = filecmp.cmp(
            out / model / "config.pbtxt", SOURCE_REPOSITORY / model / "config.pbtxt", shallow=False
        )
        assert same == (model not in NETWORKS or target is Target.EMBEDDED), model
    for model in NETWORKS:
        config = load_config(out / model / "config.pbtxt")
        source = load_config(SOURCE_REPOSITORY / model / "config.pbtxt")
        assert (config.name, list(config.input), list(config.output)) == (
            source.name,
            list(source.input),
            list(source.output),
        )
        onnx = out / model / "1" / "model.onnx"
        assert (
            not onnx.is_symlink()
            and onnx.read_bytes() == (SOURCE_REPOSITORY / model / "1" / "model.onnx").read_bytes()
        )
        if target is Target.CPU_CONTAINER:
            assert (config.platform, config.backend, config.instance_group[0].kind) == (
                "onnxruntime_onnx",
                "",
                CPU,
            )
            assert (
                config.parameters["intra_op_thread_count"].string_value
                == source.parameters["intra_op_threads"].string_value
                == "1"
            )
            assert config.instance_group[0].count == source.instance_group[0].count == 2
            assert not (out / model / "1" / "model.py").exists()
        if target is Target.GPU:
            assert (config.platform, config.default_model_filename) == ("tensorrt_plan", "model.plan")
            assert config.instance_group[0].kind == GPU
            assert not (out / model / "1" / "model.plan").exists()  # built on the target GPU


def test_the_written_embedded_repository_serves(tmp_path):
    from vfq.client import VfqClient
    from vfq.volume import ImageGeometry

    repository = write_repository("embedded", tmp_path / "repo")
    air = np.full((30, 48, 48), -1000, np.int16)
    with EmbeddedServer(repository) as server, VfqClient(server.grpc_url, timeout_s=30) as client:
        study = client.analyze_array(air, ImageGeometry(air.shape, (2.0, 2.0, 2.0)))
    assert study.not_assessable.startswith("no spine found")


def test_the_command_refuses_to_overwrite_and_says_so(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["write", "--target", "gpu", "--out", str(tmp_path / "repo")]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["write", "--target", "cpu-container", "--out", str(tmp_path / "cpu")]) == 0


def test_the_numpy_steps_get_the_instances_asked_for_and_nothing_else_changes(tmp_path):
    assert PYTHON_STEPS == ("preprocess", "straighten", "keypoint_decoder")
    assert main(["write", "--target", "gpu", "--out", str(tmp_path / "gpu"), "--step-instances", "8"]) == 0
    plain = write_repository("gpu", tmp_path / "plain")
    assert_wired(tmp_path / "gpu")
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        written, default = (load_config(repo / model / "config.pbtxt") for repo in (tmp_path / "gpu", plain))
        if model in PYTHON_STEPS:
            assert (written.instance_group[0].count, default.instance_group[0].count) == (8, 2), model
            written.instance_group[0].count = default.instance_group[0].count
        assert written == default, model
    with pytest.raises(ValueError, match="step_instances must be >= 1, got 0"):
        write_repository("embedded", tmp_path / "none", step_instances=0)


@pytest.mark.parametrize("target", list(Target))
def test_the_queue_bound_asked_for_is_on_every_step_of_every_target_and_nothing_else_changes(
    target, tmp_path
):
    bounded = write_repository(target, tmp_path / "q8", max_queue_size=8)
    plain = write_repository(target, tmp_path / "plain")
    unbounded = write_repository(target, tmp_path / "q0", max_queue_size=0)
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        written, default, without = (
            load_config(r / model / "config.pbtxt") for r in (bounded, plain, unbounded)
        )
        assert not default.HasField("dynamic_batching") and default == without, model  # no bound
        if model in PIPELINE_STEPS:
            assert written.max_batch_size == 0, model  # the batcher holds the queue, it batches nothing
            batching = written.dynamic_batching
            assert (batching.default_queue_policy.max_queue_size, list(batching.preferred_batch_size)) == (
                8,
                [],
            )
            written.ClearField("dynamic_batching")
        assert written == default, model


def test_the_command_writes_the_queue_bound_and_refuses_a_negative_one(tmp_path):
    assert main(["write", "--target", "gpu", "--out", str(tmp_path / "q2"), "--max-queue-size", "2"]) == 0
    config = load_config(tmp_path / "q2" / PREPROCESS_MODEL / "config.pbtxt")
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 2
    assert "at most 2 requests queued" in (tmp_path / "q2" / PREPROCESS_MODEL / "config.pbtxt").read_text()
    with pytest.raises(ValueError, match=r"max_queue_size must be >= 0 \(0: no bound\), got -1"):
        write_repository("embedded", tmp_path / "negative", max_queue_size=-1)


@pytest.mark.parametrize(
    ("target", "parameter"), [("embedded", "intra_op_threads"), ("cpu-container", "intra_op_thread_count")]
)
def test_the_networks_get_the_threads_and_instances_asked_for_and_nothing_else_changes(
    tmp_path, target, parameter
):
    out = tmp_path / "sized"
    command = [
        "write",
        "--target",
        target,
        "--out",
        str(out),
        "--network-threads",
        "2",
        "--network-instances",
        "3",
    ]
    assert main(command) == 0
    plain = write_repository(target, tmp_path / "plain")
    assert_wired(out)
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        written, default = (load_config(repo / model / "config.pbtxt") for repo in (out, plain))
        if model in NETWORKS:
            threads = (written.parameters[parameter].string_value, default.parameters[parameter].string_value)
            instances = (written.instance_group[0].count, default.instance_group[0].count)
            assert (threads, instances) == (("2", "1"), (3, 2)), model
            written.parameters[parameter].string_value = "1"
            written.instance_group[0].count = 2
        assert written == default, model


def test_network_sizes_are_refused_where_they_mean_nothing(tmp_path):
    for size in ({"network_threads": 2}, {"network_instances": 2}):
        with pytest.raises(
            ValueError, match="the gpu target runs one instance of each TensorRT plan on GPU 0"
        ):
            write_repository("gpu", tmp_path / "gpu", **size)
    with pytest.raises(ValueError, match="network_threads must be >= 1, got 0"):
        write_repository("cpu-container", tmp_path / "cpu", network_threads=0)
    with pytest.raises(ValueError, match="network_instances must be >= 1, got -1"):
        write_repository("embedded", tmp_path / "cpu", network_instances=-1)
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "cpu").exists()


def test_the_embedded_networks_get_the_runtime_asked_for_and_nothing_else_changes(tmp_path):
    out = tmp_path / "openvino"
    assert main(["write", "--target", "embedded", "--out", str(out), "--network-runtime", "openvino"]) == 0
    plain = write_repository("embedded", tmp_path / "plain")
    assert_wired(out)
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        written, default = (load_config(repo / model / "config.pbtxt") for repo in (out, plain))
        if model in NETWORKS:
            assert written.parameters.pop("runtime").string_value == "openvino"
            assert "runtime" not in default.parameters
            assert default.parameters.pop("memory_arena").string_value == "false"  # ONNX Runtime's own
        assert written == default, model
    # an OpenVINO repository as the source (it has no memory_arena to drop) gives the same again
    again = write_repository("embedded", tmp_path / "again", source=out, network_runtime="openvino")
    for model in NETWORKS:
        assert load_config(again / model / "config.pbtxt") == load_config(out / model / "config.pbtxt")


@pytest.mark.parametrize("target", ["cpu-container", "gpu"])
def test_a_runtime_is_refused_where_the_python_backend_does_not_run_the_networks(tmp_path, target):
    with pytest.raises(ValueError, match="cpu-container target serves them on the NGC image's onnxruntime"):
        write_repository(target, tmp_path / "repo", network_runtime="openvino")
    with pytest.raises(ValueError, match="unknown runtime 'tvm': expected one of onnxruntime, openvino"):
        write_repository("embedded", tmp_path / "repo", network_runtime="tvm")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--target", "gpu", "--network-threads", "2"],
            "the gpu target runs one instance of each TensorRT plan",
        ),
        (["--target", "embedded", "--network-instances", "0"], "network_instances must be >= 1, got 0"),
        (
            ["--target", "gpu", "--warmup-slices", "1"],
            "warmup_slices must be a CT's slice count, 2 to 2048; got 1",
        ),
        (
            ["--target", "cpu-container", "--network-runtime", "openvino"],
            "the cpu-container target serves them",
        ),
    ],
)
def test_the_command_refuses_options_that_do_not_fit_with_a_usage_error(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_:
        main(["write", "--out", str(tmp_path / "repo"), *options])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "vfq-repository: error: " in err and message in err
    assert not (tmp_path / "repo").exists()


def _warmup_inputs(config: model_config_pb2.ModelConfig) -> dict[str, tuple[int, list[int], str]]:
    (sample,) = config.model_warmup
    assert (sample.name, sample.batch_size) == ("ct_300_slices", 1)
    return {
        name: (value.data_type, list(value.dims), value.WhichOneof("input_data_type"))
        for name, value in sample.inputs.items()
    }


@pytest.mark.parametrize("target", list(Target))
def test_the_warmup_is_a_300_slice_ct_through_every_step_that_takes_one_and_nothing_else_changes(
    tmp_path, target
):
    assert (
        main(["write", "--target", target.value, "--out", str(tmp_path / "warm"), "--warmup-slices", "300"])
        == 0
    )
    plain = write_repository(target, tmp_path / "plain")
    assert_wired(tmp_path / "warm")
    ct, spacing = (
        (model_config_pb2.TYPE_INT16, [300, 512, 512]),
        (model_config_pb2.TYPE_FP32, [3], "input_data_file"),
    )
    coarse = (model_config_pb2.TYPE_FP32, [1, 1, 80, 96, 96], "zero_data")  # the 4 mm grid of that CT
    expected = {
        PREPROCESS_MODEL: {"CT": (*ct, "random_data"), "SPACING": spacing},
        LOCALIZER_MODEL: {"CT_COARSE": coarse},
        STRAIGHTEN_MODEL: {"CT": (*ct, "zero_data"), "SPACING": spacing, "SPINE_HEATMAP": coarse},
        DETECTOR_MODEL: {"SAGITTAL": (model_config_pb2.TYPE_FP32, [1, 1, 304, 96], "zero_data")},
    }
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        written, default = (load_config(repo / model / "config.pbtxt") for repo in (tmp_path / "warm", plain))
        if model in expected:
            assert _warmup_inputs(written) == expected[model], model
            del written.model_warmup[:]
        assert written == default, model
        files = {p.relative_to(tmp_path / "warm" / model) for p in (tmp_path / "warm" / model).rglob("*")}
        spacing_file = Path("warmup") / WARMUP_SPACING_FILE
        assert (spacing_file in files) == (model in (PREPROCESS_MODEL, STRAIGHTEN_MODEL)), model
    raw = (tmp_path / "warm" / STRAIGHTEN_MODEL / "warmup" / WARMUP_SPACING_FILE).read_bytes()
    assert np.frombuffer(raw, np.float32).tolist() == pytest.approx([1.0, 0.7, 0.7])
