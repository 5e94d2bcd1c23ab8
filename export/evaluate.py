"""``vfq-evaluate``: the whole pipeline in-process on held-out phantoms and on real scans.

Runs localizer → straighten → detector → decode (ONNX Runtime, the exported files) on phantoms
whose seeds training never used, compares with their exact truth (:func:`vfq.metrics.evaluate`) and
prints one table overall plus the main figures per field of view and per slice thickness; on real
scans (no truth) it writes the overlay picture and the measured heights::

    vfq-evaluate --weights export/weights --seeds 1000000:1000100 --out out/eval \\
                 --real tests/data/real/lumbar_ct_3mm/ct.nii.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vfq.annotation import SpineAnnotation
from vfq.io import read_ct
from vfq.metrics import EvaluationSummary, evaluate
from vfq.phantoms import generate, sample_spec
from vfq.picture import straightened_overlay
from vfq.pipeline import Analysis, analyze
from vfq.runtime import DEFAULT_RUNTIME, RUNTIMES, cpu_runner
from vfq.tensors import DETECTOR_PIXEL_MM
from vfq.volume import CTVolume

logger = logging.getLogger("vfq.export.evaluate")

#: First seed of the held-out phantoms (training caches use seeds below it).
HELD_OUT_SEED = 1_000_000


def thickness_group(thickness_mm: float) -> str:
    """Slice-thickness bucket of a study."""
    if thickness_mm <= 1.25:
        return "thin (<=1.25 mm)"
    if thickness_mm <= 3.0:
        return "medium (1.25-3 mm)"
    return "thick (>3 mm)"


class Networks:
    """The two exported networks, as the callables :func:`vfq.pipeline.analyze` takes, on the CPU
    runtime ``runtime`` (a key of :data:`vfq.runtime.RUNTIMES`) with ``threads`` threads each."""

    def __init__(self, weights: Path, threads: int = 2, runtime: str = DEFAULT_RUNTIME) -> None:
        self.localizer_runner = cpu_runner(weights / "spine_localizer.onnx", runtime, threads)
        self.detector_runner = cpu_runner(weights / "vertebra_detector.onnx", runtime, threads)

    def localizer(self, tensor: np.ndarray) -> np.ndarray:
        return self.localizer_runner(tensor)[0]

    def detector(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.detector_runner(tensor)

    def analyze(self, ct: CTVolume) -> Analysis:
        return analyze(ct, self.localizer, self.detector)


def overlay(analysis: Analysis) -> Image.Image:
    """The straightened image with the found vertebrae, levels, grades and losses."""
    v = analysis.vertebrae
    labels = [
        f"{level.value if level else '?'} g{g} {loss:.0%}"
        for level, g, loss in zip(v.levels, v.grade, v.loss)
    ]
    return straightened_overlay(
        analysis.sagittal_hu,
        v.keypoints_sagittal,
        (DETECTOR_PIXEL_MM, DETECTOR_PIXEL_MM),
        labels,
        v.grade.tolist(),
    )


def evaluate_phantoms(networks: Networks, seeds: Sequence[int], out: Path) -> dict[str, EvaluationSummary]:
    """Evaluate on phantoms; returns the summary overall and per group, writes ``studies.jsonl``."""
    groups: dict[str, list[tuple[SpineAnnotation, SpineAnnotation]]] = defaultdict(list)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "studies.jsonl", "w", encoding="utf-8") as log:
        for i, seed in enumerate(seeds):
            start = time.perf_counter()
            phantom = generate(sample_spec(seed))
            rendered = time.perf_counter() - start
            analysis = networks.analyze(phantom.ct)
            prediction = analysis.to_annotation(phantom.ct)
            spec = phantom.anatomy.spec
            pair = (prediction, phantom.truth)
            groups["all"].append(pair)
            groups[f"fov {spec.field_of_view.value}"].append(pair)
            groups[f"slices {thickness_group(spec.acquisition.slice_thickness)}"].append(pair)
            record = {
                "seed": seed,
                "field_of_view": spec.field_of_view.value,
                "slice_thickness": spec.acquisition.slice_thickness,
                "shape": list(phantom.ct.array.shape),
                "found": [lv.value if lv else None for lv in analysis.vertebrae.levels],
                "truth": [v.level.value for v in phantom.truth.vertebrae if v.fully_in_view],
                "not_assessable": analysis.not_assessable,
                "render_seconds": round(rendered, 2),
                "pipeline_seconds": {k: round(s, 3) for k, s in analysis.seconds.items()},
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            if i < 3 and analysis.sagittal_hu is not None:
                overlay(analysis).save(out / f"phantom_{seed}.png")
            logger.info(
                "%d/%d seed %d: %d vertebrae found, %d in view, %.1f s",
                i + 1,
                len(seeds),
                seed,
                len(record["found"]),
                len(record["truth"]),
                time.perf_counter() - start,
            )
    return {name: evaluate(pairs) for name, pairs in groups.items()}


def group_table(summaries: dict[str, EvaluationSummary]) -> str:
    """The main figures of every group, one line each."""
    header = (
        f"{'group':<28} {'n':>4} {'prec':>6} {'recall':>6} {'ctr med':>7} {'ctr p95':>7} "
        f"{'grade=':>6} {'grade±1':>7} {'level':>6} {'AUC v1':>6} {'AUC p1':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        ce = s.center_error
        lines.append(
            f"{name:<28} {s.n_studies:>4} {s.precision:>6.3f} {s.recall:>6.3f} {ce.median_mm:>7.2f} "
            f"{ce.p95_mm:>7.2f} {s.grade.exact_rate:>6.3f} {s.grade.within_one_rate:>7.3f} "
            f"{s.level.accuracy:>6.3f} {s.auc_vertebra_grade1.auc:>6.3f} {s.auc_patient_grade1.auc:>6.3f}"
        )
    return "\n".join(lines)


def evaluate_real(networks: Networks, paths: Sequence[Path], out: Path) -> list[dict]:
    """Run on real scans (no truth): overlay pictures and the measured vertebrae."""
    reports = []
    for path in paths:
        ct = read_ct(path)
        analysis = networks.analyze(ct)
        name = path.name.replace(".nii.gz", "").replace(".", "_")
        v = analysis.vertebrae
        report = {
            "scan": str(path),
            "not_assessable": analysis.not_assessable,
            "vertebrae": [
                {
                    "level": lv.value if lv else None,
                    "heights_mm": np.round(h, 1).tolist(),
                    "loss": round(float(loss), 3),
                    "grade": int(g),
                    "score": round(float(sc), 3),
                }
                for lv, h, loss, g, sc in zip(v.levels, v.heights_mm, v.loss, v.grade, v.detection_score)
            ],
            "seconds": {k: round(s, 3) for k, s in analysis.seconds.items()},
        }
        if analysis.sagittal_hu is not None:
            overlay(analysis).save(out / f"real_{name}.png")
        (out / f"real_{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        logger.info(
            "%s: %s",
            path,
            analysis.not_assessable
            or ", ".join(f"{x['level']} {x['heights_mm']} g{x['grade']}" for x in report["vertebrae"]),
        )
        reports.append(report)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfq-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=Path("export/weights"))
    parser.add_argument("--seeds", default=f"{HELD_OUT_SEED}:{HELD_OUT_SEED + 100}", help="start:stop")
    parser.add_argument("--out", type=Path, default=Path("out/eval"))
    parser.add_argument("--real", type=Path, nargs="*", default=[], help="real scans to run (no truth)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", choices=list(RUNTIMES), default=DEFAULT_RUNTIME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start, _, stop = args.seeds.partition(":")
    if int(start) < HELD_OUT_SEED:
        parser.error(f"phantom seeds below {HELD_OUT_SEED} may have been used for training")
    networks = Networks(args.weights, args.threads, args.runtime)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.real:
        evaluate_real(networks, args.real, args.out)
    summaries = evaluate_phantoms(networks, range(int(start), int(stop)), args.out)
    print(summaries["all"].format_table())
    print()
    print(group_table(summaries))
    (args.out / "summary.txt").write_text(
        summaries["all"].format_table() + "\n\n" + group_table(summaries) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
