"""Read a CT scan — DICOM series folder, NIfTI, NRRD or MetaImage — into an LPS :class:`CTVolume`.

Every format goes through SimpleITK, and every volume is reoriented to LPS
(``sitk.DICOMOrient(image, "LPS")``) before it becomes a :class:`~vfq.volume.CTVolume`: an int16
array ``(z, y, x)`` of Hounsfield units, z inferior→superior, y anterior→posterior, x right→left,
with spacing ``(z, y, x)`` in mm and origin in world LPS mm ``(x, y, z)`` (see :mod:`vfq.volume`).

DICOM folders are checked before any pixel is read: the files' headers are grouped by
SeriesInstanceUID, the series must be CT, its slices must share orientation, size and pixel
spacing, and their positions along the slice normal must form one regular grid (no duplicates, no
gaps). Slices are ordered by that position, never by InstanceNumber or file name. The tolerances
are the module constants below.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vfq.errors import InconsistentSeriesError, InputError, NotCTError, UnreadableInputError
from vfq.io.sitk_bridge import geometry_of
from vfq.volume import CTVolume

__all__ = [
    "DUPLICATE_POSITION_TOLERANCE_MM",
    "IN_PLANE_ALIGNMENT_TOLERANCE_PIXELS",
    "MIN_SLICES",
    "ORIENTATION_TOLERANCE",
    "PIXEL_SPACING_TOLERANCE_MM",
    "SLICE_SPACING_ABSOLUTE_TOLERANCE_MM",
    "SLICE_SPACING_RELATIVE_TOLERANCE",
    "SUPPORTED_SUFFIXES",
    "read_ct",
]

logger = logging.getLogger(__name__)

#: Largest difference (direction-cosine units) between the ImageOrientationPatient of two slices of
#: one series, and the largest deviation of a slice's row/column cosines from unit length and
#: orthogonality. 1e-4 is about 0.006°.
ORIENTATION_TOLERANCE = 1e-4
#: Largest difference (mm) between the PixelSpacing of two slices of one series.
PIXEL_SPACING_TOLERANCE_MM = 1e-3
#: Two slices whose positions along the slice normal differ by this much (mm) or less are duplicates.
DUPLICATE_POSITION_TOLERANCE_MM = 0.01
#: A step between consecutive slices may differ from the series' (median) step by
#: ``max(SLICE_SPACING_ABSOLUTE_TOLERANCE_MM, SLICE_SPACING_RELATIVE_TOLERANCE * step)``; more is a
#: gap (a whole multiple of the step: missing slices) or non-uniform spacing.
SLICE_SPACING_ABSOLUTE_TOLERANCE_MM = 0.01
#: See :data:`SLICE_SPACING_ABSOLUTE_TOLERANCE_MM` (1 %).
SLICE_SPACING_RELATIVE_TOLERANCE = 0.01
#: Largest in-plane offset of a slice's ImagePositionPatient from the first slice's, in pixels
#: (of the smaller pixel spacing): more means a sheared stack (gantry tilt), which a volume with an
#: orthonormal direction cannot represent.
IN_PLANE_ALIGNMENT_TOLERANCE_PIXELS = 0.1
#: A CT volume has at least this many slices along every axis; fewer is a 2D image.
MIN_SLICES = 2

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
_MAX_LISTED = 10  # positions / steps quoted in one error message

# DICOM tags (group|element, as SimpleITK names them).
_MODALITY = "0008|0060"
_SERIES_DESCRIPTION = "0008|103e"
_SERIES_UID = "0020|000e"
_INSTANCE_NUMBER = "0020|0013"
_POSITION = "0020|0032"
_ORIENTATION = "0020|0037"
_ROWS = "0028|0010"
_COLUMNS = "0028|0011"
_PIXEL_SPACING = "0028|0030"
_RESCALE_INTERCEPT = "0028|1052"
_RESCALE_SLOPE = "0028|1053"


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
        image = _read_dicom_folder(path, series_uid)
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
        if _is_dicom_file(path):
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
            f"cannot read {str(path)!r} as {format_name}: {_itk_reason(e)}. "
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


def _is_dicom_file(path: Path) -> bool:
    try:
        return sitk.ImageFileReader.GetImageIOFromFileName(str(path)) == "GDCMImageIO"
    except RuntimeError:
        return False


# --------------------------------------------------------------------------------------------
# DICOM folders


@dataclass(frozen=True, eq=False)
class _Slice:
    """What the header of one DICOM file says (no patient identifiers are kept)."""

    path: str
    series_uid: str
    modality: str
    description: str
    instance_number: str
    frames: int
    rows: int
    columns: int
    pixel_id: int
    rescale: tuple[float, float]  # (slope, intercept)
    position: np.ndarray | None  # ImagePositionPatient, world LPS mm (x, y, z)
    orientation: np.ndarray | None  # ImageOrientationPatient: row cosine, column cosine (6,)
    pixel_spacing: np.ndarray | None  # PixelSpacing: (between rows = y, between columns = x) mm


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    """Check the headers of the series in ``folder``, then read its pixels sorted by position."""
    slices, n_files, n_unreadable = _read_headers(folder)
    if n_files == 0:
        raise UnreadableInputError(
            f"the folder {str(folder)!r} holds no files; expected the DICOM files of one CT series "
            "(one file per slice; subfolders are not searched)"
        )
    image_slices = [s for s in slices if s.position is not None and s.orientation is not None]
    if not image_slices:
        raise UnreadableInputError(
            f"no DICOM image slices in {str(folder)!r}: of {n_files} files, {n_unreadable} could not be "
            f"read as DICOM and {len(slices)} have no ImagePositionPatient/ImageOrientationPatient. "
            f"Pass the folder that holds the slices of one CT series (subfolders are not searched), "
            f"or a {_suffix_list()} file."
        )
    if n_unreadable or len(image_slices) < len(slices):
        logger.debug(
            "DICOM folder: %d files skipped (%d not DICOM, %d without image position/orientation)",
            n_files - len(image_slices),
            n_unreadable,
            len(slices) - len(image_slices),
        )
    series = _select_series(image_slices, series_uid, folder)
    uid = series[0].series_uid
    stray = sum(
        1 for s in slices if uid and s.series_uid == uid and (s.position is None or s.orientation is None)
    )
    if stray:
        raise InconsistentSeriesError(
            f"{stray} files of {_series_name(uid)} have no ImagePositionPatient/ImageOrientationPatient; "
            "they cannot be placed in the volume. Re-export the series."
        )
    _check_modality(series, uid)
    ordered, step = _order_slices(series, uid)
    output_pixel_id = _output_pixel_type(ordered)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in ordered])
    if output_pixel_id is not None:
        reader.SetOutputPixelType(output_pixel_id)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise UnreadableInputError(
            f"cannot read the pixels of {_series_name(uid)} in {str(folder)!r}: {_itk_reason(e)}"
        ) from e
    _check_read_geometry(image, ordered, step, uid)
    logger.debug("read a DICOM series of %d slices, step %.4g mm", len(ordered), step)
    return image


def _read_headers(folder: Path) -> tuple[list[_Slice], int, int]:
    """Headers of the DICOM files directly in ``folder``: (slices, number of files, unreadable)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    slices: list[_Slice] = []
    n_files = n_unreadable = 0
    try:
        with os.scandir(folder) as entries:
            files = sorted(e.path for e in entries if e.is_file())
    except OSError as e:
        raise UnreadableInputError(f"cannot list the folder {str(folder)!r}: {e.strerror or e}") from e
    for file in files:
        n_files += 1
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            n_unreadable += 1
            continue
        slices.append(_slice_from_header(reader, file))
    return slices, n_files, n_unreadable


def _slice_from_header(reader: sitk.ImageFileReader, file: str) -> _Slice:
    def tag(key: str) -> str:
        if not reader.HasMetaDataKey(key):
            return ""
        try:
            return reader.GetMetaData(key).strip(" \x00")
        except UnicodeDecodeError:
            return "?"

    def numbers(key: str, count: int) -> np.ndarray | None:
        text = tag(key)
        if not text:
            return None
        try:
            values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
        except ValueError:
            values = np.array([])
        if values.shape != (count,) or not np.all(np.isfinite(values)):
            raise UnreadableInputError(
                f"the DICOM file {file!r} has a malformed tag ({key}) {text!r}: expected {count} numbers"
            )
        return values

    size = reader.GetSize()
    slope = numbers(_RESCALE_SLOPE, 1)
    intercept = numbers(_RESCALE_INTERCEPT, 1)
    rows, columns = tag(_ROWS), tag(_COLUMNS)
    return _Slice(
        path=file,
        series_uid=tag(_SERIES_UID),
        modality=tag(_MODALITY).upper(),
        description=tag(_SERIES_DESCRIPTION),
        instance_number=tag(_INSTANCE_NUMBER),
        frames=int(size[2]) if len(size) > 2 else 1,
        rows=int(rows) if rows.isdigit() else int(size[1]),
        columns=int(columns) if columns.isdigit() else int(size[0]),
        pixel_id=reader.GetPixelID(),
        rescale=(
            1.0 if slope is None else float(slope[0]),
            0.0 if intercept is None else float(intercept[0]),
        ),
        position=numbers(_POSITION, 3),
        orientation=numbers(_ORIENTATION, 6),
        pixel_spacing=numbers(_PIXEL_SPACING, 2),
    )


def _select_series(slices: list[_Slice], series_uid: str | None, folder: Path) -> list[_Slice]:
    by_uid: dict[str, list[_Slice]] = {}
    for s in slices:
        by_uid.setdefault(s.series_uid, []).append(s)
    listing = "\n".join(_describe_series(uid, members) for uid, members in by_uid.items())
    if series_uid is None:
        if len(by_uid) > 1:
            raise InconsistentSeriesError(
                f"the folder {str(folder)!r} holds {len(by_uid)} DICOM series; expected one. "
                f"Choose one with series_uid=...:\n{listing}"
            )
        return next(iter(by_uid.values()))
    if series_uid not in by_uid:
        raise UnreadableInputError(
            f"no DICOM series with SeriesInstanceUID {series_uid!r} in {str(folder)!r}; "
            f"the folder holds:\n{listing}"
        )
    return by_uid[series_uid]


def _describe_series(uid: str, members: list[_Slice]) -> str:
    modalities = "/".join(sorted({s.modality or "no Modality" for s in members}))
    description = next((s.description for s in members if s.description), "")
    shown_uid = repr(uid) if uid else "'' (empty SeriesInstanceUID)"
    return f"  {shown_uid}: {modalities}, {len(members)} slices, description {description!r}"


def _check_modality(series: list[_Slice], uid: str) -> None:
    modalities = sorted({s.modality for s in series})
    if modalities != ["CT"]:
        found = ", ".join(m or "none (no Modality tag)" for m in modalities)
        raise NotCTError(
            f"{_series_name(uid)} has Modality {found}; expected CT. vfq analyses CT only: "
            "choose the CT series of the study (series_uid=...) or export it separately."
        )


def _order_slices(series: list[_Slice], uid: str) -> tuple[list[_Slice], float]:
    """The slices sorted by position along the slice normal, after every consistency check.

    Returns the sorted slices and the regular step between them (mm, along the normal).
    """
    n = len(series)
    if n < MIN_SLICES:
        raise InconsistentSeriesError(
            f"{_series_name(uid)} has {n} slice: a 2D image; expected a CT volume of at least "
            f"{MIN_SLICES} slices. Pass the folder that holds every slice of the series."
        )
    multi_frame = sorted({s.frames for s in series if s.frames != 1})
    if multi_frame:
        raise InconsistentSeriesError(
            f"{_series_name(uid)} has multi-frame files ({multi_frame} frames); expected one slice per "
            "file. Export the series as single-frame (classic) CT images."
        )
    sizes = Counter((s.rows, s.columns) for s in series)
    if len(sizes) > 1:
        raise InconsistentSeriesError(
            f"the slices of {_series_name(uid)} differ in Rows×Columns: "
            + ", ".join(f"{r}×{c} ({k} slices)" for (r, c), k in sizes.items())
            + "; expected one size. Pick the series that is one volume, or re-export it."
        )
    if any(s.pixel_spacing is None for s in series):
        raise InconsistentSeriesError(
            f"slices of {_series_name(uid)} have no PixelSpacing (0028,0030); the voxel size is "
            "unknown and vfq does not guess it. Re-export the series with its PixelSpacing."
        )
    spacings = np.array([s.pixel_spacing for s in series])
    if np.any(spacings <= 0) or np.ptp(spacings, axis=0).max() > PIXEL_SPACING_TOLERANCE_MM:
        raise InconsistentSeriesError(
            f"the slices of {_series_name(uid)} differ in PixelSpacing (or have a non-positive one): "
            f"{_unique_rows(spacings)} mm; expected one spacing (tolerance "
            f"{PIXEL_SPACING_TOLERANCE_MM} mm)."
        )
    orientations = np.array([s.orientation for s in series])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise InconsistentSeriesError(
            f"the slices of {_series_name(uid)} differ in ImageOrientationPatient: "
            f"{_unique_rows(orientations)}; expected one orientation (tolerance "
            f"{ORIENTATION_TOLERANCE}). A series that mixes orientations (e.g. a scout with axial "
            "slices) is not one volume: pick or export the axial series alone."
        )
    row, column = orientations[0, :3], orientations[0, 3:]
    if (
        abs(np.linalg.norm(row) - 1) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(column) - 1) > ORIENTATION_TOLERANCE
        or abs(row @ column) > ORIENTATION_TOLERANCE
    ):
        raise InconsistentSeriesError(
            f"{_series_name(uid)} has ImageOrientationPatient {orientations[0].tolist()}, whose row and "
            "column cosines are not orthonormal; the slice geometry is undefined."
        )
    normal = np.cross(row, column)
    positions = np.array([s.position for s in series])
    along = positions @ normal  # mm along the slice normal
    order = np.argsort(along, kind="stable")
    ordered = [series[i] for i in order]
    along = along[order]

    steps = np.diff(along)
    duplicates = steps <= DUPLICATE_POSITION_TOLERANCE_MM
    if np.any(duplicates):
        where = np.flatnonzero(duplicates)
        listed = ", ".join(
            f"{along[i]:.6g} mm (InstanceNumber {ordered[i].instance_number or '?'} and "
            f"{ordered[i + 1].instance_number or '?'})"
            for i in where[:_MAX_LISTED]
        )
        raise InconsistentSeriesError(
            f"{_series_name(uid)} has {len(where)} duplicate slice positions along the slice normal "
            f"(within {DUPLICATE_POSITION_TOLERANCE_MM} mm): {listed}. Expected one slice per "
            "position: the folder may mix several acquisitions or reconstructions of one series. "
            "Export each as a series of its own."
        )
    offsets = positions[order] - positions[order[0]]
    in_plane = np.abs(offsets @ np.stack([row, column], axis=1)).max()
    pixel = float(spacings[0].min())
    if in_plane > IN_PLANE_ALIGNMENT_TOLERANCE_PIXELS * pixel:
        raise InconsistentSeriesError(
            f"the slices of {_series_name(uid)} are shifted in-plane against each other by up to "
            f"{in_plane:.3g} mm (more than {IN_PLANE_ALIGNMENT_TOLERANCE_PIXELS} pixel): a sheared "
            "stack, e.g. a gantry-tilted acquisition. Resample it to a regular volume first "
            "(e.g. a gantry-tilt correction on export) and pass that."
        )
    step = float(np.median(steps))
    tolerance = _step_tolerance(step)
    if np.any(np.abs(steps - step) > tolerance):
        raise InconsistentSeriesError(_irregular_message(uid, along, steps))
    return ordered, step


def _step_tolerance(step: float) -> float:
    return max(SLICE_SPACING_ABSOLUTE_TOLERANCE_MM, SLICE_SPACING_RELATIVE_TOLERANCE * step)


def _irregular_message(uid: str, along: np.ndarray, steps: np.ndarray) -> str:
    """Explain irregular slice positions: missing slices if every step is a multiple of the smallest."""
    base = float(steps.min())
    multiples = np.rint(steps / base)
    is_gap = bool(np.all(np.abs(steps - multiples * base) <= multiples * _step_tolerance(base)))
    where = "positions along the slice normal (z for axial slices), LPS mm"
    if is_gap:
        missing = [
            float(along[i] + j * base)
            for i in np.flatnonzero(multiples > 1)
            for j in range(1, int(multiples[i]))
        ]
        shown = ", ".join(f"{p:.6g}" for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        return (
            f"{_series_name(uid)} has a gap: {len(missing)} missing slices at {where} {shown}{more}. "
            f"Expected every position from {along[0]:.6g} to {along[-1]:.6g} mm in steps of "
            f"{base:.6g} mm ({len(along) + len(missing)} slices), found {len(along)}. "
            "Re-export the complete series (all its files in one folder)."
        )
    shown = ", ".join(
        f"{along[i]:.6g}→{along[i + 1]:.6g} ({steps[i]:.4g} mm)" for i in range(min(len(steps), _MAX_LISTED))
    )
    return (
        f"{_series_name(uid)} has non-uniform slice spacing: steps between consecutive {where}: "
        f"{shown}{' …' if len(steps) > _MAX_LISTED else ''}; expected one step (tolerance "
        f"{SLICE_SPACING_ABSOLUTE_TOLERANCE_MM} mm or {SLICE_SPACING_RELATIVE_TOLERANCE:.0%}). "
        "Resample the series to regular spacing and pass the result (e.g. as NIfTI)."
    )


def _output_pixel_type(ordered: Sequence[_Slice]) -> int | None:
    """``None`` to read in the files' own pixel type, or float32 where slices differ in it.

    ``ImageSeriesReader`` reads every slice into the pixel type of the first file; if the slices
    differ in stored type or rescale slope/intercept, reading as float keeps every HU value.
    """
    if len({(s.pixel_id, s.rescale) for s in ordered}) == 1:
        return None
    logger.debug("DICOM slices differ in pixel type or rescale: reading as float32")
    return sitk.sitkFloat32


def _check_read_geometry(image: sitk.Image, ordered: Sequence[_Slice], step: float, uid: str) -> None:
    """Check that what SimpleITK built agrees with the headers (ITK derives spacing from first/last)."""
    first = ordered[0]
    pixel_spacing, orientation = np.asarray(first.pixel_spacing), np.asarray(first.orientation)
    expected_size = (first.columns, first.rows, len(ordered))
    expected_spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), step)
    row, column = orientation[:3], orientation[3:]
    expected_direction = np.stack([row, column, np.cross(row, column)], axis=1)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    problems = []
    if image.GetDimension() != 3 or tuple(image.GetSize()) != expected_size:
        problems.append(f"size {image.GetSize()} instead of {expected_size}")
    elif abs(image.GetSpacing()[2] - step) > _step_tolerance(step) or not np.allclose(
        image.GetSpacing()[:2], expected_spacing[:2], atol=PIXEL_SPACING_TOLERANCE_MM
    ):
        problems.append(f"spacing {image.GetSpacing()} instead of {expected_spacing} mm")
    elif not np.allclose(image.GetOrigin(), np.asarray(first.position), atol=DUPLICATE_POSITION_TOLERANCE_MM):
        problems.append(f"origin {image.GetOrigin()} instead of {tuple(first.position)} mm")
    elif not np.allclose(direction, expected_direction, atol=ORIENTATION_TOLERANCE):
        problems.append(f"direction {direction.tolist()} instead of {expected_direction.tolist()}")
    if problems:
        raise InconsistentSeriesError(
            f"SimpleITK read {_series_name(uid)} with {problems[0]} (from the headers); "
            "the files do not describe one regular volume."
        )


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


def _itk_reason(error: RuntimeError) -> str:
    """The ITK message of a SimpleITK exception, without the source file and object address."""
    text = str(error).strip()
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[1] if "): " in text else text
    return " ".join(text.split()) or type(error).__name__


def _series_name(uid: str) -> str:
    return f"DICOM series {uid!r}" if uid else "the DICOM series (empty SeriesInstanceUID)"


def _unique_rows(values: np.ndarray) -> str:
    rows = {tuple(round(float(v), 6) for v in row) for row in values}
    return ", ".join(str(list(r)) for r in sorted(rows)[:_MAX_LISTED])
