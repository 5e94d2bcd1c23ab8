"""Point mapping world ↔ curve-local ↔ straightened grid: round trips on random curves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from straighten_factories import SineSpine, min_radius_of_curvature

from vfq.straighten import (
    SpineCurve,
    StraightenedGrid,
    grid_to_world,
    sagittal_to_world,
    world_to_grid,
)

ROUND_TRIP_MM = 0.05

spines = st.builds(
    SineSpine,
    length=st.floats(300.0, 500.0),
    z0=st.floats(-300.0, 0.0),
    ax=st.floats(-40.0, 40.0),
    kx=st.sampled_from([1.0, 1.5, 2.0]),
    phx=st.floats(0.0, 2 * np.pi),
    ay=st.floats(-40.0, 40.0),
    ky=st.sampled_from([1.0, 1.5, 2.0]),
    phy=st.floats(0.0, 2 * np.pi),
    x0=st.floats(-50.0, 50.0),
    y0=st.floats(-50.0, 50.0),
)


@settings(max_examples=60, deadline=None)
@given(spine=spines, seed=st.integers(0, 2**32 - 1))
def test_world_to_local_to_world(spine: SineSpine, seed: int) -> None:
    curve = spine.curve()
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, curve.length_mm, 500)
    points = curve.position(s) + rng.uniform(-40.0, 40.0, (500, 3))
    back = curve.to_world(*curve.from_world(points))
    assert np.abs(back - points).max() < ROUND_TRIP_MM


@settings(max_examples=60, deadline=None)
@given(spine=spines, seed=st.integers(0, 2**32 - 1))
def test_local_to_world_to_local(spine: SineSpine, seed: int) -> None:
    curve = spine.curve()
    rng = np.random.default_rng(seed)
    # the map is one-to-one within the radius of curvature
    reach = min(40.0, 0.6 * min_radius_of_curvature(curve))
    radius = reach * np.sqrt(rng.uniform(0.0, 1.0, 500))
    angle = rng.uniform(0.0, 2 * np.pi, 500)
    s = rng.uniform(0.0, curve.length_mm, 500)
    v, w = radius * np.cos(angle), radius * np.sin(angle)
    s2, v2, w2 = curve.from_world(curve.to_world(s, v, w))
    assert np.abs(s2 - s).max() < ROUND_TRIP_MM
    assert np.abs(v2 - v).max() < ROUND_TRIP_MM
    assert np.abs(w2 - w).max() < ROUND_TRIP_MM


def test_points_beyond_the_ends_map_onto_the_straight_continuation() -> None:
    z = np.linspace(0.0, 100.0, 401)
    curve = SpineCurve.from_polyline(np.column_stack([np.zeros_like(z), np.zeros_like(z), z]), 1.0)
    s, v, w = curve.from_world(np.array([[4.0, -3.0, -25.0], [-1.0, 2.0, 130.0]]))
    np.testing.assert_allclose(s, [-25.0, 130.0], atol=1e-9)
    np.testing.assert_allclose(v, [-3.0, 2.0], atol=1e-9)  # along +y
    np.testing.assert_allclose(w, [4.0, -1.0], atol=1e-9)  # along +x


def test_nearest_root_is_chosen_on_a_strongly_bent_curve() -> None:
    """A point near one limb of a C-bend maps onto that limb, not onto a farther normal plane."""
    curve = SineSpine(ax=40.0, kx=2.0, ay=0.0, length=300.0, z0=0.0).curve()
    s_true = np.linspace(20.0, curve.length_mm - 20.0, 50)
    p = curve.to_world(s_true, np.full(50, 5.0), np.full(50, 3.0))
    s, v, w = curve.from_world(p)
    np.testing.assert_allclose(s, s_true, atol=1e-6)
    np.testing.assert_allclose(v, 5.0, atol=1e-6)
    np.testing.assert_allclose(w, 3.0, atol=1e-6)


def test_mapping_keeps_the_input_shape() -> None:
    curve = SineSpine().curve()
    points = curve.position(np.linspace(10.0, 100.0, 24)).reshape(2, 3, 4, 3)
    s, v, w = curve.from_world(points)
    assert s.shape == v.shape == w.shape == (2, 3, 4)
    assert curve.to_world(s, v, w).shape == (2, 3, 4, 3)


@settings(max_examples=30, deadline=None)
@given(spine=spines, seed=st.integers(0, 2**32 - 1))
def test_grid_round_trip(spine: SineSpine, seed: int) -> None:
    curve = spine.curve()
    grid = StraightenedGrid(
        n_s=200, n_v=64, n_w=7, step_s_mm=0.8, spacing_v_mm=0.75, spacing_w_mm=1.5, s0_mm=30.0
    )
    rng = np.random.default_rng(seed)
    index = rng.uniform([0, 0, 0], [grid.n_s - 1, grid.n_v - 1, grid.n_w - 1], (300, 3))
    world = grid_to_world(curve, grid, index)
    np.testing.assert_allclose(
        grid_to_world(curve, grid, world_to_grid(curve, grid, world)), world, atol=1e-6
    )
    reach = min_radius_of_curvature(curve)
    if 0.6 * reach > np.hypot(32 * 0.75, 3 * 1.5):
        np.testing.assert_allclose(world_to_grid(curve, grid, world), index, atol=ROUND_TRIP_MM / 0.75)


def test_grid_centre_lies_on_the_curve() -> None:
    curve = SineSpine().curve()
    grid = StraightenedGrid(n_s=50, n_v=96, n_w=5, step_s_mm=2.0, s0_mm=10.0)
    assert (grid.center_v, grid.center_w) == (47.5, 2.0)
    rows = np.arange(50.0)
    on_curve = sagittal_to_world(curve, grid, np.column_stack([rows, np.full(50, grid.center_v)]))
    np.testing.assert_allclose(on_curve, curve.position(10.0 + 2.0 * rows), atol=1e-12)
    index = np.array([[3.0, grid.center_v + 4.0, grid.center_w - 1.0]])
    frame = curve.frame(np.array([16.0]))[0]
    expected = curve.position(np.array([16.0]))[0] + 4.0 * frame[1] - 1.0 * frame[2]
    np.testing.assert_allclose(grid_to_world(curve, grid, index)[0], expected, atol=1e-12)


def test_grid_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_v"):
        StraightenedGrid(n_s=10, n_v=0, n_w=5)
    with pytest.raises(ValueError, match="spacing_w_mm"):
        StraightenedGrid(n_s=10, n_v=10, n_w=5, spacing_w_mm=-1.0)
