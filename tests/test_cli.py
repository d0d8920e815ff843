"""The `edgekit` command itself: help, version, doctor, the user-error boundary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgekit import __version__

COMMANDS = ["doctor", "data", "train", "export", "eval", "deploy", "rollback", "status", "serve",
            "calibrate", "record", "demo"]


def edgekit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_help_lists_every_command():
    out = edgekit("--help")
    assert out.returncode == 0, out.stderr
    for cmd in COMMANDS:
        assert f" {cmd} " in out.stdout, f"{cmd} missing from --help"


def test_version():
    out = edgekit("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"edgekit {__version__}"


def test_doctor_reports_a_table():
    out = edgekit("doctor")
    assert out.returncode == 0, out.stderr
    for component in ("python", "torch", "onnxruntime", "tflite interpreter", "openwakeword", "espeak-ng", "docker"):
        assert component in out.stdout


def test_doctor_survives_a_broken_module(monkeypatch):
    from edgekit import doctor

    def boom():
        raise RuntimeError("simulated")

    monkeypatch.setattr(doctor, "CHECKS", [doctor.Check("broken thing", boom, "nothing")])
    rows = doctor.run_doctor()
    assert rows[0][1].startswith("broken")


@pytest.mark.parametrize("verbose", [False, True])
def test_user_error_is_one_sentence_and_exit_2(tmp_path, verbose):
    missing = tmp_path / "nope"
    args = (["-v"] if verbose else []) + ["data", "analyze", str(missing)]
    out = edgekit(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error:" in out.stderr
    assert ("Traceback" in out.stderr) == verbose


def test_unknown_option_is_a_usage_error():
    out = edgekit("train", "waste", "--no-such-option")
    assert out.returncode == 2
    assert "No such option" in out.stderr


def test_one_variable_names_the_feature_model_folder(tmp_path, monkeypatch):
    """The trainer, doctor and calibration find openWakeWord's models where the device service does."""
    from edgekit.edge.settings import EdgeSettings
    from edgekit.paths import FEATURE_DIR_ENV, openwakeword_assets

    monkeypatch.setenv(FEATURE_DIR_ENV, str(tmp_path))
    assert openwakeword_assets() == tmp_path
    assert EdgeSettings().feature_dir == tmp_path
