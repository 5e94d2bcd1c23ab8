"""Training from annotated CTs: a dataset manifest of real-format annotations (vfq JSON, neuro-ml
six-keypoint JSON, VerSe label map + centroids) becomes cached localizer and detector samples made by
the server's own preprocessing, which the training datasets read like phantom samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vfq.errors import InputError
from vfq.export.annotated_data import ANNOTATED_SEED_BASE, centre_line, load_scan, read_manifest
from vfq.export.datasets import (
    DetectorDataset,
    LocalizerDataset,
    build_annotated_cache,
    load_sample,
    sample_path,
)
from vfq.io import read_ct
from vfq.io.neuroml import read_neuroml
from vfq.phantoms import Acquisition, generate, sample_spec
from vfq.phantoms.generate import FieldOfView
from vfq.phantoms.writers import write_nifti
from vfq.preprocess import localizer_grid, to_localizer_grid
from vfq.volume import CTVolume, ImageGeometry

ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "annotations"
#: The grid the neuro-ml fixtures are drawn on (tests/io/test_neuroml.py).
NEUROML_GEOMETRY = ImageGeometry(shape=(40, 64, 48), spacing=(2.5, 0.7, 0.7), origin=(-80.0, -22.4, -16.8))


def soft_tissue_ct(geometry: ImageGeometry) -> CTVolume:
    array = np.full(geometry.shape, 40, np.int16)
    array[:, :4] = -1000  # some air, so the volume reads as CT
    return CTVolume(array=array, geometry=geometry)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A manifest with a phantom (vfq JSON), the neuro-ml fixture on a CT of its grid, and the VerSe
    fixture on a CT of the label map's grid."""
    folder = tmp_path_factory.mktemp("annotated")
    acquisition = Acquisition(spacing=(2.5, 1.0, 1.0), slice_thickness=2.5, matrix=(288, 288))
    phantom = generate(sample_spec(12, FieldOfView.ABDOMEN, acquisition))
    write_nifti(phantom.ct, folder / "phantom.nii.gz")
    phantom.truth.write_json(folder / "phantom_truth.json")
    write_nifti(soft_tissue_ct(NEUROML_GEOMETRY), folder / "neuroml_ct.nii.gz")
    labels = sitk.ReadImage(str(ANNOTATIONS / "verse_pir_msk.nii.gz"))
    ct = sitk.Cast(labels, sitk.sitkInt16) * 0 + 40
    sitk.WriteImage(ct, str(folder / "verse_ct.nii.gz"))
    scans = [
        {"ct": "phantom.nii.gz", "annotation": "phantom_truth.json", "format": "vfq"},
        {"ct": "neuroml_ct.nii.gz", "annotation": str(ANNOTATIONS / "neuroml_v2.json"), "format": "neuroml"},
        {
            "ct": "verse_ct.nii.gz",
            "annotation": str(ANNOTATIONS / "verse_pir_msk.nii.gz"),
            "centroids": str(ANNOTATIONS / "verse_pir_ctd.json"),
            "format": "verse",
        },
    ]
    (folder / "dataset.json").write_text(json.dumps({"scans": scans}), encoding="utf-8")
    return folder / "dataset.json"


def test_the_localizer_learns_the_servers_input_and_a_tube_through_the_annotated_centres(dataset, tmp_path):
    manifest = build_annotated_cache("localizer", dataset, tmp_path / "localizer")
    assert manifest["count"] == 3 and manifest["path"] == "annotated"
    for index, scan in enumerate(read_manifest(dataset)):
        sample = load_sample(sample_path(tmp_path / "localizer", "localizer", ANNOTATED_SEED_BASE + index))
        ct, truth = load_scan(scan)
        expected = to_localizer_grid(ct).tensor[0, 0]
        np.testing.assert_allclose(sample["image"], expected, atol=2e-3)  # float16 in the cache
        coarse = localizer_grid(ct.geometry).geometry
        for vertebra in truth.vertebrae:
            voxel = np.round(coarse.world_to_voxel(truth.geometry.voxel_to_world(vertebra.center))).astype(
                int
            )
            if ((voxel >= 0) & (voxel < coarse.shape)).all() and sample["support"][tuple(voxel)]:
                assert sample["target"][tuple(voxel)] > 0.6, (scan.format, vertebra.level)
        assert sample["target"].max() > 0.9
        assert sample["target"][~sample["support"]].max() == 0
    assert len(LocalizerDataset(tmp_path / "localizer", seed=0)) == 3


def test_detector_samples_keep_the_annotated_heights_and_verse_centres_are_refused(dataset, tmp_path):
    manifest = build_annotated_cache("detector", dataset, tmp_path / "detector")
    assert manifest["count"] == 2  # the phantom and the neuro-ml scan; VerSe has centres only
    (skipped,) = manifest["last_build"]["skipped"]
    assert skipped["ct"].endswith("verse_ct.nii.gz")
    assert "centres alone (VerSe) can train the localizer, not the detector" in skipped["reason"]
    phantom = load_sample(sample_path(tmp_path / "detector", "detector", ANNOTATED_SEED_BASE))
    valid = phantom["valid"]
    assert valid.sum() >= 5
    kp = phantom["keypoints_sv"][valid]
    assert (np.diff(kp[:, 1, 0]) < 0).all()  # cranio-caudal truth order: rows run inferior→superior

    # The keypoints sit on the image: each body's centre is bone, brighter than the disc below it.
    def value(point: np.ndarray) -> float:
        return float(phantom["image"][tuple(np.round(point).astype(int))])

    centres = kp.mean(axis=1)
    discs = (kp[:-1, 4] + kp[1:, 1]) / 2  # between a body's lower endplate and the next body's upper one
    assert all(value(c) > value(d) + 0.05 for c, d in zip(centres[:-1], discs))
    heights_px = np.linalg.norm(kp[:, [0, 1, 2]] - kp[:, [3, 4, 5]], axis=-1)
    assert ((heights_px > 15) & (heights_px < 40)).all()  # vertebral bodies, in 1 mm pixels
    item = DetectorDataset(tmp_path / "detector", seed=0)[0]
    assert set(item) >= {"image", "heatmap"}


def test_a_rebuild_skips_cached_scans_and_a_bad_manifest_is_refused(dataset, tmp_path):
    build_annotated_cache("localizer", dataset, tmp_path / "cache")
    again = build_annotated_cache("localizer", dataset, tmp_path / "cache")
    assert again["count"] == 3 and again["last_build"]["skipped"] == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scans": [{"ct": "x.nii.gz", "annotation": "y.json", "format": "dicom-seg"}]}))
    with pytest.raises(InputError, match=r"scans\[0\]: unknown format 'dicom-seg'"):
        read_manifest(bad)


def test_the_centre_line_runs_from_the_lowest_to_the_highest_endplate():
    truth = read_neuroml(ANNOTATIONS / "neuroml_v2.json", NEUROML_GEOMETRY, expert="expert1")
    line = centre_line(truth)
    world = truth.geometry.voxel_to_world(np.stack([v.keypoints for v in truth.vertebrae]))
    assert line[0, 2] == pytest.approx(world[-1, 4, 2]) and line[-1, 2] == pytest.approx(
        world[0, 1, 2], abs=0.3
    )
    assert np.linalg.norm(np.diff(line, axis=0), axis=1).max() <= 0.25 + 1e-9


def test_read_ct_of_the_written_fixture_keeps_the_label_grid(dataset):
    scan = read_manifest(dataset)[2]
    assert read_ct(scan.ct).geometry.shape == (30, 20, 20)
