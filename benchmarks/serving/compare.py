"""A run against a recorded one: which figures regressed."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tables import text_table
from .transport import SWEEP_TRANSPORT_BEFORE

#: ``--compare``: a p50 latency above this multiple, or a throughput below this share, of the recorded.
LATENCY_REGRESSION = 1.25
THROUGHPUT_REGRESSION = 0.8


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
