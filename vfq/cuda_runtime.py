"""The CUDA runtime API through cuda-python, where vfq drives a GPU without PyTorch: running a TensorRT
plan (:func:`vfq.export.tensorrt_plans.run_plan`) and a client's CUDA shared-memory region (the GPU
check's ``CudaIpcRegion``).

cuda-python is imported on first use, so nothing else of vfq needs it. Its runtime module is
``cuda.bindings.runtime`` from cuda-python 12.6.1 on (the only name in cuda-bindings 13) and
``cuda.cudart`` before; tritonclient 2.51's CUDA shared-memory helpers import only the old name, so
they fail beside cuda-bindings 13. Every name called here was checked in cuda-bindings 12.9.4 and 13.0.3
(tests/deploy/test_cuda_runtime.py).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from vfq.errors import VfqError

__all__ = ["CudaError", "call", "memcpy_kind", "runtime"]


class CudaError(VfqError):
    """A CUDA runtime call answered an error, or cuda-python is missing."""


@functools.cache
def runtime() -> ModuleType:
    """cuda-python's CUDA runtime module."""
    try:
        from cuda.bindings import runtime as module
    except ImportError:
        try:
            from cuda import cudart as module
        except ImportError as error:
            raise CudaError(
                "this needs cuda-python's CUDA runtime bindings (cuda.bindings.runtime, "
                "or cuda.cudart before cuda-bindings 13): pip install 'cuda-python>=12.6.2'"
            ) from error
    return module


def call(function: str, *args: Any) -> Any:
    """Call the runtime function named ``function``; raise :class:`CudaError` (``"cudaMalloc: out of
    memory"``) on an error code; return what it answers beside the code: nothing, one value, or a
    tuple."""
    module = runtime()
    error, *values = getattr(module, function)(*args)
    if error != module.cudaError_t.cudaSuccess:
        raise CudaError(f"{function}: {module.cudaGetErrorString(error)[1].decode()}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def memcpy_kind(name: str) -> Any:
    """The ``cudaMemcpyKind`` member ``name`` (``"cudaMemcpyHostToDevice"``, ...)."""
    return getattr(runtime().cudaMemcpyKind, name)
