"""Typed results of one analysed CT: frozen dataclasses, their JSON form (schema ``vfq-result/1``) and
their CSV rows.

Frames and units (see :mod:`vfq.volume`):

* **voxel** ``(z, y, x)``: continuous indices into the LPS array the client sent (the array that
  :func:`vfq.io.read_ct` returns); the centre of the first voxel is ``(0, 0, 0)``.
* **world** LPS mm ``(x, y, z)``: patient coordinates, from the voxel keypoints with the study's
  :class:`~vfq.volume.ImageGeometry` (origin, spacing, direction).
* **sagittal** ``(row, col)``: pixels of the straightened sagittal image the detector saw; row 0 is
  the inferior end, columns increase posteriorly, each pixel :data:`SAGITTAL_PIXEL_MM` mm.

The JSON form is described by ``result.schema.json`` (JSON Schema draft 2020-12) next to this module
and in the client's README; :meth:`StudyResult.from_json_dict` validates against it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from vfq import __version__
from vfq.client.errors import ResponseError
from vfq.client.operating_point import DEFAULT_OPERATING_POINT, OperatingPoint
from vfq.errors import InputError
from vfq.genant import GenantGrade
from vfq.keypoints import HEIGHT_NAMES, KEYPOINT_NAMES, NUM_KEYPOINTS, body_center
from vfq.tensors import (
    DETECTION_SCORE_OUTPUT,
    DETECTOR_PIXEL_MM,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    NOT_ASSESSABLE_OUTPUT,
    PIPELINE_MODEL,
    PIPELINE_OUTPUTS,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
    decode_text,
)
from vfq.volume import ImageGeometry

__all__ = [
    "CSV_COLUMNS",
    "SAGITTAL_PIXEL_MM",
    "SCHEMA_ID",
    "SOFTWARE_NAME",
    "StudyResult",
    "VertebraResult",
    "result_schema",
    "validate_result_json",
]

#: The ``"schema"`` value of the JSON form; a change that breaks readers gets a new number.
SCHEMA_ID = "vfq-result/1"
#: The ``software.name`` of the JSON form.
SOFTWARE_NAME = "vfq"
#: Pixel size ``(row, col)`` in mm of the straightened sagittal image.
SAGITTAL_PIXEL_MM: tuple[float, float] = (DETECTOR_PIXEL_MM, DETECTOR_PIXEL_MM)

#: The columns of :meth:`StudyResult.csv_rows`, in order: study-level columns (repeated on every
#: row of a study), then one vertebra's (empty on the row of a study without vertebrae).
CSV_COLUMNS: tuple[str, ...] = (
    "study",
    "source",
    "not_assessable",
    "vertebrae",
    "max_grade",
    "study_score",
    "fracture_threshold",
    "index",
    "level",
    "genant_grade",
    "genant_label",
    "fractured",
    "fracture_score",
    "detection_score",
    "height_anterior_mm",
    "height_middle_mm",
    "height_posterior_mm",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
)


def _points(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A read-only float64 copy of ``value`` with the given shape (``ValueError`` otherwise)."""
    array = np.array(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class VertebraResult:
    """One vertebral body found in the CT.

    Attributes:
        level: the level label (``"T12"``), ``None`` where the server could not tell.
        keypoints_voxel: ``(6, 3)`` float64, voxel ``(z, y, x)`` of the LPS array that was sent, in
            the keypoint order of :mod:`vfq.keypoints`.
        keypoints_world: ``(6, 3)`` float64, world LPS mm ``(x, y, z)`` of the same points.
        keypoints_sagittal: ``(6, 2)`` float64, pixels ``(row, col)`` of the straightened image.
        heights_mm: anterior, middle and posterior vertebral-body heights in mm.
        fracture_score: the Genant relative height loss, in ``[0, 1]``.
        genant_grade: Genant grade 0 (normal) to 3 (severe).
        detection_score: the detector's confidence, in ``[0, 1]``.
    """

    level: str | None
    keypoints_voxel: np.ndarray
    keypoints_world: np.ndarray
    keypoints_sagittal: np.ndarray
    heights_mm: tuple[float, float, float]
    fracture_score: float
    genant_grade: int
    detection_score: float

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("keypoints_voxel", _points(self.keypoints_voxel, (NUM_KEYPOINTS, 3), "keypoints_voxel"))
        set_("keypoints_world", _points(self.keypoints_world, (NUM_KEYPOINTS, 3), "keypoints_world"))
        set_("keypoints_sagittal", _points(self.keypoints_sagittal, (NUM_KEYPOINTS, 2), "keypoints_sagittal"))
        heights = tuple(float(h) for h in self.heights_mm)
        if len(heights) != len(HEIGHT_NAMES):
            raise ValueError(f"heights_mm must hold {HEIGHT_NAMES}, got {len(heights)} values")
        set_("heights_mm", heights)
        set_("fracture_score", float(self.fracture_score))
        set_("genant_grade", int(GenantGrade(int(self.genant_grade))))
        set_("detection_score", float(self.detection_score))

    @property
    def genant_label(self) -> str:
        """``"normal"``, ``"mild"``, ``"moderate"`` or ``"severe"``."""
        return GenantGrade(self.genant_grade).name.lower()

    def to_json_dict(self, operating_point: OperatingPoint = DEFAULT_OPERATING_POINT) -> dict[str, Any]:
        """The vertebra's entry in the JSON form (schema ``vfq-result/1``); ``fractured`` is flagged
        at ``operating_point``."""
        return {
            "level": self.level,
            "keypoints_voxel": self.keypoints_voxel.tolist(),
            "keypoints_world_mm": self.keypoints_world.tolist(),
            "keypoints_sagittal": self.keypoints_sagittal.tolist(),
            "heights_mm": dict(zip(HEIGHT_NAMES, self.heights_mm)),
            "fracture_score": self.fracture_score,
            "genant_grade": self.genant_grade,
            "genant_label": self.genant_label,
            "detection_score": self.detection_score,
            "fractured": operating_point.is_fractured(self.genant_grade),
        }

    @classmethod
    def from_json_dict(cls, entry: Mapping[str, Any]) -> VertebraResult:
        """The vertebra of a JSON entry written by :meth:`to_json_dict` (derived fields are ignored)."""
        return cls(
            level=entry["level"],
            keypoints_voxel=entry["keypoints_voxel"],
            keypoints_world=entry["keypoints_world_mm"],
            keypoints_sagittal=entry["keypoints_sagittal"],
            heights_mm=tuple(entry["heights_mm"][name] for name in HEIGHT_NAMES),  # type: ignore[arg-type]
            fracture_score=entry["fracture_score"],
            genant_grade=entry["genant_grade"],
            detection_score=entry["detection_score"],
        )


def _empty_image() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class StudyResult:
    """What the server found in one CT, with the geometry that maps it back into the patient.

    Attributes:
        source: what was analysed: the path as given, or a name the caller chose.
        vertebrae: the vertebrae, superior first (as the server returns them); empty when the
            study is not assessable.
        not_assessable: why the study cannot be graded (no spine, too short, no vertebra), or
            ``None`` when it was graded.
        sagittal_image: ``(S, V)`` float32 HU, the straightened sagittal image the detector saw
            (row 0 inferior, :data:`SAGITTAL_PIXEL_MM` pixels); ``(0, 0)`` when not assessable, and
            after :meth:`from_json_dict` (the JSON form does not carry it).
        geometry: the geometry of the LPS array that was sent (shape, spacing, origin, direction).
        seconds: wall-clock durations in seconds, e.g. ``"read"`` (reading the file) and
            ``"request"`` (the server call, transfer included).
        model: the served model that answered.
        model_version: its version as the server reported it (``""`` if unknown).
        client_version: the version of vfq that made the request.
        operating_point: which vertebrae the outputs flag fractured and a DICOM SR lists; it never
            changes a grade (set it with :meth:`with_operating_point`).
    """

    source: str
    vertebrae: tuple[VertebraResult, ...]
    not_assessable: str | None
    sagittal_image: np.ndarray
    geometry: ImageGeometry
    seconds: dict[str, float] = field(default_factory=dict)
    model: str = PIPELINE_MODEL
    model_version: str = ""
    client_version: str = __version__
    operating_point: OperatingPoint = DEFAULT_OPERATING_POINT

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertebrae", tuple(self.vertebrae))
        image = np.asarray(self.sagittal_image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"sagittal_image must be 2D (S, V), got shape {image.shape}")
        object.__setattr__(self, "sagittal_image", image)
        object.__setattr__(self, "seconds", {str(k): float(v) for k, v in self.seconds.items()})

    @property
    def max_grade(self) -> int:
        """The highest Genant grade among the vertebrae, 0 without vertebrae."""
        return max((v.genant_grade for v in self.vertebrae), default=0)

    @property
    def study_score(self) -> float:
        """The study's fracture score: the largest vertebra fracture score, 0 without vertebrae."""
        return max((v.fracture_score for v in self.vertebrae), default=0.0)

    def is_fractured(self, vertebra: VertebraResult) -> bool:
        """Whether ``vertebra`` is flagged fractured at this result's operating point."""
        return self.operating_point.is_fractured(vertebra.genant_grade)

    def with_operating_point(self, operating_point: OperatingPoint) -> StudyResult:
        """The same result read at another operating point (grades and numbers unchanged)."""
        return dataclasses.replace(self, operating_point=operating_point)

    # ------------------------------------------------------------------ from the server

    @classmethod
    def from_outputs(
        cls,
        outputs: Mapping[str, np.ndarray],
        geometry: ImageGeometry,
        source: str,
        seconds: Mapping[str, float] | None = None,
        *,
        model: str = PIPELINE_MODEL,
        model_version: str = "",
    ) -> StudyResult:
        """Build the result from the output arrays of the ``vertebra_pipeline`` ensemble.

        Args:
            outputs: the arrays by output name (:data:`vfq.tensors.PIPELINE_OUTPUTS`); ``BYTES``
                outputs as arrays of ``bytes`` (UTF-8) or ``str``.
            geometry: the geometry of the array that was sent: turns voxel keypoints into world mm.
            source: what was analysed (a path or a name).
            seconds: durations to record (seconds).
            model, model_version: the model that answered.

        Raises:
            ResponseError: an output is missing or its shape breaks the served API.
        """
        missing = [name for name in PIPELINE_OUTPUTS if name not in outputs]
        if missing:
            raise ResponseError(
                f"the answer of {model!r} lacks the outputs {missing}: the server's model repository "
                f"and this client (vfq {__version__}) disagree on the API; use matching versions"
            )
        keypoints = _output(outputs, KEYPOINTS_OUTPUT, (-1, NUM_KEYPOINTS, 3), np.float64)
        n = keypoints.shape[0]
        heights = _output(outputs, HEIGHTS_OUTPUT, (n, 3), np.float64)
        scores = _output(outputs, FRACTURE_SCORE_OUTPUT, (n,), np.float64)
        grades = _output(outputs, GENANT_GRADE_OUTPUT, (n,), np.int64)
        detection = _output(outputs, DETECTION_SCORE_OUTPUT, (n,), np.float64)
        levels = _output(outputs, LEVEL_OUTPUT, (n,), object)
        sagittal_keypoints = _output(outputs, SAGITTAL_KEYPOINTS_OUTPUT, (n, NUM_KEYPOINTS, 2), np.float64)
        image = _output(outputs, SAGITTAL_IMAGE_OUTPUT, (-1, -1), np.float32)
        reason = _output(outputs, NOT_ASSESSABLE_OUTPUT, (1,), object)
        if np.any((grades < GenantGrade.NORMAL) | (grades > GenantGrade.SEVERE)):
            raise ResponseError(f"{GENANT_GRADE_OUTPUT} holds grades outside 0-3: {grades.tolist()}")
        world = geometry.voxel_to_world(keypoints)
        vertebrae = tuple(
            VertebraResult(
                level=decode_text(levels[i]) or None,
                keypoints_voxel=keypoints[i],
                keypoints_world=world[i],
                keypoints_sagittal=sagittal_keypoints[i],
                heights_mm=tuple(heights[i]),  # type: ignore[arg-type]
                fracture_score=scores[i],
                genant_grade=grades[i],
                detection_score=detection[i],
            )
            for i in range(n)
        )
        return cls(
            source=source,
            vertebrae=vertebrae,
            not_assessable=decode_text(reason[0]) or None,
            sagittal_image=image,
            geometry=geometry,
            seconds=dict(seconds or {}),
            model=model,
            model_version=model_version,
        )

    # ------------------------------------------------------------------ JSON

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form, schema ``vfq-result/1`` (see ``result.schema.json``); plain Python types."""
        g = self.geometry
        return {
            "schema": SCHEMA_ID,
            "source": self.source,
            "shape": list(g.shape),
            "spacing_mm": list(g.spacing),
            "origin_mm": list(g.origin),
            "direction": g.direction.tolist(),
            "not_assessable": self.not_assessable,
            "max_grade": self.max_grade,
            "study_score": self.study_score,
            "keypoint_names": list(KEYPOINT_NAMES),
            "vertebrae": [v.to_json_dict(self.operating_point) for v in self.vertebrae],
            "software": {"name": SOFTWARE_NAME, "version": self.client_version},
            "model": {"name": self.model, "version": self.model_version},
            "seconds": dict(self.seconds),
            "operating_point": self.operating_point.to_json_dict(),
        }

    @classmethod
    def from_json_dict(
        cls, doc: Mapping[str, Any], *, sagittal_image: np.ndarray | None = None
    ) -> StudyResult:
        """The result of a JSON document written by :meth:`to_json_dict`.

        Args:
            doc: the parsed JSON document.
            sagittal_image: the straightened image, if the caller kept it (the JSON does not carry
                it); an empty ``(0, 0)`` image otherwise.

        Raises:
            InputError: the document does not follow schema ``vfq-result/1``.
        """
        validate_result_json(doc)
        return cls(
            source=doc["source"],
            vertebrae=tuple(VertebraResult.from_json_dict(v) for v in doc["vertebrae"]),
            not_assessable=doc["not_assessable"],
            sagittal_image=_empty_image() if sagittal_image is None else sagittal_image,
            geometry=ImageGeometry(
                shape=tuple(doc["shape"]),  # type: ignore[arg-type]
                spacing=tuple(doc["spacing_mm"]),  # type: ignore[arg-type]
                origin=tuple(doc["origin_mm"]),  # type: ignore[arg-type]
                direction=np.array(doc["direction"], dtype=np.float64),
            ),
            seconds=doc["seconds"],
            model=doc["model"]["name"],
            model_version=doc["model"]["version"],
            client_version=doc["software"]["version"],
            operating_point=(
                OperatingPoint.from_json_dict(doc["operating_point"])
                if "operating_point" in doc
                else DEFAULT_OPERATING_POINT
            ),
        )

    # ------------------------------------------------------------------ CSV

    def csv_rows(self, study: str | None = None) -> list[dict[str, str]]:
        """One row per vertebra (superior first), keyed by :data:`CSV_COLUMNS`, values as text.

        Args:
            study: the ``study`` column (a short name); the source when ``None``.

        A study without vertebrae (not assessable) gives one row whose vertebra columns are empty.
        Numbers are written with 6 significant digits, booleans as ``true``/``false``, ``None`` as
        an empty field.
        """
        study_columns = {
            "study": study if study is not None else self.source,
            "source": self.source,
            "not_assessable": self.not_assessable,
            "vertebrae": len(self.vertebrae),
            "max_grade": self.max_grade,
            "study_score": self.study_score,
            "fracture_threshold": self.operating_point.fracture_threshold,
        }
        if not self.vertebrae:
            return [{column: _cell(study_columns.get(column)) for column in CSV_COLUMNS}]
        rows = []
        for index, v in enumerate(self.vertebrae):
            center = body_center(v.keypoints_world)
            values = {
                **study_columns,
                "index": index,
                "level": v.level,
                "genant_grade": v.genant_grade,
                "genant_label": v.genant_label,
                "fractured": self.is_fractured(v),
                "fracture_score": v.fracture_score,
                "detection_score": v.detection_score,
                **{f"height_{name}_mm": h for name, h in zip(HEIGHT_NAMES, v.heights_mm)},
                "center_x_mm": center[0],
                "center_y_mm": center[1],
                "center_z_mm": center[2],
            }
            rows.append({column: _cell(values[column]) for column in CSV_COLUMNS})
        return rows


# ---------------------------------------------------------------------- the JSON schema


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files(__package__).joinpath("result.schema.json").read_text(encoding="utf-8")


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the JSON form, ``result.schema.json``."""
    return json.loads(_schema_text())


def validate_result_json(doc: Mapping[str, Any]) -> None:
    """Check a JSON document against schema ``vfq-result/1``.

    Raises:
        InputError: it does not follow the schema; the message names the first offending field.
    """
    import jsonschema  # imported on use: reading results is rarer than making them

    found = doc.get("schema") if isinstance(doc, Mapping) else None
    if found != SCHEMA_ID:
        raise InputError(
            f'not a vfq result of schema {SCHEMA_ID!r} (its "schema" field is {found!r}); '
            f"this is vfq {__version__}: read it with the version that wrote it"
        )
    validator = jsonschema.Draft202012Validator(result_schema())
    error = next(iter(sorted(validator.iter_errors(doc), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"result JSON does not follow schema {SCHEMA_ID!r} at {where}: {error.message}")


# ---------------------------------------------------------------------- helpers


def _output(outputs: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Output ``name`` as ``dtype``; ``shape`` with -1 for free axes (``ResponseError`` otherwise)."""
    array = np.asarray(outputs[name])
    ok = array.ndim == len(shape) and all(want in (-1, got) for want, got in zip(shape, array.shape))
    if not ok:
        expected = "[" + ", ".join("*" if s == -1 else str(s) for s in shape) + "]"
        raise ResponseError(
            f"output {name} has shape {list(array.shape)}, expected {expected}: the server's model "
            f"repository and this client (vfq {__version__}) disagree on the API; use matching versions"
        )
    return array.astype(dtype, copy=False)


def _cell(value: Any) -> str:
    """One CSV field."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)
