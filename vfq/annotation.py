"""Ground truth of one spine: the structure every reader produces and every metric consumes.

Phantoms write it, the readers of real annotations (neuro-ml 6-keypoint JSON, VerSe) fill it,
training and evaluation read it. Coordinates are voxel indices ``(z, y, x)`` of the image the
annotation belongs to; :class:`~vfq.volume.ImageGeometry` gives world LPS mm. Vertebrae are
ordered cranio-caudally, which is the neighbour order of the Genant crush term.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vfq.errors import InputError
from vfq.genant import FractureType, GenantGrade, genant
from vfq.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS, body_center, heights_mm
from vfq.levels import Level
from vfq.volume import ImageGeometry

#: Identifier and version of the JSON form written by :meth:`SpineAnnotation.to_json`.
SCHEMA = "vfq-annotation/1"


@dataclass(frozen=True)
class VertebraAnnotation:
    """One vertebra of a ground truth.

    Attributes:
        level: anatomical level, ``None`` where the source does not say.
        center: ``(3,)`` body centre, voxel ``(z, y, x)``; for keypoint annotations the mean of the
            keypoints (:func:`vfq.keypoints.body_center`).
        keypoints: ``(6, 3)`` voxel ``(z, y, x)`` in the order of :data:`vfq.keypoints.KEYPOINT_NAMES`,
            or ``None`` for centroid-only sources (VerSe).
        fracture_type: morphological type, ``None`` if unknown.
        grade: Genant grade as annotated (phantoms: from the rule on the true keypoints), ``None``
            if unknown.
        loss: relative height loss in ``[0, 1]``, ``None`` if unknown.
        fully_in_view: whether the whole body lies inside the field of view (detection metrics
            count only those).
    """

    level: Level | None
    center: np.ndarray
    keypoints: np.ndarray | None = None
    fracture_type: FractureType | None = None
    grade: GenantGrade | None = None
    loss: float | None = None
    fully_in_view: bool = True

    def __post_init__(self) -> None:
        center = np.array(self.center, dtype=np.float64).reshape(3)
        object.__setattr__(self, "center", center)
        if self.keypoints is not None:
            keypoints = np.array(self.keypoints, dtype=np.float64)
            if keypoints.shape != (NUM_KEYPOINTS, 3):
                raise ValueError(f"keypoints must have shape (6, 3), got {keypoints.shape}")
            object.__setattr__(self, "keypoints", keypoints)
        if self.grade is not None:
            object.__setattr__(self, "grade", GenantGrade(self.grade))

    @classmethod
    def from_keypoints(cls, level: Level | None, keypoints: np.ndarray, **kwargs: Any) -> VertebraAnnotation:
        """An annotation whose centre is the mean of its ``(6, 3)`` voxel keypoints."""
        return cls(level=level, center=body_center(keypoints), keypoints=keypoints, **kwargs)


@dataclass(frozen=True)
class SpineAnnotation:
    """All annotated vertebrae of one image, cranio-caudal order.

    Attributes:
        geometry: geometry of the annotated image.
        vertebrae: the vertebrae, cranio-caudally.
        curve: optional ``(M, 3)`` world LPS mm points ``(x, y, z)`` along the vertebral-body centre
            line, inferior→superior.
        metadata: free-form provenance (generator parameters, source file, annotator).
    """

    geometry: ImageGeometry
    vertebrae: tuple[VertebraAnnotation, ...]
    curve: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertebrae", tuple(self.vertebrae))
        if self.curve is not None:
            object.__setattr__(self, "curve", np.asarray(self.curve, dtype=np.float64).reshape(-1, 3))

    @property
    def levels(self) -> list[Level | None]:
        return [v.level for v in self.vertebrae]

    @property
    def centers_world(self) -> np.ndarray:
        """``(N, 3)`` body centres in world LPS mm."""
        return self.geometry.voxel_to_world(np.array([v.center for v in self.vertebrae]).reshape(-1, 3))

    def heights_mm(self) -> np.ndarray:
        """``(N, 3)`` heights ``(ha, hm, hp)`` in mm; NaN rows for vertebrae without keypoints."""
        out = np.full((len(self.vertebrae), 3), np.nan)
        for i, v in enumerate(self.vertebrae):
            if v.keypoints is not None:
                out[i] = heights_mm(self.geometry.voxel_to_world(v.keypoints))
        return out

    def with_genant_from_keypoints(self) -> SpineAnnotation:
        """A copy whose ``grade`` and ``loss`` come from the Genant rule on the keypoints.

        All vertebrae need keypoints; their list order is the neighbour order of the crush term.
        """
        heights = self.heights_mm()
        if np.isnan(heights).any():
            raise ValueError("every vertebra needs keypoints to grade it from its heights")
        result = genant(heights)
        vertebrae = tuple(
            replace(v, grade=GenantGrade(int(g)), loss=float(loss))
            for v, g, loss in zip(self.vertebrae, result.grade, result.loss)
        )
        return replace(self, vertebrae=vertebrae)

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (schema :data:`SCHEMA`): voxel and world coordinates, heights."""
        g = self.geometry
        heights = self.heights_mm()
        vertebrae = []
        for v, h in zip(self.vertebrae, heights):
            item: dict[str, Any] = {
                "level": v.level.value if v.level else None,
                "center_voxel": _round(v.center),
                "center_world": _round(g.voxel_to_world(v.center)),
                "keypoints_voxel": None if v.keypoints is None else _round(v.keypoints),
                "keypoints_world": None if v.keypoints is None else _round(g.voxel_to_world(v.keypoints)),
                "heights_mm": None if np.isnan(h).any() else _round(h),
                "fracture_type": v.fracture_type.value if v.fracture_type else None,
                "genant_grade": None if v.grade is None else int(v.grade),
                "height_loss": None if v.loss is None else round(float(v.loss), 6),
                "fully_in_view": bool(v.fully_in_view),
            }
            vertebrae.append(item)
        return {
            "schema": SCHEMA,
            "frames": {
                "voxel": "array indices (z, y, x) of the image, voxel centres at integers",
                "world": "patient LPS millimetres (x, y, z)",
            },
            "keypoint_order": list(KEYPOINT_NAMES),
            "geometry": {
                "shape": list(g.shape),
                "spacing_zyx_mm": list(g.spacing),
                "origin_lps_mm": list(g.origin),
                "direction": g.direction.tolist(),
            },
            "vertebrae": vertebrae,
            "curve_world": None if self.curve is None else _round(self.curve),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpineAnnotation:
        """Read the form written by :meth:`to_dict`; a wrong schema raises :class:`InputError`."""
        if data.get("schema") != SCHEMA:
            raise InputError(f"expected an annotation with schema {SCHEMA!r}, got {data.get('schema')!r}")
        g = data["geometry"]
        geometry = ImageGeometry(
            shape=g["shape"], spacing=g["spacing_zyx_mm"], origin=g["origin_lps_mm"], direction=g["direction"]
        )
        vertebrae = tuple(
            VertebraAnnotation(
                level=Level.parse(v["level"]) if v.get("level") else None,
                center=v["center_voxel"],
                keypoints=v.get("keypoints_voxel"),
                fracture_type=FractureType(v["fracture_type"]) if v.get("fracture_type") else None,
                grade=v.get("genant_grade"),
                loss=v.get("height_loss"),
                fully_in_view=v.get("fully_in_view", True),
            )
            for v in data["vertebrae"]
        )
        curve = data.get("curve_world")
        return cls(geometry=geometry, vertebrae=vertebrae, curve=curve, metadata=data.get("metadata", {}))

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: str | Path) -> SpineAnnotation:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _round(array: np.ndarray, decimals: int = 4) -> list:
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()
