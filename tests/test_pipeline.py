"""The in-process pipeline with oracle networks (outputs built from the phantom's truth): every
step between the networks — resampling, curve fit, straightening, decoding, mapping back to the CT,
Genant — must then reproduce the truth."""

from __future__ import annotations

import numpy as np
import pytest

from vfq.detection import classes_of_levels, encode_targets
from vfq.export.localizer_data import centre_line, tube_target
from vfq.genant import FractureType
from vfq.levels import Level
from vfq.metrics import evaluate
from vfq.phantoms import Acquisition, FieldOfView, Fracture, PhantomSpec, SpineShape, generate
from vfq.pipeline import NO_SPINE, analyze
from vfq.preprocess import localizer_grid, spine_curve_from_heatmap, to_detector_input
from vfq.straighten import world_to_grid
from vfq.tensors import DETECTOR_LEVEL_CLASSES


@pytest.fixture(scope="module")
def phantom():
    spec = PhantomSpec(
        seed=5,
        field_of_view=FieldOfView.WHOLE_SPINE,
        shape=SpineShape(scoliosis=20, kyphosis=45, lordosis=40),
        fractures=(
            Fracture(Level.T9, FractureType.WEDGE, 0.33),
            Fracture(Level.L1, FractureType.CRUSH, 0.45),
        ),
        acquisition=Acquisition(spacing=(2.0, 1.0, 1.0), slice_thickness=2.0, matrix=(320, 320), noise_hu=10),
    )
    return generate(spec)


def _oracles(phantom):
    ct, truth, anatomy = phantom.ct, phantom.truth, phantom.anatomy
    grid = localizer_grid(ct.geometry)
    heatmap = tube_target(centre_line(anatomy), grid.geometry)[None, None]

    def localizer(tensor: np.ndarray) -> np.ndarray:
        assert tensor.shape == heatmap.shape
        return heatmap

    def detector(tensor: np.ndarray):
        curve = spine_curve_from_heatmap(heatmap[0, 0], grid)
        sagittal = to_detector_input(ct, curve)
        assert sagittal.tensor.shape == tensor.shape
        world = ct.geometry.voxel_to_world(np.stack([v.keypoints for v in truth.vertebrae]))
        sv = world_to_grid(curve, sagittal.grid, world)[..., :2]
        levels = classes_of_levels([v.level for v in truth.vertebrae])
        valid = (levels >= 0) & np.array([v.fully_in_view for v in truth.vertebrae])
        targets = encode_targets(sv, levels, valid, tensor.shape[-2:])
        logits = np.zeros((len(DETECTOR_LEVEL_CLASSES), *targets.levels.shape), np.float32)
        rows, cols = np.nonzero(targets.levels >= 0)
        logits[targets.levels[rows, cols], rows, cols] = 10.0
        return targets.heatmap[None], targets.offsets[None], logits[None]

    return localizer, detector


def test_oracle_networks_reproduce_the_truth(phantom):
    localizer, detector = _oracles(phantom)
    analysis = analyze(phantom.ct, localizer, detector)
    assert analysis.not_assessable is None
    truth = phantom.truth
    expected = [v for v in truth.vertebrae if v.fully_in_view and v.level in DETECTOR_LEVEL_CLASSES]
    assert [lv for lv in analysis.vertebrae.levels] == [v.level for v in expected]
    summary = evaluate([(analysis.to_annotation(phantom.ct), truth)])
    assert summary.precision == 1.0 and summary.recall == 1.0
    assert summary.center_error.median_mm < 0.3 and summary.center_error.max_mm < 1.0
    assert summary.grade.exact_rate == 1.0 and summary.level.accuracy == 1.0
    by_level = dict(zip(analysis.vertebrae.levels, analysis.vertebrae.loss))
    assert by_level[Level.T9] == pytest.approx(0.33, abs=0.02)
    assert by_level[Level.L1] == pytest.approx(0.45, abs=0.03)
    assert set(analysis.seconds) == {"preprocess", "localizer", "straighten", "detector", "decode"}


def test_no_spine_is_reported_not_guessed(phantom):
    analysis = analyze(phantom.ct, lambda t: np.zeros_like(t), lambda t: pytest.fail("detector must not run"))
    assert analysis.not_assessable == NO_SPINE
    assert len(analysis.vertebrae) == 0 and analysis.curve is None
