"""The serving benchmark run end to end, small: the script as a user runs it, on the real embedded
server, writes the results every part of it promises, and a comparison of a run with itself finds no
regression. The figures themselves are the benchmark's business, not this test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serving.compare import report_comparison

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_bench.py"
#: The smallest run that still goes through every part: one phantom (100 slices: three vertebrae, so
#: the detector runs and the floor has every network's shape), both sweeps at one and two clients.
OPTIONS = [
    "--sizes", "100", "--repeats", "1", "--concurrency", "1,2", "--requests-per-client", "1",
    "--sweep-transports", "grpc+shm,grpc",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *OPTIONS],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text(encoding="utf-8")), done.stdout


def test_a_small_run_measures_every_scan_transport_and_sweep_level(run):
    out, results, printed = run
    assert results["schema"] == "vfq-serving-bench/1" and results["settings"]["sizes"] == [100]
    scans = {"phantom 100", "real lumbar_ct_3mm", "real thoracolumbar_dicom_20slices"}
    served = {(e["scan"], e["transport"]) for e in results["latency"]}
    # gzip on the smallest phantom only; shared memory and plain gRPC on every scan
    assert served == {(s, t) for s in scans for t in ("grpc+shm", "grpc")} | {("phantom 100", "grpc+gzip")}
    assert {e["scan"] for e in results["in_process"]} == scans
    for entry in results["latency"]:
        assert entry["latency_s"]["n"] == 1 and entry["latency_s"]["p50"] > 0
        # the client's own parts: the copy into shared memory, or building the plain-gRPC message
        assert (entry["shared_memory_copy_s"] is None) == (entry["transport"] != "grpc+shm")
        assert (entry["serialize_s"] is None) == (entry["transport"] == "grpc+shm")
        if entry["scan"] == "phantom 100":
            assert entry["vertebrae"] == 3 and entry["not_assessable"] is None
    levels = {(c["transport"], c["threads"]) for c in results["concurrency"]}
    assert levels == {(t, n) for t in ("grpc+shm", "grpc") for n in (1, 2)}
    assert all(c["errors"] == 0 and c["peak_pss_mib"] > 0 for c in results["concurrency"])
    assert [f["step"] for f in results["floors"]] == [
        "transfer", "preprocess", "spine_localizer", "straighten", "vertebra_detector", "keypoint_decoder",
    ]  # fmt: skip
    assert all(f["floor_s"] > 0 for f in results["floors"] if f["step"] != "keypoint_decoder")
    assert len(results["targets"]) == 6
    assert {t["verdict"] for t in results["targets"]} <= {"PASS", "MISS", "n/a"}
    assert "Targets" in printed and (out / "latency.png").stat().st_size > 10_000


def test_a_run_compared_with_itself_has_no_regression(run, capsys):
    out, results, _ = run
    assert report_comparison(results, out / "results.json") is False
    table = capsys.readouterr().out
    assert "p50 phantom 100 grpc+shm" in table and "REGRESSION" not in table
