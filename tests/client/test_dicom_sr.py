"""The DICOM SR (TID 1500) and key image of a study, without a server: every number and coordinate read
back with highdicom and pydicom equals the JSON result, the operating point decides flags and listed
vertebrae, a study that cannot be assessed says why, the identity comes from the source series, and
the documents pass dciodvfy (Debian's dicom3tools, installed by `make setup`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from client_factories import not_assessable_outputs, pipeline_outputs
from dicom_factories import PATIENT_ID, PATIENT_NAME, SMALL_GEOMETRY, result_of, write_identified_series
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage

from vfq import __version__
from vfq.client import DicomSourceError, OperatingPoint, StudyResult, overlay_picture
from vfq.client.dicom_source import read_dicom_source
from vfq.client.dicom_sr import (
    GENANT_GRADE,
    GRADE_VALUES,
    HEIGHT_LOSS,
    NOT_ASSESSABLE,
    VERTEBRAL_FRACTURE,
    VFQ_SCHEME,
    key_image,
    weights_sha256,
    write_dicom_sr,
    write_key_image,
)
from vfq.genant import GenantGrade
from vfq.keypoints import HEIGHT_NAMES, HEIGHT_PAIRS

REAL_DICOM = Path(__file__).resolve().parents[1] / "data" / "real" / "thoracolumbar_dicom_20slices"
REAL_NIFTI = Path(__file__).resolve().parents[1] / "data" / "real" / "lumbar_ct_3mm" / "ct.nii.gz"
WORLD_TOLERANCE_MM = 1e-3
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: The finding sites of the levels in the factory's results.
SITES = {"T12": codes.SCT.T12Vertebra, "L1": codes.SCT.L1Vertebra, None: codes.SCT.Vertebra}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return write_identified_series(tmp_path_factory.mktemp("dicom") / "ct")


def written_sr(result: StudyResult, folder: Path, out: Path) -> hd.sr.Comprehensive3DSR:
    path = write_dicom_sr(result, read_dicom_source(folder), out / "report.sr.dcm")
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))


def groups(sr: hd.sr.Comprehensive3DSR) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    return sr.content.get_image_measurement_groups()


def evaluation(group, name) -> list:
    return [e.value for e in group.get_qualitative_evaluations(name=name)]


def texts(group, name) -> list[str]:
    found = hd.sr.utils.find_content_items(group[0], name=name, value_type=hd.sr.ValueTypeValues.TEXT)
    return [item.value for item in found]


def check_vertebra_group(group, vertebra: dict, frame_of_reference_uid: str) -> None:
    """Every number and coordinate of one vertebra's group against its JSON entry."""
    level = vertebra["level"]
    assert [site.value for site in group.finding_sites] == [SITES[level]]
    heights = group.get_measurements(name=codes.DCM.Height)
    assert len(heights) == 3
    world = np.array(vertebra["keypoints_world_mm"])
    for measurement, name, pair, modifier in zip(
        heights, HEIGHT_NAMES, HEIGHT_PAIRS, (codes.SCT.Anterior, codes.SCT.Central, codes.SCT.Posterior)
    ):
        assert measurement.value == pytest.approx(vertebra["heights_mm"][name], abs=1e-9)
        assert measurement.unit == codes.UCUM.Millimeter
        (site,) = measurement.finding_sites
        assert (site.value, site.topographical_modifier) == (SITES[level], modifier)
        (line,) = measurement.referenced_coordinates
        assert line.graphic_type == hd.sr.GraphicTypeValues3D.POLYLINE
        assert line.frame_of_reference_uid == frame_of_reference_uid
        np.testing.assert_allclose(line.value, world[list(pair)], rtol=0, atol=WORLD_TOLERANCE_MM)
    (loss,) = group.get_measurements(name=HEIGHT_LOSS)
    assert loss.value == pytest.approx(100 * vertebra["fracture_score"], abs=1e-9)
    assert loss.unit == codes.UCUM.Percent
    assert evaluation(group, GENANT_GRADE) == [GRADE_VALUES[GenantGrade(vertebra["genant_grade"])]]
    assert evaluation(group, VERTEBRAL_FRACTURE) == [codes.SCT.Yes if vertebra["fractured"] else codes.SCT.No]


# ---------------------------------------------------------------------- a graded study


def test_the_sr_holds_every_number_and_coordinate_of_the_json(series, tmp_path):
    result = result_of(series)
    doc = json.loads(json.dumps(result.to_json_dict()))
    sr = written_sr(result, series, tmp_path)
    source = read_dicom_source(series)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    spine, *vertebrae = groups(sr)
    assert spine.tracking_identifier == "spine" and [s.value for s in spine.finding_sites] == [
        codes.SCT.Spine
    ]
    assert evaluation(spine, VERTEBRAL_FRACTURE) == [codes.SCT.Yes]
    assert texts(spine, NOT_ASSESSABLE) == []
    assert [g.tracking_identifier for g in vertebrae] == ["T12", "L1", "vertebra 3 (level unknown)"]
    for group, vertebra in zip(vertebrae, doc["vertebrae"], strict=True):
        check_vertebra_group(group, vertebra, source.frame_of_reference_uid)


def test_the_sr_is_filed_in_the_source_study_with_its_patient(series, tmp_path):
    sr = written_sr(result_of(series), series, tmp_path)
    first = pydicom.dcmread(sorted(series.iterdir())[0], stop_before_pixels=True)
    assert (str(sr.PatientName), sr.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert sr.StudyInstanceUID == first.StudyInstanceUID
    assert sr.SeriesInstanceUID != first.SeriesInstanceUID and sr.Modality == "SR"
    evidence = sr.get_evidence()
    instances = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    assert {e[2] for e in evidence} == instances and len(evidence) == SMALL_GEOMETRY.shape[0]
    assert {(e[0], e[1]) for e in evidence} == {(first.StudyInstanceUID, first.SeriesInstanceUID)}
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence] == [VFQ_SCHEME]


def test_the_algorithm_is_named_with_version_model_and_operating_point(series, tmp_path):
    result = result_of(series).with_operating_point(OperatingPoint(0.25, 0))
    spine = groups(written_sr(result, series, tmp_path))[0]
    named = dict(
        (item.name.meaning, item.value)
        for item in spine[0].ContentSequence
        if item.name.meaning in ("Algorithm Name", "Algorithm Version")
    )
    assert named == {"Algorithm Name": "vfq", "Algorithm Version": __version__}
    parameters = texts(spine, codes.DCM.AlgorithmParameters)
    assert "model vertebra_pipeline version 1" in parameters
    assert "fracture threshold 0.25 (Genant grade >= 2)" in parameters
    assert "minimum reported Genant grade 0" in parameters
    weights = weights_sha256()
    assert (f"weights sha256 {weights}" in parameters) == (weights is not None)


def test_the_weights_hash_covers_both_networks_of_the_manifest(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "export" / "weights"
    if not (shipped / "export.json").is_file():
        pytest.skip("no shipped weights beside this checkout")
    copy = shutil.copytree(shipped, tmp_path / "weights", ignore=shutil.ignore_patterns("*.pt", "*.png"))
    both = (copy / "spine_localizer.onnx").read_bytes() + (copy / "vertebra_detector.onnx").read_bytes()
    assert weights_sha256(copy) == hashlib.sha256(both).hexdigest() == weights_sha256()
    (copy / "vertebra_detector.onnx").unlink()
    assert weights_sha256(copy) is None
    assert weights_sha256(tmp_path / "nowhere") is None


# ---------------------------------------------------------------------- the operating point


def test_the_operating_point_chooses_flags_and_listed_vertebrae_not_grades(series, tmp_path):
    result = result_of(series, pipeline_outputs(levels=("T12", "L1", ""), grades=(0, 2, 1)))
    result = result.with_operating_point(OperatingPoint(fracture_threshold=0.25, min_report_grade=1))
    doc = result.to_json_dict()
    spine, *vertebrae = groups(written_sr(result, series, tmp_path))
    assert [g.tracking_identifier for g in vertebrae] == [
        "L1",
        "vertebra 3 (level unknown)",
    ]  # grade 0 left out
    check_vertebra_group(vertebrae[0], doc["vertebrae"][1], read_dicom_source(series).frame_of_reference_uid)
    assert evaluation(vertebrae[1], GENANT_GRADE) == [codes.SCT.Mild]  # grade 1 stays grade 1 …
    assert evaluation(vertebrae[1], VERTEBRAL_FRACTURE) == [codes.SCT.No]  # … but is no fracture at 25 %
    assert evaluation(spine, VERTEBRAL_FRACTURE) == [codes.SCT.Yes]


def test_a_study_with_nothing_to_list_still_says_there_is_no_fracture(series, tmp_path):
    result = result_of(series, pipeline_outputs(levels=("T12", "L1"), grades=(0, 1)))
    result = result.with_operating_point(OperatingPoint(fracture_threshold=0.25, min_report_grade=3))
    (spine,) = groups(written_sr(result, series, tmp_path))
    assert evaluation(spine, VERTEBRAL_FRACTURE) == [codes.SCT.No]


# ---------------------------------------------------------------------- not assessable, the real series


def test_a_study_that_cannot_be_assessed_says_why(tmp_path):
    reason = "the scan covers less than 60 mm of the spine: too short to straighten and grade"
    result = result_of(REAL_DICOM, not_assessable_outputs(reason))
    sr = written_sr(result, REAL_DICOM, tmp_path)
    (spine,) = groups(sr)
    assert texts(spine, NOT_ASSESSABLE) == [reason]
    assert evaluation(spine, VERTEBRAL_FRACTURE) == []  # no claim either way
    # The anonymised series has blank UIDs: instances from the file meta, study and series derived.
    source = read_dicom_source(REAL_DICOM)
    assert source.derived == ("StudyInstanceUID", "SeriesInstanceUID")
    assert sr.StudyInstanceUID == source.study_instance_uid
    media = {
        pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
        for p in REAL_DICOM.iterdir()
    }
    assert {e[2] for e in sr.get_evidence()} == media and len(media) == 20
    assert read_dicom_source(REAL_DICOM).study_instance_uid == source.study_instance_uid  # the same every run


# ---------------------------------------------------------------------- the key image


def test_the_key_image_is_the_overlay_in_the_source_study(series, tmp_path):
    result = result_of(series)
    path = write_key_image(result, read_dicom_source(series), tmp_path / "key_image.dcm")
    image = pydicom.dcmread(path)
    assert image.SOPClassUID == SecondaryCaptureImageStorage
    first = pydicom.dcmread(sorted(series.iterdir())[0], stop_before_pixels=True)
    assert image.StudyInstanceUID == first.StudyInstanceUID
    assert (str(image.PatientName), image.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert image.PhotometricInterpretation == "RGB" and list(image.PatientOrientation) == ["P", "F"]
    np.testing.assert_array_equal(image.pixel_array, np.asarray(overlay_picture(result).convert("RGB")))


def test_the_key_image_of_a_study_that_cannot_be_assessed_shows_the_reason_without_orientation(tmp_path):
    result = result_of(REAL_DICOM, not_assessable_outputs())
    image = key_image(result, read_dicom_source(REAL_DICOM))
    assert image.PatientOrientation == ""
    np.testing.assert_array_equal(image.pixel_array, np.asarray(overlay_picture(result).convert("RGB")))


# ---------------------------------------------------------------------- sources that cannot carry an SR


def test_a_nifti_file_has_no_dicom_identity():
    with pytest.raises(DicomSourceError, match=r"NIfTI file, not a DICOM series folder.*DICOM identity"):
        read_dicom_source(REAL_NIFTI)


def test_a_result_of_another_volume_is_refused(series, tmp_path):
    other = result_of(REAL_DICOM)  # the geometry of the real series, not of this one
    with pytest.raises(DicomSourceError, match="not the series that was analysed"):
        write_dicom_sr(other, read_dicom_source(series), tmp_path / "report.sr.dcm")
    with pytest.raises(DicomSourceError, match="not the series that was analysed"):
        key_image(other, read_dicom_source(series))
    assert not (tmp_path / "report.sr.dcm").exists()


def test_a_shifted_grid_is_refused(series, tmp_path):
    result = result_of(series)
    g = result.geometry
    shifted = type(g)(
        shape=g.shape, spacing=g.spacing, origin=(g.origin[0] + 0.4, *g.origin[1:]), direction=g.direction
    )
    with pytest.raises(DicomSourceError, match="off the voxel grid"):
        read_dicom_source(series).check_matches(shifted)


# ---------------------------------------------------------------------- dciodvfy


@pytest.mark.parametrize("kind", ["graded", "not-assessable"])
def test_the_documents_are_valid_for_their_iods(series, tmp_path, kind):
    folder, outputs = (series, None) if kind == "graded" else (REAL_DICOM, not_assessable_outputs())
    result = result_of(folder, outputs)
    source = read_dicom_source(folder)
    for path in (
        write_dicom_sr(result, source, tmp_path / "report.sr.dcm"),
        write_key_image(result, source, tmp_path / "key_image.dcm"),
    ):
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
