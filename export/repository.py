"""The model repository for each deployment target, written from one source (DESIGN §3).

The committed ``model_repository/`` is the **embedded** target (python backend everywhere, the
networks on ONNX Runtime inside python models). The other targets are derived from it, and only the
two network configs differ:

* ``embedded``: ``backend: "python"`` (ONNX Runtime on the CPU, or OpenVINO with
  ``--network-runtime openvino``); ``1/model.py`` + ``1/model.onnx``;
* ``cpu-container``: ``platform: "onnxruntime_onnx"`` on the CPU; ``1/model.onnx``;
* ``gpu``: ``platform: "tensorrt_plan"`` on GPU 0; ``1/model.onnx``, from which ``1/model.plan`` is
  built on the target GPU (``vfq-repository build-plans``, :mod:`vfq.export.tensorrt_plans`).

The python steps (preprocess, straighten, keypoint_decoder) and the ensemble are copied unchanged.
They run numpy on the CPU, except that preprocess and straighten resample the CT on the GPU wherever
the host has one and torch (their ``device`` parameter, ``auto``): the derived server image installs
torch, so in the gpu target the CT they receive in GPU memory stays there. No torch here: the
derived server image runs this.

Options of ``vfq-repository write`` size the instances, threads and queues, choose the embedded
networks' runtime, and add a warm-up, the same in every target (``--warmup-slices N``,
:func:`warmup_samples`): Triton sends each instance of preprocess, the localizer, straighten and the
detector one request shaped as a 512 × 512 × N CT would make it before the model reports ready, so
that the first scans after a start do not pay for pages the step processes have never touched
(shared memory for the CT, the copy of it, the networks' first run).

Usage::

    vfq-repository write --target gpu --out build/model_repository_gpu
    vfq-repository build-plans --source build/model_repository_gpu --out /plan-cache/model_repository
    vfq-repository check-plans --repository /plan-cache/model_repository
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from vfq.preprocess import MAX_SHAPE, localizer_grid
from vfq.runtime import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    SERVED_RUNTIME_PARAMETER,
    SERVED_THREADS,
    SERVED_THREADS_PARAMETER,
    checked_runtime,
)
from vfq.tensors import (
    CT_INPUT,
    DETECTOR_INPUT,
    DETECTOR_MODEL,
    DETECTOR_MULTIPLE,
    DETECTOR_PIXEL_MM,
    DETECTOR_WIDTH_PX,
    LOCALIZER_INPUT,
    LOCALIZER_MODEL,
    LOCALIZER_OUTPUT,
    PIPELINE_MODEL,
    PIPELINE_STEPS,
    PREPROCESS_MODEL,
    SPACING_INPUT,
    STRAIGHTEN_MODEL,
)
from vfq.volume import ImageGeometry

#: The committed repository (the embedded target) of a source checkout.
SOURCE_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
NETWORKS: tuple[str, ...] = (LOCALIZER_MODEL, DETECTOR_MODEL)
#: The python steps (the rest of :data:`PIPELINE_STEPS`), instances on the CPU in every target.
PYTHON_STEPS: tuple[str, ...] = tuple(step for step in PIPELINE_STEPS if step not in NETWORKS)
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
#: How ``vfq-repository build-plans`` builds plans: TensorRT's Python API, or its ``trtexec`` program.
PLAN_BUILDERS: tuple[str, ...] = ("api", "trtexec")


#: The in-plane matrix and spacing ``(z, y, x)`` mm of the CT a warm-up sample is shaped after (that of
#: the benchmarks' reference scan), and the file in ``<model>/warmup/`` that holds its spacing.
WARMUP_MATRIX = (512, 512)
WARMUP_SPACING_MM = (1.0, 0.7, 0.7)
WARMUP_SPACING_FILE = "spacing"


class Target(Enum):
    """Where the repository is served (DESIGN §3)."""

    EMBEDDED = "embedded"
    CPU_CONTAINER = "cpu-container"
    GPU = "gpu"


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    """A ``config.pbtxt`` as Triton's ``ModelConfig`` message."""
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def network_config(embedded: model_config_pb2.ModelConfig, target: Target) -> model_config_pb2.ModelConfig:
    """The config of a network for ``target``, from its embedded (python backend) config: same name,
    inputs and outputs; another backend, device and model file."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(embedded)
    if target is Target.EMBEDDED:
        return config
    config.ClearField("backend")
    config.ClearField("parameters")
    cpu_instances = embedded.instance_group[0].count
    del config.instance_group[:]
    if target is Target.CPU_CONTAINER:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = ONNX_FILE
        config.instance_group.add(count=cpu_instances, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
        threads = embedded.parameters.get(SERVED_THREADS_PARAMETER)
        config.parameters["intra_op_thread_count"].string_value = (
            threads.string_value if threads else str(SERVED_THREADS)
        )
        config.parameters["inter_op_thread_count"].string_value = "1"
    else:
        config.platform = "tensorrt_plan"
        config.default_model_filename = PLAN_FILE
        config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, gpus=[0])
    return config


def warmup_samples(slices: int) -> dict[str, model_config_pb2.ModelWarmup]:
    """One warm-up sample per model that takes the CT or a network's input, each shaped as the
    pipeline shapes a ``slices`` × 512 × 512 CT at 1 × 0.7 × 0.7 mm.

    Every sample must be answered without error, or Triton does not load the model (Triton 2.51):
    preprocess gets random int16 voxels (Triton's random bytes: about half of them at or below
    -500 HU, which the CT check takes as air), straighten a CT and a localizer heatmap of zeros (no
    spine: it answers with that status), the networks zeros. The spacing comes from
    :data:`WARMUP_SPACING_FILE`.
    """
    geometry = ImageGeometry(shape=(slices, *WARMUP_MATRIX), spacing=WARMUP_SPACING_MM)
    coarse = [1, 1, *localizer_grid(geometry).geometry.shape]
    # the straightened image of a spine that runs the scan's whole height, in whole row multiples
    rows = (
        math.ceil(slices * WARMUP_SPACING_MM[0] / DETECTOR_PIXEL_MM / DETECTOR_MULTIPLE) * DETECTOR_MULTIPLE
    )
    sample_input = model_config_pb2.ModelWarmup.Input
    ct = {"data_type": model_config_pb2.TYPE_INT16, "dims": list(geometry.shape)}
    spacing = sample_input(
        data_type=model_config_pb2.TYPE_FP32, dims=[3], input_data_file=WARMUP_SPACING_FILE
    )
    zeros = {"data_type": model_config_pb2.TYPE_FP32, "zero_data": True}
    inputs = {
        PREPROCESS_MODEL: {CT_INPUT: sample_input(**ct, random_data=True), SPACING_INPUT: spacing},
        LOCALIZER_MODEL: {LOCALIZER_INPUT: sample_input(**zeros, dims=coarse)},
        STRAIGHTEN_MODEL: {
            CT_INPUT: sample_input(**ct, zero_data=True),
            SPACING_INPUT: spacing,
            LOCALIZER_OUTPUT: sample_input(**zeros, dims=coarse),
        },
        DETECTOR_MODEL: {DETECTOR_INPUT: sample_input(**zeros, dims=[1, 1, rows, DETECTOR_WIDTH_PX])},
    }
    return {
        model: model_config_pb2.ModelWarmup(name=f"ct_{slices}_slices", batch_size=1, inputs=tensors)
        for model, tensors in inputs.items()
    }


def config_text(config: model_config_pb2.ModelConfig, comment: str) -> str:
    """``config.pbtxt`` text with a leading comment."""
    lines = "".join(f"# {line}\n" for line in comment.splitlines())
    return lines + text_format.MessageToString(config)


def write_repository(
    target: Target | str,
    out: str | Path,
    source: str | Path = SOURCE_REPOSITORY,
    step_instances: int | None = None,
    network_threads: int | None = None,
    network_instances: int | None = None,
    network_runtime: str | None = None,
    warmup_slices: int | None = None,
    max_queue_size: int | None = None,
) -> Path:
    """Write the repository of ``target`` into ``out`` (created; must not exist or be empty), with
    ``step_instances`` instances of each of the :data:`PYTHON_STEPS`; on the CPU targets,
    ``network_instances`` instances of each of the :data:`NETWORKS` with ``network_threads`` threads
    each; on the embedded target, the networks on ``network_runtime`` (a key of
    :data:`vfq.runtime.RUNTIMES`); with ``warmup_slices``, the warm-up of :func:`warmup_samples`;
    with ``max_queue_size``, at most that many requests waiting for each step (a queue policy of
    Triton's dynamic batcher, which batches nothing here; 0 removes it: no bound, Triton's default and
    the source's). Defaults: as in ``source``."""
    target, out, source = Target(target), Path(out), Path(source)
    for name, count in (
        ("step_instances", step_instances),
        ("network_threads", network_threads),
        ("network_instances", network_instances),
    ):
        if count is not None and count < 1:
            raise ValueError(f"{name} must be >= 1, got {count}")
    if max_queue_size is not None and max_queue_size < 0:
        raise ValueError(f"max_queue_size must be >= 0 (0: no bound), got {max_queue_size}")
    if warmup_slices is not None and not 2 <= warmup_slices <= MAX_SHAPE[0]:
        raise ValueError(
            f"warmup_slices must be a CT's slice count, 2 to {MAX_SHAPE[0]}; got {warmup_slices}"
        )
    if target is Target.GPU and (network_threads, network_instances) != (None, None):
        raise ValueError(
            "network_threads and network_instances size the networks on the CPU targets: "
            "the gpu target runs one instance of each TensorRT plan on GPU 0"
        )
    if network_runtime is not None:
        checked_runtime(network_runtime)
        if target is not Target.EMBEDDED:
            raise ValueError(
                "network_runtime chooses the library the embedded target's python models run the networks "
                "on: the cpu-container target serves them on the NGC image's onnxruntime backend, the gpu "
                "target on TensorRT"
            )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    warmups = warmup_samples(warmup_slices) if warmup_slices is not None else {}
    for model in (PIPELINE_MODEL, *PIPELINE_STEPS):
        config = load_config(source / model / "config.pbtxt")
        changes = []
        if step_instances is not None and model in PYTHON_STEPS:
            config.instance_group[0].count = step_instances
            changes.append(f"{step_instances} instances")
        if network_instances is not None and model in NETWORKS:
            config.instance_group[0].count = network_instances
            changes.append(f"{network_instances} instances")
        if network_threads is not None and model in NETWORKS:
            config.parameters[SERVED_THREADS_PARAMETER].string_value = str(network_threads)
            changes.append(f"{network_threads} threads per instance")
        if network_runtime is not None and model in NETWORKS:
            config.parameters[SERVED_RUNTIME_PARAMETER].string_value = network_runtime
            if network_runtime != DEFAULT_RUNTIME:
                config.parameters.pop("memory_arena", None)  # ONNX Runtime's own setting
            changes.append(f"the networks on {network_runtime}")
        if max_queue_size is not None and model in PIPELINE_STEPS:
            if max_queue_size:
                config.dynamic_batching.default_queue_policy.max_queue_size = max_queue_size
                changes.append(f"at most {max_queue_size} requests queued")
            else:
                config.ClearField("dynamic_batching")
                changes.append("no queue bound")
        if model in warmups:
            config.model_warmup.append(warmups[model])
            changes.append(f"a warm-up {warmups[model].name.replace('_', ' ')} CT")
        if model not in NETWORKS or target is Target.EMBEDDED:
            shutil.copytree(source / model, out / model, symlinks=False)
            if changes:
                comment = f"{model} with {' and '.join(changes)} (written by vfq-repository)."
                (out / model / "config.pbtxt").write_text(config_text(config, comment), encoding="utf-8")
            continue
        version = out / model / "1"
        version.mkdir(parents=True)
        shutil.copyfile(source / model / "1" / ONNX_FILE, version / ONNX_FILE)  # follows the link
        comment = (
            f"{model} for the {target.value} target (written by vfq-repository from the embedded config)."
        )
        (out / model / "config.pbtxt").write_text(
            config_text(network_config(config, target), comment), encoding="utf-8"
        )
    for model, sample in warmups.items():
        if SPACING_INPUT in sample.inputs:
            (out / model / "warmup").mkdir()
            spacing = np.asarray(WARMUP_SPACING_MM, np.float32).tobytes()  # raw, as Triton reads it
            (out / model / "warmup" / WARMUP_SPACING_FILE).write_bytes(spacing)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``vfq-repository``: write a target's repository; build and check TensorRT plans."""
    parser = argparse.ArgumentParser(prog="vfq-repository", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the model repository of a deployment target")
    write.add_argument("--target", choices=[t.value for t in Target], required=True)
    write.add_argument("--out", type=Path, required=True)
    write.add_argument("--source", type=Path, default=SOURCE_REPOSITORY, help="the embedded repository")
    write.add_argument(
        "--step-instances",
        type=int,
        help=f"instances of each python step ({', '.join(PYTHON_STEPS)}); default as in the source (2). "
        "On a 16-core GPU host 8 served 8 clients faster than 4 (benchmarks/README.md)",
    )
    write.add_argument(
        "--network-threads",
        type=int,
        help="threads per network instance on the CPU targets; default as in the source (1: the most "
        "scans per second when scans overlap; 2 on 2 cores: the fastest lone scan)",
    )
    write.add_argument(
        "--network-instances",
        type=int,
        help=f"instances of each network ({', '.join(NETWORKS)}) on the CPU targets; default as in the "
        "source (2). Instances x threads = the cores the server may use",
    )
    write.add_argument(
        "--network-runtime",
        choices=list(RUNTIMES),
        help=f"what the embedded target's networks run on; default as in the source ({DEFAULT_RUNTIME}). "
        "openvino: the same float32 results, the localizer in 28 %% less time on the reference CPU; with "
        "--network-threads 2 both the fastest lone scan and the most scans per second measured on 2 "
        "cores (benchmarks/README.md)",
    )
    write.add_argument(
        "--warmup-slices",
        type=int,
        help="warm every instance up at start with a request shaped as a 512 x 512 x N CT, so that the "
        "first scans are not slower than the rest: on 2 cores the first two 300-slice scans took "
        "about 2 s each without it, 0.55 s after it (benchmarks/README.md); default none",
    )
    write.add_argument(
        "--max-queue-size",
        type=int,
        help="requests that may wait for each step before the next is refused with UNAVAILABLE (the "
        "client retries it, then raises ServerBusyError); 8: 8 clients are never refused. Default as in "
        "the source: no bound, because Triton 2.51's queue policy costs throughput when scans overlap "
        "(README, 'Bounded queues')",
    )
    build = commands.add_parser("build-plans", help="build the TensorRT plans of a gpu repository, here")
    build.add_argument("--source", type=Path, required=True, help="a gpu-target repository (ONNX only)")
    build.add_argument("--out", type=Path, required=True, help="the repository to serve (plans cached there)")
    build.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    build.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file (read and updated)")
    build.add_argument(
        "--builder",
        choices=PLAN_BUILDERS,
        default="api",
        help="build with TensorRT's Python API (default) or its trtexec program; either way each plan is "
        "verified and recorded with the Python API",
    )
    build.add_argument(
        "--trtexec", type=Path, help="the trtexec program (default: on PATH, else /usr/src/tensorrt/bin)"
    )
    check = commands.add_parser("check-plans", help="refuse plans built for another TensorRT or GPU")
    check.add_argument("--repository", type=Path, required=True)
    args = parser.parse_args(argv)
    from vfq.errors import VfqError

    try:
        if args.command == "write":
            try:
                write_repository(
                    args.target,
                    args.out,
                    args.source,
                    args.step_instances,
                    args.network_threads,
                    args.network_instances,
                    args.network_runtime,
                    args.warmup_slices,
                    args.max_queue_size,
                )
            except ValueError as error:  # options that do not fit together or the target
                parser.error(str(error))
            print(f"wrote the {args.target} repository to {args.out}")
            return 0
        from vfq.export import tensorrt_plans

        if args.command == "build-plans":
            for line in tensorrt_plans.build_repository(
                args.source, args.out, args.precision, args.timing_cache, args.builder, args.trtexec
            ):
                print(line)
            return 0
        for line in tensorrt_plans.check_repository(args.repository):
            print(line)
        return 0
    except (VfqError, FileExistsError) as error:
        print(f"vfq-repository: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
