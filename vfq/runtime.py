"""Running an exported network on the CPU (the embedded deployment and the offline pipeline), with
ONNX Runtime (the default, DESIGN §3) or OpenVINO. Each library is imported only when a runner of
it is built.

Both runners take the same ``.onnx`` file and compute in float32: on the real lumbar CT OpenVINO's
outputs differ from ONNX Runtime's by at most 2e-6 (localizer heatmap), 2e-5 (detector offsets, in
pixels) and 3e-5 (detector logits, up to 84 in size). On the 2-core reference machine (AMD EPYC,
AVX-512) OpenVINO ran the localizer on a 512 × 512 × 300 CT (80 × 96 × 96) in 294 ms on one thread
where ONNX Runtime took 408 ms, and a served scan took a fifth less time (benchmarks/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: The config parameter of a served network (:class:`vfq.server.backend.OnnxNetworkModel`) that sets
#: its runtime's threads per instance, and its value where a config does not set it (the
#: cpu-container configs written from the embedded ones keep it: :mod:`vfq.export.repository`).
SERVED_THREADS_PARAMETER = "intra_op_threads"
SERVED_THREADS = 1
#: The config parameter of a served network that names its runtime (a key of :data:`RUNTIMES`), and
#: the runtime where a config does not name one.
SERVED_RUNTIME_PARAMETER = "runtime"
DEFAULT_RUNTIME = "onnxruntime"


class OnnxRunner:
    """One ONNX model, one session, built once; calling it runs the network.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (the CPU cores this model may use).
        memory_arena: ONNX Runtime's CPU memory arena, which keeps the largest intermediate tensors
            it has ever needed. Off, every run allocates from the process's malloc: as fast on
            tcmalloc (localizer 229 vs 232 ms on a 512×512×300 CT), slower on glibc's (246 vs
            217 ms), and what is kept is then bounded like the rest (:mod:`vfq.server.memory`).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 2, memory_arena: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = memory_arena
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting of the worker threads after a run: on a few cores it steals the CPU from the
        # numpy steps that follow (measured: the curve fit after the localizer took 34-99 ms with
        # spinning, 17-21 ms without, on the 2-core CI machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The outputs, in the model's output order, for one float32 input tensor."""
        return self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(tensor, np.float32)}
        )


class OpenVinoRunner:
    """One ONNX model compiled by OpenVINO for the CPU; calling it runs the network.

    Args:
        path: the ``.onnx`` file (OpenVINO reads it directly; no conversion step).
        threads: inference threads (the CPU cores this model may use).

    Three of OpenVINO's CPU defaults are set against, because each changes what a served step gets:
    the inference precision (bfloat16 by default on CPUs with AVX-512 BF16 or AMX, which moves the
    localizer's heatmap by up to 0.02; here always float32); the pinning of inference threads to
    cores (two step processes, each pinning its one thread, both landed on the same core and each
    ran at half speed: 594 against 298 ms); and the cache of kernels per input shape (every CT has
    its own localizer grid: after 60 grids a process held 240 MiB with the default cache of 5000
    entries, 199 MiB with none, and an 80 × 96 × 96 grid ran in 295 ms either way).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 2) -> None:
        # oneTBB (OpenVINO's threading) opens its hwloc binding with RTLD_DEEPBIND; under a preloaded
        # allocator (the server's tcmalloc) hwloc then hands glibc's free what tcmalloc allocated and
        # the process aborts ("free(): invalid pointer", oneTBB issue 1636). This variable makes
        # oneTBB open it without; it is read when OpenVINO first compiles a model.
        os.environ.setdefault("TBB_ENABLE_SANITIZERS", "1")
        import openvino

        self.path = Path(path)
        self.compiled = openvino.Core().compile_model(
            str(self.path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",
                "ENABLE_CPU_PINNING": False,
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                "CPU_RUNTIME_CACHE_CAPACITY": 0,
            },
        )
        self.request = self.compiled.create_infer_request()
        self.input_name = self.compiled.input(0).get_any_name()
        self.outputs = list(self.compiled.outputs)
        self.output_names = [output.get_any_name() for output in self.outputs]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The outputs, in the model's output order, for one float32 input tensor (fresh arrays,
        not views of the request's buffers)."""
        results = self.request.infer({0: np.ascontiguousarray(tensor, np.float32)}, share_outputs=False)
        return [results[output] for output in self.outputs]


#: The CPU runtimes, by the name a served network's ``runtime`` parameter gives.
RUNTIMES: dict[str, type[OnnxRunner] | type[OpenVinoRunner]] = {
    "onnxruntime": OnnxRunner,
    "openvino": OpenVinoRunner,
}


def cpu_runner(
    path: str | os.PathLike[str], runtime: str = DEFAULT_RUNTIME, threads: int = 2, **options: bool
) -> OnnxRunner | OpenVinoRunner:
    """A runner of the ``.onnx`` file ``path`` on the CPU runtime named ``runtime`` (a key of
    :data:`RUNTIMES`) with ``threads`` threads and that runner's own ``options``; ``ValueError`` for
    another name."""
    return RUNTIMES[checked_runtime(runtime)](path, threads=threads, **options)


def checked_runtime(runtime: str) -> str:
    """``runtime`` if it names one of :data:`RUNTIMES`, else ``ValueError`` saying which do."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    return runtime
