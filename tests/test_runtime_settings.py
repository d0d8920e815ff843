"""Device settings from .env and the environment, and the Pi-side import rule (no torch/tensorflow/fabric)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.edge.settings import ENV_NAMES, load_settings
from edgekit.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)


def test_seed_names_from_an_env_file(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("OPENWAKEWORD_MODEL_PATHS=/opt/a.onnx, /opt/b.onnx\nOPENWAKEWORD_THRESHOLD=0.75\n"
                   "OPENWAKEWORD_VAD_THRESHOLD=0.3\nOPENWAKEWORD_PATIENCE=3\nOPENWAKEWORD_REFRACTORY=1.5\n"
                   "MODEL_PATH=/opt/edgekit/current\nMODEL_FRAMEWORK=tflite\n"
                   "EDGEKIT_CLASS_THRESHOLDS=plastic=0.7, default=0.4\nDEPLOY_SOMETHING_ELSE=kept\n")
    monkeypatch.setenv("OPENWAKEWORD_THRESHOLD", "0.6")  # the environment wins over the file
    s = load_settings(env)
    assert s.wakeword_models == [Path("/opt/a.onnx"), Path("/opt/b.onnx")]
    assert (s.wakeword_threshold, s.wakeword_vad_threshold, s.wakeword_patience, s.wakeword_refractory_s) == (
        0.6, 0.3, 3, 1.5)
    assert s.model_path == Path("/opt/edgekit/current") and s.model_framework == "tflite"
    assert s.class_thresholds == {"plastic": 0.7, "default": 0.4}
    assert s.api_host == "127.0.0.1"  # never exposed unless configured
    assert load_settings().wakeword_threshold == 0.6 and load_settings(env, api_port=9000).api_port == 9000


@pytest.mark.parametrize(("name", "value", "words"), [
    ("OPENWAKEWORD_THRESHOLD", "1.5", "less than or equal to 1"),
    ("OPENWAKEWORD_PATIENCE", "0", "greater than or equal to 1"),
    ("MODEL_FRAMEWORK", "pytorch", "'onnx' or 'tflite'"),
    ("EDGEKIT_API_PORT", "http", "valid integer"),
    ("EDGEKIT_CLASS_THRESHOLDS", "plastic:0.7", "label=value"),
    ("EDGEKIT_CLASS_THRESHOLDS", "plastic=2", "in [0, 1]"),
    ("EDGEKIT_AUDIO_SOURCE", "mik", "did you mean 'mic'"),
    ("EDGEKIT_CAMERA_SOURCE", "picamera", "did you mean 'picamera2'"),
])
def test_invalid_setting_is_one_sentence_naming_it(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as e:
        load_settings()
    msg = str(e.value)
    assert name in msg and words in msg and "\n" not in msg


def test_misspelt_name_in_env_file_is_caught(tmp_path):
    env = tmp_path / ".env"
    env.write_text("OPENWAKEWORD_TRESHOLD=0.7\n")
    with pytest.raises(UserError, match="did you mean OPENWAKEWORD_THRESHOLD"):
        load_settings(env)
    with pytest.raises(UserError, match="does not exist"):
        load_settings(tmp_path / "missing.env")


def test_malformed_env_line_is_an_error_naming_file_and_line(tmp_path):
    env = tmp_path / ".env"
    env.write_text('# mine\nOPENWAKEWORD_THRESHOLD=0.7\nNOTE="two\nlines"\n\n   \nEDGEKIT_CLASS_THRESHOLDS glass=0.9\n')
    with pytest.raises(UserError) as e:  # python-dotenv alone only warns and drops the line
        load_settings(env)
    assert str(e.value).startswith(f"Line 7 of {env} is not KEY=VALUE") and "EDGEKIT_CLASS_THRESHOLDS" in str(e.value)
    for text in ("EDGEKIT_CLASS_THRESHOLDS\n", "glass 0.9\n"):  # a bare key; a file with nothing but a bad line
        env.write_text(text)
        with pytest.raises(UserError, match=f"Line 1 of {env} is not KEY=VALUE"):
            load_settings(env)
    env.write_text('# ok\n\nexport OPENWAKEWORD_THRESHOLD=0.7\nNOTE="two\nlines"\nMODEL_FRAMEWORK = tflite # c\n')
    s = load_settings(env)
    assert (s.wakeword_threshold, s.model_framework) == (0.7, "tflite")


def test_serve_with_bad_setting_exits_2_without_traceback(tmp_path):
    env = tmp_path / ".env"
    env.write_text("OPENWAKEWORD_THRESHOLD=high\n")
    out = subprocess.run([sys.executable, "-m", "edgekit", "serve", "--env-file", str(env)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    assert "OPENWAKEWORD_THRESHOLD" in out.stderr and "Traceback" not in out.stderr


def test_nothing_to_serve_is_a_user_error(tmp_path):
    from edgekit.edge.service import Service

    with pytest.raises(UserError, match="Nothing to serve"):
        Service(load_settings(data_dir=tmp_path))


BLOCK = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'tensorflow', 'fabric', 'torchvision', 'litert_torch'}:
            raise ImportError(f'{name} is blocked: the Pi has only the edge extra')
sys.meta_path.insert(0, Block())
import edgekit.edge, edgekit.cli
names = [m.name for m in pkgutil.iter_modules(edgekit.edge.__path__)]
for n in names:
    importlib.import_module('edgekit.edge.' + n)
import openwakeword, onnxruntime, fastapi, uvicorn
print(len(names), 'modules')
"""


def test_edge_imports_without_torch_tensorflow_fabric():
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[0]) >= 10
