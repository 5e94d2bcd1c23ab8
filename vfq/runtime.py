"""Running an exported network with ONNX Runtime on the CPU (the embedded deployment and the
offline pipeline). ``onnxruntime`` is imported only when a runner is built."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: The config parameter of a served network (:class:`vfq.server.backend.OnnxNetworkModel`) that sets
#: ONNX Runtime's threads per instance, and its value where a config does not set it (the
#: cpu-container configs written from the embedded ones keep it: :mod:`vfq.export.repository`).
SERVED_THREADS_PARAMETER = "intra_op_threads"
SERVED_THREADS = 1


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
