"""The training engine, on a tiny deterministic model (tests/engine_worker.py), CPU only.

Kill/signal tests run the worker as a real subprocess; the rest call `fit` in-process. "Same weights"
always means compared with an uninterrupted run of the same worker computed in this session.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import UserError
from edgekit.trainer import checkpoint as ckpt_io
from edgekit.trainer.best import BestTracker
from edgekit.trainer.engine import TrainingFailed, fit
from edgekit.trainer.metrics import classification_report
from edgekit.trainer.plots import plot_confusion

sys.path.insert(0, str(Path(__file__).parent))
import engine_worker as worker  # noqa: E402

WORKER = Path(__file__).with_name("engine_worker.py")
EPOCH_LINE = re.compile(
    r"^Epoch \[\d+/\d+\] Train Loss: \d+\.\d{4}, Acc: \d+\.\d% \| Val Loss: \d+\.\d{4}, Acc: \d+\.\d%$"
)
STEPS_PER_EPOCH = worker.N_TRAIN // 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, object]:
    """An uninterrupted 6-epoch run: its last weights, best weights and history."""
    run_dir = tmp_path_factory.mktemp("reference")
    worker.run(run_dir)
    last = ckpt_io.load(run_dir / ckpt_io.LAST)
    return {
        "last": last["model"],
        "best": torch.load(run_dir / ckpt_io.BEST_MODEL, weights_only=True),
        "history": json.loads((run_dir / "history.json").read_text()),
    }


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), f"{k} differs by {(a[k] - b[k]).abs().max()}"


def _losses(history: list[dict]) -> list[tuple[float, float]]:
    return [(h["train_loss"], h["val_loss"]) for h in history]


def _spawn(run_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(run_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_step(proc: subprocess.Popen, step: int) -> list[str]:
    """Read the worker's stderr until it announces `step`; returns what it read."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("STEP ") and int(line.split()[2]) >= step:
            return seen
    raise AssertionError(f"worker ended before step {step}: {''.join(seen)[-2000:]}")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path, reference):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    # one kill in each third of the run; the first lands after a mid-epoch checkpoint (steps 5, 10 of 12)
    targets = [rng.randint(6, 11), rng.randint(26, 46), rng.randint(50, 68)]
    positions = []
    for target in targets:
        proc = _spawn(tmp_path, "--every", "5", "--trace", "--sleep", "0.005")
        _wait_for_step(proc, target)
        time.sleep(rng.uniform(0, 0.02))  # somewhere inside a step, or inside a checkpoint write
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        ckpt = ckpt_io.load_latest(tmp_path)
        positions.append((ckpt["epoch"], ckpt["samples_done"]))
    info = f"kill seed {seed}, targets {targets}, resumed from (epoch, sample) {positions}"
    assert any(samples > 0 for _, samples in positions), info  # at least one resume started mid-epoch
    _, result = worker.run(tmp_path, checkpoint_every_steps=5)  # the last resume, to the end
    assert result.epochs_run == 6
    _assert_same_weights(ckpt_io.load(tmp_path / ckpt_io.LAST)["model"], reference["last"])
    _assert_same_weights(torch.load(tmp_path / ckpt_io.BEST_MODEL, weights_only=True), reference["best"])
    assert _losses(result.history) == _losses(reference["history"]), info
    assert not list(tmp_path.glob(".*.tmp"))  # temporaries of a killed save are cleaned up on resume


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_checkpoints_and_exits(tmp_path, reference, sig, code):
    hold = STEPS_PER_EPOCH + 2  # the 3rd step of epoch 2 lasts 3 s; the signal arrives during it
    proc = _spawn(tmp_path, "--trace", "--hold-at", str(hold), "--hold", "3")  # no step checkpoints
    _wait_for_step(proc, hold)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == code, err
    assert EPOCH_LINE.match(out.strip()), out  # not a terminal: no bar, just epoch 1's line
    assert "resume" in err
    ckpt = ckpt_io.load(tmp_path / ckpt_io.LAST)
    assert (ckpt["epoch"], ckpt["samples_done"], ckpt["global_step"]) == (1, 3 * 8, hold + 1)  # step finished
    if sig == signal.SIGTERM:  # and the run continues from there to the same end
        model, result = worker.run(tmp_path)
        assert result.epochs_run == 6
        _assert_same_weights(ckpt_io.load(tmp_path / ckpt_io.LAST)["model"], reference["last"])


class _OOMAt:
    """Raises an out-of-memory error before the given steps, once per listed step (or always)."""

    def __init__(self, steps: set[int] | None, error: type[Exception] = torch.cuda.OutOfMemoryError,
                 message: str = "CUDA out of memory. Tried to allocate 2.00 GiB"):
        self.steps, self.error, self.message, self.calls, self.sizes = steps, error, message, 0, []

    def on_step(self, epoch: int, global_step: int, batch_size: int) -> None:
        self.calls += 1
        self.sizes.append(batch_size)
        if self.steps is None or global_step in self.steps:
            if self.steps is not None:
                self.steps.discard(global_step)
            raise self.error(self.message)


@pytest.mark.parametrize("error, message", [
    (torch.cuda.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
    (RuntimeError, "CUDA out of memory. Tried to allocate 2.00 GiB"),  # older torch
    (RuntimeError, "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
])
def test_oom_halves_the_batch_size_and_completes(tmp_path, caplog, error, message):
    hook = _OOMAt({STEPS_PER_EPOCH + 2}, error, message)  # inside epoch 2; the last checkpoint is epoch 1's end
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        _, result = worker.run(tmp_path, hooks=hook)
    assert result.epochs_run == 6 and result.batch_size == 4
    assert [h["batch_size"] for h in result.history] == [8, 4, 4, 4, 4, 4]
    # epoch 1 at 8 per step, then every remaining epoch covers all 96 samples at 4 per step
    assert result.global_step == STEPS_PER_EPOCH + 5 * worker.N_TRAIN // 4
    assert "batch size 8 -> 4" in caplog.text


def test_after_an_oom_the_schedule_keeps_its_pace(tmp_path, monkeypatch):
    """Each sample trains at the learning rate it had in an uninterrupted run, half batches included."""
    seen, box = [], {}
    real_optimizer, real_batch = worker.make_optimizer, worker.TinyData.batch

    def optimizer(params):
        box["opt"] = real_optimizer(params)
        return box["opt"]

    def batch(self, idx, device):
        seen.extend([box["opt"].param_groups[0]["lr"]] * len(idx))
        return real_batch(self, idx, device)

    monkeypatch.setattr(worker, "make_optimizer", optimizer)
    monkeypatch.setattr(worker.TinyData, "batch", batch)
    worker.run(tmp_path / "plain", epochs=3)
    plain, seen[:] = list(seen), []
    worker.run(tmp_path / "oom", hooks=_OOMAt({STEPS_PER_EPOCH + 2}), epochs=3)
    # the OOM run redoes epoch 2 from its start (the checkpoint of epoch 1's end): drop the 2 steps it lost
    redone = seen[: worker.N_TRAIN] + seen[worker.N_TRAIN + 2 * 8 :]
    assert len(redone) == len(plain) == 3 * worker.N_TRAIN
    assert redone == pytest.approx(plain, rel=1e-12)


def test_oom_recovery_drops_the_optimizer_state_before_freeing_memory(tmp_path, monkeypatch):
    """The moments are reloaded from the checkpoint: the old ones must not be held while the cache is emptied."""
    import gc

    box, held = {}, []
    real_optimizer, real_collect = worker.make_optimizer, gc.collect

    def optimizer(params):
        box["opt"] = real_optimizer(params)
        return box["opt"]

    def collect(*args):
        if "opt" in box:
            held.append(len(box["opt"].state))
        return real_collect(*args)

    monkeypatch.setattr(worker, "make_optimizer", optimizer)
    monkeypatch.setattr(gc, "collect", collect)
    _, result = worker.run(tmp_path, hooks=_OOMAt({STEPS_PER_EPOCH + 2}), epochs=2)
    assert result.epochs_run == 2 and held == [0]


def test_oom_while_reloading_the_checkpoint_is_one_clear_failure(tmp_path, monkeypatch):
    from edgekit.trainer import loop

    def load(self, ckpt):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(loop.Trainer, "_load", load)  # a fresh run loads nothing until the recovery
    with pytest.raises(TrainingFailed, match="again while reloading the checkpoint") as info:
        worker.run(tmp_path, hooks=_OOMAt({STEPS_PER_EPOCH + 2}))
    assert info.value.exit_code == 2 and (tmp_path / ckpt_io.LAST).is_file()


def _eval_oom(times: int):
    """worker.eval_fn that runs out of memory on its first `times` calls."""
    calls = []

    def evaluate(model, device):
        calls.append(1)
        if len(calls) <= times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return worker.eval_fn(model, device)

    return evaluate


def test_oom_while_evaluating_retries_the_evaluation_not_the_epoch(tmp_path, caplog):
    hook = _OOMAt(set())
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        _, result = worker.run(tmp_path, hooks=hook, evaluate=_eval_oom(1), epochs=2)
    assert result.epochs_run == 2 and [h["batch_size"] for h in result.history] == [8, 8]
    assert hook.calls == 2 * STEPS_PER_EPOCH  # no step was redone
    assert "while evaluating epoch 1" in caplog.text and "batch size 8 -> 4" not in caplog.text


def test_oom_while_evaluating_twice_is_one_clear_failure(tmp_path):
    with pytest.raises(TrainingFailed, match="while evaluating epoch 1, twice; evaluation does not use --batch-size"):
        worker.run(tmp_path, evaluate=_eval_oom(2), epochs=2)
    assert (tmp_path / ckpt_io.LAST).is_file()  # the run resumes from there


def test_oom_gives_up_after_max_retries(tmp_path):
    hook = _OOMAt(None)
    with pytest.raises(TrainingFailed, match="--max-retries 2") as info:
        worker.run(tmp_path, hooks=hook, max_retries=2, min_batch_size=2)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    assert hook.calls == 3 and hook.sizes == [8, 4, 2]


def test_a_nan_loss_stops_training_with_a_clear_message(tmp_path, monkeypatch):
    """Without AMP the first non-finite loss ends the run (with AMP: a run of them, see loop.MAX_NONFINITE_STEPS)."""
    real = worker.step_fn

    def poisoned(model, batch):
        out = real(model, batch)
        poisoned.calls += 1
        if poisoned.calls == 5:
            out.loss = out.loss * float("nan")
        return out

    poisoned.calls = 0
    monkeypatch.setattr(worker, "step_fn", poisoned)
    with pytest.raises(TrainingFailed, match="loss became nan at epoch 1, step 5"):
        worker.run(tmp_path)


class _CrashAt:
    def __init__(self, step: int):
        self.step = step

    def on_step(self, epoch: int, global_step: int, batch_size: int) -> None:
        if global_step == self.step:
            raise KeyboardInterrupt  # like a crash that leaves only what was on disk


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_last_checkpoint_falls_back_to_the_previous(tmp_path, caplog, reference, damage):
    with pytest.raises(KeyboardInterrupt):
        worker.run(tmp_path, hooks=_CrashAt(2 * STEPS_PER_EPOCH + 5))
    last = tmp_path / ckpt_io.LAST
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    assert ckpt_io.load(tmp_path / ckpt_io.PREV)["epoch"] == 1
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        _, result = worker.run(tmp_path)
    assert "Skipping" in caplog.text and "checkpoint_last.pt" in caplog.text
    assert "previous checkpoint" in caplog.text
    assert result.epochs_run == 6
    _assert_same_weights(ckpt_io.load(last)["model"], reference["last"])


def test_a_crash_while_saving_after_a_fallback_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    """After resuming from prev (last unreadable), a save that dies half-way must not cost prev."""
    with pytest.raises(KeyboardInterrupt):
        worker.run(tmp_path, hooks=_CrashAt(2 * STEPS_PER_EPOCH + 5))
    (tmp_path / ckpt_io.LAST).write_bytes(b"not a checkpoint")
    real_save = torch.save

    def dies_writing_last(obj, f, *args, **kwargs):
        if f".{ckpt_io.LAST}." in str(f):
            real_save(obj, f, *args, **kwargs)
            raise OSError("No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_writing_last)
    with pytest.raises(OSError, match="No space"):
        worker.run(tmp_path)
    monkeypatch.undo()
    assert ckpt_io.load_latest(tmp_path)["epoch"] == 1
    assert (tmp_path / f"{ckpt_io.LAST}.unreadable").read_bytes() == b"not a checkpoint"
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == []


def test_early_stopping_best_model_and_best_k(tmp_path):
    losses = iter([1.0, 0.5, 0.6, 0.7, 0.4, 0.3])
    snapshots = []

    def scripted_eval(model, device):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_loss": next(losses), "val_acc": 0.5}

    model, result = worker.run(tmp_path, evaluate=scripted_eval, patience=2, keep_best=2)
    assert result.stopped_early and result.epochs_run == 4 and len(result.history) == 4
    assert result.best_epoch == 2 and result.best_metric == 0.5
    _assert_same_weights(torch.load(tmp_path / ckpt_io.BEST_MODEL, weights_only=True), snapshots[1])
    _assert_same_weights(model.state_dict(), snapshots[1])  # restore_best
    kept = sorted(p.name for p in tmp_path.glob("checkpoint_best_e*.pt"))
    assert kept == ["checkpoint_best_e002.pt", "checkpoint_best_e003.pt"]
    assert result.best_epochs == [2, 3] and [p.name for p in result.best_checkpoints] == kept
    _assert_same_weights(ckpt_io.load(tmp_path / kept[0])["model"], snapshots[1])


def test_run_files_and_a_finished_run_is_not_trained_again(tmp_path, capsys):
    _, first = worker.run(tmp_path, epochs=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(EPOCH_LINE.match(line) for line in lines), lines
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history == first.history
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["fit"]["epochs"] == 2 and config["task"] == {"task": "tiny"}
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "done.json").read_text())["epochs_run"] == 2

    hook = _OOMAt(set())  # counts steps, raises nothing
    model, again = worker.run(tmp_path, hooks=hook, epochs=2)
    assert hook.calls == 0 and again.already_done and again.history == first.history
    assert again.best_epochs == first.best_epochs != []
    _assert_same_weights(model.state_dict(), torch.load(tmp_path / ckpt_io.BEST_MODEL, weights_only=True))

    _, fresh = worker.run(tmp_path, hooks=hook, epochs=1, resume=False)
    assert hook.calls == STEPS_PER_EPOCH and fresh.epochs_run == 1 and not fresh.already_done


def test_weighted_sampling_balances_the_classes(tmp_path):
    data = worker.TinyData(weighted=True)
    seen: list[int] = []
    original = data.batch

    def recording_batch(idx, device):
        seen.extend(int(i) for i in idx)
        return original(idx, device)

    data.batch = recording_batch
    torch.set_num_threads(1)
    fit(
        worker.build_model(),
        data,
        worker.step_fn,
        worker.eval_fn,
        worker.make_optimizer,
        worker.make_schedule,
        worker.FitConfig(epochs=3, batch_size=8, device="cpu", oom_cooldown_s=0),
        tmp_path,
    )
    counts = np.bincount(data.y.numpy()[seen], minlength=worker.CLASSES)
    assert counts.min() > 0.6 * counts.max()  # balanced, although the classes are not
    assert np.bincount(data.y.numpy()).min() < 0.6 * np.bincount(data.y.numpy()).max()


def test_missing_monitor_is_a_user_error_with_a_suggestion(tmp_path):
    with pytest.raises(UserError, match="Did you mean 'val_acc'"):
        worker.run(tmp_path, monitor="val_accuracy", mode="max")


def test_best_tracker_max_mode_min_delta_nan_and_best_k():
    b = BestTracker()
    verdicts = [b.update(v, e, "max", 0.01, 2, 2) for e, v in enumerate([0.5, 0.505, float("nan"), 0.7], 1)]
    assert [v.improved for v in verdicts] == [True, False, False, True]  # +0.005 is below min_delta
    assert [v.keep for v in verdicts] == [True, True, False, True]
    assert [v.evicted for v in verdicts] == [[], [], [], [1]]
    assert [v.stop for v in verdicts] == [False, False, True, False]  # the NaN was the 2nd bad epoch
    assert b.value == 0.7 and b.epoch == 4 and b.top == [[0.7, 4], [0.505, 2]]
    assert not b.update(0.1, 5, "max", 0.01, 2, 2).stop and b.update(0.1, 6, "max", 0.01, 2, 2).stop


def test_a_checkpoint_of_another_model_is_a_user_error(tmp_path):
    worker.run(tmp_path, epochs=1)
    (tmp_path / "done.json").unlink()  # pretend it was interrupted
    wider = torch.nn.Sequential(torch.nn.Linear(worker.FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    with pytest.raises(UserError, match="does not fit this model"):
        fit(
            wider,
            worker.TinyData(),
            worker.step_fn,
            worker.eval_fn,
            worker.make_optimizer,
            None,
            worker.FitConfig(epochs=2, batch_size=8, device="cpu"),
            tmp_path,
        )


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    ckpt_io.save(tmp_path / "c.pt", {"rng": ckpt_io.capture_rng()})
    before = (random.random(), float(np.random.standard_normal()), float(torch.rand(1)))
    ckpt_io.restore_rng(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.standard_normal()), float(torch.rand(1))) == before


def test_classification_report_by_hand(tmp_path):
    r = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c", "d"])
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert r["accuracy"] == pytest.approx(4 / 6) and r["n"] == 6
    assert r["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert r["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # "d" has no samples: not averaged
    json.dumps(r)
    png = plot_confusion(r["confusion_matrix"], r["labels"], tmp_path / "cm.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


class _FixedBatch:
    """All samples in one batch, no augmentation: a step can be recomputed by hand."""

    def __init__(self) -> None:
        self.x, self.y = worker._dataset(worker.N_TRAIN, 0)

    def __len__(self) -> int:
        return worker.N_TRAIN

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(np.asarray(idx))
        return self.x[i].to(device), self.y[i].to(device)


def test_sam_step_takes_the_gradient_uphill_and_keeps_the_weights_it_stepped_from(tmp_path):
    """One SAM step through `fit` equals SGD with the gradient at w + rho g/|g|, applied to w itself."""
    from edgekit.trainer import sharpness
    from edgekit.trainer.engine import FitConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(worker.FEATURES, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, worker.CLASSES))
    model[0].bias.requires_grad_(False)  # a frozen parameter must not move at all
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    data, rho, lr = _FixedBatch(), 0.5, 0.1
    x, y = data.x, data.y

    def loss_at(weights: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = {k: v.clone().requires_grad_(k != "0.bias") for k, v in weights.items()}
        loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        trainable = [k for k in params if k != "0.bias"]
        return loss, dict(zip(trainable, torch.autograd.grad(loss, [params[k] for k in trainable]), strict=True))

    _, g = loss_at(w0)
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    _, g_up = loss_at({k: v + rho * g[k] / norm if k in g else v for k, v in w0.items()})
    expected = {k: v - lr * g_up[k] if k in g_up else v for k, v in w0.items()}

    fit(model, data, worker.step_fn, worker.eval_fn, lambda ps: torch.optim.SGD(ps, lr=lr), lambda *a: None,
        FitConfig(epochs=1, batch_size=worker.N_TRAIN, device="cpu", patience=0, grad_clip=None, sam_rho=rho,
                  restore_best=False), tmp_path)
    got = {k: v.clone() for k, v in model.state_dict().items()}
    for k in expected:
        assert torch.allclose(got[k], expected[k], rtol=0, atol=1e-6), k
    assert torch.equal(got["0.bias"], w0["0.bias"])
    plain = {k: v - lr * g[k] if k in g else v for k, v in w0.items()}
    assert not torch.allclose(got["2.weight"], plain["2.weight"], rtol=0, atol=1e-4)  # SAM is not plain SGD here
    saved = ckpt_io.load(tmp_path / ckpt_io.LAST)["model"]
    assert all(torch.equal(saved[k], got[k]) for k in got)  # the checkpoint holds the weights, not the nudged ones

    nudge = sharpness.ascend(model, worker.step_fn(model, data.batch(np.arange(8), "cpu")).loss, rho)
    assert len(nudge.moved) == 3 and not torch.equal(model.state_dict()["2.weight"], got["2.weight"])
    nudge.undo()
    assert all(torch.equal(model.state_dict()[k], got[k]) for k in got)  # back bit for bit
    overflow = model(x).sum() * float("inf")  # an fp16 overflow's gradient: the step stays a plain one
    assert not sharpness.ascend(model, overflow, rho).moved


def test_best_k_keeps_the_best_epoch_when_later_gains_are_below_min_delta():
    from edgekit.trainer.best import BestTracker

    best = BestTracker()
    verdicts = [best.update(v, e, "min", 0.05, 0, 1) for e, v in enumerate([1.0, 0.99, 0.98], start=1)]
    assert best.epoch == 1 and best.top == [[1.0, 1]]
    assert [v.keep for v in verdicts] == [True, False, False] and [v.evicted for v in verdicts] == [[], [2], [3]]
    best.update(0.9, 4, "min", 0.05, 0, 1)
    assert best.epoch == 4 and best.top == [[0.9, 4]]


def test_ctrl_c_in_the_last_evaluation_lets_the_finished_run_end(tmp_path):
    import signal

    calls = []

    def evaluate(model, device):
        calls.append(1)
        if len(calls) == 2:  # the last epoch's evaluation: all training is done
            signal.raise_signal(signal.SIGINT)
        return worker.eval_fn(model, device)

    _, result = worker.run(tmp_path, evaluate=evaluate, epochs=2)
    assert result.epochs_run == 2 and (tmp_path / "done.json").is_file()


def test_a_split_file_class_index_out_of_range_is_one_sentence():
    from edgekit.trainer.calibration_data import _item

    assert _item(["glass/1.jpg", 1], ["cardboard", "glass"]) == ("glass/1.jpg", 1)
    with pytest.raises(UserError, match="class index 7 for glass/1.jpg; the bundle has 2 classes"):
        _item(["glass/1.jpg", 7], ["cardboard", "glass"])
