"""The training loop behind `engine.fit`: one `Trainer` per run, holding where the run stands.

Position inside an epoch is counted in samples, so a resume (also with a halved batch size after an
out-of-memory error) continues with exactly the samples not yet seen.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.atomic import write_json
from edgekit.console import console
from edgekit.errors import UserError
from edgekit.trainer import checkpoint as ckpt_io
from edgekit.trainer import sharpness
from edgekit.trainer.best import BestTracker
from edgekit.trainer.engine import (
    BEST_K,
    CONFIG,
    CURVES,
    DONE,
    HISTORY,
    RUN_FILES,
    FitConfig,
    FitResult,
    TrainingFailed,
    TrainingInterrupted,
    deterministic_kernels,
    free_memory,
    is_oom,
    oom_reason,
    resolve_device,
    seed_everything,
)
from edgekit.trainer.plots import plot_curves_quietly
from edgekit.trainer.progress import EpochProgress, EpochSums, epoch_line
from edgekit.trainer.signals import GracefulStop

log = logging.getLogger(__name__)

PLOT_EVERY_S = 60.0


MAX_NONFINITE_STEPS = 32
"""Consecutive non-finite AMP steps before giving up (the scaler has then divided its scale by 2**32)."""


class Trainer:
    """One run: the model, its optimizer and schedule, and where in the data the run stands."""

    def __init__(
        self,
        model,
        data,
        step_fn,
        eval_fn,
        make_optimizer,
        make_schedule,
        cfg: FitConfig,
        run_dir: Path,
        hooks,
        train_mode_fn,
        task_config: dict[str, Any],
    ) -> None:
        self.cfg, self.run_dir, self.hooks, self.task_config = cfg, run_dir, hooks, task_config
        self.data, self.step_fn, self.eval_fn, self.train_mode_fn = data, step_fn, eval_fn, train_mode_fn
        self.n = len(data)
        if self.n == 0:
            raise UserError("There is no training data (0 samples).")
        self.steps_per_epoch = self.n // cfg.batch_size if cfg.drop_last else math.ceil(self.n / cfg.batch_size)
        if self.steps_per_epoch == 0:
            raise UserError(
                f"Only {self.n} training samples, fewer than one batch of {cfg.batch_size} "
                "(lower the batch size or turn off drop_last)."
            )
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        self.schedule = make_schedule(self.optimizer, self.steps_per_epoch, cfg.epochs) if make_schedule else None
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.epoch = self.samples_done = self.global_step = 0
        self.nonfinite_run = 0
        self.batch_size = cfg.batch_size
        self.best, self.sums, self.history = BestTracker(), EpochSums(), []
        self.oom_retries = 0
        self.plotted_at = time.monotonic()
        self.stop = GracefulStop()
        self.progress: EpochProgress | None = None

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> FitResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / CONFIG, {"fit": self.cfg.model_dump(), "task": self.task_config})
        restore = deterministic_kernels(self.device, self.cfg.deterministic)
        try:
            with self.stop, EpochProgress(console) as self.progress:
                self._start()
                while self.epoch < self.cfg.epochs and not self.best.stopped_early:
                    self._epoch_with_recovery()
        finally:
            restore()
        plot_curves_quietly(self.history, self.run_dir / CURVES)
        result = self._result()
        write_json(self.run_dir / DONE, result.to_json())
        ckpt_io.load_final_weights(self.model, self.run_dir, self.cfg.restore_best)
        return result

    def _start(self) -> None:
        ckpt_io.remove_stale_temporaries(self.run_dir, RUN_FILES)
        ckpt = ckpt_io.load_latest(self.run_dir) if self.cfg.resume else None
        if ckpt is None:
            seed_everything(self.cfg.seed)
            self._checkpoint()  # so an out-of-memory retry always has a state to go back to
            return
        try:
            self._load(ckpt)
        except (RuntimeError, ValueError, KeyError) as e:  # another model's or optimizer's checkpoint
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"The checkpoint in {self.run_dir} does not fit this model ({first}); "
                "use another run folder or --no-resume to start over."
            ) from e
        changed = [k for k, v in self.cfg.model_dump().items() if ckpt.get("config", {}).get("fit", {}).get(k) != v]
        if changed:
            log.warning("Resuming with changed settings: %s.", ", ".join(changed))
        log.info(
            "Resuming %s at epoch %d, sample %d of %d (step %d).",
            self.run_dir,
            self.epoch + 1,
            self.samples_done,
            self.n,
            self.global_step,
        )

    def _epoch_with_recovery(self) -> None:
        failure = None
        try:
            self._train_epoch()
        except Exception as e:
            if not is_oom(e):
                raise
            failure = oom_reason(e)
        if failure is not None:  # outside the except block, so the traceback's tensors are freed
            self._recover_from_oom(failure)

    def _train_epoch(self) -> None:
        order = self._order(self.epoch)
        (self.train_mode_fn or torch.nn.Module.train)(self.model)
        self.progress.start_epoch(self.epoch, self.cfg.epochs, self.samples_done, self.n)
        started = time.monotonic() - self.sums.seconds
        while self._has_batch():
            idx = order[self.samples_done : self.samples_done + self.batch_size]
            self._step(idx)
            self.sums.seconds = time.monotonic() - started
            self.progress.advance(self.samples_done, self.sums.mean_loss(), self.sums.mean_acc())
            end_of_epoch = not self._has_batch()
            every = self.cfg.checkpoint_every_steps
            if not end_of_epoch and (self.stop.requested or (every and self.global_step % every == 0)):
                self._checkpoint()
            if self.stop.requested and not end_of_epoch:
                self._interrupted()
        self._end_epoch()
        if self.stop.requested and self.epoch < self.cfg.epochs and not self.best.stopped_early:
            self._interrupted()  # a stop that lands in the last epoch's evaluation lets the run finish

    def _has_batch(self) -> bool:
        need = self.batch_size if self.cfg.drop_last else 1
        return self.samples_done + need <= self.n

    def _order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch`: a function of (seed, epoch) only, never of RNG history."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        weights = getattr(self.data, "sample_weights", None)
        if weights is None:
            return rng.permutation(self.n)
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (self.n,) or (p < 0).any() or p.sum() <= 0:
            raise UserError(f"sample_weights must be {self.n} non-negative numbers with a positive sum.")
        return rng.choice(self.n, size=self.n, replace=True, p=p / p.sum())

    def _step(self, idx: np.ndarray) -> None:
        if self.hooks is not None:
            self.hooks.on_step(self.epoch, self.global_step, self.batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.data.batch(idx, self.device)
        out = self._forward(batch)
        loss = float(out.loss.detach())
        # With AMP an fp16 overflow now and then is normal (the scaler skips the step and lowers its scale);
        # a loss that stays non-finite for MAX_NONFINITE_STEPS steps in a row will not recover.
        self.nonfinite_run = 0 if math.isfinite(loss) else self.nonfinite_run + 1
        if self.nonfinite_run > (MAX_NONFINITE_STEPS if self.amp else 0):
            raise TrainingFailed(
                f"The training loss became {loss} at epoch {self.epoch + 1}, step "
                f"{self.global_step + 1}; lower the learning rate or check the data."
            )
        sam = self.cfg.sam_rho if math.isfinite(loss) else 0.0
        sharpness.step(
            self.model,
            self.optimizer,
            self.scaler,
            out.loss,
            lambda: self._forward(batch).loss,
            sam,
            self.cfg.grad_clip,
        )
        before = self.samples_done
        self.samples_done += len(idx)
        self.global_step += 1
        if math.isfinite(loss):  # with AMP the scaler skips such steps; keep them out of the average
            self.sums.add(loss, out.n, out.correct)
        if self.schedule is not None and self.schedule.interval == "step":
            for _ in range(self._sched_steps(self.samples_done) - self._sched_steps(before)):
                self.schedule.scheduler.step()
        log.debug("epoch %d step %d: loss %.4f, batch %d", self.epoch + 1, self.global_step, loss, len(idx))

    def _forward(self, batch):
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            return self.step_fn(self.model, batch)

    def _sched_steps(self, samples: int) -> int:
        """Scheduler steps owed after `samples` of this epoch: one per configured batch completed, so the
        schedule keeps its length and its pace when an out-of-memory recovery halves the batch (two half
        batches train at one step's learning rate); the epoch's last batch settles the count."""
        if samples + (self.batch_size if self.cfg.drop_last else 1) > self.n:
            return self.steps_per_epoch
        return min(samples // self.cfg.batch_size, self.steps_per_epoch)

    def _end_epoch(self) -> None:
        record = self._epoch_record(self._evaluate())
        self.history.append(record)
        self.progress.print(epoch_line(record, self.cfg.epochs))
        if self.schedule is not None and self.schedule.interval == "epoch":
            self.schedule.scheduler.step()
        elif self.schedule is not None and self.schedule.interval == "plateau":
            self.schedule.scheduler.step(record[self.cfg.monitor])
        self.epoch, self.samples_done, self.sums = self.epoch + 1, 0, EpochSums()
        state = self._update_best(record)
        ckpt_io.save_last(self.run_dir, state)
        write_json(self.run_dir / HISTORY, self.history)
        if time.monotonic() - self.plotted_at > PLOT_EVERY_S:  # drawing costs ~1 s: not after every epoch
            plot_curves_quietly(self.history, self.run_dir / CURVES)
            self.plotted_at = time.monotonic()

    def _evaluate(self) -> dict[str, float]:
        """The epoch's metrics. Evaluation runs at its task's own batch size, not --batch-size, so an
        out-of-memory here is not a training OOM: halving the training batch and redoing the epoch would
        not help. It is retried once with the training step's gradients and the allocator's cache freed."""
        for attempt in (1, 2):
            try:
                self.model.eval()
                with torch.no_grad():
                    metrics = self.eval_fn(self.model, self.device)
                return {k: float(v) for k, v in (metrics or {}).items()}
            except Exception as e:
                if not is_oom(e):
                    raise
                failure = oom_reason(e)
            if attempt == 1:  # outside the except block, so the traceback's tensors are freed
                log.warning("Out of memory while evaluating epoch %d (%s): freeing the training step's memory "
                            "and evaluating again.", self.epoch + 1, failure)
                free_memory(self.optimizer)
        raise TrainingFailed(f"Out of GPU memory while evaluating epoch {self.epoch + 1}, twice; evaluation does not "
                             f"use --batch-size, so a smaller one would not help ({failure}). {self._free_gpu}")

    def _epoch_record(self, metrics: dict[str, float]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": self.sums.mean_loss(),
            "train_acc": self.sums.mean_acc(),
            **metrics,
            "lr": self.optimizer.param_groups[0]["lr"],
            "batch_size": self.batch_size,
            "time_s": round(self.sums.seconds, 3),
        }
        if record.get(self.cfg.monitor) is None:
            known = [k for k, v in record.items() if isinstance(v, float)]
            close = difflib.get_close_matches(self.cfg.monitor, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"The monitored metric {self.cfg.monitor!r} is not among {', '.join(known)}.{hint}")
        return record

    def _update_best(self, record: dict[str, Any]) -> dict[str, Any]:
        """Early-stopping counter, best_model.pt and the best-k checkpoints, from this epoch's metric.

        Returns the end-of-epoch state (with the updated early-stopping state) for `checkpoint_last.pt`.
        """
        c, epoch = self.cfg, record["epoch"]
        verdict = self.best.update(float(record[c.monitor]), epoch, c.mode, c.min_delta, c.patience, c.keep_best)
        state = self._state()
        if verdict.improved:
            ckpt_io.save_weights(self.run_dir / ckpt_io.BEST_MODEL, self.model)
        for old in verdict.evicted:
            (self.run_dir / BEST_K.format(epoch=old)).unlink(missing_ok=True)
        if verdict.keep:
            ckpt_io.save(self.run_dir / BEST_K.format(epoch=epoch), state)
        if verdict.stop:
            log.info(
                "Early stop: %s has not improved for %d epochs (best %s at epoch %s).",
                c.monitor,
                self.best.bad_epochs,
                self.best.value,
                self.best.epoch,
            )
        return state

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict(),
            "rng": ckpt_io.capture_rng(),
            "epoch": self.epoch,
            "samples_done": self.samples_done,
            "global_step": self.global_step,
            "batch_size": self.batch_size,
            "best": asdict(self.best),
            "sums": asdict(self.sums),
            "history": self.history,
            "config": {"fit": self.cfg.model_dump(), "task": self.task_config},
        }

    def _checkpoint(self) -> None:
        ckpt_io.save_last(self.run_dir, self._state())
        log.debug("checkpoint at epoch %d, sample %d", self.epoch + 1, self.samples_done)

    def _load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.schedule is not None and ckpt.get("scheduler") is not None:
            self.schedule.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        ckpt_io.restore_rng(ckpt["rng"])
        self.epoch, self.samples_done, self.global_step = ckpt["epoch"], ckpt["samples_done"], ckpt["global_step"]
        self.batch_size = min(ckpt["batch_size"], self.cfg.batch_size)
        self.best, self.sums = BestTracker(**ckpt["best"]), EpochSums(**ckpt["sums"])
        self.history = list(ckpt["history"])
        kept = {BEST_K.format(epoch=e) for _, e in self.best.top}
        for p in self.run_dir.glob("checkpoint_best_e*.pt"):  # written after this checkpoint: replayed
            if p.name not in kept:
                p.unlink()

    def _interrupted(self) -> None:
        raise TrainingInterrupted(
            f"Training stopped by {self.stop.name} at epoch {self.epoch + 1}, step {self.global_step}; "
            f"the checkpoint is in {self.run_dir}. Run the same command again to resume.",
            self.stop.exit_code,
        )

    def _recover_from_oom(self, reason: str) -> None:
        self.oom_retries += 1
        if self.oom_retries > self.cfg.max_retries:
            raise TrainingFailed(
                f"Out of GPU memory {self.oom_retries} times (batch size down to {self.batch_size}), more "
                f"than --max-retries {self.cfg.max_retries}; use a smaller --batch-size or model, or a GPU "
                f"with more memory. The last checkpoint in {self.run_dir} resumes the run."
            )
        new_bs = min(self.batch_size, max(self.cfg.min_batch_size, self.batch_size // 2))
        log.warning(
            "Out of memory at epoch %d, step %d (%s): batch size %d -> %d, retry %d of %d after %gs.",
            self.epoch + 1,
            self.global_step + 1,
            reason,
            self.batch_size,
            new_bs,
            self.oom_retries,
            self.cfg.max_retries,
            self.cfg.oom_cooldown_s,
        )
        # the checkpoint brings its own optimizer state; loading it beside this one would need two copies
        free_memory(self.optimizer, drop_state=True)
        # a scaler interrupted between unscale_() and update() refuses the next step: start a clean one
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        time.sleep(self.cfg.oom_cooldown_s)
        ckpt = ckpt_io.load_latest(self.run_dir)
        if ckpt is None:
            raise TrainingFailed(f"Out of memory and no readable checkpoint in {self.run_dir} to go back to.")
        try:
            self._load(ckpt)
        except Exception as e:
            if not is_oom(e):
                raise
            raise TrainingFailed(f"Out of GPU memory again while reloading the checkpoint to retry with batch size "
                                 f"{new_bs}. {self._free_gpu}") from None
        self.batch_size = new_bs

    @property
    def _free_gpu(self) -> str:
        """What to do when the GPU stays too full to go on."""
        return (f"Free the GPU (another process may hold it) and run the same command to resume from "
                f"{self.run_dir}.")

    def _result(self) -> FitResult:
        return FitResult(
            run_dir=self.run_dir,
            history=self.history,
            monitor=self.cfg.monitor,
            best_metric=self.best.value,
            best_epoch=self.best.epoch,
            epochs_run=self.epoch,
            stopped_early=self.best.stopped_early,
            batch_size=self.batch_size,
            global_step=self.global_step,
            best_epochs=[e for _, e in self.best.top],
        )
