"""A tiny end-to-end wake word: espeak-ng speech → features → head → bundle → ONNX in openwakeword.

`edgekit export` writes the ONNX head; it runs inside the real `openwakeword.Model` with the real
feature models, streamed in 80 ms frames as on the device; it must fire on positives spoken by voices
held out of training and stay silent on real background noise. A second run reuses every cached clip and
feature array; a third, after one negative recording is replaced under the same name, renders
the sets that play it again and no others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import resolve
from edgekit.cli import main
from edgekit.edge.detector import DetectorConfig, run_detector

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800),  # ~1-2 min on two idle cores
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")]

TINY = """
model: {name: computer, width: 32}
training: {batch_size: 64, epochs: 20, early_stopping_patience: 8}
data:
  phrases: [computer]
  n_positive: 240
  n_adversarial: 120
  n_words: 120
  speech_minutes: 1.5
  noise_minutes: 2
  sound_minutes: 1
  engines: [espeak-ng]
detector: {patience: 2}
seed: 3
workers: 2
"""


def _room_noise(shared: Path, tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """First half of each background-noise file as the user's room recordings; the second halves test."""
    import soundfile as sf

    from edgekit.trainer.wakeword.negatives import audio_files, read_audio

    folder, held = tmp_path / "room", []
    folder.mkdir(exist_ok=True)
    for p in audio_files([shared / "data" / "background-noise"]):
        x = read_audio(p)
        sf.write(str(folder / f"{p.stem}.wav"), x[: len(x) // 2], 16000)
        held.append(x[len(x) // 2:][: 25 * 16000])
    return folder, held


def _train(tmp_path: Path, oww_dir: Path, capsys, room: Path) -> tuple[object, str]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    with pytest.raises(SystemExit) as exc:
        main(["train", "wakeword", "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
              "--run-dir", str(tmp_path / "run"), "--negatives", str(room), "--background", str(tmp_path / "bg"),
              "--feature-models", str(oww_dir)])
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out.out + out.err
    return resolve("computer"), out.out


def _export_onnx(bundle, capsys) -> Path:
    """`edgekit export` (the real exporter and its accuracy gate) → the bundle's ONNX file."""
    with pytest.raises(SystemExit) as exc:
        main(["export", str(bundle.path), "--format", "onnx"])
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out.out + out.err
    onnx = resolve(bundle.path).model_file("onnx")
    assert onnx is not None and onnx.is_file()
    return onnx


def _stream(oww, audio: np.ndarray) -> np.ndarray:
    """Scores per 80 ms frame from the device's start state (reset, then a silent feature history)."""
    from edgekit.edge.oww import silence_history
    from edgekit.edge.wakeword import score_stream

    oww.reset()
    silence_history(oww)  # reset() alone refills the history with random noise, unlike the device
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return score_stream(oww, (pcm[i:i + 1280] for i in range(0, len(pcm) - 1279, 1280)))["computer"]


def _held_out_positives(tmp_path: Path, n: int) -> list[np.ndarray]:
    from edgekit.trainer.wakeword import tts
    from edgekit.trainer.wakeword.negatives import colored_noise, read_audio

    voices = tts.voice_set(["espeak-ng"], "en", [], 0.2, seed=3).val  # the voices training held out
    utts = tts.plan(["computer"], voices, n, np.random.default_rng(11))
    paths, _ = tts.synthesize(utts, tmp_path / "heldout")
    rng = np.random.default_rng(0)
    quiet = lambda k: colored_noise(k, "pink", rng) * 0.003  # noqa: E731
    return [np.concatenate([quiet(32000), 0.5 * read_audio(p), quiet(16000)]) for p in paths]


def test_tiny_end_to_end(tmp_path, oww_dir, shared, capsys):
    room, held_noise = _room_noise(shared, tmp_path)
    shutil.copytree(room, tmp_path / "bg")  # the same recordings as background, kept apart from the negatives
    bundle, out = _train(tmp_path, oww_dir, capsys, room)
    m = bundle.manifest
    assert m.task == "wakeword" and m.labels == ["computer"] and m.extra["output"] == "probs"
    assert m.extra["arch"] == {"name": "wakeword_cnn", "kwargs": {"width": 32, "dropout": 0.2}}
    assert m.input.shape == [1, 16, 96] and m.input.preprocess.frame_size == 1280
    assert set(m.thresholds) == {"threshold", "patience", "refractory_s"}
    assert {"FRR", "FA/h", "F1"} <= set(m.metrics)
    assert {"model.pt", "eval_data.npz", "det.png", "history.json", "curves.png"} <= set(m.files)
    with np.load(bundle.path / "eval_data.npz") as z:
        assert z["x_train"].dtype == np.float32 and z["x_val"].shape[1:] == (16, 96)
        assert set(np.unique(z["y_val"])) == {0, 1} and len(z["x_train"]) == len(z["y_train"]) <= 3000
    assert m.extra["data"]["tts"]["new"] > 0 and m.extra["data"]["features"]["new"] > 0
    bundle.verify()

    from edgekit.edge.oww import make_model

    oww = make_model([_export_onnx(bundle, capsys)], "onnx", oww_dir)
    det = DetectorConfig(**m.thresholds)
    fired = [len(run_detector(_stream(oww, x), det)) > 0 for x in _held_out_positives(tmp_path, 12)]
    assert sum(fired) >= 9, f"fired on {sum(fired)}/12 held-out positives at {m.thresholds}"

    noise = np.concatenate(held_noise)  # the halves training never heard
    false = run_detector(_stream(oww, noise * 0.8 / np.abs(noise).max()), det)
    assert not false, f"{len(false)} detections on {len(noise) / 16000:.0f} s of background noise"

    again, _ = _train(tmp_path, oww_dir, capsys, room)
    stats = again.manifest.extra["data"]
    assert again.version == "v2" and stats["tts"]["new"] == 0 and stats["features"]["new"] == 0, json.dumps(stats)
    assert stats["features"]["reused"] == m.extra["data"]["features"]["clips"]

    # a negative recording replaced under the same name (same length, other sound): no stale features, no
    # resume; only the sets that play the user's negatives are rendered again
    import soundfile as sf

    first = sorted(room.glob("*.wav"))[0]
    x, sr = sf.read(str(first), dtype="float32")
    sf.write(str(first), x[::-1].copy(), sr)
    edited, _ = _train(tmp_path, oww_dir, capsys, room)
    stats = edited.manifest.extra["data"]
    assert stats["digest"] != m.extra["data"]["digest"], json.dumps(stats)
    assert 0 < stats["features"]["new"] < stats["features"]["clips"] / 4, json.dumps(stats)
