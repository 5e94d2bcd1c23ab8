"""``vfq-export``: turn trained checkpoints into the shipped artifacts, checked.

For each network: load ``model.pt``, export ONNX (opset 17, dynamic spatial axes), check it
against PyTorch on real phantom inputs (relative error ≤ 1e-4) and against TensorRT 10's operator
support, and write the ONNX file plus a weights-only checkpoint into the output folder::

    vfq-export --localizer out/train/localizer/model.pt --detector out/train/detector/model.pt \\
               --out export/weights
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vfq.export.networks import load_checkpoint, save_checkpoint
from vfq.export.onnx_export import check_onnx, export_detector, export_localizer
from vfq.phantoms import Acquisition, FieldOfView, generate, sample_spec
from vfq.preprocess import to_detector_input, to_localizer_grid
from vfq.straighten import fit_spine_curve

logger = logging.getLogger("vfq.export.publish")

LOCALIZER_FILE = "spine_localizer.onnx"
DETECTOR_FILE = "vertebra_detector.onnx"


def phantom_inputs(seed: int = 424242) -> tuple[torch.Tensor, torch.Tensor]:
    """A localizer and a detector input made from a phantom exactly as the pipeline makes them."""
    spec = sample_spec(
        seed,
        field_of_view=FieldOfView.WHOLE_SPINE,
        acquisition=Acquisition(spacing=(2.0, 0.8, 0.8), slice_thickness=2.0, noise_hu=12.0),
    )
    phantom = generate(spec)
    ct = phantom.ct
    coarse = to_localizer_grid(ct)
    centres = ct.geometry.voxel_to_world([v.center for v in phantom.truth.vertebrae])
    lo, hi = ct.geometry.world_bounds()
    sagittal = to_detector_input(ct, fit_spine_curve(centres, z_range_mm=(lo[2], hi[2])))
    return torch.from_numpy(coarse.tensor), torch.from_numpy(sagittal.tensor)


def publish(localizer: Path, detector: Path, out: Path) -> dict:
    """Export, check and write both networks; returns the check report (also ``export.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    loc_input, det_input = phantom_inputs()
    report: dict = {}
    for name, source, exporter, filename, example in (
        ("localizer", localizer, export_localizer, LOCALIZER_FILE, loc_input),
        ("detector", detector, export_detector, DETECTOR_FILE, det_input),
    ):
        checkpoint = load_checkpoint(source)
        path = exporter(checkpoint.model, out / filename)
        check = check_onnx(path, checkpoint.model, [example])
        if check.tensorrt_problems:
            raise RuntimeError(f"{path}: TensorRT 10 would refuse it: {check.tensorrt_problems}")
        save_checkpoint(out / filename.replace(".onnx", ".pt"), checkpoint.model, checkpoint.extra)
        worst = max(a.relative_error for a in check.agreements)
        report[name] = {
            "onnx": filename,
            "input_shape": list(example.shape),
            "max_relative_error_vs_pytorch": worst,
            "training": checkpoint.extra,
            "onnx_bytes": path.stat().st_size,
        }
        logger.info(
            "%s: %s, max relative error vs PyTorch %.2e on a phantom input %s",
            name,
            path,
            worst,
            tuple(example.shape),
        )
    (out / "export.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfq-export", description=__doc__.split("\n")[0])
    parser.add_argument("--localizer", type=Path, required=True, help="localizer checkpoint (model.pt)")
    parser.add_argument("--detector", type=Path, required=True, help="detector checkpoint (model.pt)")
    parser.add_argument("--out", type=Path, default=Path("export/weights"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    publish(args.localizer, args.detector, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
