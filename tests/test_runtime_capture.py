"""`edgekit data capture` on the folder camera source, driven through its terminal UI as a real process."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgekit.edge.capture import CaptureConfig, CaptureSession, capture_config, run_capture, terminal_actions
from edgekit.errors import UserError


@pytest.fixture
def one_photo(waste_mini, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    src = sorted((waste_mini / "plastic").glob("*.jpg"))[0]
    (folder / src.name).symlink_to(src)
    return folder, np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)


def test_capture_cli_counts_continues_numbering_and_applies_brightness(one_photo, tmp_path):
    camera, pixels = one_photo
    out = tmp_path / "dataset"
    (out / "plastico").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(out / "plastico" / "plastico_0007.jpg")
    keys = "\n".join(["", "c", "+", "+", "c", "q", "d", "c", "x"]) + "\n"
    r = subprocess.run([sys.executable, "-m", "edgekit", "data", "capture", "--classes", "plastico,papel,vidrio",
                        "--out", str(out), "--target", "3", "--source", "folder", "--camera", str(camera),
                        "--ui", "terminal"], input=keys, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "plastico").iterdir()) == [
        "plastico_0007.jpg", "plastico_0008.jpg", "plastico_0009.jpg", "plastico_0010.jpg"]
    assert sorted(p.name for p in (out / "papel").iterdir()) == ["papel_0001.jpg"]
    assert not (out / "vidrio").exists()  # stopped with x before capturing it
    assert "plastico: 1/3" in r.stdout and "plastico: 4/3 done" in r.stdout and "papel: 0/3" in r.stdout
    plain = np.asarray(Image.open(out / "plastico" / "plastico_0008.jpg"), dtype=np.float32).mean()
    bright = np.asarray(Image.open(out / "plastico" / "plastico_0010.jpg"), dtype=np.float32).mean()
    assert plain == pytest.approx(pixels.mean(), rel=0.02)
    assert bright > plain * 1.1  # two steps of +0.1 (clipped at 255)
    assert "captured" in r.stdout and "vidrio" in r.stdout  # the summary table


def test_session_state_machine_without_a_camera(tmp_path):
    s = CaptureSession(CaptureConfig(classes=["a", "b"], out=tmp_path, target=2))
    frame = np.full((4, 4, 3), 100, np.uint8)
    for action in ["darker"] * 20:
        s.handle(action, frame)
    assert s.brightness == 0.2  # clamped
    assert s.handle("info", frame) is None and not s.overlay
    assert s.handle("capture", frame).name == "a_0001.jpg"
    s.handle("next", frame)
    assert s.label == "b"
    s.handle("next", frame)
    assert s.done and s.handle("capture", frame) is None


def test_terminal_ui_ends_at_end_of_input(one_photo, tmp_path):
    camera, _ = one_photo
    cfg = CaptureConfig(classes=["a"], out=tmp_path / "out", target=5, camera_source="folder", camera=str(camera),
                        ui="terminal")
    lines: list[str] = []
    session = run_capture(cfg, actions=terminal_actions(io.StringIO("\n\nwhat\n"), echo=lines.append))
    assert session.counts["a"] == 2
    assert any("commands:" in line for line in lines)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"classes": "a,a"}, "repeat"),
    ({"classes": "pla stic"}, "class names"),
    ({"source": "webcam"}, "--source"),
    ({"ui": "windw"}, "did you mean 'window'"),
])
def test_bad_capture_options_are_user_errors(tmp_path, kwargs, words):
    args = {"classes": "a,b", "out": tmp_path, "target": 3, "source": "folder", "camera": None, "ui": "terminal",
            **kwargs}
    with pytest.raises(UserError, match=words):
        capture_config(**args)
