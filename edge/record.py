"""Recording on site for calibration: ambient audio in chunks, prompted wake-word utterances.

Everything is 16 kHz mono 16-bit, the format the wake-word pipeline runs on. Ambient audio is written
in chunks of `chunk_s` seconds, each chunk written to a temporary name and renamed into place, so a
power cut loses at most the chunk being recorded and never leaves a truncated WAV behind.

The microphone comes from a factory (`open_mic`), so tests inject a fake microphone there and the
code above it (chunking, atomic writes, trimming) is the real thing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit import atomic
from edgekit.edge.audio import FRAME
from edgekit.edge.audio import SAMPLE_RATE as RATE
from edgekit.errors import UserError
from edgekit.paths import check_output

log = logging.getLogger(__name__)

MicFactory = Callable[[], Iterable[np.ndarray]]
"""Returns an iterable of int16 frames of `FRAME` samples at `RATE`."""


def open_mic(device: str | None = None) -> Iterator[np.ndarray]:
    """Frames from the microphone: the `mic` row of the device runtime's audio-source table.

    Args:
        device: input device index or part of its name; None = the system default input.
    """
    from types import SimpleNamespace

    from edgekit.edge.audio import AUDIO_SOURCES

    return AUDIO_SOURCES["mic"].open(SimpleNamespace(audio_device=device))


def mic_factory(device: str | None = None) -> MicFactory:
    """A `MicFactory` for the real microphone `device`."""
    return lambda: open_mic(device)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write 16-bit mono PCM atomically."""
    with atomic.atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype=np.int16).tobytes())


def wav_samples(path: Path) -> int:
    """Samples in a 16 kHz mono 16-bit WAV, from its header; anything else is a `UserError` naming the problem.

    Calibration must hear what the device microphone hears, so recordings at other rates are refused
    rather than resampled (resampling changes the band the model sees).
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise UserError(f"{path} is not a readable WAV file ({e}).")
    if info.format not in ("WAV", "WAVEX") or info.subtype != "PCM_16":  # WAVEX: the extensible header
        raise UserError(f"{path} is {info.format} {info.subtype}; calibration needs 16-bit PCM WAV files "
                        f"(`edgekit record` writes them; or: sox {path.name} -b 16 out.wav).")
    if info.samplerate != RATE:
        raise UserError(f"{path} is sampled at {info.samplerate} Hz; calibration needs 16000 Hz recordings like the "
                        f"device microphone's (`edgekit record` writes them; or: sox {path.name} -r 16000 out.wav).")
    if info.channels != 1:
        raise UserError(f"{path} has {info.channels} channels; calibration needs mono.")
    return info.frames  # what the file holds: a recording cut short (a killed recorder) counts only its audio


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV as int16 samples (checked as `wav_samples` checks it)."""
    import soundfile as sf

    n = wav_samples(path)
    data, _ = sf.read(str(path), frames=n, dtype="int16", always_2d=False)
    return np.asarray(data, dtype=np.int16)


def list_wavs(sources: Iterable[str | Path], what: str) -> list[Path]:
    """WAV files from files and folders (searched recursively, sorted: chunks stay in recording order)."""
    files: list[Path] = []
    sources = list(sources)
    for s in map(Path, sources):
        if s.is_dir():
            files += sorted(p for p in s.rglob("*") if p.suffix.lower() == ".wav" and not p.name.startswith("."))
        elif s.is_file():
            files.append(s)
        else:
            raise UserError(f"The {what} path {s} does not exist.")
    if not files:
        where = ", ".join(map(str, sources)) or "(nothing given)"
        raise UserError(f"No {what} audio: no WAV files in {where}.")
    return files


class AmbientConfig(BaseModel):
    """`edgekit record ambient`."""

    model_config = ConfigDict(extra="forbid")
    out: Path
    """Folder the chunks go to (created)."""
    minutes: float = Field(30.0, gt=0)
    """How long to record in total."""
    chunk_s: float = Field(60.0, gt=0)
    """Seconds per WAV chunk: the most a power cut can lose."""
    max_retries: int = Field(5, ge=0)
    """Times the microphone is reopened after an error before giving up."""


def _next_index(out: Path, prefix: str) -> int:
    numbers = [int(m.group(1)) for p in out.glob(f"{prefix}-*.wav") if (m := re.search(r"-(\d+)\.wav$", p.name))]
    return max(numbers, default=0) + 1


class _Chunks:
    """Collects frames and writes a numbered WAV chunk (atomically) every `per_chunk` frames."""

    def __init__(self, out: Path, per_chunk: int):
        self.out, self.per_chunk = out, per_chunk
        self.index = _next_index(out, "ambient")
        self.buf: list[np.ndarray] = []
        self.written: list[Path] = []

    def add(self, frame: np.ndarray) -> None:
        self.buf.append(np.asarray(frame, dtype=np.int16))
        if len(self.buf) >= self.per_chunk:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            path = self.out / f"ambient-{self.index:05d}.wav"
            write_wav(path, np.concatenate(self.buf))
            self.written.append(path)
            self.buf.clear()
            self.index += 1


def _take(mic: MicFactory, n: int, each: Callable[[np.ndarray], None]) -> None:
    """Feed up to `n` frames from a freshly opened microphone to `each` (fewer when its stream ends)."""
    frames = iter(mic())
    got = 0
    try:
        for frame in frames:
            each(frame)
            got += 1
            if got >= n:
                break
    finally:
        if hasattr(frames, "close"):
            frames.close()


def record_ambient(cfg: AmbientConfig, mic: MicFactory = open_mic,
                   progress: Callable[[float], None] | None = None) -> list[Path]:
    """Record `cfg.minutes` of ambient audio into `cfg.out` as numbered chunks; return the chunk paths.

    Numbering continues after chunks already there, so re-running after a power cut adds to the
    recording. A microphone error (or its stream ending) is logged and the microphone reopened, up to
    `max_retries` times; Ctrl-C keeps what was heard so far.
    """
    check_output(cfg.out, "--out").mkdir(parents=True, exist_ok=True)
    chunks = _Chunks(cfg.out, max(1, round(cfg.chunk_s * RATE / FRAME)))
    total = max(1, round(cfg.minutes * 60 * RATE / FRAME))
    done, retries = 0, 0

    def each(frame: np.ndarray) -> None:
        nonlocal done
        chunks.add(frame)
        done += 1
        if progress:
            progress(done / total)

    try:
        while done < total:
            try:
                _take(mic, total - done, each)
                if done < total:
                    raise OSError("the microphone stream ended")
            except OSError as e:
                retries += 1
                if retries > cfg.max_retries:
                    raise UserError(f"The microphone failed {retries} times; the last error: {e}.")
                log.warning("microphone error (%s); reopening in 1 s", e, exc_info=log.isEnabledFor(logging.DEBUG))
                time.sleep(1.0)  # Ctrl-C here too keeps what was heard (the finally below)
    except KeyboardInterrupt:
        log.info("stopped by the user after %.1f min", done * FRAME / RATE / 60)
    finally:
        chunks.flush()
    return chunks.written


class PositivesConfig(BaseModel):
    """`edgekit record positives`."""

    model_config = ConfigDict(extra="forbid")
    out: Path
    """Folder the trimmed utterances go to (created)."""
    prompt: str = "say the wake word"
    """What the speaker is asked to say."""
    count: int = Field(20, ge=1)
    """Utterances to record."""
    seconds: float = Field(2.5, gt=0.2)
    """Recording window per utterance."""
    pad_s: float = Field(0.25, ge=0)
    """Audio kept before and after the detected speech."""
    min_db: float = Field(12.0, gt=0)
    """Speech is where frame energy is this many dB above the window's noise floor."""
    attempts: int = Field(3, ge=1)
    """Tries per utterance when no speech is heard."""


def trim_speech(x: np.ndarray, min_db: float = 12.0, pad_s: float = 0.25, rate: int = RATE) -> np.ndarray | None:
    """The span of `x` whose 20 ms energy is `min_db` above the noise floor, padded; None if silent.

    The floor is the 10th percentile of frame energies, so steady background noise is not speech.
    """
    hop = rate // 50
    n = len(x) // hop
    if n < 3:
        return None
    frames = x[: n * hop].astype(np.float64).reshape(n, hop)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1.0)
    loud = np.flatnonzero(db >= np.percentile(db, 10) + min_db)
    if len(loud) == 0:
        return None
    pad = int(pad_s * rate)
    start, end = max(0, loud[0] * hop - pad), min(len(x), (loud[-1] + 1) * hop + pad)
    return x[start:end]


def record_positives(cfg: PositivesConfig, mic: MicFactory = open_mic,
                     say: Callable[[str], None] = print) -> list[Path]:
    """Prompt `cfg.count` times, record a window each time, keep the trimmed speech; return the files."""
    check_output(cfg.out, "--out").mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    n_frames = max(1, round(cfg.seconds * RATE / FRAME))
    written: list[Path] = []
    for i in range(1, cfg.count + 1):
        for attempt in range(1, cfg.attempts + 1):
            say(f"[{i}/{cfg.count}] {cfg.prompt}" + (f" (again, try {attempt})" if attempt > 1 else ""))
            frames: list[np.ndarray] = []
            _take(mic, n_frames, lambda f: frames.append(np.asarray(f, dtype=np.int16)))  # noqa: B023
            speech = trim_speech(np.concatenate(frames), cfg.min_db, cfg.pad_s) if frames else None
            if speech is not None:
                path = cfg.out / f"positive-{stamp}-{i:03d}.wav"
                write_wav(path, speech)
                written.append(path)
                break
            log.warning("no speech heard in %.1f s", cfg.seconds)
        else:
            log.warning("skipped utterance %d: nothing heard in %d tries", i, cfg.attempts)
    return written


def record_ambient_cli(cfg: AmbientConfig, mic: MicFactory = open_mic) -> list[Path]:
    """`record_ambient` with a progress bar and a closing line."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from edgekit.console import console, err_console
    from edgekit.progress import Progress

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("recording", total=1.0)
        files = record_ambient(cfg, mic, progress=lambda f: bar.update(task, completed=f))
    seconds = sum(map(wav_samples, files)) / RATE
    console.print(f"{len(files)} chunk(s), {seconds / 60:.1f} min in {cfg.out}")
    return files
