"""``vfq-train``: train the spine localizer or the vertebra detector on a sample cache.

Time-budgeted (a cosine learning-rate schedule over the budget), resumable (``last.pt`` holds the
model, the optimiser and the progress), seeded, with a loss line every few steps::

    vfq-train localizer --cache out/cache/localizer --out out/train/localizer --minutes 20
    vfq-train detector  --cache out/cache/detector  --out out/train/detector  --minutes 34

The caches come from ``vfq-cache`` (:mod:`vfq.export.datasets`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vfq.export.losses import detector_loss, localizer_loss

logger = logging.getLogger("vfq.export.train")

NETWORKS = ("localizer", "detector")


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        network: ``"localizer"`` or ``"detector"``.
        cache: folder of cached samples for that network.
        out: folder for ``last.pt`` (resume point) and ``model.pt`` (final weights).
        minutes: wall-clock budget of this run, resumed runs included.
        batch_size: samples per step.
        learning_rate: peak learning rate (AdamW), decayed by a cosine over the budget.
        seed: seeds torch, numpy and the augmentations.
        threads: torch intra-op threads.
        log_every: steps between loss lines.
        checkpoint_seconds: seconds between resume points.
        max_steps: stop after this many steps in all (resumed runs included), if given.
        input_pool: the localizer's :attr:`~vfq.export.networks.LocalizerConfig.input_pool`
            (1: the shipped network; 2: about 6× faster, less precise).
    """

    network: str
    cache: Path
    out: Path
    minutes: float = 20.0
    batch_size: int = 4
    learning_rate: float = 2e-3
    seed: int = 0
    threads: int = 2
    log_every: int = 20
    checkpoint_seconds: float = 120.0
    max_steps: int | None = None
    input_pool: int = 1


def _model_and_data(config: TrainConfig) -> tuple[torch.nn.Module, torch.utils.data.Dataset]:
    from vfq.export import datasets, networks

    if config.network == "localizer":
        model = networks.SpineLocalizer(networks.LocalizerConfig(input_pool=config.input_pool))
        return model, datasets.LocalizerDataset(config.cache, seed=config.seed)
    if config.network == "detector":
        return networks.VertebraDetector(), datasets.DetectorDataset(config.cache, seed=config.seed)
    raise ValueError(f"unknown network {config.network!r}; expected one of {NETWORKS}")


def _step_loss(
    config: TrainConfig, model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict]:
    if config.network == "localizer":
        loss = localizer_loss(model(batch["image"]), batch["target"])
        return loss, {}
    return detector_loss(model(batch["image"]), batch)


def train(config: TrainConfig) -> Path:
    """Run (or resume) a training run; returns the path of the final weights ``model.pt``."""
    from vfq.export.networks import save_checkpoint

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    config.out.mkdir(parents=True, exist_ok=True)
    model, dataset = _model_and_data(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    resume = config.out / "last.pt"
    step, epoch, spent = 0, 0, 0.0
    if resume.exists():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, spent = state["step"], state["epoch"], state["seconds"]
        logger.info("resumed %s at step %d (%.1f of %.1f min)", resume, step, spent / 60, config.minutes)
    budget = config.minutes * 60.0
    start = time.perf_counter() - spent
    last_checkpoint = time.perf_counter()
    running: dict[str, float] = {}
    model.train()

    def done() -> bool:
        return time.perf_counter() - start >= budget or (
            config.max_steps is not None and step >= config.max_steps
        )

    while not done():
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=True
        )
        for batch in loader:
            if done():
                break
            elapsed = time.perf_counter() - start
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
            loss, parts = _step_loss(config, model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
            for name, value in {"loss": float(loss.detach()), **parts}.items():
                running[name] = 0.9 * running.get(name, value) + 0.1 * value
            if step % config.log_every == 0:
                logger.info(
                    "%s step %d epoch %d %.1f min lr %.2e %s",
                    config.network,
                    step,
                    epoch,
                    elapsed / 60,
                    optimizer.param_groups[0]["lr"],
                    " ".join(f"{k} {v:.4f}" for k, v in running.items()),
                )
            if time.perf_counter() - last_checkpoint > config.checkpoint_seconds:
                _save_resume(resume, model, optimizer, step, epoch, time.perf_counter() - start)
                last_checkpoint = time.perf_counter()
        epoch += 1
    seconds = time.perf_counter() - start
    _save_resume(resume, model, optimizer, step, epoch, seconds)
    final = config.out / "model.pt"
    save_checkpoint(
        final,
        model,
        {
            "steps": step,
            "epochs": epoch,
            "minutes": round(seconds / 60, 2),
            "final_loss": running,
            "config": {k: str(v) for k, v in asdict(config).items()},
        },
    )
    logger.info("saved %s after %d steps (%.1f min)", final, step, seconds / 60)
    return final


def _save_resume(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    epoch: int,
    seconds: float,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": epoch,
            "seconds": seconds,
        },
        tmp,
    )
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfq-train", description=__doc__.split("\n")[0])
    parser.add_argument("network", choices=NETWORKS)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--input-pool",
        type=int,
        default=1,
        help="localizer only: run its U-Net on the input pooled by this factor (2: faster, less precise)",
    )
    args = parser.parse_args(argv)
    if args.input_pool != 1 and args.network != "localizer":
        parser.error("--input-pool applies to the localizer only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(
        TrainConfig(
            args.network,
            args.cache,
            args.out,
            args.minutes,
            args.batch_size,
            args.learning_rate,
            args.seed,
            args.threads,
            input_pool=args.input_pool,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
