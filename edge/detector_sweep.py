"""Sweep the detection state machine's settings over stored scores, without re-running the model.

Calibration streams audio through openWakeWord once and keeps, per 80 ms frame, the raw wake-word
score and (with VAD) the VAD score openWakeWord gates it with. Every threshold × patience × refractory
× VAD-threshold setting is then replayed here. The replay gives exactly the detections that
`edgekit.edge.detector.run_detector` gives on the same scores (a test holds it to that), but works on
runs of hot frames instead of frame by frame, so a sweep of hundreds of settings over hours of audio
takes seconds. `save_scores`/`load_scores` keep the tracks (calibration's `scores.npz`) for later sweeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.edge.detector import FRAME_S, REFRACTORY_SLACK_S, DetectorConfig


@dataclass(frozen=True)
class ScoreTrack:
    """Per-frame scores of one stream (the ambient recording, or one positive clip)."""

    scores: np.ndarray
    """Raw wake-word score per frame, float64 (before any VAD gating)."""
    vad: np.ndarray | None = None
    """Per frame, the VAD score openWakeWord compares with its VAD threshold; None when VAD was off."""

    def gated(self, vad_threshold: float) -> np.ndarray:
        """The scores the detector sees with VAD at `vad_threshold` (0 = off), as openWakeWord gates them."""
        if vad_threshold <= 0:
            return self.scores
        if self.vad is None:
            raise ValueError("this track was scored without VAD, so it cannot be gated")
        return np.where(self.vad < vad_threshold, 0.0, self.scores)


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: the four values the device's .env carries."""

    threshold: float
    patience: int
    refractory_s: float
    vad_threshold: float = 0.0

    def detector(self, frame_s: float = FRAME_S) -> DetectorConfig:
        return DetectorConfig(threshold=self.threshold, patience=self.patience,
                              refractory_s=self.refractory_s, frame_s=frame_s)


def hot_runs(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) frame indices of each run of frames with score >= threshold."""
    hot = np.asarray(scores, dtype=np.float64) >= threshold
    edges = np.diff(np.concatenate(([0], hot.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def fire_frames(runs: tuple[np.ndarray, np.ndarray], n_frames: int, config: DetectorConfig) -> list[int]:
    """Frame indices where `Detector` fires, given the hot runs at `config.threshold`.

    Mirrors `Detector.update`: a run fires on its `patience`-th frame unless that falls inside the
    refractory time of the last detection, in which case on its first frame after it; with `rearm`
    a run fires at most once.
    """
    times = (np.arange(n_frames) + 1) * config.frame_s  # the same float expression as run_detector
    limit = config.refractory_s - REFRACTORY_SLACK_S
    last, fired = -math.inf, []
    for start, end in zip(*runs, strict=True):
        i = start + config.patience - 1
        while i <= end:
            if times[i] - last < limit:
                free = ~(times[i:end + 1] - last < limit)
                if not free.any():
                    break
                i += int(np.argmax(free))
            fired.append(int(i))
            last = times[i]
            if config.rearm:
                break
            i += 1
    return fired


def fires(track: ScoreTrack, setting: Setting, frame_s: float = FRAME_S) -> list[int]:
    """Frame indices where the detector fires on `track` at `setting`."""
    scores = track.gated(setting.vad_threshold)
    return fire_frames(hot_runs(scores, setting.threshold), len(scores), setting.detector(frame_s))


def longest_run(scores: np.ndarray, threshold: float) -> int:
    """Length of the longest run of hot frames: a clip is detected iff it is >= patience."""
    starts, ends = hot_runs(scores, threshold)
    return int((ends - starts + 1).max()) if len(starts) else 0


@dataclass(frozen=True)
class SweepRow:
    """What one setting does on the recorded data."""

    setting: Setting
    false_accepts: int
    """Detections on the ambient stream (every one is false: it holds no wake word)."""
    detected: int | None
    """Positive clips with at least one detection; None without positives."""


def sweep(ambient: ScoreTrack, positives: list[ScoreTrack], thresholds: list[float], patiences: list[int],
          refractories: list[float], vad_thresholds: list[float], frame_s: float = FRAME_S) -> list[SweepRow]:
    """Every setting of the grid, replayed over the stored scores."""
    rows = []
    n = len(ambient.scores)
    for vad_t in vad_thresholds:
        amb = ambient.gated(vad_t)
        pos = [p.gated(vad_t) for p in positives]
        for thr in thresholds:
            runs = hot_runs(amb, thr)
            longest = np.array([longest_run(p, thr) for p in pos], dtype=int)
            for pat in patiences:
                detected = int((longest >= pat).sum()) if positives else None
                for refr in refractories:
                    s = Setting(float(thr), int(pat), float(refr), float(vad_t))
                    fa = len(fire_frames(runs, n, s.detector(frame_s)))
                    rows.append(SweepRow(s, fa, detected))
    return rows


def save_scores(path: Path, ambient: ScoreTrack, positives: list[ScoreTrack]) -> None:
    """Per-frame scores, so a later sweep (other grid, other target) needs no model run."""
    arrays = {"ambient": ambient.scores} | ({"ambient_vad": ambient.vad} if ambient.vad is not None else {})
    for i, p in enumerate(positives):
        arrays[f"positive_{i}"] = p.scores
        if p.vad is not None:
            arrays[f"positive_{i}_vad"] = p.vad
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_scores(path: Path) -> tuple[ScoreTrack, list[ScoreTrack]]:
    """The tracks `save_scores` wrote."""
    with np.load(path) as z:
        n = sum(1 for k in z.files if k.startswith("positive_") and not k.endswith("_vad"))
        amb = ScoreTrack(z["ambient"], z["ambient_vad"] if "ambient_vad" in z.files else None)
        pos = [ScoreTrack(z[f"positive_{i}"], z[f"positive_{i}_vad"] if f"positive_{i}_vad" in z.files else None)
               for i in range(n)]
    return amb, pos
