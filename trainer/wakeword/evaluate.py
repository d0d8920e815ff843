"""Wake-word evaluation through the device's own detection state machine.

False accepts per hour: a continuous negative score stream is fed to `edgekit.edge.detector.Detector`
(threshold, patience, refractory: exactly what the device runs) and detections are counted per hour of
audio. False rejects: each held-out positive clip (padded with background) gives a short score
sequence; it is rejected when the detector does not fire on it. A sweep over thresholds gives the DET
curve; the operating point is the lowest FRR whose FA/h meets the target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.edge.detector import FRAME_S, Detector, DetectorConfig

log = logging.getLogger(__name__)

THRESHOLDS = tuple(float(t) for t in np.round(np.concatenate(
    [np.arange(0.02, 0.9, 0.02), [0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]]), 4))
"""Thresholds of the sweep (dense at the top, where low false-accept rates live)."""


@dataclass(frozen=True)
class Point:
    """One operating point of the DET curve."""

    threshold: float
    frr: float
    fa_per_hour: float
    false_accepts: int
    detected: int
    positives: int

    @property
    def f1(self) -> float:
        """Clip-level F1: detected positives against missed ones and false accepts."""
        tp, fn = self.detected, self.positives - self.detected
        return 2 * tp / max(2 * tp + fn + self.false_accepts, 1)


def count_detections(scores: np.ndarray, config: DetectorConfig) -> int:
    """Detections the device would make on this score stream (one score per 80 ms frame).

    Only hot frames, and the first cold frame after each run of them, change the detector's state;
    the cold frames in between are skipped, which gives the same detections far faster.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    hot = scores >= config.threshold
    if not hot.any():
        return 0
    after = np.zeros_like(hot)
    after[1:] = hot[:-1] & ~hot[1:]
    det = Detector(config)
    n = 0
    for i in np.flatnonzero(hot | after):
        n += det.update(float(scores[i]), (i + 1) * config.frame_s) is not None
    return n


def fires(clip_scores: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """Per positive clip (rows of score sequences): does the detector fire at least once?"""
    return np.array([count_detections(row, config) > 0 for row in np.asarray(clip_scores)], dtype=bool)


def sweep(pos_scores: np.ndarray, neg_stream: np.ndarray, patience: int = 1, refractory_s: float = 2.0,
          thresholds: Sequence[float] = THRESHOLDS) -> list[Point]:
    """FRR and FA/h at every threshold.

    Args:
        pos_scores: (clips, frames) scores of held-out positives, each padded with background.
        neg_stream: scores of continuous negative audio, one per 80 ms frame.
    """
    hours = max(len(neg_stream) * FRAME_S / 3600, 1e-9)
    pts = []
    for t in thresholds:
        cfg = DetectorConfig(threshold=float(t), patience=patience, refractory_s=refractory_s)
        fa = count_detections(neg_stream, cfg)
        det = int(fires(pos_scores, cfg).sum()) if len(pos_scores) else 0
        n = len(pos_scores)
        pts.append(Point(float(t), 1 - det / max(n, 1), fa / hours, fa, det, n))
    return pts


def choose(points: Sequence[Point], target_fa_per_hour: float) -> tuple[Point, bool]:
    """The lowest FRR with FA/h ≤ target; else the lowest FA/h.

    Thresholds often tie (a short validation stream counts false accepts coarsely); the highest of the
    tied ones is taken, because real speech scores higher than the synthetic negatives: on the real
    "computer" bench a tie broken towards the middle kept the FRR low but let false accepts through.

    Returns:
        (point, met): `met` is False when no threshold reaches the false-accept target.
    """
    ok = [p for p in points if p.fa_per_hour <= target_fa_per_hour]
    met = bool(ok)
    if not ok:
        lowest = min(p.fa_per_hour for p in points)
        ok = [p for p in points if p.fa_per_hour == lowest]
    return min(ok, key=lambda p: (p.frr, -p.threshold)), met


def frr_at(points: Sequence[Point], fa_per_hour: float) -> float:
    """The best FRR reachable at or below `fa_per_hour` (1.0 when none)."""
    ok = [p.frr for p in points if p.fa_per_hour <= fa_per_hour]
    return min(ok) if ok else 1.0


def det_plot(curves: dict[str, Sequence[Point]], path: Path, target: float | None = None,
             chosen: Point | None = None, title: str = "DET") -> Path:
    """FRR against FA/h over thresholds, one line per model, saved as PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p.fa_per_hour)
        ax.plot([max(p.fa_per_hour, 1e-2) for p in pts], [p.frr * 100 for p in pts], marker=".", label=name)
    if target is not None:
        ax.axvline(target, color="grey", ls="--", lw=1, label=f"target {target:g} FA/h")
    if chosen is not None:
        ax.plot([max(chosen.fa_per_hour, 1e-2)], [chosen.frr * 100], "r*", ms=12,
                label=f"threshold {chosen.threshold:g}")
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour (0 plotted at 0.01)")
    ax.set_ylabel("false reject rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def points_json(points: Sequence[Point]) -> list[dict]:
    return [asdict(p) for p in points]
