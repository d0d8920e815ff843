"""Negatives: near-misses of the phrase, everyday speech, the user's own audio, synthetic noise.

Near-misses come from two places: parts of the phrase's words ("compu", "puter"), and edits of its
phonemes as espeak-ng prints them (`espeak-ng -x`): a consonant (and maybe a vowel) swapped for a
close one, the start or end dropped, a syllable added after it. espeak-ng reads such phoneme strings
back inside `[[...]]`, so the edits are spoken exactly as written.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from edgekit.errors import UserError
from edgekit.trainer.wakeword.tts import SR, phonemes

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}

# Close substitutes in espeak-ng's ASCII phoneme alphabet (place/manner neighbours).
_SWAPS: dict[str, str] = {
    "p": "btk", "b": "pdm", "t": "dkp", "d": "tbg", "k": "gtp", "g": "kd", "m": "nb", "n": "ml",
    "f": "vs", "v": "fb", "s": "zS", "z": "s", "S": "sZ", "l": "rn", "r": "l", "w": "v", "j": "w",
    "a": "eo", "e": "ai", "i": "Ie", "o": "au", "u": "Uo", "@": "aV", "I": "ie", "E": "ae", "V": "@a",
}
_VOWELS = set("aeiouU@IEV03")
_EXTRA_SYLLABLES = ("b@", "t@", "m@", "s@", "@n", "In")


def text_parts(phrase: str) -> list[str]:
    """Parts of the phrase: each word alone (for multi-word phrases) and halves of long words."""
    words = phrase.split()
    parts = set(words) if len(words) > 1 else set()
    for w in words:
        if len(w) >= 5:
            cut = len(w) // 2
            parts |= {w[: cut + 1], w[cut - 1:], w[:-1], w[1:]}
    return sorted(parts - {phrase})


def phoneme_edits(phrase: str, lang: str, n: int, rng: np.random.Generator) -> list[str]:
    """Up to `n` distinct `[[...]]` phoneme strings close to, but not, the phrase."""
    base = phonemes(phrase, lang)
    if not base:
        return []
    # A flapped stop (t#) already sounds like its voiced twin, and a lone vowel change is within how
    # real speakers vary: single swaps touch consonants only, double swaps may touch a vowel too.
    letters = [i for i, c in enumerate(base) if c in _SWAPS and base[i + 1:i + 2] != "#"]
    consonants = [i for i in letters if base[i] not in _VOWELS]
    out: set[str] = set()
    for _ in range(n * 6):
        if len(out) >= n:
            break
        s = list(base)
        kind = rng.integers(4)
        if kind <= 1 and consonants:  # one consonant swap, or a consonant and another phoneme
            picks = [int(rng.choice(consonants))]
            others = [i for i in letters if i != picks[0]]
            if kind == 1 and others:
                picks.append(int(rng.choice(others)))
            for i in picks:
                s[i] = str(rng.choice(list(_SWAPS[base[i]])))
        elif kind == 2 and len(s) > 4:  # drop the start or the end
            k = int(rng.integers(2, max(3, len(s) // 3)))
            s = s[k:] if rng.random() < 0.5 else s[:-k]
        else:  # one more syllable at the end ("computer-s"); one in front would still end in the phrase
            s = s + list(str(rng.choice(_EXTRA_SYLLABLES)))
        cand = "".join(s).strip()
        if cand and cand != base and re.search(r"[A-Za-z@]", cand):
            out.add(cand)
    return [f"[[{p}]]" for p in sorted(out)]


def adversarial_texts(phrases: list[str], lang: str, extra: list[str], rng: np.random.Generator,
                      n_edits: int = 40) -> list[str]:
    """Text and phoneme near-misses of every phrase, plus the user's own negative phrases."""
    texts: set[str] = set(extra)
    for p in phrases:
        texts |= set(text_parts(p))
        texts |= set(phoneme_edits(p, lang, n_edits, rng))
    texts -= set(phrases)
    log.debug("adversarial texts: %s", sorted(texts))
    return sorted(texts)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of `n` samples, unit peak (shaped in the frequency domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1] if len(f) > 1 else 1.0
    spec *= {"white": 1.0, "pink": 1 / np.sqrt(f), "brown": 1 / f}[color]
    x = np.fft.irfft(spec, n)
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


NOISE_COLORS = ("white", "pink", "brown")


def audio_files(folders: list[Path]) -> list[Path]:
    """Every audio file under the folders (recursive, sorted).

    Raises:
        UserError: a folder holds no audio file.
    """
    out = []
    for folder in folders:
        found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not found:
            raise UserError(f"Audio folder {folder} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}).")
        out += found
    return out


def readable(paths: list[Path], what: str) -> list[Path]:
    """The files whose audio header opens; the others are named in a warning and left out (before any
    long work: a broken file would otherwise stop every worker that loads it)."""
    import soundfile as sf

    good = []
    for p in paths:
        try:
            sf.info(str(p))
            good.append(p)
        except Exception as e:  # soundfile raises several types for a broken file
            log.warning("skipping %s file %s: %s", what, p, e)
    return good


def read_audio(path: Path) -> np.ndarray:
    """A file as 16 kHz mono float32.

    Raises:
        UserError: the file cannot be decoded.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for a broken file
        raise UserError(f"Cannot read audio file {path}: {e}.")
    audio = audio.mean(axis=1)
    if sr != SR:
        g = np.gcd(int(sr), SR)
        audio = resample_poly(audio, SR // g, int(sr) // g).astype(np.float32)
    return audio
