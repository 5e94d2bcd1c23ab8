"""Training data of both networks: targets, the two localizer paths, detector keypoints, augmentation,
the cache and the datasets. Small scans (a 352² chest CT at 0.9 mm) keep the whole file fast."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vfq.errors import InputError
from vfq.export.datasets import (
    GENERATOR_VERSION,
    NO_AUGMENTATION,
    DetectorAugmentation,
    DetectorDataset,
    LocalizerAugmentation,
    LocalizerDataset,
    build_cache,
    load_sample,
    make_detector_sample,
    make_localizer_sample,
    sample_path,
)
from vfq.export.detector_data import (
    DEFORMITY_WEIGHT,
    NORMAL_LOSS_FLOOR,
    CurveError,
    augment_detector,
    deformity_weights,
    detector_targets,
    noisy_spine_curve,
)
from vfq.export.localizer_data import augment_localizer, is_negative_seed, tube_target
from vfq.levels import Level
from vfq.phantoms import Acquisition, FieldOfView, build_anatomy, render, sample_spec
from vfq.tensors import (
    AIR_INPUT,
    DETECTOR_LEVEL_CLASSES,
    DETECTOR_STRIDE,
    HU_CLIP,
    HU_SCALE,
    LOCALIZER_MULTIPLE,
    LOCALIZER_TUBE_SIGMA_MM,
)
from vfq.volume import ImageGeometry

SIGMA = LOCALIZER_TUBE_SIGMA_MM
SMALL_SCAN = Acquisition(spacing=(2.0, 0.9, 0.9), slice_thickness=2.0, matrix=(352, 352), noise_hu=10.0)


def small_spec(seed: int, fov: FieldOfView = FieldOfView.CHEST):
    """A random phantom on a small scan (no osteoporosis: the bone/disc contrast check needs bone)."""
    return replace(sample_spec(seed, field_of_view=fov, acquisition=SMALL_SCAN), osteoporosis=0.0)


@pytest.fixture(scope="module")
def fast_sample():
    return make_localizer_sample(11, spec=small_spec(11), negative=False)


@pytest.fixture(scope="module")
def detector_sample():
    return make_detector_sample(11, spec=small_spec(11))


# ------------------------------------------------------------------------------ localizer target


def test_tube_peaks_on_the_line_and_falls_to_exp_half_at_sigma():
    # anisotropic grid: 2 mm along z, 1 mm along y, 0.5 mm along x; a vertical line at x = 10, y = 12
    geometry = ImageGeometry(shape=(20, 40, 60), spacing=(2.0, 1.0, 0.5), origin=(0.0, 0.0, 0.0))
    line = np.column_stack([np.full(400, 10.0), np.full(400, 12.0), np.linspace(-5, 45, 400)])
    target = tube_target(line, geometry)
    # voxel (z, y, x) = (10, 12, 20) is world (10, 12, 20) -> on the line
    assert target[10, 12, 20] == pytest.approx(1.0, abs=1e-6)
    assert target.max() <= 1.0 and target.min() >= 0.0
    # σ = 5 mm away: 5 voxels along y, 10 voxels along x (spacing-aware)
    assert target[10, 12 + 5, 20] == pytest.approx(np.exp(-0.5), abs=1e-3)
    assert target[10, 12, 20 + 10] == pytest.approx(np.exp(-0.5), abs=1e-3)
    assert target[10, 12 + 3, 20 + 8] == pytest.approx(np.exp(-0.5), abs=1e-3)  # 3-4-5 mm triangle
    assert target[10, 12 + 5, 20] > target[10, 12 + 6, 20] > target[10, 12 + 8, 20]


def test_tube_ends_with_caps_and_is_cut_beyond_four_sigma():
    geometry = ImageGeometry(shape=(40, 30, 30), spacing=(1.0, 1.0, 1.0))
    line = np.column_stack([np.full(81, 15.0), np.full(81, 15.0), np.linspace(10, 30, 81)])
    target = tube_target(line, geometry)
    assert target[30 + 5, 15, 15] == pytest.approx(np.exp(-0.5), abs=1e-3)  # beyond the end: distance
    assert target[15, 15, 15 + 14] == pytest.approx(np.exp(-0.5 * (14 / SIGMA) ** 2), abs=1e-4)
    assert target[15, 0, 0] == 0.0  # 21 mm > 4σ


def test_localizer_sample_follows_the_tensor_contract(fast_sample):
    s = fast_sample
    vz, vy, vx = s.info["valid_shape"]
    assert s.image.dtype == np.float32 and s.target.dtype == np.float32
    assert all(n % LOCALIZER_MULTIPLE == 0 for n in s.image.shape)
    assert s.image.shape == s.target.shape == s.support.shape == s.geometry.shape
    assert s.image.min() >= HU_CLIP[0] * HU_SCALE - 1e-6 and s.image.max() <= HU_CLIP[1] * HU_SCALE + 1e-6
    padding = np.ones(s.image.shape, dtype=bool)
    padding[:vz, :vy, :vx] = False
    assert padding.any() and np.all(s.image[padding] == np.float32(AIR_INPUT))
    assert s.target.max() > 0.95 and s.target.min() == 0.0
    assert np.all(s.target[~s.support] == 0.0)
    # the bone of the column lies under the tube: on the tube the image is brighter than around it
    assert s.image[s.target > 0.8].mean() > s.image[(s.target > 0) & (s.target < 0.1)].mean() + 0.05


def test_tube_is_around_the_truth_vertebra_centres(fast_sample):
    anatomy = build_anatomy(small_spec(11))
    g = fast_sample.geometry
    for level in (Level.T6, Level.T10):
        voxel = np.rint(g.world_to_voxel(anatomy.spine.vertebra(level).center)).astype(int)
        assert fast_sample.target[tuple(voxel)] > 0.8


def test_no_spine_render_has_no_bone_and_a_zero_target():
    spec = small_spec(12)
    negative = make_localizer_sample(12, spec=spec, negative=True)
    positive = make_localizer_sample(12, spec=spec, negative=False)
    assert negative.info["negative"] and negative.target.max() == 0.0
    anatomy = build_anatomy(spec)
    centre = anatomy.spine.vertebra(Level.T8).center
    box = ImageGeometry(shape=(3, 3, 3), spacing=(1.0, 1.0, 1.0), origin=tuple(centre - 1.0))
    without, _ = render(anatomy, box, replace(spec.acquisition, noise_hu=0.0), include_skeleton=False)
    with_bone, _ = render(anatomy, box, replace(spec.acquisition, noise_hu=0.0))
    assert without.array.max() < 120 < with_bone.array.mean()
    bone = 300 * HU_SCALE
    assert (negative.image > bone).sum() < 0.5 * (positive.image > bone).sum()


def test_negative_share_is_drawn_per_seed():
    flags = [is_negative_seed(s) for s in range(400)]
    assert 0.03 < np.mean(flags) < 0.15
    assert flags == [is_negative_seed(s) for s in range(400)]


def test_fast_and_faithful_paths_agree(fast_sample):
    faithful = make_localizer_sample(11, spec=small_spec(11), negative=False, faithful=True)
    for name in ("shape", "spacing", "origin"):
        assert getattr(faithful.geometry, name) == getattr(fast_sample.geometry, name)
    np.testing.assert_array_equal(faithful.target, fast_sample.target)
    m = fast_sample.support
    assert np.corrcoef(fast_sample.image[m], faithful.image[m])[0, 1] > 0.9
    assert np.abs(fast_sample.image[m] - faithful.image[m]).mean() < 0.03  # 30 HU


def test_localizer_sample_is_deterministic(fast_sample):
    again = make_localizer_sample(11, spec=small_spec(11), negative=False)
    np.testing.assert_array_equal(again.image, fast_sample.image)
    np.testing.assert_array_equal(again.target, fast_sample.target)


# ------------------------------------------------------------------------------ localizer augmentation


def test_localizer_augmentation_moves_image_and_target_together(fast_sample):
    s = fast_sample
    # an image that is the target itself: any crop / flip must keep them equal
    image = (np.float32(AIR_INPUT) + s.target).astype(np.float32)
    params = replace(
        NO_AUGMENTATION, small_field_probability=0.5, empty_crop_probability=0.2, flip_x_probability=0.5
    )
    flipped = 0
    for k in range(12):
        rng = np.random.default_rng(k)
        img, tgt = augment_localizer(image, s.target, np.ones_like(s.support), rng, params)
        assert img.shape == tgt.shape == params.crop
        np.testing.assert_allclose(img - np.float32(AIR_INPUT), tgt, atol=2e-3)
        flipped += int(not np.array_equal(img, img[..., ::-1]))
    assert flipped > 0


def test_localizer_crops_contain_the_spine_except_empty_crops(fast_sample):
    s = fast_sample
    params = replace(NO_AUGMENTATION, empty_crop_probability=0.0)
    for k in range(6):
        _, tgt = augment_localizer(s.image, s.target, s.support, np.random.default_rng(k), params)
        assert tgt.max() > 0.5
    params = replace(NO_AUGMENTATION, empty_crop_probability=1.0, crop=(32, 32, 32))
    empty = [
        augment_localizer(s.image, s.target, s.support, np.random.default_rng(k), params)[1].max() < 0.05
        for k in range(6)
    ]
    assert sum(empty) >= 4


def test_clutter_is_added_but_never_over_the_column(fast_sample):
    s = fast_sample
    params = replace(NO_AUGMENTATION, clutter_probability=1.0, clutter_count=(6, 6))
    plain, tgt0 = augment_localizer(s.image, s.target, s.support, np.random.default_rng(5), NO_AUGMENTATION)
    cluttered, tgt = augment_localizer(s.image, s.target, s.support, np.random.default_rng(5), params)
    np.testing.assert_array_equal(tgt, tgt0)  # same crop: the crop is drawn first
    changed = np.abs(cluttered - plain) > 0.05
    assert changed.sum() > 50  # something was dropped in
    assert not changed[tgt > params.clutter_max_target].any()
    assert cluttered.max() <= HU_CLIP[1] * HU_SCALE + 1e-6


def test_localizer_augmentation_is_reproducible_and_keeps_the_value_range(fast_sample):
    s = fast_sample
    a = augment_localizer(s.image, s.target, s.support, np.random.default_rng(3))
    b = augment_localizer(s.image, s.target, s.support, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    for k in range(4):
        img, tgt = augment_localizer(s.image, s.target, s.support, np.random.default_rng(k))
        assert HU_CLIP[0] * HU_SCALE - 1e-6 <= img.min() and img.max() <= HU_CLIP[1] * HU_SCALE + 1e-6
        assert 0.0 <= tgt.min() and tgt.max() <= 1.0


# ------------------------------------------------------------------------------ detector samples


def test_detector_keypoints_sit_on_the_endplates(detector_sample):
    d = detector_sample
    hu = d.image / HU_SCALE
    assert d.valid.sum() >= 8

    def at(point, ds, dv):  # nearest pixel (ds, dv) from a keypoint
        return hu[round(point[0] + ds), round(point[1] + dv)]

    for kp in d.keypoints_sv[d.valid]:
        # anterior and posterior keypoints sit on the body's corners: look 2 px towards the middle
        for (upper, lower), dv in zip(((0, 3), (1, 4), (2, 5)), (2, 0, -2)):
            bone = (at(kp[upper], -2, dv) + at(kp[lower], +2, dv)) / 2  # just inside the body
            disc = (at(kp[upper], +2.5, dv) + at(kp[lower], -2.5, dv)) / 2  # just outside: the discs
            assert bone > disc + 50, (bone, disc)
        assert kp[0, 1] < kp[2, 1] and kp[3, 1] < kp[5, 1]  # anterior at small v (e2 posterior)
        assert kp[0, 0] > kp[3, 0]  # upper endplate superior: larger s


def test_detector_levels_are_ordered_and_limited_to_c7_l5(detector_sample):
    d = detector_sample
    levels = [Level(name) for name in d.info["levels"]]
    for level, index, ok in zip(levels, d.levels, d.valid):
        if level in DETECTOR_LEVEL_CLASSES:
            assert DETECTOR_LEVEL_CLASSES[index] is level
        else:
            assert index == -1 and not ok
    valid_levels = d.levels[d.valid]
    assert np.all(np.diff(valid_levels) == 1)  # cranio-caudal, consecutive
    centres_s = d.keypoints_sv[d.valid].mean(axis=1)[:, 0]
    assert np.all(np.diff(centres_s) < 0)  # cranio-caudal = decreasing s


def test_cervical_and_partial_vertebrae_are_not_positives():
    # a chest scan starts just above C7: C6 (and above) are there but no positives
    d = make_detector_sample(7, spec=small_spec(7))
    levels = [Level(name) for name in d.info["levels"]]
    for level, ok in zip(levels, d.valid):
        if level < Level.C7:
            assert not ok
    assert any(level < Level.C7 for level in levels)
    # the most inferior body of a chest scan is cut by the scan's lower edge
    assert not d.valid[-1]


def test_detector_sample_is_deterministic(detector_sample):
    again = make_detector_sample(11, spec=small_spec(11))
    np.testing.assert_array_equal(again.image, detector_sample.image)
    np.testing.assert_array_equal(again.keypoints_sv, detector_sample.keypoints_sv)


def _curve_error_rms_mm(error: CurveError) -> float:
    """Median over 20 draws of the fitted curve's in-plane RMS distance (mm) from a straight line."""
    z = np.arange(-200.0, 200.0, 0.5)
    line = np.column_stack([np.zeros_like(z), np.zeros_like(z), z])
    rms = []
    for seed in range(20):
        curve, record = noisy_spine_curve(line, (-200.0, 200.0), np.random.default_rng(seed), error)
        assert record["points"] == 100 and record["offset_mm"] == 0.0
        rms.append(np.sqrt(np.mean(np.sum(curve.positions[:, :2] ** 2, axis=1))))
    return float(np.median(rms))


def test_smooth_curve_error_survives_the_fit_and_white_noise_does_not():
    # the served centroids err smoothly along z, and the fit keeps such an error: the simulated
    # drift of sigma 1.5 mm per axis stays ~2.0 mm radial RMS after the fit, while white noise
    # of the same sigma is mostly smoothed away (which is why it is not the error model)
    still = CurveError(offset_probability=0.0, end_jitter_mm=0.0)
    assert 1.8 < _curve_error_rms_mm(still) < 2.3
    assert _curve_error_rms_mm(replace(still, jitter_sigma_mm=1.5, drift_sigma_mm=0.0)) < 1.0


# ------------------------------------------------------------------------------ detector augmentation


def _blob_image(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ss, vv = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    image = np.full(shape, AIR_INPUT, dtype=np.float32)
    for s, v in points:
        image += 1.5 * np.exp(-((ss - s) ** 2 + (vv - v) ** 2) / (2 * 1.0**2)).astype(np.float32)
    return image


@pytest.mark.parametrize("rotation", [0.0, 10.0])
def test_detector_augmentation_moves_keypoints_with_the_pixels(rotation):
    shape = (320, 96)
    keypoints = np.array(
        [[[150.0, 40.3], [151.0, 48.0], [152.0, 56.0], [130.0, 40.0], [131.0, 48.0], [132.5, 55.7]]]
    )
    image = _blob_image(keypoints[0], shape)
    params = DetectorAugmentation(
        crop=(128, 96),
        shift_v=4,
        rotation_probability=1.0 if rotation else 0.0,
        rotation_degrees=rotation,
        hu_scale=(1, 1),
        hu_offset=(0, 0),
        noise_probability=0.0,
    )
    for k in range(4):
        out, moved, valid = augment_detector(
            image, 300, keypoints, np.array([True]), np.random.default_rng(k), params
        )
        if not valid[0]:
            continue
        for s, v in moved[0]:  # the blob's centroid near each moved keypoint is the moved keypoint
            i0, j0 = round(s), round(v)
            window = out[i0 - 3 : i0 + 4, j0 - 3 : j0 + 4] - np.float32(AIR_INPUT)
            ii, jj = np.mgrid[i0 - 3 : i0 + 4, j0 - 3 : j0 + 4]
            assert (window * ii).sum() / window.sum() == pytest.approx(s, abs=0.15)
            assert (window * jj).sum() / window.sum() == pytest.approx(v, abs=0.15)


def test_detector_shift_is_an_exact_translation(detector_sample):
    d = detector_sample
    params = DetectorAugmentation(
        crop=(128, 96), rotation_probability=0.0, hu_scale=(1, 1), hu_offset=(0, 0), noise_probability=0.0
    )
    out, moved, _ = augment_detector(
        d.image, d.n_s, d.keypoints_sv, d.valid, np.random.default_rng(2), params
    )
    ds, dv = np.rint(d.keypoints_sv[0, 0] - moved[0, 0]).astype(int)
    np.testing.assert_allclose(d.keypoints_sv - moved, np.broadcast_to([ds, dv], moved.shape), atol=1e-9)
    assert abs(dv) <= params.shift_v
    rows = slice(max(0, -ds), min(128, d.n_s - ds))
    cols = slice(max(0, -dv), min(96, 96 - dv))
    src = d.image[rows.start + ds : rows.stop + ds, cols.start + dv : cols.stop + dv]
    np.testing.assert_allclose(out[rows, cols], np.clip(src, *(np.array(HU_CLIP) * HU_SCALE)), atol=1e-5)


def test_detector_window_invalidates_cut_bodies_and_encodes_targets(detector_sample):
    d = detector_sample
    params = DetectorAugmentation(crop=(128, 96))
    for k in range(3):
        image, kp, valid = augment_detector(
            d.image, d.n_s, d.keypoints_sv, d.valid, np.random.default_rng(k), params
        )
        assert image.shape == (128, 96) and valid.sum() < d.valid.sum()
        inside = ((kp >= 0) & (kp <= np.array([127, 95]))).all(axis=(1, 2))
        assert not (valid & ~inside).any()
        t = detector_targets(kp, d.levels, valid, image.shape)
        assert t.heatmap.shape == (1, 128 // DETECTOR_STRIDE, 96 // DETECTOR_STRIDE)
        assert int((t.heatmap >= 1 - 1e-6).sum()) == int(valid.sum())
        assert set(np.unique(t.levels)) <= {-1, *d.levels[valid].tolist()}


def test_deformed_bodies_weigh_more_in_the_offset_loss() -> None:
    """Five bodies, 20 px tall: the middle one a 50 % anterior wedge (Genant loss 0.5), the one
    above it slightly wedged (12 %), the others normal; one body without keypoints."""

    def body(s0: float, ha: float, hm: float, hp: float = 20.0) -> list[list[float]]:
        return [[s0 + ha, 30.0], [s0 + hm, 45.0], [s0 + hp, 60.0], [s0, 30.0], [s0, 45.0], [s0, 60.0]]

    bodies = [body(10, 20, 20), body(40, 20, 20), body(70, 10, 15), body(100, 17.6, 19), body(130, 20, 20)]
    kp = np.array([*bodies, np.full((6, 2), np.nan).tolist()])
    weights = deformity_weights(kp)
    np.testing.assert_allclose(
        weights,
        [1.0, 1.0, 1 + DEFORMITY_WEIGHT * (0.5 - NORMAL_LOSS_FLOOR), 1 + DEFORMITY_WEIGHT * 0.02, 1.0, 1.0],
    )
    t = detector_targets(kp[:5], np.arange(5), np.ones(5, bool), (176, 96))
    i, j = t.peak_cells[2]
    assert t.regression_mask[0, i, j] == pytest.approx(weights[2])
    i, j = t.peak_cells[0]
    assert t.regression_mask[0, i, j] == 1.0


# ------------------------------------------------------------------------------ cache and datasets


def test_localizer_cache_round_trip_and_resume(tmp_path):
    manifest = build_cache("localizer", [3, 4], tmp_path, workers=1)
    assert manifest["count"] == 2 and manifest["last_build"]["generated"] == 2
    cached = load_sample(sample_path(tmp_path, "localizer", 3))
    fresh = make_localizer_sample(3)
    np.testing.assert_allclose(cached["image"], fresh.image, atol=2e-3)  # float16
    np.testing.assert_allclose(cached["target"], fresh.target, atol=1e-3)
    np.testing.assert_array_equal(cached["support"], fresh.support)
    assert tuple(cached["shape"]) == fresh.geometry.shape and cached["info"]["seed"] == 3
    stamp = sample_path(tmp_path, "localizer", 3).stat().st_mtime_ns
    manifest = build_cache("localizer", [3, 4, 5], tmp_path, workers=1)
    assert manifest["last_build"]["generated"] == 1 and manifest["count"] == 3
    assert sample_path(tmp_path, "localizer", 3).stat().st_mtime_ns == stamp
    assert set(manifest["samples"]) == {"3", "4", "5"}
    with pytest.raises(InputError, match="localizer"):
        build_cache("detector", [3], tmp_path, workers=1)
    with pytest.raises(InputError, match="fast"):
        build_cache("localizer", [3], tmp_path, workers=1, faithful=True)

    data = LocalizerDataset(tmp_path, seed=1, augmentation=LocalizerAugmentation(crop=(32, 48, 48)))
    assert len(data) == 3
    item = data[0]
    assert item["image"].shape == item["target"].shape == (1, 32, 48, 48)
    assert item["image"].dtype == torch.float32
    again = data[0]
    torch.testing.assert_close(item["image"], again["image"])
    data.set_epoch(1)
    assert not torch.equal(item["image"], data[0]["image"])
    batch = next(iter(DataLoader(data, batch_size=2)))
    assert batch["image"].shape == (2, 1, 32, 48, 48)


def test_detector_cache_and_dataset(tmp_path):
    build_cache("detector", [6], tmp_path, workers=1)
    manifest = build_cache("detector", [6], tmp_path, workers=1)
    assert manifest["last_build"]["generated"] == 0
    assert manifest["generator"] == GENERATOR_VERSION["detector"] == 2
    cached = load_sample(sample_path(tmp_path, "detector", 6))
    assert cached["keypoints_sv"].shape[1:] == (6, 2) and cached["valid"].any()
    data = DetectorDataset(tmp_path, seed=0, augmentation=DetectorAugmentation(crop=(256, 96)))
    batch = next(iter(DataLoader(data, batch_size=1)))
    assert batch["image"].shape == (1, 1, 256, 96)
    assert (
        batch["heatmap"].shape
        == batch["heatmap_weight"].shape
        == batch["offset_mask"].shape
        == (1, 1, 64, 24)
    )
    assert batch["offsets"].shape == (1, 12, 64, 24) and batch["levels"].dtype == torch.int64
    assert float(batch["heatmap"].max()) == pytest.approx(1.0)
    assert bool((batch["levels"] >= 0).any())


def test_build_cache_refuses_a_cache_of_an_older_generator(tmp_path):
    # a detector cache from before the smooth curve error: its manifest has no generator version
    old = {"kind": "detector", "path": "full-resolution", "count": 0, "samples": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(InputError, match="generator version 1; this code makes version 2: use another"):
        build_cache("detector", [6], tmp_path, workers=1)
    assert not sample_path(tmp_path, "detector", 6).exists()


def test_build_cache_refuses_unknown_kinds(tmp_path):
    with pytest.raises(InputError, match="unknown sample kind"):
        build_cache("segmenter", [1], tmp_path)
    with pytest.raises(InputError, match="localizer option"):
        build_cache("detector", [1], tmp_path, faithful=True)
    with pytest.raises(InputError, match="no cached"):
        LocalizerDataset(tmp_path)
