"""The robust training engine: one `fit` loop that every task (waste, wake word, sequence) uses.

API CONTRACT (the engine helper implements it; task code is written against it):

    from edgekit.trainer.engine import FitConfig, Schedule, StepOutput, fit, TrainingInterrupted

    class MyData:                          # what the task provides as training data
        def __len__(self) -> int: ...      # number of samples
        def batch(self, idx: np.ndarray, device: torch.device) -> Any: ...
            # the samples at `idx`, on `device`, augmented (training mode); may use torch's global RNG
        sample_weights: np.ndarray | None  # optional: per-sample weights → balanced sampling (with replacement)

    def step_fn(model, batch) -> StepOutput:   # forward + loss for one training batch
        return StepOutput(loss=loss, n=len(y), correct=int((logits.argmax(1) == y).sum()))

    def eval_fn(model, device) -> dict[str, float]:  # called after each epoch, model in eval mode
        return {"val_loss": ..., "val_acc": ...}

    def make_optimizer(params) -> torch.optim.Optimizer      # params = trainable parameters
    def make_schedule(optimizer, steps_per_epoch, epochs) -> Schedule | None
        # Schedule(scheduler, interval="step"|"epoch"|"plateau")

    result = fit(model, data, step_fn, eval_fn, make_optimizer, make_schedule, FitConfig(...),
                 run_dir=Path("runs/x/phase1"), hooks=None, train_mode_fn=None)

Behaviour:
- Batch order of epoch e is a permutation (or weighted draw) from a generator seeded by (seed, e), so
  it does not depend on RNG history; progress inside an epoch is counted in *samples*, so a resume
  (also with a different batch size after an OOM) skips exactly the samples already seen.
- Checkpoints (atomic: temp + os.replace) in run_dir: `checkpoint_last.pt` every epoch and every
  `checkpoint_every_steps`; the previous last is kept as `checkpoint_prev.pt`; best-k full checkpoints
  by `monitor`; `best_model.pt` = state_dict of the best model. A checkpoint holds model, optimizer,
  scheduler, AMP scaler, RNG states (python, numpy, torch, cuda), epoch, samples done, global step,
  batch size, best metric, early-stopping counter, history and the config.
- Resume by default (`resume=False` starts fresh); a corrupt/truncated last checkpoint falls back to
  the previous valid one with a warning. A run that completed writes `done.json`; fitting it again
  returns the stored result without training (this is how multi-phase tasks resume: one run_dir per phase).
- SIGINT/SIGTERM: finish the current step, checkpoint, raise `TrainingInterrupted` (exit_code 130/143).
- CUDA OOM (torch.cuda.OutOfMemoryError, or RuntimeError "out of memory"): free cache, halve the batch
  size (not below `min_batch_size`), cool down, reload the last checkpoint, go on; after `max_retries`
  raise `TrainingFailed` (a UserError) with what to do. An OOM in `eval_fn` (which keeps its own batch size)
  is retried once after freeing the step's memory, then raises `TrainingFailed`; the epoch is not redone.
- Early stopping on `monitor` (`mode` min/max, `patience`, `min_delta`); `history.json`, `config.json`,
  `curves.png` (redrawn at most once a minute, and at the end) in run_dir; AMP on CUDA; gradient
  clipping; optional sharpness-aware steps (`sam_rho`); device auto|cuda|cpu; Rich progress bar;
  seed-style epoch lines: `Epoch [3/20] Train Loss: 0.35, Acc: 89.7% | Val Loss: 0.21, Acc: 91.9%`.
- `hooks.on_step(epoch, global_step, batch_size)` is called before each step (tests inject OOM there).
- `train_mode_fn(model)` (optional) is called instead of `model.train()` at each epoch start, so a
  task can keep BatchNorm layers in eval mode while fine-tuning.
- `fit` returns a `FitResult` (history, best epoch/metric, epochs run, stopped early, final batch size);
  afterwards the model holds the best epoch's weights (`restore_best`, default) on `config.device`.
  `task_config=` (optional dict) is recorded in config.json and in every checkpoint. Call
  `seed_everything(seed)` before building the model if its initialisation should be reproducible.
- Accuracies are fractions (0..1) everywhere; the epoch line shows them as percentages.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit.errors import UserError
from edgekit.trainer import checkpoint as ckpt_io

log = logging.getLogger(__name__)

DONE = "done.json"
HISTORY = "history.json"
CONFIG = "config.json"
CURVES = "curves.png"
RUN_FILES = (DONE, HISTORY, CONFIG, CURVES)
"""What the engine writes in run_dir besides checkpoints."""
BEST_K = "checkpoint_best_e{epoch:03d}.pt"


class FitConfig(BaseModel):
    """How `fit` trains: length, batch size, checkpoints, early stopping, OOM handling, device."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    epochs: int = Field(20, ge=1)
    """Passes over the training data."""
    batch_size: int = Field(32, ge=1)
    """Samples per step; halved on CUDA out-of-memory."""
    min_batch_size: int = Field(1, ge=1)
    """The out-of-memory halving never goes below this."""
    seed: int = Field(42, ge=0)
    """Seeds each epoch's batch order and, at a fresh start, the python/numpy/torch generators."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """`auto` takes the GPU when torch sees one."""
    amp: bool = True
    """Mixed precision (torch.autocast float16 + GradScaler); used on CUDA only."""
    grad_clip: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this (None: no clipping)."""
    sam_rho: float = Field(0.0, ge=0)
    """Sharpness-aware minimisation: take each step's gradient this far uphill (`edgekit.trainer.sharpness`);
    0 turns it off. Costs a second forward and backward pass per step."""
    checkpoint_every_steps: int = Field(0, ge=0)
    """Also write `checkpoint_last.pt` every N steps inside an epoch (0: only at epoch ends)."""
    resume: bool = True
    """Continue from the last valid checkpoint in run_dir; False wipes the run and starts fresh."""
    keep_best: int = Field(1, ge=0)
    """How many full checkpoints of the best epochs (by `monitor`) to keep."""
    monitor: str = "val_loss"
    """The metric (from eval_fn, or train_loss/train_acc) for best model and early stopping."""
    mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher `monitor` is better."""
    patience: int = Field(8, ge=0)
    """Stop after this many epochs without improvement (0: never stop early)."""
    min_delta: float = Field(0.0, ge=0)
    """An improvement smaller than this does not count."""
    max_retries: int = Field(5, ge=0)
    """CUDA out-of-memory recoveries allowed before giving up."""
    oom_cooldown_s: float = Field(5.0, ge=0)
    """Seconds to wait after an out-of-memory error before retrying."""
    drop_last: bool = False
    """Skip an epoch's last incomplete batch (useful with BatchNorm and tiny remainders)."""
    restore_best: bool = True
    """Load the best epoch's weights into the model when training ends."""
    deterministic: bool = True
    """Prefer deterministic kernels (cuDNN on CUDA, torch's deterministic mode on CPU)."""

    @model_validator(mode="after")
    def _min_batch_fits(self) -> FitConfig:
        if self.min_batch_size > self.batch_size:
            raise ValueError(f"min_batch_size {self.min_batch_size} is above batch_size {self.batch_size}")
        return self


@dataclass
class StepOutput:
    """What `step_fn` returns for one training batch."""

    loss: torch.Tensor
    """Scalar loss to minimise (mean over the batch)."""
    n: int
    """Samples in the batch (weights the running loss)."""
    correct: int | None = None
    """Correct predictions in the batch, when accuracy means something for the task."""


@dataclass
class Schedule:
    """A learning-rate scheduler and when to step it."""

    scheduler: Any
    interval: Literal["step", "epoch", "plateau"] = "epoch"
    """`step`: after every optimizer step; `epoch`: after each epoch; `plateau`: after each epoch with
    the monitored metric (ReduceLROnPlateau)."""


class Hooks(Protocol):
    def on_step(self, epoch: int, global_step: int, batch_size: int) -> None:
        """Called before each step; `epoch` counts from 0, `global_step` is the number of steps done."""


@dataclass
class FitResult:
    """What a finished `fit` produced (also stored in run_dir/done.json)."""

    run_dir: Path
    history: list[dict[str, Any]]
    monitor: str
    best_metric: float | None
    best_epoch: int | None
    """1-based epoch of the best `monitor` value."""
    epochs_run: int
    stopped_early: bool
    batch_size: int
    """The batch size at the end (smaller than configured after out-of-memory recoveries)."""
    global_step: int
    best_epochs: list[int] = field(default_factory=list)
    """1-based epochs whose full checkpoints were kept (`keep_best` of them), best first."""
    already_done: bool = False
    """True when run_dir held a completed run and nothing was trained."""

    @property
    def best_model_path(self) -> Path:
        return self.run_dir / ckpt_io.BEST_MODEL

    @property
    def best_checkpoints(self) -> list[Path]:
        """The kept best-k checkpoint files, best first."""
        return [self.run_dir / BEST_K.format(epoch=e) for e in self.best_epochs]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d.pop("already_done")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FitResult:
        return cls(**{**d, "run_dir": Path(d["run_dir"]), "already_done": True})


class TrainingFailed(UserError):
    """Training cannot go on (out of memory after every retry; a NaN/inf loss, at once without AMP or
    after `loop.MAX_NONFINITE_STEPS` steps in a row with it)."""


class TrainingInterrupted(UserError):
    """SIGINT/SIGTERM stopped training after a checkpoint; `exit_code` is 130 or 143."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); call it before building the model for reproducibility."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; asking for cuda without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA GPU.")
    return torch.device(name)


def deterministic_kernels(device: torch.device, wanted: bool) -> Callable[[], None]:
    """Turn on deterministic kernels where that is harmless; return what undoes it."""
    if not wanted:
        return lambda: None
    if device.type == "cuda":
        previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

        def undo_cuda() -> None:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous

        return undo_cuda
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    return lambda: torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def is_oom(e: BaseException) -> bool:
    """True for CUDA out-of-memory errors: the typed one, the older RuntimeError text, and cuBLAS/cuDNN
    failing to allocate their workspace (`CUBLAS_STATUS_ALLOC_FAILED`, `CUDNN_STATUS_ALLOC_FAILED`), which
    is how a GPU near its limit often reports it."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "status_alloc_failed" in text)


def oom_reason(e: BaseException) -> str:
    """The first line of an out-of-memory error, for a log line."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def free_memory(optimizer: torch.optim.Optimizer, drop_state: bool = False) -> None:
    """Release what an out-of-memory step left: gradients, optionally the optimizer's moments (when a
    checkpoint brings its own), unreferenced tensors and the CUDA allocator's cache."""
    import gc

    optimizer.zero_grad(set_to_none=True)
    if drop_state:
        optimizer.state.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fit(
    model: torch.nn.Module,
    data: Any,
    step_fn: Callable[[torch.nn.Module, Any], StepOutput],
    eval_fn: Callable[[torch.nn.Module, torch.device], Mapping[str, float]],
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    make_schedule: Callable[[torch.optim.Optimizer, int, int], Schedule | None] | None,
    config: FitConfig,
    run_dir: str | Path,
    hooks: Hooks | None = None,
    train_mode_fn: Callable[[torch.nn.Module], None] | None = None,
    task_config: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train `model` robustly; see the module docstring for the whole behaviour.

    Args:
        task_config: the task's own settings, recorded in config.json and every checkpoint.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM, with a checkpoint written.
        TrainingFailed: out of memory after `max_retries` recoveries, or a non-finite loss.
    """
    run_dir = Path(run_dir)
    if not config.resume:
        _clear_run(run_dir)
    done = run_dir / DONE
    if done.exists():
        result = FitResult.from_json({**json.loads(done.read_text()), "run_dir": str(run_dir)})
        log.info(
            "%s already holds a finished run (%d epochs); not training again (use --no-resume to start over).",
            run_dir,
            result.epochs_run,
        )
        ckpt_io.load_final_weights(model, run_dir, config.restore_best)
        model.to(resolve_device(config.device))  # where a run that trains leaves it
        return result
    from edgekit.trainer.loop import Trainer  # the loop imports this module's types

    trainer = Trainer(
        model,
        data,
        step_fn,
        eval_fn,
        make_optimizer,
        make_schedule,
        config,
        run_dir,
        hooks,
        train_mode_fn,
        # plain JSON values only: checkpoints are read back with weights_only=True, which refuses a Path
        json.loads(json.dumps(dict(task_config or {}), default=str)),
    )
    return trainer.run()


def _clear_run(run_dir: Path) -> None:
    """Remove what the engine wrote (and only that), for a fresh start."""
    if not run_dir.is_dir():
        return
    names = {ckpt_io.LAST, ckpt_io.PREV, ckpt_io.BEST_MODEL, *RUN_FILES}
    for p in run_dir.iterdir():
        if p.name in names or (p.name.startswith("checkpoint_best_e") and p.suffix == ".pt"):
            p.unlink()
