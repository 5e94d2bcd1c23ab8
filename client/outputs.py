"""Writing results: the JSON report, the batch CSV and the overlay picture.

Every writer is atomic: it writes a temporary file in the target's folder and renames it over the
target (``os.replace``), so that a reader never sees half a file and an interrupted run leaves the
previous file (or none), never a truncated one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vfq.client.results import CSV_COLUMNS, SAGITTAL_PIXEL_MM, StudyResult
from vfq.keypoints import NUM_KEYPOINTS
from vfq.picture import straightened_overlay

__all__ = [
    "ERROR_SCHEMA_ID",
    "NOT_ASSESSABLE_PICTURE_SIZE",
    "OVERLAY_SCALE",
    "overlay_picture",
    "write_csv",
    "write_error_json",
    "write_json",
    "write_overlay_png",
]

#: The ``"schema"`` value of the error records of :func:`write_error_json`.
ERROR_SCHEMA_ID = "vfq-error/1"
#: Display pixels per mm of the overlay picture (:func:`vfq.picture.draw_vertebrae`'s default).
OVERLAY_SCALE = 2.0
#: ``(width, height)`` of the picture written for a study without a straightened image.
NOT_ASSESSABLE_PICTURE_SIZE = (480, 160)


def _write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (the file
    gets the permissions of any new file, as the umask allows)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(result: StudyResult, path: str | os.PathLike[str]) -> Path:
    """Write the result's JSON form (schema ``vfq-result/1``, UTF-8, indented) to ``path``."""
    text = json.dumps(result.to_json_dict(), indent=2, ensure_ascii=False, allow_nan=False)
    return _write_atomically(path, (text + "\n").encode("utf-8"))


def write_error_json(error: BaseException, source: str, path: str | os.PathLike[str]) -> Path:
    """Record why a study failed: ``{"schema": "vfq-error/1", "source", "type", "message"}`` (the
    exception's class name and text)."""
    record = {
        "schema": ERROR_SCHEMA_ID,
        "source": source,
        "type": type(error).__name__,
        "message": str(error),
    }
    text = json.dumps(record, indent=2, ensure_ascii=False)
    return _write_atomically(path, (text + "\n").encode("utf-8"))


def write_csv(
    results: Iterable[StudyResult] | Mapping[str, StudyResult], path: str | os.PathLike[str]
) -> Path:
    """Write one CSV row per vertebra of every study (columns :data:`~vfq.client.results.CSV_COLUMNS`).

    Args:
        results: the studies; as a mapping, its keys fill the ``study`` column (else the source).
        path: the CSV file (UTF-8, comma-separated, a header row).
    """
    studies = results.items() if isinstance(results, Mapping) else ((None, r) for r in results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for study, result in studies:
        writer.writerows(result.csv_rows(study))
    return _write_atomically(path, buffer.getvalue().encode("utf-8"))


def overlay_picture(result: StudyResult) -> Image.Image:
    """The picture a person checks the result on.

    The straightened sagittal image (bone window, head up, :data:`OVERLAY_SCALE` display pixels per
    mm: ``2 S × 2 V`` pixels for an ``(S, V)`` image of 1 mm pixels) with each vertebra's six
    keypoints, its endplate and height lines coloured by Genant grade, and its level and grade
    (``"T12 g2"``). A study without a straightened image (not assessable) gives a
    :data:`NOT_ASSESSABLE_PICTURE_SIZE` picture stating the reason.
    """
    if result.sagittal_image.size == 0:
        picture = Image.new("RGB", NOT_ASSESSABLE_PICTURE_SIZE, (0, 0, 0))
        reason = result.not_assessable or "no straightened image"
        lines = ["not assessable:", *textwrap.wrap(reason, width=70)]
        ImageDraw.Draw(picture).multiline_text((12, 12), "\n".join(lines), fill=(255, 255, 255), spacing=6)
        return picture
    return straightened_overlay(
        result.sagittal_image,
        np.array([v.keypoints_sagittal for v in result.vertebrae]).reshape(-1, NUM_KEYPOINTS, 2),
        SAGITTAL_PIXEL_MM,
        labels=[f"{v.level or '?'} g{v.genant_grade}" for v in result.vertebrae],
        grades=[v.genant_grade for v in result.vertebrae],
    )


def write_overlay_png(result: StudyResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`overlay_picture` of the result as a PNG file."""
    buffer = io.BytesIO()
    overlay_picture(result).save(buffer, format="PNG")
    return _write_atomically(path, buffer.getvalue())
