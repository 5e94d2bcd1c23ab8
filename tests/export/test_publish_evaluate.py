"""Exporting checkpoints into checked ONNX artifacts, and the evaluation command around them."""

from __future__ import annotations

import json

import onnx
import pytest

from vfq.export.evaluate import HELD_OUT_SEED, Networks, evaluate_phantoms, group_table, main, thickness_group
from vfq.export.networks import SpineLocalizer, VertebraDetector, save_checkpoint
from vfq.export.publish import DETECTOR_FILE, LOCALIZER_FILE, publish
from vfq.tensors import DETECTOR_INPUT, LOCALIZER_INPUT


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    save_checkpoint(root / "loc.pt", SpineLocalizer(), {"steps": 0})
    save_checkpoint(root / "det.pt", VertebraDetector(), {"steps": 0})
    report = publish(root / "loc.pt", root / "det.pt", root / "out")
    return root / "out", report


def test_publish_writes_checked_onnx_files_and_a_report(weights):
    folder, report = weights
    for name, file, input_name in (
        ("localizer", LOCALIZER_FILE, LOCALIZER_INPUT),
        ("detector", DETECTOR_FILE, DETECTOR_INPUT),
    ):
        model = onnx.load(str(folder / file))
        assert model.graph.input[0].name == input_name
        assert report[name]["max_relative_error_vs_pytorch"] <= 1e-4
        assert (folder / file.replace(".onnx", ".pt")).exists()
    assert json.loads((folder / "export.json").read_text())["detector"]["onnx"] == DETECTOR_FILE


def test_evaluation_records_every_study(weights, tmp_path):
    folder, _ = weights
    summaries = evaluate_phantoms(Networks(folder), [HELD_OUT_SEED + 7], tmp_path)
    assert summaries["all"].n_studies == 1
    assert {name.split()[0] for name in summaries} == {"all", "fov", "slices"}
    record = json.loads((tmp_path / "studies.jsonl").read_text().splitlines()[0])
    assert record["seed"] == HELD_OUT_SEED + 7 and record["truth"]
    assert set(record["pipeline_seconds"]) >= {"preprocess", "localizer"}
    assert "group" in group_table(summaries).splitlines()[0]


def test_training_seeds_are_refused_for_evaluation(weights):
    folder, _ = weights
    with pytest.raises(SystemExit):
        main(["--weights", str(folder), "--seeds", "0:10"])


@pytest.mark.parametrize(("mm", "group"), [(0.625, "thin"), (1.25, "thin"), (2.5, "medium"), (5.0, "thick")])
def test_thickness_groups(mm, group):
    assert thickness_group(mm).startswith(group)
