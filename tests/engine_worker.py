"""A tiny deterministic training run for tests/test_engine.py, in-process or as a subprocess.

    python tests/engine_worker.py RUN_DIR [--epochs 6] [--batch-size 8] [--every 5] [--trace [--hold-at N]]

Its augmentation draws from python's, numpy's and torch's global generators and the model has dropout,
so a resume only matches an uninterrupted run when every RNG state comes back from the checkpoint.
With --trace it prints `STEP <epoch> <global_step>` to stderr before each step, so a test knows where
the run is before it sends a signal. Exit code: 0, or a UserError's (130/143 after SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.errors import UserError
from edgekit.trainer.engine import FitConfig, FitResult, Schedule, StepOutput, fit, seed_everything

N_TRAIN, N_VAL, FEATURES, CLASSES = 96, 48, 6, 3


def _dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1.0)
    return torch.from_numpy(x), torch.from_numpy(y)


class TinyData:
    """Synthetic samples; `batch` augments with all three global generators."""

    def __init__(self, weighted: bool = False) -> None:
        self.x, self.y = _dataset(N_TRAIN, 0)
        counts = np.bincount(self.y.numpy(), minlength=CLASSES)
        self.sample_weights = (1.0 / counts[self.y.numpy()]) if weighted else None

    def __len__(self) -> int:
        return N_TRAIN

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(np.asarray(idx))
        scale = 1.0 + 0.05 * random.random() + 0.05 * float(np.random.standard_normal())
        x = self.x[i] * scale + 0.1 * torch.randn(len(idx), FEATURES)
        return x.to(device), self.y[i].to(device)


def build_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, CLASSES)
    )


def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    x, y = batch
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    return StepOutput(loss=loss, n=len(y), correct=int((logits.argmax(1) == y).sum()))


_VAL = _dataset(N_VAL, 1)


def eval_fn(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
    x, y = _VAL
    logits = model(x.to(device))
    return {
        "val_loss": float(torch.nn.functional.cross_entropy(logits, y.to(device))),
        "val_acc": float((logits.argmax(1).cpu() == y).float().mean()),
    }


def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


def make_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Schedule:
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-2, total_steps=steps_per_epoch * epochs)
    return Schedule(sched, interval="step")


class Trace:
    """Announces each step on stderr and slows steps down, so signals land where a test wants them.

    `hold_at` makes that one step last `hold_s` longer: a signal sent meanwhile arrives mid-step.
    """

    def __init__(self, sleep_s: float, hold_at: int = -1, hold_s: float = 0.0) -> None:
        self.sleep_s, self.hold_at, self.hold_s = sleep_s, hold_at, hold_s

    def on_step(self, epoch: int, global_step: int, batch_size: int) -> None:
        print(f"STEP {epoch} {global_step}", file=sys.stderr, flush=True)
        time.sleep(self.hold_s if global_step == self.hold_at else self.sleep_s)


def run(
    run_dir: Path, hooks=None, weighted: bool = False, evaluate=eval_fn, **overrides
) -> tuple[torch.nn.Module, FitResult]:
    """Build the tiny model and fit it in `run_dir`; `overrides` go into FitConfig."""
    torch.set_num_threads(1)
    seed_everything(0)
    model = build_model()
    settings = {"epochs": 6, "batch_size": 8, "device": "cpu", "patience": 0, "oom_cooldown_s": 0.0, **overrides}
    result = fit(
        model,
        TinyData(weighted),
        step_fn,
        evaluate,
        make_optimizer,
        make_schedule,
        FitConfig(**settings),
        run_dir,
        hooks=hooks,
        task_config={"task": "tiny"},
    )
    return model, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--every", type=int, default=0, help="checkpoint_every_steps")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per step (with --trace)")
    p.add_argument("--hold-at", type=int, default=-1, help="global step that lasts --hold seconds longer")
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--weighted", action="store_true")
    a = p.parse_args(argv)
    hooks = Trace(a.sleep, a.hold_at, a.hold) if a.trace else None
    try:
        run(a.run_dir, hooks, a.weighted, epochs=a.epochs, batch_size=a.batch_size, checkpoint_every_steps=a.every)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
