"""Which epoch is best, which best-k checkpoints to keep, and when to stop early: pure bookkeeping.

The training loop feeds it one monitored value per epoch and does the file work it asks for; the
state is plain data so it travels inside every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Verdict:
    """What one epoch's value means for the files and the run."""

    improved: bool
    """Best so far (by more than min_delta): write best_model.pt."""
    keep: bool
    """Among the best k: write this epoch's full checkpoint."""
    evicted: list[int]
    """Epochs whose best-k checkpoints drop out now."""
    stop: bool
    """Patience ran out."""


@dataclass
class BestTracker:
    """Best value and epoch, epochs without improvement, and the best-k epochs (best first)."""

    value: float | None = None
    epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    top: list[list[Any]] = field(default_factory=list)
    """[value, epoch] of the kept best-k checkpoints."""

    def update(
        self, value: float, epoch: int, mode: Literal["min", "max"], min_delta: float, patience: int, keep: int
    ) -> Verdict:
        """Account for `epoch`'s monitored `value`; a NaN/inf value never counts as an improvement."""
        sign = 1 if mode == "min" else -1
        finite = math.isfinite(value)
        improved = finite and (self.value is None or sign * (self.value - value) > min_delta)
        if improved:
            self.value, self.epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped_early = patience > 0 and self.bad_epochs >= patience
        evicted: list[int] = []
        if keep and finite:
            self.top.append([value, epoch])
            # the best epoch first even when a later one is better by less than min_delta, so that its
            # checkpoint is kept and best_checkpoints[0] is best_model.pt's epoch
            self.top.sort(key=lambda t: (t[1] != self.epoch, sign * t[0], t[1]))
            evicted = [e for _, e in self.top[keep:]]
            self.top = self.top[:keep]
        kept = any(e == epoch for _, e in self.top)
        return Verdict(improved=improved, keep=kept, evicted=evicted, stop=self.stopped_early)
