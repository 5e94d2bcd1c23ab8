"""The client library and the `vfq analyze` batch CLI against the real server: results equal the
in-process pipeline for a NIfTI and a DICOM-series input in world coordinates, every transport gives the
same answer, and a batch goes on past the studies that fail, saying why."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vfq.client import VfqClient
from vfq.client.cli import load_report
from vfq.client.cli import main as vfq_main
from vfq.client.results import StudyResult
from vfq.io import read_ct


def assert_study_equals_in_process(study: StudyResult, ct, reference) -> None:
    v = reference.vertebrae
    assert study.not_assessable is None
    assert [r.level for r in study.vertebrae] == [level.name for level in v.levels]
    assert [r.genant_grade for r in study.vertebrae] == v.grade.tolist()
    voxel = np.array([r.keypoints_voxel for r in study.vertebrae])
    world = np.array([r.keypoints_world for r in study.vertebrae])
    np.testing.assert_allclose(voxel, v.keypoints_voxel(ct.geometry), atol=1e-3)
    # World LPS mm from the client's own geometry: the in-process pipeline's world keypoints.
    np.testing.assert_allclose(world, v.keypoints_world, atol=1e-3 * max(ct.geometry.spacing))
    np.testing.assert_allclose([r.heights_mm for r in study.vertebrae], v.heights_mm, atol=1e-3)


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_a_file_through_the_client_equals_the_in_process_pipeline(server, phantom_files, in_process, kind):
    ct = read_ct(phantom_files[kind])  # what the client sends, with the file's own origin
    reference = in_process.analyze(ct)
    with VfqClient(server.grpc_url, timeout_s=60) as client:
        study = client.analyze(phantom_files[kind])
    assert_study_equals_in_process(study, ct, reference)
    assert (study.geometry.shape, study.geometry.spacing, study.geometry.origin) == (
        ct.geometry.shape,
        ct.geometry.spacing,
        ct.geometry.origin,
    )
    assert study.sagittal_image.shape == reference.sagittal_hu.shape


@pytest.mark.parametrize(
    ("options", "own_step"),
    [({"shared_memory": True}, "shared_memory_copy"), ({"compression": "gzip"}, "serialize")],
    ids=["shared-memory", "gzip"],
)
def test_every_transport_gives_the_same_answer(server, phantom, in_process, options, own_step):
    reference = in_process.analyze(phantom.ct)
    with VfqClient(server.grpc_url, timeout_s=60, **options) as client:
        for _ in range(2):  # a shared-memory region is reused by the second call
            study = client.analyze_array(phantom.ct.array, phantom.ct.geometry, source="phantom")
            assert_study_equals_in_process(study, phantom.ct, reference)
            # the client's own part is timed apart; serializing is part of the request
            assert set(study.seconds) == {"request", own_step} and study.seconds[own_step] > 0
            assert own_step != "serialize" or study.seconds["serialize"] < study.seconds["request"]


def test_a_batch_goes_on_past_failures_and_a_rerun_skips_what_is_done(
    server, phantom_files, tmp_path, capsys
):
    broken = tmp_path / "inputs" / "missing_slice"
    shutil.copytree(phantom_files["dicom"], broken)
    sorted(broken.iterdir())[40].unlink()
    not_a_ct = tmp_path / "inputs" / "notes.nii.gz"
    not_a_ct.write_bytes(b"this is not an image")
    out = tmp_path / "results"
    studies = [str(phantom_files["nifti"]), str(broken), str(not_a_ct)]

    code = vfq_main(["analyze", *studies, "--url", server.grpc_url, "--out", str(out)])
    assert code == 1
    report = json.loads((out / "abdomen" / "report.json").read_text(encoding="utf-8"))
    assert report["schema"] == "vfq-result/1" and len(report["vertebrae"]) == 7
    assert (out / "abdomen" / "overlay.png").stat().st_size > 10_000
    missing = json.loads((out / "missing_slice" / "error.json").read_text(encoding="utf-8"))
    assert missing["type"] == "InconsistentSeriesError" and "missing" in missing["message"]
    unreadable = json.loads((out / "notes" / "error.json").read_text(encoding="utf-8"))
    assert unreadable["type"] == "UnreadableInputError"
    rows = (out / "vertebrae.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 7
    printed = capsys.readouterr()
    assert "missing_slice" in printed.err and "notes" in printed.err

    # A re-run only retries the failures; the finished study is not sent again.
    mtime = (out / "abdomen" / "report.json").stat().st_mtime_ns
    assert vfq_main(["analyze", *studies, "--url", server.grpc_url, "--out", str(out)]) == 1
    assert (out / "abdomen" / "report.json").stat().st_mtime_ns == mtime


def test_a_batch_with_two_jobs_over_shared_memory_writes_each_study_right(
    server, phantom_files, in_process, tmp_path
):
    studies = [phantom_files["nifti"], phantom_files["dicom"]]
    out = tmp_path / "results"
    options = ["--url", server.grpc_url, "--out", str(out), "--jobs", "2", "--shared-memory"]
    assert vfq_main(["analyze", *map(str, studies), *options]) == 0
    for path, name in zip(studies, ["abdomen", "abdomen_dicom"]):
        ct = read_ct(path)
        assert_study_equals_in_process(load_report(out / name), ct, in_process.analyze(ct))
