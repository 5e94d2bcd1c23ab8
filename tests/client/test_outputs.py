"""The writers: JSON, CSV, error records and the overlay PNG, all written atomically."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from client_factories import NO_SPINE, not_assessable_outputs, oblique_geometry, pipeline_outputs
from PIL import Image

from vfq.client import CSV_COLUMNS, StudyResult, write_csv, write_json, write_overlay_png
from vfq.client.outputs import NOT_ASSESSABLE_PICTURE_SIZE, OVERLAY_SCALE, write_error_json
from vfq.client.results import SAGITTAL_PIXEL_MM
from vfq.errors import NotCTError
from vfq.picture import GRADE_COLOURS


def study(outputs=None, source="ct.nii.gz") -> StudyResult:
    return StudyResult.from_outputs(
        pipeline_outputs() if outputs is None else outputs, oblique_geometry(), source, {"request": 1.0}
    )


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_json_writes_the_json_form(tmp_path):
    result = study()
    path = write_json(result, tmp_path / "report.json")
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(result.to_json_dict()))
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_json(study(), tmp_path / "report.json")
    before = path.read_bytes()

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(study(not_assessable_outputs()), path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_write_csv_header_and_rows(tmp_path):
    results = {"first": study(), "second": study(not_assessable_outputs(), source="other.nrrd")}
    path = write_csv(results, tmp_path / "vertebrae.csv")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [row["study"] for row in rows] == ["first"] * 3 + ["second"]
    assert rows[-1]["not_assessable"] == NO_SPINE and rows[-1]["level"] == ""
    assert rows[:3] == results["first"].csv_rows("first")
    write_csv([study()], tmp_path / "unnamed.csv")  # without names, the study column is the source
    with (tmp_path / "unnamed.csv").open(newline="", encoding="utf-8") as f:
        assert {row["study"] for row in csv.DictReader(f)} == {"ct.nii.gz"}
    assert leftovers(tmp_path) == []


def test_write_error_json_records_type_and_message(tmp_path):
    error = NotCTError("the values do not look like CT")
    record = json.loads(write_error_json(error, "/data/mr", tmp_path / "error.json").read_text())
    assert record == {
        "schema": "vfq-error/1",
        "source": "/data/mr",
        "type": "NotCTError",
        "message": "the values do not look like CT",
    }


def test_overlay_png_is_the_straightened_image_at_two_pixels_per_mm(tmp_path):
    outputs = pipeline_outputs(levels=("T12", "L1", ""), grades=(0, 2, 1), image_shape=(120, 96))
    path = write_overlay_png(study(outputs), tmp_path / "overlay.png")
    assert leftovers(tmp_path) == []
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        rows, cols = 120, 96
        assert picture.size == (
            round(cols * SAGITTAL_PIXEL_MM[1] * OVERLAY_SCALE),
            round(rows * SAGITTAL_PIXEL_MM[0] * OVERLAY_SCALE),
        )
        pixels = np.asarray(picture).reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in pixels}
    # each grade's outline colour is drawn (0 normal, 2 moderate, 1 mild)
    for grade in (0, 1, 2):
        assert GRADE_COLOURS[grade] in colours
    assert GRADE_COLOURS[3] not in colours


def test_overlay_of_a_not_assessable_study_states_the_reason(tmp_path):
    path = write_overlay_png(study(not_assessable_outputs()), tmp_path / "overlay.png")
    with Image.open(path) as picture:
        assert picture.size == NOT_ASSESSABLE_PICTURE_SIZE
        grey = np.asarray(picture.convert("L"))
    assert (grey > 128).sum() > 200  # the text is written in white on black
    assert leftovers(tmp_path) == []
