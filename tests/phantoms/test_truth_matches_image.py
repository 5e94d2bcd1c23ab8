"""The ground truth is consistent with the rendered image: keypoints on the endplate edges, and
the requested height losses measurable in the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_factories import FRACTURES, spine_box_geometry
from scipy.ndimage import map_coordinates

from vfq.genant import genant
from vfq.keypoints import HEIGHT_PAIRS
from vfq.levels import Level
from vfq.phantoms import ground_truth, render

LEVELS = (Level.T9, Level.T10, Level.T11, Level.T12, Level.L1, Level.L2, Level.L3)
PIXEL = 0.4


@pytest.fixture(scope="module")
def fine_render(fractured_anatomy):
    geometry = spine_box_geometry(fractured_anatomy, LEVELS, PIXEL)
    ct, _ = render(fractured_anatomy, geometry)
    truth = ground_truth(fractured_anatomy, geometry)
    return ct, {v.level: v for v in truth.vertebrae}


def _sample(ct, world_points: np.ndarray) -> np.ndarray:
    voxels = ct.geometry.world_to_voxel(world_points)
    return map_coordinates(ct.array.astype(np.float32), voxels.reshape(-1, 3).T, order=1, cval=-1024.0)


def test_keypoints_sit_on_endplate_edges(fine_render):
    ct, truth = fine_render
    g = ct.geometry
    checked = 0
    for level in LEVELS[1:-1]:
        kp = g.voxel_to_world(truth[level].keypoints)
        for upper, lower in HEIGHT_PAIRS:
            axis = kp[upper] - kp[lower]
            axis /= np.linalg.norm(axis)
            for index, outward in ((upper, axis), (lower, -axis)):
                point = kp[index]
                if index % 3 != 1:  # anterior and posterior corners: step 1 mm into the body
                    towards_middle = kp[index - index % 3 + 1] - point
                    point = point + towards_middle / np.linalg.norm(towards_middle)
                bone, disc = _sample(ct, np.stack([point - 0.5 * outward, point + 2.0 * outward]))
                assert bone > 200, (level, index, bone, disc)
                assert disc < 150, (level, index, bone, disc)
                assert bone - disc > 120, (level, index, bone, disc)
                checked += 1
    assert checked == 6 * (len(LEVELS) - 2)


def _measured_height(ct, top: np.ndarray, bottom: np.ndarray, inward: np.ndarray) -> float:
    """Height between the half-maximum edges of the endplates along the top→bottom line (mm)."""
    axis = top - bottom
    length = np.linalg.norm(axis)
    axis /= length
    centre = (top + bottom) / 2 + inward
    t = np.arange(-length / 2 - 4.0, length / 2 + 4.0, 0.05)
    profile = _sample(ct, centre + t[:, None] * axis)

    def edge(sign: int) -> float:
        ts, fs = (t, profile) if sign > 0 else (-t[::-1], profile[::-1])
        near = (ts > length / 2 - 2.5) & (ts < length / 2 + 1.0)
        peak_at = np.flatnonzero(near)[np.argmax(fs[near])]
        disc = np.median(fs[ts > length / 2 + 2.5])
        level = (fs[peak_at] + disc) / 2
        after = peak_at + np.flatnonzero(fs[peak_at:] < level)[0]
        f0, f1 = fs[after - 1], fs[after]
        return float(ts[after - 1] + (f0 - level) / (f0 - f1) * (ts[after] - ts[after - 1]))

    return edge(+1) + edge(-1)


def test_requested_height_loss_is_measurable_in_the_image(fine_render):
    ct, truth = fine_render
    g = ct.geometry
    measured = []
    for level in LEVELS:
        kp = g.voxel_to_world(truth[level].keypoints)
        heights = []
        for upper, lower in HEIGHT_PAIRS:
            if upper == 1:
                heights.append(_measured_height(ct, kp[upper], kp[lower], np.zeros(3)))
                continue
            # The corners themselves are partial-volume: measure 1 and 2 mm inside the body and
            # extrapolate to the wall (the endplates are planar near the rim).
            inward = kp[1] - kp[upper]
            inward /= np.linalg.norm(inward)
            at_1, at_2 = (_measured_height(ct, kp[upper], kp[lower], d * inward) for d in (1.0, 2.0))
            heights.append(2 * at_1 - at_2)
        measured.append(heights)
    losses = dict(zip(LEVELS, genant(np.array(measured)).loss))
    for fracture in FRACTURES:
        assert losses[fracture.level] == pytest.approx(fracture.loss, abs=0.02), fracture
    for level in (Level.T10, Level.L2):
        assert losses[level] < 0.17
