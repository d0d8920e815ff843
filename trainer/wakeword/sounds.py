"""Everyday non-speech sounds, synthesized: clatter, water, animal-like tones, machine hum, music.

Stationary white/pink/brown noise teaches the head nothing about the sounds that make a kitchen or a
living room: on real recordings the heads trained without these fired on a cat, washing-up and a
running tap long before they fired on any spoken word. Each kind here is a small physical caricature
(impacts are damped inharmonic modes, water is many rising-pitch bubbles over modulated hiss, an animal
or a whistle is a harmonic tone with a moving pitch through a few resonances), cheap enough to make in
any quantity from a seed. They are negatives on their own and backgrounds under every other clip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SR = 16000


def _env(n: int, attack: int, decay_s: float) -> np.ndarray:
    t = np.arange(n) / SR
    env = np.exp(-t / max(decay_s, 1e-3))
    env[:attack] *= np.linspace(0, 1, attack, endpoint=False) if attack else 1
    return env


def _add(out: np.ndarray, at: int, ev: np.ndarray) -> None:
    end = min(len(out), at + len(ev))
    if at < end:
        out[at:end] += ev[: end - at]


def _resonate(x: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """Pass `x` through `k` random band resonances (formant-like colouring) and sum them."""
    from scipy.signal import iirpeak, lfilter

    out = np.zeros_like(x)
    for f in np.exp(rng.uniform(np.log(300), np.log(6000), size=k)):
        b, a = iirpeak(min(f, SR / 2 - 200), Q=float(rng.uniform(2, 12)), fs=SR)
        out += lfilter(b, a, x) * rng.uniform(0.3, 1.0)
    return out


def impacts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Dishes, cutlery, keys, doors, footsteps: bursts of hits, each a few damped inharmonic modes."""
    out = np.zeros(n, np.float64)
    at = int(rng.integers(0, SR // 2))
    while at < n:
        for _ in range(int(rng.integers(1, 9))):
            m = int(rng.uniform(0.05, 0.6) * SR)
            t = np.arange(m) / SR
            low = rng.random() < 0.25  # thumps and steps instead of clinks
            lo, hi = (60, 400) if low else (400, 7500)
            freqs = np.exp(rng.uniform(np.log(lo), np.log(hi), int(rng.integers(2, 7))))
            hit = sum(rng.uniform(0.2, 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
                      * np.exp(-t / rng.uniform(0.01, 0.35)) for f in freqs)
            click = int(rng.integers(16, 160))
            hit[:click] += rng.standard_normal(click) * np.linspace(1, 0, click) * rng.uniform(0.2, 1.5)
            _add(out, at, hit * rng.uniform(0.1, 1))
            at += int(rng.uniform(0.03, 0.35) * SR)
        at += int(rng.uniform(0.1, 1.5) * SR)
    return out


def water(n: int, rng: np.random.Generator) -> np.ndarray:
    """Running taps, pouring, rain: modulated high-passed hiss and many bubbles of rising pitch."""
    from scipy.signal import butter, sosfilt

    sos = butter(2, float(rng.uniform(300, 2500)), "highpass", fs=SR, output="sos")
    hiss = sosfilt(sos, rng.standard_normal(n))
    wobble = np.interp(np.arange(n), np.linspace(0, n, max(n // 400, 2)), rng.uniform(0.3, 1.0, max(n // 400, 2)))
    out = hiss * wobble * rng.uniform(0.05, 0.6)
    k = int(n / SR * rng.uniform(20, 300))
    t = np.arange(int(0.04 * SR)) / SR
    life = rng.uniform(0.004, 0.04, size=(k, 1))
    f0 = np.exp(rng.uniform(np.log(400), np.log(5000), size=(k, 1)))
    phase = 2 * np.pi * f0 * (t + rng.uniform(0.5, 8, size=(k, 1)) * t**2)  # pitch rises as the bubble closes
    bubbles = np.sin(phase) * np.exp(-t / (life / 3)) * (t < life) * rng.uniform(0.1, 1, size=(k, 1))
    idx = rng.integers(0, n, size=(k, 1)) + np.arange(len(t))
    keep = idx < n
    out += np.bincount(idx[keep], weights=bubbles[keep], minlength=n)
    return out


def tones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Animals, birds, whistles, beeps, squeaks: harmonic tones with a moving pitch through resonances."""
    out = np.zeros(n, np.float64)
    at = int(rng.integers(0, SR))
    while at < n:
        m = int(rng.uniform(0.08, 1.3) * SR)
        t = np.arange(m) / SR
        f0 = np.exp(rng.uniform(np.log(120), np.log(3000)))
        shape = rng.integers(4)  # rise-fall (meow), fall, rise, flat with vibrato
        u = t / t[-1]
        contour = {0: 1 + rng.uniform(0.2, 0.8) * np.sin(np.pi * u), 1: 1.6 - rng.uniform(0.2, 0.6) * u,
                   2: 0.7 + rng.uniform(0.2, 0.8) * u,
                   3: 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 9) * t)}[int(shape)]
        phase = 2 * np.pi * np.cumsum(f0 * contour) / SR
        k = np.arange(1, int(rng.integers(1, 14)) + 1)
        k = k[k * f0 * contour.max() < SR / 2 - 500]
        tone = (rng.uniform(0.4, 2.0) ** -np.log2(k)[:, None] * np.sin(k[:, None] * phase)).sum(axis=0)
        if rng.random() < 0.7:
            tone = _resonate(tone, rng, int(rng.integers(1, 4)))
        att = int(rng.uniform(0.005, 0.15) * SR)
        env = np.minimum(_env(m, min(att, m), 10.0), np.linspace(1, 0, m) ** rng.uniform(0.2, 1.5))
        _add(out, at, tone * env / (np.abs(tone).max() + 1e-9) * rng.uniform(0.2, 1))
        at += m + int(rng.uniform(0.05, 2.0) * SR)
    return out


def hiss(n: int, rng: np.random.Generator) -> np.ndarray:
    """Running water, fans, hoovers, traffic: noise with a random spectral shape, hum lines and a slow swell."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    logf = np.log(f)
    shape = (f / 1000) ** rng.uniform(-1.5, 0.5)  # tilt
    for _ in range(int(rng.integers(1, 5))):
        centre, width = rng.uniform(np.log(100), np.log(7000)), rng.uniform(0.1, 1.0)
        shape += rng.uniform(0.5, 6) * np.exp(-0.5 * ((logf - centre) / width) ** 2)
    out = np.fft.irfft(spec * shape, n)
    out /= np.abs(out).max() + 1e-9
    t = np.arange(n) / SR
    for line in np.exp(rng.uniform(np.log(50), np.log(3000), int(rng.integers(0, 4)))):
        out += rng.uniform(0.02, 0.3) * np.sin(2 * np.pi * line * t + rng.uniform(0, 6.3))
    return out * (1 + rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.05, 1) * t + rng.uniform(0, 6.3)))


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Fridges, engines, exercise machines: low harmonics and rumble with a slow rhythm."""
    from scipy.signal import butter, sosfilt

    t = np.arange(n) / SR
    f0 = float(rng.uniform(25, 220))
    harm = sum(rng.uniform(0, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in range(1, 9))
    sos = butter(2, float(rng.uniform(150, 1500)), "lowpass", fs=SR, output="sos")
    rumble = sosfilt(sos, rng.standard_normal(n))
    rumble /= np.abs(rumble).max() + 1e-9
    rhythm = 1 + rng.uniform(0, 0.8) * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t)
    return (harm * rng.uniform(0, 1) + rumble * rng.uniform(0.2, 1)) * rhythm


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Melodies and chords of plucked or held synthetic notes."""
    out = np.zeros(n, np.float64)
    root = rng.uniform(80, 400)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    at, decay = 0, rng.uniform(0.1, 1.5)
    while at < n:
        m = int(rng.uniform(0.1, 0.7) * SR)
        t = np.arange(m) / SR
        note = np.zeros(m)
        for step in rng.choice(scale, size=int(rng.integers(1, 4))):
            f = root * 2 ** (step / 12) * 2 ** int(rng.integers(0, 3))
            note += sum(np.sin(2 * np.pi * k * f * t) / k**1.5 for k in range(1, 6) if k * f < SR / 2)
        _add(out, at, note * _env(m, 80, decay) * rng.uniform(0.3, 1))
        at += m
    return out


@dataclass(frozen=True)
class Sound:
    """One kind of everyday sound."""

    make: Callable[[int, np.random.Generator], np.ndarray]
    """(samples, generator) → audio of that length."""
    help: str


SOUNDS: dict[str, Sound] = {
    "impacts": Sound(impacts, "dishes, cutlery, keys, doors, steps"),
    "water": Sound(water, "taps, pouring, rain"),
    "tones": Sound(tones, "animals, birds, whistles, beeps"),
    "hiss": Sound(hiss, "running water, fans, hoovers, traffic"),
    "hum": Sound(hum, "fridges, engines, exercise machines"),
    "music": Sound(music, "melodies and chords"),
}


def scene(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of one or two kinds of sound together, unit peak, float32."""
    kinds = rng.choice(list(SOUNDS), size=int(rng.integers(1, 3)), replace=False)
    out = sum(SOUNDS[str(k)].make(n, rng) * rng.uniform(0.3, 1) for k in kinds)
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)
