"""TFLite converters: fp32 through litert-torch, int8 through ai-edge-quantizer.

Why these: litert-torch 0.10 converts the PyTorch module directly (torch.export → StableHLO → TFLite),
offline and without TensorFlow, and its scores matched PyTorch within 1e-5 on MobileNetV2, an LSTM
classifier and a wake-word head here (tests/test_export.py). onnx2tf was not used: it downloads sample
images while converting 4-D inputs, which fails offline.

Image models are converted with `to_channel_last_io`, so the .tflite takes NHWC (what a camera frame
already is, and XNNPACK's native layout); the manifest records `layout: NHWC` for the file and the
Predictor transposes. Sequence and wake-word inputs keep their [1, T, F] layout.

int8: ai-edge-quantizer's `static_wi8_ai8` recipe on the fp32 .tflite (per-channel int8 weights, int8
activations from real calibration samples, int8 input and output). Chosen over litert-torch's PT2E
quantizer because it works on the file that was already converted and checked, needs no second
torch.export of a prepared graph, and runs in about a second for MobileNetV2. Its calibration is MinMax
only, so `--calib-method` applies to onnx-int8. Two fixes on top (both measured on MobileNetV2 with the
Keras-converted weights): the input range is set from the pixel range instead of calibrated, and
near-dead channels get a weight scale whose int32 bias fits (`fit_bias_to_int32`; top-1 agreement with
fp32 went from ~75% to 93% at 96 px). The quantizer writes one int64 zero point per channel for every
per-channel tensor, all zero; `tflite_compact` then stores each distinct quantization vector once
(MobileNetV2 224: 2.82 MB -> 2.58 MB, identical outputs).

A full-int8 file has int8 I/O, which openwakeword cannot feed, so wake-word heads get no tflite-int8
(see `formats.FORMATS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.edge.predictor import to_layout
from edgekit.trainer import calibration_data, tflite_compact
from edgekit.trainer.chatter import to_debug_log

if TYPE_CHECKING:
    from edgekit.trainer.export import ExportJob
    from edgekit.trainer.formats import Format

log = logging.getLogger(__name__)


def _litert_torch():
    """litert_torch, imported with the libraries under it kept to their errors: TensorFlow's C++ info lines
    (oneDNN, absl), torchao's warnings about CUDA kernels a CPU build cannot load, and a torch
    deprecation notice filled a screen of stderr around each conversion."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow's C++ runtime loads
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with to_debug_log("litert-torch import"):
        import litert_torch

    return litert_torch


@contextlib.contextmanager
def _quiet(source: str):
    """litert-torch and ai-edge-quantizer print progress, tqdm bars and XNNPACK lines; keep our output readable."""
    litert_torch = _litert_torch()

    was = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        with to_debug_log(source):
            yield
    finally:
        litert_torch.config.show_progress = was


def export_tflite(job: ExportJob, fmt: Format, out: Path) -> None:
    """fp32 TFLite of the bundle's PyTorch model; image models take NHWC."""
    import torch

    litert_torch = _litert_torch()

    m = job.bundle.manifest
    layout = fmt.layout_for(m.task, m.input.layout)
    model = job.model
    example = torch.from_numpy(to_layout(job.example, m.input.layout, layout))
    if layout != m.input.layout:
        if (m.input.layout, layout) != ("NCHW", "NHWC"):
            raise ValueError(f"cannot convert a {m.input.layout} model to {layout}")
        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
    with _quiet("litert-torch"):
        litert_torch.convert(model, (example,)).export(str(out))


def quantize_tflite(job: ExportJob, fmt: Format, out: Path) -> None:
    """Full-int8 TFLite of the fp32 TFLite file, calibrated on the bundle's training samples."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    m = job.bundle.manifest
    source = job.float_file("tflite")
    interp = Interpreter(model_path=str(source))
    signatures = interp.get_signature_list()
    sig = next(iter(signatures))
    name = signatures[sig]["inputs"][0]
    x = to_layout(job.calibration().x, m.input.layout, fmt.layout_for(m.task, m.input.layout))
    if job.config.calib_method != "minmax":
        log.info("tflite-int8 calibrates with minmax (ai-edge-quantizer); %s applies to onnx-int8",
                 job.config.calib_method)
    input_tensor = interp.get_input_details()[0]["name"]
    with _quiet("ai-edge-quantizer"):
        qt = quantizer.Quantizer(str(source))
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        ranges = qt.calibrate({sig: [{name: x[i:i + 1]} for i in range(len(x))]}, num_threads=1)
    known = calibration_data.input_range(job.bundle)
    if known is not None:  # the pixel range, not what the calibration photos happened to hold
        ranges[input_tensor] = {"min": np.array([known[0]], np.float32), "max": np.array([known[1]], np.float32)}
    fitted, nudged = fit_bias_to_int32(source.read_bytes(), ranges)
    if nudged:
        log.info("raised the weight scale of %d near-dead channel(s) so their bias fits int32", nudged)
    with _quiet("ai-edge-quantizer"):
        qt = quantizer.Quantizer(fitted)
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        quantized = qt.quantize(ranges).quantized_model
    compacted = tflite_compact.compact(quantized)
    out.write_bytes(compacted)  # a scratch file: convert_all moves it into place
    log.info("stored repeated quantization vectors once: %.2f MB -> %.2f MB", len(quantized) / 1e6,
             len(compacted) / 1e6)


# builtin operator code → axis of the weight's output channels (TFLite schema: CONV_2D=3, DEPTHWISE_CONV_2D=4,
# FULLY_CONNECTED=9; weights OHWI, 1HWC, OI)
_CHANNEL_AXIS = {3: 0, 4: 3, 9: 0}
_INT32_MAX = 2**31 - 1


def fit_bias_to_int32(float_model: bytes, ranges: dict[str, dict[str, np.ndarray]],
                      margin: float = 4.0) -> tuple[bytearray, int]:
    """Make every int32 bias representable before static quantization; returns the model and a count.

    A quantized conv stores its bias as int32 at scale `s_in * s_w[c]`, with `s_w[c] = max|w_c| / 127`. A
    channel whose weights are all but zero and whose bias is not (BatchNorm folded into a conv makes them:
    gamma ~ 0, beta != 0) needs a bias beyond int32; ai-edge-quantizer saturates it, and the channel's
    constant output collapses. Measured here on MobileNetV2: top-1 agreement with fp32 fell to ~75%, and
    int16 activations did not help. The fix onnxruntime applies is to raise that channel's weight
    scale; here the channel's largest weight is raised to the smallest magnitude that gives a fitting
    scale (x`margin`). That changes the float function by at most that weight times the input, orders of
    magnitude below the int8 step, while the bias keeps its value.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    graph, buffers, nudged = model.subgraphs[0], model.buffers, 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        axis = _CHANNEL_AXIS.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if axis is None or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        source, weight, bias = (graph.tensors[i] for i in op.inputs[:3])
        qsv = ranges.get(source.name.decode())
        if qsv is None or buffers[weight.buffer].data is None or buffers[bias.buffer].data is None:
            continue
        lo, hi = min(float(np.min(qsv["min"])), 0.0), max(float(np.max(qsv["max"])), 0.0)
        s_in = (hi - lo) / 255.0
        if s_in <= 0:
            continue
        w = np.frombuffer(bytes(buffers[weight.buffer].data), np.float32).reshape(weight.shape)
        b = np.frombuffer(bytes(buffers[bias.buffer].data), np.float32)
        channels = np.moveaxis(w, axis, 0).reshape(len(b), -1).copy()
        need = margin * np.abs(b) * 127.0 / (s_in * _INT32_MAX)
        low = np.flatnonzero(np.abs(channels).max(axis=1) < need)
        if not len(low):
            continue
        j = np.abs(channels[low]).argmax(axis=1)
        channels[low, j] = np.where(channels[low, j] < 0, -1.0, 1.0) * need[low]
        moved = np.moveaxis(w, axis, 0).shape
        fixed = np.moveaxis(channels.reshape(moved), 0, axis).astype(np.float32)
        buffers[weight.buffer].data = np.frombuffer(fixed.tobytes(), np.uint8)
        nudged += len(low)
    if not nudged:
        return bytearray(float_model), 0
    return flatbuffer_utils.convert_object_to_bytearray(model), nudged
