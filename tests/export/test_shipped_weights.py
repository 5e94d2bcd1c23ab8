"""The weights shipped in export/weights: built for today's tensor contract, and they still find
and measure the vertebrae of a phantom that training never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vfq.export.evaluate import HELD_OUT_SEED, Networks
from vfq.export.networks import SpineLocalizer, VertebraDetector
from vfq.export.onnx_export import read_onnx_metadata
from vfq.io import read_ct
from vfq.metrics import evaluate
from vfq.phantoms import generate, sample_spec
from vfq.pipeline import SPINE_TOO_SHORT

WEIGHTS = Path(__file__).resolve().parents[2] / "export" / "weights"
REAL = Path(__file__).resolve().parents[1] / "data" / "real"
#: TotalSegmentator's vertebra labels in the real lumbar CT's label map (its README).
LUMBAR_LABELS = {31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5"}


@pytest.mark.parametrize(
    ("file", "network"),
    [("spine_localizer.onnx", SpineLocalizer), ("vertebra_detector.onnx", VertebraDetector)],
)
def test_shipped_onnx_matches_the_tensor_contract(file, network):
    metadata = read_onnx_metadata(WEIGHTS / file)
    assert metadata["architecture"] == network.ARCHITECTURE
    assert metadata["contract"] == network.contract()


def test_shipped_networks_find_a_held_out_phantoms_vertebrae():
    phantom = generate(sample_spec(HELD_OUT_SEED + 1))  # an abdomen scan, 1.25 mm slices
    analysis = Networks(WEIGHTS).analyze(phantom.ct)
    assert analysis.not_assessable is None
    summary = evaluate([(analysis.to_annotation(phantom.ct), phantom.truth)])
    assert summary.recall >= 0.9 and summary.precision >= 0.9
    assert summary.center_error.median_mm < 1.5
    assert summary.level.accuracy >= 0.9
    assert summary.grade.exact_rate >= 0.85  # 7 of 7 today
    grades = dict(zip((lv.value for lv in analysis.vertebrae.levels), analysis.vertebrae.grade.tolist()))
    assert grades["L5"] == 2  # the moderate wedge (31 % anterior loss)


def test_shipped_networks_find_and_name_each_lumbar_body_of_the_real_abdominal_ct():
    """Every body the detector reports lies in a different vertebra of the reference label map,
    and together they are L1-L5 (the pelvis below the sacrum must not bend the curve away); each
    is named the level of the label it lies in."""
    analysis = Networks(WEIGHTS).analyze(read_ct(REAL / "lumbar_ct_3mm" / "ct.nii.gz"))
    labels = sitk.ReadImage(str(REAL / "lumbar_ct_3mm" / "vertebrae_totalsegmentator.nii.gz"))
    label_array = sitk.GetArrayViewFromImage(labels)
    found = []
    for centre in analysis.vertebrae.keypoints_world.mean(axis=1):
        x, y, z = labels.TransformPhysicalPointToIndex(centre.tolist())
        found.append(LUMBAR_LABELS.get(int(label_array[z, y, x]), "outside L1-L5"))
    assert sorted(found) == ["L1", "L2", "L3", "L4", "L5"]
    assert [level.value if level else None for level in analysis.vertebrae.levels] == found
    assert np.all(analysis.vertebrae.heights_mm[:, 2] > 20.0)  # posterior heights of adult lumbar bodies


def test_a_real_scan_with_40_mm_of_spine_is_too_short_not_spineless():
    ct = read_ct(REAL / "thoracolumbar_dicom_20slices")
    analysis = Networks(WEIGHTS).analyze(ct)
    assert analysis.not_assessable == SPINE_TOO_SHORT
    assert len(analysis.vertebrae) == 0
