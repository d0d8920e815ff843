"""Image preprocessing, one implementation for training-side evaluation, the export gate and the device.

decode → RGB (or what `Preprocess.color` asks) → fit to (H, W) with PIL bilinear as `Preprocess.fit` says
(`FITS`: stretch, pad or crop) → uint8 → `value = pixel * scale + offset` → `(value - mean) / std` →
float32 in the layout asked for (NCHW by default, the PyTorch layout of image bundles).

Only numpy and Pillow: it runs on the Pi without torch.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgekit.bundle import Preprocess
from edgekit.errors import UserError
from edgekit.paths import require

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
"""Photo suffixes read everywhere: training, `labeled_folder` (eval, calibration) and the folder camera."""


def load_image(image: ImageInput, color: str = "RGB") -> Image.Image:
    """A PIL image in `color` mode from a path, encoded bytes, a PIL image or a uint8 HWC array (RGB)."""
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 HW or HWC, got {image.dtype} {image.shape}")
        img = Image.fromarray(image)
    else:
        try:
            img = Image.open(io.BytesIO(image) if isinstance(image, bytes) else Path(image))
            img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            where = "the image bytes" if isinstance(image, bytes) else str(image)
            raise UserError(f"Could not read {where} as an image ({e}).")
        img = upright(img)
    if img.mode.startswith("I;16"):  # 16-bit grey: convert() would clip to 255 (white), not scale
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    mode = "RGB" if color == "BGR" else color
    return img.convert(mode) if img.mode != mode else img


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says. Phones store portrait photos sideways with that
    tag; training, the export gate, calibration and the device API all decode through here, so all of them
    see the photo upright. A damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - Pillow raises several kinds for broken EXIF data
        return img


def _stretch(img: Image.Image, h: int, w: int) -> np.ndarray:
    return np.asarray(img.resize((w, h), Image.BILINEAR) if img.size != (w, h) else img, dtype=np.uint8)


def _scaled(img: Image.Image, s: float) -> Image.Image:
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    return img.resize(size, Image.BILINEAR) if size != img.size else img


def _pad(img: Image.Image, h: int, w: int) -> np.ndarray:
    # Replicating the edge pixels instead of a flat colour: no hard border for the network to learn, and
    # on photos taken against a plain background the padding looks like more background.
    a = np.asarray(_scaled(img, min(w / img.width, h / img.height)), dtype=np.uint8)
    dh, dw = h - a.shape[0], w - a.shape[1]
    pads = ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, pads, mode="edge")


def _crop(img: Image.Image, h: int, w: int) -> np.ndarray:
    a = np.asarray(_scaled(img, max(w / img.width, h / img.height)), dtype=np.uint8)
    top, left = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    return a[top:top + h, left:left + w]


@dataclass(frozen=True)
class Fit:
    """One way to bring a photo of any aspect ratio to the model's (H, W)."""

    fn: Callable[[Image.Image, int, int], np.ndarray]
    help: str


FITS: dict[str, Fit] = {
    "stretch": Fit(_stretch, "resize to (H, W), changing the aspect ratio"),
    "pad": Fit(_pad, "scale to fit inside (H, W) and fill the rest by repeating the edge pixels (letterbox)"),
    "crop": Fit(_crop, "scale to cover (H, W) and cut the centre out"),
}
"""How photos reach the model's size; a bundle without `fit` was trained with stretch."""


def fit_spec(fit: str | None) -> Fit:
    """`FITS[fit]` (None: stretch, what bundles without the field were made with).

    Raises:
        ValueError: for a name the table does not have.
    """
    spec = FITS.get(fit or "stretch")
    if spec is None:
        raise ValueError(f"unknown image fit {fit!r}; known: {', '.join(FITS)}")
    return spec


def fit_image(img: Image.Image, size: tuple[int, int], fit: str | None = None) -> np.ndarray:
    """A decoded image as uint8 [H, W] or [H, W, C] of `size` = (H, W), made by `FITS[fit]` (None: stretch).

    Training's image cache, the export gate, calibration and the device all call this, so they see the
    same pixels.
    """
    return fit_spec(fit).fn(img, int(size[0]), int(size[1]))


def to_array(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """The preprocessed float32 HWC array of one decoded image."""
    pixels = np.asarray(img, dtype=np.uint8) if pre.resize is None else fit_image(img, pre.resize, pre.fit)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pre.color == "BGR":
        pixels = pixels[:, :, ::-1]
    return normalize(pixels, pre)


def normalize(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """`(pixel * scale + offset - mean) / std` as float32; the last axis is the channel axis."""
    x = pixels.astype(np.float32)
    x = x * np.float32(pre.scale if pre.scale is not None else 1.0) + np.float32(pre.offset or 0.0)
    if pre.mean is not None:
        x = x - np.asarray(pre.mean, dtype=np.float32)
    if pre.std is not None:
        x = x / np.asarray(pre.std, dtype=np.float32)
    return x


def preprocess_image(image: ImageInput, pre: Preprocess, layout: str = "NCHW") -> np.ndarray:
    """One image as a float32 batch of one, [1, C, H, W] (NCHW) or [1, H, W, C] (NHWC)."""
    x = to_array(load_image(image, pre.color or "RGB"), pre)
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    elif layout != "NHWC":
        raise ValueError(f"image layout must be NCHW or NHWC, not {layout!r}")
    return np.ascontiguousarray(x[None])


def preprocess_images(images: list[Any], pre: Preprocess, layout: str = "NCHW") -> np.ndarray:
    """Many images as one float32 batch."""
    if not images:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate([preprocess_image(i, pre, layout) for i in images])


def labeled_folder(folder: str | os.PathLike, labels: list[str]) -> tuple[list[Path], np.ndarray]:
    """The images of `folder/<label>/` (subfolders included, hidden files not) for each known label, with
    their label indices, picked as training picks them. Class folders the model does not know are left
    out with a warning (a model trained with `--classes` on the same folder).

    Raises:
        UserError: when the folder is missing or no known class has images.
    """
    root = require(folder, "Data folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in classes if c not in labels]
    if unknown:
        log.warning("%s: leaving out class folder(s) the model does not know: %s (it knows %s)", root,
                    ", ".join(unknown), ", ".join(labels))
    paths, ys = [], []
    for c in (c for c in classes if c in labels):
        for p in sorted((root / c).rglob("*")):
            rel = p.relative_to(root / c)
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not any(x.startswith(".") for x in rel.parts):
                paths.append(p)
                ys.append(labels.index(c))
    if not paths:
        raise UserError(f"{root} has no images in folders named after the model's classes ({', '.join(labels)}).")
    return paths, np.asarray(ys, dtype=np.int64)


def each_readable(paths: Iterable[Path], fn: Callable[[Path], Any], what: str = "images") -> tuple[list, list[int]]:
    """`fn` of each path, leaving out (with a warning) the files it cannot read (a `UserError`); returns the
    results and the positions of the paths they came from. Real photo folders hold a broken file or two.

    Raises:
        UserError: when no file could be read (`what` names them in the message).
    """
    out, keep, n = [], [], 0
    for i, p in enumerate(paths):
        n += 1
        try:
            out.append(fn(p))
            keep.append(i)
        except UserError as e:
            log.warning("skipping %s", e)
    if not out:
        raise UserError(f"None of the {n} {what} could be read.")
    return out, keep


def preprocess_readable(paths: list[Path], y: np.ndarray, pre: Preprocess,
                        layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    """`preprocess_images` and their labels `y`, leaving out (with a warning) files that cannot be read."""
    xs, keep = each_readable(paths, lambda p: preprocess_image(p, pre, layout))
    return np.concatenate(xs), y[keep]
