"""The soft tissues of a phantom: body outline, fat and muscle, lungs, airways, heart, vessels,
abdominal and pelvic organs, the scanner table; with an optional contrast phase.

The torso is an elliptic cross-section varying smoothly along z (neck, chest, abdomen, pelvis)
with the patient's back flat on the table. Everything is in world LPS mm.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

import numpy as np

from vfq.levels import Level
from vfq.phantoms.anatomy import Spine
from vfq.phantoms.canvas import Canvas, capsule, ellipsoid

AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 50.0
SOFT_HU = 25.0


class Contrast(Enum):
    """Contrast phase: HU of blood and enhancing organs."""

    NONE = "none"
    VENOUS = "venous"
    ARTERIAL = "arterial"
    DENSE = "dense"  # CT angiography: vessels and heart chambers up to ~2000 HU

    def blood(self, rng: np.random.Generator) -> tuple[float, float]:
        """HU of arterial and venous blood."""
        if self is Contrast.NONE:
            return 40.0, 40.0
        if self is Contrast.VENOUS:
            return float(rng.uniform(140, 200)), float(rng.uniform(130, 180))
        if self is Contrast.ARTERIAL:
            return float(rng.uniform(250, 450)), float(rng.uniform(80, 140))
        return float(rng.uniform(700, 2000)), float(rng.uniform(150, 400))


@dataclass(frozen=True)
class Torso:
    """Elliptic body cross-sections as functions of world z.

    Attributes:
        z_knots: ascending world z (mm) where the cross-section is given.
        half_width, half_depth: semi-axes (mm) along x and y at ``z_knots``.
        center_x: x of the body's midline at ``z_knots``.
        back_y: world y of the skin of the back at ``z_knots`` (flat on the table below the neck).
        fat: subcutaneous fat thickness (mm); ``wall_thickness`` adds the muscle wall.
    """

    z_knots: np.ndarray
    half_width: np.ndarray
    half_depth: np.ndarray
    center_x: np.ndarray
    back_y: np.ndarray
    fat: float
    muscle: float = 10.0

    @property
    def wall_thickness(self) -> float:
        return self.fat + self.muscle

    def section(self, z: float) -> tuple[float, float, float, float]:
        """``(cx, cy, ax, ay)``: centre and semi-axes (mm) of the cross-section at world z."""
        ax = float(np.interp(z, self.z_knots, self.half_width))
        ay = float(np.interp(z, self.z_knots, self.half_depth))
        cx = float(np.interp(z, self.z_knots, self.center_x))
        return cx, float(np.interp(z, self.z_knots, self.back_y)) - ay, ax, ay

    def sections(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        ax = np.interp(z, self.z_knots, self.half_width)
        ay = np.interp(z, self.z_knots, self.half_depth)
        cx = np.interp(z, self.z_knots, self.center_x)
        return cx, np.interp(z, self.z_knots, self.back_y) - ay, ax, ay


def build_torso(spine: Spine, rng: np.random.Generator) -> Torso:
    """A torso that fits around the spine: neck above C7, chest, abdomen, pelvis."""
    z = {
        lv: spine.level_z(lv)
        for lv in (Level.C3, Level.C7, Level.T1, Level.T4, Level.T8, Level.T12, Level.L3, Level.L5)
    }
    s1 = float(spine.sacrum_top[2])
    girth = rng.uniform(0.85, 1.2)
    chest_w, chest_d = rng.uniform(140, 170) * girth, rng.uniform(95, 120) * girth
    abdo_w, abdo_d = rng.uniform(135, 170) * girth, rng.uniform(100, 135) * girth
    knots = np.array(
        [
            s1 - 250,
            s1 - 60,
            z[Level.L3],
            z[Level.T12],
            z[Level.T8],
            z[Level.T4],
            z[Level.T1] + 10,
            z[Level.C7] + 20,
            z[Level.C3] + 60,
        ]
    )
    half_width = np.array(
        [
            abdo_w * 1.15,
            abdo_w * 1.15,
            abdo_w,
            chest_w * 1.02,
            chest_w,
            chest_w * 0.97,
            chest_w * 0.85,
            65.0,
            60.0,
        ]
    )
    half_depth = np.array(
        [abdo_d * 0.95, abdo_d, abdo_d, chest_d * 1.05, chest_d, chest_d * 0.95, chest_d * 0.8, 60.0, 55.0]
    )
    on_curve = spine.curve[[int(np.argmin(np.abs(spine.curve[:, 2] - k))) for k in knots]]
    base_x = float(np.median(on_curve[:, 0])) + rng.normal(0, 3)
    # The back lies flat on the table behind the spinous processes plus muscle and fat; the neck
    # lifts off it and follows the cervical spine.
    fat = float(rng.uniform(8, 35) * girth)
    table = float(np.max([v.center[1] + v.depth / 2 + 48.0 for v in spine.vertebrae[5:]])) + fat
    back_y = np.full(knots.size, table)
    back_y[-2:] = on_curve[-2:, 1] + 45.0 + min(fat, 15.0)
    return Torso(knots, half_width, half_depth, np.full(knots.size, base_x), back_y, fat)


def paint_body(canvas: Canvas, torso: Torso) -> None:
    """Fill the volume: air outside, skin and fat, muscle wall, soft tissue inside.

    A lookup table on the normalised elliptic radius, slice by slice so that the intermediate
    arrays stay in cache.
    """
    cx, cy, ax, ay = (a.astype(np.float32) for a in torso.sections(canvas.z.astype(np.float64)))
    size = float(np.mean(torso.half_depth))
    inner_fat = (1 - torso.fat / size) ** 2
    inner_muscle = (1 - torso.wall_thickness / size) ** 2
    bins, top = 1024, 1.5
    edges = (np.arange(bins) + 0.5) * (top / bins)
    lut = np.select(
        [edges <= inner_muscle, edges <= inner_fat, edges <= 1.0],
        [SOFT_HU, MUSCLE_HU, FAT_HU],
        default=AIR_HU,
    ).astype(np.float32)
    for k in range(canvas.z.size):
        dx2 = ((canvas.x - cx[k]) * (np.float32(bins / top) ** 0.5 / ax[k])) ** 2
        dy2 = ((canvas.y - cy[k]) * (np.float32(bins / top) ** 0.5 / ay[k])) ** 2
        index = np.minimum(dy2[:, None] + dx2[None, :], bins - 1).astype(np.intp)
        np.take(lut, index, out=canvas.volume[k])


def paint_table(canvas: Canvas, torso: Torso, rng: np.random.Generator) -> None:
    """A carbon-fibre table under the patient's back."""
    top = float(torso.back_y[0]) + rng.uniform(1.0, 6.0)
    rows = (canvas.y >= top) & (canvas.y <= top + 6.0)
    canvas.volume[:, rows, :] = np.float32(rng.uniform(-300, 150))


def paint_organs(
    canvas: Canvas, spine: Spine, torso: Torso, contrast: Contrast, rng: np.random.Generator
) -> None:
    """Lungs, airways, heart, great vessels, liver, spleen, kidneys, stomach, bowel, bladder, muscles."""
    arterial, venous = contrast.blood(rng)
    enhance = 0.0 if contrast is Contrast.NONE else rng.uniform(40, 70)
    v = {x.level: x for x in spine.vertebrae}

    def section(level: Level, dz: float = 0.0) -> tuple[float, float, float, float, float]:
        z = float(v[level].center[2] + dz)
        return (*torso.section(z), z)

    def put(lo_hi_shape: tuple, label: int = 0) -> None:
        lo, hi, shape = lo_hi_shape
        canvas.paint(lo, hi, shape, label=label)

    # Paraspinal and psoas muscles along the column.
    for vert in spine.vertebrae:
        for side in (-1.0, 1.0):
            put(
                ellipsoid(
                    vert.to_world(0.0, -vert.depth / 2 - 38.0, side * 30.0),
                    np.array([24.0, 24.0, 26.0]),
                    MUSCLE_HU,
                )
            )
            if vert.level.region == "lumbar":
                grow = (vert.level.index - Level.L1.index + 1) / 5
                put(
                    ellipsoid(
                        vert.to_world(0.0, 0.0, side * (vert.width / 2 + 8 + 10 * grow)),
                        np.array([8 + 14 * grow, 8 + 12 * grow, 24.0]),
                        MUSCLE_HU,
                    )
                )

    # Lungs, with the liver and stomach shaping their bases later.
    apex = v[Level.T1].center[2] + 30.0
    base = v[Level.T11].center[2] - 10.0
    cx, cy, ax, ay, _ = section(Level.T7)
    lung_hu = float(rng.uniform(-880, -820))
    for side in (-1.0, 1.0):
        centre = np.array([cx + side * 0.45 * ax, cy + 0.1 * ay, (apex + base) / 2])
        put(ellipsoid(centre, np.array([0.36 * ax, 0.72 * ay, (apex - base) / 2]), lung_hu))
    # Airways: trachea to the carina, main bronchi.
    t4 = v[Level.T4]
    carina = t4.to_world(0.0, t4.depth / 2 + 18.0, 0.0)
    top = v[Level.C3].to_world(0.0, v[Level.C3].depth / 2 + 16.0, 0.0)
    put(capsule(top, carina, 9.0, AIR_HU, shell=2.0, shell_value=SOFT_HU))
    for side in (-1.0, 1.0):
        put(
            capsule(
                carina,
                carina + np.array([side * 30.0, 5.0, -25.0]),
                6.0,
                AIR_HU,
                shell=1.5,
                shell_value=SOFT_HU,
            )
        )
    # Heart and great vessels.
    cx, cy, ax, ay, z = section(Level.T8)
    heart = np.array([cx + 0.18 * ax, cy - 0.3 * ay, z])
    put(ellipsoid(heart, np.array([55.0, 45.0, 50.0]), 40.0 + 0.5 * (arterial - 40.0)))
    for side, hu in ((1.0, arterial), (-1.0, venous)):  # left and right heart chambers
        put(ellipsoid(heart + np.array([side * 18.0, 5.0, 0.0]), np.array([22.0, 20.0, 28.0]), hu))
    aorta_radius = float(rng.uniform(11, 15))
    arch = v[Level.T3].to_world(0.0, v[Level.T3].depth / 2 + 30.0, 15.0)
    path = [heart + np.array([-10.0, -15.0, 30.0]), arch]
    for level in (Level.T4, Level.T6, Level.T8, Level.T10, Level.T12, Level.L2, Level.L4):
        vert = v[level]
        path.append(vert.to_world(0.0, vert.depth / 2 + aorta_radius - 2.0, vert.width / 2 - 2.0))
    for a, b in itertools.pairwise(path):
        put(capsule(a, b, aorta_radius, arterial))
    for side in (-1.0, 1.0):
        put(capsule(path[-1], path[-1] + np.array([side * 45.0, -5.0, -70.0]), 7.0, arterial))
    ivc = [
        v[lv].to_world(0.0, v[lv].depth / 2 + 14.0, -v[lv].width / 2 - 4.0)
        for lv in (Level.T11, Level.L1, Level.L4)
    ]
    for a, b in itertools.pairwise(ivc):
        put(capsule(a, b, 11.0, venous))

    # Upper abdomen.
    cx, cy, ax, ay, z = section(Level.T12)
    put(
        ellipsoid(
            [cx - 0.42 * ax, cy - 0.05 * ay, z + 15.0],
            [0.5 * ax, 0.72 * ay, 90.0],
            float(rng.uniform(50, 65) + enhance),
        )
    )  # liver
    put(
        ellipsoid(
            [cx + 0.55 * ax, cy + 0.35 * ay, z + 5.0],
            [0.2 * ax, 0.35 * ay, 50.0],
            float(rng.uniform(40, 55) + enhance),
        )
    )  # spleen
    stomach = np.array([cx + 0.35 * ax, cy - 0.35 * ay, z + 10.0])
    put(ellipsoid(stomach, [0.3 * ax, 0.3 * ay, 55.0], float(rng.uniform(5, 35))))
    put(ellipsoid(stomach + np.array([0.0, -0.12 * ay, 25.0]), [0.2 * ax, 0.12 * ay, 22.0], AIR_HU))
    for side in (-1.0, 1.0):  # kidneys
        l1 = v[Level.L1]
        put(
            ellipsoid(
                l1.to_world(-10.0, -5.0, side * (l1.width / 2 + 42.0)), [28.0, 25.0, 55.0], 30.0 + 3 * enhance
            )
        )
    # Bowel loops: gas, fluid and fat pockets in the anterior abdomen.
    for _ in range(int(rng.integers(10, 25))):
        level = [Level.L1, Level.L2, Level.L3, Level.L4, Level.L5][int(rng.integers(5))]
        cx, cy, ax, ay, z = section(level, rng.uniform(-20, 20))
        angle = rng.uniform(0.6 * np.pi, 2.4 * np.pi)
        radius = np.sqrt(rng.uniform(0.05, 0.5))
        size = rng.uniform(8, 25, size=3)
        front_of_spine = v[level].center[1] - v[level].depth / 2 - 30.0 - size[1]  # retroperitoneum behind
        centre = [
            cx + radius * ax * np.cos(angle),
            min(cy - abs(radius * ay * np.sin(angle)), front_of_spine),
            z,
        ]
        hu = [AIR_HU, float(rng.uniform(0, 40)), FAT_HU][int(rng.integers(3))]
        put(ellipsoid(centre, size, hu))
    # Bladder in the pelvis.
    z = float(spine.sacrum_top[2]) - 85.0
    cx, cy, ax, ay = torso.section(z)
    put(
        ellipsoid([cx, cy - 0.45 * ay, z], rng.uniform([35, 25, 25], [55, 40, 40]), float(rng.uniform(0, 15)))
    )
