"""The two resamplings of the CT — onto the localizer grid (step 1) and along the spine (step 3) — in
PyTorch, on the device a :class:`TorchResampler` is made for (a serving host's GPU).

They compute what :func:`vfq.preprocess.to_localizer_grid` and
:func:`vfq.straighten.straighten_sagittal` compute, with the same weights, sample positions, clipping
and air fill (the tests hold them to the numpy versions), and hand numpy arrays back; the python
steps use them when their config names a ``device`` (:mod:`vfq.server.backend`).

What each one moves to the device:

* the localizer input needs every voxel: the int16 CT goes over once (157 MB for 512 × 512 × 300), is
  clipped in float32 there slab by slab (:data:`CHUNK_PLANES`), and three matrix products along x, y
  and z average it onto the 4 mm grid (about 15 GFLOP, most of them on zero weights: well under a
  millisecond on a current GPU);
* the straightened image needs only the voxels around the curve: the box that holds every sample's
  eight neighbours is cut from the CT (a view) and copied over, typically a few MB, then sampled
  with ``grid_sample``. Samples outside the box lie outside the CT, where both versions read air.

The CT may be a numpy array (copied over as above) or a torch tensor already on the device — the
python steps read a CT that Triton holds in GPU memory through DLPack (:mod:`vfq.server.backend`),
and then nothing of it crosses to the host.

Needs torch where the steps run: the NGC Triton image has none; this project's Dockerfile adds it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from vfq.preprocess import LocalizerInput, localizer_grid, localizer_input, localizer_weights
from vfq.straighten import SpineCurve, StraightenedGrid
from vfq.straighten.resample import AIR_HU, grid_voxels, sagittal_image
from vfq.tensors import HU_CLIP, HU_SCALE
from vfq.volume import CTVolume

#: CT planes converted to float32 at once on the device: bounds the localizer input's device memory
#: (64 planes of 1024 × 1024 are 256 MiB) whatever the size of the scan.
CHUNK_PLANES = 64


class TorchResampler:
    """Resamples CTs on one torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``)."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)

    def _to_device(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``array`` on this device: a tensor already there as it is, anything else copied over."""
        if isinstance(array, torch.Tensor):
            return array.to(self.device)
        with warnings.catch_warnings():  # Triton's input arrays are read-only; nothing here writes them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def localizer_input(self, ct: CTVolume) -> LocalizerInput:
        """:func:`vfq.preprocess.to_localizer_grid` on this device."""
        wz, wy, wx = (self._to_device(w.astype(np.float32)) for w in localizer_weights(ct.geometry))
        nz = ct.array.shape[0]
        with torch.inference_mode():
            rows = torch.empty((nz, wy.shape[0], wx.shape[0]), dtype=torch.float32, device=self.device)
            for z0 in range(0, nz, CHUNK_PLANES):  # the float32 copy of the CT, a slab at a time
                hu = self._to_device(ct.array[z0 : z0 + CHUNK_PLANES]).to(torch.float32)
                rows[z0 : z0 + hu.shape[0]] = torch.matmul(wy, torch.matmul(hu.clamp_(*HU_CLIP), wx.T))
            means = torch.matmul(wz, rows.reshape(nz, -1)).reshape(-1, *rows.shape[1:])
            scaled = (means * HU_SCALE).cpu().numpy()
        return localizer_input(scaled, localizer_grid(ct.geometry))

    def sagittal(self, ct: CTVolume, curve: SpineCurve, grid: StraightenedGrid) -> np.ndarray:
        """:func:`vfq.straighten.straighten_sagittal` (the whole slab averaged) on this device."""
        voxels = grid_voxels(ct.geometry, curve, grid)  # (z, y, x), each (n_s, n_v, n_w)
        box = []
        for q, n in zip(voxels, ct.array.shape):
            low = int(np.clip(np.floor(q.min()), 0, n - 1))
            high = int(np.clip(np.floor(q.max()) + 2, low + 1, n))
            box.append((low, high))
        crop = ct.array[tuple(slice(low, high) for low, high in box)]
        # grid_sample's coordinates: (x, y, z) scaled to [-1, 1] between the crop's first and last
        # voxel centres; its zero padding is air once the crop is shifted by the air value
        coords = np.stack(
            [
                (q - low) * (2.0 / max(high - low - 1, 1)) - 1.0
                for q, (low, high) in zip(voxels[::-1], box[::-1])
            ],
            axis=-1,
        ).astype(np.float32)
        with torch.inference_mode():
            shifted = (self._to_device(crop).to(torch.float32) - AIR_HU)[None, None]
            slab = F.grid_sample(
                shifted,
                self._to_device(coords)[None],
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )[0, 0]
            slab = (slab + AIR_HU).cpu().numpy()
        return sagittal_image(slab, grid)
