"""The CT resamplings in PyTorch (vfq.torch_resampling), here on the CPU: the localizer input and the
straightened image equal the numpy versions' (vfq.preprocess, vfq.straighten) on fresh random CTs and
on a bent tube, air outside the scan included."""

from __future__ import annotations

import numpy as np
import pytest
from straighten_factories import SineSpine, tube_ct

from vfq import torch_resampling
from vfq.preprocess import to_localizer_grid
from vfq.straighten import default_grid, straighten_sagittal
from vfq.tensors import HU_SCALE
from vfq.torch_resampling import TorchResampler
from vfq.volume import CTVolume, ImageGeometry

RESAMPLER = TorchResampler("cpu")


def random_volume(shape, spacing, seed) -> CTVolume:
    """int16 HU from far below to far above the clipping window, read-only as Triton hands them over."""
    array = np.random.default_rng(seed).integers(-3024, 3000, size=shape, dtype=np.int16)
    array.flags.writeable = False
    return CTVolume(array=array, geometry=ImageGeometry(shape=shape, spacing=spacing))


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((61, 70, 66), (1.0, 0.7, 0.7)),  # thin slices: z shrinks first in numpy
        ((13, 50, 47), (5.0, 0.8, 0.9)),  # thick slices: the other order in numpy
        ((40, 33, 81), (0.6, 1.3, 0.5)),
    ],
)
def test_the_localizer_input_is_the_numpy_one(shape, spacing):
    ct = random_volume(shape, spacing, seed=sum(shape))
    expected = to_localizer_grid(ct)
    found = RESAMPLER.localizer_input(ct)
    assert repr(found.grid.geometry) == repr(expected.grid.geometry)
    assert found.tensor.shape == expected.tensor.shape and found.tensor.dtype == np.float32
    np.testing.assert_allclose(found.tensor, expected.tensor, rtol=0, atol=0.01 * HU_SCALE)  # 0.01 HU


def test_the_localizer_input_is_the_same_slab_by_slab(monkeypatch):
    ct = random_volume((61, 40, 44), (1.0, 0.8, 0.8), seed=3)
    whole = RESAMPLER.localizer_input(ct).tensor
    monkeypatch.setattr(torch_resampling, "CHUNK_PLANES", 7)  # slabs that cut through the 4 mm cells
    np.testing.assert_allclose(RESAMPLER.localizer_input(ct).tensor, whole, rtol=0, atol=1e-6)


def straightening_case(ct: CTVolume, spine: SineSpine):
    curve = spine.curve()
    return curve, default_grid(curve, ct.geometry, width_mm=96.0, thickness_mm=4.0, pixel_mm=1.0, step_mm=1.0)


def test_the_straightened_image_of_a_bent_tube_is_the_numpy_one():
    spine = SineSpine(length=120.0, z0=0.0, ax=8.0, ay=6.0, x0=40.0, y0=40.0)
    ct = tube_ct(spine, (120, 80, 80), (0.0, 0.0, 0.0))  # the 96 mm slab reaches past the scan in y
    curve, grid = straightening_case(ct, spine)
    expected = straighten_sagittal(ct, curve, grid)
    found = RESAMPLER.sagittal(ct, curve, grid)
    assert found.shape == expected.shape == (grid.n_s, grid.n_v) and found.dtype == np.float32
    assert (expected == -1024.0).any() and (expected > 500).any()  # air outside and the tube inside
    np.testing.assert_allclose(found, expected, rtol=0, atol=0.05)


def test_the_straightened_image_of_random_hu_is_the_numpy_one():
    ct = random_volume((90, 70, 75), (1.25, 0.8, 0.8), seed=7)
    spine = SineSpine(length=150.0, z0=-20.0, ax=10.0, ay=5.0, x0=30.0, y0=28.0)
    curve, grid = straightening_case(ct, spine)
    expected = straighten_sagittal(ct, curve, grid)
    np.testing.assert_allclose(RESAMPLER.sagittal(ct, curve, grid), expected, rtol=0, atol=0.1)
