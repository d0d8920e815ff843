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
  raise `TrainingFailed` (a UserError) with what to do.
- Early stopping on `monitor` (`mode` min/max, `patience`, `min_delta`); `history.json`, `config.json`,
  `curves.png` in run_dir; AMP on CUDA; gradient clipping; device auto|cuda|cpu; Rich progress bar;
  seed-style epoch lines: `Epoch [3/20] Train Loss: 0.35, Acc: 89.7% | Val Loss: 0.21, Acc: 91.9%`.
- `hooks.on_step(epoch, global_step, batch_size)` is called before each step (tests inject OOM there).
- `train_mode_fn(model)` (optional) is called instead of `model.train()` at each epoch start, so a
  task can keep BatchNorm layers in eval mode while fine-tuning.
"""
