"""The GPU check: one script a machine with a GPU runs in one go (≤ 10 minutes, no network).

On a 512 × 512 × 300 phantom (0.7 × 0.7 × 1 mm) it measures, with the card's name:

1. each network on the GPU — TensorRT plans when ``tensorrt`` is importable (built here, FP16,
   :mod:`vfq.export.tensorrt_plans`), and PyTorch on CUDA from the shipped checkpoints;
2. the in-process pipeline with the networks on the GPU (the numpy steps on the CPU), per step, and
   the two CT resamplings in PyTorch on the GPU (:mod:`vfq.torch_resampling`);
3. the whole pipeline through the embedded Triton (when ``nvidia-pytriton`` is installed), its
   network steps as python models running the checkpoints on CUDA
   (:class:`vfq.server.backend.TorchNetworkModel`), over gRPC (with system or CUDA shared memory, or
   plain), for each served set-up asked for (:class:`ServerVariant`): median latency with each
   step's server-side queue and compute time, and throughput over 1, 2, 4, 8 client threads — goals
   ≤ 0.2 s per scan and ≥ 30 scans/s at 8.

Start with ``--preflight`` on a new host: it says in seconds what is missing.

It installs nothing: what is missing is reported and skipped. Without a GPU it runs on the CPU and
says so (a dry run of the script itself). Results: printed, and written as JSON to ``--out``::

    python benchmarks/gpu_check.py --out out/gpu_check
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from timing import median_seconds

from vfq.cuda_runtime import CudaError, call, memcpy_kind, runtime

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "export" / "weights"
CHECKPOINTS = {
    "spine_localizer": WEIGHTS / "spine_localizer.pt",
    "vertebra_detector": WEIGHTS / "vertebra_detector.pt",
}

#: The python steps that resample the CT (:class:`vfq.server.backend.ResamplingStep`).
RESAMPLING_STEPS = ("preprocess", "straighten")
#: Triton's per-request compute phases (statistics API).
COMPUTE_FIELDS = ("compute_input", "compute_infer", "compute_output")
#: Client threads of the throughput sweep (the goal is at 8).
CONCURRENCY = (1, 2, 4, 8)
#: Slices of the phantom CT (512 × 512, 0.7 × 0.7 × 1 mm): the goal's scan.
SLICES = 300


#: How the client hands the CT to the server (:class:`ServerVariant`): system shared memory (the
#: product client's on the server's host), plain gRPC (a client elsewhere: in a cluster, every
#: client), or CUDA shared memory on GPU 0 (:class:`CudaShmCaller`).
TRANSPORTS = ("shm", "grpc", "cudashm")


@dataclass(frozen=True)
class ServerVariant:
    """How the served pipeline is set up: instances of each python step, threads of the numeric
    libraries in every step process (``None``: their default, one per core; see
    :class:`vfq.server.embedded.EmbeddedServer`), where preprocess and straighten resample the CT
    (their ``device`` parameter: ``numpy``, ``auto`` or a torch device; :mod:`vfq.torch_resampling`),
    and how the client hands over the CT (:data:`TRANSPORTS`)."""

    cpu_instances: int
    library_threads: int | None
    resample_device: str = "numpy"
    transport: str = "shm"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.transport == "cudashm" and self.resample_device == "numpy":
            raise ValueError(
                "the cudashm transport needs the CT steps on a torch device (cuda or auto), not numpy"
            )

    @classmethod
    def parse(cls, text: str) -> ServerVariant:
        """``"INSTANCES:THREADS[:DEVICE[:TRANSPORT]]"``, THREADS a number or ``default``; e.g. ``4:1``,
        ``8:default``, ``4:1:cuda``, ``8:1:cuda:cudashm``."""
        instances, threads, *rest = text.split(":")
        return cls(int(instances), None if threads == "default" else int(threads), *rest)

    def __str__(self) -> str:
        fields = [self.cpu_instances, self.library_threads or "default", self.resample_device, self.transport]
        return ":".join(str(field) for field in fields)


class CudaIpcRegion:
    """``byte_size`` bytes of memory on one GPU that another process can map (a CUDA IPC handle), as a
    client registers with Triton for CUDA shared memory, written from host arrays
    (cuda-python, :mod:`vfq.cuda_runtime`)."""

    def __init__(self, byte_size: int, device_id: int = 0) -> None:
        self.byte_size, self.device_id = byte_size, device_id
        call("cudaSetDevice", device_id)
        self.pointer = call("cudaMalloc", byte_size)
        self.raw_handle: bytes = call("cudaIpcGetMemHandle", self.pointer).reserved

    def write(self, array: np.ndarray) -> None:
        """Copy a C-contiguous host array to the region's start (returns once the copy is done)."""
        if not array.flags.c_contiguous or array.nbytes > self.byte_size:
            raise ValueError(f"need a C-contiguous array of at most {self.byte_size} bytes")
        call(
            "cudaMemcpy", self.pointer, array.ctypes.data, array.nbytes, memcpy_kind("cudaMemcpyHostToDevice")
        )

    def close(self) -> None:
        call("cudaFree", self.pointer)


class CudaShmCaller:
    """Calls ``vertebra_pipeline`` with the CT in CUDA shared memory on GPU 0, as a client on the
    server's host with a GPU would: each call copies the CT from host memory into the region (the
    client's share of the transfer, timed with the request), and the python steps read it there
    through DLPack (:class:`vfq.server.backend.ResamplingStep`), never on the host.

    Needs cuda-python (:class:`CudaIpcRegion`).
    """

    def __init__(self, url: str, byte_size: int) -> None:
        import tritonclient.grpc as grpcclient

        self.grpcclient = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.name = f"vfq_ct_cuda_{os.getpid()}_{threading.get_ident()}"
        self.region = CudaIpcRegion(byte_size)
        # tritonclient's gRPC call takes the handle base64-encoded
        handle = base64.b64encode(self.region.raw_handle)
        self.client.register_cuda_shared_memory(self.name, handle, self.region.device_id, byte_size)

    def __call__(self, array: np.ndarray, spacing_mm: tuple[float, ...]) -> int:
        """Analyse one CT; the number of vertebrae found."""
        from vfq.tensors import CT_INPUT, KEYPOINTS_OUTPUT, PIPELINE_MODEL, SPACING_INPUT

        self.region.write(array)
        ct_input = self.grpcclient.InferInput(CT_INPUT, list(array.shape), "INT16")
        ct_input.set_shared_memory(self.name, array.nbytes)
        spacing_input = self.grpcclient.InferInput(SPACING_INPUT, [3], "FP32")
        spacing_input.set_data_from_numpy(np.asarray(spacing_mm, dtype=np.float32))
        answer = self.client.infer(
            PIPELINE_MODEL,
            [ct_input, spacing_input],
            outputs=[self.grpcclient.InferRequestedOutput(KEYPOINTS_OUTPUT)],
            client_timeout=120,
        )
        return int(answer.as_numpy(KEYPOINTS_OUTPUT).shape[0])

    def close(self) -> None:
        self.client.unregister_cuda_shared_memory(self.name)
        self.region.close()
        self.client.close()


def phantom_ct(slices: int = SLICES):
    """The whole-spine phantom of ``slices`` 512 × 512 slices at 0.7 × 0.7 × 1 mm."""
    from vfq.phantoms import Acquisition, generate, sample_spec
    from vfq.phantoms.generate import FieldOfView

    acquisition = Acquisition(
        spacing=(1.0, 0.7, 0.7), slice_thickness=1.0, matrix=(512, 512), n_slices=slices
    )
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

    def run(name: str, tensor: np.ndarray, half: bool = False) -> Any:
        with torch.inference_mode(), torch.autocast(device.split(":")[0], torch.float16, enabled=half):
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
    if device.startswith("cuda"):  # FP16 as the TensorRT plans run, here through autocast
        for name, tensor in (
            ("spine_localizer", coarse.tensor),
            ("vertebra_detector", detector_input.tensor),
        ):
            steps[f"{name} (torch fp16)"] = median_seconds(
                lambda n=name, t=tensor: run(n, t, True), repeats, sync
            )
        from vfq.torch_resampling import TorchResampler

        resampler = TorchResampler(device)  # each call returns numpy arrays: no synchronisation needed
        steps["preprocess (torch, GPU)"] = median_seconds(lambda: resampler.localizer_input(ct), repeats)
        steps["straighten (torch, GPU)"] = median_seconds(
            lambda: to_detector_input(ct, curve, resampler.sagittal), repeats
        )
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
        "detector_input": detector_input.tensor.shape,
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


def gpu_repository(
    out: Path, device: str, cpu_instances: int | None = None, resample_device: str = "numpy"
) -> Path:
    """The embedded repository with its two network steps running the checkpoints on ``device``,
    ``cpu_instances`` instances of each python step (default: as configured), and the resamplings of
    preprocess and straighten on ``resample_device`` (their ``device`` parameter)."""
    from google.protobuf import text_format

    from vfq.export.repository import NETWORKS, load_config, write_repository

    repository = write_repository("embedded", out, step_instances=cpu_instances)
    for name in RESAMPLING_STEPS:
        config = load_config(repository / name / "config.pbtxt")
        config.parameters["device"].string_value = resample_device
        (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
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


def server_step_seconds(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean queue and compute (input + infer + output) seconds per request of each model between two
    ``get_inference_statistics(as_json=True)`` answers (read as the serving benchmark reads them)."""
    from serving.figures import counters_delta, per_event, triton_counters  # beside this script

    seconds = per_event(counters_delta(triton_counters(before), triton_counters(after)), 1e-9)
    models = {key.split("/")[0] for key in seconds if key.endswith("/queue")}
    return {
        model: {
            "queue_s": seconds[f"{model}/queue"],
            "compute_s": sum(seconds.get(f"{model}/{part}", 0.0) for part in COMPUTE_FIELDS),
        }
        for model in sorted(models)
    }


def through_triton(
    ct,
    device: str,
    repeats: int,
    sweep_requests: int,
    clients: tuple[int, ...],
    workdir: Path,
    log: Path,
    variant: ServerVariant,
) -> dict[str, Any]:
    """Latency (with each step's server-side time) and a throughput sweep over ``clients`` client
    threads, ``sweep_requests`` scans each, through the embedded Triton, networks on ``device``."""
    import tritonclient.grpc as grpcclient

    from vfq.client import VfqClient
    from vfq.server.embedded import EmbeddedServer

    @contextlib.contextmanager
    def caller(url: str) -> Iterator[Callable[[], int]]:
        """A client of the variant's transport: a call analyses the CT, returns the vertebrae found."""
        if variant.transport == "cudashm":
            cuda_client = CudaShmCaller(url, ct.array.nbytes)
            try:
                yield lambda: cuda_client(ct.array, ct.geometry.spacing)
            finally:
                cuda_client.close()
        else:
            with VfqClient(url, shared_memory=variant.transport == "shm", timeout_s=120) as client:
                yield lambda: len(client.analyze_array(ct.array, ct.geometry).vertebrae)

    def session(url: str, requests: int, barrier: threading.Barrier | None) -> list[tuple[float, float]]:
        """One client: a first request (its shared memory registered), then, once every client of the
        level has got there, ``requests`` timed ones: their (start, end) times."""
        with caller(url) as request:
            request()
            if barrier is not None:
                barrier.wait()
            spans = []
            for _ in range(requests):
                start = time.perf_counter()
                request()
                spans.append((start, time.perf_counter()))
        return spans

    repository = gpu_repository(
        workdir / "repository", device, variant.cpu_instances, variant.resample_device
    )
    result: dict[str, Any] = {"variant": variant.__dict__}
    # a CT in GPU memory reaches the python steps through Triton's CUDA memory pool on GPU 0: room
    # for it in both CT steps, for every request of the sweep's largest level at once
    pool = [f"--cuda-memory-pool-byte-size=0:{2 * max(clients) * ct.array.nbytes}"]
    extra_args = pool if variant.transport == "cudashm" else []
    with EmbeddedServer(
        repository, log=log, library_threads=variant.library_threads, extra_args=extra_args
    ) as server:
        result["server_allocator"] = server.preload or "glibc malloc"  # tcmalloc where the host has it
        # every instance answers before anything is timed: a step's first request on a fresh instance
        # (CUDA kernels loaded, buffers faulted in) is not what a running server costs
        with ThreadPoolExecutor(max(clients)) as pool:
            list(pool.map(lambda _: session(server.grpc_url, 1, None), range(max(clients))))
        stats = grpcclient.InferenceServerClient(server.grpc_url)
        with caller(server.grpc_url) as request:
            result["vertebrae"] = request()
            before = stats.get_inference_statistics(as_json=True)
            result["latency_s"] = median_seconds(request, repeats)
            result["server_steps"] = server_step_seconds(before, stats.get_inference_statistics(as_json=True))
        stats.close()
        sweep = {}
        for threads in clients:
            barrier = threading.Barrier(threads)
            with ThreadPoolExecutor(threads) as pool:
                level = [
                    pool.submit(session, server.grpc_url, sweep_requests, barrier) for _ in range(threads)
                ]
                runs = [future.result() for future in level]
            spans = [span for run in runs for span in run]
            latencies = [end - start for start, end in spans]
            elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
            sweep[threads] = {
                "scans_per_s": len(spans) / elapsed,
                "latency_p50_s": float(np.median(latencies)),
                "latency_p90_s": float(np.percentile(latencies, 90)),
            }
            print(f"  concurrency {threads}: {sweep[threads]}", flush=True)
        result["sweep"] = sweep
    return result


@dataclass(frozen=True)
class Requirement:
    """One thing the check needs where it runs, and whether it is there."""

    name: str
    found: bool
    detail: str
    required: bool = True


def _installed(distribution: str, module: str) -> str | None:
    """The installed version of ``distribution`` when its module ``module`` can be imported, else
    ``None``."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # unpacked without its metadata
        return "present"


def _missing_libraries(binary: Path) -> list[str]:
    """The shared libraries the dynamic loader cannot find for ``binary`` (``ldd``) on the library path
    the server runs with (:func:`vfq.server.embedded.server_library_path`); none where ``ldd`` is
    missing."""
    from vfq.server.embedded import server_library_path

    if shutil.which("ldd") is None:
        return []
    env = {**os.environ, "LD_LIBRARY_PATH": server_library_path()}
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
    return [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]


def requirements(variants: list[ServerVariant]) -> list[Requirement]:
    """What the sections need here, found or not (nothing is started): PyTorch; for the served
    ``variants`` numpy < 2 (the python-backend stub), tritonclient, prometheus-client (the server's
    counters), nvidia-pytriton with the stub of this Python and every library both load; cuda-python
    for a ``cudashm`` variant, a GPU for a variant that resamples on one. A GPU otherwise (without one
    the run is a dry run on the CPU), tcmalloc and TensorRT are reported, not required."""
    import torch

    from vfq.server.embedded import ALLOCATORS, allocator_preload, python_stub, triton_home

    cuda = torch.cuda.is_available()
    card = torch.cuda.get_device_name(0) if cuda else "none: a dry run on the CPU"
    tensorrt = _installed("tensorrt", "tensorrt")
    found = [
        Requirement("torch", True, torch.__version__),
        Requirement("GPU", cuda, card, required=False),
        Requirement("tensorrt", tensorrt is not None, tensorrt or "none: no plans built", required=False),
    ]
    numpy_major = int(np.__version__.split(".")[0])
    found.append(Requirement("numpy < 2 (python-backend stub)", numpy_major < 2, np.__version__))
    client = _installed("tritonclient", "tritonclient.grpc")
    rapidjson = importlib.util.find_spec("rapidjson") is not None
    detail = (client or "missing") + ("" if rapidjson else "; its python-rapidjson missing")
    found.append(Requirement("tritonclient", client is not None and rapidjson, detail))
    metrics = _installed("prometheus-client", "prometheus_client")
    found.append(Requirement("prometheus-client", metrics is not None, metrics or "missing"))
    if importlib.util.find_spec("pytriton") is None:
        found.append(Requirement("nvidia-pytriton", False, "missing: pip install --no-deps nvidia-pytriton"))
    else:
        home = triton_home()
        stub = python_stub(home)
        binaries = {
            "tritonserver": home / "bin" / "tritonserver",
            f"python-backend stub for Python {stub.parent.name}": stub,
        }
        for name, binary in binaries.items():
            if not binary.is_file():
                found.append(Requirement(name, False, f"no {binary}"))
                continue
            missing = _missing_libraries(binary)
            detail = "not found: " + ", ".join(missing) if missing else "every library found"
            found.append(Requirement(name, not missing, detail))
    preload = allocator_preload(ALLOCATORS[0])
    found.append(
        Requirement("tcmalloc", preload is not None, preload or "none: glibc malloc", required=False)
    )
    if any(variant.transport == "cudashm" for variant in variants):
        try:
            found.append(Requirement("cuda-python (CUDA shared memory)", True, runtime().__name__))
        except CudaError as error:
            found.append(Requirement("cuda-python (CUDA shared memory)", False, str(error)))
    if any(variant.resample_device.startswith("cuda") for variant in variants):
        found.append(Requirement("GPU for the CT steps (device cuda)", cuda, card))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check"))
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed runs of each in-process step, and scans"
    )
    parser.add_argument("--sweep-requests", type=int, default=4, help="timed scans per client in the sweep")
    parser.add_argument(
        "--clients",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=CONCURRENCY,
        help="client counts of the sweep (default 1,2,4,8: the goal is at 8)",
    )
    parser.add_argument(
        "--slices", type=int, default=SLICES, help="slices of the phantom CT (default 300: the goal's scan)"
    )
    parser.add_argument(
        "--variant",
        type=ServerVariant.parse,
        action="append",
        help="served set-up INSTANCES:THREADS[:DEVICE[:TRANSPORT]] (instances of each python step, "
        "threads of the numeric libraries in each step process or 'default', where the CT is "
        "resampled: numpy, auto or a torch device, default numpy; how the client hands it over: shm, "
        "grpc or cudashm, default shm); repeat to compare, default 4:1",
    )
    parser.add_argument(
        "--preflight",
        action="store_true",
        help="only say what the asked sections need here and whether it is there (seconds; exit 1 when "
        "something required is missing)",
    )
    args = parser.parse_args(argv)
    args.variant = args.variant or [ServerVariant(4, 1)]
    needs = requirements(args.variant)
    for need in needs:
        verdict = "ok" if need.found else "MISSING" if need.required else "absent"
        print(f"{verdict:8} {need.name}: {need.detail}", flush=True)
    if args.preflight:
        return 0 if all(need.found or not need.required for need in needs) else 1
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = (
        torch.cuda.get_device_name(0) if device == "cuda" else f"no GPU: CPU dry run ({platform.processor()})"
    )
    report: dict[str, Any] = {
        "card": card,
        "compute_capability": torch.cuda.get_device_capability(0) if device == "cuda" else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "requirements": {need.name: need.detail for need in needs},
        "slices": args.slices,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"card: {card}", flush=True)
    ct = phantom_ct(args.slices)
    with tempfile.TemporaryDirectory(prefix="vfq-gpu-check-") as tmp:
        sections: dict[str, Callable[[], Any]] = {
            "in_process": lambda: in_process(ct, device, args.repeats),
            "tensorrt": lambda: (
                tensorrt_plans(ct, args.repeats, Path(tmp))
                if device == "cuda" and importlib.util.find_spec("tensorrt")
                else "skipped: no TensorRT or no GPU"
            ),
            **{
                f"triton {variant}": (
                    lambda variant=variant, index=index: (
                        through_triton(
                            ct,
                            device,
                            args.repeats,
                            args.sweep_requests,
                            args.clients,
                            Path(tmp) / str(index),
                            args.out / f"tritonserver{index}.log",
                            variant,
                        )
                        if importlib.util.find_spec("pytriton")
                        else "skipped: nvidia-pytriton is not installed"
                    )
                )
                for index, variant in enumerate(args.variant)
            },
        }
        for name, section in sections.items():
            try:
                report[name] = section()
            except Exception as error:  # a broken section is reported, the next one still runs
                traceback.print_exc()
                report[name] = f"failed: {type(error).__name__}: {error}"
            print(f"{name}:", json.dumps(report[name], indent=1, default=str), flush=True)
            (args.out / "gpu_check.json").write_text(
                json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
