"""The machine the run is on, and what it can do at best: a matmul rate and a copy bandwidth."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import REPO


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
