"""The real embedded Triton, started once for the server tests on free ports, and the phantoms they send."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_factories import FRACTURED_SPEC, InProcess

from vfq.phantoms import generate
from vfq.phantoms.writers import write_dicom_series, write_nifti
from vfq.server.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def server():
    with EmbeddedServer() as running:
        yield running


@pytest.fixture(scope="session")
def phantom():
    """An abdominal scan, 2 mm slices, mild scoliosis, an L1 wedge and an L4 biconcave fracture."""
    return generate(FRACTURED_SPEC)


@pytest.fixture(scope="session")
def phantom_files(phantom, tmp_path_factory) -> dict[str, Path]:
    """The phantom as a NIfTI file and as a DICOM series folder."""
    folder = tmp_path_factory.mktemp("phantom")
    return {
        "nifti": write_nifti(phantom.ct, folder / "abdomen.nii.gz"),
        "dicom": write_dicom_series(
            phantom.ct, folder / "abdomen_dicom", seed=FRACTURED_SPEC.seed, slice_thickness=2.0
        )[0].parent,
    }


@pytest.fixture(scope="session")
def in_process() -> InProcess:
    return InProcess()
