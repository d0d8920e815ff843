"""Where things are: the shared data folder, the models folder; whether an output path can be written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

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


def check_output(path: str | os.PathLike, option: str, want: Literal["folder", "file"] = "folder") -> Path:
    """`path` as a `Path`, or a `UserError` when it cannot become the `want` ("folder" or "file").

    Commands call it before their work, so a long run does not end in a traceback at its last step.

    Raises:
        UserError: naming the option, when the path (or a folder above it) is the wrong kind of thing.
    """
    p = Path(path)
    if want == "folder" and p.exists() and not p.is_dir():
        raise UserError(f"Option {option} names {p}, which is a file; give a folder.")
    if want == "file" and p.is_dir():
        raise UserError(f"Option {option} names {p}, which is a folder; give a file.")
    above = next((a for a in p.absolute().parents if a.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"Option {option} names {p}, inside {above}, which is a file; give a path in a folder.")
    return p


def require(path: str | os.PathLike, what: str, want: Literal["folder", "file"] = "folder") -> Path:
    """`path` as a `Path` when it is an existing `want`; otherwise a `UserError` that says which it is not.

    "Dataset folder x is a file, not a folder." tells a user more than "does not exist" when it exists.
    """
    p = Path(path)
    if (p.is_dir() if want == "folder" else p.is_file()):
        return p
    if p.exists():
        other = "file" if want == "folder" else "folder"
        raise UserError(f"{what} {p} is a {other}, not a {want}.")
    raise UserError(f"{what} {p} does not exist.")
