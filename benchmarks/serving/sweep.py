"""Throughput and latency against the number of concurrent clients."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from vfq.client import VfqClient

from .figures import IN_PROCESS_STEP, Percentiles, counters_delta, per_event
from .memory import MemorySampler
from .requests import REQUEST_TIMEOUT_S, ServerProbe, timed_request
from .scans import Scan
from .transport import Transport


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
