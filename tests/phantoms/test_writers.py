"""Phantom files: NIfTI and DICOM read back with one geometry; truth JSON; picture; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from vfq.annotation import SpineAnnotation
from vfq.io import read_ct
from vfq.phantoms import Acquisition, FieldOfView, generate, sample_spec
from vfq.phantoms.cli import main
from vfq.phantoms.writers import write_dicom_series, write_phantom
from vfq.volume import CTVolume, ImageGeometry

ACQUISITION = Acquisition(spacing=(2.5, 1.5, 1.5), slice_thickness=2.5, matrix=(180, 200), noise_hu=12.0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    spec = sample_spec(12, field_of_view=FieldOfView.ABDOMEN, acquisition=ACQUISITION)
    phantom = generate(spec, with_labels=True)
    folder = tmp_path_factory.mktemp("phantom")
    return phantom, write_phantom(phantom, folder, nifti=True, dicom=True, picture=True)


def test_dicom_and_nifti_read_back_with_the_same_geometry_and_pixels(written):
    phantom, files = written
    from_nifti = read_ct(files["nifti"])
    from_dicom = read_ct(files["dicom"])
    for volume in (from_nifti, from_dicom):
        assert volume.geometry.shape == phantom.ct.geometry.shape
        assert np.allclose(volume.geometry.spacing, phantom.ct.geometry.spacing, atol=1e-4)
        assert np.allclose(volume.geometry.origin, phantom.ct.geometry.origin, atol=1e-3)
        assert np.allclose(volume.geometry.direction, np.eye(3))
        assert np.array_equal(volume.array, phantom.ct.array)


def test_a_shorter_series_rewritten_into_the_folder_keeps_none_of_the_longer_ones_slices(tmp_path):
    """Regression: the demo rewrote its phantom (same seed, same series UID) with fewer slices after
    an anatomy change, and the longer series' last files stayed: the reader saw a series with gaps."""
    rng = np.random.default_rng(0)
    for n_slices, origin_z in ((12, -40.0), (7, -37.5)):
        geometry = ImageGeometry(
            shape=(n_slices, 16, 16), spacing=(2.5, 1.0, 1.0), origin=(0.0, 0.0, origin_z)
        )
        array = rng.integers(-100, 100, size=geometry.shape, dtype=np.int16)
        write_dicom_series(CTVolume(array, geometry), tmp_path, seed=3, slice_thickness=2.5)
    assert len(list(tmp_path.glob("*.dcm"))) == 7
    volume = read_ct(tmp_path)
    assert volume.geometry.shape == (7, 16, 16)
    assert volume.geometry.origin[2] == pytest.approx(-37.5)
    assert np.array_equal(volume.array, array)


def test_dicom_series_tags(written):
    phantom, files = written
    paths = sorted(files["dicom"].iterdir())
    assert len(paths) == phantom.ct.array.shape[0]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files["dicom"] / "IM00001.dcm"))
    reader.ReadImageInformation()
    tag = reader.GetMetaData
    assert tag("0008|0060").strip() == "CT"
    assert tag("0008|0016").strip() == "1.2.840.10008.5.1.4.1.1.2"
    assert float(tag("0028|1052")) == -1024 and float(tag("0028|1053")) == 1
    assert float(tag("0018|0050")) == pytest.approx(2.5)
    position = [float(c) for c in tag("0020|0032").split("\\")]
    top = phantom.ct.geometry.voxel_to_world(np.array([phantom.ct.array.shape[0] - 1, 0, 0]))
    assert np.allclose(position, top, atol=1e-3)  # instance 1 is the most superior slice
    patient_module = [key for key in reader.GetMetaDataKeys() if key.startswith("0010|")]
    assert patient_module  # the type 2 attributes are present ...
    assert all(tag(key).strip() == "" for key in patient_module)  # ... and empty: no identifiers


def test_truth_json_round_trip(written):
    phantom, files = written
    data = json.loads(files["truth"].read_text())
    assert data["keypoint_order"][0] == "upper_anterior"
    assert data["metadata"]["spec"]["field_of_view"] == "abdomen"
    again = SpineAnnotation.read_json(files["truth"])
    assert again.levels == phantom.truth.levels
    for a, b in zip(again.vertebrae, phantom.truth.vertebrae):
        assert np.allclose(a.keypoints, b.keypoints, atol=1e-4)
        assert a.grade == b.grade and a.fracture_type is b.fracture_type
    world = np.array(data["vertebrae"][0]["keypoints_world"])
    assert np.allclose(
        world, phantom.ct.geometry.voxel_to_world(phantom.truth.vertebrae[0].keypoints), atol=1e-3
    )


def test_picture_is_written_with_the_vertebrae_drawn(written):
    from PIL import Image

    from vfq.picture import GRADE_COLOURS

    phantom, files = written
    with Image.open(files["picture"]) as picture:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    grades = {int(v.grade) for v in phantom.truth.vertebrae}
    for grade in grades:  # every grade present in the truth has its outline colour in the picture
        assert (pixels == GRADE_COLOURS[grade]).all(axis=1).sum() > 20, grade


def test_cli_writes_several_phantoms(tmp_path, caplog):
    caplog.set_level("INFO")
    code = main(
        [
            "--seed",
            "30",
            "--count",
            "2",
            "--out",
            str(tmp_path),
            "--matrix",
            "96",
            "96",
            "--spacing",
            "4",
            "3",
            "3",
            "--noise",
            "5",
        ]
    )
    assert code == 0
    for seed in (30, 31):
        truth = SpineAnnotation.read_json(tmp_path / f"{seed:06d}" / "truth.json")
        assert truth.geometry.shape[1:] == (96, 96)
        assert truth.geometry.spacing == (4.0, 3.0, 3.0)
        assert read_ct(tmp_path / f"{seed:06d}" / "ct.nii.gz").array.shape == truth.geometry.shape
    assert "seed 31" in caplog.text
