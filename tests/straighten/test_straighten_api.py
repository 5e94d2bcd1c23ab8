"""The public API of vfq.straighten: a curated __all__, numpy only (it runs in Triton's python backend)."""

from __future__ import annotations

import subprocess
import sys

import vfq.straighten as straighten_pkg

EXPECTED = {
    "AIR_HU",
    "SpineCurve",
    "SpineFit",
    "StraightenedGrid",
    "column_points_from_heatmap",
    "column_track",
    "default_grid",
    "fit_spine_curve",
    "fit_spine_curve_detailed",
    "frame_from_tangent",
    "grid_to_world",
    "sagittal_image",
    "sagittal_to_world",
    "sample_trilinear",
    "straighten",
    "straighten_sagittal",
    "world_to_grid",
}


def test_exported_members() -> None:
    assert set(straighten_pkg.__all__) == EXPECTED
    assert sorted(straighten_pkg.__all__) == list(straighten_pkg.__all__)
    public = {name for name in vars(straighten_pkg) if not name.startswith("_")}
    modules = {"annotations", "curve", "fit", "grid", "resample"}
    assert public - modules == EXPECTED


def test_imports_numpy_only() -> None:
    heavy = "{'scipy', 'torch', 'SimpleITK', 'tritonclient'}"
    code = (
        "import sys, vfq.straighten; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {heavy}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
