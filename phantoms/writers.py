"""Writing a phantom: NIfTI, a real DICOM CT series, the ground-truth JSON, a preview picture.

The DICOM series has one file per slice with the geometry tags a reader needs
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, RescaleSlope and
RescaleIntercept) and deterministic UIDs; it carries no patient identifiers (PatientName and
PatientID are empty).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vfq.annotation import SpineAnnotation
from vfq.genant import GenantGrade
from vfq.io.sitk_bridge import image_of
from vfq.phantoms.generate import Phantom
from vfq.picture import draw_vertebrae
from vfq.volume import CTVolume, ImageGeometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Stored values are HU + 1024 (unsigned-looking, as many scanners write them).
RESCALE_INTERCEPT = -1024


def write_nifti(volume: CTVolume, path: str | Path, compress: bool = True) -> Path:
    """Write the CT as NIfTI (orientation in the qform/sform, int16 HU)."""
    path = Path(path)
    sitk.WriteImage(image_of(volume.array, volume.geometry), str(path), useCompression=compress)
    return path


def write_labels(labels: np.ndarray, geometry: ImageGeometry, path: str | Path) -> Path:
    """Write a vertebra label map (VerSe labels) as NIfTI."""
    path = Path(path)
    sitk.WriteImage(image_of(labels.astype(np.int16, copy=False), geometry), str(path), useCompression=True)
    return path


def _uid(seed: int, *parts: object) -> str:
    """A deterministic DICOM UID under the UUID-derived root 2.25."""
    name = "/".join(str(p) for p in ("vfq-phantom", seed, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def write_dicom_series(
    volume: CTVolume,
    folder: str | Path,
    seed: int,
    slice_thickness: float,
    description: str = "vfq synthetic phantom",
) -> list[Path]:
    """Write the CT as a DICOM CT series, one file per slice, numbered head to feet.

    Returns the written paths. Instance numbers run from the most superior slice down, as on most
    scanners, so a reader that sorts by instance number instead of position gets the order wrong.
    Slice files of an earlier series written to the same folder (``IM*.dcm``) are removed first, so
    that a shorter series does not keep the longer one's last slices.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("IM*.dcm"):
        stale.unlink()
    geometry = volume.geometry
    if not np.allclose(geometry.direction, np.eye(3)):
        raise ValueError("the DICOM writer expects an axial LPS volume (identity direction)")
    study, series, frame = (_uid(seed, kind) for kind in ("study", "series", "frame"))
    _dz, dy, dx = geometry.spacing
    common = {
        "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
        "0008|0016": CT_IMAGE_STORAGE,
        "0008|0060": "CT",
        "0008|0070": "vfq",
        "0008|103e": description,
        "0010|0010": "",
        "0010|0020": "",
        "0018|0015": "SPINE",
        "0018|0050": f"{slice_thickness:.4f}",
        "0020|000d": study,
        "0020|000e": series,
        "0020|0052": frame,
        "0020|0037": "1\\0\\0\\0\\1\\0",
        "0028|0030": f"{dy:.6f}\\{dx:.6f}",
        "0028|1050": "400",
        "0028|1051": "1800",
        "0028|1052": str(RESCALE_INTERCEPT),
        "0028|1053": "1",
        "0028|1054": "HU",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    nz = geometry.shape[0]
    paths = []
    for k in range(nz):
        instance = nz - k
        position = geometry.voxel_to_world(np.array([k, 0.0, 0.0]))
        image = sitk.GetImageFromArray(volume.array[k])
        image.SetSpacing((dx, dy))
        for tag, value in common.items():
            image.SetMetaData(tag, value)
        image.SetMetaData("0008|0018", _uid(seed, "instance", k))
        image.SetMetaData("0020|0013", str(instance))
        image.SetMetaData("0020|0032", "\\".join(f"{c:.6f}" for c in position))
        image.SetMetaData("0020|1041", f"{position[2]:.6f}")
        path = folder / f"IM{instance:05d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        paths.append(path)
    return paths


def curved_sagittal(volume: CTVolume, truth: SpineAnnotation) -> tuple[np.ndarray, np.ndarray]:
    """A sagittal picture that follows the spine's lateral course, and the keypoints on it.

    For every slice, the column x is taken at the spine curve's x at that height, so a scoliotic
    spine stays in the picture. Returns the ``(nz, ny)`` image with row 0 the most superior slice,
    and ``(N, 6, 2)`` keypoints as (row, col) on it.
    """
    geometry = volume.geometry
    nz, _ny, nx = geometry.shape
    if truth.curve is not None and len(truth.curve):
        curve_voxels = geometry.world_to_voxel(truth.curve)
        x_of_z = np.interp(np.arange(nz), curve_voxels[:, 0], curve_voxels[:, 2])
    else:
        x_of_z = np.full(nz, (nx - 1) / 2)
    columns = np.clip(np.rint(x_of_z).astype(int), 0, nx - 1)
    image = volume.array[np.arange(nz), :, columns][::-1]
    keypoints = np.array([v.keypoints for v in truth.vertebrae if v.keypoints is not None]).reshape(-1, 6, 3)
    rows_cols = np.stack([nz - 1 - keypoints[..., 0], keypoints[..., 1]], axis=-1)
    return image, rows_cols


def write_picture(phantom: Phantom, path: str | Path) -> Path:
    """A PNG of the curved mid-sagittal plane with the true keypoints, levels and grades."""
    path = Path(path)
    image, keypoints = curved_sagittal(phantom.ct, phantom.truth)
    vertebrae = [v for v in phantom.truth.vertebrae if v.keypoints is not None]
    labels = [f"{v.level.value if v.level else '?'} g{int(v.grade or 0)}" for v in vertebrae]
    grades = [int(v.grade or GenantGrade.NORMAL) for v in vertebrae]
    dz, dy, _ = phantom.ct.geometry.spacing
    picture = draw_vertebrae(image, keypoints, (dz, dy), labels, grades, scale=1.5)
    picture.save(path)
    return path


def write_phantom(
    phantom: Phantom, folder: str | Path, nifti: bool = True, dicom: bool = False, picture: bool = False
) -> dict[str, Path]:
    """Write a phantom's files into ``folder``: ``ct.nii.gz``, ``dicom/``, ``truth.json``,
    ``labels.nii.gz`` (if rendered), ``sagittal.png``. Returns what was written by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if nifti:
        written["nifti"] = write_nifti(phantom.ct, folder / "ct.nii.gz")
    if dicom:
        spec = phantom.anatomy.spec
        write_dicom_series(phantom.ct, folder / "dicom", spec.seed, spec.acquisition.slice_thickness)
        written["dicom"] = folder / "dicom"
    if phantom.labels is not None:
        written["labels"] = write_labels(phantom.labels, phantom.ct.geometry, folder / "labels.nii.gz")
    phantom.truth.write_json(folder / "truth.json")
    written["truth"] = folder / "truth.json"
    if picture:
        written["picture"] = write_picture(phantom, folder / "sagittal.png")
    return written
