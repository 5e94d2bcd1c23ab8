"""The analytic spine of a phantom: levels, sizes, curvature, fractures and exact keypoints.

Everything here is in world LPS millimetres ``(x, y, z)`` (x right→left, y anterior→posterior,
z inferior→superior), independent of any voxel grid, so that a phantom can be rendered on any grid
and its ground truth mapped onto it exactly.

Each vertebral body has a local frame at its centre: ``axis`` (superior, along the spine curve),
``posterior`` (in the vertebra's own mid-sagittal plane, rotated with the vertebra under scoliosis)
and ``left`` = ``posterior × axis``. Local coordinates are ``u`` along ``axis``, ``a`` along
``-posterior`` (anterior), ``l`` along ``left``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from vfq.genant import GRADE_THRESHOLDS, FractureType, GenantGrade, grade_from_loss, neighbour_reference
from vfq.levels import Level

#: Typical adult dimensions in mm: posterior body height, AP depth, LR width, height of the disc
#: below. Sources: textbook morphometry (Panjabi et al. 1991/1992), rounded.
LEVEL_DIMENSIONS: dict[Level, tuple[float, float, float, float]] = {
    Level.C3: (13.0, 15.5, 22.0, 5.0),
    Level.C4: (13.0, 15.5, 22.5, 5.0),
    Level.C5: (13.0, 16.0, 23.0, 5.5),
    Level.C6: (13.5, 16.5, 24.0, 5.5),
    Level.C7: (14.0, 16.5, 25.0, 4.5),
    Level.T1: (15.0, 17.0, 27.0, 4.0),
    Level.T2: (16.0, 17.5, 27.0, 4.0),
    Level.T3: (16.5, 18.5, 27.0, 4.0),
    Level.T4: (17.0, 19.5, 27.5, 4.0),
    Level.T5: (17.5, 20.5, 28.0, 4.5),
    Level.T6: (18.0, 22.0, 29.0, 4.5),
    Level.T7: (18.5, 23.5, 30.0, 5.0),
    Level.T8: (19.5, 25.0, 31.5, 5.0),
    Level.T9: (20.0, 26.0, 33.0, 5.5),
    Level.T10: (21.0, 27.0, 35.0, 6.0),
    Level.T11: (22.0, 28.0, 38.0, 7.0),
    Level.T12: (23.5, 29.0, 41.0, 8.0),
    Level.L1: (24.5, 30.0, 43.0, 9.0),
    Level.L2: (25.5, 31.0, 45.0, 10.0),
    Level.L3: (26.0, 32.0, 48.0, 10.5),
    Level.L4: (26.0, 33.0, 50.0, 11.0),
    Level.L5: (25.5, 34.0, 51.0, 10.0),
}
#: The levels a phantom spine models, cranio-caudally; the sacrum (S1) closes the column below.
SPINE_LEVELS: tuple[Level, ...] = tuple(LEVEL_DIMENSIONS)
#: Levels that carry ribs.
RIB_LEVELS: tuple[Level, ...] = tuple(lv for lv in SPINE_LEVELS if lv.region == "thoracic")

#: Relative height loss drawn for each Genant grade; bounds keep 1.5 % away from the thresholds
#: so that a measured loss within 2 % cannot change the grade by more than one step.
GRADE_LOSS_RANGES: dict[GenantGrade, tuple[float, float]] = {
    GenantGrade.MILD: (GRADE_THRESHOLDS[0] + 0.015, GRADE_THRESHOLDS[1] - 0.015),
    GenantGrade.MODERATE: (GRADE_THRESHOLDS[1] + 0.015, GRADE_THRESHOLDS[2] - 0.015),
    GenantGrade.SEVERE: (GRADE_THRESHOLDS[2] + 0.015, 0.60),
}
#: Largest physiological deformity of a normal body (anterior wedging plus endplate concavity).
MAX_NORMAL_LOSS = 0.16


@dataclass(frozen=True)
class Fracture:
    """A requested deformity: ``loss`` is the relative height loss the Genant rule must measure."""

    level: Level
    kind: FractureType
    loss: float

    def __post_init__(self) -> None:
        if self.kind is FractureType.NONE:
            raise ValueError("a Fracture needs a fracture type other than NONE")
        if not MAX_NORMAL_LOSS < self.loss < 0.8:
            raise ValueError(f"fracture loss must lie in ({MAX_NORMAL_LOSS}, 0.8), got {self.loss}")

    @property
    def grade(self) -> GenantGrade:
        return GenantGrade(int(grade_from_loss(self.loss)))


@dataclass(frozen=True)
class SpineShape:
    """Curvature and pose of a spine (angles in degrees, lengths in mm).

    Attributes:
        kyphosis: thoracic kyphosis (Cobb-like total tangent change over T1-T12).
        lordosis: lumbar lordosis spread over L1-L5.
        lower_lumbar: further lordosis concentrated at L4-L5, where real spines bend most.
        lumbosacral: angle between the L5 lower and the S1 upper endplate (a disc taller in front);
            the sacrum tilts by it in the sagittal plane, its top leaning anteriorly.
        scoliosis: lateral Cobb-like angle of one curve (0 = straight), signed: > 0 bends to the left.
        scoliosis_apex: level index (cranio-caudal position, C3 = 0) of the curve's apex.
        rotation_per_mm: axial rotation (degrees) of a vertebra per mm of its lateral deviation.
        pitch, roll: patient tilt of the whole column from the scanner axis.
        size: scale of every vertebral dimension (1 = typical adult).
    """

    kyphosis: float = 40.0
    lordosis: float = 40.0
    lower_lumbar: float = 10.0
    lumbosacral: float = 15.0
    scoliosis: float = 0.0
    scoliosis_apex: float = 12.0
    rotation_per_mm: float = 0.6
    pitch: float = 0.0
    roll: float = 0.0
    size: float = 1.0


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body of a phantom (world LPS mm).

    Attributes:
        level: its level.
        center: origin of the local frame (the middle of the mid-sagittal plane's height profile).
        axis, posterior, left: the local frame (orthonormal, right-handed: left = posterior × axis).
        depth: AP depth of the body (the anterior and posterior edges lie at a = ±depth/2).
        width: LR width.
        heights: ``(ha, hm, hp)`` heights in mm at the anterior edge, centre and posterior edge.
        upper_share: share of the height loss taken by the upper endplate (0.5 = symmetric).
        fracture: the requested deformity, NONE for a normal body.
        density: cancellous bone HU (osteoporotic bodies are darker).
    """

    level: Level
    center: np.ndarray
    axis: np.ndarray
    posterior: np.ndarray
    left: np.ndarray
    depth: float
    width: float
    heights: tuple[float, float, float]
    upper_share: float
    fracture: FractureType
    density: float

    def to_world(self, u: np.ndarray, a: np.ndarray, l: np.ndarray) -> np.ndarray:  # noqa: E741
        """World points ``(..., 3)`` of local coordinates (u superior, a anterior, l left), mm."""
        u, a, l = (np.asarray(c, dtype=np.float64)[..., None] for c in (u, a, l))  # noqa: E741
        return self.center + u * self.axis - a * self.posterior + l * self.left

    def endplates(self, a: np.ndarray, l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
        """Local ``u`` of the upper and lower endplate surfaces above ``(a, l)`` (mm).

        The height profile is linear from the posterior (a = -depth/2, ``hp``) to the anterior
        edge (a = +depth/2, ``ha``) with a bowl-shaped depression that makes the centre height ``hm``
        and flattens out towards the rim, which keeps its height (as in a biconcave deformity).
        """
        ha, hm, hp = self.heights
        r = self.depth / 2
        rl = self.width / 2
        a = np.asarray(a)
        linear = hp + (ha - hp) * (a + r) / (2 * r)
        bowl = ((ha + hp) / 2 - hm) * np.clip(1 - (a / r) ** 2 - (np.asarray(l) / rl) ** 2, 0, None) ** 2
        height = linear - bowl
        lost = hp - height
        upper = hp / 2 - self.upper_share * lost
        lower = -hp / 2 + (1 - self.upper_share) * lost
        return upper, lower

    @property
    def keypoints(self) -> np.ndarray:
        """``(6, 3)`` world keypoints in DESIGN §2 order, on the mid-sagittal plane of the body."""
        r = self.depth / 2
        a = np.array([r, 0.0, -r])
        upper, lower = self.endplates(a, np.zeros(3))
        u = np.concatenate([upper, lower])
        return self.to_world(u, np.concatenate([a, a]), np.zeros(6))


@dataclass(frozen=True)
class Spine:
    """A phantom's vertebral column.

    Attributes:
        vertebrae: C3…L5, cranio-caudally.
        curve: ``(M, 3)`` world points of the body centre line, inferior→superior, 1 mm apart.
        sacrum: the S1 body, on which the column stands (no keypoints are graded there).
        shape: the curvature parameters it was built from.
    """

    vertebrae: tuple[Vertebra, ...]
    curve: np.ndarray
    sacrum: Vertebra
    shape: SpineShape = field(default_factory=SpineShape)

    def vertebra(self, level: Level) -> Vertebra:
        for v in self.vertebrae:
            if v.level is level:
                return v
        raise KeyError(level)

    @property
    def sacrum_top(self) -> np.ndarray:
        """World centre (mm) of the S1 upper endplate."""
        return self.sacrum.center + self.sacrum.axis * self.sacrum.heights[2] / 2

    @property
    def keypoints(self) -> np.ndarray:
        """``(N, 6, 3)`` world keypoints of all vertebrae."""
        return np.stack([v.keypoints for v in self.vertebrae])

    def level_z(self, level: Level) -> float:
        """World z (mm) of a level's body centre."""
        return float(self.vertebra(level).center[2])


def _bump(t: np.ndarray, center: float, half_width: float) -> np.ndarray:
    """A raised-cosine window of unit integral (per unit of ``t``)."""
    x = np.clip((t - center) / half_width, -1, 1)
    return (1 + np.cos(np.pi * x)) / (2 * half_width)


def _sagittal_frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior and left unit vectors of a frame whose posterior axis lies in the sagittal plane."""
    posterior = np.cross(axis, [1.0, 0.0, 0.0])
    posterior /= np.linalg.norm(posterior)
    left = np.cross(posterior, axis)
    return posterior, left


def _natural_heights(rng: np.random.Generator, level: Level, hp: float) -> tuple[float, float, float]:
    """Heights of a normal body: physiological thoracic wedging, lumbar reverse wedging."""
    if level.region == "thoracic":
        wedge = (
            rng.uniform(0.0, 0.12)
            if Level.T4.index <= level.index <= Level.T12.index
            else rng.uniform(0, 0.05)
        )
    elif level is Level.L5:
        wedge = -rng.uniform(0.05, 0.18)
    elif level is Level.L4:
        wedge = -rng.uniform(0.03, 0.10)
    else:
        wedge = rng.uniform(-0.03, 0.04)
    ha = hp * (1 - wedge)
    concavity = rng.uniform(0.0, 0.04)
    hm = min(ha, hp) * (1 - concavity)
    return ha, hm, hp


def build_spine(
    rng: np.random.Generator,
    shape: SpineShape,
    fractures: tuple[Fracture, ...] = (),
    base: tuple[float, float, float] = (0.0, 60.0, 0.0),
    osteoporosis: float = 0.0,
) -> Spine:
    """Build a spine: stack C3…L5 on the sacrum along a curve with the given shape.

    Args:
        rng: source of the small per-vertebra variations.
        shape: curvature, tilt and size.
        fractures: deformities to apply; crush fractures must be at least three levels apart
            (their reference heights are then those of normal neighbours).
        base: world position (mm) of the S1 upper endplate centre.
        osteoporosis: 0 (normal bone) … 1 (severe): darkens the cancellous bone.
    """
    by_level = {f.level: f for f in fractures}
    crush = sorted(f.level.index for f in fractures if f.kind is FractureType.CRUSH)
    if any(b - a < 3 for a, b in itertools.pairwise(crush)):
        raise ValueError("crush fractures must be at least three levels apart")
    unknown = set(by_level) - set(SPINE_LEVELS)
    if unknown:
        raise ValueError(
            f"fractures at levels the phantom does not model: {sorted(lv.value for lv in unknown)}"
        )

    levels = SPINE_LEVELS[::-1]  # caudal → cranial, the order of stacking
    dims = {lv: np.array(LEVEL_DIMENSIONS[lv]) * shape.size * rng.uniform(0.96, 1.04) for lv in levels}
    natural = {lv: _natural_heights(rng, lv, dims[lv][0]) for lv in levels}
    hp_nat = np.array([natural[lv][2] for lv in SPINE_LEVELS])
    ref = dict(zip(SPINE_LEVELS, neighbour_reference(hp_nat)))

    heights: dict[Level, tuple[float, float, float]] = {}
    for lv in levels:
        ha, hm, hp = natural[lv]
        f = by_level.get(lv)
        if f is None:
            heights[lv] = (ha, hm, hp)
        elif f.kind is FractureType.WEDGE:
            ha = hp * (1 - f.loss)
            heights[lv] = (ha, 0.5 * (ha + hp) * rng.uniform(0.97, 1.0), hp)
        elif f.kind is FractureType.BICONCAVE:
            heights[lv] = (max(ha, hp * (1 - MAX_NORMAL_LOSS / 2)), hp * (1 - f.loss), hp)
        else:  # crush: every height lower, the posterior one against the neighbours' median
            factor = ref[lv] * (1 - f.loss) / hp
            heights[lv] = (ha * factor, hm * factor, hp * factor)

    # Arc-length positions of the body centres above the sacrum (caudal → cranial).
    centres_u, u = [], 0.0
    for lv in levels:
        disc_below = dims[lv][3]
        u += disc_below + heights[lv][2] / 2
        centres_u.append(u)
        u += heights[lv][2] / 2
    length = u + 20.0

    # Curvature along the arc: lordosis (lumbar, + in the sagittal angle), kyphosis (thoracic, -),
    # cervical lordosis; a lateral bump for scoliosis, compensated above and below.
    s = np.arange(0.0, length + 1.0, 1.0)
    idx = {lv: centres_u[i] for i, lv in enumerate(levels)}
    lumbar_mid, lumbar_hw = (idx[Level.L1] + idx[Level.L5]) / 2, (idx[Level.L1] - idx[Level.L5]) / 2 + 15
    thor_mid, thor_hw = (idx[Level.T1] + idx[Level.T12]) / 2, (idx[Level.T1] - idx[Level.T12]) / 2 + 10
    cerv_mid = (idx[Level.C3] + idx[Level.C7]) / 2
    kappa_sag = np.radians(
        shape.lordosis * _bump(s, lumbar_mid, lumbar_hw)
        + shape.lower_lumbar * _bump(s, (idx[Level.L4] + idx[Level.L5]) / 2, 20.0)
        - shape.kyphosis * _bump(s, thor_mid, thor_hw)
        + 20.0 * _bump(s, cerv_mid, 40.0)
    )
    theta = np.cumsum(kappa_sag)
    # Start so that L1…T12 runs on average vertical, then tilt by the patient's pitch.
    lumbar = (s > idx[Level.L5]) & (s < idx[Level.T10])
    theta += -theta[lumbar].mean() + np.radians(shape.pitch)

    apex_level = SPINE_LEVELS[int(np.clip(round(shape.scoliosis_apex), 0, len(SPINE_LEVELS) - 1))]
    apex = idx[apex_level]
    # phi rises by half the Cobb angle, falls by the whole, and returns: a single C-shaped curve.
    kappa_lat = (
        np.radians(shape.scoliosis)
        / 2
        * (_bump(s, apex - 70, 70) - 2 * _bump(s, apex, 70) + _bump(s, apex + 70, 70))
    )
    phi = np.cumsum(kappa_lat) + np.radians(shape.roll)

    tangent = np.stack([np.sin(phi) * np.cos(theta), np.sin(theta), np.cos(phi) * np.cos(theta)], axis=1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    curve = np.asarray(base, dtype=np.float64) + np.concatenate(
        [np.zeros((1, 3)), np.cumsum((tangent[1:] + tangent[:-1]) / 2, axis=0)]
    )
    lateral = curve[:, 0] - (curve[0, 0] + (curve[:, 2] - curve[0, 2]) * np.tan(np.radians(shape.roll)))

    # Cancellous bone HU of this patient: young dense bone ~300, severe osteoporosis below 100.
    patient_density = rng.uniform(190, 320) * (1 - 0.65 * osteoporosis)
    vertebrae = []
    for lv, cu in zip(levels, centres_u):
        i = round(cu)
        center = curve[i]
        axis = tangent[i]
        posterior, left = _sagittal_frame(axis)
        # Axial rotation towards the convexity of a scoliotic curve.
        angle = np.radians(shape.rotation_per_mm * lateral[i] + rng.normal(0, 1.5))
        posterior, left = (
            np.cos(angle) * posterior + np.sin(angle) * left,
            -np.sin(angle) * posterior + np.cos(angle) * left,
        )
        f = by_level.get(lv)
        base_density = patient_density * rng.uniform(0.92, 1.08)
        vertebrae.append(
            Vertebra(
                level=lv,
                center=center,
                axis=axis,
                posterior=posterior,
                left=left,
                depth=float(dims[lv][1]),
                width=float(dims[lv][2]),
                heights=tuple(float(h) for h in heights[lv]),  # type: ignore[arg-type]
                upper_share=0.5 if f is None else rng.uniform(0.6, 0.85),
                fracture=FractureType.NONE if f is None else f.kind,
                density=float(base_density * (rng.uniform(0.75, 0.95) if f else 1.0)),
            )
        )
    l5 = vertebrae[0]
    s1_height = 0.9 * l5.heights[2]
    # The sacrum turns about its upper endplate centre (the curve's start): top towards anterior.
    posterior, _ = _sagittal_frame(tangent[0])
    tilt = np.radians(shape.lumbosacral)
    s1_axis = np.cos(tilt) * tangent[0] - np.sin(tilt) * posterior
    posterior, left = _sagittal_frame(s1_axis)
    sacrum = replace(
        l5,
        level=Level.S1,
        center=curve[0] - s1_axis * s1_height / 2,
        axis=s1_axis,
        posterior=posterior,
        left=left,
        depth=0.95 * l5.depth,
        heights=(s1_height, s1_height, s1_height),
        upper_share=0.5,
        fracture=FractureType.NONE,
    )
    return Spine(vertebrae=tuple(vertebrae[::-1]), curve=curve, sacrum=sacrum, shape=shape)


def sample_fractures(
    rng: np.random.Generator, max_count: int = 3, probability: float = 0.6
) -> tuple[Fracture, ...]:
    """Random fractures: none with probability ``1 - probability``, else 1…max_count at T4…L5.

    Types and grades are uniform; levels cluster as in patients (mid-thoracic and thoracolumbar
    junction); crush fractures keep three levels apart.
    """
    if rng.random() >= probability:
        return ()
    candidates = [lv for lv in SPINE_LEVELS if Level.T4.index <= lv.index <= Level.L5.index]
    weights = np.array(
        [
            2.0 if lv in (Level.T7, Level.T8, Level.T11, Level.T12, Level.L1, Level.L2) else 1.0
            for lv in candidates
        ]
    )
    count = int(rng.integers(1, max_count + 1))
    chosen = rng.choice(len(candidates), size=count, replace=False, p=weights / weights.sum())
    fractures: list[Fracture] = []
    crush_at: list[int] = []
    for i in sorted(chosen):
        level = candidates[i]
        kind = [FractureType.WEDGE, FractureType.BICONCAVE, FractureType.CRUSH][int(rng.integers(3))]
        if kind is FractureType.CRUSH and any(abs(level.index - c) < 3 for c in crush_at):
            kind = FractureType.WEDGE
        if kind is FractureType.CRUSH:
            crush_at.append(level.index)
        grade = GenantGrade(int(rng.integers(1, 4)))
        fractures.append(Fracture(level, kind, float(rng.uniform(*GRADE_LOSS_RANGES[grade]))))
    return tuple(fractures)
