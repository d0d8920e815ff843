"""Camera waste classification: the deployed bundle through the `Predictor`, per-class thresholds, `unknown`."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UserError

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Classification:
    """One classified image."""

    label: str
    """The top label, or `unknown` when its score is below that label's threshold."""
    top: str
    """The top label before thresholding."""
    score: float
    scores: dict[str, float]
    latency_ms: float
    """Model inference alone."""
    total_ms: float
    """Preprocessing plus inference."""
    model_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundle_thresholds(thresholds: dict[str, Any], labels: list[str]) -> dict[str, float]:
    """Per-label thresholds from a manifest's `thresholds`: `default`, a `labels`/`per_class` dict, or label keys."""
    out: dict[str, float] = {}
    if isinstance(thresholds.get("default"), int | float):
        out["default"] = float(thresholds["default"])
    for key in ("labels", "per_class", "classes"):
        if isinstance(thresholds.get(key), dict):
            out.update({k: float(v) for k, v in thresholds[key].items() if k in labels})
    out.update({k: float(v) for k, v in thresholds.items() if k in labels and isinstance(v, int | float)})
    return out


class Classifier:
    """A Predictor plus decision thresholds."""

    def __init__(self, predictor: Any, thresholds: dict[str, float]):
        self.predictor = predictor
        self.labels = list(predictor.labels)
        default = thresholds.get("default", DEFAULT_THRESHOLD)
        unknown = sorted(set(thresholds) - set(self.labels) - {"default"})
        if unknown:
            raise UserError(f"Setting EDGEKIT_CLASS_THRESHOLDS names {', '.join(unknown)}, which the model does "
                            f"not have (labels: {', '.join(self.labels)}).")
        self.thresholds = {label: thresholds.get(label, default) for label in self.labels}

    @property
    def version(self) -> str:
        return str(self.predictor.version)

    def classify(self, image: Any) -> Classification:
        """Classify a PIL image or an RGB uint8 HxWx3 array."""
        t0 = time.perf_counter()
        probs = np.asarray(self.predictor.predict_image(image), dtype=np.float32).reshape(-1)
        total_ms = (time.perf_counter() - t0) * 1000
        i = int(np.argmax(probs))
        top, score = self.labels[i], float(probs[i])
        label = top if score >= self.thresholds[top] else UNKNOWN
        return Classification(label, top, score, {k: float(p) for k, p in zip(self.labels, probs, strict=True)},
                              float(getattr(self.predictor, "latency_ms", total_ms)), total_ms, self.version)


def _find_bundle(path: Path) -> tuple[Any, Path | None]:
    """The bundle at `path` (a folder) or holding `path` (a model file), and the file if one was named."""
    from edgekit.bundle import MANIFEST, Bundle

    if path.is_dir():
        return Bundle.load(path), None
    if path.is_file():
        bundle = Bundle.containing(path)  # the model sits in its bundle, maybe a subfolder
        if bundle is not None:
            return bundle, path.resolve()
        raise UserError(f"Setting MODEL_PATH names {path}, which is not inside a bundle (no {MANIFEST} above it).")
    raise UserError(f"Setting MODEL_PATH names {path}, which does not exist.")


def choose_format(bundle: Any, framework: str, quantized: bool) -> str:
    """The model format to run: int8 first when asked and accepted by the gate, else fp32."""
    entries = {e.format: e for e in bundle.manifest.files.values() if e.role == "model"}
    order = [f"{framework}-int8", framework] if quantized else [framework, f"{framework}-int8"]
    for fmt in order:
        if fmt in entries and not entries[fmt].refused:
            return fmt
    raise UserError(f"Bundle {bundle.path} has no accepted {framework} model (it has: {', '.join(entries) or 'none'}); "
                    "export one or set MODEL_FRAMEWORK.")


def build_classifier(settings: Any) -> Classifier:
    """Load the classifier named by MODEL_PATH with thresholds from the bundle, overridden by the settings."""
    from edgekit.edge.predictor import Predictor

    bundle, file = _find_bundle(Path(settings.model_path))
    if bundle.manifest.task != "image-classification":
        raise UserError(f"Setting MODEL_PATH names a {bundle.manifest.task} bundle; the camera needs an "
                        "image-classification one.")
    if file is not None:
        rel = file.relative_to(bundle.path.resolve()).as_posix()
        entry = bundle.manifest.files.get(rel)
        if entry is None or entry.role != "model":
            raise UserError(f"Setting MODEL_PATH names {file}, which is not a model file of its bundle.")
        fmt = entry.format
    else:
        fmt = choose_format(bundle, settings.model_framework, settings.model_quantized)
    predictor = Predictor.from_bundle(bundle, fmt=fmt, threads=settings.threads)
    thresholds = bundle_thresholds(dict(bundle.manifest.thresholds), list(bundle.manifest.labels))
    thresholds.update(settings.class_thresholds)
    clf = Classifier(predictor, thresholds)
    log.info("classifier %s (%s), thresholds %s", clf.version, fmt, clf.thresholds)
    return clf
