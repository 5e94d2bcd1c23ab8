"""What the server tests share: the phantom they send, the in-process reference, a raw infer call,
the metrics as Prometheus samples."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from vfq.export.evaluate import Networks
from vfq.genant import FractureType
from vfq.levels import Level
from vfq.phantoms import Acquisition, PhantomSpec, SpineShape
from vfq.phantoms.anatomy import Fracture
from vfq.phantoms.generate import FieldOfView
from vfq.pipeline import Analysis
from vfq.tensors import CT_INPUT, PIPELINE_MODEL, PIPELINE_OUTPUTS, SPACING_INPUT
from vfq.volume import CTVolume

WEIGHTS = Path(__file__).resolve().parents[2] / "export" / "weights"

#: 384 × 384 × 174 voxels (0.9 × 0.9 × 2 mm): small enough for many requests, T10 to the sacrum.
FRACTURED_SPEC = PhantomSpec(
    seed=4242,
    field_of_view=FieldOfView.ABDOMEN,
    shape=SpineShape(scoliosis=12),
    fractures=(
        Fracture(Level.L1, FractureType.WEDGE, 0.32),
        Fracture(Level.L4, FractureType.BICONCAVE, 0.22),
    ),
    acquisition=Acquisition(spacing=(2.0, 0.9, 0.9), slice_thickness=2.0, matrix=(384, 384)),
)


class InProcess:
    """The offline pipeline (:func:`vfq.pipeline.analyze`) on the shipped ONNX weights."""

    def __init__(self) -> None:
        self.networks = Networks(WEIGHTS)

    def analyze(self, ct: CTVolume) -> Analysis:
        return self.networks.analyze(ct)


def infer(url: str, ct: np.ndarray, spacing, timeout_s: float = 120.0) -> dict[str, np.ndarray]:
    """One ``vertebra_pipeline`` request with tritonclient; the outputs by name."""
    with grpcclient.InferenceServerClient(url) as client:
        inputs = [
            grpcclient.InferInput(CT_INPUT, list(ct.shape), grpcclient.np_to_triton_dtype(ct.dtype)),
            grpcclient.InferInput(SPACING_INPUT, [3], "FP32"),
        ]
        inputs[0].set_data_from_numpy(ct)
        inputs[1].set_data_from_numpy(np.asarray(spacing, np.float32))
        result = client.infer(
            PIPELINE_MODEL,
            inputs,
            outputs=[grpcclient.InferRequestedOutput(name) for name in PIPELINE_OUTPUTS],
            client_timeout=timeout_s,
        )
        return {name: result.as_numpy(name) for name in PIPELINE_OUTPUTS}


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample on the server's metrics port: ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
