"""``vfq demo`` (what ``make demo`` runs): the served pipeline end to end on a phantom and a real CT.

1. A whole-spine phantom with three fractures (wedge, crush, biconcave) is written as a DICOM
   series with its exact ground truth (``truth.json``).
2. The embedded Triton starts on free ports with the project's model repository.
3. ``vfq analyze`` sends the phantom and the small real lumbar CT of the repository's test data
   (when present) through ``vertebra_pipeline`` over gRPC with shared memory, and writes
   ``report.json`` and ``overlay.png`` per study and ``vertebrae.csv``.
4. The server stops; a table compares what was found on the phantom with its truth.

Only pixels and spacing reach the server. The phantom's weights are trained on phantoms: the real
scan shows how far that carries, not a clinical result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vfq.client import cli

#: The real lumbar CT of the repository's test data (absent from an installed package).
REAL_CT = Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "lumbar_ct_3mm" / "ct.nii.gz"


def write_phantom_study(folder: Path) -> Path:
    """The demo phantom as a DICOM series in ``folder/phantom_dicom``, its truth beside it."""
    from vfq.phantoms import generate
    from vfq.phantoms.demo import DEMO_SPEC
    from vfq.phantoms.writers import write_dicom_series

    phantom = generate(DEMO_SPEC)
    series = folder / "phantom_dicom"
    write_dicom_series(
        phantom.ct, series, seed=DEMO_SPEC.seed, slice_thickness=DEMO_SPEC.acquisition.slice_thickness
    )
    phantom.truth.write_json(folder / "phantom_truth.json")
    return series


def truth_table(report: Path, truth: Path) -> list[str]:
    """Lines comparing the served result on the phantom with its truth, level by level."""
    found = {v["level"]: v for v in json.loads(report.read_text(encoding="utf-8"))["vertebrae"]}
    lines = [f"{'level':<6}{'truth grade':>12}{'true loss':>10}{'found grade':>12}{'found loss':>11}"]
    for vertebra in json.loads(truth.read_text(encoding="utf-8"))["vertebrae"]:
        if not vertebra.get("fully_in_view", True):
            continue
        level, hit = vertebra["level"], found.get(vertebra["level"])
        served = f"{hit['genant_grade']:>12d}{hit['fracture_score']:>11.0%}" if hit else f"{'not found':>23}"
        lines.append(f"{level:<6}{vertebra['genant_grade']:>12d}{vertebra['height_loss']:>10.0%}{served}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from vfq.server.embedded import EmbeddedServer, ServerStartError

    parser = argparse.ArgumentParser(prog="vfq demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    args = parser.parse_args(argv)
    inputs = args.out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    print("vfq demo: rendering a whole-spine phantom with three fractures as a DICOM series", file=sys.stderr)
    studies = [write_phantom_study(inputs)]
    if REAL_CT.is_file():
        studies.append(REAL_CT)
    print("vfq demo: starting the embedded Triton", file=sys.stderr)
    results = args.out / "results"
    try:
        with EmbeddedServer(log=args.out / "tritonserver.log") as server:
            argv = ["analyze", *map(str, studies), "--url", server.grpc_url, "--out", str(results)]
            code = cli.main([*argv, "--force", "--shared-memory"])
    except ServerStartError as error:
        print(f"vfq: error: {error}", file=sys.stderr)
        return cli.EXIT_SERVER
    report = results / cli.study_name(studies[0]) / cli.REPORT_NAME
    if report.is_file():
        print("\nphantom: served result against the exact truth")
        print("\n".join(truth_table(report, inputs / "phantom_truth.json")))
    print(f"\nwrote {results} (report.json and overlay.png per study, {cli.CSV_NAME}); server log {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
