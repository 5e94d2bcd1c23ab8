"""Latency, throughput and where the time goes, through the real server (the embedded Triton).

Starts one :class:`vfq.server.embedded.EmbeddedServer`, sends whole-spine phantoms of 512×512×N slices
(0.7×0.7×1 mm) and the two real scans of ``tests/data/real`` with :class:`vfq.client.VfqClient` over
plain gRPC, gRPC with system shared memory and gRPC with gzip, and runs the same arrays through the
in-process pipeline (``Networks.analyze``, the code the server's steps call). Prints, and writes to
``OUT/results.json``:

* latency percentiles per scan and transport, from the array in the client's memory to the result in
  the client's memory, and the serving overhead (served p50 / in-process p50);
* where the time goes: reading the CT from disk, the client's own work, the call, and per ensemble
  step Triton's statistics (queue, compute input / infer / output), our ``vfq_step_duration_seconds``
  metric and the in-process step time;
* the floor: each step's FLOPs and bytes on the reference scan's real tensor shapes over a matmul
  rate and a copy bandwidth measured in the same run;
* throughput and latency against the number of concurrent clients, with the server's peak memory,
  over shared memory (clients on the server's host) and plain gRPC (clients elsewhere);
* each target with its measured value, PASS or MISS.

Run (``benchmarks/README.md`` explains every figure)::

    .venv/bin/python benchmarks/serving_bench.py --out out/bench [--quick] [--repeats N]
        [--sizes 100,300,600] [--concurrency 1,2,4,8] [--sweep-transports grpc+shm,grpc] [--full] [--record]
        [--compare benchmarks/results/latest.json]

Times are seconds in the data, milliseconds where printed; latency figures are medians unless named.
The parts, one module each, are in ``benchmarks/serving/``; this script parses the options and runs them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from serving import REPO
from serving.compare import report_comparison
from serving.floors import network_macs, step_floors
from serving.in_process import InProcessLatency, InProcessPipeline
from serving.machine import copy_bandwidth, git_commit, machine, matmul_flops_per_core
from serving.report import (
    plot,
    print_breakdown,
    print_floors,
    print_latency,
    print_sweep,
    print_targets,
    readme_block,
)
from serving.requests import REQUEST_TIMEOUT_S, ServedLatency, ServerProbe, measure_scan, timed_request
from serving.scans import REFERENCE_SLICES, Scan, phantom_scan, read_times, real_scans
from serving.sweep import run_concurrency
from serving.tables import replace_marked
from serving.targets import check_targets
from serving.transport import Transport

from vfq.client import VfqClient
from vfq.server.embedded import ALLOCATORS, EmbeddedServer

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_SCHEMA = "vfq-serving-bench/1"
BASELINE = BENCH_DIR / "results" / "latest.json"
README = BENCH_DIR / "README.md"
#: Modules the run needs beyond the client, and what for.
REQUIREMENTS = {
    "pytriton": "the embedded Triton: pip install --no-deps nvidia-pytriton",
    "onnxruntime": "the in-process pipeline: the server extra",
    "torch": "the networks' FLOP count: the train extra",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="results, plot, server log, cache"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 100,300, 3 repeats, 1 and 2 clients")
    parser.add_argument("--repeats", type=int, help="sequential requests per scan and transport (default 5)")
    parser.add_argument("--sizes", help="phantom slice counts, e.g. 100,300,600 (the default)")
    parser.add_argument("--concurrency", help="client counts of the sweep, e.g. 1,2,4,8 (the default)")
    parser.add_argument("--requests-per-client", type=int, help="timed requests per client in the sweep (4)")
    parser.add_argument(
        "--sweep-transports",
        help="transports of the concurrency sweep, e.g. grpc+shm,grpc (the default; --quick: grpc+shm)",
    )
    parser.add_argument(
        "--full", action="store_true", help="gzip on every scan, not only the smallest phantom"
    )
    parser.add_argument(
        "--record", action="store_true", help=f"keep the results as {BASELINE.relative_to(REPO)}"
    )
    parser.add_argument("--compare", type=Path, help="a recorded results.json: exit 1 on a regression")
    parser.add_argument(
        "--model-repository",
        type=Path,
        help="serve this repository (another thread or instance setting); default the checkout's",
    )
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default=ALLOCATORS[0],
        help="memory allocator of the server's processes (default tcmalloc)",
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.sizes = [int(s) for s in (args.sizes or ("100,300" if args.quick else "100,300,600")).split(",")]
    args.concurrency = [int(c) for c in (args.concurrency or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    args.requests_per_client = args.requests_per_client or (2 if args.quick else 4)
    transports = (args.sweep_transports or ("grpc+shm" if args.quick else "grpc+shm,grpc")).split(",")
    known = [transport.value for transport in Transport]
    if unknown := [name for name in transports if name not in known]:
        parser.error(f"--sweep-transports: {', '.join(unknown)} unknown; choose from {', '.join(known)}")
    args.sweep_transports = [Transport(name) for name in transports]
    if args.record and args.quick:
        parser.error("--record keeps a baseline: run without --quick")
    if args.repeats < 1 or min(args.sizes) < 1 or min(args.concurrency) < 1:
        parser.error("--repeats, --sizes and --concurrency must be positive")
    if args.compare and not args.compare.is_file():
        parser.error(f"--compare: no results file at {args.compare}")
    missing = [
        f"{module} ({why})" for module, why in REQUIREMENTS.items() if not importlib.util.find_spec(module)
    ]
    if missing:
        parser.error(f"missing: {', '.join(missing)}; `make setup` installs them")
    return args


def transports_for(scan: Scan, smallest: int, full: bool) -> list[Transport]:
    """gzip costs seconds of CPU per scan: only on the smallest phantom unless ``full``."""
    gzip = full or (scan.phantom and scan.slices == smallest)
    return [Transport.SHARED_MEMORY, Transport.GRPC] + ([Transport.GZIP] if gzip else [])


def measure_served(
    server: EmbeddedServer,
    probe: ServerProbe,
    pipeline: InProcessPipeline,
    scans: Sequence[Scan],
    args: argparse.Namespace,
) -> tuple[list[ServedLatency], list[InProcessLatency]]:
    """Warm-up (one in-process run and one request per transport of each scan), then every scan."""
    clients = {
        t: VfqClient(server.grpc_url, timeout_s=REQUEST_TIMEOUT_S, retries=0, **t.client_options())
        for t in Transport
    }
    latency: list[ServedLatency] = []
    in_process: list[InProcessLatency] = []
    try:
        for scan in scans:  # ONNX Runtime and the steps see each shape once
            pipeline.analyze(scan)
            for transport in (Transport.SHARED_MEMORY, Transport.GRPC):
                timed_request(clients[transport], scan)
        for scan in scans:
            transports = transports_for(scan, min(args.sizes), args.full)
            print(
                f"measuring {scan.name}: {', '.join(t.value for t in transports)}; "
                f"in-process × {args.repeats}"
            )
            served, local = measure_scan(scan, transports, clients, pipeline, probe, args.repeats)
            latency += served
            in_process.append(local)
    finally:
        for client in clients.values():
            client.close()
    return latency, in_process


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; prints the report and returns the results as written to ``results.json``."""
    args.out.mkdir(parents=True, exist_ok=True)
    started = machine()
    print(f"machine: {started['cores']} cores {started['cpu_model']}, load {started['load_average_1m']:.2f}")
    scans = [phantom_scan(n, args.out / "inputs") for n in args.sizes] + real_scans()
    phantoms = {s.slices: s for s in scans if s.phantom}
    reference = phantoms.get(REFERENCE_SLICES) or phantoms[max(phantoms)]
    print(f"inputs: {', '.join(f'{s.name} {s.ct.array.shape}' for s in scans)}")
    read_s = read_times(reference, args.out / "inputs")
    compute = {"matmul_flop_per_s_per_core": matmul_flops_per_core(), "copy_bytes_per_s": copy_bandwidth()}
    # this process's memory allocator and glibc tunables: the client's and the in-process pipeline's
    client_allocator = os.environ.get("LD_PRELOAD") or "glibc malloc"
    client_tunables = os.environ.get("GLIBC_TUNABLES")

    with EmbeddedServer(
        args.model_repository, log=args.out / "tritonserver.log", allocator=args.allocator
    ) as server:
        assert server.process is not None
        print(
            f"server allocator: {server.preload or 'glibc malloc'}; this process (client, in-process "
            f"pipeline): {client_allocator}, GLIBC_TUNABLES={client_tunables or '(none)'}"
        )
        probe = ServerProbe(server.grpc_url, server.metrics_url)
        triton_version = probe.triton_version()
        runtime, threads = probe.network_settings()
        compute["network_threads"] = min(threads, started["usable_cores"])
        print(f"networks: {runtime}, {threads} thread(s) per instance; in-process the same")
        pipeline = InProcessPipeline(int(compute["network_threads"]), runtime)
        latency, in_process = measure_served(server, probe, pipeline, scans, args)
        sweep = []
        for transport in args.sweep_transports:
            for threads in args.concurrency:
                print(
                    f"concurrency {threads}, {transport.value}: "
                    f"{threads * args.requests_per_client} requests of {reference.name}"
                )
                sweep.append(
                    run_concurrency(
                        server.grpc_url,
                        reference,
                        threads,
                        args.requests_per_client,
                        probe,
                        server.process.pid,
                        transport,
                    )
                )
        probe.close()

    reference_local = next(e for e in in_process if e.scan == reference.name)
    reference_shm = next(
        e for e in latency if e.scan == reference.name and e.transport == Transport.SHARED_MEMORY.value
    )
    shapes = pipeline.shapes[reference.name]
    # the floor needs every network's input shape: none where the scan had no spine to straighten
    floors = (
        step_floors(reference, shapes, network_macs(shapes), compute, reference_shm, reference_local)
        if shapes.detector_input
        else []
    )
    targets = check_targets(latency, in_process, sweep)

    print_latency(latency, in_process)
    print_breakdown(reference.name, latency, reference_local, read_s)
    print_floors(reference.name, floors, compute)
    print_sweep(reference.name, sweep)
    print_targets(targets)
    return {
        "schema": RESULTS_SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "triton_version": triton_version,
        "machine": started,
        "settings": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "sweep_transports": [transport.value for transport in args.sweep_transports],
            "requests_per_client": args.requests_per_client,
            "quick": args.quick,
            "full": args.full,
            "reference": reference.name,
            "model_repository": os.path.relpath(server.model_repository, REPO),
            "server_allocator": server.preload or "glibc malloc",
            "network_runtime": runtime,
            "in_process_allocator": client_allocator,
            "client_glibc_tunables": client_tunables,
        },
        "compute": compute,
        "read_s": read_s,
        "latency": [asdict(e) for e in latency],
        "in_process": [asdict(e) for e in in_process],
        "tensor_shapes": {name: asdict(s) for name, s in pipeline.shapes.items()},
        "floors": [asdict(f) for f in floors],
        "concurrency": [asdict(c) for c in sweep],
        "targets": [{**asdict(t), "verdict": t.verdict} for t in targets],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(
        f"\nwrote {path}"
        + (
            f" and {args.out / 'latency.png'}"
            if plot(results, args.out / "latency.png")
            else " (no plot: matplotlib missing)"
        )
    )
    # compared before recording, so that --compare latest.json --record compares with the old record
    regressed = args.compare is not None and report_comparison(results, args.compare)
    if args.record:
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, BASELINE)
        if (args.out / "latency.png").is_file():
            shutil.copyfile(args.out / "latency.png", BASELINE.with_name("latency.png"))
        table = replace_marked(README.read_text(encoding="utf-8"), readme_block(results))
        README.write_text(table, encoding="utf-8")
        print(f"recorded {BASELINE.relative_to(REPO)} and the table of {README.relative_to(REPO)}")
    if regressed:
        print("REGRESSION")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
