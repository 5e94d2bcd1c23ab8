"""SpineCurve: arc-length sampling and the twist-free (e1, e2, e3) frame."""

from __future__ import annotations

import numpy as np
import pytest
from straighten_factories import SineSpine

from vfq.errors import InputError
from vfq.straighten import SpineCurve


def _vertical(z0: float = -100.0, z1: float = 100.0, x: float = 3.0, y: float = -7.0) -> SpineCurve:
    z = np.linspace(z0, z1, 801)
    return SpineCurve.from_polyline(np.column_stack([np.full_like(z, x), np.full_like(z, y), z]), 1.0)


def test_straight_vertical_frame_is_superior_posterior_left() -> None:
    curve = _vertical()
    s = np.concatenate([curve.arc_length_mm, np.linspace(-20.0, curve.length_mm + 20.0, 333)])
    frame = curve.frame(s)
    np.testing.assert_allclose(frame[:, 0], np.broadcast_to([0.0, 0.0, 1.0], (s.size, 3)), atol=1e-12)  # S
    np.testing.assert_allclose(frame[:, 1], np.broadcast_to([0.0, 1.0, 0.0], (s.size, 3)), atol=1e-12)  # P
    np.testing.assert_allclose(frame[:, 2], np.broadcast_to([1.0, 0.0, 0.0], (s.size, 3)), atol=1e-12)  # L
    np.testing.assert_allclose(curve.frames, frame[: curve.n_samples], atol=1e-15)


def test_straight_vertical_positions_follow_arc_length() -> None:
    curve = _vertical(z0=-100.0, z1=100.0)
    assert curve.n_samples == 201
    assert curve.length_mm == pytest.approx(200.0)
    np.testing.assert_allclose(curve.positions[:, 2], -100.0 + np.arange(201.0), atol=1e-9)
    np.testing.assert_allclose(curve.position(np.array([-5.0, 12.25, 205.0]))[:, 2], [-105.0, -87.75, 105.0])


@pytest.mark.parametrize(
    "spine",
    [
        SineSpine(ax=60.0, kx=2.0, ay=30.0, ky=3.0, length=300.0),  # strong S-scoliosis + kyphosis
        SineSpine(ax=45.0, kx=1.0, ay=35.0, ky=2.0, phy=0.7, length=350.0),
    ],
)
def test_frame_orthonormal_and_sagittal_everywhere(spine: SineSpine) -> None:
    curve = spine.curve()
    s = np.linspace(-30.0, curve.length_mm + 30.0, 4001)
    frame = curve.frame(s)
    gram = np.einsum("nij,nkj->nik", frame, frame)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-12)
    assert np.all(frame[:, 1, 0] == 0.0)  # e2 in the sagittal plane: exactly no x component
    assert np.all(frame[:, 1, 1] > 0.5)  # and posterior-facing for a column running up
    # e3 = e2 × e1
    np.testing.assert_allclose(frame[:, 2], np.cross(frame[:, 1], frame[:, 0]), atol=1e-12)


def test_frame_does_not_twist_under_pure_scoliosis() -> None:
    """A column bending only in the coronal plane keeps e2 = +y (posterior) exactly."""
    curve = SineSpine(ax=60.0, kx=2.0, ay=0.0, length=300.0).curve()
    frame = curve.frame(np.linspace(0.0, curve.length_mm, 1001))
    np.testing.assert_allclose(frame[:, 1], np.broadcast_to([0.0, 1.0, 0.0], (1001, 3)), atol=1e-12)
    assert np.abs(frame[:, 0, 0]).max() > 0.5  # the tangent did tilt a lot


def test_tangent_follows_the_curve() -> None:
    curve = SineSpine(ax=40.0, kx=2.0, ay=25.0, ky=1.0).curve(step_mm=1.0)
    s = np.linspace(5.0, curve.length_mm - 5.0, 500)
    h = 0.5
    chord = curve.position(s + h) - curve.position(s - h)
    chord /= np.linalg.norm(chord, axis=1, keepdims=True)
    cosine = np.einsum("nj,nj->n", chord, curve.tangent(s))
    assert cosine.min() > 1 - 1e-4


def test_from_polyline_is_equidistant_and_keeps_the_length() -> None:
    spine = SineSpine(ax=40.0, kx=2.0, ay=25.0)
    dense = spine.polyline(spacing_mm=0.01)
    true_length = np.linalg.norm(np.diff(dense, axis=0), axis=1).sum()
    curve = spine.curve(step_mm=2.0)
    chords = np.linalg.norm(np.diff(curve.positions, axis=0), axis=1)
    np.testing.assert_allclose(chords, 2.0, rtol=2e-3)
    assert true_length - 2.0 < curve.length_mm <= true_length + 0.01
    assert np.all(np.diff(curve.positions[:, 2]) > 0)  # inferior→superior


def test_refuses_a_tangent_parallel_to_the_left_right_axis() -> None:
    x = np.linspace(0.0, 100.0, 401)
    points = np.column_stack([x, np.zeros_like(x), 0.02 * x])  # runs left-right, barely rising
    with pytest.raises(InputError, match="parallel to the world left-right axis"):
        SpineCurve.from_polyline(points, 1.0)


def test_refuses_a_polyline_running_superior_to_inferior() -> None:
    z = np.linspace(100.0, 0.0, 201)
    with pytest.raises(InputError, match="inferior→superior"):
        SpineCurve.from_polyline(np.column_stack([np.zeros_like(z), np.zeros_like(z), z]), 1.0)


def test_constructor_refuses_unequal_steps() -> None:
    z = np.array([0.0, 1.0, 3.0, 4.0])
    positions = np.column_stack([np.zeros(4), np.zeros(4), z])
    tangents = np.tile([0.0, 0.0, 1.0], (4, 1))
    with pytest.raises(InputError, match="apart along the curve"):
        SpineCurve(positions=positions, tangents=tangents, step_mm=1.0)


def test_curve_arrays_are_read_only() -> None:
    curve = _vertical()
    with pytest.raises(ValueError, match="read-only"):
        curve.positions[0, 0] = 1.0
