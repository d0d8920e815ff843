"""Features with openWakeWord's own front end (melspectrogram + speech embedding), cached on disk.

A *set* is a list of recipes that all render to the same number of samples; the set's features are an
array (clips, frames, 96) saved as .npy and opened memory-mapped, under a name that hashes the recipes,
the mixing settings and the feature models. Rendering and embedding run in worker processes, each with
its own `AudioFeatures` (one ONNX session per process).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.edge.oww import feature_models
from edgekit.trainer.wakeword.augment import Mixer, MixSpec, to_int16
from edgekit.trainer.wakeword.negatives import read_audio
from edgekit.trainer.wakeword.sounds import scene

log = logging.getLogger(__name__)

EMB_DIM = 96
WINDOW = 16
CHUNK = 48
"""Recipes per worker task: big enough to batch the ONNX models, small enough to balance."""
RENDER_VERSION = 3  # 3: clips end where placed after a tempo change; user files joined into chunks
"""Part of every feature cache key: bump it when `render` changes what a recipe sounds like."""


@dataclass(frozen=True)
class Recipe:
    """How to make one fixed-length clip.

    kind: `place` (clips[0] ending at `end`), `sequence` (clips one after another), `noise`
    (background only), `sounds` (synthetic everyday sounds over background) or `file` (clips[0] from
    sample `end`, as recorded).
    """

    kind: str
    clips: tuple[str, ...]
    length: int
    end: int = 0
    seed: int = 0


def frames_for(samples: int) -> int:
    """Embedding frames openWakeWord produces for a clip of `samples` (76 mel frames each, step 8)."""
    mel = samples // 160 - 3
    return (mel - 76) // 8 + 1


def render(r: Recipe, mixer: Mixer, cache: dict[str, np.ndarray]) -> np.ndarray:
    """The int16 audio of one recipe."""
    rng = np.random.default_rng(r.seed)

    def clip(p: str) -> np.ndarray:
        if p not in cache:
            cache[p] = read_audio(Path(p))
        return cache[p]

    if r.kind == "place":
        return to_int16(mixer.place(clip(r.clips[0]), r.length, r.end, rng))
    if r.kind == "sequence":
        return to_int16(mixer.sequence([clip(p) for p in r.clips], r.length, rng))
    if r.kind == "noise":
        return to_int16(mixer.mix(np.zeros(r.length, np.float32), rng))
    if r.kind == "sounds":  # across the room or next to the microphone: 40 dB of level range
        return to_int16(mixer.mix(scene(r.length, rng), rng) * 10 ** rng.uniform(-2, 0))
    if r.kind == "file":  # the user's files joined end to end, from offset `end` (see dataset._stream_chunks)
        joined = np.concatenate([clip(p) for p in r.clips]) if len(r.clips) > 1 else clip(r.clips[0])
        audio = joined[r.end:r.end + r.length]
        audio = np.pad(audio, (0, r.length - len(audio)))
        return to_int16(audio * rng.uniform(0.5, 1.5))
    raise ValueError(f"unknown recipe kind {r.kind}")


_worker: dict[str, object] = {}


def _init(mix: MixSpec, mel: str, emb: str) -> None:
    from openwakeword.utils import AudioFeatures

    _worker["mixer"] = Mixer.load(mix)
    _worker["features"] = AudioFeatures(melspec_model_path=mel, embedding_model_path=emb,
                                        inference_framework="onnx", ncpu=1)
    _worker["clips"] = {}


def _embed(recipes: Sequence[Recipe]) -> np.ndarray:
    clips = _worker["clips"]
    audio = np.stack([render(r, _worker["mixer"], clips) for r in recipes])  # type: ignore[arg-type]
    if len(clips) > 2000:
        clips.clear()
    return _worker["features"].embed_clips(audio, batch_size=len(recipes), ncpu=1).astype(np.float32)  # type: ignore[union-attr]


@dataclass(frozen=True)
class FeatureSource:
    """Where the feature models are and how many processes embed."""

    folder: Path
    workers: int = 0

    def models(self) -> tuple[str, str]:
        mel, emb = feature_models(self.folder, "onnx")
        return str(mel), str(emb)

    def identity(self) -> list:
        return [(Path(p).name, Path(p).stat().st_size) for p in self.models()]


class Embedder:
    """Worker processes that render and embed recipes: started on first use, shared by every set."""

    def __init__(self, mix: MixSpec, src: FeatureSource):
        self.mix, self.src = mix, src
        self.workers = src.workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._local = False

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _map(self, chunks: list[list[Recipe]]):
        mel, emb = self.src.models()
        if self.workers <= 1 or len(chunks) <= 1 and self._pool is None:
            if not self._local:
                _init(self.mix, mel, emb)
                self._local = True
            return map(_embed, chunks)
        if self._pool is None:
            # spawn, not fork: the parent may hold torch/onnxruntime thread pools that do not survive fork
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init, initargs=(self.mix, mel, emb))
        return self._pool.map(_embed, chunks)

    def compute(self, recipes: Sequence[Recipe], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Render and embed every recipe; (N, frames, 96) float32 in recipe order."""
        chunks = [list(recipes[i:i + CHUNK]) for i in range(0, len(recipes), CHUNK)]
        out = []
        for c, feats in zip(chunks, self._map(chunks), strict=True):
            out.append(feats)
            if progress:
                progress(len(c))
        if not out:
            return np.zeros((0, frames_for(recipes[0].length) if recipes else 0, EMB_DIM), np.float32)
        return np.concatenate(out)


def cached(name: str, recipes: Sequence[Recipe], embedder: Embedder, folder: Path, digest: str,
           progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, bool]:
    """The features of a set from the cache (memory-mapped), computing them first when missing.

    Returns:
        (features, reused): `reused` is True when nothing had to be computed.
    """
    path = folder / f"{name}-{digest}.npy"
    if path.is_file():
        if progress:
            progress(len(recipes))
        return np.load(path, mmap_mode="r"), True
    feats = embedder.compute(recipes, progress)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, feats)
    return np.load(path, mmap_mode="r"), False


def windows(feats: np.ndarray, stride: int = 1) -> np.ndarray:
    """Every 16-frame window of each clip: (N, frames, 96) → (N * W, 16, 96), W = (frames - 16) // stride + 1."""
    n, f, d = feats.shape
    starts = range(0, f - WINDOW + 1, stride)
    return np.stack([feats[:, s:s + WINDOW] for s in starts], axis=1).reshape(-1, WINDOW, d)


def last_window(feats: np.ndarray) -> np.ndarray:
    """The window that ends at each clip's last frame."""
    return np.ascontiguousarray(feats[:, -WINDOW:])
