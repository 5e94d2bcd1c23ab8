"""Training losses of the two networks (PyTorch).

Localizer: binary cross-entropy on the tube heatmap plus a soft Dice term, so that the thin tube
(a few percent of the voxels) is not drowned by the background.

Detector (CenterNet-style): penalty-reduced focal loss on the centre heatmap with an ignore mask
(partial vertebrae), L1 on the keypoint offsets weighted by the regression mask (every cell of a
body, deformed bodies weighing more: :func:`vfq.export.detector_data.deformity_weights`),
cross-entropy on the level classes where a level target exists (-1 = ignore). The offsets weigh 0.5
in the total (0.1 before, when they drew a normal body's template over severe fractures; measured
together with the dense, deformity-weighted targets, not alone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

EPS = 1e-6


def localizer_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice between probabilities ``[B,1,Z,Y,X]`` and a target tube in [0, 1]."""
    p = prediction.clamp(EPS, 1 - EPS)
    bce = F.binary_cross_entropy(p, target)
    dims = tuple(range(1, p.ndim))
    overlap = (p * target).sum(dims)
    dice = 1 - (2 * overlap + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)
    return bce + dice.mean()


def focal_heatmap_loss(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of peaks.

    Args:
        prediction: probabilities ``[B,1,H,W]``.
        target: Gaussian peaks in [0, 1] (1 exactly at the centres).
        weight: 0 where the loss is ignored, 1 elsewhere (same shape), or None.
    """
    p = prediction.clamp(EPS, 1 - EPS)
    positive = target.ge(1 - 1e-4).float()
    negative = 1 - positive
    if weight is not None:
        positive = positive * weight
        negative = negative * weight
    pos_loss = -torch.log(p) * (1 - p) ** 2 * positive
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * negative
    peaks = positive.sum().clamp(min=1.0)
    return (pos_loss.sum() + neg_loss.sum()) / peaks


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the cells, weighted by ``mask`` ([B,1,H,W] or [B,H,W]; 0 = no target)."""
    if mask.ndim == prediction.ndim - 1:
        mask = mask.unsqueeze(1)
    mask = mask.float().expand_as(prediction)
    return (torch.abs(prediction - target) * mask).sum() / mask.sum().clamp(min=1.0)


def detector_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    offset_weight: float = 0.5,
    level_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total detector loss and its parts.

    ``batch`` holds ``heatmap`` [B,1,H,W], ``heatmap_weight`` [B,1,H,W], ``offsets`` [B,12,H,W],
    ``offset_mask`` [B,H,W], ``levels`` [B,H,W] (int64, -1 = ignore).
    """
    heatmap, offsets, logits = outputs
    heat = focal_heatmap_loss(heatmap, batch["heatmap"], batch.get("heatmap_weight"))
    regression = masked_l1(offsets, batch["offsets"], batch["offset_mask"])
    levels = batch["levels"]
    if bool((levels >= 0).any()):
        classification = F.cross_entropy(logits, levels, ignore_index=-1)
    else:
        classification = logits.sum() * 0.0
    total = heat + offset_weight * regression + level_weight * classification
    return total, {
        "heatmap": float(heat.detach()),
        "offsets": float(regression.detach()),
        "levels": float(classification.detach()),
    }
