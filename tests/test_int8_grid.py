"""Training on the int8 weight grid: snapping, the straight-through gradient, and onnxruntime's int8 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekit.trainer import int8_grid, mobilenet


def test_snap_puts_each_channel_on_its_grid_keeps_its_range_and_is_idempotent() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).view(-1, 1, 1, 1)  # channels four decades apart
    w[5] = 0.0
    s = int8_grid.snap(w)
    assert int8_grid.off_grid({"conv.weight": w}) > 0.1  # random weights are not on it...
    assert int8_grid.off_grid({"conv.weight": s}) < 1e-4  # ...snapped ones are
    assert torch.equal(int8_grid.snap(s), s)
    assert torch.equal(s[5], torch.zeros_like(s[5]))  # a dead channel stays dead, no NaN
    keep = [i for i in range(8) if i != 5]
    torch.testing.assert_close(s[keep].abs().amax((1, 2, 3)), w[keep].abs().amax((1, 2, 3)))
    step = w.abs().amax((1, 2, 3), keepdim=True) / 127
    assert bool(((s - w).abs() <= step / 2 + 1e-7).all())  # rounding, never more than half a step


def test_straight_through_forward_is_snapped_and_gradient_passes_unchanged() -> None:
    w = torch.randn(6, 10, requires_grad=True)
    out = int8_grid.straight_through(w)
    assert torch.equal(out.detach(), int8_grid.snap(w.detach()))
    g = torch.randn(6, 10)
    out.backward(g)
    assert torch.equal(w.grad, g)


def _small_model() -> mobilenet.MobileNetV2:
    torch.manual_seed(1)
    return mobilenet.build(num_classes=3, width_mult=0.35, padding="keras").eval()


def test_grid_training_forward_is_the_baked_plain_model() -> None:
    model, x = _small_model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        assert int8_grid.enable(model) == 53  # 52 convolutions and the classifier
        grid = model(x)
        int8_grid.bake(model)
        baked = model(x)
    scale = float(plain.abs().max())  # the fresh head's logits are ~1e-9: compare relative to that
    assert float((plain - grid).abs().max()) > 1e-3 * scale  # kaiming-initialised weights are off the grid
    assert float((baked - grid).abs().max()) < 1e-5 * scale
    assert not any(m.grid for m in model.modules() if isinstance(m, int8_grid.GridLayer))
    assert int8_grid.off_grid(model.state_dict()) < 1e-3


def _onnxruntime_int8_weight_error(model: torch.nn.Module, tmp_path: Path) -> float:
    """Largest relative difference between the float ONNX weights and onnxruntime's int8 weights (dequantized),
    quantized as edgekit's onnx-int8 export does (static QDQ, per-channel int8 weights)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    x = torch.randn(4, 3, 32, 32)
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    torch.onnx.export(model, (x[:1],), str(fp32), opset_version=17, input_names=["input"], dynamo=False)

    class Reader:
        def __init__(self) -> None:
            self.items = iter({"input": x[i:i + 1].numpy()} for i in range(len(x)))

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    floats = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32)).graph.initializer}
    q = onnx.load(str(int8))
    consts = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    worst, compared = 0.0, 0
    for node in q.graph.node:
        if node.op_type != "DequantizeLinear" or consts.get(node.input[0], np.zeros(0)).dtype != np.int8:
            continue
        name = node.input[0]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scale = consts[node.input[1]].astype(np.float64)
        shape = [1] * consts[name].ndim
        shape[axis] = -1
        deq = consts[name] * (scale.reshape(shape) if scale.ndim else scale)
        w = floats[name.removesuffix("_quantized")]
        worst, compared = max(worst, float(np.abs(deq - w).max() / np.abs(w).max())), compared + 1
    assert compared == 53
    return worst


def test_onnxruntime_int8_keeps_baked_weights_exactly(tmp_path: Path) -> None:
    model = _small_model()
    assert _onnxruntime_int8_weight_error(model, tmp_path) > 1e-3  # float weights: int8 rounds them
    int8_grid.enable(model)
    int8_grid.bake(model)
    assert _onnxruntime_int8_weight_error(model, tmp_path) < 1e-6  # grid weights: int8 stores them as they are
