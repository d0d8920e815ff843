"""Training on the int8 weight grid: snapping, the straight-through gradient, and the onnx-int8 export's weights."""

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


def _onnxruntime_int8_weight_error(model: torch.nn.Module, waste_mini: Path, tmp_path: Path) -> float:
    """Largest relative difference between the float ONNX weights and the int8 weights (dequantized) that
    edgekit's own onnx-int8 converter (`quantize_onnx`) writes for `model`, calibrated on waste-mini photos."""
    import export_helpers as h
    import onnx
    from onnx import numpy_helper

    from edgekit.trainer import formats
    from edgekit.trainer.export import ExportConfig, ExportJob
    from edgekit.trainer.export_onnx import quantize_onnx

    labels, split = h.waste_split(waste_mini, val_per_class=12)
    bundle = h.write_waste_bundle(tmp_path / "models", model, labels, split, waste_mini)
    job = ExportJob(bundle, model, np.zeros((1, 3, h.SIZE, h.SIZE), np.float32),
                    ExportConfig(bundle=str(bundle.path), calib_samples=32), tmp_path)
    int8 = tmp_path / "m.int8.onnx"
    quantize_onnx(job, formats.FORMATS["onnx-int8"], int8)
    floats = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(job.float_file("onnx"))).graph.initializer}
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


def test_onnx_int8_export_keeps_baked_weights_exactly(waste_mini: Path, tmp_path: Path) -> None:
    import export_helpers as h

    torch.manual_seed(1)
    model = mobilenet.build(**h.WASTE_ARCH["kwargs"]).eval()  # kaiming-initialised: off the grid
    assert _onnxruntime_int8_weight_error(model, waste_mini, tmp_path / "plain") > 1e-3  # int8 rounds them
    int8_grid.enable(model)
    int8_grid.bake(model)
    assert _onnxruntime_int8_weight_error(model, waste_mini, tmp_path / "baked") < 1e-6  # stored as they are
