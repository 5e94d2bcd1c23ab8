"""The DICOM identity of an analysed series: the headers a DICOM SR and key image are filed under.

Read on the client only, with pydicom, headers only (``stop_before_pixels``): the patient, study and
series modules stay here and never reach the server (:class:`~vfq.client.VfqClient` sends pixels and
voxel size alone). The files are exactly those :func:`vfq.io.read_ct` reads for the folder
(:func:`vfq.io.dicom_series.dicom_series_files`), ordered by slice position.

Anonymised series sometimes have blanked UIDs. Where the files lack them:

* SOP Instance / SOP Class UID: taken from each file's meta header (Media Storage SOP Instance /
  Class UID, the same values by definition, PS3.10);
* Study / Series Instance UID: derived from the instances' SOP Instance UIDs (a ``2.25`` UUID-5 UID,
  the same on every run), so that the SR and key image share one study with the evidence they
  reference. A PACS will not link such documents to the original study; a warning says so.

Missing type-2 patient and study attributes (Patient's Name, Patient ID, Study Date, …) are added
empty, as DICOM allows. Nothing here is logged but counts and names of attributes.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from vfq.client.errors import DicomSourceError
from vfq.io.ct import SUPPORTED_SUFFIXES
from vfq.io.dicom_series import dicom_series_files
from vfq.volume import ImageGeometry

__all__ = ["GRID_TOLERANCE_MM", "DicomSource", "read_dicom_source"]

logger = logging.getLogger(__name__)

#: Largest distance (mm) between an instance's ImagePositionPatient and the nearest voxel centre of
#: the analysed volume for the series to count as that volume.
GRID_TOLERANCE_MM = 0.05
#: Type-2 attributes of the patient and study modules that the documents copy; added empty where the
#: source lacks them.
TYPE2_IDENTITY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True, eq=False)
class DicomSource:
    """The headers of every instance of one analysed DICOM series, with its identity complete.

    Attributes:
        folder: the series folder.
        headers: one pydicom dataset per instance (no pixel data), ordered by slice position; its
            SOP Instance/Class, Study and Series Instance UIDs are set (see the module docstring).
        frame_of_reference_uid: the series' Frame of Reference UID, the frame of world LPS mm
            (DICOM patient coordinates) the keypoints are given in; ``None`` if the files lack it.
        derived: the names of the UIDs that were derived because the files lacked them.
    """

    folder: Path
    headers: tuple[Dataset, ...]
    frame_of_reference_uid: str | None
    derived: tuple[str, ...] = ()

    @property
    def study_instance_uid(self) -> str:
        """The study the SR and key image are filed in."""
        return str(self.headers[0].StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        """The analysed series."""
        return str(self.headers[0].SeriesInstanceUID)

    def check_matches(self, geometry: ImageGeometry) -> None:
        """Check that these instances are the voxels of ``geometry``: as many pixels, and every
        ImagePositionPatient within :data:`GRID_TOLERANCE_MM` of a voxel centre inside the volume.

        Raises:
            DicomSourceError: the series is not the analysed volume (another folder, another series).
        """
        pixels = sum(int(h.Rows) * int(h.Columns) for h in self.headers)
        if pixels != int(np.prod(geometry.shape)):
            raise DicomSourceError(
                f"the DICOM series in {str(self.folder)!r} has {len(self.headers)} slices of "
                f"{self.headers[0].Rows}×{self.headers[0].Columns} pixels, but the analysed volume has "
                f"{tuple(geometry.shape)} voxels (z, y, x): it is not the series that was analysed"
            )
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in self.headers])
        voxels = geometry.world_to_voxel(positions)
        nearest = np.clip(np.round(voxels), 0, np.array(geometry.shape) - 1)
        off_grid = np.linalg.norm(geometry.voxel_to_world(nearest) - positions, axis=1)
        if off_grid.max() > GRID_TOLERANCE_MM:
            raise DicomSourceError(
                f"the slices of the DICOM series in {str(self.folder)!r} lie up to {off_grid.max():.3g} mm "
                f"off the voxel grid of the analysed volume (tolerance {GRID_TOLERANCE_MM} mm): it is not "
                "the series that was analysed"
            )


def read_dicom_source(path: str | os.PathLike[str]) -> DicomSource:
    """The headers of the DICOM series in ``path`` (a folder), as :func:`vfq.io.read_ct` selects it.

    Raises:
        DicomSourceError: ``path`` is a NIfTI, NRRD or MetaImage file (no DICOM identity), or the
            series has no SOP Instance UIDs, or mixed study or frame-of-reference UIDs.
        UnreadableInputError, NotCTError, InconsistentSeriesError: as :func:`vfq.io.read_ct`.
    """
    folder = Path(path)
    kind = next((name for s, (name, _) in SUPPORTED_SUFFIXES.items() if folder.name.lower().endswith(s)), "")
    if not folder.is_dir() and (kind or folder.exists()):
        raise DicomSourceError(
            f"{str(folder)!r} is {'a ' + kind if kind else 'a'} file, not a DICOM series folder: it has no "
            "DICOM identity (patient, study, series) to file a DICOM SR or key image under. Analyse the "
            "DICOM series folder of the scan, or leave out the DICOM SR (--dicom-sr)."
        )
    headers = [pydicom.dcmread(file, stop_before_pixels=True) for file in dicom_series_files(folder)]
    for header in headers:
        _complete_instance_uids(header, folder)
    derived = tuple(
        name
        for name in ("StudyInstanceUID", "SeriesInstanceUID")
        if _complete_shared_uid(headers, name, folder)
    )
    if derived:
        logger.warning(
            "the DICOM series has no %s: derived from its instance UIDs; a PACS will not link the SR and "
            "key image to the original study",
            " or ".join(derived),
        )
    for header in headers:
        for keyword in TYPE2_IDENTITY:
            if keyword not in header:
                setattr(header, keyword, "")
    frames = {str(h.get("FrameOfReferenceUID") or "") for h in headers}
    if len(frames) > 1:
        raise DicomSourceError(
            f"the slices of the DICOM series in {str(folder)!r} name {len(frames)} Frames of Reference; "
            "expected one: its world coordinates are not one frame"
        )
    return DicomSource(
        folder=folder, headers=tuple(headers), frame_of_reference_uid=frames.pop() or None, derived=derived
    )


def _complete_instance_uids(header: Dataset, folder: Path) -> None:
    """SOP Instance and Class UID from the file meta header where the dataset's are blank."""
    meta = getattr(header, "file_meta", Dataset())
    for keyword, meta_keyword in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
    ):
        if not str(header.get(keyword) or ""):
            value = str(meta.get(meta_keyword) or "")
            if not value:
                raise DicomSourceError(
                    f"a slice of the DICOM series in {str(folder)!r} has no {keyword}, not even in its file "
                    "meta header: the SR cannot reference it. Re-export the series from the PACS."
                )
            setattr(header, keyword, value)


def _complete_shared_uid(headers: Sequence[Dataset], keyword: str, folder: Path) -> bool:
    """Give every header the series' one ``keyword`` UID, derived where all lack it; whether derived."""
    values = {str(h.get(keyword) or "") for h in headers} - {""}
    if len(values) > 1:
        raise DicomSourceError(
            f"the slices of the DICOM series in {str(folder)!r} name {len(values)} different {keyword}s; "
            "expected one"
        )
    derived = not values
    value = _derived_uid(keyword, [str(h.SOPInstanceUID) for h in headers]) if derived else values.pop()
    for header in headers:
        setattr(header, keyword, value)
    return derived


def _derived_uid(keyword: str, instance_uids: Sequence[str]) -> str:
    """A ``2.25`` UID determined by ``keyword`` and the set of instance UIDs."""
    name = "/".join(["vfq", keyword, *sorted(instance_uids)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"
