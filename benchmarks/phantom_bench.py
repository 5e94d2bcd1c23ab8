"""How fast is a phantom? Renders 512x512x300 CTs (0.7 x 0.7 x 1.0 mm) pinned to one CPU core.

Target (issue "Synthetic CT phantoms"): <= 5 s per 512x512x300 phantom on one core. Prints the
median of the runs and its ratio to the target, and the time to write it as NIfTI and as DICOM.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from vfq.phantoms import Acquisition, FieldOfView, build_anatomy, field_of_view_geometry, render, sample_spec
from vfq.phantoms.writers import write_dicom_series, write_nifti

TARGET_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    acquisition = Acquisition(
        spacing=(1.0, 0.7, 0.7), slice_thickness=1.0, matrix=(512, 512), n_slices=args.slices, noise_hu=15.0
    )
    times = []
    for run in range(args.runs):
        spec = sample_spec(1000 + run, field_of_view=FieldOfView.CHEST, acquisition=acquisition)
        start = time.perf_counter()
        anatomy = build_anatomy(spec)
        ct, _ = render(anatomy, field_of_view_geometry(anatomy))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        f"phantom 512x512x{args.slices}, 1 core: median {median:.2f} s over {args.runs} runs "
        f"(min {min(times):.2f}, max {max(times):.2f}); "
        f"target {TARGET_S:.1f} s -> ratio {median / TARGET_S:.2f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name, write in (
            ("NIfTI (.nii.gz)", lambda: write_nifti(ct, Path(folder) / "ct.nii.gz")),
            ("NIfTI (.nii)", lambda: write_nifti(ct, Path(folder) / "ct.nii", compress=False)),
            ("DICOM series", lambda: write_dicom_series(ct, Path(folder) / "dicom", 0, 1.0)),
        ):
            start = time.perf_counter()
            write()
            print(f"write {name}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
