"""Seeded networks and CT-like inputs for the export tests (values in the normalised HU range of
:mod:`vfq.tensors`: air -1.024, soft tissue ≈ 0.04, bone 0.2-1.0)."""

from __future__ import annotations

import torch
from torch import nn

from vfq import tensors
from vfq.export.networks import SpineLocalizer, VertebraDetector

SOFT_TISSUE = 40.0 * tensors.HU_SCALE
DISC = 90.0 * tensors.HU_SCALE
CANCELLOUS = 250.0 * tensors.HU_SCALE
CORTICAL = 700.0 * tensors.HU_SCALE


def _trained_like(model: nn.Module, seed: int, heads: list[nn.Module]) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, as after training, so that
    the export's BatchNorm folding is exercised, and make the ``heads`` (the last 1×1 convolutions
    before a sigmoid) confident, so that the probability maps span most of [0, 1]."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for head in heads:
            head.weight.copy_(10.0 * torch.randn(head.weight.shape, generator=gen) / head.in_channels**0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.3 + 1.5 * torch.rand(n, generator=gen))
                m.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    model.eval()


def seeded_localizer(seed: int = 0) -> SpineLocalizer:
    """A :class:`SpineLocalizer` with seeded weights and trained-looking BatchNorms, in eval mode."""
    torch.manual_seed(seed)
    model = SpineLocalizer()
    _trained_like(model, seed, [model.head])
    with torch.no_grad():  # centre the logits on a CT-like input: probabilities on both sides of 0.5
        model.head.bias -= model.forward_logits(ct_like_volume((16, 32, 32), (15.0, 17.0), seed)).median()
    return model


def seeded_detector(seed: int = 0) -> VertebraDetector:
    """A :class:`VertebraDetector` with seeded weights and trained-looking BatchNorms, in eval mode."""
    torch.manual_seed(seed)
    model = VertebraDetector()
    _trained_like(model, seed, [model.heatmap_head[-1]])
    with torch.no_grad():
        logits = model.forward_raw(sagittal_like_image((64, 96), [30.0], 48.0, seed))[0]
        model.heatmap_head[-1].bias -= logits.median()
    return model


def ct_like_volume(
    shape: tuple[int, int, int], tube_yx: tuple[float, float], seed: int = 0, noise: float = 0.02
) -> torch.Tensor:
    """A coarse CT ``[1, 1, Z, Y, X]``: an elliptic soft-tissue body in air with a bright vertical
    bone tube (radius 2 voxels, cortical rim) at ``tube_yx`` (voxels), plus Gaussian noise."""
    z, y, x = shape
    gen = torch.Generator().manual_seed(seed)
    yy = torch.arange(y, dtype=torch.float32).view(1, y, 1)
    xx = torch.arange(x, dtype=torch.float32).view(1, 1, x)
    body = ((yy - (y - 1) / 2) / (0.45 * y)) ** 2 + ((xx - (x - 1) / 2) / (0.45 * x)) ** 2 <= 1.0
    r = torch.sqrt((yy - tube_yx[0]) ** 2 + (xx - tube_yx[1]) ** 2)
    img = torch.full((1, y, x), tensors.AIR_INPUT)
    img = torch.where(body, torch.tensor(SOFT_TISSUE), img)
    img = torch.where(r <= 2.0, torch.tensor(CANCELLOUS), img)
    img = torch.where((r > 1.2) & (r <= 2.0), torch.tensor(CORTICAL), img)
    vol = img.expand(z, y, x) + noise * torch.randn(z, y, x, generator=gen)
    return vol.reshape(1, 1, z, y, x).contiguous()


def tube_target(shape: tuple[int, int, int], tube_yx: tuple[float, float]) -> torch.Tensor:
    """The localizer target ``[1, 1, Z, Y, X]``: a Gaussian tube of σ = ``LOCALIZER_TUBE_SIGMA_MM``
    (in 4 mm voxels) around the vertical line at ``tube_yx``."""
    z, y, x = shape
    sigma = tensors.LOCALIZER_TUBE_SIGMA_MM / tensors.LOCALIZER_SPACING_MM
    yy = torch.arange(y, dtype=torch.float32).view(1, y, 1)
    xx = torch.arange(x, dtype=torch.float32).view(1, 1, x)
    r2 = (yy - tube_yx[0]) ** 2 + (xx - tube_yx[1]) ** 2
    return torch.exp(-r2 / (2 * sigma**2)).expand(z, y, x).reshape(1, 1, z, y, x).contiguous()


def sagittal_like_image(
    shape: tuple[int, int], centres_s: list[float], centre_v: float, seed: int = 0, noise: float = 0.02
) -> torch.Tensor:
    """A straightened sagittal image ``[1, 1, S, V]``: soft tissue with vertebral bodies (24 px tall,
    30 px deep, cortical rim) centred at rows ``centres_s`` and column ``centre_v``, discs between,
    plus Gaussian noise."""
    s, v = shape
    gen = torch.Generator().manual_seed(seed)
    ss = torch.arange(s, dtype=torch.float32).view(s, 1)
    vv = torch.arange(v, dtype=torch.float32).view(1, v)
    img = torch.full((s, v), SOFT_TISSUE)
    column = (vv - centre_v).abs() <= 15.0
    img = torch.where(column, torch.tensor(DISC), img)
    for c in centres_s:
        body = column & ((ss - c).abs() <= 12.0)
        core = ((vv - centre_v).abs() <= 13.5) & ((ss - c).abs() <= 10.5)
        img = torch.where(body, torch.tensor(CORTICAL), img)
        img = torch.where(core, torch.tensor(CANCELLOUS), img)
    img = img + noise * torch.randn(s, v, generator=gen)
    return img.reshape(1, 1, s, v)


def centre_target(shape: tuple[int, int], centre_s: float, centre_v: float) -> tuple[torch.Tensor, int, int]:
    """The heatmap target ``[1, 1, S/4, V/4]`` for one centre at input pixel ``(centre_s, centre_v)``:
    a Gaussian of σ = ``DETECTOR_CENTER_SIGMA_CELLS`` around its cell; also that cell ``(i, j)``."""
    stride = tensors.DETECTOR_STRIDE
    cells = (shape[0] // stride, shape[1] // stride)
    i = round((centre_s - (stride - 1) / 2) / stride)
    j = round((centre_v - (stride - 1) / 2) / stride)
    ii = torch.arange(cells[0], dtype=torch.float32).view(-1, 1)
    jj = torch.arange(cells[1], dtype=torch.float32).view(1, -1)
    sigma = tensors.DETECTOR_CENTER_SIGMA_CELLS
    heat = torch.exp(-((ii - i) ** 2 + (jj - j) ** 2) / (2 * sigma**2))
    return heat.reshape(1, 1, *cells), i, j
