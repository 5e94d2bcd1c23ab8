"""Triton python-backend adapters for the ``vertebra_pipeline`` steps (DESIGN §3).

Each ``model_repository/<step>/1/model.py`` is one line that imports its class from here as
``TritonPythonModel``. The adapters only move tensors: the work is done by :mod:`vfq.server.steps`
(the geometry core) or by an ONNX Runtime session. Every request is answered on its own: a bad one
gets ``TritonError(INVALID_ARG)`` with the reason, an unexpected failure ``INTERNAL`` with the
exception logged, and the other requests of the batch, and the server, go on.

Custom metrics (Prometheus, next to Triton's own on the metrics port):

* ``vfq_step_duration_seconds{step}`` histogram: time each step spends on one request;
* ``vfq_rejected_requests_total{step, reason}``: requests refused, by exception type;
* ``vfq_scans_total{outcome}``: scans decoded, ``assessed`` or ``not_assessable``;
* ``vfq_vertebrae_per_scan`` histogram: vertebrae found per assessed scan;
* ``vfq_fractures_total{grade}``: vertebrae with Genant grade 1, 2, 3;
* ``vfq_memory_released_bytes_total{step}``: freed memory a step's process handed back to the system
  above its ``max_retained_mb`` config parameter (:mod:`vfq.server.memory`).

Imports ``triton_python_backend_utils``, which exists only inside Triton's python backend.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from vfq.errors import InputError
from vfq.preprocess import host_array, to_localizer_grid
from vfq.server import steps
from vfq.server.memory import DEFAULT_MAX_RETAINED_MB, RetainedMemoryCap
from vfq.straighten import straighten_sagittal
from vfq.tensors import (
    CT_INPUT,
    CURVE_TENSOR,
    DETECTOR_HEATMAP,
    DETECTOR_INPUT,
    DETECTOR_LEVELS,
    DETECTOR_OFFSETS,
    GENANT_GRADE_OUTPUT,
    GRID_TENSOR,
    LOCALIZER_OUTPUT,
    NETWORK_INPUT_MULTIPLE,
    NOT_ASSESSABLE_OUTPUT,
    SPACING_INPUT,
    STRAIGHTEN_STATUS,
)

#: Buckets (s) of the step-duration histogram.
DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
#: Buckets of the vertebrae-per-scan histogram.
VERTEBRAE_BUCKETS = [0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]


class PythonStep:
    """Base of the adapters: per-request error handling and the step metrics.

    Subclasses name their ``inputs`` and implement :meth:`run` (input arrays by name → output arrays
    by name); :meth:`setup` builds what they need once.
    """

    inputs: tuple[str, ...] = ()

    def initialize(self, args: dict[str, str]) -> None:
        self.step = args["model_name"]
        self.config = json.loads(args["model_config"])
        self.parameters = {
            key: value["string_value"] for key, value in self.config.get("parameters", {}).items()
        }
        # A MetricFamily must outlive its Metrics: the families are kept in ``self.families``.
        self.families: list[Any] = []
        self._duration = self._family(
            "vfq_step_duration_seconds",
            "Time a vertebra_pipeline python step spends on one request (s)",
            pb_utils.MetricFamily.HISTOGRAM,
        ).Metric(labels={"step": self.step}, buckets=DURATION_BUCKETS)
        self._rejected = self._family(
            "vfq_rejected_requests_total",
            "Requests a vertebra_pipeline step refused, by reason",
            pb_utils.MetricFamily.COUNTER,
        )
        self._rejected_by_reason: dict[str, Any] = {}
        self._released = self._family(
            "vfq_memory_released_bytes_total",
            "Freed memory a vertebra_pipeline step's process handed back to the system (bytes)",
            pb_utils.MetricFamily.COUNTER,
        ).Metric(labels={"step": self.step})
        self._released_reported = 0
        max_mb = int(self.parameters.get("max_retained_mb", DEFAULT_MAX_RETAINED_MB))
        self.memory = RetainedMemoryCap(max_mb * 2**20)
        self.setup(args)

    def finalize(self) -> None:
        self.memory.stop()

    def _family(self, name: str, description: str, kind: Any) -> Any:
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self.families.append(family)
        return family

    def setup(self, args: dict[str, str]) -> None:
        """Build what the step needs, once per model instance."""

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        released = self.memory.released
        if released > self._released_reported:
            self._released.increment(released - self._released_reported)
            self._released_reported = released
        responses = []
        for request in requests:
            start = time.perf_counter()
            try:
                outputs = self.run(self._arrays(request))
                response = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
                )
            except InputError as error:
                self._count_rejected(type(error).__name__)
                response = _error_response(str(error), pb_utils.TritonError.INVALID_ARG)
            except Exception as error:  # a bug answers this request, never takes the server down
                self._count_rejected("InternalError")
                pb_utils.Logger.log_error(f"{self.step}: {traceback.format_exc()}")
                message = f"{self.step} failed: {type(error).__name__}: {error}"
                response = _error_response(message, pb_utils.TritonError.INTERNAL)
            self._duration.observe(time.perf_counter() - start)
            responses.append(response)
        return responses

    def _arrays(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise InputError(f"input tensor {name} is missing")
            arrays[name] = self._array(name, tensor)
        return arrays

    def _array(self, name: str, tensor: Any) -> Any:
        """The input ``tensor`` (a ``pb_utils.Tensor``) as this step computes on it: numpy. A tensor
        in GPU memory reaches a step only where its config sets ``FORCE_CPU_ONLY_INPUT_TENSORS`` to
        ``"no"``, and only a step with a torch device reads one (:class:`ResamplingStep`)."""
        if not tensor.is_cpu():
            raise RuntimeError(
                f"{name} arrived in GPU memory, which {self.step} reads only with PyTorch on a GPU: "
                "set its device parameter to auto or cuda in an image that has torch, or its "
                "FORCE_CPU_ONLY_INPUT_TENSORS parameter to yes"
            )
        return tensor.as_numpy()

    def _count_rejected(self, reason: str) -> None:
        if reason not in self._rejected_by_reason:
            self._rejected_by_reason[reason] = self._rejected.Metric(
                labels={"step": self.step, "reason": reason}
            )
        self._rejected_by_reason[reason].increment(1)


def _error_response(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


class ResamplingStep(PythonStep):
    """A step that resamples the CT: in numpy, or in PyTorch on the device that the config parameter
    ``device`` names (:func:`vfq.server.steps.resampling_device`;
    :class:`vfq.torch_resampling.TorchResampler`).

    On a torch device the step reads its inputs through DLPack: the CT as a tensor where Triton holds
    it (in GPU memory when the client placed it in CUDA shared memory and the config sets
    ``FORCE_CPU_ONLY_INPUT_TENSORS`` to ``"no"``: it is then never copied to the host), the other,
    small inputs as numpy on the host.
    """

    def setup(self, args: dict[str, str]) -> None:
        self.to_localizer_grid, self.straighten_sagittal = to_localizer_grid, straighten_sagittal
        self.device = steps.resampling_device(self.parameters.get("device", "numpy"))
        if self.device is not None:
            import torch.utils.dlpack

            from vfq.torch_resampling import TorchResampler

            self.from_dlpack = torch.utils.dlpack.from_dlpack
            resampler = TorchResampler(self.device)
            self.to_localizer_grid, self.straighten_sagittal = resampler.localizer_input, resampler.sagittal
        pb_utils.Logger.log_info(f"{self.step}: resampling on {self.device or 'numpy'}")

    def _array(self, name: str, tensor: Any) -> Any:
        if self.device is None:
            return super()._array(name, tensor)
        value = self.from_dlpack(tensor.to_dlpack())
        return value if name == CT_INPUT else host_array(value)


class PreprocessModel(ResamplingStep):
    """Step 1, ``preprocess``: validate the CT, resample it to the localizer grid."""

    inputs = (CT_INPUT, SPACING_INPUT)

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return steps.preprocess(arrays[CT_INPUT], arrays[SPACING_INPUT], self.to_localizer_grid)


class StraightenModel(ResamplingStep):
    """Step 3, ``straighten``: fit the spine curve, straighten the CT along it."""

    inputs = (CT_INPUT, SPACING_INPUT, LOCALIZER_OUTPUT)

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ct, spacing, heatmap = arrays[CT_INPUT], arrays[SPACING_INPUT], arrays[LOCALIZER_OUTPUT]
        return steps.straighten(ct, spacing, heatmap, self.straighten_sagittal)


class DecoderModel(PythonStep):
    """Step 5, ``keypoint_decoder``: vertebrae, keypoints, heights and Genant grades; scan metrics."""

    inputs = (
        DETECTOR_INPUT,
        DETECTOR_HEATMAP,
        DETECTOR_OFFSETS,
        DETECTOR_LEVELS,
        CURVE_TENSOR,
        GRID_TENSOR,
        STRAIGHTEN_STATUS,
        SPACING_INPUT,
    )

    def setup(self, args: dict[str, str]) -> None:
        scans = self._family(
            "vfq_scans_total", "Scans decoded by vertebra_pipeline, by outcome", pb_utils.MetricFamily.COUNTER
        )
        self._scans = {
            outcome: scans.Metric(labels={"outcome": outcome}) for outcome in ("assessed", "not_assessable")
        }
        self._vertebrae = self._family(
            "vfq_vertebrae_per_scan", "Vertebrae found per assessed scan", pb_utils.MetricFamily.HISTOGRAM
        ).Metric(labels={}, buckets=VERTEBRAE_BUCKETS)
        fractures = self._family(
            "vfq_fractures_total",
            "Vertebrae found with a Genant grade of 1 or more, by grade",
            pb_utils.MetricFamily.COUNTER,
        )
        self._fractures = {grade: fractures.Metric(labels={"grade": str(grade)}) for grade in (1, 2, 3)}

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = steps.decode_keypoints(arrays)
        if steps.text_of(outputs[NOT_ASSESSABLE_OUTPUT]):
            self._scans["not_assessable"].increment(1)
        else:
            grades = outputs[GENANT_GRADE_OUTPUT]
            self._scans["assessed"].increment(1)
            self._vertebrae.observe(float(grades.size))
            for grade, metric in self._fractures.items():
                count = int(np.count_nonzero(grades == grade))
                if count:
                    metric.increment(count)
        return outputs


class NetworkModel(PythonStep):
    """Steps 2 and 4 as python models: a network on the tensors its config names (:mod:`vfq.tensors`).

    Subclasses load the network in :meth:`load` and run it in :meth:`infer`.
    """

    def setup(self, args: dict[str, str]) -> None:
        self.inputs = tuple(tensor["name"] for tensor in self.config["input"])
        self.output_names = [tensor["name"] for tensor in self.config["output"]]
        self.multiple = NETWORK_INPUT_MULTIPLE[self.inputs[0]]
        self.load(args)

    def load(self, args: dict[str, str]) -> None:
        raise NotImplementedError

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensor = arrays[self.inputs[0]]
        if tensor.dtype != np.float32 or not np.isfinite(tensor).all():
            raise InputError(f"{self.inputs[0]} must be finite float32")
        # Checked here, not left to the runtime: ONNX Runtime fails deep inside the graph, and OpenVINO
        # 2026.4 answered a 100-voxel axis with the previous request's outputs.
        if any(n == 0 or n % self.multiple for n in tensor.shape[2:]):
            raise InputError(
                f"{self.inputs[0]}'s spatial sizes must be positive multiples of {self.multiple}, got shape "
                f"{tuple(tensor.shape)}"
            )
        return dict(zip(self.output_names, self.infer(tensor)))


class OnnxNetworkModel(NetworkModel):
    """The embedded target's networks: ``1/model.onnx`` on a CPU runtime (:mod:`vfq.runtime`).

    Config parameters: ``runtime`` (:data:`vfq.runtime.SERVED_RUNTIME_PARAMETER`: ``onnxruntime``,
    the default, or ``openvino``), ``intra_op_threads`` (:data:`vfq.runtime.SERVED_THREADS_PARAMETER`;
    default :data:`vfq.runtime.SERVED_THREADS`), and for ONNX Runtime ``memory_arena`` (``"true"``,
    the default, or ``"false"``: :class:`vfq.runtime.OnnxRunner`).
    """

    def load(self, args: dict[str, str]) -> None:
        from vfq.runtime import (
            DEFAULT_RUNTIME,
            SERVED_RUNTIME_PARAMETER,
            SERVED_THREADS,
            SERVED_THREADS_PARAMETER,
            checked_runtime,
            cpu_runner,
        )

        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        try:
            runtime = checked_runtime(self.parameters.get(SERVED_RUNTIME_PARAMETER, DEFAULT_RUNTIME))
        except ValueError as e:
            raise ValueError(f"{self.step}: the {SERVED_RUNTIME_PARAMETER} parameter: {e}") from None
        options = {}
        if "memory_arena" in self.parameters:
            arena = self.parameters["memory_arena"]
            if runtime != "onnxruntime" or arena not in ("true", "false"):
                raise ValueError(
                    f"{self.step}: the memory_arena parameter is ONNX Runtime's, true or false; "
                    f"got {arena!r} with runtime {runtime!r}"
                )
            options["memory_arena"] = arena == "true"
        threads = int(self.parameters.get(SERVED_THREADS_PARAMETER, SERVED_THREADS))
        self.runner = cpu_runner(path, runtime, threads=threads, **options)
        pb_utils.Logger.log_info(f"{self.step}: {runtime}, {threads} thread(s) per instance")
        if self.inputs != (self.runner.input_name,) or self.output_names != self.runner.output_names:
            raise RuntimeError(
                f"{path}: the ONNX model's tensors {[self.runner.input_name]} → {self.runner.output_names} "
                f"differ from the config's {list(self.inputs)} → {self.output_names}"
            )

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.runner(tensor)


class TorchNetworkModel(NetworkModel):
    """A network from its PyTorch checkpoint on a torch device (the GPU check of a machine whose
    ONNX Runtime has no CUDA; needs torch where the server runs).

    Config parameters: ``checkpoint`` (path of the ``.pt`` file, :func:`vfq.export.networks.save_checkpoint`),
    ``device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"``; default ``"cuda"``).
    """

    def load(self, args: dict[str, str]) -> None:
        import torch

        from vfq.export.networks import load_checkpoint

        self.torch = torch
        self.device = torch.device(self.parameters.get("device", "cuda"))
        self.network = load_checkpoint(self.parameters["checkpoint"], map_location=self.device).model.eval()

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        with self.torch.inference_mode():
            outputs = self.network(self.torch.from_numpy(tensor).to(self.device))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return [output.float().cpu().numpy() for output in outputs]
