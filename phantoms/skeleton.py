"""Painting the bones of a phantom: vertebral bodies, discs, posterior elements, ribs, sternum, pelvis.

Shapes are analytic (world LPS mm), composited onto a :class:`~phantoms.canvas.Canvas` inside
their bounding boxes. Vertebral bodies have a cortical shell (and dense endplates) around a
cancellous core whose HU follows the simulated bone density.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from vfq.phantoms.anatomy import RIB_LEVELS, Spine, Vertebra
from vfq.phantoms.canvas import Canvas, capsule, ellipsoid
from vfq.phantoms.torso import Torso

DISC_HU = (75.0, 105.0)
#: VerSe label of the sacrum in label maps.
SACRUM_LABEL = 26


def paint_skeleton(canvas: Canvas, spine: Spine, torso: Torso, rng: np.random.Generator) -> None:
    """Paint pelvis, discs, vertebrae (body + posterior elements), ribs and sternum, in that order:
    later shapes cover earlier ones, so the bodies keep exact endplates against discs and sacrum."""
    cortical = float(rng.uniform(500, 1000))
    _paint_pelvis(canvas, spine, torso, cortical, rng)
    column = (*spine.vertebrae, spine.sacrum)
    for upper, lower in itertools.pairwise(column):
        _paint_disc(canvas, upper, lower, float(rng.uniform(*DISC_HU)))
    for v in spine.vertebrae:
        shell_hu = cortical * (0.75 + 0.25 * v.density / 240.0)
        _paint_posterior_elements(canvas, v, shell_hu)
        if v.level in RIB_LEVELS:
            for side in (-1.0, 1.0):
                _paint_rib(canvas, v, side, torso, shell_hu, rng)
        _paint_body(canvas, v, shell_hu, _Trabecular.sample(rng), label=v.level.verse_label)
    _paint_body(canvas, spine.sacrum, cortical * 0.8, _Trabecular.sample(rng), label=SACRUM_LABEL)
    _paint_sternum(canvas, spine, torso, cortical)


def _local_coordinates(v: Vertebra, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, ...]:
    c = v.center.astype(np.float32)
    px, py, pz = X - c[0], Y - c[1], Z - c[2]
    u = px * np.float32(v.axis[0]) + py * np.float32(v.axis[1]) + pz * np.float32(v.axis[2])
    a = -(px * np.float32(v.posterior[0]) + py * np.float32(v.posterior[1]) + pz * np.float32(v.posterior[2]))
    l = px * np.float32(v.left[0]) + py * np.float32(v.left[1]) + pz * np.float32(v.left[2])  # noqa: E741
    return u, a, l


@dataclass(frozen=True)
class _Trabecular:
    """Texture of cancellous bone: two crossed fine waves and one coarse one (relative HU change)."""

    waves: np.ndarray  # (3, 3) wave vectors, rad/mm
    phases: np.ndarray  # (3,)
    amplitude: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Trabecular:
        directions = rng.normal(size=(3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        periods = np.array([rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5), rng.uniform(6.0, 12.0)])
        return cls(
            (directions * (2 * np.pi / periods)[:, None]).astype(np.float32),
            rng.uniform(0, 2 * np.pi, 3).astype(np.float32),
            float(rng.uniform(0.12, 0.3)),
        )

    def __call__(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        k, p = self.waves, self.phases
        fine = np.cos(X * k[0, 0] + Y * k[0, 1] + Z * k[0, 2] + p[0]) * np.cos(
            X * k[1, 0] + Y * k[1, 1] + Z * k[1, 2] + p[1]
        )
        coarse = np.cos(X * k[2, 0] + Y * k[2, 1] + Z * k[2, 2] + p[2])
        return np.float32(self.amplitude) * (0.7 * fine + 0.3 * coarse)


def _paint_body(canvas: Canvas, v: Vertebra, shell_hu: float, texture: _Trabecular, label: int) -> None:
    r, rl = v.depth / 2, v.width / 2
    shell = 1.0 if v.density > 120 else 0.7  # osteoporotic cortices are thinner

    def shape(X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, a, l = _local_coordinates(v, X, Y, Z)  # noqa: E741
        an, ln2 = a * np.float32(1 / r), (l * np.float32(1 / rl)) ** 2
        # Rounded front, flatter back (the posterior wall of a real body is nearly straight).
        q = np.where(a > 0, an**2 + ln2, an**4 + ln2)
        d_radial = (np.sqrt(q) - 1) * np.float32(min(r, rl))
        upper, lower = v.endplates(a, l)
        d = np.maximum(d_radial, np.maximum(u - upper, lower - u).astype(np.float32))
        weight = np.clip(d * np.float32(1 / shell) + 1, 0, 1)
        core = np.float32(v.density) * (1 + texture(X, Y, Z))
        return d, core + (np.float32(shell_hu) - core) * weight

    reach = float(np.sqrt(r**2 + rl**2 + (max(v.heights) / 2) ** 2)) + 2.0
    canvas.paint(v.center - reach, v.center + reach, shape, label=label)


def _paint_disc(canvas: Canvas, upper: Vertebra, lower: Vertebra, hu: float) -> None:
    """The space between two bodies: below the upper body's mid-plane, above the lower one's,
    within the mean outline. The bodies painted later cover their own halves, so the disc fills
    the intervertebral space exactly, whatever the angle between the two bodies."""
    mid = (upper.center + lower.center) / 2
    axis = upper.center - lower.center
    axis /= np.linalg.norm(axis)
    posterior = (upper.posterior + lower.posterior) / 2
    posterior -= (posterior @ axis) * axis
    posterior /= np.linalg.norm(posterior)
    left = np.cross(posterior, axis)
    r = (upper.depth + lower.depth) / 4 + 0.5
    rl = (upper.width + lower.width) / 4 + 0.5
    frame = np.stack([posterior, left]).astype(np.float32)
    m = mid.astype(np.float32)
    c_up, c_lo = upper.center.astype(np.float32), lower.center.astype(np.float32)
    ax_up, ax_lo = upper.axis.astype(np.float32), lower.axis.astype(np.float32)

    def shape(X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, float]:
        px, py, pz = X - m[0], Y - m[1], Z - m[2]
        p, l = (px * f[0] + py * f[1] + pz * f[2] for f in frame)  # noqa: E741
        d_radial = (np.sqrt((p / np.float32(r)) ** 2 + (l / np.float32(rl)) ** 2) - 1) * np.float32(
            min(r, rl)
        )
        below_upper = (X - c_up[0]) * ax_up[0] + (Y - c_up[1]) * ax_up[1] + (Z - c_up[2]) * ax_up[2]
        above_lower = (X - c_lo[0]) * ax_lo[0] + (Y - c_lo[1]) * ax_lo[1] + (Z - c_lo[2]) * ax_lo[2]
        return np.maximum(d_radial, np.maximum(below_upper, -above_lower)), hu

    reach = float(np.sqrt(r**2 + rl**2 + (np.linalg.norm(upper.center - lower.center) / 2) ** 2)) + 2.0
    canvas.paint(mid - reach, mid + reach, shape)


def _bone_capsule(
    canvas: Canvas,
    a: np.ndarray,
    b: np.ndarray,
    radius: float,
    shell_hu: float,
    core_hu: float = 220.0,
    label: int = 0,
) -> None:
    lo, hi, shape = capsule(a, b, radius, value=core_hu, shell=1.2, shell_value=shell_hu)
    canvas.paint(lo, hi, shape, label=label)


def _paint_posterior_elements(canvas: Canvas, v: Vertebra, shell_hu: float) -> None:
    """Pedicles, laminae, articular pillars, transverse and spinous processes (local frame)."""
    h, r = v.heights[2], v.depth / 2
    region = v.level.region
    canal_w = 0.5 * v.width + 4.0
    canal_d = 16.0 if region != "lumbar" else 18.0
    radius = {"cervical": 2.5, "thoracic": 3.5, "lumbar": 4.5}[region]
    arch = -r - 0.6 * canal_d  # local 'a' where pedicles meet the laminae
    back = -r - canal_d - 3.0  # local 'a' of the spinous process base
    spin_len, spin_drop = {"cervical": (18.0, 6.0), "thoracic": (30.0, 24.0), "lumbar": (28.0, 5.0)}[region]
    tp_len, tp_back = {"cervical": (10.0, 0.0), "thoracic": (22.0, 9.0), "lumbar": (28.0, 2.0)}[region]
    if v.level.value == "C7":
        spin_len = 34.0
    world = v.to_world
    label = v.level.verse_label
    for side in (-1.0, 1.0):
        lat = side * (canal_w / 2 + radius * 0.6)
        pedicle_start = world(0.15 * h, -r + 3.0, side * 0.32 * v.width)
        pedicle_end = world(0.1 * h, arch, lat)
        _bone_capsule(canvas, pedicle_start, pedicle_end, radius, shell_hu, label=label)
        _bone_capsule(canvas, pedicle_end, world(-0.1 * h, back, 0.0), radius * 0.75, shell_hu, label=label)
        _bone_capsule(
            canvas,
            world(-h / 2 - 2.0, arch - 2.0, lat * 1.15),
            world(h / 2 + 2.0, arch - 2.0, lat * 1.15),
            radius * 0.9,
            shell_hu,
            label=label,
        )
        _bone_capsule(
            canvas,
            world(0.1 * h, arch, lat),
            world(0.1 * h + 2.0, arch - tp_back, lat + side * tp_len),
            radius * 0.8,
            shell_hu,
            label=label,
        )
    _bone_capsule(
        canvas,
        world(-0.1 * h, back, 0.0),
        world(-0.1 * h - spin_drop, back - spin_len, 0.0),
        radius * 0.8,
        shell_hu,
        label=label,
    )


def _paint_rib(
    canvas: Canvas, v: Vertebra, side: float, torso: Torso, shell_hu: float, rng: np.random.Generator
) -> None:
    """A rib from the body's side past the transverse process, round the chest wall, downwards."""
    number = v.level.index - RIB_LEVELS[0].index + 1  # 1…12
    h, r = v.heights[2], v.depth / 2
    head = v.to_world(0.35 * h, -r + 4.0, side * (v.width / 2 + 1.0))
    tubercle = v.to_world(0.2 * h, -r - 18.0, side * (0.25 * v.width + 26.0))
    z0 = float(tubercle[2])
    cx, cy, ax, ay = torso.section(z0)
    inset = torso.wall_thickness + 6.0
    ax_r, ay_r = max(ax - inset, 40.0), max(ay - inset, 30.0)
    psi0 = np.arcsin(np.clip((tubercle[0] - cx) * side / ax_r, 0.05, 0.9))
    psi_end = np.radians(
        {1: 150, 2: 160, 11: 100, 12: 80}.get(number, 165 if number <= 7 else 140 - 6 * (number - 8))
    )
    drop = {1: 20.0, 2: 35.0}.get(number, 70.0 if number <= 10 else 40.0) * rng.uniform(0.85, 1.15)
    psi = np.linspace(psi0, psi_end, 9)
    t = (psi - psi0) / (psi_end - psi0)
    path = np.stack([cx + side * ax_r * np.sin(psi), cy + ay_r * np.cos(psi), z0 - drop * t**1.3], axis=1)
    points = np.concatenate([head[None], tubercle[None], path[1:]])
    radius = 3.0 if number in (1, 12) else 4.0
    for a, b in itertools.pairwise(points):
        _bone_capsule(canvas, a, b, radius, shell_hu, core_hu=200.0)
    if number <= 7:  # costal cartilage to the sternum
        end = np.array([cx + side * 14.0, cy - ay + torso.wall_thickness + 8.0, path[-1, 2] - 8.0])
        lo, hi, shape = capsule(path[-1], end, radius * 0.9, value=130.0)
        canvas.paint(lo, hi, shape)


def _paint_sternum(canvas: Canvas, spine: Spine, torso: Torso, cortical: float) -> None:
    top, bottom = spine.level_z(spine.vertebrae[6].level) - 10.0, spine.level_z(spine.vertebrae[13].level)
    for z_a, z_b in ((top, (top + bottom) / 2), ((top + bottom) / 2, bottom)):
        cx_a, cy_a, _, ay_a = torso.section(z_a)
        cx_b, cy_b, _, ay_b = torso.section(z_b)
        a = np.array([cx_a, cy_a - ay_a + torso.wall_thickness + 8.0, z_a])
        b = np.array([cx_b, cy_b - ay_b + torso.wall_thickness + 8.0, z_b])
        lo, hi, shape = capsule(a, b, 7.0, value=180.0, shell=1.2, shell_value=cortical * 0.8)
        canvas.paint(lo, hi, shape)


def _paint_pelvis(
    canvas: Canvas, spine: Spine, torso: Torso, cortical: float, rng: np.random.Generator
) -> None:
    """Sacrum (S1 body and the tapering sacral mass), iliac wings, femoral heads."""
    s1 = spine.sacrum
    axis, posterior = s1.axis, s1.posterior
    core = float(rng.uniform(150, 230))
    # Sacral mass below the S1 body, curving posteriorly as it descends.
    points = [s1.center - axis * (s1.heights[2] / 2 - 2.0)]
    for k in range(1, 6):
        step = -axis * 22.0 + posterior * (3.0 + 2.5 * k)
        points.append(points[-1] + step)
    radii = [22.0, 18.0, 14.0, 10.0, 7.0]
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        lo, hi, shape = capsule(a, b, radii[i], value=core, shell=1.5, shell_value=cortical)
        canvas.paint(lo, hi, shape, label=SACRUM_LABEL)
    s1_centre = s1.center
    cx, cy, ax, ay = torso.section(float(s1_centre[2]))
    for side in (-1.0, 1.0):
        # Sacral ala to the sacro-iliac joint.
        joint = s1_centre + np.array([side * 42.0, 12.0, 0.0])
        lo, hi, shape = capsule(s1_centre, joint, 15.0, value=core, shell=1.5, shell_value=cortical)
        canvas.paint(lo, hi, shape, label=SACRUM_LABEL)
        # Iliac wing: a thin plate fanning antero-laterally from the joint.
        normal = np.array([side * 0.75, 0.66, 0.0])
        normal /= np.linalg.norm(normal)
        in_plane = np.cross(normal, [0.0, 0.0, 1.0])
        rotation = np.stack([in_plane, np.array([0.0, 0.0, 1.0]), normal], axis=1)
        centre = joint + np.array([side * 30.0, -35.0, 5.0])
        lo, hi, shape = ellipsoid(
            centre,
            np.array([62.0, 50.0, 7.0]),
            value=core,
            rotation=rotation,
            shell=2.0,
            shell_value=cortical,
        )
        canvas.paint(lo, hi, shape)
        head = np.array([cx + side * min(95.0, ax - 45.0), cy - 0.15 * ay, float(s1_centre[2]) - 105.0])
        lo, hi, shape = ellipsoid(
            head, np.array([24.0, 24.0, 24.0]), value=core, shell=2.0, shell_value=cortical
        )
        canvas.paint(lo, hi, shape)
