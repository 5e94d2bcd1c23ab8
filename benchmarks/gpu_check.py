"""The GPU check: one script a machine with a GPU runs in one go (≤ 10 minutes, no network).

On a 512 × 512 × 300 phantom (0.7 × 0.7 × 1 mm) it measures, with the card's name:

1. each network on the GPU — TensorRT plans when ``tensorrt`` is importable (built here, FP16,
   :mod:`vfq.export.tensorrt_plans`), and PyTorch on CUDA from the shipped checkpoints;
2. the in-process pipeline with the networks on the GPU (the numpy steps on the CPU), per step;
3. the whole pipeline through the embedded Triton (when ``nvidia-pytriton`` is installed), its
   network steps as python models running the checkpoints on CUDA
   (:class:`vfq.server.backend.TorchNetworkModel`), over gRPC with shared memory: median latency and
   throughput at concurrency 8 — goals ≤ 0.2 s per scan and ≥ 30 scans/s.

It installs nothing: what is missing is reported and skipped. Without a GPU it runs on the CPU and
says so (a dry run of the script itself). Results: printed, and written as JSON to ``--out``::

    python benchmarks/gpu_check.py --out out/gpu_check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "export" / "weights"
CHECKPOINTS = {
    "spine_localizer": WEIGHTS / "spine_localizer.pt",
    "vertebra_detector": WEIGHTS / "vertebra_detector.pt",
}


def median_seconds(
    run: Callable[[], Any], repeats: int, synchronize: Callable[[], None] = lambda: None
) -> float:
    """Median wall time (s) of ``run`` over ``repeats`` calls after one warm-up call."""
    run()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def phantom_ct():
    from vfq.phantoms import Acquisition, generate, sample_spec
    from vfq.phantoms.generate import FieldOfView

    acquisition = Acquisition(spacing=(1.0, 0.7, 0.7), slice_thickness=1.0, matrix=(512, 512), n_slices=300)
    return generate(sample_spec(2024, FieldOfView.WHOLE_SPINE, acquisition)).ct


def torch_networks(device: str) -> dict[str, Any]:
    from vfq.export.networks import load_checkpoint

    return {
        name: load_checkpoint(path, map_location=device).model.eval() for name, path in CHECKPOINTS.items()
    }


def in_process(ct, device: str, repeats: int) -> dict[str, Any]:
    """Per-step and end-to-end medians of the in-process pipeline, networks in PyTorch on ``device``."""
    import torch

    from vfq.pipeline import analyze
    from vfq.preprocess import spine_curve_from_heatmap, to_detector_input, to_localizer_grid

    networks = torch_networks(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(name: str, tensor: np.ndarray) -> Any:
        with torch.inference_mode():
            out = networks[name](torch.from_numpy(tensor).to(device))
        out = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in out]

    coarse = to_localizer_grid(ct)
    heatmap = run("spine_localizer", coarse.tensor)[0]
    curve = spine_curve_from_heatmap(heatmap[0, 0], coarse.grid)
    detector_input = to_detector_input(ct, curve)
    steps = {
        "preprocess": median_seconds(lambda: to_localizer_grid(ct), repeats),
        "spine_localizer (torch)": median_seconds(
            lambda: run("spine_localizer", coarse.tensor), repeats, sync
        ),
        "straighten": median_seconds(lambda: to_detector_input(ct, curve), repeats),
        "vertebra_detector (torch)": median_seconds(
            lambda: run("vertebra_detector", detector_input.tensor), repeats, sync
        ),
    }
    total = median_seconds(
        lambda: analyze(ct, lambda t: run("spine_localizer", t)[0], lambda t: run("vertebra_detector", t)),
        repeats,
    )
    found = analyze(
        ct, lambda t: run("spine_localizer", t)[0], lambda t: run("vertebra_detector", t)
    ).vertebrae
    return {
        "steps_s": steps,
        "end_to_end_s": total,
        "vertebrae": len(found),
        "localizer_input": coarse.tensor.shape,
    }


def tensorrt_plans(ct, repeats: int, workdir: Path) -> dict[str, Any]:
    """FP16 plans built here, timed with their own runner (host↔device copies included)."""
    from vfq.export import tensorrt_plans as plans
    from vfq.preprocess import to_localizer_grid

    tensor = to_localizer_grid(ct).tensor
    result: dict[str, Any] = {"environment": plans.current_environment().__dict__}
    for name, profile in plans.PROFILES.items():
        onnx = ROOT / "model_repository" / name / "1" / "model.onnx"
        plan = workdir / f"{name}.plan"
        start = time.perf_counter()
        plans.build_plan(onnx, plan, profile, "fp16", workdir / "timing.cache")
        result[f"{name} build_s"] = time.perf_counter() - start
        example = tensor if name == "spine_localizer" else np.zeros(profile.opt, np.float32)
        result[f"{name} run_s"] = median_seconds(lambda p=plan, x=example: plans.run_plan(p, x), repeats)
    return result


def gpu_repository(out: Path, device: str) -> Path:
    """The embedded repository with its two network steps running the checkpoints on ``device``."""
    from google.protobuf import text_format

    from vfq.export.repository import NETWORKS, load_config, write_repository

    repository = write_repository("embedded", out)
    for name in NETWORKS:
        config = load_config(repository / name / "config.pbtxt")
        config.ClearField("parameters")
        config.parameters["checkpoint"].string_value = str(CHECKPOINTS[name])
        config.parameters["device"].string_value = device
        (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
        (repository / name / "1" / "model.py").write_text(
            "from vfq.server.backend import TorchNetworkModel as TritonPythonModel\n\n"
            '__all__ = ["TritonPythonModel"]\n',
            encoding="utf-8",
        )
    return repository


def through_triton(ct, device: str, repeats: int, workdir: Path) -> dict[str, Any]:
    """Latency and throughput at concurrency 8 through the embedded Triton, networks on ``device``."""
    from vfq.client import VfqClient
    from vfq.server.embedded import EmbeddedServer

    def request(client: VfqClient) -> int:
        return len(client.analyze_array(ct.array, ct.geometry).vertebrae)

    repository = gpu_repository(workdir / "repository", device)
    with EmbeddedServer(repository, log=workdir / "tritonserver.log") as server:
        with VfqClient(server.grpc_url, shared_memory=True, timeout_s=120) as client:
            latency = median_seconds(lambda: request(client), repeats)
            vertebrae = request(client)

        def worker(_: int) -> int:
            with VfqClient(server.grpc_url, shared_memory=True, timeout_s=120) as own:
                return sum(request(own) > 0 for _ in range(4))

        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            answered = sum(pool.map(worker, range(8)))
        throughput = answered / (time.perf_counter() - start)
    return {"latency_s": latency, "vertebrae": vertebrae, "throughput_scans_per_s_at_8": throughput}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check"))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = (
        torch.cuda.get_device_name(0) if device == "cuda" else f"no GPU: CPU dry run ({platform.processor()})"
    )
    report: dict[str, Any] = {
        "card": card,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(f"card: {card}")
    ct = phantom_ct()
    report["in_process"] = in_process(ct, device, args.repeats)
    print(json.dumps(report["in_process"], indent=1, default=str))
    with tempfile.TemporaryDirectory(prefix="vfq-gpu-check-") as tmp:
        if device == "cuda" and importlib.util.find_spec("tensorrt"):
            report["tensorrt"] = tensorrt_plans(ct, args.repeats, Path(tmp))
        else:
            report["tensorrt"] = "skipped: no TensorRT or no GPU"
        print("tensorrt:", json.dumps(report["tensorrt"], indent=1, default=str))
        if importlib.util.find_spec("pytriton"):
            report["triton"] = through_triton(ct, device, args.repeats, Path(tmp))
        else:
            report["triton"] = "skipped: nvidia-pytriton is not installed"
        print("triton:", json.dumps(report["triton"], indent=1, default=str))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(
        json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
