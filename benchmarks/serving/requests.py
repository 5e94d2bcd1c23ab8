"""Sequential requests through the server, with its counters read around each."""

from __future__ import annotations

import math
import statistics
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import tritonclient.grpc as grpcclient

from vfq.client import StudyResult, VfqClient
from vfq.runtime import DEFAULT_RUNTIME, SERVED_RUNTIME_PARAMETER, SERVED_THREADS, SERVED_THREADS_PARAMETER
from vfq.tensors import LOCALIZER_MODEL

from .figures import (
    ENSEMBLE,
    IN_PROCESS_STEP,
    Percentiles,
    Snapshot,
    counters_delta,
    per_event,
    requests_counted,
    server_split,
    step_metric_counters,
    triton_counters,
)
from .in_process import InProcessLatency, InProcessPipeline, summarize_in_process
from .scans import Scan
from .transport import Transport

#: The client's timeout of every request (s).
REQUEST_TIMEOUT_S = 600.0
#: The client's own timed parts of a request (``StudyResult.seconds``): the copy into shared memory
#: before the call, building the plain-gRPC message within it.
CLIENT_PARTS = ("shared_memory_copy", "serialize")


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
        serialize_s: median time to build the request message, part of ``call_s`` (plain gRPC only).
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
    serialize_s: float | None
    server_s: float
    steps: dict[str, StepTimes]
    server_split_s: dict[str, float]
    vertebrae: int
    not_assessable: str | None


@dataclass
class RequestLog:
    """What each request of one scan and transport measured."""

    latency: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    client_parts: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in CLIENT_PARTS})
    triton: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)
    last: StudyResult | None = None

    def add(self, latency: float, result: StudyResult, before: Snapshot, after: Snapshot) -> None:
        self.latency.append(latency)
        self.call.append(result.seconds["request"])
        for part, times in self.client_parts.items():
            if part in result.seconds:
                times.append(result.seconds[part])
        self.triton.append(per_event(counters_delta(before.triton, after.triton), 1e-9))
        self.steps.append(per_event(counters_delta(before.steps, after.steps)))
        self.last = result

    def _median_part(self, part: str) -> float | None:
        times = self.client_parts[part]
        return statistics.median(times) if times else None

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
            shared_memory_copy_s=self._median_part("shared_memory_copy"),
            serialize_s=self._median_part("serialize"),
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
