"""Augmentation on batched tensors, on the model's device.

A batch of cached uint8 images becomes floats once; one `affine_grid` + `grid_sample` applies random
resized crop, horizontal flip and a small rotation to the whole batch, and colour jitter is a few
broadcast multiplies. Nothing runs per image in Python, so on a GPU the input pipeline costs a small
fraction of the forward/backward pass. Random parameters are drawn on the CPU from torch's global
generator, so a seeded run augments the same way on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from edgekit.bundle import Preprocess

_GRAY = (0.299, 0.587, 0.114)


class AugmentConfig(BaseModel):
    """How much to vary training images."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Turn all augmentation off (evaluation-style batches)."""
    crop_scale: tuple[float, float] = (0.6, 1.0)
    """Random resized crop: fraction of the image area kept."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Random resized crop: aspect ratio range of the crop."""
    flip: float = 0.5
    """Probability of a horizontal flip."""
    rotation: float = 15.0
    """Maximum rotation in degrees, either way."""
    brightness: float = 0.2
    """Brightness factor drawn from [1 - b, 1 + b]."""
    contrast: float = 0.2
    """Contrast factor drawn from [1 - c, 1 + c]."""
    saturation: float = 0.2
    """Saturation factor drawn from [1 - s, 1 + s]."""


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [0, 1] on `device` (the copy is uint8: 4x less traffic)."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    t = t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


class Normalizer:
    """Applies a bundle's `Preprocess` (scale, offset, mean, std) to [0, 1] images, as the device will."""

    def __init__(self, pre: Preprocess, device: torch.device):
        scale = 255.0 * (pre.scale if pre.scale is not None else 1.0)  # unset: raw pixels, as the device does
        offset = pre.offset or 0.0
        mean = torch.tensor(pre.mean or [0.0, 0.0, 0.0], device=device).view(1, -1, 1, 1)
        std = torch.tensor(pre.std or [1.0, 1.0, 1.0], device=device).view(1, -1, 1, 1)
        # (x01 * scale + offset - mean) / std, folded into one multiply-add
        self.mul = scale / std
        self.add = (offset - mean) / std

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.add, x01, self.mul)


def _uniform(n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n) * (hi - lo) + lo


def _affine(n: int, cfg: AugmentConfig) -> torch.Tensor:
    """[n, 2, 3] maps from output to input coordinates (normalized to [-1, 1]) for `affine_grid`."""
    area = _uniform(n, *cfg.crop_scale)
    log_ratio = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n) * 2 - 1) * (1 - w)
    cy = (torch.rand(n) * 2 - 1) * (1 - h)
    angle = _uniform(n, -cfg.rotation, cfg.rotation) * (math.pi / 180)
    flip = torch.where(torch.rand(n) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input = R(angle) @ diag(w * flip, h) @ output: the crop box is scaled, then turned as a whole. (The
    # other order, diag(w, h) @ R, shears every crop that is not square.)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * cos * flip
    theta[:, 0, 1] = -h * sin
    theta[:, 1, 0] = w * sin * flip
    theta[:, 1, 1] = h * cos
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta


def _jitter(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    gray_w = torch.tensor(_GRAY, device=dev).view(1, 3, 1, 1)
    b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness).to(dev).view(n, 1, 1, 1)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast).to(dev).view(n, 1, 1, 1)
    s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation).to(dev).view(n, 1, 1, 1)
    x = x * b
    mean_gray = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean_gray) * c + mean_gray
    gray = (x * gray_w).sum(1, keepdim=True)
    x = (x - gray) * s + gray
    return x.clamp_(0.0, 1.0)


def augment(x01: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Randomly crop, flip, rotate and colour-jitter a float [N, 3, H, W] batch in [0, 1]."""
    if not cfg.enabled or x01.shape[0] == 0:
        return x01
    theta = _affine(x01.shape[0], cfg).to(x01.device, x01.dtype)
    grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
    x = F.grid_sample(x01, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _jitter(x, cfg)
