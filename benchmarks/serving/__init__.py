"""The serving benchmark's parts (``benchmarks/serving_bench.py`` runs them), each a small module:

* :mod:`serving.scans` — the CTs a run sends;
* :mod:`serving.transport` — how the CT travels (gRPC, shared memory, gzip);
* :mod:`serving.in_process` — the pipeline without the server, on the same arrays;
* :mod:`serving.requests` — sequential requests, the server's counters read around each;
* :mod:`serving.figures` — percentiles and per-request means of those counters (pure arithmetic);
* :mod:`serving.memory` — the server tree's memory from ``/proc``;
* :mod:`serving.sweep` — throughput against concurrent clients;
* :mod:`serving.machine` — the machine, its matmul rate and copy bandwidth;
* :mod:`serving.floors` — each step's least possible time;
* :mod:`serving.targets` — the targets, PASS / MISS;
* :mod:`serving.compare` — a run against a recorded one;
* :mod:`serving.report`, :mod:`serving.tables` — what a run prints, plots and writes.

Times are seconds in the data, milliseconds where printed.
"""

from pathlib import Path

#: The checkout.
REPO = Path(__file__).resolve().parents[2]
