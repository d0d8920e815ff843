"""Supervision: a microphone that breaks and comes back, a Pi camera that is busy at first.

pyaudio and picamera2 are replaced by fakes at their factories (`audio.pyaudio_module`,
`camera.picamera2_class`) only; everything above them (service, listener, openWakeWord, Predictor,
events, metrics, the uvicorn API) is real.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from runtime_service import export_tiny_classifier, free_port, wait_for

from edgekit.edge import audio, camera
from edgekit.edge.audio import FRAME, SAMPLE_RATE, read_wav
from edgekit.edge.service import Service
from edgekit.edge.settings import load_settings
from edgekit.edge.supervise import Backoff, SourceStatus, supervise

PA_OVERFLOW = -9981
FAST = Backoff(first=0.05, cap=0.2)


class FakeStream:
    """Plays a script: int16 arrays are frames, exceptions are raised at that point, then silence."""

    def __init__(self, script: list, realtime_tail: bool):
        self.script, self.realtime_tail = list(script), realtime_tail

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        assert n == FRAME
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item.astype("<i2").tobytes()
        if not self.realtime_tail:
            raise OSError("Stream closed", -9988)
        time.sleep(FRAME / SAMPLE_RATE)
        return bytes(2 * FRAME)

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakePyAudio:
    """Stands in for the `pyaudio` module: open #1 breaks, open #2 fails (after `gate`), open #3 works."""

    paInt16 = 8

    def __init__(self, clip: np.ndarray):
        self.opens = 0
        self.gate = threading.Event()
        silence = [np.zeros(FRAME, np.int16)] * 5
        speech = [clip[i:i + FRAME] for i in range(0, len(clip) - FRAME + 1, FRAME)]
        self.scripts = [
            silence + [OSError("Input overflowed", PA_OVERFLOW)] + silence + [OSError("Unanticipated host error",
                                                                                    -9999)],
            None,
            silence * 3 + speech + silence * 5,
        ]

    def PyAudio(self) -> FakePyAudio:  # noqa: N802 (pyaudio's name)
        return self

    def get_device_count(self) -> int:
        return 2

    def get_device_info_by_index(self, i: int) -> dict:
        return [{"name": "HDMI out", "maxInputChannels": 0}, {"name": "USB PnP Sound Device", "maxInputChannels": 1}][i]

    def open(self, **kw) -> FakeStream:
        assert kw["rate"] == SAMPLE_RATE and kw["channels"] == 1 and kw["input_device_index"] == 1
        self.opens += 1
        if self.opens == 2:
            self.gate.wait(30)
            raise OSError("Invalid input device (no default output device)", -9996)
        return FakeStream(self.scripts[min(self.opens, 3) - 1], realtime_tail=self.opens >= 3)

    def terminate(self) -> None:
        pass


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def api_server():
    """Runs a Service's real FastAPI app under uvicorn in a thread."""
    import uvicorn

    from edgekit.edge.api import create_app

    started: list = []

    def start(service: Service) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        started.append((server, t))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url + "/health", timeout=5).status_code in (200, 503), 30, "the API")
        return url

    yield start
    for server, t in started:
        server.should_exit = True
        t.join(10)


def test_microphone_fails_then_recovers(oww_dir, tmp_path, monkeypatch, api_server):
    fake = FakePyAudio(read_wav(oww_dir / "alexa_test.wav"))
    monkeypatch.setattr(audio, "pyaudio_module", lambda: fake)
    settings = load_settings(wakeword_models=str(oww_dir / "alexa_v0.1.onnx"), feature_dir=oww_dir,
                             audio_source="mic", audio_device="USB PnP", data_dir=tmp_path / "data")
    service = Service(settings, backoff=FAST)
    url = api_server(service)
    service.start()
    try:
        down = wait_for(lambda: (r := httpx.get(url + "/health", timeout=5)).status_code == 503 and r.json(), 30,
                        "/health to report the microphone down")
        assert down["status"] == "degraded"
        assert down["sources"]["audio"]["state"] == "down"
        assert "Unanticipated host error" in down["sources"]["audio"]["last_error"]
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert _metric(metrics, 'edgekit_source_up{source="audio"}') == 0
        assert _metric(metrics, 'edgekit_dropped_frames_total{source="audio"}') == 1
        fake.gate.set()  # the second open fails, the third works

        up = wait_for(lambda: (r := httpx.get(url + "/health", timeout=5)).status_code == 200 and r.json(), 30,
                      "/health to report the microphone up again")
        assert up["sources"]["audio"]["restarts"] == 2 and up["sources"]["audio"]["errors"] == 2
        events = wait_for(lambda: httpx.get(url + "/events", timeout=5).json()["events"], 30,
                          "a detection after the microphone came back")
        assert [e["label"] for e in events] == ["alexa_v0.1"]
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert _metric(metrics, 'edgekit_source_restarts_total{source="audio"}') == 2
        assert _metric(metrics, 'edgekit_source_up{source="audio"}') == 1
    finally:
        service.shutdown()
    assert service.sources["audio"].state == "stopped"


class FakePicamera2:
    """Stands in for `picamera2.Picamera2`: busy on the first start, then frames in libcamera's BGR order."""

    starts = 0
    frames: list[np.ndarray] = []

    def __init__(self, camera_num: int = 0):
        self.camera_num = camera_num

    def create_preview_configuration(self, main: dict) -> dict:
        assert main["format"] == "RGB888"
        return {"main": main}

    def configure(self, config: dict) -> None:
        pass

    def start(self) -> None:
        type(self).starts += 1
        if type(self).starts == 1:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")

    def capture_array(self, name: str = "main") -> np.ndarray:
        rgb = self.frames[0]
        return np.ascontiguousarray(rgb[..., ::-1])  # "RGB888" is B, G, R in memory

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_busy_pi_camera_is_retried_and_classifies(waste_mini, tmp_path, monkeypatch):
    from edgekit.edge.predictor import Predictor

    bundle = export_tiny_classifier(tmp_path / "models", waste_mini)
    jpeg = sorted((waste_mini / "plastic").glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(jpeg).convert("RGB"))
    monkeypatch.setattr(FakePicamera2, "frames", [rgb])
    monkeypatch.setattr(camera, "picamera2_class", lambda: FakePicamera2)
    settings = load_settings(model_path=bundle.path, camera_source="picamera2", camera="0", camera_fps=20,
                             data_dir=tmp_path / "data")
    service = Service(settings, backoff=FAST)
    service.start()
    try:
        assert service.sources["camera"].state == "down"  # busy at start: reported, not fatal
        wait_for(lambda: service.events.count() >= 3, 30, "camera classifications")
        ok, health = service.health()
        assert ok and health["sources"]["camera"]["state"] == "up" and health["sources"]["camera"]["restarts"] == 1
        event = service.events.since(0)[0]
        expected = Predictor.from_bundle(bundle, fmt="onnx").predict_image(rgb)[0]
        assert event["data"]["scores"] == pytest.approx(dict(zip(bundle.manifest.labels, expected.tolist(),
                                                                 strict=True)), rel=1e-4)
        result = service.request_capture(timeout=10)  # what POST /capture does
        assert result["label"] == event["label"] and result["event_id"] > event["id"]
    finally:
        service.shutdown()
    assert Path(settings.data_dir / "events.sqlite").is_file()


def test_wake_word_triggers_one_classification(oww_dir, waste_mini, tmp_path):
    bundle = export_tiny_classifier(tmp_path / "models", waste_mini)
    folder = tmp_path / "camera"
    folder.mkdir()
    for p in sorted((waste_mini / "glass").glob("*.jpg"))[:3]:
        (folder / p.name).symlink_to(p)
    settings = load_settings(wakeword_models=str(oww_dir / "alexa_v0.1.onnx"), feature_dir=oww_dir,
                             audio_source="wav", audio_path=str(oww_dir / "alexa_test.wav"), model_path=bundle.path,
                             camera_source="folder", camera=str(folder), classify_trigger="wakeword",
                             data_dir=tmp_path / "data")
    service = Service(settings, backoff=FAST)
    service.start()
    try:
        wait_for(lambda: service.sources["audio"].state == "finished", 30, "the clip to play")
        wait_for(lambda: service.events.since(0, kind="classification"), 10, "the triggered classification")
        time.sleep(0.5)  # nothing more may come: the camera waits for the next wake word
        kinds = [e["kind"] for e in service.events.since(0)]
    finally:
        service.shutdown()
    assert kinds == ["wakeword", "classification"]


class _VideoFile:
    """A source that knows it ends, like an OpenCV camera on a video file (its table row is not finite)."""

    finite = True

    def __iter__(self):
        return iter([1, 2])


def test_a_source_that_says_it_ends_finishes_instead_of_restarting():
    status, seen, stop = SourceStatus("camera", "opencv"), [], threading.Event()
    t = threading.Thread(target=supervise, kwargs=dict(status=status, open_source=_VideoFile, handle=seen.append,
                                                       stop=stop, finite=False, backoff=FAST), daemon=True)
    t.start()
    t.join(5)
    stop.set()
    assert not t.is_alive() and status.state == "finished"
    assert seen == [1, 2] and status.errors == 0 and status.restarts == 0


def test_a_broken_photo_or_recording_in_a_replay_is_skipped(waste_mini, tmp_path):
    """One unreadable file must not restart a folder or WAV replay from its first file (events twice)."""
    import soundfile as sf

    bundle = export_tiny_classifier(tmp_path / "models", waste_mini)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, jpeg in enumerate(sorted((waste_mini / "glass").glob("*.jpg"))[:2]):
        (photos / f"{i}.jpg").write_bytes(jpeg.read_bytes())
    (photos / "1b-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all")
    settings = load_settings(model_path=bundle.path, camera_source="folder", camera=str(photos), camera_fps=50,
                             data_dir=tmp_path / "data")
    service = Service(settings, backoff=FAST)
    service.start()
    try:
        wait_for(lambda: service.sources["camera"].state == "finished", 30, "the replay to end")
        assert service.events.count() == 2
        assert service.sources["camera"].restarts == 0 and service.sources["camera"].errors == 0
    finally:
        service.shutdown()

    tone = (np.sin(np.arange(SAMPLE_RATE) / 10) * 0.3).astype(np.float32)
    sf.write(tmp_path / "good.wav", tone, SAMPLE_RATE)
    sf.write(tmp_path / "x.flac", tone, SAMPLE_RATE)
    damaged = bytearray((tmp_path / "x.flac").read_bytes())
    for i in range(len(damaged) // 3, len(damaged), 7):
        damaged[i] ^= 0x5A  # the header stays valid: the file opens, then fails half-way through
    (tmp_path / "bad.wav").write_bytes(damaged)
    frames = list(audio._wav_frames([tmp_path / "good.wav", tmp_path / "bad.wav", tmp_path / "good.wav"], False))
    assert len(frames) == 2 * len(list(audio.frames_of(read_wav(tmp_path / "good.wav"))))


def test_only_a_video_file_is_a_finite_opencv_source(tmp_path, monkeypatch):
    class FakeCapture:  # no camera here: only how the source reads its target is under test
        def __init__(self, target):
            self.target = target

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return True

    monkeypatch.setattr(camera, "cv2_module", lambda: type("cv2", (), {"VideoCapture": FakeCapture}))
    video = tmp_path / "site.mp4"
    video.write_bytes(b"\0" * 16)
    assert camera.OpenCVCamera(str(video)).finite
    for spec in ("0", "/dev/null", "rtsp://10.0.0.9/stream"):  # an index, a device node, a stream: retried
        assert not camera.OpenCVCamera(spec).finite, spec


def test_a_refused_camera_setting_stops_the_audio_loop_it_started(oww_dir, waste_mini, tmp_path):
    from edgekit.errors import UserError

    bundle = export_tiny_classifier(tmp_path / "models", waste_mini)
    common = dict(model_path=bundle.path, wakeword_models=str(oww_dir / "alexa_v0.1.onnx"), feature_dir=oww_dir,
                  audio_source="wav", audio_path=str(oww_dir / "alexa_test.wav"), audio_realtime=True,
                  data_dir=tmp_path / "data")
    service = Service(load_settings(**common, camera_source="folder", camera=str(tmp_path / "no-such-folder")))
    with pytest.raises(UserError, match="EDGEKIT_CAMERA"):
        service.run()  # audio starts first, then the camera's folder is refused
    assert service.stop_event.is_set()
    assert not [t for t in threading.enumerate() if t.name == "edgekit-audio" and t.is_alive()]

    silent = dict(common, camera_source="folder", camera=str(waste_mini / "glass"), classify_trigger="wakeword")
    silent.pop("wakeword_models")
    with pytest.raises(UserError, match="EDGEKIT_CLASSIFY_TRIGGER=wakeword needs a wake word"):
        Service(load_settings(**silent))


class _UnpluggedPiCamera(FakePicamera2):
    """Gives `good` frames, then fails every read as an unplugged camera does."""

    good = 1
    reads = 0

    def start(self) -> None:
        pass

    def capture_array(self, name: str = "main") -> np.ndarray:
        type(self).reads += 1
        if type(self).reads > self.good:
            raise RuntimeError("Camera frontend has timed out!")
        return super().capture_array(name)


def test_a_capture_request_hears_at_once_when_the_camera_fails(waste_mini, tmp_path, monkeypatch):
    from edgekit.edge.service import NoFrame

    bundle = export_tiny_classifier(tmp_path / "models", waste_mini)
    rgb = np.asarray(Image.open(sorted((waste_mini / "paper").glob("*.jpg"))[0]).convert("RGB"))
    monkeypatch.setattr(_UnpluggedPiCamera, "frames", [rgb])
    monkeypatch.setattr(camera, "picamera2_class", lambda: _UnpluggedPiCamera)
    settings = load_settings(model_path=bundle.path, camera_source="picamera2", camera_fps=0.01,
                             data_dir=tmp_path / "data")
    service = Service(settings, backoff=Backoff(first=5.0, cap=5.0))  # no reopen during the test
    service.start()
    try:
        wait_for(lambda: service.events.count() == 1, 30, "the first, timed frame")
        start = time.monotonic()
        with pytest.raises(NoFrame, match="timed out"):
            service.request_capture(timeout=20)
        assert time.monotonic() - start < 5  # not the 20 s timeout
    finally:
        service.shutdown()
