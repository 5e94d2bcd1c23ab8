"""Regenerate ``verse_pir_msk.nii.gz``, the VerSe label-map fixture (run from anywhere).

A 20 x 30 x 20 label map (SimpleITK index order i, j, k) in PIR orientation — index i runs toward
posterior, j toward inferior, k toward right, the usual VerSe orientation — with anisotropic spacing
and an off-origin, so that every axis permutation and flip of the readers is exercised. Each label
is a box (inclusive index ranges), so its mean voxel is the box centre:

=====  =====  ========  ========  ========  ======================
label  level  i (P)     j (I)     k (R)     mean (i, j, k)
=====  =====  ========  ========  ========  ======================
19     T12    6..13     0..3      8..11     (9.5, 1.5, 9.5)  touches j = 0
20     L1     5..12     6..11     8..11     (8.5, 8.5, 9.5)
21     L2     6..13     14..19    6..11     (9.5, 16.5, 8.5)
22     L3     7..14     22..27    10..13    (10.5, 24.5, 11.5)
=====  =====  ========  ========  ========  ======================

World LPS mm of index (i, j, k): (10 - 1.5 k, -20 + 1.0 i, 100 - 2.0 j).
After DICOMOrient(img, "LPS") the array has shape (30, 20, 20) and voxel (z, y, x) = (29 - j, i, 19 - k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE_IJK = (20, 30, 20)
SPACING_IJK = (1.0, 2.0, 1.5)
ORIGIN_LPS = (10.0, -20.0, 100.0)
#: Columns: world LPS directions of index axes i (posterior), j (inferior), k (right).
DIRECTION_PIR = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
BOXES = {  # label: ((i0, i1), (j0, j1), (k0, k1)), inclusive
    19: ((6, 13), (0, 3), (8, 11)),
    20: ((5, 12), (6, 11), (8, 11)),
    21: ((6, 13), (14, 19), (6, 11)),
    22: ((7, 14), (22, 27), (10, 13)),
}


def make_label_map() -> sitk.Image:
    array_kji = np.zeros(SIZE_IJK[::-1], dtype=np.uint8)
    for label, ((i0, i1), (j0, j1), (k0, k1)) in BOXES.items():
        array_kji[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = label
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(SPACING_IJK)
    image.SetOrigin(ORIGIN_LPS)
    image.SetDirection(DIRECTION_PIR.ravel().tolist())
    return image


if __name__ == "__main__":
    sitk.WriteImage(make_label_map(), str(Path(__file__).with_name("verse_pir_msk.nii.gz")))
