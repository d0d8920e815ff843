"""Fine-tuning on the int8 weight grid, so that int8 export stores the trained weights exactly.

Both int8 exporters (onnxruntime's static QDQ, ai-edge-quantizer) store each convolution and linear weight per
output channel as `round(w / s)` with `s = max|w| / 127`. Weights converted from an int8 model, like the shared
Keras MobileNetV2, already lie on that grid, so a frozen base survives int8 with no weight error at all;
fine-tuned layers drift off it. On waste-mini (5-fold, 224 px) int8 disagreed with the float model on 6.7%
(onnx-int8) and 7.8% (tflite-int8) of the validation photos after fine-tuning off the grid, and on 2.8% and
1.1% after fine-tuning on it (`bench/RESULTS.md`); what is left comes from quantizing activations.

A grid layer computes with its weight snapped to the grid and passes the gradient straight through to the
float weight underneath (the straight-through estimator of quantization-aware training), so training sees the
function int8 will compute, weight-wise. `bake` writes the snapped values into the weights at the end: the
bundle's float model then holds exactly the weights the int8 files will hold. Activations are not simulated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMAX = 127
"""Symmetric int8 weights use -127..127 (both exporters leave -128 out)."""


def _step(w: torch.Tensor) -> torch.Tensor:
    """The grid step of each output channel (dim 0), shaped to broadcast against `w`."""
    scale = w.detach().reshape(w.shape[0], -1).abs().amax(1) / QMAX
    scale = scale.clamp_min(torch.finfo(w.dtype).tiny)  # an all-zero channel stays zero
    return scale.view(-1, *([1] * (w.dim() - 1)))


def snap(w: torch.Tensor) -> torch.Tensor:
    """`w` rounded to the per-output-channel symmetric int8 grid (dim 0 is the output channel)."""
    step = _step(w)
    return (w / step).round().clamp(-QMAX, QMAX) * step


def straight_through(w: torch.Tensor) -> torch.Tensor:
    """The snapped weight in the forward pass, the identity in the backward pass."""
    return w + (snap(w) - w).detach()


class GridLayer:
    """Mixin for layers with a `weight`: `grid` on computes with the weight on the int8 grid."""

    grid: bool = False
    weight: nn.Parameter

    def grid_weight(self) -> torch.Tensor:
        return straight_through(self.weight) if self.grid else self.weight


class GridConv2d(GridLayer, nn.Conv2d):
    """nn.Conv2d (same parameters, same state_dict keys) that can train on the int8 grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.grid_weight(), self.bias)


class GridLinear(GridLayer, nn.Linear):
    """nn.Linear (same parameters, same state_dict keys) that can train on the int8 grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.grid_weight(), self.bias)


def enable(model: nn.Module, on: bool = True) -> int:
    """Switch every grid layer of `model` on (or off); returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, GridLayer)]
    for m in layers:
        m.grid = on
    return len(layers)


@torch.no_grad()
def bake(model: nn.Module) -> None:
    """Write the snapped weights into every grid layer that is on, and switch it off: the plain float model now
    computes what training computed."""
    for m in model.modules():
        if isinstance(m, GridLayer) and m.grid:
            m.weight.copy_(snap(m.weight))
            m.grid = False


def off_grid(state: dict[str, torch.Tensor]) -> float:
    """The largest distance, in grid steps, of any conv/linear weight in `state` from the int8 grid (0 when every
    weight is on it; float rounding leaves ~1e-5)."""
    worst = 0.0
    for key, w in state.items():
        if key.endswith("weight") and w.dim() in (2, 4) and w.is_floating_point():
            w = w.double()
            worst = max(worst, float(((w - snap(w)) / _step(w)).abs().max()))
    return worst
