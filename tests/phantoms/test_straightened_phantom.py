"""A phantom through the straightening: its keypoints land on the endplates of the straightened
image, and the demo (what ``make demo`` runs) grades the requested fractures."""

from __future__ import annotations

import numpy as np
import pytest

from vfq.genant import FractureType
from vfq.keypoints import HEIGHT_PAIRS
from vfq.levels import Level
from vfq.phantoms import Acquisition, FieldOfView, Fracture, PhantomSpec, SpineShape, generate
from vfq.phantoms.demo import DEMO_SPEC, run
from vfq.straighten import default_grid, fit_spine_curve, straighten, world_to_grid


@pytest.fixture(scope="module")
def straightened():
    spec = PhantomSpec(
        seed=77,
        field_of_view=FieldOfView.ABDOMEN,
        shape=SpineShape(scoliosis=-35, scoliosis_apex=17, lordosis=55, rotation_per_mm=0.4),
        fractures=(Fracture(Level.L1, FractureType.WEDGE, 0.35),),
        acquisition=Acquisition(
            spacing=(0.8, 0.6, 0.6), slice_thickness=0.8, matrix=(400, 400), noise_hu=0.0
        ),
    )
    phantom = generate(spec)
    ct, truth = phantom.ct, phantom.truth
    vertebrae = [v for v in truth.vertebrae if v.fully_in_view]
    lo, hi = ct.geometry.world_bounds()
    centres = ct.geometry.voxel_to_world(np.array([v.center for v in vertebrae]))
    curve = fit_spine_curve(centres, z_range_mm=(lo[2], hi[2]))
    grid = default_grid(curve, ct.geometry, width_mm=100.0, thickness_mm=9.0, pixel_mm=0.5, step_mm=0.5)
    slab = straighten(ct, curve, grid)
    return vertebrae, ct, curve, grid, slab


def test_keypoints_land_on_the_endplates_of_the_straightened_image(straightened):
    vertebrae, ct, curve, grid, slab = straightened
    assert len(vertebrae) >= 6
    lateral = [abs(v.center[2] - vertebrae[0].center[2]) * ct.geometry.spacing[2] for v in vertebrae]
    assert max(lateral) > 8.0  # the spine really is scoliotic in the CT
    flat = slab.reshape(-1)
    n_s, n_v, n_w = slab.shape

    def sample(index: np.ndarray) -> float:  # trilinear in the straightened slab
        i0 = np.floor(index).astype(int)
        f = index - i0
        total = 0.0
        for corner in np.ndindex(2, 2, 2):
            j = i0 + corner
            weight = np.prod(np.where(corner, f, 1 - f))
            total += weight * flat[np.ravel_multi_index(j, (n_s, n_v, n_w))]
        return total

    checked = 0
    for v in vertebrae:
        kp = world_to_grid(curve, grid, ct.geometry.voxel_to_world(v.keypoints))
        # The vertebra lies on the slab's mid-plane and the body centre on the curve.
        assert np.abs(kp[:, 2] - grid.center_w).max() * grid.spacing_w_mm < 3.0, v.level
        assert abs(kp[:, 1].mean() - grid.center_v) * grid.spacing_v_mm < 2.0, v.level
        for upper, lower in HEIGHT_PAIRS:
            axis = kp[upper] - kp[lower]
            axis /= np.linalg.norm(axis)
            for index, outward in ((upper, axis), (lower, -axis)):
                point = kp[index].copy()
                if index % 3 != 1:  # step 1 mm into the body from the anterior / posterior corner
                    towards = kp[index - index % 3 + 1] - point
                    point += towards / np.linalg.norm(towards) * (1.0 / grid.spacing_v_mm)
                bone = sample(point - outward * (0.5 / grid.step_s_mm))
                disc = sample(point + outward * (2.0 / grid.step_s_mm))
                assert bone > 200 and disc < 150 and bone - disc > 120, (v.level, index, bone, disc)
                checked += 1
    assert checked == 6 * len(vertebrae)


def test_demo_grades_the_requested_fractures(tmp_path):
    report = run(tmp_path)
    by_level = {v["level"]: v for v in report["vertebrae"]}
    for fracture in DEMO_SPEC.fractures:
        entry = by_level[fracture.level.value]
        assert entry["height_loss"] == pytest.approx(fracture.loss, abs=1e-3)
        assert entry["genant_grade"] == int(fracture.grade)
        assert entry["true_fracture_type"] == fracture.kind.value
    assert report["study"]["max_genant_grade"] == 3
    normal = [v for v in report["vertebrae"] if v["true_fracture_type"] == "none"]
    assert all(v["genant_grade"] == 0 for v in normal)
    for name in ("report.json", "straightened.png", "sagittal.png"):
        assert (tmp_path / name).stat().st_size > 1000
