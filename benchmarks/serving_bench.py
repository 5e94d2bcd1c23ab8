"""Latency, throughput and where the time goes, through the real server (the embedded Triton).

Starts one :class:`vfq.server.embedded.EmbeddedServer`, sends whole-spine phantoms of 512×512×N slices
(0.7×0.7×1 mm) and the two real scans of ``tests/data/real`` with :class:`vfq.client.VfqClient` over
plain gRPC, gRPC with system shared memory and gRPC with gzip, and runs the same arrays through the
in-process pipeline (``Networks.analyze``, the code the server's steps call). Prints, and writes to
``OUT/results.json``:

* latency percentiles per scan and transport, from the array in the client's memory to the result in
  the client's memory, and the serving overhead (served p50 / in-process p50);
* where the time goes: reading the CT from disk, the client's own work, the call, and per ensemble
  step Triton's statistics (queue, compute input / infer / output), our ``vfq_step_duration_seconds``
  metric and the in-process step time;
* the floor: each step's FLOPs and bytes on the reference scan's real tensor shapes over a matmul
  rate and a copy bandwidth measured in the same run;
* throughput and latency against the number of concurrent clients, with the server's peak memory,
  over shared memory (clients on the server's host) and plain gRPC (clients elsewhere);
* each target with its measured value, PASS or MISS.

Run (``benchmarks/README.md`` explains every figure)::

    .venv/bin/python benchmarks/serving_bench.py --out out/bench [--quick] [--repeats N]
        [--sizes 100,300,600] [--concurrency 1,2,4,8] [--sweep-transports grpc+shm,grpc] [--full] [--record]
        [--compare benchmarks/results/latest.json]

Times are seconds in the data, milliseconds where printed; latency figures are medians unless named.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from timing import median_seconds

from vfq.client import StudyResult, VfqClient
from vfq.phantoms import Acquisition, FieldOfView, build_anatomy, field_of_view_geometry, render, sample_spec
from vfq.pipeline import Analysis, analyze
from vfq.runtime import DEFAULT_RUNTIME, SERVED_RUNTIME_PARAMETER, SERVED_THREADS, SERVED_THREADS_PARAMETER
from vfq.server.embedded import ALLOCATORS, EmbeddedServer
from vfq.tensors import (
    DECODER_MODEL,
    DETECTOR_MODEL,
    DETECTOR_PIXEL_MM,
    DETECTOR_SLAB_MM,
    LOCALIZER_MODEL,
    PIPELINE_MODEL,
    PREPROCESS_MODEL,
    STRAIGHTEN_MODEL,
)
from vfq.volume import CTVolume

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_SCHEMA = "vfq-serving-bench/1"
BASELINE = BENCH_DIR / "results" / "latest.json"
README = BENCH_DIR / "README.md"
MARK_BEGIN, MARK_END = "<!-- results:begin -->", "<!-- results:end -->"

#: Phantom acquisition (DESIGN §3's reference CT): 0.7×0.7 mm pixels, 1 mm slices, 512×512 matrix.
PHANTOM_SPACING_MM = (1.0, 0.7, 0.7)
PHANTOM_MATRIX = (512, 512)
PHANTOM_SEED = 1
REAL_SCANS = (
    REPO / "tests/data/real/lumbar_ct_3mm/ct.nii.gz",
    REPO / "tests/data/real/thoracolumbar_dicom_20slices",
)
#: The scan the breakdown, the floor and the concurrency sweep use (or the largest phantom run).
REFERENCE_SLICES = 300
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
#: Targets.
OVERHEAD_TARGET = 1.15
SCALING_TARGET = 2.2
SPEEDUP_AT_2_TARGET = 1.6
#: "No collapse": throughput at the highest concurrency keeps this share of the best lower level.
NO_COLLAPSE_SHARE = 0.9
#: "Memory bounded": the server's peak PSS at the most clients stays within this multiple of its peak
#: with one client, in every sweep (what waits in a queue must not pile up in the server).
MEMORY_GROWTH_TARGET = 1.25
#: ``--compare``: a p50 latency above this multiple, or a throughput below this share, of the recorded.
LATENCY_REGRESSION = 1.25
THROUGHPUT_REGRESSION = 0.8
REQUEST_TIMEOUT_S = 600.0
MEMORY_PERIOD_S = 0.2
#: :class:`MemorySampler` reads the PSS again when the summed RSS exceeds this multiple of its value
#: at the last reading.
PSS_REREAD_GROWTH = 1.01
#: Modules the run needs beyond the client, and what for.
REQUIREMENTS = {
    "pytriton": "the embedded Triton: pip install --no-deps nvidia-pytriton",
    "onnxruntime": "the in-process pipeline: the server extra",
    "torch": "the networks' FLOP count: the train extra",
}

Counters = dict[str, tuple[float, float]]
"""Cumulative counters by key: ``(total, count)`` (ns or s, and the number of events)."""


class Transport(Enum):
    """How the CT travels to the server."""

    GRPC = "grpc"
    SHARED_MEMORY = "grpc+shm"
    GZIP = "grpc+gzip"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`vfq.client.VfqClient` for this transport."""
        return {
            "shared_memory": self is Transport.SHARED_MEMORY,
            "compression": "gzip" if self is Transport.GZIP else None,
        }


#: The transport of every sweep level in results files that do not name one (shared memory only).
SWEEP_TRANSPORT_BEFORE = Transport.SHARED_MEMORY.value


# ---------------------------------------------------------------------------------------------------
# Pure arithmetic (tested in tests/benchmarks/test_serving_bench.py)


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
class Comparison:
    """One figure against the recorded baseline."""

    figure: str
    baseline: float
    current: float
    regressed: bool

    @property
    def ratio(self) -> float:
        return self.current / self.baseline if self.baseline else math.inf


def compare(
    current: Mapping[str, Any],
    baseline: Mapping[str, Any],
    latency_factor: float = LATENCY_REGRESSION,
    throughput_factor: float = THROUGHPUT_REGRESSION,
) -> list[Comparison]:
    """Every p50 latency and throughput present in both results files (``results.json`` dicts).

    A latency regressed when it is above ``latency_factor`` × the baseline's p50 and above the
    baseline's slowest request of that figure: a p50 that the baseline's own requests reached is
    that figure's spread, not a change (plain gRPC of the 600-slice scan spread 1.9–4.8 s in one
    recorded run on the reference machine). A throughput regressed when it is below
    ``throughput_factor`` × the baseline's.
    """

    def latencies(results: Mapping[str, Any]) -> dict[str, float]:
        return {f"p50 {e['scan']} {e['transport']}": e["latency_s"]["p50"] for e in results["latency"]}

    slowest = {
        f"p50 {e['scan']} {e['transport']}": e["latency_s"].get("max", e["latency_s"]["p50"])
        for e in baseline["latency"]
    }

    def throughputs(results: Mapping[str, Any]) -> dict[str, float]:
        return {
            f"throughput {c.get('transport', SWEEP_TRANSPORT_BEFORE)} at {c['threads']}": c[
                "throughput_per_s"
            ]
            for c in results["concurrency"]
        }

    comparisons = []
    for extract, slower in ((latencies, True), (throughputs, False)):
        now, then = extract(current), extract(baseline)
        for figure in (f for f in now if f in then):
            regressed = (
                now[figure] > max(latency_factor * then[figure], slowest[figure])
                if slower
                else now[figure] < throughput_factor * then[figure]
            )
            comparisons.append(Comparison(figure, then[figure], now[figure], regressed))
    return comparisons


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An aligned plain-text table (first column left, the others right)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_marked(text: str, block: str) -> str:
    """``text`` with everything between :data:`MARK_BEGIN` and :data:`MARK_END` replaced by ``block``."""
    start, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {MARK_BEGIN} … {MARK_END} are missing or out of order")
    return f"{text[: start + len(MARK_BEGIN)]}\n{block.strip()}\n{text[end:]}"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a table (``-`` when unknown)."""
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.1f}"


# ---------------------------------------------------------------------------------------------------
# The machine, and what it can do at best


def machine() -> dict[str, Any]:
    """Cores, CPU model, RAM (GiB) and the load average when the run starts (a busy machine shows)."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), ""
    )
    meminfo = Path("/proc/meminfo").read_text(encoding="utf-8") if Path("/proc/meminfo").exists() else ""
    ram_kib = next((int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal")), 0)
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "ram_gib": round(ram_kib / 2**20, 1),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def git_commit() -> str:
    """The short commit, with ``+dirty`` when the tree has changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


_MATMUL_SNIPPET = """
import time, numpy as np
n = {n}
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
b = a.copy()
a @ b
times = []
for _ in range(5):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
print(2 * n**3 / min(times))
"""


def matmul_flops_per_core(n: int = 1536) -> float:
    """FLOP/s of a float32 ``n×n`` matmul on one thread (best of 5), in a child process whose BLAS is
    limited to one thread."""
    one_thread = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", _MATMUL_SNIPPET.format(n=n)],
        env={**os.environ, **one_thread},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def copy_bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Bytes moved per second (read + written) by one thread copying ``nbytes`` (best of 5)."""
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.zeros_like(source)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / min(times)


# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Scan:
    """A CT to send: a phantom of ``slices`` slices or a real scan."""

    name: str
    ct: CTVolume
    phantom: bool

    @property
    def slices(self) -> int:
        return int(self.ct.array.shape[0])


def phantom_scan(slices: int, cache: Path) -> Scan:
    """The whole-spine phantom of ``slices`` 512×512 slices. Its geometry comes from its spec (a few
    ms); its pixels are rendered once and kept in ``cache`` as ``.npy``."""
    acquisition = Acquisition(
        spacing=PHANTOM_SPACING_MM,
        slice_thickness=PHANTOM_SPACING_MM[0],
        matrix=PHANTOM_MATRIX,
        n_slices=slices,
    )
    anatomy = build_anatomy(
        sample_spec(PHANTOM_SEED, field_of_view=FieldOfView.WHOLE_SPINE, acquisition=acquisition)
    )
    geometry = field_of_view_geometry(anatomy)
    path = cache / f"phantom_{PHANTOM_SEED}_{'x'.join(map(str, geometry.shape))}.npy"
    if path.is_file():
        return Scan(f"phantom {slices}", CTVolume(np.load(path), geometry), phantom=True)
    ct, _ = render(anatomy, geometry)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, ct.array)
    return Scan(f"phantom {slices}", ct, phantom=True)


def real_scans() -> list[Scan]:
    """The two real CTs of ``tests/data/real``, read (LPS, int16 HU)."""
    from vfq.io import read_ct  # SimpleITK on use: the GPU check imports this module without it

    return [
        Scan(f"real {path.parent.name if path.is_file() else path.name}", read_ct(path), False)
        for path in REAL_SCANS
    ]


def read_times(scan: Scan, cache: Path, repeats: int = 3) -> dict[str, float]:
    """Median seconds of ``read_ct`` (read + reorient to LPS, warm page cache) of ``scan`` written as
    ``.nii.gz``, ``.nii`` and a DICOM series (written once under ``cache``)."""
    from vfq.io import read_ct
    from vfq.phantoms.writers import write_dicom_series, write_nifti

    folder = cache / f"read_{scan.slices}"
    files = {"nii.gz": folder / "ct.nii.gz", "nii": folder / "ct.nii", "dicom": folder / "dicom"}
    if not all(path.exists() for path in files.values()):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_nifti(scan.ct, files["nii.gz"])
        write_nifti(scan.ct, files["nii"], compress=False)
        write_dicom_series(scan.ct, files["dicom"], PHANTOM_SEED, scan.ct.geometry.spacing[0])
    return {name: median_seconds(lambda p=path: read_ct(p), repeats) for name, path in files.items()}


# ---------------------------------------------------------------------------------------------------
# In-process pipeline


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


# ---------------------------------------------------------------------------------------------------
# Served requests


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


class ServerProbe:
    """Reads the server's statistics API (gRPC) and its Prometheus metrics."""

    def __init__(self, grpc_url: str, metrics_url: str) -> None:
        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.metrics_url = metrics_url

    def snapshot(self) -> Snapshot:
        stats = self.client.get_inference_statistics(as_json=True)
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        return Snapshot(triton_counters(stats), step_metric_counters(text))

    def settled(self, before: Snapshot, requests: int, timeout_s: float = 10.0) -> Snapshot:
        """The counters once they hold the ``requests`` answered since ``before``: Triton records a
        request's statistics just after answering it, so a snapshot taken at once can miss it and
        the next request's delta would hold two."""
        deadline = time.monotonic() + timeout_s
        after = self.snapshot()
        while requests_counted(before, after) < requests:
            if time.monotonic() > deadline:
                print(
                    f"  warning: the server's counters miss some of {requests} requests after {timeout_s:g} s"
                )
                break
            time.sleep(0.01)
            after = self.snapshot()
        return after

    def close(self) -> None:
        self.client.close()

    def triton_version(self) -> str:
        return str(self.client.get_server_metadata(as_json=True)["version"])

    def network_settings(self) -> tuple[str, int]:
        """The runtime and the threads of each served localizer instance (its config's parameters)."""
        config = self.client.get_model_config(LOCALIZER_MODEL, as_json=True)["config"]
        parameters = config.get("parameters", {})
        runtime = parameters.get(SERVED_RUNTIME_PARAMETER, {}).get("string_value", DEFAULT_RUNTIME)
        threads = parameters.get(SERVED_THREADS_PARAMETER, {}).get("string_value", SERVED_THREADS)
        return runtime, int(threads)


@dataclass(frozen=True)
class StepTimes:
    """One served step, medians per request (s): Triton's statistics and our step metric."""

    queue: float
    compute_input: float
    compute_infer: float
    compute_output: float
    metric: float


@dataclass(frozen=True)
class ServedLatency:
    """Sequential requests of one scan over one transport.

    Attributes:
        latency_s: array in the client's memory → result in the client's memory.
        call_s: median of ``VfqClient``'s ``request`` time (the gRPC call: serialize, transfer, server,
            answer).
        shared_memory_copy_s: median time to copy the CT into the shared-memory region (shm only).
        server_s: median time Triton spent on the ensemble request (statistics API, ``success``).
        steps: per ensemble step.
        server_split_s: medians of :func:`server_split` per request.
    """

    scan: str
    slices: int
    transport: str
    latency_s: Percentiles
    call_s: float
    shared_memory_copy_s: float | None
    server_s: float
    steps: dict[str, StepTimes]
    server_split_s: dict[str, float]
    vertebrae: int
    not_assessable: str | None


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


@dataclass
class RequestLog:
    """What each request of one scan and transport measured."""

    latency: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    shm_copy: list[float] = field(default_factory=list)
    triton: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)
    last: StudyResult | None = None

    def add(self, latency: float, result: StudyResult, before: Snapshot, after: Snapshot) -> None:
        self.latency.append(latency)
        self.call.append(result.seconds["request"])
        if "shared_memory_copy" in result.seconds:
            self.shm_copy.append(result.seconds["shared_memory_copy"])
        self.triton.append(per_event(counters_delta(before.triton, after.triton), 1e-9))
        self.steps.append(per_event(counters_delta(before.steps, after.steps)))
        self.last = result

    def summary(self, scan: Scan, transport: Transport) -> ServedLatency:
        def med(values: Iterable[float | None]) -> float:
            present = [v for v in values if v is not None]
            return statistics.median(present) if present else math.nan

        assert self.last is not None, "no request was logged"

        def triton(model: str, name: str) -> float:
            return med(t.get(f"{model}/{name}") for t in self.triton)

        steps = {
            model: StepTimes(
                queue=triton(model, "queue"),
                compute_input=triton(model, "compute_input"),
                compute_infer=triton(model, "compute_infer"),
                compute_output=triton(model, "compute_output"),
                metric=med(s.get(model) for s in self.steps),
            )
            for model in IN_PROCESS_STEP
        }
        return ServedLatency(
            scan=scan.name,
            slices=scan.slices,
            transport=transport.value,
            latency_s=Percentiles.of(self.latency),
            call_s=statistics.median(self.call),
            shared_memory_copy_s=statistics.median(self.shm_copy) if self.shm_copy else None,
            server_s=triton(ENSEMBLE, "success"),
            steps=steps,
            server_split_s={
                part: med(server_split(t, m)[part] for t, m in zip(self.triton, self.steps))
                for part in ("tensors", "backend", "scheduling")
            },
            vertebrae=len(self.last.vertebrae),
            not_assessable=self.last.not_assessable,
        )


def timed_request(client: VfqClient, scan: Scan) -> tuple[float, StudyResult]:
    """Seconds from the array in memory to the result in memory, and the result."""
    start = time.perf_counter()
    result = client.analyze_array(scan.ct.array, scan.ct.geometry, scan.name)
    return time.perf_counter() - start, result


def measure_scan(
    scan: Scan,
    transports: Sequence[Transport],
    clients: Mapping[Transport, VfqClient],
    pipeline: InProcessPipeline,
    probe: ServerProbe,
    repeats: int,
) -> tuple[list[ServedLatency], InProcessLatency]:
    """``repeats`` rounds of one in-process run and one request per transport, interleaved so that a
    slower moment of a noisy machine falls on every mode alike. Counters are read around each request."""
    logs = {t: RequestLog() for t in transports}
    analyses = []
    for _ in range(repeats):
        start = time.perf_counter()
        analysis = pipeline.analyze(scan)
        analyses.append((time.perf_counter() - start, analysis))
        for transport in transports:
            before = probe.snapshot()
            latency, result = timed_request(clients[transport], scan)
            logs[transport].add(latency, result, before, probe.settled(before, 1))
    return [logs[t].summary(scan, t) for t in transports], summarize_in_process(scan, analyses)


# ---------------------------------------------------------------------------------------------------
# Concurrency


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_memory_kib(root: int) -> tuple[int, int]:
    """Sum of ``VmRSS`` and of ``RssAnon`` (KiB) over the process tree of ``root``, from
    ``/proc/<pid>/status`` (cheap: about 0.3 ms for the server's tree). A page that n processes map
    (the python backend's shared memory) counts n times in ``VmRSS``."""
    rss, anon = _tree_sum_kib(root, "status", ("VmRSS", "RssAnon"))
    return rss, anon


def tree_pss_kib(root: int) -> int:
    """Sum of ``Pss`` (KiB) over the process tree of ``root``, from ``/proc/<pid>/smaps_rollup``: a
    page that n processes map counts 1/n in each, so the sum is what the tree holds. Costly — the
    kernel walks every mapping, 12 ms for the idle server's tree, holding each process's memory map
    lock meanwhile —, so :class:`MemorySampler` reads it only when the RSS grows."""
    return _tree_sum_kib(root, "smaps_rollup", ("Pss",))[0]


def _tree_sum_kib(root: int, proc_file: str, keys: Sequence[str]) -> list[int]:
    """Per key, the sum over the process tree of ``root`` of the ``key: N kB`` lines of
    ``/proc/<pid>/<proc_file>``; a process that exits meanwhile counts 0."""
    totals = dict.fromkeys(keys, 0)
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/{proc_file}").read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value.split()[0])
    return [totals[key] for key in keys]


class MemorySampler:
    """Samples :func:`tree_memory_kib` every ``period_s`` in a thread and keeps the peaks (MiB); reads
    :func:`tree_pss_kib` only when the summed RSS has grown by :data:`PSS_REREAD_GROWTH` since its
    last reading (read every period it slowed the sweep it measured: 2.7-3.0 instead of 3.1-3.3
    scans/s at two clients), so the PSS peak is the PSS at the RSS peaks, within that growth."""

    def __init__(self, root: int, period_s: float = MEMORY_PERIOD_S) -> None:
        self.root, self.period_s = root, period_s
        self.peak_rss_mib = self.peak_pss_mib = self.peak_anon_mib = 0.0
        self._rss_at_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, anon = tree_memory_kib(self.root)
            self.peak_rss_mib = max(self.peak_rss_mib, rss / 1024)
            self.peak_anon_mib = max(self.peak_anon_mib, anon / 1024)
            if rss > self._rss_at_pss_kib * PSS_REREAD_GROWTH:
                self._rss_at_pss_kib = rss
                self.peak_pss_mib = max(self.peak_pss_mib, tree_pss_kib(self.root) / 1024)
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class ConcurrencyLevel:
    """``threads`` clients on ``transport`` (a :class:`Transport` value), each sending
    ``requests / threads`` scans back to back.

    Attributes:
        wall_s: from the start of the first timed request to the end of the last.
        throughput_per_s: successful scans per second over ``wall_s``.
        latency_s: per-request latency of the successful requests.
        queue_s: mean time a request (the untimed first ones included) waited in the steps' queues
            (sum over steps, Triton statistics).
        peak_rss_mib, peak_pss_mib, peak_anon_mib: peaks of the server tree's memory
            (:class:`MemorySampler`; PSS is what it holds).
    """

    threads: int
    transport: str
    requests: int
    errors: int
    wall_s: float
    throughput_per_s: float
    latency_s: Percentiles | None
    queue_s: float
    peak_rss_mib: float
    peak_pss_mib: float
    peak_anon_mib: float


def run_concurrency(
    url: str,
    scan: Scan,
    threads: int,
    per_thread: int,
    probe: ServerProbe,
    server_pid: int,
    transport: Transport = Transport.SHARED_MEMORY,
) -> ConcurrencyLevel:
    """One level of a sweep. Each thread first sends one untimed request (on shared memory, its region
    is created and touched), then all start together. Any exception of a request counts as an error."""
    start_line = threading.Barrier(threads + 1, timeout=REQUEST_TIMEOUT_S)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def request(client: VfqClient) -> float | None:
        try:
            return timed_request(client, scan)[0]
        except Exception as error:  # an error of any kind is what the sweep counts
            with lock:
                errors.append(f"{type(error).__name__}: {error}")
            return None

    def worker() -> None:
        with VfqClient(url, timeout_s=REQUEST_TIMEOUT_S, retries=0, **transport.client_options()) as client:
            request(client)
            start_line.wait()
            for _ in range(per_thread):
                latency = request(client)
                if latency is not None:
                    with lock:
                        latencies.append(latency)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    before = probe.snapshot()
    for worker_thread in workers:
        worker_thread.start()
    with MemorySampler(server_pid) as memory:
        start_line.wait()
        start = time.perf_counter()
        for worker_thread in workers:
            worker_thread.join()
        wall = time.perf_counter() - start
    after = probe.settled(before, threads * (per_thread + 1) - len(errors))
    queue = per_event(counters_delta(before.triton, after.triton), 1e-9)
    for message in errors[:3]:
        print(f"  error at {threads} threads, {transport.value}: {message}")
    return ConcurrencyLevel(
        threads=threads,
        transport=transport.value,
        requests=threads * per_thread,
        errors=len(errors),
        wall_s=wall,
        throughput_per_s=len(latencies) / wall,
        latency_s=Percentiles.of(latencies) if latencies else None,
        queue_s=sum(queue.get(f"{model}/queue", 0.0) for model in IN_PROCESS_STEP),
        peak_rss_mib=memory.peak_rss_mib,
        peak_pss_mib=memory.peak_pss_mib,
        peak_anon_mib=memory.peak_anon_mib,
    )


# ---------------------------------------------------------------------------------------------------
# The floor


@dataclass(frozen=True)
class StepFloor:
    """The least time a step can take on this machine: its FLOPs over the matmul rate of the cores it
    uses, or its bytes over the copy bandwidth, whichever is larger; next to what it took (s)."""

    step: str
    flop: float
    bytes_moved: float
    floor_s: float
    served_s: float | None
    in_process_s: float | None


def network_macs(shapes: TensorShapes) -> tuple[int, int]:
    """Multiply-adds of the localizer and the detector on these input shapes
    (:func:`vfq.export.networks.describe` on the shipped checkpoints; needs torch)."""
    from vfq.export.networks import describe, load_checkpoint

    weights = REPO / "export" / "weights"
    localizer = load_checkpoint(weights / "spine_localizer.pt").model
    detector = load_checkpoint(weights / "vertebra_detector.pt").model
    return describe(localizer, shapes.localizer_input).macs, describe(detector, shapes.detector_input).macs


def step_floors(
    scan: Scan,
    shapes: TensorShapes,
    macs: tuple[int, int],
    compute: Mapping[str, float],
    served: ServedLatency,
    in_process: InProcessLatency,
) -> list[StepFloor]:
    """Floors of the transfer and of each step on ``scan``.

    Bytes each must move at least: the transfer copies the int16 CT once; preprocess reads it and
    writes the float32 coarse grid; the localizer reads that grid and writes its heatmap; straighten
    reads the CT voxels its slab passes through (slab volume / voxel volume, int16) and writes the
    float32 detector input; the detector reads it and writes its outputs; the decoder reads those.
    """

    def floats(*shape_list: tuple[int, ...]) -> float:
        return 4.0 * sum(math.prod(s) for s in shape_list)

    ct_bytes = float(scan.ct.array.nbytes)
    voxel_mm3 = math.prod(scan.ct.geometry.spacing)
    slab_mm3 = math.prod(shapes.detector_input[-2:]) * DETECTOR_PIXEL_MM**2 * DETECTOR_SLAB_MM
    work = {  # step: (FLOP, bytes moved)
        "transfer": (0.0, 2 * ct_bytes),
        PREPROCESS_MODEL: (0.0, ct_bytes + floats(shapes.localizer_input)),
        LOCALIZER_MODEL: (2.0 * macs[0], floats(shapes.localizer_input, shapes.localizer_output)),
        STRAIGHTEN_MODEL: (0.0, 2 * slab_mm3 / voxel_mm3 + floats(shapes.detector_input)),
        DETECTOR_MODEL: (2.0 * macs[1], floats(shapes.detector_input, *shapes.detector_outputs)),
        DECODER_MODEL: (0.0, floats(*shapes.detector_outputs)),
    }
    flops = compute["matmul_flop_per_s_per_core"] * compute["network_threads"]
    floors = []
    for step, (flop, nbytes) in work.items():
        if step == "transfer":
            measured, local = served.latency_s.p50 - served.server_s, None
        else:
            measured, local = served.steps[step].metric, in_process.steps_s.get(IN_PROCESS_STEP[step])
        floor = max(flop / flops, nbytes / compute["copy_bytes_per_s"])
        floors.append(StepFloor(step, flop, nbytes, floor, measured, local))
    return floors


# ---------------------------------------------------------------------------------------------------
# Targets, report, plot


@dataclass(frozen=True)
class TargetCheck:
    """One target: its measured value, and PASS / MISS (``n/a`` when this run could not measure it)."""

    name: str
    target: str
    value: float | None
    passed: bool | None

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else "PASS" if self.passed else "MISS"


def check_targets(
    latency: Sequence[ServedLatency],
    in_process: Sequence[InProcessLatency],
    sweep: Sequence[ConcurrencyLevel],
) -> list[TargetCheck]:
    """The serving overhead and scaling on the reference phantom, the concurrency targets (the
    speed-up and "no collapse" on the shared-memory sweep; errors and memory growth in every sweep)."""
    shm = {
        e.slices: e.latency_s.p50
        for e in latency
        if e.transport == Transport.SHARED_MEMORY.value and "phantom" in e.scan
    }
    local = {e.slices: e.latency_s.p50 for e in in_process if "phantom" in e.scan}
    reference = REFERENCE_SLICES if REFERENCE_SLICES in shm else max(shm, default=None)
    overhead = shm[reference] / local[reference] if reference is not None else None
    scaling = shm[600] / shm[300] if 600 in shm and 300 in shm else None
    by_threads = {level.threads: level for level in sweep if level.transport == Transport.SHARED_MEMORY.value}
    speedup = (
        by_threads[2].throughput_per_s / by_threads[1].throughput_per_s
        if 1 in by_threads and 2 in by_threads and by_threads[1].throughput_per_s
        else None
    )
    top = max(by_threads, default=None)
    best_below = max((lv.throughput_per_s for t, lv in by_threads.items() if t != top), default=None)
    kept = (  # judged from three levels on (with two it would repeat the speed-up)
        by_threads[top].throughput_per_s / best_below if len(by_threads) >= 3 and best_below else None
    )
    errors = sum(level.errors for level in sweep)
    growth = [
        levels[-1].peak_pss_mib / levels[0].peak_pss_mib
        for levels in (
            sorted((lv for lv in sweep if lv.transport == t), key=lambda lv: lv.threads)
            for t in {lv.transport for lv in sweep}
        )
        if len(levels) >= 2 and levels[0].threads == 1 and levels[0].peak_pss_mib
    ]

    def check(name: str, target: str, value: float | None, ok: Callable[[float], bool]) -> TargetCheck:
        return TargetCheck(name, target, value, None if value is None else ok(value))

    return [
        check(
            "serving overhead, shm" + (f", {reference} slices" if reference is not None else ""),
            f"<= {OVERHEAD_TARGET}",
            overhead,
            lambda v: v <= OVERHEAD_TARGET,
        ),
        check(
            "throughput at 2 / at 1 client",
            f">= {SPEEDUP_AT_2_TARGET}",
            speedup,
            lambda v: v >= SPEEDUP_AT_2_TARGET,
        ),
        check(
            f"throughput at {top} / best below",
            f">= {NO_COLLAPSE_SHARE}",
            kept,
            lambda v: v >= NO_COLLAPSE_SHARE,
        ),
        check("errors in the concurrency sweeps", "= 0", float(errors) if sweep else None, lambda v: v == 0),
        check(
            "server memory (PSS) at most / at 1 client",
            f"<= {MEMORY_GROWTH_TARGET}",
            max(growth, default=None),
            lambda v: v <= MEMORY_GROWTH_TARGET,
        ),
        check(
            "latency 600 / 300 slices, shm", f"<= {SCALING_TARGET}", scaling, lambda v: v <= SCALING_TARGET
        ),
    ]


def print_latency(latency: Sequence[ServedLatency], in_process: Sequence[InProcessLatency]) -> None:
    """Percentiles per scan and transport, and the ratio to the in-process pipeline."""
    local = {e.scan: e for e in in_process}
    rows = []
    for e in latency:
        p = e.latency_s
        ratio = p.p50 / local[e.scan].latency_s.p50
        rows.append(
            [
                e.scan,
                e.transport,
                p.n,
                ms(p.p50),
                ms(p.p90),
                ms(p.p95),
                ms(p.p99),
                f"{ratio:.2f}",
                e.vertebrae,
            ]
        )
    for e in in_process:
        rows.append(
            [e.scan, "in-process", e.latency_s.n, ms(e.latency_s.p50), "", "", "", "1.00", e.vertebrae]
        )
    print("\nLatency, client memory to client memory (ms); ratio = p50 / in-process p50 (serving overhead)")
    print(text_table(["scan", "transport", "n", "p50", "p90", "p95", "p99", "ratio", "vertebrae"], rows))


def print_breakdown(
    reference: str,
    latency: Sequence[ServedLatency],
    in_process: InProcessLatency,
    read_s: Mapping[str, float],
) -> None:
    """Where the time of one request of the reference scan goes, client side and server side."""
    print(f"\nClient side, {reference} (medians, ms); read = read_ct + reorient, warm page cache")
    print("  read: " + ", ".join(f"{name} {ms(s)}" for name, s in read_s.items()))
    rows = [
        [
            e.transport,
            ms(e.latency_s.p50),
            ms(e.shared_memory_copy_s),
            ms(e.latency_s.p50 - e.call_s),
            ms(e.call_s),
            ms(e.server_s),
            ms(e.call_s - e.server_s),
        ]
        for e in latency
        if e.scan == reference
    ]
    headers = ["transport", "total", "shm copy", "outside call", "call", "server", "call - server"]
    print(text_table(headers, rows))
    print("  outside call: building the request and reading the answer in the client (incl. shm copy);")
    print("  call - server: serialize + transfer + wait outside Triton's accounting")
    shm = next(e for e in latency if e.scan == reference and e.transport == Transport.SHARED_MEMORY.value)
    rows = [
        [
            model,
            ms(t.queue),
            ms(t.compute_input),
            ms(t.compute_infer),
            ms(t.compute_output),
            ms(t.metric),
            ms(in_process.steps_s.get(IN_PROCESS_STEP[model])),
        ]
        for model, t in shm.steps.items()
    ]
    rows.append([f"{ENSEMBLE} (server)", "", "", "", "", ms(shm.server_s), ms(in_process.latency_s.p50)])
    print(f"\nServer side, {reference}, grpc+shm (medians per request, ms)")
    headers = ["step", "queue", "c. input", "c. infer", "c. output", "vfq metric", "in-process"]
    print(text_table(headers, rows))
    split = shm.server_split_s
    print(f"  tensors into and out of the steps (Σ c. input + c. output): {ms(split['tensors'])}")
    print(f"  python backend around the steps' code (Σ c. infer - vfq metric): {ms(split['backend'])}")
    print(f"  ensemble scheduling (server - Σ steps): {ms(split['scheduling'])}")


def print_floors(reference: str, floors: Sequence[StepFloor], compute: Mapping[str, float]) -> None:
    """Each step's floor next to its measured time."""
    print(
        f"\nFloor, {reference}: matmul {compute['matmul_flop_per_s_per_core'] / 1e9:.1f} GFLOP/s per core"
        f" × {compute['network_threads']:g} threads for the networks,"
        f" copy {compute['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write, one thread)"
    )
    rows = [
        [
            f.step,
            f"{f.flop / 1e9:.2f}",
            f"{f.bytes_moved / 1e6:.1f}",
            ms(f.floor_s),
            ms(f.served_s),
            ms(f.in_process_s),
            f"{f.served_s / f.floor_s:.0f}×" if f.served_s and f.floor_s else "-",
        ]
        for f in floors
    ]
    headers = ["step", "GFLOP", "MB moved", "floor", "served", "in-process", "served/floor"]
    print(text_table(headers, rows))


def print_sweep(scan: str, sweep: Sequence[ConcurrencyLevel]) -> None:
    """Throughput, latency and memory against the number of clients, per transport."""
    rows = [
        [
            lv.transport,
            lv.threads,
            lv.requests,
            lv.errors,
            f"{lv.throughput_per_s:.3f}",
            ms(lv.latency_s.p50 if lv.latency_s else None),
            ms(lv.latency_s.p95 if lv.latency_s else None),
            ms(lv.queue_s),
            f"{lv.peak_pss_mib:.0f}",
            f"{lv.peak_rss_mib:.0f}",
            f"{lv.peak_anon_mib:.0f}",
        ]
        for lv in sweep
    ]
    print(f"\nConcurrency, {scan} (latency ms; server tree peak memory MiB)")
    headers = [
        "transport",
        "clients",
        "requests",
        "errors",
        "scans/s",
        "p50",
        "p95",
        "queue",
        "peak PSS",
        "peak RSS",
        "peak anon",
    ]
    print(text_table(headers, rows))


def print_targets(targets: Sequence[TargetCheck]) -> None:
    """The summary: each target, its measured value, PASS / MISS."""
    print("\nTargets")
    rows = [[t.name, t.target, "-" if t.value is None else f"{t.value:.2f}", t.verdict] for t in targets]
    print(text_table(["target", "wanted", "measured", "verdict"], rows))


def plot(results: Mapping[str, Any], path: Path) -> bool:
    """Latency against slices per transport, throughput against clients; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[tuple[int, float, float]]] = {}
    for e in results["latency"]:
        if e["scan"].startswith("phantom"):
            series.setdefault(e["transport"], []).append(
                (e["slices"], e["latency_s"]["p50"], e["latency_s"]["p90"])
            )
    for e in results["in_process"]:
        if e["scan"].startswith("phantom"):
            series.setdefault("in-process", []).append(
                (e["slices"], e["latency_s"]["p50"], e["latency_s"]["p90"])
            )
    for name, points in series.items():
        x, p50, p90 = zip(*sorted(points))
        left.errorbar(
            x, p50, yerr=[np.zeros(len(x)), np.subtract(p90, p50)], marker="o", capsize=3, label=name
        )
    left.set(xlabel="slices (512×512)", ylabel="latency p50 (s), bar to p90", title="Latency per scan")
    left.legend()
    sweeps: dict[str, list[tuple[int, float]]] = {}
    for c in results["concurrency"]:
        sweeps.setdefault(c.get("transport", SWEEP_TRANSPORT_BEFORE), []).append(
            (c["threads"], c["throughput_per_s"])
        )
    for name, points in sweeps.items():
        right.plot(*zip(*sorted(points)), marker="o", label=name)
    threads = sorted({c["threads"] for c in results["concurrency"]})
    right.set(xlabel="concurrent clients", ylabel="scans / s", title="Throughput", xticks=threads)
    right.legend()
    right.set_ylim(bottom=0)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.suptitle(f"vfq serving benchmark — {results['git_commit']}, {results['machine']['cpu_model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def readme_block(results: Mapping[str, Any]) -> str:
    """The README's results section for a results file: targets, latency and concurrency tables."""
    m, settings = results["machine"], results["settings"]
    head = (
        f"Recorded {results['date']} at `{results['git_commit']}`, Triton {results['triton_version']}, "
        f"{m['cores']} cores {m['cpu_model']}, {m['ram_gib']} GiB; networks on "
        f"{settings.get('network_runtime', DEFAULT_RUNTIME)}; n = {settings['repeats']}."
    )
    targets = [
        [t["name"], t["target"], "-" if t["value"] is None else f"{t['value']:.2f}", t["verdict"]]
        for t in results["targets"]
    ]
    runs = [(e, e["transport"]) for e in results["latency"]] + [
        (e, "in-process") for e in results["in_process"]
    ]
    latency = [
        [e["scan"], mode, e["latency_s"]["n"], ms(e["latency_s"]["p50"]), ms(e["latency_s"]["p95"])]
        for e, mode in runs
    ]

    def pick(level: Mapping[str, Any], percentile: str) -> float | None:
        return level["latency_s"][percentile] if level["latency_s"] else None

    sweep = [
        [
            c.get("transport", SWEEP_TRANSPORT_BEFORE),
            c["threads"],
            f"{c['throughput_per_s']:.3f}",
            ms(pick(c, "p50")),
            ms(pick(c, "p95")),
            c["errors"],
            f"{c['peak_pss_mib']:.0f}" if "peak_pss_mib" in c else "-",  # older files have no PSS
        ]
        for c in results["concurrency"]
    ]
    return "\n\n".join(
        [
            head,
            markdown_table(["target", "wanted", "measured", "verdict"], targets),
            markdown_table(["scan", "transport", "n", "p50 ms", "p95 ms"], latency),
            markdown_table(
                ["transport", "clients", "scans/s", "p50 ms", "p95 ms", "errors", "peak PSS MiB"], sweep
            ),
        ]
    )


# ---------------------------------------------------------------------------------------------------
# The run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="results, plot, server log, cache"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 100,300, 3 repeats, 1 and 2 clients")
    parser.add_argument("--repeats", type=int, help="sequential requests per scan and transport (default 5)")
    parser.add_argument("--sizes", help="phantom slice counts, e.g. 100,300,600 (the default)")
    parser.add_argument("--concurrency", help="client counts of the sweep, e.g. 1,2,4,8 (the default)")
    parser.add_argument("--requests-per-client", type=int, help="timed requests per client in the sweep (4)")
    parser.add_argument(
        "--sweep-transports",
        help="transports of the concurrency sweep, e.g. grpc+shm,grpc (the default; --quick: grpc+shm)",
    )
    parser.add_argument(
        "--full", action="store_true", help="gzip on every scan, not only the smallest phantom"
    )
    parser.add_argument(
        "--record", action="store_true", help=f"keep the results as {BASELINE.relative_to(REPO)}"
    )
    parser.add_argument("--compare", type=Path, help="a recorded results.json: exit 1 on a regression")
    parser.add_argument(
        "--model-repository",
        type=Path,
        help="serve this repository (another thread or instance setting); default the checkout's",
    )
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default=ALLOCATORS[0],
        help="memory allocator of the server's processes (default tcmalloc)",
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.sizes = [int(s) for s in (args.sizes or ("100,300" if args.quick else "100,300,600")).split(",")]
    args.concurrency = [int(c) for c in (args.concurrency or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    args.requests_per_client = args.requests_per_client or (2 if args.quick else 4)
    transports = (args.sweep_transports or ("grpc+shm" if args.quick else "grpc+shm,grpc")).split(",")
    known = [transport.value for transport in Transport]
    if unknown := [name for name in transports if name not in known]:
        parser.error(f"--sweep-transports: {', '.join(unknown)} unknown; choose from {', '.join(known)}")
    args.sweep_transports = [Transport(name) for name in transports]
    if args.record and args.quick:
        parser.error("--record keeps a baseline: run without --quick")
    if args.repeats < 1 or min(args.sizes) < 1 or min(args.concurrency) < 1:
        parser.error("--repeats, --sizes and --concurrency must be positive")
    if args.compare and not args.compare.is_file():
        parser.error(f"--compare: no results file at {args.compare}")
    missing = [
        f"{module} ({why})" for module, why in REQUIREMENTS.items() if not importlib.util.find_spec(module)
    ]
    if missing:
        parser.error(f"missing: {', '.join(missing)}; `make setup` installs them")
    return args


def transports_for(scan: Scan, smallest: int, full: bool) -> list[Transport]:
    """gzip costs seconds of CPU per scan: only on the smallest phantom unless ``full``."""
    gzip = full or (scan.phantom and scan.slices == smallest)
    return [Transport.SHARED_MEMORY, Transport.GRPC] + ([Transport.GZIP] if gzip else [])


def measure_served(
    server: EmbeddedServer,
    probe: ServerProbe,
    pipeline: InProcessPipeline,
    scans: Sequence[Scan],
    args: argparse.Namespace,
) -> tuple[list[ServedLatency], list[InProcessLatency]]:
    """Warm-up (one in-process run and one request per transport of each scan), then every scan."""
    clients = {
        t: VfqClient(server.grpc_url, timeout_s=REQUEST_TIMEOUT_S, retries=0, **t.client_options())
        for t in Transport
    }
    latency: list[ServedLatency] = []
    in_process: list[InProcessLatency] = []
    try:
        for scan in scans:  # ONNX Runtime and the steps see each shape once
            pipeline.analyze(scan)
            for transport in (Transport.SHARED_MEMORY, Transport.GRPC):
                timed_request(clients[transport], scan)
        for scan in scans:
            transports = transports_for(scan, min(args.sizes), args.full)
            print(
                f"measuring {scan.name}: {', '.join(t.value for t in transports)}; "
                f"in-process × {args.repeats}"
            )
            served, local = measure_scan(scan, transports, clients, pipeline, probe, args.repeats)
            latency += served
            in_process.append(local)
    finally:
        for client in clients.values():
            client.close()
    return latency, in_process


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; prints the report and returns the results as written to ``results.json``."""
    args.out.mkdir(parents=True, exist_ok=True)
    started = machine()
    print(f"machine: {started['cores']} cores {started['cpu_model']}, load {started['load_average_1m']:.2f}")
    scans = [phantom_scan(n, args.out / "inputs") for n in args.sizes] + real_scans()
    phantoms = {s.slices: s for s in scans if s.phantom}
    reference = phantoms.get(REFERENCE_SLICES) or phantoms[max(phantoms)]
    print(f"inputs: {', '.join(f'{s.name} {s.ct.array.shape}' for s in scans)}")
    read_s = read_times(reference, args.out / "inputs")
    compute = {"matmul_flop_per_s_per_core": matmul_flops_per_core(), "copy_bytes_per_s": copy_bandwidth()}
    # this process's memory allocator and glibc tunables: the client's and the in-process pipeline's
    client_allocator = os.environ.get("LD_PRELOAD") or "glibc malloc"
    client_tunables = os.environ.get("GLIBC_TUNABLES")

    with EmbeddedServer(
        args.model_repository, log=args.out / "tritonserver.log", allocator=args.allocator
    ) as server:
        assert server.process is not None
        print(
            f"server allocator: {server.preload or 'glibc malloc'}; this process (client, in-process "
            f"pipeline): {client_allocator}, GLIBC_TUNABLES={client_tunables or '(none)'}"
        )
        probe = ServerProbe(server.grpc_url, server.metrics_url)
        triton_version = probe.triton_version()
        runtime, threads = probe.network_settings()
        compute["network_threads"] = min(threads, started["usable_cores"])
        print(f"networks: {runtime}, {threads} thread(s) per instance; in-process the same")
        pipeline = InProcessPipeline(int(compute["network_threads"]), runtime)
        latency, in_process = measure_served(server, probe, pipeline, scans, args)
        sweep = []
        for transport in args.sweep_transports:
            for threads in args.concurrency:
                print(
                    f"concurrency {threads}, {transport.value}: "
                    f"{threads * args.requests_per_client} requests of {reference.name}"
                )
                sweep.append(
                    run_concurrency(
                        server.grpc_url,
                        reference,
                        threads,
                        args.requests_per_client,
                        probe,
                        server.process.pid,
                        transport,
                    )
                )
        probe.close()

    reference_local = next(e for e in in_process if e.scan == reference.name)
    reference_shm = next(
        e for e in latency if e.scan == reference.name and e.transport == Transport.SHARED_MEMORY.value
    )
    shapes = pipeline.shapes[reference.name]
    floors = step_floors(reference, shapes, network_macs(shapes), compute, reference_shm, reference_local)
    targets = check_targets(latency, in_process, sweep)

    print_latency(latency, in_process)
    print_breakdown(reference.name, latency, reference_local, read_s)
    print_floors(reference.name, floors, compute)
    print_sweep(reference.name, sweep)
    print_targets(targets)
    return {
        "schema": RESULTS_SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "triton_version": triton_version,
        "machine": started,
        "settings": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "sweep_transports": [transport.value for transport in args.sweep_transports],
            "requests_per_client": args.requests_per_client,
            "quick": args.quick,
            "full": args.full,
            "reference": reference.name,
            "model_repository": os.path.relpath(server.model_repository, REPO),
            "server_allocator": server.preload or "glibc malloc",
            "network_runtime": runtime,
            "in_process_allocator": client_allocator,
            "client_glibc_tunables": client_tunables,
        },
        "compute": compute,
        "read_s": read_s,
        "latency": [asdict(e) for e in latency],
        "in_process": [asdict(e) for e in in_process],
        "tensor_shapes": {name: asdict(s) for name, s in pipeline.shapes.items()},
        "floors": [asdict(f) for f in floors],
        "concurrency": [asdict(c) for c in sweep],
        "targets": [{**asdict(t), "verdict": t.verdict} for t in targets],
    }


def report_comparison(results: Mapping[str, Any], baseline_path: Path) -> bool:
    """Print every figure against the baseline; ``True`` when one regressed."""
    baseline = json.loads(baseline_path.read_text(encoding="utf-8"))
    if (
        baseline["machine"]["cpu_model"] != results["machine"]["cpu_model"]
        or baseline["machine"]["cores"] != results["machine"]["cores"]
    ):
        print(
            f"note: the baseline was recorded on {baseline['machine']['cores']} cores "
            f"{baseline['machine']['cpu_model']}"
        )
    comparisons = compare(results, baseline)
    rows = [
        [
            c.figure,
            f"{c.baseline:.3f}",
            f"{c.current:.3f}",
            f"{c.ratio:.2f}",
            "REGRESSION" if c.regressed else "ok",
        ]
        for c in comparisons
    ]
    print(
        f"\nAgainst {baseline_path} ({baseline['git_commit']}, {baseline['date']}): "
        f"p50 latency limit ×{LATENCY_REGRESSION} and the recorded slowest request, "
        f"throughput limit ×{THROUGHPUT_REGRESSION}"
    )
    print(text_table(["figure", "baseline", "now", "ratio", ""], rows))
    return any(c.regressed for c in comparisons)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(
        f"\nwrote {path}"
        + (
            f" and {args.out / 'latency.png'}"
            if plot(results, args.out / "latency.png")
            else " (no plot: matplotlib missing)"
        )
    )
    # compared before recording, so that --compare latest.json --record compares with the old record
    regressed = args.compare is not None and report_comparison(results, args.compare)
    if args.record:
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, BASELINE)
        if (args.out / "latency.png").is_file():
            shutil.copyfile(args.out / "latency.png", BASELINE.with_name("latency.png"))
        table = replace_marked(README.read_text(encoding="utf-8"), readme_block(results))
        README.write_text(table, encoding="utf-8")
        print(f"recorded {BASELINE.relative_to(REPO)} and the table of {README.relative_to(REPO)}")
    if regressed:
        print("REGRESSION")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
