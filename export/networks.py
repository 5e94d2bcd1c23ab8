"""The two networks of the pipeline, their cost, and their checkpoints.

* :class:`SpineLocalizer` — 3D U-Net on the coarse CT (``[B, 1, Z, Y, X]`` → probability
  ``[B, 1, Z, Y, X]``), DESIGN §1 step 1.
* :class:`VertebraDetector` — 2D anchor-free network on the straightened sagittal image
  (``[B, 1, S, V]`` → centre heatmap, keypoint offsets and level logits at stride 4), step 3.

Tensor names, shapes, units and normalisation are those of :mod:`vfq.tensors`; the ``forward`` of
each network returns exactly what the exported graph outputs (sigmoid applied). Training losses
should use :meth:`SpineLocalizer.forward_logits` / :meth:`VertebraDetector.forward_raw`, which
stop before the sigmoid.

Only layers that TensorRT 10 and ONNX Runtime run well are used: Conv, BatchNorm (folded into the
convolutions at export), ReLU, MaxPool, AveragePool, ConvTranspose (k = 2, stride 2), Concat, Add,
Mul by a constant and Sigmoid.

Cost (:func:`describe`, multiply-adds of the convolutions; batch 1) at the typical shapes, and the
ONNX Runtime CPU latency (:func:`vfq.export.onnx_export.ort_latency`: median of 5, 2 threads, on
the 2-core AMD EPYC development machine, ORT 1.32):

================  ========================  ==========  =============  ===========
network           input                     parameters  multiply-adds  ORT latency
================  ========================  ==========  =============  ===========
SpineLocalizer    ``[1, 1, 80, 96, 96]``    350 809     9.97 G         0.28 s
VertebraDetector  ``[1, 1, 400, 96]``       596 863     0.58 G         7 ms
================  ========================  ==========  =============  ===========

Receptive field (measured from gradients): the localizer's covers ≈ 92 voxels (37 cm) along each
axis, the detector's ≈ 335 px along the spine (≈ 10 vertebrae), enough to tell levels from context.

``[1, 1, 80, 96, 96]`` is a 512×512×300 CT at 0.7×0.7×1 mm (358×358×300 mm) on the 4 mm grid
(90×90×75 voxels) padded to multiples of 16 (:func:`localizer_input_shape`); ``[1, 1, 400, 96]``
is a 400 mm straightened image at 1 mm per pixel.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

import vfq
from vfq import tensors
from vfq.errors import InputError, VfqError

__all__ = [
    "ARCHITECTURES",
    "HEATMAP_PRIOR_BIAS",
    "TUBE_PRIOR_BIAS",
    "TYPICAL_DETECTOR_INPUT",
    "TYPICAL_LOCALIZER_INPUT",
    "Checkpoint",
    "CheckpointError",
    "DetectorConfig",
    "LocalizerConfig",
    "NetworkSummary",
    "SpineLocalizer",
    "VertebraDetector",
    "describe",
    "load_checkpoint",
    "localizer_input_shape",
    "network_metadata",
    "save_checkpoint",
]

#: CenterNet's prior: the heatmap head starts at sigmoid(bias) = 0.1 everywhere.
HEATMAP_PRIOR_BIAS = -math.log((1.0 - 0.1) / 0.1)
#: The spine tube fills about 1 % of a scan: the localizer head starts at sigmoid(bias) ≈ 0.018.
#: Starting at 0.5 instead, 22 minutes of training learnt a constant (measured).
TUBE_PRIOR_BIAS = -4.0


def localizer_input_shape(
    ct_shape: Sequence[int] = (300, 512, 512), spacing_mm: Sequence[float] = (1.0, 0.7, 0.7)
) -> tuple[int, int, int, int, int]:
    """The localizer input shape ``(1, 1, Z, Y, X)`` for a CT of ``ct_shape`` voxels ``(z, y, x)``
    with ``spacing_mm`` ``(z, y, x)``: the extent in mm over ``LOCALIZER_SPACING_MM`` (rounded up),
    padded up to multiples of ``LOCALIZER_MULTIPLE``. The default, a 512×512×300 CT at
    0.7×0.7×1 mm, gives ``(1, 1, 80, 96, 96)``."""
    if len(ct_shape) != 3 or len(spacing_mm) != 3:
        raise InputError(f"expected a (z, y, x) shape and spacing, got {ct_shape!r} and {spacing_mm!r}")
    mult = tensors.LOCALIZER_MULTIPLE
    dims = []
    for n, s in zip(ct_shape, spacing_mm):
        if n <= 0 or s <= 0:
            raise InputError(f"CT shape and spacing must be positive, got {ct_shape!r}, {spacing_mm!r} mm")
        coarse = math.ceil(n * s / tensors.LOCALIZER_SPACING_MM - 1e-6)
        dims.append(mult * math.ceil(coarse / mult))
    return (1, 1, dims[0], dims[1], dims[2])


#: The localizer input of a 512×512×300 CT at 0.7×0.7×1 mm.
TYPICAL_LOCALIZER_INPUT: tuple[int, ...] = localizer_input_shape()
#: The detector input of a 400 mm straightened image at 1 mm per pixel.
TYPICAL_DETECTOR_INPUT: tuple[int, ...] = (1, 1, 400, tensors.DETECTOR_WIDTH_PX)


def _conv_bn_relu(dim: int, cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3×3(×3) convolution (no bias), BatchNorm, ReLU; ``padding = dilation`` keeps the size
    (divided by ``stride``)."""
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    norm = nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d
    return nn.Sequential(
        conv(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


def _check_input(x: torch.Tensor, ndim: int, multiple: int, name: str, axes: str) -> None:
    """Refuse an input of the wrong rank, channel count or spatial size (skipped while tracing)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return
    shape = tuple(x.shape)
    if x.ndim != ndim or shape[1] != 1 or any(n % multiple for n in shape[2:]) or 0 in shape:
        fixed = shape[:2] + tuple(multiple * math.ceil(n / multiple) for n in shape[2:])
        raise InputError(
            f"{name} expects a float tensor [B, 1, {axes}] with {axes} positive multiples of {multiple}, "
            f"got shape {list(shape)}; pad with the value of air ({tensors.AIR_INPUT}) up to "
            f"{list(fixed)}"
        )


@dataclass(frozen=True)
class LocalizerConfig:
    """Hyper-parameters of :class:`SpineLocalizer`.

    Attributes:
        channels: feature channels per U-Net level, finest first; the grid is halved
            ``len(channels) - 1`` times.
        input_pool: the U-Net runs on the input average-pooled by this factor (2: the 4 mm grid
            becomes 8 mm), and a ConvTranspose brings its features back to the input grid before
            the head; 1 (the shipped network): no pooling. Inputs must be multiples of
            ``input_pool * 2 ** (len(channels) - 1)``. Measured with ``input_pool=2`` (8-16-32-64,
            trained as the shipped one, 20 min): ONNX Runtime 49 ms instead of 292 ms on 80×96×96
            (2 threads), the same median curve error on phantoms (1.2 mm) but a 95th percentile of
            11 mm instead of 5 mm, recall 0.990 instead of 0.997, and a curve 6 mm too anterior on
            the real lumbar CT: not shipped (``vfq-train localizer --input-pool 2`` trains it).
    """

    channels: tuple[int, ...] = (8, 16, 32, 64)
    input_pool: int = 1


def _normalisation_contract() -> dict[str, Any]:
    """The HU normalisation both networks share (part of their contracts)."""
    return {"HU_CLIP": list(tensors.HU_CLIP), "HU_SCALE": tensors.HU_SCALE, "AIR_INPUT": tensors.AIR_INPUT}


class SpineLocalizer(nn.Module):
    """3D U-Net that maps the coarse CT to the spine-tube probability (:mod:`vfq.tensors`).

    Input ``LOCALIZER_INPUT`` float32 ``[B, 1, Z, Y, X]`` (4 mm voxels, HU × ``HU_SCALE``, Z, Y, X
    multiples of :attr:`required_multiple`, which divides ``LOCALIZER_MULTIPLE``); output
    ``LOCALIZER_OUTPUT`` float32 ``[B, 1, Z, Y, X]``, probabilities in [0, 1].

    Each U-Net level is two conv-BN-ReLU blocks; MaxPool 2 goes down, ConvTranspose (k = 2,
    stride 2) goes up and is concatenated with the skip connection; a 1×1 convolution gives the
    logit. About 351 k parameters with the default channels 8-16-32-64. With ``input_pool`` > 1
    (:class:`LocalizerConfig`) the U-Net runs on the average-pooled input and a ConvTranspose
    (k = stride = ``input_pool``) and ReLU bring its finest features back to the input grid.
    """

    ARCHITECTURE: ClassVar[str] = "SpineLocalizer"
    VERSION: ClassVar[int] = 1

    def __init__(self, config: LocalizerConfig | None = None) -> None:
        super().__init__()
        self.config = config or LocalizerConfig()
        ch = tuple(int(c) for c in self.config.channels)
        if len(ch) < 2 or min(ch) < 1:
            raise ValueError(f"LocalizerConfig.channels needs >= 2 positive entries, got {ch}")
        pool = int(self.config.input_pool)
        if pool < 1:
            raise ValueError(f"LocalizerConfig.input_pool must be >= 1, got {pool}")
        self.required_multiple = pool * 2 ** (len(ch) - 1)
        if tensors.LOCALIZER_MULTIPLE % self.required_multiple:
            raise ValueError(
                f"{len(ch)} levels need inputs that are multiples of {self.required_multiple}, which "
                f"does not divide LOCALIZER_MULTIPLE = {tensors.LOCALIZER_MULTIPLE}"
            )
        self.encoders = nn.ModuleList()
        cin = 1
        for c in ch:
            self.encoders.append(nn.Sequential(_conv_bn_relu(3, cin, c), _conv_bn_relu(3, c, c)))
            cin = c
        self.pool = nn.MaxPool3d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for coarse, fine in zip(reversed(ch[1:]), reversed(ch[:-1])):
            self.ups.append(nn.ConvTranspose3d(coarse, fine, 2, stride=2))
            self.decoders.append(
                nn.Sequential(_conv_bn_relu(3, 2 * fine, fine), _conv_bn_relu(3, fine, fine))
            )
        self.pool_in = nn.AvgPool3d(pool) if pool > 1 else nn.Identity()
        self.up_out = (
            nn.Sequential(nn.ConvTranspose3d(ch[0], ch[0], pool, stride=pool), nn.ReLU(inplace=True))
            if pool > 1
            else nn.Identity()
        )
        self.head = nn.Conv3d(ch[0], 1, 1)
        nn.init.constant_(self.head.bias, TUBE_PRIOR_BIAS)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1, Z, Y, X]`` (before the sigmoid) of the input ``[B, 1, Z, Y, X]``."""
        _check_input(x, 5, self.required_multiple, self.ARCHITECTURE, "Z, Y, X")
        x = self.pool_in(x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(self.up_out(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probability ``[B, 1, Z, Y, X]`` in [0, 1] of the input ``[B, 1, Z, Y, X]``."""
        return torch.sigmoid(self.forward_logits(x))

    @classmethod
    def contract(cls) -> dict[str, Any]:
        """The :mod:`vfq.tensors` constants this network was built and trained for (JSON types)."""
        return {
            **_normalisation_contract(),
            "LOCALIZER_INPUT": tensors.LOCALIZER_INPUT,
            "LOCALIZER_OUTPUT": tensors.LOCALIZER_OUTPUT,
            "LOCALIZER_SPACING_MM": tensors.LOCALIZER_SPACING_MM,
            "LOCALIZER_MULTIPLE": tensors.LOCALIZER_MULTIPLE,
            "LOCALIZER_TUBE_SIGMA_MM": tensors.LOCALIZER_TUBE_SIGMA_MM,
        }

    def describe(self, input_shape: Sequence[int] = TYPICAL_LOCALIZER_INPUT) -> NetworkSummary:
        """Parameters and multiply-adds for ``input_shape`` (default: a 512×512×300 CT)."""
        return describe(self, input_shape)


@dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters of :class:`VertebraDetector`.

    Attributes:
        widths: encoder channels at strides 1, 2, 4, 8, 16 (two conv-BN-ReLU blocks each; the
            first of strides 2..16 has stride 2).
        context_dilations: dilations of the residual 3×3 blocks at stride 16 that widen the
            receptive field (≈ 290 px along the spine with the defaults: several vertebrae).
        decoder_widths: channels of the decoder at strides 8 and 4.
        head_width: channels of the 3×3 layer of each output head.
        offset_scale_px: the offset head's raw output is multiplied by this (input pixels), so that
            the layer works at unit scale while the graph outputs pixels.
    """

    widths: tuple[int, ...] = (16, 24, 32, 64, 96)
    context_dilations: tuple[int, ...] = (2, 4)
    decoder_widths: tuple[int, int] = (64, 48)
    head_width: int = 32
    offset_scale_px: float = 16.0


class VertebraDetector(nn.Module):
    """2D anchor-free detector of vertebral bodies on the straightened sagittal image.

    Input ``DETECTOR_INPUT`` float32 ``[B, 1, S, V]`` (1 mm pixels, S and V multiples of
    ``DETECTOR_MULTIPLE``). Outputs at stride ``DETECTOR_STRIDE``, in this order:

    * ``DETECTOR_HEATMAP`` ``[B, 1, S/4, V/4]`` — centre probability in [0, 1];
    * ``DETECTOR_OFFSETS`` ``[B, 12, S/4, V/4]`` — ``(ds0, dv0, …, ds5, dv5)`` from the cell centre
      to the six keypoints, input pixels;
    * ``DETECTOR_LEVELS`` ``[B, 18, S/4, V/4]`` — logits of ``DETECTOR_LEVEL_CLASSES``.

    Encoder with features at strides 1..16, dilated residual context at stride 16, a U-Net decoder
    back to stride 4, one head (3×3 conv, ReLU, 1×1 conv) per output.
    """

    ARCHITECTURE: ClassVar[str] = "VertebraDetector"
    VERSION: ClassVar[int] = 1

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DetectorConfig()
        w = tuple(int(c) for c in cfg.widths)
        if len(w) != 5:
            raise ValueError(f"DetectorConfig.widths needs 5 entries (strides 1..16), got {w}")
        if tensors.DETECTOR_STRIDE != 4:
            raise ValueError(f"this decoder ends at stride 4, DETECTOR_STRIDE is {tensors.DETECTOR_STRIDE}")
        self.required_multiple = 16
        if tensors.DETECTOR_MULTIPLE % self.required_multiple:
            raise ValueError(f"DETECTOR_MULTIPLE = {tensors.DETECTOR_MULTIPLE} is not a multiple of 16")
        self.stages = nn.ModuleList([nn.Sequential(_conv_bn_relu(2, 1, w[0]), _conv_bn_relu(2, w[0], w[0]))])
        for cin, cout in itertools.pairwise(w):
            self.stages.append(
                nn.Sequential(_conv_bn_relu(2, cin, cout, stride=2), _conv_bn_relu(2, cout, cout))
            )
        self.context = nn.ModuleList(_conv_bn_relu(2, w[4], w[4], dilation=d) for d in cfg.context_dilations)
        d8, d4 = (int(c) for c in cfg.decoder_widths)
        self.up8 = nn.ConvTranspose2d(w[4], d8, 2, stride=2)
        self.fuse8 = _conv_bn_relu(2, d8 + w[3], d8)
        self.up4 = nn.ConvTranspose2d(d8, d4, 2, stride=2)
        self.fuse4 = nn.Sequential(_conv_bn_relu(2, d4 + w[2], d4), _conv_bn_relu(2, d4, d4))
        self.heatmap_head = self._head(d4, 1)
        self.offset_head = self._head(d4, tensors.DETECTOR_OFFSET_CHANNELS)
        self.level_head = self._head(d4, len(tensors.DETECTOR_LEVEL_CLASSES))
        nn.init.constant_(self.heatmap_head[-1].bias, HEATMAP_PRIOR_BIAS)
        self.offset_scale_px = float(cfg.offset_scale_px)

    def _head(self, cin: int, cout: int) -> nn.Sequential:
        hw = int(self.config.head_width)
        return nn.Sequential(nn.Conv2d(cin, hw, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hw, cout, 1))

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(heatmap logits [B,1,S/4,V/4], offsets [B,12,S/4,V/4] px, level logits [B,18,S/4,V/4])``
        of the input ``[B, 1, S, V]`` — :meth:`forward` before the heatmap sigmoid."""
        _check_input(x, 4, self.required_multiple, self.ARCHITECTURE, "S, V")
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        for block in self.context:
            x = x + block(x)
        x = self.fuse8(torch.cat([self.up8(x), feats[3]], dim=1))
        x = self.fuse4(torch.cat([self.up4(x), feats[2]], dim=1))
        offsets = self.offset_head(x) * self.offset_scale_px
        return self.heatmap_head(x), offsets, self.level_head(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(DETECTOR_HEATMAP, DETECTOR_OFFSETS, DETECTOR_LEVELS)`` of the input ``[B, 1, S, V]``."""
        heatmap_logits, offsets, level_logits = self.forward_raw(x)
        return torch.sigmoid(heatmap_logits), offsets, level_logits

    @classmethod
    def contract(cls) -> dict[str, Any]:
        """The :mod:`vfq.tensors` constants this network was built and trained for (JSON types)."""
        return {
            **_normalisation_contract(),
            "DETECTOR_INPUT": tensors.DETECTOR_INPUT,
            "DETECTOR_HEATMAP": tensors.DETECTOR_HEATMAP,
            "DETECTOR_OFFSETS": tensors.DETECTOR_OFFSETS,
            "DETECTOR_LEVELS": tensors.DETECTOR_LEVELS,
            "DETECTOR_PIXEL_MM": tensors.DETECTOR_PIXEL_MM,
            "DETECTOR_WIDTH_PX": tensors.DETECTOR_WIDTH_PX,
            "DETECTOR_SLAB_MM": tensors.DETECTOR_SLAB_MM,
            "DETECTOR_STRIDE": tensors.DETECTOR_STRIDE,
            "DETECTOR_MULTIPLE": tensors.DETECTOR_MULTIPLE,
            "DETECTOR_CENTER_SIGMA_CELLS": tensors.DETECTOR_CENTER_SIGMA_CELLS,
            "DETECTOR_LEVEL_CLASSES": [level.value for level in tensors.DETECTOR_LEVEL_CLASSES],
            "DETECTOR_OFFSET_CHANNELS": tensors.DETECTOR_OFFSET_CHANNELS,
        }

    def describe(self, input_shape: Sequence[int] = TYPICAL_DETECTOR_INPUT) -> NetworkSummary:
        """Parameters and multiply-adds for ``input_shape`` (default: a 400 mm straightened image)."""
        return describe(self, input_shape)


#: Architecture name → class; the names are what checkpoints and ONNX metadata record.
ARCHITECTURES: dict[str, type[SpineLocalizer] | type[VertebraDetector]] = {
    SpineLocalizer.ARCHITECTURE: SpineLocalizer,
    VertebraDetector.ARCHITECTURE: VertebraDetector,
}


# ---------------------------------------------------------------------------------------------------
# Cost


@dataclass(frozen=True)
class NetworkSummary:
    """Size and cost of a network for one input shape.

    Attributes:
        architecture: the class name (``"SpineLocalizer"``).
        input_shape: the input ``[B, 1, …]``.
        output_shapes: the shape of each output, in :mod:`vfq.tensors` order.
        parameters: trainable parameters (BatchNorm affine included; running statistics excluded).
        macs: multiply-adds of the convolution, transposed-convolution and linear layers,
            ``k^d · Cin/groups · Cout · output voxels`` per convolution (``· input voxels`` for a
            transposed one). Element-wise work (BatchNorm — folded at export —, ReLU, sigmoid, adds)
            is not counted; it is below 1 % of the total here.
    """

    architecture: str
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    parameters: int
    macs: int

    def __str__(self) -> str:
        outs = ", ".join(str(list(s)) for s in self.output_shapes)
        return (
            f"{self.architecture}: {self.parameters:,} parameters; {list(self.input_shape)} → {outs}; "
            f"{self.macs / 1e9:.2f} G multiply-adds"
        )


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-adds of one convolution / transposed convolution / linear layer call."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        k = math.prod(module.kernel_size)
        return (
            k
            * module.in_channels
            * (module.out_channels // module.groups)
            * math.prod(inp.shape[2:])
            * (inp.shape[0])
        )
    if isinstance(module, nn.modules.conv._ConvNd):
        k = math.prod(module.kernel_size)
        return (
            k
            * (module.in_channels // module.groups)
            * module.out_channels
            * math.prod(out.shape[2:])
            * (out.shape[0])
        )
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (out.numel() // module.out_features)
    return 0


def describe(model: nn.Module, input_shape: Sequence[int]) -> NetworkSummary:
    """Parameter count and multiply-adds of ``model`` for an input of ``input_shape``.

    Counted analytically, layer by layer, from each layer's definition and the output shape it
    produces; the forward pass runs on a copy on PyTorch's ``meta`` device, so no arithmetic is done
    and any input size is cheap.
    """
    shape = tuple(int(n) for n in input_shape)
    replica = copy.deepcopy(model).to("meta").eval()
    total = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, args[0], out)

    handles = [m.register_forward_hook(hook) for m in replica.modules()]
    try:
        with torch.no_grad():
            outputs = replica(torch.zeros(shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    outs = outputs if isinstance(outputs, tuple) else (outputs,)
    return NetworkSummary(
        architecture=type(model).__name__,
        input_shape=shape,
        output_shapes=tuple(tuple(o.shape) for o in outs),
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=int(total),
    )


# ---------------------------------------------------------------------------------------------------
# Checkpoints

CHECKPOINT_FORMAT = "vfq.export.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(VfqError, ValueError):
    """A checkpoint that is not a vfq checkpoint, or holds another architecture, version or tensor
    contract than the one asked for."""


def network_metadata(model: nn.Module) -> dict[str, Any]:
    """The JSON-able description of ``model`` that checkpoints and ONNX files carry: architecture
    name and version, its config, the :mod:`vfq.tensors` constants, and the vfq version."""
    if not isinstance(model, SpineLocalizer | VertebraDetector):
        raise TypeError(f"expected a SpineLocalizer or VertebraDetector, got {type(model).__name__}")
    return {
        "architecture": model.ARCHITECTURE,
        "architecture_version": model.VERSION,
        "config": json.loads(json.dumps(asdict(model.config))),
        "contract": model.contract(),
        "vfq_version": vfq.__version__,
    }


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the network (in eval mode, on the CPU unless asked otherwise), its
    metadata (:func:`network_metadata`) and the caller's ``extra`` dictionary."""

    model: SpineLocalizer | VertebraDetector
    metadata: dict[str, Any]
    extra: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (``torch.save`` of a plain dict; written to
    a temporary file and renamed, so a crash never leaves half a checkpoint).

    Args:
        path: the file to write (parent folders are created).
        model: a :class:`SpineLocalizer` or :class:`VertebraDetector`.
        extra: small JSON-able facts to keep with the weights (epoch, loss, data set, …).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    metadata = network_metadata(model)
    extra_dict = dict(extra or {})
    try:
        extra_dict = json.loads(json.dumps(extra_dict, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint 'extra' must be JSON-able (str, numbers, lists, dicts): {exc}"
        ) from exc
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "metadata": metadata,
        "extra": extra_dict,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(
    path: str | os.PathLike[str],
    architecture: str | type[nn.Module] | None = None,
    *,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Rebuild the network saved by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        architecture: the expected architecture (name or class); ``None`` accepts either network.
        map_location: where the weights go.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a vfq checkpoint; another architecture than ``architecture``; an
            architecture version or a tensor contract (:mod:`vfq.tensors`) that differs from this
            code's; weights that do not fit the recorded config.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {source}")
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a file it cannot unpickle
        raise CheckpointError(f"{source} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a vfq network checkpoint (written by save_checkpoint)")
    if payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format version {payload.get('format_version')}, "
            f"this code reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    meta = payload["metadata"]
    name = meta.get("architecture")
    wanted = (
        architecture if isinstance(architecture, str | None) else getattr(architecture, "ARCHITECTURE", None)
    )
    if wanted is not None and name != wanted:
        raise CheckpointError(
            f"{source} holds a {name} (architecture version {meta.get('architecture_version')}), "
            f"but a {wanted} was expected; pass the {wanted} checkpoint instead"
        )
    cls = ARCHITECTURES.get(name)
    if cls is None:
        raise CheckpointError(f"{source} holds unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    if meta.get("architecture_version") != cls.VERSION:
        raise CheckpointError(
            f"{source} holds {name} version {meta.get('architecture_version')}, this code builds "
            f"version {cls.VERSION}; retrain, or use the vfq release that wrote it "
            f"({meta.get('vfq_version')})"
        )
    current = cls.contract()
    saved = meta.get("contract", {})
    differing = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, code {current.get(k)!r}" for k in differing)
        raise CheckpointError(f"{source} was trained for another tensor contract (vfq.tensors): {details}")
    config_cls = LocalizerConfig if cls is SpineLocalizer else DetectorConfig
    try:
        config = config_cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("config", {}).items()}
        )
        model = cls(config)  # type: ignore[arg-type]
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{source}: the weights do not fit a {name} with its recorded config: {exc}"
        ) from exc
    model.to(map_location).eval()
    return Checkpoint(model=model, metadata=meta, extra=dict(payload.get("extra", {})))
