"""The networks: shapes and value ranges, size and cost, receptive field, trainability, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from export_factories import (
    centre_target,
    ct_like_volume,
    sagittal_like_image,
    seeded_detector,
    seeded_localizer,
    tube_target,
)
from torch.nn import functional
from torch.utils.flop_counter import FlopCounterMode

from vfq import tensors
from vfq.errors import InputError
from vfq.export.networks import (
    HEATMAP_PRIOR_BIAS,
    TYPICAL_DETECTOR_INPUT,
    TYPICAL_LOCALIZER_INPUT,
    CheckpointError,
    LocalizerConfig,
    SpineLocalizer,
    VertebraDetector,
    describe,
    load_checkpoint,
    localizer_input_shape,
    save_checkpoint,
)

# --- shapes and ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 32, 48, 64), (2, 1, 16, 16, 32), (1, 1, 8, 24, 16)])
def test_localizer_output_is_a_probability_map_of_the_input_shape(shape: tuple[int, ...]) -> None:
    model = seeded_localizer(1)
    x = ct_like_volume(shape[2:], (shape[3] / 2, shape[4] / 2)).expand(shape).contiguous()
    with torch.no_grad():
        y = model(x)
        logits = model.forward_logits(x)
    assert y.shape == shape and y.dtype == torch.float32
    assert bool(torch.isfinite(y).all())
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float(y.max() - y.min()) > 1e-3  # not a constant map
    torch.testing.assert_close(y, torch.sigmoid(logits))


@pytest.mark.parametrize("shape", [(1, 1, 64, 96), (1, 1, 128, 96), (2, 1, 48, 32)])
def test_detector_outputs_follow_the_tensor_contract(shape: tuple[int, ...]) -> None:
    model = seeded_detector(2)
    x = torch.cat(
        [sagittal_like_image(shape[2:], [20.0, 45.0], shape[3] / 2, seed=i) for i in range(shape[0])]
    )
    with torch.no_grad():
        heatmap, offsets, levels = model(x)
        raw = model.forward_raw(x)
    b, s, v, stride = shape[0], shape[2], shape[3], tensors.DETECTOR_STRIDE
    assert heatmap.shape == (b, 1, s // stride, v // stride)
    assert offsets.shape == (b, tensors.DETECTOR_OFFSET_CHANNELS, s // stride, v // stride)
    assert (
        levels.shape
        == (b, len(tensors.DETECTOR_LEVEL_CLASSES), s // stride, v // stride)
        == (b, 18, s // 4, v // 4)
    )
    assert float(heatmap.min()) >= 0.0 and float(heatmap.max()) <= 1.0
    assert all(bool(torch.isfinite(t).all()) for t in (heatmap, offsets, levels))
    torch.testing.assert_close(heatmap, torch.sigmoid(raw[0]))
    torch.testing.assert_close(offsets, raw[1])


@pytest.mark.parametrize(
    ("model", "shape", "needed"),
    [
        (SpineLocalizer(), (1, 1, 30, 48, 64), "multiples of 8"),
        (SpineLocalizer(), (1, 2, 32, 48, 64), "[B, 1, Z, Y, X]"),
        (SpineLocalizer(), (1, 32, 48, 64), "[B, 1, Z, Y, X]"),
        (VertebraDetector(), (1, 1, 60, 96), "multiples of 16"),
        (VertebraDetector(), (1, 1, 64, 0), "positive"),
    ],
)
def test_wrong_input_shapes_are_refused_with_the_fix(
    model: torch.nn.Module, shape: tuple, needed: str
) -> None:
    with pytest.raises(InputError, match="pad with the value of air") as info:
        model(torch.zeros(shape))
    assert needed in str(info.value)


# --- size, cost, receptive field --------------------------------------------------------------------


def test_parameter_counts_are_in_the_stated_bands() -> None:
    localizer, detector = SpineLocalizer(), VertebraDetector()
    n_loc = sum(p.numel() for p in localizer.parameters())
    n_det = sum(p.numel() for p in detector.parameters())
    assert 340_000 <= n_loc <= 360_000  # the spike's 351 k (DESIGN §5)
    assert 300_000 <= n_det <= 1_000_000
    assert localizer.describe().parameters == n_loc == 350_809
    assert detector.describe().parameters == n_det == 596_863


def test_typical_shapes_and_their_documented_cost() -> None:
    assert (
        localizer_input_shape((300, 512, 512), (1.0, 0.7, 0.7))
        == TYPICAL_LOCALIZER_INPUT
        == (1, 1, 80, 96, 96)
    )
    assert localizer_input_shape((120, 256, 256), (2.5, 0.8, 0.8)) == (1, 1, 80, 64, 64)
    assert TYPICAL_DETECTOR_INPUT == (1, 1, 400, 96)
    loc = SpineLocalizer().describe()
    det = VertebraDetector().describe()
    assert loc.output_shapes == ((1, 1, 80, 96, 96),)
    assert det.output_shapes == ((1, 1, 100, 24), (1, 12, 100, 24), (1, 18, 100, 24))
    # The figures in the module docstring of vfq.export.networks.
    assert round(loc.macs / 1e9, 2) == 9.97
    assert round(det.macs / 1e9, 2) == 0.58
    assert "350,809 parameters" in str(loc)


@pytest.mark.parametrize(
    ("model", "shape"),
    [(SpineLocalizer(), (1, 1, 16, 32, 48)), (VertebraDetector(), (2, 1, 64, 96))],
)
def test_analytic_multiply_adds_match_torch_flop_counter(model: torch.nn.Module, shape: tuple) -> None:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(shape))
    assert 2 * describe(model, shape).macs == counter.get_total_flops() > 0


def test_multiply_adds_scale_with_the_number_of_voxels() -> None:
    model = SpineLocalizer()
    small = describe(model, (1, 1, 16, 32, 32)).macs
    assert describe(model, (1, 1, 16, 32, 64)).macs == 2 * small
    assert describe(model, (2, 1, 16, 32, 32)).macs == 2 * small


def test_heatmap_head_starts_at_the_centernet_prior() -> None:
    torch.manual_seed(0)
    model = VertebraDetector().eval()
    assert (
        float(model.heatmap_head[-1].bias.detach()) == pytest.approx(-2.197, abs=1e-3) == HEATMAP_PRIOR_BIAS
    )
    with torch.no_grad():
        heatmap, _, _ = model(sagittal_like_image((64, 96), [30.0], 48.0))
    assert 0.03 < float(heatmap.median()) < 0.3


def _span_of_influence(model: torch.nn.Module, x: torch.Tensor, index: tuple[int, ...], axis: int) -> int:
    """Extent (input pixels along ``axis``) of the inputs that influence one output element."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out[0] if isinstance(out, tuple) else out)[index].backward()
    grad = x.grad.abs().sum(dim=tuple(d for d in range(x.ndim) if d != axis))
    rows = torch.nonzero(grad > 0).flatten()
    return int(rows.max() - rows.min() + 1)


def test_detector_sees_several_vertebrae() -> None:
    torch.manual_seed(0)
    model = VertebraDetector().eval()
    span = _span_of_influence(model, 0.3 * torch.randn(1, 1, 512, 96), (0, 0, 64, 12), axis=2)
    assert span >= 250  # ≥ 8 vertebrae of ~30 mm at 1 mm per pixel


def test_localizer_sees_the_column_over_a_long_stretch() -> None:
    torch.manual_seed(0)
    model = SpineLocalizer().eval()
    span = _span_of_influence(model, 0.3 * torch.randn(1, 1, 128, 16, 16), (0, 0, 64, 8, 8), axis=2)
    assert span >= 80  # voxels of 4 mm: 32 cm


# --- trainability -----------------------------------------------------------------------------------


def test_localizer_learns_a_bright_tube() -> None:
    torch.manual_seed(0)
    model = SpineLocalizer().train()
    shape, tubes = (16, 32, 32), [(12.0, 18.0), (20.0, 11.0)]
    x = torch.cat([ct_like_volume(shape, t, seed=i) for i, t in enumerate(tubes)])
    y = torch.cat([tube_target(shape, t) for t in tubes])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        optimiser.zero_grad()
        loss = functional.binary_cross_entropy_with_logits(model.forward_logits(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    with torch.no_grad():
        logits = model.forward_logits(x)
    on_tube = logits[0, 0, :, 12, 18].mean()
    far = logits[0, 0, :, 3:6, 26:29].mean()
    assert float(on_tube) > float(far) + 0.5


def _focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = (target >= 1.0 - 1e-6).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def test_detector_learns_one_centre_its_keypoints_and_level() -> None:
    torch.manual_seed(0)
    model = VertebraDetector().train()
    shape, centre = (64, 96), (30.0, 50.0)
    x = sagittal_like_image(shape, [centre[0]], centre[1])
    heat, i, j = centre_target(shape, *centre)
    offsets = torch.tensor([-12.0, -14.0, -12.0, 0.0, -12.0, 14.0, 12.0, -14.0, 12.0, 0.0, 12.0, 14.0])
    level = torch.tensor([10])  # T10 in DETECTOR_LEVEL_CLASSES
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        optimiser.zero_grad()
        h, o, lv = model.forward_raw(x)
        parts = (
            _focal_loss(h, heat),
            (o[0, :, i, j] - offsets).abs().mean() / 8.0,
            functional.cross_entropy(lv[:, :, i, j], level),
        )
        sum(parts).backward()
        optimiser.step()
        history.append([p.item() for p in parts])
    first, last = history[0], history[-1]
    assert all(b < 0.5 * a for a, b in zip(first, last)), (first, last)
    with torch.no_grad():
        h, o, lv = model.forward_raw(x)
    assert int(h.flatten().argmax()) == i * (shape[1] // 4) + j
    assert int(lv[0, :, i, j].argmax()) == int(level)


# --- checkpoints ------------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_weights_metadata_and_extra(tmp_path) -> None:
    for model, x in (
        (seeded_localizer(3), ct_like_volume((16, 16, 16), (8.0, 8.0))),
        (seeded_detector(4), sagittal_like_image((64, 96), [30.0], 48.0)),
    ):
        path = save_checkpoint(
            tmp_path / "sub" / f"{model.ARCHITECTURE}.pt", model, {"epoch": 7, "loss": 0.25}
        )
        loaded = load_checkpoint(path, type(model))
        assert type(loaded.model) is type(model) and not loaded.model.training
        assert loaded.extra == {"epoch": 7, "loss": 0.25}
        assert loaded.metadata["architecture"] == model.ARCHITECTURE
        assert loaded.metadata["contract"] == model.contract()
        json.dumps(loaded.metadata)  # JSON-able
        with torch.no_grad():
            a, b = model(x), loaded.model(x)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            torch.testing.assert_close(u, v, rtol=0, atol=0)
        assert not list(tmp_path.glob("sub/.*.tmp"))


def test_checkpoint_keeps_a_non_default_config(tmp_path) -> None:
    model = SpineLocalizer(LocalizerConfig(channels=(4, 8, 16), input_pool=2))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "small.pt", model), "SpineLocalizer")
    assert loaded.model.config == LocalizerConfig(channels=(4, 8, 16), input_pool=2)
    assert loaded.model.required_multiple == 8  # pooled by 2, then halved twice
    assert SpineLocalizer(LocalizerConfig(channels=(4, 8, 16))).required_multiple == 4


def test_a_pooled_localizer_runs_its_u_net_on_the_grid_pooled_twofold() -> None:
    model = SpineLocalizer(LocalizerConfig(input_pool=2)).eval()
    seen: list[tuple[int, ...]] = []
    model.encoders[0].register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 48, 64))
    assert seen == [(1, 8, 16, 24, 32)]  # 8 mm
    assert tuple(out.shape) == (1, 1, 32, 48, 64)  # back on the 4 mm input grid
    assert model.describe((1, 1, 80, 96, 96)).macs < SpineLocalizer().describe().macs / 7
    with pytest.raises(ValueError, match="input_pool must be >= 1, got 0"):
        SpineLocalizer(LocalizerConfig(input_pool=0))


def test_loading_another_architecture_is_refused(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "det.pt", VertebraDetector())
    with pytest.raises(
        CheckpointError, match=r"holds a VertebraDetector .* but a SpineLocalizer was expected"
    ):
        load_checkpoint(path, SpineLocalizer)
    with pytest.raises(CheckpointError, match="SpineLocalizer was expected"):
        load_checkpoint(path, "SpineLocalizer")
    assert isinstance(load_checkpoint(path).model, VertebraDetector)


def _tampered(tmp_path, change) -> str:
    path = save_checkpoint(tmp_path / "ok.pt", SpineLocalizer())
    payload = torch.load(path, weights_only=True)
    change(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    return str(bad)


def test_other_version_contract_or_weights_are_refused(tmp_path) -> None:
    def version(p):
        p["metadata"]["architecture_version"] = 99

    def contract(p):
        p["metadata"]["contract"]["LOCALIZER_SPACING_MM"] = 2.0

    def config(p):
        p["metadata"]["config"]["channels"] = [8, 16, 32, 48]

    def unknown(p):
        p["metadata"]["architecture"] = "ResNet"

    with pytest.raises(CheckpointError, match="version 99, this code builds version 1"):
        load_checkpoint(_tampered(tmp_path, version))
    with pytest.raises(CheckpointError, match=r"LOCALIZER_SPACING_MM: checkpoint 2.0, code 4.0"):
        load_checkpoint(_tampered(tmp_path, contract))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(_tampered(tmp_path, config))
    with pytest.raises(CheckpointError, match="unknown architecture 'ResNet'"):
        load_checkpoint(_tampered(tmp_path, unknown))


def test_foreign_files_and_bad_extra_are_refused(tmp_path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a vfq network checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="JSON-able"):
        save_checkpoint(tmp_path / "x.pt", SpineLocalizer(), {"tensor": torch.zeros(1)})
    with pytest.raises(TypeError, match="SpineLocalizer or VertebraDetector"):
        save_checkpoint(tmp_path / "y.pt", torch.nn.Conv2d(1, 1, 1))
