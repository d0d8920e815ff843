"""The waste classifier's data: scan, cache, stratified split, and batches for the engine.

`prepare` turns `DATA/<class>/` into usable photos (broken ones skipped and reported), decoded once into
the uint8 image cache at the training size, with a seeded per-class train/val split. `PhotoBatches`
hands the engine augmented, normalised tensors on the training device; `predict` runs the model on
cached photos without augmentation, exactly as the device will see them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.bundle import Preprocess
from edgekit.errors import UserError
from edgekit.trainer.augment import AugmentConfig

if TYPE_CHECKING:
    import torch

    from edgekit.trainer.image_cache import CachedImages
    from edgekit.trainer.waste import WasteConfig

log = logging.getLogger(__name__)


@dataclass
class Split:
    """A stratified split of the usable photos; indices point into `Prepared.files`."""

    train: np.ndarray
    val: np.ndarray


@dataclass
class Prepared:
    """Everything the training needs about the data."""

    root: Path
    labels: list[str]
    files: list[str]
    """Relative paths of the usable photos."""
    y: np.ndarray
    images: CachedImages
    """Pixels; `images.get(i)` for file i."""
    split: Split
    skipped: list[tuple[str, str]]
    """(relative path, reason) for every file left out."""


def stratified_split(y: np.ndarray, val_split: float, seed: int) -> Split:
    """Per class, a seeded shuffle; round(val_split x n) photos (at least 1 when n >= 2) go to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, round(val_split * len(idx))), len(idx) - 1) if len(idx) >= 2 else 0
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return Split(np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64))


def fold_splits(y: np.ndarray, folds: int, seed: int) -> list[Split]:
    """`folds` stratified cross-validation splits: per class a seeded shuffle dealt round-robin into folds;
    split k validates on fold k and trains on the rest."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return [Split(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]


def prepare(cfg: WasteConfig, before_decoding: Callable[[], None] | None = None) -> Prepared:
    """Scan, cache (decoding only new photos) and split the dataset; `before_decoding` runs once the folders
    have passed their checks and before any photo is decoded (other quick checks that should not wait)."""
    from edgekit.console import console
    from edgekit.progress import Progress
    from edgekit.trainer import images
    from edgekit.trainer.image_cache import ImageCache

    ds = images.scan(cfg.data, workers=cfg.num_workers)
    labels = ds.classes
    if cfg.classes:
        unknown = sorted(set(cfg.classes) - set(labels))
        if unknown:
            raise UserError(f"--classes {', '.join(unknown)} not found in {ds.root}; it has {', '.join(labels)}.")
        labels = sorted(cfg.classes)
    good = [f for f in ds.good if f.label in labels]
    if before_decoding is not None:
        before_decoding()
    cache = ImageCache((cfg.img_size, cfg.img_size), root=cfg.cache_dir, workers=cfg.num_workers, fit=cfg.fit)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"Caching photos at {cfg.img_size}px", total=len(good))
        cached = cache.load([ds.root / f.rel for f in good], progress=lambda n: bar.advance(task, n))
    skipped = [(f.rel, f.problem or "") for f in ds.bad if f.label in labels]
    skipped += [(good[i].rel, why) for i, why in cached.errors.items()]
    dupes = _duplicates([f.rel for f in good], [f.label for f in good], cached.hashes, set(cached.errors))
    skipped += [(good[i].rel, why) for i, why in dupes.items()]
    keep = [i for i in range(len(good)) if i not in cached.errors and i not in dupes]
    # from here on, index i is files[i]
    cached.rows, cached.errors, cached.hashes = cached.rows[keep], {}, [cached.hashes[i] for i in keep]
    files = [good[i].rel for i in keep]
    y = np.array([labels.index(good[i].label) for i in keep], dtype=np.int64)
    counts = np.bincount(y, minlength=len(labels))
    if (counts < 2).any():
        few = [labels[i] for i in np.flatnonzero(counts < 2)]
        raise UserError(f"Class(es) {', '.join(few)} have fewer than 2 usable photos; add photos to train and "
                        "validate.")
    for rel, why in skipped:
        log.warning("skipped %s: %s", rel, why)
    return Prepared(ds.root, labels, files, y, cached, stratified_split(y, cfg.val_split, cfg.seed), skipped)


def _duplicates(rels: list[str], labels: list[str], hashes: list[str], broken: set[int]) -> dict[int, str]:
    """Photos to leave out because their content is already there: a second copy in the same class (it
    could land in training and validation at once, and validation would grade a photo it trained on),
    and every copy of a photo filed under two classes (its label is unknown)."""
    first: dict[str, int] = {}
    classes: dict[str, set[str]] = {}
    for i, h in enumerate(hashes):
        if i not in broken:
            first.setdefault(h, i)
            classes.setdefault(h, set()).add(labels[i])
    out = {}
    for i, h in enumerate(hashes):
        if i in broken:
            continue
        if len(classes[h]) > 1:
            out[i] = f"the same photo is filed under {', '.join(sorted(classes[h]))}; keep it in one class"
        elif first[h] != i:
            out[i] = f"a copy of {rels[first[h]]}"
    return out


class PhotoBatches:
    """Training photos for the engine: cached uint8 pixels → augmented, normalised tensors on the device."""

    def __init__(self, prep: Prepared, pre: Preprocess, augment: AugmentConfig, balanced: bool):
        self.prep, self.pre, self.augment = prep, pre, augment
        self.idx = prep.split.train
        self.y = prep.y[self.idx]
        self._norm: dict[str, Any] = {}
        counts = np.bincount(self.y, minlength=len(prep.labels))
        self.sample_weights = (1.0 / counts[self.y]) if balanced else None

    def __len__(self) -> int:
        return len(self.idx)

    def normalizer(self, device: torch.device) -> Any:
        from edgekit.trainer.augment import Normalizer

        if str(device) not in self._norm:
            self._norm[str(device)] = Normalizer(self.pre, device)
        return self._norm[str(device)]

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from edgekit.trainer.augment import augment, to_tensor

        x = augment(to_tensor(self.prep.images.get(self.idx[idx]), device), self.augment)
        x = self.normalizer(device)(x).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(self.y[idx]).to(device)


def predict(model: torch.nn.Module, prep: Prepared, which: np.ndarray, pre: Preprocess,
            device: torch.device, batch: int = 64) -> torch.Tensor:
    """Logits for the photos at `which` (no augmentation), on the CPU."""
    import torch

    from edgekit.trainer.augment import Normalizer, to_tensor

    norm = Normalizer(pre, device)
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(which), batch):
            x = norm(to_tensor(prep.images.get(which[i:i + batch]), device))
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(prep.labels))
