"""The wake-word detection state machine: scores in, detections out, no audio I/O.

The device runtime, the trainer's FA/h evaluation and field calibration all feed scores through this
same code, so a threshold measured in one place means the same in the others.

Rules, per model, one score per 80 ms frame:
  * a frame is *hot* when its score >= `threshold`;
  * a detection fires on the `patience`-th consecutive hot frame;
  * after a detection nothing fires for `refractory_s` seconds, and (with `rearm`) not before a
    frame falls below the threshold again, so one utterance gives exactly one detection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

FRAME_S = 0.08
"""openWakeWord produces one score per 1280 samples at 16 kHz."""
REFRACTORY_SLACK_S = 1e-9
"""Float slack on the refractory comparison: frame times are sums of 0.08, which are not exact."""


@dataclass(frozen=True)
class DetectorConfig:
    """Decision settings for one wake-word model."""

    threshold: float = 0.5
    patience: int = 1
    refractory_s: float = 2.0
    rearm: bool = True
    frame_s: float = FRAME_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.refractory_s < 0:
            raise ValueError(f"refractory_s must be >= 0, got {self.refractory_s}")


@dataclass(frozen=True)
class Detection:
    """One wake-word detection."""

    model: str
    time_s: float
    """Stream time of the frame that fired (end of the 80 ms frame)."""
    score: float
    """The score of the frame that fired."""
    peak: float
    """The highest score in the run of hot frames that fired."""


@dataclass
class Detector:
    """Feed one score per frame with `update`; it returns a `Detection` when one fires."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    model: str = "wakeword"
    _run: int = 0
    _peak: float = 0.0
    _last_fire: float = -math.inf
    _armed: bool = True

    def update(self, score: float, time_s: float) -> Detection | None:
        c = self.config
        hot = score >= c.threshold
        if not hot:
            self._run, self._peak, self._armed = 0, 0.0, True
            return None
        self._run += 1
        self._peak = max(self._peak, score)
        in_refractory = time_s - self._last_fire < c.refractory_s - REFRACTORY_SLACK_S
        if self._run >= c.patience and not in_refractory and (self._armed or not c.rearm):
            self._last_fire = time_s
            self._armed = False
            return Detection(self.model, time_s, float(score), float(self._peak))
        return None

    def reset(self) -> None:
        self._run, self._peak, self._last_fire, self._armed = 0, 0.0, -math.inf, True


def run_detector(scores: Iterable[float], config: DetectorConfig, model: str = "wakeword") -> list[Detection]:
    """Feed a whole score sequence (frame i ends at (i + 1) * frame_s) and return every detection."""
    det = Detector(config, model)
    out = []
    for i, s in enumerate(scores):
        d = det.update(float(s), (i + 1) * config.frame_s)
        if d is not None:
            out.append(d)
    return out
