"""Where things are: the shared data folder, the models folder."""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.errors import UserError

SHARED_ENV = "EDGEKIT_SHARED"
MODELS_ENV = "EDGEKIT_MODELS"
FEATURE_DIR_ENV = "EDGEKIT_FEATURE_DIR"
"""openWakeWord's feature-model folder: one name for the trainer, calibration and the device service."""


def shared_dir(required: bool = False) -> Path | None:
    """The shared data folder: `$EDGEKIT_SHARED`, else `../shared` from the working directory or from the
    source checkout; the first of them holding `DATA.md` or `assets/`.

    Args:
        required: raise a `UserError` when it is not there, instead of returning None.
    """
    candidates = []
    if os.environ.get(SHARED_ENV):
        candidates.append(Path(os.environ[SHARED_ENV]))
    candidates += [Path.cwd() / ".." / "shared", Path(__file__).resolve().parents[1] / ".." / "shared"]
    for c in candidates:
        if (c / "DATA.md").exists() or (c / "assets").is_dir():
            return c.resolve()
    if required:
        raise UserError(f"The shared data folder was not found; set {SHARED_ENV} to it (tried {candidates[0]}).")
    return None


def openwakeword_assets() -> Path | None:
    """The folder with openWakeWord's feature models (melspectrogram, embedding), if there is one."""
    env = os.environ.get(FEATURE_DIR_ENV)
    if env:
        return Path(env)
    s = shared_dir()
    if s and (s / "assets" / "openwakeword").is_dir():
        return s / "assets" / "openwakeword"
    try:  # where openwakeword.utils.download_models() puts them
        import importlib.util

        spec = importlib.util.find_spec("openwakeword")
        if spec and spec.origin:
            p = Path(spec.origin).parent / "resources" / "models"
            if (p / "melspectrogram.onnx").exists():
                return p
    except Exception:
        pass
    return None


def models_dir() -> Path:
    """The folder that holds bundles: `$EDGEKIT_MODELS`, else `./models`."""
    return Path(os.environ.get(MODELS_ENV, "models"))
