"""Checking and reading a DICOM CT series: one regular volume, ordered by slice position.

The files' headers are read first (no pixels; on a few threads, as GDCM lets go of Python's lock
while it parses), grouped by SeriesInstanceUID; the chosen series must be CT, its slices must share
orientation, size and pixel spacing, and their positions along the slice normal must form one
regular grid (no duplicates, no gaps). Slices are ordered by that
position, never by InstanceNumber or file name. Only then are the pixels read
(``sitk.ImageSeriesReader``, runs of slices on a few threads, each converted straight into the
int16 volume), and the geometry SimpleITK derives for each run is checked against the headers.
The tolerances are the module constants below. Nothing read here is logged apart from counts.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vfq.errors import InconsistentSeriesError, NotCTError, UnreadableInputError
from vfq.io.hu import PixelSummary, check_int16, copy_as_int16
from vfq.io.sitk_bridge import pixel_array, require_grayscale

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
_MAX_LISTED = 10  # positions / steps quoted in one error message
#: Threads that read the headers (on 2 cores, 300 slices of 512×512: 0.17 s on one thread, 0.09 s on
#: two).
_HEADER_THREADS = min(4, os.cpu_count() or 1)
#: Slices per ``ImageSeriesReader`` call when the pixels are read: the series is cut into
#: ``len // PIXEL_RUN_SLICES`` runs of equal size (24 to 47 slices; a shorter series is one run), so
#: every run holds at least two slices and ITK derives each run's slice spacing.
PIXEL_RUN_SLICES = 24
#: Threads that read those runs (GDCM lets go of Python's lock while it decodes).
_PIXEL_THREADS = min(4, os.cpu_count() or 1)

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


def is_dicom_file(path: Path) -> bool:
    """Whether SimpleITK would read ``path`` with its DICOM (GDCM) ImageIO."""
    try:
        return sitk.ImageFileReader.GetImageIOFromFileName(str(path)) == "GDCMImageIO"
    except RuntimeError:
        return False


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


def read_dicom_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    """Check the headers of the series in ``folder``, then read its pixels sorted by position.

    The pixels are read in runs of :data:`PIXEL_RUN_SLICES` slices on a few threads, each run
    converted straight into the int16 result (:mod:`vfq.io.hu`), so the int32 or float copy that
    the DICOM rescale produces never exists for more than one run per thread.

    Returns:
        The series as an int16 image of Hounsfield units, with the geometry of the headers (the
        files' slice order and orientation; :func:`vfq.io.read_ct` reorients it to LPS).

    Raises:
        UnreadableInputError: no DICOM slices, unreadable pixels, or an unknown ``series_uid``.
        NotCTError: the series' Modality is not CT, or its pixels have several components.
        InconsistentSeriesError: several series and no ``series_uid``, or not one regular volume.
        InputError: pixel values that are not finite or do not fit int16 after the rescale.
    """
    ordered, step, uid = _checked_series(folder, series_uid)
    source = series_source(folder)
    output_pixel_id = _output_pixel_type(ordered)
    first = ordered[0]
    image = sitk.Image(first.columns, first.rows, len(ordered), sitk.sitkInt16)
    pixels = pixel_array(image)
    runs = np.array_split(np.arange(len(ordered)), max(1, len(ordered) // PIXEL_RUN_SLICES))

    def read_run(run: np.ndarray) -> tuple[PixelSummary, tuple[float, ...], tuple[float, ...]]:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([ordered[i].path for i in run])
        if output_pixel_id is not None:
            reader.SetOutputPixelType(output_pixel_id)
        try:
            part = reader.Execute()
        except RuntimeError as e:
            raise UnreadableInputError(
                f"cannot read the pixels of {_series_name(uid)} in {str(folder)!r}: {itk_reason(e)}"
            ) from e
        require_grayscale(part, source)
        _check_read_geometry(part, ordered[run[0] : run[-1] + 1], step, uid)
        summary = copy_as_int16(sitk.GetArrayViewFromImage(part), pixels[run[0] : run[-1] + 1], source)
        return summary, part.GetOrigin(), part.GetDirection()

    with ThreadPoolExecutor(min(_PIXEL_THREADS, len(runs))) as pool:
        results = list(pool.map(read_run, runs))
    check_int16(PixelSummary.merge(summary for summary, _, _ in results), source)
    _, origin, direction = results[0]
    image.SetOrigin(origin)
    image.SetDirection(direction)
    image.SetSpacing((float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), _series_spacing(ordered)))
    logger.debug("read a DICOM series of %d slices, step %.4g mm", len(ordered), step)
    return image


def series_source(folder: Path) -> str:
    """How errors name the DICOM series read from ``folder``."""
    return f"DICOM series in {str(folder)!r}"


def dicom_series_files(folder: Path, series_uid: str | None = None) -> list[Path]:
    """The files of the series that :func:`read_dicom_series` reads from ``folder``, ordered by
    slice position, after the same header checks (no pixels are read).

    Raises:
        UnreadableInputError, NotCTError, InconsistentSeriesError: as :func:`read_dicom_series`.
    """
    ordered, _, _ = _checked_series(folder, series_uid)
    return [Path(s.path) for s in ordered]


def _checked_series(folder: Path, series_uid: str | None) -> tuple[list[_Slice], float, str]:
    """The slices of the chosen series ordered by position, their step (mm) and the series UID,
    after every header check."""
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
            "or a NIfTI, NRRD or MetaImage file."
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
    return ordered, step, uid


def _read_headers(folder: Path) -> tuple[list[_Slice], int, int]:
    """Headers of the DICOM files directly in ``folder``: (slices, number of files, unreadable).

    The sorted file list is cut into one contiguous run per thread, so the slices come back in the
    files' order whatever the thread count.
    """
    try:
        with os.scandir(folder) as entries:
            files = sorted(e.path for e in entries if e.is_file())
    except OSError as e:
        raise UnreadableInputError(f"cannot list the folder {str(folder)!r}: {e.strerror or e}") from e
    runs = np.array_split(np.arange(len(files)), max(1, min(_HEADER_THREADS, len(files))))
    with ThreadPoolExecutor(len(runs)) as pool:
        parts = list(pool.map(_headers_of, [[files[i] for i in run] for run in runs]))
    slices = [s for part in parts for s in part if s is not None]
    return slices, len(files), sum(s is None for part in parts for s in part)


def _headers_of(files: Sequence[str]) -> list[_Slice | None]:
    """The header of each file (``None``: not a readable DICOM image), with one reader."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    slices: list[_Slice | None] = []
    for file in files:
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            slices.append(None)
            continue
        slices.append(_slice_from_header(reader, file))
    return slices


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


def _series_spacing(ordered: Sequence[_Slice]) -> float:
    """The slice spacing of the whole series as ITK derives it: the distance between the first and
    the last slice along the slice normal over the number of steps (mm)."""
    orientation = np.asarray(ordered[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    extent = float((np.asarray(ordered[-1].position) - np.asarray(ordered[0].position)) @ normal)
    return extent / (len(ordered) - 1)


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


def _series_name(uid: str) -> str:
    return f"DICOM series {uid!r}" if uid else "the DICOM series (empty SeriesInstanceUID)"


def _unique_rows(values: np.ndarray) -> str:
    rows = {tuple(round(float(v), 6) for v in row) for row in values}
    return ", ".join(str(list(r)) for r in sorted(rows)[:_MAX_LISTED])


def itk_reason(error: RuntimeError) -> str:
    """The ITK message of a SimpleITK exception, without the source file and object address."""
    text = str(error).strip()
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[1] if "): " in text else text
    return " ".join(text.split()) or type(error).__name__
