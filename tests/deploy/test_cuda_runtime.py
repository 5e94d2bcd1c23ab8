"""The CUDA runtime calls of vfq (running a TensorRT plan, the GPU check's CUDA shared-memory region),
checked without a GPU: every runtime name they use was found in cuda-python's bindings, and without
cuda-python they say what they need."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from vfq import cuda_runtime
from vfq.cuda_runtime import CudaError

ROOT = Path(__file__).resolve().parents[2]
#: Where vfq calls the CUDA runtime through :mod:`vfq.cuda_runtime`.
USERS = (
    ROOT / "vfq" / "cuda_runtime.py",
    ROOT / "export" / "tensorrt_plans.py",
    ROOT / "benchmarks" / "gpu_check.py",
)

#: The CUDA runtime API those places use, each name found in ``cuda.bindings.runtime`` of cuda-bindings
#: 12.9.4 and 13.0.3 (2026-12-06): functions and types by name, enum members as ``type.member``.
CUDA_RUNTIME_API = frozenset(
    {
        "cudaFree", "cudaGetErrorString", "cudaIpcGetMemHandle", "cudaMalloc", "cudaMemcpy",
        "cudaSetDevice", "cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize",
        "cudaMemcpyKind", "cudaError_t.cudaSuccess", "cudaMemcpyKind.cudaMemcpyDeviceToHost",
        "cudaMemcpyKind.cudaMemcpyHostToDevice",
    }
)  # fmt: skip


def runtime_names_used(path: Path) -> set[str]:
    """The runtime names a file uses: functions handed to ``call`` by name, members named to
    ``memcpy_kind``, attributes read from ``runtime()``, and (in :mod:`vfq.cuda_runtime` itself) what
    it reads from the module (one attribute deeper where it reads one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id == "call":
                used.add(node.args[0].value)
            elif node.func.id == "memcpy_kind":
                used.add(f"cudaMemcpyKind.{node.args[0].value}")
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "runtime()":
            if not node.attr.startswith("__"):  # the module's own (its __name__), not CUDA's
                used.add(node.attr)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if ast.unparse(node.value.value) == "module":
                used.add(f"{node.value.attr}.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if ast.unparse(node.func.value) == "module":
                used.add(node.func.attr)
    return used


def test_every_cuda_runtime_name_vfq_uses_was_checked_in_cuda_bindings_12_and_13():
    used = {path.name: runtime_names_used(path) for path in USERS}
    assert {"cudaError_t.cudaSuccess", "cudaGetErrorString"} <= used["cuda_runtime.py"]
    assert {"cudaStreamCreate", "cudaMemcpyKind.cudaMemcpyDeviceToHost", "cudaFree"} <= used[
        "tensorrt_plans.py"
    ]
    assert {"cudaIpcGetMemHandle", "cudaMemcpyKind.cudaMemcpyHostToDevice"} <= used["gpu_check.py"]
    unchecked = set().union(*used.values()) - CUDA_RUNTIME_API
    assert not unchecked, f"not checked against cuda-bindings: {sorted(unchecked)}"
    # tritonclient 2.51's CUDA shared-memory helpers import cuda.cudart, which cuda-bindings 13 removed
    assert "utils.cuda_shared_memory" not in (ROOT / "benchmarks" / "gpu_check.py").read_text(
        encoding="utf-8"
    )


def test_without_cuda_python_a_runtime_call_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)  # as on a host without cuda-python
    cuda_runtime.runtime.cache_clear()
    try:
        with pytest.raises(
            CudaError, match=r"needs cuda-python's CUDA runtime bindings .*cuda-python>=12.6.2"
        ):
            cuda_runtime.call("cudaMalloc", 1024)
    finally:
        cuda_runtime.runtime.cache_clear()
