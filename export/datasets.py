"""Training data of both networks: phantom samples generated on the fly, cached, augmented, batched.

::

    build_cache("localizer", range(300), "out/cache/localizer")            # fast path (2 mm render)
    build_cache("localizer", range(300), "out/cache/localizer-faithful", faithful=True)
    build_cache("detector", range(300), "out/cache/detector")
    data = LocalizerDataset("out/cache/localizer", seed=0)                 # dict(image, target)
    data = DetectorDataset("out/cache/detector", seed=0)                   # dict(image, heatmap, ...)

The cache is one compressed ``.npz`` per sample (``{kind}-{seed:06d}.npz``) plus ``manifest.json``
(generator version, kind, path, and per seed its spec summary, field of view, shape and timing). A
sample is a pure function of its seed (and of the generator's code, whose version
:data:`GENERATOR_VERSION` the manifest keeps), so a cache can be rebuilt, extended with more seeds,
or resumed after an interruption: existing files are skipped, files are written under a temporary
name and renamed, and the manifest is rebuilt from the samples' own records.

Augmentation happens when a sample is read, with a generator seeded by ``(seed, epoch, index)``:
call :meth:`set_epoch` before each epoch (before the ``DataLoader`` iterates; its worker processes
copy the dataset) for fresh crops every epoch that are still reproducible.

Sample generation: :mod:`vfq.export.localizer_data` and :mod:`vfq.export.detector_data`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vfq.errors import InputError
from vfq.export.detector_data import (
    CurveError,
    DetectorAugmentation,
    DetectorSample,
    augment_detector,
    detector_targets,
    make_detector_sample,
)
from vfq.export.localizer_data import (
    NO_AUGMENTATION,
    LocalizerAugmentation,
    LocalizerSample,
    augment_localizer,
    make_localizer_sample,
)
from vfq.phantoms import sample_spec

__all__ = [
    "GENERATOR_VERSION",
    "KINDS",
    "MANIFEST",
    "NO_AUGMENTATION",
    "CurveError",
    "DetectorAugmentation",
    "DetectorDataset",
    "DetectorSample",
    "LocalizerAugmentation",
    "LocalizerDataset",
    "LocalizerSample",
    "build_cache",
    "load_sample",
    "make_detector_sample",
    "make_localizer_sample",
    "sample_path",
]

logger = logging.getLogger(__name__)

KINDS = ("localizer", "detector")
MANIFEST = "manifest.json"
#: Default share of phantoms with fractures (that of :func:`vfq.phantoms.sample_spec`).
FRACTURE_PROBABILITY = 0.6
#: Version of each kind's phantom sample generator, kept in the manifest (a manifest without one is
#: version 1). Bump it when the generator's samples change: :func:`build_cache` then refuses to
#: extend (or to pass off as rebuilt) a cache of the old samples. Detector 2: the spine curve's
#: error is mostly a smooth drift (:class:`CurveError`).
GENERATOR_VERSION = {"localizer": 1, "detector": 2}


def sample_path(folder: str | Path, kind: str, seed: int) -> Path:
    """Where the cached sample of ``kind`` and ``seed`` lives in ``folder``."""
    return Path(folder) / f"{kind}-{int(seed):06d}.npz"


def build_cache(
    kind: str,
    seeds: Iterable[int],
    folder: str | Path,
    workers: int = 2,
    faithful: bool = False,
    fracture_probability: float = FRACTURE_PROBABILITY,
) -> dict[str, Any]:
    """Generate the samples of ``seeds`` into ``folder`` (skipping those already there) and write
    the manifest.

    Args:
        kind: ``"localizer"`` or ``"detector"``.
        seeds: phantom seeds.
        folder: the cache folder (created); one kind and one localizer path per folder.
        workers: processes generating samples (``<= 1``: in this process).
        faithful: localizer only: full-resolution render + the server's preprocessing.
        fracture_probability: detector only: share of phantoms with fractures
            (:func:`vfq.phantoms.sample_spec`); recorded in each sample's info.

    Returns:
        The manifest (also written to ``folder/manifest.json``).

    Raises:
        InputError: unknown kind, ``faithful`` for the detector, or a folder holding another kind,
            localizer path or generator version.
    """
    if kind not in KINDS:
        raise InputError(f"unknown sample kind {kind!r}; expected one of {KINDS}")
    if faithful and kind != "localizer":
        raise InputError("faithful=True is a localizer option (the detector path is always full-resolution)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path_name = ("faithful" if faithful else "fast") if kind == "localizer" else "full-resolution"
    previous = _read_manifest(folder)
    if previous and (previous.get("kind") != kind or previous.get("path", path_name) != path_name):
        raise InputError(
            f"{folder} holds a {previous.get('kind')} cache ({previous.get('path')} path); asked for {kind} "
            f"({path_name}); use another folder"
        )
    version = GENERATOR_VERSION[kind]
    cached_version = previous.get("generator", 1) if previous else version
    if cached_version != version:
        raise InputError(
            f"{folder} holds {kind} samples of generator version {cached_version}; this code makes "
            f"version {version}: use another folder (or delete this one)"
        )
    todo = [int(s) for s in seeds if not sample_path(folder, kind, s).exists()]
    started = time.perf_counter()
    if todo:
        logger.info("caching %d %s samples in %s (%d workers)", len(todo), kind, folder, workers)
        if workers <= 1:
            for seed in todo:
                _write_sample(kind, seed, str(folder), faithful, fracture_probability)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(
                    _write_sample,
                    [kind] * len(todo),
                    todo,
                    [str(folder)] * len(todo),
                    [faithful] * len(todo),
                    [fracture_probability] * len(todo),
                ):
                    pass
    manifest = {"generator": version, **_rebuild_manifest(folder, kind, path_name)}
    manifest["last_build"] = {
        "generated": len(todo),
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write_json(folder / MANIFEST, manifest)
    return manifest


def _write_sample(kind: str, seed: int, folder: str, faithful: bool, fracture_probability: float) -> None:
    """Generate one phantom sample and write it atomically (module-level: runs in worker processes)."""
    if kind == "localizer":
        sample = make_localizer_sample(seed, faithful=faithful)
        info = sample.info
    else:
        sample = make_detector_sample(seed, spec=sample_spec(seed, fracture_probability=fracture_probability))
        info = {**sample.info, "fracture_probability": fracture_probability}
    _save(sample_path(folder, kind, seed), info, _sample_arrays(sample))


def _sample_arrays(sample: LocalizerSample | DetectorSample) -> dict[str, np.ndarray]:
    """The arrays a cached sample keeps (images as float16: network units, |x| ≤ 2.05, steps ≤ 1 HU)."""
    if isinstance(sample, LocalizerSample):
        return {
            "image": sample.image.astype(np.float16),
            "target": sample.target.astype(np.float16),
            "support": sample.support,
            "shape": np.array(sample.geometry.shape),
            "spacing": np.array(sample.geometry.spacing),
            "origin": np.array(sample.geometry.origin),
        }
    return {
        "image": sample.image.astype(np.float16),
        "n_s": np.array(sample.n_s),
        "keypoints_sv": sample.keypoints_sv.astype(np.float32),
        "levels": sample.levels,
        "valid": sample.valid,
    }


def _save(target: Path, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, info=np.array(json.dumps(info)), **arrays)
    os.replace(tmp, target)


def build_annotated_cache(kind: str, manifest: str | Path, folder: str | Path) -> dict[str, Any]:
    """Cache the ``kind`` samples of the annotated CTs of a dataset ``manifest``
    (:mod:`vfq.export.annotated_data`) into ``folder``, which the datasets then read like phantom caches.

    Scans already cached are skipped; a scan that cannot give a sample (unreadable, or centres only
    for the detector) is logged and left out, and the others are cached.

    Raises:
        InputError: unknown kind, a manifest that cannot be read, or a folder holding another cache.
    """
    from vfq.export.annotated_data import ANNOTATED_SEED_BASE, annotated_sample, read_manifest

    if kind not in KINDS:
        raise InputError(f"unknown sample kind {kind!r}; expected one of {KINDS}")
    scans = read_manifest(manifest)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(folder)
    if previous and (previous.get("kind"), previous.get("path")) != (kind, "annotated"):
        raise InputError(
            f"{folder} holds a {previous.get('kind')} cache ({previous.get('path')} path); use another folder"
        )
    started, skipped = time.perf_counter(), []
    for index, scan in enumerate(scans):
        target = sample_path(folder, kind, ANNOTATED_SEED_BASE + index)
        if target.exists():
            continue
        try:
            sample = annotated_sample(kind, scan, index)
        except InputError as error:
            logger.warning("%s left out: %s", scan.ct, error)
            skipped.append({"ct": str(scan.ct), "reason": str(error)})
            continue
        _save(target, sample.info, _sample_arrays(sample))
    result = _rebuild_manifest(folder, kind, "annotated")
    result["last_build"] = {"skipped": skipped, "seconds": round(time.perf_counter() - started, 2)}
    _write_json(folder / MANIFEST, result)
    return result


def load_sample(path: str | Path) -> dict[str, Any]:
    """A cached sample's arrays (float32 images) and its ``info`` record."""
    with np.load(path) as data:
        out = {key: data[key] for key in data.files}
    out["info"] = json.loads(str(out["info"]))
    for key in ("image", "target"):
        if key in out:
            out[key] = out[key].astype(np.float32)
    return out


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _rebuild_manifest(folder: Path, kind: str, path_name: str) -> dict[str, Any]:
    samples = {}
    for file in sorted(folder.glob(f"{kind}-*.npz")):
        with np.load(file) as data:
            info = json.loads(str(data["info"]))
        samples[str(info["seed"])] = info
    seconds = [s["seconds"] for s in samples.values()]
    return {
        "kind": kind,
        "path": path_name,
        "count": len(samples),
        "seconds_per_sample": round(float(np.mean(seconds)), 3) if seconds else None,
        "samples": samples,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _CacheDataset(Dataset):
    """The samples of one cache folder, sorted by seed, augmented per ``(seed, epoch, index)``."""

    kind = ""

    def __init__(self, folder: str | Path, *, seed: int = 0, augment: bool = True) -> None:
        self.folder = Path(folder)
        self.files = sorted(self.folder.glob(f"{self.kind}-*.npz"))
        if not self.files:
            raise InputError(
                f"no cached {self.kind} samples in {self.folder}; build them with "
                f"vfq.export.datasets.build_cache({self.kind!r}, seeds, {str(self.folder)!r})"
            )
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])


class LocalizerDataset(_CacheDataset):
    """Localizer training crops: ``{"image": [1, Z, Y, X], "target": [1, Z, Y, X]}`` float32.

    ``augment=False`` gives the validation crop (no random intensity changes, no clutter, no flip; the
    crop position still comes from the seeded generator, on the spine where there is one).
    """

    kind = "localizer"

    def __init__(
        self,
        folder: str | Path,
        *,
        seed: int = 0,
        augmentation: LocalizerAugmentation | None = None,
        augment: bool = True,
    ) -> None:
        super().__init__(folder, seed=seed, augment=augment)
        params = augmentation or LocalizerAugmentation()
        self.augmentation = params if augment else _no_augmentation(params)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        data = load_sample(self.files[index])
        image, target = augment_localizer(
            data["image"], data["target"], data["support"], self.rng(index), self.augmentation
        )
        return {"image": torch.from_numpy(image)[None], "target": torch.from_numpy(target)[None]}


def _no_augmentation(params: LocalizerAugmentation) -> LocalizerAugmentation:
    return replace(NO_AUGMENTATION, crop=params.crop)


class DetectorDataset(_CacheDataset):
    """Detector training windows with their targets at stride 4 (:func:`vfq.detection.encode_targets`).

    Items: ``image`` ``[1, S, V]``, ``heatmap`` and ``heatmap_weight`` ``[1, S/4, V/4]``, ``offsets``
    ``[12, S/4, V/4]``, ``offset_mask`` ``[1, S/4, V/4]`` (float32), ``levels`` ``[S/4, V/4]`` int64
    (-1 ignore) — the batch :func:`vfq.export.losses.detector_loss` reads. Fixed sizes: the default
    collate stacks them.
    """

    kind = "detector"

    def __init__(
        self,
        folder: str | Path,
        *,
        seed: int = 0,
        augmentation: DetectorAugmentation | None = None,
        augment: bool = True,
    ) -> None:
        super().__init__(folder, seed=seed, augment=augment)
        params = augmentation or DetectorAugmentation()
        if not augment:
            params = replace(
                params,
                shift_v=0,
                rotation_probability=0.0,
                hu_scale=(1.0, 1.0),
                hu_offset=(0.0, 0.0),
                noise_probability=0.0,
            )
        self.augmentation = params

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        data = load_sample(self.files[index])
        image, keypoints, valid = augment_detector(
            data["image"],
            int(data["n_s"]),
            data["keypoints_sv"],
            data["valid"],
            self.rng(index),
            self.augmentation,
        )
        t = detector_targets(keypoints, data["levels"], valid, image.shape)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "heatmap": torch.from_numpy(t.heatmap),
            "heatmap_weight": torch.from_numpy(t.heatmap_weight),
            "offsets": torch.from_numpy(t.offsets),
            "offset_mask": torch.from_numpy(t.regression_mask),
            "levels": torch.from_numpy(t.levels),
        }


def main(argv: list[str] | None = None) -> int:
    """``python -m vfq.export.datasets localizer out/cache/localizer --seeds 0:300 [--faithful]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vfq-cache", description="Cache training samples: phantoms or annotated CTs."
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seeds", default="0:300", help="start:stop (Python range), default 0:300")
    parser.add_argument(
        "--annotated", type=Path, metavar="MANIFEST", help="cache annotated CTs of a dataset manifest instead"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faithful", action="store_true", help="localizer: full-resolution render")
    parser.add_argument(
        "--fracture-probability",
        type=float,
        default=FRACTURE_PROBABILITY,
        help=f"detector: share of phantoms with fractures (default {FRACTURE_PROBABILITY})",
    )
    args = parser.parse_args(argv)
    start, _, stop = args.seeds.partition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.annotated:
        manifest = build_annotated_cache(args.kind, args.annotated, args.folder)
        logger.info("%s: %d annotated samples", args.folder, manifest["count"])
        return 0
    manifest = build_cache(
        args.kind,
        range(int(start), int(stop)),
        args.folder,
        args.workers,
        args.faithful,
        args.fracture_probability,
    )
    logger.info(
        "%s: %d samples, %s s per sample", args.folder, manifest["count"], manifest["seconds_per_sample"]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
