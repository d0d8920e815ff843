"""Cached views: run the frozen front of the network once per augmented photo, train only the rest.

While fine-tuning, every layer before the first unfrozen one is a fixed function (weights frozen,
BatchNorm in eval mode), so its output for a given augmented photo never changes. `build` runs that
frozen front once on the plain photo and on `views` augmented copies of each training photo and keeps
the activations (float16, memory-mapped) under the image cache; every epoch then draws one stored view
per photo and runs only the trainable tail. On a CPU that makes an epoch several times cheaper and a
second run with the same data, weights and augmentation costs no front passes at all. The price: each
photo is seen in `views` + 1 fixed variations instead of a fresh one every epoch, and caching costs about
as much as 20 cached epochs; on waste-mini 16 views scored 1.9 points below live augmentation in 5-fold
cross-validation (bench/RESULTS.md), so the trainer augments live unless `--views` is given.

The store is keyed by the photos' pixels, the frozen weights (and whether they compute on the int8 grid), the
split, the augmentation settings and the seed; a run with anything different builds a new one. The newest
`KEEP` stores are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekit.trainer.image_cache import cache_dir

if TYPE_CHECKING:
    from edgekit.bundle import Preprocess
    from edgekit.trainer.augment import AugmentConfig
    from edgekit.trainer.waste_data import Prepared

log = logging.getLogger(__name__)

VERSION = 1
"""Bump when what a store holds changes, so old stores are not reused."""
KEEP = 3
"""View stores kept on disk (newest first); older ones are deleted when a new one is written."""
_BATCH = 32
MAX_BYTES = 8 << 30
"""Largest store `fit_views` plans for; bigger datasets get fewer views (or live augmentation)."""


def first_trainable_block(model: torch.nn.Module) -> int:
    """Index of the first block of `model.features` with a trainable parameter (len(features) when none)."""
    for i, block in enumerate(model.features):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(model.features)


class Tail(torch.nn.Module):
    """The trainable part: blocks `cut`.. of the base, global pooling and the classifier. It holds the same
    module objects as the full model, so its state_dict (keys and weights) is the full model's."""

    def __init__(self, model: torch.nn.Module, cut: int):
        super().__init__()
        self.features, self.classifier, self.cut = model.features, model.classifier, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[self.cut:](x)
        return self.classifier(x.mean((2, 3)))


@dataclass
class Views:
    """Stored activations of the frozen front (block `cut`'s input)."""

    cut: int
    plain: np.ndarray
    """float16 [N, C, H, W]: every photo unaugmented (training and validation)."""
    augmented: np.ndarray
    """float16 [views, n_train, C, H, W]: augmented copies of the training photos, in split order."""


def fit_views(model: torch.nn.Module, cut: int, size: int, n_photos: int, n_train: int, views: int,
              max_bytes: int = MAX_BYTES) -> int:
    """How many of `views` augmented views fit in `max_bytes` next to the plain views (0: none fit)."""
    was_training = model.training
    per_photo = 2 * int(np.prod(_stored_shape(model, cut, size)))
    model.train(was_training)
    return max(0, min(views, (max_bytes - n_photos * per_photo) // max(1, n_train * per_photo)))


def _key(prep: Prepared, model: torch.nn.Module, cut: int, pre: Preprocess, augment: AugmentConfig,
         views: int, seed: int) -> str:
    from edgekit.trainer.int8_grid import GridLayer

    h = hashlib.blake2b(digest_size=12)
    on_grid = any(isinstance(m, GridLayer) and m.grid for m in model.features[:cut].modules())  # snaps the weights
    h.update(json.dumps([VERSION, cut, views, seed, pre.model_dump(mode="json"), augment.model_dump(mode="json"),
                         prep.split.train.tolist(), on_grid]).encode())
    for i in range(0, len(prep.y), 256):
        h.update(prep.images.get(np.arange(i, min(i + 256, len(prep.y)))).tobytes())
    for name, t in sorted(model.features[:cut].state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _front(model: torch.nn.Module, cut: int, x01: torch.Tensor, norm: object) -> np.ndarray:
    model.eval()  # in train mode BatchNorm would normalise by this batch and move its frozen running statistics
    with torch.no_grad():
        x = model.features[:cut](norm(x01).contiguous(memory_format=torch.channels_last))
        if cut == len(model.features):  # nothing of the base trains: keep only the pooled vector (as 1x1)
            x = x.mean((2, 3), keepdim=True)
        return x.to(torch.float16).cpu().numpy()


def _stored_shape(model: torch.nn.Module, cut: int, size: int) -> tuple[int, ...]:
    """The shape of one stored view (what `_front` keeps), from a blank image."""
    blank = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    return _front(model, cut, blank, lambda x: x).shape[1:]


def _fill(store: Path, prep: Prepared, model: torch.nn.Module, cut: int, pre: Preprocess,
          augment: AugmentConfig, views: int, seed: int, device: torch.device) -> None:
    from edgekit.console import console
    from edgekit.progress import Progress
    from edgekit.trainer.augment import Normalizer, to_tensor
    from edgekit.trainer.augment import augment as augment_batch

    norm = Normalizer(pre, device)
    train, n = prep.split.train, len(prep.y)
    shape = _stored_shape(model, cut, prep.images.pixels.shape[1])
    plain = np.lib.format.open_memmap(store / "plain.npy", "w+", np.float16, (n, *shape))
    aug = np.lib.format.open_memmap(store / "augmented.npy", "w+", np.float16, (views, len(train), *shape))
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # augmentation draws from torch's global generator; restored below
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"Caching {views} augmented views (frozen blocks 0-{cut - 1})",
                                total=n + views * len(train))
            for i in range(0, n, _BATCH):
                idx = np.arange(i, min(i + _BATCH, n))
                plain[idx] = _front(model, cut, to_tensor(prep.images.get(idx), device), norm)
                bar.advance(task, len(idx))
            for v in range(views):
                for i in range(0, len(train), _BATCH):
                    x = augment_batch(to_tensor(prep.images.get(train[i:i + _BATCH]), device), augment)
                    aug[v, i:i + len(x)] = _front(model, cut, x, norm)
                    bar.advance(task, len(x))
    finally:
        torch.random.set_rng_state(gen_state)
    plain.flush()
    aug.flush()
    del plain, aug


def _prune(parent: Path, keep: Path) -> None:
    stores = sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in stores if p != keep][KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def build(prep: Prepared, model: torch.nn.Module, cut: int, pre: Preprocess, augment: AugmentConfig, views: int,
          seed: int, device: torch.device, root: Path | None = None) -> Views:
    """The stored views for this run, computed (and written atomically) when no store matches."""
    parent = (root or cache_dir()) / f"views-v{VERSION}"
    store = parent / _key(prep, model, cut, pre, augment, views, seed)
    if not (store / "augmented.npy").exists():
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        try:
            _fill(tmp, prep, model, cut, pre, augment, views, seed, device)
            if (store / "augmented.npy").exists():  # another run wrote the same store meanwhile
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(parent, store)
    else:
        log.info("Reusing cached views in %s", store)
        os.utime(store)
    return Views(cut, np.load(store / "plain.npy", mmap_mode="r"), np.load(store / "augmented.npy", mmap_mode="r"))


class ViewBatches:
    """Training data for the engine from stored views: per photo, the plain view or one of the augmented ones,
    drawn from torch's global generator (so a resumed run draws the same)."""

    def __init__(self, views: Views, prep: Prepared, balanced: bool):
        self.views, self.prep = views, prep
        self.y = prep.y[prep.split.train]
        counts = np.bincount(self.y, minlength=len(prep.labels))
        self.sample_weights = (1.0 / counts[self.y]) if balanced else None

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n_aug = self.views.augmented.shape[0]
        pick = torch.randint(0, n_aug + 1, (len(idx),)).numpy()  # 0: plain, v: augmented view v - 1
        rows = [self.views.augmented[v - 1, i] if v else self.views.plain[self.prep.split.train[i]]
                for v, i in zip(pick, idx, strict=True)]
        x = torch.from_numpy(np.stack(rows)).to(device).float().contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(self.y[idx]).to(device)


def predict_tail(tail: torch.nn.Module, views: Views, which: np.ndarray, device: torch.device,
                 batch: int = 64) -> torch.Tensor:
    """Logits of the photos at `which` from their plain stored view, on the CPU."""
    out = []
    tail.eval()
    with torch.no_grad():
        for i in range(0, len(which), batch):
            x = torch.from_numpy(np.ascontiguousarray(views.plain[which[i:i + batch]])).to(device).float()
            out.append(tail(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
