"""DICOM SR and key image of studies the real server analysed: a phantom written as a DICOM series
whose files name a patient (only its pixels and voxel size reach the server; the documents carry the
patient), every number and world coordinate of the SR equal to the JSON result, and the real DICOM
series that is too short to assess, whose SR says so — through the client and through `vfq analyze`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from tritonclient.grpc import service_pb2

from vfq.client import VfqClient, overlay_picture, write_json
from vfq.client.cli import main as vfq_main
from vfq.client.dicom_source import read_dicom_source
from vfq.client.dicom_sr import (
    GENANT_GRADE,
    GRADE_VALUES,
    HEIGHT_LOSS,
    NOT_ASSESSABLE,
    VERTEBRAL_FRACTURE,
    write_dicom_sr,
    write_key_image,
)
from vfq.client.wire import RawInfer
from vfq.genant import GenantGrade
from vfq.io import read_ct
from vfq.keypoints import HEIGHT_NAMES, HEIGHT_PAIRS
from vfq.pipeline import SPINE_TOO_SHORT
from vfq.tensors import CT_INPUT, SPACING_INPUT

REAL_DICOM = Path(__file__).resolve().parents[1] / "data" / "real" / "thoracolumbar_dicom_20slices"
PATIENT_NAME = "Roe^Richard"
PATIENT_ID = "VFQ-SERVED-0007"
WORLD_TOLERANCE_MM = 1e-3


@pytest.fixture(scope="module")
def identified_phantom(phantom_files, tmp_path_factory) -> Path:
    """The phantom's DICOM series, copied with a patient name and ID in every file."""
    folder = tmp_path_factory.mktemp("identified") / "abdomen_dicom"
    shutil.copytree(phantom_files["dicom"], folder)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientName = PATIENT_NAME
        dataset.PatientID = PATIENT_ID
        dataset.save_as(path)
    return folder


@pytest.fixture(scope="module")
def served(server, identified_phantom, tmp_path_factory) -> dict:
    """The identified phantom analysed by the server, every request recorded as the bytes handed to
    gRPC (with the call's other arguments); its report.json, SR and key image on disk."""
    requests, calls = [], []
    send = RawInfer.__call__

    def recorded_send(self, request, **kwargs):
        requests.append(service_pb2.ModelInferRequest.FromString(request))
        calls.append(kwargs)
        return send(self, request, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RawInfer, "__call__", recorded_send)
        with VfqClient(server.grpc_url, timeout_s=120) as client:
            result = client.analyze(identified_phantom)
    out = tmp_path_factory.mktemp("served")
    source = read_dicom_source(identified_phantom)
    return {
        "result": result,
        "requests": requests,
        "calls": calls,
        "json": write_json(result, out / "report.json"),
        "sr": write_dicom_sr(result, source, out / "report.sr.dcm"),
        "key_image": write_key_image(result, source, out / "key_image.dcm"),
    }


def test_only_the_pixels_and_the_voxel_size_reach_the_server(served, identified_phantom):
    (request,) = served["requests"]
    assert [tensor.name for tensor in request.inputs] == [CT_INPUT, SPACING_INPUT]
    ct = read_ct(identified_phantom)
    assert request.raw_input_contents[0] == ct.array.tobytes()
    assert request.raw_input_contents[1] == np.asarray(ct.geometry.spacing, np.float32).tobytes()
    assert not request.parameters and request.id == ""
    assert served["calls"] == [{"client_timeout": 120.0, "compression": None}]  # no headers, no metadata
    wire = request.SerializeToString()
    for identifier in (
        PATIENT_NAME,
        PATIENT_ID,
        "Roe",
        str(pydicom.dcmread(next(identified_phantom.iterdir())).StudyInstanceUID),
    ):
        assert identifier.encode() not in wire


def test_the_sr_of_a_served_phantom_holds_every_number_and_coordinate_of_the_json(served, identified_phantom):
    doc = json.loads(served["json"].read_text(encoding="utf-8"))
    sr = hd.sr.srread(served["sr"])
    frame = str(
        pydicom.dcmread(next(identified_phantom.iterdir()), stop_before_pixels=True).FrameOfReferenceUID
    )
    spine, *groups = sr.content.get_image_measurement_groups()
    assert doc["not_assessable"] is None and len(groups) == len(doc["vertebrae"]) == 7
    assert any(v["fractured"] for v in doc["vertebrae"])  # the phantom's L1 wedge
    assert [e.value for e in spine.get_qualitative_evaluations(name=VERTEBRAL_FRACTURE)] == [codes.SCT.Yes]
    for group, vertebra in zip(groups, doc["vertebrae"], strict=True):
        level = vertebra["level"]
        site = getattr(codes.SCT, f"{level}Vertebra")
        assert group.tracking_identifier == level and [s.value for s in group.finding_sites] == [site]
        world = np.array(vertebra["keypoints_world_mm"])
        heights = group.get_measurements(name=codes.DCM.Height)
        for measurement, name, pair in zip(heights, HEIGHT_NAMES, HEIGHT_PAIRS, strict=True):
            assert measurement.value == pytest.approx(vertebra["heights_mm"][name], abs=1e-9)
            assert measurement.finding_sites[0].value == site
            (line,) = measurement.referenced_coordinates
            assert line.frame_of_reference_uid == frame
            np.testing.assert_allclose(line.value, world[list(pair)], rtol=0, atol=WORLD_TOLERANCE_MM)
        (loss,) = group.get_measurements(name=HEIGHT_LOSS)
        assert loss.value == pytest.approx(100 * vertebra["fracture_score"], abs=1e-9)
        grades = [e.value for e in group.get_qualitative_evaluations(name=GENANT_GRADE)]
        assert grades == [GRADE_VALUES[GenantGrade(vertebra["genant_grade"])]]
        flags = [e.value for e in group.get_qualitative_evaluations(name=VERTEBRAL_FRACTURE)]
        assert flags == [codes.SCT.Yes if vertebra["fractured"] else codes.SCT.No]


def test_the_documents_carry_the_patient_and_study_of_the_source(served, identified_phantom):
    first = pydicom.dcmread(next(identified_phantom.iterdir()), stop_before_pixels=True)
    for path in (served["sr"], served["key_image"]):
        document = pydicom.dcmread(path)
        assert (str(document.PatientName), document.PatientID) == (PATIENT_NAME, PATIENT_ID)
        assert document.StudyInstanceUID == first.StudyInstanceUID
    pixels = pydicom.dcmread(served["key_image"]).pixel_array
    np.testing.assert_array_equal(pixels, np.asarray(overlay_picture(served["result"]).convert("RGB")))


def test_a_real_series_too_short_to_assess_gets_an_sr_that_says_why(server, tmp_path):
    out = tmp_path / "results"
    assert (
        vfq_main(["analyze", str(REAL_DICOM), "--url", server.grpc_url, "--out", str(out), "--dicom-sr"]) == 0
    )
    study = out / REAL_DICOM.name
    doc = json.loads((study / "report.json").read_text(encoding="utf-8"))
    assert doc["not_assessable"] == SPINE_TOO_SHORT and doc["vertebrae"] == []
    (spine,) = hd.sr.srread(study / "report.sr.dcm").content.get_image_measurement_groups()
    found = hd.sr.utils.find_content_items(
        spine[0], name=NOT_ASSESSABLE, value_type=hd.sr.ValueTypeValues.TEXT
    )
    assert [item.value for item in found] == [SPINE_TOO_SHORT]
    assert spine.get_qualitative_evaluations(name=VERTEBRAL_FRACTURE) == []
    assert pydicom.dcmread(study / "key_image.dcm").Modality == "OT"
    check_with_dciodvfy([study / "report.sr.dcm", study / "key_image.dcm"])


def test_the_served_documents_are_valid_for_their_iods(served):
    check_with_dciodvfy([served["sr"], served["key_image"]])


def check_with_dciodvfy(paths: list[Path]) -> None:
    for path in paths:
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
