"""What a run prints, plots and writes into the README."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vfq.runtime import DEFAULT_RUNTIME

from .figures import ENSEMBLE, IN_PROCESS_STEP
from .floors import StepFloor
from .in_process import InProcessLatency
from .requests import ServedLatency
from .sweep import ConcurrencyLevel
from .tables import markdown_table, ms, text_table
from .targets import TargetCheck
from .transport import SWEEP_TRANSPORT_BEFORE, Transport


def print_latency(latency: Sequence[ServedLatency], in_process: Sequence[InProcessLatency]) -> None:
    """Percentiles per scan and transport, and the ratio to the in-process pipeline."""
    local = {e.scan: e for e in in_process}
    rows = []
    for e in latency:
        p = e.latency_s
        ratio = p.p50 / local[e.scan].latency_s.p50
        rows.append(
            [
                e.scan,
                e.transport,
                p.n,
                ms(p.p50),
                ms(p.p90),
                ms(p.p95),
                ms(p.p99),
                f"{ratio:.2f}",
                e.vertebrae,
            ]
        )
    for e in in_process:
        rows.append(
            [e.scan, "in-process", e.latency_s.n, ms(e.latency_s.p50), "", "", "", "1.00", e.vertebrae]
        )
    print("\nLatency, client memory to client memory (ms); ratio = p50 / in-process p50 (serving overhead)")
    print(text_table(["scan", "transport", "n", "p50", "p90", "p95", "p99", "ratio", "vertebrae"], rows))


def print_breakdown(
    reference: str,
    latency: Sequence[ServedLatency],
    in_process: InProcessLatency,
    read_s: Mapping[str, float],
) -> None:
    """Where the time of one request of the reference scan goes, client side and server side."""
    print(f"\nClient side, {reference} (medians, ms); read = read_ct + reorient, warm page cache")
    print("  read: " + ", ".join(f"{name} {ms(s)}" for name, s in read_s.items()))
    rows = [
        [
            e.transport,
            ms(e.latency_s.p50),
            ms(e.shared_memory_copy_s),
            ms(e.latency_s.p50 - e.call_s),
            ms(e.call_s),
            ms(e.serialize_s),
            ms(e.server_s),
            ms(e.call_s - (e.serialize_s or 0.0) - e.server_s),
        ]
        for e in latency
        if e.scan == reference
    ]
    headers = [
        "transport",
        "total",
        "shm copy",
        "outside call",
        "call",
        "serialize",
        "server",
        "transfer+wait",
    ]
    print(text_table(headers, rows))
    print("  outside call: preparing the request and reading the answer in the client (incl. shm copy);")
    print("  call = serialize (plain gRPC: building the message) + server + transfer+wait, the transfer")
    print("  both ways and the wait outside Triton's accounting")
    shm = next(e for e in latency if e.scan == reference and e.transport == Transport.SHARED_MEMORY.value)
    rows = [
        [
            model,
            ms(t.queue),
            ms(t.compute_input),
            ms(t.compute_infer),
            ms(t.compute_output),
            ms(t.metric),
            ms(in_process.steps_s.get(IN_PROCESS_STEP[model])),
        ]
        for model, t in shm.steps.items()
    ]
    rows.append([f"{ENSEMBLE} (server)", "", "", "", "", ms(shm.server_s), ms(in_process.latency_s.p50)])
    print(f"\nServer side, {reference}, grpc+shm (medians per request, ms)")
    headers = ["step", "queue", "c. input", "c. infer", "c. output", "vfq metric", "in-process"]
    print(text_table(headers, rows))
    split = shm.server_split_s
    print(f"  tensors into and out of the steps (Σ c. input + c. output): {ms(split['tensors'])}")
    print(f"  python backend around the steps' code (Σ c. infer - vfq metric): {ms(split['backend'])}")
    print(f"  ensemble scheduling (server - Σ steps): {ms(split['scheduling'])}")


def print_floors(reference: str, floors: Sequence[StepFloor], compute: Mapping[str, float]) -> None:
    """Each step's floor next to its measured time (none when the scan was not assessed)."""
    if not floors:
        print(f"\nFloor, {reference}: none — the scan was not assessable, so the detector never ran")
        return
    print(
        f"\nFloor, {reference}: matmul {compute['matmul_flop_per_s_per_core'] / 1e9:.1f} GFLOP/s per core"
        f" × {compute['network_threads']:g} threads for the networks,"
        f" copy {compute['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write, one thread)"
    )
    rows = [
        [
            f.step,
            f"{f.flop / 1e9:.2f}",
            f"{f.bytes_moved / 1e6:.1f}",
            ms(f.floor_s),
            ms(f.served_s),
            ms(f.in_process_s),
            f"{f.served_s / f.floor_s:.0f}×" if f.served_s and f.floor_s else "-",
        ]
        for f in floors
    ]
    headers = ["step", "GFLOP", "MB moved", "floor", "served", "in-process", "served/floor"]
    print(text_table(headers, rows))


def print_sweep(scan: str, sweep: Sequence[ConcurrencyLevel]) -> None:
    """Throughput, latency and memory against the number of clients, per transport."""
    rows = [
        [
            lv.transport,
            lv.threads,
            lv.requests,
            lv.errors,
            f"{lv.throughput_per_s:.3f}",
            ms(lv.latency_s.p50 if lv.latency_s else None),
            ms(lv.latency_s.p95 if lv.latency_s else None),
            ms(lv.queue_s),
            f"{lv.peak_pss_mib:.0f}",
            f"{lv.peak_rss_mib:.0f}",
            f"{lv.peak_anon_mib:.0f}",
        ]
        for lv in sweep
    ]
    print(f"\nConcurrency, {scan} (latency ms; server tree peak memory MiB)")
    headers = [
        "transport",
        "clients",
        "requests",
        "errors",
        "scans/s",
        "p50",
        "p95",
        "queue",
        "peak PSS",
        "peak RSS",
        "peak anon",
    ]
    print(text_table(headers, rows))


def print_targets(targets: Sequence[TargetCheck]) -> None:
    """The summary: each target, its measured value, PASS / MISS."""
    print("\nTargets")
    rows = [[t.name, t.target, "-" if t.value is None else f"{t.value:.2f}", t.verdict] for t in targets]
    print(text_table(["target", "wanted", "measured", "verdict"], rows))


def plot(results: Mapping[str, Any], path: Path) -> bool:
    """Latency against slices per transport, throughput against clients; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[tuple[int, float, float]]] = {}
    for e in results["latency"]:
        if e["scan"].startswith("phantom"):
            series.setdefault(e["transport"], []).append(
                (e["slices"], e["latency_s"]["p50"], e["latency_s"]["p90"])
            )
    for e in results["in_process"]:
        if e["scan"].startswith("phantom"):
            series.setdefault("in-process", []).append(
                (e["slices"], e["latency_s"]["p50"], e["latency_s"]["p90"])
            )
    for name, points in series.items():
        x, p50, p90 = zip(*sorted(points))
        left.errorbar(
            x, p50, yerr=[np.zeros(len(x)), np.subtract(p90, p50)], marker="o", capsize=3, label=name
        )
    left.set(xlabel="slices (512×512)", ylabel="latency p50 (s), bar to p90", title="Latency per scan")
    left.legend()
    sweeps: dict[str, list[tuple[int, float]]] = {}
    for c in results["concurrency"]:
        sweeps.setdefault(c.get("transport", SWEEP_TRANSPORT_BEFORE), []).append(
            (c["threads"], c["throughput_per_s"])
        )
    for name, points in sweeps.items():
        right.plot(*zip(*sorted(points)), marker="o", label=name)
    threads = sorted({c["threads"] for c in results["concurrency"]})
    right.set(xlabel="concurrent clients", ylabel="scans / s", title="Throughput", xticks=threads)
    right.legend()
    right.set_ylim(bottom=0)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.suptitle(f"vfq serving benchmark — {results['git_commit']}, {results['machine']['cpu_model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def readme_block(results: Mapping[str, Any]) -> str:
    """The README's results section for a results file: targets, latency and concurrency tables."""
    m, settings = results["machine"], results["settings"]
    head = (
        f"Recorded {results['date']} at `{results['git_commit']}`, Triton {results['triton_version']}, "
        f"{m['cores']} cores {m['cpu_model']}, {m['ram_gib']} GiB; networks on "
        f"{settings.get('network_runtime', DEFAULT_RUNTIME)}; n = {settings['repeats']}."
    )
    targets = [
        [t["name"], t["target"], "-" if t["value"] is None else f"{t['value']:.2f}", t["verdict"]]
        for t in results["targets"]
    ]
    runs = [(e, e["transport"]) for e in results["latency"]] + [
        (e, "in-process") for e in results["in_process"]
    ]
    latency = [
        [e["scan"], mode, e["latency_s"]["n"], ms(e["latency_s"]["p50"]), ms(e["latency_s"]["p95"])]
        for e, mode in runs
    ]

    def pick(level: Mapping[str, Any], percentile: str) -> float | None:
        return level["latency_s"][percentile] if level["latency_s"] else None

    sweep = [
        [
            c.get("transport", SWEEP_TRANSPORT_BEFORE),
            c["threads"],
            f"{c['throughput_per_s']:.3f}",
            ms(pick(c, "p50")),
            ms(pick(c, "p95")),
            c["errors"],
            f"{c['peak_pss_mib']:.0f}" if "peak_pss_mib" in c else "-",  # older files have no PSS
        ]
        for c in results["concurrency"]
    ]
    return "\n\n".join(
        [
            head,
            markdown_table(["target", "wanted", "measured", "verdict"], targets),
            markdown_table(["scan", "transport", "n", "p50 ms", "p95 ms"], latency),
            markdown_table(
                ["transport", "clients", "scans/s", "p50 ms", "p95 ms", "errors", "peak PSS MiB"], sweep
            ),
        ]
    )
