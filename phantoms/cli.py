"""``vfq-phantom``: write synthetic CT phantoms with exact ground truth.

Examples::

    vfq-phantom --seed 7 --out phantoms/7 --dicom --picture
    vfq-phantom --seed 0 --count 20 --field-of-view abdomen --out data/abdomen
    vfq-phantom --seed 3 --spacing 1.0 0.7 0.7 --thickness 1 --slices 300 --out ct300
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from vfq.phantoms.generate import Acquisition, FieldOfView, generate, sample_spec
from vfq.phantoms.writers import write_phantom

logger = logging.getLogger("vfq.phantoms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfq-phantom",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--seed", type=int, required=True, help="seed of the first phantom")
    parser.add_argument("--count", type=int, default=1, help="number of phantoms (seeds seed, seed+1, ...)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (one sub-folder per seed when --count > 1)"
    )
    parser.add_argument(
        "--field-of-view",
        choices=[f.value for f in FieldOfView],
        help="chest, abdomen or whole_spine (random by default)",
    )
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in mm")
    parser.add_argument("--thickness", type=float, help="slice thickness in mm (default: the z spacing)")
    parser.add_argument("--matrix", type=int, nargs=2, metavar=("NY", "NX"), default=(512, 512))
    parser.add_argument("--slices", type=int, help="number of slices (default: cover the field of view)")
    parser.add_argument("--noise", type=float, help="noise standard deviation in HU")
    parser.add_argument("--dicom", action="store_true", help="also write a DICOM series")
    parser.add_argument("--no-nifti", action="store_true", help="do not write ct.nii.gz")
    parser.add_argument("--labels", action="store_true", help="also write a vertebra label map")
    parser.add_argument("--picture", action="store_true", help="also write sagittal.png with the keypoints")
    return parser


def _acquisition(args: argparse.Namespace, sampled: Acquisition) -> Acquisition:
    acquisition = sampled
    if args.spacing:
        spacing = tuple(args.spacing)
        acquisition = replace(acquisition, spacing=spacing, slice_thickness=args.thickness or spacing[0])
    elif args.thickness:
        acquisition = replace(acquisition, slice_thickness=args.thickness)
    if args.noise is not None:
        acquisition = replace(acquisition, noise_hu=args.noise)
    return replace(acquisition, matrix=tuple(args.matrix), n_slices=args.slices)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fov = FieldOfView(args.field_of_view) if args.field_of_view else None
    for seed in range(args.seed, args.seed + args.count):
        spec = sample_spec(seed, field_of_view=fov)
        spec = replace(spec, acquisition=_acquisition(args, spec.acquisition))
        folder = args.out if args.count == 1 else args.out / f"{seed:06d}"
        start = time.perf_counter()
        phantom = generate(spec, with_labels=args.labels)
        rendered = time.perf_counter() - start
        write_phantom(phantom, folder, nifti=not args.no_nifti, dicom=args.dicom, picture=args.picture)
        fractures = (
            ", ".join(f"{f.level.value} {f.kind.value} {f.loss:.0%}" for f in spec.fractures) or "none"
        )
        logger.info(
            "seed %d: %s %s, %s voxels, rendered in %.2f s, fractures: %s -> %s",
            seed,
            spec.field_of_view.value,
            spec.contrast.value,
            "x".join(map(str, phantom.ct.array.shape)),
            rendered,
            fractures,
            folder,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
