"""The plain-gRPC inference request of vfq.client.wire: the very bytes tritonclient would send for the
same inputs and outputs, with the pixels copied once. (That the server answers it: the plain-gRPC
tests of tests/server.)"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request  # what InferenceServerClient.infer sends

from vfq.client.wire import _varint, infer_request_bytes
from vfq.tensors import CT_INPUT, PIPELINE_MODEL, PIPELINE_OUTPUTS, SPACING_INPUT


def tritonclients_request(model: str, inputs: list[tuple[str, np.ndarray]], outputs: list[str]) -> bytes:
    tensors = []
    for name, array in inputs:
        tensor = grpcclient.InferInput(name, list(array.shape), grpcclient.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    request = _get_inference_request(
        model_name=model,
        inputs=tensors,
        model_version="",
        request_id="",
        outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )
    return request.SerializeToString()


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (40, 64, 48)])
def test_the_request_is_the_one_tritonclient_sends(shape):
    ct = np.random.default_rng(sum(shape)).integers(-1024, 3000, size=shape, dtype=np.int16)
    inputs = [(CT_INPUT, ct), (SPACING_INPUT, np.array([2.5, 0.7, 0.7], dtype=np.float32))]
    ours = infer_request_bytes(PIPELINE_MODEL, inputs, PIPELINE_OUTPUTS)
    assert ours == tritonclients_request(PIPELINE_MODEL, inputs, list(PIPELINE_OUTPUTS))
    parsed = service_pb2.ModelInferRequest.FromString(ours)
    assert [bytes(content) for content in parsed.raw_input_contents] == [a.tobytes() for _, a in inputs]
    assert [(t.name, t.datatype, tuple(t.shape)) for t in parsed.inputs] == [
        (CT_INPUT, "INT16", shape),
        (SPACING_INPUT, "FP32", (3,)),
    ]


def test_a_view_is_sent_as_its_values_in_c_order():
    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    flipped = volume[:, ::-1, :].transpose(0, 2, 1)  # not contiguous
    ours = infer_request_bytes("m", [("CT", flipped)], [])
    assert ours == tritonclients_request("m", [("CT", np.ascontiguousarray(flipped))], [])


@pytest.mark.parametrize("value", [1, 127, 128, 300, 2**21, 157_286_400, 2**31 - 1])
def test_varints_are_protobufs(value):
    field = service_pb2.InferParameter(int64_param=value).SerializeToString()  # a one-byte tag, the varint
    assert _varint(value) == field[1:]
