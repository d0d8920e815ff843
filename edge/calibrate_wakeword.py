"""Field calibration of a wake word: threshold, patience, refractory (and VAD) from site recordings.

The ambient recording is streamed once through openWakeWord exactly as the device runs it (the same
`make_model`, one `predict` per 80 ms frame), keeping each frame's raw score and VAD score. The sweep
then replays every setting over those scores (`detector_sweep`), and the choice follows
openWakeWord/microWakeWord practice: false accepts first, then recall.

  * with positives: the lowest false-reject rate among settings with FA/h <= target; ties go to fewer
    false accepts, lower patience, the refractory nearest the default, lower VAD threshold, then the
    middle threshold of the tied ones (room on both sides);
  * without positives: the lowest swept patience (1 by default), the lowest swept VAD threshold and the
    default refractory, at the lowest threshold from which every higher one meets the target, plus
    `margin` (stated in the result).

Every stream starts as the device's does (`silence_history` after a reset), then `warmup_s` of silence
whose frames are dropped, so the first frames kept depend on the recording alone (openWakeWord's
start-up buffers are flushed) and a stream start is never counted as a false accept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit.edge.detector_sweep import ScoreTrack, Setting, SweepRow, save_scores, sweep
from edgekit.edge.record import FRAME, RATE, list_wavs, read_wav, wav_samples
from edgekit.errors import UserError
from edgekit.paths import check_output

log = logging.getLogger(__name__)

ENV_KEYS = {"threshold": "OPENWAKEWORD_THRESHOLD", "patience": "OPENWAKEWORD_PATIENCE",
            "refractory_s": "OPENWAKEWORD_REFRACTORY", "vad_threshold": "OPENWAKEWORD_VAD_THRESHOLD"}
"""Setting field → the device's .env name (see `edgekit.edge.settings`)."""


def _grid(lo: float, hi: float, step: float) -> list[float]:
    return [round(float(v), 4) for v in np.arange(lo, hi + step / 2, step)]


class WakewordCalibration(BaseModel):
    """`edgekit calibrate wakeword`, validated once by the CLI."""

    model_config = ConfigDict(extra="forbid")
    model: str
    """A wake-word bundle (folder or name) or a model file (.onnx/.tflite)."""
    ambient: list[Path]
    """WAV files or folders of recordings without the wake word, in recording order."""
    positives: list[Path] = Field(default_factory=list)
    """WAV files or folders of wake-word utterances (optional)."""
    out: Path = Path("calibration")
    """Folder for calibration.json, det.png and calibration.env."""
    framework: Literal["onnx", "tflite"] | None = None
    """Runtime; default: the model file's suffix (onnx for bundles that have it)."""
    feature_dir: Path | None = None
    """Folder with openWakeWord's melspectrogram/embedding (and silero_vad) models."""
    target_fa_per_hour: float = Field(0.5, gt=0)
    """False accepts per hour the chosen setting may make on the ambient audio."""
    thresholds: list[float] = Field(default_factory=lambda: _grid(0.05, 0.95, 0.05))
    """Score thresholds swept."""
    patiences: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    """Patience values (consecutive hot frames) swept."""
    refractories: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])
    """Refractory times (s) swept."""
    vad_thresholds: list[float] = Field(default_factory=list)
    """VAD thresholds swept; empty = VAD off (OPENWAKEWORD_VAD_THRESHOLD=0)."""
    margin: float = Field(0.1, ge=0, lt=1)
    """Without positives: added to the lowest threshold that meets the target."""
    default_refractory: float = Field(2.0, ge=0)
    """Without positives: the refractory time used (nothing measures its cost)."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Level of the Poisson confidence interval on FA/h."""
    warmup_s: float = Field(2.0, ge=1.3)
    """Silence fed before each stream and dropped (openWakeWord's random start-up features)."""
    pad_s: float = Field(1.0, ge=0)
    """Silence after each positive clip, so the model's 1.28 s window covers the word."""


def poisson_rate_ci(k: int, hours: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval of a Poisson rate: k events in `hours`."""
    from scipy.stats import chi2

    a = 1 - confidence
    lo = chi2.ppf(a / 2, 2 * k) / 2 if k > 0 else 0.0
    hi = chi2.ppf(1 - a / 2, 2 * k + 2) / 2
    return float(lo / hours), float(hi / hours)


def hours_needed(target: float, confidence: float = 0.95) -> float:
    """Hours of ambient audio for zero false accepts to show FA/h <= target at `confidence`."""
    return poisson_rate_ci(0, 1.0, confidence)[1] / target


# --- model -----------------------------------------------------------------------------------------

def resolve_model(arg: str, framework: str | None) -> tuple[Path, str, str]:
    """(model file, framework, description) for a bundle or model file; refuses non-wake-word bundles."""
    p = Path(arg)
    if p.is_file():
        fw = framework or p.suffix.lstrip(".")
        if fw not in ("onnx", "tflite"):
            raise UserError(f"{p} is not an .onnx or .tflite wake-word model.")
        return p, fw, str(p)
    from edgekit.bundle import resolve

    b = resolve(arg)
    if b.manifest.task != "wakeword":
        raise UserError(f"Bundle {b.name}/{b.version} is for {b.manifest.task}, not a wake-word model.")
    for fw in [framework] if framework else ["onnx", "tflite"]:
        f = b.model_file(fw)
        if f is not None:
            return f, fw, f"{b.name}/{b.version}"
    raise UserError(f"Bundle {b.name}/{b.version} has no {framework or 'onnx/tflite'} model "
                    f"(it has: {', '.join(b.formats()) or 'none'}).")


def _input_shape(model: Any, name: str, framework: str) -> tuple[list, list]:
    m = model.models[name]
    if framework == "onnx":
        return list(m.get_inputs()[0].shape), list(m.get_outputs()[0].shape)
    return list(m.get_input_details()[0]["shape"]), list(m.get_output_details()[0]["shape"])


def open_model(path: Path, framework: str, feature_dir: Path | None, vad: bool) -> tuple[Any, str]:
    """An openWakeWord model for one wake-word head, checked to be one: input [1, N, 96], one score out."""
    from edgekit.edge.oww import make_model
    from edgekit.paths import openwakeword_assets

    feature_dir = feature_dir or openwakeword_assets()
    if feature_dir is None:
        raise UserError("openWakeWord's feature models were not found; pass --feature-dir.")
    try:
        model = make_model([path], framework, feature_dir, vad_threshold=0.5 if vad else 0.0)
    except UserError:
        raise
    except Exception as e:  # onnxruntime/litert refuse a file that is not a model at all
        raise UserError(f"{path} is not a loadable {framework} model ({type(e).__name__}).")
    name = next(iter(model.models))
    shape_in, shape_out = _input_shape(model, name, framework)
    if len(shape_in) != 3 or shape_in[-1] != 96 or shape_out[-1] != 1:
        raise UserError(f"{path} is not a wake-word model: it takes {shape_in} and gives {shape_out}, "
                        "an openWakeWord head takes [1, N, 96] embeddings and gives one score.")
    return model, name


# --- scoring ---------------------------------------------------------------------------------------

def score_chunks(model: Any, name: str, chunks: Iterable[np.ndarray], warmup_s: float,
                 tick: Callable[[int], None] | None = None) -> ScoreTrack:
    """Stream int16 16 kHz audio, given in pieces of any length, through `model` from a fresh state.

    The pieces are one continuous stream (a recording split into chunks), cut into 80 ms frames across
    their boundaries; only the scores are kept, so hours of audio never sit in memory at once. Each
    frame goes through `model.predict`, the call the device makes; the raw score is read from
    openWakeWord's prediction buffer (before its VAD gate) and the VAD score is the one it gates with.
    """
    from edgekit.edge.oww import restart_stream

    vad = restart_stream(model)  # as the device does after every (re)start
    raw: list[float] = []
    gate: list[float] = []

    def feed(frame: np.ndarray) -> None:
        model.predict(frame)
        raw.append(model.prediction_buffer[name][-1])
        if vad is not None:
            gate.append(max(list(vad.prediction_buffer)[-7:-4], default=0.0))

    warm = int(round(warmup_s * RATE / FRAME))
    for _ in range(warm):
        feed(np.zeros(FRAME, np.int16))
    carry = np.zeros(0, np.int16)
    for chunk in chunks:
        x = np.concatenate([carry, np.asarray(chunk, dtype=np.int16)])
        whole = len(x) // FRAME * FRAME
        for start in range(0, whole, FRAME):
            feed(x[start:start + FRAME])
        if tick:
            tick(whole // FRAME)
        carry = x[whole:]
    if len(carry):
        feed(np.concatenate([carry, np.zeros(FRAME - len(carry), np.int16)]))
    vad_arr = np.asarray(gate[warm:], dtype=np.float64) if vad is not None else None
    return ScoreTrack(np.asarray(raw[warm:], dtype=np.float64), vad_arr)


def score_samples(model: Any, name: str, samples: np.ndarray, warmup_s: float,
                  tick: Callable[[int], None] | None = None) -> ScoreTrack:
    """`score_chunks` of one array."""
    return score_chunks(model, name, [samples], warmup_s, tick)


# --- choice ----------------------------------------------------------------------------------------

def _meets(row: SweepRow, hours: float, target: float) -> bool:
    return row.false_accepts / hours <= target + 1e-12


def choose(rows: list[SweepRow], n_positives: int, hours: float,
           cfg: WakewordCalibration) -> tuple[SweepRow | None, str]:
    """The chosen row (None if no setting meets the target) and the rule that chose it, in words."""
    target = cfg.target_fa_per_hour
    if n_positives:
        ok = [r for r in rows if _meets(r, hours, target)]
        if not ok:
            return None, "no setting meets the target"
        best = min(ok, key=lambda r: (-r.detected, r.false_accepts, r.setting.patience,
                                      abs(r.setting.refractory_s - cfg.default_refractory),
                                      r.setting.refractory_s, r.setting.vad_threshold))
        b = best.setting
        tied = sorted((r for r in ok if r.detected == best.detected and r.false_accepts == best.false_accepts
                       and (r.setting.patience, r.setting.refractory_s, r.setting.vad_threshold)
                       == (b.patience, b.refractory_s, b.vad_threshold)), key=lambda r: r.setting.threshold)
        return tied[(len(tied) - 1) // 2], (
            f"lowest false-reject rate among settings with FA/h <= {target:g}, then fewest false accepts, "
            f"lowest patience, refractory nearest {cfg.default_refractory:g} s, lowest VAD threshold, "
            "middle threshold of the ties")
    pat, vad = min(cfg.patiences), min(cfg.vad_thresholds, default=0.0)
    line = sorted((r for r in rows if r.setting.patience == pat and r.setting.vad_threshold == vad
                   and r.setting.refractory_s == cfg.default_refractory), key=lambda r: r.setting.threshold)
    lowest = None
    for r in reversed(line):
        if not _meets(r, hours, target):
            break
        lowest = r
    if lowest is None:
        return None, "no threshold meets the target"
    want = lowest.setting.threshold + cfg.margin
    above = [r for r in line if r.setting.threshold >= want - 1e-9]
    pick = above[0] if above else line[-1]
    return pick, (f"no positives: lowest threshold from which every higher one meets FA/h <= {target:g} "
                  f"({lowest.setting.threshold:g}) plus a safety margin of {cfg.margin:g}, patience {pat}, "
                  f"refractory {cfg.default_refractory:g} s")


def env_values(s: Setting) -> dict[str, str]:
    """The device .env lines for a setting."""
    return {ENV_KEYS["threshold"]: f"{s.threshold:g}", ENV_KEYS["patience"]: str(s.patience),
            ENV_KEYS["refractory_s"]: f"{s.refractory_s:g}", ENV_KEYS["vad_threshold"]: f"{s.vad_threshold:g}"}


# --- the whole run ---------------------------------------------------------------------------------

def _progress():
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from edgekit.console import err_console
    from edgekit.progress import Progress

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeRemainingColumn(), console=err_console, transient=True)


def score_recordings(cfg: WakewordCalibration, model: Any, name: str, ambient: list[Path],
                     positives: list[Path], samples: int) -> tuple[ScoreTrack, list[ScoreTrack]]:
    """The ambient files as one continuous stream (read one at a time), each positive clip on its own.

    `samples` is the audio in all the files together (from their headers), for the progress bar.
    """
    tail = np.zeros(int(cfg.pad_s * RATE), np.int16)
    total = (samples + len(tail) * len(positives)) // FRAME
    with _progress() as bar:
        task = bar.add_task("scoring audio", total=total)

        def tick(n: int) -> None:
            bar.advance(task, n)

        amb = score_chunks(model, name, (read_wav(f) for f in ambient), cfg.warmup_s, tick)
        pos = [score_chunks(model, name, [read_wav(p), tail], cfg.warmup_s, tick) for p in positives]
    return amb, pos


def _row_json(r: SweepRow, hours: float, n_pos: int) -> dict[str, Any]:
    s = r.setting
    return {"threshold": s.threshold, "patience": s.patience, "refractory_s": s.refractory_s,
            "vad_threshold": s.vad_threshold, "false_accepts": r.false_accepts,
            "fa_per_hour": r.false_accepts / hours,
            "frr": (1 - r.detected / n_pos) if n_pos else None}


def run_calibration(cfg: WakewordCalibration) -> dict[str, Any]:
    """Score, sweep, choose; write calibration.json, calibration.env, scores.npz and det.png to `cfg.out`."""
    from edgekit import __version__, atomic

    check_output(cfg.out, "--out")  # before the sweep: a bad --out must not cost a whole calibration
    amb_files = list_wavs(cfg.ambient, "ambient")
    pos_files = list_wavs(cfg.positives, "positive") if cfg.positives else []
    amb_samples = [wav_samples(f) for f in amb_files]
    seconds = [n / RATE for n in amb_samples]
    pos_samples = sum(map(wav_samples, pos_files))  # every header is checked before any audio is scored
    hours = sum(seconds) / 3600
    if hours <= 0:
        raise UserError(f"The ambient recordings ({len(amb_files)} files) hold no audio.")
    path, framework, source = resolve_model(cfg.model, cfg.framework)
    model, name = open_model(path, framework, cfg.feature_dir, vad=bool(cfg.vad_thresholds))
    amb, pos = score_recordings(cfg, model, name, amb_files, pos_files, sum(amb_samples) + pos_samples)

    refractories = sorted(set(cfg.refractories) | ({cfg.default_refractory} if not pos else set()))
    rows = sweep(amb, pos, sorted(cfg.thresholds), sorted(cfg.patiences), refractories,
                 sorted(cfg.vad_thresholds) or [0.0])
    chosen, rule = choose(rows, len(pos), hours, cfg)
    warnings = _warnings(cfg, hours, chosen, len(pos))
    result: dict[str, Any] = {
        "kind": "wakeword", "edgekit_version": __version__,
        "model": {"source": source, "file": str(path), "sha256": atomic.sha256_file(path), "framework": framework,
                  "name": name},
        "data": {"ambient": [{"path": str(f), "seconds": t} for f, t in zip(amb_files, seconds, strict=True)],
                 "ambient_hours": hours, "positives": [str(f) for f in pos_files],
                 "warmup_s": cfg.warmup_s, "pad_s": cfg.pad_s, "ambient_is_one_stream": True},
        "config": cfg.model_dump(mode="json"),
        "target_fa_per_hour": cfg.target_fa_per_hour, "confidence": cfg.confidence,
        "hours_needed": hours_needed(cfg.target_fa_per_hour, cfg.confidence),
        "rule": rule, "warnings": warnings, "choice": None, "env": None,
        "sweep": [_row_json(r, hours, len(pos)) for r in rows],
    }
    if chosen is not None:
        lo, hi = poisson_rate_ci(chosen.false_accepts, hours, cfg.confidence)
        result["choice"] = _row_json(chosen, hours, len(pos)) | {"fa_per_hour_ci": [lo, hi],
                                                                "positives": len(pos), "detected": chosen.detected}
        result["env"] = env_values(chosen.setting)
        atomic.write_text(cfg.out / "calibration.env", "".join(f"{k}={v}\n" for k, v in result["env"].items()))
    atomic.write_json(cfg.out / "calibration.json", result)
    save_scores(cfg.out / "scores.npz", amb, pos)
    from edgekit.edge.calibration_plots import det_plot

    det_plot(result, cfg.out / "det.png")
    for w in warnings:
        log.warning(w)
    if chosen is None:
        best = min(rows, key=lambda r: r.false_accepts)
        raise UserError(f"No swept setting reaches {cfg.target_fa_per_hour:g} FA/h on this recording (fewest: "
                        f"{best.false_accepts / hours:.2f}/h at threshold {best.setting.threshold:g}, patience "
                        f"{best.setting.patience}); see {cfg.out / 'calibration.json'}.")
    return result


def _warnings(cfg: WakewordCalibration, hours: float, chosen: SweepRow | None, n_pos: int) -> list[str]:
    out = []
    need = hours_needed(cfg.target_fa_per_hour, cfg.confidence)
    if hours < need:
        best_hi = poisson_rate_ci(0, hours, cfg.confidence)[1]
        out.append(f"The ambient recording is {hours * 60:.1f} min: even with no false accepts it only shows "
                   f"FA/h <= {best_hi:.1f} at {cfg.confidence:.0%}; {cfg.target_fa_per_hour:g} FA/h needs "
                   f"at least {need:.1f} h (`edgekit record ambient --minutes {int(np.ceil(need * 60))}`).")
    if 0 < n_pos < 20:
        out.append(f"Only {n_pos} positive clip(s): the false-reject rate moves in steps of {100 / n_pos:.0f}%; "
                   "record 20 or more (`edgekit record positives`).")
    if chosen is not None and chosen.setting.threshold >= max(cfg.thresholds):
        out.append("The chosen threshold is the highest swept: the model fires often on this site; "
                   "consider retraining with this site's audio as negatives.")
    return out


def print_summary(result: dict[str, Any]) -> None:
    """The choice as a short Rich table."""
    from rich.table import Table

    from edgekit.console import console

    c = result["choice"]
    t = Table(title=f"wake-word calibration: {result['model']['source']}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    lo, hi = c["fa_per_hour_ci"]
    t.add_row("ambient", f"{result['data']['ambient_hours'] * 60:.1f} min, {len(result['data']['ambient'])} file(s)")
    t.add_row("false accepts", f"{c['false_accepts']} = {c['fa_per_hour']:.2f}/h "
              f"({result['confidence']:.0%} CI {lo:.2f}-{hi:.2f}/h; target {result['target_fa_per_hour']:g}/h)")
    if c["positives"]:
        t.add_row("false rejects", f"{c['positives'] - c['detected']}/{c['positives']} = {c['frr']:.1%}")
    for k, v in result["env"].items():
        t.add_row(k, v)
    t.add_row("rule", result["rule"])
    console.print(t)
