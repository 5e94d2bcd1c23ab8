"""The arithmetic of the figures: percentiles, and per-request means from the server's cumulative
counters (Triton's statistics API, our step metric in Prometheus text). Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from vfq.tensors import (
    DECODER_MODEL,
    DETECTOR_MODEL,
    LOCALIZER_MODEL,
    PIPELINE_MODEL,
    PREPROCESS_MODEL,
    STRAIGHTEN_MODEL,
)

#: The served step (Triton model) → the in-process step of :func:`vfq.pipeline.analyze`.
IN_PROCESS_STEP = {
    PREPROCESS_MODEL: "preprocess",
    LOCALIZER_MODEL: "localizer",
    STRAIGHTEN_MODEL: "straighten",
    DETECTOR_MODEL: "detector",
    DECODER_MODEL: "decode",
}
ENSEMBLE = PIPELINE_MODEL
#: Triton statistics fields (``inference_stats``) the breakdown reads.
TRITON_FIELDS = ("success", "queue", "compute_input", "compute_infer", "compute_output")
STEP_METRIC = "vfq_step_duration_seconds"
Counters = dict[str, tuple[float, float]]
"""Cumulative counters by key: ``(total, count)`` (ns or s, and the number of events)."""


@dataclass(frozen=True)
class Percentiles:
    """Order statistics of ``n`` samples (seconds), linear interpolation between ranks.

    With few samples p95 and p99 lie between the two largest ones: read them with ``n``.
    """

    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        if not samples:
            raise ValueError("percentiles of no samples")
        p50, p90, p95, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 90, 95, 99])
        return cls(len(samples), float(p50), float(p90), float(p95), float(p99), min(samples), max(samples))


def triton_counters(statistics_json: Mapping[str, Any]) -> Counters:
    """``{"model/field": (ns, count)}`` from ``get_inference_statistics(as_json=True)``.

    The JSON writes 64-bit integers as strings and leaves out zero fields; both are handled.
    """
    counters: Counters = {}
    for model in statistics_json.get("model_stats", []):
        stats = model.get("inference_stats", {})
        for name in TRITON_FIELDS:
            entry = stats.get(name, {})
            counters[f"{model['name']}/{name}"] = (float(entry.get("ns", 0)), float(entry.get("count", 0)))
    return counters


def step_metric_counters(metrics_text: str, family: str = STEP_METRIC) -> Counters:
    """``{step: (seconds, count)}`` of the histogram ``family`` in a Prometheus text exposition."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for metric in text_string_to_metric_families(metrics_text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            step = sample.labels.get("step", "")
            if sample.name == f"{family}_sum":
                sums[step] = sample.value
            elif sample.name == f"{family}_count":
                counts[step] = sample.value
    return {step: (sums.get(step, 0.0), counts[step]) for step in counts}


def counters_delta(before: Counters, after: Counters) -> Counters:
    """``after - before`` key by key (a key missing before counts from zero)."""
    return {
        key: (total - before.get(key, (0.0, 0.0))[0], count - before.get(key, (0.0, 0.0))[1])
        for key, (total, count) in after.items()
    }


def per_event(counters: Counters, scale: float = 1.0) -> dict[str, float]:
    """Mean per event of each counter, times ``scale`` (``1e-9`` turns ns into s); keys without
    events are left out."""
    return {key: total / count * scale for key, (total, count) in counters.items() if count > 0}


@dataclass(frozen=True)
class Snapshot:
    """The server's cumulative counters at one moment."""

    triton: Counters
    steps: Counters


def requests_counted(before: Snapshot, after: Snapshot) -> float:
    """How many requests the counters of ``after`` hold beyond those of ``before``: the fewest events
    any of the ensemble's and steps' ``success`` counts and step metrics gained."""
    keys = [f"{model}/success" for model in (ENSEMBLE, *IN_PROCESS_STEP)]
    gained = [count for key, (_, count) in counters_delta(before.triton, after.triton).items() if key in keys]
    gained += [count for _, count in counters_delta(before.steps, after.steps).values()]
    return min(gained, default=0.0)


def server_split(triton_s: Mapping[str, float], metric_s: Mapping[str, float]) -> dict[str, float]:
    """Where one request's server time went besides the steps' own code (s).

    Args:
        triton_s: ``{"model/field": seconds}`` of the request (Triton's statistics).
        metric_s: ``{step: seconds}`` of the request (``vfq_step_duration_seconds``).

    Returns:
        ``tensors``: moving tensors into and out of the steps (Σ compute input + output);
        ``backend``: the python backend around the steps' code (Σ compute infer − step metric);
        ``scheduling``: the ensemble's own work (ensemble success − Σ the steps' four fields).
    """

    def total(*names: str) -> float:
        return sum(triton_s.get(f"{model}/{name}", 0.0) for model in IN_PROCESS_STEP for name in names)

    steps = total("queue", "compute_input", "compute_infer", "compute_output")
    return {
        "tensors": total("compute_input", "compute_output"),
        "backend": total("compute_infer") - sum(metric_s.get(model, 0.0) for model in IN_PROCESS_STEP),
        "scheduling": triton_s.get(f"{ENSEMBLE}/success", 0.0) - steps,
    }
