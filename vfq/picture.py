"""Pictures a person can check: a 2D CT image with vertebral keypoints, endplate lines, levels and
Genant grades drawn on it (Pillow). Used for phantom previews and for the client's report overlay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vfq.keypoints import HEIGHT_PAIRS

#: Display window (HU) for bone and soft tissue together.
BONE_WINDOW = (-250.0, 750.0)
#: Outline colour per Genant grade 0-3.
GRADE_COLOURS = ((80, 220, 80), (255, 220, 0), (255, 140, 0), (255, 40, 40))


def window(image_hu: np.ndarray, lo: float = BONE_WINDOW[0], hi: float = BONE_WINDOW[1]) -> np.ndarray:
    """uint8 grey levels of a HU image under the display window ``[lo, hi]``."""
    scaled = (np.asarray(image_hu, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def draw_vertebrae(
    image_hu: np.ndarray,
    keypoints: np.ndarray,
    pixel_size: tuple[float, float],
    labels: Sequence[str] = (),
    grades: Sequence[int] = (),
    scale: float = 2.0,
) -> Image.Image:
    """Draw six-keypoint vertebrae on a 2D image.

    Args:
        image_hu: ``(rows, cols)`` HU image; row 0 is drawn at the top.
        keypoints: ``(N, 6, 2)`` keypoints as (row, col) in pixel units of ``image_hu``.
        pixel_size: (row, col) pixel size in mm; the picture is resampled to square pixels.
        labels: text per vertebra (e.g. ``"T12 g2"``).
        grades: Genant grade per vertebra (colours the outline); grade 0 if absent.
        scale: display pixels per mm.
    """
    rows, cols = image_hu.shape
    height, width = round(rows * pixel_size[0] * scale), round(cols * pixel_size[1] * scale)
    picture = Image.fromarray(window(image_hu)).resize((width, height), Image.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(picture)
    factor = np.array([pixel_size[0] * scale, pixel_size[1] * scale])
    for i, points in enumerate(np.asarray(keypoints, dtype=np.float64).reshape(-1, 6, 2)):
        xy = [(float(c), float(r)) for r, c in (points + 0.5) * factor]
        colour = GRADE_COLOURS[int(grades[i]) if i < len(grades) else 0]
        draw.line([xy[0], xy[1], xy[2]], fill=colour, width=2)  # upper endplate
        draw.line([xy[3], xy[4], xy[5]], fill=colour, width=2)  # lower endplate
        for upper, lower in HEIGHT_PAIRS:
            draw.line([xy[upper], xy[lower]], fill=(90, 160, 255), width=1)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour, fill=(0, 0, 0))
        if i < len(labels):
            anchor_x = max(x for x, _ in xy) + 6
            anchor_y = float(np.mean([y for _, y in xy])) - 5
            draw.text((anchor_x, anchor_y), labels[i], fill=colour)
    return picture


def straightened_overlay(
    sagittal_hu: np.ndarray,
    keypoints_sagittal: np.ndarray,
    pixel_size: tuple[float, float],
    labels: Sequence[str] = (),
    grades: Sequence[int] = (),
) -> Image.Image:
    """The straightened image the detector saw, head up, with vertebrae drawn on it.

    Args:
        sagittal_hu: ``(n_s, n_v)`` HU, row 0 the inferior end (as :mod:`vfq.straighten` makes it).
        keypoints_sagittal: ``(N, 6, 2)`` pixels ``(i_s, i_v)`` of that image.
        pixel_size: ``(s, v)`` pixel size in mm.
        labels, grades: per vertebra, as in :func:`draw_vertebrae`.
    """
    rows = sagittal_hu.shape[0] - 1 - np.asarray(keypoints_sagittal, dtype=np.float64)[..., 0]
    flipped = np.stack([rows, np.asarray(keypoints_sagittal, dtype=np.float64)[..., 1]], axis=-1)
    return draw_vertebrae(sagittal_hu[::-1], flipped, pixel_size, labels, grades)
