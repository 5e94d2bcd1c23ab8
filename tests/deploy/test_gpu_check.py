"""The GPU check's served variant, run here on the CPU: the network steps as python models running the
PyTorch checkpoints (TorchNetworkModel) and the CT resamplings of preprocess and straighten in PyTorch
(vfq.torch_resampling) give the answer of the ONNX Runtime and numpy steps."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vfq.client import VfqClient
from vfq.phantoms import Acquisition, generate, sample_spec
from vfq.phantoms.generate import FieldOfView
from vfq.server.embedded import EmbeddedServer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
if str(SCRIPT.parent) not in sys.path:  # as when the script runs: its folder on the path
    sys.path.insert(0, str(SCRIPT.parent))
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gpu_check  # its dataclasses look their module up
spec.loader.exec_module(gpu_check)


def test_checkpoint_networks_in_triton_answer_like_the_onnx_ones(tmp_path):
    acquisition = Acquisition(spacing=(2.5, 1.0, 1.0), slice_thickness=2.5, matrix=(320, 320))
    ct = generate(sample_spec(31, FieldOfView.ABDOMEN, acquisition)).ct
    answers = []
    torch_steps = gpu_check.gpu_repository(tmp_path / "torch", "cpu", resample_device="cpu")
    for step in gpu_check.RESAMPLING_STEPS:
        config = (torch_steps / step / "config.pbtxt").read_text(encoding="utf-8")
        assert 'key: "device"' in config and 'string_value: "cpu"' in config
    for repository, log in ((None, tmp_path / "onnx.log"), (torch_steps, tmp_path / "torch.log")):
        with EmbeddedServer(repository, log=log) as server:
            with VfqClient(server.grpc_url, timeout_s=60) as client:
                answers.append(client.analyze_array(ct.array, ct.geometry))
    # the torch steps read the CT through DLPack (the path of a CT in GPU memory), the others in numpy
    for step in gpu_check.RESAMPLING_STEPS:
        assert f"{step}: resampling on cpu" in (tmp_path / "torch.log").read_text(encoding="utf-8")
        assert f"{step}: resampling on numpy" in (tmp_path / "onnx.log").read_text(encoding="utf-8")
    onnx, torch = answers
    assert onnx.not_assessable is None and len(onnx.vertebrae) >= 5
    assert [v.level for v in torch.vertebrae] == [v.level for v in onnx.vertebrae]
    assert [v.genant_grade for v in torch.vertebrae] == [v.genant_grade for v in onnx.vertebrae]
    np.testing.assert_allclose(
        [v.keypoints_world for v in torch.vertebrae], [v.keypoints_world for v in onnx.vertebrae], atol=0.05
    )


def test_a_served_variant_reads_instances_threads_device_and_transport():
    assert gpu_check.ServerVariant.parse("8:1") == gpu_check.ServerVariant(8, 1, "numpy", "shm")
    assert gpu_check.ServerVariant.parse("4:default") == gpu_check.ServerVariant(4, None)
    variant = gpu_check.ServerVariant.parse("4:1:cuda")
    assert variant == gpu_check.ServerVariant(4, 1, "cuda") and str(variant) == "4:1:cuda:shm"
    variant = gpu_check.ServerVariant.parse("8:1:auto:cudashm")
    assert (variant.resample_device, variant.transport) == ("auto", "cudashm")
    assert gpu_check.ServerVariant.parse("8:1:cuda:grpc").transport == "grpc"
    with pytest.raises(
        ValueError, match=r"transport must be one of \('shm', 'grpc', 'cudashm'\), got 'cuda'"
    ):
        gpu_check.ServerVariant.parse("8:1:cuda:cuda")
    with pytest.raises(ValueError, match="the cudashm transport needs the CT steps on a torch device"):
        gpu_check.ServerVariant.parse("8:1:numpy:cudashm")


def test_the_numpy_variant_sets_numpy_where_the_repository_says_auto(tmp_path):
    """The committed steps resample wherever a GPU is (``auto``): the check's numpy variant must say
    numpy, or on a GPU host both variants would measure the GPU."""
    for step in gpu_check.RESAMPLING_STEPS:
        committed = (gpu_check.ROOT / "model_repository" / step / "config.pbtxt").read_text(encoding="utf-8")
        assert 'key: "device", value: { string_value: "auto" }' in committed
    repository = gpu_check.gpu_repository(tmp_path / "numpy", "cpu")
    for step in gpu_check.RESAMPLING_STEPS:
        config = (repository / step / "config.pbtxt").read_text(encoding="utf-8")
        assert 'key: "device"\n  value {\n    string_value: "numpy"' in config


def test_the_preflight_finds_what_the_served_check_needs_here_and_names_what_is_missing(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "cuda", None)  # as on a host without cuda-python
    needs = {need.name: need for need in gpu_check.requirements([gpu_check.ServerVariant(2, 1)])}
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in (
        "numpy < 2 (python-backend stub)",
        "tritonserver",
        f"python-backend stub for Python {python}",
    ):
        assert needs[name].found and needs[name].required, needs[name]
    assert needs["tritonserver"].detail == "every library found"
    assert not needs["GPU"].required  # without one the check is a dry run on the CPU
    cuda = {
        need.name: need for need in gpu_check.requirements([gpu_check.ServerVariant(2, 1, "cuda", "cudashm")])
    }
    assert cuda["GPU for the CT steps (device cuda)"].found == torch.cuda.is_available()
    assert not cuda["cuda-python (CUDA shared memory)"].found
    assert "pip install 'cuda-python>=12.6.2'" in cuda["cuda-python (CUDA shared memory)"].detail
    assert gpu_check.main(["--preflight", "--variant", "2:1:cuda:cudashm"]) == 1  # no cuda-python
    assert gpu_check.main(["--preflight", "--variant", "2:1"]) == 0


def test_the_preflight_reports_a_library_the_server_could_not_load(tmp_path, monkeypatch):
    from vfq.server import embedded

    moved = tmp_path / "stub" / "triton_python_backend_stub"
    moved.parent.mkdir()
    shutil.copy2(embedded.python_stub(embedded.triton_home()), moved)  # away from its RPATH
    assert gpu_check._missing_libraries(moved) == []  # the server's library path has the wheel's
    monkeypatch.setattr(embedded, "wheel_libraries", lambda home: tmp_path)  # as if they were missing
    missing = gpu_check._missing_libraries(moved)
    assert any(name.startswith("libcudart-") for name in missing), missing


def test_the_whole_check_runs_on_the_cpu_as_a_gpu_host_would_run_it(tmp_path):
    """The script end to end, small and on the CPU (a dry run): every section answers, and what it
    writes is what the README's GPU tables are read from. Run before device time is spent on it."""
    out = tmp_path / "out"
    variants = ["--variant", "2:1:cpu:shm", "--variant", "2:1:cpu:grpc"]
    small = ["--repeats", "1", "--sweep-requests", "1", "--clients", "1,2", "--slices", "100"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *small, *variants],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=gpu_check.ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["card"].startswith("no GPU: CPU dry run") and report["slices"] == 100
    assert report["requirements"]["numpy < 2 (python-backend stub)"] == np.__version__
    assert report["tensorrt"] == "skipped: no TensorRT or no GPU"
    assert report["in_process"]["vertebrae"] == 3  # a failed section would be its error message
    models = {"preprocess", "spine_localizer", "straighten", "vertebra_detector", "keypoint_decoder"}
    for transport in ("shm", "grpc"):
        served = report[f"triton 2:1:cpu:{transport}"]
        assert served["variant"]["transport"] == transport and served["vertebrae"] == 3
        assert served["latency_s"] > 0 and set(served["server_steps"]) == models | {"vertebra_pipeline"}
        assert all(step["compute_s"] > 0 for step in served["server_steps"].values())
        assert set(served["sweep"]) == {"1", "2"}
        assert all(level["scans_per_s"] > 0 for level in served["sweep"].values())
