"""The wake-word training configuration: one typed object, built once from YAML + presets + CLI flags.

The YAML mirrors the seed project's `training_config.yaml` (`model.name`, `model.sample_rate`,
`model.frame_length`, `training.batch_size`, `training.learning_rate`, `training.epochs`,
`training.early_stopping_patience`, `data.target_fpr`, `data.target_fnr`); unknown keys are errors.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit.errors import UserError
from edgekit.paths import require

LANGS: dict[str, str] = {"en": "English", "es": "Spanish"}
"""Languages the TTS engines and the built-in negative corpus cover."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    name: str | None = None
    """Bundle and label name; defaults to the first phrase with spaces as underscores."""
    sample_rate: Literal[16000] = 16000
    """openWakeWord's front end takes 16 kHz audio; nothing else is accepted."""
    frame_length: Literal[1280] = 1280
    """Samples per 80 ms frame, as openWakeWord streams audio."""
    arch: Literal["wakeword_cnn", "wakeword_dnn"] = "wakeword_cnn"
    """Head architecture (rows of `edgekit.trainer.models.ARCHS`)."""
    width: int = Field(64, ge=8, le=512)
    """Channels (CNN) or hidden units (DNN) of the head."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout before the last layer."""


class TrainingSection(_Strict):
    batch_size: int = Field(256, ge=8)
    """Windows per training step."""
    learning_rate: float = Field(1e-3, gt=0)
    """Peak learning rate of the OneCycle schedule."""
    epochs: int = Field(40, ge=1)
    """Maximum number of epochs."""
    early_stopping_patience: int = Field(10, ge=1)
    """Epochs without a better checkpoint before stopping."""
    weight_decay: float = Field(1e-2, ge=0)
    """AdamW weight decay."""
    negative_weight: float = Field(4.0, gt=0)
    """Loss weight of negative windows relative to positives (false accepts cost more)."""
    average_best: int = Field(3, ge=1)
    """Average the weights of this many best epochs (by validation score) into the final head: on real
    recordings single epochs swing far more than the averaged weights do."""
    warmup_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of the OneCycle schedule spent warming up."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the head trains."""


class DataSection(_Strict):
    phrases: list[str] = Field(default_factory=list)
    """The wake phrase and its variants ("hey computer", "computer")."""
    lang: str = "en"
    """Language of the phrase: picks TTS voices and the negative-sentence corpus."""
    n_positive: int = Field(2000, ge=10)
    """Synthetic positive clips for training (held-out voices add `val_fraction` on top)."""
    n_adversarial: int = Field(800, ge=0)
    """Near-miss negative clips built from parts and phoneme edits of the phrase."""
    n_words: int = Field(3000, ge=0)
    """Isolated everyday words (one or two), placed like positives: without them the head learns that
    any lone word ending in the last frames is the wake word."""
    negative_phrases: list[str] = Field(default_factory=list)
    """Extra phrases that must not fire (added to the adversarial set)."""
    speech_minutes: float = Field(20.0, ge=0)
    """Minutes of ordinary TTS sentences as general negatives."""
    noise_minutes: float = Field(4.0, ge=0)
    """Minutes of synthetic white/pink/brown noise as negatives."""
    sound_minutes: float = Field(6.0, ge=0)
    """Minutes of synthetic everyday sounds (clatter, water, animal-like tones, hum, music) as negatives."""
    sound_background: float = Field(0.5, ge=0, le=1)
    """Share of clips mixed over synthetic everyday sounds instead of noise or `background` audio."""
    negatives: list[Path] = Field(default_factory=list)
    """Folders of the user's own negative audio (room recordings, Common Voice clips...)."""
    background: list[Path] = Field(default_factory=list)
    """Folders of noise to mix under positives and negatives; synthetic noise is always used too."""
    engines: list[str] = Field(default_factory=list)
    """TTS engines to use; empty = every installed engine that speaks `lang`."""
    piper_voices: list[Path] = Field(default_factory=list)
    """Piper voice model files (.onnx); piper is used only when some are given."""
    val_fraction: float = Field(0.2, gt=0, lt=0.9)
    """Share of voices held out for validation (FRR is measured on voices never trained on)."""
    speed: tuple[float, float] = (0.6, 1.25)
    """Range of speaking-rate factors for the phrase, its near-misses and the lone words (sentences use
    0.8-1.25): real speakers often say a wake word slowly, syllable by syllable."""
    snr_db: tuple[float, float] = (0.0, 25.0)
    """Range of signal-to-noise ratios when mixing speech into background."""
    reverb_probability: float = Field(0.5, ge=0, le=1)
    """Chance that a clip is convolved with a simulated room impulse response."""
    target_fpr: float = Field(0.5, gt=0)
    """Target false accepts per hour (the seed's name for it)."""
    target_fnr: float = Field(0.05, ge=0, le=1)
    """Target false-reject rate; reported against, the threshold is chosen by `target_fpr`."""

    @field_validator("speed", "snr_db")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"the range {v[0]}..{v[1]} runs backwards")
        return v

    @field_validator("speed")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError("speaking rates must be above 0")
        return v

    @field_validator("phrases")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        return [" ".join(p.split()) for p in v]


class DetectorSection(_Strict):
    patience: int = Field(1, ge=1)
    """Consecutive hot frames before a detection (written to the bundle)."""
    refractory_s: float = Field(2.0, ge=0)
    """Seconds after a detection during which nothing fires."""


class WakewordConfig(_Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    data: DataSection = Field(default_factory=DataSection)
    detector: DetectorSection = Field(default_factory=DetectorSection)
    seed: int = 0
    """Seeds voice choice, augmentation and training: same seed, same data."""
    workers: int = Field(0, ge=0)
    """Processes for synthesis and features; 0 = every core."""
    cache_dir: Path = Path(".cache/edgekit/wakeword")
    """Where clips and feature arrays are cached between runs."""
    run_dir: Path | None = None
    """Checkpoints and history; default runs/<name>/<hash of config and data> (a rerun resumes)."""

    @property
    def name(self) -> str:
        return self.model.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", self.data.phrases[0].lower()).strip("_")

    def digest(self, *parts: Any) -> str:
        """A short stable hash of `parts` (for cache keys)."""
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {
        "data": {"n_positive": 500, "n_adversarial": 250, "n_words": 250, "speech_minutes": 5.0,
                 "noise_minutes": 1.0, "sound_minutes": 1.5},
        "training": {"epochs": 20, "early_stopping_patience": 6},
    },
}
"""Named starting points; `quick` is the demo's (≤5 minutes on two cores)."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def did_you_mean(word: str, options: list[str]) -> str:
    """` Did you mean 'x'?` for the closest option, or "" (the tail of a one-sentence error)."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def load_config(path: str | Path | None = None, preset: str = "default",
                overrides: dict[str, Any] | None = None) -> WakewordConfig:
    """Build the config: preset, then the YAML file, then CLI overrides (nested dicts, None = unset).

    Raises:
        UserError: unknown preset/key/language, unreadable YAML, or an empty phrase.
    """
    if preset not in PRESETS:
        hint = did_you_mean(preset, list(PRESETS))
        raise UserError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.{hint}")
    data: dict[str, Any] = PRESETS[preset]
    if path is not None:
        p = require(path, "Config file", "file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"Config file {p} is not valid YAML: {e}.")
        if not isinstance(loaded, dict):
            raise UserError(f"Config file {p} must hold a mapping at the top level.")
        data = _merge(data, loaded)
    data = _merge(data, _drop_none(overrides or {}))
    try:
        cfg = WakewordConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(f"Wake-word config: {where}: {first['msg']}.")
    return check(cfg)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None and v != [] and v != ():
            out[k] = v
    return out


def check(cfg: WakewordConfig) -> WakewordConfig:
    """Checks that need more than one field."""
    phrases = cfg.data.phrases
    if not phrases or any(not p.strip() for p in phrases):
        raise UserError("Give a non-empty wake phrase with --phrase (or data.phrases in the config).")
    if cfg.data.lang not in LANGS:
        hint = did_you_mean(cfg.data.lang, list(LANGS))
        raise UserError(f"Unknown language {cfg.data.lang!r}; supported: {', '.join(LANGS)}.{hint}")
    for folder in [*cfg.data.negatives, *cfg.data.background]:
        require(folder, "Audio folder")
    for voice in cfg.data.piper_voices:
        require(voice, "Piper voice model", "file")
    from edgekit.bundle import check_name

    check_name(cfg.name)
    return cfg
