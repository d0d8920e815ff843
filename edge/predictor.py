"""One inference runner for the device and for the export gate (no torch import).

    from edgekit.edge.predictor import Predictor

    p = Predictor.from_bundle(bundle, fmt="onnx-int8", threads=1)   # or Predictor(path, manifest, threads)
    p.labels                     # list[str]
    p.version                    # "name/vN"
    scores = p.predict(x)        # x: float32 batch in the bundle's PyTorch layout (manifest.input.layout),
                                 #    already preprocessed; returns float32 [N, n_out] (probabilities
                                 #    for classifiers: softmax applied if the model outputs logits)
    scores = p.predict_image(pil_or_uint8_hwc)  # decode/resize/scale per manifest.input.preprocess
    p.latency_ms                 # last call's inference time

The runtime comes from the file suffix through `RUNTIMES` (.onnx → onnxruntime, .tflite → ai-edge-litert),
imported only when a file of that kind is loaded. Quantized I/O (a tflite-int8 file takes and returns
int8) is handled here with the file's own scale and zero point, and an image file recorded as NHWC is
fed transposed, so every caller speaks float32 in the PyTorch layout whatever the file is.

What the model outputs is `manifest.extra["output"]`: `logits` (softmax over classes, or a sigmoid for
a single output) or `probabilities`; wake-word heads default to probabilities, classifiers to logits.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle import Bundle, Manifest
from edgekit.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Quant:
    """Affine quantization of one tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int
    dtype: Any

    def quantize(self, x: np.ndarray) -> np.ndarray:
        info = np.iinfo(self.dtype)
        q = np.round(x / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class OnnxRunner:
    """A model file run by onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UserError(f"Running {path.name} needs onnxruntime: pip install onnxruntime.") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        if inp.type != "tensor(float)":
            raise UserError(f"{path.name} takes {inp.type}; edgekit runs ONNX files with float input (QDQ int8).")
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.input_quant: Quant | None = None
        self.output_quant: Quant | None = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TfliteRunner:
    """A model file run by the LiteRT (ai-edge-litert) interpreter, float or int8 I/O."""

    def __init__(self, path: Path, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise UserError(f"Running {path.name} needs ai-edge-litert: pip install ai-edge-litert.") from e
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape_signature"])
        self.input_quant = _tflite_quant(self.inp)
        self.output_quant = _tflite_quant(self.out)

    def run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.inp["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.out["index"]).copy()


def _tflite_quant(detail: dict[str, Any]) -> Quant | None:
    if detail["dtype"] == np.float32:
        return None
    scale, zero_point = detail["quantization"]
    if not scale:
        raise UserError(f"Tensor {detail['name']} is {detail['dtype'].__name__} without quantization parameters.")
    return Quant(float(scale), int(zero_point), detail["dtype"])


@dataclass(frozen=True)
class Runtime:
    """One inference runtime: what loads a file with this suffix."""

    name: str
    load: Callable[[Path, int], Any]


RUNTIMES: dict[str, Runtime] = {
    ".onnx": Runtime("onnxruntime", OnnxRunner),  # fp32 or QDQ int8, float I/O
    ".tflite": Runtime("ai-edge-litert", TfliteRunner),  # fp32 or int8; int8 I/O is quantized by the Predictor
}


def to_layout(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A batch in axis order `src` rearranged to `dst` (NCHW <-> NHWC; anything else must already match)."""
    if dst == src:
        return x
    if (src, dst) == ("NCHW", "NHWC"):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if (src, dst) == ("NHWC", "NCHW"):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise ValueError(f"cannot convert layout {src} to {dst}")


def _file_layout(manifest: Manifest, path: Path) -> str:
    for rel, entry in manifest.files.items():
        if Path(rel).name == path.name and entry.layout:
            return entry.layout
    return manifest.input.layout


def output_kind(manifest: Manifest) -> str:
    """`logits` or `probabilities`: the bundle's `extra["output"]`, else by task."""
    return manifest.extra.get("output") or ("probabilities" if manifest.task == "wakeword" else "logits")


def postprocess(raw: np.ndarray, output: str) -> np.ndarray:
    """Raw model outputs [N, ...] as float32 scores [N, n_out]: softmax (or sigmoid) of logits."""
    raw = raw.reshape(raw.shape[0], -1).astype(np.float32)
    if output != "logits":
        return raw
    if raw.shape[1] == 1:
        return (1.0 / (1.0 + np.exp(-raw))).astype(np.float32)
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Predictor:
    """Runs one exported model file of a bundle on float32 input in the bundle's PyTorch layout."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest, threads: int | None = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"Model file {self.path} does not exist.")
        runtime = RUNTIMES.get(self.path.suffix)
        if runtime is None:
            raise UserError(f"{self.path.name} is not a model file edgekit can run ({', '.join(RUNTIMES)}).")
        self.manifest = manifest
        self.threads = threads or os.cpu_count() or 1
        self.runner = runtime.load(self.path, self.threads)
        self.layout = _file_layout(manifest, self.path)
        self.output = output_kind(manifest)
        self.latency_ms = float("nan")
        log.debug("%s on %s, %d thread(s), layout %s", self.path.name, runtime.name, self.threads, self.layout)

    @classmethod
    def from_bundle(cls, bundle: Bundle, fmt: str, threads: int | None = 1) -> Predictor:
        """The predictor for the bundle's model file of format `fmt` (e.g. `tflite-int8`)."""
        path = bundle.model_file(fmt)
        if path is None:
            have = bundle.formats()
            close = difflib.get_close_matches(fmt, have, n=1)
            hint = f"did you mean {close[0]}?" if close else "run `edgekit export` first."
            raise UserError(f"Bundle {bundle.path} has no {fmt} model (it has: {', '.join(have) or 'none'}); {hint}")
        return cls(path, bundle.manifest, threads)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def version(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"

    def _to_file_layout(self, x: np.ndarray) -> np.ndarray:
        return to_layout(x, self.manifest.input.layout, self.layout)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores [N, n_out] for a float32 batch (a single sample without batch axis is accepted too)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.manifest.input.shape) - 1:
            x = x[None]
        x = self._to_file_layout(x)
        fixed_batch = self.runner.input_shape[0] == 1
        batches = [x[i:i + 1] for i in range(len(x))] if fixed_batch else [x]
        outs = []
        start = time.perf_counter()
        for b in batches:
            if self.runner.input_quant is not None:
                b = self.runner.input_quant.quantize(b)
            y = self.runner.run(b)
            if self.runner.output_quant is not None:
                y = self.runner.output_quant.dequantize(y)
            outs.append(y)
        self.latency_ms = (time.perf_counter() - start) * 1000.0
        return postprocess(np.concatenate(outs), self.output)

    def predict_image(self, image: Any) -> np.ndarray:
        """Scores [1, n_out] for one image (path, bytes, PIL image or uint8 HWC RGB array)."""
        from edgekit.edge.preprocess import preprocess_image

        if self.manifest.task != "image-classification":
            raise UserError(f"predict_image needs an image-classification bundle, not {self.manifest.task}.")
        return self.predict(preprocess_image(image, self.manifest.input.preprocess, self.manifest.input.layout))
