"""Timing of the straightening step on a full-size CT (numpy only, CPU).

Straightens a 512×512×300 int16 CT (0.7 × 0.7 × 1 mm, z × y × x = 300 × 512 × 512) along a scoliotic,
kyphotic curve into a 400 × 96 × 5 slab, and prints the median of 7 runs and its ratio to the 0.2 s
target. Also times the curve fit and the whole step (fit + grid + straighten + slab average).

Run: ``.venv/bin/python benchmarks/straighten_bench.py``
"""

from __future__ import annotations

import numpy as np
from timing import median_seconds

from vfq.straighten import StraightenedGrid, fit_spine_curve, sagittal_image, straighten
from vfq.volume import CTVolume, ImageGeometry

TARGET_S = 0.2
REPEATS = 7


def main() -> None:
    rng = np.random.default_rng(0)
    shape = (300, 512, 512)
    spacing = (1.0, 0.7, 0.7)
    geometry = ImageGeometry(shape=shape, spacing=spacing, origin=(-179.0, -179.0, -150.0))
    array = rng.integers(-1024, 1500, size=shape, dtype=np.int16)
    ct = CTVolume(array=array, geometry=geometry)

    # column points every 4 mm (like per-slice centroids of a 4 mm localizer), with noise
    z = np.arange(-150.0, 150.0, 4.0)
    t = (z + 150.0) / 300.0
    x = 25.0 * np.sin(2 * np.pi * t)  # scoliosis
    y = 30.0 + 20.0 * np.sin(np.pi * t)  # kyphosis
    points = np.column_stack([x, y, z]) + rng.normal(0.0, 0.5, (z.size, 3))

    curve = fit_spine_curve(points)
    grid = StraightenedGrid(n_s=400, n_v=96, n_w=5, step_s_mm=0.7, spacing_v_mm=1.0, spacing_w_mm=1.0)

    t_straighten = median_seconds(lambda: straighten(ct, curve, grid), REPEATS)
    t_fit = median_seconds(lambda: fit_spine_curve(points), REPEATS)
    t_step = median_seconds(
        lambda: sagittal_image(straighten(ct, fit_spine_curve(points), grid), grid), REPEATS
    )

    print(f"CT {shape} int16, spacing {spacing} mm; slab {grid.shape}; median of {REPEATS} runs")
    ratio = t_straighten / TARGET_S
    print(f"straighten:            {t_straighten * 1e3:7.1f} ms  ({ratio:.2f} × the {TARGET_S} s target)")
    print(f"fit_spine_curve:       {t_fit * 1e3:7.1f} ms  ({points.shape[0]} points)")
    print(f"fit + straighten + 2D: {t_step * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
