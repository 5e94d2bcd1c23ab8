"""Tests of :func:`vfq.io.ct.read_ct`: real scans, synthetic DICOM series, file round trips, errors."""

from __future__ import annotations

import gc
import logging
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

import vfq.io.dicom_series as dicom_series
from vfq.errors import InconsistentSeriesError, InputError, NotCTError, UnreadableInputError
from vfq.io.ct import read_ct
from vfq.volume import CTVolume, ImageGeometry

DATA = Path(__file__).resolve().parent.parent / "data" / "real"
LUMBAR_CT = DATA / "lumbar_ct_3mm" / "ct.nii.gz"
LUMBAR_LABELS = DATA / "lumbar_ct_3mm" / "vertebrae_totalsegmentator.nii.gz"
DICOM_SERIES = DATA / "thoracolumbar_dicom_20slices"
DICOM_LABELS = DATA / "thoracolumbar_dicom_20slices_labels" / "vertebrae_totalsegmentator_fast.nii.gz"

# VerSe/TotalSegmentator labels of the real scans' label maps
S1, L5, L4, L3, L2, L1, T12, T11 = 26, 27, 28, 29, 30, 31, 32, 33

UID_A = "1.2.826.0.1.3680043.8.498.100001"
UID_B = "1.2.826.0.1.3680043.8.498.100002"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# helpers


def centroid_world(volume: CTVolume, labels: CTVolume, label: int) -> np.ndarray:
    """World LPS (x, y, z) mm of the centroid of ``label``'s voxels."""
    voxels = np.argwhere(labels.array == label)
    assert len(voxels) > 0, f"label {label} is absent"
    return volume.geometry.voxel_to_world(voxels.mean(axis=0))


def write_dicom_series(
    folder: Path,
    slices: Sequence[np.ndarray],
    *,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    origin: tuple[float, float, float] = (-10.0, -20.0, 5.0),
    orientation: Sequence[float] = AXIAL,
    positions: Sequence[Sequence[float]] | None = None,
    modality: str = "CT",
    series_uid: str = UID_A,
    description: str = "synthetic",
    instance_numbers: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    rescale: tuple[float, float] = (1.0, -1024.0),
    pixel_spacings: Sequence[tuple[float, float]] | None = None,
    pixel_dtype: type = np.int16,
) -> None:
    """Write ``slices`` (2D int16 arrays, rows × columns) as one DICOM file each.

    ``spacing`` is (slice step, row spacing, column spacing) mm. Slice k lies at ``positions[k]``,
    else at ``origin + k * step * normal`` (normal = row cosine × column cosine). ``rescale`` is
    (slope, intercept): GDCM stores ``(value - intercept) / slope``, readers apply it back.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # file names need no suffix, as in real exports
    writer.KeepOriginalImageUIDOn()
    for k, pixels in enumerate(slices):
        position = positions[k] if positions is not None else np.array(origin) + k * spacing[0] * normal
        dy, dx = pixel_spacings[k] if pixel_spacings is not None else spacing[1:]
        if float(rescale[0]).is_integer():
            image = sitk.GetImageFromArray(np.asarray(pixels, dtype=pixel_dtype))
        else:  # GDCM writes a non-integer slope only from float pixels, stored as int16
            image = sitk.GetImageFromArray(np.asarray(pixels, dtype=np.float32))
            for key, value in {
                "0028|0100": "16",
                "0028|0101": "16",
                "0028|0102": "15",
                "0028|0103": "1",
            }.items():
                image.SetMetaData(key, value)
        image.SetSpacing((dx, dy))  # GDCM writes PixelSpacing from the image, not from the tag
        tags = {
            "0008|0060": modality,
            "0008|103e": description,
            "0020|000e": series_uid,
            "0020|0013": str(instance_numbers[k] if instance_numbers is not None else k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
            "0028|0030": f"{dy}\\{dx}",
            "0028|1053": f"{rescale[0]:g}",
            "0028|1052": f"{rescale[1]:g}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / (names[k] if names is not None else f"slice{k:03d}.dcm")))
        writer.Execute(image)


def ramp_slices(n: int, shape: tuple[int, int] = (6, 7)) -> list[np.ndarray]:
    """``n`` slices, slice k filled with ``10 * k`` HU, so that the order can be read back."""
    return [np.full(shape, 10 * k, dtype=np.int16) for k in range(n)]


def axial_positions(zs: Sequence[float]) -> list[tuple[float, float, float]]:
    return [(-10.0, -20.0, z) for z in zs]


def write_image(path: Path, array: np.ndarray, geometry: ImageGeometry) -> None:
    """Write a ``(z, y, x)`` array with ``geometry`` (any direction) with SimpleITK."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing[::-1])
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction.ravel().tolist())
    sitk.WriteImage(image, str(path))


# ---------------------------------------------------------------------------------------------
# the real NIfTI (abdomen, 3 mm, stored RAS in the sform)


@pytest.fixture(scope="module")
def lumbar() -> tuple[CTVolume, CTVolume]:
    return read_ct(LUMBAR_CT), read_ct(LUMBAR_LABELS)


def test_real_nifti_geometry_is_lps(lumbar: tuple[CTVolume, CTVolume]) -> None:
    ct, _ = lumbar
    assert ct.array.dtype == np.int16 and ct.array.flags.c_contiguous
    assert ct.array.shape == (112, 101, 122)  # stored (x, y, z) = 122×101×112
    assert ct.geometry.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_array_equal(ct.geometry.direction, np.eye(3))
    # the stored RAS origin (177.956, -11.319, 94.302) is the far corner in x and y after the flip
    np.testing.assert_allclose(ct.geometry.origin, (177.956 - 121 * 3, -11.319 - 100 * 3, 94.302), atol=1e-3)
    assert -1300 < ct.array.min() <= -1000  # air, in HU
    assert ct.array.max() > 1500  # dense bone


def test_real_nifti_voxels_keep_their_world_position(lumbar: tuple[CTVolume, CTVolume]) -> None:
    """Each stored voxel lands, with its value, where ITK's own index→world mapping puts it."""
    ct, _ = lumbar
    stored = sitk.ReadImage(str(LUMBAR_CT))
    stored_array = sitk.GetArrayFromImage(stored)  # (k, j, i) of the RAS file
    for index in [(0, 0, 0), (121, 0, 0), (5, 90, 7), (60, 50, 55), (121, 100, 111)]:
        world = stored.TransformIndexToPhysicalPoint(index)
        voxel = ct.geometry.world_to_voxel(np.array(world))
        np.testing.assert_allclose(voxel, np.rint(voxel), atol=1e-6)
        z, y, x = np.rint(voxel).astype(int)
        assert ct.array[z, y, x] == stored_array[index[2], index[1], index[0]]


def test_real_nifti_labels_align_with_the_ct(lumbar: tuple[CTVolume, CTVolume]) -> None:
    ct, labels = lumbar
    assert labels.geometry.shape == ct.geometry.shape
    assert labels.geometry.spacing == ct.geometry.spacing
    assert labels.geometry.origin == ct.geometry.origin
    np.testing.assert_array_equal(labels.geometry.direction, ct.geometry.direction)
    bone = ct.array[(labels.array >= L5) & (labels.array <= L1)]
    assert bone.mean() > 150  # the label voxels fall on bone in the CT, voxel for voxel


def test_real_nifti_lumbar_levels_run_inferior_to_superior(lumbar: tuple[CTVolume, CTVolume]) -> None:
    ct, labels = lumbar
    centroids = {label: centroid_world(ct, labels, label) for label in (S1, L5, L4, L3, L2, L1, T12)}
    world_z = [centroids[label][2] for label in (S1, L5, L4, L3, L2, L1, T12)]
    assert world_z == sorted(world_z)  # S1 lowest, T12 highest (LPS z is superior)
    assert np.all(np.diff(world_z) > 20)  # about one vertebra (30-35 mm) apart
    # array z runs inferior→superior too: L5's voxels have smaller z indices than L1's
    z_l5 = np.argwhere(labels.array == L5)[:, 0].mean()
    z_l1 = np.argwhere(labels.array == L1)[:, 0].mean()
    assert z_l5 < z_l1


def test_real_nifti_vertebrae_are_posterior_and_central(lumbar: tuple[CTVolume, CTVolume]) -> None:
    ct, labels = lumbar
    body = ct.geometry.voxel_to_world(np.argwhere(ct.array > -300).mean(axis=0))
    for label in (L5, L4, L3, L2, L1):
        vertebra = centroid_world(ct, labels, label)
        assert vertebra[1] > body[1] + 5  # LPS y grows posterior: the spine is behind the body centre
        assert abs(vertebra[0] - body[0]) < 20  # and on the midline


# ---------------------------------------------------------------------------------------------
# the real DICOM series (20 axial slices, file names and instance numbers superior→inferior)


@pytest.fixture(scope="module")
def thoracolumbar() -> CTVolume:
    return read_ct(DICOM_SERIES)


def test_real_dicom_geometry(thoracolumbar: CTVolume) -> None:
    ct = thoracolumbar
    assert ct.array.dtype == np.int16 and ct.array.flags.c_contiguous
    assert ct.array.shape == (20, 512, 512)
    assert ct.geometry.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert ct.geometry.origin == pytest.approx((-249.51171875, -437.51171875, -804.5))
    np.testing.assert_array_equal(ct.geometry.direction, np.eye(3))
    assert ct.array.min() == -1024  # rescale intercept applied: HU, not stored values
    assert ct.array.max() > 1000


def test_real_dicom_slices_are_ordered_by_position(thoracolumbar: CTVolume) -> None:
    """Array slice k is the file whose ImagePositionPatient z is origin z + 2 k: z ascends with k."""
    ct = thoracolumbar
    reader = sitk.ImageFileReader()
    found = {}
    for file in sorted(DICOM_SERIES.iterdir()):
        reader.SetFileName(str(file))
        reader.ReadImageInformation()
        position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        voxel = ct.geometry.world_to_voxel(np.array(position))
        np.testing.assert_allclose(voxel, np.rint(voxel), atol=1e-6)
        k, y, x = np.rint(voxel).astype(int)
        assert (y, x) == (0, 0)
        found[int(k)] = file
    assert sorted(found) == list(range(20))
    for k in (0, 7, 19):  # the pixels of array slice k are those of the file at that position
        np.testing.assert_array_equal(ct.array[k], sitk.GetArrayFromImage(sitk.ReadImage(str(found[k])))[0])
    world_z = ct.geometry.voxel_to_world(np.array([[k, 0, 0] for k in range(20)]))[:, 2]
    np.testing.assert_allclose(world_z, -804.5 + 2.0 * np.arange(20))
    # file names and InstanceNumbers run the other way (superior first): sorting by either is wrong
    assert found[0] == max(found.values()) and found[19] == min(found.values())


@pytest.mark.parametrize("renaming", ["shuffled", "reversed"])
def test_real_dicom_does_not_depend_on_file_names(
    thoracolumbar: CTVolume, tmp_path: Path, renaming: str
) -> None:
    files = sorted(DICOM_SERIES.iterdir())
    order = list(range(len(files)))
    if renaming == "shuffled":
        random.Random(0).shuffle(order)
    else:
        order.reverse()
    for name_index, file in zip(order, files, strict=True):
        shutil.copyfile(file, tmp_path / f"{name_index:02d}.dcm")
    copy = read_ct(tmp_path)
    np.testing.assert_array_equal(copy.array, thoracolumbar.array)
    assert copy.geometry.spacing == thoracolumbar.geometry.spacing
    assert copy.geometry.origin == thoracolumbar.geometry.origin


def test_real_dicom_labels_t12_below_t11(thoracolumbar: CTVolume) -> None:
    labels = read_ct(DICOM_LABELS)
    assert labels.geometry.shape == thoracolumbar.geometry.shape
    assert labels.geometry.origin == pytest.approx(thoracolumbar.geometry.origin)
    assert labels.geometry.spacing == pytest.approx(thoracolumbar.geometry.spacing)
    np.testing.assert_array_equal(labels.geometry.direction, thoracolumbar.geometry.direction)
    t12 = centroid_world(thoracolumbar, labels, T12)
    t11 = centroid_world(thoracolumbar, labels, T11)
    assert t12[2] < t11[2]
    assert thoracolumbar.array[labels.array == T12].mean() > 150  # the labels sit on bone


# ---------------------------------------------------------------------------------------------
# synthetic DICOM series


def test_synthetic_series_round_trip(tmp_path: Path) -> None:
    slices = ramp_slices(5)
    slices[0][1, 2] = -1024
    slices[4][3, 4] = 1500
    slices[2][5, 6] = -3000
    write_dicom_series(tmp_path, slices, rescale=(1.0, -1024.0))
    ct = read_ct(tmp_path)
    assert ct.array.dtype == np.int16
    np.testing.assert_array_equal(ct.array, np.stack(slices))
    assert ct.array[0, 1, 2] == -1024 and ct.array[4, 3, 4] == 1500 and ct.array[2, 5, 6] == -3000
    assert ct.geometry.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert ct.geometry.origin == pytest.approx((-10.0, -20.0, 5.0))
    np.testing.assert_allclose(ct.geometry.direction, np.eye(3), atol=1e-12)


def test_a_series_stored_rle_lossless_reads_the_same_hu_and_geometry(tmp_path: Path) -> None:
    """Archives often hold compressed series: RLE Lossless here (pydicom's own encoder); the real
    series above is JPEG 2000 lossless."""
    import pydicom
    from pydicom.uid import RLELossless

    slices = ramp_slices(4, shape=(24, 20))
    slices[1][3, 4], slices[2][5, 6] = 1500, -3000
    write_dicom_series(tmp_path / "plain", slices)
    (tmp_path / "rle").mkdir()
    for path in sorted((tmp_path / "plain").iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.compress(RLELossless)
        dataset.save_as(tmp_path / "rle" / path.name)
    assert pydicom.dcmread(tmp_path / "rle" / "slice000.dcm").file_meta.TransferSyntaxUID == RLELossless
    plain, rle = read_ct(tmp_path / "plain"), read_ct(tmp_path / "rle")
    np.testing.assert_array_equal(rle.array, np.stack(slices))
    assert rle.geometry.spacing == plain.geometry.spacing
    np.testing.assert_array_equal(rle.geometry.origin, plain.geometry.origin)


def test_synthetic_series_stores_rescaled_values(tmp_path: Path) -> None:
    """The round trip above goes through the rescale: the stored values are HU + 1024."""
    write_dicom_series(tmp_path, [np.full((6, 7), -1024, np.int16)] * 2, rescale=(1.0, -1024.0))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "slice000.dcm"))
    reader.ReadImageInformation()
    assert float(reader.GetMetaData("0028|1052")) == -1024.0
    assert read_ct(tmp_path).array.max() == -1024


def test_synthetic_series_non_integer_and_mixed_rescale(tmp_path: Path) -> None:
    slices = ramp_slices(3)
    slices[1][0, 0] = 1501
    write_dicom_series(tmp_path / "half", slices, rescale=(0.5, -1024.0))
    np.testing.assert_array_equal(read_ct(tmp_path / "half").array, np.stack(slices))
    # slices with different rescale intercepts (and so different pixel types) keep every value
    write_dicom_series(tmp_path / "mixed", slices[:2], rescale=(1.0, 0.0), names=["a.dcm", "b.dcm"])
    write_dicom_series(
        tmp_path / "mixed",
        slices[2:],
        rescale=(1.0, -1024.0),
        positions=axial_positions([10.0]),
        names=["c.dcm"],
    )
    np.testing.assert_array_equal(read_ct(tmp_path / "mixed").array, np.stack(slices))


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_synthetic_series_sorted_by_position_not_instance_number_or_name(tmp_path: Path, order: str) -> None:
    n = 6
    permutation = list(range(n))[::-1] if order == "reversed" else [3, 0, 5, 1, 4, 2]
    write_dicom_series(
        tmp_path,
        ramp_slices(n),
        instance_numbers=[permutation[k] + 1 for k in range(n)],
        names=[f"{permutation[k]:02d}.dcm" for k in range(n)],
    )
    ct = read_ct(tmp_path)
    np.testing.assert_array_equal(ct.array[:, 0, 0], 10 * np.arange(n))
    assert ct.geometry.origin == pytest.approx((-10.0, -20.0, 5.0))


@settings(max_examples=15, deadline=None)
@given(
    step=st.floats(min_value=0.5, max_value=5.0),
    permutation=st.permutations(range(5)),
    start=st.floats(min_value=-900.0, max_value=900.0),
)
def test_synthetic_series_any_file_order_gives_one_volume(
    step: float, permutation: list[int], start: float
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_dicom_series(
            Path(folder),
            ramp_slices(5),
            spacing=(step, 0.8, 0.7),
            origin=(-10.0, -20.0, start),
            instance_numbers=permutation,
            names=[f"{p}.dcm" for p in permutation],
        )
        ct = read_ct(folder)
    np.testing.assert_array_equal(ct.array[:, 0, 0], 10 * np.arange(5))
    assert ct.geometry.spacing[0] == pytest.approx(step, abs=1e-5)
    assert ct.geometry.origin[2] == pytest.approx(start, abs=1e-5)


def test_the_series_files_are_those_read_ordered_by_position(tmp_path: Path) -> None:
    permutation = [3, 0, 4, 1, 2]
    write_dicom_series(
        tmp_path, ramp_slices(5), instance_numbers=permutation, names=[f"{p}.dcm" for p in permutation]
    )
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    files = dicom_series.dicom_series_files(tmp_path)
    assert [f.name for f in files] == [f"{p}.dcm" for p in permutation]  # slice k was named permutation[k]
    write_dicom_series(tmp_path, ramp_slices(2), series_uid=UID_B, names=["b0", "b1"])
    with pytest.raises(InconsistentSeriesError, match="holds 2 DICOM series"):
        dicom_series.dicom_series_files(tmp_path)
    assert [f.name for f in dicom_series.dicom_series_files(tmp_path, UID_B)] == ["b0", "b1"]


def test_synthetic_sagittal_series_keeps_world_positions(tmp_path: Path) -> None:
    """Sagittal slices (rows along P, columns toward I) come back LPS with every voxel in place."""
    row, column = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, column)  # (-1, 0, 0): toward the patient's right
    step, dy, dx, origin = 1.5, 0.8, 0.6, np.array([30.0, -40.0, 100.0])
    slices = [np.full((6, 7), -1000, np.int16) for _ in range(4)]
    markers = {(1, 2, 3): 1200, (3, 5, 0): 700}  # (slice, row, column) → HU
    for (k, r, c), value in markers.items():
        slices[k][r, c] = value
    write_dicom_series(
        tmp_path, slices, spacing=(step, dy, dx), origin=tuple(origin), orientation=(*row, *column)
    )
    ct = read_ct(tmp_path)
    np.testing.assert_allclose(ct.geometry.direction, np.eye(3), atol=1e-12)
    assert ct.array.shape == (6, 7, 4)  # z ← rows (I→S flipped), y ← columns (A→P), x ← slices
    assert ct.geometry.spacing == pytest.approx((dy, dx, step))
    for (k, r, c), value in markers.items():
        expected = origin + k * step * normal + c * dx * row + r * dy * column
        (voxel,) = np.argwhere(ct.array == value)
        np.testing.assert_allclose(ct.geometry.voxel_to_world(voxel), expected, atol=1e-4)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_headers_read_on_threads_come_back_as_on_one(tmp_path: Path, monkeypatch, threads: int) -> None:
    permutation = [5, 0, 3, 6, 1, 4, 2]
    write_dicom_series(
        tmp_path, ramp_slices(7), instance_numbers=permutation, names=[f"{p}.dcm" for p in permutation]
    )
    for name in ("0.txt", "3.5.txt", "9.txt"):  # unreadable files at the start, middle and end
        (tmp_path / name).write_text("not a DICOM file")
    monkeypatch.setattr(dicom_series, "_HEADER_THREADS", 1)
    one, n_files, n_unreadable = dicom_series._read_headers(tmp_path)
    monkeypatch.setattr(dicom_series, "_HEADER_THREADS", threads)
    several = dicom_series._read_headers(tmp_path)
    assert (n_files, n_unreadable) == (10, 3) == several[1:]
    assert [s.path for s in several[0]] == [s.path for s in one] == sorted(s.path for s in one)
    assert [s.instance_number for s in several[0]] == [str(k) for k in range(7)]
    assert [f.name for f in dicom_series.dicom_series_files(tmp_path)] == [f"{p}.dcm" for p in permutation]


@pytest.mark.parametrize(("run_slices", "threads"), [(2, 1), (2, 3), (3, 2), (4, 8)])
def test_pixels_read_in_runs_on_threads_come_back_as_in_one_run(
    tmp_path: Path, monkeypatch, run_slices: int, threads: int
) -> None:
    """Runs of slices on threads give the one-run volume: every value, slice order and geometry,
    across runs that mix pixel types (a slope of 0.5 makes GDCM read float)."""
    slices = [np.random.default_rng(k).integers(-3024, 3000, (6, 7)).astype(np.int16) for k in range(11)]
    slopes = [1.0] * 4 + [0.5] * 3 + [1.0] * 4
    for k, (pixels, slope) in enumerate(zip(slices, slopes, strict=True)):
        write_dicom_series(
            tmp_path,
            [pixels],
            rescale=(slope, -1024.0),
            positions=axial_positions([5.0 + 2.5 * k]),
            instance_numbers=[11 - k],
            names=[f"f{(7 * k) % 11:02d}.dcm"],
        )
    monkeypatch.setattr(dicom_series, "PIXEL_RUN_SLICES", 1000)
    one = read_ct(tmp_path)
    monkeypatch.setattr(dicom_series, "PIXEL_RUN_SLICES", run_slices)
    monkeypatch.setattr(dicom_series, "_PIXEL_THREADS", threads)
    runs = read_ct(tmp_path)
    np.testing.assert_array_equal(one.array, np.stack(slices))
    np.testing.assert_array_equal(runs.array, one.array)
    assert (runs.geometry.shape, runs.geometry.spacing) == (one.geometry.shape, one.geometry.spacing)
    np.testing.assert_array_equal(runs.geometry.direction, one.geometry.direction)
    assert runs.geometry.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert runs.geometry.origin == pytest.approx((-10.0, -20.0, 5.0))


def test_values_outside_int16_in_a_later_run_name_the_whole_range(tmp_path: Path, monkeypatch) -> None:
    slices = ramp_slices(6)
    slices[0][1, 1] = -2048
    write_dicom_series(tmp_path, slices[:4])
    unsigned = [s.astype(np.uint16) for s in slices[4:]]
    unsigned[1][2, 3] = 40000  # stored unsigned: fine in the file, not in int16 HU
    write_dicom_series(
        tmp_path,
        unsigned,
        rescale=(1.0, 0.0),
        positions=axial_positions([15.0, 17.5]),
        names=["e", "f"],
        pixel_dtype=np.uint16,
    )
    monkeypatch.setattr(dicom_series, "PIXEL_RUN_SLICES", 2)
    with pytest.raises(InputError, match=r"DICOM series in .* has values from -2048 to 40000, which do not"):
        read_ct(tmp_path)


def test_synthetic_series_ignores_other_files_in_the_folder(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(3))
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    (tmp_path / "subfolder").mkdir()
    assert read_ct(tmp_path).array.shape == (3, 6, 7)


def test_missing_slice_is_a_gap(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(5), positions=axial_positions([5.0, 7.5, 12.5, 15.0, 20.0]))
    with pytest.raises(InconsistentSeriesError, match=r"gap: 2 missing slices at .* 10, 17\.5") as info:
        read_ct(tmp_path)
    assert "steps of 2.5 mm" in str(info.value)
    assert "7 slices), found 5" in str(info.value)


def test_duplicate_slice_position(tmp_path: Path) -> None:
    write_dicom_series(
        tmp_path,
        ramp_slices(4),
        positions=axial_positions([5.0, 7.5, 7.5, 10.0]),
        instance_numbers=[1, 2, 3, 4],
    )
    with pytest.raises(
        InconsistentSeriesError, match=r"duplicate slice positions.*7\.5 mm \(InstanceNumber 2 and 3\)"
    ):
        read_ct(tmp_path)


def test_non_uniform_slice_spacing(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(4), positions=axial_positions([5.0, 7.5, 10.0, 13.1]))
    with pytest.raises(InconsistentSeriesError, match=r"non-uniform slice spacing.*10→13\.1 \(3\.1 mm\)"):
        read_ct(tmp_path)


def test_spacing_within_tolerance_is_accepted(tmp_path: Path) -> None:
    # 0.005 mm jitter on a 2.5 mm step: within max(0.01 mm, 1 %)
    write_dicom_series(tmp_path, ramp_slices(4), positions=axial_positions([5.0, 7.5, 10.005, 12.5]))
    assert read_ct(tmp_path).geometry.spacing[0] == pytest.approx(2.5, abs=0.01)


def test_mr_series_is_not_ct(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(3), modality="MR")
    with pytest.raises(NotCTError, match=r"Modality MR; expected CT"):
        read_ct(tmp_path)


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    write_dicom_series(
        tmp_path, ramp_slices(3), series_uid=UID_A, description="bone", names=["a0", "a1", "a2"]
    )
    write_dicom_series(
        tmp_path, ramp_slices(4), series_uid=UID_B, description="soft", names=["b0", "b1", "b2", "b3"]
    )
    with pytest.raises(InconsistentSeriesError, match="holds 2 DICOM series") as info:
        read_ct(tmp_path)
    message = str(info.value)
    assert f"'{UID_A}': CT, 3 slices, description 'bone'" in message
    assert f"'{UID_B}': CT, 4 slices, description 'soft'" in message
    assert read_ct(tmp_path, series_uid=UID_A).array.shape == (3, 6, 7)
    assert read_ct(tmp_path, series_uid=UID_B).array.shape == (4, 6, 7)
    with pytest.raises(
        UnreadableInputError, match=r"no DICOM series with SeriesInstanceUID '1\.2\.3'"
    ) as info:
        read_ct(tmp_path, series_uid="1.2.3")
    assert UID_A in str(info.value) and UID_B in str(info.value)


def test_mixed_orientation(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(2), names=["a", "b"])
    write_dicom_series(
        tmp_path, ramp_slices(1), orientation=(1, 0, 0, 0, 0, -1), positions=[(0, 0, 0)], names=["c"]
    )
    with pytest.raises(InconsistentSeriesError, match="differ in ImageOrientationPatient"):
        read_ct(tmp_path)


def test_mixed_rows_columns(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(2), names=["a", "b"])
    write_dicom_series(tmp_path, ramp_slices(1, (6, 8)), positions=axial_positions([10.0]), names=["c"])
    with pytest.raises(
        InconsistentSeriesError, match=r"differ in Rows×Columns: 6×7 \(2 slices\), 6×8 \(1 slices\)"
    ):
        read_ct(tmp_path)


def test_mixed_pixel_spacing(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(3), pixel_spacings=[(0.8, 0.7), (0.8, 0.7), (0.8, 0.75)])
    with pytest.raises(InconsistentSeriesError, match="differ in PixelSpacing"):
        read_ct(tmp_path)


def test_sheared_stack_gantry_tilt(tmp_path: Path) -> None:
    positions = [(-10.0, -20.0 + 0.5 * k, 5.0 + 2.5 * k) for k in range(4)]  # y drifts with z
    write_dicom_series(tmp_path, ramp_slices(4), positions=positions)
    with pytest.raises(InconsistentSeriesError, match="gantry-tilted"):
        read_ct(tmp_path)


def test_single_slice_series_is_2d(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(1))
    with pytest.raises(
        InconsistentSeriesError, match="has 1 slice: a 2D image; expected a CT volume of at least 2"
    ):
        read_ct(tmp_path)


def test_single_dicom_file_asks_for_the_folder(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(2))
    with pytest.raises(InputError, match="Pass the folder"):
        read_ct(tmp_path / "slice000.dcm")


def test_no_identifiers_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dicom_series(tmp_path / "DOE_JANE", ramp_slices(3), description="CT Body")
    for file in (tmp_path / "DOE_JANE").iterdir():  # add a patient name to every slice
        image = sitk.ReadImage(str(file))
        image.SetMetaData("0010|0010", "DOE^JANE")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(file))
        writer.Execute(image)
    caplog.set_level(logging.DEBUG, logger="vfq")
    ct = read_ct(tmp_path / "DOE_JANE")
    assert ct.array.shape == (3, 6, 7)
    assert caplog.records, "read_ct logs a summary at DEBUG"
    assert all(record.name in ("vfq.io.ct", "vfq.io.dicom_series") for record in caplog.records)
    assert "DOE" not in caplog.text and UID_A not in caplog.text and "CT Body" not in caplog.text


def test_geometry_read_by_simpleitk_is_checked_against_the_headers(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, ramp_slices(3))
    slices, _, _ = dicom_series._read_headers(tmp_path)
    ordered, step = dicom_series._order_slices(slices, UID_A)
    image = sitk.ReadImage([s.path for s in ordered])
    dicom_series._check_read_geometry(image, ordered, step, UID_A)  # agrees
    image.SetSpacing((0.7, 0.8, 3.0))
    with pytest.raises(InconsistentSeriesError, match=r"spacing \(0\.7, 0\.8, 3\.0\) instead of"):
        dicom_series._check_read_geometry(image, ordered, step, UID_A)


# ---------------------------------------------------------------------------------------------
# NRRD / MetaImage / NIfTI round trips with non-LPS directions

DIRECTIONS = {
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LPI": np.diag([1.0, 1.0, -1.0]),
    # array x → inferior, y → left, z → anterior: a permuted axis order
    "permuted": np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]),
}


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii.gz", ".nii"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_file_round_trip_reorients_to_lps(tmp_path: Path, suffix: str, direction: str) -> None:
    array = np.full((4, 5, 6), -1000, dtype=np.int16)
    markers = {(1, 2, 3): 1234, (3, 0, 5): -555, (0, 4, 0): 42}
    for voxel, value in markers.items():
        array[voxel] = value
    before = ImageGeometry(
        shape=array.shape,
        spacing=(2.0, 0.7, 0.5),
        origin=(12.5, -30.0, 80.0),
        direction=DIRECTIONS[direction],
    )
    write_image(tmp_path / f"ct{suffix}", array, before)
    ct = read_ct(tmp_path / f"ct{suffix}")
    np.testing.assert_allclose(ct.geometry.direction, np.eye(3), atol=1e-6)
    assert sorted(ct.geometry.spacing) == pytest.approx(sorted(before.spacing))
    for voxel, value in markers.items():
        (found,) = np.argwhere(ct.array == value)
        np.testing.assert_allclose(
            ct.geometry.voxel_to_world(found), before.voxel_to_world(np.array(voxel)), atol=1e-3
        )


def test_permuted_axes_get_lps_spacing(tmp_path: Path) -> None:
    array = np.zeros((4, 5, 6), dtype=np.int16)
    before = ImageGeometry(array.shape, (2.0, 0.7, 0.5), direction=DIRECTIONS["permuted"])
    write_image(tmp_path / "ct.mha", array, before)
    ct = read_ct(tmp_path / "ct.mha")
    # array x (0.5 mm) runs along world z, array y (0.7 mm) along x, array z (2 mm) along y
    assert ct.array.shape == (6, 4, 5)
    assert ct.geometry.spacing == pytest.approx((0.5, 2.0, 0.7))


def test_float_values_are_rounded_to_int16(tmp_path: Path) -> None:
    array = np.full((2, 3, 4), -1024.4, dtype=np.float32)
    array[0, 0, :4] = [1499.5, 1500.5, 2.6, -0.4]
    write_image(tmp_path / "ct.nii.gz", array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    ct = read_ct(tmp_path / "ct.nii.gz")
    assert ct.array.dtype == np.int16
    np.testing.assert_array_equal(ct.array[0, 0], [1500, 1500, 3, 0])  # round half to even
    assert ct.array[1, 2, 3] == -1024


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_nan_or_inf_is_refused(tmp_path: Path, bad: float, suffix: str) -> None:
    # SimpleITK's NIfTI reader (nifticlib) silently turns NaN and inf into 0: read_ct must not
    array = np.zeros((2, 3, 4), dtype=np.float32)
    array[1, 1, 1] = bad
    array[0, 2, 3] = bad
    write_image(tmp_path / f"ct{suffix}", array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="has 2 voxels that are NaN or infinite; expected finite"):
        read_ct(tmp_path / f"ct{suffix}")


def test_values_outside_int16_are_refused(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 4), dtype=np.int32)
    array[1, 1, 1] = 40000
    write_image(tmp_path / "ct.nrrd", array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="values from 0 to 40000, which do not fit int16"):
        read_ct(tmp_path / "ct.nrrd")


def test_int16_array_outlives_the_reader(tmp_path: Path) -> None:
    """The int16 case hands over SimpleITK's buffer without a copy; it must stay valid."""
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_image(tmp_path / "ct.mha", array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    ct = read_ct(tmp_path / "ct.mha")
    gc.collect()
    _ = [np.full(array.size, 7, np.int16) for _ in range(50)]
    np.testing.assert_array_equal(ct.array, array)
    assert ct.array.flags.c_contiguous and ct.array.flags.writeable


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="no file or folder at"):
        read_ct(tmp_path / "nowhere.nii.gz")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="holds no files; expected the DICOM files"):
        read_ct(tmp_path)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(UnreadableInputError, match=r"no DICOM image slices .* 1 could not be read as DICOM"):
        read_ct(tmp_path)


def test_text_file_named_nifti(tmp_path: Path) -> None:
    (tmp_path / "ct.nii.gz").write_text("this is not an image")
    with pytest.raises(UnreadableInputError, match=r"cannot read .*ct\.nii\.gz' as NIfTI") as info:
        read_ct(tmp_path / "ct.nii.gz")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "ct.png").write_bytes(b"\x89PNG")
    with pytest.raises(
        UnreadableInputError, match=r"unsupported file .* expected a DICOM series folder or a \.nii\.gz"
    ):
        read_ct(tmp_path / "ct.png")


def test_2d_image_is_refused(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkInt16), str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match="is a 2D image"):
        read_ct(tmp_path / "slice.nrrd")


def test_single_slice_volume_is_refused(tmp_path: Path) -> None:
    array = np.zeros((1, 8, 9), dtype=np.int16)
    write_image(tmp_path / "slice.mha", array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(InputError, match=r"size \(9, 8, 1\).*at least 2 voxels along each axis"):
        read_ct(tmp_path / "slice.mha")


def test_color_image_is_not_ct(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.mha"))
    with pytest.raises(NotCTError, match="3 components per pixel"):
        read_ct(tmp_path / "rgb.mha")
