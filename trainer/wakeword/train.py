"""`edgekit train wakeword`: data → head trained through the engine → threshold → bundle.

The engine picks the best epoch by `val_score`: the lowest false-reject rate among thresholds whose
false accepts per hour meet the target (a tiny share of the validation loss breaks ties), measured
through the device's detector on held-out voices, so "best checkpoint" means what the issue asks.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import UserError
from edgekit.trainer.wakeword import evaluate as ev
from edgekit.trainer.wakeword.config import WakewordConfig
from edgekit.trainer.wakeword.dataset import WakewordData, build

if TYPE_CHECKING:
    import torch

    from edgekit.bundle import Bundle
    from edgekit.trainer.engine import FitResult

log = logging.getLogger(__name__)


class WindowData:
    """Feature windows for the engine: balanced draws of positives and negatives."""

    def __init__(self, data: WakewordData):
        self.x = np.concatenate([data.x_pos, data.x_neg]).astype(np.float32, copy=False)
        self.y = np.concatenate([np.ones(len(data.x_pos)), np.zeros(len(data.x_neg))]).astype(np.float32)
        n_pos, n_neg = len(data.x_pos), len(data.x_neg)
        self.sample_weights = np.where(self.y > 0, 0.5 / n_pos, 0.5 / n_neg)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, idx: np.ndarray, device: Any) -> tuple[Any, Any]:
        import torch

        return torch.from_numpy(self.x[idx]).to(device), torch.from_numpy(self.y[idx]).to(device)


def predict(model: torch.nn.Module, x: np.ndarray, device: Any = "cpu", batch: int = 4096) -> np.ndarray:
    """Scores in [0, 1] of windows `x` (N, 16, 96)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device)).float().cpu())
    return torch.cat(out).numpy().ravel() if out else np.zeros(0, np.float32)


def val_scores(model: torch.nn.Module, data: WakewordData, device: Any = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(positive clips × windows, negative stream) scores, one per 80 ms frame."""
    from edgekit.trainer.wakeword.features import windows

    n_pos, f_pos, _ = data.val_pos.shape
    pos = predict(model, windows(data.val_pos), device).reshape(n_pos, f_pos - 15)
    stream = predict(model, windows(data.val_stream), device)
    return pos, stream


def near_miss_rate(model: torch.nn.Module, data: WakewordData, threshold: float, cfg: WakewordConfig) -> float:
    """Share of held-out near-miss clips ("compu", phoneme edits) on which the detector fires."""
    from edgekit.edge.detector import DetectorConfig
    from edgekit.trainer.wakeword.features import windows

    n, f, _ = data.val_near.shape
    if not n:
        return 0.0
    scores = predict(model, windows(data.val_near)).reshape(n, f - 15)
    det = DetectorConfig(threshold=threshold, patience=cfg.detector.patience, refractory_s=cfg.detector.refractory_s)
    return float(ev.fires(scores, det).mean())


def _loss(logits: torch.Tensor, y: torch.Tensor, neg_weight: float) -> torch.Tensor:
    import torch

    w = torch.where(y > 0, torch.ones_like(y), torch.full_like(y, neg_weight))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (bce * w).sum() / w.sum()


def fit_head(cfg: WakewordConfig, data: WakewordData, run_dir: Path) -> tuple[Any, Any]:
    """Train the head through the engine; returns (best model on cpu, fit result)."""
    import torch

    from edgekit.trainer.engine import FitConfig, Schedule, StepOutput, fit, seed_everything
    from edgekit.trainer.models import build as build_arch

    t, d = cfg.training, cfg.detector
    seed_everything(cfg.seed)
    model = build_arch(cfg.model.arch, **arch_kwargs(cfg))

    def step_fn(model: torch.nn.Module, batch: Any) -> Any:
        x, y = batch
        logits = model.logits(x).squeeze(1)
        correct = int(((logits > 0).float() == y).sum())
        return StepOutput(loss=_loss(logits, y, t.negative_weight), n=len(y), correct=correct)

    def eval_fn(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        pos, stream = val_scores(model, data, device)
        pts = ev.sweep(pos, stream, d.patience, d.refractory_s)
        best, _ = ev.choose(pts, cfg.data.target_fpr)
        p = np.clip(np.concatenate([pos[:, 0], stream]), 1e-6, 1 - 1e-6)
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(stream))])
        val_loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        frr = ev.frr_at(pts, cfg.data.target_fpr)
        return {"val_loss": val_loss, "val_acc": float(np.mean((p >= 0.5) == y)), "val_frr": frr,
                "val_fa_per_hour": best.fa_per_hour, "threshold": best.threshold,
                "val_score": frr + 0.01 * min(val_loss, 1.0)}

    def make_optimizer(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)

    def make_schedule(opt: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.learning_rate, pct_start=t.warmup_fraction,
                                                    total_steps=max(steps_per_epoch * epochs, 1))
        return Schedule(sched, "step")

    fc = FitConfig(epochs=t.epochs, batch_size=t.batch_size, patience=t.early_stopping_patience, seed=cfg.seed,
                   device=t.device, grad_clip=1.0, monitor="val_score", mode="min", restore_best=True,
                   keep_best=t.average_best)
    result = fit(model, WindowData(data), step_fn, eval_fn, make_optimizer, make_schedule, fc,
                 run_dir=run_dir, task_config=cfg.model_dump(mode="json"))
    model = model.cpu().eval()
    average_best(model, result)
    return model, result


def average_best(model: torch.nn.Module, result: FitResult) -> list[int]:
    """Load the mean of the run's kept best epochs' weights into `model`; returns those epochs (1-based).

    With one kept epoch (or none, e.g. a run finished before runs recorded them) the model keeps the best
    epoch's weights.
    """
    import torch

    from edgekit.trainer import checkpoint as ckpt_io

    if len(result.best_epochs) < 2:
        return []
    states = [ckpt_io.load(p)["model"] for p in result.best_checkpoints]
    with torch.no_grad():
        model.load_state_dict({k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
                               for k, v in states[0].items()})
    epochs = sorted(result.best_epochs)
    log.info("final head: the mean of the weights of epochs %s", ", ".join(map(str, epochs)))
    return epochs


def arch_kwargs(cfg: WakewordConfig) -> dict[str, Any]:
    return {"width": cfg.model.width, "dropout": cfg.model.dropout}


def run_dir_for(cfg: WakewordConfig, data: WakewordData) -> Path:
    """runs/<name>/<hash of config and data>: a rerun on the same data resumes (or reuses) the run."""
    # where and how fast it runs does not change what is trained: a rerun with other --workers resumes
    what = cfg.model_dump_json(exclude={"workers": True, "cache_dir": True, "run_dir": True,
                                        "training": {"device"}})
    digest = hashlib.sha256((what + data.stats["digest"]).encode()).hexdigest()[:10]
    return Path("runs") / cfg.name / digest


def train_wakeword(cfg: WakewordConfig, oww_folder: Path | None = None) -> Bundle:
    """The whole command: build data, fit, choose the threshold, write the bundle, print the result."""
    from edgekit.paths import openwakeword_assets
    from edgekit.trainer.wakeword.report import print_result, write_bundle

    folder = oww_folder or openwakeword_assets()
    if folder is None:
        raise UserError("openWakeWord feature models were not found; set EDGEKIT_FEATURE_DIR to their folder "
                        "or run `python -c 'import openwakeword.utils as u; u.download_models()'`.")
    data = build(cfg, Path(folder))
    log.info("%d positive and %d negative windows for training; %d held-out positives, %.1f min of "
             "held-out negative stream", len(data.x_pos), len(data.x_neg), len(data.val_pos),
             data.stats["windows"]["val_stream_minutes"])
    model, result = fit_head(cfg, data, cfg.run_dir or run_dir_for(cfg, data))
    pos, stream = val_scores(model, data)
    points = ev.sweep(pos, stream, cfg.detector.patience, cfg.detector.refractory_s)
    chosen, met = ev.choose(points, cfg.data.target_fpr)
    near = near_miss_rate(model, data, chosen.threshold, cfg)
    bundle = write_bundle(cfg, model, data, result, points, chosen, met, near)
    print_result(cfg, bundle, chosen, met)
    return bundle
