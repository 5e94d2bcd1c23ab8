"""The model repository as Triton reads it: every config parses, the ensemble's wiring is complete and
type-consistent, and the names are those of vfq.tensors and of the shipped ONNX files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from vfq.tensors import (
    CT_INPUT,
    DETECTOR_MODEL,
    LOCALIZER_MODEL,
    PIPELINE_MODEL,
    PIPELINE_OUTPUTS,
    PIPELINE_STEPS,
    SPACING_INPUT,
)

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def load_config(model: str) -> model_config_pb2.ModelConfig:
    text = (REPOSITORY / model / "config.pbtxt").read_text(encoding="utf-8")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def tensors(entries) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in entries}


def test_the_repository_holds_the_pipeline_and_its_five_steps_and_nothing_else():
    models = sorted(p.name for p in REPOSITORY.iterdir() if (p / "config.pbtxt").is_file())
    assert models == sorted([PIPELINE_MODEL, *PIPELINE_STEPS])
    for model in models:
        config = load_config(model)
        assert config.name == model
        assert (REPOSITORY / model / "1").is_dir()


def test_the_ensemble_exposes_the_public_api_of_vfq_tensors():
    config = load_config(PIPELINE_MODEL)
    assert config.platform == "ensemble"
    assert tensors(config.input) == {
        CT_INPUT: (model_config_pb2.TYPE_INT16, (-1, -1, -1)),
        SPACING_INPUT: (model_config_pb2.TYPE_FP32, (3,)),
    }
    assert [t.name for t in config.output] == list(PIPELINE_OUTPUTS)
    assert [step.model_name for step in config.ensemble_scheduling.step] == list(PIPELINE_STEPS)


def test_every_step_input_is_produced_before_it_with_the_same_type_and_shape():
    ensemble = load_config(PIPELINE_MODEL)
    available = tensors(ensemble.input)
    for step in ensemble.ensemble_scheduling.step:
        config = load_config(step.model_name)
        inputs, outputs = tensors(config.input), tensors(config.output)
        assert set(step.input_map) == set(inputs), step.model_name
        for model_name, ensemble_name in step.input_map.items():
            assert ensemble_name in available, (
                f"{step.model_name} reads {ensemble_name} before anyone writes it"
            )
            assert available[ensemble_name] == inputs[model_name], (step.model_name, model_name)
        assert set(step.output_map) == set(outputs), step.model_name
        for model_name, ensemble_name in step.output_map.items():
            available[ensemble_name] = outputs[model_name]
    for name, (dtype, dims) in tensors(ensemble.output).items():
        assert available[name] == (dtype, dims), name


@pytest.mark.parametrize("model", [LOCALIZER_MODEL, DETECTOR_MODEL])
def test_network_configs_name_the_tensors_of_their_onnx_file(model):
    config = load_config(model)
    graph = onnx.load(REPOSITORY / model / "1" / "model.onnx", load_external_data=False).graph
    assert [t.name for t in config.input] == [t.name for t in graph.input]
    assert [t.name for t in config.output] == [t.name for t in graph.output]
    for entry, value in zip([*config.input, *config.output], [*graph.input, *graph.output]):
        shape = value.type.tensor_type.shape.dim
        assert len(entry.dims) == len(shape), entry.name
        for dim, onnx_dim in zip(entry.dims, shape):
            assert dim == -1 or not onnx_dim.HasField("dim_value") or onnx_dim.dim_value == dim, entry.name


def test_python_steps_are_one_line_adapters_over_the_installed_package():
    for model in PIPELINE_STEPS:
        source = (REPOSITORY / model / "1" / "model.py").read_text(encoding="utf-8")
        assert "from vfq.server.backend import" in source and "as TritonPythonModel" in source
        assert len([line for line in source.splitlines() if line and not line.startswith(('"', "_"))]) == 1
