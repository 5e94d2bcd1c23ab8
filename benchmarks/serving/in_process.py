"""The pipeline without the server, on the same arrays: the other side of the serving overhead."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vfq.pipeline import Analysis, analyze

from . import REPO
from .figures import Percentiles
from .scans import Scan


@dataclass
class TensorShapes:
    """The network tensors' shapes seen in the in-process run of a scan."""

    localizer_input: tuple[int, ...] = ()
    localizer_output: tuple[int, ...] = ()
    detector_input: tuple[int, ...] = ()
    detector_outputs: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class InProcessLatency:
    """``Networks.analyze`` on one scan: total and per-step medians (s), what it found."""

    scan: str
    slices: int
    latency_s: Percentiles
    steps_s: dict[str, float]
    vertebrae: int
    not_assessable: str | None


class InProcessPipeline:
    """The exported networks on the server's runtime with its thread count, recording tensor shapes."""

    def __init__(self, threads: int, runtime: str) -> None:
        from vfq.export.evaluate import Networks

        self.networks = Networks(REPO / "export" / "weights", threads, runtime)
        self.shapes: dict[str, TensorShapes] = {}

    def analyze(self, scan: Scan) -> Analysis:
        """One run of the pipeline (:func:`vfq.pipeline.analyze` with the two networks)."""
        shapes = self.shapes.setdefault(scan.name, TensorShapes())

        def localizer(tensor: np.ndarray) -> np.ndarray:
            out = self.networks.localizer(tensor)
            shapes.localizer_input, shapes.localizer_output = tensor.shape, out.shape
            return out

        def detector(tensor: np.ndarray) -> list[np.ndarray]:
            outs = self.networks.detector(tensor)
            shapes.detector_input, shapes.detector_outputs = tensor.shape, tuple(o.shape for o in outs)
            return outs

        return analyze(scan.ct, localizer, detector)


def summarize_in_process(scan: Scan, runs: Sequence[tuple[float, Analysis]]) -> InProcessLatency:
    """Wall-clock seconds and per-step medians of ``(seconds, analysis)`` runs of one scan."""
    analyses = [analysis for _, analysis in runs]
    steps = sorted({step for a in analyses for step in a.seconds})
    last = analyses[-1]
    return InProcessLatency(
        scan=scan.name,
        slices=scan.slices,
        latency_s=Percentiles.of([seconds for seconds, _ in runs]),
        steps_s={s: statistics.median(a.seconds[s] for a in analyses if s in a.seconds) for s in steps},
        vertebrae=len(last.vertebrae),
        not_assessable=last.not_assessable,
    )
