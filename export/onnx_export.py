"""ONNX export of the two networks, checked against PyTorch with ONNX Runtime.

The graphs carry the tensor names of :mod:`vfq.tensors`, dynamic batch and spatial axes, and in
``metadata_props`` the architecture, its version and config, the tensor-contract constants and the
vfq version (keys ``vfq.*``, values JSON; read them back with :func:`read_onnx_metadata`).

Exporter: PyTorch's TorchScript-based exporter (``dynamo=False``). The torch.export-based exporter,
PyTorch's default since 2.9, needs the ``onnxscript`` package, which the ``train`` extra does not
install; the legacy path needs nothing beyond torch and onnx, runs offline, and folds BatchNorm into
the convolutions. Its deprecation warnings are silenced inside :func:`export_localizer` /
:func:`export_detector` only.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vfq import tensors
from vfq.errors import VfqError
from vfq.export.networks import SpineLocalizer, VertebraDetector, network_metadata
from vfq.export.trt_ops import tensorrt_problems

__all__ = [
    "DEFAULT_OPSET",
    "OnnxCheckReport",
    "OnnxMismatchError",
    "OutputAgreement",
    "check_onnx",
    "export_detector",
    "export_localizer",
    "ort_latency",
    "read_onnx_metadata",
]

DEFAULT_OPSET = 17
METADATA_PREFIX = "vfq."
#: Largest accepted ``max |ORT - torch| / output range``.
DEFAULT_TOLERANCE = 1e-4
#: Outputs that are probabilities: their range is taken as at least 1 (the sigmoid's codomain), so
#: that an untrained, nearly constant heatmap does not turn float32 rounding into a large ratio.
PROBABILITY_OUTPUTS = frozenset({tensors.LOCALIZER_OUTPUT, tensors.DETECTOR_HEATMAP})

_EXPORTER_WARNINGS = (
    r".*legacy TorchScript-based ONNX export.*",
    r".*The feature will be removed.*",
)


class OnnxMismatchError(VfqError, AssertionError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


def _export(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: torch.Tensor,
    input_name: str,
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            for message in _EXPORTER_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(target),
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
            )
    finally:
        model.train(was_training)
    proto = onnx.load(str(target))
    meta = network_metadata(model)
    entries = {
        "architecture": meta["architecture"],
        "architecture_version": meta["architecture_version"],
        "config": meta["config"],
        "contract": meta["contract"],
        "version": meta["vfq_version"],
        "opset": opset,
    }
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({METADATA_PREFIX + key: json.dumps(value) for key, value in entries.items()})
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = (
        f"vfq {meta['architecture']} v{meta['architecture_version']}; tensors as in vfq.tensors"
    )
    onnx.save(proto, str(target))
    return target


def export_localizer(
    model: SpineLocalizer,
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    example_shape: Sequence[int] = (1, 1, 32, 32, 32),
) -> Path:
    """Export the localizer to ONNX at ``path``.

    Input ``LOCALIZER_INPUT`` float32 ``[batch, 1, z, y, x]``, output ``LOCALIZER_OUTPUT`` float32
    ``[batch, 1, z, y, x]`` (probabilities); batch and the three spatial axes are dynamic. The model
    is traced in eval mode on an input of ``example_shape`` (any valid shape gives the same graph)
    and left in the mode it came in.
    """
    if not isinstance(model, SpineLocalizer):
        raise TypeError(f"export_localizer needs a SpineLocalizer, got {type(model).__name__}")
    spatial = {0: "batch", 2: "z", 3: "y", 4: "x"}
    return _export(
        model,
        path,
        torch.full(tuple(example_shape), tensors.AIR_INPUT),
        tensors.LOCALIZER_INPUT,
        [tensors.LOCALIZER_OUTPUT],
        {tensors.LOCALIZER_INPUT: spatial, tensors.LOCALIZER_OUTPUT: spatial},
        opset,
    )


def export_detector(
    model: VertebraDetector,
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    example_shape: Sequence[int] = (1, 1, 64, tensors.DETECTOR_WIDTH_PX),
) -> Path:
    """Export the detector to ONNX at ``path``.

    Input ``DETECTOR_INPUT`` float32 ``[batch, 1, s, v]``; outputs ``DETECTOR_HEATMAP``
    ``[batch, 1, s_cells, v_cells]``, ``DETECTOR_OFFSETS`` ``[batch, 12, s_cells, v_cells]`` (input
    pixels) and ``DETECTOR_LEVELS`` ``[batch, 18, s_cells, v_cells]``, ``s_cells = s / 4``; batch
    and spatial axes dynamic. Traced in eval mode; the model is left in the mode it came in.
    """
    if not isinstance(model, VertebraDetector):
        raise TypeError(f"export_detector needs a VertebraDetector, got {type(model).__name__}")
    cells = {0: "batch", 2: "s_cells", 3: "v_cells"}
    outputs = [tensors.DETECTOR_HEATMAP, tensors.DETECTOR_OFFSETS, tensors.DETECTOR_LEVELS]
    return _export(
        model,
        path,
        torch.full(tuple(example_shape), tensors.AIR_INPUT),
        tensors.DETECTOR_INPUT,
        outputs,
        {tensors.DETECTOR_INPUT: {0: "batch", 2: "s", 3: "v"}, **{name: cells for name in outputs}},
        opset,
    )


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``vfq.*`` metadata of an exported graph, prefix stripped and values decoded from JSON."""
    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key[len(METADATA_PREFIX) :]: json.loads(p.value)
        for p in proto.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


@dataclass(frozen=True)
class OutputAgreement:
    """ONNX Runtime vs. PyTorch for one output and one input.

    Attributes:
        name: the output name.
        input_shape: the shape of the input that produced it.
        max_abs_error: ``max |ORT - torch|`` (output units).
        observed_range: ``max - min`` of the PyTorch output.
        value_range: the output range: ``max - min`` of the PyTorch output, at least 1 for the
            probability outputs (:data:`PROBABILITY_OUTPUTS`) and at least 1e-12 for the others.
        relative_error: ``max_abs_error / value_range``.
    """

    name: str
    input_shape: tuple[int, ...]
    max_abs_error: float
    observed_range: float
    value_range: float
    relative_error: float


@dataclass(frozen=True)
class OnnxCheckReport:
    """What :func:`check_onnx` found.

    Attributes:
        path: the ONNX file.
        agreements: one entry per (input, output).
        tolerance: the largest accepted relative error.
        tensorrt_problems: why TensorRT 10 would refuse the graph (:mod:`vfq.export.trt_ops`); empty
            when it should parse.
    """

    path: Path
    agreements: tuple[OutputAgreement, ...]
    tolerance: float
    tensorrt_problems: tuple[str, ...]

    @property
    def max_relative_error(self) -> float:
        """The worst relative error over all outputs and inputs."""
        return max(a.relative_error for a in self.agreements)

    @property
    def ok(self) -> bool:
        """Within tolerance and TensorRT-compatible."""
        return self.max_relative_error <= self.tolerance and not self.tensorrt_problems

    def __str__(self) -> str:
        lines = [
            f"{self.path.name}: max relative error {self.max_relative_error:.2e} "
            f"(tolerance {self.tolerance:.0e})"
        ]
        lines += [
            f"  {a.name} {list(a.input_shape)}: max |Δ| {a.max_abs_error:.2e}, range {a.value_range:.3g} "
            f"(observed {a.observed_range:.3g})"
            for a in self.agreements
        ]
        lines += [f"  TensorRT: {p}" for p in self.tensorrt_problems] or ["  TensorRT: no problems found"]
        return "\n".join(lines)


def _session(path: str | os.PathLike[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    strict: bool = True,
    threads: int = 2,
) -> OnnxCheckReport:
    """Check an exported graph: ``onnx.checker.check_model`` (full check), TensorRT 10 operator and
    type support, and agreement of ONNX Runtime (CPUExecutionProvider) with ``model`` (eval mode)
    on each of ``example_inputs`` — several shapes show that the dynamic axes work.

    Args:
        path: the ONNX file.
        model: the PyTorch network it was exported from.
        example_inputs: one input tensor ``[B, 1, …]`` or several.
        tolerance: largest accepted ``max |ORT - torch| / output range`` (see
            :attr:`OutputAgreement.value_range`).
        strict: raise :class:`OnnxMismatchError` when an output exceeds ``tolerance``.
        threads: ONNX Runtime intra-op threads.

    Returns:
        The report; ``report.ok`` also requires an empty ``tensorrt_problems``.
    """
    target = Path(path)
    proto = onnx.load(str(target))
    onnx.checker.check_model(proto, full_check=True)
    inputs = [example_inputs] if isinstance(example_inputs, torch.Tensor) else list(example_inputs)
    session = _session(target, threads)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    was_training = model.training
    model.eval()
    agreements = []
    try:
        for x in inputs:
            x32 = x.detach().to(torch.float32).cpu()
            with torch.no_grad():
                reference = model(x32)
            refs = reference if isinstance(reference, tuple) else (reference,)
            got = session.run(output_names, {input_name: x32.numpy()})
            if len(got) != len(refs):
                raise OnnxMismatchError(f"{target} has {len(got)} outputs, the model {len(refs)}")
            for name, ref, out in zip(output_names, refs, got):
                ref_np = ref.numpy()
                if out.shape != ref_np.shape:
                    raise OnnxMismatchError(
                        f"{target}: output {name} has shape {out.shape} in ONNX Runtime, "
                        f"{ref_np.shape} in torch"
                    )
                abs_err = float(np.max(np.abs(out.astype(np.float64) - ref_np)))
                floor = 1.0 if name in PROBABILITY_OUTPUTS else 1e-12
                observed = float(ref_np.max() - ref_np.min())
                value_range = max(observed, floor)
                agreements.append(
                    OutputAgreement(
                        name, tuple(x32.shape), abs_err, observed, value_range, abs_err / value_range
                    )
                )
    finally:
        model.train(was_training)
    report = OnnxCheckReport(target, tuple(agreements), tolerance, tuple(tensorrt_problems(proto)))
    if strict and report.max_relative_error > tolerance:
        raise OnnxMismatchError(f"ONNX Runtime disagrees with PyTorch:\n{report}")
    return report


def ort_latency(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    *,
    threads: int = 2,
    repeats: int = 5,
    seed: int = 0,
) -> float:
    """Median wall time (s) of ``repeats`` ONNX Runtime CPU runs of the graph at ``path`` on a random
    float32 input of ``input_shape`` (values in the normalised HU range), after one warm-up run."""
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    low, high = (v * tensors.HU_SCALE for v in tensors.HU_CLIP)
    x = rng.uniform(low, high, size=tuple(input_shape)).astype(np.float32)
    session.run(None, {name: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times)
