"""Field calibration of the camera classifier: per-class thresholds at a target precision.

Site photos in `DIR/<class>/` (as `edgekit data capture` writes them) go through the same `Predictor`
and preprocessing the device uses. For each class, among the photos the model puts in that class, the
threshold is the lowest top-class score at which the precision is still at least the target: recall
only falls as the threshold rises, so that is the highest recall the target allows. Below its
threshold a photo is `unknown`. The threshold sits halfway between the lowest accepted score and the
highest rejected one below it, so a photo scoring between them is not decided by a hair.

A class whose precision never reaches the target gets the threshold of its best precision and is
reported as not meeting it; a class the model never predicts keeps the bundle's default. With tens
of photos per class the measured precision is uncertain: the report gives its 95% lower bound
(Clopper-Pearson) beside it, and more photos narrow it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import UserError
from edgekit.paths import check_output

log = logging.getLogger(__name__)

ENV_KEY = "EDGEKIT_CLASS_THRESHOLDS"
"""The device setting that overrides the bundle's per-class thresholds (`label=0.6,other=0.4`)."""


class ClassifierCalibration(BaseModel):
    """`edgekit calibrate classifier`, validated once by the CLI."""

    model_config = ConfigDict(extra="forbid")
    model: str
    """An image-classification bundle (folder, name, or a deployed release folder)."""
    data: Path
    """Labeled site photos, one subfolder per class."""
    out: Path = Path("calibration")
    """Folder for calibration.json, reliability.png and calibration.env."""
    target_precision: float = Field(0.95, gt=0, le=1)
    """Precision each class must keep: of the photos called X, at least this share really are X."""
    format: str | None = None
    """Model file format to calibrate (e.g. onnx-int8); default: what the device runs (see `framework`)."""
    framework: Literal["onnx", "tflite"] = "onnx"
    """With no `format`: the runtime, int8 first when the export gate accepted it (as on the device)."""
    write_bundle: bool = True
    """Also write the thresholds into the bundle manifest's `thresholds.per_class`."""


@dataclass
class ClassThreshold:
    """The calibrated decision for one class."""

    label: str
    threshold: float | None
    """None when the model never predicts this class (the bundle's default stays)."""
    met: bool
    """The precision on the calibration photos reaches the target at this threshold."""
    precision: float | None
    recall: float
    support: int
    """Photos of this class in the data."""
    predicted: int
    """Photos the model calls this class at this threshold (before: all its top-1 predictions)."""


def class_thresholds(scores: np.ndarray, y: np.ndarray, labels: list[str], target: float) -> list[ClassThreshold]:
    """Per-class thresholds for the highest recall at `target` precision.

    Args:
        scores: [N, K] class probabilities; y: [N] true class indices.
    """
    top, conf = scores.argmax(axis=1), scores.max(axis=1).astype(np.float64)
    out = []
    for k, label in enumerate(labels):
        support = int((y == k).sum())
        mine = top == k
        if not mine.any():
            out.append(ClassThreshold(label, None, False, None, 0.0, support, 0))
            continue
        s, ok = conf[mine], y[mine] == k
        order = np.argsort(-s, kind="stable")
        s, ok = s[order], ok[order]
        tp = np.cumsum(ok)
        n = np.arange(1, len(s) + 1)
        # a cut can only fall between distinct scores: take the last index of each run of equal scores
        last = np.r_[s[1:] != s[:-1], True]
        prec = np.where(last, tp / n, -1.0)
        feasible = np.flatnonzero(prec >= target - 1e-12)
        i = int(feasible[-1]) if len(feasible) else int(np.argmax(prec))
        thr = float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i])
        out.append(ClassThreshold(label, thr, bool(len(feasible)), float(tp[i] / n[i]),
                                  float(tp[i] / support) if support else 0.0, support, int(n[i])))
    return out


def decide(scores: np.ndarray, thresholds: list[ClassThreshold], default: float = 0.0) -> np.ndarray:
    """Predicted class index per row, or -1 (`unknown`) below the top class's threshold.

    `default` stands in for a class without a threshold (`class_thresholds` gives None only to a class
    that is never the top class in the scores it was fitted on).
    """
    top, conf = scores.argmax(axis=1), scores.max(axis=1)
    thr = np.array([t.threshold if t.threshold is not None else default for t in thresholds])
    return np.where(conf >= thr[top], top, -1)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    idx = np.clip((conf * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(conf))


def score_folder(cfg: ClassifierCalibration) -> tuple[Any, str, list[Path], np.ndarray, np.ndarray]:
    """(bundle, format, image paths, true indices, probabilities [N, K]) through the device's Predictor."""
    from edgekit.bundle import resolve
    from edgekit.console import err_console
    from edgekit.edge.classify import choose_format
    from edgekit.edge.predictor import Predictor
    from edgekit.edge.preprocess import each_readable, labeled_folder
    from edgekit.progress import Progress

    bundle = resolve(cfg.model)
    if bundle.manifest.task != "image-classification":
        raise UserError(f"Bundle {bundle.name}/{bundle.version} is for {bundle.manifest.task}, "
                        "not image classification.")
    fmt = cfg.format or choose_format(bundle, cfg.framework, quantized=True)
    predictor = Predictor.from_bundle(bundle, fmt=fmt)
    paths, y = labeled_folder(cfg.data, list(bundle.manifest.labels))
    with Progress(console=err_console, transient=True) as bar:
        rows, keep = each_readable(bar.track(paths, description=f"classifying {len(paths)} photos"),
                                   lambda p: np.asarray(predictor.predict_image(p), dtype=np.float64).reshape(-1),
                                   f"photos in {cfg.data}")
    return bundle, fmt, [paths[i] for i in keep], y[keep], np.stack(rows)


def precision_lower_bound(correct: int, claimed: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a precision measured as `correct` of `claimed`."""
    from scipy.stats import beta

    return float(beta.ppf(1 - confidence, correct, claimed - correct + 1)) if correct > 0 else 0.0


def _per_class_counts(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for k, label in enumerate(labels):
        called, real = pred == k, y == k
        tp = int((called & real).sum())
        out[label] = {"precision": tp / int(called.sum()) if called.any() else None,
                      "precision_low95": precision_lower_bound(tp, int(called.sum())) if called.any() else None,
                      "recall": tp / int(real.sum()) if real.any() else None,
                      "unknown_rate": float((pred[real] == -1).mean()) if real.any() else None,
                      "support": int(real.sum()), "predicted": int(called.sum())}
    return out


def run_calibration(cfg: ClassifierCalibration) -> dict[str, Any]:
    """Score the photos, choose thresholds, write the results (and the bundle's thresholds)."""
    from edgekit import __version__, atomic
    from edgekit.edge.calibration_plots import reliability_plot

    check_output(cfg.out, "--out")  # before the scoring: a bad --out must not cost a whole calibration
    bundle, fmt, paths, y, scores = score_folder(cfg)
    labels = list(bundle.manifest.labels)
    chosen = class_thresholds(scores, y, labels, cfg.target_precision)
    pred = decide(scores, chosen)  # a class without a threshold is never the top class on these photos
    conf, correct = scores.max(axis=1), scores.argmax(axis=1) == y
    per_class = {t.label: float(t.threshold) for t in chosen if t.threshold is not None}
    accepted = pred >= 0
    result = {
        "kind": "classifier", "edgekit_version": __version__,
        "model": {"bundle": f"{bundle.name}/{bundle.version}", "path": str(bundle.path), "format": fmt},
        "data": {"folder": str(cfg.data), "images": len(paths),
                 "per_class": {lbl: int((y == k).sum()) for k, lbl in enumerate(labels)}},
        "target_precision": cfg.target_precision,
        "thresholds": per_class, "classes": [asdict(t) for t in chosen],
        "at_thresholds": _per_class_counts(y, pred, labels),
        "unknown_rate": float((~accepted).mean()),
        "precision_accepted": float((pred[accepted] == y[accepted]).mean()) if accepted.any() else None,
        "top1_accuracy": float(correct.mean()), "ece": expected_calibration_error(conf, correct),
        "not_met": [t.label for t in chosen if not t.met],
        "env": {ENV_KEY: ",".join(f"{k}={v!r}" for k, v in per_class.items())},
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(cfg.out / "calibration.json", result)
    atomic.write_text(cfg.out / "calibration.env", "".join(f"{k}={v}\n" for k, v in result["env"].items()))
    reliability_plot(conf, correct, cfg.out / "reliability.png")
    if cfg.write_bundle:
        thresholds = dict(bundle.manifest.thresholds) | {"per_class": per_class}
        extra = dict(bundle.manifest.extra) | {"calibration": {k: result[k] for k in (
            "target_precision", "data", "unknown_rate", "not_met", "at_thresholds")} | {"format": fmt}}
        bundle.update(thresholds=thresholds, extra=extra)
    for t in chosen:
        if t.threshold is None:
            log.warning("%s: the model never predicts it on these photos; it keeps the default threshold", t.label)
        elif not t.met:
            log.warning("%s: no threshold reaches precision %.2f (best %.2f at %.3f)", t.label,
                        cfg.target_precision, t.precision, t.threshold)
    return result


def print_summary(result: dict[str, Any]) -> None:
    """Per-class thresholds with precision/recall at them, as a Rich table."""
    from rich.table import Table

    from edgekit.console import console

    t = Table(title=f"classifier calibration: {result['model']['bundle']} ({result['model']['format']}), "
                    f"target precision {result['target_precision']:g}", title_justify="left")
    for col in ("class", "threshold", "precision (95% low)", "recall", "unknown", "photos", "meets target"):
        t.add_column(col, justify="left" if col == "class" else "right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    for c in result["classes"]:
        at = result["at_thresholds"][c["label"]]
        low = "" if at["precision_low95"] is None else f" (>={at['precision_low95']:.0%})"
        t.add_row(c["label"], "-" if c["threshold"] is None else f"{c['threshold']:.3f}", pct(at["precision"]) + low,
                  pct(at["recall"]), pct(at["unknown_rate"]), str(c["support"]),
                  "yes" if c["met"] else "[red]no[/]")
    console.print(t)
    console.print(f"unknown rate {result['unknown_rate']:.1%}, precision of accepted "
                  f"{pct(result['precision_accepted'])}, top-1 accuracy {result['top1_accuracy']:.1%}, "
                  f"ECE {result['ece']:.3f}")
