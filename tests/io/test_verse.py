"""Tests of the VerSe reader on tiny label maps in non-LPS orientations with hand-derived answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from vfq.errors import InputError, UnreadableInputError
from vfq.io.verse import (
    border_labels,
    centroids_from_label_map,
    parse_verse_centroids,
    read_label_map,
    read_verse,
    read_verse_centroids,
    verse_centroids_to_voxel,
)
from vfq.levels import Level

DATA = Path(__file__).resolve().parents[1] / "data" / "annotations"
MSK = DATA / "verse_pir_msk.nii.gz"  # see make_verse_fixture.py for its boxes
PIR_CTD = DATA / "verse_pir_ctd.json"
ASL_CTD = DATA / "verse_asl_ctd.json"

# PIR fixture: index (i, j, k) -> LPS voxel (z, y, x) = (29 - j, i, 19 - k)
#                                -> world LPS (x, y, z) = (10 - 1.5 k, -20 + i, 100 - 2 j).
CTD_IJK = {19: (9.7, 1.2, 9.4), 20: (8.6, 8.8, 9.3), 21: (9.4, 16.4, 8.6), 22: (10.3, 24.6, 11.2)}
CTD_ZYX = {19: (27.8, 9.7, 9.6), 20: (20.2, 8.6, 9.7), 21: (12.6, 9.4, 10.4), 22: (4.4, 10.3, 7.8)}
MEAN_ZYX = {19: (27.5, 9.5, 9.5), 20: (20.5, 8.5, 9.5), 21: (12.5, 9.5, 10.5), 22: (4.5, 10.5, 7.5)}
LEVELS = [Level.T12, Level.L1, Level.L2, Level.L3]


def world_pir(i: float, j: float, k: float) -> np.ndarray:
    return np.array([10 - 1.5 * k, -20 + 1.0 * i, 100 - 2.0 * j])


def centres(spine: Any) -> dict[int, np.ndarray]:
    return {v.level.verse_label: v.center for v in spine.vertebrae}


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---- the PIR fixture ----------------------------------------------------------------------------
def test_geometry_is_the_lps_reoriented_label_map() -> None:
    spine = read_verse(MSK, PIR_CTD)
    g = spine.geometry
    assert g.shape == (30, 20, 20)
    assert g.spacing == (2.0, 1.0, 1.5)
    np.testing.assert_allclose(g.origin, [-18.5, -20.0, 42.0])  # world of native (i, j, k) = (0, 29, 19)
    np.testing.assert_allclose(g.direction, np.eye(3), atol=1e-12)
    assert spine.metadata["native_orientation"] == "PIR"


def test_pir_centroids_exact_voxel_and_world() -> None:
    spine = read_verse(MSK, PIR_CTD)
    assert spine.levels == LEVELS
    got = centres(spine)
    for label, zyx in CTD_ZYX.items():
        np.testing.assert_allclose(got[label], zyx, atol=1e-9)
        np.testing.assert_allclose(
            spine.geometry.voxel_to_world(got[label]), world_pir(*CTD_IJK[label]), atol=1e-9
        )
    assert all(v.keypoints is None for v in spine.vertebrae)
    np.testing.assert_allclose(spine.centers_world[1], [-3.95, -11.4, 82.4], atol=1e-9)


def test_asl_centroids_of_the_same_points_give_the_same_result() -> None:
    pir = centres(read_verse(MSK, PIR_CTD))
    asl = centres(read_verse(MSK, ASL_CTD))
    for label, zyx in CTD_ZYX.items():
        np.testing.assert_allclose(asl[label], zyx, atol=1e-9)
        np.testing.assert_allclose(asl[label], pir[label], atol=1e-9)


def test_permuted_direction_code(tmp_path: Path) -> None:
    # I, P, L: axis 0 = j, axis 1 = i, axis 2 = 19 - k
    entries = [{"label": lb, "X": j, "Y": i, "Z": 19 - k} for lb, (i, j, k) in CTD_IJK.items()]
    path = write_json(tmp_path / "ipl.json", [{"direction": ["I", "P", "L"]}, *entries])
    got = centres(read_verse(MSK, path))
    for label, zyx in CTD_ZYX.items():
        np.testing.assert_allclose(got[label], zyx, atol=1e-9)


def test_centroids_agree_with_simpleitk_on_the_native_image() -> None:
    image = sitk.ReadImage(str(MSK))
    spine = read_verse(MSK, PIR_CTD)
    for v in spine.vertebrae:
        native = image.TransformContinuousIndexToPhysicalPoint(CTD_IJK[v.level.verse_label])
        np.testing.assert_allclose(spine.geometry.voxel_to_world(v.center), native, atol=1e-9)


def test_border_vertebra_is_not_fully_in_view() -> None:
    spine = read_verse(MSK, PIR_CTD)
    assert [v.fully_in_view for v in spine.vertebrae] == [False, True, True, True]
    assert spine.metadata["labels_touching_border"] == [19]


def test_centres_from_the_label_map_alone() -> None:
    spine = read_verse(MSK)
    assert spine.levels == LEVELS
    got = centres(spine)
    for label, zyx in MEAN_ZYX.items():
        np.testing.assert_allclose(got[label], zyx, atol=1e-12)
    assert [v.fully_in_view for v in spine.vertebrae] == [False, True, True, True]
    direct = centroids_from_label_map(sitk.ReadImage(str(MSK)))
    assert sorted(direct) == [19, 20, 21, 22]
    np.testing.assert_allclose(direct[21], MEAN_ZYX[21], atol=1e-12)


def test_annotation_serialises_to_json() -> None:
    json.dumps(read_verse(MSK, PIR_CTD).to_dict())


# ---- a RAS label map built here -----------------------------------------------------------------
def make_ras(tmp_path: Path) -> Path:
    """20 x 20 x 30 (i, j, k) RAS map: i -> right, j -> anterior, k -> superior; L1 box touches k = 29."""
    array_kji = np.zeros((30, 20, 20), dtype=np.int16)
    array_kji[3:9, 4:10, 6:12] = 21  # L2: i 6..11, j 4..9, k 3..8 -> mean (8.5, 6.5, 5.5)
    array_kji[24:30, 5:9, 7:12] = 20  # L1: i 7..11, j 5..8, k 24..29 -> mean (9, 6.5, 26.5)
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing((0.8, 0.9, 1.2))
    image.SetOrigin((5.0, 6.0, -7.0))
    image.SetDirection([-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])  # RAS in LPS terms
    path = tmp_path / "ras_msk.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_ras_label_map_with_ras_centroids(tmp_path: Path) -> None:
    msk = make_ras(tmp_path)
    ctd = write_json(
        tmp_path / "ctd.json",
        [
            {"direction": ["R", "A", "S"]},
            {"label": 20, "X": 9.0, "Y": 6.5, "Z": 26.5},
            {"label": 21, "X": 8.0, "Y": 7.0, "Z": 5.0},
        ],
    )
    spine = read_verse(msk, ctd)
    assert spine.geometry.shape == (30, 20, 20)
    np.testing.assert_allclose(spine.geometry.spacing, (1.2, 0.9, 0.8), rtol=1e-6)  # NIfTI keeps float32
    assert spine.levels == [Level.L1, Level.L2]
    got = centres(spine)
    # LPS voxel (z, y, x) = (k, 19 - j, 19 - i)
    np.testing.assert_allclose(got[20], [26.5, 12.5, 10.0], atol=1e-9)
    np.testing.assert_allclose(got[21], [5.0, 12.0, 11.0], atol=1e-9)
    # world LPS = (5 - 0.8 i, 6 - 0.9 j, -7 + 1.2 k)
    np.testing.assert_allclose(spine.centers_world[1], [5 - 6.4, 6 - 6.3, -7 + 6.0], atol=1e-5)
    assert [v.fully_in_view for v in spine.vertebrae] == [False, True]
    from_mask = centres(read_verse(msk))
    np.testing.assert_allclose(from_mask[20], [26.5, 12.5, 10.0], atol=1e-12)
    np.testing.assert_allclose(from_mask[21], [5.5, 12.5, 10.5], atol=1e-12)


# ---- edge cases and malformed input -------------------------------------------------------------
def test_nan_and_non_vertebra_entries_are_skipped(tmp_path: Path) -> None:
    ctd = write_json(
        tmp_path / "ctd.json",
        [
            {"direction": ["P", "I", "R"]},
            {"label": 20, "X": 8.6, "Y": 8.8, "Z": 9.3},
            {"label": 21, "X": "nan", "Y": 1, "Z": 1},
            {"label": 27, "X": 9.0, "Y": 28.0, "Z": 9.0},
        ],
    )
    spine = read_verse(MSK, ctd)
    assert spine.levels == [Level.L1]
    reasons = {s["label"]: s["reason"] for s in spine.metadata["skipped"]}
    assert reasons == {21: "non-finite coordinates", 27: "not a vertebra level"}


def test_centroid_label_missing_from_the_mask_is_reported(tmp_path: Path) -> None:
    ctd = write_json(
        tmp_path / "ctd.json", [{"direction": ["P", "I", "R"]}, {"label": 18, "X": 5, "Y": 5, "Z": 5}]
    )
    spine = read_verse(MSK, ctd)
    assert spine.levels == [Level.T11]
    assert spine.metadata["labels_without_mask"] == [18]
    assert spine.metadata["labels_without_centroid"] == [19, 20, 21, 22]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"direction": ["P", "I", "R"]}, "expected a non-empty JSON list"),
        ([], "expected a non-empty JSON list"),
        ([{"label": 20, "X": 1, "Y": 1, "Z": 1}], "first entry must give the axis codes"),
        ([{"direction": ["P", "P", "R"]}], "must name each anatomical axis once"),
        ([{"direction": ["P", "I"]}], "three axis codes"),
        ([{"direction": ["P", "I", "X"]}], "must name each anatomical axis once"),
        (
            [{"direction": ["P", "I", "R"]}, {"label": 20, "X": 1, "Y": 1}],
            "must have 'label', 'X', 'Y' and 'Z'",
        ),
        ([{"direction": ["P", "I", "R"]}, {"label": 20.5, "X": 1, "Y": 1, "Z": 1}], "non-integer label"),
        ([{"direction": ["P", "I", "R"]}, {"label": 20, "X": "a", "Y": 1, "Z": 1}], "non-numeric"),
        (
            [
                {"direction": ["P", "I", "R"]},
                {"label": 20, "X": 1, "Y": 1, "Z": 1},
                {"label": 20, "X": 2, "Y": 1, "Z": 1},
            ],
            "more than once",
        ),
    ],
)
def test_malformed_centroid_files(data: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_verse_centroids(data)


def test_direction_as_a_string_is_accepted() -> None:
    parsed = parse_verse_centroids([{"direction": "PIR"}, {"label": 20, "X": 1, "Y": 2, "Z": 3}])
    assert parsed.direction == ("P", "I", "R")
    np.testing.assert_array_equal(parsed.centroids[0].index, [1, 2, 3])


def test_centroid_outside_the_label_map(tmp_path: Path) -> None:
    # Y = 25 fits the 30-long I axis (Y of a PIR file) but not the 20-long R axis that a PRI code puts there.
    ctd = write_json(
        tmp_path / "ctd.json", [{"direction": ["P", "R", "I"]}, {"label": 20, "X": 8, "Y": 25, "Z": 9}]
    )
    with pytest.raises(InputError, match=r"outside the image of size \(20, 20, 30\) in orientation PRI"):
        read_verse(MSK, ctd)


def test_fractional_label_map_is_rejected(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.full((4, 4, 4), 0.5, dtype=np.float32))
    path = tmp_path / "float.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="fractional"):
        read_label_map(path)


def test_two_dimensional_label_map_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), dtype=np.uint8)), str(path))
    with pytest.raises(InputError, match="3D single-component"):
        read_label_map(path)


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="no label map"):
        read_verse(tmp_path / "none.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    with pytest.raises(UnreadableInputError, match="cannot read the label map"):
        read_verse(junk)
    bad = write_json(tmp_path / "bad.json", {})
    bad.write_text("[{")
    with pytest.raises(UnreadableInputError, match="not valid JSON"):
        read_verse_centroids(bad)


def test_border_labels() -> None:
    labels = np.zeros((5, 6, 7), dtype=np.int64)
    labels[2, 2, 2] = 3  # interior
    labels[0, 3, 3] = 4  # z = 0 face
    labels[2, 5, 1] = 5  # y = last face
    labels[1, 1, 6] = 6  # x = last face
    assert border_labels(labels) == {4, 5, 6}


def test_verse_centroids_to_voxel_directly() -> None:
    parsed = read_verse_centroids(PIR_CTD)
    got = verse_centroids_to_voxel(parsed, sitk.ReadImage(str(MSK)))
    np.testing.assert_allclose(got[22], CTD_ZYX[22], atol=1e-9)
