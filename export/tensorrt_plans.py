"""TensorRT plans for the gpu target: built where the server runs, verified, tied to what built them.

A plan only runs on the TensorRT version and GPU architecture that built it, so plans are built in the
server's own container (NGC ``tritonserver:24.10-py3`` = Triton 2.51, TensorRT 10.5) on the target
GPU — at start-up by the Helm chart's init container, cached on a volume — never shipped.

Optimization profiles cover the shapes the pipeline produces (:mod:`vfq.tensors`; all multiples of 16):

* ``spine_localizer`` ``CT_COARSE [1, 1, Z, Y, X]`` on the 4 mm grid: min ``16³``, opt
  ``(80, 96, 96)`` (a 512 × 512 × 300 CT at 0.7 × 0.7 × 1 mm), max ``(528, 208, 208)`` — the largest
  scan the server accepts (:data:`vfq.preprocess.MAX_EXTENT_MM`, 2048 × 768 × 768 mm) with its
  rounding; :data:`LOCALIZER_PROFILE`.
* ``vertebra_detector`` ``SAGITTAL [1, 1, S, 96]``: S from 16 to 3072 rows (mm of spine), opt 400 —
  the curve lies within the scan, so it is at most about 1.5 × its 2048 mm height.

Plans are built with the TensorRT Python API (:func:`build_plan`) or, as an alternative, TensorRT's
own ``trtexec`` (:func:`trtexec_command`; ``vfq-repository build-plans --builder trtexec``): the same
profile, precision, workspace and timing cache, and the same verification and record after.

Each plan gets ``model.plan.json`` beside it: TensorRT version, GPU name and compute capability,
precision, the ONNX file's sha256 and the profiles. :func:`check_repository` refuses to serve a plan
whose record does not match the TensorRT and GPU at hand.

Verification (:func:`verify_plan`) runs the plan and ONNX Runtime on the localizer and detector inputs
of a phantom CT (the same preprocessing the server does) and compares every output:
:data:`TOLERANCES` (FP32: 1e-3 abs on probabilities and logits, 0.01 px on offsets; FP16: 0.02,
0.25 px, 0.1).

Needs ``tensorrt`` and ``cuda-python`` (:mod:`vfq.cuda_runtime`), both in the derived image; nothing
here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfq.errors import VfqError
from vfq.export.repository import NETWORKS, ONNX_FILE, PLAN_BUILDERS, PLAN_FILE
from vfq.tensors import (
    DETECTOR_HEATMAP,
    DETECTOR_INPUT,
    DETECTOR_LEVELS,
    DETECTOR_MODEL,
    DETECTOR_OFFSETS,
    DETECTOR_WIDTH_PX,
    LOCALIZER_INPUT,
    LOCALIZER_MODEL,
    LOCALIZER_OUTPUT,
)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile of a network's single input."""

    input: str
    min: Shape
    opt: Shape
    max: Shape

    def covers(self, shape: Shape) -> bool:
        """Whether an input of ``shape`` can run on a plan with this profile."""
        return len(shape) == len(self.min) and all(
            lo <= n <= hi for lo, n, hi in zip(self.min, shape, self.max)
        )


LOCALIZER_PROFILE = Profile(LOCALIZER_INPUT, (1, 1, 16, 16, 16), (1, 1, 80, 96, 96), (1, 1, 528, 208, 208))
DETECTOR_PROFILE = Profile(
    DETECTOR_INPUT,
    (1, 1, 16, DETECTOR_WIDTH_PX),
    (1, 1, 400, DETECTOR_WIDTH_PX),
    (1, 1, 3072, DETECTOR_WIDTH_PX),
)
PROFILES = {LOCALIZER_MODEL: LOCALIZER_PROFILE, DETECTOR_MODEL: DETECTOR_PROFILE}

#: Largest allowed ``|plan - ONNX Runtime|`` per output and precision.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {LOCALIZER_OUTPUT: 1e-3, DETECTOR_HEATMAP: 1e-3, DETECTOR_OFFSETS: 0.01, DETECTOR_LEVELS: 1e-3},
    "fp16": {LOCALIZER_OUTPUT: 0.02, DETECTOR_HEATMAP: 0.02, DETECTOR_OFFSETS: 0.25, DETECTOR_LEVELS: 0.1},
}
#: Builder workspace (bytes).
WORKSPACE_BYTES = 4 << 30
#: Where TensorRT's containers keep ``trtexec`` when it is not on ``PATH``.
TRTEXEC_IN_CONTAINERS = Path("/usr/src/tensorrt/bin/trtexec")


class PlanError(VfqError):
    """A plan cannot be built, does not verify, or was built for another TensorRT or GPU."""


@dataclass(frozen=True)
class BuildEnvironment:
    """What a plan is tied to."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


@dataclass(frozen=True)
class PlanRecord:
    """``model.plan.json``: how and for what a plan was built."""

    environment: BuildEnvironment
    precision: str
    onnx_sha256: str
    profile: Profile

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> PlanRecord:
        data = json.loads(path.read_text(encoding="utf-8"))
        profile = {k: tuple(v) if isinstance(v, list) else v for k, v in data["profile"].items()}
        return cls(
            BuildEnvironment(**data["environment"]),
            data["precision"],
            data["onnx_sha256"],
            Profile(**profile),
        )


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise PlanError(
            "TensorRT is not installed here: build plans inside the server's container (NGC tritonserver "
            "24.10 with the derived image's tensorrt package) on the GPU that will serve them"
        ) from None
    return tensorrt


def current_environment() -> BuildEnvironment:
    """The TensorRT version and the first GPU (name, compute capability) of this machine."""
    version = _tensorrt().__version__
    try:
        query = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"]
        name, capability = subprocess.run(query, capture_output=True, text=True, check=True).stdout.split(",")
    except (OSError, subprocess.CalledProcessError, ValueError) as error:
        raise PlanError(f"cannot query the GPU with nvidia-smi: {error}") from None
    return BuildEnvironment(version, name.strip(), capability.strip())


def plan_mismatch(record: PlanRecord, environment: BuildEnvironment) -> str | None:
    """Why a plan of ``record`` cannot run in ``environment`` (``None`` if it can)."""
    built, here = record.environment, environment
    if (built.tensorrt_version, built.compute_capability) == (here.tensorrt_version, here.compute_capability):
        return None
    return (
        f"built with TensorRT {built.tensorrt_version} for compute capability {built.compute_capability} "
        f"({built.gpu_name}); this server has TensorRT {here.tensorrt_version} on compute capability "
        f"{here.compute_capability} ({here.gpu_name}). Rebuild it here: vfq-repository build-plans"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_plan(onnx: Path, plan: Path, profile: Profile, precision: str, timing_cache: Path | None) -> None:
    """Build ``plan`` from ``onnx`` with one optimization profile (TensorRT Python API)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanError(f"TensorRT cannot parse {onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    optimization.set_shape(profile.input, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimization)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanError(f"TensorRT failed to build a plan from {onnx} (see its log above)")
    plan.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))


def trtexec_command(
    trtexec: Path, onnx: Path, plan: Path, profile: Profile, precision: str, timing_cache: Path | None
) -> list[str]:
    """The ``trtexec`` command (TensorRT 10 options) that builds what :func:`build_plan` builds."""
    shape = "x".join
    command = [
        str(trtexec),
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        *(
            f"--{which}Shapes={profile.input}:{shape(str(n) for n in dims)}"
            for which, dims in (("min", profile.min), ("opt", profile.opt), ("max", profile.max))
        ),
        f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}",  # MiB
        "--skipInference",
    ]
    if precision == "fp16":
        command.append("--fp16")
    if timing_cache is not None:
        command.append(f"--timingCacheFile={timing_cache}")  # read if present, then written
    return command


def find_trtexec(given: Path | None = None) -> Path:
    """``given``, else ``trtexec`` on ``PATH``, else where TensorRT's containers keep it."""
    candidate = given or Path(shutil.which("trtexec") or TRTEXEC_IN_CONTAINERS)
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise PlanError(
            f"no trtexec at {candidate}: pass its path (--trtexec), or build with the Python API "
            "(--builder api)"
        )
    return candidate


def build_plan_with_trtexec(
    trtexec: Path, onnx: Path, plan: Path, profile: Profile, precision: str, timing_cache: Path | None
) -> None:
    """Build ``plan`` as :func:`build_plan` does, with ``trtexec``. Its warnings and errors go to stderr
    as they come (as TensorRT's own logger's do in :func:`build_plan`); :class:`PlanError` with the
    end of its output when it builds no plan."""
    command = trtexec_command(trtexec, onnx, plan, profile, precision, timing_cache)
    plan.unlink(missing_ok=True)  # a plan of an earlier build must not pass for this one's
    tail: deque[str] = deque(maxlen=15)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            if "[W]" in line or "[E]" in line:
                print(line, end="", file=sys.stderr)
    if process.returncode != 0 or not plan.is_file() or plan.stat().st_size == 0:
        output = "\n".join(tail)
        raise PlanError(f"trtexec failed to build a plan from {onnx} (exit {process.returncode}):\n{output}")


def run_plan(plan: Path, tensor: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``plan`` once on ``tensor`` (its single input) on GPU 0; outputs by name."""
    trt = _tensorrt()
    from vfq.cuda_runtime import call, memcpy_kind, runtime

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    context.set_input_shape(inputs[0], tensor.shape)
    host = {inputs[0]: np.ascontiguousarray(tensor, np.float32)}
    for name in names:
        if name not in host:
            host[name] = np.empty(tuple(context.get_tensor_shape(name)), np.float32)
    device = {}
    try:
        for name, array in host.items():
            device[name] = call("cudaMalloc", array.nbytes)
        source = host[inputs[0]]
        call(
            "cudaMemcpy",
            device[inputs[0]],
            source.ctypes.data,
            source.nbytes,
            memcpy_kind("cudaMemcpyHostToDevice"),
        )
        for name, pointer in device.items():
            context.set_tensor_address(name, int(pointer))
        stream = call("cudaStreamCreate")
        if not context.execute_async_v3(stream):
            raise PlanError(f"TensorRT could not run {plan}")
        call("cudaStreamSynchronize", stream)
        call("cudaStreamDestroy", stream)
        to_host = memcpy_kind("cudaMemcpyDeviceToHost")
        outputs = {}
        for name in names:
            if name not in inputs:
                call("cudaMemcpy", host[name].ctypes.data, device[name], host[name].nbytes, to_host)
                outputs[name] = host[name]
        return outputs
    finally:  # unchecked: an error here must not hide the one that got us here
        for pointer in device.values():
            runtime().cudaFree(pointer)


def verification_inputs(source: Path) -> dict[str, np.ndarray]:
    """Each network's input on a phantom CT (512 × 512 × 300, 0.7 × 0.7 × 1 mm), made by the server's
    own steps; the detector's from the heatmap of the ``source`` repository's localizer on ONNX Runtime."""
    from vfq.phantoms import Acquisition, generate, sample_spec
    from vfq.phantoms.generate import FieldOfView
    from vfq.runtime import OnnxRunner
    from vfq.server import steps

    spec = sample_spec(
        2024, FieldOfView.WHOLE_SPINE, Acquisition(spacing=(1.0, 0.7, 0.7), matrix=(512, 512), n_slices=300)
    )
    ct = generate(spec).ct
    spacing = np.float32(ct.geometry.spacing)
    coarse = steps.preprocess(ct.array, spacing)[LOCALIZER_INPUT]
    heatmap = OnnxRunner(source / LOCALIZER_MODEL / "1" / ONNX_FILE)(coarse)[0]
    return {
        LOCALIZER_MODEL: coarse,
        DETECTOR_MODEL: steps.straighten(ct.array, spacing, heatmap)[DETECTOR_INPUT],
    }


def verify_plan(plan: Path, onnx: Path, tensor: np.ndarray, precision: str) -> list[str]:
    """Compare ``plan`` with ONNX Runtime on ``tensor``; :class:`PlanError` beyond :data:`TOLERANCES`."""
    from vfq.runtime import OnnxRunner

    runner = OnnxRunner(onnx)
    expected = dict(zip(runner.output_names, runner(tensor)))
    got = run_plan(plan, tensor)
    lines = []
    for name, reference in expected.items():
        error = float(np.abs(got[name] - reference).max())
        limit = TOLERANCES[precision][name]
        lines.append(
            f"  {plan.parent.parent.name} {name}: max |plan - onnxruntime| = {error:.2e} (limit {limit:g})"
        )
        if not error <= limit:
            raise PlanError(
                f"{plan}: {name} differs from ONNX Runtime by {error:.3g} > {limit:g} ({precision})"
            )
    return lines


def build_repository(
    source: Path,
    out: Path,
    precision: str,
    timing_cache: Path | None,
    builder: str = "api",
    trtexec: Path | None = None,
) -> Iterator[str]:
    """Copy the gpu repository ``source`` to ``out`` and build (with ``builder``, one of
    :data:`~vfq.export.repository.PLAN_BUILDERS`; ``trtexec`` as :func:`find_trtexec` finds it),
    verify and record each network's plan; a plan already in ``out`` whose record matches (same ONNX,
    precision, TensorRT, GPU) is kept."""
    if builder not in PLAN_BUILDERS:
        raise ValueError(f"builder must be one of {', '.join(PLAN_BUILDERS)}; got {builder!r}")
    program = find_trtexec(trtexec) if builder == "trtexec" else None
    environment = current_environment()
    if not out.exists():
        shutil.copytree(source, out)
    where = f"{environment.gpu_name} with TensorRT {environment.tensorrt_version}"
    inputs: dict[str, np.ndarray] | None = None
    for model in NETWORKS:
        onnx, plan = source / model / "1" / ONNX_FILE, out / model / "1" / PLAN_FILE
        record = PlanRecord(environment, precision, sha256(onnx), PROFILES[model])
        record_path = plan.with_name(PLAN_FILE + ".json")
        if plan.is_file() and record_path.is_file() and PlanRecord.read(record_path) == record:
            yield f"{model}: the cached plan for {where} is kept"
            continue
        yield f"{model}: building a {precision} plan on {where}" + (f" with {program}" if program else "")
        if program is None:
            build_plan(onnx, plan, record.profile, precision, timing_cache)
        else:
            build_plan_with_trtexec(program, onnx, plan, record.profile, precision, timing_cache)
        inputs = inputs or verification_inputs(source)
        yield from verify_plan(plan, onnx, inputs[model], precision)
        record_path.write_text(record.to_json(), encoding="utf-8")


def check_repository(repository: Path) -> Iterator[str]:
    """Refuse (:class:`PlanError`) a repository whose plans are missing or were built elsewhere."""
    environment = current_environment()
    for model in NETWORKS:
        plan = repository / model / "1" / PLAN_FILE
        record_path = plan.with_name(PLAN_FILE + ".json")
        if not plan.is_file() or not record_path.is_file():
            raise PlanError(
                f"{model}: no plan with its record in {plan.parent}; run vfq-repository build-plans"
            )
        reason = plan_mismatch(PlanRecord.read(record_path), environment)
        if reason:
            raise PlanError(f"{model}: the plan in {plan.parent} was {reason}")
        yield f"{model}: plan matches TensorRT {environment.tensorrt_version} on {environment.gpu_name}"
