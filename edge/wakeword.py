"""Wake word on the device: openWakeWord scores, fed through the shared detection state machine.

`score_stream` is the plain scoring pass (calibration uses it); `WakewordListener` adds one `Detector`
per model so one utterance gives exactly one detection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.edge.detector import FRAME_S, Detection, Detector, DetectorConfig
from edgekit.edge.oww import restart_stream
from edgekit.errors import UserError

log = logging.getLogger(__name__)


def score_stream(model: Any, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Score every 80 ms frame with an `openwakeword.Model`.

    Args:
        model: an `openwakeword.Model` (see `edgekit.edge.oww.make_model` and `silence_history`); it
            keeps its streaming state: call `edgekit.edge.oww.restart_stream(model)` between
            unrelated recordings.
        frames: int16 arrays of 1280 samples.

    Returns:
        Model name → float32 array with one score per frame, in frame order.
    """
    rows: dict[str, list[float]] = {name: [] for name in model.models}
    for frame in frames:
        for name, score in model.predict(frame).items():
            rows.setdefault(name, []).append(float(score))
    return {name: np.asarray(v, dtype=np.float32) for name, v in rows.items()}


@dataclass(frozen=True)
class WakewordModel:
    """One wake-word model to load: its file and how /health names it."""

    path: Path
    version: str
    """`name/version` from a bundle manifest, or `file-stem/sha256-prefix` for a bare file."""
    thresholds: dict[str, Any] = field(default_factory=dict)
    """The bundle's recommended decision settings (threshold, patience, refractory_s)."""

    @property
    def name(self) -> str:
        return self.path.stem  # openwakeword names each model after its file


def resolve_models(paths: list[Path], framework: str) -> list[WakewordModel]:
    """Model files from `OPENWAKEWORD_MODEL_PATHS` entries: files, or bundle folders (their `framework` file).

    A file inside a bundle or deployed release (a `manifest.json` above it) is reported as `name/version`
    and brings the bundle's recommended thresholds; a bare file is `stem/sha256-prefix`.
    """
    from edgekit import atomic
    from edgekit.bundle import MANIFEST, Bundle

    out = []
    for p in paths:
        if p.is_dir() and (p / MANIFEST).is_file():
            b = Bundle.load(p)
            f = b.model_file(framework)
            if f is None:
                raise UserError(f"Wake-word bundle {p} has no {framework} model (it has: {', '.join(b.formats())}).")
            out.append(WakewordModel(f, f"{b.name}/{b.version}", dict(b.manifest.thresholds)))
        elif p.is_file():
            # A deployed release keeps the bundle's manifest beside the model: report its name/version.
            b = Bundle.containing(p)
            if b is not None:
                out.append(WakewordModel(p, f"{b.name}/{b.version}", dict(b.manifest.thresholds)))
            else:
                out.append(WakewordModel(p, f"{p.stem}/{atomic.sha256_file(p)[:12]}"))
        else:
            raise UserError(f"Setting OPENWAKEWORD_MODEL_PATHS names {p}, which does not exist.")
    return out


def detector_config(settings: Any, bundle_thresholds: dict[str, Any]) -> DetectorConfig:
    """Decision settings: those set in the environment win, then the bundle's, then the defaults."""
    chosen = settings.model_fields_set

    def pick(field_name: str, key: str) -> Any:
        if field_name not in chosen and key in bundle_thresholds:
            return bundle_thresholds[key]
        return getattr(settings, field_name)

    return DetectorConfig(threshold=float(pick("wakeword_threshold", "threshold")),
                          patience=int(pick("wakeword_patience", "patience")),
                          refractory_s=float(pick("wakeword_refractory_s", "refractory_s")))


class WakewordListener:
    """An openWakeWord model plus one detector per wake word; feed frames, get detections."""

    def __init__(self, model: Any, configs: dict[str, DetectorConfig], versions: dict[str, str]):
        self.model = model
        self.versions = versions
        self.detectors = {name: Detector(configs[name], name) for name in model.models}
        self.frames = 0
        self.last_scores: dict[str, float] = {}

    @property
    def stream_s(self) -> float:
        return self.frames * FRAME_S

    def process(self, frame: np.ndarray) -> list[Detection]:
        """Score one 1280-sample frame and return the detections it fired (usually none)."""
        scores = self.model.predict(frame)
        self.frames += 1
        self.last_scores = {k: float(v) for k, v in scores.items()}
        out = []
        for name, score in self.last_scores.items():
            d = self.detectors[name].update(score, self.stream_s)
            if d is not None:
                out.append(d)
        return out

    def reset(self) -> None:
        """Forget streaming state (after the source restarts: old audio must not leak into new)."""
        restart_stream(self.model)  # the VAD's speech scores too: Model.reset() keeps them
        for d in self.detectors.values():
            d.reset()


def build_listener(settings: Any) -> WakewordListener:
    """Load the configured wake-word models with their feature models; no downloads."""
    from edgekit.edge.oww import make_model
    from edgekit.paths import openwakeword_assets

    paths = list(settings.wakeword_models)
    framework = settings.wakeword_framework or (
        paths[0].suffix.lstrip(".") if paths[0].suffix in (".onnx", ".tflite") else "onnx")
    models = resolve_models(paths, framework)
    feature_dir = settings.feature_dir or openwakeword_assets()
    if feature_dir is None:
        raise UserError("openWakeWord feature models not found; set EDGEKIT_FEATURE_DIR to the folder with "
                        "melspectrogram and embedding_model files.")
    if settings.wakeword_noise_suppression:
        try:
            import speexdsp_ns  # noqa: F401  (what openwakeword imports for noise suppression)
        except ImportError:
            raise UserError("Setting OPENWAKEWORD_NOISE_SUPPRESSION needs speexdsp-ns (Linux only): "
                            "sudo apt install libspeexdsp-dev && pip install speexdsp-ns.")
    oww = make_model([m.path for m in models], framework, feature_dir,
                     vad_threshold=settings.wakeword_vad_threshold,
                     noise_suppression=settings.wakeword_noise_suppression)  # history already silenced
    configs = {m.name: detector_config(settings, m.thresholds) for m in models}
    for name, c in configs.items():
        log.info("wake word %s: threshold %.2f, patience %d, refractory %.1f s (%s)",
                 name, c.threshold, c.patience, c.refractory_s, framework)
    return WakewordListener(oww, configs, {m.name: m.version for m in models})
