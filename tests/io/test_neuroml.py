"""Tests of the neuro-ml 6-keypoint annotation reader on hand-made fixtures with known answers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vfq.errors import InputError, UnreadableInputError
from vfq.io.neuroml import neuroml_experts, parse_neuroml, parse_neuroml_level, read_neuroml
from vfq.levels import Level
from vfq.volume import ImageGeometry

DATA = Path(__file__).resolve().parents[1] / "data" / "annotations"
V2 = DATA / "neuroml_v2.json"
V1 = DATA / "neuroml_v1.json"

#: The LPS image the fixtures belong to: 40 slices of 64 rows x 48 columns.
GEOMETRY = ImageGeometry(shape=(40, 64, 48), spacing=(2.5, 0.7, 0.7), origin=(-80.0, -22.4, -16.8))

# Expected keypoints of expert1, by hand: z = 39 - slice, y = row, x = column, superior point first.
T12_E1 = np.array(
    [[34, 20, 24], [33.5, 30, 24], [34, 40, 24], [29, 21, 24], [29.5, 30, 24], [29, 40, 24]], dtype=float
)
L1_E1 = np.array(
    [[26, 20, 25], [25.5, 30, 25], [26, 40, 25], [20, 22, 25], [20.5, 30, 25], [20, 41, 25]], dtype=float
)
# L2's posterior pair is written lower point first in the file: the reader must reorder it.
L2_E1 = np.array(
    [[17, 21, 24], [16.5, 31, 24], [17, 41, 24], [11, 22, 24], [11.5, 31, 24], [11, 42, 24]], dtype=float
)
#: expert2 = expert1 + (row 2, column 2, slice 1): the mean of both is expert1 + (z -0.5, y +1, x +1).
MEAN_SHIFT = np.array([-0.5, 1.0, 1.0])


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def flip_slices(data: dict[str, Any], nz: int = 40) -> dict[str, Any]:
    """The same annotation for a series stored inferior → superior (slice s becomes nz - 1 - s)."""
    out = copy.deepcopy(data)
    for vertebrae in out["Annotation"].values():
        for v in vertebrae:
            for pair in v["segments"]:
                for point in pair:
                    point[2] = nz - 1 - point[2]
    return out


def v2_with(segments: list[Any] | None, level: str = "L1") -> dict[str, Any]:
    """A one-expert file holding the fixture's Th12 and L2 plus one vertebra with ``segments``."""
    data = load(V2)
    expert = [v for v in data["Annotation"]["expert1"] if v["type"] != level]
    expert.append({"segments": segments, "type": level})
    return {"Annotation": {"expert1": expert}}


L1_SEGMENTS = [
    [[20.0, 25.0, 13.0], [22.0, 25.0, 19.0]],
    [[30.0, 25.0, 13.5], [30.0, 25.0, 18.5]],
    [[40.0, 25.0, 13.0], [41.0, 25.0, 19.0]],
]


# ---- format v2, one expert ----------------------------------------------------------------------
def test_v2_single_expert_keypoints_levels_and_order() -> None:
    spine = read_neuroml(V2, GEOMETRY, expert="expert1")
    assert spine.levels == [Level.T12, Level.L1, Level.L2]  # cranio-caudal, not file order
    np.testing.assert_array_equal(spine.vertebrae[0].keypoints, T12_E1)
    np.testing.assert_array_equal(spine.vertebrae[1].keypoints, L1_E1)
    np.testing.assert_array_equal(spine.vertebrae[2].keypoints, L2_E1)
    np.testing.assert_allclose(spine.vertebrae[0].center, T12_E1.mean(axis=0))
    assert spine.geometry == GEOMETRY
    assert spine.metadata["slice_order"] == "superior_to_inferior"
    assert spine.metadata["slice_order_from"] == "levels"
    assert spine.metadata["experts"] == ["expert1"]
    assert spine.metadata["series_instance_uid"] == "1.2.3.4.5"
    assert spine.metadata["skipped"] == []


def test_v2_world_coordinates_and_heights() -> None:
    spine = read_neuroml(V2, GEOMETRY, expert="expert1")
    world = spine.geometry.voxel_to_world(spine.vertebrae[0].keypoints[0])
    # voxel (z, y, x) = (34, 20, 24) -> world (x, y, z) = origin + spacing * index
    np.testing.assert_allclose(world, [-80.0 + 24 * 0.7, -22.4 + 20 * 0.7, -16.8 + 34 * 2.5])
    heights = spine.heights_mm()[0]
    np.testing.assert_allclose(heights, [np.hypot(5 * 2.5, 1 * 0.7), 4 * 2.5, 5 * 2.5])


def test_v2_mean_of_experts() -> None:
    spine = read_neuroml(V2, GEOMETRY)  # default: mean
    assert spine.levels == [Level.T12, Level.L1, Level.L2]
    np.testing.assert_allclose(spine.vertebrae[0].keypoints, T12_E1 + MEAN_SHIFT)
    np.testing.assert_allclose(spine.vertebrae[1].keypoints, L1_E1 + MEAN_SHIFT)
    np.testing.assert_allclose(spine.vertebrae[2].keypoints, L2_E1)  # only expert1 drew L2
    assert spine.metadata["experts_per_vertebra"] == [2, 2, 1]
    assert spine.metadata["experts"] == ["expert1", "expert2"]


def test_v2_other_expert() -> None:
    spine = read_neuroml(V2, GEOMETRY, expert="expert2")
    assert spine.levels == [Level.T12, Level.L1]
    np.testing.assert_allclose(spine.vertebrae[0].keypoints, T12_E1 + 2 * MEAN_SHIFT)


def test_experts_are_listed_and_an_unknown_one_is_an_error() -> None:
    assert neuroml_experts(load(V2)) == ("expert1", "expert2")
    with pytest.raises(InputError, match=r"no expert 'expert9'.*expert1"):
        read_neuroml(V2, GEOMETRY, expert="expert9")


def test_slices_stored_inferior_to_superior_are_detected_from_the_levels() -> None:
    flipped = flip_slices(load(V2))
    spine = parse_neuroml(flipped, GEOMETRY, expert="expert1")
    assert spine.metadata["slice_order"] == "inferior_to_superior"
    assert spine.levels == [Level.T12, Level.L1, Level.L2]
    np.testing.assert_allclose(spine.vertebrae[0].keypoints, T12_E1)
    np.testing.assert_allclose(spine.vertebrae[2].keypoints, L2_E1)


def test_explicit_slice_order_must_agree_with_the_levels() -> None:
    spine = read_neuroml(V2, GEOMETRY, expert="expert1", slice_order="superior_to_inferior")
    assert spine.metadata["slice_order_from"] == "given"
    with pytest.raises(InputError, match="caudal levels above cranial"):
        read_neuroml(V2, GEOMETRY, expert="expert1", slice_order="inferior_to_superior")


def test_annotation_serialises_to_json() -> None:
    spine = read_neuroml(V2, GEOMETRY)
    text = json.dumps(spine.to_dict())
    assert '"level": "T12"' in text


# ---- format v1 ----------------------------------------------------------------------------------
def test_v1_mean_matches_by_rank_without_levels() -> None:
    spine = read_neuroml(V1, GEOMETRY)
    assert spine.levels == [None, None]
    assert spine.metadata["slice_order_from"] == "point order"
    assert "v1" in spine.metadata["format"]
    # expert5 lists L1 first; rank matching still pairs Th12 with Th12.
    np.testing.assert_allclose(spine.vertebrae[0].keypoints, T12_E1 + MEAN_SHIFT)
    np.testing.assert_allclose(spine.vertebrae[1].keypoints, L1_E1 + MEAN_SHIFT)


def test_v1_experts_with_different_counts_cannot_be_averaged() -> None:
    data = load(V1)
    data["Annotation"]["expert5"].pop()
    with pytest.raises(InputError, match="different numbers"):
        parse_neuroml(data, GEOMETRY)
    assert len(parse_neuroml(data, GEOMETRY, expert="expert5").vertebrae) == 1


def test_v1_flat_vertebra_without_direction_needs_an_explicit_slice_order() -> None:
    flat = [[20.0, 24.0, 5.0]] * 6
    data = {"Annotation": {"e": [flat]}}
    with pytest.raises(InputError, match="slice_order="):
        parse_neuroml(data, GEOMETRY)


def test_expert_with_no_vertebrae_gives_an_empty_annotation() -> None:
    spine = parse_neuroml({"Annotation": {"e": []}}, GEOMETRY)
    assert spine.vertebrae == ()
    assert spine.metadata["slice_order_from"] == "nothing annotated"


# ---- incomplete vertebrae ------------------------------------------------------------------------
def test_missing_middle_segment_keeps_a_centre_without_keypoints() -> None:
    segments = [L1_SEGMENTS[0], None, L1_SEGMENTS[2]]
    spine = parse_neuroml(v2_with(segments), GEOMETRY)
    l1 = spine.vertebrae[spine.levels.index(Level.L1)]
    assert l1.keypoints is None
    expected = L1_E1[[0, 2, 3, 5]].mean(axis=0)
    np.testing.assert_allclose(l1.center, expected)
    (skip,) = spine.metadata["skipped"]
    assert skip["vertebra"] == "L1" and "missing middle segment" in skip["reason"]
    assert skip["action"].startswith("kept without keypoints")


def test_missing_posterior_segment_drops_the_vertebra() -> None:
    segments = [L1_SEGMENTS[0], L1_SEGMENTS[1], []]
    spine = parse_neuroml(v2_with(segments), GEOMETRY)
    assert spine.levels == [Level.T12, Level.L2]
    assert spine.metadata["skipped"][0]["reason"] == "missing posterior segment"
    assert spine.metadata["skipped"][0]["action"] == "dropped"


def test_wrong_number_of_segments_drops_the_vertebra() -> None:
    spine = parse_neuroml(v2_with(L1_SEGMENTS[:2]), GEOMETRY)
    assert spine.levels == [Level.T12, Level.L2]
    assert "walls unknown" in spine.metadata["skipped"][0]["reason"]


def test_null_segments_drop_the_vertebra() -> None:
    spine = parse_neuroml(v2_with(None), GEOMETRY)
    assert spine.levels == [Level.T12, Level.L2]
    assert "anterior and middle and posterior" in spine.metadata["skipped"][0]["reason"]


def test_incomplete_error_policy_raises() -> None:
    segments = [L1_SEGMENTS[0], None, L1_SEGMENTS[2]]
    with pytest.raises(InputError, match=r"vertebra L1: missing middle segment"):
        parse_neuroml(v2_with(segments), GEOMETRY, incomplete="error")


def test_mean_fills_a_segment_from_the_expert_who_drew_it() -> None:
    data = load(V2)
    data["Annotation"]["expert2"][0]["segments"][1] = None  # expert2's Th12 middle segment
    spine = parse_neuroml(data, GEOMETRY)
    t12 = spine.vertebrae[0].keypoints
    np.testing.assert_allclose(t12[[1, 4]], T12_E1[[1, 4]])  # middle: expert1 only
    np.testing.assert_allclose(t12[[0, 2, 3, 5]], (T12_E1 + MEAN_SHIFT)[[0, 2, 3, 5]])


# ---- malformed input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"Folder": "x"}, "expected 'Annotation'"),
        ({"Annotation": {}}, "expected 'Annotation'"),
        ({"Annotation": {"e": {"segments": []}}}, "must hold a list of vertebrae"),
        ({"Annotation": {"e": [42]}}, "expected an object with 'segments'"),
        ({"Annotation": {"e": [{"segments": "abc", "type": "L1"}]}}, "'segments' must be a list"),
        (
            {"Annotation": {"e": [{"segments": [[[1, 2, "a"], [1, 2, 3]], None, None], "type": "L1"}]}},
            "numbers",
        ),
        (
            {"Annotation": {"e": [{"segments": [[[1, 2], [1, 2]], None, None], "type": "L1"}]}},
            "two finite 3D",
        ),
        ({"Annotation": {"e": [{"segments": [[[1, 2, 3]], None, None], "type": "L1"}]}}, "a pair of points"),
        ({"Annotation": {"e": [{"segments": L1_SEGMENTS, "type": "X1"}]}}, "unknown vertebra type 'X1'"),
        (
            {
                "Annotation": {
                    "e": [{"segments": L1_SEGMENTS, "type": "L1"}, {"segments": L1_SEGMENTS, "type": "L1"}]
                }
            },
            r"annotates \['L1'\] more than once",
        ),
        (
            {"Annotation": {"e": [{"segments": L1_SEGMENTS, "type": "L1"}], "f": [[[1, 2, 3]] * 6]}},
            "mix the v1",
        ),
    ],
)
def test_malformed_content_is_an_input_error(data: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_neuroml(data, GEOMETRY)


@pytest.mark.parametrize(("shift", "in_view"), [(0.0, False), (0.4, True)])
def test_a_vertebra_drawn_into_the_outermost_slice_is_not_fully_in_view(shift: float, in_view: bool) -> None:
    """Th12's upper endplate drawn on slice 0.2 (z 38.8 of 39: inside the top slice) cannot be
    measured; on slice 0.6 it can. The others stay in view."""
    segments = [
        [[20.0, 24.0, 0.2 + shift], [21.0, 24.0, 5.0]],
        [[30.0, 24.0, 0.5 + shift], [30.0, 24.0, 5.5]],
        [[40.0, 24.0, 0.2 + shift], [40.0, 24.0, 5.0]],
    ]
    spine = parse_neuroml(v2_with(segments, level="Th12"), GEOMETRY, expert="expert1")
    by_level = {v.level: v.fully_in_view for v in spine.vertebrae}
    assert by_level == {Level.T12: in_view, Level.L1: True, Level.L2: True}


def test_points_outside_the_image_are_an_input_error() -> None:
    small = ImageGeometry(shape=(20, 64, 48), spacing=(2.5, 0.7, 0.7))
    with pytest.raises(InputError, match=r"outside the image of 64 rows, 48 columns, 20 slices"):
        read_neuroml(V2, small)


def test_flipped_rows_are_detected() -> None:
    data = load(V2)
    for vertebrae in data["Annotation"].values():
        for v in vertebrae:
            v["segments"] = v["segments"][::-1]  # posterior first: as if rows ran posterior -> anterior
    with pytest.raises(InputError, match="rows run anterior"):
        parse_neuroml(data, GEOMETRY)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="cannot read"):
        read_neuroml(tmp_path / "missing.json", GEOMETRY)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UnreadableInputError, match="not valid JSON"):
        read_neuroml(bad, GEOMETRY)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("Th12", Level.T12),
        ("th1", Level.T1),
        ("T13", Level.T13),
        ("C7", Level.C7),
        ("L6", Level.L6),
        ("S1", Level.S1),
    ],
)
def test_level_names(name: str, level: Level) -> None:
    assert parse_neuroml_level(name) is level


@pytest.mark.parametrize("name", ["Th0", "X1", "", "L", "Th14", "S2"])
def test_bad_level_names(name: str) -> None:
    with pytest.raises(InputError, match="unknown vertebra type"):
        parse_neuroml_level(name)
