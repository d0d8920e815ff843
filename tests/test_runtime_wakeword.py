"""The wake-word path of `edgekit serve`: a real service process, real openWakeWord, real WAV files."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from runtime_service import running_service

from edgekit.edge.audio import FRAME, SAMPLE_RATE, frames_of, open_stdin, read_wav
from edgekit.edge.detector import DetectorConfig, run_detector
from edgekit.edge.wakeword import WakewordListener, score_stream

GAP_S = 2.5


def _env(oww_dir: Path, framework: str, wav: Path | str) -> dict[str, str]:
    return {"OPENWAKEWORD_MODEL_PATHS": str(oww_dir / f"alexa_v0.1.{framework}"),
            "EDGEKIT_FEATURE_DIR": str(oww_dir), "EDGEKIT_AUDIO_SOURCE": "wav", "EDGEKIT_AUDIO_PATH": str(wav)}


def _expected_frames(files: list[Path]) -> int:
    return sum(math.ceil(sf.info(str(f)).frames / FRAME) for f in files)


@pytest.mark.parametrize("framework", ["onnx", "tflite"])
def test_alexa_clip_gives_exactly_one_detection(oww_dir, tmp_path, framework):
    clip = oww_dir / "alexa_test.wav"
    with running_service(tmp_path, _env(oww_dir, framework, clip)) as svc:
        health = svc.wait_source("audio", "finished")
        assert health["sources"]["audio"]["frames"] == _expected_frames([clip])
        events = svc.events("wakeword")
        assert len(events) == 1, events
        assert events[0]["label"] == "alexa_v0.1" and events[0]["score"] >= 0.5
        assert events[0]["model_version"].startswith("alexa_v0.1/")
        assert health["models"] == {"alexa_v0.1": events[0]["model_version"]}
        metrics = svc.get("/metrics").text
        assert 'edgekit_wakeword_detections_total{model="alexa_v0.1"} 1' in metrics
    assert svc.proc.returncode == 0, svc.output()
    assert "stopped cleanly" in svc.output()


def _negatives(shared: Path, tmp: Path) -> Path:
    """A bounded negative set: one clip of each Speech Commands word and 10 s of two noise recordings."""
    folder = tmp / "negatives"
    folder.mkdir()
    for word in sorted(p for p in (shared / "data" / "speech-commands-mini").iterdir() if p.is_dir()):
        first = sorted(word.glob("*.wav"))[0]
        (folder / f"{word.name}.wav").symlink_to(first)
    for name in ("doing_the_dishes", "running_tap"):
        audio = read_wav(shared / "data" / "background-noise" / f"{name}.wav")
        sf.write(folder / f"noise_{name}.wav", audio[: 10 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    return folder


def test_speech_and_noise_give_no_detection(shared, oww_dir, tmp_path):
    folder = _negatives(shared, tmp_path)
    files = sorted(folder.glob("*.wav"))
    assert len(files) >= 30
    with running_service(tmp_path, _env(oww_dir, "onnx", folder)) as svc:
        health = svc.wait_source("audio", "finished", timeout=120)
        assert health["sources"]["audio"]["frames"] == _expected_frames(files)  # all of it was heard
        assert svc.events("wakeword") == []
        assert svc.get("/metrics").text.count("edgekit_wakeword_detections_total{") == 0


def _repeated(clip: Path, tmp: Path, times: int = 3) -> Path:
    x = read_wav(clip)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.int16)
    parts = [np.zeros(SAMPLE_RATE, np.int16)] + [p for _ in range(times) for p in (x, gap)]
    path = tmp / "alexa_x3.wav"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return path


def test_same_clip_three_times_gives_three(oww_dir, tmp_path):
    wav = _repeated(oww_dir / "alexa_test.wav", tmp_path)
    with running_service(tmp_path, _env(oww_dir, "tflite", wav)) as svc:
        svc.wait_source("audio", "finished")
        events = svc.events("wakeword")
    times = [e["data"]["stream_s"] for e in events]
    assert len(events) == 3, times
    assert all(b - a > GAP_S for a, b in zip(times, times[1:], strict=False)), times


def _model(oww_dir: Path, framework: str = "onnx"):
    from edgekit.edge.oww import make_model

    return make_model([oww_dir / f"alexa_v0.1.{framework}"], framework, oww_dir)  # history starts silent


def test_raw_scores_stay_hot_for_several_frames(oww_dir, tmp_path):
    """Why the state machine matters: thresholding raw scores would count each utterance many times."""
    scores = score_stream(_model(oww_dir), frames_of(read_wav(_repeated(oww_dir / "alexa_test.wav", tmp_path))))
    hot = scores["alexa_v0.1"] >= 0.5
    assert hot.sum() > 3 * 2
    assert len(run_detector(scores["alexa_v0.1"], DetectorConfig(threshold=0.5))) == 3


@pytest.mark.parametrize("noise", ["doing_the_dishes", "exercise_bike"])
def test_stream_start_does_not_false_trigger(shared, oww_dir, noise):
    """openwakeword's noise-filled start-up history made these recordings score ~0.9-0.99 in their first second."""
    audio = read_wav(shared / "data" / "background-noise" / f"{noise}.wav")[: 5 * SAMPLE_RATE]
    listener = WakewordListener(_model(oww_dir), {"alexa_v0.1": DetectorConfig()}, {"alexa_v0.1": "t"})
    for _ in range(2):  # at start, and after a reset (what a source restart does)
        peak = 0.0
        for f in frames_of(audio):
            assert listener.process(f) == []
            peak = max(peak, listener.last_scores["alexa_v0.1"])
        assert peak < 0.5
        listener.reset()


def test_scores_are_reproducible(oww_dir):
    """openwakeword starts from random noise; from silence, the same audio scores the same every run."""
    x = read_wav(oww_dir / "alexa_test.wav")
    a = score_stream(_model(oww_dir), frames_of(x))["alexa_v0.1"]
    b = score_stream(_model(oww_dir), frames_of(x))["alexa_v0.1"]
    np.testing.assert_array_equal(a, b)


def test_wav_at_other_rates_and_stereo_is_resampled(oww_dir, tmp_path):
    from scipy.signal import resample_poly

    x = read_wav(oww_dir / "alexa_test.wav").astype(np.float32) / 32768
    stereo = np.stack([resample_poly(x, 3, 1)] * 2, axis=1)  # 48 kHz, two channels
    path = tmp_path / "alexa_48k_stereo.wav"
    sf.write(path, np.pad(stereo, ((0, 48000), (0, 0))), 48000, subtype="PCM_16")
    y = read_wav(path)
    assert len(y) == len(x) + SAMPLE_RATE
    listener = WakewordListener(_model(oww_dir), {"alexa_v0.1": DetectorConfig()}, {"alexa_v0.1": "t"})
    detections = [d for f in frames_of(y) for d in listener.process(f)]
    assert len(detections) == 1


def test_stdin_source_reads_raw_int16_frames(oww_dir):
    x = read_wav(oww_dir / "alexa_test.wav")
    frames = list(open_stdin(SimpleNamespace(), stream=io.BytesIO(x.astype("<i2").tobytes())))
    assert len(frames) == math.ceil(len(x) / FRAME)
    np.testing.assert_array_equal(np.concatenate(frames)[: len(x)], x)


def test_unreadable_wav_stops_the_service_with_one_sentence(oww_dir, tmp_path, monkeypatch, capsys):
    from edgekit.cli import main

    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    for k, v in {**_env(oww_dir, "onnx", bad), "EDGEKIT_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "0"])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"Cannot read {bad} as audio" in err and "Traceback" not in err


def test_noise_suppression_without_speexdsp_is_one_sentence(oww_dir, tmp_path):
    import importlib.util

    from edgekit.edge.settings import load_settings
    from edgekit.edge.wakeword import build_listener
    from edgekit.errors import UserError

    if importlib.util.find_spec("speexdsp_ns") is not None:
        pytest.skip("speexdsp-ns is installed here")
    s = load_settings(wakeword_models=str(oww_dir / "alexa_v0.1.onnx"), feature_dir=oww_dir,
                      wakeword_noise_suppression=True, data_dir=tmp_path)
    with pytest.raises(UserError, match="OPENWAKEWORD_NOISE_SUPPRESSION needs speexdsp-ns"):
        build_listener(s)


def test_reset_also_forgets_the_vad_state(oww_dir):
    """After a source restart the VAD gate must judge the new audio, not the speech heard before it."""
    from edgekit.edge.oww import make_model

    model = make_model([oww_dir / "alexa_v0.1.onnx"], "onnx", oww_dir, vad_threshold=0.5)
    listener = WakewordListener(model, {"alexa_v0.1": DetectorConfig()}, {"alexa_v0.1": "t"})
    for f in frames_of(read_wav(oww_dir / "alexa_test.wav")):
        listener.process(f)
    assert max(model.vad.prediction_buffer) > 0.5  # it heard speech
    listener.reset()
    assert len(model.vad.prediction_buffer) == 0
    fresh = make_model([oww_dir / "alexa_v0.1.onnx"], "onnx", oww_dir, vad_threshold=0.5)
    silence = np.zeros(FRAME, np.int16)
    assert listener.process(silence) == [] and fresh.predict(silence) == pytest.approx(listener.last_scores)
    assert list(model.vad.prediction_buffer) == pytest.approx(list(fresh.vad.prediction_buffer))
