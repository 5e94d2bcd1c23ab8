"""The arithmetic of the serving benchmark (benchmarks/serving): percentiles, counter deltas from
Triton's statistics JSON and from Prometheus text, the regression comparison, the README markers and
the memory of a process tree. No server."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from serving import REPO
from serving.compare import compare
from serving.figures import (
    Percentiles,
    Snapshot,
    counters_delta,
    per_event,
    requests_counted,
    server_split,
    step_metric_counters,
    triton_counters,
)
from serving.memory import MemorySampler, tree_memory_kib, tree_pss_kib
from serving.report import print_floors, readme_block
from serving.scans import median_seconds
from serving.sweep import ConcurrencyLevel
from serving.tables import MARK_BEGIN, MARK_END, ms, replace_marked
from serving.targets import check_targets

from vfq.server.embedded import process_tree


def _stats(localizer_infer_ns: int, count: int, ensemble_ns: int) -> dict:
    """A get_inference_statistics(as_json=True) answer: int64 as strings, zero fields left out."""
    return {
        "model_stats": [
            {
                "name": "spine_localizer",
                "version": "1",
                "inference_stats": {
                    "success": {"count": str(count), "ns": str(localizer_infer_ns + 1000 * count)},
                    "fail": {},
                    "queue": {"count": str(count), "ns": str(500 * count)},
                    "compute_input": {"count": str(count), "ns": str(200 * count)},
                    "compute_infer": {"count": str(count), "ns": str(localizer_infer_ns)},
                    "compute_output": {"count": str(count), "ns": str(300 * count)},
                },
            },
            {
                "name": "vertebra_pipeline",
                "version": "1",
                "inference_stats": {"success": {"count": str(count), "ns": str(ensemble_ns)}},
            },
        ]
    }


def _metrics(localizer_sum: float, localizer_count: int, preprocess_count: int = 3) -> str:
    return f"""# HELP vfq_step_duration_seconds Time a vertebra_pipeline python step spends on one request (s)
# TYPE vfq_step_duration_seconds histogram
vfq_step_duration_seconds_count{{step="spine_localizer"}} {localizer_count}
vfq_step_duration_seconds_sum{{step="spine_localizer"}} {localizer_sum}
vfq_step_duration_seconds_bucket{{step="spine_localizer",le="0.5"}} {localizer_count}
vfq_step_duration_seconds_bucket{{step="spine_localizer",le="+Inf"}} {localizer_count}
vfq_step_duration_seconds_count{{step="preprocess"}} {preprocess_count}
vfq_step_duration_seconds_sum{{step="preprocess"}} {0.1 * preprocess_count}
vfq_step_duration_seconds_bucket{{step="preprocess",le="+Inf"}} {preprocess_count}
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{{model="spine_localizer",version="1"}} {localizer_count}
"""


def test_percentiles_interpolate_between_ranks() -> None:
    p = Percentiles.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (p.n, p.p50, p.min, p.max) == (5, 3.0, 1.0, 5.0)
    assert p.p90 == pytest.approx(4.6)
    assert p.p95 == pytest.approx(4.8)
    assert p.p99 == pytest.approx(4.96)
    assert Percentiles.of([2.0]).p99 == 2.0
    with pytest.raises(ValueError):
        Percentiles.of([])


def test_triton_statistics_deltas_per_request() -> None:
    before = triton_counters(_stats(localizer_infer_ns=2_000_000_000, count=4, ensemble_ns=3_000_000_000))
    after = triton_counters(_stats(localizer_infer_ns=3_500_000_000, count=7, ensemble_ns=4_800_000_000))
    assert before["spine_localizer/compute_infer"] == (2e9, 4.0)
    assert before["vertebra_pipeline/queue"] == (0.0, 0.0)  # left out of the JSON: zero
    seconds = per_event(counters_delta(before, after), 1e-9)
    assert seconds["spine_localizer/compute_infer"] == pytest.approx(0.5)  # 1.5 s over 3 requests
    assert seconds["spine_localizer/queue"] == pytest.approx(500e-9)
    assert seconds["vertebra_pipeline/success"] == pytest.approx(0.6)
    assert "vertebra_pipeline/queue" not in seconds  # no events: no mean


def test_step_metric_deltas_from_prometheus_text() -> None:
    before = step_metric_counters(_metrics(localizer_sum=1.25, localizer_count=5))
    after = step_metric_counters(_metrics(localizer_sum=2.75, localizer_count=8))
    assert before == {"spine_localizer": (1.25, 5.0), "preprocess": (pytest.approx(0.3), 3.0)}
    assert per_event(counters_delta(before, after)) == {"spine_localizer": pytest.approx(0.5)}
    assert step_metric_counters("") == {}


def _results(p50_s: float, throughput: float) -> dict:
    latency = {"n": 5, "p50": p50_s, "p90": p50_s, "p95": p50_s, "p99": p50_s, "min": p50_s, "max": p50_s}
    return {
        "latency": [{"scan": "phantom 300", "transport": "grpc+shm", "latency_s": latency}],
        "concurrency": [{"threads": 2, "transport": "grpc+shm", "throughput_per_s": throughput}],
    }


def test_comparison_flags_slower_latency_and_lower_throughput() -> None:
    baseline = _results(p50_s=1.0, throughput=2.0)
    within = compare(_results(p50_s=1.2, throughput=1.7), baseline)
    assert [c.figure for c in within] == ["p50 phantom 300 grpc+shm", "throughput grpc+shm at 2"]
    assert not any(c.regressed for c in within)
    worse = compare(_results(p50_s=1.3, throughput=1.5), baseline)
    assert [c.regressed for c in worse] == [True, True]
    assert worse[0].ratio == pytest.approx(1.3)
    extra = _results(p50_s=1.0, throughput=2.0)
    extra["latency"][0]["scan"] = "phantom 600"  # not in the baseline: not compared
    assert [c.figure for c in compare(extra, baseline)] == ["throughput grpc+shm at 2"]


def test_a_p50_within_the_baselines_own_spread_is_not_a_regression() -> None:
    baseline = _results(p50_s=1.0, throughput=2.0)
    baseline["latency"][0]["latency_s"]["max"] = 1.5  # its slowest request
    [inside, _] = compare(_results(p50_s=1.45, throughput=2.0), baseline)
    assert (inside.ratio, inside.regressed) == (pytest.approx(1.45), False)
    [beyond, _] = compare(_results(p50_s=1.55, throughput=2.0), baseline)
    assert beyond.regressed
    del baseline["latency"][0]["latency_s"]["max"]  # a file without the spread: the factor alone
    [without, _] = compare(_results(p50_s=1.3, throughput=2.0), baseline)
    assert without.regressed


def test_throughputs_are_compared_per_transport_and_old_files_swept_shared_memory() -> None:
    current = _results(p50_s=1.0, throughput=2.0)
    current["concurrency"].append({"threads": 2, "transport": "grpc", "throughput_per_s": 0.5})
    before_transports = _results(p50_s=1.0, throughput=1.9)
    del before_transports["concurrency"][0]["transport"]  # files recorded before the plain-gRPC sweep
    [_, throughput] = compare(current, before_transports)
    assert (throughput.figure, throughput.baseline, throughput.current) == (
        "throughput grpc+shm at 2",
        1.9,
        2.0,
    )
    recorded = _results(p50_s=1.0, throughput=2.0)
    recorded["concurrency"].append({"threads": 2, "transport": "grpc", "throughput_per_s": 1.0})
    plain = compare(current, recorded)[-1]
    assert (plain.figure, plain.ratio, plain.regressed) == ("throughput grpc at 2", 0.5, True)


def test_readme_markers_are_replaced_between_them_only() -> None:
    text = f"intro\n{MARK_BEGIN}\nold table\n{MARK_END}\nafter\n"
    assert replace_marked(text, "| new |\n") == f"intro\n{MARK_BEGIN}\n| new |\n{MARK_END}\nafter\n"
    with pytest.raises(ValueError):
        replace_marked("no markers", "x")


def test_the_recorded_results_say_what_the_networks_ran_on() -> None:
    recorded = json.loads((REPO / "benchmarks" / "results" / "latest.json").read_text(encoding="utf-8"))
    recorded["settings"].pop("network_runtime", None)  # as files recorded before the runtime was
    head = readme_block(recorded).splitlines()[0]
    assert head.endswith(f"networks on onnxruntime; n = {recorded['settings']['repeats']}.")
    recorded["settings"]["network_runtime"] = "openvino"
    assert "; networks on openvino; n = " in readme_block(recorded).splitlines()[0]


def test_milliseconds_for_tables() -> None:
    assert ms(0.0123) == "12.3"
    assert ms(None) == "-"
    assert ms(math.nan) == "-"


def test_server_split_of_one_request() -> None:
    triton_s = {
        "preprocess/queue": 0.001,
        "preprocess/compute_input": 0.020,
        "preprocess/compute_infer": 0.100,
        "preprocess/compute_output": 0.002,
        "spine_localizer/compute_infer": 0.300,
        "vertebra_pipeline/success": 0.450,
    }
    metric_s = {"preprocess": 0.060, "spine_localizer": 0.295}
    split = server_split(triton_s, metric_s)
    assert split["tensors"] == pytest.approx(0.022)
    assert split["backend"] == pytest.approx(0.045)
    assert split["scheduling"] == pytest.approx(0.450 - 0.423)


def test_requests_counted_waits_for_the_slowest_counter() -> None:
    before = Snapshot(
        triton_counters(_stats(localizer_infer_ns=1, count=4, ensemble_ns=1)),
        step_metric_counters(_metrics(localizer_sum=1.0, localizer_count=4)),
    )
    steps_done = Snapshot(
        triton_counters(_stats(localizer_infer_ns=2, count=5, ensemble_ns=2)),
        step_metric_counters(_metrics(localizer_sum=1.5, localizer_count=5)),
    )
    assert requests_counted(before, steps_done) == 0  # preprocess's metric has not moved
    all_done = Snapshot(
        steps_done.triton, step_metric_counters(_metrics(1.5, localizer_count=5, preprocess_count=4))
    )
    assert requests_counted(before, all_done) == 1


#: A process that maps 64 MiB of shared memory and writes it, forks one child that reads it, and says
#: "ready" once both hold every page.
_SHARED_TREE = """
import mmap, os, sys, time
size = 64 << 20
shared = mmap.mmap(-1, size)  # anonymous, MAP_SHARED: the child keeps the same pages
shared.write(b"\\x01" * size)
read, write = os.pipe()
if os.fork() == 0:
    bytes(memoryview(shared)[::mmap.PAGESIZE])  # reads a byte of each page: the child maps them all
    os.write(write, b"x")
    time.sleep(60)
    os._exit(0)
os.read(read, 1)
print("ready", flush=True)
time.sleep(60)
"""


def test_tree_memory_counts_shared_pages_once_in_pss() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _SHARED_TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as parent:
        try:
            assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
            assert len(process_tree(parent.pid)) == 2
            rss_kib, anon_kib = tree_memory_kib(parent.pid)
            pss_kib = tree_pss_kib(parent.pid)
            with MemorySampler(parent.pid, period_s=0.05) as sampler:
                time.sleep(0.3)
        finally:
            os.killpg(parent.pid, signal.SIGKILL)  # the parent and its child
    shared_kib = 64 << 10
    # each of the two processes maps the 64 MiB: RSS counts them twice, PSS once
    assert rss_kib >= 2 * shared_kib
    assert shared_kib <= pss_kib < shared_kib + (24 << 10)
    assert rss_kib - pss_kib >= shared_kib - (8 << 10)
    # shared memory is not anonymous private heap
    assert anon_kib < shared_kib
    # the sampler's peaks, in MiB: the same figures
    assert sampler.peak_rss_mib == pytest.approx(rss_kib / 1024, rel=0.05)
    assert sampler.peak_pss_mib == pytest.approx(pss_kib / 1024, rel=0.05)
    assert sampler.peak_anon_mib == pytest.approx(anon_kib / 1024, rel=0.2)


def _level(transport: str, threads: int, throughput: float, pss_mib: float) -> object:
    return ConcurrencyLevel(
        threads=threads,
        transport=transport,
        requests=4 * threads,
        errors=0,
        wall_s=1.0,
        throughput_per_s=throughput,
        latency_s=None,
        queue_s=0.0,
        peak_rss_mib=2 * pss_mib,
        peak_pss_mib=pss_mib,
        peak_anon_mib=pss_mib / 2,
    )


def test_memory_target_takes_the_largest_growth_over_the_sweeps() -> None:
    sweep = [
        _level("grpc+shm", 1, 1.7, 6900.0),
        _level("grpc+shm", 2, 3.1, 7000.0),
        _level("grpc+shm", 8, 3.2, 7400.0),
        _level("grpc", 8, 2.2, 9100.0),  # listed before its 1-client level: sorted by clients
        _level("grpc", 1, 1.3, 7000.0),
    ]
    targets = {t.name: t for t in check_targets([], [], sweep)}
    memory = targets["server memory (PSS) at most / at 1 client"]
    assert memory.value == pytest.approx(1.3)
    assert memory.verdict == "MISS"
    assert targets["throughput at 2 / at 1 client"].value == pytest.approx(3.1 / 1.7)
    assert targets["throughput at 8 / best below"].value == pytest.approx(3.2 / 3.1)
    within = {t.name: t for t in check_targets([], [], sweep[:3])}
    assert within["server memory (PSS) at most / at 1 client"].verdict == "PASS"
    assert within["serving overhead, shm"].verdict == "n/a"  # no latency measured


def test_the_timing_rule_warms_up_once_and_takes_the_median(monkeypatch) -> None:
    timing = sys.modules["timing"]  # benchmarks/timing.py, which the scripts import
    assert median_seconds is timing.median_seconds
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 25.0])  # timed calls of 3, 1 and 5 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls: list[str] = []
    result = timing.median_seconds(lambda: calls.append("run"), 3, lambda: calls.append("sync"))
    assert result == 3.0
    assert calls == ["run", "sync"] * 4  # the warm-up call is not timed


def test_a_scan_without_a_spine_has_no_floor_and_says_why(capsys) -> None:
    print_floors("phantom 40", [], {})
    assert capsys.readouterr().out.strip() == (
        "Floor, phantom 40: none — the scan was not assessable, so the detector never ran"
    )
