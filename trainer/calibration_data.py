"""Real samples from a bundle's own data: int8 calibration (train split) and the accuracy gate (val split).

Image bundles carry `split.json`: `{"root": DIR, "train": [...], "val": [...]}` where each item is a path
relative to `root` whose parent folder is the class (`glass/glass12.jpg`), or a `[path, label]` pair
(label name or index). Images go through `edgekit.edge.preprocess`, the code the device runs, so
calibration and the gate see exactly what the Pi will feed the model.

Wake-word and sequence bundles carry `eval_data.npz`: float32 arrays already in the PyTorch layout,
`x_train`/`y_train` and `x_val`/`y_val`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.bundle import Bundle
from edgekit.errors import UserError
from edgekit.paths import require

log = logging.getLogger(__name__)

MIN_CALIBRATION = 32
"""Below this many samples the int8 ranges are guesses; refuse rather than ship them."""
SPLIT_FILE = "split.json"
EVAL_FILE = "eval_data.npz"
Split = Literal["train", "val"]


@dataclass
class Samples:
    """Model inputs (float32, PyTorch layout) with their integer labels."""

    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, n: int, seed: int = 0) -> Samples:
        """A seeded random subset of at most `n` samples."""
        if n >= len(self):
            return self
        keep = _pick(len(self), n, seed)
        return Samples(self.x[keep], self.y[keep], self.source)


def _pick(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random choice of `n` out of `total` (the same choice for the same seed)."""
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def _bundle_file(bundle: Bundle, name: str) -> Path | None:
    for rel in bundle.manifest.files:
        if Path(rel).name == name:
            return bundle.path / rel
    p = bundle.path / name
    return p if p.is_file() else None


def _item(item: Any, labels: list[str]) -> tuple[str, int]:
    if isinstance(item, str):
        rel, label = item, Path(item).parent.name
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        rel, label = item
    else:
        raise UserError(f"{SPLIT_FILE} has an entry {item!r} that is neither a path nor a [path, label] pair.")
    if isinstance(label, int) and not isinstance(label, bool):
        if not 0 <= label < len(labels):
            raise UserError(f"{SPLIT_FILE} gives class index {label} for {rel}; the bundle has {len(labels)} "
                            f"classes (0-{len(labels) - 1}).")
        return str(rel), label
    if label not in labels:
        raise UserError(f"{SPLIT_FILE} names class {label!r}, which is not among the labels {labels}.")
    return str(rel), labels.index(label)


def _image_split(bundle: Bundle, path: Path, split: Split, limit: int | None, seed: int) -> Samples:
    from edgekit.edge.preprocess import preprocess_images

    data = json.loads(path.read_text())
    root = Path(data.get("root", "."))
    root = root if root.is_absolute() else bundle.path / root
    items = [_item(i, bundle.manifest.labels) for i in data.get(split, [])]
    if limit is not None and limit < len(items):  # pick before decoding: only the chosen photos are read
        items = [items[i] for i in _pick(len(items), limit, seed)]
    missing = [rel for rel, _ in items if not (root / rel).is_file()]
    if missing:
        raise UserError(f"{len(missing)} {split} images listed in {path} are not under {root} (e.g. {missing[0]}); "
                        "export where the training data is, or fix its root.")
    pre = bundle.manifest.input.preprocess
    x = preprocess_images([root / rel for rel, _ in items], pre, bundle.manifest.input.layout)
    return Samples(x.astype(np.float32), np.asarray([y for _, y in items], dtype=np.int64), f"{path} [{split}]")


def _array_split(path: Path, split: Split, limit: int | None, seed: int) -> Samples:
    with np.load(path) as data:
        if f"x_{split}" not in data:
            raise UserError(f"{path} has no x_{split} array (it has {', '.join(data.files)}).")
        samples = Samples(data[f"x_{split}"].astype(np.float32), data[f"y_{split}"].astype(np.int64),
                          f"{path} [{split}]")
    return samples.subset(limit, seed) if limit is not None else samples


def load_split(bundle: Bundle, split: Split, limit: int | None = None, seed: int = 0) -> Samples:
    """The bundle's `split` samples (at most `limit`, a seeded subset), preprocessed like on the device."""
    if bundle.manifest.task == "image-classification":
        path = _bundle_file(bundle, SPLIT_FILE)
        if path is None:
            raise UserError(f"Bundle {bundle.path} has no {SPLIT_FILE}: it does not say which images it trained on.")
        return _image_split(bundle, path, split, limit, seed)
    path = _bundle_file(bundle, EVAL_FILE)
    if path is None:
        raise UserError(f"Bundle {bundle.path} has no {EVAL_FILE} with training and validation samples.")
    return _array_split(path, split, limit, seed)


def calibration_set(bundle: Bundle, n: int, seed: int = 0) -> Samples:
    """`n` training samples for int8 calibration; refuses fewer than `MIN_CALIBRATION`."""
    if n < MIN_CALIBRATION:
        raise UserError(f"--calib-samples {n} is too few; int8 calibration needs at least {MIN_CALIBRATION}.")
    samples = load_split(bundle, "train", limit=n, seed=seed)
    if len(samples) < MIN_CALIBRATION:
        raise UserError(f"Only {len(samples)} training samples in {samples.source}; int8 calibration needs at "
                        f"least {MIN_CALIBRATION}. Export only fp32 formats (--format onnx,tflite) or add data.")
    log.info("calibrating int8 on %d samples from %s", len(samples), samples.source)
    return samples


def input_range(bundle: Bundle) -> tuple[float, float] | None:
    """The exact range of an image model's input, from its preprocessing (pixels 0 and 255); else None.

    int8 input ranges are set from this rather than calibrated: calibration photos on a white board
    rarely hold a black pixel, and a calibrated range would clip every darker photo the camera sends.
    """
    from edgekit.edge.preprocess import normalize

    if bundle.manifest.task != "image-classification":
        return None
    ends = normalize(np.array([[0], [255]], dtype=np.uint8), bundle.manifest.input.preprocess)
    return float(ends.min()), float(ends.max())


def labeled_data(bundle: Bundle, data: str | Path) -> Samples:
    """Samples from outside the bundle for `edgekit eval`: a class-per-folder image tree, or an .npz."""
    data = Path(data)
    if data.suffix == ".npz":
        require(data, "Data file", "file")
        with np.load(data) as arrays:
            keys = ("x", "y") if "x" in arrays else ("x_val", "y_val")
            if keys[0] not in arrays:
                raise UserError(f"{data} needs arrays x and y (or x_val and y_val).")
            return Samples(arrays[keys[0]].astype(np.float32), arrays[keys[1]].astype(np.int64), str(data))
    if bundle.manifest.task == "sequence-classification":
        return _csv_windows(bundle, data)
    if bundle.manifest.task != "image-classification":
        raise UserError(f"A {bundle.manifest.task} bundle is evaluated on an .npz file with x and y, not a folder.")
    from edgekit.edge.preprocess import labeled_folder, preprocess_readable

    paths, y = labeled_folder(data, bundle.manifest.labels)
    x, y = preprocess_readable(paths, y, bundle.manifest.input.preprocess, bundle.manifest.input.layout)
    return Samples(x, y, str(data))


def _csv_windows(bundle: Bundle, folder: Path) -> Samples:
    """Label-pure windows of every CSV in `folder`, normalised with the bundle's stored statistics."""
    from edgekit.trainer.seq_data import Normaliser, load_folder, make_windows

    pre = bundle.manifest.input.preprocess
    label_col = bundle.manifest.extra.get("label_col", "activity")
    recs, skipped = load_folder(folder, label_col=label_col, features=pre.features)
    for name, reason in skipped:
        log.warning("skipped %s: %s", name, reason)
    labels = bundle.manifest.labels
    w = make_windows(recs, pre.window, pre.stride, include=labels, labels=labels)
    if len(w) == 0:
        raise UserError(f"No CSV in {folder} has a window of {pre.window} frames with one of the bundle's labels.")
    x = Normaliser(np.asarray(pre.mean, dtype=np.float32), np.asarray(pre.std, dtype=np.float32))(w.x)
    return Samples(x, w.y.astype(np.int64), str(folder))
