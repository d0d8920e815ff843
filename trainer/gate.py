"""The accuracy gate: every exported file, run by the device's own `Predictor`, against the PyTorch model.

Per format on the validation samples: accuracy, top-1 agreement with PyTorch, the largest absolute
difference of the scores, file size and median single-sample latency on one thread. A format whose
accuracy falls more than `max_drop` points below PyTorch's is `rejected` in the manifest (the file stays
for inspection; deploy refuses it unless forced) and the command exits with `GateRejected`.

Decisions: classifiers take the arg-max; a single-output model (a wake-word head) says positive when
its score reaches `thresholds["default"]` or `thresholds["threshold"]` (0.5 when the bundle sets none).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rich import box
from rich.table import Table

from edgekit.bundle import Bundle
from edgekit.console import console
from edgekit.edge.predictor import Predictor, postprocess
from edgekit.errors import UserError

if TYPE_CHECKING:
    from edgekit.trainer.calibration_data import Samples

log = logging.getLogger(__name__)


class GateRejected(UserError):
    """At least one exported format lost too much accuracy; exit code 3 tells scripts apart from misuse."""

    exit_code = 3


@dataclass
class Result:
    """What the gate measured for one format (or for PyTorch itself, the reference row)."""

    format: str
    accuracy: float
    """Fraction of correct decisions."""
    agreement: float | None = None
    """Fraction of samples decided as PyTorch decides them."""
    max_abs_diff: float | None = None
    """Largest |score - PyTorch score| over samples and outputs."""
    size: int | None = None
    latency_ms: float | None = None
    """Median single-sample inference time, one thread unless asked otherwise."""
    drop: float | None = None
    """Accuracy points below PyTorch (positive = worse)."""
    status: str | None = None

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("format", "status")}


def decisions(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Class decisions from scores: arg-max, or `score >= threshold` for a single output."""
    if scores.shape[1] == 1:
        return (scores[:, 0] >= threshold).astype(np.int64)
    return scores.argmax(axis=1)


def threshold_of(bundle: Bundle) -> float:
    """A single-output model's decision threshold: `thresholds.default`, else `.threshold`, else 0.5."""
    for key in ("default", "threshold"):
        value = bundle.manifest.thresholds.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.5


def pytorch_scores(model: Any, x: np.ndarray, output: str, batch: int = 64) -> np.ndarray:
    """The PyTorch model's scores, post-processed exactly as the Predictor does it."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).float().numpy())
    return postprocess(np.concatenate(outs), output)


def median_latency(predictor: Predictor, x: np.ndarray, runs: int) -> float:
    """Median of `runs` single-sample calls (after one warm-up), cycling through the samples."""
    predictor.predict(x[:1])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        predictor.predict(x[i % len(x)][None])
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def evaluate(predictor: Predictor, samples: Samples, threshold: float, reference: np.ndarray | None,
             latency_runs: int) -> Result:
    """Measure one model file on `samples` (reference = PyTorch scores on the same samples, if known)."""
    scores = predictor.predict(samples.x)
    pred = decisions(scores, threshold)
    result = Result(format="", accuracy=float((pred == samples.y).mean()), size=predictor.path.stat().st_size)
    if reference is not None:
        result.agreement = float((pred == decisions(reference, threshold)).mean())
        result.max_abs_diff = float(np.abs(scores - reference).max())
    if latency_runs > 0:
        result.latency_ms = median_latency(predictor, samples.x, latency_runs)
    return result


def judge(results: list[Result], reference: Result, max_drop: float) -> list[Result]:
    """Set `drop` and `status` on each result; returns the rejected ones."""
    for r in results:
        r.drop = 100.0 * (reference.accuracy - r.accuracy)
        # 1e-9: float noise must not reject a drop of exactly max_drop (1 of 50 samples: 2.0000000000000018)
        r.status = "rejected" if r.drop > max_drop + 1e-9 else "accepted"
    return [r for r in results if r.status == "rejected"]


def coarseness(n_samples: int, max_drop: float) -> str:
    """A sentence for a rejection when one sample is worth more than `max_drop` points ("" when it is not):
    on 72 photos a single changed prediction is 1.4 points, so a 1-point gate rejects any net loss."""
    step = 100.0 / max(1, n_samples)
    if step <= max_drop:
        return ""
    allow_one = math.ceil(step * 10) / 10  # rounded up, so that passing it does allow one sample
    return (f" With {n_samples} held-out samples one sample is {step:.2f} points, more than the allowed "
            f"{max_drop:g}: a single prediction lost rejects a format. More held-out data, or --max-drop "
            f"{allow_one:.1f} to allow one, makes the gate less strict.")


def int8_without_gain(results: list[Result], margin: float = 0.9) -> list[str]:
    """A sentence for each int8 file not at least 10% smaller, or not 10% faster, than its float file.

    Weights are a small part of some graphs: an LSTM unrolled over 128 steps is thousands of tensors, and
    int8 adds quantization records and (de)quantize ops to each, so its file can outgrow the float one.
    Latency is this machine's, not the device's, so the advice to deploy the float file comes only when
    neither size nor time gains.
    """
    by_name = {r.format: r for r in results}
    notes = []
    for r in results:
        fp32 = by_name.get(r.format.removesuffix("-int8")) if r.format.endswith("-int8") else None
        if fp32 is None:
            continue
        parts = []
        if r.size is not None and fp32.size is not None and r.size > margin * fp32.size:
            parts.append(f"takes {r.size / 1e6:.2f} MB against {fp32.format}'s {fp32.size / 1e6:.2f} MB")
        if r.latency_ms is not None and fp32.latency_ms is not None and r.latency_ms > margin * fp32.latency_ms:
            parts.append(f"runs in {r.latency_ms:.2f} ms against {fp32.format}'s {fp32.latency_ms:.2f} ms here")
        if parts:
            advice = f"; `edgekit deploy --format {fp32.format}` serves as well" if len(parts) == 2 else ""
            notes.append(f"int8 gains little for this model: {r.format} {' and '.join(parts)}{advice}.")
    return notes


def store(bundle: Bundle, results: list[Result], max_drop: float, samples: str) -> None:
    """Write each verdict and its measurements into the manifest (one atomic save)."""
    by_format = {r.format: r for r in results}
    with bundle.editing() as manifest:
        for entry in manifest.files.values():
            r = by_format.get(entry.format)
            if entry.role == "model" and r is not None:
                entry.status = r.status
                entry.gate = {**r.record(), "max_drop": max_drop, "samples": samples}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(results: list[Result], reference: Result | None, title: str) -> Table:
    """The results as one Rich table, PyTorch first (narrow enough for an 80-column log)."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("format", "MB", "acc %", "drop", "agree %", "max |diff|", "ms", "status"):
        t.add_column(col, justify="left" if col in ("format", "status") else "right", no_wrap=True)
    rows = ([reference] if reference else []) + results
    for r in rows:
        style = {"rejected": "red", "accepted": "green"}.get(r.status or "", "")
        t.add_row(
            r.format, "-" if r.size is None else f"{r.size / 1e6:.2f}", _pct(r.accuracy),
            "-" if r.drop is None else f"{r.drop:+.1f}", _pct(r.agreement),
            "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
            "-" if r.latency_ms is None else f"{r.latency_ms:.2f}",
            f"[{style}]{r.status}[/{style}]" if style else "-",
        )
    return t


def print_table(results: list[Result], reference: Result | None, title: str) -> None:
    console.print(table(results, reference, title))
