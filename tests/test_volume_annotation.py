from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfq.annotation import SpineAnnotation, VertebraAnnotation
from vfq.genant import FractureType, GenantGrade
from vfq.levels import Level
from vfq.volume import CTVolume, ImageGeometry


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_affine_maps_voxel_zyx_to_world_xyz():
    g = ImageGeometry(shape=(10, 20, 30), spacing=(2.0, 0.5, 0.8), origin=(-100.0, 50.0, 300.0))
    # voxel (z, y, x) = (1, 2, 3) -> x = -100 + 3 * 0.8, y = 50 + 2 * 0.5, z = 300 + 1 * 2
    assert g.voxel_to_world(np.array([1.0, 2.0, 3.0])).tolist() == pytest.approx([-97.6, 51.0, 302.0])


@given(st.floats(-np.pi, np.pi), st.lists(st.floats(-50, 50), min_size=3, max_size=3))
def test_world_voxel_round_trip_with_a_rotated_direction(angle, point):
    g = ImageGeometry(
        shape=(5, 6, 7), spacing=(3.0, 0.7, 0.9), origin=(1.0, 2.0, 3.0), direction=_rotation(angle)
    )
    voxel = g.world_to_voxel(np.array(point))
    assert np.allclose(g.voxel_to_world(voxel), point, atol=1e-9)


def test_geometry_and_volume_refuse_bad_input():
    with pytest.raises(ValueError, match="spacing must be positive"):
        ImageGeometry(shape=(1, 1, 1), spacing=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="orthonormal"):
        ImageGeometry(shape=(1, 1, 1), spacing=(1.0, 1.0, 1.0), direction=np.diag([1.0, 2.0, 1.0]))
    g = ImageGeometry(shape=(2, 3, 4), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="a CT volume is 3D"):
        CTVolume(np.zeros((3, 4), np.int16), g)
    with pytest.raises(ValueError, match="does not match geometry shape"):
        CTVolume(np.zeros((2, 3, 5), np.int16), g)


def _annotation() -> SpineAnnotation:
    g = ImageGeometry(shape=(60, 100, 100), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))

    def box(z_low: float, z_high_front: float, z_high: float) -> np.ndarray:
        return np.array(
            [
                [z_high_front, 40, 50],
                [z_high, 55, 50],
                [z_high, 70, 50],
                [z_low, 40, 50],
                [z_low, 55, 50],
                [z_low, 70, 50],
            ],
            dtype=float,
        )

    vertebrae = [
        VertebraAnnotation.from_keypoints(Level.T11, box(40, 50, 50)),
        VertebraAnnotation.from_keypoints(Level.T12, box(25, 32, 35), fracture_type=FractureType.WEDGE),
        VertebraAnnotation.from_keypoints(Level.L1, box(10, 20, 20)),
    ]
    return SpineAnnotation(
        geometry=g, vertebrae=tuple(vertebrae), curve=np.array([[50.0, 55.0, 0.0], [50, 55, 100]])
    )


def test_genant_from_keypoints_and_json_round_trip(tmp_path):
    graded = _annotation().with_genant_from_keypoints()
    assert [v.grade for v in graded.vertebrae] == [
        GenantGrade.NORMAL,
        GenantGrade.MODERATE,
        GenantGrade.NORMAL,
    ]
    assert graded.vertebrae[1].loss == pytest.approx(0.30)  # 14 mm in front of 20 mm behind
    assert graded.heights_mm()[1].tolist() == pytest.approx([14.0, 20.0, 20.0])
    path = tmp_path / "truth.json"
    graded.write_json(path)
    again = SpineAnnotation.read_json(path)
    assert again.levels == [Level.T11, Level.T12, Level.L1]
    assert again.vertebrae[1].fracture_type is FractureType.WEDGE
    assert np.allclose(again.centers_world, graded.centers_world)
    assert again.to_dict() == graded.to_dict()


def test_unknown_schema_is_refused():
    data = _annotation().to_dict()
    data["schema"] = "something-else/9"
    with pytest.raises(ValueError, match="expected an annotation with schema 'vfq-annotation/1'"):
        SpineAnnotation.from_dict(data)


def test_world_bounds_of_a_rotated_grid():
    g = ImageGeometry(
        shape=(3, 5, 11), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=_rotation(np.pi / 2)
    )
    lo, hi = g.world_bounds()
    # array x runs along world +y, array y along world -x
    assert lo.tolist() == pytest.approx([-4.0, 0.0, 0.0]) and hi.tolist() == pytest.approx([0.0, 10.0, 4.0])
