"""Shared fixtures: where the shared data is, and skips with a clear reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path | None:
    p = Path(os.environ.get("EDGEKIT_SHARED", REPO / ".." / "shared"))
    return p.resolve() if p.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder ($EDGEKIT_SHARED, default ../shared beside the repository)."""
    p = _shared()
    if p is None:
        pytest.skip("shared data folder not found: set EDGEKIT_SHARED or put it at ../shared")
    return p


@pytest.fixture(scope="session")
def oww_dir(shared: Path) -> Path:
    """openWakeWord feature and reference models."""
    p = shared / "assets" / "openwakeword"
    if not (p / "melspectrogram.onnx").exists():
        pytest.skip(f"openWakeWord models not found in {p}")
    return p


@pytest.fixture(scope="session")
def waste_mini(shared: Path) -> Path:
    p = shared / "data" / "waste-mini"
    if not p.is_dir():
        pytest.skip(f"waste-mini not found in {p}")
    return p


@pytest.fixture(scope="session")
def imagenet_weights(shared: Path) -> Path:
    p = shared / "weights" / "mobilenet_v2_imagenet_keras_int8_dequant.pth"
    if not p.is_file():
        pytest.skip(f"MobileNetV2 weights not found at {p}")
    return p


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    """Bundles written by a test go to its own tmp folder, never to the repository's models/."""
    monkeypatch.setenv("EDGEKIT_MODELS", str(tmp_path / "models"))
    if _shared() is not None:
        monkeypatch.setenv("EDGEKIT_SHARED", str(_shared()))
