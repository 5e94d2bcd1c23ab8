"""Step 5: detector targets ↔ decoding round trip, level consistency, duplicates, quantification."""

from __future__ import annotations

import numpy as np
import pytest

from vfq.detection import (
    LEVEL_RUN_MIN_MARGIN,
    REGRESSION_MARGIN_PX,
    DetectorTargets,
    assign_levels,
    body_outline,
    cell_centers,
    decode,
    encode_targets,
    inside_polygon,
    quantify,
    vertebrae_to_world,
)
from vfq.errors import InputError
from vfq.genant import genant
from vfq.keypoints import IN_VIEW_MARGIN_VOXELS
from vfq.levels import Level
from vfq.straighten import SpineCurve, StraightenedGrid
from vfq.tensors import (
    DETECTOR_LEVEL_CLASSES,
    DETECTOR_MULTIPLE,
    DETECTOR_OFFSET_CHANNELS,
    DETECTOR_STRIDE,
    DETECTOR_WIDTH_PX,
)
from vfq.volume import ImageGeometry

N_CLASSES = len(DETECTOR_LEVEL_CLASSES)


def _stack(rng: np.random.Generator, n: int, margin: float = 12.0) -> tuple[np.ndarray, int]:
    """``n`` vertebral bodies ``(n, 6, 2)`` detector pixels stacked inferior→superior, and the image rows.

    Bodies 15–30 mm tall (posterior), 25–40 mm deep, wedge (anterior) and biconcave (middle) losses up
    to 40 %, endplates tilted by a few pixels, discs 4–10 mm, the column wandering a little in v.
    """
    bodies = []
    s = margin
    for _ in range(n):
        hp = rng.uniform(15, 30)
        ha = hp * rng.uniform(0.6, 1.0)
        hm = hp * rng.uniform(0.7, 1.0)
        depth = rng.uniform(25, 40)
        vc = DETECTOR_WIDTH_PX / 2 + rng.uniform(-6, 6)
        va, vm, vp = vc - depth / 2, vc + rng.uniform(-1, 1), vc + depth / 2
        tilt = rng.uniform(-2, 2)
        lower = s + np.array([tilt, tilt / 2, 0.0]) + rng.uniform(-0.5, 0.5, 3)
        lower -= lower.min() - s
        upper = lower + np.array([ha, hm, hp])
        bodies.append(
            [[upper[0], va], [upper[1], vm], [upper[2], vp], [lower[0], va], [lower[1], vm], [lower[2], vp]]
        )
        s = upper.max() + rng.uniform(4, 10)
    rows = int(np.ceil((s + margin) / DETECTOR_MULTIPLE) * DETECTOR_MULTIPLE)
    return np.array(bodies), rows


def _one_hot_logits(targets: DetectorTargets, strength: float = 10.0) -> np.ndarray:
    classes = np.arange(N_CLASSES)[:, None, None]
    return (targets.levels[None] == classes).astype(np.float32) * strength


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("seed", range(25))
def test_round_trip_recovers_keypoints_and_levels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 19))
    keypoints, rows = _stack(rng, n)
    first = int(rng.integers(n - 1, N_CLASSES))  # class of the most inferior body
    levels = first - np.arange(n)
    targets = encode_targets(keypoints, levels, np.ones(n, bool), (rows, DETECTOR_WIDTH_PX))
    detections = decode(targets.heatmap[None], targets.offsets[None], _one_hot_logits(targets)[None])
    assert len(detections) == n
    assert np.abs(detections.keypoints_sv - keypoints).max() < 0.01
    np.testing.assert_array_equal(detections.levels, levels)
    assert detections.level_labels[0] is DETECTOR_LEVEL_CLASSES[first]
    np.testing.assert_allclose(detections.scores, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_partial_bodies_are_ignored_not_negative(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    keypoints, rows = _stack(rng, 8)
    keypoints = keypoints - np.array([keypoints[0, :, 0].mean(), 0.0])  # bottom body centred on row 0
    valid = np.ones(8, bool)
    valid[0] = False
    keypoints[-1, :3, 0] = np.nan  # the top body's upper endplate is unknown
    valid[-1] = False
    levels = np.arange(8)[::-1] + 3
    levels[2] = -1  # unknown level
    targets = encode_targets(keypoints, levels, valid, (rows, DETECTOR_WIDTH_PX))
    peak = targets.peak_cells
    assert targets.heatmap[0, peak[0, 0], peak[0, 1]] < 1e-6  # no positive
    assert targets.heatmap_weight[0, peak[0, 0], peak[0, 1]] == 0.0
    assert (peak[-1] == -1).all()
    for k in range(1, 7):
        assert targets.heatmap[0, peak[k, 0], peak[k, 1]] == 1.0
        assert targets.heatmap_weight[0, peak[k, 0], peak[k, 1]] == 1.0
        assert targets.regression_mask[0, peak[k, 0], peak[k, 1]] == 1.0
    assert targets.regression_mask[0, max(peak[0, 0], 0), peak[0, 1]] == 0.0  # nothing to regress
    assert (targets.levels[targets.regression_mask[0] == 0] == -1).all()
    assert (targets.levels[peak[2, 0] - 1 : peak[2, 0] + 2, peak[2, 1] - 1 : peak[2, 1] + 2] == -1).all()
    assert targets.levels[peak[3, 0], peak[3, 1]] == levels[3]
    detections = decode(targets.heatmap, targets.offsets, _one_hot_logits(targets))
    assert len(detections) == 6
    assert np.abs(detections.keypoints_sv - keypoints[1:7]).max() < 0.01


def test_offsets_channel_order_and_cell_centres() -> None:
    keypoints, rows = _stack(np.random.default_rng(7), 3)
    targets = encode_targets(keypoints, np.array([5, 4, 3]), np.ones(3, bool), (rows, DETECTOR_WIDTH_PX))
    assert targets.offsets.shape == (DETECTOR_OFFSET_CHANNELS, rows // 4, DETECTOR_WIDTH_PX // 4)
    assert targets.heatmap.shape == targets.heatmap_weight.shape == targets.regression_mask.shape
    assert targets.levels.shape == targets.heatmap.shape[1:] and targets.levels.dtype == np.int64
    i, j = targets.peak_cells[1]
    cs, cv = cell_centers(rows // 4, DETECTOR_WIDTH_PX // 4)
    assert cs[i] == i * DETECTOR_STRIDE + 1.5 and cv[j] == j * DETECTOR_STRIDE + 1.5
    np.testing.assert_allclose(targets.offsets[0::2, i, j], keypoints[1, :, 0] - cs[i], atol=1e-5)
    np.testing.assert_allclose(targets.offsets[1::2, i, j], keypoints[1, :, 1] - cv[j], atol=1e-5)
    centre_cell = (keypoints[1].mean(axis=0) - 1.5) / DETECTOR_STRIDE
    assert np.abs(centre_cell - (i, j)).max() <= 0.5
    assert targets.heatmap[0, i + 1, j] == pytest.approx(np.exp(-0.5), rel=1e-6)


def test_offsets_are_set_on_every_cell_of_a_body() -> None:
    """A rectangular body 24 px tall and 32 px deep: the cells whose centres lie inside it regress
    its six keypoints, the cells more than the margin outside regress nothing."""
    s_lo, s_hi, v_a, v_p = 20.0, 44.0, 30.0, 62.0
    body = np.array(
        [[s_hi, v_a], [s_hi, (v_a + v_p) / 2], [s_hi, v_p], [s_lo, v_a], [s_lo, (v_a + v_p) / 2], [s_lo, v_p]]
    )
    targets = encode_targets(body[None], np.array([3]), np.ones(1, bool), (64, DETECTOR_WIDTH_PX))
    cs, cv = cell_centers(16, DETECTOR_WIDTH_PX // 4)
    s_in = (cs > s_lo) & (cs < s_hi)
    v_in = (cv > v_a) & (cv < v_p)
    inside = s_in[:, None] & v_in[None, :]
    assert inside.sum() == 6 * 8
    assert (targets.regression_mask[0][inside] == 1).all()
    far = ((cs < s_lo - REGRESSION_MARGIN_PX - 0.5) | (cs > s_hi + REGRESSION_MARGIN_PX + 0.5))[:, None] | (
        (cv < v_a - REGRESSION_MARGIN_PX - 0.5) | (cv > v_p + REGRESSION_MARGIN_PX + 0.5)
    )[None, :]
    assert (targets.regression_mask[0][far] == 0).all()
    for i, j in zip(*np.nonzero(inside)):
        np.testing.assert_allclose(targets.offsets[0::2, i, j], body[:, 0] - cs[i], atol=1e-5)
        np.testing.assert_allclose(targets.offsets[1::2, i, j], body[:, 1] - cv[j], atol=1e-5)
    # the level is a target on the 3 × 3 cells around the peak only
    i, j = targets.peak_cells[0]
    assert (targets.levels[i - 1 : i + 2, j - 1 : j + 2] == 3).all()
    assert (targets.levels >= 0).sum() == 9


def test_inside_polygon_of_a_biconcave_outline() -> None:
    # upper endplate dips to s = 30 in the middle, the lower one rises to s = 10; v from 0 to 40
    keypoints = np.array([[40.0, 0.0], [30.0, 20.0], [40.0, 40.0], [0.0, 0.0], [10.0, 20.0], [0.0, 40.0]])
    points = np.array(
        [[20.0, 20.0], [35.0, 20.0], [5.0, 20.0], [35.0, 3.0], [5.0, 37.0], [20.0, -1.0], [50.0, 5.0]]
    )
    np.testing.assert_array_equal(
        inside_polygon(points, body_outline(keypoints)), [True, False, False, True, True, False, False]
    )
    grown = body_outline(keypoints, 2.0)
    assert grown[1].tolist() == [32.0, 20.0] and grown[0][0] > 40.0 and grown[0][1] < 0.0


def test_bad_targets_are_refused() -> None:
    keypoints, rows = _stack(np.random.default_rng(8), 3)
    with pytest.raises(InputError, match="multiples of 4"):
        encode_targets(keypoints, np.zeros(3), np.ones(3, bool), (rows + 2, DETECTOR_WIDTH_PX))
    with pytest.raises(InputError, match="outside the image"):
        encode_targets(
            keypoints + np.array([rows, 0]), np.zeros(3), np.ones(3, bool), (rows, DETECTOR_WIDTH_PX)
        )
    with pytest.raises(InputError, match="levels must be -1 or in"):
        encode_targets(keypoints, np.full(3, N_CLASSES), np.ones(3, bool), (rows, DETECTOR_WIDTH_PX))


# ---------------------------------------------------------------------- levels


def test_level_consistency_fixes_a_mislabelled_detection() -> None:
    rng = np.random.default_rng(11)
    keypoints, rows = _stack(rng, 9)
    levels = 16 - np.arange(9)  # L4 … T8
    targets = encode_targets(keypoints, levels, np.ones(9, bool), (rows, DETECTOR_WIDTH_PX))
    logits = _one_hot_logits(targets, strength=4.0)
    i, j = targets.peak_cells[4]
    logits[:, i, j] = 0.0
    logits[2, i, j] = 9.0  # confidently wrong: T2 in the middle of a T8…L4 run
    detections = decode(targets.heatmap, targets.offsets, logits)
    np.testing.assert_array_equal(detections.levels, levels)
    assert detections.level_labels[0] is Level.L4 and detections.level_labels[-1] is Level.T8


def test_levels_are_never_duplicated_or_out_of_order() -> None:
    rng = np.random.default_rng(12)
    named = 0
    for _ in range(50):
        n = int(rng.integers(1, 25))
        result = assign_levels(rng.normal(scale=10.0, size=(n, N_CLASSES)))
        known = result[result >= 0]
        if known.size == 0:  # no run stood out
            continue
        named += 1
        assert known.size <= min(n, N_CLASSES)
        assert (np.diff(known) == -1).all()
        assert (np.diff(np.flatnonzero(result >= 0)) == 1).all()
        # unknown levels only where the run leaves the classes: above C7 or below L5
        top, bottom = np.flatnonzero(result >= 0)[[-1, 0]]
        assert (result[top + 1 :] == -1).all() and (top == n - 1 or result[top] == 0)
        assert (result[:bottom] == -1).all() and (bottom == 0 or result[bottom] == N_CLASSES - 1)
    assert named >= 20


@pytest.mark.parametrize("above_c7", [1, 2])
def test_bodies_above_c7_leave_the_run_where_the_others_put_it(above_c7: int) -> None:
    """A chest scan from C6 (or C5) down to L1: the detector has no class for the top bodies and
    says something arbitrary there, the others are sure. The run keeps C7 … L1 in place and the top
    bodies get no level, instead of all levels moving one down."""
    truth = np.arange(12, -1 - above_c7, -1)  # L1 (class 12) … C7 (0), then the bodies above C7
    logits = np.zeros((truth.size, N_CLASSES))
    known = truth >= 0
    logits[np.flatnonzero(known), truth[known]] = 9.0
    logits[~known, 0] = 2.0  # "C7", weakly
    np.testing.assert_array_equal(assign_levels(logits), np.where(known, truth, -1))


def test_a_sacrum_below_l5_gets_no_level() -> None:
    truth = np.arange(N_CLASSES, N_CLASSES - 8, -1)  # S1 (past the classes), L5 … T10
    logits = np.zeros((truth.size, N_CLASSES))
    logits[np.arange(1, 8), truth[1:]] = 9.0
    logits[0, N_CLASSES - 1] = 1.0  # the sacrum looks a bit like L5
    np.testing.assert_array_equal(assign_levels(logits), np.where(truth < N_CLASSES, truth, -1))


def test_a_weak_but_consistent_run_stays_inside_the_classes() -> None:
    """Ten bodies each only e (2.7) times likelier at its own level than at the next: together
    they single out the run, and no body is left without a level."""
    truth = np.arange(14, 4, -1)  # L2 … T6
    logits = np.zeros((truth.size, N_CLASSES))
    logits[np.arange(truth.size), truth] = 1.0
    np.testing.assert_array_equal(assign_levels(logits), truth)


def test_no_level_is_named_when_no_run_stands_out() -> None:
    """Flat logits, or two namings almost as likely as each other (the lower half of the bodies
    says one thing, the upper half the same run shifted by two), name no level."""
    flat = np.random.default_rng(5).normal(scale=0.3, size=(10, N_CLASSES))
    assert (assign_levels(flat) == -1).all()

    truth = np.arange(12, 6, -1)  # L1 … T8
    logits = np.zeros((truth.size, N_CLASSES))
    logits[np.arange(3), truth[:3]] = 9.0
    logits[np.arange(3, 6), truth[3:] + 2] = 9.0  # the upper three say "two levels lower"
    assert (assign_levels(logits) == -1).all()
    logits[0, truth[0]] = 9.0 + 2 * LEVEL_RUN_MIN_MARGIN  # the lowest body makes the difference
    np.testing.assert_array_equal(assign_levels(logits), truth)


def test_more_detections_than_classes_leave_the_extra_unknown() -> None:
    n = N_CLASSES + 2
    truth = N_CLASSES - 1 - np.arange(n)  # L5 … C7, then two detections above C7
    logits = np.zeros((n, N_CLASSES))
    known = truth >= 0
    logits[np.flatnonzero(known), truth[known]] = 5.0
    result = assign_levels(logits)
    expected = np.where(truth >= 0, truth, -1)
    np.testing.assert_array_equal(result, expected)


def test_decode_without_level_head_leaves_levels_unknown() -> None:
    keypoints, rows = _stack(np.random.default_rng(13), 4)
    targets = encode_targets(keypoints, np.full(4, -1), np.ones(4, bool), (rows, DETECTOR_WIDTH_PX))
    detections = decode(targets.heatmap, targets.offsets)
    assert len(detections) == 4
    assert (detections.levels == -1).all()
    assert detections.level_labels == (None,) * 4


# ---------------------------------------------------------------------- peaks


def test_zero_heatmap_gives_no_detection() -> None:
    h, w = 40, DETECTOR_WIDTH_PX // 4
    detections = decode(
        np.zeros((1, 1, h, w), np.float32),
        np.ones((1, DETECTOR_OFFSET_CHANNELS, h, w), np.float32),
        np.ones((1, N_CLASSES, h, w), np.float32),
    )
    assert len(detections) == 0
    assert detections.keypoints_sv.shape == (0, 6, 2)
    assert detections.levels.shape == (0,) and detections.scores.shape == (0,)


def test_peaks_below_min_score_are_not_vertebrae() -> None:
    h, w = 40, 24
    heatmap = np.zeros((h, w), np.float32)
    heatmap[10, 12] = 0.29
    heatmap[30, 12] = 0.31
    detections = decode(heatmap, np.zeros((DETECTOR_OFFSET_CHANNELS, h, w), np.float32))
    assert len(detections) == 1
    assert tuple(detections.peak_cells[0]) == (30, 12)
    assert detections.scores[0] == pytest.approx(0.31)


def _body_offsets(h: int, w: int, centre_sv: tuple[float, float]) -> np.ndarray:
    """Offsets from every cell to a 20 × 30 px box body centred on ``centre_sv``."""
    cs, cv = centre_sv
    upper = [[cs + 10, cv - 15], [cs + 10, cv], [cs + 10, cv + 15]]
    lower = [[cs - 10, cv - 15], [cs - 10, cv], [cs - 10, cv + 15]]
    box = np.array([*upper, *lower])
    s, v = cell_centers(h, w)
    off = np.empty((DETECTOR_OFFSET_CHANNELS, h, w), np.float32)
    off[0::2] = box[:, 0, None, None] - s[None, :, None]
    off[1::2] = box[:, 1, None, None] - v[None, None, :]
    return off


def test_duplicates_are_suppressed() -> None:
    h, w = 40, 24
    heatmap = np.zeros((h, w), np.float32)
    heatmap[10, 12] = heatmap[10, 13] = 0.9  # a plateau: both cells are local maxima
    heatmap[14, 12] = 0.7  # a second peak 16 px away pointing at the same body
    heatmap[20, 12] = 0.8  # another body
    offsets = _body_offsets(h, w, (41.5, 49.5))
    other = _body_offsets(h, w, (81.5, 49.5))
    offsets[:, 20, 12] = other[:, 20, 12]
    detections = decode(heatmap, offsets)
    assert len(detections) == 2
    np.testing.assert_allclose(detections.centers_sv, [[41.5, 49.5], [81.5, 49.5]], atol=1e-5)
    np.testing.assert_allclose(detections.scores, [0.9, 0.8], rtol=1e-6)
    assert tuple(detections.peak_cells[0]) == (10, 12)


def _gaussian_peaks(h: int, w: int, peaks: list[tuple[int, int]]) -> np.ndarray:
    """A heatmap of unit Gaussians (σ = 1 cell, as trained) on the cells ``peaks``."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    maps = [np.exp(-((i - pi) ** 2 + (j - pj) ** 2) / 2.0) for pi, pj in peaks]
    return np.max(maps, axis=0).astype(np.float32)


def test_keypoints_are_the_heatmap_weighted_vote_of_the_cells_around_the_peak() -> None:
    h, w = 24, 24
    heatmap = _gaussian_peaks(h, w, [(10, 12), (0, 0)])
    rng = np.random.default_rng(21)
    offsets = rng.normal(0.0, 3.0, (DETECTOR_OFFSET_CHANNELS, h, w)).astype(np.float32)
    s, v = cell_centers(h, w)

    def vote(rows: range, cols: range) -> np.ndarray:
        weighted = [
            heatmap[i, j] * (np.array([s[i], v[j]] * 6) + offsets[:, i, j]) for i in rows for j in cols
        ]
        total = sum(heatmap[i, j] for i in rows for j in cols)
        return (np.sum(weighted, axis=0) / total).reshape(6, 2)

    detections = decode(heatmap, offsets)
    by_cell = {tuple(cell): kp for cell, kp in zip(detections.peak_cells.tolist(), detections.keypoints_sv)}
    np.testing.assert_allclose(by_cell[(10, 12)], vote(range(9, 12), range(11, 14)), rtol=1e-6)
    # at the map's corner only the 2 x 2 cells inside it vote
    np.testing.assert_allclose(by_cell[(0, 0)], vote(range(0, 2), range(0, 2)), rtol=1e-6)

    alone = decode(heatmap, offsets, vote_radius=0)
    peak_only = {tuple(cell): kp for cell, kp in zip(alone.peak_cells.tolist(), alone.keypoints_sv)}
    np.testing.assert_allclose(peak_only[(10, 12)], vote(range(10, 11), range(12, 13)), rtol=1e-6)


def test_the_keypoint_vote_averages_out_the_noise_of_single_cells() -> None:
    """Every cell of a body regresses its keypoints with independent errors: the vote over the
    3 × 3 cells (Gaussian weights) has about a third of the error of the peak cell's estimate."""
    h, w = 64, 24
    peaks = [(i, 12) for i in range(4, 64, 8)]
    heatmap = _gaussian_peaks(h, w, peaks)
    offsets = np.zeros((DETECTOR_OFFSET_CHANNELS, h, w), np.float32)
    truth = []
    for i, j in peaks:
        centre = (i * DETECTOR_STRIDE + 1.5, j * DETECTOR_STRIDE + 1.5)
        body = _body_offsets(h, w, centre)
        offsets[:, i - 3 : i + 4] = body[:, i - 3 : i + 4]
        truth.append(body[:, i, j].reshape(6, 2) + np.array(centre))
    noisy = offsets + np.random.default_rng(5).normal(0.0, 1.0, offsets.shape).astype(np.float32)

    def rms_error(vote_radius: int) -> float:
        detections = decode(heatmap, noisy, vote_radius=vote_radius)
        assert detections.peak_cells.tolist() == [list(p) for p in peaks]
        return float(np.sqrt(np.mean((detections.keypoints_sv - np.array(truth)) ** 2)))

    assert rms_error(0) == pytest.approx(1.0, rel=0.25)
    assert rms_error(1) < 0.5 * rms_error(0)


def test_decode_refuses_non_finite_outputs_where_it_reads_them() -> None:
    h, w = 24, 24
    heatmap = _gaussian_peaks(h, w, [(10, 12)])
    offsets = _body_offsets(h, w, (41.5, 49.5))
    offsets[3, 20, 5] = np.nan  # far from the peak: never read
    assert len(decode(heatmap, offsets)) == 1
    offsets[3, 11, 13] = np.inf  # a cell of the peak's vote
    with pytest.raises(
        InputError, match=r"^the keypoint offsets at or around a peak hold NaN or infinite values$"
    ):
        decode(heatmap, offsets)
    heatmap[0, 0] = np.nan
    with pytest.raises(InputError, match=r"^the centre heatmap holds NaN or infinite values$"):
        decode(heatmap, offsets)


def test_decode_refuses_a_negative_vote_radius_and_a_min_score_of_zero() -> None:
    heatmap, offsets = np.zeros((10, 24)), np.zeros((12, 10, 24))
    with pytest.raises(ValueError, match="vote_radius must be 0 or more cells, got -1"):
        decode(heatmap, offsets, vote_radius=-1)
    with pytest.raises(
        ValueError, match=r"min_score must be positive \(a peak's value weighs its keypoint vote\), got 0"
    ):
        decode(heatmap, offsets, min_score=0.0)


def test_decode_refuses_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="offsets must have shape"):
        decode(np.zeros((1, 1, 10, 24)), np.zeros((1, 12, 10, 23)))
    with pytest.raises(InputError, match="level_logits must have shape"):
        decode(np.zeros((10, 24)), np.zeros((12, 10, 24)), np.zeros((3, 10, 24)))


# ---------------------------------------------------------------------- quantification


def _vertical_curve() -> SpineCurve:
    z = np.arange(-50.0, 250.0 + 1e-9, 0.5)
    return SpineCurve.from_polyline(np.column_stack([np.full_like(z, 10.0), np.full_like(z, 20.0), z]))


def test_quantify_on_a_straight_vertical_curve() -> None:
    curve = _vertical_curve()
    rng = np.random.default_rng(21)
    keypoints, rows = _stack(rng, 6)
    grid = StraightenedGrid(n_s=rows, n_v=DETECTOR_WIDTH_PX, n_w=5, s0_mm=30.0)
    levels = 15 - np.arange(6)
    targets = encode_targets(keypoints, levels, np.ones(6, bool), (rows, DETECTOR_WIDTH_PX))
    detections = decode(targets.heatmap, targets.offsets, _one_hot_logits(targets))

    assert np.abs(detections.keypoints_sv - keypoints).max() < 0.01
    sv = detections.keypoints_sv
    world = vertebrae_to_world(detections, grid, curve)
    expected = np.stack(
        [
            np.full(sv.shape[:2], 10.0),  # x: on the slab's mid-plane, the curve's
            20.0 + (sv[..., 1] - 47.5),  # y: posterior along v, 1 mm pixels centred on the curve
            -50.0 + 30.0 + sv[..., 0],  # z: curve start + s0 + i_s
        ],
        axis=-1,
    )
    np.testing.assert_allclose(world, expected, atol=1e-9)

    ct = ImageGeometry(shape=(300, 100, 100), spacing=(1.0, 0.5, 0.5), origin=(-15.0, -5.0, -50.0))
    vertebrae = quantify(detections, grid, curve, ct)
    assert len(vertebrae) == 6
    top_first = expected[::-1]
    np.testing.assert_allclose(vertebrae.keypoints_world, top_first, atol=1e-9)
    np.testing.assert_allclose(vertebrae.keypoints_sagittal, keypoints[::-1], atol=0.01)
    sagittal_heights = np.linalg.norm(keypoints[:, :3] - keypoints[:, 3:], axis=-1)[::-1]  # 1 mm pixels
    np.testing.assert_allclose(vertebrae.heights_mm, sagittal_heights, atol=0.02)
    reference = genant(vertebrae.heights_mm)
    np.testing.assert_allclose(vertebrae.loss, reference.loss)
    np.testing.assert_array_equal(vertebrae.grade, reference.grade)
    np.testing.assert_array_equal(vertebrae.level, levels[::-1])
    assert vertebrae.levels[0] is DETECTOR_LEVEL_CLASSES[10] and vertebrae.levels[-1] is Level.L3
    np.testing.assert_allclose(vertebrae.detection_score, 1.0)

    voxel = vertebrae.keypoints_voxel(ct)
    np.testing.assert_allclose(voxel[..., 0], top_first[..., 2] + 50.0, atol=1e-6)
    np.testing.assert_allclose(voxel[..., 1], (top_first[..., 1] + 5.0) / 0.5, atol=1e-6)
    np.testing.assert_allclose(voxel[..., 2], (top_first[..., 0] + 15.0) / 0.5, atol=1e-6)


def test_quantify_drops_detections_in_the_padding_and_handles_none() -> None:
    curve = _vertical_curve()
    keypoints, rows = _stack(np.random.default_rng(22), 5)
    targets = encode_targets(keypoints, np.full(5, -1), np.ones(5, bool), (rows, DETECTOR_WIDTH_PX))
    detections = decode(targets.heatmap, targets.offsets)
    centre_s = detections.centers_sv[:, 0]
    n_s = int(np.floor((centre_s[3] + centre_s[4]) / 2))  # the top body's centre lies in the padding
    grid = StraightenedGrid(n_s=n_s, n_v=DETECTOR_WIDTH_PX, n_w=5)
    ct = ImageGeometry(shape=(400, 100, 100), spacing=(1.0, 0.5, 0.5), origin=(-15.0, -5.0, -100.0))
    vertebrae = quantify(detections, grid, curve, ct)
    assert len(vertebrae) == 4
    np.testing.assert_allclose(vertebrae.keypoints_sagittal, keypoints[3::-1], atol=0.01)

    empty = decode(np.zeros((10, 24)), np.zeros((12, 10, 24)))
    nothing = quantify(empty, grid, curve, ct)
    assert len(nothing) == 0 and nothing.keypoints_world.shape == (0, 6, 3)


@pytest.mark.parametrize("inside_voxels", [0.4, 0.6])
def test_quantify_keeps_only_bodies_out_of_the_cts_outermost_slices(inside_voxels: float) -> None:
    """A body with a keypoint in the CT's first or last slice (here 3 mm thick) cannot be measured:
    it is dropped; half a slice further in, it is kept (IN_VIEW_MARGIN_VOXELS)."""
    curve = _vertical_curve()
    keypoints, rows = _stack(np.random.default_rng(23), 6)
    targets = encode_targets(keypoints, np.full(6, -1), np.ones(6, bool), (rows, DETECTOR_WIDTH_PX))
    detections = decode(targets.heatmap, targets.offsets)
    grid = StraightenedGrid(n_s=rows, n_v=DETECTOR_WIDTH_PX, n_w=5)
    z = vertebrae_to_world(detections, grid, curve)[..., 2]
    lowest, highest = z.min(), z.max()
    # the lowest keypoint lies `inside_voxels` slices above the first slice's centre, the
    # highest as far below the last one's
    spacing = (highest - lowest) / (99.0 - 2 * inside_voxels)
    ct = ImageGeometry(
        shape=(100, 100, 100),
        spacing=(spacing, 0.5, 0.5),
        origin=(-15.0, -5.0, lowest - inside_voxels * spacing),
    )
    vertebrae = quantify(detections, grid, curve, ct)
    expected = 6 if inside_voxels >= IN_VIEW_MARGIN_VOXELS else 4
    assert len(vertebrae) == expected
    kept_z = vertebrae.keypoints_world[..., 2]
    assert (kept_z.min() == lowest) == (kept_z.max() == highest) == (expected == 6)


def test_exported_members() -> None:
    import vfq.detection as module

    assert all(hasattr(module, name) for name in module.__all__)


def test_level_classes_round_trip_and_unclassed_levels():
    from vfq.detection import classes_of_levels, levels_of_classes

    levels = [Level.C7, Level.T12, Level.L5, Level.C5, Level.S1, None]
    classes = classes_of_levels(levels)
    assert classes.tolist() == [0, 12, 17, -1, -1, -1]
    assert levels_of_classes(classes) == (Level.C7, Level.T12, Level.L5, None, None, None)
