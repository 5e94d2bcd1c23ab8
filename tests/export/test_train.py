"""Training: a few steps on tiny cached phantom samples lower the loss; runs resume and save
weights that load back."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from torch.utils.data import default_collate

from vfq.export.datasets import DetectorDataset, LocalizerDataset, build_cache
from vfq.export.detector_data import DetectorAugmentation
from vfq.export.localizer_data import LocalizerAugmentation
from vfq.export.losses import detector_loss, localizer_loss
from vfq.export.networks import SpineLocalizer, VertebraDetector, load_checkpoint
from vfq.export.train import TrainConfig, main, train


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    build_cache("localizer", [3, 4], root / "localizer", workers=1)
    build_cache("detector", [5], root / "detector", workers=1)
    return root


def _descend(model: torch.nn.Module, loss_of, steps: int = 12) -> list[float]:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = loss_of(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_localizer_loss_goes_down_on_phantom_crops(caches):
    torch.set_num_threads(2)
    data = LocalizerDataset(caches / "localizer", augmentation=LocalizerAugmentation(crop=(32, 32, 32)))
    batch = default_collate([data[0], data[1]])
    assert batch["target"].max() > 0.5  # the crops hold spine
    losses = _descend(SpineLocalizer(), lambda m: localizer_loss(m(batch["image"]), batch["target"]))
    assert losses[-1] < 0.92 * losses[0] and losses[-1] < min(losses[:4]), losses


def test_detector_loss_goes_down_on_a_straightened_phantom(caches):
    torch.set_num_threads(2)
    data = DetectorDataset(caches / "detector", augmentation=DetectorAugmentation(crop=(128, 96)))
    batch = default_collate([data[0]])
    assert batch["offset_mask"].sum() > 0  # the crop holds vertebrae
    losses = _descend(VertebraDetector(), lambda m: detector_loss(m(batch["image"]), batch)[0])
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_run_resumes_and_saves_loadable_weights(caches, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vfq.export.train")
    config = TrainConfig(
        "detector", caches / "detector", tmp_path / "run", minutes=10, batch_size=1, max_steps=2
    )
    first = train(config)
    steps = load_checkpoint(first).extra["steps"]
    assert steps == 2
    second = train(replace(config, max_steps=4))
    assert "resumed" in caplog.text
    checkpoint = load_checkpoint(second)
    assert isinstance(checkpoint.model, VertebraDetector)
    assert checkpoint.extra["steps"] == 4


def test_the_cli_trains_a_pooled_localizer_when_asked(caches, tmp_path):
    out = tmp_path / "pooled"
    args = ["localizer", "--cache", str(caches / "localizer"), "--out", str(out), "--batch-size", "1"]
    assert main([*args, "--input-pool", "2", "--minutes", "0.02"]) == 0
    model = load_checkpoint(out / "model.pt", "SpineLocalizer").model
    assert model.config.input_pool == 2 and model.required_multiple == 16
    with pytest.raises(SystemExit):
        main(["detector", "--cache", str(caches / "detector"), "--out", str(out), "--input-pool", "2"])


def test_localizer_learns_the_tube_of_one_batch(caches):
    """Overfitting one batch separates tube from background (a constant output fails this)."""
    torch.set_num_threads(2)
    data = LocalizerDataset(caches / "localizer", augmentation=LocalizerAugmentation(crop=(32, 32, 32)))
    batch = default_collate([data[0], data[1]])
    model = SpineLocalizer()
    _descend(model, lambda m: localizer_loss(m(batch["image"]), batch["target"]), steps=60)
    model.eval()
    with torch.no_grad():
        p = model(batch["image"])
    target = batch["target"]
    assert p[target > 0.5].mean() > 0.5 > 0.1 > p[target < 0.01].mean()
