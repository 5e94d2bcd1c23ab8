"""Between SimpleITK images and vfq's (array, :class:`~vfq.volume.ImageGeometry`) pairs.

SimpleITK orders sizes and spacings ``(x, y, z)``; numpy arrays and vfq's geometry use
``(z, y, x)`` for them; origins and direction matrices are world LPS in both.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from vfq.errors import NotCTError
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


class _PixelBuffer:
    """Keeps a SimpleITK image alive while a numpy array uses its pixel buffer (no copy).

    ``sitk.GetArrayViewFromImage`` returns a view that does not hold the image: the view dangles
    once the image is freed. An array made from this object holds it as its ``base``.
    """

    def __init__(self, image: sitk.Image) -> None:
        view = sitk.GetArrayViewFromImage(image)  # makes the buffer unique to this image
        interface = dict(view.__array_interface__)
        interface["data"] = (interface["data"][0], False)  # ours alone: writeable like any array
        self._image = image
        self.__array_interface__ = interface


def pixel_array(image: sitk.Image) -> np.ndarray:
    """The pixels of ``image`` as a writeable ``(z, y, x)`` array on its own buffer (no copy); the
    array keeps the image alive, and writing to it writes the image."""
    return np.asarray(_PixelBuffer(image))


def require_grayscale(image: sitk.Image, source: str) -> None:
    """Refuse an image with several components per pixel (RGB, vectors): a CT has one.

    Raises:
        NotCTError: naming ``source``.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotCTError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per pixel "
            f"({image.GetPixelIDTypeAsString()}); expected a grayscale CT in HU."
        )
