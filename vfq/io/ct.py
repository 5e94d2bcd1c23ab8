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

from vfq.errors import InputError, NotCTError, UnreadableInputError
from vfq.io.dicom_series import MIN_SLICES, is_dicom_file, itk_reason, read_dicom_series
from vfq.io.sitk_bridge import geometry_of
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

_INT16_MIN, _INT16_MAX = int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max)


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
        source = f"DICOM series in {str(path)!r}"
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
            raise InputError(_non_finite_message(str(path), bad))
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


def _non_finite_message(source: str, count: int) -> str:
    return (
        f"{source} has {count} voxels that are NaN or infinite; expected finite Hounsfield units. "
        "Replace them (e.g. with -1024 HU, air) and save the scan again."
    )


# --------------------------------------------------------------------------------------------
# DICOM folders


# --------------------------------------------------------------------------------------------
# image → CTVolume


def _volume_from_image(image: sitk.Image, source: str) -> CTVolume:
    """Reorient to LPS and convert to int16 HU, with the geometry; ``source`` names it in errors."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotCTError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per pixel "
            f"({image.GetPixelIDTypeAsString()}); expected a grayscale CT in HU."
        )
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
    array = _hu_int16(image, source)
    try:
        geometry = geometry_of(image, shape=array.shape)
    except ValueError as e:
        raise InputError(f"{source} has an unusable geometry: {e}") from e
    logger.debug(
        "read CT: shape %s (z, y, x), spacing %s mm, from %s", geometry.shape, geometry.spacing, orientation
    )
    return CTVolume(array=array, geometry=geometry)


class _PixelBuffer:
    """Keeps a SimpleITK image alive while a numpy array uses its pixel buffer (no copy).

    ``sitk.GetArrayViewFromImage`` returns a view that does not hold the image: the view dangles
    once the image is freed. An array made from this object holds it as its ``base``.
    """

    def __init__(self, image: sitk.Image) -> None:
        view = sitk.GetArrayViewFromImage(image)  # makes the buffer unique to this image
        interface = dict(view.__array_interface__)
        interface["data"] = (interface["data"][0], False)  # ours alone: writeable like any array
        self._image = image
        self.__array_interface__ = interface


def _hu_int16(image: sitk.Image, source: str) -> np.ndarray:
    """The pixels as an int16 ``(z, y, x)`` C-contiguous array, copied only when converted."""
    array = np.asarray(_PixelBuffer(image))
    if array.dtype == np.int16:
        return array
    if array.dtype.kind not in "iuf":
        raise InputError(f"{source} has pixel type {array.dtype}; expected integer or real HU values")
    if array.dtype.kind == "f":
        lo, hi = array.min(), array.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InputError(_non_finite_message(source, bad))
        np.rint(array, out=array)  # the buffer is ours: round in place, round half to even
    if not np.can_cast(array.dtype, np.int16):
        lo, hi = array.min(), array.max()
        if lo < _INT16_MIN or hi > _INT16_MAX:
            raise InputError(
                f"{source} has values from {lo:g} to {hi:g}, which do not fit int16 Hounsfield units "
                f"[{_INT16_MIN}, {_INT16_MAX}]; expected HU (air about -1000, bone a few hundred to "
                "about 3000). Rescale the image to HU first."
            )
    return array.astype(np.int16)


# --------------------------------------------------------------------------------------------
# helpers


def _suffix_list() -> str:
    return "/".join(SUPPORTED_SUFFIXES)
