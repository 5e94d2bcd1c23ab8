"""The floor: the least time each step can take on this machine, from its FLOPs and bytes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from vfq.tensors import (
    DECODER_MODEL,
    DETECTOR_MODEL,
    DETECTOR_PIXEL_MM,
    DETECTOR_SLAB_MM,
    LOCALIZER_MODEL,
    PREPROCESS_MODEL,
    STRAIGHTEN_MODEL,
)

from . import REPO
from .figures import IN_PROCESS_STEP
from .in_process import InProcessLatency, TensorShapes
from .requests import ServedLatency
from .scans import Scan


@dataclass(frozen=True)
class StepFloor:
    """The least time a step can take on this machine: its FLOPs over the matmul rate of the cores it
    uses, or its bytes over the copy bandwidth, whichever is larger; next to what it took (s)."""

    step: str
    flop: float
    bytes_moved: float
    floor_s: float
    served_s: float | None
    in_process_s: float | None


def network_macs(shapes: TensorShapes) -> tuple[int, int]:
    """Multiply-adds of the localizer and the detector on these input shapes
    (:func:`vfq.export.networks.describe` on the shipped checkpoints; needs torch)."""
    from vfq.export.networks import describe, load_checkpoint

    weights = REPO / "export" / "weights"
    localizer = load_checkpoint(weights / "spine_localizer.pt").model
    detector = load_checkpoint(weights / "vertebra_detector.pt").model
    return describe(localizer, shapes.localizer_input).macs, describe(detector, shapes.detector_input).macs


def step_floors(
    scan: Scan,
    shapes: TensorShapes,
    macs: tuple[int, int],
    compute: Mapping[str, float],
    served: ServedLatency,
    in_process: InProcessLatency,
) -> list[StepFloor]:
    """Floors of the transfer and of each step on ``scan``.

    Bytes each must move at least: the transfer copies the int16 CT once; preprocess reads it and
    writes the float32 coarse grid; the localizer reads that grid and writes its heatmap; straighten
    reads the CT voxels its slab passes through (slab volume / voxel volume, int16) and writes the
    float32 detector input; the detector reads it and writes its outputs; the decoder reads those.
    """

    def floats(*shape_list: tuple[int, ...]) -> float:
        return 4.0 * sum(math.prod(s) for s in shape_list)

    ct_bytes = float(scan.ct.array.nbytes)
    voxel_mm3 = math.prod(scan.ct.geometry.spacing)
    slab_mm3 = math.prod(shapes.detector_input[-2:]) * DETECTOR_PIXEL_MM**2 * DETECTOR_SLAB_MM
    work = {  # step: (FLOP, bytes moved)
        "transfer": (0.0, 2 * ct_bytes),
        PREPROCESS_MODEL: (0.0, ct_bytes + floats(shapes.localizer_input)),
        LOCALIZER_MODEL: (2.0 * macs[0], floats(shapes.localizer_input, shapes.localizer_output)),
        STRAIGHTEN_MODEL: (0.0, 2 * slab_mm3 / voxel_mm3 + floats(shapes.detector_input)),
        DETECTOR_MODEL: (2.0 * macs[1], floats(shapes.detector_input, *shapes.detector_outputs)),
        DECODER_MODEL: (0.0, floats(*shapes.detector_outputs)),
    }
    flops = compute["matmul_flop_per_s_per_core"] * compute["network_threads"]
    floors = []
    for step, (flop, nbytes) in work.items():
        if step == "transfer":
            measured, local = served.latency_s.p50 - served.server_s, None
        else:
            measured, local = served.steps[step].metric, in_process.steps_s.get(IN_PROCESS_STEP[step])
        floor = max(flop / flops, nbytes / compute["copy_bytes_per_s"])
        floors.append(StepFloor(step, flop, nbytes, floor, measured, local))
    return floors
