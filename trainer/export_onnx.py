"""ONNX converters: fp32 through `torch.onnx.export`, int8 through `onnxruntime.quantization`.

fp32 uses the TorchScript exporter at opset 17 with a fixed batch of one: it is fast (under a second
for MobileNetV2, against ~6 s for the dynamo exporter here), gives static shapes that openwakeword
reads (`get_inputs()[0].shape[1]` must be 16) and its scores matched PyTorch within 1e-6 on every
model tried. The
manifest's key fields go into `metadata_props` (`edgekit.*` keys), so a lone .onnx file still says
what it is.

int8 is static QDQ: per-channel int8 weights, activations calibrated on real training samples of the
bundle (MinMax, Entropy or Percentile). Activations are uint8 because onnxruntime's x86 kernels
multiply u8×s8 (VPMADDUBSW) and run s8×s8 slower: MobileNetV2 at 96 px, one thread, measured
interleaved here: u8 activations 1.4 ms, s8 6.3 ms, fp32 6.1 ms. ARM runs both. Inputs and outputs stay float32, so
the file is a drop-in replacement for the fp32 one (openwakeword included).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.trainer import calibration_data
from edgekit.trainer.chatter import to_debug_log

if TYPE_CHECKING:
    from edgekit.trainer.export import ExportJob
    from edgekit.trainer.formats import Format

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def metadata(job: ExportJob, fmt: Format) -> dict[str, str]:
    """The manifest fields a device needs, as ONNX metadata_props."""
    from edgekit.edge.predictor import output_kind

    m = job.bundle.manifest
    return {
        "edgekit.name": m.name,
        "edgekit.version": m.version,
        "edgekit.task": m.task,
        "edgekit.format": fmt.name,
        "edgekit.labels": json.dumps(m.labels),
        "edgekit.layout": fmt.layout_for(m.task, m.input.layout),
        "edgekit.input": m.input.model_dump_json(),
        "edgekit.output": output_kind(m),
    }


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def export_onnx(job: ExportJob, fmt: Format, out: Path) -> None:
    """fp32 ONNX of the bundle's PyTorch model, checked and labelled with metadata."""
    import torch

    example = torch.from_numpy(job.example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(job.model, (example,), str(out), opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamo=False, do_constant_folding=True)
    _write_metadata(out, metadata(job, fmt))


class _Reader:
    """Feeds calibration samples to onnxruntime one at a time (the model has a fixed batch of one)."""

    def __init__(self, x: np.ndarray):
        self._items = iter(x[i:i + 1] for i in range(len(x)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self._items, None)
        return None if nxt is None else {INPUT_NAME: nxt}

    def rewind(self) -> None:  # part of CalibrationDataReader's interface; one pass is all we give
        pass


def quantize_onnx(job: ExportJob, fmt: Format, out: Path) -> None:
    """Static QDQ int8 of the fp32 ONNX file, calibrated on the bundle's training samples."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    source = job.float_file("onnx")
    prepared = out.with_name(out.stem + ".pre.onnx")
    with to_debug_log("onnxruntime pre-processing"):
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    calib = job.calibration().x
    options: dict = {"CalibMovingAverage": False}
    known = calibration_data.input_range(job.bundle)
    if known is not None:  # the pixel range, not what the calibration photos happened to hold
        options["TensorQuantOverrides"] = {INPUT_NAME: [{"rmin": np.float32(known[0]), "rmax": np.float32(known[1])}]}
    with to_debug_log("onnxruntime quantizer"):  # percentile/entropy print histogram notes on stdout
        quantize_static(
            str(prepared), str(out), _Reader(calib),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[job.config.calib_method],
            extra_options=options,
        )
    prepared.unlink(missing_ok=True)
    _write_metadata(out, metadata(job, fmt))
