"""Phantom generation: determinism, fields of view, fractures, acquisition, the exact truth."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from vfq.genant import FractureType, GenantGrade
from vfq.keypoints import heights_mm
from vfq.levels import Level
from vfq.phantoms import (
    Acquisition,
    Contrast,
    FieldOfView,
    Fracture,
    build_anatomy,
    field_of_view_geometry,
    generate,
    ground_truth,
    render,
    sample_spec,
)
from vfq.phantoms.anatomy import GRADE_LOSS_RANGES, MAX_NORMAL_LOSS, SpineShape, build_spine, sample_fractures
from vfq.phantoms.generate import _slice_profile
from vfq.volume import ImageGeometry

SMALL = Acquisition(spacing=(4.0, 2.0, 2.0), slice_thickness=4.0, matrix=(160, 160), noise_hu=10.0)


def _small(seed: int, fov: FieldOfView, **changes) -> object:
    return replace(sample_spec(seed, field_of_view=fov, acquisition=SMALL), **changes)


def test_same_seed_same_phantom_and_other_seed_differs():
    a = generate(_small(4, FieldOfView.CHEST))
    b = generate(_small(4, FieldOfView.CHEST))
    c = generate(_small(5, FieldOfView.CHEST))
    assert np.array_equal(a.ct.array, b.ct.array)
    assert a.truth.to_dict() == b.truth.to_dict()
    assert a.ct.array.shape != c.ct.array.shape or not np.array_equal(a.ct.array, c.ct.array)


@pytest.mark.parametrize(
    ("fov", "complete"),
    [
        (FieldOfView.CHEST, [Level.T1, Level.T6, Level.T12, Level.L1]),
        (FieldOfView.ABDOMEN, [Level.T11, Level.L1, Level.L3, Level.L5]),
        (FieldOfView.WHOLE_SPINE, [Level.T1, Level.T8, Level.L1, Level.L5]),
    ],
)
def test_field_of_view_covers_its_levels(fov, complete):
    for seed in range(3):
        anatomy = build_anatomy(_small(seed, fov))
        truth = ground_truth(anatomy, field_of_view_geometry(anatomy))
        fully = {v.level for v in truth.vertebrae if v.fully_in_view}
        assert set(complete) <= fully, (seed, sorted(lv.value for lv in fully))
    if fov is FieldOfView.CHEST:
        assert Level.L4 not in {v.level for v in truth.vertebrae}
    if fov is FieldOfView.ABDOMEN:
        assert Level.T6 not in {v.level for v in truth.vertebrae}


def test_a_body_in_the_outermost_slice_is_not_fully_in_view():
    anatomy = build_anatomy(_small(2, FieldOfView.ABDOMEN))
    geometry = field_of_view_geometry(anatomy)
    whole = ground_truth(anatomy, geometry)
    inner = [v for v in whole.vertebrae if v.fully_in_view]
    top = max(inner, key=lambda v: v.keypoints[:, 0].max())
    # cut the scan so that the top body's highest keypoint lies a quarter slice below the last
    # slice's centre: inside the grid, but in its outermost slice
    n_z = int(np.floor(top.keypoints[:, 0].max() + 0.25)) + 1
    offset = top.keypoints[:, 0].max() + 0.25 - (n_z - 1)
    cut = replace(
        geometry,
        shape=(n_z, *geometry.shape[1:]),
        origin=(*geometry.origin[:2], geometry.origin[2] + offset * geometry.spacing[0]),
    )
    by_level = {v.level: v for v in ground_truth(anatomy, cut).vertebrae}
    assert not by_level[top.level].fully_in_view
    assert all(by_level[v.level].fully_in_view for v in inner if v is not top and v.level in by_level)


def test_truth_reproduces_requested_losses_exactly():
    fractures = (
        Fracture(Level.T7, FractureType.WEDGE, 0.23),
        Fracture(Level.T10, FractureType.CRUSH, 0.33),
        Fracture(Level.L2, FractureType.BICONCAVE, 0.52),
        Fracture(Level.L5, FractureType.CRUSH, 0.41),
    )
    anatomy = build_anatomy(_small(2, FieldOfView.WHOLE_SPINE, fractures=fractures))
    truth = {v.level: v for v in ground_truth(anatomy, field_of_view_geometry(anatomy)).vertebrae}
    for f in fractures:
        assert truth[f.level].loss == pytest.approx(f.loss, abs=1e-9)
        assert truth[f.level].grade == f.grade
        assert truth[f.level].fracture_type is f.kind
    normal = [v for lv, v in truth.items() if lv not in {f.level for f in fractures}]
    assert all(v.grade == GenantGrade.NORMAL and v.fracture_type is FractureType.NONE for v in normal)


def test_normal_spines_have_physiological_wedging_but_no_fracture_grade():
    thoracic_losses = []
    for seed in range(20):
        spine = build_spine(np.random.default_rng(seed), SpineShape(kyphosis=60))
        heights = heights_mm(spine.keypoints)
        ha, hp = heights[:, 0], heights[:, 2]
        loss = 1 - ha / hp
        thoracic = [i for i, v in enumerate(spine.vertebrae) if Level.T4 <= v.level <= Level.T12]
        thoracic_losses.extend(loss[thoracic])
        from vfq.genant import genant

        assert genant(heights).loss.max() < MAX_NORMAL_LOSS + 0.01
    assert 0.08 < max(thoracic_losses) < MAX_NORMAL_LOSS
    assert np.mean(thoracic_losses) > 0.03


def test_sampled_fractures_cover_types_and_grades_and_keep_crushes_apart():
    seen = set()
    for seed in range(300):
        fractures = sample_fractures(np.random.default_rng(seed))
        crush = sorted(f.level.index for f in fractures if f.kind is FractureType.CRUSH)
        assert all(b - a >= 3 for a, b in itertools.pairwise(crush))
        for f in fractures:
            low, high = GRADE_LOSS_RANGES[f.grade]
            assert low <= f.loss <= high
            seen.add((f.kind, f.grade))
    assert len(seen) == 9  # wedge, biconcave, crush x grades 1-3


def test_adjacent_crush_fractures_are_refused():
    fractures = (Fracture(Level.T8, FractureType.CRUSH, 0.3), Fracture(Level.T9, FractureType.CRUSH, 0.3))
    with pytest.raises(ValueError, match="three levels apart"):
        build_spine(np.random.default_rng(0), SpineShape(), fractures)


def test_scoliosis_bends_laterally_and_rotates_the_vertebrae():
    straight = build_spine(np.random.default_rng(1), SpineShape(scoliosis=0.0, rotation_per_mm=0.6))
    bent = build_spine(
        np.random.default_rng(1), SpineShape(scoliosis=40.0, scoliosis_apex=12, rotation_per_mm=0.6)
    )
    lateral = np.array([v.center[0] for v in bent.vertebrae]) - np.array(
        [v.center[0] for v in straight.vertebrae]
    )
    assert np.abs(lateral).max() > 15.0
    rotation = np.degrees(
        np.arctan2(
            np.array([v.posterior[0] for v in bent.vertebrae]),
            np.array([v.posterior[1] for v in bent.vertebrae]),
        )
    )
    assert np.abs(rotation).max() > 8.0
    # The keypoints stay in each vertebra's own mid-sagittal plane.
    for v in bent.vertebrae:
        assert np.allclose((v.keypoints - v.center) @ v.left, 0.0, atol=1e-9)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


def test_lower_lumbar_lordosis_and_lumbosacral_angle_bend_the_bottom_of_the_column():
    flat = build_spine(np.random.default_rng(3), SpineShape(lower_lumbar=0.0, lumbosacral=0.0))
    bent = build_spine(np.random.default_rng(3), SpineShape(lower_lumbar=15.0, lumbosacral=20.0))

    def bottom(spine):
        l4, l5, s1 = spine.vertebra(Level.L4), spine.vertebra(Level.L5), spine.sacrum
        l5_kp, s1_kp = l5.keypoints, s1.keypoints
        # Keypoints 3 and 5: lower anterior and posterior corners; 0 and 2: the upper ones (DESIGN §2).
        anterior_disc = float(np.linalg.norm(l5_kp[3] - s1_kp[0]))
        posterior_disc = float(np.linalg.norm(l5_kp[5] - s1_kp[2]))
        return _angle_deg(l4.axis, l5.axis), _angle_deg(l5.axis, s1.axis), anterior_disc, posterior_disc

    l45_flat, l5s1_flat, front_flat, back_flat = bottom(flat)
    l45_bent, l5s1_bent, front_bent, back_bent = bottom(bent)
    assert l45_bent - l45_flat == pytest.approx(15.0, abs=3.0)
    assert l5s1_bent - l5s1_flat == pytest.approx(20.0, abs=3.0)
    # The sacrum's top leans anteriorly: the L5/S1 disc opens in front and stays open behind.
    assert abs(front_flat - back_flat) < 3.0
    assert front_bent - back_bent > 7.0 and back_bent > 2.0
    assert bent.sacrum.axis[1] < flat.sacrum.axis[1]  # y is posterior (LPS)
    # The sacrum turns about its upper endplate centre, the start of the curve.
    assert np.allclose(bent.sacrum_top, bent.curve[0]) and np.allclose(flat.sacrum_top, flat.curve[0])


def test_truth_is_the_same_anatomy_on_any_grid():
    anatomy = build_anatomy(_small(8, FieldOfView.CHEST))
    coarse = field_of_view_geometry(anatomy)
    fine = ImageGeometry(
        shape=(50, 90, 70), spacing=(1.5, 0.9, 0.8), origin=(-30.0, -40.0, coarse.origin[2] + 60)
    )
    a = {v.level: v for v in ground_truth(anatomy, coarse).vertebrae}
    b = {v.level: v for v in ground_truth(anatomy, fine).vertebrae}
    common = set(a) & set(b)
    assert common
    for level in common:
        assert np.allclose(coarse.voxel_to_world(a[level].keypoints), fine.voxel_to_world(b[level].keypoints))


def test_acquisition_noise_calibration_and_reconstruction_field():
    spec = _small(3, FieldOfView.ABDOMEN)
    anatomy = build_anatomy(spec)
    geometry = field_of_view_geometry(anatomy)
    clean, _ = render(anatomy, geometry, replace(SMALL, noise_hu=0.0))
    noisy, _ = render(anatomy, geometry, replace(SMALL, noise_hu=30.0))
    shifted, _ = render(anatomy, geometry, replace(SMALL, noise_hu=0.0, hu_offset=20.0, outside_hu=-2048))
    soft = (clean.array > -200) & (clean.array < 200)
    difference = noisy.array[soft].astype(float) - clean.array[soft]
    assert difference.std() == pytest.approx(30.0, rel=0.1)
    assert abs(difference.mean()) < 1.0
    assert np.median(shifted.array[soft].astype(int) - clean.array[soft]) == 20
    corner = (slice(None), 0, 0)
    assert (clean.array[corner] == -1024).all() and (shifted.array[corner] == -2048).all()
    assert clean.array.dtype == np.int16 and clean.array.min() >= -1024


def test_thick_slices_integrate_a_box_profile():
    z = np.array([0.0, 5.0, 10.0])
    fine = np.arange(-2.25, 12.5, 0.5)
    weights = _slice_profile(z, fine, thickness=5.0, step=0.5)
    assert np.allclose(weights.sum(axis=1), 1.0)
    support = fine[weights[1] > 0]
    assert support.min() == pytest.approx(2.75) and support.max() == pytest.approx(7.25)
    # Thick slices blur along z: neighbouring slices differ less.
    anatomy = build_anatomy(_small(1, FieldOfView.CHEST))
    geometry = field_of_view_geometry(anatomy)
    thin, _ = render(anatomy, geometry, replace(SMALL, noise_hu=0.0, slice_thickness=1.0))
    thick, _ = render(anatomy, geometry, replace(SMALL, noise_hu=0.0, slice_thickness=4.0))
    assert (
        np.abs(np.diff(thick.array.astype(float), axis=0)).mean()
        < np.abs(np.diff(thin.array.astype(float), axis=0)).mean()
    )


def test_label_map_marks_each_vertebra_with_its_verse_label():
    phantom = generate(_small(6, FieldOfView.CHEST), with_labels=True)
    assert phantom.labels is not None and phantom.labels.shape == phantom.ct.array.shape
    for v in phantom.truth.vertebrae:
        if v.fully_in_view:
            z, y, x = np.rint(v.center).astype(int)
            assert phantom.labels[z, y, x] == v.level.verse_label, v.level


def test_dense_contrast_adds_streaks_around_the_vessels():
    spec = _small(9, FieldOfView.CHEST, contrast=Contrast.DENSE)
    anatomy = build_anatomy(spec)
    geometry = field_of_view_geometry(anatomy)
    plain_anatomy = build_anatomy(replace(spec, contrast=Contrast.NONE))
    dense, _ = render(anatomy, geometry, replace(SMALL, noise_hu=0.0))
    plain, _ = render(plain_anatomy, geometry, replace(SMALL, noise_hu=0.0))
    assert dense.array.max() > 900 and plain.array.max() < 1500
    # Outside the vessels (where both scans hold the same soft tissue) streaks change many pixels.
    soft = (plain.array > -150) & (plain.array < 150) & (np.abs(dense.array.astype(int) - plain.array) < 400)
    changed = np.abs(dense.array[soft].astype(int) - plain.array[soft]) > 20
    assert changed.mean() > 0.02


def test_sampled_specs_vary_the_acquisition_within_the_stated_ranges():
    specs = [sample_spec(seed) for seed in range(200)]
    pixels = np.array([s.acquisition.spacing[1] for s in specs])
    thickness = np.array([s.acquisition.slice_thickness for s in specs])
    assert 0.45 <= pixels.min() and pixels.max() <= 1.0
    assert thickness.min() <= 0.7 and thickness.max() == 5.0
    assert {s.field_of_view for s in specs} == set(FieldOfView)
    assert {s.contrast for s in specs} == set(Contrast)
    assert sum(bool(s.fractures) for s in specs) > 80
    assert any(s.shape.scoliosis != 0 for s in specs)
    lower_lumbar = np.array([s.shape.lower_lumbar for s in specs])
    lumbosacral = np.array([s.shape.lumbosacral for s in specs])
    assert 0 <= lower_lumbar.min() < 2 and 18 < lower_lumbar.max() <= 20
    assert 5 <= lumbosacral.min() < 7 and 23 < lumbosacral.max() <= 25
