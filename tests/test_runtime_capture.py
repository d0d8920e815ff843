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


def test_terminal_capture_saves_the_frame_of_the_enter_not_of_the_prompt(tmp_path):
    from PIL import Image

    camera = tmp_path / "camera"
    camera.mkdir()
    for name, value in (("0-before.png", 0), ("1-after.png", 255)):  # what the camera sees at each moment
        Image.new("RGB", (32, 24), (value, value, value)).save(camera / name)
    cfg = CaptureConfig(classes=["a"], out=tmp_path / "out", target=1, camera_source="folder", camera=str(camera),
                        ui="terminal")
    session = run_capture(cfg, actions=terminal_actions(io.StringIO("\n"), echo=lambda line: None))
    assert session.counts["a"] == 1
    saved = np.asarray(Image.open(tmp_path / "out" / "a" / "a_0001.jpg"))
    assert saved.mean() > 250  # the frame read after Enter, not the black one shown with the prompt


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"classes": "a,a"}, "repeat"),
    ({"classes": ""}, "at least one class name"),
    ({"classes": " , "}, "at least one class name"),
    ({"classes": "pla stic"}, "class names"),
    ({"source": "webcam"}, "--source"),
    ({"ui": "windw"}, "did you mean 'window'"),
])
def test_bad_capture_options_are_user_errors(tmp_path, kwargs, words):
    args = {"classes": "a,b", "out": tmp_path, "target": 3, "source": "folder", "camera": None, "ui": "terminal",
            **kwargs}
    with pytest.raises(UserError, match=words):
        capture_config(**args)


class FakeCV2:
    """Stands in for OpenCV's window (no display here): records what is shown, returns scripted keys."""

    COLOR_RGB2BGR = COLOR_BGR2RGB = 4

    def __init__(self, keys: list[int]):
        self.keys, self.shown = list(keys), []

    def cvtColor(self, image, code):  # noqa: N802 (OpenCV's name)
        return np.ascontiguousarray(image[..., ::-1])

    def imshow(self, title, image) -> None:
        self.shown.append(image)

    def waitKeyEx(self, delay):  # noqa: N802
        return self.keys.pop(0) if self.keys else 27


def test_window_ui_keys_and_overlay(one_photo, tmp_path, monkeypatch):
    from edgekit.edge import camera as camera_mod
    from edgekit.edge.capture import WINDOW_KEYS

    camera, _ = one_photo
    up = next(k for k, v in WINDOW_KEYS.items() if v == "brighter")
    fake = FakeCV2([-1, 32, up, up, 32, ord("d"), ord("q"), 32, 27])
    monkeypatch.setattr(camera_mod, "cv2_module", lambda install=None: fake)
    cfg = CaptureConfig(classes=["a", "b", "c"], out=tmp_path / "out", target=5, camera_source="folder",
                        camera=str(camera), ui="window")
    session = run_capture(cfg)
    assert (session.counts["a"], session.counts["b"], session.counts["c"]) == (2, 1, 0)
    assert session.done and session.brightness == 1.2
    top_band = [float(img[18:22].mean()) for img in fake.shown]  # band rows below the text
    assert top_band[0] < 10 and top_band[-1] > 10  # the dark info band is drawn until D turns it off
