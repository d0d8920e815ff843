"""`edgekit calibrate wakeword` on real audio with the real openWakeWord `alexa_v0.1` model.

Ambient = background noise + Speech Commands words, split in two halves (bounded to 2 min each for
speed); positives = the real `alexa_test.wav`, augmented (gain, added tap noise, time shift). The
setting chosen on the first half is checked on the second half through the runtime's own scoring
(`edgekit.edge.wakeword.score_stream`) and the detector state machine, not through the sweep.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.edge.audio import frames_of
from edgekit.edge.calibrate_wakeword import WakewordCalibration, hours_needed, poisson_rate_ci
from edgekit.edge.detector import DetectorConfig, run_detector
from edgekit.edge.detector_sweep import Setting, fires, load_scores
from edgekit.edge.oww import make_model
from edgekit.edge.record import RATE, read_wav, write_wav
from edgekit.edge.wakeword import score_stream

TARGET = 0.5
NOISE_S = 12
WORDS = 48
N_POSITIVES = 6


def edgekit(*args: str) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _positives(alexa: np.ndarray, noise: np.ndarray, out: Path, rng: np.random.Generator) -> None:
    word = alexa.astype(np.float64)
    for i in range(N_POSITIVES):
        g = word * 10 ** (rng.uniform(-12, 3) / 20)
        x = np.concatenate([np.zeros(int(rng.uniform(0, 0.5) * RATE)), g, np.zeros(RATE // 4)])
        start = int(rng.integers(0, len(noise) - len(x)))
        n = noise[start:start + len(x)].astype(np.float64)
        snr_db = rng.uniform(10, 20)
        n *= np.sqrt(np.mean(g ** 2) / max(np.mean(n ** 2), 1.0)) / 10 ** (snr_db / 20)
        write_wav(out / f"alexa-{i}.wav", np.clip(x + n, -32768, 32767).astype(np.int16))


@pytest.fixture(scope="module")
def site(shared: Path, oww_dir: Path, tmp_path_factory) -> SimpleNamespace:
    """Two halves of ambient audio and augmented positives, as WAV folders."""
    noise = sorted((shared / "data" / "background-noise").glob("*.wav"))
    words = sorted((shared / "data" / "speech-commands-mini").rglob("*.wav"))
    if not noise or not words:
        pytest.skip("background-noise or speech-commands-mini missing from the shared data")
    root = tmp_path_factory.mktemp("site")
    for half in (0, 1):
        d = root / f"ambient{half}"
        for f in noise:
            x = read_wav(f)
            start = half * (len(x) // 2)
            write_wav(d / f.name, x[start:start + NOISE_S * RATE])
        write_wav(d / "words.wav", np.concatenate([read_wav(f) for f in words[half::2][:WORDS]]))
    tap = read_wav(shared / "data" / "background-noise" / "running_tap.wav")
    (root / "positives").mkdir()
    _positives(read_wav(oww_dir / "alexa_test.wav"), tap, root / "positives", np.random.default_rng(0))
    return SimpleNamespace(root=root, a=root / "ambient0", b=root / "ambient1", pos=root / "positives",
                           model=oww_dir / "alexa_v0.1.onnx", oww=oww_dir)


@pytest.fixture(scope="module")
def calibrated(site: SimpleNamespace) -> SimpleNamespace:
    """One CLI run on the first half with positives, applied to a local device folder."""
    device = site.root / "device"
    device.mkdir()
    (device / ".env").write_text("OPENWAKEWORD_THRESHOLD=0.5\nMY_OWN_KEY=kept\n")
    out = site.root / "out"
    rc = edgekit("calibrate", "wakeword", "--model", site.model, "--ambient", site.a, "--positives", site.pos,
                 "--out", out, "--target-fa-per-hour", TARGET, "--feature-dir", site.oww,
                 "--apply", f"local:{device}", "--restart", "true", "--health", "true")
    assert rc == 0
    return SimpleNamespace(out=out, device=device, result=json.loads((out / "calibration.json").read_text()))


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


@pytest.mark.slow  # shares the module's calibration run (~15 s of CPU)
def test_chosen_setting_meets_the_target_on_the_other_half(site, calibrated):
    choice = calibrated.result["choice"]
    assert choice["frr"] == 0.0, "the augmented alexa clips should all be detected"
    assert choice["fa_per_hour"] <= TARGET
    # the second half, scored the way the device scores (a fresh model, the runtime's score_stream)
    model = make_model([site.model], "onnx", site.oww)
    warm = int(2.0 * RATE)
    audio = np.concatenate([np.zeros(warm, np.int16)] + [read_wav(f) for f in sorted(site.b.glob("*.wav"))])
    scores = score_stream(model, frames_of(audio))["alexa_v0.1"][warm // 1280:]
    config = DetectorConfig(threshold=choice["threshold"], patience=choice["patience"],
                            refractory_s=choice["refractory_s"])
    hours = len(scores) * 0.08 / 3600
    false_accepts = run_detector(scores, config)
    assert len(false_accepts) / hours <= TARGET, false_accepts
    # and the scores are not trivially quiet: the sweep's lowest thresholds do fire on this site
    assert any(r["false_accepts"] > 0 for r in calibrated.result["sweep"])


@pytest.mark.slow  # shares the module's calibration run (~15 s of CPU)
def test_env_written_and_applied_to_the_local_device(calibrated):
    choice = calibrated.result["choice"]
    env = _env(calibrated.out / "calibration.env")
    assert env == {"OPENWAKEWORD_THRESHOLD": f"{choice['threshold']:g}",
                   "OPENWAKEWORD_PATIENCE": str(choice["patience"]),
                   "OPENWAKEWORD_REFRACTORY": f"{choice['refractory_s']:g}", "OPENWAKEWORD_VAD_THRESHOLD": "0"}
    device_env = _env(calibrated.device / ".env")
    assert {k: device_env[k] for k in env} == env
    assert device_env["MY_OWN_KEY"] == "kept"
    assert not [p for p in calibrated.device.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"
    from edgekit.edge.settings import load_settings

    s = load_settings(calibrated.device / ".env")  # the device reads back exactly the chosen values
    assert (s.wakeword_threshold, s.wakeword_patience) == (choice["threshold"], choice["patience"])
    assert (calibrated.out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # shares the module's calibration run (~15 s of CPU)
def test_sweep_from_stored_scores_equals_rerunning_the_state_machine(calibrated):
    amb, pos = load_scores(calibrated.out / "scores.npz")
    assert len(pos) == N_POSITIVES
    rows = calibrated.result["sweep"]
    rng = np.random.default_rng(1)
    picked = [calibrated.result["choice"]] + [rows[i] for i in rng.choice(len(rows), 25, replace=False)]
    for r in picked:
        s = Setting(r["threshold"], r["patience"], r["refractory_s"])
        fired = fires(amb, s)
        again = run_detector(amb.scores, s.detector())
        assert [round((i + 1) * 0.08, 6) for i in fired] == [round(d.time_s, 6) for d in again]
        assert len(fired) == r["false_accepts"]
        detected = sum(bool(run_detector(p.scores, s.detector())) for p in pos)
        assert 1 - detected / len(pos) == pytest.approx(r["frr"])


@pytest.mark.slow  # shares the module's calibration run (~15 s of CPU)
def test_without_positives_lowest_passing_threshold_plus_margin(site, calibrated, tmp_path):
    """Re-sweeps the stored scores of the first half (no model run) under the no-positives rule."""
    from edgekit.edge.calibrate_wakeword import choose
    from edgekit.edge.detector_sweep import sweep

    amb, _ = load_scores(calibrated.out / "scores.npz")
    cfg = WakewordCalibration(model=str(site.model), ambient=[site.a], out=tmp_path)
    hours = len(amb.scores) * 0.08 / 3600
    rows = sweep(amb, [], cfg.thresholds, cfg.patiences, cfg.refractories, [0.0])
    row, rule = choose(rows, 0, hours, cfg)
    line = {r.setting.threshold: r.false_accepts for r in rows
            if r.setting.patience == 1 and r.setting.refractory_s == cfg.default_refractory}
    passing = [t for t in sorted(line) if all(line[u] / hours <= TARGET for u in line if u >= t)]
    assert row.setting.threshold == pytest.approx(min(passing[0] + cfg.margin, max(line)))
    assert "safety margin of 0.1" in rule


def test_vad_gate_is_replayed_exactly(site, tmp_path):
    """With VAD on, the stored raw + VAD scores gated at a threshold equal openWakeWord's own VAD run."""
    from edgekit.edge.calibrate_wakeword import open_model, score_samples

    audio = np.concatenate([read_wav(site.pos / "alexa-0.wav"), read_wav(site.a / "words.wav")[: 12 * RATE]])
    model, name = open_model(site.model, "onnx", site.oww, vad=True)
    track = score_samples(model, name, audio, warmup_s=2.0)
    for vad_t in (0.3, 0.6):
        live = make_model([site.model], "onnx", site.oww, vad_threshold=vad_t)
        warm = np.zeros(int(2.0 * RATE), np.int16)
        got = score_stream(live, frames_of(np.concatenate([warm, audio])))[name][len(warm) // 1280:]
        np.testing.assert_array_equal(track.gated(vad_t), got.astype(np.float64))
        s = Setting(0.5, 1, 2.0, vad_t)
        assert [round((i + 1) * 0.08, 6) for i in fires(track, s)] == \
            [round(d.time_s, 6) for d in run_detector(got, s.detector())]


def test_chunk_boundaries_do_not_change_scores(site):
    """Recordings arrive in chunks of any length; scoring them as one stream equals scoring the whole."""
    from edgekit.edge.calibrate_wakeword import open_model, score_chunks, score_samples

    audio = np.concatenate([read_wav(site.pos / "alexa-1.wav"), read_wav(site.a / "words.wav")[: 4 * RATE]])
    model, name = open_model(site.model, "onnx", site.oww, vad=False)
    whole = score_samples(model, name, audio, warmup_s=2.0)
    parts = score_chunks(model, name, [audio[:1000], audio[1000:30001], audio[30001:]], warmup_s=2.0)
    np.testing.assert_array_equal(whole.scores, parts.scores)
    assert len(whole.scores) == -(-len(audio) // 1280) and whole.scores.max() > 0.5


def test_poisson_interval_and_hours_needed():
    lo, hi = poisson_rate_ci(0, 2.0)
    assert lo == 0 and hi == pytest.approx(-np.log(0.025) / 2.0, rel=1e-6)  # exact for k = 0
    lo, hi = poisson_rate_ci(10, 1.0)
    assert lo < 10 < hi
    assert hours_needed(0.5) == pytest.approx(-np.log(0.025) / 0.5, rel=1e-6)  # ~7.4 h, not minutes


@pytest.mark.slow  # shares the module's calibration run (~15 s of CPU)
def test_short_recording_warns(calibrated):
    warnings = calibrated.result["warnings"]
    assert any("needs at least 7.4 h" in w for w in warnings), warnings
    assert any(f"Only {N_POSITIVES} positive clip(s)" in w for w in warnings), warnings
    lo, hi = calibrated.result["choice"]["fa_per_hour_ci"]
    assert lo == 0 and hi > TARGET  # minutes of audio cannot show 0.5/h


def test_wakeword_bundle_with_tflite(site, tmp_path):
    """A bundle is resolved to its model file; the tflite framework runs through ai-edge-litert."""
    from edgekit.bundle import BundleWriter, InputSpec

    w = BundleWriter("alexa", root=tmp_path / "models")
    for fmt in ("onnx", "tflite"):
        w.copy_in(site.oww / f"alexa_v0.1.{fmt}", f"alexa_v0.1.{fmt}", fmt, "model")
    b = w.commit(task="wakeword", labels=["alexa"], input=InputSpec(shape=[1, 16, 96], layout="NTF"))
    write_wav(tmp_path / "amb" / "a.wav", read_wav(site.a / "words.wav")[: 8 * RATE])
    assert edgekit("calibrate", "wakeword", "-m", b.path, "--framework", "tflite", "-a", tmp_path / "amb",
                   "-p", site.pos / "alexa-2.wav", "--feature-dir", site.oww, "-o", tmp_path / "out") == 0
    r = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert r["model"]["source"] == "alexa/v1" and r["model"]["framework"] == "tflite"
    assert r["model"]["file"].endswith("alexa_v0.1.tflite") and r["choice"]["frr"] == 0.0


def test_apply_that_fails_its_health_check_restores_the_device_env(tmp_path):
    from edgekit.edge.calibration_apply import apply_to_devices
    from edgekit.errors import UserError

    (tmp_path / ".env").write_text("OPENWAKEWORD_THRESHOLD=0.5\nMINE=1\n")
    with pytest.raises(UserError, match=r"failed on 1 device\(s\): local:.*health check failed"):
        apply_to_devices([f"local:{tmp_path}"], {"OPENWAKEWORD_THRESHOLD": "0.7"}, restart="true", health="false",
                         health_timeout=1)
    assert (tmp_path / ".env").read_text() == "OPENWAKEWORD_THRESHOLD=0.5\nMINE=1\n"


# --- bad inputs: one sentence, exit 2 -----------------------------------------------------------

def _error(capsys, *args) -> str:
    assert edgekit(*args) == 2
    return " ".join(capsys.readouterr().err.split())


def test_no_ambient_audio(capsys, oww_dir, tmp_path):
    model = oww_dir / "alexa_v0.1.onnx"
    assert "No ambient audio" in _error(capsys, "calibrate", "wakeword", "-m", model)
    (tmp_path / "empty").mkdir()
    msg = _error(capsys, "calibrate", "wakeword", "-m", model, "-a", tmp_path / "empty", "-o", tmp_path / "o")
    assert "No ambient audio: no WAV files in" in msg


def test_wrong_sample_rate(capsys, oww_dir, tmp_path):
    write_wav(tmp_path / "a" / "8k.wav", np.zeros(8000, np.int16), rate=8000)
    msg = _error(capsys, "calibrate", "wakeword", "-m", oww_dir / "alexa_v0.1.onnx", "-a", tmp_path / "a",
                 "-o", tmp_path / "o")
    assert "8k.wav is sampled at 8000 Hz; calibration needs 16000 Hz" in msg


def test_model_that_is_not_a_wake_word_model(capsys, oww_dir, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    write_wav(tmp_path / "a" / "x.wav", np.zeros(RATE, np.int16))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "img",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime in range reads
    onnx.save(model, tmp_path / "image.onnx")
    msg = _error(capsys, "calibrate", "wakeword", "-m", tmp_path / "image.onnx", "-a", tmp_path / "a",
                 "--feature-dir", oww_dir, "-o", tmp_path / "o")
    assert "image.onnx is not a wake-word model" in msg
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    msg = _error(capsys, "calibrate", "wakeword", "-m", tmp_path / "junk.onnx", "-a", tmp_path / "a",
                 "--feature-dir", oww_dir, "-o", tmp_path / "o")
    assert "junk.onnx is not a loadable onnx model" in msg
    from edgekit.bundle import BundleWriter, InputSpec

    w = BundleWriter("camera", root=tmp_path / "models")
    w.copy_in(tmp_path / "image.onnx", "model.onnx", "onnx", "model")
    b = w.commit(task="image-classification", labels=["a", "b", "c"], input=InputSpec(shape=[1, 3, 8, 8]))
    msg = _error(capsys, "calibrate", "wakeword", "-m", b.path, "-a", tmp_path / "a", "-o", tmp_path / "o")
    assert "is for image-classification, not a wake-word model" in msg


def test_bad_out_and_apply_target_fail_before_the_calibration(capsys, oww_dir, tmp_path):
    write_wav(tmp_path / "a" / "quiet.wav", np.zeros(RATE, np.int16))
    args = ["calibrate", "wakeword", "-m", oww_dir / "alexa_v0.1.onnx", "-a", tmp_path / "a", "--feature-dir", oww_dir]
    (tmp_path / "results").write_text("mine")
    msg = _error(capsys, *args, "-o", tmp_path / "results")
    assert "results, which is a file; give a folder" in msg and (tmp_path / "results").read_text() == "mine"
    msg = _error(capsys, *args, "-o", tmp_path / "o", "--apply", "pi@")
    assert "'pi@' is not a target" in msg
    assert not (tmp_path / "o").exists()  # nothing was calibrated for a device it could not reach
