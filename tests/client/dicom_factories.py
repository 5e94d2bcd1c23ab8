"""Small DICOM CT series with a patient identity, and results of their geometry, for the DICOM SR tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from client_factories import pipeline_outputs

from vfq.client import StudyResult
from vfq.io import read_ct
from vfq.phantoms.writers import write_dicom_series
from vfq.volume import CTVolume, ImageGeometry

#: 12 axial slices of 24 × 20 pixels, 2.5 mm apart, far from the world origin.
SMALL_GEOMETRY = ImageGeometry(shape=(12, 24, 20), spacing=(2.5, 0.8, 0.7), origin=(-81.2, 40.5, 1210.0))
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "VFQ-TEST-0042"


def set_identity(folder: Path, patient_name: str = PATIENT_NAME, patient_id: str = PATIENT_ID) -> Path:
    """Give every file of the series in ``folder`` a patient name and ID (rewritten in place)."""
    for path in sorted(folder.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.PatientName = patient_name
        dataset.PatientID = patient_id
        dataset.save_as(path)
    return folder


def write_identified_series(folder: Path, geometry: ImageGeometry = SMALL_GEOMETRY, seed: int = 11) -> Path:
    """A CT series (one file per slice, soft-tissue HU) whose files name a patient."""
    array = np.random.default_rng(seed).integers(-100, 100, size=geometry.shape, dtype=np.int16)
    write_dicom_series(CTVolume(array, geometry), folder, seed=seed, slice_thickness=geometry.spacing[0])
    return set_identity(folder)


def result_of(folder: Path, outputs: dict | None = None, source: str | None = None) -> StudyResult:
    """A result with the server's outputs ``outputs`` (default: T12 grade 0, L1 grade 2, an unknown
    level of grade 1) on the geometry of the series in ``folder``, as the client would make it."""
    return StudyResult.from_outputs(
        pipeline_outputs() if outputs is None else outputs,
        read_ct(folder).geometry,
        str(folder) if source is None else source,
        {"request": 0.5},
        model_version="1",
    )
