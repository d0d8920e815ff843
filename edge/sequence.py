"""Run an exported sequence classifier on the device: over a CSV, or over a live stream of frames.

Raw frames are windowed with the bundle's `window`/`stride`, normalised with the training mean/std
stored in `input.preprocess`, and passed to a predictor (onnxruntime or TFLite through
`edgekit.edge.predictor`). No torch import here: the Pi has only the `edge` extra.

    model = SequenceModel.from_bundle(resolve("har"), fmt="onnx")
    stream = model.stream()
    for frame in imu_frames():            # one [acc_x, ..., gyro_z] row at a time
        if (p := stream.push(frame)) is not None:
            print(p.label, p.score)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import UserError
from edgekit.trainer.seq_data import Normaliser, read_csv

if TYPE_CHECKING:
    from edgekit.bundle import Bundle, Manifest

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Normalised float32 windows [N, window, features] → class probabilities [N, classes] (as
`Predictor.predict`, which feeds a fixed-batch model one window at a time)."""


@dataclass(frozen=True)
class Prediction:
    """The classification of one window."""

    label: str
    score: float
    """Probability of `label`."""
    start: int
    """Index of the window's first frame in the stream or file."""
    probs: np.ndarray


@dataclass
class CsvResult:
    """Every window of one CSV file, and the truth where the file is labeled."""

    source: str
    starts: np.ndarray
    probs: np.ndarray
    """[N, classes]."""
    truth: list[str | None]
    """Label of each window when all its frames carry the same known label, else None."""

    def predicted(self, labels: Sequence[str]) -> list[str]:
        return [labels[i] for i in self.probs.argmax(1)] if len(self.probs) else []


class SequenceModel:
    """An exported sequence model with its windowing and normalisation."""

    def __init__(self, manifest: Manifest, predict: PredictFn):
        pre = manifest.input.preprocess
        if manifest.task != "sequence-classification" or not pre.window or not pre.features:
            raise UserError(f"Bundle {manifest.name}/{manifest.version} is not a sequence classifier "
                            "with a window and feature list.")
        self.labels = list(manifest.labels)
        self.features = list(pre.features)
        self.window, self.stride = int(pre.window), int(pre.stride or pre.window)
        self.norm = Normaliser(np.asarray(pre.mean or [0.0] * len(self.features), dtype=np.float32),
                               np.asarray(pre.std or [1.0] * len(self.features), dtype=np.float32))
        self.label_col = manifest.extra.get("label_col", "activity")
        self._predict = predict

    @classmethod
    def from_bundle(cls, bundle: Bundle, fmt: str = "onnx", threads: int = 1) -> SequenceModel:
        """Use the bundle's exported file of format `fmt` (onnx, onnx-int8, tflite, tflite-int8)."""
        from edgekit.edge.predictor import Predictor

        p = Predictor.from_bundle(bundle, fmt=fmt, threads=threads)
        return cls(bundle.manifest, p.predict)

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        """Frames scaled with the training statistics stored in the bundle (the trainer's `Normaliser`)."""
        return self.norm(np.asarray(frames, dtype=np.float32))

    def predict_windows(self, raw: np.ndarray) -> np.ndarray:
        """Probabilities for raw (not normalised) windows [N, window, features]."""
        if len(raw) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.asarray(self._predict(self.normalise(raw)), dtype=np.float32)

    def predict_csv(self, path: str | Path) -> CsvResult:
        """Slide over the whole recording (every `stride` frames), as the device would live."""
        rec = read_csv(path, self.label_col, self.features, require_labels=False)
        starts = np.arange(0, len(rec.frames) - self.window + 1, self.stride)
        raw = np.stack([rec.frames[s:s + self.window] for s in starts]) if len(starts) else \
            np.zeros((0, self.window, len(self.features)), np.float32)
        truth = []
        for s in starts:
            lab = rec.labels[s:s + self.window]
            truth.append(str(lab[0]) if lab[0] in self.labels and (lab == lab[0]).all() else None)
        return CsvResult(rec.source, starts, self.predict_windows(raw), truth)

    def stream(self) -> FrameStream:
        return FrameStream(self)


class FrameStream:
    """Feed frames one at a time; every `stride` frames (once a window is full) it returns a prediction."""

    def __init__(self, model: SequenceModel):
        self.model = model
        self._buf = np.zeros((model.window, len(model.features)), np.float32)
        self._seen = 0

    def push(self, frame: Sequence[float] | np.ndarray) -> Prediction | None:
        m = self.model
        row = np.asarray(frame, dtype=np.float32).reshape(-1)
        if row.shape[0] != len(m.features):
            raise UserError(f"A frame has {row.shape[0]} values; the model takes {len(m.features)} "
                            f"({', '.join(m.features)}).")
        self._buf = np.roll(self._buf, -1, axis=0)
        self._buf[-1] = row
        self._seen += 1
        start = self._seen - m.window
        if start < 0 or start % m.stride:
            return None
        probs = m.predict_windows(self._buf[None])[0]
        i = int(probs.argmax())
        return Prediction(m.labels[i], float(probs[i]), start, probs)

    def run(self, frames: Iterable[Sequence[float]]) -> list[Prediction]:
        return [p for f in frames if (p := self.push(f)) is not None]


def evaluate_folder(model: SequenceModel, folder: str | Path) -> dict[str, Any]:
    """Accuracy report over every labeled, label-pure window of the CSVs in `folder`, cut as the device
    cuts them (`predict_csv`: from frame 0 every `stride`). `edgekit eval` cuts per labeled run instead
    (`edgekit.trainer.calibration_data`)."""
    from edgekit.trainer.metrics import classification_report

    files = sorted(Path(folder).rglob("*.csv"))
    if not files:
        raise UserError(f"{folder} has no .csv files to evaluate.")
    index = {c: i for i, c in enumerate(model.labels)}
    y_true, y_pred = [], []
    for f in files:
        res = model.predict_csv(f)
        pred = res.probs.argmax(1)
        for t, p in zip(res.truth, pred, strict=True):
            if t is not None:
                y_true.append(index[t])
                y_pred.append(int(p))
    if not y_true:
        raise UserError(f"No CSV in {folder} has a window of {model.window} frames with one known label.")
    return classification_report(y_true, y_pred, model.labels)
