"""openWakeWord, made to work offline and under numpy 2.

openwakeword 0.6.0 imports `tflite_runtime` for its tflite path. That wheel (2.14) breaks under numpy 2,
and when the import fails openwakeword quietly switches to onnx if `.onnx` files sit beside the
`.tflite` ones: the user asked for tflite and silently gets something else. Here the tflite path is
served by `ai-edge-litert` (the maintained successor, numpy 2 compatible) under the module name
openwakeword imports, and a framework that cannot load fails loudly.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UserError

log = logging.getLogger(__name__)

FRAMEWORKS = ("onnx", "tflite")
HISTORY_SAMPLES = 4 * 16000
"""Audio that fills openwakeword's embedding history (4 s at 16 kHz)."""
FEATURE_FILES = {"onnx": ("melspectrogram.onnx", "embedding_model.onnx"),
                 "tflite": ("melspectrogram.tflite", "embedding_model.tflite")}


def ensure_tflite_runtime() -> None:
    """Make `import tflite_runtime.interpreter` give ai-edge-litert's interpreter."""
    current = sys.modules.get("tflite_runtime.interpreter")
    if current is not None and getattr(current, "__edgekit_shim__", False):
        return
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as e:
        raise UserError("The tflite framework needs ai-edge-litert: pip install ai-edge-litert.") from e
    pkg = types.ModuleType("tflite_runtime")
    pkg.__path__ = []  # a package, so `import tflite_runtime.interpreter` resolves from sys.modules
    mod = types.ModuleType("tflite_runtime.interpreter")
    mod.Interpreter = litert.Interpreter
    mod.load_delegate = getattr(litert, "load_delegate", None)
    mod.__edgekit_shim__ = True
    pkg.interpreter = mod
    sys.modules["tflite_runtime"] = pkg
    sys.modules["tflite_runtime.interpreter"] = mod


def feature_models(folder: str | Path, framework: str) -> tuple[Path, Path]:
    """The melspectrogram and embedding model files for `framework` in `folder`."""
    if framework not in FRAMEWORKS:
        raise UserError(f"Unknown inference framework {framework!r}; use one of: {', '.join(FRAMEWORKS)}.")
    folder = Path(folder)
    mel, emb = (folder / name for name in FEATURE_FILES[framework])
    missing = [p.name for p in (mel, emb) if not p.is_file()]
    if missing:
        raise UserError(
            f"openWakeWord feature models {', '.join(missing)} are not in {folder}; "
            "run `python -c 'import openwakeword.utils as u; u.download_models()'` on a machine with "
            "internet, or point the feature-model folder at a copy."
        )
    return mel, emb


def make_model(model_paths: list[str | Path], framework: str, feature_dir: str | Path,
               vad_threshold: float = 0.0, noise_suppression: bool = False, **kwargs: Any):
    """An `openwakeword.Model` for `model_paths`, feature models from `feature_dir`, no downloads."""
    mel, emb = feature_models(feature_dir, framework)
    for p in model_paths:
        if not Path(p).is_file():
            raise UserError(f"Wake-word model {p} does not exist.")
        if Path(p).suffix != f".{framework}":
            raise UserError(f"Wake-word model {p} is not a .{framework} file (framework is {framework}).")
    if framework == "tflite":
        ensure_tflite_runtime()
    if vad_threshold > 0:
        vad = Path(feature_dir) / "silero_vad.onnx"
        if not vad.is_file():
            raise UserError(f"VAD is on (threshold {vad_threshold}) but {vad} is missing.")
        _point_vad_at(vad)
    import openwakeword

    model = openwakeword.Model(
        wakeword_models=[str(p) for p in model_paths],
        inference_framework=framework,
        melspec_model_path=str(mel),
        embedding_model_path=str(emb),
        vad_threshold=vad_threshold,
        enable_speex_noise_suppression=noise_suppression,
        **kwargs,
    )
    silence_history(model)
    return model


def silence_history(model: Any) -> None:
    """Start an `openwakeword.Model`'s embedding history from silence instead of random noise.

    openwakeword seeds that history with uniform noise (+-1000) on creation and on `reset()`. The model
    then sees noise-then-audio for the first ~1.3 s, and on real recordings that scores like a wake word:
    measured here with alexa_v0.1, the first 5 s of `doing_the_dishes` peaked at 0.991 and
    `exercise_bike` at 0.929 (frames 8-9), both false detections at every (re)start. Starting from
    silence the same audio peaks at 0.336 and 0.177, and `alexa_test.wav` still scores 1.0. It also
    makes scores reproducible run to run. `make_model` calls it; call it again after `model.reset()`.
    """
    pre = getattr(model, "preprocessor", None)
    if pre is None or not hasattr(pre, "_get_embeddings"):
        log.warning("this openwakeword has no feature history to reset; first second may false-trigger")
        return
    pre.feature_buffer = pre._get_embeddings(np.zeros(HISTORY_SAMPLES, dtype=np.int16))


def restart_stream(model: Any) -> Any:
    """Forget all streaming state of an `openwakeword.Model`, as at a fresh start: its buffers
    (`model.reset()` then `silence_history`) and its VAD's state and speech scores, which `reset()` leaves.

    Returns the VAD gating the scores, or None when VAD is off.
    """
    model.reset()
    silence_history(model)
    vad = getattr(model, "vad", None) if getattr(model, "vad_threshold", 0) > 0 else None
    if vad is not None:
        vad.reset_states()
        vad.prediction_buffer.clear()
    return vad


_vad_path: list[Path] = []


def _point_vad_at(vad: Path) -> None:
    """openwakeword's VAD loads silero_vad.onnx from its own resources folder; use ours instead."""
    import openwakeword.vad as oww_vad

    _vad_path[:] = [vad]
    original = oww_vad.VAD.__init__
    if getattr(original, "__edgekit_patched__", False):
        return

    def init(self, model_path: str | None = None, n_threads: int = 1):
        original(self, model_path=model_path or str(_vad_path[0]), n_threads=n_threads)

    init.__edgekit_patched__ = True
    oww_vad.VAD.__init__ = init
