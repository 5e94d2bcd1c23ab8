"""vertebra_pipeline through the real embedded Triton over gRPC: the served answer is the in-process
one (with the networks on ONNX Runtime or on OpenVINO), it lands on the phantom's truth, other
services can call it with the bare KServe-v2 protocol, and concurrent clients all get their own
correct answers."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from server_factories import infer
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.export.repository import load_config, write_repository
from vfq.levels import Level
from vfq.metrics import evaluate
from vfq.server.embedded import EmbeddedServer, ServerStartError
from vfq.tensors import (
    CT_INPUT,
    DETECTOR_MODEL,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    LOCALIZER_INPUT,
    LOCALIZER_MODEL,
    NOT_ASSESSABLE_OUTPUT,
    PIPELINE_MODEL,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
    SPACING_INPUT,
)
from vfq.volume import CTVolume, ImageGeometry


@pytest.fixture(scope="module")
def reference(phantom, in_process):
    return in_process.analyze(phantom.ct)


def assert_equals_in_process(outputs, reference, geometry):
    v = reference.vertebrae
    np.testing.assert_allclose(outputs[KEYPOINTS_OUTPUT], v.keypoints_voxel(geometry), atol=1e-3)
    np.testing.assert_allclose(outputs[SAGITTAL_KEYPOINTS_OUTPUT], v.keypoints_sagittal, atol=1e-3)
    np.testing.assert_allclose(outputs[HEIGHTS_OUTPUT], v.heights_mm, atol=1e-3)
    np.testing.assert_allclose(outputs[FRACTURE_SCORE_OUTPUT], v.loss, atol=1e-5)
    np.testing.assert_array_equal(outputs[GENANT_GRADE_OUTPUT], v.grade)
    assert [b.decode() for b in outputs[LEVEL_OUTPUT]] == [level.name for level in v.levels]


def test_served_result_equals_the_in_process_pipeline(server, phantom, reference):
    outputs = infer(server.grpc_url, phantom.ct.array, phantom.ct.geometry.spacing)
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [b""]
    assert outputs[SAGITTAL_IMAGE_OUTPUT].shape == reference.sagittal_hu.shape
    assert_equals_in_process(outputs, reference, phantom.ct.geometry)


def test_served_keypoints_land_on_the_phantoms_truth(server, phantom):
    ct = phantom.ct
    outputs = infer(server.grpc_url, ct.array, ct.geometry.spacing)
    found = SpineAnnotation(
        geometry=ct.geometry,
        vertebrae=tuple(
            VertebraAnnotation.from_keypoints(Level.parse(level.decode()), keypoints, grade=int(grade))
            for level, keypoints, grade in zip(
                outputs[LEVEL_OUTPUT],
                outputs[KEYPOINTS_OUTPUT].astype(np.float64),
                outputs[GENANT_GRADE_OUTPUT],
            )
        ),
    )
    summary = evaluate([(found, phantom.truth)])
    assert summary.precision >= 0.99 and summary.recall >= 0.99
    assert summary.center_error.median_mm <= 1.0
    assert summary.center_error.p95_mm <= 2.5
    assert summary.level.accuracy >= 0.95
    grades = dict(zip([b.decode() for b in outputs[LEVEL_OUTPUT]], outputs[GENANT_GRADE_OUTPUT].tolist()))
    assert grades["L1"] >= 1  # the 32 % wedge is flagged
    assert all(grade == 0 for level, grade in grades.items() if level not in ("L1", "L4"))


def _raw_request(ct: np.ndarray, spacing) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=PIPELINE_MODEL)
    request.inputs.add(name=CT_INPUT, datatype="INT16", shape=list(ct.shape))
    request.inputs.add(name=SPACING_INPUT, datatype="FP32", shape=[3])
    request.raw_input_contents.extend([ct.tobytes(), np.asarray(spacing, np.float32).tobytes()])
    return request


def _raw_output(response: service_pb2.ModelInferResponse, name: str) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    meta, raw = response.outputs[index], response.raw_output_contents[index]
    if meta.datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        items, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            items.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return np.array(items, dtype=object).reshape(meta.shape)
    dtype = {"FP32": np.float32, "INT32": np.int32}[meta.datatype]
    return np.frombuffer(raw, dtype=dtype).reshape(meta.shape)


def test_a_bare_kserve_v2_grpc_call_gets_the_same_answer(server, phantom, reference):
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    with grpc.insecure_channel(server.grpc_url, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name=PIPELINE_MODEL), timeout=10)
        assert ready.ready
        response = stub.ModelInfer(_raw_request(phantom.ct.array, phantom.ct.geometry.spacing), timeout=120)
    outputs = {o.name: _raw_output(response, o.name) for o in response.outputs}
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [b""]
    assert_equals_in_process(outputs, reference, phantom.ct.geometry)


def test_eight_concurrent_clients_each_get_their_own_correct_answer(server, phantom, in_process):
    # Three different scans (the phantom and two crops of it), 8 clients × 3 requests, interleaved.
    ct = phantom.ct
    scans = [ct.array, ct.array[20:], ct.array[:, 40:-40, 40:-40]]
    expected = []
    for array in scans:
        volume = CTVolume(array=array, geometry=ImageGeometry(array.shape, ct.geometry.spacing))
        expected.append((volume, in_process.analyze(volume)))

    def client(k: int) -> list[tuple[int, dict]]:
        return [
            (i, infer(server.grpc_url, scans[i], ct.geometry.spacing))
            for i in ((k + j) % 3 for j in range(3))
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [answer for batch in pool.map(client, range(8)) for answer in batch]
    assert len(answers) == 24
    for i, outputs in answers:
        volume, analysis = expected[i]
        assert_equals_in_process(outputs, analysis, volume.geometry)


@pytest.fixture(scope="module")
def openvino_server(tmp_path_factory):
    """The embedded Triton on a repository whose networks run on OpenVINO."""
    repository = write_repository(
        "embedded", tmp_path_factory.mktemp("openvino") / "repo", network_runtime="openvino"
    )
    localizer = load_config(repository / LOCALIZER_MODEL / "config.pbtxt")
    assert localizer.parameters["runtime"].string_value == "openvino"
    with EmbeddedServer(repository) as running:
        yield running


def test_served_on_openvino_the_result_equals_the_in_process_pipeline_on_onnx_runtime(
    openvino_server, phantom, reference
):
    assert "vertebra_detector: openvino, 1 thread(s) per instance" in openvino_server.log_text()
    outputs = infer(openvino_server.grpc_url, phantom.ct.array, phantom.ct.geometry.spacing)
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [b""]
    assert_equals_in_process(outputs, reference, phantom.ct.geometry)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_network_called_directly_with_a_grid_it_cannot_halve_is_refused(runtime, server, openvino_server):
    running = {"onnxruntime": server, "openvino": openvino_server}[runtime]
    assert f"spine_localizer: {runtime}, 1 thread(s) per instance" in running.log_text()
    url = running.grpc_url

    def localizer_input(shape: tuple[int, ...]) -> grpcclient.InferInput:
        tensor = grpcclient.InferInput(LOCALIZER_INPUT, list(shape), "FP32")
        tensor.set_data_from_numpy(np.full(shape, -1.0, np.float32))
        return tensor

    with grpcclient.InferenceServerClient(url) as client:
        answer = client.infer(LOCALIZER_MODEL, [localizer_input((1, 1, 32, 32, 32))])
        assert answer.as_numpy("SPINE_HEATMAP").shape == (1, 1, 32, 32, 32)
        with pytest.raises(InferenceServerException) as error:  # 40 is no multiple of 16
            client.infer(LOCALIZER_MODEL, [localizer_input((1, 1, 32, 32, 40))])
    assert error.value.message().endswith(
        "CT_COARSE's spatial sizes must be positive multiples of 16, got shape (1, 1, 32, 32, 40)"
    )


def test_a_network_config_naming_an_unknown_runtime_or_another_runtimes_setting_does_not_load(tmp_path):
    repository = write_repository("embedded", tmp_path / "repo")
    localizer, detector = (repository / model / "config.pbtxt" for model in (LOCALIZER_MODEL, DETECTOR_MODEL))
    with localizer.open("a", encoding="utf-8") as config:
        config.write('parameters { key: "runtime", value: { string_value: "openvnio" } }\n')
    with detector.open("a", encoding="utf-8") as config:  # keeps memory_arena, ONNX Runtime's
        config.write('parameters { key: "runtime", value: { string_value: "openvino" } }\n')
    with pytest.raises(ServerStartError) as error, EmbeddedServer(repository):
        pass
    lines = str(error.value).splitlines()
    assert lines[0] == "tritonserver exited while starting:"
    assert sorted(lines[1:3]) == [
        "spine_localizer (version 1): Internal: ValueError: spine_localizer: the runtime parameter: unknown "
        "runtime 'openvnio': expected one of onnxruntime, openvino",
        "vertebra_detector (version 1): Internal: ValueError: vertebra_detector: the memory_arena parameter "
        "is ONNX Runtime's, true or false; got 'false' with runtime 'openvino'",
    ]
