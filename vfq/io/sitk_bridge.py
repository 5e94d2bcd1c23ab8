"""Between SimpleITK images and vfq's (array, :class:`~vfq.volume.ImageGeometry`) pairs.

SimpleITK orders sizes and spacings ``(x, y, z)``; numpy arrays and vfq's geometry use
``(z, y, x)`` for them; origins and direction matrices are world LPS in both.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from vfq.volume import ImageGeometry


def geometry_of(image: sitk.Image, shape: tuple[int, ...] | None = None) -> ImageGeometry:
    """The geometry of a 3D SimpleITK image (``shape`` defaults to its size, reversed)."""
    return ImageGeometry(
        shape=tuple(image.GetSize()[::-1]) if shape is None else shape,
        spacing=tuple(image.GetSpacing()[::-1]),
        origin=tuple(image.GetOrigin()),
        direction=np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def image_of(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    """A SimpleITK image of a ``(z, y, x)`` array with ``geometry`` attached (copies the voxels)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing[::-1])
    image.SetOrigin(geometry.origin)
    image.SetDirection(tuple(geometry.direction.ravel()))
    return image
