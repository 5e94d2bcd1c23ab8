"""The benchmark scripts import their parts (``serving``, ``timing``) from their own folder, which is
on the path when they run: put it there for the tests too."""

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
