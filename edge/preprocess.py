"""Image preprocessing, one implementation for training-side evaluation, the export gate and the device.

decode → RGB (or what `Preprocess.color` asks) → resize to (H, W) with PIL bilinear, stretching (no crop,
no letterbox) → uint8 → `value = pixel * scale + offset` → `(value - mean) / std` → float32 in the
layout asked for (NCHW by default, the PyTorch layout of image bundles).

Only numpy and Pillow: it runs on the Pi without torch.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgekit.bundle import Preprocess
from edgekit.errors import UserError

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
        except (UnidentifiedImageError, OSError) as e:
            where = "the image bytes" if isinstance(image, bytes) else str(image)
            raise UserError(f"Could not read {where} as an image ({e}).")
        # Phones store portrait photos sideways with an EXIF orientation tag; training, the export gate,
        # calibration and the device all decode here, so all of them see the photo upright.
        img = ImageOps.exif_transpose(img)
    mode = "RGB" if color == "BGR" else color
    return img.convert(mode) if img.mode != mode else img


def to_array(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """The preprocessed float32 HWC array of one decoded image."""
    if pre.resize is not None:
        h, w = pre.resize
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
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
    """The images of `folder/<label>/` for each known label, with their label indices.

    Raises:
        UserError: when the folder is missing, has a class the model does not know, or has no images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"Data folder {root} does not exist.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise UserError(f"{root} has classes the model does not know: {', '.join(unknown)} "
                        f"(it knows {', '.join(labels)}).")
    paths, ys = [], []
    for c in classes:
        for p in sorted((root / c).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                ys.append(labels.index(c))
    if not paths:
        raise UserError(f"{root} has no images in class subfolders ({', '.join(IMAGE_SUFFIXES)}).")
    return paths, np.asarray(ys, dtype=np.int64)
