"""MobileNetV2 in plain torch, with torchvision's exact state_dict keys.

torchvision does not import here, and the device never needs it, so the network is written out: the
module tree mirrors `torchvision.models.mobilenet_v2` (`features.0.0.weight`,
`features.1.conv.0.0.weight`, ..., `classifier.1.weight`) so torchvision's checkpoints load with
`strict=True`.

`padding="keras"` makes the five stride-2 3x3 convolutions pad like Keras/TensorFlow "same" (on even
sizes: 0 before, 1 after) instead of torchvision's 1/1. Weights converted from Keras need it to compute
the function they were trained as; it changes no parameter, only where the kernel lands.

Every convolution and the classifier are grid layers (`edgekit.trainer.int8_grid`): plain nn.Conv2d/nn.Linear
until training switches them onto the int8 weight grid.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import UserError
from edgekit.paths import require
from edgekit.trainer.int8_grid import GridConv2d, GridLinear

log = logging.getLogger(__name__)

Padding = Literal["keras", "torch"]
"""keras: TensorFlow 'same' padding on stride-2 convs (weights converted from Keras); torch: symmetric 1/1
padding (torchvision checkpoints)."""
PADDINGS: tuple[str, ...] = get_args(Padding)

TORCHVISION_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
"""torchvision's official ImageNet checkpoint (IMAGENET1K_V1, top-1 71.9%)."""

# expansion t, output channels c, repeats n, first stride s (Sandler et al. 2018, Table 2)
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor` without going more than 10% below `v`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SameConv2d(GridConv2d):
    """A Conv2d that pads like TensorFlow's "same" (extra pixel after), computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.grid_weight(), self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int, padding: Padding) -> nn.Sequential:
    if padding == "keras" and stride > 1:
        conv: nn.Conv2d = SameConv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
    else:
        conv = GridConv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) → depthwise 3x3 → project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, padding: Padding):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(cin, hidden, 1, 1, 1, padding))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, hidden, padding),
            GridConv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with torchvision's module tree (`features`, `classifier`)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, padding: Padding = "torch",
                 dropout: float = 0.2):
        super().__init__()
        if padding not in PADDINGS:
            raise UserError(f"Unknown padding {padding!r}; use one of: {', '.join(PADDINGS)}.")
        cin = _divisible(32 * width_mult)
        self.last_channel = _divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu(3, cin, 3, 2, 1, padding)]
        for t, c, n, s in _SETTING:
            cout = _divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, padding))
                cin = cout
        features.append(_conv_bn_relu(cin, self.last_channel, 1, 1, 1, padding))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), GridLinear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def build(
    num_classes: int = 1000, width_mult: float = 1.0, padding: Padding = "torch", dropout: float = 0.2
) -> MobileNetV2:
    """The architecture-table builder (`edgekit.trainer.models.ARCHS["mobilenet_v2"]`)."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, padding=padding, dropout=dropout)


def download_imagenet() -> dict[str, torch.Tensor]:
    """torchvision's official ImageNet state_dict, through torch.hub's cache (needs internet once)."""
    try:
        return torch.hub.load_state_dict_from_url(TORCHVISION_URL, map_location="cpu", progress=True, check_hash=True)
    except OSError as e:  # URLError is an OSError: no network, proxy, DNS
        raise UserError(
            f"Could not download the ImageNet weights from {TORCHVISION_URL} ({e}); on a machine without "
            "internet pass --weights PATH to a local MobileNetV2 state_dict."
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A MobileNetV2 state_dict from a local file (a plain state_dict or a dict holding one under `model`)."""
    path = require(path, "Weights file", "file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        import zipfile

        why = ("it holds Python objects besides tensors (a whole pickled model?); save model.state_dict() instead"
               if zipfile.is_zipfile(path) else "it is not a file torch.save wrote")
        raise UserError(f"Weights file {path} cannot be read as a PyTorch state_dict: {why}.") from e
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or "features.0.0.weight" not in state:
        raise UserError(f"Weights file {path} is not a MobileNetV2 state_dict in torchvision's layout.")
    return state


def looks_keras_converted(state: dict[str, torch.Tensor]) -> bool:
    """True when every BatchNorm is an identity at load: the mark of weights with BN folded into the convs.

    Such weights come from Keras (e.g. the shared `mobilenet_v2_imagenet_keras_int8_dequant.pth`) and
    need Keras padding and [-1, 1] input; torchvision's checkpoints carry real running statistics.
    """
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    folded_var = 1.0 - 1e-5  # 1 - eps: (x - 0) / sqrt(var + eps) == x
    return (
        bool(means)
        and all(float(m.abs().max()) == 0.0 for m in means)
        and all(float((v - folded_var).abs().max()) < 1e-7 for v in variances)
    )


def load_backbone(model: MobileNetV2, state: dict[str, torch.Tensor]) -> list[str]:
    """Load pretrained weights into `model`, keeping its own head when the class count differs.

    Returns:
        the keys left at their initial values (the classifier, when it was replaced).
    """
    own = model.state_dict()
    head = [k for k in ("classifier.1.weight", "classifier.1.bias") if k in state and state[k].shape != own[k].shape]
    state = {k: v for k, v in state.items() if k not in head}
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state) - set(head))
    unexpected = sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        raise UserError(
            f"Weights do not fit this MobileNetV2 (wrong shapes {wrong[:2]}, missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}); is the width multiplier right?"
        )
    model.load_state_dict(state, strict=False)
    log.debug("loaded %d pretrained tensors; new head: %s", len(state), head)
    return head
