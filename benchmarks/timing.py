"""The timing rule of the benchmark scripts: one warm-up call, then the median of the timed ones."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(
    run: Callable[[], object], repeats: int, synchronize: Callable[[], None] = lambda: None
) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``run`` after one untimed warm-up call;
    ``synchronize`` is called after each (a GPU's, so that its queued work is timed)."""
    run()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
