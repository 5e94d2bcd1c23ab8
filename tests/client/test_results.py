"""StudyResult from the ensemble's outputs: world coordinates, decoding, JSON round trip and schema,
CSV rows — all without a server."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from client_factories import NO_SPINE, not_assessable_outputs, oblique_geometry, pipeline_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from vfq import __version__
from vfq.client import CSV_COLUMNS, SCHEMA_ID, OperatingPoint, ResponseError, StudyResult, result_schema
from vfq.errors import InputError
from vfq.genant import GenantGrade
from vfq.keypoints import KEYPOINT_NAMES, body_center
from vfq.tensors import (
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    PIPELINE_MODEL,
)
from vfq.volume import ImageGeometry


def study(outputs=None, **kwargs) -> StudyResult:
    return StudyResult.from_outputs(
        pipeline_outputs() if outputs is None else outputs,
        oblique_geometry(),
        "scans/patient.nii.gz",
        {"read": 0.25, "request": 1.5},
        **kwargs,
    )


# ---------------------------------------------------------------------- from_outputs


def test_from_outputs_maps_voxels_to_world_with_the_study_geometry():
    outputs = pipeline_outputs()
    geometry = oblique_geometry()
    result = StudyResult.from_outputs(outputs, geometry, "ct")
    keypoints = outputs[KEYPOINTS_OUTPUT].astype(np.float64)
    assert len(result.vertebrae) == 3
    for i, vertebra in enumerate(result.vertebrae):
        np.testing.assert_array_equal(vertebra.keypoints_voxel, keypoints[i])
        np.testing.assert_allclose(
            vertebra.keypoints_world, geometry.voxel_to_world(keypoints[i]), rtol=0, atol=1e-9
        )
    # an independent check of the frame: voxel (z, y, x) → origin + direction @ (spacing · (x, y, z))
    z, y, x = keypoints[1, 4]
    expected = np.array(geometry.origin) + geometry.direction @ (np.array([x, y, z]) * [0.8, 0.7, 2.5])
    np.testing.assert_allclose(result.vertebrae[1].keypoints_world[4], expected, rtol=0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 6.0)] * 3),
    angle=st.floats(-np.pi, np.pi),
)
def test_world_keypoints_go_back_to_the_voxels_the_server_sent(origin, spacing, angle):
    c, s = np.cos(angle), np.sin(angle)
    geometry = ImageGeometry((50, 60, 70), spacing, origin, np.array([[1, 0, 0], [0, c, -s], [0, s, c]]))
    outputs = pipeline_outputs()
    result = StudyResult.from_outputs(outputs, geometry, "ct")
    world = np.array([v.keypoints_world for v in result.vertebrae])
    np.testing.assert_allclose(geometry.world_to_voxel(world), outputs[KEYPOINTS_OUTPUT], atol=1e-6)


def test_from_outputs_decodes_the_values_the_server_sent():
    outputs = pipeline_outputs(levels=("T12", "L1", ""), grades=(0, 2, 1))
    result = study(outputs, model_version="3")
    assert [v.level for v in result.vertebrae] == ["T12", "L1", None]  # "" = unknown level
    assert [v.genant_grade for v in result.vertebrae] == [0, 2, 1]
    assert [v.genant_label for v in result.vertebrae] == ["normal", "moderate", "mild"]
    assert [result.is_fractured(v) for v in result.vertebrae] == [False, True, True]
    assert result.vertebrae[1].heights_mm == tuple(outputs[HEIGHTS_OUTPUT][1].astype(float).tolist())
    assert result.max_grade == 2
    assert result.study_score == pytest.approx(0.31)
    assert result.not_assessable is None
    assert result.sagittal_image.shape == (120, 96) and result.sagittal_image.dtype == np.float32
    assert (result.model, result.model_version, result.client_version) == (PIPELINE_MODEL, "3", __version__)
    assert result.seconds == {"read": 0.25, "request": 1.5}
    assert result.source == "scans/patient.nii.gz"


def test_bytes_outputs_may_arrive_as_text():
    outputs = pipeline_outputs(levels=("C7", ""), grades=(0, 0))
    outputs[LEVEL_OUTPUT] = np.array(["C7", ""], dtype=object)
    assert [v.level for v in study(outputs).vertebrae] == ["C7", None]


def test_a_not_assessable_study_has_no_vertebrae_and_says_why():
    result = study(not_assessable_outputs())
    assert result.not_assessable == NO_SPINE
    assert result.vertebrae == ()
    assert result.sagittal_image.shape == (0, 0)
    assert (result.max_grade, result.study_score) == (0, 0.0)


def test_outputs_that_break_the_api_are_a_response_error():
    outputs = pipeline_outputs()
    del outputs[LEVEL_OUTPUT]
    with pytest.raises(ResponseError, match=LEVEL_OUTPUT):
        study(outputs)
    outputs = pipeline_outputs()
    outputs[HEIGHTS_OUTPUT] = outputs[HEIGHTS_OUTPUT][:2]  # 3 vertebrae, 2 heights
    with pytest.raises(ResponseError, match=rf"{HEIGHTS_OUTPUT} has shape \[2, 3\], expected \[3, 3\]"):
        study(outputs)
    outputs = pipeline_outputs()
    outputs[GENANT_GRADE_OUTPUT] = np.array([0, 4, 1], dtype=np.int32)
    with pytest.raises(ResponseError, match="outside 0-3"):
        study(outputs)


def test_results_are_frozen_and_their_arrays_read_only():
    vertebra = study().vertebrae[0]
    with pytest.raises(AttributeError):
        vertebra.genant_grade = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        vertebra.keypoints_world[0, 0] = 0.0


# ---------------------------------------------------------------------- JSON


def test_json_round_trip_keeps_every_field():
    result = study(model_version="7")
    doc = json.loads(json.dumps(result.to_json_dict()))
    back = StudyResult.from_json_dict(doc, sagittal_image=result.sagittal_image)
    assert back.to_json_dict() == doc
    for name in ("shape", "spacing", "origin"):
        assert getattr(back.geometry, name) == getattr(result.geometry, name)
    np.testing.assert_array_equal(back.geometry.direction, result.geometry.direction)
    for a, b in zip(back.vertebrae, result.vertebrae):
        np.testing.assert_array_equal(a.keypoints_world, b.keypoints_world)
        np.testing.assert_array_equal(a.keypoints_sagittal, b.keypoints_sagittal)
        assert (a.level, a.heights_mm, a.fracture_score) == (b.level, b.heights_mm, b.fracture_score)
    np.testing.assert_array_equal(back.sagittal_image, result.sagittal_image)
    assert StudyResult.from_json_dict(doc).sagittal_image.shape == (0, 0)  # the JSON has no image


def test_the_operating_point_flags_fractures_and_travels_with_the_json():
    result = study(pipeline_outputs(grades=(0, 2, 1))).with_operating_point(OperatingPoint(0.25, 1))
    assert [result.is_fractured(v) for v in result.vertebrae] == [False, True, False]  # grade 1 is not
    assert [v.genant_grade for v in result.vertebrae] == [0, 2, 1]  # grades never change with it
    doc = json.loads(json.dumps(result.to_json_dict()))
    assert doc["operating_point"] == {"fracture_threshold": 0.25, "min_report_grade": 1}
    assert [v["fractured"] for v in doc["vertebrae"]] == [False, True, False]
    assert StudyResult.from_json_dict(doc).operating_point == OperatingPoint(0.25, 1)
    assert [row["fractured"] for row in result.csv_rows()] == ["false", "true", "false"]
    assert {row["fracture_threshold"] for row in result.csv_rows()} == {"0.25"}


def test_a_document_without_operating_point_reads_at_the_default_one():
    doc = json.loads(json.dumps(study().to_json_dict()))
    del doc["operating_point"]  # as vfq wrote it before the operating point existed
    back = StudyResult.from_json_dict(doc)
    assert back.operating_point == OperatingPoint(0.20, 0)
    assert [v["fractured"] for v in back.to_json_dict()["vertebrae"]] == [
        v["fractured"] for v in doc["vertebrae"]
    ]


def test_json_form_names_frames_and_study_values():
    doc = study(model_version="7").to_json_dict()
    geometry = oblique_geometry()
    assert doc["schema"] == SCHEMA_ID
    assert doc["shape"] == [60, 80, 70] and doc["spacing_mm"] == [2.5, 0.7, 0.8]
    assert doc["origin_mm"] == [-172.25, 31.5, 1204.0]
    np.testing.assert_array_equal(doc["direction"], geometry.direction)
    assert doc["keypoint_names"] == list(KEYPOINT_NAMES)
    assert (doc["max_grade"], doc["not_assessable"]) == (2, None)
    assert doc["study_score"] == pytest.approx(0.31)
    assert doc["software"] == {"name": "vfq", "version": __version__}
    assert doc["model"] == {"name": PIPELINE_MODEL, "version": "7"}
    vertebra = doc["vertebrae"][1]
    assert vertebra["level"] == "L1" and vertebra["genant_label"] == "moderate" and vertebra["fractured"]
    assert set(vertebra["heights_mm"]) == {"anterior", "middle", "posterior"}
    np.testing.assert_allclose(
        vertebra["keypoints_world_mm"],
        geometry.voxel_to_world(np.array(vertebra["keypoints_voxel"])),
        rtol=0,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    "outputs",
    [pipeline_outputs(), not_assessable_outputs(), pipeline_outputs(levels=("",), grades=(3,))],
    ids=["graded", "not-assessable", "unknown-level"],
)
def test_real_outputs_follow_the_json_schema(outputs):
    doc = json.loads(json.dumps(study(outputs).to_json_dict()))
    jsonschema.Draft202012Validator.check_schema(result_schema())
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)


def test_the_schema_file_agrees_with_the_code():
    schema = result_schema()
    assert schema["properties"]["schema"]["const"] == SCHEMA_ID
    assert schema["properties"]["keypoint_names"]["const"] == list(KEYPOINT_NAMES)
    labels = schema["$defs"]["vertebra"]["properties"]["genant_label"]["enum"]
    assert labels == [grade.name.lower() for grade in GenantGrade]
    assert set(schema["required"]) | {"operating_point"} == set(study().to_json_dict())
    assert "operating_point" in schema["properties"] and "operating_point" not in schema["required"]
    vertebra_keys = set(study().to_json_dict()["vertebrae"][0])
    assert set(schema["$defs"]["vertebra"]["required"]) == vertebra_keys


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="vfq-result/2"), "vfq-result/2"),
        (lambda d: d["vertebrae"][0].update(genant_grade=5), "vertebrae/0/genant_grade"),
        (lambda d: d["vertebrae"][0]["keypoints_voxel"].pop(), "vertebrae/0/keypoints_voxel"),
        (lambda d: d.pop("spacing_mm"), "spacing_mm"),
    ],
    ids=["other-schema", "grade", "five-keypoints", "no-spacing"],
)
def test_from_json_dict_refuses_documents_off_the_schema(change, message):
    doc = json.loads(json.dumps(study().to_json_dict()))
    change(doc)
    with pytest.raises(InputError, match=message):
        StudyResult.from_json_dict(doc)


# ---------------------------------------------------------------------- CSV


def test_csv_rows_one_per_vertebra_with_study_columns_repeated():
    result = study()
    rows = result.csv_rows("patient")
    assert len(rows) == 3
    assert all(tuple(row) == CSV_COLUMNS for row in rows)
    assert {row["study"] for row in rows} == {"patient"}
    assert {row["source"] for row in rows} == {"scans/patient.nii.gz"}
    assert {(row["vertebrae"], row["max_grade"], row["study_score"]) for row in rows} == {("3", "2", "0.31")}
    assert [row["level"] for row in rows] == ["T12", "L1", ""]
    assert [row["index"] for row in rows] == ["0", "1", "2"]
    assert [row["fractured"] for row in rows] == ["false", "true", "true"]
    assert [row["genant_label"] for row in rows] == ["normal", "moderate", "mild"]
    center = body_center(result.vertebrae[2].keypoints_world)
    got = [float(rows[2][f"center_{axis}_mm"]) for axis in "xyz"]
    np.testing.assert_allclose(got, center, rtol=1e-5)
    assert float(rows[1]["height_posterior_mm"]) == pytest.approx(result.vertebrae[1].heights_mm[2], rel=1e-5)
    assert rows[0]["not_assessable"] == ""
    assert study().csv_rows()[0]["study"] == "scans/patient.nii.gz"  # no name: the source


def test_csv_row_of_a_not_assessable_study_gives_the_reason():
    (row,) = study(not_assessable_outputs()).csv_rows("empty")
    assert tuple(row) == CSV_COLUMNS
    assert row["not_assessable"] == NO_SPINE
    assert (row["study"], row["vertebrae"], row["max_grade"], row["study_score"]) == ("empty", "0", "0", "0")
    vertebra_columns = CSV_COLUMNS[CSV_COLUMNS.index("index") :]
    assert all(row[column] == "" for column in vertebra_columns)
