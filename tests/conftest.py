"""Shared fixtures: where the shared data is, and skips with a clear reason when it is absent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgekit.paths import shared_dir

SHARED = shared_dir()
"""Looked up once, the way edgekit itself finds it ($EDGEKIT_SHARED, else ../shared)."""


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder ($EDGEKIT_SHARED, default ../shared beside the repository)."""
    if SHARED is None:
        pytest.skip("shared data folder not found: set EDGEKIT_SHARED or put it at ../shared")
    return SHARED


@pytest.fixture(scope="session")
def oww_dir(shared: Path) -> Path:
    """openWakeWord feature and reference models."""
    p = shared / "assets" / "openwakeword"
    if not (p / "melspectrogram.onnx").exists():
        pytest.skip(f"openWakeWord models not found in {p}")
    return p


def _data(shared: Path, name: str) -> Path:
    p = shared / "data" / name
    if not p.is_dir():
        pytest.skip(f"{name} not found in {p}")
    return p


@pytest.fixture(scope="session")
def waste_mini(shared: Path) -> Path:
    """TrashNet subset: 6 classes x 60 photos."""
    return _data(shared, "waste-mini")


@pytest.fixture(scope="session")
def har_mini(shared: Path) -> Path:
    """Smartphone activity recordings, one CSV per recording."""
    return _data(shared, "har-mini")


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
    if SHARED is not None:
        monkeypatch.setenv("EDGEKIT_SHARED", str(SHARED))


@pytest.fixture
def edgekit_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog receiving the `edgekit` loggers' records. The CLI turns their propagation off (caplog listens at
    the root), and a console handler an earlier in-process CLI test left would also print them to stderr."""
    edgekit_log = logging.getLogger("edgekit")
    monkeypatch.setattr(edgekit_log, "handlers", [])
    monkeypatch.setattr(edgekit_log, "propagate", True)
    return caplog
