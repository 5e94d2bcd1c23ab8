"""Read a CT scan — DICOM series folder, NIfTI, NRRD or MetaImage — into an LPS :class:`CTVolume`.

Every format goes through SimpleITK, and every volume is reoriented to LPS
(``sitk.DICOMOrient(image, "LPS")``) before it becomes a :class:`~vfq.volume.CTVolume`: an int16
array ``(z, y, x)`` of Hounsfield units, z inferior→superior, y anterior→posterior, x right→left,
with spacing ``(z, y, x)`` in mm and origin in world LPS mm ``(x, y, z)`` (see :mod:`vfq.volume`).

DICOM folders are checked before any pixel is read (:mod:`vfq.io.dicom_series`): one CT series,
one regular grid of slices ordered by position, never by InstanceNumber or file name.

Nothing read here is logged or returned apart from pixels and geometry: no patient identifiers.
Error messages name the path the caller gave and, for folders with several series, the series
UIDs and descriptions, so that the caller can choose one.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vfq.errors import InputError, UnreadableInputError
from vfq.io.dicom_series import MIN_SLICES, is_dicom_file, itk_reason, read_dicom_series, series_source
from vfq.io.hu import as_int16, non_finite_message
from vfq.io.sitk_bridge import geometry_of, pixel_array, require_grayscale
from vfq.volume import CTVolume

__all__ = ["MIN_SLICES", "SUPPORTED_SUFFIXES", "read_ct"]

logger = logging.getLogger(__name__)

#: File suffixes read as single-file volumes, with their format name and SimpleITK ImageIO.
SUPPORTED_SUFFIXES: dict[str, tuple[str, str]] = {
    ".nii.gz": ("NIfTI", "NiftiImageIO"),
    ".nii": ("NIfTI", "NiftiImageIO"),
    ".nrrd": ("NRRD", "NrrdImageIO"),
    ".nhdr": ("NRRD", "NrrdImageIO"),
    ".mha": ("MetaImage", "MetaImageIO"),
    ".mhd": ("MetaImage", "MetaImageIO"),
}


def read_ct(path: str | os.PathLike[str], *, series_uid: str | None = None) -> CTVolume:
    """Read a CT scan and return it as int16 Hounsfield units in LPS orientation.

    Args:
        path: a folder holding a DICOM series (one file per slice; subfolders are not searched),
            or a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage
            (``.mha``, ``.mhd``) file.
        series_uid: for a DICOM folder that holds several series, the SeriesInstanceUID of the one
            to read. Ignored for single-file formats.

    Returns:
        The volume: ``array`` is ``(z, y, x)`` int16 HU, C-contiguous, z inferior→superior,
        y anterior→posterior, x right→left; ``geometry`` has spacing ``(z, y, x)`` mm, origin world
        LPS mm ``(x, y, z)`` of voxel ``(0, 0, 0)``, and the direction (identity for an axial scan).

    Raises:
        UnreadableInputError: no such path, an unsupported or unreadable file, a folder without
            DICOM slices, or an unknown ``series_uid``.
        NotCTError: a DICOM series whose Modality is not CT, or an image with several components.
        InconsistentSeriesError: a DICOM folder with several series (and no ``series_uid``), or a
            series that is not one regular volume (mixed geometry, duplicate or missing slices).
        InputError: a 2D image, or values that are not finite or do not fit int16.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableInputError(
            f"no file or folder at {str(path)!r}; expected a DICOM series folder or a {_suffix_list()} file"
        )
    if path.is_dir():
        image = read_dicom_series(path, series_uid)
        source = series_source(path)
    else:
        image = _read_file(path)
        source = str(path)
    return _volume_from_image(image, source)


# --------------------------------------------------------------------------------------------
# single files


def _read_file(path: Path) -> sitk.Image:
    """The image in a NIfTI / NRRD / MetaImage file, read with the ImageIO its suffix names."""
    name = path.name.lower()
    suffix = next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        if is_dicom_file(path):
            raise InputError(
                f"{str(path)!r} is a single DICOM file; vfq reads a DICOM series from its folder "
                "(one file per slice). Pass the folder that holds all the slices of the series."
            )
        raise UnreadableInputError(
            f"unsupported file {str(path)!r}: expected a DICOM series folder or a {_suffix_list()} "
            "file. Convert the scan to one of these (e.g. with SimpleITK or dcm2niix)."
        )
    format_name, image_io = SUPPORTED_SUFFIXES[suffix]
    reader = sitk.ImageFileReader()
    reader.SetImageIO(image_io)
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise UnreadableInputError(
            f"cannot read {str(path)!r} as {format_name}: {itk_reason(e)}. "
            f"Check that the file is complete and really {format_name} (the suffix decides the format)."
        ) from e
    if image_io == "NiftiImageIO" and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        # nifticlib silently reads NaN and ±inf voxels as 0 (water!): look at the stored values
        bad = _nifti_non_finite_count(path)
        if bad:
            raise InputError(non_finite_message(str(path), bad))
    return image


#: NIfTI datatype codes of real floating-point voxels and their numpy types.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _nifti_non_finite_count(path: Path, chunk_bytes: int = 1 << 24) -> int:
    """The number of NaN or infinite voxels stored in a NIfTI-1/2 file (0 unless stored as float)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(540)
        for endian in "<>":
            header_size = struct.unpack_from(endian + "i", head, 0)[0]
            if header_size in (348, 540):
                break
        else:
            return 0
        if header_size == 348:  # NIfTI-1
            dims = struct.unpack_from(endian + "8h", head, 40)
            datatype = struct.unpack_from(endian + "h", head, 70)[0]
            offset = int(struct.unpack_from(endian + "f", head, 108)[0])
        else:  # NIfTI-2
            datatype = struct.unpack_from(endian + "h", head, 12)[0]
            dims = struct.unpack_from(endian + "8q", head, 16)
            offset = struct.unpack_from(endian + "q", head, 168)[0]
        if datatype not in _NIFTI_FLOAT_TYPES or not 1 <= dims[0] <= 7:
            return 0
        dtype = np.dtype(endian + _NIFTI_FLOAT_TYPES[datatype])
        remaining = math.prod(max(int(n), 1) for n in dims[1 : dims[0] + 1]) * dtype.itemsize
        f.seek(offset)
        bad = 0
        while remaining > 0:
            data = f.read(min(chunk_bytes, remaining))
            if not data:
                break
            remaining -= len(data)
            values = np.frombuffer(data[: len(data) // dtype.itemsize * dtype.itemsize], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
    return bad


# --------------------------------------------------------------------------------------------
# image → CTVolume


def _volume_from_image(image: sitk.Image, source: str) -> CTVolume:
    """Reorient to LPS and convert to int16 HU, with the geometry; ``source`` names it in errors."""
    require_grayscale(image, source)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or min(image.GetSize()) < MIN_SLICES:
        raise InputError(
            f"{source} is a {image.GetDimension()}D image of size {image.GetSize()} (x, y, z...); "
            f"expected a 3D CT volume with at least {MIN_SLICES} voxels along each axis (a 2D image "
            "or a single slice cannot be analysed). Pass the whole scan."
        )
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    if orientation != "LPS":  # reorienting an LPS image would only copy it
        image = sitk.DICOMOrient(image, "LPS")
    array = as_int16(pixel_array(image), source)
    try:
        geometry = geometry_of(image, shape=array.shape)
    except ValueError as e:
        raise InputError(f"{source} has an unusable geometry: {e}") from e
    logger.debug(
        "read CT: shape %s (z, y, x), spacing %s mm, from %s", geometry.shape, geometry.spacing, orientation
    )
    return CTVolume(array=array, geometry=geometry)


# --------------------------------------------------------------------------------------------
# helpers


def _suffix_list() -> str:
    return "/".join(SUPPORTED_SUFFIXES)
