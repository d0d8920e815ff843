"""Wake-word pieces without training: config, bad inputs, the detector sweep, near-misses, caches."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.edge.detector import DetectorConfig, run_detector
from edgekit.errors import UserError
from edgekit.trainer.wakeword import evaluate as ev
from edgekit.trainer.wakeword.config import load_config

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_yaml_with_the_seed_keys_and_cli_overrides(tmp_path):
    y = tmp_path / "training_config.yaml"
    y.write_text("model:\n  name: puertocho\n  sample_rate: 16000\n  frame_length: 1280\n"
                 "training:\n  batch_size: 64\n  learning_rate: 0.0001\n  epochs: 100\n  early_stopping_patience: 10\n"
                 "data:\n  phrases: [puertocho]\n  lang: es\n  target_fpr: 0.5\n  target_fnr: 0.05\n")
    cfg = load_config(y, overrides={"training": {"epochs": 7, "batch_size": None}})
    assert (cfg.name, cfg.data.lang, cfg.training.epochs, cfg.training.batch_size) == ("puertocho", "es", 7, 64)
    assert cfg.training.learning_rate == 1e-4 and cfg.data.target_fpr == 0.5
    quick = load_config(y, preset="quick")
    assert quick.data.n_positive < cfg.data.n_positive


@pytest.mark.parametrize("yaml_text, overrides, message", [
    ("data:\n  phrases: ['  ']\n", {}, "non-empty wake phrase"),
    ("data:\n  phrases: [hola]\n  lang: fr\n", {}, "Unknown language 'fr'"),
    ("data:\n  phrases: [hola]\n  langs: es\n", {}, "data.langs"),
    ("model:\n  sample_rate: 8000\n", {"data": {"phrases": ["x"]}}, "model.sample_rate"),
    ("data:\n  phrases: [hola]\n", {"data": {"negatives": ["/no/such/folder"]}}, "does not exist"),
    ("data:\n  phrases: [hola]\n  speed: [1.2, 0.8]\n", {}, "data.speed: .*runs backwards"),
    ("data:\n  phrases: [hola]\n  speed: [0, 1]\n", {}, "data.speed: .*above 0"),
])
def test_bad_config_is_one_sentence(tmp_path, yaml_text, overrides, message):
    y = tmp_path / "c.yaml"
    y.write_text(yaml_text)
    with pytest.raises(UserError, match=message):
        load_config(y, overrides=overrides)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), " ".join((out.out + out.err).split())


def test_cli_bad_inputs_exit_2_with_one_sentence(tmp_path, oww_dir, capsys):
    code, out = _run(["train", "wakeword", "--phrase", ""], capsys)
    assert code == 2 and "non-empty wake phrase" in out and "Traceback" not in out
    code, out = _run(["train", "wakeword", "--phrase", "hola", "--lang", "ez"], capsys)
    assert code == 2 and "Did you mean 'es'" in out
    empty = tmp_path / "no-models"
    empty.mkdir()
    cache = ["--cache-dir", str(tmp_path / "cache")]
    code, out = _run(["train", "wakeword", "--phrase", "computer", "--feature-models", str(empty), *cache], capsys)
    assert code == 2 and "melspectrogram.onnx" in out
    bad = tmp_path / "negs"
    bad.mkdir()
    (bad / "room.wav").write_bytes(b"RIFF this is not audio")
    code, out = _run(["train", "wakeword", "--phrase", "computer", "--negatives", str(bad),
                      "--feature-models", str(oww_dir), *cache], capsys)
    assert code == 2 and "Cannot read audio file" in out and "room.wav" in out


def test_sparse_detection_count_equals_the_device_state_machine():
    rng = np.random.default_rng(3)
    for trial in range(30):
        scores = np.clip(rng.beta(0.3, 2.0, size=3000) + (rng.random(3000) < 0.02) * 0.8, 0, 1)
        cfg = DetectorConfig(threshold=float(rng.uniform(0.2, 0.95)), patience=int(rng.integers(1, 4)),
                             refractory_s=float(rng.choice([0.0, 0.5, 2.0])), rearm=bool(trial % 2))
        assert ev.count_detections(scores, cfg) == len(run_detector(scores, cfg))


def test_sweep_choice_and_det_plot(tmp_path):
    pos = np.array([[0.1, 0.9, 0.95], [0.2, 0.6, 0.3], [0.1, 0.1, 0.2]])
    neg = np.zeros(45000)  # one hour of frames
    neg[[100, 5000]] = 0.7
    pts = ev.sweep(pos, neg, patience=1, refractory_s=2.0, thresholds=[0.5, 0.55, 0.65, 0.8])
    by_t = {p.threshold: p for p in pts}
    assert by_t[0.5].fa_per_hour == pytest.approx(2.0) and by_t[0.5].frr == pytest.approx(1 / 3)
    assert by_t[0.8].fa_per_hour == 0 and by_t[0.8].frr == pytest.approx(2 / 3)
    chosen, met = ev.choose(pts, 0.5)
    assert met and chosen.threshold == 0.8
    chosen, met = ev.choose(pts, 5.0)
    assert met and chosen.threshold == 0.55  # same FRR and FA/h as 0.5: the higher threshold wins
    png = ev.det_plot({"m": pts}, tmp_path / "det.png", 0.5, chosen)
    assert png.read_bytes()[:4] == b"\x89PNG"


@needs_espeak
def test_near_misses_come_from_phonemes_and_exclude_the_phrase():
    from edgekit.trainer.wakeword.negatives import adversarial_texts

    a = adversarial_texts(["computer"], "en", ["commuter"], np.random.default_rng(0), 20)
    b = adversarial_texts(["computer"], "en", ["commuter"], np.random.default_rng(0), 20)
    assert a == b and "computer" not in a and "commuter" in a
    edits = [t for t in a if t.startswith("[[")]
    assert len(edits) >= 10 and "[[k@mpj'u:t#3]]" not in edits  # the phrase's own phonemes


@needs_espeak
def test_tts_clips_are_cached_by_engine_voice_params_text(tmp_path):
    from edgekit.trainer.wakeword import tts

    us = [tts.Utterance("espeak-ng", "en-us+f3", "computer", 1.0, 0.5),
          tts.Utterance("espeak-ng", "en-us+f3", "computer", 1.2, 0.5)]
    paths, new = tts.synthesize(us, tmp_path)
    assert new == 2 and paths[0] != paths[1] and all(p.stat().st_size > 8000 for p in paths)
    mtime = paths[0].stat().st_mtime_ns
    paths2, new2 = tts.synthesize(us[:1], tmp_path)
    assert new2 == 0 and paths2[0] == paths[0] and paths[0].stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="Did you mean 'flite'"):
        tts.select_engines(["flit"], "en", [])


@needs_espeak
def test_spanish_uses_espeak_voices_and_spanish_phonemes():
    from edgekit.trainer.wakeword import tts
    from edgekit.trainer.wakeword.negatives import adversarial_texts

    engines = tts.select_engines([], "es", [])
    assert "espeak-ng" in engines and "festival" not in engines and "flite" not in engines
    vs = tts.voice_set(engines, "es", [], 0.2, seed=0)
    assert all(v.startswith("es") for v in vs.train["espeak-ng"] + vs.val["espeak-ng"])
    assert not set(vs.train["espeak-ng"]) & set(vs.val["espeak-ng"])
    near = adversarial_texts(["oye puertocho"], "es", [], np.random.default_rng(0), 10)
    assert "oye" in near and "puertocho" in near and any("pwert" in t for t in near)


@pytest.mark.parametrize("arch", ["wakeword_cnn", "wakeword_dnn"])
def test_heads_take_openwakeword_windows_and_give_probabilities(arch):
    import torch

    from edgekit.trainer.models import ARCHS, build

    assert ARCHS[arch].task == "wakeword"
    model = build(arch, width=16).eval()
    x = torch.randn(5, 16, 96) * 10
    with torch.no_grad():
        p, logits = model(x), model.logits(x)
    assert p.shape == (5, 1) and torch.allclose(p, torch.sigmoid(logits))
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0


def test_everyday_sounds_are_seeded_audible_and_mixed_under_clips():
    from edgekit.trainer.wakeword import sounds
    from edgekit.trainer.wakeword.augment import Mixer, MixSpec
    from edgekit.trainer.wakeword.features import Recipe, render

    n = 3 * 16000
    for name, kind in sounds.SOUNDS.items():
        a, b = kind.make(n, np.random.default_rng(1)), kind.make(n, np.random.default_rng(1))
        assert a.shape == (n,) and np.isfinite(a).all() and np.array_equal(a, b), name
        assert np.abs(a).max() > 0.05 and not np.array_equal(a, kind.make(n, np.random.default_rng(2))), name
    x = sounds.scene(n, np.random.default_rng(0))
    assert x.dtype == np.float32 and np.abs(x).max() == pytest.approx(1.0, abs=1e-4)
    assert not Mixer.load(MixSpec()).sounds  # off unless asked for
    mixer = Mixer.load(MixSpec(sound_share=1.0))
    assert len(mixer.sounds) == Mixer.SOUND_SCENES
    bg = mixer.background(n, np.random.default_rng(0))

    def is_slice(part: np.ndarray, whole: np.ndarray) -> bool:
        return any(np.array_equal(whole[i:i + len(part)], part) for i in np.flatnonzero(whole == part[0]))

    assert any(is_slice(bg, s) for s in mixer.sounds)
    clips = [render(Recipe("sounds", (), 32000, 0, seed), mixer, {}) for seed in range(12)]
    assert all(a.dtype == np.int16 and len(a) == 32000 for a in clips)
    peaks = np.array([np.abs(a).max() for a in clips])
    assert peaks.min() > 0 and peaks.max() / peaks.min() > 10  # near the microphone and across the room


def test_final_head_is_the_mean_of_the_best_epochs(tmp_path):
    import torch

    from edgekit.trainer import checkpoint as ckpt_io
    from edgekit.trainer.wakeword.dataset import WakewordData
    from edgekit.trainer.wakeword.train import fit_head

    rng = np.random.default_rng(0)
    shift = np.zeros(96, np.float32)
    shift[:8] = 1.5  # positives differ from negatives in a few embedding dimensions, as a learnable task

    def feats(n: int, frames: int, pos: bool) -> np.ndarray:
        return (rng.standard_normal((n, frames, 96)) + (shift if pos else 0)).astype(np.float32)

    data = WakewordData(x_pos=feats(64, 16, True), x_neg=feats(256, 16, False), val_pos=feats(16, 28, True),
                        val_stream=feats(4, 116, False), val_near=feats(0, 28, False), stats={})
    cfg = load_config(None, overrides={"data": {"phrases": ["computer"]}, "model": {"width": 8},
                                       "training": {"epochs": 4, "batch_size": 32, "average_best": 3,
                                                    "device": "cpu"}})
    model, result = fit_head(cfg, data, tmp_path / "run")
    kept = sorted(tmp_path.glob("run/checkpoint_best_e*.pt"))
    best3 = sorted(sorted(result.history, key=lambda r: r["val_score"])[:3], key=lambda r: r["epoch"])
    assert [int(p.stem[-3:]) for p in kept] == [r["epoch"] for r in best3]
    assert sorted(result.best_checkpoints) == kept
    states = [ckpt_io.load(p)["model"] for p in kept]
    for k, v in model.state_dict().items():
        assert torch.allclose(v, sum(s[k] for s in states) / 3, atol=1e-6)
    assert not all(torch.equal(v, states[0][k]) for k, v in model.state_dict().items())


def test_short_user_negatives_are_joined_not_padded_with_silence():
    """1 s words as negatives: the held-out stream must hold their audio, not 9 s of silence per word
    (which would count as hours heard and understate false accepts per hour)."""
    from pathlib import Path

    from edgekit.trainer.wakeword import dataset
    from edgekit.trainer.wakeword.features import render

    files = {Path(f"word{i:02d}.wav"): 16000 for i in range(60)}
    cache = {str(f): np.full(16000, (i + 1) / 100, np.float32) for i, f in enumerate(files)}
    train, val = dataset._user_chunks(files, np.random.default_rng(0))
    for side, n_files in ((train, 48), (val, 12)):
        audio = np.concatenate([render(r, None, cache) for r in side])
        heard = int((audio != 0).sum())
        assert heard == min(n_files * 16000, len(audio)), (heard, len(audio))
        assert len(audio) - heard < dataset.CHUNK  # at most the tail of one chunk is padding
    levels = np.unique(np.concatenate([render(r, None, cache) for r in val]))
    assert len(levels) == 10  # ten held-out words follow one another in the one 10 s chunk


def test_workers_cache_and_device_do_not_change_the_run_folder():
    from types import SimpleNamespace

    from edgekit.trainer.wakeword.train import run_dir_for

    data = SimpleNamespace(stats={"digest": "same data"})
    base = {"data": {"phrases": ["computer"]}}
    a = load_config(None, "quick", {**base, "workers": 2})
    b = load_config(None, "quick", {**base, "workers": 8, "cache_dir": "/elsewhere",
                                    "training": {"device": "cpu"}})
    assert run_dir_for(a, data) == run_dir_for(b, data)  # an interrupted run resumes with other --workers
    assert run_dir_for(a, data) != run_dir_for(load_config(None, "quick", {"data": {"phrases": ["hello"]}}), data)


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival (text2wave) is not installed")
def test_festival_clips_follow_the_speed(tmp_path):
    import soundfile as sf

    from edgekit.trainer.wakeword import tts

    for voice in tts.ENGINES["festival"].voices("en", []):  # diphone voices and HTS ones take speed differently
        lengths = []
        for speed in (0.8, 1.25):
            u = tts.Utterance("festival", voice, "hello computer", speed=speed)
            tts.ENGINES["festival"].render(u, tmp_path / f"{voice}-{speed}.wav")
            lengths.append(sf.info(str(tmp_path / f"{voice}-{speed}.wav")).frames)
        assert lengths[0] > 1.3 * lengths[1], (voice, lengths)  # slower speech is longer


def _median_f0(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch of the voiced 40 ms frames."""
    n = int(0.04 * sr)
    lo, hi, out = sr // 400, sr // 60, []
    for i in range(0, len(x) - n, n // 2):
        w = x[i:i + n] * np.hanning(n)
        ac = np.correlate(w, w, "full")[n - 1:]
        k = lo + int(np.argmax(ac[lo:hi]))
        if np.sqrt(np.mean(w**2)) > 0.02 * np.abs(x).max() and ac[k] > 0.4 * ac[0]:
            out.append(sr / k)
    return float(np.median(out))


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival (text2wave) is not installed")
def test_festival_diphone_clips_follow_the_pitch(tmp_path):
    import soundfile as sf

    from edgekit.trainer.wakeword import tts

    diphone = [v for v in tts.ENGINES["festival"].voices("en", []) if v.endswith("_diphone")]
    if not diphone:
        pytest.skip("no festival diphone voice is installed")
    for voice in diphone:
        f0 = []
        for pitch in (0.25, 0.75):
            u = tts.Utterance("festival", voice, "computer", pitch=pitch)
            tts.ENGINES["festival"].render(u, tmp_path / f"{voice}-{pitch}.wav")
            f0.append(_median_f0(*sf.read(str(tmp_path / f"{voice}-{pitch}.wav"))))
        assert f0[1] > 1.3 * f0[0], (voice, f0)  # 85 and 129 Hz asked for (1.52x)


def test_a_tempo_changed_clip_still_ends_where_it_is_placed():
    from edgekit.trainer.wakeword.augment import Mixer, MixSpec

    mixer = Mixer(MixSpec(reverb_probability=0.0), backgrounds=[np.zeros(16000 * 30, np.float32)])
    clip = (0.5 * np.sin(np.arange(12800) * 0.2)).astype(np.float32)  # 0.8 s of "speech" over silence
    changed = 0
    for seed in range(120):
        changed += len(mixer.color(clip, np.random.default_rng(seed))) != len(clip)
        out = mixer.place(clip, 32000, 30000, np.random.default_rng(seed))
        assert int(np.flatnonzero(np.abs(out) > 1e-4)[-1]) + 1 == 30000, seed
    assert changed > 5  # the tempo change did happen in some of them


def test_one_voice_in_all_still_gives_a_validation_set(monkeypatch, caplog):
    import logging

    from edgekit.trainer.wakeword import tts

    one = tts.Engine("true", ("en",), lambda lang, piper: ["only_voice"], lambda u, out: None, "one voice", "-")
    monkeypatch.setitem(tts.ENGINES, "solo", one)
    with caplog.at_level(logging.WARNING):
        vs = tts.voice_set(["solo"], "en", [], 0.2, seed=0)
    assert vs.train == {"solo": ["only_voice"]} and vs.val == {"solo": ["only_voice"]}
    assert "validation hears the training voices" in caplog.text


def test_a_broken_background_file_is_named_and_left_out(tmp_path, caplog):
    import logging

    import soundfile as sf

    from edgekit.trainer.wakeword import negatives

    sf.write(tmp_path / "fan.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with caplog.at_level(logging.WARNING):
        good = negatives.readable(negatives.audio_files([tmp_path]), "background")
    assert good == [tmp_path / "fan.wav"] and "skipping background file" in caplog.text
