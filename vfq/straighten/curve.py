"""The spine curve: an arc-length parameterised centre line with a twist-free local frame.

Frames and units (see :mod:`vfq.volume`): positions are **world** LPS mm ``(x, y, z)``; the arc
length ``s`` is in mm from the curve's first (most inferior) sample. The curve runs
inferior→superior: ``s`` grows towards the head.

The local frame at ``s`` (rows of :meth:`SpineCurve.frame`):

* ``e1`` — unit tangent, pointing superior (increasing ``s``);
* ``e2 = normalize(e1 × x̂)`` with ``x̂ = (1, 0, 0)`` the world L axis: ``e2`` has no x component,
  so it lies in the patient's sagittal plane; for a vertical spine it is **posterior** (+y);
* ``e3 = e2 × e1``: for a vertical spine it is **left** (+x).

For a straight vertical spine ``(e1, e2, e3) = (S, P, L)``, i.e. the CT array axes ``(z, y, x)``.
Keeping ``e2`` in the sagittal plane is what stops the straightened image from twisting under
scoliosis. The frame is undefined for a tangent parallel to x̂ (a column running left-right);
such curves are refused.

Between samples the curve is interpolated so that the frame stays exactly orthonormal:
``c(s)`` linear between samples, ``e1(s)`` the normalised linear interpolation of the sample
tangents, ``e2(s)``, ``e3(s)`` recomputed from ``e1(s)``. Outside ``[0, length_mm]`` the curve
continues as a straight line along its end tangent with the end frame, so that every world point
has local coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vfq.errors import InputError

#: Smallest allowed ``sqrt(e1_y² + e1_z²)`` (sine of the angle between tangent and world x axis).
MIN_SAGITTAL_NORM = 0.1
#: Relative tolerance on the spacing of consecutive samples against ``step_mm``.
STEP_TOLERANCE = 0.05
#: Number of (point, sample) pairs handled at once by :meth:`SpineCurve.from_world`.
_CHUNK_PAIRS = 1 << 20


def frame_from_tangent(e1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(e2, e3)`` of the twist-free frame for unit tangents ``e1`` ``(..., 3)`` (world LPS).

    ``e2 = normalize(e1 × x̂)`` (zero x component), ``e3 = e2 × e1``. The caller guarantees that
    ``e1`` is not parallel to x̂ (checked once per curve, see :data:`MIN_SAGITTAL_NORM`).
    """
    e1 = np.asarray(e1, dtype=np.float64)
    norm = np.sqrt(e1[..., 1] ** 2 + e1[..., 2] ** 2)
    norm = np.maximum(norm, np.finfo(np.float64).tiny)
    e2 = np.stack([np.zeros_like(norm), e1[..., 2] / norm, -e1[..., 1] / norm], axis=-1)
    e3 = np.cross(e2, e1)
    return e2, e3


def _check_sagittal(tangents: np.ndarray) -> None:
    norm = np.sqrt(tangents[:, 1] ** 2 + tangents[:, 2] ** 2)
    bad = np.flatnonzero(norm < MIN_SAGITTAL_NORM)
    if bad.size:
        k = int(bad[0])
        raise InputError(
            f"the spine curve's tangent is (nearly) parallel to the world left-right axis at sample {k} "
            f"(tangent {tangents[k].round(3).tolist()}); the sagittal frame is undefined there. "
            "Expected a column running inferior→superior; check the orientation (LPS) of the input."
        )


@dataclass(frozen=True, eq=False)
class SpineCurve:
    """A spine centre line sampled at equal arc-length steps, inferior→superior.

    Attributes:
        positions: ``(K, 3)`` world LPS mm ``(x, y, z)`` of the samples; sample ``k`` lies at arc
            length ``s_k = k * step_mm`` (mm) from the first, most inferior sample.
        tangents: ``(K, 3)`` unit tangents ``e1`` at the samples (world, dimensionless), pointing
            superior. Normalised on construction.
        step_mm: arc-length step between samples (mm).

    Build one with :meth:`from_polyline` (or :func:`vfq.straighten.fit_spine_curve`); the direct
    constructor checks but does not resample.
    """

    positions: np.ndarray
    tangents: np.ndarray
    step_mm: float
    _e2: np.ndarray = field(init=False, repr=False)
    _e3: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        positions = np.array(self.positions, dtype=np.float64)
        tangents = np.array(self.tangents, dtype=np.float64)
        step = float(self.step_mm)
        if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] < 2:
            raise InputError(f"positions must have shape (K >= 2, 3), got {positions.shape}")
        if tangents.shape != positions.shape:
            raise InputError(
                f"tangents must have the shape of positions {positions.shape}, got {tangents.shape}"
            )
        if not (np.isfinite(step) and step > 0):
            raise InputError(f"step_mm must be positive and finite, got {self.step_mm}")
        if not (np.isfinite(positions).all() and np.isfinite(tangents).all()):
            raise InputError("positions and tangents must be finite")
        norms = np.linalg.norm(tangents, axis=1)
        if (norms <= 0).any():
            raise InputError("tangents must be non-zero")
        tangents = tangents / norms[:, None]
        chords = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        if np.abs(chords - step).max() > STEP_TOLERANCE * step:
            raise InputError(
                f"samples must be {step} mm apart along the curve (±{STEP_TOLERANCE:.0%}), got chords "
                f"{chords.min():.3f}..{chords.max():.3f} mm; build the curve with SpineCurve.from_polyline"
            )
        _check_sagittal(tangents)
        e2, e3 = frame_from_tangent(tangents)
        for name, value in (("positions", positions), ("tangents", tangents), ("_e2", e2), ("_e3", e3)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "step_mm", step)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_polyline(cls, points_world: np.ndarray, step_mm: float = 1.0) -> SpineCurve:
        """Resample a dense polyline at equal arc-length steps.

        Args:
            points_world: ``(M, 3)`` world LPS mm ``(x, y, z)``, ordered inferior→superior and dense
                enough (≲ 0.5 mm apart) that its chords follow the curve.
            step_mm: arc-length step (mm) of the result. The last sample is the last whole step;
                at most one step of the polyline's superior end is dropped.

        Returns:
            The curve, tangents by central differences of the resampled positions.

        Raises:
            InputError: fewer than two distinct points, a polyline running superior→inferior or
                shorter than two steps, or a tangent parallel to the world x axis.
        """
        points = np.asarray(points_world, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise InputError(f"points_world must have shape (M, 3), got {points.shape}")
        if not np.isfinite(points).all():
            raise InputError("points_world must be finite")
        step = float(step_mm)
        if not (np.isfinite(step) and step > 0):
            raise InputError(f"step_mm must be positive and finite, got {step_mm}")
        chords = np.linalg.norm(np.diff(points, axis=0), axis=1)
        keep = np.concatenate([[True], chords > 1e-9])
        points = points[keep]
        if points.shape[0] < 2:
            raise InputError("a spine curve needs at least two distinct points")
        if points[-1, 2] <= points[0, 2]:
            raise InputError(
                f"the polyline must run inferior→superior (world z increasing), got z from "
                f"{points[0, 2]:.1f} to {points[-1, 2]:.1f} mm; reverse it or check the LPS orientation"
            )
        cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        n_samples = int(np.floor(cumulative[-1] / step + 1e-9)) + 1
        if n_samples < 3:
            raise InputError(
                f"the polyline is {cumulative[-1]:.1f} mm long, shorter than two steps of {step} mm"
            )
        s = np.arange(n_samples) * step
        positions = np.stack([np.interp(s, cumulative, points[:, j]) for j in range(3)], axis=1)
        tangents = np.gradient(positions, axis=0)
        return cls(positions=positions, tangents=tangents, step_mm=step)

    # ------------------------------------------------------------------ properties
    @property
    def n_samples(self) -> int:
        """Number of samples ``K``."""
        return int(self.positions.shape[0])

    @property
    def length_mm(self) -> float:
        """Arc length (mm) from the first to the last sample."""
        return (self.n_samples - 1) * self.step_mm

    @property
    def arc_length_mm(self) -> np.ndarray:
        """``(K,)`` arc length (mm) of each sample, ``k * step_mm``."""
        return np.arange(self.n_samples) * self.step_mm

    @property
    def frames(self) -> np.ndarray:
        """``(K, 3, 3)`` frames at the samples; row 0, 1, 2 = ``e1, e2, e3`` (world unit vectors)."""
        return np.stack([self.tangents, self._e2, self._e3], axis=1)

    # ------------------------------------------------------------------ interpolation
    def _locate(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = s / self.step_mm
        k = np.clip(np.floor(u), 0, self.n_samples - 2).astype(np.intp)
        return k, u - k

    def position(self, s_mm: np.ndarray | float) -> np.ndarray:
        """World LPS mm ``(..., 3)`` of the curve at arc lengths ``s_mm`` ``(...)``.

        Linear between samples; beyond the ends, the straight continuation along the end tangent.
        """
        s = np.asarray(s_mm, dtype=np.float64)
        k, t = self._locate(s)
        c = self.positions
        pos = c[k] + t[..., None] * (c[k + 1] - c[k])
        below = (s < 0)[..., None]
        above = (s > self.length_mm)[..., None]
        pos = np.where(below, c[0] + s[..., None] * self.tangents[0], pos)
        pos = np.where(above, c[-1] + (s - self.length_mm)[..., None] * self.tangents[-1], pos)
        return pos

    def tangent(self, s_mm: np.ndarray | float) -> np.ndarray:
        """Unit tangent ``e1`` ``(..., 3)`` at ``s_mm``: normalised linear interpolation of the samples'."""
        s = np.asarray(s_mm, dtype=np.float64)
        k, t = self._locate(np.clip(s, 0.0, self.length_mm))
        e = self.tangents
        e1 = e[k] + t[..., None] * (e[k + 1] - e[k])
        return e1 / np.linalg.norm(e1, axis=-1, keepdims=True)

    def frame(self, s_mm: np.ndarray | float) -> np.ndarray:
        """Orthonormal frames ``(..., 3, 3)`` at ``s_mm``; row 0, 1, 2 = ``e1, e2, e3`` (world)."""
        e1 = self.tangent(s_mm)
        e2, e3 = frame_from_tangent(e1)
        return np.stack([e1, e2, e3], axis=-2)

    # ------------------------------------------------------------------ point mapping
    def to_world(
        self, s_mm: np.ndarray | float, v_mm: np.ndarray | float, w_mm: np.ndarray | float
    ) -> np.ndarray:
        """World LPS mm ``(..., 3)`` of curve-local coordinates (mm, broadcast together).

        ``p = c(s) + v·e2(s) + w·e3(s)``: ``v`` along ``e2`` (posterior for a vertical spine),
        ``w`` along ``e3`` (left).
        """
        s, v, w = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (s_mm, v_mm, w_mm)))
        frame = self.frame(s)
        return self.position(s) + v[..., None] * frame[..., 1, :] + w[..., None] * frame[..., 2, :]

    def from_world(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Curve-local ``(s, v, w)`` (mm, each ``(...)``) of world LPS mm points ``(..., 3)``.

        ``s`` solves ``(p - c(s))·e1(s) = 0`` (``p`` lies in the normal plane at ``s``); among
        several solutions, the one whose curve point is nearest to ``p``. On a segment between
        samples the condition is a quadratic in the segment parameter and is solved in closed
        form, so the round trip with :meth:`to_world` is exact to rounding. ``v``, ``w`` are the
        projections of ``p - c(s)`` on ``e2(s)``, ``e3(s)``.

        The map is one-to-one only within the curve's radius of curvature; farther out
        ``to_world(from_world(p)) == p`` still holds, the reverse may not.
        """
        p = np.asarray(points_world, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise InputError(f"points_world must have shape (..., 3), got {p.shape}")
        shape = p.shape[:-1]
        flat = p.reshape(-1, 3)
        s = np.empty(flat.shape[0])
        chunk = max(1, _CHUNK_PAIRS // self.n_samples)
        for start in range(0, flat.shape[0], chunk):
            s[start : start + chunk] = self._solve_s(flat[start : start + chunk])
        frame = self.frame(s)
        d = flat - self.position(s)
        v = np.einsum("nj,nj->n", d, frame[:, 1])
        w = np.einsum("nj,nj->n", d, frame[:, 2])
        return s.reshape(shape), v.reshape(shape), w.reshape(shape)

    def _solve_s(self, p: np.ndarray) -> np.ndarray:
        """Arc length of the normal plane through each point ``(m, 3)`` nearest to the curve."""
        c, e1 = self.positions, self.tangents
        m = p.shape[0]
        rows = np.arange(m)
        # (p - c_k)·e1_k, as one matrix product; it decreases through a nearest-point root
        f = p @ e1.T - np.einsum("kj,kj->k", c, e1)  # (m, K)

        # interior roots: a + to - sign change on segment k (a distance minimum, not a maximum);
        # of several, the segment nearest to the point
        rows_b, k_b = np.nonzero((f[:, :-1] >= 0) & (f[:, 1:] < 0))
        near = np.minimum(
            np.einsum("nj,nj->n", p[rows_b] - c[k_b], p[rows_b] - c[k_b]),
            np.einsum("nj,nj->n", p[rows_b] - c[k_b + 1], p[rows_b] - c[k_b + 1]),
        )
        order = np.lexsort((near, rows_b))  # by point, then by distance
        rows_b, k_b = rows_b[order], k_b[order]
        first = np.ones(rows_b.size, dtype=bool)
        first[1:] = rows_b[1:] != rows_b[:-1]
        k = np.zeros(m, dtype=np.intp)
        has_interior = np.zeros(m, dtype=bool)
        k[rows_b[first]] = k_b[first]
        has_interior[rows_b[first]] = True
        s_interior = (k + self._segment_root(p, k)) * self.step_mm
        dist_interior = np.where(has_interior, np.linalg.norm(p - self.position(s_interior), axis=1), np.inf)

        # roots on the straight continuations beyond either end
        f0, f_end = f[:, 0], f[:, -1]
        s_below = f0  # s = 0 + (p - c_0)·e1_0, valid if negative
        dist2_0 = np.einsum("nj,nj->n", p - c[0], p - c[0])
        dist_below = np.where(f0 < 0, np.sqrt(np.maximum(dist2_0 - f0**2, 0.0)), np.inf)
        s_above = self.length_mm + f_end
        dist2_end = np.einsum("nj,nj->n", p - c[-1], p - c[-1])
        dist_above = np.where(f_end >= 0, np.sqrt(np.maximum(dist2_end - f_end**2, 0.0)), np.inf)

        candidates = np.stack([s_interior, s_below, s_above], axis=1)
        distances = np.stack([dist_interior, dist_below, dist_above], axis=1)
        return candidates[rows, np.argmin(distances, axis=1)]

    def _segment_root(self, p: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Parameter ``t ∈ [0, 1]`` on segment ``k`` where ``(p - c(t))·(e1_k + t Δe) = 0``.

        With ``d = p - c_k``: ``g(t) = d·a + t (d·Δe - Δc·a) - t² Δc·Δe`` (``a = e1_k``), which has
        exactly one root in ``[0, 1]`` when ``g(0) ≥ 0 > g(1)``.
        """
        c, e = self.positions, self.tangents
        d = p - c[k]
        a = e[k]
        dc = c[k + 1] - c[k]
        de = e[k + 1] - e[k]
        qa = -np.einsum("nj,nj->n", dc, de)
        qb = np.einsum("nj,nj->n", d, de) - np.einsum("nj,nj->n", dc, a)
        qc = np.einsum("nj,nj->n", d, a)
        with np.errstate(all="ignore"):
            disc = np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))
            q = -0.5 * (qb + np.copysign(disc, qb))
            t_small = qc / q  # the root that stays finite as qa -> 0
            t_large = q / qa
            g1 = qa + qb + qc
            t_secant = qc / (qc - g1)
        eps = 1e-9
        t = np.where((t_small >= -eps) & (t_small <= 1 + eps), t_small, t_large)
        t = np.where((t >= -eps) & (t <= 1 + eps), t, t_secant)
        t = np.where(np.isfinite(t), t, 0.0)
        return np.clip(t, 0.0, 1.0)
