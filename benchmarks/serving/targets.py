"""The targets of the CPU machine, each with its measured value and PASS / MISS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .in_process import InProcessLatency
from .requests import ServedLatency
from .scans import REFERENCE_SLICES
from .sweep import ConcurrencyLevel
from .transport import Transport

#: Serving overhead (served ÷ in-process p50), the 600- ÷ 300-slice latency, throughput at 2 ÷ at 1 client.
OVERHEAD_TARGET = 1.15
SCALING_TARGET = 2.2
SPEEDUP_AT_2_TARGET = 1.6
#: "No collapse": throughput at the highest concurrency keeps this share of the best lower level.
NO_COLLAPSE_SHARE = 0.9
#: "Memory bounded": the server's peak PSS at the most clients stays within this multiple of its peak
#: with one client, in every sweep (what waits in a queue must not pile up in the server).
MEMORY_GROWTH_TARGET = 1.25


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
