"""Text-to-speech engines, one table: espeak-ng, festival, flite, piper.

Each engine is a small spec: the binary it needs, the languages it speaks, how to list its voices and
how to render one utterance to a WAV file. Clips are cached by a hash of (engine, voice, speed, pitch,
text), so a second run, or a run with more clips, only synthesizes what is new.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.errors import UserError

log = logging.getLogger(__name__)

SR = 16000


@dataclass(frozen=True)
class Utterance:
    """One clip to synthesize. `speed` is a rate factor (1 = normal), `pitch` 0..1 (0.5 = normal)."""

    engine: str
    voice: str
    text: str
    speed: float = 1.0
    pitch: float = 0.5

    @property
    def key(self) -> str:
        blob = (f"{self.engine}{RENDER_REVISION.get(self.engine, '')}\x00{self.voice}\x00{self.speed:.3f}"
                f"\x00{self.pitch:.3f}\x00{self.text}")
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


RENDER_REVISION = {"festival": "+speed+pitch"}
"""Bumped when an engine's rendering changes, so cached clips of the old rendering are not reused."""


@dataclass(frozen=True)
class Engine:
    """One TTS backend."""

    binary: str
    langs: tuple[str, ...]
    voices: Callable[[str, Sequence[Path]], list[str]]
    """(lang, piper voice files) → voice names."""
    render: Callable[[Utterance, Path], None]
    """Write the utterance as a WAV file to the path."""
    help: str
    extra: str = ""
    """What to install when the binary is missing."""

    def installed(self) -> bool:
        return shutil.which(self.binary) is not None


def _run(cmd: list[str], stdin: str | None = None) -> None:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip()[:300]}")


# --- espeak-ng: accents × voice variants -------------------------------------------------------------
_ESPEAK_SKIP_VARIANTS = {"fast_test"}


def _espeak_voices(lang: str, _piper: Sequence[Path]) -> list[str]:
    out = subprocess.run(["espeak-ng", f"--voices={lang}"], capture_output=True, text=True).stdout
    accents = sorted({ln.split()[1] for ln in out.splitlines()[1:] if len(ln.split()) > 4
                      and not ln.split()[4].startswith("mb/") and ln.split()[1].startswith(lang)})
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    variants = sorted({tok[3:] for ln in out.splitlines()[1:] for tok in ln.split() if tok.startswith("!v/")})
    variants = [v for v in variants if v not in _ESPEAK_SKIP_VARIANTS]
    return [f"{a}+{v}" for a in accents for v in variants]


def _espeak_render(u: Utterance, out: Path) -> None:
    rate = int(175 * u.speed)
    pitch = int(np.clip(u.pitch * 100, 0, 99))
    _run(["espeak-ng", "-v", u.voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), u.text])


# --- festival: installed voices, duration stretch ----------------------------------------------------
def _festival_voices(lang: str, _piper: Sequence[Path]) -> list[str]:
    root = Path("/usr/share/festival/voices")
    return sorted(p.name for p in root.glob("*/*") if p.is_dir()) if lang == "en" else []


def _festival_render(u: Utterance, out: Path) -> None:
    # One expression: text2wave's -eval reads only the first (the stretch was silently dropped). HTS voices
    # ignore Duration_Stretch and take hts_engine's speech-rate option instead; they keep their own pitch
    # (Debian's festival 2.5 accepts hts_engine's -fm half-tone option and changes nothing with it), so
    # for them pitch variety comes from augmentation alone. The diphone voices take a mean f0 target.
    if u.voice.endswith("_hts"):
        setup = f"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" {u.speed:.3f}))))"
    else:
        f0 = 105 * 2 ** ((u.pitch - 0.5) * 1.2)  # both voices' own 105 Hz at 0.5; the plan's 0.25-0.75 spans 85-129 Hz
        setup = (f"(Parameter.set 'Duration_Stretch {1.0 / u.speed:.3f}) (set! int_lr_params '((target_f0_mean "
                 f"{f0:.0f}) (target_f0_std {0.14 * f0:.0f}) (model_f0_mean 170) (model_f0_std 34)))")
    setup = f"(begin (voice_{u.voice}) {setup})"
    _run(["text2wave", "-eval", setup, "-o", str(out)], stdin=u.text)


# --- flite: compiled-in voices, duration stretch and f0 ---------------------------------------------
def _flite_voices(lang: str, _piper: Sequence[Path]) -> list[str]:
    if lang != "en":
        return []
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
    return sorted(v for v in out.split(":")[-1].split() if v != "awb_time")


def _flite_render(u: Utterance, out: Path) -> None:
    f0 = 70 + 150 * u.pitch
    _run(["flite", "-voice", u.voice, "--setf", f"duration_stretch={1.0 / u.speed:.3f}",
          "--setf", f"int_f0_target_mean={f0:.0f}", "-t", u.text, "-o", str(out)])


# --- piper: user-supplied neural voices --------------------------------------------------------------
def _piper_voices(lang: str, piper: Sequence[Path]) -> list[str]:
    return [str(Path(p).resolve()) for p in piper]


def _piper_render(u: Utterance, out: Path) -> None:
    _run(["piper", "--model", u.voice, "--length_scale", f"{1.0 / u.speed:.3f}", "--output_file", str(out)],
         stdin=u.text)


ENGINES: dict[str, Engine] = {
    "espeak-ng": Engine("espeak-ng", ("en", "es"), _espeak_voices, _espeak_render,
                        "formant synthesis, many accents × voice variants", "apt-get install espeak-ng"),
    "festival": Engine("text2wave", ("en",), _festival_voices, _festival_render,
                       "diphone and HTS voices", "apt-get install festival festvox-kallpc16k"),
    "flite": Engine("flite", ("en",), _flite_voices, _flite_render, "CMU flite voices", "apt-get install flite"),
    "piper": Engine("piper", ("en", "es"), _piper_voices, _piper_render,
                    "neural voices from --piper-voice model files", "pip install piper-tts"),
}


@dataclass
class VoiceSet:
    """Voices per engine, split into training and held-out validation voices."""

    train: dict[str, list[str]] = field(default_factory=dict)
    val: dict[str, list[str]] = field(default_factory=dict)

    def count(self, which: str) -> int:
        return sum(len(v) for v in getattr(self, which).values())


def select_engines(names: Sequence[str], lang: str, piper_voices: Sequence[Path]) -> list[str]:
    """The engines to use: the ones named, or every installed one that speaks `lang`.

    Raises:
        UserError: an unknown engine, a named one that is not installed, piper voices without piper, or
            no installed engine for `lang` (`voice_set` checks the voices).
    """
    for n in names:
        if n not in ENGINES:
            from edgekit.trainer.wakeword.config import did_you_mean

            raise UserError(f"Unknown TTS engine {n!r}; known: {', '.join(ENGINES)}.{did_you_mean(n, list(ENGINES))}")
        if not ENGINES[n].installed():
            raise UserError(f"TTS engine {n} is not installed: {ENGINES[n].extra}.")
    if names:
        return list(names)
    chosen = [n for n, e in ENGINES.items() if lang in e.langs and e.installed() and (n != "piper" or piper_voices)]
    if piper_voices and "piper" not in chosen:
        raise UserError(f"Piper voices were given but piper is not installed: {ENGINES['piper'].extra}.")
    if not chosen:
        raise UserError(f"No installed TTS engine speaks {lang!r}; install espeak-ng.")
    return chosen


def voice_set(engines: Sequence[str], lang: str, piper_voices: Sequence[Path], val_fraction: float,
              seed: int) -> VoiceSet:
    """List voices and hold out a deterministic share of each engine's voices for validation."""
    rng = np.random.default_rng(seed)
    vs = VoiceSet()
    for name in engines:
        voices = ENGINES[name].voices(lang, piper_voices)
        if not voices:
            log.warning("TTS engine %s has no %s voices; skipping it.", name, lang)
            continue
        order = list(rng.permutation(len(voices)))
        n_val = int(round(len(voices) * val_fraction)) if len(voices) > 1 else 0
        n_val = max(n_val, 1) if len(voices) > 1 else 0
        vs.val[name] = [voices[i] for i in order[:n_val]]
        vs.train[name] = [voices[i] for i in order[n_val:]]
    if not vs.count("train"):
        raise UserError(f"The TTS engines {', '.join(engines)} have no voices for {lang!r}.")
    if not vs.count("val"):  # every engine has a single voice (one Piper model, say)
        log.warning("No voice is left to hold out for validation (each engine has one voice): validation "
                    "hears the training voices, so its numbers are optimistic. Add a voice or an engine.")
        vs.val = {name: list(voices) for name, voices in vs.train.items()}
    return vs


def plan(texts: Sequence[str], voices: dict[str, list[str]], n: int, rng: np.random.Generator,
         speed: tuple[float, float] = (0.8, 1.25)) -> list[Utterance]:
    """`n` utterances of `texts`, spread over engines, their voices, speeds and pitches.

    An engine's share grows with the log of its voice count: many espeak-ng variants, yet the few
    festival/flite voices (closer to natural speech) still make a good part of the set.
    """
    engines = [e for e in voices if voices[e]]
    if not texts or not engines or n <= 0:
        return []
    weights = np.array([1.0 + np.log(len(voices[e])) for e in engines])
    picks = rng.choice(len(engines), size=n, p=weights / weights.sum())
    out = []
    for i in range(n):
        engine = engines[int(picks[i])]
        voice = voices[engine][int(rng.integers(len(voices[engine])))]
        text = texts[int(rng.integers(len(texts)))]
        out.append(Utterance(engine, voice, text, round(float(rng.uniform(*speed)), 2),
                             round(float(rng.uniform(0.25, 0.75)), 2)))
    return out


def _load_wav(path: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SR:
        g = np.gcd(sr, SR)
        audio = resample_poly(audio, SR // g, sr // g).astype(np.float32)
    return audio


def _trim(audio: np.ndarray, level: float = 0.01) -> np.ndarray:
    """Cut leading/trailing silence so placement in the window is exact."""
    loud = np.flatnonzero(np.abs(audio) > level * max(float(np.abs(audio).max()), 1e-6))
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio


def synthesize_one(u: Utterance, cache: Path) -> Path:
    """Render `u` into the cache (16 kHz mono int16 WAV, silence trimmed), or reuse the cached clip."""
    import soundfile as sf

    dst = cache / u.key[:2] / f"{u.key}.wav"
    if dst.is_file():
        return dst
    with tempfile.TemporaryDirectory(prefix="edgekit-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        ENGINES[u.engine].render(u, raw)
        audio = _trim(_load_wav(raw))
    with atomic.atomic_path(dst) as tmp_dst:
        sf.write(str(tmp_dst), np.clip(audio, -1, 1), SR, subtype="PCM_16", format="WAV")
    return dst


def synthesize(utts: Sequence[Utterance], cache: Path, workers: int = 0,
               progress: Callable[[int], None] | None = None) -> tuple[list[Path], int]:
    """Synthesize every utterance (cached), in parallel; returns (paths, number newly rendered)."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = [u for u in utts if not (cache / u.key[:2] / f"{u.key}.wav").is_file()]
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:  # the engines are subprocesses: threads suffice
        for _ in pool.map(lambda u: synthesize_one(u, cache), todo):
            if progress:
                progress(1)
    return [cache / u.key[:2] / f"{u.key}.wav" for u in utts], len(todo)


def phonemes(text: str, lang: str) -> str:
    """espeak-ng's ASCII phonemes of `text` (the form `[[...]]` input reads back)."""
    voice = "en-us" if lang == "en" else lang
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, text], capture_output=True, text=True)
    return " ".join(out.stdout.split())
