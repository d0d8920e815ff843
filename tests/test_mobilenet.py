"""MobileNetV2 in plain torch: torchvision's key layout, Keras padding, the shared ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgekit.bundle import Preprocess
from edgekit.edge.preprocess import preprocess_images
from edgekit.errors import UserError
from edgekit.trainer import mobilenet
from edgekit.trainer.models import build as build_arch

# ImageNet indices of bottles and jars (Keras and torchvision share the 1000-class order):
# beer bottle, nipple (baby bottle), pill bottle, pop bottle, vase, water bottle, water jug, whiskey jug,
# wine bottle
BOTTLES = {440, 680, 720, 737, 883, 898, 899, 901, 907}


def test_state_dict_uses_torchvision_keys() -> None:
    sd = build_arch("mobilenet_v2", num_classes=1000).state_dict()
    assert len(sd) == 314  # torchvision.models.mobilenet_v2() has 314 entries
    for key, shape in {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_var": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),  # t=1 block: depthwise first
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),  # t=6 block: expand, depthwise, project, BN
        "features.2.conv.3.num_batches_tracked": (),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    }.items():
        assert tuple(sd[key].shape) == shape, key


def test_torchvision_layout_loads_strict_in_both_paddings(imagenet_weights: Path) -> None:
    state = mobilenet.read_state_dict(imagenet_weights)
    for padding in ("torch", "keras"):
        model = mobilenet.build(1000, padding=padding)
        result = model.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys


def test_keras_padding_pads_after_on_even_and_both_sides_on_odd() -> None:
    conv = mobilenet.SameConv2d(3, 4, 3, 2, 0, bias=False)
    for size, pads in ((32, (0, 1, 0, 1)), (33, (1, 1, 1, 1))):
        x = torch.randn(2, 3, size, size)
        want = F.conv2d(F.pad(x, pads), conv.weight, None, 2)
        torch.testing.assert_close(conv(x), want)
    keras, torch_pad = mobilenet.build(6, padding="keras"), mobilenet.build(6, padding="torch")
    torch_pad.load_state_dict(keras.state_dict())
    x = torch.randn(1, 3, 96, 96)
    keras.eval(), torch_pad.eval()
    fk, ft = keras.features(x), torch_pad.features(x)
    assert fk.shape == ft.shape == (1, 1280, 3, 3)
    assert (fk - ft).abs().mean() > 0.1 * ft.abs().mean()  # same weights, a different function
    with pytest.raises(UserError, match="use one of: keras, torch"):
        mobilenet.build(6, padding="same")


def test_shared_weights_see_bottles_in_glass_photos(imagenet_weights: Path, waste_mini: Path) -> None:
    torch.set_num_threads(1)
    state = mobilenet.read_state_dict(imagenet_weights)
    assert mobilenet.looks_keras_converted(state)
    assert not mobilenet.looks_keras_converted(mobilenet.build(10).state_dict())  # fresh BN is not folded
    model = mobilenet.build(1000, padding="keras")
    model.load_state_dict(state)
    model.eval()
    photos = sorted((waste_mini / "glass").glob("*.jpg"))[:6]
    keras_input = Preprocess(color="RGB", resize=(224, 224), scale=1 / 127.5, offset=-1.0)  # [-1, 1]
    x = torch.from_numpy(preprocess_images(photos, keras_input))
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    assert sum(t in BOTTLES for t in top1) >= 4, top1


def test_new_head_keeps_backbone(imagenet_weights: Path) -> None:
    state = mobilenet.read_state_dict(imagenet_weights)
    model = mobilenet.build(6, padding="keras")
    replaced = mobilenet.load_backbone(model, state)
    assert replaced == ["classifier.1.weight", "classifier.1.bias"]
    torch.testing.assert_close(model.state_dict()["features.5.conv.1.0.weight"], state["features.5.conv.1.0.weight"])
    with pytest.raises(UserError, match="do not fit"):
        mobilenet.load_backbone(mobilenet.build(6, width_mult=0.5), state)


def test_weights_file_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        mobilenet.read_state_dict(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read as a PyTorch state_dict: it is not a file torch.save wrote"):
        mobilenet.read_state_dict(junk)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(UserError, match="torchvision's layout"):
        mobilenet.read_state_dict(other)
