"""The CTs a run sends: whole-spine phantoms of N 512×512 slices and the two real scans."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from timing import median_seconds

from vfq.phantoms import Acquisition, FieldOfView, build_anatomy, field_of_view_geometry, render, sample_spec
from vfq.volume import CTVolume

from . import REPO

#: Phantom acquisition (DESIGN §3's reference CT): 0.7×0.7 mm pixels, 1 mm slices, 512×512 matrix.
PHANTOM_SPACING_MM = (1.0, 0.7, 0.7)
PHANTOM_MATRIX = (512, 512)
PHANTOM_SEED = 1
REAL_SCANS = (
    REPO / "tests/data/real/lumbar_ct_3mm/ct.nii.gz",
    REPO / "tests/data/real/thoracolumbar_dicom_20slices",
)
#: The scan the breakdown, the floor and the concurrency sweep use (or the largest phantom run).
REFERENCE_SLICES = 300


@dataclass(frozen=True)
class Scan:
    """A CT to send: a phantom of ``slices`` slices or a real scan."""

    name: str
    ct: CTVolume
    phantom: bool

    @property
    def slices(self) -> int:
        return int(self.ct.array.shape[0])


def phantom_scan(slices: int, cache: Path) -> Scan:
    """The whole-spine phantom of ``slices`` 512×512 slices. Its geometry comes from its spec (a few
    ms); its pixels are rendered once and kept in ``cache`` as ``.npy``."""
    acquisition = Acquisition(
        spacing=PHANTOM_SPACING_MM,
        slice_thickness=PHANTOM_SPACING_MM[0],
        matrix=PHANTOM_MATRIX,
        n_slices=slices,
    )
    anatomy = build_anatomy(
        sample_spec(PHANTOM_SEED, field_of_view=FieldOfView.WHOLE_SPINE, acquisition=acquisition)
    )
    geometry = field_of_view_geometry(anatomy)
    path = cache / f"phantom_{PHANTOM_SEED}_{'x'.join(map(str, geometry.shape))}.npy"
    if path.is_file():
        return Scan(f"phantom {slices}", CTVolume(np.load(path), geometry), phantom=True)
    ct, _ = render(anatomy, geometry)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, ct.array)
    return Scan(f"phantom {slices}", ct, phantom=True)


def real_scans() -> list[Scan]:
    """The two real CTs of ``tests/data/real``, read (LPS, int16 HU)."""
    from vfq.io import read_ct  # SimpleITK on use: the GPU check imports this module without it

    return [
        Scan(f"real {path.parent.name if path.is_file() else path.name}", read_ct(path), False)
        for path in REAL_SCANS
    ]


def read_times(scan: Scan, cache: Path, repeats: int = 3) -> dict[str, float]:
    """Median seconds of ``read_ct`` (read + reorient to LPS, warm page cache) of ``scan`` written as
    ``.nii.gz``, ``.nii`` and a DICOM series (written once under ``cache``)."""
    from vfq.io import read_ct
    from vfq.phantoms.writers import write_dicom_series, write_nifti

    folder = cache / f"read_{scan.slices}"
    files = {"nii.gz": folder / "ct.nii.gz", "nii": folder / "ct.nii", "dicom": folder / "dicom"}
    if not all(path.exists() for path in files.values()):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_nifti(scan.ct, files["nii.gz"])
        write_nifti(scan.ct, files["nii"], compress=False)
        write_dicom_series(scan.ct, files["dicom"], PHANTOM_SEED, scan.ct.geometry.spacing[0])
    return {name: median_seconds(lambda p=path: read_ct(p), repeats) for name, path in files.items()}
