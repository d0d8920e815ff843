"""Device settings, read once from `.env` and the environment.

The wake-word and model names are the ones users of the seed project already have in their `.env`
(`OPENWAKEWORD_MODEL_PATHS`, `OPENWAKEWORD_THRESHOLD`, `MODEL_PATH`, ...); `edgekit calibrate` writes
`OPENWAKEWORD_THRESHOLD`, `OPENWAKEWORD_PATIENCE`, `OPENWAKEWORD_REFRACTORY`, `OPENWAKEWORD_VAD_THRESHOLD`
and `EDGEKIT_CLASS_THRESHOLDS`. Everything new is `EDGEKIT_*`. An invalid value stops the service at
start with one sentence naming the setting.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from edgekit.errors import UserError
from edgekit.paths import require


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class EdgeSettings(BaseSettings):
    """Everything `edgekit serve` needs, with the environment variable names users set."""

    # Unknown keys are ignored because a release's .env also holds other tools' settings; misspelt
    # OPENWAKEWORD_*/EDGEKIT_* keys are caught by `load_settings` instead.
    model_config = SettingsConfigDict(extra="ignore", env_file=None, populate_by_name=True)

    # --- wake word (the seed's names) ---
    wakeword_models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias=_alias("OPENWAKEWORD_MODEL_PATHS"))
    """Comma list of wake-word model files (.onnx/.tflite) or wake-word bundle folders; empty = no wake word."""
    wakeword_threshold: float = Field(0.5, ge=0.0, le=1.0, validation_alias=_alias("OPENWAKEWORD_THRESHOLD"))
    """Score at or above which an 80 ms frame counts as hot."""
    wakeword_vad_threshold: float = Field(0.0, ge=0.0, le=1.0,
                                          validation_alias=_alias("OPENWAKEWORD_VAD_THRESHOLD"))
    """Silero VAD gate (0 = off): scores are zeroed while the VAD sees no speech."""
    wakeword_patience: int = Field(1, ge=1, le=50, validation_alias=_alias("OPENWAKEWORD_PATIENCE"))
    """Consecutive hot frames needed for a detection."""
    wakeword_refractory_s: float = Field(2.0, ge=0.0, le=60.0,
                                         validation_alias=_alias("OPENWAKEWORD_REFRACTORY"))
    """Seconds after a detection during which the same model cannot fire again."""
    wakeword_noise_suppression: bool = Field(False,
                                             validation_alias=_alias("OPENWAKEWORD_NOISE_SUPPRESSION"))
    """Speex noise suppression (needs speexdsp-ns, Linux only)."""
    wakeword_framework: Literal["onnx", "tflite"] | None = Field(
        None, validation_alias=_alias("OPENWAKEWORD_INFERENCE_FRAMEWORK"))
    """Runtime for the wake-word models; default: the suffix of the first model file."""
    feature_dir: Path | None = Field(None, validation_alias=_alias("EDGEKIT_FEATURE_DIR"))
    """Folder with openWakeWord's melspectrogram and embedding models; default: the known locations."""

    # --- audio ---
    audio_source: str = Field("mic", validation_alias=_alias("EDGEKIT_AUDIO_SOURCE"))
    """Where audio comes from: mic, wav or stdin."""
    audio_device: str | None = Field(None, validation_alias=_alias("EDGEKIT_AUDIO_DEVICE"))
    """Microphone: input device index or part of its name; default: the system default input."""
    audio_path: Annotated[list[Path], NoDecode] = Field(default_factory=list,
                                                        validation_alias=_alias("EDGEKIT_AUDIO_PATH"))
    """wav source: comma list of WAV files or folders of WAV files, played in order."""
    audio_realtime: bool = Field(False, validation_alias=_alias("EDGEKIT_AUDIO_REALTIME"))
    """wav source: pace the frames at real time instead of as fast as possible."""

    # --- camera classification (the seed's names for the model) ---
    model_path: Path | None = Field(None, validation_alias=_alias("MODEL_PATH"))
    """Image classifier: a bundle folder (e.g. /opt/edgekit/current) or a model file inside one."""
    model_framework: Literal["onnx", "tflite"] = Field("onnx", validation_alias=_alias("MODEL_FRAMEWORK"))
    """Runtime for the classifier when MODEL_PATH is a bundle folder."""
    model_quantized: bool = Field(True, validation_alias=_alias("EDGEKIT_MODEL_INT8"))
    """Prefer the bundle's accepted int8 file over fp32 when it has one."""
    camera_source: str | None = Field(None, validation_alias=_alias("EDGEKIT_CAMERA_SOURCE"))
    """Where frames come from: picamera2, opencv or folder; empty = no camera loop (API only)."""
    camera: str | None = Field(None, validation_alias=_alias("EDGEKIT_CAMERA"))
    """opencv: device index or video file; folder: the image folder; picamera2: camera number."""
    camera_fps: float = Field(1.0, ge=0.0, le=60.0, validation_alias=_alias("EDGEKIT_CAMERA_FPS"))
    """Classifications per second in `interval` mode; 0 = as fast as the classifier goes."""
    classify_trigger: Literal["interval", "wakeword"] = Field(
        "interval", validation_alias=_alias("EDGEKIT_CLASSIFY_TRIGGER"))
    """When the camera loop classifies: at camera_fps, or once after each wake-word detection."""
    class_thresholds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, validation_alias=_alias("EDGEKIT_CLASS_THRESHOLDS"))
    """Per-class thresholds `label=0.6,other=0.4` (`default=` for the rest); override the bundle's."""
    save_frames: bool = Field(False, validation_alias=_alias("EDGEKIT_SAVE_FRAMES"))
    """Save each classified camera frame as a JPEG beside its event."""
    threads: int = Field(1, ge=1, le=16, validation_alias=_alias("EDGEKIT_THREADS"))
    """Inference threads of the image classifier (openWakeWord runs each of its models on one thread, 2.9 ms
    per 80 ms frame measured here, so the wake word needs no more)."""

    # --- API ---
    api_host: str = Field("127.0.0.1", validation_alias=_alias("EDGEKIT_API_HOST"))
    """Address the HTTP API binds; 0.0.0.0 exposes it to the network."""
    api_port: int = Field(8000, ge=0, le=65535, validation_alias=_alias("EDGEKIT_API_PORT"))
    """Port of the HTTP API."""
    api_token: str | None = Field(None, validation_alias=_alias("EDGEKIT_API_TOKEN"))
    """Bearer token required on every endpoint except /health; empty = no authentication."""
    max_upload_bytes: int = Field(8 * 1024 * 1024, ge=1024, validation_alias=_alias("EDGEKIT_MAX_UPLOAD_BYTES"))
    """Largest image /predict accepts (413 above)."""

    # --- events and retention ---
    data_dir: Path = Field(Path("data"), validation_alias=_alias("EDGEKIT_DATA_DIR"))
    """Folder for events.jsonl, events.sqlite and saved frames."""
    retention_count: int = Field(100_000, ge=1, validation_alias=_alias("EDGEKIT_RETENTION_COUNT"))
    """Keep at most this many events (oldest go first, with their frames)."""
    retention_days: float = Field(30.0, gt=0, validation_alias=_alias("EDGEKIT_RETENTION_DAYS"))
    """Delete events older than this."""
    retention_min_free_mb: float = Field(200.0, ge=0, validation_alias=_alias("EDGEKIT_RETENTION_MIN_FREE_MB"))
    """Delete the oldest saved frames while the data disk has less free space than this."""

    @field_validator("wakeword_models", "audio_path", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [Path(p.strip()).expanduser() for p in v.split(",") if p.strip()]
        return v

    @field_validator("class_thresholds", mode="before")
    @classmethod
    def _pairs(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in v.split(","))):
            label, sep, value = item.partition("=")
            if not sep or not label.strip():
                raise ValueError(f"expected label=value pairs, got {item!r}")
            out[label.strip()] = value.strip()
        return out

    @field_validator("class_thresholds")
    @classmethod
    def _in_unit(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"thresholds must be in [0, 1] ({', '.join(bad)})")
        return v

    @field_validator("audio_device", "camera_source", "camera", "api_token", "model_path", "feature_dir",
                     "wakeword_framework", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _sources_known(self) -> EdgeSettings:
        from edgekit.edge.audio import AUDIO_SOURCES
        from edgekit.edge.camera import CAMERA_SOURCES
        from edgekit.edge.sources import pick

        pick("EDGEKIT_AUDIO_SOURCE", self.audio_source, AUDIO_SOURCES)
        if self.camera_source is not None:
            pick("EDGEKIT_CAMERA_SOURCE", self.camera_source, CAMERA_SOURCES)
        return self


ENV_NAMES = {name: f.validation_alias.choices[0] for name, f in EdgeSettings.model_fields.items()}
"""Field name → the environment variable that sets it."""


def load_settings(env_file: str | Path | None = None, **overrides: object) -> EdgeSettings:
    """Read settings from `env_file` (if given), the environment and `overrides` (by field name).

    Raises:
        UserError: naming the first invalid setting, a malformed line of the env file, or a missing env file.
    """
    if env_file is not None:
        _check_env_file(Path(env_file))
    try:
        return EdgeSettings(_env_file=env_file, **{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise UserError(_sentence(e, ""))


def check_env_values(values: Mapping[str, str], origin: str = "") -> None:
    """Validate `.env` values the way `serve` will read them on the device, before they leave this machine.

    Only the given keys are checked: the rest of the device's `.env` is not known here, and this machine's
    environment says nothing about the device's. Other tools' keys pass.

    Args:
        values: environment name → value as text, e.g. `{"OPENWAKEWORD_THRESHOLD": "0.6"}`.
        origin: where the values come from, for the message (e.g. "--env").

    Raises:
        UserError: naming the first invalid or misspelt setting.
    """
    where = f" in {origin}" if origin else ""
    _check_names(values, where)
    field_of = {env: name for name, env in ENV_NAMES.items()}
    given = {field_of[k.upper()]: v for k, v in values.items() if k.upper() in field_of}  # case as pydantic-settings
    try:
        _GivenOnly(**given)
    except ValidationError as e:
        raise UserError(_sentence(e, where))


class _GivenOnly(EdgeSettings):
    """`EdgeSettings` from its arguments and defaults alone, without this machine's environment."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _sentence(e: ValidationError, where: str) -> str:
    """The first error of `e` as one sentence naming the environment variable."""
    err = e.errors()[0]
    loc = str(err["loc"][0]) if err["loc"] else ""
    name = ENV_NAMES.get(loc, loc.upper())
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    got = f" (got {value!r})" if isinstance(value, str | int | float) and repr(value) not in msg else ""
    return f"Setting {name}{where} is invalid: {msg}{got}."


_OURS = ("OPENWAKEWORD_", "EDGEKIT_", "MODEL_")


def _check_env_file(path: Path) -> None:
    """A missing file, a line that is not `KEY=VALUE` or a misspelt setting name in it is a user error.

    python-dotenv only warns about a line it cannot parse and goes on without it, so a typo there would
    leave a setting at its default while the service reports healthy.
    """
    require(path, "Settings file", "file")
    # python-dotenv's own parser, so quoted values spanning lines are read exactly as `serve` reads them
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"Settings file {path} is not UTF-8 text.")
    keys = []
    for b in parse_stream(io.StringIO(text)):
        if b.error or (b.key is not None and b.value is None):
            body = b.original.string
            stripped = body.lstrip()
            line = b.original.line + body[:len(body) - len(stripped)].count("\n")  # blank lines lead a binding
            start = (stripped.split(None, 1) or [""])[0][:40]  # not the whole line: it may hold a token
            raise UserError(f"Line {line} of {path} is not KEY=VALUE (it starts with {start!r}); "
                            f"fix it or comment it out with #.")
        if b.key is not None:
            keys.append(b.key)
    _check_names(keys, f" in {path}")


def _check_names(keys: Iterable[str], where: str) -> None:
    """Other tools keep their own keys in the same file, so only near-misses of our names are errors."""
    known = set(ENV_NAMES.values())
    for key in keys:
        if key.upper().startswith(_OURS) and key.upper() not in known:
            close = difflib.get_close_matches(key.upper(), sorted(known), n=1, cutoff=0.85)
            if close:
                raise UserError(f"Setting {key}{where} is not a known setting (did you mean {close[0]}?).")
