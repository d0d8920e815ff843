"""Augmentation: room reverb, background at a range of SNRs, gain, EQ, small pitch/time changes.

Every clip is augmented from its own seeded generator, so a clip's audio (and its cached features)
depend only on (clip, seed, settings), not on the order of processing or the number of workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.errors import UserError
from edgekit.trainer.wakeword.negatives import NOISE_COLORS, colored_noise, read_audio
from edgekit.trainer.wakeword.tts import SR

log = logging.getLogger(__name__)


def room_impulse_responses(n: int, seed: int, cache: Path) -> list[np.ndarray]:
    """`n` impulse responses of random shoebox rooms (pyroomacoustics), cached as one .npz."""
    path = cache / f"rirs-{n}-{seed}.npz"
    if path.is_file():
        with np.load(path) as z:
            return [z[k] for k in sorted(z.files, key=int)]
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(n):
        dims = rng.uniform([3, 3, 2.4], [10, 8, 3.5])
        rt60 = float(rng.uniform(0.15, 0.8))
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=min(max_order, 12))
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)[: int(0.8 * SR)]
        peak = int(np.argmax(np.abs(rir)))
        rirs.append(rir[peak:] / (np.abs(rir).max() + 1e-9))  # direct path at 0: placement is kept
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{str(i): r for i, r in enumerate(rirs)})
    return rirs


@dataclass(frozen=True)
class MixSpec:
    """What a worker needs to rebuild the mixer (picklable)."""

    background: tuple[str, ...] = ()
    snr_db: tuple[float, float] = (0.0, 25.0)
    reverb_probability: float = 0.5
    rir_file: str | None = None
    seed: int = 0
    sound_share: float = 0.0
    """Share of clips mixed over synthetic everyday sounds (`sounds.scene`) instead of noise."""


@dataclass
class Mixer:
    """Turns clean clips into training audio."""

    spec: MixSpec
    backgrounds: list[np.ndarray] = field(default_factory=list)
    rirs: list[np.ndarray] = field(default_factory=list)
    sounds: list[np.ndarray] = field(default_factory=list)
    _fx: object | None = None

    SOUND_SCENES = 8
    """30 s scenes of everyday sounds made once per worker, as a pool of backgrounds."""

    @classmethod
    def load(cls, spec: MixSpec) -> Mixer:
        rng = np.random.default_rng(spec.seed + 7)
        bgs = []
        for p in spec.background:
            try:
                bgs.append(read_audio(Path(p)))
            except UserError as e:  # checked up front (dataset.build); broken past its header: go on without
                log.warning("skipping background %s", e)
        bgs = [b for b in bgs if len(b) >= SR // 2]
        bgs += [colored_noise(30 * SR, c, rng) for c in NOISE_COLORS]
        rirs = []
        if spec.rir_file:
            with np.load(spec.rir_file) as z:
                rirs = [z[k] for k in sorted(z.files, key=int)]
        sounds = []
        if spec.sound_share > 0:
            from edgekit.trainer.wakeword.sounds import scene

            sound_rng = np.random.default_rng(spec.seed + 11)
            sounds = [scene(30 * SR, sound_rng) for _ in range(cls.SOUND_SCENES)]
        return cls(spec, bgs, rirs, sounds)

    def _effects(self):
        if self._fx is None:
            import audiomentations as am

            self._fx = am.Compose([
                am.Gain(min_gain_db=-6, max_gain_db=6, p=0.5),
                am.OneOf([am.BandPassFilter(min_center_freq=300, max_center_freq=3000, p=1.0),
                          am.HighPassFilter(min_cutoff_freq=80, max_cutoff_freq=400, p=1.0),
                          am.LowPassFilter(min_cutoff_freq=3000, max_cutoff_freq=7500, p=1.0)], p=0.4),
                am.SevenBandParametricEQ(min_gain_db=-6, max_gain_db=6, p=0.3),
                am.PitchShift(min_semitones=-1.5, max_semitones=1.5, p=0.15),
                am.TimeStretch(min_rate=0.9, max_rate=1.1, leave_length_unchanged=False, p=0.15),
            ])
        return self._fx

    def color(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Spectral, level and tempo changes, then (sometimes) room reverb."""
        return self.color_speech(clip, rng)[0]

    def color_speech(self, clip: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """`color`, and how many of its first samples are the speech (a tempo change alters the length;
        the reverb tail after it is not speech)."""
        import random

        random.seed(int(rng.integers(2**31)))  # audiomentations draws from `random` and numpy's global RNG
        np.random.seed(int(rng.integers(2**31)))
        out = self._effects()(samples=clip.astype(np.float32), sample_rate=SR)
        speech = len(out)
        if self.rirs and rng.random() < self.spec.reverb_probability:
            from scipy.signal import fftconvolve

            rir = self.rirs[int(rng.integers(len(self.rirs)))]
            out = fftconvolve(out, rir)[: len(out) + len(rir) // 4].astype(np.float32)
        return out, speech

    def background(self, n: int, rng: np.random.Generator) -> np.ndarray:
        pool = self.sounds if self.sounds and rng.random() < self.spec.sound_share else self.backgrounds
        bg = pool[int(rng.integers(len(pool)))]
        if len(bg) < n:
            bg = np.tile(bg, n // len(bg) + 1)
        start = int(rng.integers(len(bg) - n + 1))
        return bg[start:start + n]

    def mix(self, signal: np.ndarray, rng: np.random.Generator, active: np.ndarray | None = None) -> np.ndarray:
        """Add background at a random SNR (measured on the active part) and scale to a random level."""
        noise = self.background(len(signal), rng)
        ref = signal[active] if active is not None and active.any() else signal
        p_sig = float(np.mean(ref**2)) + 1e-10
        p_noise = float(np.mean(noise**2)) + 1e-10
        snr = rng.uniform(*self.spec.snr_db)
        out = signal + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))
        if not signal.any():  # pure background: a random level
            out = noise * rng.uniform(0.01, 0.5) / (np.abs(noise).max() + 1e-9)
        peak = np.abs(out).max() + 1e-9
        return out * (rng.uniform(0.1, 0.9) / peak)

    def place(self, clip: np.ndarray, length: int, end: int, rng: np.random.Generator) -> np.ndarray:
        """The augmented clip in `length` samples of background, its speech ending at sample `end`."""
        colored, spoken = self.color_speech(clip, rng)  # `spoken`: the length after any tempo change
        speech_len = min(spoken, end)  # reverb tail may run past `end`; the words do not
        start = end - speech_len
        sig = np.zeros(length, np.float32)
        piece = colored[spoken - speech_len:][: length - start]
        sig[start:start + len(piece)] = piece
        active = np.zeros(length, bool)
        active[start:end] = True
        return self.mix(sig, rng, active)

    def sequence(self, clips: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
        """Clips one after another with random pauses, filling `length` samples, over background."""
        sig = np.zeros(length, np.float32)
        active = np.zeros(length, bool)
        pos = int(rng.integers(0, SR // 2))
        for clip in clips:
            if pos >= length:
                break
            colored = self.color(clip, rng)[: length - pos]
            sig[pos:pos + len(colored)] = colored
            active[pos:pos + len(colored)] = True
            pos += len(colored) + int(rng.integers(SR // 10, SR))
        return self.mix(sig, rng, active)


def to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)
