"""Datasets and loaders: ImageNet-style class folders, or synthetic tensors on the device.

Two properties matter beyond the usual:
* resume is exact even with (persistent) workers: every training sample's augmentation is
  seeded from (seed, epoch, index), so it does not depend on worker processes' history;
* evaluation is exact across ranks: val is sharded without DistributedSampler's padding,
  so no sample is counted twice.
An unreadable image is skipped with a warning and counted; it never stops the run.
"""
from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from .errors import UserError

_WARNED = set()
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Split:
    root: str
    classes: List[str]
    samples: List[Tuple[str, int]]


def scan_split(data_dir: str, split: str, classes: Optional[Sequence[str]] = None) -> Split:
    """Read <data_dir>/<split>/<class>/<image> without opening any image."""
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise UserError(f"--data-dir {data_dir}: no '{split}/' folder (expected ImageNet layout "
                        f"{split}/<class>/<image>.JPEG)")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not found:
        raise UserError(f"{root}: no class folders inside")
    if classes is not None and list(classes) != found:
        missing = sorted(set(classes) - set(found))[:3]
        extra = sorted(set(found) - set(classes))[:3]
        raise UserError(f"{root}: class folders differ from train/ ({len(found)} vs "
                        f"{len(classes)}; missing {missing}, extra {extra})")
    samples = []
    for target, name in enumerate(found):
        cdir = os.path.join(root, name)
        files = sorted(f for f in os.listdir(cdir) if f.lower().endswith(IMG_EXTENSIONS))
        if not files:
            raise UserError(f"{cdir}: empty class folder (no image files)")
        samples.extend((os.path.join(cdir, f), target) for f in files)
    return Split(root, found, samples)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2 ** 63)


class ImageFiles(Dataset):
    """(path, target) list -> (tensor, target), or None for a file that cannot be decoded.

    A key is an index, or (index, seed): the transform then runs under that seed with the
    caller's RNG state saved and restored, so it is reproducible in any process.
    """

    def __init__(self, samples, transform):
        self.samples = samples
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, target = self.samples[index]
        try:
            from PIL import Image

            with open(path, "rb") as f:
                img = Image.open(f)
                img = img.convert("RGB")  # forces the full decode inside the try
        except (OSError, ValueError, SyntaxError) as exc:
            if path not in _WARNED:  # once per file and process; the counter counts every skip
                _WARNED.add(path)
                print(f"trainer: warning: skipping unreadable image {path}: {exc}",
                      file=sys.stderr, flush=True)
            return None
        if seed is None:
            return self.transform(img), target
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.manual_seed(seed)
            x = self.transform(img)
        random.setstate(py_state)
        return x, target


class EpochSeededSampler(Sampler):
    """Wraps a DistributedSampler; yields (index, per-sample seed) keys."""

    def __init__(self, inner: DistributedSampler, seed: int):
        self.inner = inner
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self):
        for i in self.inner:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self):
        return len(self.inner)


class ShardSampler(Sampler):
    """rank, rank+world, ... : every index exactly once across ranks, no padding."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def collate_train(batch):
    """Drop unreadable samples and refill the batch from the readable ones: every rank keeps
    the same batch shape (BatchNorm, DDP) while the bad file is never trained on."""
    good = [b for b in batch if b is not None]
    bad = len(batch) - len(good)
    if not good:
        raise RuntimeError("every image in a training batch was unreadable; check the data")
    while len(good) < len(batch):
        good.append(good[len(good) % (len(batch) - bad)])
    x, y = torch.utils.data.default_collate(good)
    return x, y, bad


def collate_eval(batch):
    """Drop unreadable samples: they are not counted in top-1/top-5."""
    good = [b for b in batch if b is not None]
    bad = len(batch) - len(good)
    if not good:
        return None, None, bad
    x, y = torch.utils.data.default_collate(good)
    return x, y, bad


class SyntheticLoader:
    """One random batch made on the device, served steps_per_epoch times (pure compute)."""

    def __init__(self, batch_size, img_size, num_classes, steps_per_epoch, device,
                 channels_last: bool):
        self.images = torch.randn(batch_size, 3, img_size, img_size, device=device)
        if channels_last:  # so the per-step conversion is a no-op, as for a real pipeline
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.targets = torch.randint(0, num_classes, (batch_size,), device=device)
        self.steps = steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Iterator:
        for _ in range(self.steps):
            yield self.images, self.targets, 0

    def __len__(self):
        return self.steps


class ImageLoader:
    """A DataLoader plus set_epoch for the sampler it owns."""

    def __init__(self, loader: DataLoader, sampler):
        self.loader = loader
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def _loader_kwargs(workers: int, pin_memory: bool, prefetch: int) -> dict:
    kw = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=prefetch)
    return kw


def build_transforms(model, img_size: int, args):
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({"input_size": (3, img_size, img_size)}, model=model)
    common = dict(input_size=cfg["input_size"], interpolation=args.interpolation,
                  mean=cfg["mean"], std=cfg["std"])
    train_tf = create_transform(is_training=True, scale=tuple(args.scale), hflip=args.hflip,
                                color_jitter=args.color_jitter, **common)
    eval_tf = create_transform(is_training=False, crop_pct=args.crop_pct, **common)
    return train_tf, eval_tf


def build_image_loaders(train: Split, val: Split, model, args, rank: int, world_size: int,
                        pin_memory: bool):
    train_tf, eval_tf = build_transforms(model, args.img_size, args)
    train_ds = ImageFiles(train.samples, train_tf)
    if len(train_ds) < args.batch_size * world_size:
        raise UserError(f"{train.root}: {len(train_ds)} images, fewer than one global batch "
                        f"({args.batch_size} x {world_size}); lower --batch-size")
    dist_sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank,
                                      shuffle=True, seed=args.seed, drop_last=False)
    sampler = EpochSeededSampler(dist_sampler, args.seed)
    kw = _loader_kwargs(args.workers, pin_memory, args.prefetch)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler,
                              drop_last=True, collate_fn=collate_train, **kw)
    val_ds = ImageFiles(val.samples, eval_tf)
    val_sampler = ShardSampler(len(val_ds), rank, world_size)
    val_loader = DataLoader(val_ds, batch_size=args.eval_batch_size or args.batch_size,
                            sampler=val_sampler, collate_fn=collate_eval, **kw)
    return ImageLoader(train_loader, sampler), ImageLoader(val_loader, val_sampler)


def steps_in_epoch(loader_len: int, limit: int) -> int:
    return min(loader_len, limit) if limit > 0 else loader_len


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
