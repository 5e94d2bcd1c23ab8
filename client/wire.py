"""The plain-gRPC inference request, with the CT's pixels copied once instead of three times.

tritonclient builds a ``ModelInferRequest`` by copying every input three times before gRPC sends it —
``ndarray.tobytes``, into the protobuf message, and serializing the message —: 0.31 s for a
512×512×300 CT on the 2-core reference machine, where this module takes 0.075 s. Protobuf's wire
format allows a message's fields in any order, and a repeated field's entries keep their order, so
the small part (model, input names, types, shapes, requested outputs) is serialized by protobuf and
the raw input contents (field 7, ``bytes``) are joined after it in one copy. The bytes are the ones
tritonclient sends (``tests/client/test_wire.py``). Shared memory (same host) needs none of this: the
pixels are not in the message.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

__all__ = ["RawInfer", "infer_request_bytes"]

_REQUEST = service_pb2.ModelInferRequest.DESCRIPTOR
#: ``raw_input_contents``' tag: its field number, wire type 2 (length-delimited).
_RAW_CONTENTS_TAG = _REQUEST.fields_by_name["raw_input_contents"].number << 3 | 2
_MODEL_INFER = f"/{service_pb2.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer"
_COMPRESSION = {None: None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def infer_request_bytes(
    model: str, inputs: Sequence[tuple[str, np.ndarray]], outputs: Sequence[str]
) -> bytes:
    """A serialized ``ModelInferRequest`` of ``model`` for named arrays (native byte order, as
    tritonclient sends them) and the outputs asked for, each array's bytes copied once."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in inputs:
        request.inputs.add(name=name, datatype=np_to_triton_dtype(array.dtype), shape=array.shape)
    for name in outputs:
        request.outputs.add(name=name)
    parts: list[bytes | memoryview] = [request.SerializeToString()]
    for _, array in inputs:
        contents = memoryview(np.ascontiguousarray(array)).cast("B")
        parts += [_varint(_RAW_CONTENTS_TAG), _varint(contents.nbytes), contents]
    return b"".join(parts)


class RawInfer:
    """``ModelInfer`` on a tritonclient client's channel, for requests already serialized."""

    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self._call = client._channel.unary_unary(  # the client's own channel: its TLS and options
            _MODEL_INFER,
            request_serializer=None,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )

    def __call__(
        self, request: bytes, *, client_timeout: float | None = None, compression: str | None = None
    ) -> grpcclient.InferResult:
        """The answer to ``request``; gRPC errors raised as tritonclient's ``InferenceServerException``
        (status ``StatusCode.…``), as ``InferenceServerClient.infer`` raises them."""
        try:
            return grpcclient.InferResult(
                self._call(request, timeout=client_timeout, compression=_COMPRESSION[compression])
            )
        except grpc.RpcError as error:
            raise InferenceServerException(
                msg=error.details(), status=str(error.code()), debug_details=error.debug_error_string()
            ) from None
